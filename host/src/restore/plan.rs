//! The restore plan: everything a restore will do, as plain data, built and
//! checked before any process is created. Nothing after the plan may find
//! out that the images are bad.

use std::ffi::CString;
use std::path::PathBuf;

pub use crate::files::pipe::{PipeEnd, PipePlan};
pub use crate::files::{FdOwner, FdPlan, fifo::FifoFill};
use revenant_blob_abi::{Creds, ITimer, MmMap, PosixTimer, QueuedSignal, Rlimit, SigAction};

/// A pages image a process's page runs read from.
#[derive(Debug, Clone)]
pub enum PagesFile {
    /// The pages image of the directory restored.
    Image(PathBuf),
    /// A parent's, up an iterative dump's chain (`chain.rs`): opened while
    /// that directory was, and held open since (its path went through the
    /// directory's fd, which is closed once the chain is read).
    Parent { path: PathBuf, file: std::sync::Arc<std::fs::File> },
}

impl PagesFile {
    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            PagesFile::Image(p) | PagesFile::Parent { path: p, .. } => p.display().to_string(),
        }
    }

    /// An open file to read pages from.
    pub fn open(&self) -> anyhow::Result<std::fs::File> {
        use anyhow::Context;
        match self {
            PagesFile::Image(p) => Ok(revenant_images::file::ImageFile::open(p)?.file),
            PagesFile::Parent { path, file } => file.try_clone().with_context(|| format!("{}", path.display())),
        }
    }
}

/// What the host makes for a restore before any process exists, besides
/// SysV segments.
#[derive(Debug, Clone, Default)]
pub struct HostObjects {
    /// Shared anonymous memory, each object once.
    pub shmem: Vec<crate::shmem::restore::ObjectPlan>,
    /// Terminals, which the host opens and sets up.
    pub ttys: Vec<crate::files::tty::TtyPlan>,
    /// Unix sockets (`files.img` id and socket).
    pub sockets: Vec<(u32, crate::files::unixsk::UnixSock)>,
    /// TCP and UDP sockets.
    pub inet: Vec<(u32, crate::files::inet::InetSock)>,
    /// Netlink sockets.
    pub netlink: Vec<(u32, crate::files::netlink::NetlinkSock)>,
    /// Packet sockets.
    pub packet: Vec<(u32, crate::files::packet::PacketSock)>,
    /// Files in flight in messages queued on unix sockets.
    pub inflight: Vec<crate::files::unixsk::InFlight>,
    /// Where the dump's keeper of TCP connections would answer.
    pub keeper: Option<String>,
    /// Pipes not made but opened from the caller's (`--inherit-fd`).
    pub given_pipes: Vec<crate::files::pipe::Given>,
}

/// One process to bring back.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub pid: i32,
    /// The signal that had stopped it; it stops again (with SIGSTOP) once
    /// restored.
    pub stop_signal: Option<i32>,
    /// The parent in the restored tree; 0 for the root.
    pub ppid: i32,
    pub session: Session,
    /// `PR_SET_NAME`, NUL-padded.
    pub comm: [u8; 16],
    /// The executable, for `PR_SET_MM_MAP`'s exe_fd.
    pub exe: Option<PathBuf>,
    pub cwd: PathBuf,
    /// The cwd is the /proc directory of this PID, which had ended: a
    /// helper with it holds the directory while the task enters it.
    pub cwd_holder: Option<i32>,
    pub root: PathBuf,
    pub umask: u32,
    pub fds: Vec<FdPlan>,
    /// Pipes whose ends the program held, rebuilt with their data.
    pub pipes: Vec<PipePlan>,
    /// eventfds, signalfds, timerfds and epolls, made by the new task.
    pub anon_fds: Vec<crate::files::anonfd::Make>,
    /// File locks it takes again through its fds.
    pub locks: Vec<crate::files::locks::Lock>,
    /// Descriptions with a signal owner or signal of their own, by one fd
    /// of this process on each; set while the tree is held.
    pub owners: Vec<FdOwner>,
    pub vmas: Vec<VmaPlan>,
    /// The pages images the page runs read from ([`PageRun::file`]): the
    /// directory's own first.
    pub pages: Vec<PagesFile>,
    pub page_runs: Vec<PageRun>,
    /// Guard regions (`MADV_GUARD_INSTALL`) to install, by address.
    pub guards: Vec<(u64, u64)>,
    /// Process groups whose leader is gone that its children or zombies
    /// join: it creates a helper task for each, with the group's id, before
    /// them, and reaps it once they joined (`from_images::group_helpers`).
    pub group_helpers: Vec<i32>,
    pub mm: MmMap,
    /// The saved auxv, native words.
    pub auxv: Vec<u64>,
    pub sigactions: Vec<SigAction>,
    pub rlimits: Vec<Rlimit>,
    pub itimers: Vec<ITimer>,
    pub posix_timers: Vec<PosixTimer>,
    /// Signals pending at dump, process-wide (tid 0) or per thread.
    pub signals: Vec<QueuedSignal>,
    pub threads: Vec<ThreadPlan>,
    /// Proxy to the runtime vDSO even when it matches the dumped one
    /// (`--vdso-proxy`; tests use it to exercise the proxy).
    pub vdso_proxy: bool,
    /// Process-wide settings the new task makes before its blob runs.
    pub knobs: Knobs,
    /// Supplementary groups (all threads share them).
    pub groups: Vec<u32>,
    /// The `cgroup.procs` files the new task writes itself into, before
    /// its memory is mapped (`cgroups.rs`).
    pub cgroups: Vec<PathBuf>,
    /// Unlinked files it maps or runs, made again for it to map
    /// (`files::ghost::make`).
    pub ghosts: Vec<(PathBuf, crate::files::ghost::Ghost)>,
    /// The terminal its session had, which it (the session's leader) takes
    /// again through this path before it creates its children.
    pub ctty: Option<PathBuf>,
    /// It leads its terminal's foreground group, and brings it forward.
    pub tty_fg: bool,
}

