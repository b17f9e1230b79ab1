//! Running system calls inside a stopped thread, for state only the task
//! itself can ask for (signal actions, the alternate stack, timers, prctl
//! values, brk).
//!
//! Nothing is written into the program's code. The thread runs existing
//! instructions under PTRACE_SYSCALL, from syscall entry to syscall exit;
//! results that are structures land in a scratch area below the stack's
//! red zone, whose old bytes are put back. All signals are blocked
//! meanwhile so no handler can run on the borrowed registers.
//!
//! revenant may die at any moment (SIGKILL, the OOM killer), and the kernel
//! then lets the thread go on from wherever it is. So, where the program's
//! code has the two pieces it needs (a [`Trampoline::Safe`]), the thread is
//! never left on borrowed registers that lead anywhere but home: before
//! anything is changed, a signal frame holding its real registers, FPU
//! state and signal mask is written below its stack; each call runs from a
//! `syscall; ret` whose `ret` goes to an `rt_sigreturn`, and between calls
//! the registers point at that `rt_sigreturn`. A thread let go at any step
//! finishes the call at hand (all of them only read) and returns through
//! the frame to exactly its own state.
//!
//! Leaving normally: the mask and registers go back exactly as they were,
//! and the thread is interrupted once more so it stops again inside the
//! signal code, where the kernel decides about restarting an interrupted
//! system call from the original registers, just as if we had never run
//! anything.

use anyhow::{Context, Result, bail};
use nix::libc::{self, c_void, user_regs_struct};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::memory::{read_bytes, write_bytes};
use crate::fault;

/// Bytes of scratch memory offered to calls.
pub const SCRATCH: usize = 512;
/// The x86_64 ABI lets leaf code use 128 bytes below the stack pointer.
const RED_ZONE: u64 = 128;

/// The instructions injected calls run on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trampoline {
    /// A `syscall; ret` and an `rt_sigreturn` (`mov $15, %rax; syscall`):
    /// a thread let go mid-injection returns to its own state.
    Safe { syscall_ret: u64, sigreturn: u64 },
    /// A bare `syscall`: a thread let go mid-injection runs on with the
    /// borrowed registers and likely dies. Only for programs lacking the
    /// pieces of [`Trampoline::Safe`].
    Bare { syscall: u64 },
}

impl Trampoline {
    fn syscall(&self) -> u64 {
        match *self {
            Trampoline::Safe { syscall_ret, .. } => syscall_ret,
            Trampoline::Bare { syscall } => syscall,
        }
    }
}

const SYSCALL_RET: [u8; 3] = [0x0f, 0x05, 0xc3];
/// `mov $15, %rax; syscall` (glibc's `__restore_rt`) and `mov $15, %eax;
/// syscall` (musl's, Go's).
const SIGRETURNS: [&[u8]; 2] =
    [&[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05], &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]];

/// Looks for the pieces of a [`Trampoline::Safe`] in `code` mapped at
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

/// The borrowed area below the thread's stack: scratch for results and,
/// for a safe trampoline, the return frame.
struct Borrowed {
    /// Lowest address; the frame starts here.
    low: u64,
    old: Vec<u8>,
    scratch: u64,
    frame: Option<Vec<u8>>,
}

pub struct Injector {
    tid: i32,
    saved: user_regs_struct,
    saved_mask: u64,
    tramp: Trampoline,
    area: Borrowed,
    /// Registers or memory were changed and must be put back.
    dirty: bool,
    /// A SIGSTOP was held back during a call.
    stop_later: bool,
}

impl Injector {
    /// Prepares `tid` (in a PTRACE_INTERRUPT stop) to run system calls on
    /// `tramp`.
    pub fn new(tid: i32, tramp: Trampoline) -> Result<Injector> {
        let t = Pid::from_raw(tid);
        let saved = ptrace::getregs(t).with_context(|| format!("registers of task {tid}"))?;
        let saved_mask = crate::regs::dump::sigmask(tid)?;
        let scratch = (saved.rsp - RED_ZONE - SCRATCH as u64) & !15;
        let (low, frame) = match tramp {
            Trampoline::Safe { sigreturn, .. } => {
                let (fpu, xsave) = crate::regs::dump::fpu_raw(tid)?;
                let mut home = saved;
                crate::regs::dump::restart_syscall(&mut home);
                let (low, frame) = frame::build(&home, saved_mask, &fpu, xsave, scratch, sigreturn);
                (low, Some(frame))
            }
            Trampoline::Bare { .. } => (scratch, None),
        };
        let top = scratch + SCRATCH as u64;
        let old = read_bytes(tid, low, (top - low) as usize)
            .with_context(|| format!("task {tid}: the stack below {:#x} is not readable", saved.rsp))?;
        let area = Borrowed { low, old, scratch, frame };
        Ok(Injector { tid, saved, saved_mask, tramp, area, dirty: false, stop_later: false })
    }

    /// Address of the scratch area in the task.
    pub fn scratch(&self) -> u64 {
        self.area.scratch
    }

    pub fn read_scratch(&self, len: usize) -> Result<Vec<u8>> {
        read_bytes(self.tid, self.area.scratch, len.min(SCRATCH))
    }

    fn step(&self, what: &str) -> Result<()> {
        fault::step(|| format!("task {}: {what}", self.tid))
    }

