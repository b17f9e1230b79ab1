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

/// Bytes copied per round: large enough that syscalls do not dominate,
/// small enough not to double the dump's memory use for big processes.
const CHUNK: usize = 16 << 20;
/// The kernel's IOV_MAX.
const MAX_IOVS: usize = 1024;

/// Writes the contents of `runs`, in order, to `out`. Returns bytes written.
///
/// Reading and writing overlap: a writer thread takes filled buffers while
/// the next ones are read, and hands them back for reuse, so the copy out
/// of the task and the copy into the page cache run side by side.
pub fn copy_pages<W: Write + Send>(pid: i32, runs: &[Run], out: &mut W) -> Result<u64> {
    use std::sync::mpsc::sync_channel;
    let total: u64 = runs.iter().map(|r| r.nr_pages * PAGE).sum();
    let size = (total as usize).min(CHUNK);
    // Filled buffers go to the writer; empty ones come back.
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(1);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(2);
    empty_tx.send(vec![0u8; size]).expect("fresh channel");
    if total as usize > size {
        empty_tx.send(vec![0u8; size]).expect("fresh channel");
    }
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<u64> {
            let mut written = 0u64;
            for (buf, len) in full_rx {
                out.write_all(&buf[..len]).context("writing the pages image")?;
                written += len as u64;
                // The reader may have stopped early; then nobody needs it.
                let _ = empty_tx.send(buf);
            }
            Ok(written)
        });
        let read = (|| -> Result<()> {
            let mut mem: Option<File> = None;
            // Pieces of runs: (address, length), each at most CHUNK.
            let mut pieces = runs.iter().flat_map(|r| split(r.vaddr, r.nr_pages * PAGE)).peekable();
            while pieces.peek().is_some() {
                let Ok(mut buf) = empty_rx.recv() else { break }; // the writer failed
                let mut batch: Vec<RemoteIoVec> = Vec::new();
                let mut len = 0usize;
                while let Some(&(a, l)) = pieces.peek() {
                    if batch.len() == MAX_IOVS || len + l > buf.len() {
                        break;
                    }
                    batch.push(RemoteIoVec { base: a as usize, len: l });
                    len += l;
                    pieces.next();
                }
                read_batch(pid, &batch, &mut buf[..len], &mut mem)?;
                if full_tx.send((buf, len)).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let written = writer.join().map_err(|_| anyhow::anyhow!("the pages writer thread panicked"))??;
        read?;
        if written != total {
            bail!("process {pid}: wrote {written} of {total} bytes of pages");
        }
        Ok(written)
    })
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
        let mut out = Vec::new();
        let me = std::process::id() as i32;
        assert_eq!(copy_pages(me, &runs, &mut out).unwrap(), 3 * PAGE);
        let pages: Vec<u8> = out.chunks(PAGE as usize).map(|c| c[0]).collect();
        assert_eq!(pages, [0x10, 0x12, 0x13]);
        assert!(out[PAGE as usize..2 * PAGE as usize].iter().all(|&b| b == 0x12));
        // SAFETY: unmapping what we mapped above.
        unsafe { munmap(p, len.get()).unwrap() };
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
