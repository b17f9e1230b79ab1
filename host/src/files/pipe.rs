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

use anyhow::{Context, Result};
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
            pipe: Some(PipeEntry { id, pipe_id: self.pipe_id, flags: self.flags, fown, ..Default::default() }),
            ..Default::default()
        }
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

/// Makes pipe `pp` in the host: its capacity, its bytes, and a descriptor
/// for each description of its ends (`files.img` id and descriptor): the
/// first of each direction is the end itself, the others reopen it
/// through `/proc/self/fd` for a description of their own.
pub fn make(pp: &PipePlan) -> Result<Vec<(u32, std::os::fd::OwnedFd)>> {
    use std::os::fd::AsFd;
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
            let path = format!("/proc/self/fd/{}", raw.as_raw_fd());
            fs::OpenOptions::new()
                .read(!e.write)
                .write(e.write)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path)
                .with_context(|| format!("reopening {path}"))?
                .into()
        };
        out.push((e.id, fd));
    }
    Ok(out)
}

/// Makes every pipe of `plans` once (the pipes of several processes, and
/// ends only in flight in queued messages, merged by pipe id).
pub fn make_all<'a>(plans: impl IntoIterator<Item = &'a PipePlan>) -> Result<Vec<(u32, std::os::fd::OwnedFd)>> {
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
        out.extend(make(p).with_context(|| format!("making pipe:[{}]", p.pipe_id))?);
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
