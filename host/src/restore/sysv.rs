//! SysV shared memory segments, recreated before any restored task exists:
//! with their ids (through the namespace's `shm_next_id`), keys, sizes,
//! owners, modes and contents, in a new IPC namespace when the dumped tree
//! had its own. The blobs attach them; once every process runs, segments
//! that were removed at dump time are removed again (an attached segment
//! stays until its last detach, as before the dump). If the restore fails,
//! every segment made here is removed.
//!
//! Everything here runs on a helper thread: an IPC namespace belongs to a
//! thread, and this process's own threads must stay where they are.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;

use super::plan::PageRun;

/// The tree's IPC namespace and its segments.
#[derive(Debug, Clone, Default)]
pub struct IpcPlan {
    /// The dumped tree had an IPC namespace of its own: make a new one.
    pub new_namespace: bool,
    /// Sysctls of the new namespace: (name under /proc/sys, value).
    pub sysctls: Vec<(String, String)>,
    pub segments: Vec<SegmentPlan>,
    /// When a dumped id is taken, create the segment with a new id (the
    /// restored program still holds the old one in its memory).
    pub allow_new_ids: bool,
}

/// One segment.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    pub id: i32,
    /// `IPC_PRIVATE` (0) for private and removed segments.
    pub key: i32,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Removed (`IPC_RMID`) at dump time while still attached.
    pub removed: bool,
    pub contents: Contents,
}

/// Where a segment's bytes come from.
#[derive(Debug, Clone)]
pub enum Contents {
    /// Stored after its entry in `ipcns-shm-N.img`.
    Inline(Vec<u8>),
    /// Runs of a pages image; `addr` is the offset in the segment.
    Pages { file: PathBuf, runs: Vec<PageRun> },
}

/// `shm_rmid_forced` is set last: set earlier, it would destroy each
/// segment the moment its filling attach goes away.
const RMID_FORCED: &str = "kernel/shm_rmid_forced";

/// The segments of a restore in progress; removed again when dropped
/// before [`Created::finish`].
#[derive(Debug)]
pub struct Created {
    ns: Option<OwnedFd>,
    /// (dumped id, id it got).
    ids: Vec<(i32, i32)>,
    removed: Vec<i32>,
    rmid_forced: Option<String>,
    done: bool,
}

/// Runs `f` on a helper thread in `ns` (or in this process's namespace).
fn in_ns<T: Send>(ns: Option<&OwnedFd>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = ns {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWIPC)
                    .context("entering the restored tree's IPC namespace")?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("the IPC helper thread panicked"))
    })
}

/// Creates the namespace (if the plan asks) and every segment.
pub fn create(plan: &IpcPlan) -> Result<Created> {
    let ns = if plan.new_namespace {
        Some(in_ns(None, || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC).context("creating an IPC namespace")?;
            for (name, value) in plan.sysctls.iter().filter(|(n, _)| n != RMID_FORCED) {
                write_sysctl(name, value)?;
            }
            Ok(OwnedFd::from(File::open("/proc/thread-self/ns/ipc").context("opening the new IPC namespace")?))
        })?)
    } else {
        None
    };
    let rmid_forced = plan.sysctls.iter().find(|(n, _)| n == RMID_FORCED).map(|(_, v)| v.clone());
    let mut created = Created { ns, ids: Vec::new(), removed: Vec::new(), rmid_forced, done: false };
    let made = in_ns(created.ns.as_ref(), || {
        let mut ids = Vec::new();
        for s in &plan.segments {
            // Recorded at once, so a failure further on removes it too.
            match make(s, plan.allow_new_ids) {
                Ok(id) => ids.push((s.id, id)),
                Err(e) => return Ok((ids, Some(e))),
            }
            let got = ids.last().map(|p| p.1).unwrap_or(-1);
            if let Err(e) = fill(s, got).and_then(|()| set_owner(s, got)) {
                return Ok((ids, Some(e)));
            }
        }
        Ok((ids, None))
    })?;
    created.ids = made.0;
    if let Some(e) = made.1 {
        return Err(e);
    }
    created.removed = plan
        .segments
        .iter()
        .filter(|s| s.removed)
        .filter_map(|s| created.ids.iter().find(|p| p.0 == s.id).map(|p| p.1))
        .collect();
    Ok(created)
}

impl Created {
    /// The namespace the root task must enter, if a new one was made.
    pub fn ns_fd(&self) -> Option<i32> {
        self.ns.as_ref().map(|f| f.as_raw_fd())
    }

    /// The id a dumped segment got (the same unless new ids were allowed).
    pub fn id_of(&self, dumped: i32) -> i32 {
        self.ids.iter().find(|p| p.0 == dumped).map_or(dumped, |p| p.1)
    }

