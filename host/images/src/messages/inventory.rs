//! `inventory.img`: what wrote the checkpoint and how it is laid out.

use crate::proto::{message, proto_enum};

use super::TaskKobjIdsEntry;

proto_enum! {
    /// The Linux security module active at dump time.
    pub enum Lsmtype {
        NoLsm = 0 => "NO_LSM",
        Selinux = 1 => "SELINUX",
        Apparmor = 2 => "APPARMOR",
    }
}

message! {
    /// Names of the CRIU plugins that took part in the dump.
    pub struct PluginsEntry ("plugins_entry") {
        12 plugins: repeated string,
    }
}

message! {
    /// The single entry of `inventory.img`.
    pub struct InventoryEntry ("inventory_entry") {
        /// 2 for every image this crate knows.
        1 img_version: required uint32,
        /// fdinfo images are per files table (`fdinfo-<files_id>.img`).
        2 fdinfo_per_id: optional bool,
        /// The namespaces and shared objects of the tree's root task.
        3 root_ids: optional message<TaskKobjIdsEntry>,
        4 ns_per_id: optional bool,
        5 root_cg_set: optional uint32,
        6 lsmtype: optional enumeration<Lsmtype>,
        8 dump_uptime: optional uint64,
        9 pre_dump_mode: optional uint32,
        10 tcp_close: optional bool,
        11 network_lock_method: optional uint32,
        12 plugins_entry: optional message<PluginsEntry>,
        13 dump_criu_run_id: optional string,
        14 allow_uprobes: optional bool,
    }
}
