//! `fs-PID.img`: a task's working directory, root and umask.

use crate::proto::message;

message! {
    /// Directories are file ids in `files.img`.
    pub struct FsEntry ("fs_entry") {
        1 cwd_id: required uint32,
        2 root_id: required uint32,
        3 umask: optional uint32,
    }
}
