//! `cgroup.img`: the cgroup sets (memberships) of the tree's tasks and the
//! hierarchies they are in. A task's core names its set (`cg_set`).

use crate::proto::message;

message! {
    pub struct CgroupPerms ("cgroup_perms") {
        1 mode: required uint32,
        2 uid: required uint32,
        3 gid: required uint32,
    }
}

message! {
    /// One control file of a cgroup directory and its value.
    pub struct CgroupPropEntry ("cgroup_prop_entry") {
        1 name: required string,
        2 value: required string,
        3 perms: optional message<CgroupPerms>,
    }
}

message! {
    /// A cgroup directory with its subdirectories and properties.
    pub struct CgroupDirEntry ("cgroup_dir_entry") {
        1 dir_name: required string,
        2 children: repeated message<CgroupDirEntry>,
        3 properties: repeated message<CgroupPropEntry>,
        4 dir_perms: optional message<CgroupPerms>,
    }
}

message! {
    /// One hierarchy: its controllers ("cpu", "cpuacct", "name=systemd";
    /// none for cgroup2) and the directories dumped in it.
    pub struct CgControllerEntry ("cg_controller_entry") {
        1 cnames: repeated string,
        2 dirs: repeated message<CgroupDirEntry>,
        3 is_threaded: optional bool,
    }
}

message! {
    /// A task's cgroup in one hierarchy: `name` is the controller field of
    /// its `/proc/PID/cgroup` line ("cpu,cpuacct", "name=systemd", "" for
    /// cgroup2), `path` the cgroup's path in it.
    pub struct CgMemberEntry ("cg_member_entry") {
        1 name: required string,
        2 path: required string,
        /// Bytes of `path` above the task's cgroup namespace root.
        3 cgns_prefix: optional uint32,
    }
}

message! {
    /// A distinct membership: its members sorted by name.
    pub struct CgSetEntry ("cg_set_entry") {
        1 id: required uint32,
        2 ctls: repeated message<CgMemberEntry>,
    }
}

message! {
    /// The single entry of `cgroup.img`.
    pub struct CgroupEntry ("cgroup_entry") {
        1 sets: repeated message<CgSetEntry>,
        2 controllers: repeated message<CgControllerEntry>,
    }
}
