//! A whole checkpoint directory, loaded and checked.
//!
//! Loading parses every image a restore needs; [`ImageSet::validate`] then
//! checks what the restore relies on. Every error names the file, the entry
//! and the field.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::framing::Reader;
use crate::messages::*;

const PAGE: u64 = 4096;
const PE_PRESENT: u32 = 4;
const PE_PARENT: u32 = 1;
const VMA_AREA_REGULAR: u32 = 1;
const VMA_FILE_PRIVATE: u32 = 1 << 6;
const VMA_FILE_SHARED: u32 = 1 << 7;

/// One thread: its TID and its core image.
#[derive(Debug, Clone)]
pub struct Thread {
    pub tid: u32,
    pub core: CoreEntry,
}

/// One process of the tree.
#[derive(Debug, Clone)]
pub struct Process {
    pub pstree: PstreeEntry,
    pub ids: TaskKobjIdsEntry,
    pub mm: MmEntry,
    pub pagemap_head: PagemapHead,
    pub pagemap: Vec<PagemapEntry>,
    /// `pages-N.img` for this process's pagemap.
    pub pages: PathBuf,
    pub fs: FsEntry,
    /// The fds of its files table (`fdinfo-N.img`, empty if absent).
    pub fds: Vec<FdinfoEntry>,
    /// Leader first.
    pub threads: Vec<Thread>,
}

/// A checkpoint.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub dir: PathBuf,
    pub inventory: InventoryEntry,
    pub files: Vec<FileEntry>,
    pub processes: Vec<Process>,
}

/// Reads and frames one image file.
fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))
}

/// All entries of `name`, decoded as `M`.
fn entries<M: prost::Message + Default>(dir: &Path, name: &str) -> Result<Vec<M>> {
    let data = read(dir, name)?;
    let mut r = Reader::new(&data).with_context(|| name.to_string())?;
    r.all().with_context(|| name.to_string())
}

/// Exactly one entry of `name`.
fn one<M: prost::Message + Default>(dir: &Path, name: &str) -> Result<M> {
    let mut v = entries::<M>(dir, name)?;
    match v.len() {
        1 => Ok(v.remove(0)),
        n => bail!("{name}: {n} entries, expected exactly one"),
    }
}

impl ImageSet {
    /// Loads the checkpoint in `dir` (validation is separate).
    pub fn load(dir: &Path) -> Result<ImageSet> {
        let inventory: InventoryEntry = one(dir, "inventory.img")?;
        let pstree: Vec<PstreeEntry> = entries(dir, "pstree.img")?;
        let files: Vec<FileEntry> =
            if dir.join("files.img").exists() { entries(dir, "files.img")? } else { Vec::new() };
        let mut processes = Vec::new();
        for p in pstree {
            let pid = p.pid;
            let ids: TaskKobjIdsEntry = one(dir, &format!("ids-{pid}.img"))?;
            let mm: MmEntry = one(dir, &format!("mm-{pid}.img"))?;
            let pm_name = format!("pagemap-{pid}.img");
            let data = read(dir, &pm_name)?;
            let mut r = Reader::new(&data).with_context(|| pm_name.clone())?;
            let pagemap_head: PagemapHead = r.decode_next()?.with_context(|| format!("{pm_name}: no head entry"))?;
            let pagemap: Vec<PagemapEntry> = r.all().with_context(|| pm_name.clone())?;
            let fs: FsEntry = one(dir, &format!("fs-{pid}.img"))?;
            let fdinfo = format!("fdinfo-{}.img", ids.files_id);
            let fds = if dir.join(&fdinfo).exists() { entries(dir, &fdinfo)? } else { Vec::new() };
            let mut threads = Vec::new();
            for &tid in &p.threads {
                let core: CoreEntry = one(dir, &format!("core-{tid}.img"))?;
                threads.push(Thread { tid, core });
            }
            let pages = dir.join(format!("pages-{}.img", pagemap_head.pages_id));
            processes.push(Process { pstree: p, ids, mm, pagemap_head, pagemap, pages, fs, fds, threads });
        }
        Ok(ImageSet { dir: dir.to_path_buf(), inventory, files, processes })
    }

    /// The file entry with `id`.
    pub fn file(&self, id: u32) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.id == id)
    }

    /// Checks everything a restore relies on, for a machine of `arch`
    /// ("x86_64" or "arm").
    pub fn validate(&self, arch: &str) -> Result<()> {
        if self.processes.is_empty() {
            bail!("pstree.img: no processes");
        }
        let pids: HashSet<u32> = self.processes.iter().map(|p| p.pstree.pid).collect();
        let mut seen_tids = HashSet::new();
        let mut file_ids = HashSet::new();
        for (i, f) in self.files.iter().enumerate() {
            if !file_ids.insert(f.id) {
                bail!("files.img: entry {i}: id {} appears twice", f.id);
            }
        }
        for (i, p) in self.processes.iter().enumerate() {
            let pid = p.pstree.pid;
            if p.pstree.threads.first() != Some(&pid) {
                bail!("pstree.img: entry {i}: threads do not start with the pid {pid}");
            }
            if i > 0 && !pids.contains(&p.pstree.ppid) {
                bail!("pstree.img: entry {i}: ppid {} of pid {pid} is not in the tree", p.pstree.ppid);
            }
            for t in &p.pstree.threads {
                if !seen_tids.insert(*t) {
                    bail!("pstree.img: entry {i}: tid {t} appears twice");
                }
            }
            validate_core(p, arch)?;
            validate_vmas(p)?;
            validate_pagemap(p)?;
            let mm = format!("mm-{pid}.img");
            if p.mm.exe_file_id != 0 && !file_ids.contains(&p.mm.exe_file_id) {
                bail!("{mm}: entry 0: exe_file_id {} has no entry in files.img", p.mm.exe_file_id);
            }
            for (j, v) in p.mm.vmas.iter().enumerate() {
                let file = v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) != 0;
                if file && !file_ids.contains(&(v.shmid as u32)) {
                    bail!("{mm}: entry 0: vmas[{j}]: shmid {} (the mapped file) has no entry in files.img", v.shmid);
                }
            }
            let fs = format!("fs-{pid}.img");
            for (field, id) in [("cwd_id", p.fs.cwd_id), ("root_id", p.fs.root_id)] {
                if !file_ids.contains(&id) {
                    bail!("{fs}: entry 0: {field} {id} has no entry in files.img");
                }
            }
            let fdinfo = format!("fdinfo-{}.img", p.ids.files_id);
            let mut fds = HashSet::new();
            for (j, f) in p.fds.iter().enumerate() {
                if !file_ids.contains(&f.id) {
                    bail!("{fdinfo}: entry {j}: id {} has no entry in files.img", f.id);
                }
                if !fds.insert(f.fd) {
                    bail!("{fdinfo}: entry {j}: fd {} appears twice", f.fd);
                }
            }
        }
        Ok(())
    }
}

