//! The previous link of an iterative dump, as the next link (a pre-dump
//! or the final dump with `--prev-images-dir`) sees it: the directory,
//! the tracking its holder hands over, and which pages its pagemaps hold.
//!
//! A page is left to the parent only when everything agrees (see
//! `track::Prev::source`); whatever cannot be proven is dumped in full:
//! no holder (killed, or gone with the tree), a process the holder did
//! not track or that is not the same process any more (its pidfd no
//! longer reaches it), an area not registered with the handed-over
//! userfaultfd, a page the parent's pagemap lacks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use revenant_images::Image;
use revenant_images::messages::pe;

use super::Log;
use super::maps::{PAGE, Vma};
use super::track::{Prev, Tracker};
use super::track_holder::{self, Taken};
use crate::imgchain::Link;
use crate::imgdir::ImageDir;

/// The previous link, opened.
#[derive(Debug)]
pub struct PrevLink {
    link: Link,
    /// As `--prev-images-dir` gave it: what the `parent` link says.
    pub target: PathBuf,
    taken: Option<Taken>,
}

impl PrevLink {
    /// Opens `target` (relative to the image directory `dir`, as CRIU
    /// takes it) and takes its holder's tracking, if a holder answers.
    pub fn open(dir: &ImageDir, target: &Path, log: &mut Log) -> Result<PrevLink> {
        let here = Link::open(dir.path())?;
        let link = here.resolve(target).with_context(|| {
            format!(
                "--prev-images-dir {}: the previous images, as a path relative to the image directory {}",
                target.display(),
                dir.path().display()
            )
        })?;
        let inventory = format!("{}/inventory.img", link.path.display());
        let Image::Inventory(inv) = Image::read(&link.file("inventory.img"))
            .with_context(|| format!("--prev-images-dir {}: reading {inventory}", target.display()))?
        else {
            bail!("{inventory}: not an inventory image");
        };
        let run_id = inv.first().and_then(|i| i.dump_criu_run_id.clone());
        let name = track_holder::name(link.dev, link.ino);
        let mut taken = track_holder::take(&name)?;
        let mismatched = taken.take_if(|t| Some(&t.run_id) != run_id.as_ref());
        match (&taken, mismatched) {
            (Some(t), _) => {
                log.line(1, &format!("took the write tracking of {} processes from @{name}", t.trackers.len()))
            }
            // A holder of an earlier pre-dump whose directory's inode this
            // one reuses: its tracking says nothing about these images.
            // Left to serve (or to exit with its tree).
            (None, Some(t)) => log.line(
                0,
                &format!(
                    "warning: the holder at @{name} tracks pre-dump {}, but {inventory} is of {}: every page is \
                     dumped in full",
                    t.run_id,
                    run_id.as_deref().unwrap_or("no pre-dump")
                ),
            ),
            (None, None) => log.line(
                0,
                &format!(
                    "warning: no holder of the write tracking answers at @{name} (killed, or its processes are gone): \
                     every page is dumped in full"
                ),
            ),
        }
        Ok(PrevLink { link, target: target.to_path_buf(), taken })
    }

    /// The tracker handed over for `pid`, if it still names that process.
    pub fn tracker(&self, pid: i32) -> Option<&Tracker> {
        self.taken.as_ref()?.trackers.iter().find(|t| t.pid == pid && t.alive())
    }

    /// What the previous link proves about process `pid` with areas
    /// `vmas` (registered again here: the proof of ownership), or `None`
    /// if nothing.
    pub fn prev_for(&self, pid: i32, vmas: &[Vma]) -> Result<Option<Prev>> {
        let Some(t) = self.tracker(pid) else { return Ok(None) };
        let tracked = t.register(vmas);
        let held = held_pages(&self.link, pid)?;
        Ok(Some(Prev { tracked, held }))
    }

    /// Takes the handed-over trackers out, for a pre-dump that re-arms
    /// them, and lets the old holder go: once re-armed, its tracking no
    /// longer says what changed since its own link.
    pub fn take_trackers(&mut self) -> Vec<Tracker> {
        self.taken.take().map(Taken::into_trackers).unwrap_or_default()
    }

    /// The dump succeeded: the holder may go.
    pub fn done(mut self) {
        if let Some(t) = self.taken.take() {
            t.done();
        }
    }
}

/// The page ranges `[start, end)` link `link`'s pagemap of `pid` holds,
/// here or further up, in order; empty if it has none.
pub fn held_pages(link: &Link, pid: i32) -> Result<Vec<(u64, u64)>> {
    let path = link.file(&format!("pagemap-{pid}.img"));
    if !revenant_images::file::exists(&path)? {
        return Ok(Vec::new());
    }
    let name = format!("{}/pagemap-{pid}.img", link.path.display());
    let Image::Pagemap(_, entries) = Image::read(&path).with_context(|| name.clone())? else {
        bail!("{name}: not a pagemap image");
    };
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if e.pe_flags() & (pe::PRESENT | pe::PARENT) == 0 {
            continue;
        }
        let end = e.pages().checked_mul(PAGE).and_then(|l| e.vaddr.checked_add(l));
        let Some(end) = end else { bail!("{name}: entry {}: nr_pages {} overflows", i + 1, e.pages()) };
        match out.last_mut() {
            Some(last) if last.1 == e.vaddr => last.1 = end,
            Some(last) if last.1 > e.vaddr => bail!("{name}: entry {}: vaddr {:#x} is out of order", i + 1, e.vaddr),
            _ => out.push((e.vaddr, end)),
        }
    }
    Ok(out)
}
