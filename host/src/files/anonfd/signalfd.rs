//! signalfd: the mask of signals it reads (the signals themselves stay
//! queued on the process, which restores them).

use anyhow::{Context, Result};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, SignalfdEntry};

use super::{AnonFile, field};

pub fn dump(fdinfo: &str, what: &str) -> Result<AnonFile> {
    let mask = field(fdinfo, "sigmask", what)?;
    let mask = u64::from_str_radix(mask, 16).with_context(|| format!("{what}: sigmask {mask:?}"))?;
    Ok(AnonFile::Signalfd { mask })
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, mask: u64) -> FileEntry {
    FileEntry {
        r#type: FdType::Signalfd as i32,
        id,
        sgfd: Some(SignalfdEntry { id, flags, fown, sigmask: mask, ..Default::default() }),
        ..Default::default()
    }
}

/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make(mask: u64) -> Result<i32, &'static str> {
    // SAFETY: the kernel reads 8 bytes of mask.
    let fd = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, libc::SFD_CLOEXEC) };
    if fd < 0 { Err("creating a signalfd") } else { Ok(fd as i32) }
}
