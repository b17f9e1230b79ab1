//! SysV shared memory at dump: the segments the tree can reach, with their
//! attributes and contents.
//!
//! A tree in an IPC namespace of its own owns every segment there, as CRIU
//! sees it. A tree in revenant's own (the host's) namespace shares it with
//! everyone else, so only the segments it has attached are taken; CRIU
//! refuses that case. Segments are read through an attachment of our own,
//! made on a helper thread that entered the tree's namespace (SysV ids and
//! `/proc/sysvipc` are per namespace, and a namespace belongs to a thread).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result, bail};
use nix::libc;

use revenant_images::messages::IpcVarEntry;

use super::{read_var, stat};
use crate::dump::maps::PAGE;
use crate::imgdir::ImageDir;

/// One segment as found.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: i32,
    pub key: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits plus the kernel's `SHM_DEST`/`SHM_LOCKED` marks.
    pub mode: u32,
    pub size: u64,
    /// Its `pages-N.img` id and the runs there: (offset in the segment,
    /// pages). Pages that read as zeros are left out.
    pub pages_id: u32,
    pub runs: Vec<(u64, u64)>,
}

/// The tree's IPC namespace.
#[derive(Debug, Clone, Default)]
pub struct Ipc {
    /// The tree has a namespace of its own (else it shares revenant's).
    pub own_ns: bool,
    /// Its sysctls (own namespace only).
    pub var: Option<IpcVarEntry>,
    pub segments: Vec<Segment>,
}

impl Ipc {
    pub fn pages_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| format!("pages-{}.img", s.pages_id)).collect()
    }
}

/// Reads the segments of `root`'s IPC namespace (all of them in its own
/// namespace, else those in `attached`), writing their pages images into
/// `dir` under temporary names with ids from `first_pages_id` on.
pub fn collect(root: i32, own_ns: bool, attached: &BTreeSet<i32>, dir: &ImageDir, first_pages_id: u32) -> Result<Ipc> {
    if !own_ns && attached.is_empty() {
        return Ok(Ipc::default());
    }
    let ns = if own_ns {
        let p = format!("/proc/{root}/ns/ipc");
        Some(File::open(&p).with_context(|| format!("opening {p}"))?)
    } else {
        None
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = &ns {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWIPC)
                    .with_context(|| format!("entering the IPC namespace of process {root}"))?;
            }
            let listed = list_ids()?;
            for id in attached {
                if !listed.contains(id) {
                    bail!("process tree of {root} attaches SysV segment {id}, which /proc/sysvipc/shm does not list");
                }
            }
            let ids: Vec<i32> = if own_ns { listed } else { attached.iter().copied().collect() };
            let var = own_ns.then(read_var);
            let mut ipc = Ipc { own_ns, var, ..Default::default() };
            for (k, id) in ids.into_iter().enumerate() {
                ipc.segments.push(segment(id, first_pages_id + k as u32, dir)?);
            }
            Ok(ipc)
        })
        .join()
        .unwrap_or_else(|_| bail!("the SysV dump thread panicked"))
    })
}

/// The ids `/proc/sysvipc/shm` lists for this thread's namespace.
fn list_ids() -> Result<Vec<i32>> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").context("reading /proc/sysvipc/shm")?;
    text.lines()
        .skip(1)
        .map(|l| {
            let id = l.split_whitespace().nth(1).unwrap_or("");
            id.parse().with_context(|| format!("/proc/sysvipc/shm: shmid {id:?}"))
        })
        .collect()
}

fn segment(id: i32, pages_id: u32, dir: &ImageDir) -> Result<Segment> {
    let ds = stat(id).with_context(|| format!("reading SysV segment {id}"))?;
    let size = ds.shm_segsz as u64;
    let name = format!("pages-{pages_id}.img");
    // SAFETY: a read-only attach at an address of the kernel's choosing.
    let at = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    if at as isize == -1 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("attaching SysV segment {id} to read it"));
    }
    let len = size.next_multiple_of(PAGE) as usize;
    // SAFETY: the attachment maps the whole segment in pages, readable,
    // until the shmdt below.
    let mem = unsafe { std::slice::from_raw_parts(at.cast::<u8>(), len) };
    let written =
        dir.create(&name).and_then(|f| write_pages(mem, f)).with_context(|| format!("writing {name} (segment {id})"));
    // SAFETY: detaching the attachment made above; `mem` is not used after.
    unsafe { libc::shmdt(at) };
    Ok(Segment {
        id,
        key: ds.shm_perm.__key as u32,
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        cuid: ds.shm_perm.cuid,
        cgid: ds.shm_perm.cgid,
        mode: ds.shm_perm.mode as u32,
        size,
        pages_id,
        runs: written?,
    })
}

/// Writes the pages of `mem` that are not all zeros; returns their runs.
pub(crate) fn write_pages(mem: &[u8], f: File) -> Result<Vec<(u64, u64)>> {
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, page) in mem.chunks(PAGE as usize).enumerate() {
        if page.iter().all(|&b| b == 0) {
            continue;
        }
        w.write_all(page)?;
        let off = i as u64 * PAGE;
        match runs.last_mut() {
            Some((start, n)) if *start + *n * PAGE == off => *n += 1,
            _ => runs.push((off, 1)),
        }
    }
    w.flush()?;
    Ok(runs)
}
