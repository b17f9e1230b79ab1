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

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FdinfoEntry, FownEntry};
use revenant_images::{ImageSet, Kind, Process, Writer};

use crate::procfs;

pub mod anonfd;
pub mod fifo;
pub mod ghost;
pub mod inet;
pub mod locks;
pub mod memfd;
pub mod netlink;
pub mod nsfile;
pub mod packet;
pub mod pipe;
pub mod reg;
pub mod sockopt;
pub mod tcp;
pub mod tcp_keeper;
pub mod tty;
pub mod unixsk;

pub use memfd::{MemfdFile, MemfdObject};
pub use pipe::{PipeData, PipeFile};
pub use reg::RegFile;

pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_NONBLOCK: u32 = 0o4000;

/// `fd_types` of CRIU's images.
pub mod fd_type {
    pub const REG: u32 = 1;
    pub const PIPE: u32 = 2;
    pub const FIFO: u32 = 3;
    pub const INETSK: u32 = 4;
    pub const UNIXSK: u32 = 5;
    pub const TTY: u32 = 11;
    pub const PACKETSK: u32 = 10;
    pub const NETLINKSK: u32 = 13;
    pub const NS: u32 = 14;
    pub const MEMFD: u32 = 18;
}

/// A file as `files.img` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    pub id: u32,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileKind {
    Reg(RegFile),
    Pipe(PipeFile),
    /// eventfd, signalfd, timerfd, epoll.
    Anon(self::anonfd::Anon),
    Memfd(MemfdFile),
    /// A unix socket.
    Unix(self::unixsk::UnixSock),
    /// An IPv4 or IPv6 socket.
    Inet(Box<self::inet::InetSock>),
    Netlink(self::netlink::NetlinkSock),
    Packet(Box<self::packet::PacketSock>),
    /// A named pipe.
    Fifo(fifo::Fifo),
    Tty(tty::Tty),
    /// A namespace file of the process's own namespace.
    Ns(nsfile::NsFile),
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
    pub ghosts: Vec<(u32, self::ghost::Ghost)>,
    /// Directories of /proc whose process ended, each a cwd: (entry id,
    /// the PID that ended).
    pub dead_pids: Vec<(u32, u32)>,
    /// The remap id of each unlinked file seen, by (device, inode).
    ghost_keys: HashMap<(u64, u64), u32>,
    /// Mapped files and executables by (device, inode, the name shown):
    /// a file mapped under two of its names keeps both.
    by_inode: HashMap<(u64, u64, String), u32>,
    /// Fds seen so far: (pid, fd, dev, ino, id), to find shared descriptions.
    descriptions: Vec<(i32, i32, u64, u64, u32)>,
    /// The PIDs of the tree.
    pub tree: Vec<i32>,
    /// The parent of each live process of the tree.
    pub parents: HashMap<i32, i32>,
    /// Owners of the descriptions that have one, by file id.
    pub owners: HashMap<u32, Fown>,
    /// File locks the tree holds, each with the file id it was taken
    /// through.
    pub locks: Vec<(u32, self::locks::Lock)>,
    pub memfds: Vec<MemfdObject>,
    /// The description written for the mappings of each memfd, by inode.
    memfd_maps: HashMap<u64, u32>,
    /// Terminals, each once, and the bytes queued in pairs.
    pub ttys: Vec<tty::Seen>,
    pub tty_data: Vec<revenant_images::messages::TtyDataEntry>,
    /// Our copies of files in flight in queued messages, open while the
    /// dump runs.
    in_flight: Vec<std::os::fd::OwnedFd>,
    /// What `sock_diag` says of the unix sockets, asked once.
    unix: Option<HashMap<u32, self::unixsk::Diag>>,
    /// The same of the netlink sockets.
    netlink: Option<HashMap<u32, self::netlink::Diag>>,
    /// And of the packet sockets.
    packet: Option<HashMap<u32, self::packet::Diag>>,
    /// TCP connections: whether they are kept, and those locked.
    pub tcp: self::inet::Connections,
    /// The most data of an unlinked file carried (`--ghost-limit`); `None`
    /// for [`ghost::LIMIT`].
    pub ghost_limit: Option<u64>,
}

