//! Copying page contents out of a stopped process into the pages image.
//!
//! `process_vm_readv` moves many runs per call straight into a large
//! buffer. It honours page protections, so pages it cannot read (a
//! `PROT_NONE` area that still holds data, an execute-only one) come from
//! `/proc/PID/mem`, which reads through protections like a debugger.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::maps::PAGE;
use super::pagemap::{MAX_ENTRY_PAGES, Run};

/// Bytes one worker copies per round: large enough that syscalls do not
/// dominate, small enough that the buffer is still in the CPU's cache when
/// it is written out.
const CHUNK: usize = 4 << 20;
/// The kernel's IOV_MAX.
const MAX_IOVS: usize = 1024;

/// One round of work: remote pieces read into a buffer, then written at
/// `offset` of the pages image.
struct Batch {
    iovs: Vec<RemoteIoVec>,
    offset: u64,
    len: usize,
}

/// Writes the contents of `runs`, in order, to the start of `out`, a new
/// empty file. Returns bytes written.
///
/// The file is allocated first: writing into allocated blocks skips the
/// file system's per-page block reservation, which otherwise costs more
/// than the copy itself. Then each of [`workers`] takes batches in turn,
/// reads each with `process_vm_readv` into its own buffer and writes it
/// at its offset, so reading and writing overlap without a hand-off.
pub fn copy_pages(pid: i32, runs: &[Run], out: &File, buffers: &mut Buffers) -> Result<u64> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let total: u64 = runs.iter().map(|r| r.nr_pages * PAGE).sum();
    if total == 0 {
        return Ok(0);
    }
    preallocate(out, total)?;
    let batches = batches(runs);
    let workers = workers().min(batches.len());
    let next = AtomicUsize::new(0);
    let bufs = std::sync::Mutex::new(std::mem::take(&mut buffers.0));
    let failed = AtomicBool::new(false);
    let work = || -> Result<u64> {
        let mut buf = bufs.lock().expect("buffers").pop().unwrap_or_default();
        let mut mem: Option<File> = None;
        let mut written = 0u64;
        while !failed.load(Ordering::Relaxed) {
            let Some(b) = batches.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            if buf.len() < b.len {
                buf.resize(b.len, 0);
            }
            let r = read_batch(pid, &b.iovs, &mut buf[..b.len], &mut mem)
                .and_then(|()| out.write_all_at(&buf[..b.len], b.offset).context("writing the pages image"));
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r?;
            written += b.len as u64;
        }
        bufs.lock().expect("buffers").push(buf);
        Ok(written)
    };
    let written = std::thread::scope(|s| -> Result<u64> {
        let others: Vec<_> = (1..workers).map(|_| s.spawn(work)).collect();
        let mut written = work()?;
        for h in others {
            written += h.join().map_err(|_| anyhow::anyhow!("a pages copying thread panicked"))??;
        }
        Ok(written)
    })?;
    buffers.0 = bufs.into_inner().expect("buffers");
    if written != total {
        bail!("process {pid}: wrote {written} of {total} bytes of pages");
    }
    Ok(written)
}

/// Copying threads: one per CPU, at most two (the page cache and memory
/// bandwidth give nothing beyond).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 2)
}

/// The copy's buffers, made and touched before the tree is frozen:
/// faulting in fresh memory costs about 3 µs a page here, which a frozen
/// tree should not wait for (a buffer still too small grows when needed).
#[derive(Default)]
pub struct Buffers(Vec<Vec<u8>>);

impl Buffers {
    /// Buffers to copy about `bytes` with: one per worker, each at most a
    /// batch.
    pub fn new(bytes: u64) -> Buffers {
        let size = (bytes as usize).next_multiple_of(PAGE as usize).clamp(PAGE as usize, CHUNK);
        let workers = if size < CHUNK { 1 } else { workers() };
        Buffers(
            (0..workers)
                .map(|_| {
                    let mut b = vec![0u8; size];
                    for i in (0..size).step_by(PAGE as usize) {
                        // SAFETY: `i` is inside `b`; a volatile store so the
                        // page is really written (faulted in), not elided.
                        unsafe { b.as_mut_ptr().add(i).write_volatile(0) };
                    }
                    b
                })
                .collect(),
        )
    }
}

