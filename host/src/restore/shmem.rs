//! Shared anonymous memory at restore: each object is made once by the
//! host (a `MAP_SHARED|MAP_ANONYMOUS` map of its own, filled from the
//! images), and every area of the tree that mapped it maps that same
//! object again, through a descriptor of it (`/proc/self/map_files`):
//! what one process writes the others see, as after their `fork`, and
//! `/proc/PID/maps` shows the same `/dev/zero (deleted)` as before.
//! A memfd is made the same way with `memfd_create`, its name, size,
//! owner, mode and seals; the tree's fds on it open it through
//! `/proc/HOST/fd/N` too, each its own description with its position.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::libc;

use super::plan::{Backing, PageRun, ProcessPlan};

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
