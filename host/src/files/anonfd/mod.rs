//! Files of anonymous inodes that event loops hold: eventfd, signalfd,
//! timerfd, epoll and inotify; and pidfds. Each kind keeps its three halves side by side in its
//! own module: what a dump reads from `/proc/PID/fdinfo/N`, the `files.img`
//! entry CRIU 4.2 writes for it (so CRIU restores our images and we
//! restore CRIU's), and how a restored task makes it again.
//!
//! The restore makes them in the new task before its blob runs, after its
//! other descriptors (an epoll's targets must be open), epolls last.
//! A description shared by several processes is refused for now.

use anyhow::{Result, bail};
use revenant_images::messages::{FdType, FdinfoEntry, FileEntry, FownEntry};
use revenant_images::{ImageSet, Process};

use super::FdPlan;

mod epoll;
mod eventfd;
mod fanotify;
mod fhandle;
mod inotify;
pub mod pidfd;
mod signalfd;
mod timerfd;

pub use epoll::Target;

/// One anonymous-inode file, as dumped and as restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnonFile {
    Eventfd {
        counter: u64,
        semaphore: bool,
    },
    /// Signal mask, bit `n - 1` for signal `n`.
    Signalfd {
        mask: u64,
    },
    Timerfd(timerfd::Timer),
    Epoll {
        targets: Vec<Target>,
    },
    Inotify {
        watches: Vec<inotify::Watch>,
    },
    Fanotify(fanotify::Group),
    /// A pidfd on process `pid` of the tree (`ino`: the pidfd's inode, for
    /// CRIU's entry).
    Pidfd {
        pid: i32,
        ino: u32,
    },
}

/// One file with its status flags (`O_NONBLOCK`, ...; no `O_CLOEXEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anon {
    pub flags: u32,
    pub file: AnonFile,
}

/// Reads the file behind `fd` of `pid`, whose link says `anon_inode:KIND`.
/// `None` for kinds not handled here.
pub fn dump(pid: i32, fd: i32, kind: &str, fdinfo: &str, flags: u32) -> Result<Option<Anon>> {
    let what = format!("/proc/{pid}/fdinfo/{fd}");
    let file = match kind {
        "[eventfd]" => eventfd::dump(fdinfo, &what)?,
        "[signalfd]" => signalfd::dump(fdinfo, &what)?,
        "[timerfd]" => AnonFile::Timerfd(timerfd::dump(fdinfo, &what)?),
        "[eventpoll]" => epoll::dump(pid, fd, fdinfo, &what)?,
        "inotify" => AnonFile::Inotify { watches: inotify::dump(pid, fd, fdinfo, &what)? },
        "[fanotify]" => AnonFile::Fanotify(fanotify::dump(pid, fd, fdinfo, &what)?),
        "[pidfd]" => pidfd::dump(fdinfo, flags, &what)?,
        _ => return Ok(None),
    };
    Ok(Some(Anon { flags, file }))
}

