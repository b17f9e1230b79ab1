//! The IPC namespace: its sysctls and its SysV shared memory segments.

use crate::proto::message;

message! {
    /// `ipcns-var-N.img`: the namespace's IPC limits.
    pub struct IpcVarEntry ("ipc_var_entry") {
        /// `kernel.sem`: semmsl, semmns, semopm, semmni.
        1 sem_ctls: repeated uint32,
        2 msg_ctlmax: required uint32,
        3 msg_ctlmnb: required uint32,
        4 msg_ctlmni: required uint32,
        5 auto_msgmni: required uint32,
        6 shm_ctlmax: required uint64,
        7 shm_ctlall: required uint64,
        8 shm_ctlmni: required uint32,
        9 shm_rmid_forced: required uint32,
        10 mq_queues_max: required uint32,
        11 mq_msg_max: required uint32,
        12 mq_msgsize_max: required uint32,
        13 mq_msg_default: optional uint32,
        14 mq_msgsize_default: optional uint32,
        15 msg_next_id: optional uint32,
        16 sem_next_id: optional uint32,
        17 shm_next_id: optional uint32,
    }
}

message! {
    /// Owner, mode and identity of a SysV IPC object.
    pub struct IpcDescEntry ("ipc_desc_entry") {
        1 key: required uint32,
        2 uid: required uint32,
        3 gid: required uint32,
        4 cuid: required uint32,
        5 cgid: required uint32,
        6 mode: required uint32,
        7 id: required uint32,
    }
}

message! {
    /// `ipcns-shm-N.img`: one segment per entry. Unless `in_pagemaps`, its
    /// contents follow the entry as raw bytes, `size` rounded up to 4;
    /// otherwise they are in `pagemap-shmem-ID.img` and its pages image.
    pub struct IpcShmEntry ("ipc_shm_entry") {
        1 desc: required message<IpcDescEntry>,
        2 size: required uint64,
        3 in_pagemaps: optional bool,
        4 hugetlb_flag: optional uint32,
    }
}
