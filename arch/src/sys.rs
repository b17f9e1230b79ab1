//! Typed wrappers over the raw traps, for the calls whose signature is the
//! same on every supported arch. Each returns the kernel's result unchanged
//! apart from turning `-errno` into [`Errno`].

use linux_raw_sys::general as g;

use crate::{Errno, check, syscall0, syscall1, syscall1_noreturn, syscall2, syscall3, syscall5};

/// `write(2)`.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel only reads `buf.len()` bytes from a live slice.
    check(unsafe { syscall3(g::__NR_write, fd as usize, buf.as_ptr() as usize, buf.len()) })
}

/// `write(2)` until everything is written or an error other than `EINTR`.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(Errno::EFAULT),
            Ok(n) => buf = &buf[n.min(buf.len())..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `read(2)`.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into a live slice.
    check(unsafe { syscall3(g::__NR_read, fd as usize, buf.as_mut_ptr() as usize, buf.len()) })
}

/// `close(2)`.
pub fn close(fd: i32) -> Result<(), Errno> {
    // SAFETY: closing a descriptor touches no memory.
    check(unsafe { syscall1(g::__NR_close, fd as usize) }).map(|_| ())
}

/// `getpid(2)`.
pub fn getpid() -> u32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall0(g::__NR_getpid) as u32 }
}

/// `gettid(2)`.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall0(g::__NR_gettid) as u32 }
}

/// `exit_group(2)`: ends every thread of the process.
pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes a plain integer and never returns.
    unsafe { syscall1_noreturn(g::__NR_exit_group, code as usize) }
}

/// `exit(2)`: ends the calling thread only.
pub fn exit_thread(code: i32) -> ! {
    // SAFETY: exit takes a plain integer and never returns.
    unsafe { syscall1_noreturn(g::__NR_exit, code as usize) }
}

/// `userfaultfd(2)`.
pub fn userfaultfd(flags: u32) -> Result<i32, Errno> {
    // SAFETY: creating a descriptor touches no memory.
    check(unsafe { syscall1(g::__NR_userfaultfd, flags as usize) }).map(|fd| fd as i32)
}

