//! Copy-on-write sharing of private memory between a parent and its
//! children, kept across the restore.
//!
//! Private file mappings count too: their written pages are anonymous
//! memory shared the same way, and the pages never written are the file's
//! (an heir's holes are dropped back to them).
//!
//! After `fork`, a private anonymous area is one set of physical pages for
//! parent and child until either writes. Restoring each process's pages
//! into its own fresh memory would give correct contents at twice the
//! memory, and a program that looks at its page frames (ZDTM's cow00)
//! would see the sharing gone. So, as CRIU does, an area a parent and its
//! child both have at the same place with the same flags is *premapped*:
//! the parent maps it in a region free everywhere in the tree and fills it
//! from its pages before it forks its children, who inherit it
//! copy-on-write. Each process's blob then moves the area into place; a
//! child writes only its pages that differ from the parent's
//! (`inherit.rs` in the blob) and drops the ones it did not have.
//!
//! An area is inherited down a chain (grandparent, parent, child) from the
//! process that first filled it, its *owner*; only the owner's pages are in
//! it when the others fork.

use anyhow::Result;
use linux_raw_sys::general as g;

use super::plan::{Backing, PageRun, ProcessPlan, VmaPlan};

/// Where one area of a process waits before its blob moves it into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub at: u64,
    /// This process fills it (before forking its children); otherwise it
    /// inherits the area from its parent.
    pub owner: bool,
}

/// The tree's premap region, reserved in this process so that the
/// bootstrap areas and everything else keep out of it; every task
/// inherits the reservation and the owners map their slots over it.
#[derive(Debug)]
pub struct Premap {
    pub start: u64,
    pub len: u64,
    /// Per process (in plan order), per VMA.
    pub slots: Vec<Vec<Option<Slot>>>,
}

impl Drop for Premap {
    fn drop(&mut self) {
        // SAFETY: the reservation is ours and holds nothing; the tasks keep
        // their own copies.
        let _ = unsafe { revenant_arch::sys::munmap(self.start as usize, self.len as usize) };
    }
}

/// Private memory a fork copies as it is, anonymous or a private file
/// mapping (whose written pages are anonymous): not shared, not locked
/// (populated by its own `mmap`), no huge pages, no stack guard rules, and
/// neither dropped nor wiped by `fork`.
fn eligible(v: &VmaPlan) -> bool {
    let odd = g::MAP_SHARED | g::MAP_LOCKED | g::MAP_HUGETLB | g::MAP_GROWSDOWN;
    let forkless = (1u64 << g::MADV_DONTFORK) | (1u64 << g::MADV_WIPEONFORK);
    matches!(v.backing, Backing::Anon | Backing::File { .. }) && v.flags & odd == 0 && v.madv & forkless == 0
}

fn same(a: &VmaPlan, b: &VmaPlan) -> bool {
    (a.start, a.end, a.flags, a.pgoff) == (b.start, b.end, b.flags, b.pgoff) && a.backing == b.backing
}

/// Which areas are premapped where; `None` when no parent shares an area
/// with a child. `plans[0]` is the root, parents come before children.
pub fn plan(plans: &[ProcessPlan]) -> Result<Option<Premap>> {
    let parent = |i: usize| plans[..i].iter().position(|q| q.pid == plans[i].ppid);
    let mut slots: Vec<Vec<Option<(u64, bool)>>> = plans.iter().map(|p| vec![None; p.vmas.len()]).collect();
    let mut total = 0u64;
    for (i, p) in plans.iter().enumerate() {
        for (j, v) in p.vmas.iter().enumerate().filter(|(_, v)| eligible(v)) {
            let from_parent = parent(i).and_then(|pi| {
                let k = plans[pi].vmas.iter().position(|w| same(v, w))?;
                slots[pi][k].map(|(off, _)| off)
            });
            if let Some(off) = from_parent {
                slots[i][j] = Some((off, false));
                continue;
            }
            let shared =
                plans[i + 1..].iter().any(|c| c.ppid == p.pid && c.vmas.iter().any(|w| eligible(w) && same(v, w)));
            if shared {
                slots[i][j] = Some((total, true));
                total += v.len();
            }
        }
    }
    if total == 0 {
        return Ok(None);
    }
    let dumped: Vec<(u64, u64)> = plans.iter().flat_map(|p| p.vmas.iter().map(|v| (v.start, v.end))).collect();
    let start = super::bootstrap::map_hole(&dumped, total, g::MAP_NORESERVE, "the premap region")?;
    let slots = slots
        .into_iter()
        .map(|s| s.into_iter().map(|o| o.map(|(off, owner)| Slot { at: start + off, owner })).collect())
        .collect();
    Ok(Some(Premap { start, len: total, slots }))
}

/// One area a process maps and fills in its slot before it forks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub at: u64,
    pub len: u64,
    /// The area's `MAP_*` flags (they move with it).
    pub flags: u32,
    /// A private file mapping: the file, its open flags and the offset.
    pub file: Option<(std::ffi::CString, i32, u64)>,
    /// Page runs to read, with addresses inside the slot.
    pub runs: Vec<PageRun>,
}

