//! 32-bit ARM's pieces of an injected call. Addresses carry the
//! instruction set in bit 0, as `bx` reads them: set for Thumb (glibc's
//! armhf build is mostly Thumb-2), clear for ARM.
//!
//! Looked for: `svc 0; pop {r7}; bx lr` (the tail of glibc's Thumb-2
//! system call wrappers, in libc and ld.so; a call returns through `lr`,
//! which holds the `rt_sigreturn`'s address, after popping one word) and
//! `mov r7, #173; svc 0` (glibc's restorer), in either instruction set.
//! The byte patterns decode the same wherever they sit, so a match inside
//! other code is as good as one at a function's start.

use anyhow::{Context, Result};

use crate::regs::dump::{CPSR, CPSR_T, Gp, LR, PC, SP};

/// The ARM procedure call standard has no red zone.
pub const RED_ZONE: u64 = 0;

/// (bytes, Thumb): `svc 0; pop {r7}; bx lr`.
const SYSCALL_RET: [(&[u8], bool); 2] = [
    (&[0x00, 0x00, 0x00, 0xef, 0x04, 0x70, 0x9d, 0xe4, 0x1e, 0xff, 0x2f, 0xe1], false),
    (&[0x00, 0xdf, 0x80, 0xbc, 0x70, 0x47], true),
];
/// The word the `pop {r7}` takes off the stack before the frame.
const POPPED: u64 = 4;
/// `mov r7, #173; svc 0` as ARM, Thumb-2 (`mov.w`) and Thumb (`movs`).
const SIGRETURNS: [(&[u8], bool); 3] = [
    (&[0xad, 0x70, 0xa0, 0xe3, 0x00, 0x00, 0x00, 0xef], false),
    (&[0x4f, 0xf0, 0xad, 0x07, 0x00, 0xdf], true),
    (&[0xad, 0x27, 0x00, 0xdf], true),
];
const SVC_ARM: [u8; 4] = [0x00, 0x00, 0x00, 0xef];
const SVC_THUMB: [u8; 2] = [0x00, 0xdf];

/// The first place of `pat` in `code` (at `base`) aligned for its
/// instruction set, as an address with the Thumb bit.
fn find(code: &[u8], base: u64, pat: &[u8], thumb: bool) -> Option<u64> {
    let align: usize = if thumb { 2 } else { 4 };
    let first = (align - (base % align as u64) as usize) % align;
    (first..code.len().saturating_sub(pat.len() - 1))
        .step_by(align)
        .find(|&i| &code[i..i + pat.len()] == pat)
        .map(|i| base + i as u64 + thumb as u64)
}

/// Looks for the pieces of a safe trampoline in `code` mapped at `base`;
/// fills in what `found` still lacks.
pub fn scan(code: &[u8], base: u64, found: &mut (Option<u64>, Option<u64>)) {
    if found.0.is_none() {
        found.0 = SYSCALL_RET.iter().find_map(|&(p, t)| find(code, base, p, t));
    }
    if found.1.is_none() {
        found.1 = SIGRETURNS.iter().find_map(|&(p, t)| find(code, base, p, t));
    }
}

/// Finds an `svc 0` in `bytes` mapped at `base`, ARM first.
pub fn find_syscall_insn(bytes: &[u8], base: u64) -> Option<u64> {
    find(bytes, base, &SVC_ARM, false).or_else(|| find(bytes, base, &SVC_THUMB, true))
}

/// Not used on ARM: scanning code always finds an `svc`, and the one a
/// thread stopped at is where the kernel may restart its call.
pub fn syscall_before(_pid: i32, _r: &Gp) -> Option<u64> {
    None
}

/// Points `r` at `addr` in the instruction set its bit 0 names, outside
/// any IT block.
fn goto(r: &mut Gp, addr: u64) {
    const IT_BITS: u32 = 0x0600_fc00;
    r.r[PC] = (addr & !1) as u32;
    r.r[CPSR] &= !(IT_BITS | CPSR_T);
    if addr & 1 != 0 {
        r.r[CPSR] |= CPSR_T;
    }
}

/// The frame returning to `home` with `mask`, below `below`: where it
/// starts, and its bytes up to `below`. The frame proper follows the word
/// the trampoline pops, 8-byte aligned as `rt_sigreturn` checks.
pub fn frame(tid: i32, home: &Gp, mask: u64, below: u64, _sigreturn: u64) -> Result<(u64, Vec<u8>)> {
    let vfp = crate::regs::dump::fpregs(tid).with_context(|| format!("task {tid}: VFP state for the return frame"))?;
    let mut regs = [0u32; 16];
    regs.copy_from_slice(&home.r[..16]);
    // An invalid alternate-stack mode: sigreturn's attempt to set the
    // alternate stack from this frame fails quietly and leaves the
    // thread's own alone.
    let frame = crate::regs::frame::arm_rt_sigframe(&regs, home.r[CPSR], &vfp, mask, (0, 3, 0));
    let at = (below - frame.len() as u64) & !15;
    let low = at - POPPED;
    let mut bytes = vec![0u8; (below - low) as usize];
    bytes[POPPED as usize..POPPED as usize + frame.len()].copy_from_slice(&frame);
    Ok((low, bytes))
}

