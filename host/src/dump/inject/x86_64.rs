//! x86_64's pieces of an injected call: the instructions looked for
//! (`syscall; ret`, glibc's and musl's `rt_sigreturn`), the registers of
//! a call, and the `rt_sigframe` a thread let go returns through.

use anyhow::Result;

use crate::dump::memory::read_bytes;
use crate::regs::dump::Gp;

/// The x86_64 ABI lets leaf code use 128 bytes below the stack pointer.
pub const RED_ZONE: u64 = 128;

const SYSCALL_RET: [u8; 3] = [0x0f, 0x05, 0xc3];
/// `mov $15, %rax; syscall` (glibc's `__restore_rt`) and `mov $15, %eax;
/// syscall` (musl's, Go's).
const SIGRETURNS: [&[u8]; 2] =
    [&[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05], &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]];

/// Looks for a `syscall; ret` and an `rt_sigreturn` in `code` mapped at
/// `base`; fills in what `found` still lacks.
pub fn scan(code: &[u8], base: u64, found: &mut (Option<u64>, Option<u64>)) {
    let at = |pat: &[u8]| code.windows(pat.len()).position(|w| w == pat).map(|i| base + i as u64);
    if found.0.is_none() {
        found.0 = at(&SYSCALL_RET);
    }
    if found.1.is_none() {
        found.1 = SIGRETURNS.iter().find_map(|p| at(p));
    }
}

/// Finds a `syscall` instruction (0f 05) in `bytes` mapped at `base`.
pub fn find_syscall_insn(bytes: &[u8], base: u64) -> Option<u64> {
    bytes.windows(2).position(|w| w == [0x0f, 0x05]).map(|i| base + i as u64)
}

/// The `syscall` a thread stopped in a system call entered by.
pub fn syscall_before(pid: i32, r: &Gp) -> Option<u64> {
    let b = read_bytes(pid, r.rip.checked_sub(2)?, 2).ok()?;
    ((r.orig_rax as i64) >= 0 && b == [0x0f, 0x05]).then(|| r.rip - 2)
}

/// The frame returning to `home` with `mask`, below `below`, entered
/// through `sigreturn`: where it starts, and its bytes up to `below`.
pub fn frame(tid: i32, home: &Gp, mask: u64, below: u64, sigreturn: u64) -> Result<(u64, Vec<u8>)> {
    let (fpu, xsave) = crate::regs::dump::fpu_raw(tid)?;
    Ok(frame::build(home, mask, &fpu, xsave, below, sigreturn))
}

/// Registers that run the `rt_sigreturn` at `sigreturn` on the frame at
/// `low`.
pub fn at_sigreturn(saved: &Gp, sigreturn: u64, low: u64) -> Gp {
    let mut r = *saved;
    r.rip = sigreturn;
    // The frame's first word is the return slot a handler's `ret` pops.
    r.rsp = low + 8;
    // Not inside a system call: nothing to restart.
    r.orig_rax = u64::MAX;
    r
}

/// Registers that run system call `nr` with `args` at `at`; with a frame
/// at `low` (`ret`: low, and the `rt_sigreturn` the frame's first word
/// holds), the `ret` after the call pops that word.
pub fn call(saved: &Gp, at: u64, nr: u32, args: &[u64], ret: Option<(u64, u64)>) -> Gp {
    let mut r = *saved;
    r.rip = at;
    if let Some((low, _)) = ret {
        r.rsp = low;
    }
    r.rax = nr as u64;
    // Not inside a system call: the kernel must not restart anything
    // when it lets the thread go on to our instruction.
    r.orig_rax = u64::MAX;
    let regs = [&mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9];
    for (slot, a) in regs.into_iter().zip(args) {
        *slot = *a;
    }
    r
}

/// Whether a call run at `at` ended right after its `syscall`, and its
/// raw result.
pub fn outcome(r: &Gp, at: u64) -> (bool, i64) {
    (r.rip == at + 2, r.rax as i64)
}

/// Nothing to do at the entry stop: `orig_rax` of -1 kept the kernel from
/// restarting anything.
pub fn at_entry(_tid: i32, _nr: u32) -> Result<()> {
    Ok(())
}

/// The `rt_sigframe` the kernel's `rt_sigreturn` reads: the return
/// address slot, a `ucontext` (flags, link, alternate stack, `sigcontext`,
/// mask), a `siginfo`; the FPU state it points to lies above it.
mod frame {
    use nix::libc::user_regs_struct;

    const UC: usize = 8;
    const UC_STACK: usize = UC + 16;
    const MCONTEXT: usize = UC + 40;
    const SIGMASK: usize = UC + 296;
    /// Return slot, ucontext, siginfo.
    const SIZE: usize = 8 + 304 + 128;

    const UC_FP_XSTATE: u64 = 1;
    const UC_SIGCONTEXT_SS: u64 = 2;
    const UC_STRICT_RESTORE_SS: u64 = 4;
    const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
    const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
    /// The AMX tile data: allocated per task only once the task asks.
    const XFEATURE_TILEDATA: u32 = 18;

