//! `revenant show`: a readable summary of an image file or a checkpoint.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::framing::Reader;
use crate::magic::Kind;
use crate::set::ImageSet;

/// A summary of `path`: a checkpoint directory or one image file.
pub fn show(path: &Path) -> Result<String> {
    if path.is_dir() {
        return Ok(summary(&ImageSet::load(path)?));
    }
    let data = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut r = Reader::new(&data).with_context(|| path.display().to_string())?;
    let mut sizes = Vec::new();
    while let Some(e) = r.next_raw().with_context(|| path.display().to_string())? {
        sizes.push(e.len());
        // Segment contents follow their entry unless kept in pagemaps.
        if r.kind == Kind::IpcnsShm {
            break;
        }
    }
    let mut s = format!("{}: {} image, {} entries\n", path.display(), r.kind.name(), sizes.len());
    for (i, n) in sizes.iter().enumerate() {
        let _ = writeln!(s, "  entry {i}: {n} bytes");
    }
    Ok(s)
}

fn summary(set: &ImageSet) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "checkpoint {} (image version {})", set.dir.display(), set.inventory.img_version);
    for p in &set.processes {
        let tc = p.threads.first().and_then(|t| t.core.tc.as_ref());
        let comm = tc.map(|t| t.comm.as_str()).unwrap_or("?");
        let _ = writeln!(
            s,
            "process {} ({comm}): ppid {} pgid {} sid {}, threads {:?}",
            p.pstree.pid, p.pstree.ppid, p.pstree.pgid, p.pstree.sid, p.pstree.threads
        );
        let present: u64 = p.pagemap.iter().filter(|e| e.flags.unwrap_or(4) & 4 != 0).map(|e| e.pages()).sum();
        let _ = writeln!(s, "  {} memory areas, {present} pages in {}", p.mm.vmas.len(), p.pages.display());
        for v in &p.mm.vmas {
            let file = set
                .file(v.shmid as u32)
                .and_then(|f| f.reg.as_ref())
                .filter(|_| v.status & 0xc0 != 0)
                .map(|r| r.name.as_str())
                .unwrap_or("");
            let _ = writeln!(
                s,
                "    {:#014x}-{:#014x} {}{}{} status {:#x} {file}",
                v.start,
                v.end,
                if v.prot & 1 != 0 { 'r' } else { '-' },
                if v.prot & 2 != 0 { 'w' } else { '-' },
                if v.prot & 4 != 0 { 'x' } else { '-' },
                v.status
            );
        }
        for f in &p.fds {
            let what = set
                .file(f.id)
                .map(|e| match (&e.reg, &e.pipe) {
                    (Some(r), _) => r.name.clone(),
                    (_, Some(pp)) => format!("pipe:[{}]", pp.pipe_id),
                    _ => format!("type {}", e.r#type),
                })
                .unwrap_or_else(|| "?".into());
            let _ = writeln!(s, "  fd {}: {what}", f.fd);
        }
    }
    s
}
