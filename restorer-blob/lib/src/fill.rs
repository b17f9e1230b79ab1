//! Putting the dumped pages back into the freshly mapped VMAs.
//!
//! Reading a page into fresh anonymous memory costs a fault, a zeroed page
//! and then the copy; `UFFDIO_COPY` from a read-only map of the pages image
//! allocates the page and copies into it, nothing more, which makes large
//! restores about a third faster. It works for private anonymous VMAs,
//! where nearly all of a process's memory is. With a helper thread (a TID
//! from the host) two CPUs copy at once. Every other VMA gets `pread` into
//! place; a kernel or emulator without userfaultfd for us gets batched
//! `preadv` for everything. If the fast way fails halfway, everything is
//! read again the slow way: writing a page over its own copy is harmless.
//! An iterative dump's pages lie in several images (its own and its
//! parents'): each is mapped on its own, and every read names its image.

use core::sync::atomic::{AtomicU32, Ordering};

use linux_raw_sys::general as g;
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_COPY, UFFDIO_REGISTER};
use revenant_arch::{Errno, PAGE_SIZE, sys};
use revenant_blob_abi::{
    ExitCode, Iovec, PAGES_FILES_MAPPED, PageRead, THREAD_STACK, VMA_FILL, VMA_PREMAPPED, VMA_REPROTECT, VMA_SHM,
    VMA_SKIP, Vma,
};

use crate::Log;
use crate::restore::check;

/// What to fill and from where.
pub struct Pages<'a> {
    /// Sorted by address, as the ABI promises.
    pub vmas: &'a [Vma],
    pub reads: &'a [PageRead],
    pub iovs: &'a [Iovec],
}

/// A destination range inside one VMA, with its offset in the pages image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub dst: u64,
    pub len: u64,
    pub offset: u64,
    /// Inside a private anonymous VMA: `UFFDIO_COPY` can place it.
    pub anon: bool,
    /// The pages image it comes from.
    pub fd: i32,
}

/// Whether `UFFDIO_COPY` can fill `v`: userfaultfd's missing mode takes
/// private anonymous memory, and SysV attachments are filled by the host.
/// Locked memory is populated by its `mmap` already (a copy would find
/// pages there), as is premapped memory, and huge pages do not come in
/// 4 KiB copies.
pub fn copyable(v: &Vma) -> bool {
    v.how & VMA_FILL != 0
        && v.how & (VMA_SHM | VMA_SKIP | VMA_REPROTECT | VMA_PREMAPPED) == 0
        && v.flags & g::MAP_ANONYMOUS != 0
        && v.flags & (g::MAP_SHARED | g::MAP_LOCKED | g::MAP_HUGETLB | g::MAP_POPULATE) == 0
}

impl<'a> Pages<'a> {
    /// Every iovec cut at VMA boundaries, in pages-image order. A part
    /// outside every VMA comes out as a piece that is not `anon`; reading
    /// it fails, as it should.
    pub fn pieces(&self) -> impl Iterator<Item = Piece> + 'a {
        let vmas = self.vmas;
        let iovs = self.iovs;
        self.reads.iter().flat_map(move |r| {
            let start = (r.first_iov as usize).min(iovs.len());
            let end = (start + r.iov_count as usize).min(iovs.len());
            let mut offset = r.offset;
            iovs[start..end].iter().flat_map(move |iov| {
                let o = offset;
                offset += iov.len;
                split(vmas, *iov, o, r.fd)
            })
        })
    }

    /// The part of pages image `fd` the copyable pieces come from: page
    /// aligned first and end offsets, and how many bytes they copy. A lazy
    /// restore leaves few such pieces, spread over the image.
    fn copy_window(&self, fd: i32) -> (u64, u64, u64) {
        let page = PAGE_SIZE as u64;
        let (mut lo, mut hi, mut bytes) = (u64::MAX, 0, 0);
        for p in self.pieces().filter(|p| p.anon && p.fd == fd) {
            lo = lo.min(p.offset / page * page);
            hi = hi.max(p.offset + p.len);
            bytes += p.len;
        }
        if bytes == 0 { (0, 0, 0) } else { (lo, hi.next_multiple_of(page), bytes) }
    }
}

