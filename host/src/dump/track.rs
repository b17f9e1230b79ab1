//! Which pages a process wrote since the last link of an iterative dump,
//! with userfaultfd write-protection in asynchronous mode.
//!
//! Soft-dirty bits are not available everywhere (`CONFIG_MEM_SOFT_DIRTY`
//! is off on the kernels this was written on), so a pre-dump arms
//! write-protection instead: a userfaultfd is made inside the process (an
//! injected `userfaultfd(2)`, taken with `pidfd_getfd` and closed in the
//! process again, so its fd table is as it was), registered in
//! write-protect mode over its private areas, and every page of them
//! write-protected. With `UFFD_FEATURE_WP_ASYNC` the kernel resolves a
//! write fault itself by dropping the page's protection: nobody handles
//! faults, the program only pays one minor fault per page on its first
//! write. `/proc/PID/pagemap` shows the protection as `PM_UFFD_WP`: a page
//! that still has it was not written since (by the program, by the kernel
//! on its behalf, or through `/proc/PID/mem`).
//!
//! A page's protection is trusted only where it can be proven ours
//! ([`Tracker::register`]): registering an area again with our
//! userfaultfd succeeds only if the area is registered with it or with
//! none; one registered with another userfaultfd (the program's own)
//! answers `EBUSY`, and a new area (mapped, or moved by `mremap`, since)
//! comes back without any page protected, so it reads as written. The
//! kernel drops protection bits whenever a registration ends (the
//! userfaultfd closed, the area unmapped or moved), so a protected page in
//! an area of ours was protected by us.
//!
//! `UFFD_FEATURE_WP_ASYNC` brings `UFFD_FEATURE_WP_UNPOPULATED` with it
//! (the kernel turns it on unconditionally): protecting an area puts a
//! marker in every empty page table entry, over a runtime's whole
//! reserved address space too, and pagemap shows each as a swapped,
//! protected page. A marker that the previous link does not hold stands
//! for a page that was empty when protected and was not written since:
//! it is not dumped ([`Prev::unpopulated`]). A page first written after
//! the protection comes unprotected (written), and is dumped.
//!
//! The registration lasts while somebody holds the userfaultfd: between
//! links, `track_holder.rs`'s process does. While it does, the process's
//! smaps show `uw` among the areas' `VmFlags`. Writes by devices or
//! through pages pinned before the protection (`O_DIRECT` in flight, RDMA,
//! io_uring fixed buffers) bypass page tables and are not seen: the same
//! limit soft-dirty tracking has. A pre-dump killed (SIGKILL) between the
//! injected `userfaultfd(2)` and the injected `close` leaves that fd in
//! the process's table (a userfaultfd covers the memory of the process
//! that made it, so there is no making one from outside).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use linux_raw_sys::general::{
    UFFD_API, UFFD_FEATURE_WP_ASYNC, UFFD_USER_MODE_ONLY, UFFDIO_REGISTER_MODE_WP, uffdio_api, uffdio_range,
    uffdio_register, uffdio_writeprotect,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_REGISTER, UFFDIO_WRITEPROTECT};
use nix::libc;

use super::inject::{Injector, Trampoline};
use super::maps::{MAP_DROPPABLE, MAP_PRIVATE, Vma, status};
use super::pagemap::{PM_PRESENT, PM_SWAP};

/// `UFFDIO_WRITEPROTECT_MODE_WP` (linux-raw-sys lacks it).
const WRITEPROTECT_MODE_WP: u64 = 1;

/// `PM_UFFD_WP` in a pagemap word: the page is write-protected by the
/// area's userfaultfd, so it was not written since it was protected.
pub const PM_UFFD_WP: u64 = 1 << 57;

/// The userfaultfd tracking one process, and a pidfd that names that
/// very process (a PID may be reused, a pidfd not).
#[derive(Debug)]
pub struct Tracker {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub uffd: OwnedFd,
    /// Handed on by the previous link's holder: its protections tell what
    /// was written since that link. A tracker made now tells nothing yet.
    pub inherited: bool,
}

