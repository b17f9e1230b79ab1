//! eventfd: a 64-bit counter, and whether reads take one at a time
//! (`EFD_SEMAPHORE`, which CRIU's entry lacks: revenant's own field).

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{EventfdFileEntry, FdType, FileEntry, FownEntry};

use super::{AnonFile, field};

pub fn dump(fdinfo: &str, what: &str) -> Result<AnonFile> {
    let count = field(fdinfo, "eventfd-count", what)?;
    let counter = u64::from_str_radix(count, 16).with_context(|| format!("{what}: eventfd-count {count:?}"))?;
    // Without this line (kernels before 6.5) a semaphore would come back
    // as a plain counter.
    let semaphore = match field(fdinfo, "eventfd-semaphore", what) {
        Ok("0") => false,
        Ok("1") => true,
        _ => bail!("{what}: this kernel does not say whether the eventfd is a semaphore (eventfd-semaphore)"),
    };
    Ok(AnonFile::Eventfd { counter, semaphore })
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, counter: u64, semaphore: bool) -> FileEntry {
    FileEntry {
        r#type: FdType::Eventfd as i32,
        id,
        efd: Some(EventfdFileEntry {
            id,
            flags,
            fown,
            counter,
            semaphore: semaphore.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make(counter: u64, semaphore: bool) -> Result<i32, &'static str> {
    let flags = libc::EFD_CLOEXEC | if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: plain system calls; the write reads one u64 of ours.
    unsafe {
        let fd = libc::eventfd(0, flags);
        if fd < 0 {
            return Err("creating an eventfd");
        }
        // The counter can exceed eventfd()'s 32-bit initial value.
        if counter != 0 && libc::write(fd, (&counter as *const u64).cast(), 8) != 8 {
            return Err("setting an eventfd's counter");
        }
        Ok(fd)
    }
}
