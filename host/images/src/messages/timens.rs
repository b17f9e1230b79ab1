//! `timens-N.img`: the clock offsets of a time namespace.

use crate::proto::message;

message! {
    pub struct Timespec ("timespec") {
        1 tv_sec: required uint64,
        2 tv_nsec: required uint64,
    }
}

message! {
    /// What the namespace's monotonic and boot-time clocks read at dump.
    pub struct TimensEntry ("timens_entry") {
        1 monotonic: required message<Timespec>,
        2 boottime: required message<Timespec>,
    }
}
