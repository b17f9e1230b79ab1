//! Pipes: each end's description (`files.img` PIPE entries, shared by
//! every fd on it), and the bytes buffered in the pipe with its capacity
//! (`pipes-data.img`, one entry per pipe). The dump reads the buffer
//! without draining it (`tee` into a pipe of our own). The restore's
//! host makes each pipe once, before any task exists ([`make_all`]): its
//! capacity, its bytes written back, a descriptor per description of its
//! ends; the tree's root places them at their slots (`tree_files.rs`) and
//! each task dups them to the fds that had them. Named pipes (`fifo.rs`)
//! store their bytes the same way.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FdinfoEntry, FileEntry, FownEntry, PipeDataEntry, PipeEntry};
use revenant_images::{ImageSet, Kind, Writer};

use crate::procfs;

/// One end's description, as the dump saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeFile {
    /// The pipe's inode: the two ends of one pipe share it.
    pub pipe_id: u32,
    pub flags: u32,
    /// A process outside the tree holds the pipe too
    /// ([`super::Files::pipes_outside`]).
    pub outside: bool,
}

/// Bytes sitting in a pipe's buffer at dump time, and its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeData {
    pub pipe_id: u32,
    pub data: Vec<u8>,
    pub size: u32,
}

/// The bytes in the pipe behind `fd` of `pid`, left in place, and its
/// capacity: the pipe is opened through /proc and `tee`d into a pipe of our
/// own.
pub fn contents(pid: i32, fd: i32) -> Result<(Vec<u8>, u32)> {
    use nix::fcntl::OFlag;
    let p = procfs::path(pid, &format!("fd/{fd}"));
    let src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .with_context(|| format!("opening {} to read its buffered data", p.display()))?;
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(src.as_raw_fd(), libc::FIONREAD, &mut queued) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("FIONREAD on {}", p.display()));
    }
    let size = nix::fcntl::fcntl(&src, nix::fcntl::FcntlArg::F_GETPIPE_SZ)
        .with_context(|| format!("F_GETPIPE_SZ on {}", p.display()))? as u32;
    if queued <= 0 {
        return Ok((Vec::new(), size));
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context("creating a pipe")?;
    // Our pipe must hold everything the source holds.
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(queued.max(4096)));
    // SAFETY: tee only moves buffer references between two pipes we hold.
    let n = unsafe { libc::tee(src.as_raw_fd(), w.as_raw_fd(), queued as usize, libc::SPLICE_F_NONBLOCK) };
    // A reader outside the frozen tree (a test harness reading the
    // program's stderr) may have taken the bytes since FIONREAD: what is
    // left is what the pipe holds.
    let n = match n {
        n if n >= 0 => n as usize,
        _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => return Ok((Vec::new(), size)),
        _ => {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("copying the data of pipe fd {fd} of process {pid}"));
        }
    };
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        got += nix::unistd::read(&r, &mut data[got..]).context("reading copied pipe data")?;
    }
    Ok((data, size))
}

