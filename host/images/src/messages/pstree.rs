//! `pstree.img`: the process tree, one entry per process, parents first.

use crate::proto::message;

message! {
    /// One process: its IDs in its own PID namespace and its threads.
    pub struct PstreeEntry ("pstree_entry") {
        1 pid: required uint32,
        /// 0 for the root of the dumped tree.
        2 ppid: required uint32,
        3 pgid: required uint32,
        4 sid: required uint32,
        /// Thread IDs, the leader (equal to `pid`) first.
        5 threads: repeated uint32,
    }
}