/// `ioctl(2)` with a pointer argument.
///
/// # Safety
/// `arg` must point at whatever `request` reads and writes, and the
/// request's side effects (on memory, for `UFFDIO_COPY`) must be wanted.
pub unsafe fn ioctl(fd: i32, request: u32, arg: usize) -> Result<usize, Errno> {
    // SAFETY: forwarded.
    check(unsafe { syscall3(g::__NR_ioctl, fd as usize, request as usize, arg) })
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` with `prog`, an array of
/// `struct sock_filter` (8 bytes each).
pub fn seccomp_filter(flags: u32, prog: &[u8]) -> Result<(), Errno> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const u8,
    }
    let len = u16::try_from(prog.len() / 8).map_err(|_| Errno::EINVAL)?;
    let fprog = SockFprog { len, filter: prog.as_ptr() };
    let op = crate::consts::SECCOMP_SET_MODE_FILTER as usize;
    // SAFETY: the kernel reads the program header and the program, both live.
    check(unsafe { syscall3(g::__NR_seccomp, op, flags as usize, &fprog as *const _ as usize) }).map(|_| ())
}

/// `seccomp(SECCOMP_SET_MODE_STRICT)`: from now on only read, write,
/// exit and sigreturn.
pub fn seccomp_strict() -> Result<(), Errno> {
    let op = crate::consts::SECCOMP_SET_MODE_STRICT as usize;
    // SAFETY: strict mode takes no memory.
    check(unsafe { syscall3(g::__NR_seccomp, op, 0, 0) }).map(|_| ())
}

/// `munmap(2)`.
///
/// # Safety
/// Nothing may use the range afterwards.
pub unsafe fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller vouches that the range is no longer used.
    check(unsafe { syscall2(g::__NR_munmap, addr, len) }).map(|_| ())
}

/// `mprotect(2)`.
///
/// # Safety
/// Removing access from memory still in use makes its next use fault.
pub unsafe fn mprotect(addr: usize, len: usize, prot: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the new protection.
    check(unsafe { syscall3(g::__NR_mprotect, addr, len, prot as usize) }).map(|_| ())
}

/// `mremap(2)` with `MREMAP_FIXED | MREMAP_MAYMOVE`: moves a mapping to `new`.
///
/// # Safety
/// Whatever was mapped at `new..new + len` is replaced, and nothing may use
/// `old` afterwards.
pub unsafe fn mremap_fixed(old: usize, old_len: usize, new: usize, len: usize) -> Result<usize, Errno> {
    let flags = (g::MREMAP_FIXED | g::MREMAP_MAYMOVE) as usize;
    // SAFETY: the caller vouches for both ranges.
    check(unsafe { syscall5(g::__NR_mremap, old, old_len, len, flags, new) })
}

pub use linux_raw_sys::general::kernel_sigaction;

/// The kernel's `struct sigaction` (not libc's) from the words an image
/// holds. Its mask is a `kernel_sigset_t` of `unsigned long`s: on 32-bit ARM
/// it sits at offset 12, right after the restorer, where a `u64` field would
/// be aligned to 16.
pub fn kernel_sigaction(handler: usize, flags: usize, restorer: usize, mask: u64) -> kernel_sigaction {
    let mut set = linux_raw_sys::general::kernel_sigset_t { sig: [0; _] };
    let bits = usize::BITS;
    for (i, word) in set.sig.iter_mut().enumerate() {
        *word = (mask >> (i as u32 * bits)) as _;
    }
    kernel_sigaction {
        // SAFETY: `Option<unsafe extern "C" fn>` is a nullable word: 0 is
        // `SIG_DFL` (None), every other value (SIG_IGN, a handler) is Some.
        // The restorer never calls it; the kernel does, in the restored
        // program whose handler it is.
        sa_handler_kernel: unsafe { core::mem::transmute::<usize, g::__kernel_sighandler_t>(handler) },
        sa_flags: flags as _,
        // SAFETY: as for the handler.
        sa_restorer: unsafe { core::mem::transmute::<usize, g::__sigrestore_t>(restorer) },
        sa_mask: set,
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    let word = size_of::<usize>();
    assert!(size_of::<kernel_sigaction>() == 3 * word + 8);
    assert!(offset_of!(kernel_sigaction, sa_mask) == 3 * word);
};

/// `rt_sigaction(2)` with an 8-byte mask.
///
/// # Safety
/// The handler runs on the next delivery of `signo` with the process's
/// memory as it is then: it must be code there, or `SIG_DFL`/`SIG_IGN`.
pub unsafe fn rt_sigaction(signo: u32, act: &kernel_sigaction) -> Result<(), Errno> {
    // SAFETY: the kernel reads one kernel_sigaction from a live reference and
    // writes nothing (no old-action pointer); the caller vouches for the
    // handler.
    check(unsafe { crate::syscall4(g::__NR_rt_sigaction, signo as usize, act as *const _ as usize, 0, 8) }).map(|_| ())
}

/// `rt_sigprocmask(how, set, NULL)` with an 8-byte set.
pub fn rt_sigprocmask(how: u32, set: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads 8 bytes from a live local.
    check(unsafe { crate::syscall4(g::__NR_rt_sigprocmask, how as usize, &set as *const u64 as usize, 0, 8) })
        .map(|_| ())
}

/// `prctl(2)` with up to four further arguments.
///
/// # Safety
/// Some options read or write memory through the arguments.
pub unsafe fn prctl(option: u32, a2: usize, a3: usize, a4: usize, a5: usize) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for what the option does with the arguments.
    check(unsafe { syscall5(g::__NR_prctl, option as usize, a2, a3, a4, a5) })
}

/// `madvise(2)`.
///
/// # Safety
/// Some advice (`MADV_DONTNEED`, `MADV_REMOVE`) discards memory contents.
pub unsafe fn madvise(addr: usize, len: usize, advice: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the advice on this range.
    check(unsafe { syscall3(g::__NR_madvise, addr, len, advice as usize) }).map(|_| ())
}

/// `set_tid_address(2)`.
pub fn set_tid_address(addr: usize) -> u32 {
    // SAFETY: the kernel only stores the pointer; it writes through it when
    // the thread exits, which is what the restored program asked for.
    unsafe { crate::syscall1(g::__NR_set_tid_address, addr) as u32 }
}

/// `set_robust_list(2)`.
pub fn set_robust_list(head: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the kernel only stores the pointer for use at thread exit.
    check(unsafe { syscall2(g::__NR_set_robust_list, head, len) }).map(|_| ())
}

/// `rseq(2)`.
///
/// # Safety
/// Registering makes the kernel write to `area` on every preemption.
pub unsafe fn rseq(area: usize, len: u32, flags: u32, sig: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the area.
    check(unsafe { crate::syscall4(g::__NR_rseq, area, len as usize, flags as usize, sig as usize) }).map(|_| ())
}

/// `mmap` that must land exactly at `addr`, replacing what is there.
///
/// # Safety
/// Whatever was mapped at the range is gone.
pub unsafe fn mmap_fixed(addr: usize, len: usize, prot: u32, flags: u32, fd: i32, offset: u64) -> Result<(), Errno> {
    // SAFETY: forwarded.
    let got = unsafe { crate::mmap(addr, len, prot, flags | g::MAP_FIXED, fd, offset) }?;
    if got == addr { Ok(()) } else { Err(Errno::EFAULT) }
}

/// `futex(FUTEX_WAIT)`: sleeps while `*word == expected`.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: the kernel only reads the live atomic.
    let _ =
        unsafe { crate::syscall4(g::__NR_futex, word.as_ptr() as usize, g::FUTEX_WAIT as usize, expected as usize, 0) };
}

/// `futex(FUTEX_WAKE)`: wakes up to `n` waiters on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32, n: u32) {
    // SAFETY: the kernel only uses the address as a key.
    let _ = unsafe { crate::syscall3(g::__NR_futex, word.as_ptr() as usize, g::FUTEX_WAKE as usize, n as usize) };
}

/// The kernel's `struct clone_args` (version 2, with `set_tid` and
/// `cgroup`): the same on every arch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// The flags of a thread sharing everything a POSIX thread shares.
pub const CLONE_THREAD_FLAGS: u64 =
    (g::CLONE_VM | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SIGHAND | g::CLONE_THREAD | g::CLONE_SYSVSEM) as u64;

/// `prlimit64(0, resource, new, NULL)`: sets one limit of this process.
pub fn set_rlimit(resource: u32, cur: u64, max: u64) -> Result<(), Errno> {
    let new = [cur, max];
    // SAFETY: the kernel reads two u64s from a live local.
    check(unsafe { crate::syscall4(g::__NR_prlimit64, 0, resource as usize, new.as_ptr() as usize, 0) }).map(|_| ())
}

/// `rt_tgsigqueueinfo(tgid, tid, signo, info)`, or `rt_sigqueueinfo` for
/// the whole process when `tid` is 0.
pub fn sigqueue(tgid: u32, tid: u32, signo: u32, info: &[u8; 128]) -> Result<(), Errno> {
    let p = info.as_ptr() as usize;
    // SAFETY: the kernel reads 128 bytes of siginfo from a live reference.
    let r = unsafe {
        if tid == 0 {
            syscall3(g::__NR_rt_sigqueueinfo, tgid as usize, signo as usize, p)
        } else {
            crate::syscall4(g::__NR_rt_tgsigqueueinfo, tgid as usize, tid as usize, signo as usize, p)
        }
    };
    check(r).map(|_| ())
}

/// `setitimer(which, new, NULL)` with the kernel's `long`-based itimerval.
pub fn setitimer(which: u32, interval: (u64, u64), value: (u64, u64)) -> Result<(), Errno> {
    let v = [interval.0 as usize, interval.1 as usize, value.0 as usize, value.1 as usize];
    // SAFETY: the kernel reads four longs from a live local.
    check(unsafe { syscall3(g::__NR_setitimer, which as usize, v.as_ptr() as usize, 0) }).map(|_| ())
}

/// `shmat(2)`: attaches SysV segment `id` at `addr` (0: anywhere).
///
/// # Safety
/// With `SHM_REMAP`, whatever was mapped at the range is replaced.
pub unsafe fn shmat(id: i32, addr: usize, flags: u32) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for the range.
    check(unsafe { syscall3(g::__NR_shmat, id as usize, addr, flags as usize) })
}

/// `timer_create(clock, sigevent, &id)`. The kernel's `struct sigevent`:
/// value (a pointer-sized union), signo, notify, then the thread id, in 64
/// bytes. `id` goes in as well as out: with `PR_TIMER_CREATE_RESTORE_IDS`
/// on, the kernel creates the timer with the id it finds there.
pub fn timer_create(clock: i32, signo: u32, notify: u32, tid: u32, sival: u64, id: &mut i32) -> Result<(), Errno> {
    let mut ev = [0u8; 64];
    let w = size_of::<usize>();
    ev[..w].copy_from_slice(&(sival as usize).to_le_bytes());
    ev[w..w + 4].copy_from_slice(&(signo as i32).to_le_bytes());
    ev[w + 4..w + 8].copy_from_slice(&(notify as i32).to_le_bytes());
    ev[w + 8..w + 12].copy_from_slice(&(tid as i32).to_le_bytes());
    // SAFETY: the kernel reads the sigevent and reads/writes the id, both
    // live locals.
    let r = unsafe { syscall3(g::__NR_timer_create, clock as usize, ev.as_ptr() as usize, id as *mut i32 as usize) };
    check(r).map(|_| ())
}

/// `timer_settime(id, 0, {interval, value}, NULL)` with `long` fields.
pub fn timer_settime(id: i32, interval: (u64, u64), value: (u64, u64)) -> Result<(), Errno> {
    let v = [interval.0 as usize, interval.1 as usize, value.0 as usize, value.1 as usize];
    // SAFETY: the kernel reads four longs from a live local.
    check(unsafe { crate::syscall4(g::__NR_timer_settime, id as usize, 0, v.as_ptr() as usize, 0) }).map(|_| ())
}

/// `timer_delete(id)`.
pub fn timer_delete(id: i32) -> Result<(), Errno> {
    // SAFETY: deleting a timer touches no memory.
    check(unsafe { crate::syscall1(g::__NR_timer_delete, id as usize) }).map(|_| ())
}
