//! 32-bit ARM registers: general registers, VFP state, TLS.

use crate::json::Fmt;
use crate::proto::message;

message! {
    /// The kernel's `pt_regs` for ARM.
    pub struct UserArmRegsEntry ("user_arm_regs_entry") {
        1 r0: required uint32,
        2 r1: required uint32,
        3 r2: required uint32,
        4 r3: required uint32,
        5 r4: required uint32,
        6 r5: required uint32,
        7 r6: required uint32,
        8 r7: required uint32,
        9 r8: required uint32,
        10 r9: required uint32,
        11 r10: required uint32,
        12 fp: required uint32,
        13 ip: required uint32,
        14 sp: required uint32,
        15 lr: required uint32,
        16 pc: required uint32,
        17 cpsr: required uint32,
        18 orig_r0: required uint32,
    }
}

message! {
    /// d0-d31 and the VFP control registers.
    pub struct UserArmVfpstateEntry ("user_arm_vfpstate_entry") {
        1 vfp_regs: repeated uint64,
        2 fpscr: required uint32,
        3 fpexc: required uint32,
        4 fpinst: required uint32,
        5 fpinst2: required uint32,
    }
}

message! {
    /// An ARM thread's registers.
    pub struct ThreadInfoArm ("thread_info_arm") {
        1 clear_tid_addr: required uint64 [Fmt::Hex],
        /// The TPIDRURO value.
        2 tls: required uint32,
        3 gpregs: required message<UserArmRegsEntry> [Fmt::Hex],
        4 fpstate: required message<UserArmVfpstateEntry>,
    }
}