impl PipeFile {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        FileEntry {
            r#type: FdType::Pipe as i32,
            id,
            pipe: Some(PipeEntry {
                id,
                pipe_id: self.pipe_id,
                flags: self.flags,
                fown,
                outside: self.outside.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl super::Files {
    /// Once every fd is seen: marks each pipe a process outside the tree
    /// holds too, and says, for the dump's warnings, what a restore of it
    /// will need. A restore makes a new pipe, which that process would not
    /// hold: a reader would see the end of its input at once, a writer
    /// `EPIPE`.
    ///
    /// Only pipes the tree holds one end of are asked: the kernel counts
    /// the openers of each end, and `poll` on the tree's own description
    /// shows whether the other end has any (`POLLHUP` on a read end once
    /// no writer is left, `POLLERR` on a write end once no reader is). A
    /// pipe the tree holds both ends of, and an outside process too, is
    /// not seen: only a walk of every process's fds would show it.
    pub fn pipes_outside(&mut self) -> Result<Vec<String>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        // Per pipe: the first description of each direction the tree has
        // (ends in flight in queued messages included).
        let mut ends: Vec<(u32, [Option<u32>; 2])> = vec![];
        for e in &self.entries {
            let super::FileKind::Pipe(p) = &e.kind else { continue };
            let at = match ends.iter().position(|(id, _)| *id == p.pipe_id) {
                Some(at) => at,
                None => {
                    ends.push((p.pipe_id, [None; 2]));
                    ends.len() - 1
                }
            };
            let mode = p.flags as i32 & libc::O_ACCMODE;
            for (dir, held) in [(0, mode != libc::O_WRONLY), (1, mode != libc::O_RDONLY)] {
                if held && ends[at].1[dir].is_none() {
                    ends[at].1[dir] = Some(e.id);
                }
            }
        }
        let mut said = vec![];
        for (pipe_id, dirs) in ends {
            let (id, write) = match dirs {
                [Some(r), None] => (r, false),
                [None, Some(w)] => (w, true),
                _ => continue,
            };
            let Some(&(pid, fd, ..)) = self.descriptions.iter().find(|d| d.4 == id) else { continue };
            let ours = procfs::borrow_fd(pid, fd)?;
            let mut pfd = [PollFd::new(ours.as_fd(), if write { PollFlags::POLLOUT } else { PollFlags::POLLIN })];
            poll(&mut pfd, PollTimeout::ZERO).with_context(|| format!("poll on pipe:[{pipe_id}]"))?;
            let gone = pfd[0].revents().unwrap_or(PollFlags::empty());
            if gone.intersects(if write { PollFlags::POLLERR } else { PollFlags::POLLHUP }) {
                continue;
            }
            for e in &mut self.entries {
                if let super::FileKind::Pipe(p) = &mut e.kind
                    && p.pipe_id == pipe_id
                {
                    p.outside = true;
                }
            }
            let (other, key) = (if write { "read" } else { "write" }, format!("pipe:[{pipe_id}]"));
            let who = if pid == std::process::id() as i32 {
                "in flight in a queued message".to_string()
            } else {
                format!("fd {fd} of process {pid}")
            };
            said.push(format!(
                "{key} ({who}): its {other} end is open outside the dumped tree; a restore connects it to \
                 nobody unless given a pipe to use instead: --inherit-fd 'fd[N]:{key}' (N a descriptor of revenant's)"
            ));
        }
        Ok(said)
    }
}

/// `pipes-data.img` or `fifo-data.img` (`kind`): an entry per pipe, its
/// bytes right after it.
pub fn data_image(kind: Kind, data: &[PipeData]) -> Writer {
    let mut w = Writer::new(kind);
    for d in data {
        let e =
            PipeDataEntry { pipe_id: d.pipe_id, bytes: d.data.len() as u32, size: Some(d.size), ..Default::default() };
        w.push(&e);
        w.raw(&d.data);
    }
    w
}

/// One pipe: the open descriptions of its ends and what was buffered in it.
#[derive(Debug, Clone, Default)]
pub struct PipePlan {
    pub pipe_id: u32,
    /// Each open description of either end, readers and writers alike
    /// (a pipe reopened through `/proc/PID/fd` has several).
    pub ends: Vec<PipeEnd>,
    /// Written into the pipe before the program runs.
    pub data: Vec<u8>,
    /// Its capacity (`F_SETPIPE_SZ`), if the images say.
    pub size: Option<u32>,
}

/// One open description of a pipe's end.
#[derive(Debug, Clone, Default)]
pub struct PipeEnd {
    /// The `files.img` id.
    pub id: u32,
    pub write: bool,
    /// Status flags (`O_NONBLOCK`, ...).
    pub flags: i32,
    /// (fd, close-on-exec) of each fd of this process on it.
    pub fds: Vec<(i32, bool)>,
    /// The host's descriptor of it, once made.
    pub object_fd: Option<i32>,
}

/// Adds fd `f` (on pipe end `pe`) to a process's pipes, the pipe and the
/// end first if this is the first fd on them.
pub fn plan_fd(set: &ImageSet, pipes: &mut Vec<PipePlan>, f: &FdinfoEntry, pe: &PipeEntry, cloexec: bool) {
    let at = match pipes.iter().position(|x| x.pipe_id == pe.pipe_id) {
        Some(at) => at,
        None => {
            let (data, size) = set
                .pipes_data
                .iter()
                .find(|(e, _)| e.pipe_id == pe.pipe_id)
                .map(|(e, d)| (d.clone(), e.size))
                .unwrap_or_default();
            pipes.push(PipePlan { pipe_id: pe.pipe_id, data, size, ..Default::default() });
            pipes.len() - 1
        }
    };
    let ends = &mut pipes[at].ends;
    let end = match ends.iter().position(|e| e.id == f.id) {
        Some(e) => e,
        None => {
            let flags = pe.flags as i32 & !libc::O_ACCMODE;
            let write = pe.flags as i32 & libc::O_ACCMODE == libc::O_WRONLY;
            ends.push(PipeEnd { id: f.id, write, flags, fds: Vec::new(), object_fd: None });
            ends.len() - 1
        }
    };
    ends[end].fds.push((f.fd as i32, cloexec));
}

/// A descriptor of revenant's to use in place of a pipe of the images
/// (`--inherit-fd fd[N]:pipe:[INO]`, CRIU's option and form): each
/// description of the pipe's ends is opened again from it, with its own
/// access mode and flags, so the tree is connected to whatever the caller
/// connected that pipe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Given {
    pub fd: i32,
    pub pipe_id: u32,
}

impl std::str::FromStr for Given {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Given, String> {
        let form = || format!("{s:?}: expected fd[N]:pipe:[INO] (N a descriptor of revenant's, INO the pipe's inode)");
        let (fd, key) = s.strip_prefix("fd[").and_then(|r| r.split_once("]:")).ok_or_else(form)?;
        let fd = fd.parse::<i32>().ok().filter(|fd| *fd >= 0).ok_or_else(form)?;
        let Some(ino) = key.strip_prefix("pipe:") else {
            return Err(format!("{s:?}: only pipes (pipe:[INO]) can be given yet; {key:?} is not one"));
        };
        let pipe_id = ino.strip_prefix('[').and_then(|k| k.strip_suffix(']')?.parse().ok()).ok_or_else(form)?;
        Ok(Given { fd, pipe_id })
    }
}

impl std::fmt::Display for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fd[{}]:pipe:[{}]", self.fd, self.pipe_id)
    }
}

