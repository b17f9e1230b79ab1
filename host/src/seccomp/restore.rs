//! The restore half of seccomp: each thread's filter chain, planned from
//! its core image and `seccomp.img`.

use anyhow::{Context, Result, bail};
use revenant_images::messages::{SeccompEntry, TaskCoreEntry, ThreadCoreEntry};

use crate::restore::plan::SeccompPlan;

/// Filter flags a restore can set again: the ones the kernel reports for
/// an installed filter (`SECCOMP_FILTER_FLAG_LOG`, `_SPEC_ALLOW`).
const SECCOMP_FLAGS: u32 = 2 | 4;
/// `BPF_MAXINSNS`.
const BPF_MAXINSNS: usize = 4096;

/// A thread's seccomp state from its core image and `seccomp.img`: the
/// chain that ends at its filter, oldest first. Restoring a sandboxed
/// thread without its sandbox would be worse than refusing, so anything
/// missing or odd is an error.
pub fn plan(
    name: &str,
    tcore: &ThreadCoreEntry,
    tc: &TaskCoreEntry,
    img: Option<&SeccompEntry>,
) -> Result<SeccompPlan> {
    // Images from before seccomp was per thread keep it in the task core.
    let (mode, filter, field) = match tcore.seccomp_mode {
        Some(m) => (m, tcore.seccomp_filter, "thread_core.seccomp_filter"),
        None => (tc.old_seccomp_mode.unwrap_or(0), tc.old_seccomp_filter, "tc.old_seccomp_filter"),
    };
    match mode {
        0 => return Ok(SeccompPlan::default()),
        1 => return Ok(SeccompPlan { strict: true, filters: vec![] }),
        2 => {}
        m => bail!("{name}: entry 0: seccomp mode {m} is unknown"),
    }
    let mut at = filter.with_context(|| format!("{name}: entry 0: {field} is missing for a thread in filter mode"))?;
    let all = &img.with_context(|| format!("{name}: entry 0: {field} {at}: there is no seccomp.img"))?.seccomp_filters;
    let mut filters = vec![];
    loop {
        let f = all.get(at as usize).with_context(|| {
            format!("{name}: entry 0: {field}: filter {at} is not in seccomp.img ({} filters)", all.len())
        })?;
        let here = format!("seccomp.img: entry 0: seccomp_filters[{at}]");
        let len = f.filter.len();
        if len == 0 || len % 8 != 0 || len / 8 > BPF_MAXINSNS {
            bail!("{here}.filter: {len} bytes is not a BPF program of 1 to {BPF_MAXINSNS} instructions");
        }
        let flags = f.flags.unwrap_or(0);
        if flags & !SECCOMP_FLAGS != 0 {
            bail!("{here}.flags {flags:#x}: only LOG and SPEC_ALLOW can be set again");
        }
        filters.push((flags, f.filter.clone()));
        match f.prev {
            None => break,
            Some(p) if filters.len() > all.len() => bail!("{here}.prev {p}: the chain of filters loops"),
            Some(p) => at = p,
        }
    }
    filters.reverse();
    Ok(SeccompPlan { strict: false, filters })
}
