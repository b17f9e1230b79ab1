//! `revenant pre-dump`: a link of an iterative dump, taken while the tree
//! runs on.
//!
//! The tree is frozen only to read each process's areas and pagemap and
//! to arm write tracking (`track.rs`): a userfaultfd made inside each
//! process the first time, or the one the previous link's holder hands
//! over (`--prev-images-dir`), re-registered (the proof that its
//! protections are ours), read (pages still protected and held by the
//! previous link get `PE_PARENT` entries) and re-armed. Then the tree
//! runs again, and the pages are copied while it does
//! (`memory::copy_running`): a page written during the copy was
//! protected before the tree ran, so the next link sees it written and
//! copies it again.
//!
//! Like CRIU's pre-dump it writes the pages and their pagemaps
//! (`pagemap-PID.img`, `pages-N.img`), the inventory (with
//! `pre_dump_mode`; CRIU's 2, "read", is what process_vm_readv does) and,
//! beyond CRIU's, `pstree.img` (so `revenant show` can name the
//! processes), plus the `parent` link when it has a previous link. It is
//! no checkpoint on its own: only a final `dump --prev-images-dir` makes
//! one. Last, a holder (`track_holder.rs`) takes the tracking, and the
//! previous link's holder is let go.
//!
//! What a pre-dump does not do: it refuses neither files nor sockets nor
//! anything else the final dump would refuse (it reads memory only);
//! shared memory (shared anonymous, memfd, SysV) is left to the final
//! dump, which copies it whole.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use revenant_images::messages::*;
use revenant_images::{Kind, Writer};

use super::freeze::Frozen;
use super::maps::PAGE;
use super::pagemap::{PE_LAZY, PE_PARENT, PE_PRESENT, Run};
use super::prev::PrevLink;
use super::track::{Prev, Tracker};
use super::{DumpOptions, HostFacts, Log, track, track_holder};
use crate::imgdir::ImageDir;
use crate::procfs;

/// CRIU's `pre_dump_mode` for pages read with `process_vm_readv`.
const PRE_DUMP_READ: u32 = 2;

/// What to do.
#[derive(Debug, Clone, Default)]
pub struct PreDumpOptions {
    /// The previous link, relative to the image directory (CRIU's
    /// `--prev-images-dir`).
    pub prev_images_dir: Option<PathBuf>,
    /// 0 quiet .. 4 debug; lines go to `log`.
    pub verbosity: u32,
    pub log: Option<PathBuf>,
    /// Lines for the top of the log.
    pub notes: Vec<String>,
}

/// What a pre-dump wrote.
#[derive(Debug)]
pub struct PreDumped {
    /// By process: its PID and its pagemap entries.
    pub procs: Vec<(i32, Vec<Run>)>,
    /// How long the tree stood still.
    pub frozen_for: Duration,
    /// The process holding the tracking for the next link.
    pub holder: u32,
}

impl PreDumped {
    fn count(&self, flag: u32) -> u64 {
        self.procs.iter().flat_map(|p| &p.1).filter(|r| r.flags & flag != 0).map(|r| r.nr_pages).sum()
    }

    pub fn pages_written(&self) -> u64 {
        self.count(PE_PRESENT)
    }

    pub fn pages_in_parent(&self) -> u64 {
        self.count(PE_PARENT)
    }
}

/// One process, as read while the tree was frozen.
struct Frozen1 {
    pid: i32,
    ppid: i32,
    threads: Vec<i32>,
    runs: Vec<Run>,
    tracker: Tracker,
}

