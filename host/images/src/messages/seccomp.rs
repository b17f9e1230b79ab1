//! `seccomp.img`: every seccomp filter of the tree, chained by index.

use crate::proto::message;

message! {
    /// One BPF program; `prev` is the index of the filter installed before
    /// it (threads point at the last of their chain).
    pub struct SeccompFilter ("seccomp_filter") {
        /// The `struct sock_filter` array as bytes.
        1 filter: required bytes,
        2 prev: optional uint32,
        3 flags: optional uint32,
    }
}

message! {
    /// The single entry of `seccomp.img`.
    pub struct SeccompEntry ("seccomp_entry") {
        1 seccomp_filters: repeated message<SeccompFilter>,
    }
}