/// Gives `out` its `len` bytes of blocks up front. A file system without
/// `fallocate` just goes on; one without room fails here, before any
/// copying.
fn preallocate(out: &File, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    // fallocate64: a 32-bit off_t could not say more than 2 GiB.
    // SAFETY: a plain system call on a descriptor we own.
    if unsafe { nix::libc::fallocate64(out.as_raw_fd(), 0, 0, len as nix::libc::off64_t) } == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::EOPNOTSUPP => Ok(()),
        e => Err(e).with_context(|| format!("allocating {len} bytes for the pages image")),
    }
}

/// `runs` cut into batches of at most `CHUNK` bytes and `MAX_IOVS` pieces,
/// each with its place in the image.
fn batches(runs: &[Run]) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    let mut offset = 0u64;
    for (a, l) in runs.iter().flat_map(|r| split(r.vaddr, r.nr_pages * PAGE)) {
        match out.last_mut() {
            Some(b) if b.iovs.len() < MAX_IOVS && b.len + l <= CHUNK => {
                b.iovs.push(RemoteIoVec { base: a as usize, len: l });
                b.len += l;
            }
            _ => out.push(Batch { iovs: vec![RemoteIoVec { base: a as usize, len: l }], offset, len: l }),
        }
        offset += l as u64;
    }
    out
}

/// Copies `runs` out of a process that runs meanwhile (a pre-dump), in
/// order, to `out`: a page that can no longer be read (its area unmapped
/// since) is left out. Returns the bytes written and the runs actually
/// copied, which the pagemap then describes.
///
/// Leaving a page out is safe: its area is gone, and whatever is mapped
/// there later is new to the tracking, so the next link dumps it.
pub fn copy_running<W: Write>(pid: i32, runs: &[Run], out: &mut W) -> Result<(u64, Vec<Run>)> {
    let mut buf = vec![0u8; runs.iter().map(|r| r.nr_pages).max().unwrap_or(0) as usize * PAGE as usize];
    let mut mem: Option<File> = None;
    let mut copied: Vec<Run> = Vec::with_capacity(runs.len());
    let mut written = 0u64;
    for r in runs {
        let len = (r.nr_pages * PAGE) as usize;
        let mut local = [std::io::IoSliceMut::new(&mut buf[..len])];
        let remote = [RemoteIoVec { base: r.vaddr as usize, len }];
        let got = match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
            Ok(n) => n,
            Err(nix::errno::Errno::ESRCH) => bail!("process {pid} exited while its pages were copied"),
            Err(_) => 0,
        };
        // Whole pages read at once, then the rest one by one, through
        // protections (an area made PROT_NONE since).
        let mut ok = vec![false; r.nr_pages as usize];
        ok[..got / PAGE as usize].fill(true);
        for (i, page_ok) in ok.iter_mut().enumerate().skip(got / PAGE as usize) {
            let at = r.vaddr + i as u64 * PAGE;
            let f = match &mem {
                Some(f) => f,
                None => mem.insert(
                    File::open(format!("/proc/{pid}/mem")).with_context(|| format!("opening /proc/{pid}/mem"))?,
                ),
            };
            let page = &mut buf[i * PAGE as usize..(i + 1) * PAGE as usize];
            *page_ok = f.read_exact_at(page, at).is_ok();
        }
        for (i, page_ok) in ok.iter().enumerate() {
            if !page_ok {
                continue;
            }
            out.write_all(&buf[i * PAGE as usize..(i + 1) * PAGE as usize]).context("writing the pages image")?;
            written += PAGE;
            let addr = r.vaddr + i as u64 * PAGE;
            match copied.last_mut() {
                Some(c)
                    if c.vaddr + c.nr_pages * PAGE == addr && c.flags == r.flags && c.nr_pages < MAX_ENTRY_PAGES =>
                {
                    c.nr_pages += 1
                }
                _ => copied.push(Run { vaddr: addr, nr_pages: 1, flags: r.flags }),
            }
        }
    }
    Ok((written, copied))
}

fn split(addr: u64, len: u64) -> impl Iterator<Item = (u64, usize)> {
    (0..len.div_ceil(CHUNK as u64)).map(move |i| {
        let off = i * CHUNK as u64;
        (addr + off, (len - off).min(CHUNK as u64) as usize)
    })
}