/// Pre-dumps the tree rooted at `pid` into `dir` (which must exist).
pub fn pre_dump(pid: i32, dir: &Path, opts: &PreDumpOptions) -> Result<PreDumped> {
    let mut log = Log::open(&DumpOptions {
        verbosity: opts.verbosity,
        log: opts.log.clone(),
        notes: opts.notes.clone(),
        ..Default::default()
    })?;
    let dir = ImageDir::open(dir)?;
    // What a dump killed here left; the next one removes it, whenever it fails.
    dir.remove_partial();
    track::check_kernel()?;
    let mut prev = opts.prev_images_dir.as_deref().map(|t| PrevLink::open(&dir, t, &mut log)).transpose()?;
    super::check_namespaces(pid)?;
    let host = HostFacts::get();
    let t0 = Instant::now();
    let frozen = Frozen::freeze(pid, false)?;
    log.line(1, &format!("froze {} processes in {:?}", frozen.procs.len(), t0.elapsed()));
    let read = read_frozen(&frozen, &host, prev.as_mut(), &mut log);
    let frozen_for = t0.elapsed();
    // Released whatever happened; on error `frozen` would do it as well.
    frozen.release()?;
    let procs = read?;
    log.line(1, &format!("the tree ran again after {frozen_for:?}"));
    let run_id = track_holder::run_id()?;
    let parent = prev.as_ref().map(|p| p.target.as_path());
    let (names, runs) = match write(&procs, &dir, parent, &run_id, &mut log) {
        Ok(w) => w,
        Err(e) => {
            dir.remove_partial();
            return Err(e);
        }
    };
    if let Err(e) = dir.commit(&names) {
        dir.remove_partial();
        return Err(e);
    }
    let name = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.path()).with_context(|| format!("stat {}", dir.path().display()))?;
        track_holder::name(m.dev(), m.ino())
    };
    let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
    let trackers: Vec<Tracker> = procs.into_iter().map(|p| p.tracker).collect();
    let holder = track_holder::start(&name, &run_id, &trackers).inspect_err(|_| dir.withdraw(&names))?;
    // A process of ours lingers: said at every log level.
    log.line(
        0,
        &format!(
            "write tracking held by process {holder} (@{name}) until a dump with --prev-images-dir naming this \
             directory takes it, or the tree exits"
        ),
    );
    let done = PreDumped { procs: pids.into_iter().zip(runs).collect(), frozen_for, holder };
    log.line(
        1,
        &format!(
            "pre-dump done: {} processes, {} pages, {} pages in the parent, frozen for {frozen_for:?}",
            done.procs.len(),
            done.pages_written(),
            done.pages_in_parent()
        ),
    );
    Ok(done)
}

/// Reads each process of the frozen tree and arms its tracking.
fn read_frozen(frozen: &Frozen, host: &HostFacts, prev: Option<&mut PrevLink>, log: &mut Log) -> Result<Vec<Frozen1>> {
    // Proofs first, while the handed-over protections still say what
    // changed since the previous link; then the old holder goes, since
    // re-arming below makes its tracking say something else.
    let mut since: Vec<(i32, Option<Prev>)> = Vec::new();
    let mut areas = Vec::new();
    for fp in &frozen.procs {
        super::check_namespaces(fp.pid)?;
        let ((), vmas, words) = super::areas_and_words(fp.pid, host, |_| Ok(()))?;
        since.push((fp.pid, prev.as_deref().map(|p| p.prev_for(fp.pid, &vmas)).transpose()?.flatten()));
        areas.push((vmas, words));
    }
    let mut inherited = prev.map(PrevLink::take_trackers).unwrap_or_default();
    let mut out = Vec::new();
    for ((fp, (vmas, words)), (pid, since)) in frozen.procs.iter().zip(areas).zip(since) {
        let runs = super::page_runs(&vmas, &words, &[], since.as_ref());
        // No lazy pages in a pre-dump's entries, as CRIU's.
        let runs = runs.into_iter().map(|r| Run { flags: r.flags & !PE_LAZY, ..r }).collect();
        let tracker = match inherited.iter().position(|t| t.pid == pid && since.is_some()) {
            Some(i) => inherited.swap_remove(i),
            None => {
                let regs = crate::regs::dump::gpregs(pid)?;
                let tramp = super::task::trampoline(pid, &vmas, &regs)?;
                Tracker::start(pid, super::task::for_thread(pid, pid, tramp))?
            }
        };
        let tracked = tracker.register(&vmas);
        tracker.protect(&tracked)?;
        log.line(
            2,
            &format!(
                "process {pid}: {} of {} areas tracked ({})",
                tracked.len(),
                vmas.len(),
                if since.is_some() { "inherited" } else { "new" }
            ),
        );
        out.push(Frozen1 { pid, ppid: fp.ppid, threads: fp.threads.clone(), runs, tracker });
    }
    Ok(out)
}