/// `iov` cut where the VMAs it crosses begin and end.
fn split(vmas: &[Vma], iov: Iovec, offset: u64, fd: i32) -> impl Iterator<Item = Piece> + '_ {
    let end = iov.base + iov.len;
    let mut at = iov.base;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let i = vmas.partition_point(|v| v.end <= at);
        let piece = match vmas.get(i) {
            Some(v) if v.start <= at => {
                Piece { dst: at, len: end.min(v.end) - at, offset: offset + (at - iov.base), anon: copyable(v), fd }
            }
            Some(v) if v.start < end => {
                Piece { dst: at, len: v.start - at, offset: offset + (at - iov.base), anon: false, fd }
            }
            _ => Piece { dst: at, len: end - at, offset: offset + (at - iov.base), anon: false, fd },
        };
        at += piece.len;
        Some(piece)
    })
}

/// The part of the anonymous bytes `[from, to)` (counted along the pieces'
/// anonymous bytes only) that `p` holds, if any.
pub fn share(p: &Piece, pos: u64, from: u64, to: u64) -> Option<Piece> {
    let (lo, hi) = (pos.max(from), (pos + p.len).min(to));
    (p.anon && lo < hi).then(|| Piece {
        dst: p.dst + (lo - pos),
        len: hi - lo,
        offset: p.offset + (lo - pos),
        anon: true,
        fd: p.fd,
    })
}

/// Fills every page, the fast way if it can.
pub fn fill(log: &Log, pages: &Pages<'_>, helper_tid: u32, helper_stack: u64) {
    match fast(log, pages, helper_tid, helper_stack) {
        Ok(()) => {}
        Err((what, e)) => {
            log.info().s("pages: ").s(what).s(": ").errno(e).s("; reading them instead").emit();
            read_all(log, pages);
        }
    }
}

/// A read-only map of the part of one pages image that copies read.
#[derive(Clone, Copy, Default)]
struct Window {
    fd: i32,
    map: usize,
    len: usize,
    /// The image offset the map starts at.
    offset: u64,
}

/// A userfaultfd with the image's private anonymous VMAs registered, and
/// each pages image mapped read-only; all go when it drops.
struct Copier {
    uffd: i32,
    windows: [Window; PAGES_FILES_MAPPED as usize],
    /// How many of `windows` are in use.
    count: usize,
}

impl Drop for Copier {
    fn drop(&mut self) {
        // Closing the userfaultfd unregisters every range.
        // SAFETY: the copier made this descriptor and is its only user.
        let _ = unsafe { sys::close(self.uffd) };
        for w in &self.windows[..self.count] {
            // SAFETY: our own map of a pages image; nothing points into it
            // once the copies are done.
            let _ = unsafe { sys::munmap(w.map, w.len) };
        }
    }
}

