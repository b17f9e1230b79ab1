//! pidfd: a handle on a process of the tree (`pidfd_open`), known by the
//! PID it names, which the restore gives back; or on a process that has
//! exited and been collected (its `Pid` reads -1), which the restore
//! gives back as a pidfd on a process of its own that has exited too,
//! one such process for all the pidfds that named the same one (pidfs
//! gives them one inode).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, PidfdEntry};

use crate::files::FdPlan;

use super::{AnonFile, field};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd on a thread rather than a process.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

pub fn dump(fdinfo: &str, flags: u32, what: &str) -> Result<AnonFile> {
    let pid = field(fdinfo, "Pid", what)?;
    let pid: i32 = pid.parse().with_context(|| format!("{what}: Pid {pid:?}"))?;
    let ino = field(fdinfo, "ino", what).ok().and_then(|i| i.parse().ok()).unwrap_or(0);
    match pid {
        -1 => Ok(AnonFile::Pidfd { pid, ino }),
        0 => bail!("{what}: a pidfd of a process in another PID namespace: not restored"),
        _ if flags & PIDFD_THREAD != 0 => bail!("{what}: a pidfd of a thread (PIDFD_THREAD): not restored yet"),
        _ => Ok(AnonFile::Pidfd { pid, ino }),
    }
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, pid: i32, ino: u32) -> FileEntry {
    FileEntry {
        r#type: FdType::Pidfd as i32,
        id,
        // Without the access mode, as CRIU writes it and passes it to
        // pidfd_open, which takes nothing else but PIDFD_NONBLOCK.
        pidfd: Some(PidfdEntry {
            id,
            ino,
            flags: flags & !(libc::O_RDWR as u32),
            nspid: pid,
            fown,
            ..Default::default()
        }),
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

/// Fd `f` on a pidfd of a process that had exited (`e`, CRIU's `nspid`
/// -1), which the host makes; `at` names the entry.
pub fn plan_dead(
    f: &revenant_images::messages::FdinfoEntry,
    e: &PidfdEntry,
    cloexec: bool,
    at: &str,
) -> Result<FdPlan> {
    if e.flags & !(libc::O_NONBLOCK | libc::O_RDWR) as u32 != 0 {
        bail!("{at}: pidfd.flags {:#o}: only O_NONBLOCK can be set again on a pidfd", e.flags);
    }
    let path = std::path::PathBuf::from("anon_inode:[pidfd]");
    Ok(FdPlan {
        fd: f.fd as i32,
        id: f.id,
        path,
        flags: e.flags as i32,
        cloexec,
        dead_pidfd: Some(e.ino),
        ..Default::default()
    })
}

/// Makes the pidfds of processes that had exited among `fds`, each
/// description once: per inode they had, a child of ours that exits once
/// it has a pidfd for every description, and is collected.
pub fn make_dead<'a>(fds: impl Iterator<Item = &'a FdPlan>) -> Result<Vec<(u32, OwnedFd)>> {
    let mut wanted: Vec<(u32, u32, i32)> = fds.filter_map(|f| Some((f.dead_pidfd?, f.id, f.flags))).collect();
    wanted.sort_unstable();
    wanted.dedup_by_key(|w| w.1);
    let mut out = vec![];
    for group in wanted.chunk_by(|a, b| a.0 == b.0) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
        // SAFETY: the child only reads and exits, both async-signal-safe.
        let child = match unsafe { nix::unistd::fork() }.context("forking a process to exit")? {
            nix::unistd::ForkResult::Child => {
                let mut b = [0u8; 1];
                // SAFETY: plain system calls, then the end of the child:
                // its copy of the write end closed, the read ends once ours
                // is.
                unsafe {
                    libc::close(w.as_raw_fd());
                    libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                    libc::_exit(0);
                }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(r);
        let opened: Result<Vec<(u32, OwnedFd)>> = group
            .iter()
            .map(|&(_, id, flags)| {
                let nonblock = if flags & libc::O_NONBLOCK != 0 { libc::O_NONBLOCK } else { 0 };
                // SAFETY: a plain system call; the descriptor is owned at once.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), nonblock) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error()).context("pidfd_open");
                }
                // SAFETY: just made.
                Ok((id, unsafe { OwnedFd::from_raw_fd(fd as i32) }))
            })
            .collect();
        drop(w);
        nix::sys::wait::waitpid(child, None).context("collecting the process that exited")?;
        out.extend(opened.with_context(|| format!("a pidfd of a process that has exited (inode {})", group[0].0))?);
    }
    Ok(out)
}
