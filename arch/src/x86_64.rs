//! x86_64: `syscall` with the number in rax and arguments in rdi, rsi, rdx,
//! r10, r8, r9; the instruction itself clobbers rcx and r11.

use core::arch::asm;

use crate::Errno;

/// The architecture as revenant names it in images and the blob ABI.
pub const NAME: &str = "x86_64";
/// The page size of every x86_64 Linux system.
pub const PAGE_SIZE: usize = 4096;
/// `arch/x86/include/asm/shmparam.h`: SysV attaches need only page alignment.
pub const SHMLBA: usize = PAGE_SIZE;

/// # Safety
/// The caller must uphold whatever contract system call `nr` has.
#[inline(always)]
pub unsafe fn syscall0(nr: u32) -> usize {
    let ret;
    // SAFETY: the trap only touches the declared registers; the caller vouches
    // for the call itself.
    unsafe {
        asm!("syscall", inlateout("rax") nr as usize => ret,
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0,
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0, in("rsi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, in("r10") a3, lateout("rcx") _, lateout("r11") _,
             options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, in("r10") a3, in("r8") a4, lateout("rcx") _, lateout("r11") _,
             options(nostack, preserves_flags));
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
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, in("r10") a3, in("r8") a4, in("r9") a5, lateout("rcx") _,
             lateout("r11") _, options(nostack, preserves_flags));
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
    unsafe { asm!("syscall", in("rax") nr as usize, in("rdi") a0, options(nostack, noreturn)) }
}

/// `mmap`, with the file offset in bytes.
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
    let nr = linux_raw_sys::general::__NR_mmap;
    // SAFETY: the caller vouches for the mapping request.
    let ret =
        unsafe { syscall6(nr, addr, len, prot as usize, flags as usize, fd as usize, offset as usize) };
    crate::check(ret)
}

/// x86 keeps instruction fetch coherent with data stores: nothing to do.
///
/// # Safety
/// Always safe here; `unsafe` to match the other arches.
#[inline(always)]
pub unsafe fn flush_icache(_start: usize, _end: usize) -> Result<(), Errno> {
    Ok(())
}

/// Switches to `stack_top` and calls `entry(arg)`; never returns.
///
/// The frame pointer is cleared so a debugger's backtrace ends here.
///
/// # Safety
/// `entry` must be the address of an `extern "C" fn(usize) -> !` and
/// `stack_top` the 16-byte-aligned top of writable memory large enough for
/// it. Everything on the current stack is abandoned.
pub unsafe fn call_on_stack(entry: usize, arg: usize, stack_top: usize) -> ! {
    // SAFETY: the caller guarantees the stack and the entry point.
    unsafe {
        asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            stack = in(reg) stack_top,
            entry = in(reg) entry,
            in("rdi") arg,
            options(noreturn),
        )
    }
}
