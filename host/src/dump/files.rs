//! Open files of the tree: file descriptors, cwd and root, the executable
//! and mapped files, numbered the way CRIU numbers `files.img` entries.
//!
//! One entry stands for one open file description: two fds that share it
//! (dup, or inherited by a child) point at the same id, found with
//! `kcmp(KCMP_FILE)`. Executables and mapped files are one entry per file
//! (device and inode), shared by every process that maps it. cwd and root
//! get an entry per process.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use anyhow::{Context, Result, bail};

use super::procfs;

pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_NONBLOCK: u32 = 0o4000;

/// `fd_types` of CRIU's images.
pub mod fd_type {
    pub const REG: u32 = 1;
    pub const PIPE: u32 = 2;
    pub const FIFO: u32 = 3;
    pub const UNIXSK: u32 = 5;
    pub const MEMFD: u32 = 18;
}

/// A file as `files.img` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub id: u32,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Reg(RegFile),
    Pipe(PipeFile),
    /// eventfd, signalfd, timerfd, epoll.
    Anon(crate::anonfd::Anon),
    Memfd(MemfdFile),
    /// One end of a unix socket pair.
    Unix(crate::unixsk::UnixSock),
    /// A named pipe: its inode, and the entry of its path.
    Fifo {
        pipe_id: u32,
        regf_id: u32,
    },
}

/// A memfd description (one of an fd, or the one for its mappings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdFile {
    pub flags: u32,
    pub pos: u64,
    /// Its object's inode.
    pub ino: u64,
}

/// A memfd object: written once (`memfd.img`, contents in
/// `pagemap-shmem-INO.img`), however many fds and mappings it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdObject {
    pub ino: u64,
    /// What `memfd_create` was given.
    pub name: String,
    pub size: u64,
    pub seals: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A `/proc` link that opens it, while the tree is frozen.
    pub source: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegFile {
    /// Open flags without O_CLOEXEC (that one belongs to the fd).
    pub flags: u32,
    pub pos: u64,
    pub name: String,
    /// Only for regular files: a restore checks it.
    pub size: Option<u64>,
    pub mode: u32,
}

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

/// Who gets the file's SIGIO/SIGURG (`F_SETOWN_EX`, `F_SETSIG`), and the
/// uids of whoever set it (the kernel checks them when it signals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fown {
    pub uid: u32,
    pub euid: u32,
    pub signum: u32,
    /// `F_OWNER_TID`, `F_OWNER_PID` or `F_OWNER_PGRP`.
    pub pid_type: u32,
    pub pid: u32,
}

/// One fd of a process (`fdinfo-N.img`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fd {
    pub fd: u32,
    pub id: u32,
    /// FD_CLOEXEC.
    pub cloexec: bool,
    pub kind: u32,
}

/// The files of a whole tree.
#[derive(Debug, Default)]
pub struct Files {
    pub entries: Vec<FileEntry>,
    pub pipe_data: Vec<PipeData>,
    /// The same, of named pipes (`fifo-data.img`).
    pub fifo_data: Vec<PipeData>,
    /// Unlinked files held open, by the id of their entry.
    pub ghosts: Vec<(u32, crate::ghost::Ghost)>,
    /// The remap id of each unlinked file seen, by (device, inode).
    ghost_keys: HashMap<(u64, u64), u32>,
    by_inode: HashMap<(u64, u64), u32>,
    /// Fds seen so far: (pid, fd, dev, ino, id), to find shared descriptions.
    descriptions: Vec<(i32, i32, u64, u64, u32)>,
    /// The PIDs of the tree.
    pub tree: Vec<i32>,
    /// Owners of the descriptions that have one, by file id.
    pub owners: HashMap<u32, Fown>,
    /// File locks the tree holds, each with the file id it was taken
    /// through.
    pub locks: Vec<(u32, crate::locks::Lock)>,
    pub memfds: Vec<MemfdObject>,
    /// The description written for the mappings of each memfd, by inode.
    memfd_maps: HashMap<u64, u32>,
    /// What `sock_diag` says of the unix sockets, asked once.
    unix: Option<HashMap<u32, crate::unixsk::Diag>>,
}

impl Files {
    fn push(&mut self, kind: FileKind) -> u32 {
        let id = self.entries.len() as u32 + 1;
        self.entries.push(FileEntry { id, kind });
        id
    }

