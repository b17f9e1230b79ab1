//! Which pages of a process go into the images, from `/proc/PID/pagemap`,
//! and in which pagemap entries.
//!
//! The rules are CRIU's, so its restore finds what it expects: a private
//! page is dumped when it is present or swapped out and is not the shared
//! zero page; in a private file mapping only pages that were copied on
//! write (no longer the file's page cache) count; the vDSO is dumped whole
//! (a restore may have to patch it into a proxy); vvar, vsyscall and
//! droppable memory never.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};

use super::maps::{MAP_ANONYMOUS, MAP_DROPPABLE, MAP_HUGETLB, MAP_LOCKED, MAP_PRIVATE, PAGE, Vma, status};
use super::track::{Prev, Source};

const PM_PFN_MASK: u64 = (1 << 55) - 1;
const PM_FILE: u64 = 1 << 61;
const PM_SWAP: u64 = 1 << 62;
const PM_PRESENT: u64 = 1 << 63;
/// Guard regions (MADV_GUARD_INSTALL, Linux 6.14+) read as zero and must
/// stay guards.
const PM_GUARD_REGION: u64 = 1 << 58;

/// `pagemap_entry.flags` of CRIU's images.
pub const PE_PARENT: u32 = 1 << 0;
pub const PE_LAZY: u32 = 1 << 1;
pub const PE_PRESENT: u32 = 1 << 2;

/// Largest entry CRIU writes: its page pipes hold at most 1 MiB.
pub const MAX_ENTRY_PAGES: u64 = 256;

/// A pagemap entry: `nr_pages` pages from `vaddr`, all in the pages image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vaddr: u64,
    pub nr_pages: u64,
    pub flags: u32,
}

/// CRIU may serve anonymous private pages lazily; it marks them so.
fn can_be_lazy(v: &Vma) -> bool {
    v.flags & MAP_ANONYMOUS != 0
        && v.flags & MAP_PRIVATE != 0
        && v.flags & (MAP_LOCKED | MAP_HUGETLB) == 0
        && v.status & (status::VDSO | status::VVAR | status::VSYSCALL) == 0
}

/// The PFN of the shared zero page, if pagemap shows PFNs to us.
pub fn zero_page_pfn() -> Option<u64> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
    let len = std::num::NonZeroUsize::new(PAGE as usize)?;
    // SAFETY: a fresh private anonymous page, read once and unmapped; no
    // Rust object lives there.
    unsafe {
        let p = mmap_anonymous(None, len, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE).ok()?;
        // A read fault on untouched anonymous memory maps the zero page.
        std::ptr::read_volatile(p.as_ptr() as *const u8);
        let pm = File::open("/proc/self/pagemap").ok();
        let mut e = [0u8; 8];
        let got = pm.and_then(|f| f.read_exact_at(&mut e, p.as_ptr() as u64 / PAGE * 8).ok());
        let _ = munmap(p, PAGE as usize);
        got?;
        let pfn = u64::from_ne_bytes(e) & PM_PFN_MASK;
        (pfn != 0).then_some(pfn)
    }
}