/// A process that had exited and was not yet waited for.
#[derive(Debug, Clone)]
pub struct ZombiePlan {
    pub pid: i32,
    pub ppid: i32,
    pub session: Session,
    /// `PR_SET_NAME`, NUL-padded.
    pub comm: [u8; 16],
    pub exit: ZombieExit,
}

/// How a zombie ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZombieExit {
    Code(u32),
    Signal(u32),
}

/// How the process relates to its session and process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// It led its own session (`setsid`).
    Leader,
    /// It led a process group inside the restoring session (`setpgid`).
    GroupLeader,
    /// It belonged to the restoring shell's session and group
    /// (`--shell-job`), or to its parent's.
    Inherit,
    /// It joined the group another process of its session leads (a
    /// shell's pipeline).
    Join(i32),
}

/// What backs a memory area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    Anon,
    /// A file mapping; the file is opened with `open_flags` and mapped.
    File {
        path: PathBuf,
        open_flags: i32,
    },
    /// The dumped vDSO code, and the vvar data in front of it: the runtime
    /// ones move there.
    Vdso,
    Vvar,
    /// The kernel's fixed `[vsyscall]` page: nothing to do.
    Vsyscall,
    /// A SysV shared memory attachment of segment `id` (created before the
    /// restore). `attach` is set on the first piece of an attachment; the
    /// later pieces (after an `mprotect` of part of it) are only
    /// re-protected.
    SysvShm {
        id: i32,
        attach: Option<ShmAttach>,
    },
    /// Shared anonymous memory or a memfd, object `shmid` (made by the
    /// host before the restore, see `shmem`), mapped at the area's
    /// `pgoff`.
    Shmem {
        shmid: u64,
    },
}

/// How a SysV segment is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmAttach {
    /// What `shmat` maps: the segment's size, in whole pages.
    pub len: u64,
    /// Attached with `SHM_RDONLY` (no piece can ever become writable).
    pub read_only: bool,
}

/// One memory area.
#[derive(Debug, Clone)]
pub struct VmaPlan {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    /// `MAP_*` flags, without `MAP_FIXED`.
    pub flags: u32,
    pub pgoff: u64,
    /// `1 << MADV_*` bits to apply.
    pub madv: u64,
    pub backing: Backing,
}

impl ProcessPlan {
    /// The plan with each fd on a description the host made (terminals,
    /// unix sockets: `files.img` id and the host's descriptor) pointing
    /// at it.
    pub fn with_host_made(&self, made: &[(u32, i32)]) -> ProcessPlan {
        let mut p = self.clone();
        for f in p.fds.iter_mut().filter(|f| f.host_made()) {
            f.object_fd = made.iter().find(|(id, _)| *id == f.id).map(|(_, fd)| *fd);
        }
        for e in p.pipes.iter_mut().flat_map(|pp| &mut pp.ends) {
            e.object_fd = made.iter().find(|(id, _)| *id == e.id).map(|(_, fd)| *fd);
        }
        p
    }

