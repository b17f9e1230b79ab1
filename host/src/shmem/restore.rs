//! Shared anonymous memory at restore: each object is made once by the
//! host (a `MAP_SHARED|MAP_ANONYMOUS` map of its own, filled from the
//! images), and every area of the tree that mapped it maps that same
//! object again, through a descriptor of it (`/proc/self/map_files`):
//! what one process writes the others see, as after their `fork`, and
//! `/proc/PID/maps` shows the same `/dev/zero (deleted)` as before.
//! A memfd is made the same way with `memfd_create`, its name, size,
//! owner, mode and seals; the tree's fds on it open it through
//! `/proc/HOST/fd/N` too, each its own description with its position.
//!
//! The objects and their contents are planned from the areas and fds of
//! every process and the `memfd`/`pagemap-shmem` images ([`plan`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::ImageSet;
use revenant_images::messages::{MemfdInodeEntry, pe};

use crate::restore::convert;
use crate::restore::plan::{Backing, PageRun, ProcessPlan};

/// One object: its size (the furthest end any area maps) and contents.
#[derive(Debug, Clone)]
pub struct ObjectPlan {
    pub shmid: u64,
    pub size: u64,
    /// A pages image and its runs (`addr` is the offset in the object);
    /// `None`: all zeros.
    pub pages: Option<(PathBuf, Vec<PageRun>)>,
    /// Made as a memfd rather than shared anonymous memory.
    pub memfd: Option<Memfd>,
}

/// What a memfd has besides its contents.
#[derive(Debug, Clone)]
pub struct Memfd {
    pub name: String,
    /// `F_GET_SEALS` (`F_SEAL_SEAL` alone: it was made without
    /// `MFD_ALLOW_SEALING`).
    pub seals: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Each shared anonymous object the tree maps: as large as its furthest
/// area reaches, with the contents its pagemap gives (zeros without one).
pub fn plan(set: &ImageSet, processes: &[ProcessPlan]) -> Result<Vec<ObjectPlan>> {
    let mut out: Vec<ObjectPlan> = Vec::new();
    for p in processes {
        for v in &p.vmas {
            let Backing::Shmem { shmid } = v.backing else { continue };
            let end = v.pgoff.checked_add(v.end - v.start).filter(|e| *e <= isize::MAX as u64).with_context(|| {
                format!("mm-{}.img: the area at {:#x}: pgoff {:#x} reaches past any object", p.pid, v.start, v.pgoff)
            })?;
            match out.iter_mut().find(|o| o.shmid == shmid) {
                Some(o) => o.size = o.size.max(end),
                None => out.push(ObjectPlan { shmid, size: end, pages: None, memfd: None }),
            }
        }
        for shmid in p.fds.iter().filter_map(|f| f.shmem) {
            if !out.iter().any(|o| o.shmid == shmid) {
                out.push(ObjectPlan { shmid, size: 0, pages: None, memfd: None });
            }
        }
    }
    for o in &mut out {
        // A memfd is as large as it was, and has its name and seals; CRIU's
        // form of shared anonymous memory has its size too.
        let inode = set.memfd_inodes.iter().find(|i| u64::from(i.shmid) == o.shmid);
        if let Some(inode) = inode.filter(|i| anon_in_memfd_form(i)) {
            o.size = o.size.max(inode.size);
        } else if let Some(inode) = inode {
            if o.size > inode.size.next_multiple_of(4096) {
                bail!("memfd.img: memfd {:?}: an area reaches past its size {}", inode.name, inode.size);
            }
            o.size = inode.size;
            o.memfd = Some(Memfd {
                name: inode.name.clone(),
                seals: inode.seals,
                mode: inode.mode.unwrap_or(0o100777),
                uid: inode.uid,
                gid: inode.gid,
            });
        }
        if let Some(pm) = set.anon_shmem.get(&o.shmid) {
            let name = format!("pagemap-shmem-{}.img", o.shmid);
            let entries: Vec<(u64, u64, u32)> =
                pm.entries.iter().map(|e| (e.vaddr, e.pages(), e.flags.unwrap_or(pe::PRESENT))).collect();
            let runs = convert::page_runs(&entries, 4096).with_context(|| name.clone())?;
            if let Some(r) = runs.iter().find(|r| r.addr + r.len > o.size.next_multiple_of(4096)) {
                bail!("{name}: pages at offset {:#x} lie past the object's end {:#x}", r.addr, o.size);
            }
            o.pages = Some((pm.pages.clone(), runs));
        }
    }
    Ok(out)
}

/// Whether memfd object `shmid` is CRIU's form of shared anonymous memory
/// (named `/dev/zero`; its fds were opened through `/proc/PID/map_files`)
/// rather than a memfd: then it is made as such, not as a memfd.
fn anon_in_memfd_form(inode: &MemfdInodeEntry) -> bool {
    inode.name == "/dev/zero"
}

/// The objects a restore made, kept alive until the tree maps them.
pub struct Made {
    objects: Vec<(u64, OwnedFd)>,
}

impl Made {
    /// The plan with each shared anonymous area mapped from its object:
    /// a shared file mapping of `/proc/PID/fd/N` of ours.
    pub fn apply(&self, p: &ProcessPlan) -> Result<ProcessPlan> {
        let mut p = p.clone();
        for v in &mut p.vmas {
            if let Backing::Shmem { shmid } = v.backing {
                let fd = self.objects.iter().find(|(id, _)| *id == shmid).map(|(_, fd)| fd.as_raw_fd());
                let fd = fd.with_context(|| format!("PID {}: shared memory {shmid} was not made", p.pid))?;
                let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
                v.backing = Backing::File { path, open_flags: libc::O_RDWR };
                v.flags &= !(libc::MAP_ANONYMOUS as u32);
            }
        }
        for f in &mut p.fds {
            if let Some(shmid) = f.shmem {
                let fd = self.objects.iter().find(|(id, _)| *id == shmid).map(|(_, fd)| fd.as_raw_fd());
                let fd = fd.with_context(|| format!("PID {}: memfd {shmid} was not made", p.pid))?;
                f.path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
                f.object_fd = Some(fd);
            }
        }
        Ok(p)
    }
}

/// Makes and fills every object.
pub fn make(objects: &[ObjectPlan]) -> Result<Made> {
    let mut made = Made { objects: Vec::new() };
    for o in objects {
        let fd = make_one(o).with_context(|| format!("making shared anonymous memory {}", o.shmid))?;
        made.objects.push((o.shmid, fd));
    }
    Ok(made)
}

fn make_one(o: &ObjectPlan) -> Result<OwnedFd> {
    if let Some(m) = &o.memfd {
        return make_memfd(o, m);
    }
    let len = o.size.next_multiple_of(4096) as usize;
    let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh shared map at an address of the kernel's choosing,
    // unmapped below.
    let at = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    if at == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mapping {len} bytes"));
    }
    let filled = fill(o, at, len);
    let link = format!("/proc/self/map_files/{:x}-{:x}", at as usize, at as usize + len);
    let fd = std::fs::OpenOptions::new().read(true).write(true).open(&link).with_context(|| format!("opening {link}"));
    // SAFETY: unmapping our own map; the descriptor keeps the object.
    unsafe { libc::munmap(at, len) };
    filled?;
    Ok(fd?.into())
}