/// Copies the pages (the tree runs) and writes every image under its
/// temporary name; returns the names and each process's entries as
/// written.
fn write(
    procs: &[Frozen1],
    dir: &ImageDir,
    parent: Option<&Path>,
    run_id: &str,
    log: &mut Log,
) -> Result<(Vec<String>, Vec<Vec<Run>>)> {
    let mut names = Vec::new();
    let put = |name: String, w: &Writer| -> Result<String> {
        dir.create(&name).and_then(|mut f| f.write_all(w.bytes()).with_context(|| format!("writing {name}")))?;
        Ok(name)
    };
    let mut pstree = Writer::new(Kind::Pstree);
    let mut done = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let pages_id = i as u32 + 1;
        let here: Vec<Run> = p.runs.iter().filter(|r| r.flags & PE_PRESENT != 0).copied().collect();
        let t = Instant::now();
        let pages_name = format!("pages-{pages_id}.img");
        let mut w = BufWriter::with_capacity(1 << 20, dir.create(&pages_name)?);
        let (n, copied) = super::memory::copy_running(p.pid, &here, &mut w)?;
        w.flush().with_context(|| format!("writing {pages_name}"))?;
        drop(w);
        names.push(pages_name);
        log.line(2, &format!("process {}: {} pages copied while running, {:?}", p.pid, n / PAGE, t.elapsed()));
        let mut runs: Vec<Run> = p.runs.iter().filter(|r| r.flags & PE_PARENT != 0).copied().chain(copied).collect();
        runs.sort_by_key(|r| r.vaddr);
        let mut pm = Writer::new(Kind::Pagemap);
        pm.push(&PagemapHead { pages_id, ..Default::default() });
        for r in &runs {
            pm.push(&PagemapEntry {
                vaddr: r.vaddr,
                flags: Some(r.flags),
                nr_pages: Some(r.nr_pages),
                ..Default::default()
            });
        }
        names.push(put(format!("pagemap-{}.img", p.pid), &pm)?);
        let stat = procfs::stat(p.pid, p.pid)?;
        pstree.push(&PstreeEntry {
            pid: p.pid as u32,
            ppid: p.ppid as u32,
            pgid: stat.pgid as u32,
            sid: stat.sid as u32,
            threads: p.threads.iter().map(|&t| t as u32).collect(),
            ..Default::default()
        });
        done.push(runs);
    }
    names.push(put("pstree.img".into(), &pstree)?);
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).context("CLOCK_BOOTTIME")?;
    let inventory = InventoryEntry {
        img_version: 2,
        fdinfo_per_id: Some(true),
        // CRIU's uptime in microseconds, against which its next dump
        // tells a reused PID.
        dump_uptime: Some(boot.tv_sec() as u64 * 1_000_000 + boot.tv_nsec() as u64 / 1000),
        pre_dump_mode: Some(PRE_DUMP_READ),
        // What the holder says too: the next link checks both agree.
        dump_criu_run_id: Some(run_id.to_string()),
        ..Default::default()
    };
    names.push(put("inventory.img".into(), Writer::new(Kind::Inventory).push(&inventory))?);
    if let Some(p) = parent {
        dir.create_link("parent", p)?;
        names.push("parent".into());
    }
    Ok((names, done))
}
