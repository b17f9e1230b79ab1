//! 32-bit ARM's registers at dump: `pt_regs` (PTRACE_GETREGS), the VFP
//! bank (PTRACE_GETVFPREGS), the TLS register (PTRACE_GET_THREAD_AREA),
//! and the images' `ti_arm` built from them.

use anyhow::{Context, Result};
use nix::libc::{self, c_void};
use revenant_images::messages::{CoreEntry, Mtype, ThreadInfoArm, UserArmRegsEntry, UserArmVfpstateEntry};

use crate::regs::ArmVfp;

/// `pt_regs`: r0-r15, cpsr, orig_r0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Gp {
    pub r: [u32; 18],
}

pub const SP: usize = 13;
pub const LR: usize = 14;
pub const PC: usize = 15;
pub const CPSR: usize = 16;
pub const ORIG_R0: usize = 17;
/// The Thumb state bit of cpsr.
pub const CPSR_T: u32 = 1 << 5;

/// FPU state: d0-d31 and fpscr (ptrace hands out no more).
pub type Fpu = ArmVfp;
/// The TLS register (TPIDRURO).
pub type Tls = u32;

const PTRACE_GETREGS: libc::c_uint = 12;
const PTRACE_SETREGS: libc::c_uint = 13;
const PTRACE_GET_THREAD_AREA: libc::c_uint = 22;
const PTRACE_GETVFPREGS: libc::c_uint = 27;

/// General registers.
pub fn gpregs(tid: i32) -> Result<Gp> {
    let mut r = Gp::default();
    // SAFETY: PTRACE_GETREGS writes one 72-byte pt_regs to `data`.
    let got = unsafe { libc::ptrace(PTRACE_GETREGS, tid, std::ptr::null_mut::<c_void>(), &mut r as *mut Gp) };
    if got < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_GETREGS of task {tid}"));
    }
    Ok(r)
}

/// Sets the general registers.
pub fn set_gpregs(tid: i32, r: &Gp) -> Result<()> {
    // SAFETY: PTRACE_SETREGS reads one 72-byte pt_regs from `data`.
    let got = unsafe { libc::ptrace(PTRACE_SETREGS, tid, std::ptr::null_mut::<c_void>(), r as *const Gp) };
    if got < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_SETREGS of task {tid}"));
    }
    Ok(())
}

/// The images' machine type.
pub const MTYPE: Mtype = Mtype::Arm;

/// The length of the blob's system call instruction (`syscall`; `svc 0`
/// in ARM state, the blob being ARM code).
pub const BLOB_SYSCALL_LEN: u64 = 4;

pub fn pc(r: &Gp) -> u64 {
    r.r[PC] as u64
}

/// The first argument register.
pub fn arg0(r: &Gp) -> u64 {
    r.r[0] as u64
}

/// The breakpoint instruction reports with the pc on it: moves it past.
pub fn step_over_trap(r: &mut Gp) -> bool {
    r.r[PC] += 4;
    true
}

pub fn sp(r: &Gp) -> u64 {
    r.r[SP] as u64
}

/// d0-d31 and fpscr.
pub fn fpregs(tid: i32) -> Result<Fpu> {
    #[repr(C)]
    struct UserVfp {
        fpregs: [u64; 32],
        fpscr: u32,
    }
    let mut v = UserVfp { fpregs: [0; 32], fpscr: 0 };
    // SAFETY: PTRACE_GETVFPREGS writes one user_vfp (260 bytes) to `data`.
    let got = unsafe { libc::ptrace(PTRACE_GETVFPREGS, tid, std::ptr::null_mut::<c_void>(), &mut v as *mut UserVfp) };
    if got < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_GETVFPREGS of task {tid}"));
    }
    Ok(ArmVfp { fpregs: v.fpregs, fpscr: v.fpscr, ..Default::default() })
}

/// The TLS register.
pub fn tls(tid: i32) -> Result<Tls> {
    let mut v = 0u32;
    // SAFETY: PTRACE_GET_THREAD_AREA writes one word to `data`.
    let got = unsafe { libc::ptrace(PTRACE_GET_THREAD_AREA, tid, std::ptr::null_mut::<c_void>(), &mut v as *mut u32) };
    if got < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_GET_THREAD_AREA of task {tid}"));
    }
    Ok(v)
}

/// Nothing to rewrite: ARM's kernel rewinds an interrupted system call
/// (r0 back to orig_r0, pc back onto the `svc`) before a tracer sees the
/// stop, so the registers already repeat the call. A call the kernel
/// would have resumed through a restart block (sleeps, timed waits) is
/// repeated with its own arguments: its timeout starts again, as if the
/// freeze had lasted longer.
pub fn restart_syscall(_r: &mut Gp) {}

/// The arch part of a thread's core image.
pub fn core_regs(r: &Gp, fpu: &Fpu, tls: &Tls, clear_tid_addr: u64) -> CoreEntry {
    let g = &r.r;
    CoreEntry {
        mtype: MTYPE as i32,
        ti_arm: Some(ThreadInfoArm {
            clear_tid_addr,
            tls: *tls,
            gpregs: UserArmRegsEntry {
                r0: g[0],
                r1: g[1],
                r2: g[2],
                r3: g[3],
                r4: g[4],
                r5: g[5],
                r6: g[6],
                r7: g[7],
                r8: g[8],
                r9: g[9],
                r10: g[10],
                fp: g[11],
                ip: g[12],
                sp: g[SP],
                lr: g[LR],
                pc: g[PC],
                cpsr: g[CPSR],
                orig_r0: g[ORIG_R0],
                ..Default::default()
            },
            fpstate: UserArmVfpstateEntry {
                vfp_regs: fpu.fpregs.to_vec(),
                fpscr: fpu.fpscr,
                fpexc: fpu.fpexc,
                fpinst: fpu.fpinst,
                fpinst2: fpu.fpinst2,
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
