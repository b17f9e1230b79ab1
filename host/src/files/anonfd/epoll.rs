//! epoll: its interest list, each target by its fd number in the owning
//! process, with the events (`EPOLLET`, `EPOLLONESHOT`, ...) and the data
//! the program gave. Events that were ready and not yet collected are
//! found again by the kernel once the targets are added.
//!
//! The kernel knows a target by its file and the fd number it was added
//! with, and keeps watching it after that fd is closed. Such a target is
//! written as CRIU writes it, by an fd of the process still open on the
//! same file (the `tfd` CRIU's restore looks up), with the number it was
//! added under in revenant's own field; the restore adds it under that
//! number again, through a short-lived dup, where the number is free.

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{EventpollFileEntry, EventpollTfdEntry, FdType, FileEntry, FownEntry};

use super::AnonFile;

/// One watched descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// An fd of the process open on the target's file.
    pub fd: u32,
    /// The number it was added under, when that is not `fd` (closed since,
    /// or holding another file now).
    pub added_as: Option<u32>,
    pub events: u32,
    pub data: u64,
}

/// The targets of epoll `fd` of `pid`. A target whose file the process no
/// longer has open anywhere is refused, as is an epoll watching another
/// epoll.
pub fn dump(pid: i32, fd: i32, fdinfo: &str, what: &str) -> Result<AnonFile> {
    let mut targets: Vec<Target> = vec![];
    let mut added: Vec<u32> = vec![];
    let dir = format!("/proc/{pid}/fd");
    let open_fds: Vec<u32> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {dir}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for line in fdinfo.lines().filter(|l| l.starts_with("tfd:")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        let bad = || format!("{what}: {line:?}");
        let tfd: u32 = at("tfd:").and_then(|v| v.parse().ok()).with_context(bad)?;
        let events = at("events:").and_then(|v| u32::from_str_radix(v, 16).ok()).with_context(bad)?;
        let data = at("data:").and_then(|v| u64::from_str_radix(v, 16).ok()).with_context(bad)?;
        // The kernel finds the n-th target added under this number.
        let toff = added.iter().filter(|&&t| t == tfd).count() as u32;
        added.push(tfd);
        let mut now = None;
        for cand in std::iter::once(tfd).chain(open_fds.iter().copied().filter(|&o| o != tfd)) {
            if same_target(pid, fd, tfd, toff, cand)? {
                now = Some(cand);
                break;
            }
        }
        let Some(now) = now else {
            bail!(
                "process {pid}: epoll fd {fd} watches a file (added as fd {tfd}) that the process no longer has \
                 open, which dump does not support yet"
            );
        };
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{now}")).unwrap_or_default();
        if link.to_string_lossy() == "anon_inode:[eventpoll]" {
            bail!("process {pid}: epoll fd {fd} watches another epoll (fd {now}), which dump does not support yet");
        }
        targets.push(Target { fd: now, added_as: (now != tfd).then_some(tfd), events, data });
    }
    Ok(AnonFile::Epoll { targets })
}

/// Whether fd `fd` of `pid` is the file epoll `efd` watches as the
/// `toff`-th target added under number `tfd`.
fn same_target(pid: i32, efd: i32, tfd: u32, toff: u32, fd: u32) -> Result<bool> {
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: libc::c_int = 7;
    let slot = Slot { efd: efd as u32, tfd, toff };
    // SAFETY: kcmp reads the slot; it compares kernel objects only.
    let r =
        unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd as libc::c_ulong, &slot as *const Slot) };
    match r {
        0 => Ok(true),
        r if r > 0 => Ok(false),
        _ => {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EBADF) | Some(libc::ENOENT) => Ok(false),
                _ => Err(e).with_context(|| format!("kcmp of epoll fd {efd} of {pid} and its target fd {tfd}")),
            }
        }
    }
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, targets: &[Target]) -> FileEntry {
    let tfd = targets
        .iter()
        .map(|t| EventpollTfdEntry {
            id,
            tfd: t.fd,
            events: t.events,
            data: t.data,
            added_as: t.added_as,
            ..Default::default()
        })
        .collect();
    FileEntry {
        r#type: FdType::Eventpoll as i32,
        id,
        epfd: Some(EventpollFileEntry { id, flags, fown, tfd, ..Default::default() }),
        ..Default::default()
    }
}

pub fn from_entry(e: &EventpollFileEntry) -> Vec<Target> {
    e.tfd
        .iter()
        .map(|t| Target { fd: t.tfd, added_as: t.added_as.filter(|&a| a != t.tfd), events: t.events, data: t.data })
        .collect()
}

/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make() -> Result<i32, &'static str> {
    // SAFETY: a plain system call.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 { Err("creating an epoll") } else { Ok(fd) }
}

/// Adds every target to epoll `epfd`; one added under a number that is
/// free now is added under it through a dup closed right after.
///
/// # Safety
/// Plain system calls on the task's own descriptors; a free number is used
/// only for the moment of the call.
pub unsafe fn watch(epfd: i32, targets: &[Target]) -> Result<(), &'static str> {
    for t in targets {
        let mut ev = libc::epoll_event { events: t.events, u64: t.data };
        // SAFETY: plain descriptor calls; the kernel reads `ev`.
        unsafe {
            let free = t.added_as.filter(|&a| libc::fcntl(a as i32, libc::F_GETFD) < 0);
            let as_fd = match free {
                Some(a) if libc::dup3(t.fd as i32, a as i32, libc::O_CLOEXEC) >= 0 => a as i32,
                _ => t.fd as i32,
            };
            let res = libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, as_fd, &mut ev);
            if as_fd != t.fd as i32 {
                libc::close(as_fd);
            }
            if res < 0 {
                return Err("adding a target to an epoll");
            }
        }
    }
    Ok(())
}