fn read_batch(pid: i32, batch: &[RemoteIoVec], buf: &mut [u8], mem: &mut Option<File>) -> Result<()> {
    let mut done = 0usize;
    let mut first = 0usize;
    let mut skip = 0usize; // bytes of batch[first] already read
    while first < batch.len() {
        let rest: Vec<RemoteIoVec> = batch[first..]
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 0 { RemoteIoVec { base: v.base + skip, len: v.len - skip } } else { *v })
            .collect();
        let mut local = [std::io::IoSliceMut::new(&mut buf[done..])];
        let got = process_vm_readv(Pid::from_raw(pid), &mut local, &rest).unwrap_or(0);
        advance(batch, &mut first, &mut skip, &mut done, got);
        if first >= batch.len() {
            break;
        }
        if got == 0 {
            // The page at the cursor cannot be read this way.
            let at = batch[first].base + skip;
            let f = match mem {
                Some(f) => f,
                None => mem.insert(
                    File::open(format!("/proc/{pid}/mem")).with_context(|| format!("opening /proc/{pid}/mem"))?,
                ),
            };
            let page = &mut buf[done..done + PAGE as usize];
            f.read_exact_at(page, at as u64)
                .with_context(|| format!("reading page {at:#x} of process {pid} through /proc/{pid}/mem"))?;
            advance(batch, &mut first, &mut skip, &mut done, PAGE as usize);
        }
    }
    if done != buf.len() {
        bail!("process {pid}: read {done} of {} bytes of memory", buf.len());
    }
    Ok(())
}

fn advance(batch: &[RemoteIoVec], first: &mut usize, skip: &mut usize, done: &mut usize, mut n: usize) {
    *done += n;
    while n > 0 && *first < batch.len() {
        let left = batch[*first].len - *skip;
        if n >= left {
            n -= left;
            *first += 1;
            *skip = 0;
        } else {
            *skip += n;
            n = 0;
        }
    }
}

/// Reads `len` bytes at `addr` of task `pid` (registers' targets, small
/// structures).
pub fn read_bytes(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut local = [std::io::IoSliceMut::new(&mut buf)];
    let got = process_vm_readv(Pid::from_raw(pid), &mut local, &[RemoteIoVec { base: addr as usize, len }]);
    if got.ok() != Some(len) {
        let f = File::open(format!("/proc/{pid}/mem")).with_context(|| format!("opening /proc/{pid}/mem"))?;
        f.read_exact_at(&mut buf, addr).with_context(|| format!("reading {len} bytes at {addr:#x} of task {pid}"))?;
    }
    Ok(buf)
}

