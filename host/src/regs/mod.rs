//! Register state as the images describe it, for either arch: a restore
//! checks that the set matches the running arch before anything else.
//! The types are shared by both directions; beside them, reading a
//! stopped thread's registers at dump ([`dump`]) and, at restore, the
//! XSAVE area (`xsave`) and sigreturn frame (`frame`) built from them.

pub mod dump;
pub(crate) mod frame;
#[cfg(target_arch = "x86_64")]
pub(crate) mod xsave;

/// General registers of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regs {
    X86_64(X86Regs),
    Arm(ArmRegs),
}

impl Regs {
    pub fn arch(&self) -> &'static str {
        match self {
            Regs::X86_64(_) => "x86_64",
            Regs::Arm(_) => "arm",
        }
    }
}

/// `user_regs_struct` of x86_64, with CRIU's field names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct X86Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// ARM's `user_regs`: r0..r15 (fp = r11, ip = r12, sp, lr, pc), cpsr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArmRegs {
    pub r: [u32; 16],
    pub cpsr: u32,
    pub orig_r0: u32,
    /// The TLS register (TPIDRURO).
    pub tls: u32,
}

/// Floating-point and vector state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fpu {
    X86(Box<X86Fpu>),
    ArmVfp(Box<ArmVfp>),
}

/// x86 state as XSAVE stores it: the 512-byte legacy (FXSAVE) area, the
/// header's feature bitmap, and each extended component's bytes by
/// feature number (2 = YMM upper halves, 5 = opmask, 6 = ZMM upper halves,
/// 7 = ZMM16-31, 9 = PKRU, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X86Fpu {
    pub legacy: [u8; 512],
    pub xstate_bv: u64,
    pub components: Vec<(u32, Vec<u8>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArmVfp {
    pub fpregs: [u64; 32],
    pub fpscr: u32,
    pub fpexc: u32,
    pub fpinst: u32,
    pub fpinst2: u32,
}
