//! `core-TID.img`: one per thread: registers, and for the leader the task
//! state (signals, limits, timers, name).

/// `march`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Mtype {
    Unknown = 0,
    X8664 = 1,
    Arm = 2,
    Aarch64 = 3,
    Ppc64 = 4,
    S390 = 5,
    Mips = 6,
    Loongarch64 = 7,
    Riscv64 = 8,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CoreEntry {
    #[prost(enumeration = "Mtype", required, tag = "1")]
    pub mtype: i32,
    #[prost(message, optional, tag = "2")]
    pub thread_info: Option<ThreadInfoX86>,
    #[prost(message, optional, tag = "3")]
    pub tc: Option<TaskCoreEntry>,
    #[prost(message, optional, tag = "4")]
    pub ids: Option<super::TaskKobjIdsEntry>,
    #[prost(message, optional, tag = "5")]
    pub thread_core: Option<ThreadCoreEntry>,
    #[prost(message, optional, tag = "6")]
    pub ti_arm: Option<ThreadInfoArm>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskCoreEntry {
    #[prost(uint32, required, tag = "1")]
    pub task_state: u32,
    #[prost(uint32, required, tag = "2")]
    pub exit_code: u32,
    #[prost(uint32, required, tag = "3")]
    pub personality: u32,
    #[prost(uint32, required, tag = "4")]
    pub flags: u32,
    #[prost(uint64, required, tag = "5")]
    pub blk_sigset: u64,
    #[prost(string, required, tag = "6")]
    pub comm: String,
    #[prost(message, optional, tag = "7")]
    pub timers: Option<TaskTimersEntry>,
    #[prost(message, optional, tag = "8")]
    pub rlimits: Option<TaskRlimitsEntry>,
    #[prost(uint32, optional, tag = "9")]
    pub cg_set: Option<u32>,
    #[prost(message, optional, tag = "10")]
    pub signals_s: Option<SignalQueueEntry>,
    #[prost(uint32, optional, tag = "13")]
    pub loginuid: Option<u32>,
    #[prost(int32, optional, tag = "14")]
    pub oom_score_adj: Option<i32>,
    #[prost(message, repeated, tag = "15")]
    pub sigactions: Vec<SaEntry>,
    #[prost(bool, optional, tag = "18")]
    pub child_subreaper: Option<bool>,
    #[prost(uint64, optional, tag = "20")]
    pub blk_sigset_extended: Option<u64>,
    #[prost(uint32, optional, tag = "21")]
    pub stop_signo: Option<u32>,
    #[prost(uint32, optional, tag = "22")]
    pub membarrier_registration_mask: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ItimerEntry {
    #[prost(uint64, required, tag = "1")]
    pub isec: u64,
    #[prost(uint64, required, tag = "2")]
    pub iusec: u64,
    #[prost(uint64, required, tag = "3")]
    pub vsec: u64,
    #[prost(uint64, required, tag = "4")]
    pub vusec: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PosixTimerEntry {
    #[prost(uint32, required, tag = "1")]
    pub it_id: u32,
    #[prost(uint32, required, tag = "2")]
    pub clock_id: u32,
    #[prost(uint32, required, tag = "3")]
    pub si_signo: u32,
    #[prost(uint32, required, tag = "4")]
    pub it_sigev_notify: u32,
    #[prost(uint64, required, tag = "5")]
    pub sival_ptr: u64,
    #[prost(uint32, required, tag = "6")]
    pub overrun: u32,
    #[prost(uint64, required, tag = "7")]
    pub isec: u64,
    #[prost(uint64, required, tag = "8")]
    pub insec: u64,
    #[prost(uint64, required, tag = "9")]
    pub vsec: u64,
    #[prost(uint64, required, tag = "10")]
    pub vnsec: u64,
    #[prost(int32, optional, tag = "11")]
    pub notify_thread_id: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskTimersEntry {
    #[prost(message, required, tag = "1")]
    pub real: ItimerEntry,
    #[prost(message, required, tag = "2")]
    pub virt: ItimerEntry,
    #[prost(message, required, tag = "3")]
    pub prof: ItimerEntry,
    #[prost(message, repeated, tag = "4")]
    pub posix: Vec<PosixTimerEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RlimitEntry {
    #[prost(uint64, required, tag = "1")]
    pub cur: u64,
    #[prost(uint64, required, tag = "2")]
    pub max: u64,
}

/// Indexed by `RLIMIT_*`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskRlimitsEntry {
    #[prost(message, repeated, tag = "1")]
    pub rlimits: Vec<RlimitEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SiginfoEntry {
    #[prost(bytes = "vec", required, tag = "1")]
    pub siginfo: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignalQueueEntry {
    #[prost(message, repeated, tag = "1")]
    pub signals: Vec<SiginfoEntry>,
}

/// A signal action; 62 of them, for signals 1-64 without KILL and STOP.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SaEntry {
    #[prost(uint64, required, tag = "1")]
    pub sigaction: u64,
    #[prost(uint64, required, tag = "2")]
    pub flags: u64,
    #[prost(uint64, required, tag = "3")]
    pub restorer: u64,
    #[prost(uint64, required, tag = "4")]
    pub mask: u64,
    #[prost(bool, optional, tag = "5")]
    pub compat_sigaction: Option<bool>,
    #[prost(uint64, optional, tag = "6")]
    pub mask_extended: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadSasEntry {
    #[prost(uint64, required, tag = "1")]
    pub ss_sp: u64,
    #[prost(uint64, required, tag = "2")]
    pub ss_size: u64,
    #[prost(uint32, required, tag = "3")]
    pub ss_flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CredsEntry {
    #[prost(uint32, required, tag = "1")]
    pub uid: u32,
    #[prost(uint32, required, tag = "2")]
    pub gid: u32,
    #[prost(uint32, required, tag = "3")]
    pub euid: u32,
    #[prost(uint32, required, tag = "4")]
    pub egid: u32,
    #[prost(uint32, required, tag = "5")]
    pub suid: u32,
    #[prost(uint32, required, tag = "6")]
    pub sgid: u32,
    #[prost(uint32, required, tag = "7")]
    pub fsuid: u32,
    #[prost(uint32, required, tag = "8")]
    pub fsgid: u32,
    #[prost(uint32, repeated, packed = "false", tag = "9")]
    pub cap_inh: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "10")]
    pub cap_prm: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "11")]
    pub cap_eff: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "12")]
    pub cap_bnd: Vec<u32>,
    #[prost(uint32, required, tag = "13")]
    pub secbits: u32,
    #[prost(uint32, repeated, packed = "false", tag = "14")]
    pub groups: Vec<u32>,
    #[prost(string, optional, tag = "15")]
    pub lsm_profile: Option<String>,
    #[prost(string, optional, tag = "16")]
    pub lsm_sockcreate: Option<String>,
    #[prost(bytes = "vec", optional, tag = "17")]
    pub apparmor_data: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "18")]
    pub no_new_privs: Option<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "19")]
    pub cap_amb: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RseqEntry {
    #[prost(uint64, required, tag = "1")]
    pub rseq_abi_pointer: u64,
    #[prost(uint32, required, tag = "2")]
    pub rseq_abi_size: u32,
    #[prost(uint32, required, tag = "3")]
    pub signature: u32,
    #[prost(uint64, optional, tag = "4")]
    pub rseq_cs_pointer: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadCoreEntry {
    #[prost(uint64, required, tag = "1")]
    pub futex_rla: u64,
    #[prost(uint32, required, tag = "2")]
    pub futex_rla_len: u32,
    #[prost(sint32, optional, tag = "3")]
    pub sched_nice: Option<i32>,
    #[prost(uint32, optional, tag = "4")]
    pub sched_policy: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub sched_prio: Option<u32>,
    #[prost(uint64, optional, tag = "6")]
    pub blk_sigset: Option<u64>,
    #[prost(message, optional, tag = "7")]
    pub sas: Option<ThreadSasEntry>,
    #[prost(uint32, optional, tag = "8")]
    pub pdeath_sig: Option<u32>,
    #[prost(message, optional, tag = "9")]
    pub signals_p: Option<SignalQueueEntry>,
    #[prost(message, optional, tag = "10")]
    pub creds: Option<CredsEntry>,
    #[prost(uint32, optional, tag = "11")]
    pub seccomp_mode: Option<u32>,
    #[prost(uint32, optional, tag = "12")]
    pub seccomp_filter: Option<u32>,
    #[prost(string, optional, tag = "13")]
    pub comm: Option<String>,
    #[prost(uint64, optional, tag = "14")]
    pub blk_sigset_extended: Option<u64>,
    #[prost(message, optional, tag = "15")]
    pub rseq_entry: Option<RseqEntry>,
    #[prost(uint32, optional, tag = "16")]
    pub cg_set: Option<u32>,
}

/// `user_regs_struct` of x86_64.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserX86RegsEntry {
    #[prost(uint64, required, tag = "1")]
    pub r15: u64,
    #[prost(uint64, required, tag = "2")]
    pub r14: u64,
    #[prost(uint64, required, tag = "3")]
    pub r13: u64,
    #[prost(uint64, required, tag = "4")]
    pub r12: u64,
    #[prost(uint64, required, tag = "5")]
    pub bp: u64,
    #[prost(uint64, required, tag = "6")]
    pub bx: u64,
    #[prost(uint64, required, tag = "7")]
    pub r11: u64,
    #[prost(uint64, required, tag = "8")]
    pub r10: u64,
    #[prost(uint64, required, tag = "9")]
    pub r9: u64,
    #[prost(uint64, required, tag = "10")]
    pub r8: u64,
    #[prost(uint64, required, tag = "11")]
    pub ax: u64,
    #[prost(uint64, required, tag = "12")]
    pub cx: u64,
    #[prost(uint64, required, tag = "13")]
    pub dx: u64,
    #[prost(uint64, required, tag = "14")]
    pub si: u64,
    #[prost(uint64, required, tag = "15")]
    pub di: u64,
    #[prost(uint64, required, tag = "16")]
    pub orig_ax: u64,
    #[prost(uint64, required, tag = "17")]
    pub ip: u64,
    #[prost(uint64, required, tag = "18")]
    pub cs: u64,
    #[prost(uint64, required, tag = "19")]
    pub flags: u64,
    #[prost(uint64, required, tag = "20")]
    pub sp: u64,
    #[prost(uint64, required, tag = "21")]
    pub ss: u64,
    #[prost(uint64, required, tag = "22")]
    pub fs_base: u64,
    #[prost(uint64, required, tag = "23")]
    pub gs_base: u64,
    #[prost(uint64, required, tag = "24")]
    pub ds: u64,
    #[prost(uint64, required, tag = "25")]
    pub es: u64,
    #[prost(uint64, required, tag = "26")]
    pub fs: u64,
    #[prost(uint64, required, tag = "27")]
    pub gs: u64,
    /// 1 native, 2 compat (32-bit).
    #[prost(int32, optional, tag = "28")]
    pub mode: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UserX86XsaveEntry {
    #[prost(uint64, required, tag = "1")]
    pub xstate_bv: u64,
    #[prost(uint32, repeated, packed = "false", tag = "2")]
    pub ymmh_space: Vec<u32>,
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub bndreg_state: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub bndcsr_state: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "5")]
    pub opmask_reg: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "6")]
    pub zmm_upper: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "7")]
    pub hi16_zmm: Vec<u64>,
    #[prost(uint32, repeated, packed = "false", tag = "8")]
    pub pkru: Vec<u32>,
    #[prost(message, optional, tag = "9")]
    pub cet: Option<UserX86CetEntry>,
}

