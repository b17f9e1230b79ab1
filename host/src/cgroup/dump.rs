//! The dump half of cgroups: each process's memberships, read from /proc,
//! and `cgroup.img`'s entry with the set each process belongs to.

use anyhow::{Context, Result, bail};
use revenant_images::messages::{CgControllerEntry, CgMemberEntry, CgSetEntry, CgroupEntry};

use crate::dump::model::Tree;
use crate::procfs;

/// The cgroups of process `pid`, which every thread of `tids` must share:
/// a thread of a threaded cgroup (cgroup2) cannot be put back yet.
pub fn memberships(pid: i32, tids: &[i32]) -> Result<Vec<crate::cgroup::Member>> {
    let read = |what: &str| {
        let path = procfs::path(pid, what);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        crate::cgroup::parse_proc_cgroup(&text, &path.display().to_string())
    };
    let own = read("cgroup")?;
    for &tid in tids.iter().filter(|&&t| t != pid) {
        let theirs = read(&format!("task/{tid}/cgroup"))?;
        if let Some(t) = theirs.iter().find(|t| !own.contains(t)) {
            let of_process = own.iter().find(|m| m.name == t.name).map_or("none", |m| m.path.as_str());
            bail!(
                "process {pid}: thread {tid} is in cgroup {} of {} and the process in {of_process}: threads in \
                 cgroups of their own (threaded cgroups) are not supported yet",
                t.path,
                crate::cgroup::hierarchy(&t.name)
            );
        }
    }
    Ok(own)
}

/// The set id of the dumping process's own cgroups, which come first.
pub const OWN_CG_SET: u32 = 1;

/// `cgroup.img`'s entry (the distinct memberships, ours first, and one
/// controller entry per hierarchy; no directories: a restore moves tasks
/// into cgroups that exist, and never makes them) and each process's set.
pub fn sets(tree: &Tree) -> (CgroupEntry, Vec<u32>) {
    let mut sets: Vec<&[crate::cgroup::Member]> = vec![&tree.own_cgroups];
    let ids = tree
        .procs
        .iter()
        .map(|p| {
            let i = sets.iter().position(|s| *s == p.cgroups.as_slice()).unwrap_or_else(|| {
                sets.push(&p.cgroups);
                sets.len() - 1
            });
            OWN_CG_SET + i as u32
        })
        .collect();
    let mut hierarchies: Vec<&str> = sets.iter().flat_map(|s| s.iter().map(|m| m.name.as_str())).collect();
    hierarchies.sort_unstable();
    hierarchies.dedup();
    let entry = CgroupEntry {
        sets: sets
            .iter()
            .enumerate()
            .map(|(i, s)| CgSetEntry {
                id: OWN_CG_SET + i as u32,
                ctls: s
                    .iter()
                    .map(|m| CgMemberEntry { name: m.name.clone(), path: m.path.clone(), ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        controllers: hierarchies
            .iter()
            .map(|h| CgControllerEntry {
                // cgroup2's hierarchy has no controller name: CRIU names
                // it "" (and refuses a hierarchy with no name at all).
                cnames: h.split(',').map(str::to_string).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    (entry, ids)
}