fn validate_core(p: &Process, arch: &str) -> Result<()> {
    for (i, t) in p.threads.iter().enumerate() {
        let name = format!("core-{}.img", t.tid);
        let m = Mtype::try_from(t.core.mtype).ok();
        let (found, regs_ok) = match m {
            Some(Mtype::X8664) => ("x86_64", t.core.thread_info.is_some()),
            Some(Mtype::Arm) => ("arm", t.core.ti_arm.is_some()),
            _ => bail!("{name}: entry 0: mtype {} is not an architecture revenant restores", t.core.mtype),
        };
        if found != arch {
            bail!("{name}: entry 0: mtype: the images are for {found}, this machine is {arch}");
        }
        if !regs_ok {
            bail!("{name}: entry 0: no register set for {found}");
        }
        if i == 0 && t.core.tc.is_none() {
            bail!("{name}: entry 0: tc: the leader has no task core");
        }
        if t.core.thread_core.is_none() {
            bail!("{name}: entry 0: thread_core: missing");
        }
    }
    Ok(())
}

fn validate_vmas(p: &Process) -> Result<()> {
    let name = format!("mm-{}.img", p.pstree.pid);
    let mut prev_end = 0u64;
    for (j, v) in p.mm.vmas.iter().enumerate() {
        if v.start >= v.end || v.start % PAGE != 0 || v.end % PAGE != 0 {
            bail!("{name}: entry 0: vmas[{j}]: bad range {:#x}-{:#x}", v.start, v.end);
        }
        if v.start < prev_end {
            bail!(
                "{name}: entry 0: vmas[{j}]: start {:#x} overlaps or precedes the previous end {prev_end:#x}",
                v.start
            );
        }
        if v.status & (1 << 31) != 0 {
            bail!("{name}: entry 0: vmas[{j}]: status marks an unsupported mapping");
        }
        prev_end = v.end;
    }
    Ok(())
}

fn validate_pagemap(p: &Process) -> Result<()> {
    let name = format!("pagemap-{}.img", p.pstree.pid);
    let regular: Vec<&VmaEntry> = p.mm.vmas.iter().filter(|v| v.status & VMA_AREA_REGULAR != 0).collect();
    let mut prev_end = 0u64;
    let mut present = 0u64;
    let mut by_start: BTreeMap<u64, &VmaEntry> = BTreeMap::new();
    for v in &regular {
        by_start.insert(v.start, v);
    }
    for (j, e) in p.pagemap.iter().enumerate() {
        // Entry 0 of the file is the head.
        let at = j + 1;
        let n = e.pages();
        let end = n.checked_mul(PAGE).and_then(|l| e.vaddr.checked_add(l));
        let Some(end) = end else { bail!("{name}: entry {at}: nr_pages {n} overflows") };
        if e.vaddr % PAGE != 0 || n == 0 {
            bail!("{name}: entry {at}: vaddr {:#x} / nr_pages {n} is not a run of whole pages", e.vaddr);
        }
        if e.vaddr < prev_end {
            bail!("{name}: entry {at}: vaddr {:#x} is below the previous run's end {prev_end:#x}", e.vaddr);
        }
        // A run may span adjacent areas, but never a gap.
        let mut covered = e.vaddr;
        while covered < end {
            match by_start.range(..=covered).next_back() {
                Some((_, v)) if v.end > covered => covered = v.end,
                _ => break,
            }
        }
        let inside = covered >= end;
        if !inside {
            bail!("{name}: entry {at}: vaddr {:#x}-{end:#x} is not inside the memory areas", e.vaddr);
        }
        let flags = e.flags.unwrap_or(PE_PRESENT);
        if flags & PE_PARENT != 0 {
            bail!("{name}: entry {at}: flags: pages in a parent image (incremental dumps) are not supported");
        }
        if flags & PE_PRESENT != 0 {
            present += n;
        }
        prev_end = end;
    }
    let size = std::fs::metadata(&p.pages).with_context(|| format!("{}: cannot stat", p.pages.display()))?.len();
    if size != present * PAGE {
        bail!(
            "{}: {size} bytes, but {name} promises {present} pages ({} bytes)",
            p.pages.file_name().unwrap_or_default().to_string_lossy(),
            present * PAGE
        );
    }
    Ok(())
}