/// What one process fills before it forks: each slot it owns.
pub fn fills(vmas: &[VmaPlan], runs: &[PageRun], slots: &[Option<Slot>]) -> Result<Vec<Fill>> {
    vmas.iter()
        .zip(slots)
        .filter_map(|(v, s)| s.filter(|s| s.owner).map(|s| (v, s.at)))
        .map(|(v, at)| {
            let file = match &v.backing {
                Backing::File { path, open_flags } => Some((super::plan::cpath(path)?, *open_flags, v.pgoff)),
                _ => None,
            };
            Ok(Fill {
                at,
                len: v.len(),
                flags: v.flags,
                file,
                runs: clip(runs, v.start, v.end).map(|r| PageRun { addr: at + (r.addr - v.start), ..r }).collect(),
            })
        })
        .collect()
}

/// The page runs of a process sorted for the blob: those it reads as usual, those
/// it compares with what it inherited, and the ranges of inherited areas
/// where it had no pages. Runs inside areas it owns were read before the
/// fork and are left out.
pub fn split(
    vmas: &[VmaPlan],
    runs: &[PageRun],
    slots: &[Option<Slot>],
) -> (Vec<PageRun>, Vec<PageRun>, Vec<(u64, u64)>) {
    let premapped: Vec<(&VmaPlan, Slot)> = vmas.iter().zip(slots).filter_map(|(v, s)| s.map(|s| (v, s))).collect();
    let (mut plain, mut compare) = (vec![], vec![]);
    for r in runs {
        let mut at = r.addr;
        let end = r.addr + r.len;
        while at < end {
            let piece = |to: u64| PageRun { addr: at, len: to - at, file_offset: r.file_offset + (at - r.addr), ..*r };
            match premapped.iter().find(|(v, _)| v.start <= at && at < v.end) {
                Some((v, s)) => {
                    let to = end.min(v.end);
                    if !s.owner {
                        compare.push(piece(to));
                    }
                    at = to;
                }
                None => {
                    let next = premapped.iter().map(|(v, _)| v.start).filter(|&s| s > at).min().unwrap_or(end);
                    let to = end.min(next);
                    plain.push(piece(to));
                    at = to;
                }
            }
        }
    }
    let mut zero = vec![];
    for (v, _) in premapped.iter().filter(|(_, s)| !s.owner) {
        let mut had: Vec<(u64, u64)> = clip(&compare, v.start, v.end).map(|r| (r.addr, r.addr + r.len)).collect();
        had.sort_unstable();
        let mut at = v.start;
        for (s, e) in had {
            if s > at {
                zero.push((at, s - at));
            }
            at = at.max(e);
        }
        if at < v.end {
            zero.push((at, v.end - at));
        }
    }
    (plain, compare, zero)
}

/// The parts of `runs` inside `[start, end)`.
fn clip(runs: &[PageRun], start: u64, end: u64) -> impl Iterator<Item = PageRun> + '_ {
    runs.iter().filter_map(move |r| {
        let (s, e) = (r.addr.max(start), (r.addr + r.len).min(end));
        (s < e).then(|| PageRun { addr: s, len: e - s, file_offset: r.file_offset + (s - r.addr), ..*r })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, len: u64, file_offset: u64) -> PageRun {
        PageRun { addr, len, file_offset, file: 0 }
    }

    #[test]
    fn runs_are_cut_at_premapped_areas_and_holes_are_zeroed() {
        let vma = |start, end| VmaPlan {
            start,
            end,
            prot: 3,
            flags: g::MAP_PRIVATE | g::MAP_ANONYMOUS,
            pgoff: 0,
            madv: 0,
            backing: Backing::Anon,
        };
        let vmas = vec![vma(0x1000, 0x3000), vma(0x3000, 0x6000), vma(0x6000, 0x8000)];
        // One run over all three areas, one more in the middle one.
        let runs = vec![run(0x2000, 0x2000, 0), run(0x5000, 0x1000, 0x4000), run(0x7000, 0x1000, 0x5000)];
        let inherited = Some(Slot { at: 0x10_0000, owner: false });
        let owned = Some(Slot { at: 0x20_0000, owner: true });
        let (plain, compare, zero) = split(&vmas, &runs, &[None, inherited, owned]);
        assert_eq!(plain, vec![run(0x2000, 0x1000, 0)]);
        assert_eq!(compare, vec![run(0x3000, 0x1000, 0x1000), run(0x5000, 0x1000, 0x4000)]);
        assert_eq!(zero, vec![(0x4000, 0x1000)]);
        let f = fills(&vmas, &runs, &[None, inherited, owned]).unwrap();
        let runs = vec![run(0x20_1000, 0x1000, 0x5000)];
        let flags = g::MAP_PRIVATE | g::MAP_ANONYMOUS;
        assert_eq!(f, vec![Fill { at: 0x20_0000, len: 0x2000, flags, file: None, runs }]);
    }
}
