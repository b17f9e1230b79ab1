//! The bootstrap area: built in the parent, inherited by the new task at
//! the same address through `clone3`, and the only memory the blob keeps
//! while it replaces everything else.
//!
//! ```text
//! [ blob (code RX, data RW) | stack | frame per thread | argument block | vDSO park ]
//! ```

use anyhow::{Context, Result, bail};
use linux_raw_sys::general as g;
use revenant_arch::PAGE_SIZE;
use revenant_blob_abi::{
    Command, Header, Iovec, LogLevel, PageRead, RESTORE_DUMPABLE, RESTORE_NO_MM_MAP, RESTORE_NOT_DUMPABLE,
    RESTORE_SET_GROUPS, RESTORE_TRAP, Restore, SECCOMP_ALL_THREADS, SECCOMP_STRICT, Seccomp, SigAction, THREAD_STACK,
    Thread, VMA_FILL, VMA_LAZY, VMA_PREMAPPED, VMA_REPROTECT, VMA_SHM, VMA_SKIP, Vma,
};

use super::cow::Slot;
use super::creds::CredsPlan;
use super::layout;
use super::plan::{Backing, PageRun, ProcessPlan};
use super::vdso::{self, VdsoPlan};
use crate::blob::{BlockBuilder, EMBEDDED};
use crate::lazy::Range;
use crate::regs::frame::{self, FRAME_ROOM};

const STACK: usize = 64 << 10;
/// Per thread: a stack for the blob's thread code, then the sigreturn frame.
const ZONE: usize = THREAD_STACK as usize + FRAME_ROOM;

/// Service fd numbers the blob uses (the child opens them there).
#[derive(Debug, Clone)]
pub struct ServiceFds {
    pub log: i32,
    pub sync: i32,
    /// The page server's socket, -1 unless the restore is lazy.
    pub lazy: i32,
    /// One per pages image, in the plan's order.
    pub pages: Vec<i32>,
    pub exe: i32,
    /// One per file-backed VMA, in VMA order (-1 for others).
    pub vma: Vec<i32>,
    pub all: Vec<i32>,
}

/// The area as mapped in the parent (unmapped on drop; the child keeps its
/// copy).
#[derive(Debug)]
pub struct Bootstrap {
    pub start: u64,
    pub len: u64,
    pub entry: u64,
    pub stack_top: u64,
    pub args: u64,
    /// How much of the area the host unmaps at the end.
    pub unmap_len: u64,
    /// What was decided about the vDSO.
    pub vdso: String,
    /// The lazy areas and the pages they get from the page server.
    pub lazy: LazyPart,
    /// Where each piece lies (what, start, end), for a dry run.
    pub pieces: Vec<(String, u64, u64)>,
    /// Each VMA as the blob is told to make it, in the plan's order.
    pub vmas: Vec<Vma>,
}

/// What a lazy restore leaves to the page server for one process.
#[derive(Debug, Default)]
pub struct LazyPart {
    pub pages: Vec<Range>,
    pub areas: Vec<(u64, u64)>,
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        // SAFETY: the area is ours and nothing in the parent refers to it.
        let _ = unsafe { revenant_arch::sys::munmap(self.start as usize, self.len as usize) };
    }
}

fn page(n: usize) -> usize {
    n.next_multiple_of(PAGE_SIZE)
}

/// How the blob is to run.
#[derive(Debug, Clone, Copy)]
pub struct Modes {
    /// Trap before `rt_sigreturn` for a tracing host.
    pub trap: bool,
    /// Private anonymous areas go to the page server.
    pub lazy: bool,
    /// The blob logs to its pipe.
    pub log: bool,
}

/// How a process's memory is premapped (see `cow.rs`): the tree's region
/// and this process's slot for each VMA.
#[derive(Clone, Copy, Default)]
pub struct Premapped<'a> {
    pub region: (u64, u64),
    pub slots: &'a [Option<Slot>],
}

