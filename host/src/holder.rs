//! What a holder process and the commands that talk to it share: a
//! process forked by a dump that outlives it and keeps descriptors for a
//! later command (the TCP keeper, `files/tcp_keeper.rs`; the write
//! tracking's holder, `dump/track_holder.rs`), reached at an abstract
//! `SOCK_SEQPACKET` address named after an image directory, spoken to in
//! one-byte commands, its descriptors handed over in `SCM_RIGHTS`.
//!
//! The functions a holder runs itself ([`send_byte`], [`recv_byte`],
//! [`peer_is_ours`], [`close_all_but`]) make system calls only: a holder
//! is forked from a multi-threaded process (`docs/architecture.md`,
//! Forks).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use nix::libc;

/// The abstract address `name` (no file on disk).
fn address(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all zeroes is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name: a NUL, then the bytes, no terminator.
    for (d, s) in a.sun_path[1..].iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len().min(a.sun_path.len() - 1);
    (a, len as libc::socklen_t)
}

fn seqpacket() -> Result<OwnedFd> {
    // SAFETY: a new socket, owned at once.
    let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

/// A connection to the holder `what` at `name`; `None` if nobody listens
/// there.
pub fn connect(name: &str, what: &str) -> Result<Option<OwnedFd>> {
    let s = seqpacket()?;
    let (a, len) = address(name);
    // SAFETY: the kernel reads `len` bytes of the address.
    if unsafe { libc::connect(s.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ENOENT) => Ok(None),
            _ => Err(e).with_context(|| format!("connecting to {what} @{name}")),
        };
    }
    Ok(Some(s))
}

/// A listening socket at `name` for the holder `what`. An earlier holder
/// there (of an earlier dump into the same directory) is told to go with
/// `quit` first.
pub fn listen(name: &str, what: &str, quit: impl Fn(&str) -> Result<bool>) -> Result<OwnedFd> {
    let listener = seqpacket()?;
    let (a, len) = address(name);
    let mut tries = 0;
    loop {
        // SAFETY: the kernel reads `len` bytes of the address.
        if unsafe { libc::bind(listener.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EADDRINUSE) || tries == 50 {
            return Err(e).with_context(|| format!("binding @{name} for {what}"));
        }
        if tries == 0 {
            quit(name)?;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a plain call on our socket.
    if unsafe { libc::listen(listener.as_raw_fd(), 16) } < 0 {
        return Err(std::io::Error::last_os_error()).context("listen");
    }
    Ok(listener)
}

/// Refuses a holder at `name` run by another user: what it hands over
/// would be someone else's.
pub fn check_peer(conn: &OwnedFd, name: &str, what: &str) -> Result<()> {
    let cred: libc::ucred = crate::files::sockopt::get(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED)?;
    // SAFETY: geteuid cannot fail.
    if cred.uid != 0 && cred.uid != unsafe { libc::geteuid() } {
        bail!("@{name} is held by process {} of uid {}, not by {what} of ours", cred.pid, cred.uid);
    }
    Ok(())
}

/// Whether the peer of `c` is root or of our uid. System calls only.
pub fn peer_is_ours(c: RawFd) -> bool {
    // SAFETY: the kernel writes at most `len` bytes into a local.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = size_of::<libc::ucred>() as libc::socklen_t;
        let got =
            libc::getsockopt(c, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len);
        got == 0 && (cred.uid == 0 || cred.uid == libc::geteuid())
    }
}

/// Sends one byte. System calls only.
pub fn send_byte(s: RawFd, b: u8) -> bool {
    // SAFETY: the kernel reads one byte.
    unsafe { libc::send(s, (&b as *const u8).cast(), 1, libc::MSG_NOSIGNAL) == 1 }
}

/// One byte, waiting through signals (a dump's handlers do not restart
/// calls). System calls only.
pub fn recv_byte(s: RawFd) -> Option<u8> {
    let mut b = 0u8;
    loop {
        // SAFETY: the kernel writes at most one byte.
        let n = unsafe { libc::recv(s, (&mut b as *mut u8).cast(), 1, 0) };
        // SAFETY: reading our errno.
        if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        return (n == 1).then_some(b);
    }
}

/// One message into `buf`, with the descriptors it carries, waiting
/// through signals: its length (negative on an error), the descriptors,
/// and whether some did not fit (under RLIMIT_NOFILE, or the control
/// buffer).
pub fn recv_rights(conn: &OwnedFd, buf: &mut [u8]) -> (isize, Vec<OwnedFd>, bool) {
    loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut ctl = [0u64; 256];
        // SAFETY: an msghdr over our buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&ctl) as _;
        // SAFETY: the kernel writes into the buffers `msg` describes.
        let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // SAFETY: just filled by recvmsg (nothing when it failed).
        let fds = if n < 0 { vec![] } else { unsafe { crate::files::unixsk::rights(&msg) } };
        return (n, fds, msg.msg_flags & libc::MSG_CTRUNC != 0);
    }
}

/// Closes every fd from 3 up but those of `keep` (sorted); one at a time
/// below `limit` where `close_range` is refused.
///
/// # Safety
/// Only in a forked child: nothing else may be using the fds it closes.
pub unsafe fn close_all_but(keep: &[RawFd], limit: u64) {
    let mut from = 3u32;
    let range = |lo: u32, hi: u32| {
        // SAFETY: the caller's promise.
        if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) } < 0 {
            for fd in lo..=hi.min(limit.min(1 << 20) as u32) {
                // SAFETY: as above.
                unsafe { libc::close(fd as RawFd) };
            }
        }
    };
    for &fd in keep.iter().filter(|&&fd| fd >= 3) {
        if (fd as u32) > from {
            range(from, fd as u32 - 1);
        }
        from = fd as u32 + 1;
    }
    range(from, u32::MAX);
}
