//! Which cgroups each restored process moves itself into, found before any
//! process exists.
//!
//! A task's core names its set in `cgroup.img` (`thread_core.cg_set`, or
//! `tc.cg_set` in older images). As CRIU's restore does, a task whose set
//! is the dumping tool's own (inventory `root_cg_set`) stays where the
//! restorer is, and a task without a set, or without `cgroup.img` (CRIU
//! leaves it out when every task shared its cgroups), stays where its
//! parent put it. Otherwise each hierarchy whose path differs from the one
//! the new task inherits is a move: its directory here is the mount point
//! of the hierarchy plus the path below the mount's root, and it must
//! exist (cgroups are not created). The new task writes "0" to each
//! directory's `cgroup.procs` before its blob maps memory, so the memory is
//! charged where it was; the threads the blob creates inherit the moves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use revenant_images::ImageSet;
use revenant_images::messages::{CgSetEntry, CoreEntry};

use crate::cgroup::{Member, Mount, Place, check_path, hierarchy, place, procs_file};

/// This machine as the restorer sees it.
#[derive(Debug, Clone, Default)]
pub struct Here {
    /// The restorer's own memberships.
    pub own: Vec<Member>,
    pub mounts: Vec<Mount>,
}

impl Here {
    pub fn read() -> Result<Here> {
        let (own, mounts) = crate::cgroup::own()?;
        Ok(Here { own, mounts })
    }
}

/// A task's set id and the field that held it.
fn set_of(core: &CoreEntry) -> Option<(u32, &'static str)> {
    let thread = core.thread_core.as_ref().and_then(|t| t.cg_set).map(|s| (s, "thread_core.cg_set"));
    thread.or_else(|| core.tc.as_ref().and_then(|t| t.cg_set).map(|s| (s, "tc.cg_set")))
}

/// For each process of `set`, in order, the `cgroup.procs` files its new
/// task writes itself into. `exists` says whether a file is there (tests
/// pass their own).
pub fn plan(set: &ImageSet, here: &Here, exists: &dyn Fn(&Path) -> bool) -> Result<Vec<Vec<PathBuf>>> {
    let mut out = vec![Vec::new(); set.processes.len()];
    let Some(cg) = &set.cgroup else { return Ok(out) };
    let own: BTreeMap<&str, &str> = here.own.iter().map(|m| (m.name.as_str(), m.path.as_str())).collect();
    // What each planned process will be in, for its children to inherit.
    let mut states: Vec<(u32, BTreeMap<&str, &str>)> = Vec::new();
    for (k, p) in set.processes.iter().enumerate() {
        let pid = p.pid();
        let leader = set_of(&p.threads[0].core);
        for t in &p.threads[1..] {
            if let Some((s, field)) = set_of(&t.core)
                && Some(s) != leader.map(|l| l.0)
            {
                bail!(
                    "core-{}.img: entry 0: {field} {s}: thread {} is in other cgroups than its process {pid} \
                     (set {:?}); threads in cgroups of their own are not restored yet",
                    t.tid,
                    t.tid,
                    leader.map(|l| l.0)
                );
            }
        }
        let parent = (k > 0).then(|| states.iter().find(|s| s.0 == p.pstree.ppid)).flatten();
        let mut state = parent.map(|s| s.1.clone()).unwrap_or_else(|| own.clone());
        let wanted: Vec<(&str, &str)> = match leader {
            None => Vec::new(),
            Some((id, _)) if Some(id) == set.inventory.root_cg_set => own.iter().map(|(n, p)| (*n, *p)).collect(),
            Some((id, field)) => {
                let Some((i, s)) = cg.sets.iter().enumerate().find(|(_, s)| s.id == id) else {
                    bail!("core-{pid}.img: entry 0: {field} {id}: cgroup.img has no set {id}");
                };
                check_set(i, s)?;
                s.ctls.iter().map(|m| (m.name.as_str(), m.path.as_str())).collect()
            }
        };
        let id = leader.map(|l| l.0).unwrap_or(0);
        for (name, path) in wanted {
            if state.get(name) == Some(&path) {
                continue;
            }
            let at = || format!("cgroup.img: set {id}: {}: path {path}", hierarchy(name));
            match place(&here.mounts, &Member { name: name.into(), path: path.into() }) {
                Place::Dir(dir) => {
                    let procs = procs_file(&dir);
                    if !exists(&procs) {
                        bail!(
                            "{}: the cgroup {} does not exist here (process {pid} was in it); create it \
                             (mkdir) before restoring",
                            at(),
                            dir.display()
                        );
                    }
                    out[k].push(procs);
                }
                // The hierarchy's root holds every task: nothing is lost.
                Place::NotMounted if path == "/" => {}
                Place::NotMounted => bail!(
                    "{}: the hierarchy is not mounted here, so process {pid} cannot be put back in its cgroup; \
                     mount it and create the cgroup before restoring",
                    at()
                ),
                Place::Outside(root) => bail!(
                    "{}: the hierarchy is mounted here only from cgroup {root}, which does not hold the path; \
                     process {pid} cannot be put back in its cgroup",
                    at()
                ),
            }
            state.insert(name, path);
        }
        states.push((pid, state));
    }
    Ok(out)
}