    /// Builds the frame returning to `home` with `mask`, below `below`.
    /// Returns where it starts and its bytes, up to `below`.
    pub fn build(
        home: &user_regs_struct,
        mask: u64,
        fpu: &[u8],
        xsave: bool,
        below: u64,
        sigreturn: u64,
    ) -> (u64, Vec<u8>) {
        let mut fp = fpu.to_vec();
        let mut uc_flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
        if xsave {
            let xstate_bv = u64::from_le_bytes(fp[512..520].try_into().expect("8 bytes"));
            let (size, xfeatures) = xstate_extent(fp.len(), xstate_bv);
            fp.truncate(size);
            // The software-reserved bytes of the legacy area say how much
            // of the XSAVE area the kernel may read back.
            fp[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
            fp[468..472].copy_from_slice(&(size as u32 + 4).to_le_bytes());
            fp[472..480].copy_from_slice(&xfeatures.to_le_bytes());
            fp[480..484].copy_from_slice(&(size as u32).to_le_bytes());
            fp[484..512].fill(0);
            fp.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
            uc_flags |= UC_FP_XSTATE;
        } else {
            fp[464..512].fill(0);
        }
        // XRSTOR wants 64-byte alignment; the frame's return slot sits at
        // 16n - 8 as at a handler's entry.
        let fp_at = (below - fp.len() as u64) & !63;
        let low = ((fp_at - SIZE as u64) & !15) - 8;
        let mut out = vec![0u8; (below - low) as usize];
        let put = |out: &mut [u8], off: usize, v: u64| out[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put(&mut out, 0, sigreturn);
        put(&mut out, UC, uc_flags);
        // An invalid alternate-stack mode: sigreturn's attempt to set the
        // alternate stack from this frame fails quietly and leaves the
        // thread's own alone (which we cannot know before asking it).
        put(&mut out, UC_STACK + 8, 3);
        let r = home;
        let gp = [
            r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx,
            r.rsp, r.rip, r.eflags,
        ];
        for (i, v) in gp.iter().enumerate() {
            put(&mut out, MCONTEXT + i * 8, *v);
        }
        // cs, gs, fs, ss as four 16-bit words.
        let segs = (r.cs & 0xffff) | (r.gs & 0xffff) << 16 | (r.fs & 0xffff) << 32 | (r.ss & 0xffff) << 48;
        put(&mut out, MCONTEXT + 144, segs);
        put(&mut out, MCONTEXT + 184, fp_at);
        put(&mut out, SIGMASK, mask);
        let fp_off = (fp_at - low) as usize;
        out[fp_off..fp_off + fp.len()].copy_from_slice(&fp);
        (low, out)
    }

    /// How much of a ptrace XSAVE area (`len` bytes) a sigreturn of this
    /// task may read, and the features it restores. ptrace's area has room
    /// for AMX tiles wherever the CPU has them, but a task that never asked
    /// for them has a smaller one, and the kernel falls back to the legacy
    /// state alone when told of more.
    fn xstate_extent(len: usize, xstate_bv: u64) -> (usize, u64) {
        let mut xfeatures = xcr0();
        let tiles = 1u64 << XFEATURE_TILEDATA;
        if xfeatures & tiles != 0 && xstate_bv & tiles == 0 {
            xfeatures &= !tiles;
            let (off, _) = crate::regs::dump::component(XFEATURE_TILEDATA);
            if off >= 576 && off < len {
                return (off, xfeatures);
            }
        }
        (len, xfeatures)
    }

    fn xcr0() -> u64 {
        if std::arch::is_x86_feature_detected!("xsave") {
            // SAFETY: the CPU has XSAVE (checked above), so XGETBV exists.
            unsafe { std::arch::x86_64::_xgetbv(0) }
        } else {
            0b11
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_frame_holds_registers_mask_and_fpu_where_sigreturn_reads_them() {
            let mut r: user_regs_struct = unsafe_zeroed();
            r.rip = 0x1111;
            r.rsp = 0x2222;
            r.rax = 0x3333;
            r.r8 = 0x4444;
            r.eflags = 0x246;
            r.cs = 0x33;
            r.ss = 0x2b;
            let mut fpu = vec![0u8; 1024];
            fpu[512] = 0b11;
            fpu[0] = 0x7f;
            let below = 0x10_0000u64;
            let (low, f) = super::build(&r, 0xdead_beef, &fpu, true, below, 0x5555);
            assert_eq!(low % 16, 8);
            assert_eq!(low + f.len() as u64, below);
            let at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
            assert_eq!(at(0), 0x5555);
            assert_eq!(at(super::MCONTEXT), 0x4444);
            assert_eq!(at(super::MCONTEXT + 13 * 8), 0x3333);
            assert_eq!(at(super::MCONTEXT + 15 * 8), 0x2222);
            assert_eq!(at(super::MCONTEXT + 16 * 8), 0x1111);
            assert_eq!(at(super::MCONTEXT + 144) & 0xffff, 0x33);
            assert_eq!(at(super::MCONTEXT + 144) >> 48, 0x2b);
            assert_eq!(at(super::SIGMASK), 0xdead_beef);
            let fp_at = at(super::MCONTEXT + 184);
            assert_eq!(fp_at % 64, 0);
            let fp = (fp_at - low) as usize;
            assert_eq!(f[fp], 0x7f);
            let size = u32::from_le_bytes(f[fp + 480..fp + 484].try_into().unwrap()) as usize;
            let magic2 = u32::from_le_bytes(f[fp + size..fp + size + 4].try_into().unwrap());
            assert_eq!(magic2, super::FP_XSTATE_MAGIC2);
        }

        fn unsafe_zeroed() -> user_regs_struct {
            // SAFETY: user_regs_struct is plain integers.
            unsafe { std::mem::zeroed() }
        }

        use nix::libc::user_regs_struct;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_instructions() {
        assert_eq!(super::find_syscall_insn(&[0x90, 0x0f, 0x05, 0xc3], 0x1000), Some(0x1001));
        assert_eq!(super::find_syscall_insn(&[0x0f, 0x90, 0x05], 0x1000), None);
        let mut found = (None, None);
        super::scan(&[0x90, 0x0f, 0x05, 0xc3, 0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05], 0x1000, &mut found);
        assert_eq!(found, (Some(0x1001), Some(0x1004)));
    }
}
