//! 32-bit ARM, EABI: `svc 0` with the number in r7 and arguments in r0-r5.
//!
//! r7 is the frame pointer in Thumb code, so only ARM-mode builds can name it
//! as an operand. The sixth argument goes in r5 (not r6, LLVM's base pointer,
//! which the kernel does not read): a mixed-up register here is invisible to
//! anonymous maps and breaks every file map at an offset, which
//! `tests/abi.rs` checks.

use core::arch::asm;

use crate::Errno;
use crate::conv::{Arg, addr, by_ref, c_int, c_uint, size, slice, zero};
use linux_raw_sys::general::{clone_args, iovec};

#[cfg(target_feature = "thumb-mode")]
compile_error!("revenant-arch needs ARM mode: r7 carries the syscall number");

/// The architecture as revenant names it in images and the blob ABI.
pub const NAME: &str = "arm";
/// The page size of 32-bit ARM Linux.
pub const PAGE_SIZE: usize = 4096;
/// `arch/arm/include/asm/shmparam.h`: a fixed-address attach must be aligned
/// to four pages (the kernel forces this even on non-aliasing caches).
pub const SHMLBA: usize = 4 * PAGE_SIZE;

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall0(nr: u32) -> usize {
    let ret;
    // SAFETY: the trap only touches the declared registers; the caller vouches
    // for the call itself.
    unsafe {
        asm!("svc 0", in("r7") nr, lateout("r0") ret, options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall1(nr: u32, a0: Arg<'_>) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0.to_asm() => ret, options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall2(nr: u32, a0: Arg<'_>, a1: Arg<'_>) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0.to_asm() => ret, in("r1") a1.to_asm(),
             options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall3(nr: u32, a0: Arg<'_>, a1: Arg<'_>, a2: Arg<'_>) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0.to_asm() => ret, in("r1") a1.to_asm(), in("r2") a2.to_asm(),
             options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall4(nr: u32, a0: Arg<'_>, a1: Arg<'_>, a2: Arg<'_>, a3: Arg<'_>) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0.to_asm() => ret, in("r1") a1.to_asm(), in("r2") a2.to_asm(),
             in("r3") a3.to_asm(), options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall5(nr: u32, a0: Arg<'_>, a1: Arg<'_>, a2: Arg<'_>, a3: Arg<'_>, a4: Arg<'_>) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0.to_asm() => ret, in("r1") a1.to_asm(), in("r2") a2.to_asm(),
             in("r3") a3.to_asm(), in("r4") a4.to_asm(), options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall6(
    nr: u32,
    a0: Arg<'_>,
    a1: Arg<'_>,
    a2: Arg<'_>,
    a3: Arg<'_>,
    a4: Arg<'_>,
    a5: Arg<'_>,
) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0.to_asm() => ret, in("r1") a1.to_asm(), in("r2") a2.to_asm(),
             in("r3") a3.to_asm(), in("r4") a4.to_asm(), in("r5") a5.to_asm(), options(nostack, preserves_flags));
    }
    ret
}

/// For calls that do not come back when they succeed.
///
/// # Safety
/// The caller must uphold whatever contract system call `nr` has, and `nr`
/// must be a call that never returns.
#[inline(always)]
pub unsafe fn syscall1_noreturn(nr: u32, a0: Arg<'_>) -> ! {
    // SAFETY: as for `syscall0`; the caller promises the call does not return.
    unsafe { asm!("svc 0", in("r7") nr, in("r0") a0.to_asm(), options(nostack, noreturn)) }
}

/// `mmap2`: ARM's only mmap, with the file offset counted in 4096-byte units.
///
/// # Safety
/// Mapping over memory that is in use (`MAP_FIXED`) invalidates it.
#[inline(always)]
pub unsafe fn mmap(
    addr: usize,
    len: usize,
    prot: u32,
    flags: u32,
    fd: i32,
    offset: u64,
) -> Result<usize, Errno> {
    if !offset.is_multiple_of(4096) || offset / 4096 > u32::MAX as u64 {
        return Err(Errno::EINVAL);
    }
    let nr = linux_raw_sys::general::__NR_mmap2;
    let pgoff = (offset / 4096) as usize;
    // SAFETY: the caller vouches for the mapping request.
    let ret =
        unsafe { syscall6(nr, crate::conv::addr(addr), size(len), c_uint(prot), c_uint(flags), c_int(fd), size(pgoff)) };
    crate::check(ret)
}

/// ARM's instruction cache does not snoop data stores: code written through
/// the data side (a relocated blob, a vDSO trampoline) must be flushed.
///
/// # Safety
/// `start..end` must be mapped.
#[inline(always)]
pub unsafe fn flush_icache(start: usize, end: usize) -> Result<(), Errno> {
    // SAFETY: cacheflush only affects caches for a range the caller vouches for.
    let ret = unsafe { syscall3(crate::consts::ARM_NR_CACHEFLUSH, addr(start), addr(end), zero()) };
    crate::check(ret).map(|_| ())
}

/// Switches to `stack_top` and calls `entry(arg)`; never returns.
///
/// # Safety
/// `entry` must be the address of an ARM-mode `extern "C" fn(usize) -> !` and
/// `stack_top` the 8-byte-aligned top of writable memory large enough for it.
/// Everything on the current stack is abandoned.
pub unsafe fn call_on_stack(entry: usize, arg: usize, stack_top: usize) -> ! {
    // SAFETY: the caller guarantees the stack and the entry point.
    unsafe {
        asm!(
            "mov sp, {stack}",
            "mov fp, #0",
            "blx {entry}",
            "udf #0",
            stack = in(reg) stack_top,
            entry = in(reg) entry,
            in("r0") arg,
            options(noreturn),
        )
    }
}

/// `preadv(2)`; EABI passes the 64-bit offset as two words.
///
/// # Safety
/// The kernel writes into every buffer the iovecs describe.
pub unsafe fn preadv(fd: i32, iov: &[iovec], offset: u64) -> Result<usize, Errno> {
    let nr = linux_raw_sys::general::__NR_preadv;
    let (lo, hi) = (offset as u32, (offset >> 32) as u32);
    let (iov, count) = slice(iov);
    // SAFETY: the kernel reads the live iovec array; the caller vouches for
    // the buffers it describes.
    crate::check(unsafe { syscall5(nr, c_int(fd), iov, count, c_uint(lo), c_uint(hi)) })
}

/// Sets the thread's TLS register (TPIDRURO) through the ARM private
/// syscall; ARM has no second base, so `_unused` is ignored.
///
/// # Safety
/// Whatever the calling thread finds through the thread pointer from now
/// on is at the new address: Rust code with thread-locals (or a C library)
/// on this thread must not run again until it is put back. The restorer
/// sets the restored thread's value just before its sigreturn.
pub unsafe fn set_tls(tls: u64, _unused: u64) -> Result<(), Errno> {
    let nr = linux_raw_sys::general::__ARM_NR_set_tls;
    // SAFETY: set_tls only changes this thread's TLS register; the caller
    // vouches that nothing depends on the old one.
    crate::check(unsafe { syscall1(nr, addr(tls as usize)) }).map(|_| ())
}

/// Stops in the debugger: a breakpoint trap (SIGTRAP).
#[inline(always)]
pub fn trap() {
    // SAFETY: the kernel's ARM undefined-instruction hook turns this
    // encoding (the one gdb uses) into SIGTRAP.
    unsafe { asm!(".inst 0xe7f001f0", options(nomem, nostack)) }
}

/// Enters `rt_sigreturn` with the stack pointer at `frame`, where the
/// kernel expects the `rt_sigframe` (siginfo, then ucontext).
///
/// # Safety
/// `frame` must hold a valid frame; everything the current thread was doing
/// is replaced by it.
pub unsafe fn rt_sigreturn(frame: usize) -> ! {
    // SAFETY: the caller guarantees the frame.
    unsafe {
        asm!(
            "mov sp, {frame}",
            "mov r7, #{nr}",
            "svc 0",
            "udf #0",
            frame = in(reg) frame,
            nr = const linux_raw_sys::general::__NR_rt_sigreturn,
            options(noreturn),
        )
    }
}

/// Reads the thread pointer (TPIDRURO): where glibc's TCB is.
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reading the user read-only thread ID register has no effect.
    unsafe { asm!("mrc p15, 0, {}, c13, c0, 3", out(reg) tp, options(nomem, nostack, preserves_flags)) };
    tp
}

/// The signal frame `rt_sigreturn` consumes, from
/// `arch/arm/include/asm/ucontext.h`, `uapi/asm/sigcontext.h` and
/// `arch/arm/kernel/signal.h`.
pub mod frame {
    /// `struct sigcontext`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SigContext {
        pub trap_no: u32,
        pub error_code: u32,
        pub oldmask: u32,
        /// r0..r10, fp (r11), ip (r12), sp, lr, pc.
        pub regs: [u32; 16],
        pub cpsr: u32,
        pub fault_address: u32,
    }

    /// `stack_t`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Stack {
        pub ss_sp: u32,
        pub ss_flags: i32,
        pub ss_size: u32,
    }

    /// `struct vfp_sigframe`: a real ARM kernel with VFP refuses a frame
    /// without it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct VfpSigframe {
        pub magic: u32,
        pub size: u32,
        pub fpregs: [u64; 32],
        pub fpscr: u32,
        pub pad: u32,
        pub fpexc: u32,
        pub fpinst: u32,
        pub fpinst2: u32,
        pub pad2: u32,
    }

    /// `struct ucontext` with its register space holding the VFP record
    /// and the terminating zero word.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct UContext {
        pub uc_flags: u32,
        pub uc_link: u32,
        pub uc_stack: Stack,
        pub uc_mcontext: SigContext,
        pub uc_sigmask: u64,
        pub unused: [u8; 120],
        pub vfp: VfpSigframe,
        pub end: u32,
        pub pad: u32,
    }

    /// `struct rt_sigframe`: where the stack pointer must point at
    /// `rt_sigreturn`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct RtSigframe {
        pub info: [u8; 128],
        pub uc: UContext,
    }

    pub const VFP_MAGIC: u32 = 0x5646_5001;

    const _: () = {
        use core::mem::offset_of;
        assert!(size_of::<SigContext>() == 84);
        assert!(offset_of!(SigContext, regs) == 12);
        assert!(offset_of!(SigContext, cpsr) == 76);
        assert!(size_of::<Stack>() == 12);
        assert!(offset_of!(UContext, uc_stack) == 8);
        assert!(offset_of!(UContext, uc_mcontext) == 20);
        assert!(offset_of!(UContext, uc_sigmask) == 104);
        // uc_regspace, 8-aligned after the 120 unused bytes.
        assert!(offset_of!(UContext, vfp) == 232);
        assert!(size_of::<UContext>() == 528);
        // struct user_vfp is padded to 8 after fpscr; user_vfp_exc follows.
        assert!(size_of::<VfpSigframe>() == 288);
        assert!(offset_of!(VfpSigframe, fpregs) == 8);
        assert!(offset_of!(VfpSigframe, fpscr) == 264);
        assert!(offset_of!(VfpSigframe, fpexc) == 272);
        assert!(offset_of!(RtSigframe, uc) == 128);
        assert!(size_of::<RtSigframe>() == 656);
    };
}

