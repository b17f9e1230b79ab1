//! Handing lazy areas to the page server ([`VMA_LAZY`]): their pages are
//! not read here; a userfaultfd registered over them goes to the server,
//! which answers every first touch and copies the rest in the background.
//!
//! The handover comes right after the areas are mapped and before
//! anything can touch them. The kernel's own accesses count too (an rseq
//! update on the way back to user space, a `write()` from the program's
//! buffer), so the descriptor is not user-mode-only: those wait for the
//! server like any fault.

use linux_raw_sys::general as g;
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_REGISTER};
use revenant_arch::{Errno, sys};
use revenant_blob_abi::{ExitCode, VMA_LAZY, Vma};

use crate::Log;

/// Events the server must see to keep its page lists true: a child made
/// by `fork` shares the missing pages, and areas moved, dropped or
/// unmapped must not get stale pages later.
pub const FEATURES: u32 = g::UFFD_FEATURE_EVENT_FORK
    | g::UFFD_FEATURE_EVENT_REMAP
    | g::UFFD_FEATURE_EVENT_REMOVE
    | g::UFFD_FEATURE_EVENT_UNMAP;

/// Registers every [`VMA_LAZY`] area and sends the userfaultfd to `sock`;
/// ends the restore ([`ExitCode::LazyPages`]) if any step fails.
pub fn hand_over(log: &Log, vmas: &[Vma], sock: i32) {
    let lazy = || vmas.iter().filter(|v| v.how & VMA_LAZY != 0);
    if lazy().next().is_none() {
        return;
    }
    match register(lazy(), sock) {
        Ok(n) => log.info().s("lazy: ").dec(n >> 10).s(" KiB of areas handed to the page server").emit(),
        Err((what, at, e)) => {
            log.error().s("lazy: ").s(what).s(" at ").hex(at).s(": ").errno(e).emit();
            crate::fail(log, ExitCode::LazyPages, "restore failed")
        }
    }
}

type Failure = (&'static str, u64, Errno);

fn register<'a>(lazy: impl Iterator<Item = &'a Vma>, sock: i32) -> Result<u64, Failure> {
    let flags = g::O_CLOEXEC | g::O_NONBLOCK;
    let uffd = sys::userfaultfd(flags).map_err(|e| ("userfaultfd", 0, e))?;
    let res = (|| {
        let mut api = g::uffdio_api { api: g::UFFD_API as u64, features: FEATURES as u64, ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes the live struct.
        unsafe { sys::ioctl(uffd, UFFDIO_API, &mut api) }.map_err(|e| ("UFFDIO_API", 0, e))?;
        let mut bytes = 0;
        for v in lazy {
            let mut reg = g::uffdio_register {
                range: g::uffdio_range { start: v.start, len: v.end - v.start },
                mode: g::UFFDIO_REGISTER_MODE_MISSING as u64,
                ioctls: 0,
            };
            // SAFETY: from now on a missing page of the area waits for the
            // server; nothing of the blob touches these areas.
            unsafe { sys::ioctl(uffd, UFFDIO_REGISTER, &mut reg) }.map_err(|e| ("UFFDIO_REGISTER", v.start, e))?;
            bytes += v.end - v.start;
        }
        let pid = sys::getpid().to_le_bytes();
        sys::send_fd(sock, &pid, uffd).map_err(|e| ("sending the userfaultfd", 0, e))?;
        Ok(bytes)
    })();
    // The server has its own copy now; ours would keep the areas
    // registered after the server is done with them.
    // SAFETY: made above and used by nothing else.
    let _ = unsafe { sys::close(uffd) };
    res
}
