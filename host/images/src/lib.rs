//! CRIU's image format: framing, message definitions, loading a checkpoint
//! directory with validation, and printing images.
//!
//! The message definitions are our own, written from the format's facts
//! (field numbers and types); what CRIU writes we read, and what we write
//! CRIU reads.

pub mod framing;
pub mod magic;
pub mod messages;
mod set;
mod show;

pub use framing::{Reader, Writer};
pub use magic::Kind;
pub use set::{ImageSet, Process, Thread};
pub use show::show;