/// Refuses a kernel without asynchronous write-protection, asking a fresh
/// userfaultfd of our own which features it offers.
pub fn check_kernel() -> Result<()> {
    // SAFETY: a plain system call; the fd is owned at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY as i32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("userfaultfd(2) is not available: iterative dumps track writes with it");
    }
    // SAFETY: just made.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = uffdio_api { api: UFFD_API as u64, features: 0, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes one uffdio_api.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut api) } < 0 {
        return Err(std::io::Error::last_os_error()).context("UFFDIO_API on a probe userfaultfd");
    }
    if api.features & UFFD_FEATURE_WP_ASYNC as u64 == 0 {
        bail!(
            "this kernel's userfaultfd lacks asynchronous write-protection (UFFD_FEATURE_WP_ASYNC, Linux 6.7 and \
             later, features offered: {:#x}): pre-dump cannot track which pages the program writes",
            api.features
        );
    }
    Ok(())
}

impl Tracker {
    /// Makes a userfaultfd inside process `pid` (its leader frozen in an
    /// interrupt stop) and takes it; the process's own fd is closed again.
    pub fn start(pid: i32, tramp: Trampoline) -> Result<Tracker> {
        let pidfd = crate::procfs::pidfd(pid)?;
        let mut inj = Injector::new(pid, tramp)?;
        let flags = (libc::O_CLOEXEC | UFFD_USER_MODE_ONLY as i32) as u64;
        let theirs = inj.syscall(libc::SYS_userfaultfd as u32, &[flags])?;
        if theirs < 0 {
            inj.finish()?;
            bail!(
                "process {pid}: userfaultfd(2) inside it failed: {}",
                std::io::Error::from_raw_os_error(-theirs as i32)
            );
        }
        // SAFETY: pidfd_getfd duplicates the process's fd into ours.
        let mine = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), theirs as i32, 0) };
        let taken = if mine < 0 {
            Err(std::io::Error::last_os_error())
                .with_context(|| format!("process {pid}: taking its userfaultfd {theirs} (pidfd_getfd)"))
        } else {
            // SAFETY: a new fd of ours.
            Ok(unsafe { OwnedFd::from_raw_fd(mine as i32) })
        };
        // Closed whatever happened: the program must not keep an fd it
        // never opened.
        let closed = inj.syscall(libc::SYS_close as u32, &[theirs as u64])?;
        inj.finish()?;
        let uffd = taken?;
        if closed < 0 {
            bail!("process {pid}: closing userfaultfd {theirs} inside it failed again ({closed})");
        }
        let mut api = uffdio_api { api: UFFD_API as u64, features: UFFD_FEATURE_WP_ASYNC as u64, ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes one uffdio_api.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API as _, &mut api) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("process {pid}: UFFDIO_API with UFFD_FEATURE_WP_ASYNC"));
        }
        Ok(Tracker { pid, pidfd, uffd, inherited: false })
    }

    /// Whether the process this tracker was made for is still there, the
    /// same one (its pidfd still reaches it).
    pub fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), 0, 0usize, 0) == 0 }
    }

    /// Registers every area a dump copies pages of, each on its own (an
    /// area the kernel refuses, a private file mapping say, is simply not
    /// tracked). Returns the areas now registered with this userfaultfd,
    /// as (start, end), in order.
    ///
    /// For an inherited tracker this is also the proof that an area's
    /// protections are ours: see the module doc.
    pub fn register(&self, vmas: &[Vma]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for v in vmas.iter().filter(|v| trackable(v)) {
            let mut r = uffdio_register {
                range: uffdio_range { start: v.start, len: v.end - v.start },
                mode: UFFDIO_REGISTER_MODE_WP as u64,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register.
            if unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_REGISTER as _, &mut r) } == 0 {
                out.push((v.start, v.end));
            }
        }
        out
    }

    /// Write-protects every page of `areas` (registered by
    /// [`Self::register`]): from now on a write shows.
    pub fn protect(&self, areas: &[(u64, u64)]) -> Result<()> {
        for &(start, end) in areas {
            let mut w =
                uffdio_writeprotect { range: uffdio_range { start, len: end - start }, mode: WRITEPROTECT_MODE_WP };
            // SAFETY: UFFDIO_WRITEPROTECT reads one uffdio_writeprotect.
            if unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, &mut w) } < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("process {}: write-protecting {start:#x}-{end:#x}", self.pid));
            }
        }
        Ok(())
    }
}