type Failure = (&'static str, Errno);

impl Copier {
    fn new(pages: &Pages<'_>) -> Result<Copier, Failure> {
        // User-mode-only needs no privilege, and a stray kernel access to a
        // registered page fails (EFAULT) instead of waiting for us forever.
        let uffd = sys::userfaultfd(g::O_CLOEXEC | g::UFFD_USER_MODE_ONLY).map_err(|e| ("userfaultfd", e))?;
        let mut c = Copier { uffd, windows: [Window::default(); PAGES_FILES_MAPPED as usize], count: 0 };
        let mut api = g::uffdio_api { api: g::UFFD_API as u64, features: 0, ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes the live struct.
        unsafe { sys::ioctl(uffd, UFFDIO_API, &mut api) }.map_err(|e| ("UFFDIO_API", e))?;
        for p in pages.pieces().filter(|p| p.anon) {
            if c.windows[..c.count].iter().any(|w| w.fd == p.fd) {
                continue;
            }
            if c.count == c.windows.len() {
                return Err(("more pages images than are mapped", Errno::E2BIG));
            }
            let (lo, hi, bytes) = pages.copy_window(p.fd);
            let len = (hi - lo) as usize;
            // Populating the map up front saves a fault per page of a dense
            // window; a sparse one (a lazy restore's) would populate far
            // more than it copies.
            let populate = if bytes * 2 >= hi - lo { g::MAP_POPULATE } else { 0 };
            // SAFETY: a new read-only mapping wherever the kernel finds room;
            // everything dumped is already mapped, so it takes nothing's
            // place.
            let map = unsafe { revenant_arch::mmap(0, len, g::PROT_READ, g::MAP_PRIVATE | populate, p.fd, lo) }
                .map_err(|e| ("mapping a pages image", e))?;
            c.windows[c.count] = Window { fd: p.fd, map, len, offset: lo };
            c.count += 1;
        }
        for v in pages.vmas.iter().filter(|v| copyable(v)) {
            let mut reg = g::uffdio_register {
                range: g::uffdio_range { start: v.start, len: v.end - v.start },
                mode: g::UFFDIO_REGISTER_MODE_MISSING as u64,
                ioctls: 0,
            };
            // SAFETY: registering only changes how missing pages of the range
            // are handled; nothing touches them until the copies are done.
            unsafe { sys::ioctl(uffd, UFFDIO_REGISTER, &mut reg) }.map_err(|e| ("UFFDIO_REGISTER", e))?;
        }
        Ok(c)
    }

    /// Copies one piece into place.
    fn copy(&self, p: &Piece) -> Result<(), Errno> {
        // Every anonymous piece's image has its window (`new`).
        let w = self.windows[..self.count].iter().find(|w| w.fd == p.fd).ok_or(Errno::EBADF)?;
        let mut done = 0;
        while done < p.len {
            let mut c = g::uffdio_copy {
                dst: p.dst + done,
                src: (w.map as u64) + (p.offset - w.offset) + done,
                len: p.len - done,
                mode: 0,
                copy: 0,
            };
            // SAFETY: `dst` lies in a registered VMA the blob just mapped and
            // `src` inside the read-only map of the pages image.
            let res = unsafe { sys::ioctl(self.uffd, UFFDIO_COPY, &mut c) };
            match res {
                Ok(_) => return Ok(()),
                // Partly done (or the mm changed under it): go on after it.
                Err(_) if c.copy > 0 => done += c.copy as u64,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Copies the anonymous bytes `[from, to)`.
    fn copy_share(&self, pages: &Pages<'_>, from: u64, to: u64) -> Result<(), Errno> {
        let mut pos = 0;
        for p in pages.pieces() {
            if let Some(s) = share(&p, pos, from, to) {
                self.copy(&s)?;
            }
            if p.anon {
                pos += p.len;
            }
        }
        Ok(())
    }
}

fn fast(log: &Log, pages: &Pages<'_>, helper_tid: u32, helper_stack: u64) -> Result<(), Failure> {
    let copier = Copier::new(pages)?;
    let anon: u64 = pages.pieces().filter(|p| p.anon).map(|p| p.len).sum();
    let half = (anon / 2).next_multiple_of(PAGE_SIZE as u64);
    let job = Job { copier: &copier, pages, from: half, to: anon };
    let helper = helper_tid != 0 && half < anon && start_helper(log, &job, helper_tid, helper_stack);
    let mine = if helper { half } else { anon };
    let mut res = copier.copy_share(pages, 0, mine).map_err(|e| ("UFFDIO_COPY", e));
    // Everything else, one piece at a time: the copier's VMAs are done apart
    // from the helper's share, which these never touch.
    for p in pages.pieces().filter(|p| !p.anon) {
        let iov = [Iovec { base: p.dst, len: p.len }];
        let n = read_chunk(p.fd, &iov, p.offset);
        check(log, n, ExitCode::ReadPages, "reading pages into", p.dst);
    }
    if helper {
        loop {
            match HELPER.load(Ordering::Acquire) {
                BUSY => sys::futex_wait(&HELPER, BUSY),
                FAILED => break res = res.and(Err(("UFFDIO_COPY (helper thread)", Errno::EFAULT))),
                _ => break,
            }
        }
    }
    res?;
    log.info()
        .s("pages: copied ")
        .dec(anon >> 10)
        .s(" KiB with UFFDIO_COPY")
        .s(if helper { " on two threads" } else { "" })
        .emit();
    Ok(())
}

/// What the helper copies.
struct Job<'a> {
    copier: &'a Copier,
    pages: &'a Pages<'a>,
    from: u64,
    to: u64,
}

const BUSY: u32 = 0;
const DONE: u32 = 1;
const FAILED: u32 = 2;
/// The helper's state, written once when it is done.
static HELPER: AtomicU32 = AtomicU32::new(BUSY);

/// Starts the helper thread on `job`; false if it could not be created.
fn start_helper(log: &Log, job: &Job<'_>, tid: u32, stack: u64) -> bool {
    HELPER.store(BUSY, Ordering::Relaxed);
    let tids = [tid as i32];
    let args = sys::clone_args {
        flags: sys::CLONE_THREAD_FLAGS,
        stack: stack - THREAD_STACK,
        stack_size: THREAD_STACK,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..sys::CLONE_ARGS_ZERO
    };
    let entry: extern "C" fn(&Job<'_>) -> ! = helper_main;
    // SAFETY: the helper runs `helper_main` on the first thread's unused zone
    // stack; `job` lives on this stack, and `fast` waits for the helper to
    // finish with it before returning.
    let res = unsafe { revenant_arch::clone3_thread(&args, entry, job) };
    if let Err(e) = res {
        log.info().s("pages: no helper thread ").dec(tid as u64).s(": ").errno(e).emit();
    }
    res.is_ok()
}

/// `job` outlives this thread's work: `fast` waits for [`HELPER`] to leave
/// `BUSY` before it returns.
extern "C" fn helper_main(job: &Job<'_>) -> ! {
    let ok = job.copier.copy_share(job.pages, job.from, job.to).is_ok();
    HELPER.store(if ok { DONE } else { FAILED }, Ordering::Release);
    sys::futex_wake(&HELPER, 1);
    // SAFETY: the helper borrows nothing after the store above, and its
    // stack is an unused zone of the first thread's that nobody frees.
    unsafe { sys::exit_thread(0) }
}

/// Kernel iovecs built on the stack, this many at a time.
const IOV_BATCH: usize = 128;

/// The slow way: batched `preadv` straight into place.
fn read_all(log: &Log, pages: &Pages<'_>) {
    for read in pages.reads {
        let first = read.first_iov as usize;
        // In bounds: the restore checked the spans before it began.
        let iovs = &pages.iovs[first..first + read.iov_count as usize];
        let mut offset = read.offset;
        for chunk in iovs.chunks(IOV_BATCH) {
            // Faulting the pages in one call is much cheaper than one page
            // fault per page during the copy (Linux 5.14+; older kernels
            // say EINVAL and the copy faults them in as before).
            for i in chunk {
                // SAFETY: populating pages of a VMA just mapped writable.
                let _ = unsafe { sys::madvise(i.base as usize, i.len as usize, g::MADV_POPULATE_WRITE) };
            }
            let res = read_chunk(read.fd, chunk, offset);
            offset += check(log, res, ExitCode::ReadPages, "reading pages into", chunk[0].base);
        }
    }
}

/// Reads one batch, continuing after short reads; returns the bytes read.
fn read_chunk(fd: i32, chunk: &[Iovec], offset: u64) -> Result<u64, Errno> {
    // The buffers are the restored program's memory, known by address
    // only: Rust never dereferences these pointers.
    let at = |base: u64| core::ptr::without_provenance_mut(base as usize);
    let mut kiov = [g::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; IOV_BATCH];
    for (k, i) in kiov.iter_mut().zip(chunk) {
        *k = g::iovec { iov_base: at(i.base), iov_len: i.len as _ };
    }
    let total: u64 = chunk.iter().map(|i| i.len).sum();
    let (mut done, mut first) = (0u64, 0usize);
    while done < total {
        // SAFETY: every iovec points into a VMA mapped writable before.
        let n = unsafe { revenant_arch::preadv(fd, &kiov[first..chunk.len()], offset + done) };
        let mut n = match n {
            Ok(0) => return Err(Errno::EFAULT),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        done += n as u64;
        while n > 0 && first < chunk.len() {
            let take = n.min(kiov[first].iov_len as usize);
            kiov[first].iov_base = kiov[first].iov_base.wrapping_byte_add(take);
            kiov[first].iov_len -= take as g::__kernel_size_t;
            n -= take;
            if kiov[first].iov_len == 0 {
                first += 1;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, flags: u32) -> Vma {
        Vma { start, end, flags, how: VMA_FILL, ..Default::default() }
    }

    const ANON: u32 = g::MAP_PRIVATE | g::MAP_ANONYMOUS;
    const FILE: u32 = g::MAP_PRIVATE;

    #[test]
    fn iovecs_are_cut_at_vma_edges_and_keep_their_image_offsets() {
        let vmas = [vma(0x1000, 0x3000, FILE), vma(0x3000, 0x6000, ANON), vma(0x8000, 0x9000, ANON)];
        let iovs = [Iovec { base: 0x2000, len: 0x3000 }, Iovec { base: 0x7000, len: 0x2000 }];
        let reads = [PageRead { offset: 0x10000, first_iov: 0, iov_count: 2, fd: 5, ..Default::default() }];
        let pages = Pages { vmas: &vmas, reads: &reads, iovs: &iovs };
        let got: Vec<Piece> = pages.pieces().collect();
        let p = |dst, len, offset, anon| Piece { dst, len, offset, anon, fd: 5 };
        assert_eq!(
            got,
            [
                p(0x2000, 0x1000, 0x10000, false),
                p(0x3000, 0x2000, 0x11000, true),
                // Between VMAs: read, and fail there.
                p(0x7000, 0x1000, 0x13000, false),
                p(0x8000, 0x1000, 0x14000, true),
            ]
        );
        // Only the anonymous pieces are copied from the map.
        assert_eq!(pages.copy_window(5), (0x11000, 0x15000, 0x3000));
        assert_eq!(pages.copy_window(6), (0, 0, 0));
    }

    #[test]
    fn shared_file_and_sysv_memory_is_not_copyable() {
        assert!(copyable(&vma(0, 0x1000, ANON | g::MAP_GROWSDOWN)));
        assert!(!copyable(&vma(0, 0x1000, g::MAP_SHARED | g::MAP_ANONYMOUS)));
        assert!(!copyable(&vma(0, 0x1000, FILE)));
        assert!(!copyable(&Vma { how: VMA_FILL | VMA_SHM, ..vma(0, 0x1000, ANON) }));
        assert!(!copyable(&Vma { how: 0, ..vma(0, 0x1000, ANON) }));
        assert!(!copyable(&vma(0, 0x1000, ANON | g::MAP_LOCKED)));
        assert!(!copyable(&vma(0, 0x1000, ANON | g::MAP_HUGETLB)));
    }

    #[test]
    fn two_shares_cover_every_anonymous_byte_once() {
        let vmas = [vma(0x1000, 0x5000, ANON), vma(0x5000, 0x6000, FILE), vma(0x6000, 0x9000, ANON)];
        let iovs = [Iovec { base: 0x1000, len: 0x8000 }];
        let reads = [PageRead { offset: 0, first_iov: 0, iov_count: 1, fd: 3, ..Default::default() }];
        let pages = Pages { vmas: &vmas, reads: &reads, iovs: &iovs };
        let anon: u64 = pages.pieces().filter(|p| p.anon).map(|p| p.len).sum();
        assert_eq!(anon, 0x7000);
        let half = (anon / 2).next_multiple_of(0x1000);
        let mut covered = vec![];
        for (from, to) in [(0, half), (half, anon)] {
            let mut pos = 0;
            for p in pages.pieces() {
                if let Some(s) = share(&p, pos, from, to) {
                    assert_eq!(s.offset - p.offset, s.dst - p.dst, "image offset moves with the address");
                    covered.push((s.dst, s.len));
                }
                pos += if p.anon { p.len } else { 0 };
            }
        }
        assert_eq!(covered, [(0x1000, 0x4000), (0x6000, 0x3000)]);
    }
}
