//! The arch facts a loader needs beside the argument block: the stack rule
//! at the blob's entry, and the `rt_sigreturn` frame a restore returns
//! through (each [`revenant_blob_abi::Thread::sigframe`] points at one).
//! Offsets come from `revenant_arch::frame`, the structs the host builds
//! its own frames with, so the description is the host's practice.

use std::mem::{offset_of, size_of};

use revenant_arch::frame::*;

/// A place in the frame, counted from `Thread::sigframe`.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub doc: &'static str,
}

/// A value a loader writes into the frame (or needs for the entry).
pub type Value = (&'static str, u64, &'static str);

/// The native arch's frame and entry rules.
#[derive(Debug)]
pub struct Frame {
    /// Bytes from `Thread::sigframe` that `rt_sigreturn` reads.
    pub size: usize,
    /// `Thread::sigframe` is a multiple of this.
    pub align: usize,
    /// The stack pointer at the call into `blob_entry` is a multiple of this.
    pub stack_align: usize,
    /// The C preprocessor symbol that names this arch.
    pub c_arch: &'static str,
    pub layout: &'static str,
    pub slots: Vec<Slot>,
    pub values: Vec<Value>,
}

fn slot(name: impl Into<String>, offset: usize, size: usize, doc: &'static str) -> Slot {
    Slot { name: name.into(), offset, size, doc }
}

#[cfg(target_arch = "x86_64")]
pub fn frame() -> Frame {
    let mc = offset_of!(UContext, uc_mcontext);
    let st = offset_of!(UContext, uc_stack);
    let reg = |name: &str, off: usize| slot(name.to_uppercase(), mc + off, 8, "the register's value after the return");
    let mut slots = vec![
        slot(
            "UC_FLAGS",
            offset_of!(UContext, uc_flags),
            8,
            "UC_SIGCONTEXT_SS to take ss as written; 0 lets the kernel fix ss up; UC_FP_XSTATE with an xsave fpstate",
        ),
        slot("UC_STACK_SP", st + offset_of!(Stack, ss_sp), 8, "alternate signal stack: base"),
        slot(
            "UC_STACK_FLAGS",
            st + offset_of!(Stack, ss_flags),
            4,
            "alternate signal stack: flags; SS_DISABLE for none (0 asks for one, and a size of 0 then fails the frame)",
        ),
        slot("UC_STACK_SIZE", st + offset_of!(Stack, ss_size), 8, "alternate signal stack: size"),
    ];
    for (name, off) in [
        ("r8", offset_of!(SigContext, r8)),
        ("r9", offset_of!(SigContext, r9)),
        ("r10", offset_of!(SigContext, r10)),
        ("r11", offset_of!(SigContext, r11)),
        ("r12", offset_of!(SigContext, r12)),
        ("r13", offset_of!(SigContext, r13)),
        ("r14", offset_of!(SigContext, r14)),
        ("r15", offset_of!(SigContext, r15)),
        ("rdi", offset_of!(SigContext, rdi)),
        ("rsi", offset_of!(SigContext, rsi)),
        ("rbp", offset_of!(SigContext, rbp)),
        ("rbx", offset_of!(SigContext, rbx)),
        ("rdx", offset_of!(SigContext, rdx)),
        ("rax", offset_of!(SigContext, rax)),
        ("rcx", offset_of!(SigContext, rcx)),
        ("rsp", offset_of!(SigContext, rsp)),
        ("rip", offset_of!(SigContext, rip)),
    ] {
        slots.push(reg(name, off));
    }
    slots.extend([
        slot("EFLAGS", mc + offset_of!(SigContext, eflags), 8, "flags; the kernel keeps only the user-settable ones"),
        slot("CS", mc + offset_of!(SigContext, cs), 2, "code segment: FRAME_CS"),
        slot("SS", mc + offset_of!(SigContext, ss), 2, "stack segment: FRAME_SS"),
        slot(
            "FPSTATE",
            mc + offset_of!(SigContext, fpstate),
            8,
            "0 resets the FPU and vector state; else the address of a 64-byte aligned xsave area (with UC_FP_XSTATE)",
        ),
        slot(
            "SIGMASK",
            offset_of!(UContext, uc_sigmask),
            8,
            "the signal mask after the return: bit n-1 blocks signal n",
        ),
    ]);
    Frame {
        size: size_of::<UContext>(),
        align: 16,
        stack_align: 16,
        c_arch: "__x86_64__",
        layout: "the kernel's struct ucontext (uc_flags, uc_link, uc_stack, uc_mcontext = struct sigcontext, uc_sigmask) starts at Thread::sigframe; the 8 bytes below it are the return-address slot a delivered signal would have used (not read)",
        slots,
        values: vec![
            ("FRAME_CS", 0x33, "CS for 64-bit user code"),
            ("FRAME_SS", 0x2b, "SS for user data"),
            ("FRAME_UC_SIGCONTEXT_SS", UC_SIGCONTEXT_SS, "UC_FLAGS bit: ss is meaningful"),
            ("FRAME_SS_DISABLE", 2, "UC_STACK_FLAGS value: no alternate signal stack"),
            (
                "STACK_ALIGN",
                16,
                "the stack pointer at the call into blob_entry is a multiple of this (so it is 8 past one on arrival)",
            ),
            (
                "TASK_SIZE",
                0x7fff_ffff_f000,
                "Restore::task_size with 4-level paging (and below any 5-level mapping a process did not ask for)",
            ),
        ],
    }
}

