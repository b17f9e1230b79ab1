//! pidfd: a handle on a process of the tree (`pidfd_open`), known by the
//! PID it names, which the restore gives back.

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, PidfdEntry};

use super::{AnonFile, field};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd on a thread rather than a process.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

pub fn dump(fdinfo: &str, flags: u32, what: &str) -> Result<AnonFile> {
    let pid = field(fdinfo, "Pid", what)?;
    let pid: i32 = pid.parse().with_context(|| format!("{what}: Pid {pid:?}"))?;
    let ino = field(fdinfo, "ino", what).ok().and_then(|i| i.parse().ok()).unwrap_or(0);
    match pid {
        -1 => bail!("{what}: a pidfd of a process that has exited: not restored yet"),
        0 => bail!("{what}: a pidfd of a process in another PID namespace: not restored"),
        _ if flags & PIDFD_THREAD != 0 => bail!("{what}: a pidfd of a thread (PIDFD_THREAD): not restored yet"),
        _ => Ok(AnonFile::Pidfd { pid, ino }),
    }
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, pid: i32, ino: u32) -> FileEntry {
    FileEntry {
        r#type: FdType::Pidfd as i32,
        id,
        pidfd: Some(PidfdEntry { id, ino, flags, nspid: pid, fown, ..Default::default() }),
        ..Default::default()
    }
}

/// Opens a pidfd on `pid`, which another task of the tree may not have
/// created yet (a grandchild, a sibling): it is waited for, up to ten
/// seconds.
///
/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make(pid: i32) -> Result<i32, &'static str> {
    for _ in 0..2000 {
        // SAFETY: a plain system call.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            return Ok(fd as i32);
        }
        // SAFETY: reading our errno.
        if unsafe { *libc::__errno_location() } != libc::ESRCH {
            return Err("opening a pidfd");
        }
        let t = libc::timespec { tv_sec: 0, tv_nsec: 5_000_000 };
        // SAFETY: a plain system call on our own timespec.
        unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
    }
    Err("opening a pidfd: its process did not appear")
}