impl Files {
    fn push(&mut self, kind: FileKind) -> u32 {
        let id = self.entries.len() as u32 + 1;
        self.entries.push(FileEntry { id, kind });
        id
    }

    /// Whether process `of` of the tree exists by the time a restored `pid`
    /// opens its files: itself, an ancestor or a child.
    fn exists_for(&self, pid: i32, of: i32) -> bool {
        let mut at = Some(pid);
        while let Some(p) = at {
            if p == of {
                return true;
            }
            at = self.parents.get(&p).copied();
        }
        self.parents.get(&of) == Some(&pid)
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
            locks.extend(self::locks::parse(line, pid, fd, &file.to_string_lossy())?);
        }
        let f = self.fd_entry(pid, fd, &fdinfo)?;
        for l in locks {
            // A flock or OFD lock belongs to the description: once.
            let seen = |(id, o): &(u32, self::locks::Lock)| {
                *id == f.id && o.kind == l.kind && (o.start, o.len, o.write) == (l.start, l.len, l.write)
            };
            if l.kind == self::locks::FL_POSIX || !self.locks.iter().any(seen) {
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

        // A /proc file of a process of the tree is opened again by path
        // once that process has its PID: a restored task opens its fds
        // itself after making its children, so its own, its ancestors'
        // and its children's exist by then; another process may not, and
        // a thread's directory comes only with the thread.
        let proc_pid = target.strip_prefix("/proc/").and_then(|r| r.split('/').next()?.parse::<i32>().ok());
        if let Some(of) = proc_pid.filter(|p| self.tree.contains(p))
            && (target.contains("/task/") || !self.exists_for(pid, of))
        {
            return unsupported(
                "a /proc file of a thread, or of a process of the tree neither its ancestor nor its child,",
            );
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
                FileKind::Inet(_) => fd_type::INETSK,
                FileKind::Netlink(_) => fd_type::NETLINKSK,
                FileKind::Packet(_) => fd_type::PACKETSK,
                FileKind::Fifo(_) => fd_type::FIFO,
                FileKind::Tty(_) => fd_type::TTY,
                FileKind::Ns(_) => fd_type::NS,
            };
            return Ok(Fd { fd: fd as u32, id, cloexec, kind });
        }
        let ft = m.file_type();
        let (kind, file) = if target.starts_with("socket:") {
            // Only unix sockets need the kernel's unix_diag (a module that
            // may not be loaded): it is asked at the first one.
            let domain = self::inet::domain(pid, fd)?;
            let diag = if domain == libc::AF_UNIX as u32 {
                let diag = match &mut self.unix {
                    Some(d) => d,
                    none => none.insert(self::unixsk::diag()?),
                };
                if !diag.contains_key(&(ino as u32)) {
                    bail!("process {pid}: fd {fd}: unix socket {ino} is not in the kernel's list of unix sockets");
                }
                Some(diag)
            } else {
                None
            };
            if let Some(diag) = diag {
                let (mut s, inflight) = self::unixsk::dump(pid, fd, ino as u32, flags, diag)?;
                for (k, fds) in inflight.into_iter().enumerate() {
                    for f in fds {
                        let what = || format!("process {pid}: fd {fd}: a file in flight in a message queued on it");
                        let id = self.in_flight(f).with_context(what)?;
                        s.scm[k].push(id);
                    }
                }
                (fd_type::UNIXSK, FileKind::Unix(s))
            } else if domain == libc::AF_NETLINK as u32 {
                let diag = match &mut self.netlink {
                    Some(d) => d,
                    none => none.insert(self::netlink::diag()?),
                };
                match self::netlink::dump(pid, fd, ino as u32, flags, diag)? {
                    Some(s) => (fd_type::NETLINKSK, FileKind::Netlink(s)),
                    None => bail!("process {pid}: fd {fd}: socket {ino} is no longer a netlink socket"),
                }
            } else if domain == libc::AF_PACKET as u32 {
                let diag = match &mut self.packet {
                    Some(d) => d,
                    none => none.insert(self::packet::diag()?),
                };
                match self::packet::dump(pid, fd, ino as u32, flags, diag)? {
                    Some(s) => (fd_type::PACKETSK, FileKind::Packet(Box::new(s))),
                    None => bail!("process {pid}: fd {fd}: socket {ino} is no longer a packet socket"),
                }
            } else if let Some(s) = self::inet::dump(pid, fd, ino as u32, flags, &mut self.tcp)? {
                (fd_type::INETSK, FileKind::Inet(Box::new(s)))
            } else {
                return unsupported("a socket of a family revenant does not know");
            }
        } else if let Some(kind) = target.strip_prefix("anon_inode:") {
            match self::anonfd::dump(pid, fd, kind, fdinfo, flags)? {
                Some(a) => {
                    if let self::anonfd::AnonFile::Pidfd { pid: of, .. } = a.file
                        && of != -1
                        && !self.tree.contains(&of)
                    {
                        return unsupported(&format!("a pidfd of process {of}, outside the dumped tree,"));
                    }
                    (a.fd_type() as u32, FileKind::Anon(a))
                }
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
                let (data, size) = pipe::contents(pid, fd)?;
                // One entry per pipe, as CRIU writes them: its capacity
                // matters even when it is empty.
                self.pipe_data.push(PipeData { pipe_id, data, size });
            }
            (fd_type::PIPE, FileKind::Pipe(PipeFile { pipe_id, flags, outside: false }))
        } else if ft.is_fifo() && target.starts_with('/') && !target.ends_with(" (deleted)") {
            (fd_type::FIFO, self.fifo(pid, fd, &target, ino, m.mode(), flags)?)
        } else if let Some(path) = target.strip_suffix(" (deleted)").filter(|_| ft.is_fifo() && m.nlink() == 0) {
            // Made again (empty, by mknod) for the tasks to open, and its
            // bytes put back, as a FIFO still linked is.
            let kind = self.fifo(pid, fd, path, ino, m.mode(), flags)?;
            let FileKind::Fifo(f) = &kind else { unreachable!("fifo() makes a FIFO") };
            let regf_id = f.regf_id;
            self.add_ghost(regf_id, &p, &target, &m)?;
            (fd_type::FIFO, kind)
        } else if ft.is_fifo() {
            return unsupported("a named FIFO that was deleted and is still linked elsewhere");
        } else if let Some(ns) = nsfile::dump(pid, fd, &target, ino, flags)? {
            (fd_type::NS, FileKind::Ns(ns))
        } else if !target.starts_with('/') {
            return unsupported("a special file");
        } else if let Some(path) = target.strip_suffix(" (deleted)").filter(|_| {
            let device = (ft.is_char_device() || ft.is_block_device())
                && !is_tty(m.rdev())
                && tty::Driver::of(m.rdev()).is_none();
            m.nlink() == 0 && (ft.is_file() || ft.is_symlink() || ((device || ft.is_dir()) && !ghost::on_kernel_fs(&p)))
        }) {
            // Unlinked since it was opened (a file, a device node made by
            // mknod, a symbolic link held by O_PATH, a removed directory):
            // carried as a ghost, made again for the tasks to open.
            let at = || format!("process {pid}: fd {fd} ({target})");
            let to = ft.is_symlink().then(|| ghost::link_target(pid, fd)).transpose().with_context(at)?;
            let size = ft.is_file().then_some(m.len());
            let reg =
                RegFile { flags, pos: info.pos, name: path.to_string(), size, mode: m.mode(), unlinked_name: None };
            let id = self.push(FileKind::Reg(reg));
            self.add_ghost(id, &p, &target, &m).with_context(at)?;
            if let Some((_, g)) = self.ghosts.iter_mut().find(|(g, _)| *g == id) {
                g.symlink = to;
            }
            self.descriptions.push((pid, fd, dev, ino, id));
            return Ok(Fd { fd: fd as u32, id, cloexec, kind: fd_type::REG });
        } else if let Some((path, other)) = target
            .strip_suffix(" (deleted)")
            .filter(|_| ft.is_file() && m.nlink() != 0)
            .and_then(|path| Some((path, reg::linked_name(path, &m)?)))
        {
            // Unlinked under the name it was opened by, linked under
            // another beside it: opened by that one, and shown by the first.
            let (size, unlinked_name) = (Some(m.len()), Some(path.to_string()));
            (
                fd_type::REG,
                FileKind::Reg(RegFile { flags, pos: info.pos, name: other, size, mode: m.mode(), unlinked_name }),
            )
        } else if let Some(path) = target
            .strip_suffix(" (deleted)")
            .filter(|_| ft.is_char_device() && tty::Driver::of(m.rdev()) == Some(tty::Driver::PtySlave))
        {
            // A pseudoterminal slave whose master was closed: hung up, its
            // /dev/pts entry gone.
            (fd_type::TTY, self.tty(pid, fd, path, &m, tty::Driver::PtySlave, flags)?)
        } else if target.ends_with(" (deleted)") {
            return unsupported("an unlinked file");
        } else if let Some(driver) = tty::Driver::of(m.rdev()).filter(|_| ft.is_char_device()) {
            (fd_type::TTY, self.tty(pid, fd, &target, &m, driver, flags)?)
        } else if ft.is_char_device() && is_tty(m.rdev()) {
            return unsupported("a serial line");
        } else if ft.is_block_device() || ft.is_socket() {
            return unsupported("a device or socket node");
        } else {
            let size = ft.is_file().then_some(m.len());
            let (name, unlinked_name) = (target.clone(), None);
            (fd_type::REG, FileKind::Reg(RegFile { flags, pos: info.pos, name, size, mode: m.mode(), unlinked_name }))
        };
        let id = self.push(file);
        self.descriptions.push((pid, fd, dev, ino, id));
        Ok(Fd { fd: fd as u32, id, cloexec, kind })
    }

