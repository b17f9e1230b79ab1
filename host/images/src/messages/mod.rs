//! Message definitions: CRIU's field numbers and proto2 types, our own
//! names and text. Each is declared with [`crate::proto::message!`], which
//! keeps unknown fields and knows how crit prints every field.

mod arm;
mod cgroup;
mod core;
mod creds;
mod fdinfo;
mod files;
mod fs;
mod ids;
mod inventory;
mod ipc;
mod mm;
mod pagemap;
mod pstree;
mod seccomp;
mod stats;
mod timens;
mod tty;
mod x86;

pub use self::core::*;
pub use arm::*;
pub use cgroup::*;
pub use creds::*;
pub use fdinfo::*;
pub use files::*;
pub use fs::*;
pub use ids::*;
pub use inventory::*;
pub use ipc::*;
pub use mm::*;
pub use pagemap::*;
pub use pstree::*;
pub use seccomp::*;
pub use stats::*;
pub use timens::*;
pub use tty::*;
pub use x86::*;
