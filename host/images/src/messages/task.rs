//! The process tree and per-task identity.

/// `inventory.img`: what wrote the images.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InventoryEntry {
    #[prost(uint32, required, tag = "1")]
    pub img_version: u32,
    #[prost(bool, optional, tag = "2")]
    pub fdinfo_per_id: Option<bool>,
    #[prost(message, optional, tag = "3")]
    pub root_ids: Option<TaskKobjIdsEntry>,
    #[prost(bool, optional, tag = "4")]
    pub ns_per_id: Option<bool>,
    #[prost(uint32, optional, tag = "5")]
    pub root_cg_set: Option<u32>,
    #[prost(int32, optional, tag = "6")]
    pub lsmtype: Option<i32>,
    #[prost(uint64, optional, tag = "8")]
    pub dump_uptime: Option<u64>,
    #[prost(uint32, optional, tag = "9")]
    pub pre_dump_mode: Option<u32>,
    #[prost(bool, optional, tag = "10")]
    pub tcp_close: Option<bool>,
    #[prost(uint32, optional, tag = "11")]
    pub network_lock_method: Option<u32>,
}

/// `pstree.img`: one entry per process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PstreeEntry {
    #[prost(uint32, required, tag = "1")]
    pub pid: u32,
    #[prost(uint32, required, tag = "2")]
    pub ppid: u32,
    #[prost(uint32, required, tag = "3")]
    pub pgid: u32,
    #[prost(uint32, required, tag = "4")]
    pub sid: u32,
    #[prost(uint32, repeated, packed = "false", tag = "5")]
    pub threads: Vec<u32>,
}

/// `ids-PID.img`: which shared kernel objects the task uses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskKobjIdsEntry {
    #[prost(uint32, required, tag = "1")]
    pub vm_id: u32,
    #[prost(uint32, required, tag = "2")]
    pub files_id: u32,
    #[prost(uint32, required, tag = "3")]
    pub fs_id: u32,
    #[prost(uint32, required, tag = "4")]
    pub sighand_id: u32,
    #[prost(uint32, optional, tag = "5")]
    pub pid_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub net_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub ipc_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub uts_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub mnt_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub user_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    pub cgroup_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "12")]
    pub time_ns_id: Option<u32>,
}

/// `fs-PID.img`: cwd and root (file ids) and umask.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FsEntry {
    #[prost(uint32, required, tag = "1")]
    pub cwd_id: u32,
    #[prost(uint32, required, tag = "2")]
    pub root_id: u32,
    #[prost(uint32, optional, tag = "3")]
    pub umask: Option<u32>,
}

/// `seccomp.img`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SeccompEntry {
    #[prost(message, repeated, tag = "1")]
    pub seccomp_filters: Vec<SeccompFilter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SeccompFilter {
    #[prost(bytes = "vec", required, tag = "1")]
    pub filter: Vec<u8>,
    #[prost(uint32, optional, tag = "2")]
    pub prev: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub flags: Option<u32>,
}

/// `timens-N.img`: the time namespace's offsets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimensEntry {
    #[prost(message, required, tag = "1")]
    pub monotonic: Timespec,
    #[prost(message, required, tag = "2")]
    pub boottime: Timespec,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Timespec {
    #[prost(uint64, required, tag = "1")]
    pub tv_sec: u64,
    #[prost(uint64, required, tag = "2")]
    pub tv_nsec: u64,
}

/// `stats-dump`: timings and counters of the dump.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    pub dump: Option<DumpStatsEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DumpStatsEntry {
    #[prost(uint32, required, tag = "1")]
    pub freezing_time: u32,
    #[prost(uint32, required, tag = "2")]
    pub frozen_time: u32,
    #[prost(uint32, required, tag = "3")]
    pub memdump_time: u32,
    #[prost(uint32, required, tag = "4")]
    pub memwrite_time: u32,
    #[prost(uint64, required, tag = "5")]
    pub pages_scanned: u64,
    #[prost(uint64, required, tag = "6")]
    pub pages_skipped_parent: u64,
    #[prost(uint64, required, tag = "7")]
    pub pages_written: u64,
    #[prost(uint32, optional, tag = "8")]
    pub irmap_resolve: Option<u32>,
    #[prost(uint64, required, tag = "9")]
    pub pages_lazy: u64,
}