    /// Once every fd and mapping is seen: each inotify watch on a file
    /// unlinked since must be on an unlinked file the tree carries, which
    /// the restore makes again; one that nothing of the tree holds is
    /// refused.
    pub fn watched_ghosts(&self) -> Result<()> {
        for e in &self.entries {
            let FileKind::Anon(a) = &e.kind else { continue };
            let self::anonfd::AnonFile::Inotify { watches } = &a.file else { continue };
            if let Some(w) = watches.iter().find(|w| w.unlinked.is_some_and(|k| !self.ghost_keys.contains_key(&k))) {
                bail!(
                    "inotify (files.img id {}): watch {} is on {}, unlinked since, which nothing of the tree holds \
                     open (nothing could make it again)",
                    e.id,
                    w.wd,
                    w.path.to_string_lossy()
                );
            }
        }
        Ok(())
    }

    /// Carries entry `id`, unlinked (open at `link`, shown as `name`), as a
    /// ghost: a regular file with its contents, a FIFO or a directory
    /// without. Every entry of one inode shares the key of its first.
    fn add_ghost(&mut self, id: u32, link: &std::path::Path, name: &str, m: &fs::Metadata) -> Result<()> {
        let key = *self.ghost_keys.entry((m.dev(), m.ino())).or_insert(id);
        let ghost = if m.is_file() {
            ghost::dump(link, name, m, key, self.ghost_limit.unwrap_or(ghost::LIMIT))?
        } else {
            ghost::Ghost::empty(key, m)
        };
        self.ghosts.push((id, ghost));
        Ok(())
    }