/// Checks the pipes given for the restore (`given`) against the images
/// and this process's descriptors. Returns warnings: for each pipe the
/// dump saw held outside the tree (`pipe_entry.outside`) that none is
/// given for, that it comes back connected to nobody (as CRIU restores
/// every pipe); for each given one whose image held bytes, that they are
/// not written into it (they were the old pipe's), as CRIU does.
///
/// Warned, not refused: a program very often holds a pipe it never uses
/// (its launcher's, inherited), which a refusal would make impossible to
/// restore without a pipe to give for each.
pub fn check_given(set: &ImageSet, given: &[Given]) -> Result<Vec<String>> {
    let pipes: Vec<&PipeEntry> = set.files.iter().filter_map(|f| f.pipe.as_ref()).collect();
    let users = |pipe_id: u32| -> String {
        let ids: Vec<u32> = pipes.iter().filter(|p| p.pipe_id == pipe_id).map(|p| p.id).collect();
        let fds: Vec<String> = set
            .processes
            .iter()
            .flat_map(|p| {
                p.fds.iter().filter(|f| ids.contains(&f.id)).map(|f| format!("fd {} of PID {}", f.fd, p.pid()))
            })
            .collect();
        if fds.is_empty() { "in flight in a queued message".into() } else { fds.join(", ") }
    };
    let mut warnings = vec![];
    for (i, g) in given.iter().enumerate() {
        if given[..i].iter().any(|o| o.pipe_id == g.pipe_id) {
            bail!("--inherit-fd {g}: pipe:[{}] is given twice", g.pipe_id);
        }
        if !pipes.iter().any(|p| p.pipe_id == g.pipe_id) {
            let mut have: Vec<String> = pipes.iter().map(|p| format!("pipe:[{}]", p.pipe_id)).collect();
            have.sort();
            have.dedup();
            let have = if have.is_empty() { "none".into() } else { have.join(", ") };
            bail!("--inherit-fd {g}: the images hold no pipe:[{}] (their pipes: {have})", g.pipe_id);
        }
        // SAFETY: fstat fills the buffer we pass; any descriptor number is
        // fine to ask about.
        let st = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(g.fd) });
        match st {
            Err(nix::errno::Errno::EBADF) => bail!("--inherit-fd {g}: revenant has no fd {}", g.fd),
            Err(e) => return Err(e).with_context(|| format!("--inherit-fd {g}: fstat of fd {}", g.fd)),
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFIFO => {
                bail!("--inherit-fd {g}: fd {} is not a pipe or FIFO", g.fd)
            }
            Ok(_) => {}
        }
        let held = set.pipes_data.iter().find(|(e, _)| e.pipe_id == g.pipe_id).map_or(0, |(_, d)| d.len());
        if held > 0 {
            warnings.push(format!(
                "pipe:[{}] ({}): the {held} bytes it held at the dump are not written into the pipe given for it",
                g.pipe_id,
                users(g.pipe_id)
            ));
        }
    }
    let mut warned: Vec<u32> = vec![];
    for p in pipes.iter().filter(|p| p.outside == Some(true) && !given.iter().any(|g| g.pipe_id == p.pipe_id)) {
        if warned.contains(&p.pipe_id) {
            continue;
        }
        warned.push(p.pipe_id);
        warnings.push(format!(
            "pipe:[{0}] ({1}) was held outside the dumped tree too (files.img id {2}: pipe.outside): it comes \
             back connected to nobody (a reader sees the end of its input, a writer EPIPE); to keep it connected, \
             give a pipe to use instead: --inherit-fd 'fd[N]:pipe:[{0}]' (N a descriptor of revenant's)",
            p.pipe_id,
            users(p.pipe_id),
            p.id
        ));
    }
    Ok(warnings)
}

