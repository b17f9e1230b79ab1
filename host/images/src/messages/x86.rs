//! x86_64 registers: general, FPU/SSE (the FXSAVE layout) with the
//! extended XSAVE state, and the TLS descriptors.

use crate::json::Fmt;
use crate::proto::{message, proto_enum};

proto_enum! {
    /// Whether the thread ran 64-bit or 32-bit (compat) code.
    pub enum UserX86RegsMode {
        Native = 1 => "NATIVE",
        Compat = 2 => "COMPAT",
    }
}

message! {
    /// The kernel's `user_regs_struct`, in its order.
    pub struct UserX86RegsEntry ("user_x86_regs_entry") {
        1 r15: required uint64,
        2 r14: required uint64,
        3 r13: required uint64,
        4 r12: required uint64,
        5 bp: required uint64,
        6 bx: required uint64,
        7 r11: required uint64,
        8 r10: required uint64,
        9 r9: required uint64,
        10 r8: required uint64,
        11 ax: required uint64,
        12 cx: required uint64,
        13 dx: required uint64,
        14 si: required uint64,
        15 di: required uint64,
        16 orig_ax: required uint64,
        17 ip: required uint64,
        18 cs: required uint64,
        19 flags: required uint64,
        20 sp: required uint64,
        21 ss: required uint64,
        22 fs_base: required uint64,
        23 gs_base: required uint64,
        24 ds: required uint64,
        25 es: required uint64,
        26 fs: required uint64,
        27 gs: required uint64,
        /// Absent means native.
        28 mode: optional enumeration<UserX86RegsMode>,
    }
}

message! {
    /// Shadow-stack (CET) state.
    pub struct UserX86CetEntry ("user_x86_cet_entry") {
        1 cet: required uint64 [Fmt::Hex],
        2 ssp: required uint64 [Fmt::Hex],
    }
}

message! {
    /// The XSAVE components beyond FXSAVE, each as its raw words.
    pub struct UserX86XsaveEntry ("user_x86_xsave_entry") {
        /// Which components hold state.
        1 xstate_bv: required uint64,
        /// Upper halves of ymm0-15.
        2 ymmh_space: repeated uint32,
        3 bndreg_state: repeated uint64,
        4 bndcsr_state: repeated uint64,
        /// k0-k7.
        5 opmask_reg: repeated uint64,
        /// Upper halves of zmm0-15.
        6 zmm_upper: repeated uint64,
        /// zmm16-31.
        7 hi16_zmm: repeated uint64,
        8 pkru: repeated uint32,
        9 cet: optional message<UserX86CetEntry>,
    }
}

message! {
    /// The FXSAVE area field by field, plus the XSAVE extension.
    pub struct UserX86FpregsEntry ("user_x86_fpregs_entry") {
        1 cwd: required uint32,
        2 swd: required uint32,
        3 twd: required uint32,
        4 fop: required uint32,
        5 rip: required uint64,
        6 rdp: required uint64,
        7 mxcsr: required uint32,
        8 mxcsr_mask: required uint32,
        /// st0-7, 16 bytes each.
        9 st_space: repeated uint32,
        /// xmm0-15.
        10 xmm_space: repeated uint32,
        /// Unused; kept because old images have it.
        11 padding: repeated uint32,
        13 xsave: optional message<UserX86XsaveEntry>,
    }
}

message! {
    /// A GDT TLS descriptor, as `set_thread_area` takes it.
    pub struct UserDescT ("user_desc_t") {
        1 entry_number: required uint32,
        2 base_addr: required uint32,
        3 limit: required uint32,
        4 seg_32bit: required bool,
        5 contents_h: required bool,
        6 contents_l: required bool,
        7 read_exec_only: required bool {true},
        8 limit_in_pages: required bool,
        9 seg_not_present: required bool {true},
        10 usable: required bool,
    }
}

message! {
    /// An x86 thread's registers.
    pub struct ThreadInfoX86 ("thread_info_x86") {
        /// `set_tid_address`.
        1 clear_tid_addr: required uint64 [Fmt::Hex],
        2 gpregs: required message<UserX86RegsEntry> [Fmt::Hex],
        3 fpregs: required message<UserX86FpregsEntry>,
        4 tls: repeated message<UserDescT>,
    }
}
