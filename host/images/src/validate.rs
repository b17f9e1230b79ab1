//! What a restore relies on across images: every error names the file, the
//! entry and the field, as an anyhow context chain (`{:#}` prints
//! `mm-42.img: entry 0: vmas[3].start: ...`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::path::Path;

use anyhow::{Result, anyhow};

use crate::image::file_name;
use crate::messages::*;
use crate::set::{ImageSet, Process, ShmPages};

/// CRIU's page size on every architecture revenant handles.
pub const PAGE_SIZE: u64 = 4096;

/// An error about `field` of entry `entry` of `file`.
fn bad(file: impl Display, entry: usize, field: impl Display, what: impl Display) -> anyhow::Error {
    anyhow!("{field}: {what}").context(format!("entry {entry}")).context(file.to_string())
}

/// The architecture name a core image's `mtype` stands for.
pub fn arch_of(mtype: i32) -> Option<&'static str> {
    match Mtype::try_from(mtype).ok()? {
        Mtype::X8664 => Some("x86_64"),
        Mtype::Arm => Some("arm"),
        Mtype::Aarch64 => Some("aarch64"),
        _ => None,
    }
}

impl ImageSet {
    /// Checks everything a restore relies on, for a machine of `arch`
    /// ("x86_64" or "arm", as `revenant_arch::NAME`).
    pub fn validate(&self, arch: &str) -> Result<()> {
        let files = self.check_files()?;
        self.check_pstree()?;
        for p in &self.processes {
            check_cores(p, arch)?;
            check_vmas(p, &files)?;
            check_pagemap(p)?;
            check_fs(p, &files)?;
            check_fds(p, &files)?;
        }
        for ns in &self.ipc {
            for (i, s) in ns.shm.iter().enumerate() {
                let name = format!("ipcns-shm-{}.img", ns.id);
                match &s.pages {
                    Some(pm) => check_shm_pages(&name, i, s.entry.desc.id, s.entry.size, pm)?,
                    None if (s.data.len() as u64) < s.entry.size => {
                        return Err(bad(
                            name,
                            i,
                            "size",
                            format!("{} bytes, but {} follow", s.entry.size, s.data.len()),
                        ));
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Unique ids, payloads matching types; returns the types by id.
    fn check_files(&self) -> Result<HashMap<u32, i32>> {
        let mut types = HashMap::new();
        for (i, f) in self.files.iter().enumerate() {
            if types.insert(f.id, f.r#type).is_some() {
                return Err(bad("files.img", i, "id", format!("{} appears twice", f.id)));
            }
            let payload = match FdType::try_from(f.r#type) {
                Ok(FdType::Reg) => Some(("reg", f.reg.is_some())),
                Ok(FdType::Pipe) => Some(("pipe", f.pipe.is_some())),
                Ok(FdType::Fifo) => Some(("fifo", f.fifo.is_some())),
                Ok(FdType::Eventfd) => Some(("efd", f.efd.is_some())),
                Ok(FdType::Eventpoll) => Some(("epfd", f.epfd.is_some())),
                Ok(FdType::Signalfd) => Some(("sgfd", f.sgfd.is_some())),
                Ok(FdType::Timerfd) => Some(("tfd", f.tfd.is_some())),
                Ok(FdType::Ns) => Some(("nsf", f.nsf.is_some())),
                Ok(FdType::Memfd) => Some(("memfd", f.memfd.is_some())),
                Ok(FdType::Pidfd) => Some(("pidfd", f.pidfd.is_some())),
                _ => None,
            };
            if let Some((field, false)) = payload {
                return Err(bad("files.img", i, field, format!("missing for a file of type {}", type_name(f.r#type))));
            }
            if let Some(r) = &f.reg
                && r.id != f.id
            {
                return Err(bad("files.img", i, "reg.id", format!("{} differs from the entry's id {}", r.id, f.id)));
            }
        }
        Ok(types)
    }

    /// Unique pids and tids, leaders first in their thread lists, parents
    /// listed before their children.
    fn check_pstree(&self) -> Result<()> {
        if self.processes.is_empty() {
            return Err(anyhow!("no processes").context("pstree.img"));
        }
        let mut pids = HashSet::new();
        let mut tids = HashSet::new();
        for (i, p) in self.processes.iter().enumerate() {
            let e = &p.pstree;
            if e.pid == 0 {
                return Err(bad("pstree.img", i, "pid", "0 is not a process ID"));
            }
            if !pids.insert(e.pid) {
                return Err(bad("pstree.img", i, "pid", format!("{} appears twice", e.pid)));
            }
            if e.threads.first() != Some(&e.pid) {
                return Err(bad(
                    "pstree.img",
                    i,
                    "threads",
                    format!("{:?} do not start with the pid {}", e.threads, e.pid),
                ));
            }
            for (j, t) in e.threads.iter().enumerate() {
                if !tids.insert(*t) {
                    return Err(bad("pstree.img", i, format!("threads[{j}]"), format!("tid {t} appears twice")));
                }
            }
            if i > 0 && !pids.contains(&e.ppid) {
                return Err(bad(
                    "pstree.img",
                    i,
                    "ppid",
                    format!("{} of pid {} is not an earlier process of the tree", e.ppid, e.pid),
                ));
            }
        }
        // A zombie has no children (they went to a reaper when it died).
        for z in &self.zombies {
            let (i, e) = (z.entry, &z.pstree);
            if e.pid == 0 || !pids.insert(e.pid) || tids.contains(&e.pid) {
                return Err(bad("pstree.img", i, "pid", format!("{} is 0 or appears twice", e.pid)));
            }
            if !self.processes.iter().any(|p| p.pstree.pid == e.ppid) {
                return Err(bad(
                    "pstree.img",
                    i,
                    "ppid",
                    format!("{} of zombie {} is not a live process of the tree", e.ppid, e.pid),
                ));
            }
        }
        Ok(())
    }
}

fn type_name(t: i32) -> String {
    FdType::try_from(t).map(|t| t.crit_name().to_string()).unwrap_or_else(|v| v.to_string())
}

fn check_cores(p: &Process, arch: &str) -> Result<()> {
    for (i, t) in p.threads.iter().enumerate() {
        let name = format!("core-{}.img", t.tid);
        let c = &t.core;
        let Some(found) = arch_of(c.mtype) else {
            return Err(bad(name, 0, "mtype", format!("{} is not an architecture revenant restores", c.mtype)));
        };
        if found != arch {
            return Err(bad(name, 0, "mtype", format!("the images are for {found}, this machine is {arch}")));
        }
        match found {
            "x86_64" => {
                let Some(ti) = &c.thread_info else {
                    return Err(bad(name, 0, "thread_info", "no x86_64 register set"));
                };
                let fp = &ti.fpregs;
                if fp.st_space.len() != 32 || fp.xmm_space.len() != 64 {
                    return Err(bad(
                        name,
                        0,
                        "thread_info.fpregs",
                        format!(
                            "{} st_space and {} xmm_space words, expected 32 and 64",
                            fp.st_space.len(),
                            fp.xmm_space.len()
                        ),
                    ));
                }
            }
            "arm" => {
                if c.ti_arm.is_none() {
                    return Err(bad(name, 0, "ti_arm", "no ARM register set"));
                }
            }
            _ => return Err(bad(name, 0, "mtype", format!("revenant has no register set for {found}"))),
        }
        if i == 0 && c.tc.is_none() {
            return Err(bad(name, 0, "tc", "the thread group leader has no task core"));
        }
        if c.thread_core.is_none() {
            return Err(bad(name, 0, "thread_core", "missing"));
        }
    }
    Ok(())
}

fn check_vmas(p: &Process, files: &HashMap<u32, i32>) -> Result<()> {
    let name = format!("mm-{}.img", p.pstree.pid);
    let mm = &p.mm;
    if mm.exe_file_id != 0 && !files.contains_key(&mm.exe_file_id) {
        return Err(bad(&name, 0, "exe_file_id", format!("{} has no entry in files.img", mm.exe_file_id)));
    }
    let mut prev_end = 0u64;
    // Guard regions come after every area (CRIU's rule): entries of their
    // own, each inside areas that leave no gap under it.
    let areas = mm.vmas.iter().position(|v| v.status & vma_status::AREA_GUARD != 0).unwrap_or(mm.vmas.len());
    for (j, v) in mm.vmas.iter().enumerate() {
        if j >= areas {
            let prev_guard = if j > areas { mm.vmas[j - 1].end } else { 0 };
            check_guard(&name, j, v, &mm.vmas[..areas], prev_guard)?;
            continue;
        }
        if v.start % PAGE_SIZE != 0 {
            return Err(bad(&name, 0, format!("vmas[{j}].start"), format!("{:#x} is not page aligned", v.start)));
        }
        if v.end % PAGE_SIZE != 0 {
            return Err(bad(&name, 0, format!("vmas[{j}].end"), format!("{:#x} is not page aligned", v.end)));
        }
        if v.end <= v.start {
            return Err(bad(
                &name,
                0,
                format!("vmas[{j}].end"),
                format!("{:#x} is not above the start {:#x}", v.end, v.start),
            ));
        }
        if v.start < prev_end {
            return Err(bad(
                &name,
                0,
                format!("vmas[{j}].start"),
                format!("{:#x} overlaps or precedes the previous area's end {prev_end:#x}", v.start),
            ));
        }
        if v.status & vma_status::UNSUPP != 0 {
            return Err(bad(&name, 0, format!("vmas[{j}].status"), "marks a mapping the dumper could not handle"));
        }
        let file = v.status & (vma_status::FILE_PRIVATE | vma_status::FILE_SHARED) != 0;
        if file && u32::try_from(v.shmid).map_or(true, |id| !files.contains_key(&id)) {
            return Err(bad(
                &name,
                0,
                format!("vmas[{j}].shmid"),
                format!("{} (the mapped file) has no entry in files.img", v.shmid),
            ));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// Guard region `vmas[j]` (`g`): its status alone, aligned, after the
/// previous guard (ending at `prev_end`), every page of it in `areas`.
fn check_guard(name: &str, j: usize, g: &VmaEntry, areas: &[VmaEntry], prev_end: u64) -> Result<()> {
    if g.status != vma_status::AREA_GUARD {
        let why = if g.status & vma_status::AREA_GUARD == 0 {
            "an area after a guard region (guard regions come last)".to_string()
        } else {
            format!("{:#x}: a guard region with other status bits", g.status)
        };
        return Err(bad(name, 0, format!("vmas[{j}].status"), why));
    }
    if !g.start.is_multiple_of(PAGE_SIZE) || !g.end.is_multiple_of(PAGE_SIZE) || g.end <= g.start || g.start < prev_end
    {
        return Err(bad(
            name,
            0,
            format!("vmas[{j}]"),
            format!("guard region {:#x}-{:#x}: unaligned, empty or out of order", g.start, g.end),
        ));
    }
    let mut at = g.start;
    for a in areas.iter().skip_while(|a| a.end <= g.start) {
        if a.start > at || at >= g.end {
            break;
        }
        at = a.end;
    }
    if at < g.end {
        return Err(bad(
            name,
            0,
            format!("vmas[{j}]"),
            format!("guard region {:#x}-{:#x}: {at:#x} is in no area", g.start, g.end),
        ));
    }
    Ok(())
}

/// Runs in order, inside areas the restore maps, from a parent image only
/// where `parent_ok` (a process's pagemap: the restore follows the chain);
/// returns the pages promised in this image's pages file.
fn check_runs(name: &str, entries: &[PagemapEntry], parent_ok: bool, inside: impl Fn(u64, u64) -> bool) -> Result<u64> {
    let mut prev_end = 0u64;
    let mut present = 0u64;
    for (j, e) in entries.iter().enumerate() {
        // Entry 0 of the file is the head.
        let at = j + 1;
        let n = e.pages();
        let Some(end) = n.checked_mul(PAGE_SIZE).and_then(|l| e.vaddr.checked_add(l)) else {
            return Err(bad(
                name,
                at,
                "nr_pages",
                format!("{n} pages at {:#x} run past the end of the address space", e.vaddr),
            ));
        };
        if e.vaddr % PAGE_SIZE != 0 {
            return Err(bad(name, at, "vaddr", format!("{:#x} is not page aligned", e.vaddr)));
        }
        if n == 0 {
            return Err(bad(name, at, "nr_pages", "an empty run"));
        }
        if e.vaddr < prev_end {
            return Err(bad(
                name,
                at,
                "vaddr",
                format!("{:#x} is below the previous run's end {prev_end:#x}", e.vaddr),
            ));
        }
        if !inside(e.vaddr, end) {
            return Err(bad(name, at, "vaddr", format!("run {:#x}-{end:#x} is not inside the memory areas", e.vaddr)));
        }
        let flags = e.pe_flags();
        if flags & pe::PARENT != 0 && !parent_ok {
            return Err(bad(name, at, "flags", "pages of shared memory in a parent checkpoint are not supported"));
        }
        if flags & pe::PARENT != 0 && flags & pe::PRESENT != 0 {
            return Err(bad(name, at, "flags", format!("{flags:#x}: both in the parent checkpoint and in this one")));
        }
        if flags & pe::PRESENT != 0 {
            present += n;
        }
        prev_end = end;
    }
    Ok(present)
}

fn check_pages_size(pagemap: &str, pages: &Path, present: u64) -> Result<()> {
    let pages_name = file_name(pages);
    let size = crate::file::ImageFile::open(pages)?.size;
    let want = present.saturating_mul(PAGE_SIZE);
    if size != want {
        return Err(anyhow!("{pages_name}: {size} bytes, but {pagemap} promises {present} pages ({want} bytes)"));
    }
    Ok(())
}

fn check_pagemap(p: &Process) -> Result<()> {
    let name = format!("pagemap-{}.img", p.pstree.pid);
    let by_start: BTreeMap<u64, u64> =
        p.mm.vmas.iter().filter(|v| v.status & vma_status::AREA_REGULAR != 0).map(|v| (v.start, v.end)).collect();
    // A run may span adjacent areas, but never a gap.
    let inside = |start: u64, end: u64| {
        let mut covered = start;
        while covered < end {
            match by_start.range(..=covered).next_back() {
                Some((_, &e)) if e > covered => covered = e,
                _ => return false,
            }
        }
        true
    };
    let present = check_runs(&name, &p.pagemap, true, inside)?;
    check_pages_size(&name, &p.pages, present)
}

fn check_shm_pages(shm: &str, i: usize, id: u32, size: u64, pm: &ShmPages) -> Result<()> {
    let name = format!("pagemap-shmem-{id}.img");
    let present = check_runs(&name, &pm.entries, false, |_, end| {
        end <= size.saturating_add(PAGE_SIZE - 1) / PAGE_SIZE * PAGE_SIZE
    })
    .map_err(|e| e.context(format!("the pages of {shm} entry {i}")))?;
    check_pages_size(&name, &pm.pages, present)
}

fn check_fs(p: &Process, files: &HashMap<u32, i32>) -> Result<()> {
    let name = format!("fs-{}.img", p.pstree.pid);
    for (field, id) in [("cwd_id", p.fs.cwd_id), ("root_id", p.fs.root_id)] {
        match files.get(&id) {
            None => return Err(bad(&name, 0, field, format!("{id} has no entry in files.img"))),
            Some(&t) if t != FdType::Reg as i32 => {
                return Err(bad(&name, 0, field, format!("{id} is a {} file, not a directory", type_name(t))));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_fds(p: &Process, files: &HashMap<u32, i32>) -> Result<()> {
    let name = format!("fdinfo-{}.img", p.ids.files_id);
    let mut fds = HashSet::new();
    for (j, f) in p.fds.iter().enumerate() {
        match files.get(&f.id) {
            None => return Err(bad(&name, j, "id", format!("{} has no entry in files.img", f.id))),
            Some(&t) if t != f.r#type => {
                return Err(bad(
                    &name,
                    j,
                    "type",
                    format!("{} but file {} is {}", type_name(f.r#type), f.id, type_name(t)),
                ));
            }
            Some(_) => {}
        }
        if !fds.insert(f.fd) {
            return Err(bad(&name, j, "fd", format!("{} appears twice", f.fd)));
        }
    }
    Ok(())
}
