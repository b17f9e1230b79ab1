//! `revenant show --diff DIR1 DIR2`: what changed between two checkpoints
//! of the same tree, for a user comparing two moments of one program:
//! processes and threads that came or went, every field of a thread's
//! state that differs (registers first among them), memory areas added,
//! removed or changed, which pages hold different bytes (and where), and
//! descriptors.
//!
//! Pages are compared byte for byte, one page at a time from both pages
//! images, so the memory used does not grow with the checkpoints. Pages
//! kept in a parent checkpoint (incremental dumps) are counted, not read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::file::ImageFile;
use crate::json::Json;
use crate::messages::pe;
use crate::proto::Proto;
use crate::{ImageSet, PAGE_SIZE, Process};

pub fn diff(a: &Path, b: &Path) -> Result<String> {
    let (sa, sb) = (ImageSet::load(a)?, ImageSet::load(b)?);
    let mut out = format!("--- {}\n+++ {}\n", a.display(), b.display());
    let pids = |s: &ImageSet| s.processes.iter().map(|p| p.pid()).collect::<Vec<_>>();
    let (pa, pb) = (pids(&sa), pids(&sb));
    either_side(&mut out, "processes", &pa, &pb);
    for p in &sa.processes {
        if let Some(q) = sb.process(p.pid()) {
            process(&mut out, p, q).with_context(|| format!("process {}", p.pid()))?;
        }
    }
    Ok(out)
}

/// "same" or what is only on one side.
fn either_side<T: PartialEq + std::fmt::Display>(out: &mut String, what: &str, a: &[T], b: &[T]) {
    let gone: Vec<String> = a.iter().filter(|x| !b.contains(x)).map(|x| x.to_string()).collect();
    let new: Vec<String> = b.iter().filter(|x| !a.contains(x)).map(|x| x.to_string()).collect();
    if gone.is_empty() && new.is_empty() {
        let all: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        let _ = writeln!(out, "{what}: same ({})", all.join(" "));
    } else {
        let _ = writeln!(out, "{what}: gone {:?}, new {:?}", gone, new);
    }
}

fn process(out: &mut String, a: &Process, b: &Process) -> Result<()> {
    let _ = writeln!(out, "process {}:", a.pid());
    let tids = |p: &Process| p.threads.iter().map(|t| t.tid).collect::<Vec<_>>();
    let mut sub = String::new();
    either_side(&mut sub, "threads", &tids(a), &tids(b));
    for t in &a.threads {
        let Some(u) = b.threads.iter().find(|u| u.tid == t.tid) else { continue };
        let changes = fields(&t.core.to_json(false), &u.core.to_json(false));
        if changes.is_empty() {
            let _ = writeln!(sub, "thread {}: same state", t.tid);
        } else {
            let _ = writeln!(sub, "thread {}: {} fields differ", t.tid, changes.len());
            for c in changes {
                let _ = writeln!(sub, "  {c}");
            }
        }
    }
    areas(&mut sub, a, b);
    pages(&mut sub, a, b)?;
    let fds = |p: &Process| p.fds.iter().map(|f| (f.fd, f.to_json(false))).collect::<BTreeMap<_, _>>();
    let (fa, fb) = (fds(a), fds(b));
    let mut fd_lines = vec![];
    for (fd, j) in &fa {
        match fb.get(fd) {
            None => fd_lines.push(format!("- fd {fd}")),
            Some(k) if k != j => fd_lines.push(format!("~ fd {fd}: {}", fields(j, k).join("; "))),
            _ => {}
        }
    }
    fd_lines.extend(fb.keys().filter(|fd| !fa.contains_key(fd)).map(|fd| format!("+ fd {fd}")));
    if fd_lines.is_empty() {
        let _ = writeln!(sub, "fds: same ({})", fa.len());
    } else {
        let _ = writeln!(sub, "fds: {} differ", fd_lines.len());
        for l in fd_lines {
            let _ = writeln!(sub, "  {l}");
        }
    }
    for l in sub.lines() {
        let _ = writeln!(out, "  {l}");
    }
    Ok(())
}

/// Leaves of two JSON trees that differ, as `path: old -> new`.
fn fields(a: &Json, b: &Json) -> Vec<String> {
    let mut out = vec![];
    walk("", a, b, &mut out);
    out
}

fn walk(path: &str, a: &Json, b: &Json, out: &mut Vec<String>) {
    let at = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (a, b) {
        (Json::Obj(x), Json::Obj(y)) => {
            for (k, v) in x {
                match y.iter().find(|(l, _)| l == k) {
                    Some((_, w)) => walk(&at(k), v, w, out),
                    None => out.push(format!("{}: {} -> (none)", at(k), short(v))),
                }
            }
            for (k, w) in y.iter().filter(|(l, _)| !x.iter().any(|(k, _)| k == l)) {
                out.push(format!("{}: (none) -> {}", at(k), short(w)));
            }
        }
        (Json::Arr(x), Json::Arr(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                walk(&at(&i.to_string()), v, w, out);
            }
            if x.len() != y.len() {
                out.push(format!("{}: {} entries -> {}", if path.is_empty() { "." } else { path }, x.len(), y.len()));
            }
        }
        _ if a != b => out.push(format!("{path}: {} -> {}", short(a), short(b))),
        _ => {}
    }
}

fn short(j: &Json) -> String {
    let s = j.pretty().replace('\n', " ");
    if s.len() > 80 { format!("{}...", &s[..s.floor_char_boundary(77)]) } else { s }
}