/// Lays out and fills the bootstrap area for `p`, mapped in this process.
/// `fill_helper_tid` is the TID for the blob's page-copying helper thread, 0
/// for none.
pub fn build(
    p: &ProcessPlan,
    fds: &ServiceFds,
    modes: Modes,
    creds: &CredsPlan,
    fill_helper_tid: u32,
    premap: Premapped<'_>,
) -> Result<Bootstrap> {
    let Modes { trap, lazy, log } = modes;
    let maps = crate::maps::own_maps()?;
    let runtime = crate::maps::runtime_vdso(&maps);
    let park_len: u64 = runtime.iter().map(|m| m.end - m.start).sum();
    let task_size = layout::task_size(&maps)?;
    let kd = crate::kerndat::Kerndat::get()?;
    // The vDSO plan's size does not depend on where the park is.
    let vd = vdso::plan(p, &runtime, &kd.vdso_symbols, 0)?;

    let blob_len = EMBEDDED.map_size();
    let frames_len = page(ZONE * p.threads.len());
    // The argument block's size depends on the addresses inside it only by
    // value, so build it once at a dummy address to learn its length.
    let args_len = page(block(p, fds, &Placement::dummy(trap, premap, lazy, log), &[], &vd, creds)?.0.as_bytes().len());
    let len = (blob_len + STACK + frames_len + args_len) as u64 + park_len;

    let dumped: Vec<_> = p.vmas.iter().map(|v| (v.start, v.end)).collect();
    let start = map_hole(&dumped, len, 0, "the bootstrap area")?;
    let park = start + (blob_len + STACK + frames_len + args_len) as u64;
    let vd = vdso::plan(p, &runtime, &kd.vdso_symbols, park)?;
    let mut area = Bootstrap {
        lazy: LazyPart::default(),
        pieces: vec![],
        vmas: vec![],
        start,
        len,
        // A proxied vDSO keeps running from the park, so it stays.
        unmap_len: if vd.proxy { park - start } else { len },
        vdso: vd.summary.clone(),
        entry: start + EMBEDDED.entry,
        stack_top: start + (blob_len + STACK) as u64,
        args: start + (blob_len + STACK + frames_len) as u64,
    };
    // SAFETY: `start..start + len` is our fresh writable mapping.
    let mem = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len as usize) };

    mem[..EMBEDDED.image.len()].copy_from_slice(EMBEDDED.image);
    revenant_linker::relocate_words(EMBEDDED.word_size, EMBEDDED.relocs, &mut mem[..blob_len], start);

    // One zone per thread: its stack (unused by the first thread, which
    // runs on the blob's stack), then its frame.
    let zones_at = start + (blob_len + STACK) as u64;
    let mut sigframes = vec![];
    for (i, t) in p.threads.iter().enumerate() {
        let stack_top = zones_at + (i * ZONE) as u64 + THREAD_STACK;
        let f = frame::build(t, stack_top)?;
        let off = (stack_top - start) as usize;
        mem[off..off + f.bytes.len()].copy_from_slice(&f.bytes);
        sigframes.push((f.sp, stack_top));
        let zone = stack_top - THREAD_STACK;
        area.pieces.push((format!("thread {} stack", t.tid), zone, stack_top));
        area.pieces.push((format!("thread {} signal frame (sp {:#x})", t.tid, f.sp), stack_top, zone + ZONE as u64));
    }
    let blob_end = start + blob_len as u64;
    area.pieces.splice(
        0..0,
        [
            ("blob code".to_string(), start, start + EMBEDDED.data_start),
            ("blob data".to_string(), start + EMBEDDED.data_start, blob_end),
            ("blob stack".to_string(), blob_end, blob_end + STACK as u64),
        ],
    );
    area.pieces.push(("argument block".into(), area.args, park));
    if park_len > 0 {
        area.pieces.push(("runtime vDSO park".into(), park, park + park_len));
    }

    let place = Placement { start, len, task_size, trap, mm_map: kd.mm_map, fill_helper_tid, premap, lazy, log };
    let (args, lazy_part, vmas) = block(p, fds, &place, &sigframes, &vd, creds)?;
    area.lazy = lazy_part;
    area.vmas = vmas;
    let off = (area.args - start) as usize;
    mem[off..off + args.as_bytes().len()].copy_from_slice(args.as_bytes());

    let text = EMBEDDED.data_start as usize;
    // SAFETY: only the blob's code part of our own mapping changes.
    unsafe {
        revenant_arch::sys::mprotect(start as usize, text, g::PROT_READ | g::PROT_EXEC)
            .map_err(|e| anyhow::anyhow!("protecting the blob: errno {}", e.raw()))?;
        revenant_arch::flush_icache(start as usize, start as usize + blob_len)
            .map_err(|e| anyhow::anyhow!("flushing the blob: errno {}", e.raw()))?;
    }
    Ok(area)
}

