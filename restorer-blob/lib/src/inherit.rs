//! Memory a child inherits from its parent, as `fork` had left it.
//!
//! A private anonymous area that a parent and its child both have at the
//! same place was, at the dump, most likely one area the fork copied: its
//! pages are one physical page in both until either writes. The host
//! premaps such an area in the parent and fills it before the parent forks
//! its children, so they inherit it copy-on-write (see `cow.rs` in the
//! host). Here, in the child, each of its own dumped pages is compared with
//! the inherited one and written only where they differ (a write breaks the
//! sharing of that page only), and the parts where the child had no page
//! are dropped back to zeros.

use linux_raw_sys::general as g;
use revenant_arch::{Errno, PAGE_SIZE, sys};
use revenant_blob_abi::{ExitCode, Iovec, PageRead};

use crate::Log;
use crate::restore::check;

/// Pages read and compared at a time.
const BATCH: usize = 4 * PAGE_SIZE;

/// Writes the pages of `reads` that differ from memory, and zeroes `zero`.
pub fn settle(log: &Log, reads: &[PageRead], iovs: &[Iovec], zero: &[Iovec]) {
    let mut buf = [0u8; BATCH];
    let (mut kept, mut written) = (0u64, 0u64);
    for read in reads {
        let first = read.first_iov as usize;
        // In bounds: the restore checked the spans before it began.
        let mut offset = read.offset;
        for iov in &iovs[first..first + read.iov_count as usize] {
            let mut done = 0;
            while done < iov.len {
                let n = (iov.len - done).min(BATCH as u64) as usize;
                let res = pread_exact(read.fd, &mut buf[..n], offset + done);
                check(log, res, ExitCode::ReadPages, "reading inherited pages for", iov.base + done);
                for (i, page) in buf[..n].chunks(PAGE_SIZE).enumerate() {
                    let at = (iov.base + done) as usize + i * PAGE_SIZE;
                    // SAFETY: `at` lies in an area the host premapped
                    // read+write and this blob moved into place; nothing else
                    // refers to it while the blob runs.
                    let mem = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, page.len()) };
                    if mem == page {
                        kept += 1;
                    } else {
                        mem.copy_from_slice(page);
                        written += 1;
                    }
                }
                done += n as u64;
            }
            offset += iov.len;
        }
    }
    for z in zero {
        // SAFETY: private anonymous memory of the restored program, which
        // had no pages here: dropping them gives it zeros as it had.
        let res = unsafe { sys::madvise(z.base as usize, z.len as usize, g::MADV_DONTNEED) };
        check(log, res, ExitCode::ReadPages, "dropping inherited pages at", z.base);
    }
    if kept + written > 0 || !zero.is_empty() {
        log.info()
            .s("inherited memory: ")
            .dec(kept)
            .s(" pages still shared with the parent, ")
            .dec(written)
            .s(" written")
            .emit();
    }
}

/// Fills `buf` from `offset`, continuing after short reads.
fn pread_exact(fd: i32, buf: &mut [u8], offset: u64) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let iov = [g::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() as _ }];
        // SAFETY: the iovec describes `rest`, a live buffer we hold mutably.
        match unsafe { revenant_arch::preadv(fd, &iov, offset + done as u64) } {
            Ok(0) => return Err(Errno::EFAULT),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
