//! Pages an iterative dump left to its parents (`PE_PARENT` entries),
//! found up the chain of `parent` links and read where they lie.
//!
//! For a process whose pagemap has parent entries, the host resolves every
//! such page in the nearest ancestor whose pagemap holds it present
//! ([`resolve`]; the ancestors come from `imgchain`, which follows the
//! links as hostile ground). Each page run then names the level whose
//! pages image holds it ([`runs`]): the restore reads each image in place,
//! held open since the chain was read, and copies nothing beforehand.
//! Nothing is written into any image directory. A page no ancestor holds
//! is refused before anything runs, naming the pagemap, its entry and the
//! page.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use revenant_images::Image;
use revenant_images::messages::{PagemapEntry, pe};

use super::plan::{PageRun, PagesFile};
use crate::imgchain;

const PAGE: u64 = 4096;

/// One link's pagemap of the process, with each present entry's place in
/// that link's pages image.
#[derive(Debug, Clone)]
pub struct Level {
    /// For messages: the pagemap image's path.
    pub name: String,
    pub pages: PathBuf,
    /// `pages`, opened while its directory was (its path goes through
    /// that directory's fd, which is closed once the chain is read).
    file: Option<std::sync::Arc<File>>,
    /// (vaddr, pages, flags, offset in `pages`), in address order.
    pub entries: Vec<(u64, u64, u32, u64)>,
}

impl Level {
    /// `entries` (a pagemap's runs after its head), checked for order and
    /// overflow; their offsets counted.
    pub fn new(name: String, pages: PathBuf, entries: &[PagemapEntry]) -> Result<Level> {
        let mut out = Vec::with_capacity(entries.len());
        let (mut offset, mut prev_end) = (0u64, 0u64);
        for (i, e) in entries.iter().enumerate() {
            let n = e.pages();
            let end = n.checked_mul(PAGE).and_then(|l| e.vaddr.checked_add(l));
            let Some(end) = end.filter(|_| n > 0 && e.vaddr % PAGE == 0 && e.vaddr >= prev_end) else {
                bail!("{name}: entry {}: vaddr {:#x} with nr_pages {n}: out of order or malformed", i + 1, e.vaddr);
            };
            out.push((e.vaddr, n, e.pe_flags(), offset));
            if e.pe_flags() & pe::PRESENT != 0 {
                offset += n * PAGE;
            }
            prev_end = end;
        }
        Ok(Level { name, pages, file: None, entries: out })
    }

    /// Bytes its pages image must hold.
    fn present_bytes(&self) -> u64 {
        self.entries.iter().filter(|e| e.2 & pe::PRESENT != 0).map(|e| e.1 * PAGE).sum()
    }
}

/// A piece of the process's memory and where its bytes are: in level
/// `level`'s pages image at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub addr: u64,
    pub pages: u64,
    pub level: usize,
    pub offset: u64,
}

/// Every present or parent page of `levels[0]` (the directory restored),
/// in address order, with the level holding it.
pub fn resolve(levels: &[Level]) -> Result<Vec<Piece>> {
    let top = &levels[0];
    let mut out = Vec::new();
    for (i, &(vaddr, n, flags, offset)) in top.entries.iter().enumerate() {
        if flags & pe::PARENT != 0 {
            let at = format!("{}: entry {}", top.name, i + 1);
            fill(levels, 1, vaddr, n, &at, &mut out)?;
        } else if flags & pe::PRESENT != 0 {
            out.push(Piece { addr: vaddr, pages: n, level: 0, offset });
        }
    }
    Ok(out)
}

/// The pages `[addr, addr + n pages)` from `levels[level]` up.
fn fill(levels: &[Level], level: usize, addr: u64, n: u64, at: &str, out: &mut Vec<Piece>) -> Result<()> {
    let Some(l) = levels.get(level) else {
        bail!(
            "{at}: the page at {addr:#x} is in the parent, but the chain ends after {} parents ({} last)",
            level - 1,
            levels[level - 1].name
        );
    };
    let end = addr + n * PAGE;
    let mut cur = addr;
    while cur < end {
        let i = l.entries.partition_point(|e| e.0 + e.1 * PAGE <= cur);
        let Some(&(vaddr, pages, flags, offset)) = l.entries.get(i).filter(|e| e.0 <= cur) else {
            bail!("{at}: the page at {cur:#x} is in the parent, but {} does not hold it", l.name);
        };
        let hi = end.min(vaddr + pages * PAGE);
        if flags & pe::PARENT != 0 {
            fill(levels, level + 1, cur, (hi - cur) / PAGE, at, out)?;
        } else if flags & pe::PRESENT != 0 {
            out.push(Piece { addr: cur, pages: (hi - cur) / PAGE, level, offset: offset + (cur - vaddr) });
        } else {
            bail!(
                "{at}: the page at {cur:#x} is in the parent, but {} has it neither present nor in its parent",
                l.name
            );
        }
        cur = hi;
    }
    Ok(())
}

