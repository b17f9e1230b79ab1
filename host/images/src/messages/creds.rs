//! A thread's credentials.

use crate::proto::message;

message! {
    /// IDs, capabilities (two 32-bit words per set, low word first),
    /// securebits, groups and LSM labels.
    pub struct CredsEntry ("creds_entry") {
        1 uid: required uint32,
        2 gid: required uint32,
        3 euid: required uint32,
        4 egid: required uint32,
        5 suid: required uint32,
        6 sgid: required uint32,
        7 fsuid: required uint32,
        8 fsgid: required uint32,
        9 cap_inh: repeated uint32,
        10 cap_prm: repeated uint32,
        11 cap_eff: repeated uint32,
        12 cap_bnd: repeated uint32,
        13 secbits: required uint32,
        14 groups: repeated uint32,
        15 lsm_profile: optional string,
        16 lsm_sockcreate: optional string,
        17 apparmor_data: optional bytes,
        18 no_new_privs: optional uint32,
        19 cap_amb: repeated uint32,
    }
}
