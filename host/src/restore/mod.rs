//! `revenant restore`: images to a restore plan, the plan to running
//! processes. See docs/architecture.md for the sequence.

mod bootstrap;
mod child;
pub mod convert;
mod creds;
mod frame;
pub(crate) mod layout;
pub mod plan;
pub mod regs;
mod spawn;
mod vdso;
#[cfg(target_arch = "x86_64")]
mod xsave;

#[cfg(target_arch = "x86_64")]
mod finish;

pub use spawn::{Restored, restore_process};

use revenant_blob_abi::ExitCode;

/// The blob's last log line before its sigreturn.
pub const DONE_LINE: &str = "blob: restore done, returning to the program";

/// Says what a restore that ended with exit `code` ran into.
fn describe_exit(code: i32) -> String {
    if code == child::SETUP_FAILED {
        return "failed while reopening files and setting up, before its memory was touched".into();
    }
    match ExitCode::from_code(code) {
        Some(c) => format!("the restorer blob failed with exit code {code}: {}", c.describe()),
        None => format!("exited with code {code} during the restore"),
    }
}