impl Anon {
    /// Its `files.img` entry.
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        let flags = self.flags;
        match &self.file {
            AnonFile::Eventfd { counter, semaphore } => eventfd::entry(id, flags, fown, *counter, *semaphore),
            AnonFile::Signalfd { mask } => signalfd::entry(id, flags, fown, *mask),
            AnonFile::Timerfd(t) => timerfd::entry(id, flags, fown, t),
            AnonFile::Epoll { targets } => epoll::entry(id, flags, fown, targets),
            AnonFile::Inotify { watches } => inotify::entry(id, flags, fown, watches),
            AnonFile::Fanotify(g) => fanotify::entry(id, flags, fown, g),
            AnonFile::Pidfd { pid, ino } => pidfd::entry(id, flags, fown, *pid, *ino),
        }
    }

    /// The `fdinfo` type of its descriptors.
    pub fn fd_type(&self) -> FdType {
        match self.file {
            AnonFile::Eventfd { .. } => FdType::Eventfd,
            AnonFile::Signalfd { .. } => FdType::Signalfd,
            AnonFile::Timerfd(_) => FdType::Timerfd,
            AnonFile::Epoll { .. } => FdType::Eventpoll,
            AnonFile::Inotify { .. } => FdType::Inotify,
            AnonFile::Fanotify(_) => FdType::Fanotify,
            AnonFile::Pidfd { .. } => FdType::Pidfd,
        }
    }

    /// What `entry` (`files.img` entry `at`) says to make; `None` if it is
    /// not one of these kinds.
    pub fn from_entry(entry: &FileEntry, at: &str) -> Result<Option<Anon>> {
        let (flags, file) = if let Some(e) = &entry.efd {
            let file = AnonFile::Eventfd { counter: e.counter, semaphore: e.semaphore.unwrap_or(false) };
            (e.flags, file)
        } else if let Some(e) = &entry.sgfd {
            (e.flags, AnonFile::Signalfd { mask: e.sigmask })
        } else if let Some(e) = &entry.tfd {
            (e.flags, AnonFile::Timerfd(timerfd::from_entry(e, at)?))
        } else if let Some(e) = &entry.epfd {
            (e.flags, AnonFile::Epoll { targets: epoll::from_entry(e) })
        } else if let Some(e) = &entry.ify {
            (e.flags, AnonFile::Inotify { watches: inotify::from_entry(e, at)? })
        } else if let Some(e) = &entry.ffy {
            (e.flags, AnonFile::Fanotify(fanotify::from_entry(e, at)?))
        } else if let Some(e) = &entry.pidfd {
            if e.nspid <= 0 {
                bail!("{at}: pidfd.nspid {}: not a process of the tree", e.nspid);
            }
            (e.flags, AnonFile::Pidfd { pid: e.nspid, ino: e.ino })
        } else {
            return Ok(None);
        };
        if flags & !(O_NONBLOCK | O_RDWR | O_WRONLY) != 0 {
            bail!("{at}: flags {flags:#o}: only O_NONBLOCK can be set again on this file");
        }
        Ok(Some(Anon { flags, file }))
    }

    /// Its signal owner, if the entry has one.
    pub fn fown(entry: &FileEntry) -> Option<&FownEntry> {
        entry
            .efd
            .as_ref()
            .map(|e| &e.fown)
            .or(entry.sgfd.as_ref().map(|e| &e.fown))
            .or(entry.tfd.as_ref().map(|e| &e.fown))
            .or(entry.epfd.as_ref().map(|e| &e.fown))
            .or(entry.ify.as_ref().map(|e| &e.fown))
            .or(entry.ffy.as_ref().map(|e| &e.fown))
            .or(entry.pidfd.as_ref().map(|e| &e.fown))
    }
}

const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_NONBLOCK: u32 = 0o4000;

/// One anonymous file a task makes at `fd` (and dups to `dups`).
#[derive(Debug, Clone)]
pub struct Make {
    pub fd: i32,
    pub cloexec: bool,
    /// Further fds on the same description, with their close-on-exec.
    pub dups: Vec<(i32, bool)>,
    pub anon: Anon,
}

/// Adds fd `f` of `p` (on `entry`, `files.img` entry `at`) to the files
/// the task makes, or, for one several processes share, to `shared` (the
/// host makes it); false if the entry is not one of these kinds.
pub fn plan_fd(
    set: &ImageSet,
    makes: &mut Vec<(u32, Make)>,
    shared: &mut Vec<FdPlan>,
    f: &FdinfoEntry,
    entry: &FileEntry,
    cloexec: bool,
    at: &str,
) -> Result<bool> {
    let Some(anon) = Anon::from_entry(entry, &format!("files.img: entry id {}", f.id))? else { return Ok(false) };
    if let AnonFile::Pidfd { pid, .. } = anon.file
        && !set.processes.iter().any(|q| q.pstree.pid == pid as u32)
    {
        bail!("{at}: fd {} is a pidfd of process {pid}, which is not in the tree", f.fd);
    }
    if let Some((_, m)) = makes.iter_mut().find(|(id, _)| *id == f.id) {
        m.dups.push((f.fd as i32, cloexec));
        return Ok(true);
    }
    if set.processes.iter().filter(|q| q.fds.iter().any(|g| g.id == f.id)).count() > 1 {
        // One object for all (a parent's made before it forked): the host
        // makes it, the tree takes the description.
        if matches!(
            anon.file,
            AnonFile::Eventfd { .. }
                | AnonFile::Signalfd { .. }
                | AnonFile::Timerfd(_)
                | AnonFile::Epoll { .. }
                | AnonFile::Fanotify(_)
        ) {
            let path = std::path::PathBuf::from(format!("anon_inode:[{:?}]", anon.fd_type()).to_lowercase());
            let flags = anon.flags as i32;
            shared.push(FdPlan {
                fd: f.fd as i32,
                id: f.id,
                path,
                flags,
                cloexec,
                shared_anon: Some(anon),
                ..Default::default()
            });
            return Ok(true);
        }
        let ty = FdType::try_from(entry.r#type).map(|t| format!("{t:?}")).unwrap_or_else(|_| entry.r#type.to_string());
        bail!("{at}: fd {} is a {ty} file that several processes share, which is not restored yet", f.fd);
    }
    makes.push((f.id, Make { fd: f.fd as i32, cloexec, dups: vec![], anon }));
    Ok(true)
}

/// Makes, once each, the eventfds, signalfds, timerfds and epolls several
/// processes of the tree share (`FdPlan::shared_anon`), in the host
/// before any process exists: (files.img id, descriptor). An epoll gets
/// its targets from [`watch_shared`].
pub fn make_shared<'a>(fds: impl IntoIterator<Item = &'a FdPlan>) -> Result<Vec<(u32, std::os::fd::OwnedFd)>> {
    use std::os::fd::FromRawFd;
    let mut out: Vec<(u32, std::os::fd::OwnedFd)> = Vec::new();
    for f in fds {
        let Some(anon) = f.shared_anon.as_ref().filter(|_| !out.iter().any(|(id, _)| *id == f.id)) else { continue };
        // SAFETY: each maker only creates a descriptor, owned at once.
        let fd = unsafe {
            match &anon.file {
                AnonFile::Eventfd { counter, semaphore } => eventfd::make(*counter, *semaphore),
                AnonFile::Signalfd { mask } => signalfd::make(*mask),
                AnonFile::Timerfd(t) => timerfd::make(t),
                // Its targets are added once everything is made.
                AnonFile::Epoll { .. } => epoll::make(),
                AnonFile::Fanotify(g) => fanotify::make(g),
                _ => Err("not a file made in the host"),
            }
        }
        .map_err(|e| anyhow::anyhow!("files.img id {}: {e}", f.id))?;
        // SAFETY: just made, ours alone.
        out.push((f.id, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }));
    }
    Ok(out)
}

