//! What a dump found, as plain data shaped like CRIU's messages, before it
//! is written. Field names follow the images so the conversion is direct.

use super::maps::Vma;
use super::pagemap::Run;
use crate::files::{Fd, Files};
use crate::regs::dump as regs;

/// The whole tree.
#[derive(Debug)]
pub struct Tree {
    /// Parents before children; the root first.
    pub procs: Vec<Process>,
    pub zombies: Vec<Zombie>,
    pub files: Files,
    /// The tree's IPC namespace and SysV segments.
    pub ipc: crate::sysv::dump::Ipc,
    /// Shared anonymous memory, each object once.
    pub shmem: Vec<crate::shmem::dump::Object>,
    /// CLOCK_MONOTONIC and CLOCK_BOOTTIME at dump time, for `timens-0`.
    pub monotonic: (i64, i64),
    pub boottime: (i64, i64),
    /// The dumping process's own cgroups: the inventory's `root_cg_set`,
    /// which a restore leaves tasks in where the restorer is.
    pub own_cgroups: Vec<crate::cgroup::Member>,
}

/// A child that had exited and was not waited for.
#[derive(Debug)]
pub struct Zombie {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Its wait status.
    pub exit_code: u32,
    pub comm: String,
}

#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    /// The signal that had stopped it, if one had.
    pub stop_signal: Option<u32>,
    /// 0 for the root.
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// vm, files, fs and sighand ids (one value: nothing is shared).
    pub kobj_id: u32,
    pub task: TaskCore,
    /// Leader first.
    pub threads: Vec<Thread>,
    pub mm: Mm,
    pub vmas: Vec<VmaOut>,
    pub pages_id: u32,
    pub pagemap: Vec<Run>,
    /// Guard regions (MADV_GUARD_INSTALL), by address, inside `vmas`.
    pub guards: Vec<(u64, u64)>,
    pub fds: Vec<Fd>,
    pub cwd_id: u32,
    pub root_id: u32,
    pub umask: u32,
    /// Its cgroups (every thread's are the same), sorted by hierarchy.
    pub cgroups: Vec<crate::cgroup::Member>,
}

/// A memory area with the file it maps, if any.
#[derive(Debug, Clone)]
pub struct VmaOut {
    pub vma: Vma,
    /// The `files.img` id of a mapped file; 0 otherwise.
    pub shmid: u64,
    /// Open flags the file must be opened with, for file mappings.
    pub fdflags: Option<u32>,
}

/// Process-wide task state (`task_core_entry`).
#[derive(Debug, Clone, Default)]
pub struct TaskCore {
    pub personality: u32,
    pub flags: u32,
    pub blk_sigset: u64,
    pub comm: String,
    /// real, virt, prof: (interval sec, usec, value sec, usec).
    pub timers: [(u64, u64, u64, u64); 3],
    pub rlimits: Vec<(u64, u64)>,
    /// Raw 128-byte siginfos of the shared queue.
    pub signals_s: Vec<Vec<u8>>,
    pub loginuid: u32,
    pub oom_score_adj: i32,
    /// Signals 1..=64 without SIGKILL and SIGSTOP.
    pub sigactions: Vec<SigAction>,
    pub child_subreaper: bool,
    /// The `MEMBARRIER_CMD_REGISTER_*` commands the process issued.
    pub membarrier: u32,
    pub coredump_filter: u32,
    /// `PR_SET_MEMORY_MERGE`: KSM for every area.
    pub memory_merge: bool,
    /// The autogroup's nice value; `None` without autogroups.
    pub autogroup_nice: Option<i32>,
    /// Every thread's (they must agree).
    pub timer_slack_ns: u64,
    pub exit_signal: i32,
    pub posix_timers: Vec<PosixTimer>,
}

/// A POSIX timer (`posix_timer_entry`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: u32,
    pub clock: u32,
    pub signo: u32,
    /// `SIGEV_*`, with `SIGEV_THREAD_ID` (4) when aimed at one thread.
    pub notify: u32,
    pub notify_tid: i32,
    pub sival: u64,
    pub overrun: u32,
    /// interval sec, nsec, value sec, nsec.
    pub times: (u64, u64, u64, u64),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Mm {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_stack: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub exe_file_id: u32,
    pub auxv: Vec<u64>,
    pub dumpable: i32,
    pub thp_disabled: bool,
}

#[derive(Debug, Clone)]
pub struct Thread {
    pub tid: i32,
    pub timer_slack_ns: u64,
    /// A SIGSTOP came while we asked it for its state (see `inject`).
    pub stopping: bool,
    /// After the syscall-restart rewrite.
    pub regs: regs::Gp,
    pub fpu: regs::Fpu,
    pub tls: regs::Tls,
    pub clear_tid_addr: u64,
    pub futex_rla: u64,
    pub futex_rla_len: u32,
    pub sched_nice: i32,
    pub sched_policy: u32,
    pub sched_prio: u32,
    /// `sched_getaffinity` words.
    pub affinity: Vec<u64>,
    pub ioprio: u32,
    pub blk_sigset: u64,
    /// sigaltstack: sp, size, flags.
    pub sas: (u64, u64, u32),
    pub pdeath_sig: u32,
    pub signals_p: Vec<Vec<u8>>,
    pub creds: Creds,
    pub comm: String,
    pub rseq: Option<(u64, u32, u32)>,
    pub seccomp: Seccomp,
}

/// A thread's seccomp mode (0 none, 1 strict, 2 filters) and its filters
/// as (flags, program), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seccomp {
    pub mode: u32,
    pub filters: Vec<(u32, Vec<u8>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// uid, euid, suid, fsuid.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub secbits: u32,
    pub groups: Vec<u32>,
    pub no_new_privs: u32,
}