/// Writes `data` at `addr` of task `pid`, through protections.
pub fn write_bytes(pid: i32, addr: u64, data: &[u8]) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem for writing"))?;
    f.write_all_at(data, addr).with_context(|| format!("writing {} bytes at {addr:#x} of task {pid}", data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, mprotect, munmap};

    #[test]
    fn reads_runs_including_protected_pages() {
        if !crate::dump::real_kernel() {
            return;
        }
        let len = std::num::NonZeroUsize::new(4 * PAGE as usize).unwrap();
        // SAFETY: fresh private mapping used only through raw pointers here.
        let p = unsafe {
            mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE).unwrap()
        };
        let base = p.as_ptr() as *mut u8;
        for i in 0..4 {
            // SAFETY: inside the 4-page mapping.
            unsafe { base.add(i * PAGE as usize).write_bytes(0x10 + i as u8, PAGE as usize) };
        }
        // SAFETY: the third page is ours; nothing in Rust refers to it.
        unsafe { mprotect(p.byte_add(2 * PAGE as usize), PAGE as usize, ProtFlags::PROT_NONE).unwrap() };
        let a = base as u64;
        let runs = [
            Run { vaddr: a, nr_pages: 1, flags: 0 },
            Run { vaddr: a + PAGE * 2, nr_pages: 2, flags: 0 }, // starts in the PROT_NONE page
        ];
        let file = File::from(nix::sys::memfd::memfd_create(c"pages", nix::sys::memfd::MFdFlags::empty()).unwrap());
        let me = std::process::id() as i32;
        assert_eq!(copy_pages(me, &runs, &file, &mut Buffers::default()).unwrap(), 3 * PAGE);
        let mut out = vec![0u8; 3 * PAGE as usize + 1];
        assert_eq!(file.read_at(&mut out, 0).unwrap(), 3 * PAGE as usize, "the image is as long as its pages");
        out.pop();
        let pages: Vec<u8> = out.chunks(PAGE as usize).map(|c| c[0]).collect();
        assert_eq!(pages, [0x10, 0x12, 0x13]);
        assert!(out[PAGE as usize..2 * PAGE as usize].iter().all(|&b| b == 0x12));
        // SAFETY: unmapping what we mapped above.
        unsafe { munmap(p, len.get()).unwrap() };
    }

    /// Several batches go to two workers at once: each lands at its own
    /// place, in the runs' order.
    #[test]
    fn batches_land_in_run_order() {
        if !crate::dump::real_kernel() {
            return;
        }
        let pages = 3000usize; // about 12 MiB: three batches and more
        let mut mem = vec![0u8; pages * PAGE as usize + PAGE as usize];
        let base = (mem.as_mut_ptr() as u64).next_multiple_of(PAGE);
        let off = (base - mem.as_ptr() as u64) as usize;
        for (i, page) in mem[off..].chunks_exact_mut(PAGE as usize).enumerate() {
            page.fill(0);
            page[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        let run = |first: u64, n: u64| Run { vaddr: base + first * PAGE, nr_pages: n, flags: 0 };
        let runs = [run(2000, 900), run(0, 1500), run(2999, 1), run(1600, 5)];
        let file = File::from(nix::sys::memfd::memfd_create(c"pages", nix::sys::memfd::MFdFlags::empty()).unwrap());
        let total: u64 = runs.iter().map(|r| r.nr_pages).sum();
        let mut buffers = Buffers::new(PAGE);
        assert_eq!(copy_pages(std::process::id() as i32, &runs, &file, &mut buffers).unwrap(), total * PAGE);
        assert!(buffers.0.iter().any(|b| b.len() == CHUNK), "a buffer too small grew, and is kept");
        let mut out = vec![0u8; (total * PAGE) as usize];
        file.read_exact_at(&mut out, 0).unwrap();
        let seen: Vec<u64> =
            out.chunks_exact(PAGE as usize).map(|p| u64::from_le_bytes(p[..8].try_into().unwrap())).collect();
        let want: Vec<u64> =
            runs.iter().flat_map(|r| (0..r.nr_pages).map(move |i| (r.vaddr - base) / PAGE + i)).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_running_copy_leaves_out_pages_unmapped_since() {
        if !crate::dump::real_kernel() {
            return;
        }
        let len = std::num::NonZeroUsize::new(3 * PAGE as usize).unwrap();
        // SAFETY: fresh private mapping used only through raw pointers here.
        let p = unsafe {
            mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE).unwrap()
        };
        let base = p.as_ptr() as *mut u8;
        for i in 0..3 {
            // SAFETY: inside the 3-page mapping.
            unsafe { base.add(i * PAGE as usize).write_bytes(0x20 + i as u8, PAGE as usize) };
        }
        // SAFETY: the middle page is ours; nothing in Rust refers to it.
        unsafe { munmap(p.byte_add(PAGE as usize), PAGE as usize).unwrap() };
        let a = base as u64;
        let runs = [Run { vaddr: a, nr_pages: 3, flags: 4 }];
        let mut out = Vec::new();
        let (n, copied) = copy_running(std::process::id() as i32, &runs, &mut out).unwrap();
        assert_eq!(n, 2 * PAGE);
        assert_eq!(
            copied,
            [Run { vaddr: a, nr_pages: 1, flags: 4 }, Run { vaddr: a + 2 * PAGE, nr_pages: 1, flags: 4 }]
        );
        assert_eq!((out[0], out[PAGE as usize]), (0x20, 0x22));
        // SAFETY: unmapping what is left of the mapping above.
        unsafe {
            munmap(p, PAGE as usize).unwrap();
            munmap(p.byte_add(2 * PAGE as usize), PAGE as usize).unwrap();
        }
    }
}
