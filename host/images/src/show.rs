//! `revenant show`: crit's JSON, or a readable summary, of an image file
//! or a whole checkpoint.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::file::{self, ImageFile};
use crate::image::{Image, file_name};
use crate::json::{self, Json, MMAP_STATUS, PMAP_FLAGS};
use crate::magic::Kind;
use crate::messages::*;
use crate::set::ImageSet;
use crate::validate::PAGE_SIZE;

/// What `revenant show PATH [--json]` prints.
///
/// For a file: with `json`, exactly what `crit show` prints; otherwise a
/// short listing of its entries. For a directory: with `json`, an object
/// of every image file's crit JSON by file name; otherwise a summary of
/// the checkpoint (processes, threads, memory areas, pages, files).
pub fn show(path: &Path, json: bool) -> Result<String> {
    match (path.is_dir(), json) {
        (true, false) if is_pre_dump(path)? => pre_dump_summary(path),
        (true, false) => Ok(summary(&ImageSet::load(path)?)),
        (true, true) => dir_json(path),
        (false, true) => Ok(Image::read(path)?.to_json().pretty() + "\n"),
        (false, false) => file_listing(path),
    }
}

fn dir_json(dir: &Path) -> Result<String> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let t = e.file_type().with_context(|| format!("{}: cannot stat", e.path().display()))?;
        entries.push((e.file_name().to_string_lossy().into_owned(), t));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut o = Vec::new();
    for (name, t) in entries {
        let path = dir.join(&name);
        // What is named like an image must be one; anything else that is
        // not a regular file is simply not an image.
        let named = name.ends_with(".img");
        if !t.is_file() {
            if named {
                return Err(file::not_regular(&path, t));
            }
            continue;
        }
        let f = match ImageFile::open(&path) {
            Ok(f) => f,
            Err(e) if named => return Err(e),
            Err(_) => continue,
        };
        if Kind::from_header(&f.read_head(8)?).is_none() {
            continue;
        }
        o.push((name.into(), Image::read_file(&f)?.to_json()));
    }
    Ok(Json::Obj(o).pretty() + "\n")
}

fn prot(p: u32) -> String {
    [(1, 'r'), (2, 'w'), (4, 'x')].iter().map(|&(b, c)| if p & b != 0 { c } else { '-' }).collect()
}

/// VMA status names without the prefix, e.g. `REGULAR|FILE_PRIVATE`.
fn status(s: u32) -> String {
    json::flags(u64::from(s), MMAP_STATUS).replace("VMA_AREA_", "").replace("VMA_", "").replace(" | ", "|")
}