/// Every epoll target must be an fd of the process (CRIU names a target
/// closed since by a dup of it, or refuses) other than an epoll.
pub fn check_targets(set: &ImageSet, p: &Process, makes: &[Make], fdinfo: &str) -> Result<()> {
    for m in makes {
        let AnonFile::Epoll { targets } = &m.anon.file else { continue };
        for t in targets {
            let Some(f) = p.fds.iter().find(|g| g.fd == t.fd) else {
                bail!("{fdinfo}: the epoll at fd {} watches fd {}, which the process does not have", m.fd, t.fd);
            };
            if set.file(f.id).is_some_and(|e| e.epfd.is_some()) {
                bail!("{fdinfo}: the epoll at fd {} watches another epoll (fd {}): not restored yet", m.fd, t.fd);
            }
        }
    }
    Ok(())
}

/// Makes every file of `all` at its numbers, epolls last (their targets
/// must exist). Runs in the new task before its blob: system calls only,
/// no allocation. On failure, says which step failed.
///
/// # Safety
/// Replaces whatever the task has at the planned fd numbers.
pub unsafe fn make_all(all: &[Make]) -> Result<(), &'static str> {
    let epolls_last = all.iter().filter(|m| !is_epoll(m)).chain(all.iter().filter(|m| is_epoll(m)));
    for m in epolls_last {
        // SAFETY: forwarded from the caller.
        unsafe { make(m)? };
    }
    Ok(())
}

fn is_epoll(m: &Make) -> bool {
    matches!(m.anon.file, AnonFile::Epoll { .. })
}

/// # Safety
/// As [`make_all`].
unsafe fn make(m: &Make) -> Result<(), &'static str> {
    use nix::libc;
    // SAFETY: each maker only creates a descriptor (and reads plan data).
    let fd = unsafe {
        match &m.anon.file {
            AnonFile::Eventfd { counter, semaphore } => eventfd::make(*counter, *semaphore)?,
            AnonFile::Signalfd { mask } => signalfd::make(*mask)?,
            AnonFile::Timerfd(t) => timerfd::make(t)?,
            AnonFile::Epoll { .. } => epoll::make()?,
            AnonFile::Inotify { watches } => inotify::make(watches)?,
            AnonFile::Fanotify(g) => fanotify::make(g)?,
            AnonFile::Pidfd { pid, .. } => pidfd::make(*pid)?,
        }
    };
    // SAFETY: plain descriptor calls on our own fds.
    unsafe {
        let placed = if fd == m.fd {
            fd
        } else {
            let r = libc::dup3(fd, m.fd, libc::O_CLOEXEC);
            libc::close(fd);
            r
        };
        if placed < 0 {
            return Err("placing an anonymous file at its fd");
        }
        let cloexec = if m.cloexec { libc::FD_CLOEXEC } else { 0 };
        if libc::fcntl(m.fd, libc::F_SETFD, cloexec) < 0
            || libc::fcntl(m.fd, libc::F_SETFL, (m.anon.flags & O_NONBLOCK) as libc::c_int) < 0
        {
            return Err("setting an anonymous file's flags");
        }
        if let AnonFile::Epoll { targets } = &m.anon.file {
            epoll::watch(m.fd, targets)?;
        }
        for &(dup, cloexec) in &m.dups {
            if libc::dup3(m.fd, dup, if cloexec { libc::O_CLOEXEC } else { 0 }) < 0 {
                return Err("duplicating an anonymous file");
            }
        }
    }
    Ok(())
}

