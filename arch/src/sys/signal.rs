//! Signal dispositions, masks, queued signals and timers.

use linux_raw_sys::general as g;

use crate::conv::{by_mut, by_ref, c_int, c_uint, size, zero};
use crate::{Errno, check, syscall1, syscall2, syscall3, syscall4};

pub use linux_raw_sys::general::kernel_sigaction;

/// The kernel's `struct sigaction` (not libc's) from the words an image
/// holds. Its mask is a `kernel_sigset_t` of `unsigned long`s: on 32-bit ARM
/// it sits at offset 12, right after the restorer, where a `u64` field would
/// be aligned to 16.
pub fn kernel_sigaction(handler: usize, flags: usize, restorer: usize, mask: u64) -> kernel_sigaction {
    let mut set = g::kernel_sigset_t { sig: [0; _] };
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
    check(unsafe { syscall4(g::__NR_rt_sigaction, c_uint(signo), by_ref(act), zero(), size(8)) }).map(|_| ())
}

/// `rt_sigprocmask(how, set, NULL)` with an 8-byte set (`how` is
/// `SIG_BLOCK`, `SIG_UNBLOCK` or `SIG_SETMASK`).
///
/// # Safety
/// Unblocking lets pending signals run their handlers right away, on
/// whatever the thread's memory holds then; blocking holds back signals
/// that code on this thread may be waiting for.
pub unsafe fn rt_sigprocmask(how: u32, set: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads 8 bytes from a live local; the caller vouches
    // for the new mask.
    check(unsafe { syscall4(g::__NR_rt_sigprocmask, c_uint(how), by_ref(&set), zero(), size(8)) }).map(|_| ())
}

/// `rt_tgsigqueueinfo(tgid, tid, signo, info)`, or `rt_sigqueueinfo` for
/// the whole process when `tid` is 0.
pub fn sigqueue(tgid: u32, tid: u32, signo: u32, info: &[u8; 128]) -> Result<(), Errno> {
    let (tgid, signo, info) = (c_uint(tgid), c_uint(signo), by_ref(info));
    // SAFETY: the kernel reads 128 bytes of siginfo from a live reference.
    let r = unsafe {
        if tid == 0 {
            syscall3(g::__NR_rt_sigqueueinfo, tgid, signo, info)
        } else {
            syscall4(g::__NR_rt_tgsigqueueinfo, tgid, c_uint(tid), signo, info)
        }
    };
    check(r).map(|_| ())
}

/// `setitimer(which, new, NULL)` with the kernel's `long`-based itimerval.
pub fn setitimer(which: u32, interval: (u64, u64), value: (u64, u64)) -> Result<(), Errno> {
    let tv = |(sec, usec): (u64, u64)| g::__kernel_old_timeval { tv_sec: sec as _, tv_usec: usec as _ };
    let new = g::__kernel_old_itimerval { it_interval: tv(interval), it_value: tv(value) };
    // SAFETY: the kernel reads one itimerval from a live local.
    check(unsafe { syscall3(g::__NR_setitimer, c_uint(which), by_ref(&new), zero()) }).map(|_| ())
}

/// `timer_create(clock, sigevent, &id)`. `id` goes in as well as out: with
/// `PR_TIMER_CREATE_RESTORE_IDS` on, the kernel creates the timer with the
/// id it finds there.
pub fn timer_create(clock: i32, signo: u32, notify: u32, tid: u32, sival: u64, id: &mut i32) -> Result<(), Errno> {
    // The value is the program's own word: the kernel hands it back in the
    // siginfo without looking at it.
    let value = g::sigval { sival_ptr: core::ptr::without_provenance_mut(sival as usize) };
    let mut ev = g::sigevent {
        sigev_value: value,
        sigev_signo: signo as i32,
        sigev_notify: notify as i32,
        _sigev_un: g::sigevent__bindgen_ty_1 { _pad: [0; _] },
    };
    ev._sigev_un._tid = tid as i32;
    // SAFETY: the kernel reads the sigevent and reads/writes the id, both
    // live.
    check(unsafe { syscall3(g::__NR_timer_create, c_int(clock), by_ref(&ev), by_mut(id)) }).map(|_| ())
}

/// The kernel's `struct sigevent` is 64 bytes on every arch (its padding
/// makes it so); the thread id follows the value, signo and notify.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<g::sigevent>() == 64);
    assert!(offset_of!(g::sigevent, _sigev_un) == size_of::<usize>() + 8);
};

/// `timer_settime(id, flags, {interval, value}, NULL)` with `long` fields.
pub fn timer_settime(id: i32, flags: u32, interval: (u64, u64), value: (u64, u64)) -> Result<(), Errno> {
    let ts = |(sec, nsec): (u64, u64)| g::timespec { tv_sec: sec as _, tv_nsec: nsec as _ };
    let new = g::itimerspec { it_interval: ts(interval), it_value: ts(value) };
    // SAFETY: the kernel reads one itimerspec from a live local.
    check(unsafe { syscall4(g::__NR_timer_settime, c_int(id), c_uint(flags), by_ref(&new), zero()) }).map(|_| ())
}

/// `clock_gettime(clock)` as (seconds, nanoseconds).
pub fn clock_gettime(clock: i32) -> Result<(u64, u64), Errno> {
    let mut ts = g::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: the kernel writes one timespec into a live local.
    check(unsafe { syscall2(g::__NR_clock_gettime, c_int(clock), by_mut(&mut ts)) })?;
    Ok((ts.tv_sec as u64, ts.tv_nsec as u64))
}

/// `timer_delete(id)`.
pub fn timer_delete(id: i32) -> Result<(), Errno> {
    // SAFETY: deleting a timer touches no memory.
    check(unsafe { syscall1(g::__NR_timer_delete, c_int(id)) }).map(|_| ())
}

/// The `long`-based timer structs are four words: what the non-`_time64`
/// calls above read on both arches.
const _: () = {
    let word = size_of::<usize>();
    assert!(size_of::<g::__kernel_old_itimerval>() == 4 * word);
    assert!(size_of::<g::itimerspec>() == 4 * word);
    assert!(size_of::<g::rlimit64>() == 16);
};