/// Maps `len` bytes read+write (with `MAP_*` `flags` added) for `what`
/// where neither this process nor the dumped ones have anything. Another
/// thread may map memory between reading our maps and mapping the hole;
/// `MAP_FIXED_NOREPLACE` notices, and we look again.
pub(super) fn map_hole(dumped: &[(u64, u64)], len: u64, flags: u32, what: &str) -> Result<u64> {
    let prot = g::PROT_READ | g::PROT_WRITE;
    let flags = flags | g::MAP_PRIVATE | g::MAP_ANONYMOUS | g::MAP_FIXED_NOREPLACE;
    let min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(65536)
        // ARM refuses maps below its first user address (two pages) even
        // where mmap_min_addr allows them: no hole this low is wanted.
        .max(65536);
    for _ in 0..16 {
        let maps = crate::maps::own_maps()?;
        let task_size = layout::task_size(&maps)?;
        let own: Vec<_> = maps.iter().map(|m| (m.start, m.end)).collect();
        let start = layout::find_hole(&own, dumped, len, min, task_size)
            .with_context(|| format!("no address range is free in both this process and the dumped ones for {what}"))?;
        // SAFETY: a new anonymous mapping; MAP_FIXED_NOREPLACE replaces nothing.
        match unsafe { revenant_arch::mmap(start as usize, len as usize, prot, flags, -1, 0) } {
            Ok(got) if got as u64 == start => return Ok(start),
            Ok(got) => {
                // SAFETY: an old kernel took the hint loosely; the mapping is ours.
                let _ = unsafe { revenant_arch::sys::munmap(got, len as usize) };
            }
            Err(e) if e == revenant_arch::Errno::EEXIST => {}
            Err(e) => bail!("mapping {len} bytes for {what} at {start:#x}: errno {}", e.raw()),
        }
    }
    bail!("the hole for {what} kept being taken by other threads of this process")
}

struct Placement<'a> {
    start: u64,
    len: u64,
    task_size: u64,
    /// Whether the blob traps before `rt_sigreturn` for a tracing host.
    trap: bool,
    /// Whether `PR_SET_MM_MAP` works here.
    mm_map: bool,
    fill_helper_tid: u32,
    premap: Premapped<'a>,
    /// Whether private anonymous areas go to the page server.
    lazy: bool,
    /// Whether the blob logs: not when it is left to a debugger, as nobody
    /// reads the pipe after us and a write would raise SIGPIPE.
    log: bool,
}

impl<'a> Placement<'a> {
    fn dummy(trap: bool, premap: Premapped<'a>, lazy: bool, log: bool) -> Self {
        Placement { start: 0, len: 0, task_size: 0, trap, mm_map: true, fill_helper_tid: 0, premap, lazy, log }
    }
}

/// Whether the page server can fill `v`: private anonymous writable
/// memory the blob maps itself (the heap, stacks, anonymous maps), where
/// nearly all of a program's memory is. Memory filled before the tree
/// forks (shared copy-on-write with children), locked or huge pages, and
/// areas the restore patches are filled as usual.
fn lazy_ok(v: &super::plan::VmaPlan, patches: &[revenant_blob_abi::Patch]) -> bool {
    let bad = g::MAP_SHARED | g::MAP_LOCKED | g::MAP_HUGETLB | g::MAP_POPULATE;
    matches!(v.backing, Backing::Anon)
        && v.flags & g::MAP_PRIVATE != 0
        && v.flags & bad == 0
        && v.prot & g::PROT_WRITE != 0
        && !patches.iter().any(|x| x.at < v.end && x.at + x.len as u64 > v.start)
}

