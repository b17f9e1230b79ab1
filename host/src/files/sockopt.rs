//! Socket options and the other small socket calls unix and inet sockets
//! share, for the dump (reading them through a copy of the program's
//! descriptor) and the restore (setting them on the host's socket).

use anyhow::{Context, Result};
use nix::libc;

/// Which buffer sizes were set by hand (the libc crate lacks it).
pub const SO_BUF_LOCK: i32 = linux_raw_sys::net::SO_BUF_LOCK as i32;

/// A socket option. Only for plain C structs and integers, for which all
/// zeroes is a value.
pub fn get<T: Copy>(s: i32, level: i32, opt: i32) -> Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    if unsafe { libc::getsockopt(s, level, opt, v.as_mut_ptr().cast(), &mut len) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("getsockopt {level}/{opt}"));
    }
    // SAFETY: zeroed, then written by the kernel; callers use plain C data.
    Ok(unsafe { v.assume_init() })
}

pub fn set<T>(s: i32, level: i32, opt: i32, v: &T) -> Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes of `v`.
    let r = unsafe { libc::setsockopt(s, level, opt, (v as *const T).cast(), size_of::<T>() as _) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setsockopt {level}/{opt}"));
    }
    Ok(())
}

/// The number of instructions of the socket filter `s` has attached (0
/// for none): `SO_GET_FILTER` answers it to an empty buffer. An eBPF
/// filter, which it cannot show (EACCES), counts as `u32::MAX`.
pub fn filter_len(s: i32) -> u32 {
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a length of 0 the kernel writes nothing but the length.
    let r = unsafe { libc::getsockopt(s, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, std::ptr::null_mut(), &mut len) };
    match r {
        0 => len,
        _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES) => u32::MAX,
        _ => 0,
    }
}

/// `shutdown`'s `how` for the kernel's shutdown bits (`RCV_SHUTDOWN` 1,
/// `SEND_SHUTDOWN` 2, as sock_diag and CRIU's images give them).
pub fn shutdown_how(bits: u32) -> Option<i32> {
    match bits & 3 {
        1 => Some(libc::SHUT_RD),
        2 => Some(libc::SHUT_WR),
        3 => Some(libc::SHUT_RDWR),
        _ => None,
    }
}
