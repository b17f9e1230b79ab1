//! CRIU's image format: framing, message definitions, whole image files,
//! loading and writing a checkpoint directory with validation, and crit's
//! JSON.
//!
//! The message definitions are our own, written from the format's facts
//! (field numbers and types). What CRIU writes we read and write back byte
//! for byte, including fields we do not define; what we write CRIU reads.
//!
//! Entry points:
//! - [`show`]: what `revenant show PATH [--json]` prints; [`diff`]: what
//!   `revenant show --diff DIR1 DIR2` prints.
//! - [`ImageSet::load`] / [`ImageSet::validate`] / [`ImageSet::write`]: a
//!   whole checkpoint.
//! - [`Image`]: one image file, typed ([`Image::read`], [`Image::write`],
//!   [`Image::to_json`]).
//! - [`Reader`] / [`Writer`]: entry-level framing, for writers that stream.
//! - [`file`]: how every file of an image directory is opened (no links,
//!   no FIFOs or devices, reads bounded by the file's size).
//!
//! The decoder is fuzzed by `fuzz/fuzz_targets/decode.rs` at the top of the
//! repository; see host/images/README.md for how to run it.

mod diff;
pub mod file;
pub mod framing;
pub mod image;
pub mod json;
pub mod magic;
pub mod messages;
pub mod proto;
mod set;
mod show;
mod validate;

pub use diff::diff;
pub use framing::{Reader, Writer};
pub use image::Image;
pub use magic::Kind;
pub use set::{
    ImageSet, IpcNamespace, Process, ShmPages, ShmSegment, TASK_ALIVE, TASK_DEAD, TASK_STOPPED, Thread, Zombie,
    is_tcp_connection, tcp_state_has_stream, tcp_state_name,
};
pub use show::show;
pub use validate::{PAGE_SIZE, arch_of};