/// `runs` cut where `areas` (sorted, disjoint) begin and end: the parts
/// outside every area, and those inside one. A run may cross areas (the
/// pagemap merges neighbours in memory and in the pages image), so whole
/// runs are never kept or dropped for touching an area.
fn split_runs(runs: &[PageRun], areas: &[(u64, u64)]) -> (Vec<PageRun>, Vec<PageRun>) {
    let (mut outside, mut inside) = (vec![], vec![]);
    for r in runs {
        let end = r.addr + r.len;
        let mut at = r.addr;
        while at < end {
            let i = areas.partition_point(|&(_, e)| e <= at);
            let (within, upto) = match areas.get(i) {
                Some(&(s, e)) if s <= at => (true, e.min(end)),
                Some(&(s, _)) => (false, s.min(end)),
                None => (false, end),
            };
            let piece = PageRun { addr: at, len: upto - at, file_offset: r.file_offset + (at - r.addr), ..*r };
            if within {
                inside.push(piece)
            } else {
                outside.push(piece)
            }
            at = upto;
        }
    }
    (outside, inside)
}

/// The argument block for the blob.
fn block(
    p: &ProcessPlan,
    fds: &ServiceFds,
    place: &Placement<'_>,
    sigframes: &[(u64, u64)],
    vd: &VdsoPlan,
    creds: &CredsPlan,
) -> Result<(crate::blob::ArgBlock, LazyPart, Vec<Vma>)> {
    let skip = |v: &super::plan::VmaPlan| match v.backing {
        Backing::Vsyscall => true,
        Backing::Vdso | Backing::Vvar => !vd.proxy,
        _ => false,
    };
    let mut b = BlockBuilder::new();
    let slot = |i: usize| place.premap.slots.get(i).copied().flatten();
    let vmas: Vec<Vma> = p
        .vmas
        .iter()
        .zip(&fds.vma)
        .enumerate()
        .map(|(i, (v, &fd))| {
            let skip = skip(v);
            let fill = p.page_runs.iter().any(|r| r.addr < v.end && r.addr + r.len > v.start);
            let mut vma = Vma {
                start: v.start,
                end: v.end,
                pgoff: v.pgoff,
                madv: v.madv,
                prot: v.prot,
                flags: v.flags,
                fd,
                how: 0,
                attach_len: 0,
                from: 0,
            };
            if let Some(s) = slot(i) {
                // Filled (read+write) in the slot; its final protection
                // comes after the pages are settled.
                (vma.how, vma.from) = (VMA_PREMAPPED | VMA_FILL, s.at);
                return vma;
            }
            match v.backing {
                Backing::SysvShm { id, attach: Some(a) } => {
                    let rdonly = if a.read_only { revenant_arch::consts::SHM_RDONLY } else { 0 };
                    let exec = if v.prot & g::PROT_EXEC != 0 { revenant_arch::consts::SHM_EXEC } else { 0 };
                    (vma.fd, vma.how, vma.flags, vma.attach_len) = (id, VMA_SHM, rdonly | exec, a.len);
                }
                Backing::SysvShm { id, attach: None } => (vma.fd, vma.how) = (id, VMA_REPROTECT),
                _ if skip => vma.how = VMA_SKIP,
                _ if fill && place.lazy && lazy_ok(v, &vd.patches) => vma.how = VMA_LAZY,
                _ if fill => vma.how = VMA_FILL,
                _ => {}
            }
            vma
        })
        .collect();
    let skipped: Vec<(u64, u64)> = p.vmas.iter().filter(|v| skip(v)).map(|v| (v.start, v.end)).collect();
    let slots: Vec<Option<Slot>> = (0..p.vmas.len()).map(slot).collect();
    let (plain, compare, zero) = super::cow::split(&p.vmas, &p.page_runs, &slots);
    let lazy_areas: Vec<(u64, u64)> = vmas.iter().filter(|v| v.how & VMA_LAZY != 0).map(|v| (v.start, v.end)).collect();
    // Pages of areas something else provides (the vDSO) are not read.
    let (plain, _provided) = split_runs(&plain, &skipped);
    let (plain, lazy_pages) = split_runs(&plain, &lazy_areas);
    let lazy_pages = lazy_pages
        .iter()
        .map(|r| Range { start: r.addr, end: r.addr + r.len, offset: r.file_offset, file: r.file })
        .collect();
    let lazy = LazyPart { pages: lazy_pages, areas: lazy_areas };
    let mut iovs = vec![];
    let reads = page_reads(&plain, &fds.pages, &mut iovs);
    let compare_reads = page_reads(&compare, &fds.pages, &mut iovs);
    let zero: Vec<Iovec> = zero.into_iter().map(|(base, len)| Iovec { base, len }).collect();
    let sigactions: Vec<SigAction> = p.sigactions.clone();
    let auxv: Vec<u8> = p
        .auxv
        .iter()
        .flat_map(|w| {
            let b = w.to_le_bytes();
            b[..size_of::<usize>()].to_vec()
        })
        .collect();
    let threads: Vec<Thread> = p
        .threads
        .iter()
        .enumerate()
        .map(|(i, t)| Thread {
            tid: t.tid as u32,
            rseq_len: t.rseq.map(|r| r.len).unwrap_or(0),
            // A page that is never mapped, when a test asks for a fault.
            sigframe: if i == 0 && crate::fault::bad_frame() {
                0x10
            } else {
                sigframes.get(i).map(|s| s.0).unwrap_or(0)
            },
            tls: tls_of(&t.regs),
            gs_base: gs_of(&t.regs),
            clear_tid_addr: t.clear_tid_addr,
            robust_list: t.robust_list,
            robust_list_len: t.robust_list_len,
            rseq_ptr: t.rseq.map(|r| r.ptr).unwrap_or(0),
            rseq_sig: t.rseq.map(|r| r.sig).unwrap_or(0),
            pdeath_sig: t.pdeath_sig,
            stack: sigframes.get(i).map(|s| s.1).unwrap_or(0),
        })
        .collect();
    let (seccomp, seccomp_progs) = seccomp_steps(p);
    let r = Restore {
        bootstrap_start: place.start,
        bootstrap_len: place.len,
        task_size: place.task_size,
        exe_fd: fds.exe,
        flags: if place.trap { RESTORE_TRAP } else { 0 }
            | if place.mm_map { 0 } else { RESTORE_NO_MM_MAP }
            | if creds.groups.is_some() { RESTORE_SET_GROUPS } else { 0 }
            | match p.knobs.dumpable {
                Some(false) => RESTORE_NOT_DUMPABLE,
                Some(true) => RESTORE_DUMPABLE,
                None => 0,
            },
        fill_helper_tid: place.fill_helper_tid,
        lazy_fd: if lazy.areas.is_empty() { -1 } else { fds.lazy },
        vmas: b.push(&vmas),
        page_reads: b.push(&reads),
        compare_reads: b.push(&compare_reads),
        zero: b.push(&zero),
        premap_start: place.premap.region.0,
        premap_len: place.premap.region.1,
        iovs: b.push(&iovs),
        park: b.push(&vd.park),
        unpark: b.push(&vd.unpark),
        sigactions: b.push(&sigactions),
        close_fds: b.push(&fds.all),
        auxv: b.push(&auxv),
        threads: b.push(&threads),
        rlimits: b.push(&p.rlimits),
        itimers: b.push(&p.itimers),
        posix_timers: b.push(&p.posix_timers),
        seccomp: b.push(&seccomp),
        seccomp_progs: b.push(&seccomp_progs),
        signals: b.push(&p.signals),
        patches: b.push(&vd.patches),
        creds: b.push(&creds.creds),
        groups: b.push(creds.groups.as_deref().unwrap_or(&[])),
        mm: p.mm,
        comm: p.comm,
        guards: b.push(&p.guards.iter().map(|&(base, end)| Iovec { base, len: end - base }).collect::<Vec<_>>()),
    };
    let restore = b.push(&[r]);
    let block = b.finish(Header {
        command: Command::Restore as u32,
        log_level: LogLevel::Info as u32,
        log_fd: if place.log { fds.log } else { -1 },
        flags: 0,
        restore,
        status_fd: -1,
        ..Default::default()
    });
    Ok((block, lazy, vmas))
}