    /// The entry of a mapped file or executable, given the path the kernel
    /// shows and a `/proc` link that opens it (`exe`, `map_files/A-B`).
    pub fn mapped(&mut self, pid: i32, link: &str, name: &str, flags: u32) -> Result<u32> {
        let p = procfs::path(pid, link);
        let m = fs::metadata(&p).with_context(|| format!("stat {} ({name})", p.display()))?;
        if let Some(&id) = self.by_inode.get(&(m.dev(), m.ino())) {
            return Ok(id);
        }
        if name.ends_with(" (deleted)") {
            bail!("process {pid}: {name} was deleted: unlinked files are not supported yet");
        }
        let size = m.file_type().is_file().then_some(m.len());
        let id = self.push(FileKind::Reg(RegFile { flags, pos: 0, name: name.to_string(), size, mode: m.mode() }));
        self.by_inode.insert((m.dev(), m.ino()), id);
        Ok(id)
    }

    /// The entry the mappings of a memfd name (`VmaEntry::shmid`), given
    /// its `map_files` link.
    pub fn memfd_mapping(&mut self, pid: i32, link: &str, name: &str, flags: u32) -> Result<u32> {
        let p = procfs::path(pid, link);
        let m = fs::metadata(&p).with_context(|| format!("stat {} ({name})", p.display()))?;
        if let Some(&id) = self.memfd_maps.get(&m.ino()) {
            return Ok(id);
        }
        self.memfd_object(&p, name, &m)?;
        let id = self.push(FileKind::Memfd(MemfdFile { flags, pos: 0, ino: m.ino() }));
        self.memfd_maps.insert(m.ino(), id);
        Ok(id)
    }