/// Control-flow enforcement state (shadow stack).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserX86CetEntry {
    #[prost(uint64, required, tag = "1")]
    pub cet: u64,
    #[prost(uint64, required, tag = "2")]
    pub ssp: u64,
}

/// The FXSAVE layout, plus the extended state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserX86FpregsEntry {
    #[prost(uint32, required, tag = "1")]
    pub cwd: u32,
    #[prost(uint32, required, tag = "2")]
    pub swd: u32,
    #[prost(uint32, required, tag = "3")]
    pub twd: u32,
    #[prost(uint32, required, tag = "4")]
    pub fop: u32,
    #[prost(uint64, required, tag = "5")]
    pub rip: u64,
    #[prost(uint64, required, tag = "6")]
    pub rdp: u64,
    #[prost(uint32, required, tag = "7")]
    pub mxcsr: u32,
    #[prost(uint32, required, tag = "8")]
    pub mxcsr_mask: u32,
    #[prost(uint32, repeated, packed = "false", tag = "9")]
    pub st_space: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "10")]
    pub xmm_space: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "11")]
    pub padding: Vec<u32>,
    #[prost(message, optional, tag = "13")]
    pub xsave: Option<UserX86XsaveEntry>,
}

/// A TLS descriptor (32-bit segments).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserDescT {
    #[prost(uint32, required, tag = "1")]
    pub entry_number: u32,
    #[prost(uint32, required, tag = "2")]
    pub base_addr: u32,
    #[prost(uint32, required, tag = "3")]
    pub limit: u32,
    #[prost(bool, required, tag = "4")]
    pub seg_32bit: bool,
    #[prost(bool, required, tag = "5")]
    pub contents_h: bool,
    #[prost(bool, required, tag = "6")]
    pub contents_l: bool,
    #[prost(bool, required, tag = "7", default = "true")]
    pub read_exec_only: bool,
    #[prost(bool, required, tag = "8")]
    pub limit_in_pages: bool,
    #[prost(bool, required, tag = "9", default = "true")]
    pub seg_not_present: bool,
    #[prost(bool, required, tag = "10")]
    pub usable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadInfoX86 {
    #[prost(uint64, required, tag = "1")]
    pub clear_tid_addr: u64,
    #[prost(message, required, tag = "2")]
    pub gpregs: UserX86RegsEntry,
    #[prost(message, required, tag = "3")]
    pub fpregs: UserX86FpregsEntry,
    #[prost(message, repeated, tag = "4")]
    pub tls: Vec<UserDescT>,
}