    /// The plan with the paths of its files, mappings, executable, cwd,
    /// root and inotify watches passed through `map` (`None`: unchanged).
    pub fn with_paths(&self, map: impl Fn(&std::path::Path) -> Option<PathBuf>) -> ProcessPlan {
        let mut p = self.clone();
        let mapped = p.vmas.iter_mut().filter_map(|v| match &mut v.backing {
            Backing::File { path, .. } => Some(path),
            _ => None,
        });
        let paths =
            p.fds.iter_mut().map(|f| &mut f.path).chain(p.exe.as_mut()).chain([&mut p.cwd, &mut p.root]).chain(mapped);
        for path in paths {
            if let Some(to) = map(path) {
                *path = to;
            }
        }
        let watches = p.anon_fds.iter_mut().flat_map(|m| match &mut m.anon.file {
            crate::files::anonfd::AnonFile::Inotify { watches } => watches.as_mut_slice(),
            _ => &mut [],
        });
        for w in watches {
            use std::os::unix::ffi::OsStrExt;
            if let Some(to) = map(std::path::Path::new(std::ffi::OsStr::from_bytes(w.path.as_bytes())))
                .and_then(|to| std::ffi::CString::new(to.into_os_string().into_encoded_bytes()).ok())
            {
                w.path = to;
            }
        }
        p
    }

    /// The plan with its SysV attachments' segment ids passed through `map`.
    pub fn with_shm_ids(&self, map: impl Fn(i32) -> i32) -> ProcessPlan {
        let mut p = self.clone();
        for v in &mut p.vmas {
            if let Backing::SysvShm { id, .. } = &mut v.backing {
                *id = map(*id);
            }
        }
        p
    }
}

impl VmaPlan {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Pages to read: `len` bytes at `addr` from `file_offset` in pages image
/// `file` (an index into the process's [`ProcessPlan::pages`]; 0 where
/// there is one image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    pub addr: u64,
    pub len: u64,
    pub file_offset: u64,
    pub file: u32,
}

/// One thread's state.
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    pub tid: i32,
    pub regs: crate::regs::Regs,
    pub fpu: Option<crate::regs::Fpu>,
    pub sigmask: u64,
    pub altstack: AltStack,
    pub clear_tid_addr: u64,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub rseq: Option<Rseq>,
    /// `PR_SET_PDEATHSIG`, 0 for none.
    pub pdeath_sig: u32,
    /// Scheduling policy, its priority and the nice value, set by the host
    /// while the thread is held.
    pub sched: Sched,
    /// The CPUs it may run on (`sched_setaffinity` words; empty: any), set
    /// by the host while it is held.
    pub affinity: Vec<u64>,
    /// Its I/O priority, likewise.
    pub ioprio: Option<u32>,
    /// Credentials to set, or `None` to keep the restoring process's.
    pub creds: Option<Creds>,
    pub seccomp: SeccompPlan,
}

/// Process-wide state set with `prctl` and `personality` by the new task,
/// before its blob runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Knobs {
    pub child_subreaper: bool,
    pub thp_disabled: bool,
    pub personality: u32,
    /// Set before the blob makes the other threads, which inherit it.
    pub timer_slack_ns: Option<u64>,
    /// Set by the host while the process is held.
    pub oom_score_adj: Option<i32>,
    /// Set by the task itself (the kernel lets no one else).
    pub loginuid: Option<u32>,
    /// `PR_SET_MEMORY_MERGE`, set by the new task (its address space is
    /// the program's).
    pub memory_merge: bool,
    /// `PR_SET_DUMPABLE` (0 or 1), set by each thread after its
    /// credentials; `None` leaves what the credentials give.
    pub dumpable: Option<bool>,
    /// `/proc/PID/coredump_filter`, set by the host while it is held.
    pub coredump_filter: Option<u32>,
    /// `MEMBARRIER_CMD_REGISTER_*` commands to issue: they register the
    /// address space, which the blob keeps.
    pub membarrier: u32,
    /// The autogroup's nice value, set by the host while it is held
    /// (`/proc/PID/autogroup`; the group is the session's, made by
    /// `setsid`, or inherited).
    pub autogroup_nice: Option<i32>,
}

/// A thread's scheduling (CRIU's `sched_policy`, `sched_prio`,
/// `sched_nice`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sched {
    pub policy: u32,
    pub prio: u32,
    pub nice: i32,
}

/// A thread's seccomp state.
#[derive(Debug, Clone, Default)]
pub struct SeccompPlan {
    /// Strict mode (then there are no filters).
    pub strict: bool,
    /// (flags, `struct sock_filter` array), oldest first.
    pub filters: Vec<(u32, Vec<u8>)>,
}

impl SeccompPlan {
    pub fn is_empty(&self) -> bool {
        !self.strict && self.filters.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Rseq {
    pub ptr: u64,
    pub len: u32,
    pub sig: u32,
}

/// A path as the child's raw `open` needs it.
pub fn cpath(p: &std::path::Path) -> anyhow::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow::anyhow!("path {} contains a NUL byte", p.display()))
}