    /// The `files.img` id of a file in flight in a message, a copy of which
    /// is ours (`f`): described like any fd, as one of ours, and kept open
    /// until the dump ends (descriptions are matched through it). Only the
    /// kinds a restore can send again are taken.
    fn in_flight(&mut self, f: std::os::fd::OwnedFd) -> Result<u32> {
        use std::os::fd::AsRawFd;
        let me = std::process::id() as i32;
        let fd = f.as_raw_fd();
        let target = fs::read_link(procfs::path(me, &format!("fd/{fd}"))).unwrap_or_default();
        let target = target.to_string_lossy();
        let refuse = || -> Result<u32> {
            bail!("{target}: only pipes, unix sockets and files opened by path are restored in flight yet")
        };
        let ino = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')?.parse::<u32>().ok());
        let unix = ino.is_some_and(|i| self.unix.as_ref().is_some_and(|d| d.contains_key(&i)));
        // Only unix sockets: refused before reading, which for a TCP
        // connection would lock it.
        if target.starts_with("anon_inode:") || target.starts_with("socket:") && !unix {
            return refuse();
        }
        let fdinfo = procfs::read_string(me, &format!("fdinfo/{fd}"))?;
        let e = self.fd_entry(me, fd, &fdinfo)?;
        if !matches!(self.entries[e.id as usize - 1].kind, FileKind::Reg(_) | FileKind::Pipe(_) | FileKind::Unix(_))
            || self.ghosts.iter().any(|(id, _)| *id == e.id)
        {
            return refuse();
        }
        self.in_flight.push(f);
        Ok(e.id)
    }