/// ARM's general registers: r0-r10, fp, ip, sp, lr, pc, cpsr, orig_r0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserArmRegsEntry {
    #[prost(uint32, required, tag = "1")]
    pub r0: u32,
    #[prost(uint32, required, tag = "2")]
    pub r1: u32,
    #[prost(uint32, required, tag = "3")]
    pub r2: u32,
    #[prost(uint32, required, tag = "4")]
    pub r3: u32,
    #[prost(uint32, required, tag = "5")]
    pub r4: u32,
    #[prost(uint32, required, tag = "6")]
    pub r5: u32,
    #[prost(uint32, required, tag = "7")]
    pub r6: u32,
    #[prost(uint32, required, tag = "8")]
    pub r7: u32,
    #[prost(uint32, required, tag = "9")]
    pub r8: u32,
    #[prost(uint32, required, tag = "10")]
    pub r9: u32,
    #[prost(uint32, required, tag = "11")]
    pub r10: u32,
    #[prost(uint32, required, tag = "12")]
    pub fp: u32,
    #[prost(uint32, required, tag = "13")]
    pub ip: u32,
    #[prost(uint32, required, tag = "14")]
    pub sp: u32,
    #[prost(uint32, required, tag = "15")]
    pub lr: u32,
    #[prost(uint32, required, tag = "16")]
    pub pc: u32,
    #[prost(uint32, required, tag = "17")]
    pub cpsr: u32,
    #[prost(uint32, required, tag = "18")]
    pub orig_r0: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UserArmVfpstateEntry {
    #[prost(uint64, repeated, packed = "false", tag = "1")]
    pub vfp_regs: Vec<u64>,
    #[prost(uint32, required, tag = "2")]
    pub fpscr: u32,
    #[prost(uint32, required, tag = "3")]
    pub fpexc: u32,
    #[prost(uint32, required, tag = "4")]
    pub fpinst: u32,
    #[prost(uint32, required, tag = "5")]
    pub fpinst2: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadInfoArm {
    #[prost(uint64, required, tag = "1")]
    pub clear_tid_addr: u64,
    #[prost(uint32, required, tag = "2")]
    pub tls: u32,
    #[prost(message, required, tag = "3")]
    pub gpregs: UserArmRegsEntry,
    #[prost(message, required, tag = "4")]
    pub fpstate: UserArmVfpstateEntry,
}
