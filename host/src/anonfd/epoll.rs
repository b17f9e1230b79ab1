//! epoll: its interest list, each target by its fd number in the owning
//! process, with the events (`EPOLLET`, `EPOLLONESHOT`, ...) and the data
//! the program gave. Events that were ready and not yet collected are
//! found again by the kernel once the targets are added.

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{EventpollFileEntry, EventpollTfdEntry, FdType, FileEntry, FownEntry};

use super::AnonFile;

/// One watched descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub fd: u32,
    pub events: u32,
    pub data: u64,
}

/// The targets of epoll `fd` of `pid`. A target whose fd was closed (or
/// now holds another file) is still watched by the kernel through the
/// file it had: refused, as is an epoll watching another epoll.
pub fn dump(pid: i32, fd: i32, fdinfo: &str, what: &str) -> Result<AnonFile> {
    let mut targets = vec![];
    for line in fdinfo.lines().filter(|l| l.starts_with("tfd:")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        let bad = || format!("{what}: {line:?}");
        let tfd: u32 = at("tfd:").and_then(|v| v.parse().ok()).with_context(bad)?;
        let events = at("events:").and_then(|v| u32::from_str_radix(v, 16).ok()).with_context(bad)?;
        let data = at("data:").and_then(|v| u64::from_str_radix(v, 16).ok()).with_context(bad)?;
        if !same_target(pid, fd, tfd)? {
            bail!(
                "process {pid}: epoll fd {fd} watches a file that is no longer open at fd {tfd}, which dump does \
                 not support yet"
            );
        }
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{tfd}")).unwrap_or_default();
        if link.to_string_lossy() == "anon_inode:[eventpoll]" {
            bail!("process {pid}: epoll fd {fd} watches another epoll (fd {tfd}), which dump does not support yet");
        }
        targets.push(Target { fd: tfd, events, data });
    }
    Ok(AnonFile::Epoll { targets })
}

/// Whether fd `tfd` of `pid` is the file epoll `efd` watches as `tfd`.
fn same_target(pid: i32, efd: i32, tfd: u32) -> Result<bool> {
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: u64 = 7;
    let slot = Slot { efd: efd as u32, tfd, toff: 0 };
    // SAFETY: kcmp reads the slot; it compares kernel objects only.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, tfd as u64, &slot as *const Slot as u64) };
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
        .map(|t| EventpollTfdEntry { id, tfd: t.fd, events: t.events, data: t.data, ..Default::default() })
        .collect();
    FileEntry {
        r#type: FdType::Eventpoll as i32,
        id,
        epfd: Some(EventpollFileEntry { id, flags, fown, tfd, ..Default::default() }),
        ..Default::default()
    }
}

pub fn from_entry(e: &EventpollFileEntry) -> Vec<Target> {
    e.tfd.iter().map(|t| Target { fd: t.tfd, events: t.events, data: t.data }).collect()
}

/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make() -> Result<i32, &'static str> {
    // SAFETY: a plain system call.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 { Err("creating an epoll") } else { Ok(fd) }
}

/// Adds every target to epoll `epfd`.
///
/// # Safety
/// Plain system calls on the task's own descriptors.
pub unsafe fn watch(epfd: i32, targets: &[Target]) -> Result<(), &'static str> {
    for t in targets {
        let mut ev = libc::epoll_event { events: t.events, u64: t.data };
        // SAFETY: the kernel reads `ev`.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, t.fd as i32, &mut ev) } < 0 {
            return Err("adding a target to an epoll");
        }
    }
    Ok(())
}