/// The levels of process `pid` whose pagemap is `top` in `dir`: its own,
/// then each ancestor's, nearest first (an ancestor without a pagemap of
/// `pid` ends the chain there).
pub fn levels(dir: &Path, pid: u32, top: &[PagemapEntry], top_pages: &Path) -> Result<Vec<Level>> {
    let name = format!("pagemap-{pid}.img");
    let mut out = vec![Level::new(name.clone(), top_pages.to_path_buf(), top)?];
    out[0].file = Some(revenant_images::file::ImageFile::open(top_pages)?.file.into());
    for link in imgchain::ancestors(dir)? {
        let path = link.file(&name);
        let shown = format!("{}/{name}", link.path.display());
        if !revenant_images::file::exists(&path)? {
            break;
        }
        let Image::Pagemap(head, entries) = Image::read(&path).with_context(|| shown.clone())? else {
            bail!("{shown}: not a pagemap image");
        };
        let pages_name = format!("pages-{}.img", head.pages_id);
        let mut level = Level::new(shown, link.path.join(&pages_name), &entries)?;
        let f = revenant_images::file::ImageFile::open(&link.file(&pages_name))
            .with_context(|| level.pages.display().to_string())?;
        let size = f.size;
        level.file = Some(f.file.into());
        if size != level.present_bytes() {
            bail!(
                "{}/pages-{}.img: {size} bytes, but {} promises {} bytes",
                link.path.display(),
                head.pages_id,
                level.name,
                level.present_bytes()
            );
        }
        out.push(level);
    }
    Ok(out)
}

/// The page runs of `pieces` (from [`resolve`]), each reading from its
/// level's pages image (`file` is the level), and the images in level
/// order: every level's, read where it lies.
pub fn runs(levels: &[Level], pieces: &[Piece]) -> Result<(Vec<PagesFile>, Vec<PageRun>)> {
    let files = levels
        .iter()
        .enumerate()
        .map(|(i, l)| match (i, &l.file) {
            (0, _) => Ok(PagesFile::Image(l.pages.clone())),
            (_, Some(f)) => Ok(PagesFile::Parent { path: l.pages.clone(), file: f.clone() }),
            (_, None) => bail!("{}: not opened", l.pages.display()),
        })
        .collect::<Result<_>>()?;
    let mut runs: Vec<PageRun> = Vec::with_capacity(pieces.len());
    for p in pieces {
        let (file, len) = (p.level as u32, p.pages * PAGE);
        match runs.last_mut() {
            Some(r) if r.file == file && r.addr + r.len == p.addr && r.file_offset + r.len == p.offset => r.len += len,
            _ => runs.push(PageRun { addr: p.addr, len, file_offset: p.offset, file }),
        }
    }
    Ok((files, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(name: &str, entries: &[(u64, u64, u32)]) -> Level {
        let e: Vec<PagemapEntry> = entries
            .iter()
            .map(|&(vaddr, n, flags)| PagemapEntry {
                vaddr,
                nr_pages: Some(n),
                flags: Some(flags),
                ..Default::default()
            })
            .collect();
        Level::new(name.into(), PathBuf::from(name), &e).unwrap()
    }

    const P: u32 = pe::PRESENT;
    const U: u32 = pe::PARENT;

    #[test]
    fn parent_pages_are_found_in_the_nearest_ancestor_holding_them() {
        let top = level("top", &[(0x1000, 1, P), (0x2000, 3, U), (0x9000, 1, P)]);
        let mid = level("mid", &[(0x2000, 1, P), (0x3000, 2, U)]);
        let base = level("base", &[(0x1000, 5, P)]);
        let pieces = resolve(&[top, mid, base]).unwrap();
        assert_eq!(
            pieces,
            [
                Piece { addr: 0x1000, pages: 1, level: 0, offset: 0 },
                Piece { addr: 0x2000, pages: 1, level: 1, offset: 0 },
                Piece { addr: 0x3000, pages: 2, level: 2, offset: 2 * PAGE },
                Piece { addr: 0x9000, pages: 1, level: 0, offset: PAGE },
            ]
        );
    }

    #[test]
    fn a_page_no_ancestor_holds_is_refused_naming_entry_and_page() {
        let top = || level("pagemap-7.img", &[(0x1000, 1, P), (0x2000, 2, U)]);
        let e = resolve(&[top()]).unwrap_err().to_string();
        assert!(e.contains("pagemap-7.img: entry 2: the page at 0x2000") && e.contains("chain ends"), "{e}");
        let e = resolve(&[top(), level("up/pagemap-7.img", &[(0x2000, 1, P)])]).unwrap_err().to_string();
        assert!(e.contains("entry 2: the page at 0x3000") && e.contains("up/pagemap-7.img does not hold it"), "{e}");
        // Its parent says "in my parent" too, and there is none.
        let e = resolve(&[top(), level("up", &[(0x2000, 2, U)])]).unwrap_err().to_string();
        assert!(e.contains("the chain ends after 1 parents (up last)"), "{e}");
    }

    #[test]
    fn malformed_ancestor_pagemaps_are_refused() {
        let e = |entries: &[(u64, u64)]| {
            let v: Vec<PagemapEntry> = entries
                .iter()
                .map(|&(vaddr, n)| PagemapEntry { vaddr, nr_pages: Some(n), flags: Some(P), ..Default::default() })
                .collect();
            Level::new("x".into(), PathBuf::new(), &v).unwrap_err().to_string()
        };
        assert!(e(&[(0x3000, 1), (0x1000, 1)]).contains("entry 2"));
        assert!(e(&[(u64::MAX - 4095, 2)]).contains("entry 1"));
        assert!(e(&[(0x1000, 0)]).contains("entry 1"));
        assert!(e(&[(0x1001, 1)]).contains("entry 1"));
    }
}
