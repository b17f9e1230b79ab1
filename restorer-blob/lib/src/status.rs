//! The completion protocol: one [`Status`] record on the loader's
//! `status_fd` before the blob exits or hands over with `rt_sigreturn`, so
//! a loader learns how it ended without parsing the log.

use core::sync::atomic::{AtomicI32, Ordering};

use revenant_blob_abi::{ExitCode, STATUS_MAGIC, Status};

/// The header's `status_fd`, once the header passed its checks; every
/// thread of a restore reports through it.
static FD: AtomicI32 = AtomicI32::new(-1);

pub fn set_fd(fd: i32) {
    FD.store(fd, Ordering::Relaxed);
}

/// Writes one record with `code`; a loader that gave no fd, or one
/// already closed, gets nothing, and the exit code still tells.
pub fn report(code: u32) {
    let fd = FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let s = Status { magic: STATUS_MAGIC, code };
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&s.magic.to_le_bytes());
    bytes[4..].copy_from_slice(&s.code.to_le_bytes());
    // One write of 8 bytes: a pipe takes it whole or not at all.
    let _ = revenant_arch::sys::write(fd, &bytes);
}

/// Reports `code` and ends the process with it.
pub fn exit(code: ExitCode) -> ! {
    report(code as u32);
    revenant_arch::sys::exit_group(code as i32)
}