/// The areas whose pages a dump copies and whose writes are tracked:
/// private anonymous memory, but the vDSO (always dumped whole) and the
/// kernel's own pages, and droppable memory (never dumped).
///
/// Private file mappings are left alone, though the kernel would register
/// them: a page there not yet copied on write follows the file, which may
/// change without any write through the mapping, and the kernel puts a
/// protection marker where such a page is reclaimed, which pagemap shows
/// as a swapped, protected page. Their copied pages are dumped in full
/// every time instead.
///
/// Inaccessible areas (`PROT_NONE`, a runtime's reserved address space)
/// are left alone too: protecting one would fill its whole range with
/// page tables for markers (a JVM's gigabyte of class space, say) while
/// the program cannot write it; what it makes accessible later is dumped
/// in full.
fn trackable(v: &Vma) -> bool {
    v.is(status::REGULAR | status::ANON_PRIVATE)
        && v.prot != 0
        && v.flags & MAP_PRIVATE != 0
        && v.flags & MAP_DROPPABLE == 0
        && v.status & (status::VDSO | status::VVAR | status::VSYSCALL) == 0
}

/// Where a page of an iterative dump comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Copied into this link's pages image.
    Here,
    /// Unchanged since the previous link, which holds it (`PE_PARENT`).
    Parent,
}

/// What a link knows about one process's pages in the previous link:
/// the areas whose protections are proven ours, and the pages the
/// previous link's pagemap holds (present there or further up).
#[derive(Debug, Default)]
pub struct Prev {
    /// Areas registered with an inherited tracker, in order.
    pub tracked: Vec<(u64, u64)>,
    /// Page ranges [start, end) the previous link holds, in order.
    pub held: Vec<(u64, u64)>,
}

impl Prev {
    /// Where page `addr`, whose pagemap word is `pme`, comes from: the
    /// parent only if its area is tracked by us, it is still protected
    /// (not written since), and the parent holds it.
    pub fn source(&self, addr: u64, pme: u64) -> Source {
        if pme & PM_UFFD_WP != 0 && within(&self.tracked, addr) && within(&self.held, addr) {
            Source::Parent
        } else {
            Source::Here
        }
    }

    /// Whether page `addr`, whose word is `pme`, is a protection marker in
    /// an empty entry: swapped and protected in a tracked area, but not a
    /// page the previous link holds (every page present when protected was
    /// copied into it). It reads as zeros, and is not dumped. Its answer
    /// holds over the stretch [`Prev::source_span`] gives.
    pub fn unpopulated(&self, addr: u64, pme: u64) -> bool {
        pme & (PM_UFFD_WP | PM_SWAP) == PM_UFFD_WP | PM_SWAP
            && pme & PM_PRESENT == 0
            && within(&self.tracked, addr)
            && !within(&self.held, addr)
    }

    /// [`Prev::source`] of page `addr`, and where the stretch of pages
    /// with the same word that share its answer ends.
    pub fn source_span(&self, addr: u64, pme: u64) -> (Source, u64) {
        let next = |ranges: &[(u64, u64)]| {
            let i = ranges.partition_point(|r| r.1 <= addr);
            ranges.get(i).map_or(u64::MAX, |r| if r.0 <= addr { r.1 } else { r.0 })
        };
        (self.source(addr, pme), next(&self.tracked).min(next(&self.held)))
    }
}

