//! The IPC namespace: its sysctls and its SysV shared memory segments.

/// `ipcns-var-N.img`: the namespace's IPC limits.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpcVarEntry {
    #[prost(uint32, repeated, packed = "false", tag = "1")]
    pub sem_ctls: Vec<u32>,
    #[prost(uint32, required, tag = "2")]
    pub msg_ctlmax: u32,
    #[prost(uint32, required, tag = "3")]
    pub msg_ctlmnb: u32,
    #[prost(uint32, required, tag = "4")]
    pub msg_ctlmni: u32,
    #[prost(uint32, required, tag = "5")]
    pub auto_msgmni: u32,
    #[prost(uint64, required, tag = "6")]
    pub shm_ctlmax: u64,
    #[prost(uint64, required, tag = "7")]
    pub shm_ctlall: u64,
    #[prost(uint32, required, tag = "8")]
    pub shm_ctlmni: u32,
    #[prost(uint32, required, tag = "9")]
    pub shm_rmid_forced: u32,
    #[prost(uint32, required, tag = "10")]
    pub mq_queues_max: u32,
    #[prost(uint32, required, tag = "11")]
    pub mq_msg_max: u32,
    #[prost(uint32, required, tag = "12")]
    pub mq_msgsize_max: u32,
    #[prost(uint32, optional, tag = "13")]
    pub mq_msg_default: Option<u32>,
    #[prost(uint32, optional, tag = "14")]
    pub mq_msgsize_default: Option<u32>,
}

/// Owner, mode and identity of a SysV IPC object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpcDescEntry {
    #[prost(uint32, required, tag = "1")]
    pub key: u32,
    #[prost(uint32, required, tag = "2")]
    pub uid: u32,
    #[prost(uint32, required, tag = "3")]
    pub gid: u32,
    #[prost(uint32, required, tag = "4")]
    pub cuid: u32,
    #[prost(uint32, required, tag = "5")]
    pub cgid: u32,
    #[prost(uint32, required, tag = "6")]
    pub mode: u32,
    #[prost(uint32, required, tag = "7")]
    pub id: u32,
}

/// `ipcns-shm-N.img`: one segment per entry. Its contents follow the entry
/// as raw bytes, unless `in_pagemaps`: then they are in
/// `pagemap-shmem-ID.img` and its pages image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpcShmEntry {
    #[prost(message, required, tag = "1")]
    pub desc: IpcDescEntry,
    #[prost(uint64, required, tag = "2")]
    pub size: u64,
    #[prost(bool, optional, tag = "3")]
    pub in_pagemaps: Option<bool>,
}
