//! Shared anonymous memory at restore: each object is made once by the
//! host (a `MAP_SHARED|MAP_ANONYMOUS` map of its own, filled from the
//! images), and every area of the tree that mapped it maps that same
//! object again, through a descriptor of it (`/proc/self/map_files`):
//! what one process writes the others see, as after their `fork`, and
//! `/proc/PID/maps` shows the same `/dev/zero (deleted)` as before.

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
            if let Backing::AnonShared { shmid } = v.backing {
                let fd = self.objects.iter().find(|(id, _)| *id == shmid).map(|(_, fd)| fd.as_raw_fd());
                let fd = fd.with_context(|| format!("PID {}: shared memory {shmid} was not made", p.pid))?;
                let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
                v.backing = Backing::File { path, open_flags: libc::O_RDWR };
                v.flags &= !(libc::MAP_ANONYMOUS as u32);
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

fn fill(o: &ObjectPlan, at: *mut libc::c_void, len: usize) -> Result<()> {
    let Some((file, runs)) = &o.pages else { return Ok(()) };
    // SAFETY: the map is `len` bytes, writable and ours alone until unmapped.
    let mem = unsafe { std::slice::from_raw_parts_mut(at.cast::<u8>(), len) };
    super::sysv::read_runs(mem, file, runs)
}
