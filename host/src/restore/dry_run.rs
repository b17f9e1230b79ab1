//! `revenant restore --dry-run`: the plan a restore would carry out here,
//! per process, without creating anything. The bootstrap areas are built
//! in this process exactly as a restore builds them (same order, the
//! premap region reserved first, every area kept until all are built), so
//! their addresses are the ones a restore started now would use; then
//! they are released.
//!
//! Per process: the bootstrap area's pieces (blob code and data, its
//! stack, each thread's stack and signal frame, the argument block, the
//! parked runtime vDSO), the address space side by side (before: what the
//! new task inherits from revenant when it is created, bootstrap area and
//! premap region included; after: the dumped areas, each as the blob is
//! told to make it: mapped empty, moved from the premap region, filled
//! from which pages image at which offsets, lazy with `--lazy`, attached,
//! left to the kernel), the descriptors and where each comes from, and
//! the registers each thread returns with.
//!
//! The PIDs need not be free (a plan does not take them), and the plan is
//! the images' one: SysV ids a restore would renumber (`--shm-new-ids`)
//! and the host's descriptors of its objects are not known before a
//! restore makes them.

use std::path::Path;

use anyhow::{Context, Result};
use revenant_blob_abi::{VMA_FILL, VMA_LAZY, VMA_PREMAPPED, VMA_REPROTECT, VMA_SHM, VMA_SKIP};
use serde_json::{Value, json};

use super::from_images::{self, PlanOptions};
use super::plan::{Backing, ProcessPlan};
use super::{bootstrap, cow, spawn};
use crate::files::pipe::Given;

