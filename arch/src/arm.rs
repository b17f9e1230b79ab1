//! 32-bit ARM, EABI: `svc 0` with the number in r7 and arguments in r0-r5.
//!
//! r7 is the frame pointer in Thumb code, so only ARM-mode builds can name it
//! as an operand; r6 is LLVM's base pointer and may never be an operand, so
//! six-argument calls move it in and out by hand.

use core::arch::asm;

use crate::Errno;

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
pub unsafe fn syscall1(nr: u32, a0: usize) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0 => ret, options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall2(nr: u32, a0: usize, a1: usize) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0 => ret, in("r1") a1,
             options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall3(nr: u32, a0: usize, a1: usize, a2: usize) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0 => ret, in("r1") a1, in("r2") a2,
             options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall4(nr: u32, a0: usize, a1: usize, a2: usize, a3: usize) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0 => ret, in("r1") a1, in("r2") a2,
             in("r3") a3, options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall5(nr: u32, a0: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a0 => ret, in("r1") a1, in("r2") a2,
             in("r3") a3, in("r4") a4, options(nostack, preserves_flags));
    }
    ret
}

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall6(
    nr: u32,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> usize {
    let ret;
    // SAFETY: as for `syscall0`; r6 is saved in a scratch register and put
    // back before the asm block ends, so LLVM never sees it change.
    unsafe {
        asm!(
            "mov {saved}, r6",
            "mov r6, {a5}",
            "svc 0",
            "mov r6, {saved}",
            a5 = in(reg) a5,
            saved = out(reg) _,
            in("r7") nr,
            inlateout("r0") a0 => ret,
            in("r1") a1,
            in("r2") a2,
            in("r3") a3,
            in("r4") a4,
            options(nostack, preserves_flags),
        );
    }
    ret
}

/// For calls that do not come back when they succeed.
///
/// # Safety
/// The caller must uphold whatever contract system call `nr` has, and `nr`
/// must be a call that never returns.
#[inline(always)]
pub unsafe fn syscall1_noreturn(nr: u32, a0: usize) -> ! {
    // SAFETY: as for `syscall0`; the caller promises the call does not return.
    unsafe { asm!("svc 0", in("r7") nr, in("r0") a0, options(nostack, noreturn)) }
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
    let ret = unsafe { syscall6(nr, addr, len, prot as usize, flags as usize, fd as usize, pgoff) };
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
    let ret = unsafe { syscall3(crate::consts::ARM_NR_CACHEFLUSH, start, end, 0) };
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
