//! The restorer blob's logic.
//!
//! This library is what the blob binary (`restorer-blob/blob`) runs, and it
//! is also compiled for the host so its pure parts are unit-tested there.
//! Rules for everything in it, because the blob runs with no libc, no
//! allocator and, during a restore, no other code mapped:
//! - every syscall goes through `revenant-arch`;
//! - no allocation, no `core::fmt` (it drags in large tables), no panics in
//!   normal operation: failures become an [`ExitCode`] and a log line;
//! - statics holding pointers are fine: the loader relocates them before
//!   the entry runs.

#![cfg_attr(not(test), no_std)]

pub mod args;
mod creds;
pub mod fill;
mod inherit;
mod lazy;
pub mod log;
mod restore;
mod seccomp;
mod selftest;
pub mod shm;
pub mod status;
pub mod vdso;

use revenant_blob_abi::{Command, ExitCode};

pub use args::Args;
pub use log::Log;

/// Runs the command in the argument block at `block`; never returns.
/// `entry_sp` is the stack pointer the loader called the entry with, whose
/// alignment the entry has checked.
///
/// # Safety
/// `block`, if aligned, must point at readable memory holding at least a
/// [`revenant_blob_abi::Header`], and at `mapped_size` readable bytes if
/// the header's magic, version and arch are right.
pub unsafe fn run(block: *const u8, entry_sp: usize) -> ! {
    // SAFETY: forwarded from the caller.
    let args = match unsafe { Args::from_ptr(block) } {
        Ok(a) => a,
        // A header we cannot trust has no log or status fd we can trust
        // either.
        Err(code) => revenant_arch::sys::exit_group(code as i32),
    };
    status::set_fd(args.header().status_fd);
    let log = Log::new(args.header().log_fd, args.header().log_level);
    match Command::from_u32(args.header().command) {
        Some(Command::SelfTest) => selftest::run(&args, &log),
        Some(Command::Restore) => restore::run(&args, &log, entry_sp),
        None => fail(&log, ExitCode::UnknownCommand, "unknown command"),
    }
}

/// Logs `what` as an error, reports `code` and exits with it.
pub fn fail(log: &Log, code: ExitCode, what: &str) -> ! {
    log.error().s(what).s(" (exit code ").dec(code as u64).s(")").emit();
    status::exit(code)
}