    /// Writes the frame and points the thread at it, then blocks signals:
    /// in this order, a thread let go between two steps has its own mask
    /// back from the frame or never lost it.
    fn borrow(&mut self) -> Result<()> {
        let tid = self.tid;
        self.dirty = true;
        if let (Some(frame), Trampoline::Safe { sigreturn, .. }) = (&self.area.frame, self.tramp) {
            write_bytes(tid, self.area.low, frame).with_context(|| format!("task {tid}: writing the return frame"))?;
            self.step("return frame written")?;
            let mut r = self.saved;
            r.rip = sigreturn;
            r.rsp = self.area.low + 8;
            r.orig_rax = u64::MAX;
            ptrace::setregs(Pid::from_raw(tid), r).with_context(|| format!("task {tid}: pointing at the frame"))?;
            self.step("pointed at the return frame")?;
        }
        set_sigmask(tid, !0)?;
        self.step("signals blocked")
    }

    /// Runs system call `nr` with `args`; returns the raw result (negative
    /// errno on failure).
    pub fn syscall(&mut self, nr: u32, args: &[u64]) -> Result<i64> {
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        if !self.dirty {
            self.borrow()?;
        }
        let mut r = self.saved;
        r.rip = self.tramp.syscall();
        if self.area.frame.is_some() {
            // `ret` after the call pops the frame's first word: the address
            // of the rt_sigreturn.
            r.rsp = self.area.low;
        }
        r.rax = nr as u64;
        // Not inside a system call: the kernel must not restart anything
        // when it lets the thread go on to our instruction.
        r.orig_rax = u64::MAX;
        let regs = [&mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9];
        for (slot, a) in regs.into_iter().zip(args) {
            *slot = *a;
        }
        ptrace::setregs(t, r).with_context(|| format!("task {tid}: setting registers for system call {nr}"))?;
        self.step(&format!("registers set for system call {nr}"))?;
        for stage in ["entry", "exit"] {
            ptrace::syscall(t, None).with_context(|| format!("task {tid}: running system call {nr}"))?;
            self.wait_syscall_stop(nr, stage)?;
            self.step(&format!("system call {nr} {stage}"))?;
        }
        let out = ptrace::getregs(t).with_context(|| format!("task {tid}: result of system call {nr}"))?;
        if out.rip != self.tramp.syscall() + 2 {
            bail!("task {tid}: system call {nr} ended at {:#x}, not after {:#x}", out.rip, self.tramp.syscall());
        }
        Ok(out.rax as i64)
    }

    fn wait_syscall_stop(&mut self, nr: u32, stage: &str) -> Result<()> {
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        loop {
            match waitpid(t, Some(WaitPidFlag::__WALL))
                .with_context(|| format!("task {tid}: waiting for system call {nr} {stage}"))?
            {
                WaitStatus::PtraceSyscall(_) => return Ok(()),
                // The interrupt that stopped the thread may still be queued
                // and report first.
                WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => {
                    ptrace::syscall(t, None)?;
                }
                WaitStatus::Stopped(_, Signal::SIGKILL) | WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    bail!("task {tid} died during injected system call {nr}")
                }
                // A SIGSTOP sent to the program (it cannot be blocked) is
                // about to stop it on our borrowed registers: held back
                // now, sent again once the thread is itself.
                WaitStatus::Stopped(_, Signal::SIGSTOP) => {
                    self.stop_later = true;
                    ptrace::syscall(t, None)?;
                }
                other => bail!("task {tid}: unexpected {other:?} during injected system call {nr} ({stage})"),
            }
        }
    }

    /// Puts everything back and leaves the thread in an interrupt stop.
    /// True if a SIGSTOP came meanwhile: it is pending again, and the
    /// process stops once let go.
    pub fn finish(mut self) -> Result<bool> {
        let stopped = self.stop_later;
        self.restore()?;
        Ok(stopped)
    }

    /// The reverse of [`Self::borrow`], safe to be let go at every step:
    /// the mask first (the registers still lead to the frame, which holds
    /// it too); the interrupt before the registers, so that a thread let go
    /// with its own registers at a syscall exit passes through the signal
    /// code, which restarts its interrupted call; the memory last.
    fn restore(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        set_sigmask(tid, self.saved_mask)?;
        self.step("signal mask restored")?;
        ptrace::interrupt(t).with_context(|| format!("task {tid}: interrupting again"))?;
        self.step("interrupt queued")?;
        ptrace::setregs(t, self.saved).with_context(|| format!("task {tid}: restoring registers"))?;
        self.step("registers restored")?;
        write_bytes(tid, self.area.low, &self.area.old)?;
        self.step("stack restored")?;
        ptrace::cont(t, None).with_context(|| format!("task {tid}: resuming into the interrupt"))?;
        match waitpid(t, Some(WaitPidFlag::__WALL)).with_context(|| format!("task {tid}: waiting to stop"))? {
            WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => {
                if std::mem::take(&mut self.stop_later) {
                    // Pending while we hold the thread; it stops the
                    // program when we let go, as it would have.
                    nix::sys::signal::kill(Pid::from_raw(tid), Signal::SIGSTOP)
                        .with_context(|| format!("task {tid}: sending back its SIGSTOP"))?;
                }
                Ok(())
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => bail!("task {tid} died after injection"),
            other => bail!("task {tid}: unexpected {other:?} while stopping after injection"),
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        // An error path: put the thread back as well as we can before the
        // tree is released.
        let _ = self.restore();
    }
}

fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads `addr` (= 8) bytes from `data`.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK, tid, size_of::<u64>() as *mut c_void, &mask as *const u64) };
    if r < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_SETSIGMASK of task {tid}"));
    }
    Ok(())
}

/// The x86_64 `rt_sigframe` the kernel's `rt_sigreturn` reads: the return
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
