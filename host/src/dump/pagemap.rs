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

use anyhow::{Context, Result, bail};

use super::maps::{MAP_ANONYMOUS, MAP_DROPPABLE, MAP_HUGETLB, MAP_LOCKED, MAP_PRIVATE, PAGE, Vma, status};
use super::track::{Prev, Source};

const PM_PFN_MASK: u64 = (1 << 55) - 1;
const PM_FILE: u64 = 1 << 61;
pub(super) const PM_SWAP: u64 = 1 << 62;
pub(super) const PM_PRESENT: u64 = 1 << 63;
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

/// Not a kernel bit: a page the kernel calls the zero page (from the
/// walk's category, or from the PFN where pagemap shows PFNs). Bits 59-60
/// are unused by pagemap.
const PM_ZERO: u64 = 1 << 59;
/// The bits of a word the dump looks at; the rest (PFNs, swap offsets,
/// exclusivity) would only keep equal pages from sharing a run.
const PM_USED: u64 = PM_PRESENT | PM_SWAP | PM_FILE | PM_GUARD_REGION | PM_ZERO | super::track::PM_UFFD_WP;

/// An area's pagemap words (`PM_USED` bits only) as `(pages, word)`
/// runs in address order, covering the area: a large area in like state
/// takes a few runs, whatever its size.
pub type Words = Vec<(u64, u64)>;

/// Appends `pages` pages with word `word` to `w`.
fn push(w: &mut Words, pages: u64, word: u64) {
    match w.last_mut() {
        Some((n, last)) if *last == word => *n += pages,
        _ if pages > 0 => w.push((pages, word)),
        _ => {}
    }
}

/// The pagemap words of `v`, from `PAGEMAP_SCAN` walks where the kernel
/// has them (Linux 6.7), else read from `/proc/PID/pagemap` a word per
/// page. The walk answers with ranges of pages in like state, and is
/// asked to tell file pages from anonymous ones only where there can be
/// file pages (that costs a lookup per page): 2.7 ms for 256 MiB here,
/// against 6 ms for the read. `zero_pfn` tells the zero page in words
/// read.
pub fn read_pagemap(pm: &File, pid: i32, v: &Vma, zero_pfn: Option<u64>) -> Result<Words> {
    let what = || format!("/proc/{pid}/pagemap for {:#x}-{:#x}", v.start, v.end);
    match scan(pm, v).with_context(|| format!("PAGEMAP_SCAN of {}", what()))? {
        Some(words) => Ok(words),
        None => read_words(pm, v, zero_pfn).with_context(|| format!("reading {}", what())),
    }
}

fn read_words(pm: &File, v: &Vma, zero_pfn: Option<u64>) -> std::io::Result<Words> {
    // In pieces, so a huge reserved area costs no huge buffer.
    const PIECE: u64 = 1 << 16;
    let mut out = Words::new();
    let mut buf = vec![0u8; (v.pages().min(PIECE) * 8) as usize];
    let mut page = v.start / PAGE;
    while page < v.end / PAGE {
        let n = (v.end / PAGE - page).min(PIECE);
        let b = &mut buf[..(n * 8) as usize];
        pm.read_exact_at(b, page * 8)?;
        for c in b.chunks_exact(8) {
            let e = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            push(&mut out, 1, normal(e, zero_pfn));
        }
        page += n;
    }
    Ok(out)
}

/// A word as read, with only the bits the dump looks at.
fn normal(e: u64, zero_pfn: Option<u64>) -> u64 {
    let zero = e & PM_PRESENT != 0 && zero_pfn.is_some_and(|z| e & PM_PFN_MASK == z);
    e & PM_USED & !PM_ZERO | if zero { PM_ZERO } else { 0 }
}

/// What this kernel's `PAGEMAP_SCAN` takes: not known yet, with guard
/// regions (6.15), without, or no scan at all (before 6.7).
static SCAN: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(SCAN_UNKNOWN);
const SCAN_UNKNOWN: u8 = 0;
const SCAN_GUARD: u8 = 1;
const SCAN_NO_GUARD: u8 = 2;
const SCAN_NONE: u8 = 3;

