//! Restore half: the `rt_sigreturn` frame of each thread, the last thing
//! the blob uses, holding the dumped registers, FPU state, signal mask and
//! alternate stack. Built here, in the host, byte for byte, and placed in
//! the bootstrap area.

use anyhow::{Result, bail};

#[cfg(target_arch = "x86_64")]
use super::{Fpu, Regs};
use crate::restore::plan::ThreadPlan;

/// Room reserved for one frame (x86: ucontext + 64-byte-aligned xsave area
/// of up to ~11 KiB with AMX left out).
pub const FRAME_ROOM: usize = 16 << 10;

/// A frame placed at `at`; `sp` is the stack pointer `rt_sigreturn` wants.
#[derive(Debug)]
pub struct Frame {
    pub bytes: Vec<u8>,
    pub sp: u64,
}

#[cfg(target_arch = "x86_64")]
pub fn build(t: &ThreadPlan, at: u64) -> Result<Frame> {
    use revenant_arch::frame::*;

    let Regs::X86_64(r) = &t.regs else {
        bail!("thread {} has {} registers, but this is x86_64", t.tid, t.regs.arch());
    };
    let uc_size = size_of::<UContext>();
    let fp_off = (uc_size + 128).next_multiple_of(FPSTATE_ALIGN);
    let xsave = match &t.fpu {
        Some(Fpu::X86(f)) => Some(super::xsave::area(f)?),
        Some(Fpu::ArmVfp(_)) => bail!("thread {} has ARM VFP state, but this is x86_64", t.tid),
        None => None,
    };
    let uc = UContext {
        uc_flags: UC_SIGCONTEXT_SS | if xsave.is_some() { UC_FP_XSTATE } else { 0 },
        uc_link: 0,
        uc_stack: Stack { ss_sp: t.altstack.sp, ss_flags: t.altstack.flags, pad: 0, ss_size: t.altstack.size },
        uc_mcontext: SigContext {
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rdi: r.di,
            rsi: r.si,
            rbp: r.bp,
            rbx: r.bx,
            rdx: r.dx,
            rax: r.ax,
            rcx: r.cx,
            rsp: r.sp,
            rip: r.ip,
            eflags: r.flags,
            cs: r.cs as u16,
            gs: 0,
            fs: 0,
            ss: r.ss as u16,
            fpstate: if xsave.is_some() { at + fp_off as u64 } else { 0 },
            ..Default::default()
        },
        uc_sigmask: t.sigmask,
    };
    let mut bytes = vec![0u8; fp_off];
    // SAFETY: UContext is repr(C) plain integers; we copy its bytes.
    let raw = unsafe { std::slice::from_raw_parts((&uc as *const UContext).cast::<u8>(), uc_size) };
    bytes[..uc_size].copy_from_slice(raw);
    if let Some(x) = xsave {
        bytes.extend_from_slice(&x);
    }
    if bytes.len() > FRAME_ROOM {
        bail!("thread {}: signal frame of {} bytes exceeds the {} reserved", t.tid, bytes.len(), FRAME_ROOM);
    }
    Ok(Frame { bytes, sp: at })
}

#[cfg(target_arch = "arm")]
pub fn build(t: &ThreadPlan, at: u64) -> Result<Frame> {
    use super::{Fpu, Regs};

    let Regs::Arm(r) = &t.regs else {
        bail!("thread {} has {} registers, but this is arm", t.tid, t.regs.arch());
    };
    let vfp = match &t.fpu {
        Some(Fpu::ArmVfp(v)) => (**v).clone(),
        Some(Fpu::X86(_)) => bail!("thread {} has x86 FPU state, but this is arm", t.tid),
        None => Default::default(),
    };
    let stack = (t.altstack.sp as u32, t.altstack.flags, t.altstack.size as u32);
    Ok(Frame { bytes: arm_rt_sigframe(&r.r, r.cpsr, &vfp, t.sigmask, stack), sp: at })
}

/// The bytes of an ARM `rt_sigframe` returning to `regs` (r0-r15; the
/// Thumb state lives in `cpsr`, pc is taken as is) with `mask` and the
/// alternate stack `stack` (sp, flags, size).
#[cfg(target_arch = "arm")]
pub fn arm_rt_sigframe(regs: &[u32; 16], cpsr: u32, vfp: &super::ArmVfp, mask: u64, stack: (u32, i32, u32)) -> Vec<u8> {
    use revenant_arch::frame::*;

    let frame = RtSigframe {
        info: [0; 128],
        uc: UContext {
            uc_flags: 0,
            uc_link: 0,
            uc_stack: Stack { ss_sp: stack.0, ss_flags: stack.1, ss_size: stack.2 },
            uc_mcontext: SigContext { regs: *regs, cpsr, ..Default::default() },
            uc_sigmask: mask,
            unused: [0; 120],
            vfp: VfpSigframe {
                magic: VFP_MAGIC,
                size: size_of::<VfpSigframe>() as u32,
                fpregs: vfp.fpregs,
                fpscr: vfp.fpscr,
                pad: 0,
                // A real kernel with VFP wants EN set, or it refuses the frame.
                fpexc: vfp.fpexc | 0x4000_0000,
                fpinst: vfp.fpinst,
                fpinst2: vfp.fpinst2,
                pad2: 0,
            },
            end: 0,
            pad: 0,
        },
    };
    // SAFETY: RtSigframe is repr(C) plain integers; we copy its bytes.
    let raw =
        unsafe { std::slice::from_raw_parts((&frame as *const RtSigframe).cast::<u8>(), size_of::<RtSigframe>()) };
    raw.to_vec()
}