const F_SEAL_SEAL: u32 = 1;

fn make_memfd(o: &ObjectPlan, m: &Memfd) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(m.name.as_bytes()).with_context(|| format!("memfd name {:?}", m.name))?;
    let sealing = if m.seals == F_SEAL_SEAL { 0 } else { libc::MFD_ALLOW_SEALING };
    // SAFETY: a NUL-terminated name; the new descriptor is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | sealing) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("memfd_create({:?})", m.name));
    }
    // SAFETY: just made, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(fd.try_clone()?);
    file.set_len(o.size).with_context(|| format!("sizing memfd {:?} to {}", m.name, o.size))?;
    let len = o.size.next_multiple_of(4096) as usize;
    if len > 0 && o.pages.is_some() {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh shared map of our memfd, unmapped below.
        let at = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mapping memfd {:?}", m.name));
        }
        let filled = fill(o, at, len);
        // SAFETY: unmapping our own map.
        unsafe { libc::munmap(at, len) };
        filled?;
    }
    nix::unistd::fchown(&fd, Some(m.uid.into()), Some(m.gid.into()))
        .with_context(|| format!("memfd {:?}: owner {}:{}", m.name, m.uid, m.gid))?;
    let mode = nix::sys::stat::Mode::from_bits_truncate(m.mode & 0o7777);
    nix::sys::stat::fchmod(&fd, mode).with_context(|| format!("memfd {:?}: mode {:o}", m.name, m.mode))?;
    if sealing != 0 && m.seals != 0 {
        let seals = nix::fcntl::SealFlag::from_bits_truncate(m.seals as i32);
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_ADD_SEALS(seals))
            .with_context(|| format!("memfd {:?}: seals {:#x}", m.name, m.seals))?;
    }
    Ok(fd)
}

fn fill(o: &ObjectPlan, at: *mut libc::c_void, len: usize) -> Result<()> {
    let Some((file, runs)) = &o.pages else { return Ok(()) };
    // SAFETY: the map is `len` bytes, writable and ours alone until unmapped.
    let mem = unsafe { std::slice::from_raw_parts_mut(at.cast::<u8>(), len) };
    crate::sysv::restore::read_runs(mem, file, runs)
}