/// Refuses what a set's members may not be: a path that could leave its
/// mount, a hierarchy twice, a cgroup namespace.
fn check_set(i: usize, s: &CgSetEntry) -> Result<()> {
    for (j, m) in s.ctls.iter().enumerate() {
        let at = format!("cgroup.img: entry 0: sets[{i}].ctls[{j}]");
        if let Err(e) = check_path(&m.path) {
            bail!("{at}.path {:?}: {e}", m.path);
        }
        if s.ctls[..j].iter().any(|x| x.name == m.name) {
            bail!("{at}.name {:?}: the hierarchy is listed twice in set {}", m.name, s.id);
        }
        if let Some(n) = m.cgns_prefix.filter(|&n| n != 0) {
            bail!("{at}.cgns_prefix {n}: the task was in a cgroup namespace of its own, which is not restored yet");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{parse_mountinfo, parse_proc_cgroup};
    use revenant_images::messages::{CgMemberEntry, CgroupEntry};

    const MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 /sandbox /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn here() -> Here {
        Here {
            own: parse_proc_cgroup("4:memory:/sandbox/me\n2:cpu:/\n1:name=gone:/\n0::/\n", "own").unwrap(),
            mounts: parse_mountinfo(MOUNTINFO, "mountinfo").unwrap(),
        }
    }

    fn set(members: &[&[(&str, &str)]]) -> CgroupEntry {
        let sets = members
            .iter()
            .enumerate()
            .map(|(i, ms)| CgSetEntry {
                id: i as u32 + 1,
                ctls: ms
                    .iter()
                    .map(|(n, p)| CgMemberEntry { name: n.to_string(), path: p.to_string(), ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect();
        CgroupEntry { sets, ..Default::default() }
    }

    /// The sh-loop fixture (a parent and its child) with `cgroup.img`
    /// holding `members` and the processes in sets `parent` and `child`.
    fn images(members: &[&[(&str, &str)]], root_set: u32, parent: u32, child: u32) -> ImageSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/criu-4.2/images/sh-loop");
        let mut s = ImageSet::load(&dir).unwrap();
        s.cgroup = Some(set(members));
        s.inventory.root_cg_set = Some(root_set);
        for (p, id) in s.processes.iter_mut().zip([parent, child]) {
            for t in &mut p.threads {
                t.core.thread_core.as_mut().unwrap().cg_set = Some(id);
            }
        }
        s
    }

    const ROOT_SET: &[(&str, &str)] = &[("", "/"), ("cpu", "/"), ("memory", "/sandbox/me"), ("name=gone", "/")];
    const JOB_SET: &[(&str, &str)] = &[("", "/job"), ("cpu", "/"), ("memory", "/sandbox/me/job"), ("name=gone", "/")];

    #[test]
    fn a_task_moves_where_it_differs_from_what_it_inherits() {
        let s = images(&[ROOT_SET, JOB_SET], 1, 2, 2);
        let seen = std::cell::RefCell::new(Vec::new());
        let moves = plan(&s, &here(), &|p| {
            seen.borrow_mut().push(p.to_path_buf());
            true
        })
        .unwrap();
        // The parent moves in cgroup2 and memory (below the mount's root);
        // the child inherits that.
        assert_eq!(
            moves,
            [
                vec![
                    PathBuf::from("/sys/fs/cgroup/unified/job/cgroup.procs"),
                    PathBuf::from("/sys/fs/cgroup/memory/me/job/cgroup.procs")
                ],
                vec![]
            ]
        );
        assert_eq!(seen.borrow().len(), 2);

        // A child back in the dumper's set goes back to the restorer's.
        let s = images(&[ROOT_SET, JOB_SET], 1, 2, 1);
        let moves = plan(&s, &here(), &|_| true).unwrap();
        assert_eq!(
            moves[1],
            [
                PathBuf::from("/sys/fs/cgroup/unified/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/memory/me/cgroup.procs")
            ]
        );

        // In the dumper's set, or without cgroup.img, nothing moves.
        let s = images(&[ROOT_SET, JOB_SET], 1, 1, 1);
        assert_eq!(plan(&s, &here(), &|_| false).unwrap(), [Vec::<PathBuf>::new(), vec![]]);
        let mut s = images(&[ROOT_SET, JOB_SET], 1, 2, 2);
        s.cgroup = None;
        assert_eq!(plan(&s, &here(), &|_| false).unwrap(), [Vec::<PathBuf>::new(), vec![]]);
    }

    #[test]
    fn a_missing_or_unreachable_cgroup_is_refused_naming_set_hierarchy_and_path() {
        let s = images(&[ROOT_SET, JOB_SET], 1, 2, 2);
        let err = plan(&s, &here(), &|p| !p.starts_with("/sys/fs/cgroup/memory")).unwrap_err().to_string();
        assert!(
            err.starts_with("cgroup.img: set 2: hierarchy \"memory\": path /sandbox/me/job: the cgroup ")
                && err.contains("/sys/fs/cgroup/memory/me/job does not exist here")
                && err.contains("create it"),
            "{err}"
        );

        let job = &[("", "/"), ("cpu", "/"), ("memory", "/sandbox/me"), ("name=gone", "/lost")];
        let err = plan(&images(&[ROOT_SET, job], 1, 2, 2), &here(), &|_| true).unwrap_err().to_string();
        assert!(
            err.starts_with("cgroup.img: set 2: hierarchy \"name=gone\": path /lost: the hierarchy is not mounted")
        );

        let job = &[("", "/"), ("cpu", "/"), ("memory", "/other"), ("name=gone", "/")];
        let err = plan(&images(&[ROOT_SET, job], 1, 2, 2), &here(), &|_| true).unwrap_err().to_string();
        assert!(err.contains("mounted here only from cgroup /sandbox"), "{err}");

        let job = &[("", "/a/../../etc"), ("cpu", "/")];
        let err = plan(&images(&[ROOT_SET, job], 1, 2, 2), &here(), &|_| true).unwrap_err().to_string();
        assert!(err.starts_with("cgroup.img: entry 0: sets[1].ctls[0].path \"/a/../../etc\": "), "{err}");

        let err = plan(&images(&[ROOT_SET, JOB_SET], 1, 3, 3), &here(), &|_| true).unwrap_err().to_string();
        assert!(err.contains("thread_core.cg_set 3: cgroup.img has no set 3"), "{err}");
    }

    #[test]
    fn a_thread_in_other_cgroups_is_refused() {
        let mut s = images(&[ROOT_SET, JOB_SET], 1, 2, 2);
        let leader = s.processes[0].threads[0].core.clone();
        let tid = s.processes[0].pid() + 1000;
        let mut t = leader;
        t.thread_core.as_mut().unwrap().cg_set = Some(1);
        s.processes[0].threads.push(revenant_images::Thread { tid, core: t });
        let err = plan(&s, &here(), &|_| true).unwrap_err().to_string();
        assert!(err.starts_with(&format!("core-{tid}.img: entry 0: thread_core.cg_set 1: thread {tid} is in other")));
    }
}