    /// The id of an fd seen before that shares this fd's open file
    /// description.
    fn shared_description(&self, pid: i32, fd: i32, dev: u64, ino: u64) -> Result<Option<u32>> {
        for &(p2, fd2, d2, i2, id) in &self.descriptions {
            if (d2, i2) != (dev, ino) {
                continue;
            }
            const KCMP_FILE: nix::libc::c_int = 0;
            // SAFETY: kcmp only compares kernel objects; no memory is passed.
            let r = unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_kcmp,
                    pid,
                    p2,
                    KCMP_FILE,
                    fd as nix::libc::c_ulong,
                    fd2 as nix::libc::c_ulong,
                )
            };
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

/// One file descriptor to reopen at its number.
#[derive(Debug, Clone, Default)]
pub struct FdPlan {
    pub fd: i32,
    /// Its open file description: the `files.img` id, the same for every
    /// fd of the tree that shares the description (dup, inheritance).
    pub id: u32,
    pub path: PathBuf,
    /// `open` flags (never `O_CREAT`, `O_TRUNC` or `O_EXCL`).
    pub flags: i32,
    pub pos: u64,
    pub cloexec: bool,
    /// A memfd: `path` is that of object `shmid`, which the host makes
    /// before the restore (`shmem`).
    pub shmem: Option<u64>,
    /// The host's descriptor of that object, once made.
    pub object_fd: Option<i32>,
    /// A named pipe, and what to put in it.
    pub fifo: Option<fifo::FifoFill>,
    /// An unlinked file: the host creates it at `path` with these
    /// contents before the tasks open it, and unlinks it after.
    pub ghost: Option<ghost::Ghost>,
    /// A terminal (its `tty-info.img` id), which the host opens.
    pub tty: Option<u32>,
    /// A socket (unix or inet), which the host makes.
    pub socket: bool,
    /// A pidfd of a process that had exited (the inode it had), which the
    /// host makes.
    pub dead_pidfd: Option<u32>,
    /// An eventfd, signalfd or timerfd several processes share, which the
    /// host makes (`anonfd::make_shared`).
    pub shared_anon: Option<anonfd::Anon>,
    /// A description the host makes with its unlinked file
    /// (`ghost::make`): the one that made it with `O_TMPFILE`, or one on
    /// a symbolic link (`O_PATH`, which no reopening through /proc gives).
    pub ghost_itself: bool,
}

impl FdPlan {
    /// Made by the host before any process exists, and placed at a slot
    /// of the tree by its root.
    pub fn host_made(&self) -> bool {
        self.tty.is_some()
            || self.socket
            || self.dead_pidfd.is_some()
            || self.ghost_itself
            || self.shared_anon.is_some()
    }

    /// Fd `f` on socket inode `ino` (unix or inet), which the host makes.
    pub fn socket(f: &FdinfoEntry, ino: u32, flags: u32, cloexec: bool) -> FdPlan {
        let path = PathBuf::from(format!("socket:[{ino}]"));
        FdPlan { fd: f.fd as i32, id: f.id, path, flags: flags as i32, cloexec, socket: true, ..Default::default() }
    }
}

/// `F_SETOWN_EX`/`F_SETSIG` of the description behind `fd` (CRIU's
/// `fown_entry`): the owner, and the uids the kernel checks when it
/// signals, which are those of whoever set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdOwner {
    pub fd: i32,
    pub uid: u32,
    pub euid: u32,
    pub signum: u32,
    pub pid_type: u32,
    pub pid: u32,
}

/// A process's descriptors, by how they come back.
#[derive(Debug, Default)]
pub struct FilesPlan {
    /// Opened by path (regular files, FIFOs, memfds, unlinked files).
    pub fds: Vec<FdPlan>,
    pub pipes: Vec<pipe::PipePlan>,
    pub owners: Vec<FdOwner>,
    pub anon_fds: Vec<anonfd::Make>,
    pub locks: Vec<locks::Lock>,
}

