//! What happens to the vDSO: the runtime one either moves to where the
//! dumped one was (same kernel build: same size, layout and symbol offsets),
//! or stays parked in the bootstrap area while the dumped one, restored from
//! the images, gets a jump to the runtime one at each symbol ("proxy").

use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};
use revenant_blob_abi::{Move, Patch};

use super::plan::{Backing, ProcessPlan, VmaPlan};
use crate::kerndat::{VdsoSymbol, parse_vdso_symbols};
use crate::maps::Mapping;

/// The decision, with everything the blob needs to carry it out.
#[derive(Debug, Default)]
pub struct VdsoPlan {
    /// Runtime pieces into the park, before anything is unmapped.
    pub park: Vec<Move>,
    /// Parked pieces to the dumped place (remap), after every VMA exists.
    pub unpark: Vec<Move>,
    /// Trampolines in the dumped vDSO (proxy).
    pub patches: Vec<Patch>,
    /// The dumped vDSO and vvar areas are restored as memory, and the park
    /// must outlive the bootstrap area.
    pub proxy: bool,
    /// One line for the restore log.
    pub summary: String,
}

pub fn plan(p: &ProcessPlan, runtime: &[Mapping], rt_symbols: &[VdsoSymbol], park: u64) -> Result<VdsoPlan> {
    let dumped_vdso = p.vmas.iter().find(|v| v.backing == Backing::Vdso);
    let dumped_vvar = p.vmas.iter().find(|v| v.backing == Backing::Vvar);
    let rt_vdso = runtime.iter().find(|m| m.name == "[vdso]");
    let (Some(vdso), Some(rt_vdso)) = (dumped_vdso, rt_vdso) else {
        let summary = match (dumped_vdso, rt_vdso) {
            (None, _) => "vDSO: the dumped process had none; the runtime one goes with the rest".into(),
            _ => "vDSO: none here (qemu-user?); the dumped one is restored as plain memory".into(),
        };
        return Ok(VdsoPlan { proxy: dumped_vdso.is_some(), summary, ..Default::default() });
    };
    let rt_start = runtime.first().map(|m| m.start).unwrap_or(rt_vdso.start);
    let park_moves: Vec<Move> =
        runtime.iter().map(|m| Move { from: m.start, to: park + (m.start - rt_start), len: m.end - m.start }).collect();
    let rt_vvar_len = rt_vdso.start - rt_start;
    let (d_start, d_vvar_len) = match dumped_vvar {
        Some(v) => (v.start, vdso.start - v.start),
        None => (vdso.start, 0),
    };
    let same_layout = rt_vdso.end - rt_vdso.start == vdso.len() && rt_vvar_len == d_vvar_len;
    let dumped_image = dumped_bytes(p, vdso)?;
    let dumped_symbols = parse_vdso_symbols(&dumped_image);
    let same_symbols = match &dumped_symbols {
        Some(d) => d.iter().all(|s| rt_symbols.iter().any(|r| r.name == s.name && r.offset == s.offset)),
        None => same_layout,
    };
    if same_layout && same_symbols && !p.vdso_proxy {
        let unpark = park_moves.iter().map(|m| Move { from: m.to, to: d_start + (m.to - park), len: m.len }).collect();
        let summary = format!("vDSO: the runtime vDSO matches the dumped one; moving it to {:#x}", vdso.start);
        return Ok(VdsoPlan { park: park_moves, unpark, patches: vec![], proxy: false, summary });
    }

    let Some(dumped_symbols) = dumped_symbols else {
        bail!(
            "the dumped vDSO at {:#x} differs from this kernel's and cannot be read from the images to proxy it",
            vdso.start
        );
    };
    let rt_vdso_parked = park + (rt_vdso.start - rt_start);
    let mut patches = vec![];
    for s in &dumped_symbols {
        let Some(rt) = rt_symbols.iter().find(|r| r.name == s.name) else { continue };
        let (bytes, len) = revenant_arch::jump_to(rt_vdso_parked + rt.offset)
            .context("proxying to a different vDSO is not supported on this architecture yet")?;
        patches.push(Patch { at: vdso.start + s.offset, len: len as u32, pad: 0, bytes });
    }
    let why = if p.vdso_proxy { "as asked" } else { "it differs from this kernel's" };
    let summary = format!(
        "vDSO: proxying the dumped vDSO at {:#x} ({why}) to the runtime one parked at {:#x}: {} trampolines",
        vdso.start,
        rt_vdso_parked,
        patches.len()
    );
    Ok(VdsoPlan { park: park_moves, unpark: vec![], patches, proxy: true, summary })
}

const MAX_VDSO: u64 = 1 << 20;

/// The dumped bytes of `v` from the pages image (zeros where no page was
/// dumped).
fn dumped_bytes(p: &ProcessPlan, v: &VmaPlan) -> Result<Vec<u8>> {
    // Real vDSOs are a few pages; the length comes from the images, which
    // must not choose how much we allocate.
    if v.len() > MAX_VDSO {
        bail!("the dumped vDSO at {:#x} is {} bytes long: no vDSO is larger than {MAX_VDSO}", v.start, v.len());
    }
    let mut out = vec![0u8; v.len() as usize];
    for r in &p.page_runs {
        let (lo, hi) = (r.addr.max(v.start), (r.addr + r.len).min(v.end));
        if lo < hi {
            let image = p.pages.get(r.file as usize).context("a page run of an image that is not there")?;
            let dst = &mut out[(lo - v.start) as usize..(hi - v.start) as usize];
            image
                .open()?
                .read_exact_at(dst, r.file_offset + (lo - r.addr))
                .with_context(|| format!("{}: reading the dumped vDSO at {lo:#x}", image.describe()))?;
        }
    }
    Ok(out)
}
