//! Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, what `fork`
//! children share with their parent) at dump: each object once, however
//! many processes and areas map it, by the inode its areas name (CRIU's
//! `shmid`). Its contents are read through a mapping of our own of the
//! object (`/proc/PID/map_files`), so pages only another process touched
//! are not missed; pages that read as zeros are left out.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use nix::libc;
use revenant_images::messages::{PagemapEntry, PagemapHead, pe};
use revenant_images::{Kind, Writer};

use crate::dump::maps::{PAGE, Vma, status};
use crate::imgdir::ImageDir;
use crate::procfs;

/// One object: its `pages-N.img` and the runs there, (offset, pages).
#[derive(Debug, Clone)]
pub struct Object {
    pub shmid: u64,
    pub pages_id: u32,
    pub runs: Vec<(u64, u64)>,
}

/// Whether `v` is shared anonymous memory (SysV segments are too, to the
/// kernel, but they have their own images).
pub fn is_shared_anon(v: &Vma) -> bool {
    v.is(status::ANON_SHARED) && !v.is(status::SYSVIPC)
}

/// Reads every object the areas of `areas` (pid, area) map, writing its
/// pages image into `dir` with ids from `first_pages_id` on.
pub fn collect<'a>(
    areas: impl Iterator<Item = (i32, &'a Vma)>,
    dir: &ImageDir,
    first_pages_id: u32,
) -> Result<Vec<Object>> {
    let mut first: BTreeMap<u64, (i32, u64, u64)> = BTreeMap::new();
    for (pid, v) in areas.filter(|(_, v)| is_shared_anon(v)) {
        first.entry(v.inode).or_insert((pid, v.start, v.end));
    }
    let mut out = Vec::new();
    for (k, (shmid, (pid, start, end))) in first.into_iter().enumerate() {
        let pages_id = first_pages_id + k as u32;
        let link = procfs::path(pid, &format!("map_files/{start:x}-{end:x}"));
        let runs = read_object(&link, pages_id, dir)
            .with_context(|| format!("shared anonymous memory {shmid} (mapped by process {pid} at {start:#x})"))?;
        out.push(Object { shmid, pages_id, runs });
    }
    Ok(out)
}

/// Reads the contents of every memfd object (by its inode, as CRIU names
/// them), with pages ids from `first_pages_id` on.
pub fn collect_memfds(
    objects: &[crate::files::MemfdObject],
    dir: &ImageDir,
    first_pages_id: u32,
) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (k, o) in objects.iter().enumerate() {
        let pages_id = first_pages_id + k as u32;
        let runs = read_object(&o.source, pages_id, dir).with_context(|| format!("memfd {:?}", o.name))?;
        out.push(Object { shmid: o.ino, pages_id, runs });
    }
    Ok(out)
}

fn read_object(link: &std::path::Path, pages_id: u32, dir: &ImageDir) -> Result<Vec<(u64, u64)>> {
    let f = std::fs::File::open(link).with_context(|| format!("opening {}", link.display()))?;
    // The whole object, which may be larger than any one area of it.
    let size = f.metadata().with_context(|| format!("stat {}", link.display()))?.len();
    let name = format!("pages-{pages_id}.img");
    if size == 0 {
        // An empty object (a memfd not sized yet) has an empty image.
        dir.create(&name).with_context(|| format!("writing {name}"))?;
        return Ok(Vec::new());
    }
    use std::os::fd::AsRawFd;
    let len = size.next_multiple_of(PAGE) as usize;
    // SAFETY: a fresh read-only shared map of the object at an address of
    // the kernel's choosing; unmapped below.
    let at = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    if at == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mapping it to read it");
    }
    // SAFETY: the map above is `len` bytes, readable, until the munmap below.
    let mem = unsafe { std::slice::from_raw_parts(at.cast::<u8>(), len) };
    let runs = dir
        .create(&name)
        .and_then(|w| crate::sysv::dump::write_pages(mem, w))
        .with_context(|| format!("writing {name}"));
    // SAFETY: unmapping the map made above; `mem` is not used after.
    unsafe { libc::munmap(at, len) };
    runs
}

/// A shared memory object's pagemap (SysV segment or shared anonymous
/// memory): runs of (offset, pages) in `pages-<pages_id>.img`.
pub(crate) fn shmem_pagemap(pages_id: u32, runs: &[(u64, u64)]) -> Writer {
    let mut pm = Writer::new(Kind::Pagemap);
    pm.push(&PagemapHead { pages_id, ..Default::default() });
    for &(offset, pages) in runs {
        pm.push(&PagemapEntry { vaddr: offset, flags: Some(pe::PRESENT), nr_pages: Some(pages), ..Default::default() });
    }
    pm
}