/// Makes pipe `pp` in the host: its capacity, its bytes, and a descriptor
/// for each description of its ends (`files.img` id and descriptor): the
/// first of each direction is the end itself, the others reopen it
/// through `/proc/self/fd` for a description of their own. A pipe `given`
/// by the caller is not made: every description is opened from it.
pub fn make(pp: &PipePlan, given: Option<i32>) -> Result<Vec<(u32, std::os::fd::OwnedFd)>> {
    use std::os::fd::AsFd;
    if let Some(fd) = given {
        return pp.ends.iter().map(|e| Ok((e.id, reopen(fd, e.write)?))).collect();
    }
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2")?;
    // The dumped capacity, and never less than the bytes to put back.
    let size = pp.size.unwrap_or(0).max(pp.data.len() as u32);
    let now = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETPIPE_SZ).context("F_GETPIPE_SZ")?;
    if size as i32 != now && (size > 0 || pp.data.len() > 65536) {
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as i32))
            .with_context(|| format!("F_SETPIPE_SZ {size}"))?;
    }
    let mut left = &pp.data[..];
    while !left.is_empty() {
        let n = nix::unistd::write(&w, left).context("putting its bytes back")?;
        left = &left[n..];
    }
    let mut out = Vec::new();
    let mut firsts = [false; 2];
    for e in &pp.ends {
        let raw = if e.write { &w } else { &r };
        let fd = if !firsts[usize::from(e.write)] {
            firsts[usize::from(e.write)] = true;
            raw.as_fd().try_clone_to_owned().context("dup")?
        } else {
            // The other end is open: this open does not wait.
            reopen(raw.as_raw_fd(), e.write)?
        };
        out.push((e.id, fd));
    }
    Ok(out)
}