/// Reads the pagemap words of `v`.
pub fn read_pagemap(pm: &File, pid: i32, v: &Vma) -> Result<Vec<u64>> {
    let n = v.pages() as usize;
    let mut buf = vec![0u8; n * 8];
    pm.read_exact_at(&mut buf, v.start / PAGE * 8)
        .with_context(|| format!("reading /proc/{pid}/pagemap for {:#x}-{:#x}", v.start, v.end))?;
    Ok(buf.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Appends the pages of `v` to dump to `runs`, given its pagemap words.
/// `stack_pages` are the pages holding a thread's stack pointer, which CRIU
/// never marks lazy (the restored thread touches them at once). With
/// `prev` (an iterative dump), a page unchanged since the previous link
/// gets a `PE_PARENT` entry instead of a copy.
pub fn add_runs(
    runs: &mut Vec<Run>,
    v: &Vma,
    pme: &[u64],
    zero_pfn: Option<u64>,
    stack_pages: &[u64],
    prev: Option<&Prev>,
) {
    if !v.is(status::REGULAR) || v.is(status::VVAR) || v.status & (status::FILE_SHARED | status::ANON_SHARED) != 0 {
        return;
    }
    // The kernel may drop droppable memory whenever it likes; the program
    // must cope with zeros there, and CRIU leaves them out too.
    if v.flags & MAP_DROPPABLE != 0 {
        return;
    }
    let whole = v.is(status::VDSO);
    let lazy = can_be_lazy(v);
    for (i, &e) in pme.iter().enumerate() {
        let addr = v.start + i as u64 * PAGE;
        let dump = whole || page_wanted(v, e, zero_pfn);
        if !dump {
            continue;
        }
        let flags = if prev.is_some_and(|p| p.source(addr, e) == Source::Parent) {
            PE_PARENT
        } else if lazy && !stack_pages.contains(&addr) {
            PE_LAZY | PE_PRESENT
        } else {
            PE_PRESENT
        };
        match runs.last_mut() {
            Some(r) if r.flags == flags && r.vaddr + r.nr_pages * PAGE == addr && r.nr_pages < MAX_ENTRY_PAGES => {
                r.nr_pages += 1
            }
            _ => runs.push(Run { vaddr: addr, nr_pages: 1, flags }),
        }
    }
}

/// The first page of `v` that is a guard region, if any: the restore has
/// no way to put one back yet, and a program relies on its guard pages
/// faulting.
pub fn first_guard(v: &Vma, pme: &[u64]) -> Option<u64> {
    pme.iter().position(|e| e & PM_GUARD_REGION != 0).map(|i| v.start + i as u64 * PAGE)
}

fn page_wanted(v: &Vma, e: u64, zero_pfn: Option<u64>) -> bool {
    if e & PM_GUARD_REGION != 0 {
        return false;
    }
    // Not yet copied on write: the file still holds this page.
    if v.is(status::FILE_PRIVATE) && e & PM_FILE != 0 {
        return false;
    }
    if e & (PM_PRESENT | PM_SWAP) == 0 {
        return false;
    }
    let is_zero = e & PM_PRESENT != 0 && zero_pfn.is_some_and(|z| e & PM_PFN_MASK == z);
    !is_zero
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::maps::{MAP_GROWSDOWN, PROT_READ, PROT_WRITE};

    fn vma(start: u64, pages: u64, status: u32, flags: u32) -> Vma {
        Vma {
            start,
            end: start + pages * PAGE,
            pgoff: 0,
            prot: PROT_READ | PROT_WRITE,
            flags,
            status,
            madv: 0,
            dev: (0, 0),
            inode: 0,
            name: String::new(),
            vmflags: vec![],
        }
    }

    #[test]
    fn criu_page_rules() {
        let anon = vma(0x10000, 6, status::REGULAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let zero = Some(77);
        let pme = [
            PM_PRESENT | 5,
            PM_PRESENT | 6,
            0,
            PM_PRESENT | 77, // zero page
            PM_SWAP,
            PM_PRESENT | PM_GUARD_REGION,
        ];
        let mut runs = vec![];
        add_runs(&mut runs, &anon, &pme, zero, &[], None);
        assert_eq!(
            runs,
            [
                Run { vaddr: 0x10000, nr_pages: 2, flags: PE_LAZY | PE_PRESENT },
                Run { vaddr: 0x14000, nr_pages: 1, flags: PE_LAZY | PE_PRESENT },
            ]
        );

        // A private file mapping right after: only copied pages, not lazy,
        // and the entry runs on across the area boundary like CRIU's.
        let file = vma(0x16000, 3, status::REGULAR | status::FILE_PRIVATE, MAP_PRIVATE);
        let mut runs = vec![Run { vaddr: 0x15000, nr_pages: 1, flags: PE_PRESENT }];
        add_runs(&mut runs, &file, &[PM_PRESENT | 9, PM_PRESENT | PM_FILE | 10, PM_PRESENT | 11], zero, &[], None);
        assert_eq!(
            runs,
            [
                Run { vaddr: 0x15000, nr_pages: 2, flags: PE_PRESENT },
                Run { vaddr: 0x18000, nr_pages: 1, flags: PE_PRESENT }
            ]
        );

        // The page under a stack pointer is not lazy.
        let stack =
            vma(0x20000, 3, status::REGULAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN);
        let mut runs = vec![];
        add_runs(&mut runs, &stack, &[PM_PRESENT | 1; 3], zero, &[0x21000], None);
        assert_eq!(
            runs.iter().map(|r| (r.vaddr, r.nr_pages, r.flags)).collect::<Vec<_>>(),
            [(0x20000, 1, PE_LAZY | PE_PRESENT), (0x21000, 1, PE_PRESENT), (0x22000, 1, PE_LAZY | PE_PRESENT)]
        );

        // vDSO: whole, even pages pagemap does not show; vvar: never.
        let vdso = vma(0x30000, 2, status::REGULAR | status::VDSO | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let vvar = vma(0x32000, 2, status::REGULAR | status::VVAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let mut runs = vec![];
        add_runs(&mut runs, &vdso, &[0, 0], zero, &[], None);
        add_runs(&mut runs, &vvar, &[PM_PRESENT | 3; 2], zero, &[], None);
        assert_eq!(runs, [Run { vaddr: 0x30000, nr_pages: 2, flags: PE_PRESENT }]);

        // Droppable memory: never, present or not.
        let droppable = vma(0x40000, 2, status::REGULAR | status::ANON_PRIVATE, MAP_DROPPABLE | MAP_ANONYMOUS);
        let mut runs = vec![];
        add_runs(&mut runs, &droppable, &[PM_PRESENT | 3; 2], zero, &[], None);
        assert_eq!(runs, []);
    }

    #[test]
    fn unchanged_tracked_pages_the_parent_holds_get_parent_entries() {
        use crate::dump::track::PM_UFFD_WP;
        let anon = vma(0x10000, 5, status::REGULAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let prev = Prev { tracked: vec![(0x10000, 0x15000)], held: vec![(0x10000, 0x14000)] };
        let wp = PM_PRESENT | PM_UFFD_WP | 5;
        // Protected, written, protected, swapped out protected, protected
        // but not in the parent.
        let pme = [wp, PM_PRESENT | 5, wp, PM_SWAP | PM_UFFD_WP, wp];
        let mut runs = vec![];
        add_runs(&mut runs, &anon, &pme, None, &[], Some(&prev));
        assert_eq!(
            runs,
            [
                Run { vaddr: 0x10000, nr_pages: 1, flags: PE_PARENT },
                Run { vaddr: 0x11000, nr_pages: 1, flags: PE_LAZY | PE_PRESENT },
                Run { vaddr: 0x12000, nr_pages: 2, flags: PE_PARENT },
                Run { vaddr: 0x14000, nr_pages: 1, flags: PE_LAZY | PE_PRESENT },
            ]
        );
        // Without tracking the same words give copies only.
        let mut runs = vec![];
        add_runs(&mut runs, &anon, &pme, None, &[], Some(&Prev::default()));
        assert_eq!(runs, [Run { vaddr: 0x10000, nr_pages: 5, flags: PE_LAZY | PE_PRESENT }]);
    }

    #[test]
    fn entries_stop_at_256_pages() {
        let anon = vma(0x100000, 600, status::REGULAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let mut runs = vec![];
        add_runs(&mut runs, &anon, &vec![PM_PRESENT | 1; 600], None, &[], None);
        assert_eq!(runs.iter().map(|r| r.nr_pages).collect::<Vec<_>>(), [256, 256, 88]);
    }

    #[test]
    fn zero_page_is_found_as_root() {
        if !crate::dump::real_kernel() {
            return;
        }
        // Without CAP_SYS_ADMIN pagemap hides PFNs, and None is right.
        if nix::unistd::geteuid().is_root() {
            assert!(zero_page_pfn().is_some());
        }
    }
}
