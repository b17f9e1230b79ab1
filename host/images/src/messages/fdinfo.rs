//! `fdinfo-N.img`: the descriptors of files table N, each pointing at a
//! file object in `files.img`.

use crate::proto::message;

use super::FdType;

message! {
    /// One open descriptor.
    pub struct FdinfoEntry ("fdinfo_entry") {
        /// The file object's id in `files.img`.
        1 id: required uint32,
        /// Descriptor flags: `FD_CLOEXEC`.
        2 flags: required uint32,
        3 r#type: required enumeration<FdType>,
        4 fd: required uint32,
        5 xattr_security_selinux: optional string,
    }
}
