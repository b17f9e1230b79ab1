//! Constants `linux-raw-sys` does not carry, each mirroring the kernel header
//! named beside it. Values that differ per arch live in the arch modules.

/// `include/uapi/linux/shm.h`: attach read-only.
pub const SHM_RDONLY: u32 = 0o10000;
/// `include/uapi/linux/shm.h`: round the attach address down to SHMLBA.
pub const SHM_RND: u32 = 0o20000;
/// `include/uapi/linux/shm.h`: take over an existing mapping at the address.
pub const SHM_REMAP: u32 = 0o40000;
/// `include/uapi/linux/shm.h`: execution allowed on the attachment.
pub const SHM_EXEC: u32 = 0o100000;

/// `arch/x86/include/uapi/asm/prctl.h`: map the 64-bit vDSO at an address.
pub const ARCH_MAP_VDSO_64: u32 = 0x2003;
/// `arch/x86/include/uapi/asm/prctl.h`: map the x32 vDSO at an address.
pub const ARCH_MAP_VDSO_X32: u32 = 0x2001;
/// `arch/x86/include/uapi/asm/prctl.h`: map the 32-bit vDSO at an address.
pub const ARCH_MAP_VDSO_32: u32 = 0x2002;

/// `arch/arm/include/uapi/asm/unistd.h`: `__ARM_NR_BASE + 2`.
pub const ARM_NR_CACHEFLUSH: u32 = 0x0f0002;

/// `arch/x86/include/uapi/asm/prctl.h`: set the gs base.
pub const ARCH_SET_GS: u32 = 0x1001;

/// `include/uapi/linux/rseq.h`: `rseq()` flag that drops a registration.
pub const RSEQ_FLAG_UNREGISTER: u32 = 1;

/// `include/uapi/linux/seccomp.h`: `seccomp()` operations.
pub const SECCOMP_SET_MODE_STRICT: u32 = 0;
pub const SECCOMP_SET_MODE_FILTER: u32 = 1;