fn file_listing(path: &Path) -> Result<String> {
    let f = ImageFile::open(path)?;
    // Pages images are large and have no header: their size says it all.
    if Kind::from_header(&f.read_head(8)?).is_none() && file_name(path).starts_with("pages-") {
        return Ok(format!("{}: raw pages image, {} bytes ({} pages)\n", path.display(), f.size, f.size / PAGE_SIZE));
    }
    let image = Image::read_file(&f)?;
    let mut s = format!("{}: {} image, {} entries\n", path.display(), image.kind().name(), image.len());
    let mut line = |l: String| {
        s.push_str("  ");
        s.push_str(&l);
        s.push('\n');
    };
    match &image {
        Image::Pstree(v) => {
            for e in v {
                line(format!("pid {} ppid {} pgid {} sid {} threads {:?}", e.pid, e.ppid, e.pgid, e.sid, e.threads));
            }
        }
        Image::Core(v) => {
            for c in v {
                line(core_line(c));
            }
        }
        Image::Mm(v) => {
            for m in v {
                line(format!(
                    "exe file {}, code {:#x}-{:#x}, brk {:#x}-{:#x}, stack {:#x}, {} auxv words",
                    m.exe_file_id,
                    m.mm_start_code,
                    m.mm_end_code,
                    m.mm_start_brk,
                    m.mm_brk,
                    m.mm_start_stack,
                    m.mm_saved_auxv.len()
                ));
                for v in &m.vmas {
                    line(vma_line(v, None));
                }
            }
        }
        Image::Pagemap(head, v) => {
            let present = pages_with(v, pe::PRESENT);
            line(format!("pages-{}.img, {} runs, {present} pages present", head.pages_id, v.len()));
            for e in v {
                line(format!(
                    "{:#014x}-{:#014x} {:>6} pages {}",
                    e.vaddr,
                    e.vaddr.saturating_add(e.pages().saturating_mul(PAGE_SIZE)),
                    e.pages(),
                    json::flags(u64::from(e.pe_flags()), PMAP_FLAGS)
                ));
            }
        }
        Image::Files(v) => {
            for f in v {
                line(format!("id {:>3}: {}", f.id, file_desc(f)));
            }
        }
        Image::Cgroup(v) => {
            for s in v.iter().flat_map(|c| &c.sets) {
                let members: Vec<String> = s.ctls.iter().map(|m| format!("{}:{}", m.name, m.path)).collect();
                line(format!("set {}: {}", s.id, members.join(" ")));
            }
        }
        Image::Fdinfo(v) => {
            for f in v {
                let t = FdType::try_from(f.r#type).map(FdType::crit_name).unwrap_or("?");
                let cloexec = if f.flags & 1 != 0 { " cloexec" } else { "" };
                line(format!("fd {:>3} -> file {} ({t}){cloexec}", f.fd, f.id));
            }
        }
        _ => {
            // Small images: one compact line of crit's JSON per entry.
            if let Json::Obj(o) = image.to_json()
                && let Some((_, Json::Arr(entries))) = o.into_iter().find(|(k, _)| k == "entries")
            {
                for e in entries {
                    line(compact(&e));
                }
            }
        }
    }
    Ok(s)
}

/// Pages of the runs with any of `flags`. Saturating: `show` runs before
/// (and without) validation, on whatever the images say.
fn pages_with(runs: &[PagemapEntry], flags: u32) -> u64 {
    runs.iter().filter(|e| e.pe_flags() & flags != 0).map(PagemapEntry::pages).fold(0, u64::saturating_add)
}

/// One-line JSON.
fn compact(j: &Json) -> String {
    serde_json::to_string(&j.to_value()).unwrap_or_default()
}

fn core_line(c: &CoreEntry) -> String {
    let arch = Mtype::try_from(c.mtype).map(Mtype::crit_name).unwrap_or("?");
    let mut s = format!("arch {arch}");
    if let Some(tc) = &c.tc {
        let state = json::TASK_STATE.iter().find(|(v, _)| *v == u64::from(tc.task_state)).map_or("?", |(_, n)| n);
        let _ = write!(s, ", comm {:?}, state {state}, exit code {}", tc.comm, tc.exit_code);
        let _ = write!(s, ", {} sigactions", tc.sigactions.len());
    } else if let Some(comm) = c.thread_core.as_ref().and_then(|t| t.comm.as_ref()) {
        let _ = write!(s, ", comm {comm:?}");
    }
    if let Some(ti) = &c.thread_info {
        let r = &ti.gpregs;
        let _ = write!(s, ", ip {:#x} sp {:#x} ax {:#x} orig_ax {:#x}", r.ip, r.sp, r.ax, r.orig_ax);
        if let Some(x) = &ti.fpregs.xsave {
            let _ = write!(s, ", xstate_bv {:#x}", x.xstate_bv);
        }
    }
    if let Some(ti) = &c.ti_arm {
        let _ = write!(s, ", pc {:#x} sp {:#x} r0 {:#x}", ti.gpregs.pc, ti.gpregs.sp, ti.gpregs.r0);
    }
    if let Some(b) = c.thread_core.as_ref().and_then(|t| t.blk_sigset) {
        let _ = write!(s, ", blocked {b:#x}");
    }
    s
}

fn vma_line(v: &VmaEntry, file: Option<&str>) -> String {
    let mut s = format!("{:#014x}-{:#014x} {} {}", v.start, v.end, prot(v.prot), status(v.status));
    if v.status & (vma_status::FILE_PRIVATE | vma_status::FILE_SHARED) != 0 {
        match file {
            Some(f) => {
                let _ = write!(s, " {f} @{:#x}", v.pgoff);
            }
            None => {
                let _ = write!(s, " file {} @{:#x}", v.shmid, v.pgoff);
            }
        }
    }
    s
}

/// ", unlinked when dumped" for a path the restore makes again
/// (`remap-fpath.img`), with the size it carries.
fn unlinked(set: &ImageSet, id: u32) -> String {
    let Some(remap) = set.remaps.iter().find(|m| m.orig_id == id) else { return String::new() };
    match set.ghosts.get(&remap.remap_id) {
        Some((_, data)) => {
            let bytes: usize = data.iter().map(|(_, d)| d.len()).sum();
            format!(" [unlinked when dumped: made again for the restore, {bytes} bytes carried]")
        }
        None => format!(" [unlinked when dumped; ghost-file-{:x}.img is missing]", remap.remap_id),
    }
}

fn file_desc(f: &FileEntry) -> String {
    let t = FdType::try_from(f.r#type).map(FdType::crit_name).unwrap_or("?");
    if let Some(r) = &f.reg {
        let size = r.size.map(|s| format!(", {s} bytes")).unwrap_or_default();
        return format!(
            "{t} {} (flags {}, pos {}{size})",
            r.name,
            json::flags(u64::from(r.flags), json::RFILE_FLAGS),
            r.pos
        );
    }
    if let Some(p) = &f.pipe {
        return format!("{t} pipe:[{}] flags {:#x}", p.pipe_id, p.flags);
    }
    if let Some(p) = &f.fifo {
        return format!("{t} pipe:[{}]", p.pipe_id);
    }
    if let Some(i) = &f.isk {
        let proto = match i.proto {
            6 => "TCP",
            17 => "UDP",
            _ => "proto?",
        };
        let local = inet_addr(&i.src_addr, i.src_port);
        let peer = if i.dst_port != 0 { format!(" -> {}", inet_addr(&i.dst_addr, i.dst_port)) } else { String::new() };
        return format!("{t} {proto} {local}{peer} ({}) socket:[{}]", crate::set::tcp_state_name(i.state), i.ino);
    }
    if let Some(u) = &f.usk {
        let name = if u.name.is_empty() {
            String::new()
        } else if u.name[0] == 0 {
            format!(" @{}", String::from_utf8_lossy(&u.name[1..]))
        } else {
            format!(" {}", String::from_utf8_lossy(&u.name))
        };
        return format!("{t} socket:[{}]{name} peer socket:[{}]", u.ino, u.peer);
    }
    t.to_string()
}

/// An address as `inet_sk_entry` holds it (words in network byte order).
fn inet_addr(words: &[u32], port: u32) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match <[u8; 16]>::try_from(&bytes[..]) {
        Ok(b) => format!("[{}]:{port}", std::net::Ipv6Addr::from(b)),
        Err(_) => match <[u8; 4]>::try_from(&bytes[..]) {
            Ok(b) => format!("{}:{port}", std::net::Ipv4Addr::from(b)),
            Err(_) => format!("?:{port}"),
        },
    }
}

/// Whether `dir` holds a pre-dump (its inventory says so), which has
/// pages but no checkpoint around them.
fn is_pre_dump(dir: &Path) -> Result<bool> {
    match Image::read(&dir.join("inventory.img"))? {
        Image::Inventory(v) => Ok(v.first().is_some_and(|i| i.pre_dump_mode.is_some())),
        other => anyhow::bail!("inventory.img: a {} image where an INVENTORY image was expected", other.kind().name()),
    }
}

/// Where `dir`'s `parent` link points (read, never followed), if it has
/// one.
fn parent_link(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join("parent")).ok().map(|t| t.display().to_string())
}