/// Creates a thread with `clone3`; the new thread runs `entry(arg)` on the
/// stack `args` names. Returns the new TID in the caller.
///
/// # Safety
/// `args` must ask for a thread (`CLONE_VM`) with a stack of its own that
/// nothing else uses; `entry` must need nothing from the caller's stack, and
/// `arg` must stay valid for as long as the new thread uses it (the borrow
/// ends, as far as the compiler knows, when this returns).
pub unsafe fn clone3_thread<T>(args: &clone_args, entry: extern "C" fn(&T) -> !, arg: &T) -> Result<usize, Errno> {
    let ret: usize;
    // SAFETY: in the parent this is a plain syscall; the child starts on its
    // own stack with a copy of the registers, so it only uses r5/r8.
    unsafe {
        asm!(
            "svc 0",
            "cmp r0, #0",
            "bne 2f",
            "mov fp, #0",
            "mov r0, r8",
            "blx r5",
            "udf #0",
            "2:",
            in("r7") linux_raw_sys::general::__NR_clone3,
            inlateout("r0") by_ref(args).to_asm() => ret,
            in("r1") size_of::<clone_args>(),
            in("r5") entry,
            in("r8") by_ref(arg).to_asm(),
        );
    }
    crate::check(ret)
}

/// `clone` for a thread where `clone3` is missing: no chosen TID.
///
/// # Safety
/// As for [`clone3_thread`], with `flags` and `stack_top` given directly.
pub unsafe fn clone_thread<T>(
    flags: usize,
    stack_top: usize,
    entry: extern "C" fn(&T) -> !,
    arg: &T,
) -> Result<usize, Errno> {
    let ret: usize;
    // SAFETY: as for clone3_thread.
    unsafe {
        asm!(
            "svc 0",
            "cmp r0, #0",
            "bne 2f",
            "mov fp, #0",
            "mov r0, r8",
            "blx r5",
            "udf #0",
            "2:",
            in("r7") linux_raw_sys::general::__NR_clone,
            inlateout("r0") flags => ret,
            in("r1") stack_top,
            in("r2") 0usize,
            in("r3") 0usize,
            in("r4") 0usize,
            in("r5") entry,
            in("r8") by_ref(arg).to_asm(),
        );
    }
    crate::check(ret)
}

/// Machine code that jumps to `target` from anywhere. Not provided on ARM
/// yet: the vDSO there is Thumb code, and qemu-user (our only ARM test
/// bed) has no vDSO to try a Thumb trampoline against.
pub fn jump_to(_target: u64) -> Option<([u8; 16], usize)> {
    None
}

/// Credential syscalls with 32-bit IDs (the plain ones take 16-bit IDs).
pub mod ids {
    use linux_raw_sys::general as g;
    pub const SETGROUPS: u32 = g::__NR_setgroups32;
    pub const SETRESUID: u32 = g::__NR_setresuid32;
    pub const SETRESGID: u32 = g::__NR_setresgid32;
    pub const SETFSUID: u32 = g::__NR_setfsuid32;
    pub const SETFSGID: u32 = g::__NR_setfsgid32;
}