    /// Notes the memfd object behind `source` (shown as `name`) once.
    fn memfd_object(&mut self, source: &std::path::Path, name: &str, m: &fs::Metadata) -> Result<()> {
        if self.memfds.iter().any(|o| o.ino == m.ino()) {
            return Ok(());
        }
        // CRIU's images name the object by a 32-bit shmid.
        if m.ino() > u64::from(u32::MAX) {
            bail!("{name}: inode {} does not fit the images' 32-bit shmid", m.ino());
        }
        let f = fs::File::open(source).with_context(|| format!("opening {} ({name})", source.display()))?;
        let seals = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GET_SEALS)
            .with_context(|| format!("F_GET_SEALS on {} ({name})", source.display()))?;
        let bare = name.strip_prefix("/memfd:").unwrap_or(name);
        let bare = bare.strip_suffix(" (deleted)").unwrap_or(bare);
        self.memfds.push(MemfdObject {
            ino: m.ino(),
            name: bare.to_string(),
            size: m.len(),
            seals: seals as u32,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            source: source.to_path_buf(),
        });
        Ok(())
    }

    /// A directory entry for cwd or root.
    pub fn dir(&mut self, pid: i32, link: &str) -> Result<u32> {
        let p = procfs::path(pid, link);
        let name = fs::read_link(&p).with_context(|| format!("reading {}", p.display()))?;
        let name = name.to_str().with_context(|| format!("{}: not UTF-8: {name:?}", p.display()))?.to_string();
        if name.ends_with(" (deleted)") {
            bail!("process {pid}: its {link} {name} was deleted; that is not supported");
        }
        let m = fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
        Ok(self.push(FileKind::Reg(RegFile { flags: 0, pos: 0, name, size: None, mode: m.mode() })))
    }

    /// Every fd of process `pid`, in number order.
    pub fn fds(&mut self, pid: i32) -> Result<Vec<Fd>> {
        fd_numbers(pid)?.into_iter().map(|fd| self.fd(pid, fd)).collect()
    }

    /// Records the owner of the description behind `fd`, as `pid` asked for
    /// it; an owner outside the tree would be some other process, or none,
    /// after a restore.
    pub fn set_owner(&mut self, pid: i32, fds: &[Fd], fd: i32, owner: Fown) -> Result<()> {
        let Some(f) = fds.iter().find(|f| f.fd == fd as u32) else { return Ok(()) };
        if owner.pid != 0 && !self.tree.contains(&(owner.pid as i32)) {
            let kind = ["thread", "process", "process group"].get(owner.pid_type as usize).unwrap_or(&"task");
            bail!(
                "process {pid}: fd {fd} sends its signals to {kind} {}, which is not in the dumped tree: \
                 not supported",
                owner.pid
            );
        }
        self.owners.insert(f.id, owner);
        Ok(())
    }

    /// Fd `fd` of `pid`, and the locks taken through it.
    fn fd(&mut self, pid: i32, fd: i32) -> Result<Fd> {
        let fdinfo = procfs::read_string(pid, &format!("fdinfo/{fd}"))?;
        let mut locks = vec![];
        for line in fdinfo.lines().filter_map(|l| l.strip_prefix("lock:")) {
            let file = fs::read_link(procfs::path(pid, &format!("fd/{fd}"))).unwrap_or_default();
            locks.extend(crate::locks::parse(line, pid, fd, &file.to_string_lossy())?);
        }
        let f = self.fd_entry(pid, fd, &fdinfo)?;
        for l in locks {
            // A flock or OFD lock belongs to the description: once.
            let seen = |(id, o): &(u32, crate::locks::Lock)| {
                *id == f.id && o.kind == l.kind && (o.start, o.len, o.write) == (l.start, l.len, l.write)
            };
            if l.kind == crate::locks::FL_POSIX || !self.locks.iter().any(seen) {
                self.locks.push((f.id, l));
            }
        }
        Ok(f)
    }

    fn fd_entry(&mut self, pid: i32, fd: i32, fdinfo: &str) -> Result<Fd> {
        let link = format!("fd/{fd}");
        let p = procfs::path(pid, &link);
        let target = fs::read_link(&p).with_context(|| format!("reading {}", p.display()))?;
        let target = target.to_string_lossy().into_owned();
        let info = procfs::parse_fdinfo(fdinfo, &format!("/proc/{pid}/fdinfo/{fd}"))?;
        let unsupported = |what: &str| -> Result<Fd> {
            bail!("process {pid}: fd {fd} is {what} ({target}), which dump does not support yet")
        };

        // A process's own /proc files it opens again once it has its PID
        // (a restored task opens its fds itself); another process of the
        // tree may not exist yet when it does, and a thread's directory
        // comes only with the thread.
        let proc_pid = target.strip_prefix("/proc/").and_then(|r| r.split('/').next()?.parse::<i32>().ok());
        let own = proc_pid == Some(pid) && !target.contains("/task/");
        if !own && proc_pid.is_some_and(|p| self.tree.contains(&p)) {
            return unsupported("a /proc file of another process or thread of the tree");
        }
        let m = fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
        let cloexec = info.flags & O_CLOEXEC != 0;
        let flags = info.flags & !O_CLOEXEC;
        let (dev, ino) = (m.dev(), m.ino());
        if let Some(id) = self.shared_description(pid, fd, dev, ino)? {
            let kind = match &self.entries[id as usize - 1].kind {
                FileKind::Reg(_) => fd_type::REG,
                FileKind::Pipe(_) => fd_type::PIPE,
                FileKind::Anon(a) => a.fd_type() as u32,
                FileKind::Memfd(_) => fd_type::MEMFD,
                FileKind::Unix(_) => fd_type::UNIXSK,
                FileKind::Fifo { .. } => fd_type::FIFO,
            };
            return Ok(Fd { fd: fd as u32, id, cloexec, kind });
        }
        let ft = m.file_type();
        let (kind, file) = if target.starts_with("socket:") {
            let diag = match &mut self.unix {
                Some(d) => d,
                none => none.insert(crate::unixsk::diag()?),
            };
            let s = crate::unixsk::dump(pid, fd, ino as u32, flags, diag)?;
            (fd_type::UNIXSK, FileKind::Unix(s))
        } else if let Some(kind) = target.strip_prefix("anon_inode:") {
            match crate::anonfd::dump(pid, fd, kind, fdinfo, flags)? {
                Some(a) => (a.fd_type() as u32, FileKind::Anon(a)),
                None => return unsupported(&format!("an anonymous inode file of type {kind}")),
            }
        } else if (target.starts_with("/memfd:") || target == "/dev/zero (deleted)")
            && nix::sys::stat::major(m.dev()) == 0
            && ft.is_file()
        {
            // A memfd, or shared anonymous memory opened through
            // /proc/PID/map_files, which CRIU writes as a memfd named
            // /dev/zero.
            self.memfd_object(&p, &target, &m)?;
            (fd_type::MEMFD, FileKind::Memfd(MemfdFile { flags, pos: info.pos, ino }))
        } else if target.starts_with("pipe:") {
            let pipe_id = ino as u32;
            if !self.pipe_data.iter().any(|d| d.pipe_id == pipe_id) {
                let (data, size) = pipe_contents(pid, fd)?;
                // One entry per pipe, as CRIU writes them: its capacity
                // matters even when it is empty.
                self.pipe_data.push(PipeData { pipe_id, data, size });
            }
            (fd_type::PIPE, FileKind::Pipe(PipeFile { pipe_id, flags }))
        } else if ft.is_fifo() && target.starts_with('/') && !target.ends_with(" (deleted)") {
            let pipe_id = ino as u32;
            if !self.fifo_data.iter().any(|d| d.pipe_id == pipe_id) {
                let (data, size) = pipe_contents(pid, fd)?;
                self.fifo_data.push(PipeData { pipe_id, data, size });
            }
            // The path is a regular file entry of its own, as CRIU writes it.
            let reg = RegFile { flags, pos: 0, name: target.clone(), size: None, mode: m.mode() };
            let regf_id = self.push(FileKind::Reg(reg));
            (fd_type::FIFO, FileKind::Fifo { pipe_id, regf_id })
        } else if ft.is_fifo() {
            return unsupported("a named FIFO that was deleted");
        } else if !target.starts_with('/') {
            return unsupported("a special file");
        } else if let Some(path) = target.strip_suffix(" (deleted)").filter(|_| ft.is_file() && m.nlink() == 0) {
            // An O_TMPFILE file never had a name: the kernel shows "#INO".
            if path.rsplit('/').next() == Some(format!("#{ino}").as_str()) {
                return unsupported("an O_TMPFILE file");
            }
            let reg = RegFile { flags, pos: info.pos, name: path.to_string(), size: Some(m.len()), mode: m.mode() };
            let id = self.push(FileKind::Reg(reg));
            let key = *self.ghost_keys.entry((dev, ino)).or_insert(id);
            let ghost = crate::ghost::dump(&p, &target, &m, key).with_context(|| format!("process {pid}: fd {fd}"))?;
            self.ghosts.push((id, ghost));
            self.descriptions.push((pid, fd, dev, ino, id));
            return Ok(Fd { fd: fd as u32, id, cloexec, kind: fd_type::REG });
        } else if target.ends_with(" (deleted)") {
            return unsupported("an unlinked file");
        } else if ft.is_char_device() && is_tty(m.rdev()) {
            return unsupported("a terminal");
        } else if ft.is_block_device() || ft.is_socket() {
            return unsupported("a device or socket node");
        } else {
            let size = ft.is_file().then_some(m.len());
            (fd_type::REG, FileKind::Reg(RegFile { flags, pos: info.pos, name: target.clone(), size, mode: m.mode() }))
        };
        let id = self.push(file);
        self.descriptions.push((pid, fd, dev, ino, id));
        Ok(Fd { fd: fd as u32, id, cloexec, kind })
    }

    /// The id of an fd seen before that shares this fd's open file
    /// description.
    fn shared_description(&self, pid: i32, fd: i32, dev: u64, ino: u64) -> Result<Option<u32>> {
        for &(p2, fd2, d2, i2, id) in &self.descriptions {
            if (d2, i2) != (dev, ino) {
                continue;
            }
            const KCMP_FILE: u64 = 0;
            // SAFETY: kcmp only compares kernel objects; no memory is passed.
            let r = unsafe { nix::libc::syscall(nix::libc::SYS_kcmp, pid, p2, KCMP_FILE, fd as u64, fd2 as u64) };
            if r < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("kcmp of fd {fd} of {pid} and fd {fd2} of {p2}"));
            }
            if r == 0 {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

/// The fd numbers of process `pid`, in order.
pub fn fd_numbers(pid: i32) -> Result<Vec<i32>> {
    let dir = procfs::path(pid, "fd");
    let mut nums: Vec<i32> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    nums.sort_unstable();
    Ok(nums)
}

/// Terminal majors: the console and vt (4, 5), pty slaves (136-143).
fn is_tty(rdev: u64) -> bool {
    let major = nix::sys::stat::major(rdev);
    major == 4 || major == 5 || (136..=143).contains(&major)
}

/// The bytes in the pipe behind `fd` of `pid`, left in place, and its
/// capacity: the pipe is opened through /proc and `tee`d into a pipe of our
/// own.
fn pipe_contents(pid: i32, fd: i32) -> Result<(Vec<u8>, u32)> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let p = procfs::path(pid, &format!("fd/{fd}"));
    let src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&p)
        .with_context(|| format!("opening {} to read its buffered data", p.display()))?;
    let mut queued: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { nix::libc::ioctl(src.as_raw_fd(), nix::libc::FIONREAD, &mut queued) } < 0 {
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
    let n = unsafe { nix::libc::tee(src.as_raw_fd(), w.as_raw_fd(), queued as usize, nix::libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("copying the data of pipe fd {fd} of process {pid}"));
    }
    let n = n as usize;
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        got += nix::unistd::read(&r, &mut data[got..]).context("reading copied pipe data")?;
    }
    if n != queued as usize {
        bail!("process {pid}: pipe fd {fd} holds {queued} bytes but only {n} could be copied");
    }
    Ok((data, size))
}

use std::os::unix::fs::OpenOptionsExt;