/// A description of its own of the pipe behind our `fd`, for reading or
/// writing; it does not wait for the other end (a write end with no
/// reader left fails, `ENXIO`).
fn reopen(fd: i32, write: bool) -> Result<std::os::fd::OwnedFd> {
    let path = format!("/proc/self/fd/{fd}");
    let f = fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .with_context(|| format!("opening {path} for {}", if write { "writing" } else { "reading" }))?;
    Ok(f.into())
}

/// Makes every pipe of `plans` once (the pipes of several processes, and
/// ends only in flight in queued messages, merged by pipe id).
pub fn make_all<'a>(
    plans: impl IntoIterator<Item = &'a PipePlan>,
    given: &[Given],
) -> Result<Vec<(u32, std::os::fd::OwnedFd)>> {
    let mut pipes: Vec<PipePlan> = Vec::new();
    for pp in plans {
        let at = match pipes.iter().position(|x| x.pipe_id == pp.pipe_id) {
            Some(at) => at,
            None => {
                pipes.push(PipePlan { ends: Vec::new(), ..pp.clone() });
                pipes.len() - 1
            }
        };
        for e in &pp.ends {
            if !pipes[at].ends.iter().any(|x| x.id == e.id) {
                pipes[at].ends.push(PipeEnd { fds: Vec::new(), ..e.clone() });
            }
        }
    }
    let mut out = Vec::new();
    for p in &pipes {
        let given = given.iter().find(|g| g.pipe_id == p.pipe_id);
        let what = || match given {
            Some(g) => format!("opening pipe:[{}] from the pipe given (--inherit-fd {g})", p.pipe_id),
            None => format!("making pipe:[{}]", p.pipe_id),
        };
        out.extend(make(p, given.map(|g| g.fd)).with_context(what)?);
    }
    Ok(out)
}

/// A pipe end in flight in a queued message (`files.img` entry `e`, id
/// `id`), as a pipe of its own to merge with the tree's.
pub fn in_flight(set: &ImageSet, id: u32, e: &PipeEntry) -> PipePlan {
    let mut pipes = vec![];
    let f = FdinfoEntry { id, fd: 0, ..Default::default() };
    plan_fd(set, &mut pipes, &f, e, true);
    pipes[0].ends[0].fds.clear();
    pipes.remove(0)
}

#[cfg(test)]
mod tests {
    use super::Given;

    /// CRIU's form is read as it writes it; anything else is refused
    /// saying what is expected, other kinds of file saying that only
    /// pipes can be given.
    #[test]
    fn inherit_fd_takes_criu_form_for_pipes_only() {
        assert_eq!("fd[0]:pipe:[12345]".parse(), Ok(Given { fd: 0, pipe_id: 12345 }));
        assert_eq!(Given { fd: 7, pipe_id: 9 }.to_string(), "fd[7]:pipe:[9]");
        for bad in ["0:pipe:[1]", "fd[-1]:pipe:[1]", "fd[x]:pipe:[1]", "fd[1]:pipe:[1", "fd[1]:pipe:[99999999999]"] {
            let err = bad.parse::<Given>().unwrap_err();
            assert!(err.contains("expected fd[N]:pipe:[INO]"), "{bad}: {err}");
        }
        let err = "fd[3]:socket:[5]".parse::<Given>().unwrap_err();
        assert!(err.contains("only pipes") && err.contains("socket:[5]"), "{err}");
    }
}
