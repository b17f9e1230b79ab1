//! Per-thread kernel state and thread creation.

use core::sync::atomic::AtomicU32;

use linux_raw_sys::general as g;

use crate::conv::{addr, by_ref, c_int, c_uint, size, zero};
use crate::{Errno, check, syscall1, syscall1_noreturn, syscall2, syscall3, syscall4};

/// `exit(2)`: ends the calling thread only.
///
/// # Safety
/// Nothing is unwound or dropped: whatever other threads borrow from this
/// thread's stack must no longer be in use, and the stack itself must not
/// be freed while the kernel may still be on it (it clears the
/// `set_tid_address` word only after the thread is gone).
pub unsafe fn exit_thread(code: i32) -> ! {
    // SAFETY: exit takes a plain integer and never returns; the caller
    // vouches for what the thread leaves behind.
    unsafe { syscall1_noreturn(g::__NR_exit, c_int(code)) }
}

/// `futex(FUTEX_WAIT)`: sleeps while `*word == expected`.
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    let op = c_uint(g::FUTEX_WAIT);
    // SAFETY: the kernel only reads the live atomic.
    let _ = unsafe { syscall4(g::__NR_futex, by_ref(word), op, c_uint(expected), zero()) };
}

/// `futex(FUTEX_WAKE)`: wakes up to `n` waiters on `word`.
pub fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: the kernel only uses the address as a key.
    let _ = unsafe { syscall3(g::__NR_futex, by_ref(word), c_uint(g::FUTEX_WAKE), c_uint(n)) };
}

/// `set_tid_address(2)`: where the kernel writes 0 (and wakes a futex)
/// when this thread exits.
///
/// # Safety
/// `at` must stay writable for as long as the thread lives, or be 0. It is
/// the restored program's word, which its C library waits on.
pub unsafe fn set_tid_address(at: usize) -> u32 {
    // SAFETY: the kernel only stores the pointer; the caller vouches for it.
    unsafe { syscall1(g::__NR_set_tid_address, addr(at)) as u32 }
}

/// `set_robust_list(2)`.
///
/// # Safety
/// `head` must be a `struct robust_list_head` of `len` bytes that stays
/// valid for the thread's life: the kernel walks and writes the futexes it
/// lists when the thread exits.
pub unsafe fn set_robust_list(head: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the kernel only stores the pointer for use at thread exit; the
    // caller vouches for the list.
    check(unsafe { syscall2(g::__NR_set_robust_list, addr(head), size(len)) }).map(|_| ())
}

/// `rseq(2)`.
///
/// # Safety
/// Registering makes the kernel write to `area` on every preemption.
pub unsafe fn rseq(area: usize, len: u32, flags: u32, sig: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the area.
    check(unsafe { syscall4(g::__NR_rseq, addr(area), c_uint(len), c_uint(flags), c_uint(sig)) }).map(|_| ())
}

pub use linux_raw_sys::general::clone_args;

/// A `clone_args` with every field zero, to fill in with `..CLONE_ARGS_ZERO`.
pub const CLONE_ARGS_ZERO: clone_args = clone_args {
    flags: 0,
    pidfd: 0,
    child_tid: 0,
    parent_tid: 0,
    exit_signal: 0,
    stack: 0,
    stack_size: 0,
    tls: 0,
    set_tid: 0,
    set_tid_size: 0,
    cgroup: 0,
};

/// Version 2 (`CLONE_ARGS_SIZE_VER2`): with `set_tid` and `cgroup`.
const _: () = assert!(size_of::<clone_args>() == 88);

/// The flags of a thread sharing everything a POSIX thread shares.
pub const CLONE_THREAD_FLAGS: u64 =
    (g::CLONE_VM | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SIGHAND | g::CLONE_THREAD | g::CLONE_SYSVSEM) as u64;
