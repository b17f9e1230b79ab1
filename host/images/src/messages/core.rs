//! `core-TID.img`: one per thread. Every thread has its registers and
//! per-thread state; the leader also carries the task-wide state (signal
//! handlers, limits, timers, name).

use crate::json::{Fmt, TASK_STATE};
use crate::proto::{message, proto_enum};

use super::{CredsEntry, TaskKobjIdsEntry, ThreadInfoArm, ThreadInfoX86};

proto_enum! {
    /// The machine the images were dumped on.
    pub enum Mtype {
        Unknown = 0 => "UNKNOWN",
        X8664 = 1 => "X86_64",
        Arm = 2 => "ARM",
        Aarch64 = 3 => "AARCH64",
        Ppc64 = 4 => "PPC64",
        S390 = 5 => "S390",
        Mips = 6 => "MIPS",
        Loongarch64 = 7 => "LOONGARCH64",
        Riscv64 = 8 => "RISCV64",
    }
}

proto_enum! {
    /// `SECCOMP_MODE_*`.
    pub enum SeccompMode {
        Disabled = 0 => "disabled",
        Strict = 1 => "strict",
        Filter = 2 => "filter",
    }
}

message! {
    /// Seconds and microseconds left and reloaded, of one `setitimer` timer.
    pub struct ItimerEntry ("itimer_entry") {
        1 isec: required uint64,
        2 iusec: required uint64,
        3 vsec: required uint64,
        4 vusec: required uint64,
    }
}

message! {
    /// A `timer_create` timer.
    pub struct PosixTimerEntry ("posix_timer_entry") {
        1 it_id: required uint32,
        2 clock_id: required uint32,
        3 si_signo: required uint32,
        4 it_sigev_notify: required uint32,
        5 sival_ptr: required uint64,
        6 overrun: required uint32,
        7 isec: required uint64,
        8 insec: required uint64,
        9 vsec: required uint64,
        10 vnsec: required uint64,
        11 notify_thread_id: optional int32,
    }
}

message! {
    /// The three interval timers and the POSIX timers of a task.
    pub struct TaskTimersEntry ("task_timers_entry") {
        1 real: required message<ItimerEntry>,
        2 virt: required message<ItimerEntry>,
        3 prof: required message<ItimerEntry>,
        4 posix: repeated message<PosixTimerEntry>,
    }
}

message! {
    pub struct RlimitEntry ("rlimit_entry") {
        1 cur: required uint64,
        2 max: required uint64,
    }
}

message! {
    /// Indexed by `RLIMIT_*`.
    pub struct TaskRlimitsEntry ("task_rlimits_entry") {
        1 rlimits: repeated message<RlimitEntry>,
    }
}

message! {
    /// A queued signal: the kernel's `siginfo_t` as bytes.
    pub struct SiginfoEntry ("siginfo_entry") {
        1 siginfo: required bytes,
    }
}

message! {
    pub struct SignalQueueEntry ("signal_queue_entry") {
        1 signals: repeated message<SiginfoEntry>,
    }
}

message! {
    /// A signal action; the leader has 62, for signals 1-64 without KILL
    /// and STOP, in signal order.
    pub struct SaEntry ("sa_entry") {
        1 sigaction: required uint64 [Fmt::Hex],
        2 flags: required uint64 [Fmt::Hex],
        3 restorer: required uint64 [Fmt::Hex],
        4 mask: required uint64 [Fmt::Hex],
        5 compat_sigaction: optional bool,
        6 mask_extended: optional uint64 [Fmt::Hex],
    }
}