/// The plan of restoring `dir` with `opts`, as JSON (see [`text`]).
pub fn plan(dir: &Path, opts: &super::Options) -> Result<Value> {
    crate::kerndat::Kerndat::read_only();
    // `at_dump` leaves out only the checks that the PIDs are free.
    let popts = PlanOptions { at_dump: true, ..opts.plan.clone() };
    let plan = from_images::plan_dir(dir, &popts).with_context(|| format!("{}", dir.display()))?;
    let plans = &plan.processes;
    let helpers = spawn::helper_tids(plans, &plan.zombies);
    let premap = cow::plan(plans)?;
    let traced = crate::kerndat::Kerndat::get()?.ptrace;
    let mut areas = vec![];
    for (i, (p, &helper)) in plans.iter().zip(&helpers).enumerate() {
        let fds = spawn::service_fds(p, opts.lazy.is_some());
        let creds = super::creds::plan(p)?;
        let premapped = premap.as_ref().map_or_else(bootstrap::Premapped::default, |m| bootstrap::Premapped {
            region: (m.start, m.len),
            slots: &m.slots[i],
        });
        // Built as for a lazy restore, which marks what the page server
        // would fill; without --lazy those areas are filled by the blob.
        let modes = bootstrap::Modes { trap: traced, lazy: true, log: true };
        let area = bootstrap::build(p, &fds, modes, &creds, helper, premapped)
            .with_context(|| format!("building the bootstrap area of PID {}", p.pid))?;
        areas.push(area);
    }
    let before = crate::maps::own_maps()?;
    let processes: Vec<Value> = plans
        .iter()
        .zip(&areas)
        .map(|(p, area)| process(p, area, &before, premap.as_ref(), opts.lazy.is_some(), &plan.host.given_pipes))
        .collect();
    drop(areas);
    drop(premap);
    Ok(json!({
        "dir": dir.display().to_string(),
        "warnings": plan.warnings,
        "processes": processes,
    }))
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn prot(p: u32) -> String {
    use linux_raw_sys::general as g;
    let bit = |b: u32, c: char| if p & b != 0 { c } else { '-' };
    [bit(g::PROT_READ, 'r'), bit(g::PROT_WRITE, 'w'), bit(g::PROT_EXEC, 'x')].iter().collect()
}

fn process(
    p: &ProcessPlan,
    area: &bootstrap::Bootstrap,
    before: &[crate::maps::Mapping],
    premap: Option<&cow::Premap>,
    lazy: bool,
    given: &[Given],
) -> Value {
    let pieces: Vec<Value> =
        area.pieces.iter().map(|(what, s, e)| json!({"what": what, "start": hex(*s), "end": hex(*e)})).collect();
    let area_end = area.start + area.len;
    let before: Vec<Value> = before
        .iter()
        .map(|m| {
            let what = if m.start >= area.start && m.end <= area_end {
                format!("bootstrap area of PID {}", p.pid)
            } else if premap.is_some_and(|r| m.start >= r.start && m.end <= r.start + r.len) {
                "premap region (reserved)".to_string()
            } else if m.name.is_empty() {
                "revenant: anonymous".to_string()
            } else {
                format!("revenant: {}", m.name)
            };
            json!({"start": hex(m.start), "end": hex(m.end), "what": what})
        })
        .collect();
    let after: Vec<Value> = p.vmas.iter().zip(&area.vmas).map(|(v, b)| vma(p, v, b, lazy)).collect();
    let threads: Vec<Value> = p
        .threads
        .iter()
        .map(|t| {
            let (ip, sp) = match &t.regs {
                crate::regs::Regs::X86_64(r) => (r.ip, r.sp),
                crate::regs::Regs::Arm(r) => (u64::from(r.r[15]), u64::from(r.r[13])),
            };
            json!({"tid": t.tid, "ip": hex(ip), "sp": hex(sp)})
        })
        .collect();
    json!({
        "pid": p.pid,
        "ppid": p.ppid,
        "comm": String::from_utf8_lossy(&p.comm).trim_end_matches('\0'),
        "pages": p.pages.iter().map(|f| f.describe()).collect::<Vec<_>>(),
        "bootstrap": {
            "start": hex(area.start),
            "end": hex(area_end),
            "entry": hex(area.entry),
            "stack_top": hex(area.stack_top),
            "args": hex(area.args),
            "unmapped_after": hex(area.start + area.unmap_len),
            "vdso": area.vdso,
            "pieces": pieces,
        },
        "premap": premap.map(|r| json!({"start": hex(r.start), "end": hex(r.start + r.len)})),
        "before": before,
        "after": after,
        "fds": fds(p, given),
        "threads": threads,
    })
}

/// One dumped area and what the blob does to make it.
fn vma(p: &ProcessPlan, v: &super::plan::VmaPlan, b: &revenant_blob_abi::Vma, lazy: bool) -> Value {
    use linux_raw_sys::general as g;
    let backing = match &v.backing {
        Backing::Anon => "anonymous".to_string(),
        Backing::File { path, .. } => format!("file {} at offset {:#x}", path.display(), v.pgoff),
        Backing::Vdso => "vDSO".into(),
        Backing::Vvar => "vvar".into(),
        Backing::Vsyscall => "vsyscall".into(),
        Backing::SysvShm { id, .. } => format!("SysV segment {id}"),
        Backing::Shmem { shmid } => format!("shared memory object {shmid:#x} at offset {:#x}", v.pgoff),
    };
    let how = if b.how & VMA_PREMAPPED != 0 {
        format!("moved from the premap region at {:#x}", b.from)
    } else if b.how & VMA_SHM != 0 {
        "attached".into()
    } else if b.how & VMA_REPROTECT != 0 {
        "part of the attachment before it, re-protected".into()
    } else if b.how & VMA_SKIP != 0 && v.backing == Backing::Vsyscall {
        "the kernel's own page, left as it is".into()
    } else if b.how & VMA_SKIP != 0 {
        "not mapped: the runtime one moves here".into()
    } else if b.how & VMA_LAZY != 0 {
        if lazy { "mapped, filled by the page server".into() } else { "mapped and filled".into() }
    } else if b.how & VMA_FILL != 0 {
        "mapped and filled".into()
    } else {
        "mapped, no pages".into()
    };
    // Pages of areas made otherwise (the vDSO, SysV attachments) are not read.
    let read = b.how & (VMA_FILL | VMA_LAZY | VMA_PREMAPPED) != 0;
    let fills: Vec<Value> = p
        .page_runs
        .iter()
        .filter(|r| read && r.addr < v.end && r.addr + r.len > v.start)
        .map(|r| {
            let (lo, hi) = (r.addr.max(v.start), (r.addr + r.len).min(v.end));
            json!({"start": hex(lo), "end": hex(hi), "offset": hex(r.file_offset + (lo - r.addr))})
        })
        .collect();
    json!({
        "start": hex(v.start),
        "end": hex(v.end),
        "prot": prot(v.prot),
        "shared": v.flags & g::MAP_SHARED != 0,
        "backing": backing,
        "how": how,
        "lazy_with_flag": b.how & VMA_LAZY != 0,
        "fill": fills,
    })
}

/// Every descriptor of `p` and where it comes from.
fn fds(p: &ProcessPlan, given: &[Given]) -> Vec<Value> {
    let mut out: Vec<(i32, String)> = vec![];
    for f in &p.fds {
        let from = if f.tty.is_some() {
            format!("terminal {}, opened by the host", f.path.display())
        } else if f.socket {
            format!("socket (files.img id {}), made by the host", f.id)
        } else if f.shmem.is_some() {
            format!("memfd (files.img id {}), made by the host", f.id)
        } else if let Some(g) = &f.ghost {
            let how = if g.tmpfile {
                "made by O_TMPFILE: made so again in its directory"
            } else if g.link_from.is_some() {
                "opened by this name, unlinked since: linked there again for the restore, then unlinked"
            } else {
                "unlinked: made again there, then unlinked"
            };
            format!("{} ({how})", f.path.display())
        } else if f.shared_anon.is_some() {
            format!("{} (files.img id {}, shared by several processes), made by the host", f.path.display(), f.id)
        } else if f.fifo.is_some() {
            format!("FIFO {}", f.path.display())
        } else {
            format!("{} (flags {:#o}, position {})", f.path.display(), f.flags, f.pos)
        };
        out.push((f.fd, from));
    }
    for pp in &p.pipes {
        for e in &pp.ends {
            let end = if e.write { "write" } else { "read" };
            let from = match given.iter().find(|g| g.pipe_id == pp.pipe_id) {
                Some(g) => format!(", opened from revenant's fd {} (--inherit-fd)", g.fd),
                None => String::new(),
            };
            out.extend(e.fds.iter().map(|(fd, _)| (*fd, format!("pipe:[{}], {end} end{from}", pp.pipe_id))));
        }
    }
    for m in &p.anon_fds {
        let kind = format!("{:?}", m.anon);
        let kind = kind.split(['(', ' ', '{']).next().unwrap_or("").to_string();
        out.push((m.fd, format!("{kind}, made by the task")));
        out.extend(m.dups.iter().map(|(fd, _)| (*fd, format!("{kind}, a copy of fd {}", m.fd))));
    }
    out.sort();
    out.into_iter().map(|(fd, from)| json!({"fd": fd, "from": from})).collect()
}

/// The plan in words: per process, the bootstrap area, the address space
/// before and after side by side, the descriptors and the threads.
pub fn text(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = format!("revenant restore --dry-run -D {}\n", s(&v["dir"]));
    for w in v["warnings"].as_array().into_iter().flatten() {
        out += &format!("warning: {}\n", s(w));
    }
    for p in v["processes"].as_array().into_iter().flatten() {
        let b = &p["bootstrap"];
        out += &format!("\nPID {} ({}), parent {}\n", p["pid"], s(&p["comm"]), p["ppid"]);
        out += &format!(
            "  bootstrap area {}-{} (entry {}, unmapped up to {} once restored)\n",
            s(&b["start"]),
            s(&b["end"]),
            s(&b["entry"]),
            s(&b["unmapped_after"])
        );
        for piece in b["pieces"].as_array().into_iter().flatten() {
            out += &format!("    {}-{}  {}\n", s(&piece["start"]), s(&piece["end"]), s(&piece["what"]));
        }
        out += &format!("  {}\n", s(&b["vdso"]));
        if let Some(r) = p["premap"].as_object() {
            out += &format!("  premap region {}-{}\n", s(&r["start"]), s(&r["end"]));
        }
        out += &format!(
            "  address space: {:<64}| after (pages from {})\n",
            "before (inherited from revenant)",
            p["pages"].as_array().into_iter().flatten().map(s).collect::<Vec<_>>().join(", ")
        );
        let mut rows: Vec<(u64, String)> = vec![];
        let addr = |v: &Value| u64::from_str_radix(s(v).trim_start_matches("0x"), 16).unwrap_or(0);
        for m in p["before"].as_array().into_iter().flatten() {
            let cell = format!("{}-{} {}", s(&m["start"]), s(&m["end"]), s(&m["what"]));
            rows.push((addr(&m["start"]), format!("  {cell:<79}|")));
        }
        for a in p["after"].as_array().into_iter().flatten() {
            let lazy = if a["lazy_with_flag"].as_bool() == Some(true) { " (lazy with --lazy)" } else { "" };
            let mut cell = format!(
                "{}-{} {} {} {}: {}{lazy}",
                s(&a["start"]),
                s(&a["end"]),
                s(&a["prot"]),
                if a["shared"].as_bool() == Some(true) { "shared" } else { "private" },
                s(&a["backing"]),
                s(&a["how"])
            );
            let fills: Vec<String> = a["fill"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{}-{} from offset {}", s(&f["start"]), s(&f["end"]), s(&f["offset"])))
                .collect();
            if !fills.is_empty() {
                cell += &format!("; pages {}", fills.join(", "));
            }
            rows.push((addr(&a["start"]), format!("  {:<79}| {cell}", "")));
        }
        // The area stays until the host unmaps it, after the blob's sigreturn.
        let cell = format!("{}-{} bootstrap area, until the host unmaps it", s(&b["start"]), s(&b["unmapped_after"]));
        rows.push((addr(&b["start"]), format!("  {:<79}| {cell}", "")));
        rows.sort_by_key(|r| r.0);
        rows.iter().for_each(|r| out += &format!("{}\n", r.1.trim_end()));
        out += "  descriptors:\n";
        for f in p["fds"].as_array().into_iter().flatten() {
            out += &format!("    fd {}: {}\n", f["fd"], s(&f["from"]));
        }
        out += "  threads return with:\n";
        for t in p["threads"].as_array().into_iter().flatten() {
            out += &format!("    TID {}: ip {} sp {}\n", t["tid"], s(&t["ip"]), s(&t["sp"]));
        }
    }
    out
}
