//! Resource limits a restore may not give: raising a hard limit takes
//! CAP_SYS_RESOURCE. Found before any process exists, and refused, or with
//! `--clamp-limits` lowered to ours (RLIMIT_NPROC's default follows the
//! machine's memory, so it differs between machines by a few processes).

use anyhow::{Result, bail};
use nix::libc;

use super::plan::ProcessPlan;

/// (resource, dumped hard limit, ours) for each hard limit of `p` above
/// ours, when we cannot raise it.
fn too_high(p: &ProcessPlan) -> Result<Vec<(u32, u64, u64)>> {
    const CAP_SYS_RESOURCE: u32 = 24;
    if super::creds::own()?.eff & (1 << CAP_SYS_RESOURCE) != 0 {
        return Ok(vec![]);
    }
    let mut out = vec![];
    for l in &p.rlimits {
        let mut cur = [0u64; 2];
        // SAFETY: prlimit64 writes two u64s into a live local.
        let r = unsafe {
            libc::syscall(libc::SYS_prlimit64, 0, l.resource as libc::c_long, std::ptr::null::<u64>(), cur.as_mut_ptr())
        };
        if r == 0 && l.max > cur[1] {
            out.push((l.resource, l.max, cur[1]));
        }
    }
    Ok(out)
}

/// Refuses `p` if it needs a hard limit we cannot give.
pub fn check(p: &ProcessPlan) -> Result<()> {
    if let Some(first) = problems(p)?.into_iter().next() {
        bail!(first);
    }
    Ok(())
}

/// Every hard limit of `p` we cannot give, each said as [`check`] refuses
/// it (a preflight reports them all).
pub fn problems(p: &ProcessPlan) -> Result<Vec<String>> {
    Ok(too_high(p)?
        .into_iter()
        .map(|(resource, max, ours)| {
            format!(
                "rlimit {resource} of PID {}: its hard limit {max} is above this process's {ours}, and raising it \
                 needs CAP_SYS_RESOURCE (--clamp-limits lowers it to {ours} instead)",
                p.pid
            )
        })
        .collect())
}

/// Lowers every limit of `p` we cannot give to ours; says what it changed.
pub fn clamp(p: &mut ProcessPlan) -> Result<Vec<String>> {
    let mut said = vec![];
    for (resource, max, ours) in too_high(p)? {
        for l in p.rlimits.iter_mut().filter(|l| l.resource == resource) {
            l.max = ours;
            l.cur = l.cur.min(ours);
        }
        said.push(format!("PID {}: rlimit {resource}: hard limit {max} lowered to {ours}, this process's", p.pid));
    }
    Ok(said)
}