fn areas(out: &mut String, a: &Process, b: &Process) {
    let line = |v: &crate::messages::VmaEntry| {
        format!("{:#x}-{:#x} prot {:#x} flags {:#x} status {:#x}", v.start, v.end, v.prot, v.flags, v.status)
    };
    let la: Vec<String> = a.mm.vmas.iter().map(line).collect();
    let lb: Vec<String> = b.mm.vmas.iter().map(line).collect();
    let gone: Vec<&String> = la.iter().filter(|l| !lb.contains(l)).collect();
    let new: Vec<&String> = lb.iter().filter(|l| !la.contains(l)).collect();
    if gone.is_empty() && new.is_empty() {
        let _ = writeln!(out, "areas: same ({})", la.len());
        return;
    }
    let _ = writeln!(out, "areas: {} gone or changed, {} new or changed", gone.len(), new.len());
    for l in gone {
        let _ = writeln!(out, "  - {l}");
    }
    for l in new {
        let _ = writeln!(out, "  + {l}");
    }
}

/// Where each page of a process is: its offset in the pages image, or in
/// the parent checkpoint.
enum Where {
    Here(u64),
    Parent,
}

/// Every dumped page of `p`, by address. Bounded by the pages image: a
/// pagemap claiming more present pages than the image holds is refused.
fn page_map(p: &Process, image_len: u64) -> Result<BTreeMap<u64, Where>> {
    let mut m = BTreeMap::new();
    let (mut offset, mut parent) = (0u64, 0u64);
    for (i, e) in p.pagemap.iter().enumerate() {
        let flags = e.pe_flags();
        let n = e.pages();
        let present = flags & pe::PRESENT != 0;
        let in_parent = flags & pe::PARENT != 0;
        if present && offset.saturating_add(n.saturating_mul(PAGE_SIZE)) > image_len {
            bail!("pagemap-{}.img: entry {i}: nr_pages {n}: more pages than the pages image holds", p.pid());
        }
        if in_parent {
            parent = parent.saturating_add(n);
            if parent > 1 << 40 {
                bail!("pagemap-{}.img: entry {i}: nr_pages {n}: more pages in the parent than can be", p.pid());
            }
        }
        for k in 0..n.min(if present || in_parent { n } else { 0 }) {
            let addr = e.vaddr.saturating_add(k * PAGE_SIZE);
            if present {
                m.insert(addr, Where::Here(offset));
                offset += PAGE_SIZE;
            } else {
                m.insert(addr, Where::Parent);
            }
        }
    }
    Ok(m)
}

fn pages(out: &mut String, a: &Process, b: &Process) -> Result<()> {
    let (fa, fb) = (ImageFile::open(&a.pages)?, ImageFile::open(&b.pages)?);
    let (ma, mb) = (page_map(a, fa.size)?, page_map(b, fb.size)?);
    let (mut differ, mut gone, mut new, mut same, mut unread) = (vec![], vec![], vec![], 0u64, 0u64);
    let (mut x, mut y) = (vec![0u8; PAGE_SIZE as usize], vec![0u8; PAGE_SIZE as usize]);
    for (addr, w) in &ma {
        match (w, mb.get(addr)) {
            (_, None) => gone.push(*addr),
            (Where::Here(i), Some(Where::Here(j))) => {
                fa.file.read_exact_at(&mut x, *i).with_context(|| format!("{}", a.pages.display()))?;
                fb.file.read_exact_at(&mut y, *j).with_context(|| format!("{}", b.pages.display()))?;
                if x == y { same += 1 } else { differ.push(*addr) }
            }
            _ => unread += 1,
        }
    }
    new.extend(mb.keys().filter(|k| !ma.contains_key(k)));
    let _ = writeln!(
        out,
        "pages: {} differ, {} gone, {} new, {same} same{}",
        differ.len(),
        gone.len(),
        new.len(),
        if unread > 0 { format!(", {unread} kept in a parent checkpoint (not compared)") } else { String::new() }
    );
    for (what, list) in [("differ", &differ), ("gone", &gone), ("new", &new)] {
        if !list.is_empty() {
            let _ = writeln!(out, "  {what}: {}", ranges(list));
        }
    }
    Ok(())
}

/// Sorted page addresses as `start-end (n)` runs, the first 20.
fn ranges(addrs: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = vec![];
    for &a in addrs {
        match runs.last_mut() {
            Some((_, end)) if *end == a => *end += PAGE_SIZE,
            _ => runs.push((a, a + PAGE_SIZE)),
        }
    }
    let mut s: Vec<String> =
        runs.iter().take(20).map(|(a, e)| format!("{a:#x}-{e:#x} ({})", (e - a) / PAGE_SIZE)).collect();
    if runs.len() > 20 {
        s.push(format!("and {} more runs", runs.len() - 20));
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_leaves_are_named_by_their_path() {
        let obj = |ip: u64, n: usize| {
            Json::Obj(vec![
                ("gpregs".into(), Json::Obj(vec![("ip".into(), Json::Uint(ip)), ("sp".into(), Json::Uint(8))])),
                ("list".into(), Json::Arr(vec![Json::Uint(1); n])),
            ])
        };
        assert!(fields(&obj(1, 2), &obj(1, 2)).is_empty());
        assert_eq!(fields(&obj(1, 2), &obj(2, 2)), ["gpregs.ip: 1 -> 2"]);
        assert_eq!(fields(&obj(1, 2), &obj(1, 3)), ["list: 2 entries -> 3"]);
    }

    #[test]
    fn page_runs_are_merged_and_counted() {
        let p = PAGE_SIZE;
        assert_eq!(ranges(&[0x1000, 0x1000 + p, 0x9000]), "0x1000-0x3000 (2), 0x9000-0xa000 (1)");
    }
}