/// Every thread's seccomp steps, and the programs they point into. The
/// filters all threads start with are installed once, for all of them.
fn seccomp_steps(p: &ProcessPlan) -> (Vec<Seccomp>, Vec<u8>) {
    let (mut steps, mut progs) = (vec![], vec![]);
    let first = p.threads.first().map_or(&[][..], |t| &t.seccomp.filters[..]);
    let shared = p
        .threads
        .iter()
        .map(|t| t.seccomp.filters.iter().zip(first).take_while(|(a, b)| a == b).count())
        .min()
        .unwrap_or(0);
    let mut push = |thread: u32, (flags, prog): &(u32, Vec<u8>)| {
        let (prog_offset, prog_len) = (progs.len() as u32, prog.len() as u32);
        steps.push(Seccomp { thread, flags: *flags, prog_offset, prog_len });
        progs.extend_from_slice(prog);
    };
    for f in &first[..shared] {
        push(SECCOMP_ALL_THREADS, f);
    }
    for (i, t) in p.threads.iter().enumerate() {
        for f in &t.seccomp.filters[shared..] {
            push(i as u32, f);
        }
        if t.seccomp.strict {
            push(i as u32, &(SECCOMP_STRICT, vec![]));
        }
    }
    (steps, progs)
}

/// Page runs as `preadv` requests: runs that follow each other in one
/// pages image become one request of many iovecs, added to `iovs`; each
/// reads from its image's fd in `fds`.
fn page_reads(runs: &[PageRun], fds: &[i32], iovs: &mut Vec<Iovec>) -> Vec<PageRead> {
    let mut reads: Vec<PageRead> = vec![];
    let mut next = (u32::MAX, u64::MAX);
    for r in runs {
        if let (true, Some(last)) = ((r.file, r.file_offset) == next, reads.last_mut()) {
            last.iov_count += 1;
        } else {
            let fd = fds[r.file as usize];
            reads.push(PageRead { offset: r.file_offset, first_iov: iovs.len() as u32, iov_count: 1, fd, reserved: 0 });
        }
        iovs.push(Iovec { base: r.addr, len: r.len });
        next = (r.file, r.file_offset + r.len);
    }
    reads
}

