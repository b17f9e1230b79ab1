//! x86_64: `syscall` with the number in rax and arguments in rdi, rsi, rdx,
//! r10, r8, r9; the instruction itself clobbers rcx and r11.

use core::arch::asm;

use crate::Errno;
use crate::conv::{Arg, addr, by_ref, c_int, c_uint, size, slice, zero};
use linux_raw_sys::general::{clone_args, iovec};

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
pub unsafe fn syscall1(nr: u32, a0: Arg<'_>) -> usize {
    let ret;
    // SAFETY: as for `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0.to_asm(),
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0.to_asm(), in("rsi") a1.to_asm(),
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0.to_asm(), in("rsi") a1.to_asm(),
             in("rdx") a2.to_asm(), lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0.to_asm(), in("rsi") a1.to_asm(),
             in("rdx") a2.to_asm(), in("r10") a3.to_asm(), lateout("rcx") _, lateout("r11") _,
             options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0.to_asm(), in("rsi") a1.to_asm(),
             in("rdx") a2.to_asm(), in("r10") a3.to_asm(), in("r8") a4.to_asm(), lateout("rcx") _, lateout("r11") _,
             options(nostack, preserves_flags));
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
        asm!("syscall", inlateout("rax") nr as usize => ret, in("rdi") a0.to_asm(), in("rsi") a1.to_asm(),
             in("rdx") a2.to_asm(), in("r10") a3.to_asm(), in("r8") a4.to_asm(), in("r9") a5.to_asm(), lateout("rcx") _,
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
pub unsafe fn syscall1_noreturn(nr: u32, a0: Arg<'_>) -> ! {
    // SAFETY: as for `syscall0`; the caller promises the call does not return.
    unsafe { asm!("syscall", in("rax") nr as usize, in("rdi") a0.to_asm(), options(nostack, noreturn)) }
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
    let ret = unsafe {
        syscall6(nr, crate::conv::addr(addr), size(len), c_uint(prot), c_uint(flags), c_int(fd), size(offset as usize))
    };
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

/// `preadv(2)`; the 64-bit offset travels in one register.
///
/// # Safety
/// The kernel writes into every buffer the iovecs describe.
pub unsafe fn preadv(fd: i32, iov: &[iovec], offset: u64) -> Result<usize, Errno> {
    let nr = linux_raw_sys::general::__NR_preadv;
    let (iov, count) = slice(iov);
    // SAFETY: the kernel reads the live iovec array; the caller vouches for
    // the buffers it describes.
    crate::check(unsafe { syscall5(nr, c_int(fd), iov, count, size(offset as usize), zero()) })
}

/// Sets the thread's TLS: the fs base, and the gs base (rarely used).
///
/// # Safety
/// Whatever the calling thread finds through fs or gs from now on is at the
/// new bases: Rust code with thread-locals (or a C library) on this thread
/// must not run again until they are put back. The restorer sets the
/// restored thread's bases just before its sigreturn, and uses neither.
pub unsafe fn set_tls(fs_base: u64, gs_base: u64) -> Result<(), Errno> {
    use crate::consts::ARCH_SET_GS;
    use linux_raw_sys::general::{__NR_arch_prctl, ARCH_SET_FS};
    // SAFETY: arch_prctl only changes this thread's segment bases; the caller
    // vouches that nothing depends on the old ones.
    unsafe {
        crate::check(syscall2(__NR_arch_prctl, c_uint(ARCH_SET_FS), addr(fs_base as usize)))?;
        crate::check(syscall2(__NR_arch_prctl, c_uint(ARCH_SET_GS), addr(gs_base as usize)))?;
    }
    Ok(())
}

/// Stops in the debugger: a breakpoint trap (SIGTRAP).
#[inline(always)]
pub fn trap() {
    // SAFETY: int3 raises SIGTRAP and, if a tracer handles it, continues.
    unsafe { asm!("int3", options(nomem, nostack)) }
}

/// Enters `rt_sigreturn` with the stack pointer at `frame`, where the
/// kernel expects the `ucontext` (right after the `pretcode` slot a real
/// signal delivery would have popped).
///
/// # Safety
/// `frame` must hold a valid frame; everything the current thread was doing
/// is replaced by it.
pub unsafe fn rt_sigreturn(frame: usize) -> ! {
    // SAFETY: the caller guarantees the frame.
    unsafe {
        asm!(
            "mov rsp, {frame}",
            "mov eax, {nr}",
            "syscall",
            "ud2",
            frame = in(reg) frame,
            nr = const linux_raw_sys::general::__NR_rt_sigreturn,
            options(noreturn),
        )
    }
}

/// Reads the thread pointer (the fs base): where glibc's TCB is.
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: glibc keeps the TCB's own address in its first word.
    unsafe { asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    tp
}

/// The signal frame `rt_sigreturn` consumes, from
/// `arch/x86/include/uapi/asm/sigcontext.h` and `asm/ucontext.h`.
pub mod frame {
    /// `struct sigcontext` (64-bit).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SigContext {
        pub r8: u64,
        pub r9: u64,
        pub r10: u64,
        pub r11: u64,
        pub r12: u64,
        pub r13: u64,
        pub r14: u64,
        pub r15: u64,
        pub rdi: u64,
        pub rsi: u64,
        pub rbp: u64,
        pub rbx: u64,
        pub rdx: u64,
        pub rax: u64,
        pub rcx: u64,
        pub rsp: u64,
        pub rip: u64,
        pub eflags: u64,
        pub cs: u16,
        pub gs: u16,
        pub fs: u16,
        pub ss: u16,
        pub err: u64,
        pub trapno: u64,
        pub oldmask: u64,
        pub cr2: u64,
        /// Address of the FPU/xsave area, 64-byte aligned; 0 resets the FPU.
        pub fpstate: u64,
        pub reserved: [u64; 8],
    }

    /// `stack_t`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Stack {
        pub ss_sp: u64,
        pub ss_flags: i32,
        pub pad: i32,
        pub ss_size: u64,
    }

    /// `struct ucontext`: where the stack pointer must point at
    /// `rt_sigreturn` (the kernel looks for `pretcode` 8 bytes below).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct UContext {
        pub uc_flags: u64,
        pub uc_link: u64,
        pub uc_stack: Stack,
        pub uc_mcontext: SigContext,
        pub uc_sigmask: u64,
    }

    /// `uc_flags`: the fpstate is an xsave area (with `SwReserved` magic).
    pub const UC_FP_XSTATE: u64 = 1;
    /// `uc_flags`: `ss` in the sigcontext is meaningful.
    pub const UC_SIGCONTEXT_SS: u64 = 2;
    /// `struct _fpx_sw_bytes.magic1`, in the legacy area's software bytes.
    pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
    /// Follows the xsave area, at `fpstate + xstate_size`.
    pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
    /// Where `struct _fpx_sw_bytes` sits inside the 512-byte legacy area.
    pub const SW_BYTES_OFFSET: usize = 464;
    /// The xsave area must be aligned so.
    pub const FPSTATE_ALIGN: usize = 64;

    const _: () = {
        use core::mem::offset_of;
        assert!(size_of::<SigContext>() == 256);
        assert!(offset_of!(SigContext, rip) == 128);
        assert!(offset_of!(SigContext, cs) == 144);
        assert!(offset_of!(SigContext, err) == 152);
        assert!(offset_of!(SigContext, fpstate) == 184);
        assert!(size_of::<Stack>() == 24);
        assert!(offset_of!(Stack, ss_size) == 16);
        assert!(size_of::<UContext>() == 304);
        assert!(offset_of!(UContext, uc_stack) == 16);
        assert!(offset_of!(UContext, uc_mcontext) == 40);
        assert!(offset_of!(UContext, uc_sigmask) == 296);
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
    // own stack with a copy of the registers, so it only uses r12/r13.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") linux_raw_sys::general::__NR_clone3 as usize => ret,
            in("rdi") by_ref(args).to_asm(),
            in("rsi") size_of::<clone_args>(),
            in("r12") entry,
            in("r13") by_ref(arg).to_asm(),
            lateout("rcx") _,
            lateout("r11") _,
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
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") linux_raw_sys::general::__NR_clone as usize => ret,
            in("rdi") flags,
            in("rsi") stack_top,
            in("rdx") 0usize,
            in("r10") 0usize,
            in("r8") 0usize,
            in("r12") entry,
            in("r13") by_ref(arg).to_asm(),
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    crate::check(ret)
}

/// Machine code that jumps to `target` from anywhere, clobbering only a
/// register the C ABI lets a callee clobber: `movabs rax, target; jmp rax`.
pub fn jump_to(target: u64) -> Option<([u8; 16], usize)> {
    let mut b = [0u8; 16];
    b[0..2].copy_from_slice(&[0x48, 0xb8]);
    b[2..10].copy_from_slice(&target.to_le_bytes());
    b[10..12].copy_from_slice(&[0xff, 0xe0]);
    Some((b, 12))
}

/// Credential syscalls with 32-bit IDs (x86_64 has only those).
pub mod ids {
    use linux_raw_sys::general as g;
    pub const SETGROUPS: u32 = g::__NR_setgroups;
    pub const SETRESUID: u32 = g::__NR_setresuid;
    pub const SETRESGID: u32 = g::__NR_setresgid;
    pub const SETFSUID: u32 = g::__NR_setfsuid;
    pub const SETFSGID: u32 = g::__NR_setfsgid;
}