message! {
    /// The task-wide state, in the leader's core image only.
    pub struct TaskCoreEntry ("task_core_entry") {
        /// 1 alive, 2 dead, 3 stopped, 6 zombie.
        1 task_state: required uint32 [Fmt::Dict(TASK_STATE)],
        2 exit_code: required uint32,
        3 personality: required uint32,
        /// `PF_*`.
        4 flags: required uint32,
        /// The leader's blocked signals.
        5 blk_sigset: required uint64 [Fmt::Hex],
        6 comm: required string,
        7 timers: optional message<TaskTimersEntry>,
        8 rlimits: optional message<TaskRlimitsEntry>,
        9 cg_set: optional uint32,
        /// Signals pending for the whole process.
        10 signals_s: optional message<SignalQueueEntry>,
        /// Before seccomp was per thread.
        11 old_seccomp_mode: optional enumeration<SeccompMode>,
        12 old_seccomp_filter: optional uint32,
        13 loginuid: optional uint32,
        14 oom_score_adj: optional int32,
        15 sigactions: repeated message<SaEntry>,
        18 child_subreaper: optional bool,
        /// Blocked signals above 64, on machines that have them.
        20 blk_sigset_extended: optional uint64 [Fmt::Hex],
        21 stop_signo: optional uint32,
        22 membarrier_registration_mask: optional uint32 [Fmt::Hex],
        /// revenant's own, far from CRIU's numbers (CRIU has no field for
        /// it; protobuf readers skip what they do not know): the timer
        /// slack, which every thread shares (a dump refuses threads that
        /// differ).
        1000 timer_slack_ns: optional uint64,
        /// revenant's own: `/proc/PID/coredump_filter`.
        1001 coredump_filter: optional uint32 [Fmt::Hex],
        /// revenant's own: `PR_SET_MEMORY_MERGE` (KSM for the whole
        /// address space).
        1002 memory_merge: optional bool,
        /// revenant's own: the nice value of the process's autogroup
        /// (`/proc/PID/autogroup`), absent without autogroups.
        1003 autogroup_nice: optional sint32,
    }
}

message! {
    /// `sigaltstack`.
    pub struct ThreadSasEntry ("thread_sas_entry") {
        1 ss_sp: required uint64,
        2 ss_size: required uint64,
        3 ss_flags: required uint32,
    }
}

message! {
    /// A thread's registered restartable sequence.
    pub struct RseqEntry ("rseq_entry") {
        1 rseq_abi_pointer: required uint64,
        2 rseq_abi_size: required uint32,
        3 signature: required uint32,
        4 rseq_cs_pointer: optional uint64,
    }
}

message! {
    /// Per-thread state that is not registers.
    pub struct ThreadCoreEntry ("thread_core_entry") {
        /// The robust futex list head and its length.
        1 futex_rla: required uint64,
        2 futex_rla_len: required uint32,
        3 sched_nice: optional sint32,
        4 sched_policy: optional uint32,
        5 sched_prio: optional uint32,
        /// Blocked signals (for the leader too, since CRIU 3).
        6 blk_sigset: optional uint64,
        7 sas: optional message<ThreadSasEntry>,
        /// Signal sent on the parent's death (`PR_SET_PDEATHSIG`).
        8 pdeath_sig: optional uint32,
        /// Signals pending for this thread.
        9 signals_p: optional message<SignalQueueEntry>,
        10 creds: optional message<CredsEntry>,
        11 seccomp_mode: optional enumeration<SeccompMode>,
        /// Index of the thread's last filter in `seccomp.img`.
        12 seccomp_filter: optional uint32,
        13 comm: optional string,
        14 blk_sigset_extended: optional uint64,
        15 rseq_entry: optional message<RseqEntry>,
        16 cg_set: optional uint32,
        /// revenant's own (CRIU keeps neither): the CPUs the thread may run
        /// on, as `sched_getaffinity` words, and its I/O priority
        /// (`ioprio_get`).
        1000 cpu_affinity: repeated uint64 [Fmt::Hex],
        1001 ioprio: optional uint32 [Fmt::Hex],
    }
}

message! {
    /// The single entry of a core image. Which register set is present
    /// follows `mtype`.
    pub struct CoreEntry ("core_entry") {
        1 mtype: required enumeration<Mtype>,
        2 thread_info: optional message<ThreadInfoX86>,
        /// The leader's only.
        3 tc: optional message<TaskCoreEntry>,
        /// Old images kept the ids here.
        4 ids: optional message<TaskKobjIdsEntry>,
        5 thread_core: optional message<ThreadCoreEntry>,
        6 ti_arm: optional message<ThreadInfoArm>,
    }
}