fn tls_of(r: &crate::regs::Regs) -> u64 {
    match r {
        crate::regs::Regs::X86_64(x) => x.fs_base,
        crate::regs::Regs::Arm(a) => a.tls as u64,
    }
}

fn gs_of(r: &crate::regs::Regs) -> u64 {
    match r {
        crate::regs::Regs::X86_64(x) => x.gs_base,
        crate::regs::Regs::Arm(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, len: u64, file_offset: u64, file: u32) -> PageRun {
        PageRun { addr, len, file_offset, file }
    }

    #[test]
    fn a_run_crossing_an_area_is_cut_at_its_edges_with_its_offsets() {
        let p = 0x1000;
        // The vDSO's two pages and the next area's page, one run in the
        // pagemap: only the vDSO's pages are left out.
        let runs = [run(0x10000, 3 * p, 0x4000, 1)];
        let (outside, inside) = split_runs(&runs, &[(0x10000, 0x12000)]);
        assert_eq!(outside, [run(0x12000, p, 0x6000, 1)]);
        assert_eq!(inside, [run(0x10000, 2 * p, 0x4000, 1)]);
        let (outside, inside) = split_runs(&runs, &[(0x11000, 0x12000), (0x20000, 0x21000)]);
        assert_eq!(outside, [run(0x10000, p, 0x4000, 1), run(0x12000, p, 0x6000, 1)]);
        assert_eq!(inside, [run(0x11000, p, 0x5000, 1)]);
    }

    /// Runs that follow each other in one image are one read; the next
    /// image's run is a read of its own, on its own fd, even where its
    /// offset happens to follow on.
    #[test]
    fn reads_join_runs_of_one_image_only() {
        let p = 0x1000;
        let runs = [run(0x10000, p, 0, 0), run(0x20000, p, p, 0), run(0x30000, p, 2 * p, 1), run(0x40000, p, 0, 0)];
        let mut iovs = vec![];
        let reads = page_reads(&runs, &[7, 9], &mut iovs);
        let got: Vec<(u64, u32, u32, i32)> = reads.iter().map(|r| (r.offset, r.first_iov, r.iov_count, r.fd)).collect();
        assert_eq!(got, [(0, 0, 2, 7), (2 * p, 2, 1, 9), (0, 3, 1, 7)]);
        assert_eq!(iovs.len(), 4);
    }
}
