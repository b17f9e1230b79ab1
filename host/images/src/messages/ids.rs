//! `ids-PID.img`: which shared kernel objects a task uses. Tasks with the
//! same id share the object (and its image, named after the id).

use crate::proto::message;

message! {
    /// Ids of a task's mm, files table, fs, signal handlers and namespaces.
    pub struct TaskKobjIdsEntry ("task_kobj_ids_entry") {
        1 vm_id: required uint32,
        /// Names the task's `fdinfo-N.img`.
        2 files_id: required uint32,
        3 fs_id: required uint32,
        4 sighand_id: required uint32,
        5 pid_ns_id: optional uint32,
        6 net_ns_id: optional uint32,
        7 ipc_ns_id: optional uint32,
        8 uts_ns_id: optional uint32,
        9 mnt_ns_id: optional uint32,
        10 user_ns_id: optional uint32,
        11 cgroup_ns_id: optional uint32,
        12 time_ns_id: optional uint32,
    }
}