fn within(ranges: &[(u64, u64)], addr: u64) -> bool {
    let i = ranges.partition_point(|r| r.1 <= addr);
    ranges.get(i).is_some_and(|r| r.0 <= addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_comes_from_the_parent_only_when_tracked_protected_and_held() {
        let prev =
            Prev { tracked: vec![(0x1000, 0x5000), (0x8000, 0x9000)], held: vec![(0x2000, 0x4000), (0x8000, 0x9000)] };
        assert_eq!(prev.source(0x2000, PM_UFFD_WP), Source::Parent);
        assert_eq!(prev.source(0x3000, PM_UFFD_WP), Source::Parent);
        assert_eq!(prev.source(0x8000, PM_UFFD_WP), Source::Parent);
        // Written since.
        assert_eq!(prev.source(0x2000, 0), Source::Here);
        // Not in the parent.
        assert_eq!(prev.source(0x1000, PM_UFFD_WP), Source::Here);
        assert_eq!(prev.source(0x4000, PM_UFFD_WP), Source::Here);
        // Not tracked.
        assert_eq!(prev.source(0x6000, PM_UFFD_WP), Source::Here);
        assert_eq!(Prev::default().source(0x2000, PM_UFFD_WP), Source::Here);
    }

    /// A protection marker in an empty entry reads as swapped and
    /// protected; where the previous link holds no page it stands for an
    /// empty page, never for one to copy.
    #[test]
    fn a_marker_the_parent_does_not_hold_is_an_empty_page() {
        let prev = Prev { tracked: vec![(0x1000, 0x9000)], held: vec![(0x2000, 0x3000)] };
        let marker = PM_UFFD_WP | PM_SWAP;
        assert!(prev.unpopulated(0x4000, marker));
        // Held: a page swapped out since the parent copied it.
        assert!(!prev.unpopulated(0x2000, marker));
        // Written since (swapped out unprotected), present, or untracked.
        assert!(!prev.unpopulated(0x4000, PM_SWAP));
        assert!(!prev.unpopulated(0x4000, marker | PM_PRESENT));
        assert!(!prev.unpopulated(0xa000, marker));
    }

    #[cfg(target_arch = "x86_64")]
    /// A userfaultfd of this process, as a pre-dump makes one inside its
    /// target.
    fn own_tracker() -> Tracker {
        let me = std::process::id() as i32;
        // SAFETY: a plain system call; the fd is owned at once.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY as i32) };
        assert!(fd >= 0);
        // SAFETY: just made.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = uffdio_api { api: UFFD_API as u64, features: UFFD_FEATURE_WP_ASYNC as u64, ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes one uffdio_api.
        assert_eq!(unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API as _, &mut api) }, 0);
        Tracker { pid: me, pidfd: crate::procfs::pidfd(me).unwrap(), uffd, inherited: true }
    }

    #[cfg(target_arch = "x86_64")]
    fn anon(start: u64, len: u64) -> Vma {
        Vma {
            start,
            end: start + len,
            pgoff: 0,
            prot: 3,
            flags: MAP_PRIVATE | super::super::maps::MAP_ANONYMOUS,
            status: status::REGULAR | status::ANON_PRIVATE,
            madv: 0,
            dev: (0, 0),
            inode: 0,
            name: String::new(),
            vmflags: vec![],
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn pme(addr: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        std::fs::File::open("/proc/self/pagemap").unwrap().read_exact_at(&mut b, addr / 4096 * 8).unwrap();
        u64::from_ne_bytes(b)
    }

    // Write protection by userfaultfd exists on 64-bit kernels only.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn moved_areas_and_areas_of_another_userfaultfd_are_not_trusted() {
        const LEN: usize = 4 * 4096;
        let map = || {
            // SAFETY: a fresh private anonymous mapping, used through raw
            // pointers only.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), LEN, 3, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: inside the mapping just made.
            unsafe { p.cast::<u8>().write_bytes(7, LEN) };
            p as u64
        };
        let (a, b, c) = (map(), map(), map());
        let t = own_tracker();
        // c is another userfaultfd's: ours is refused there (EBUSY).
        let other = own_tracker();
        assert_eq!(other.register(&[anon(c, LEN as u64)]), [(c, c + LEN as u64)]);
        let areas = t.register(&[anon(a, LEN as u64), anon(b, LEN as u64), anon(c, LEN as u64)]);
        assert_eq!(areas, [(a, a + LEN as u64), (b, b + LEN as u64)]);
        t.protect(&areas).unwrap();
        assert_ne!(pme(a) & PM_UFFD_WP, 0);
        assert_ne!(pme(b) & PM_UFFD_WP, 0);
        // a moves onto b's place: its pages come unprotected, and
        // registering there again (the proof) finds an area new to us.
        // SAFETY: both are our mappings; b's is replaced.
        let moved = unsafe {
            libc::mremap(a as *mut _, LEN, LEN, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, b as *mut libc::c_void)
        };
        assert_eq!(moved as u64, b);
        let now = t.register(&[anon(b, LEN as u64)]);
        assert_eq!(now, [(b, b + LEN as u64)]);
        let prev = Prev { tracked: now, held: vec![(a, a + LEN as u64), (b, b + LEN as u64)] };
        assert_eq!(pme(b) & PM_UFFD_WP, 0);
        assert_eq!(prev.source(b, pme(b)), Source::Here);
        // SAFETY: unmapping our own mappings.
        unsafe {
            libc::munmap(b as *mut _, LEN);
            libc::munmap(c as *mut _, LEN);
        }
    }

    // Write protection by userfaultfd exists on 64-bit kernels only.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_kernel_offers_asynchronous_write_protection() {
        // The machines this runs on do (Linux 6.7 and later); a failure
        // here says the iterative dump tests cannot pass.
        check_kernel().unwrap();
    }
}