/// Registers that run the `rt_sigreturn` at `sigreturn` on the frame at
/// `low`.
pub fn at_sigreturn(saved: &Gp, sigreturn: u64, low: u64) -> Gp {
    let mut r = *saved;
    goto(&mut r, sigreturn);
    r.r[SP] = (low + POPPED) as u32;
    r
}

/// Registers that run system call `nr` with `args` at `at`; with a frame
/// at `low`, the `pop {r7}; bx lr` after the call takes the word at `low`
/// and goes to the `rt_sigreturn` with the stack at the frame.
pub fn call(saved: &Gp, at: u64, nr: u32, args: &[u64], ret: Option<(u64, u64)>) -> Gp {
    let mut r = *saved;
    goto(&mut r, at);
    if let Some((low, sigreturn)) = ret {
        r.r[SP] = low as u32;
        r.r[LR] = sigreturn as u32;
    }
    r.r[7] = nr;
    for (slot, a) in r.r[..6].iter_mut().zip(args) {
        *slot = *a as u32;
    }
    r
}

/// Whether a call run at `at` ended right after its `svc`, and its raw
/// result.
pub fn outcome(r: &Gp, at: u64) -> (bool, i64) {
    let len = if at & 1 != 0 { 2 } else { 4 };
    (r.r[PC] as u64 == (at & !1) + len, r.r[0] as i32 as i64)
}

/// At the entry stop of an injected call: the kernel may be restarting
/// the call a thread was interrupted in (when our `svc` is the one it
/// stopped after) with that call's number; ours is set here.
pub fn at_entry(tid: i32, nr: u32) -> Result<()> {
    const PTRACE_SET_SYSCALL: nix::libc::c_uint = 23;
    // SAFETY: PTRACE_SET_SYSCALL takes the number in `data`, no memory.
    let got = unsafe {
        nix::libc::ptrace(PTRACE_SET_SYSCALL, tid, std::ptr::null_mut::<nix::libc::c_void>(), nr as usize as *mut nix::libc::c_void)
    };
    if got < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_SET_SYSCALL of task {tid}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_instructions_in_either_set_aligned() {
        // A Thumb `svc 0; pop {r7}; bx lr` at an odd offset is no instruction.
        let code = [0x90, 0x00, 0xdf, 0x80, 0xbc, 0x70, 0x47, 0x90, 0x00, 0xdf, 0x80, 0xbc, 0x70, 0x47];
        let mut found = (None, None);
        super::scan(&code, 0x1000, &mut found);
        assert_eq!(found.0, Some(0x1009));
        let arm = [
            0, 0, 0, 0, 0x00, 0x00, 0x00, 0xef, 0x04, 0x70, 0x9d, 0xe4, 0x1e, 0xff, 0x2f, 0xe1, 0xad, 0x70, 0xa0, 0xe3, 0,
            0, 0, 0xef,
        ];
        let mut found = (None, None);
        super::scan(&arm, 0x2000, &mut found);
        assert_eq!(found, (Some(0x2004), Some(0x2010)));
        // glibc's Thumb-2 restorer.
        let mut found = (None, None);
        super::scan(&[0x4f, 0xf0, 0xad, 0x07, 0x00, 0xdf], 0x3000, &mut found);
        assert_eq!(found.1, Some(0x3001));
        assert_eq!(super::find_syscall_insn(&[0x00, 0xdf], 0x3000), Some(0x3001));
    }

    #[test]
    fn a_call_runs_in_the_set_its_address_names_and_returns_through_lr() {
        let mut saved = super::Gp::default();
        saved.r[super::CPSR] = 0x0600_0010;
        let r = super::call(&saved, 0x4001, 3, &[1, 2, 3], Some((0x8000, 0x5000)));
        assert_eq!((r.r[super::PC], r.r[super::CPSR], r.r[7]), (0x4000, 0x10 | super::CPSR_T, 3));
        assert_eq!((r.r[0], r.r[2], r.r[super::SP], r.r[super::LR]), (1, 3, 0x8000, 0x5000));
        let mut out = r;
        out.r[super::PC] = 0x4002;
        out.r[0] = -9i32 as u32;
        assert_eq!(super::outcome(&out, 0x4001), (true, -9));
    }
}
