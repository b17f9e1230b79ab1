//! Message definitions: CRIU's field numbers and proto2 types, our own
//! names and text. Repeated scalars are written unpacked, as proto2 does.

mod core;
mod files;
mod ipc;
mod mm;
mod task;

pub use self::core::*;
pub use files::*;
pub use ipc::*;
pub use mm::*;
pub use task::*;