/// The value after `key` on its line of `fdinfo` (`key: value`).
fn field<'a>(fdinfo: &'a str, key: &str, what: &str) -> Result<&'a str> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("{what}: no {key:?} line"))
}

/// Adds the targets of each epoll several processes share (made by
/// [`make_shared`]): the files its first holder watched, which the host
/// made too (`made`: files.img id and our descriptor; sockets, pipes,
/// terminals, shared event files), each under the number that process
/// added it under. A helper process does it, whose descriptor table is
/// its own to lay out: an epoll keeps the number a target was added
/// under. A target the host did not make is refused, naming it.
pub fn watch_shared(plans: &[crate::restore::plan::ProcessPlan], made: &[(u32, i32)]) -> Result<()> {
    // (epoll, target number, our descriptor of the target, events, data)
    let mut adds: Vec<(i32, i32, i32, u32, u64)> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    for p in plans {
        for f in &p.fds {
            let Some(Anon { file: AnonFile::Epoll { targets }, .. }) = &f.shared_anon else { continue };
            if seen.contains(&f.id) {
                continue;
            }
            seen.push(f.id);
            let ours = |id: u32| made.iter().find(|(m, _)| *m == id).map(|(_, fd)| *fd);
            let ep = ours(f.id).with_context(|| format!("the epoll files.img id {} was not made", f.id))?;
            for t in targets {
                let plan = p.fds.iter().find(|g| g.fd == t.fd as i32);
                if plan.is_some_and(|g| matches!(g.shared_anon, Some(Anon { file: AnonFile::Epoll { .. }, .. }))) {
                    bail!(
                        "process {}: the epoll at fd {} watches another epoll (fd {}): not restored yet",
                        p.pid,
                        f.fd,
                        t.fd
                    );
                }
                let target = plan.and_then(|g| ours(g.id));
                let Some(src) = target else {
                    bail!(
                        "process {}: the epoll at fd {} (shared with other processes) watches fd {}, which only \
                         sockets, pipes, terminals and shared event files can be for now",
                        p.pid,
                        f.fd,
                        t.fd
                    );
                };
                adds.push((ep, t.added_as.unwrap_or(t.fd) as i32, src, t.events, t.data));
            }
        }
    }
    if adds.is_empty() {
        return Ok(());
    }
    use anyhow::Context;
    let above = adds.iter().map(|a| a.1).max().unwrap_or(0) + 1;
    // SAFETY: the child runs system calls only, on data made before the
    // fork, and leaves with _exit; the parent waits for it.
    unsafe {
        match nix::libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()).context("forking a helper to fill shared epolls"),
            0 => {
                use nix::libc::{_exit, EPOLL_CTL_ADD, F_DUPFD, dup2, epoll_ctl, epoll_event, fcntl};
                // Everything we read moved above every number we fill.
                for a in adds.iter_mut() {
                    let (ep, src) = (fcntl(a.0, F_DUPFD, above), fcntl(a.2, F_DUPFD, above));
                    if ep < 0 || src < 0 {
                        _exit(1);
                    }
                    (a.0, a.2) = (ep, src);
                }
                for &(ep, num, src, events, data) in &adds {
                    let mut ev = epoll_event { events, u64: data };
                    if dup2(src, num) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, num, &mut ev) < 0 {
                        _exit(2);
                    }
                }
                _exit(0);
            }
            child => {
                let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None)
                    .context("waiting for the helper that fills shared epolls")?;
                if status != nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(child), 0) {
                    bail!("filling the epolls several processes share failed ({status:?})");
                }
            }
        }
    }
    Ok(())
}