#[cfg(target_arch = "arm")]
pub fn frame() -> Frame {
    let uc = offset_of!(RtSigframe, uc);
    let mc = uc + offset_of!(UContext, uc_mcontext);
    let st = uc + offset_of!(UContext, uc_stack);
    let regs = mc + offset_of!(SigContext, regs);
    let vfp = uc + offset_of!(UContext, vfp);
    let mut slots = vec![
        slot("UC_FLAGS", uc + offset_of!(UContext, uc_flags), 4, "0"),
        slot("UC_STACK_SP", st + offset_of!(Stack, ss_sp), 4, "alternate signal stack: base"),
        slot(
            "UC_STACK_FLAGS",
            st + offset_of!(Stack, ss_flags),
            4,
            "alternate signal stack: flags; SS_DISABLE for none (0 asks for one, and a size of 0 then fails the frame)",
        ),
        slot("UC_STACK_SIZE", st + offset_of!(Stack, ss_size), 4, "alternate signal stack: size"),
    ];
    let names = ["R0", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "FP", "IP", "SP", "LR", "PC"];
    for (i, name) in names.into_iter().enumerate() {
        slots.push(slot(name, regs + 4 * i, 4, "the register's value after the return"));
    }
    slots.extend([
        slot(
            "CPSR",
            mc + offset_of!(SigContext, cpsr),
            4,
            "user-mode CPSR: FRAME_CPSR_USR, plus the T bit for Thumb code at PC",
        ),
        slot(
            "SIGMASK",
            uc + offset_of!(UContext, uc_sigmask),
            8,
            "the signal mask after the return: bit n-1 blocks signal n",
        ),
        slot(
            "VFP_MAGIC",
            vfp + offset_of!(VfpSigframe, magic),
            4,
            "FRAME_VFP_MAGIC: a kernel (or qemu) with VFP refuses a frame without this record",
        ),
        slot("VFP_SIZE", vfp + offset_of!(VfpSigframe, size), 4, "FRAME_VFP_SIZE"),
        slot("VFP_FPREGS", vfp + offset_of!(VfpSigframe, fpregs), 256, "d0..d31"),
        slot("VFP_FPSCR", vfp + offset_of!(VfpSigframe, fpscr), 4, "FPSCR"),
        slot("VFP_FPEXC", vfp + offset_of!(VfpSigframe, fpexc), 4, "FPEXC: FRAME_FPEXC_EN set"),
        slot("REGSPACE_END", uc + offset_of!(UContext, end), 4, "0: ends the records after the VFP one"),
    ]);
    Frame {
        size: size_of::<RtSigframe>(),
        align: 8,
        stack_align: 8,
        c_arch: "__arm__",
        layout: "the kernel's struct rt_sigframe: a 128-byte siginfo (not read), then struct ucontext (uc_flags, uc_link, uc_stack, uc_mcontext = struct sigcontext, uc_sigmask, 120 unused bytes, uc_regspace holding the VFP record); Thread::sigframe is its start",
        slots,
        values: vec![
            ("FRAME_CPSR_USR", 0x10, "CPSR for user mode, ARM state, interrupts enabled"),
            ("FRAME_VFP_MAGIC", VFP_MAGIC as u64, "VFP_MAGIC value"),
            ("FRAME_VFP_SIZE", size_of::<VfpSigframe>() as u64, "VFP_SIZE value"),
            ("FRAME_FPEXC_EN", 0x4000_0000, "FPEXC enable bit"),
            ("FRAME_SS_DISABLE", 2, "UC_STACK_FLAGS value: no alternate signal stack"),
            ("STACK_ALIGN", 8, "the stack pointer at the call into blob_entry is a multiple of this (AAPCS)"),
            ("TASK_SIZE", 0xbf00_0000, "Restore::task_size on a 3G/1G kernel; qemu-user takes it too"),
        ],
    }
}

#[cfg(test)]
mod tests {
    /// Slots lie inside the frame and do not overlap.
    #[test]
    fn slots_tile_inside_the_frame() {
        let f = super::frame();
        let mut slots = f.slots.clone();
        slots.sort_by_key(|s| s.offset);
        for w in slots.windows(2) {
            assert!(w[0].offset + w[0].size <= w[1].offset, "{} overlaps {}", w[0].name, w[1].name);
        }
        let last = slots.last().unwrap();
        assert!(last.offset + last.size <= f.size, "{} past the end", last.name);
    }
}