    /// Every process runs with its attachments: remove what was removed
    /// before, and set `shm_rmid_forced`.
    pub fn finish(mut self) -> Result<()> {
        self.done = true;
        in_ns(self.ns.as_ref(), || {
            for &id in &self.removed {
                // SAFETY: no buffer is passed for IPC_RMID.
                if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("removing segment {id}"));
                }
            }
            if let Some(v) = &self.rmid_forced {
                write_sysctl(RMID_FORCED, v)?;
            }
            Ok(())
        })
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.done || self.ids.is_empty() {
            return;
        }
        let _ = in_ns(self.ns.as_ref(), || {
            for &(_, id) in &self.ids {
                // SAFETY: no buffer is passed for IPC_RMID.
                unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            }
            Ok(())
        });
    }
}

fn write_sysctl(name: &str, value: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/{name}"), value).with_context(|| format!("setting {name} to {value}"))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Creates segment `s` with its id (or, if allowed, any id); returns the id.
fn make(s: &SegmentPlan, allow_new_ids: bool) -> Result<i32> {
    let mut ds: libc::shmid_ds = unsafe_zeroed();
    // SAFETY: IPC_STAT writes one shmid_ds into a live local.
    let taken = unsafe { libc::shmctl(s.id, libc::IPC_STAT, &mut ds) } == 0;
    if taken && !allow_new_ids {
        bail!(
            "SysV segment {} (key {:#x}) cannot get its id back: segment {} (key {:#x}, {} bytes) exists; remove it \
             (ipcrm -m {}) or restore with --shm-new-ids",
            s.id,
            s.key,
            s.id,
            ds.shm_perm.__key,
            ds.shm_segsz,
            s.id
        );
    }
    if !taken {
        write_sysctl("kernel/shm_next_id", &s.id.to_string())?;
    }
    // SAFETY: shmget takes integers only.
    let id = unsafe { libc::shmget(s.key, s.size as usize, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    if id < 0 {
        let e = errno();
        if e.raw_os_error() == Some(libc::EEXIST) {
            bail!("SysV segment {}: its key {:#x} is used by another segment in this IPC namespace", s.id, s.key);
        }
        return Err(e).with_context(|| format!("creating SysV segment {} ({} bytes, key {:#x})", s.id, s.size, s.key));
    }
    if id != s.id && !allow_new_ids {
        // SAFETY: removes the segment just made; no buffer.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        bail!("SysV segment {} came back as {id}: this kernel ignored shm_next_id", s.id);
    }
    Ok(id)
}

fn unsafe_zeroed() -> libc::shmid_ds {
    // SAFETY: shmid_ds is plain integers, for which zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Writes the dumped contents through a temporary attachment.
fn fill(s: &SegmentPlan, id: i32) -> Result<()> {
    // SAFETY: an attach at an address of the kernel's choosing replaces nothing.
    let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if at as isize == -1 {
        return Err(errno()).with_context(|| format!("attaching SysV segment {id} to fill it"));
    }
    // SAFETY: the attachment maps the segment in whole pages, ours alone
    // until it is detached below.
    let mem = unsafe { std::slice::from_raw_parts_mut(at.cast::<u8>(), s.size.next_multiple_of(4096) as usize) };
    let res = match &s.contents {
        Contents::Inline(data) => {
            let n = data.len().min(mem.len());
            mem[..n].copy_from_slice(&data[..n]);
            Ok(())
        }
        Contents::Pages { file, runs } => {
            File::open(file).with_context(|| format!("opening {}", file.display())).and_then(|f| {
                runs.iter().try_for_each(|r| {
                    let dst = mem
                        .get_mut(r.addr as usize..(r.addr + r.len) as usize)
                        .with_context(|| format!("pages at offset {:#x} lie outside the segment", r.addr))?;
                    f.read_exact_at(dst, r.file_offset)
                        .with_context(|| format!("reading {} bytes at {} of {}", r.len, r.file_offset, file.display()))
                })
            })
        }
    };
    // SAFETY: detaching the attachment made above; `mem` is not used after.
    unsafe { libc::shmdt(at) };
    res.with_context(|| format!("filling SysV segment {}", s.id))
}

fn set_owner(s: &SegmentPlan, id: i32) -> Result<()> {
    let mut ds = unsafe_zeroed();
    ds.shm_perm.uid = s.uid;
    ds.shm_perm.gid = s.gid;
    ds.shm_perm.mode = (s.mode & 0o777) as _;
    // SAFETY: IPC_SET reads one shmid_ds from a live local.
    if unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } < 0 {
        return Err(errno())
            .with_context(|| format!("setting owner {}:{} and mode {:o} of segment {id}", s.uid, s.gid, s.mode));
    }
    Ok(())
}