/// How process `p` gets each of its fds back, each kind planned by its
/// module; anything else is refused naming the fd.
pub fn plan(set: &ImageSet, p: &Process) -> Result<FilesPlan> {
    let pid = p.pstree.pid as i32;
    let fdinfo = format!("fdinfo-{}.img", p.ids.files_id);
    let mut plan = FilesPlan::default();
    let mut owners: Vec<(u32, FdOwner)> = Vec::new();
    let mut anon_fds: Vec<(u32, anonfd::Make)> = Vec::new();
    for (i, f) in p.fds.iter().enumerate() {
        let entry = set.file(f.id).with_context(|| format!("{fdinfo}: entry {i}: no file {}", f.id))?;
        if !owners.iter().any(|(id, _)| *id == f.id)
            && let Some(o) = owner(entry, f)?
        {
            owners.push((f.id, o));
        }
        let cloexec = f.flags & libc::FD_CLOEXEC as u32 != 0;
        let at = format!("{fdinfo}: entry {i}: fd {}", f.fd);
        if let Some(pe) = &entry.pipe {
            pipe::plan_fd(set, &mut plan.pipes, f, pe, cloexec);
        } else if let Some(e) = entry.pidfd.as_ref().filter(|e| e.nspid == -1) {
            plan.fds.push(anonfd::pidfd::plan_dead(f, e, cloexec, &at)?);
        } else if anonfd::plan_fd(
            set,
            &mut anon_fds,
            &mut plan.fds,
            f,
            entry,
            cloexec,
            &format!("{fdinfo}: entry {i}"),
        )? {
        } else if let Some(u) = &entry.usk {
            plan.fds.push(FdPlan::socket(f, u.ino, u.flags, cloexec));
        } else if let Some(i) = &entry.isk {
            plan.fds.push(FdPlan::socket(f, i.ino, i.flags, cloexec));
        } else if let Some(n) = &entry.nlsk {
            plan.fds.push(FdPlan::socket(f, n.ino, n.flags, cloexec));
        } else if let Some(p) = &entry.psk {
            // Packet sockets' entries have no inode: the file id names it.
            plan.fds.push(FdPlan::socket(f, p.id, p.flags, cloexec));
        } else if let Some(t) = &entry.tty {
            plan.fds.push(tty::plan_fd(set, f, t, cloexec, &at)?);
        } else if let Some(fe) = &entry.fifo {
            plan.fds.push(fifo::plan_fd(set, f, fe, cloexec, &at)?);
        } else if let Some(m) = &entry.memfd {
            plan.fds.push(memfd::plan_fd(set, f, m, cloexec, &format!("{fdinfo}: entry {i}"))?);
        } else if let Some(n) = &entry.nsf {
            plan.fds.push(nsfile::plan_fd(f, n, &p.ids, cloexec, &at)?);
        } else if let Some(r) = &entry.reg {
            plan.fds.push(reg::plan_fd(set, pid, f, r, cloexec, &at)?);
        } else {
            let ty =
                FdType::try_from(entry.r#type).map(|t| format!("{t:?}")).unwrap_or_else(|_| entry.r#type.to_string());
            bail!("{at} is a {ty} file; only files opened by path are restored yet");
        }
    }
    plan.anon_fds = anon_fds.into_iter().map(|(_, m)| m).collect();
    // A watch on a file unlinked since watches the one made again.
    for m in &mut plan.anon_fds {
        let anonfd::AnonFile::Inotify { watches } = &mut m.anon.file else { continue };
        for w in watches.iter_mut() {
            let at = format!("{fdinfo}: the inotify at fd {}: watch {}", m.fd, w.wd);
            if let Some(path) = ghost::watched(set, w.sdev, w.ino, &at)? {
                w.path = std::ffi::CString::new(path.into_os_string().into_encoded_bytes())
                    .with_context(|| format!("{at}: a path with a NUL"))?;
            } else if w.path.is_empty() {
                bail!("{at}: no path for the watched file, and no unlinked file of its device and inode");
            }
        }
    }
    plan.owners = owners.into_iter().map(|(_, o)| o).collect();
    plan.locks = locks::plan(set, p)?;
    anonfd::check_targets(set, p, &plan.anon_fds, &fdinfo)?;
    Ok(plan)
}

/// The signal owner of `entry` as fd `f` sets it again, if it has one.
fn owner(entry: &revenant_images::messages::FileEntry, f: &FdinfoEntry) -> Result<Option<FdOwner>> {
    let fown =
        entry.reg.as_ref().map(|r| &r.fown).or(entry.pipe.as_ref().map(|p| &p.fown)).or(anonfd::Anon::fown(entry));
    let Some(o) = fown.filter(|o| o.pid != 0 || o.signum != 0) else { return Ok(None) };
    if o.pid_type > 2 || o.signum > 64 {
        bail!("files.img: entry id {}: fown: pid_type {} or signum {} out of range", f.id, o.pid_type, o.signum);
    }
    let (uid, euid, signum, pid_type, pid) = (o.uid, o.euid, o.signum, o.pid_type, o.pid);
    Ok(Some(FdOwner { fd: f.fd as i32, uid, euid, signum, pid_type, pid }))
}

/// `files.img` and the images its kinds keep beside it (pipe and FIFO
/// data, unlinked files, socket queues, memfd objects, locks), each
/// handed to `put` with its name.
pub fn images(files: &Files, put: &mut dyn FnMut(String, &Writer) -> Result<()>) -> Result<()> {
    for (kind, data, name) in
        [(Kind::PipesData, &files.pipe_data, "pipes-data.img"), (Kind::FifoData, &files.fifo_data, "fifo-data.img")]
    {
        if !data.is_empty() {
            put(name.into(), &pipe::data_image(kind, data))?;
        }
    }
    let mut w = Writer::new(Kind::Files);
    for e in &files.entries {
        let o = files.owners.get(&e.id).copied().unwrap_or_default();
        let (uid, euid, signum, pid_type, pid) = (o.uid, o.euid, o.signum, o.pid_type, o.pid);
        let fown = FownEntry { uid, euid, signum, pid_type, pid, ..Default::default() };
        w.push(&match &e.kind {
            FileKind::Reg(r) => r.entry(e.id, fown),
            FileKind::Anon(a) => a.entry(e.id, fown),
            FileKind::Unix(u) => u.entry(e.id, fown),
            FileKind::Inet(i) => i.entry(e.id, fown),
            FileKind::Netlink(n) => n.entry(e.id, fown),
            FileKind::Packet(p) => p.entry(e.id, fown),
            FileKind::Fifo(f) => f.entry(e.id),
            FileKind::Memfd(m) => m.entry(e.id, fown, &files.memfds),
            FileKind::Pipe(pp) => pp.entry(e.id, fown),
            FileKind::Tty(t) => t.entry(e.id, fown),
            FileKind::Ns(n) => n.entry(e.id),
        });
    }
    put("files.img".into(), &w)?;
    ghost::images(&files.ghosts, &files.dead_pids, put)?;
    tty::images(files, put)?;
    let packets = files.entries.iter().flat_map(|e| match &e.kind {
        FileKind::Unix(u) => u.packets(e.id),
        FileKind::Inet(i) => i.packets(e.id),
        _ => vec![],
    });
    if let Some(q) = unixsk::queues_image(packets.collect()) {
        put("sk-queues.img".into(), &q)?;
    }
    for e in &files.entries {
        if let FileKind::Inet(i) = &e.kind
            && let Some(st) = &i.stream
        {
            let mut w = Writer::new(Kind::TcpStream);
            w.push(&st.entry).raw(&st.inq).raw(&st.outq);
            put(format!("tcp-stream-{:x}.img", i.ino), &w)?;
        }
    }
    if !files.memfds.is_empty() {
        let mut inodes = Writer::new(Kind::MemfdInode);
        for e in memfd::inode_entries(&files.memfds) {
            inodes.push(&e);
        }
        put("memfd.img".into(), &inodes)?;
    }
    if let Some(w) = locks::image(files.locks.iter().map(|(_, l)| l)) {
        put("filelocks.img".into(), &w)?;
    }
    Ok(())
}