/// The words `read_words` would read for `v`, built from `PAGEMAP_SCAN`
/// walks over the pages present or swapped out (the rest are 0). `None`
/// if the kernel has no such ioctl.
fn scan(pm: &File, v: &Vma) -> Result<Option<Words>> {
    use linux_raw_sys::general::{
        PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WRITTEN, page_region,
        pm_scan_arg,
    };
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    // _IOWR('f', 16, struct pm_scan_arg): linux-raw-sys lacks it.
    const PAGEMAP_SCAN: u32 = (3 << 30) | ((size_of::<pm_scan_arg>() as u32) << 16) | ((b'f' as u32) << 8) | 16;
    let mut level = SCAN.load(Ordering::Relaxed);
    if level == SCAN_NONE {
        return Ok(None);
    }
    let mut words = Words::new();
    let mut done = v.start; // words cover v.start..done
    let mut regions = [page_region { start: 0, end: 0, categories: 0 }; 512];
    let mut start = v.start;
    while start < v.end {
        let guard = if level == SCAN_NO_GUARD { 0 } else { PAGE_IS_GUARD };
        let file = if v.is(status::ANON_PRIVATE) { 0 } else { PAGE_IS_FILE };
        let mut arg = pm_scan_arg {
            size: size_of::<pm_scan_arg>() as u64,
            flags: 0,
            start,
            end: v.end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: 0,
            category_anyof_mask: (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) as u64,
            return_mask: (PAGE_IS_PRESENT | PAGE_IS_SWAPPED | file | PAGE_IS_PFNZERO | PAGE_IS_WRITTEN | guard) as u64,
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at
        // `regions`, `vec_len` entries long, alive across the call.
        let n = unsafe { nix::libc::ioctl(pm.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            let e = nix::errno::Errno::last();
            match (e, level) {
                // Unknown ioctl: before 6.7 (or an emulator). Unknown
                // category: before 6.15.
                (nix::errno::Errno::ENOTTY | nix::errno::Errno::ENOSYS, SCAN_UNKNOWN) => {
                    SCAN.store(SCAN_NONE, Ordering::Relaxed);
                    return Ok(None);
                }
                (nix::errno::Errno::EINVAL, SCAN_UNKNOWN) => {
                    level = SCAN_NO_GUARD;
                    continue;
                }
                _ => return Err(e.into()),
            }
        }
        if level == SCAN_UNKNOWN {
            level = SCAN_GUARD;
        }
        SCAN.store(level, Ordering::Relaxed);
        for r in &regions[..n as usize] {
            let c = r.categories as u32;
            let mut word = 0;
            for (cat, bit) in [
                (PAGE_IS_PRESENT, PM_PRESENT),
                (PAGE_IS_SWAPPED, PM_SWAP),
                (PAGE_IS_FILE, PM_FILE),
                (PAGE_IS_PFNZERO, PM_ZERO),
                (PAGE_IS_GUARD, PM_GUARD_REGION),
            ] {
                if c & cat != 0 {
                    word |= bit;
                }
            }
            if c & PAGE_IS_WRITTEN == 0 {
                word |= super::track::PM_UFFD_WP;
            }
            let (from, to) = (r.start.clamp(done, v.end), r.end.clamp(done, v.end));
            push(&mut words, (from - done) / PAGE, 0);
            push(&mut words, (to - from) / PAGE, word);
            done = to;
        }
        if arg.walk_end <= start {
            bail!("the walk stopped at {:#x}", arg.walk_end);
        }
        start = arg.walk_end;
    }
    push(&mut words, (v.end - done) / PAGE, 0);
    Ok(Some(words))
}

/// Appends the pages of `v` to dump to `runs`, given its pagemap words.
/// `stack_pages` are the pages holding a thread's stack pointer, which CRIU
/// never marks lazy (the restored thread touches them at once). With
/// `prev` (an iterative dump), a page unchanged since the previous link
/// gets a `PE_PARENT` entry instead of a copy.
pub fn add_runs(runs: &mut Vec<Run>, v: &Vma, words: &Words, stack_pages: &[u64], prev: Option<&Prev>) {
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
    let mut addr = v.start;
    for &(pages, e) in words {
        let (mut a, end) = (addr, addr + pages * PAGE);
        addr = end;
        if !whole && !page_wanted(v, e) {
            continue;
        }
        // Stretches of pages alike: cut where the parent's ranges or a
        // stack page start or end.
        while a < end {
            let (source, mut stop) = prev.map_or((Source::Here, end), |p| p.source_span(a, e));
            if prev.is_some_and(|p| p.unpopulated(a, e)) {
                a = stop.min(end);
                continue;
            }
            let flags = if source == Source::Parent {
                PE_PARENT
            } else if !lazy {
                PE_PRESENT
            } else if stack_pages.contains(&a) {
                stop = a + PAGE;
                PE_PRESENT
            } else {
                stop = stack_pages.iter().copied().filter(|&s| s > a).fold(stop, u64::min);
                PE_LAZY | PE_PRESENT
            };
            let stop = stop.min(end);
            append(runs, a, (stop - a) / PAGE, flags);
            a = stop;
        }
    }
}

/// Appends `pages` pages from `vaddr` with `flags` to `runs`, joining the
/// last entry where it ends there with the same flags, in entries of at
/// most [`MAX_ENTRY_PAGES`].
fn append(runs: &mut Vec<Run>, mut vaddr: u64, mut pages: u64, flags: u32) {
    while pages > 0 {
        let n = match runs.last_mut() {
            Some(r) if r.flags == flags && r.vaddr + r.nr_pages * PAGE == vaddr && r.nr_pages < MAX_ENTRY_PAGES => {
                let n = pages.min(MAX_ENTRY_PAGES - r.nr_pages);
                r.nr_pages += n;
                n
            }
            _ => {
                let n = pages.min(MAX_ENTRY_PAGES);
                runs.push(Run { vaddr, nr_pages: n, flags });
                n
            }
        };
        vaddr += n * PAGE;
        pages -= n;
    }
}

/// The guard regions (MADV_GUARD_INSTALL) of `v`, by address. A program
/// relies on its guard pages faulting; the images keep them as CRIU does
/// (areas of their own, status `AREA_GUARD` alone), and the restore
/// installs them again.
pub fn guards(v: &Vma, words: &Words) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = vec![];
    let mut addr = v.start;
    for &(pages, e) in words {
        let end = addr + pages * PAGE;
        if e & PM_GUARD_REGION != 0 {
            match out.last_mut() {
                Some(r) if r.1 == addr => r.1 = end,
                _ => out.push((addr, end)),
            }
        }
        addr = end;
    }
    out
}

fn page_wanted(v: &Vma, e: u64) -> bool {
    if e & (PM_GUARD_REGION | PM_ZERO) != 0 {
        return false;
    }
    // Not yet copied on write: the file still holds this page.
    if v.is(status::FILE_PRIVATE) && e & PM_FILE != 0 {
        return false;
    }
    e & (PM_PRESENT | PM_SWAP) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::maps::{MAP_GROWSDOWN, PROT_READ, PROT_WRITE};

    /// Words as `read_words` makes them of `pme`.
    fn w(pme: &[u64], zero_pfn: Option<u64>) -> Words {
        let mut out = Words::new();
        for &e in pme {
            push(&mut out, 1, normal(e, zero_pfn));
        }
        out
    }

    fn expand(words: &Words) -> Vec<u64> {
        words.iter().flat_map(|&(n, e)| std::iter::repeat_n(e, n as usize)).collect()
    }

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

    /// Guard pages next to each other are one region, whatever their other
    /// bits; a page between two guards splits them.
    #[test]
    fn guard_regions_are_found_by_address() {
        let v = vma(0x10000, 6, status::ANON_PRIVATE, 0);
        let words =
            vec![(1, PM_PRESENT), (2, PM_GUARD_REGION), (1, PM_GUARD_REGION | PM_ZERO), (1, 0), (1, PM_GUARD_REGION)];
        assert_eq!(guards(&v, &words), [(0x11000, 0x14000), (0x15000, 0x16000)]);
        assert!(guards(&v, &vec![(6, PM_PRESENT)]).is_empty());
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
        add_runs(&mut runs, &anon, &w(&pme, zero), &[], None);
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
        add_runs(&mut runs, &file, &w(&[PM_PRESENT | 9, PM_PRESENT | PM_FILE | 10, PM_PRESENT | 11], zero), &[], None);
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
        add_runs(&mut runs, &stack, &w(&[PM_PRESENT | 1; 3], zero), &[0x21000], None);
        assert_eq!(
            runs.iter().map(|r| (r.vaddr, r.nr_pages, r.flags)).collect::<Vec<_>>(),
            [(0x20000, 1, PE_LAZY | PE_PRESENT), (0x21000, 1, PE_PRESENT), (0x22000, 1, PE_LAZY | PE_PRESENT)]
        );

        // vDSO: whole, even pages pagemap does not show; vvar: never.
        let vdso = vma(0x30000, 2, status::REGULAR | status::VDSO | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let vvar = vma(0x32000, 2, status::REGULAR | status::VVAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let mut runs = vec![];
        add_runs(&mut runs, &vdso, &w(&[0, 0], zero), &[], None);
        add_runs(&mut runs, &vvar, &w(&[PM_PRESENT | 3; 2], zero), &[], None);
        assert_eq!(runs, [Run { vaddr: 0x30000, nr_pages: 2, flags: PE_PRESENT }]);

        // Droppable memory: never, present or not.
        let droppable = vma(0x40000, 2, status::REGULAR | status::ANON_PRIVATE, MAP_DROPPABLE | MAP_ANONYMOUS);
        let mut runs = vec![];
        add_runs(&mut runs, &droppable, &w(&[PM_PRESENT | 3; 2], zero), &[], None);
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
        add_runs(&mut runs, &anon, &w(&pme, None), &[], Some(&prev));
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
        add_runs(&mut runs, &anon, &w(&pme, None), &[], Some(&Prev::default()));
        assert_eq!(runs, [Run { vaddr: 0x10000, nr_pages: 5, flags: PE_LAZY | PE_PRESENT }]);
    }

    #[test]
    fn entries_stop_at_256_pages() {
        let anon = vma(0x100000, 600, status::REGULAR | status::ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS);
        let mut runs = vec![];
        add_runs(&mut runs, &anon, &w(&vec![PM_PRESENT | 1; 600], None), &[], None);
        assert_eq!(runs.iter().map(|r| r.nr_pages).collect::<Vec<_>>(), [256, 256, 88]);
    }

    /// The scan and the word-by-word read agree on every bit the dump
    /// looks at, for pages written, read but never written (the zero
    /// page), never touched, a private file mapping's pages read and
    /// copied on write, and a guard page where the kernel has them.
    #[test]
    fn scan_and_read_agree() {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};
        if !crate::dump::real_kernel() {
            return;
        }
        let pm = File::open("/proc/self/pagemap").unwrap();
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let pages = 64usize;
        let len = std::num::NonZeroUsize::new(pages * PAGE as usize).unwrap();
        let file = File::from(nix::sys::memfd::memfd_create(c"scan", nix::sys::memfd::MFdFlags::empty()).unwrap());
        file.set_len(8 * PAGE).unwrap();
        file.write_all_at(&[1; 8 * PAGE as usize], 0).unwrap();
        // SAFETY: fresh mappings, touched through raw pointers only here.
        let (anon, filemap) = unsafe {
            let a = mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE).unwrap();
            let f = mmap(
                None,
                std::num::NonZeroUsize::new(8 * PAGE as usize).unwrap(),
                rw,
                MapFlags::MAP_PRIVATE,
                &file,
                0,
            )
            .unwrap();
            let p = a.as_ptr() as *mut u8;
            for i in (0..10).chain(30..34) {
                p.add(i * PAGE as usize).write_volatile(7);
            }
            for i in 20..25 {
                p.add(i * PAGE as usize).read_volatile();
            }
            // MADV_GUARD_INSTALL (Linux 6.13): fails harmlessly before.
            nix::libc::madvise(p.add(40 * PAGE as usize).cast(), PAGE as usize, 102);
            let q = f.as_ptr() as *mut u8;
            q.read_volatile();
            q.add(PAGE as usize).write_volatile(9);
            (a, f)
        };
        if scan(&pm, &vma(anon.as_ptr() as u64, 1, status::ANON_PRIVATE, MAP_PRIVATE)).unwrap().is_none() {
            return; // before Linux 6.7: only the read
        }
        let zero = zero_page_pfn();
        for (at, n, status) in [
            (anon.as_ptr() as u64, pages as u64, status::REGULAR | status::ANON_PRIVATE),
            (filemap.as_ptr() as u64, 8, status::REGULAR | status::FILE_PRIVATE),
        ] {
            let v = vma(at, n, status, MAP_PRIVATE);
            let scanned = expand(&scan(&pm, &v).unwrap().unwrap());
            let read = expand(&read_words(&pm, &v, zero).unwrap());
            assert_eq!(scanned.len(), n as usize);
            for (i, (s, r)) in scanned.iter().zip(&read).enumerate() {
                // Without PFNs (not root) the read cannot tell the zero page.
                let mask = if zero.is_some() { !0 } else { !PM_ZERO };
                assert_eq!(s & mask, r & mask, "page {i} of {at:#x}: scanned {s:#x}, read {r:#x}");
            }
            let wanted: Vec<usize> = (0..n as usize).filter(|&i| page_wanted(&v, scanned[i])).collect();
            if status & status::FILE_PRIVATE != 0 {
                assert_eq!(wanted, [1], "only the page copied on write");
            } else {
                assert_eq!(wanted, (0..10).chain(30..34).collect::<Vec<_>>());
                assert!(scanned[20..25].iter().all(|w| w & PM_ZERO != 0), "read-only pages are the zero page");
            }
        }
        // SAFETY: unmapping what was mapped above.
        unsafe {
            munmap(anon, len.get()).unwrap();
            munmap(filemap, 8 * PAGE as usize).unwrap();
        }
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