/// A pre-dump: its processes and their pages, here and in the parent.
fn pre_dump_summary(dir: &Path) -> Result<String> {
    let mut s = String::new();
    let pstree = match Image::read(&dir.join("pstree.img")) {
        Ok(Image::Pstree(v)) => v,
        _ => Vec::new(),
    };
    let _ = writeln!(
        s,
        "pre-dump {}: {} processes (pages only; a dump with --prev-images-dir builds on it)",
        dir.display(),
        pstree.len()
    );
    if let Some(t) = parent_link(dir) {
        let _ = writeln!(s, "parent: {t}");
    }
    for e in &pstree {
        let name = format!("pagemap-{}.img", e.pid);
        let Image::Pagemap(head, v) = Image::read(&dir.join(&name))? else {
            anyhow::bail!("{name}: not a pagemap image");
        };
        let present = pages_with(&v, pe::PRESENT);
        let _ = writeln!(
            s,
            "process {}: {present} pages ({} KiB) in pages-{}.img, {} in the parent",
            e.pid,
            present.saturating_mul(PAGE_SIZE) / 1024,
            head.pages_id,
            pages_with(&v, pe::PARENT)
        );
    }
    Ok(s)
}

fn summary(set: &ImageSet) -> String {
    let mut s = String::new();
    let n_threads: usize = set.processes.iter().map(|p| p.threads.len()).sum();
    let _ = writeln!(
        s,
        "checkpoint {} (image version {}): {} processes, {} threads, {} files",
        set.dir.display(),
        set.inventory.img_version,
        set.processes.len(),
        n_threads,
        set.files.len()
    );
    if let Some(t) = parent_link(&set.dir) {
        let _ = writeln!(s, "parent: {t} (pages unchanged since are there)");
    }
    for z in &set.zombies {
        let code = z.core.tc.as_ref().map_or(0, |tc| tc.exit_code);
        let _ = writeln!(
            s,
            "zombie {}: ppid {} pgid {} sid {}, wait status {code:#x}",
            z.pstree.pid, z.pstree.ppid, z.pstree.pgid, z.pstree.sid
        );
    }
    for p in &set.processes {
        let arch = p.threads.first().and_then(|t| crate::validate::arch_of(t.core.mtype)).unwrap_or("?");
        let _ = writeln!(
            s,
            "process {} ({}), {arch}: ppid {} pgid {} sid {}",
            p.pstree.pid,
            p.comm().unwrap_or("?"),
            p.pstree.ppid,
            p.pstree.pgid,
            p.pstree.sid
        );
        for t in &p.threads {
            let _ = writeln!(s, "  thread {}: {}", t.tid, core_line(&t.core));
        }
        let present = pages_with(&p.pagemap, pe::PRESENT);
        let lazy = pages_with(&p.pagemap, pe::LAZY);
        let parent = match pages_with(&p.pagemap, pe::PARENT) {
            0 => String::new(),
            n => format!("; {n} pages in the parent"),
        };
        let is_guard = |v: &&VmaEntry| v.status & vma_status::AREA_GUARD != 0;
        let guards = p.mm.vmas.iter().filter(is_guard).count();
        let _ = writeln!(
            s,
            "  {} memory areas{}; {present} pages ({} KiB) in {}, {lazy} of them lazy-capable{parent}",
            p.mm.vmas.len() - guards,
            if guards > 0 { format!(" and {guards} guard regions") } else { String::new() },
            present.saturating_mul(PAGE_SIZE) / 1024,
            file_name(&p.pages)
        );
        for v in p.mm.vmas.iter().filter(|v| !is_guard(v)) {
            let file = u32::try_from(v.shmid).ok().and_then(|id| set.file(id)).and_then(|f| f.reg.as_ref());
            // Runs may span areas: count each run's overlap with this one.
            let bytes: u64 = p
                .pagemap
                .iter()
                .filter(|e| e.pe_flags() & pe::PRESENT != 0)
                .map(|e| {
                    let end = e.vaddr.saturating_add(e.pages().saturating_mul(PAGE_SIZE));
                    end.min(v.end).saturating_sub(e.vaddr.max(v.start))
                })
                .fold(0u64, u64::saturating_add);
            let pages = bytes / PAGE_SIZE;
            let _ = writeln!(s, "    {} [{pages} pages]", vma_line(v, file.map(|r| r.name.as_str())));
        }
        for v in p.mm.vmas.iter().filter(is_guard) {
            let _ = writeln!(s, "    {:#014x}-{:#014x} guard region (MADV_GUARD_INSTALL)", v.start, v.end);
        }
        for f in &p.fds {
            let what = set.file(f.id).map(file_desc).unwrap_or_else(|| format!("missing file {}", f.id));
            // A FIFO's path is an entry of its own.
            let path_id = set.file(f.id).and_then(|e| e.fifo.as_ref()).and_then(|x| x.regf_id).unwrap_or(f.id);
            let _ = writeln!(s, "  fd {}: {what}{}", f.fd, unlinked(set, path_id));
        }
        if let Some(cwd) = set.file(p.fs.cwd_id).and_then(|f| f.reg.as_ref()) {
            let _ = writeln!(s, "  cwd {}{}", cwd.name, unlinked(set, p.fs.cwd_id));
        }
    }
    for ns in &set.ipc {
        for seg in &ns.shm {
            let d = &seg.entry.desc;
            let _ = writeln!(
                s,
                "ipc namespace {}: shm key {:#x} id {} size {} mode {:o}{}",
                ns.id,
                d.key,
                d.id,
                seg.entry.size,
                d.mode,
                if seg.pages.is_some() { " (contents in pages)" } else { "" }
            );
        }
    }
    if let Some(sc) = &set.seccomp
        && !sc.seccomp_filters.is_empty()
    {
        let _ = writeln!(s, "{} seccomp filters", sc.seccomp_filters.len());
    }
    s
}
