//! Namespace files (`/proc/PID/ns/NAME` held open, CRIU's `NS` entries):
//! kept when they name a namespace of the process's own, which the
//! restored process is in again and reopens as `/proc/self/ns/NAME`.
//! Another namespace (one a program made and keeps alive only by its
//! descriptor, `ip netns`'s way) is refused, as is the IPC namespace,
//! which a tree may have of its own and enter late in its restore.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FdinfoEntry, FileEntry, NsFileEntry, TaskKobjIdsEntry};

use super::FdPlan;

/// Namespace kinds: the name /proc gives them, their `CLONE_NEW*` flag
/// and the id the images give the tree's (which shares the dumper's,
/// `dump::images::ids`).
const KINDS: [(&str, u32, u32); 7] = [
    ("pid", libc::CLONE_NEWPID as u32, 1),
    ("net", libc::CLONE_NEWNET as u32, 2),
    ("uts", libc::CLONE_NEWUTS as u32, 4),
    ("time", libc::CLONE_NEWTIME as u32, 5),
    ("mnt", libc::CLONE_NEWNS as u32, 6),
    ("user", libc::CLONE_NEWUSER as u32, 7),
    ("cgroup", libc::CLONE_NEWCGROUP as u32, 8),
];

/// A namespace file of the process's own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsFile {
    pub cflag: u32,
    pub ns_id: u32,
    pub flags: u32,
}

/// The namespace file `target` ("net:[INO]") that `pid` holds, if it is
/// one; refused if it is not a namespace of `pid`'s own.
pub fn dump(pid: i32, fd: i32, target: &str, ino: u64, flags: u32) -> Result<Option<NsFile>> {
    let Some((name, rest)) = target.split_once(":[") else { return Ok(None) };
    if !rest.strip_suffix(']').is_some_and(|n| n.parse::<u64>() == Ok(ino)) {
        return Ok(None);
    }
    let what = || format!("process {pid}: fd {fd} is a namespace file ({target})");
    let Some(&(_, cflag, ns_id)) = KINDS.iter().find(|(n, _, _)| *n == name) else {
        if name == "ipc" {
            bail!("{}: an IPC namespace file is not restored yet", what());
        }
        return Ok(None);
    };
    // The tree's namespace, or (for the pid and time namespaces) the one
    // its children are made in.
    let own = [name.to_string(), format!("{name}_for_children")]
        .iter()
        .filter_map(|n| std::fs::metadata(crate::procfs::path(pid, &format!("ns/{n}"))).ok())
        .any(|m| m.ino() == ino);
    if !own {
        bail!("{}: a namespace other than its own, which dump does not support yet", what());
    }
    Ok(Some(NsFile { cflag, ns_id, flags }))
}

impl NsFile {
    pub fn entry(&self, id: u32) -> FileEntry {
        let nsf = NsFileEntry { id, ns_id: self.ns_id, ns_cflag: self.cflag, flags: self.flags, ..Default::default() };
        FileEntry { r#type: FdType::Ns as i32, id, nsf: Some(nsf), ..Default::default() }
    }
}

/// Fd `f` on namespace file `e` of a process with namespaces `ids`: its
/// own namespace of that kind, reopened.
pub fn plan_fd(f: &FdinfoEntry, e: &NsFileEntry, ids: &TaskKobjIdsEntry, cloexec: bool, at: &str) -> Result<FdPlan> {
    let own = [
        (libc::CLONE_NEWPID, ids.pid_ns_id),
        (libc::CLONE_NEWNET, ids.net_ns_id),
        (libc::CLONE_NEWUTS, ids.uts_ns_id),
        (libc::CLONE_NEWTIME, ids.time_ns_id),
        (libc::CLONE_NEWNS, ids.mnt_ns_id),
        (libc::CLONE_NEWUSER, ids.user_ns_id),
        (libc::CLONE_NEWCGROUP, ids.cgroup_ns_id),
    ];
    let Some(&(name, _, _)) = KINDS.iter().find(|(_, c, _)| *c == e.ns_cflag) else {
        bail!("{at}: a namespace file of kind {:#x} (ns_cflag), which is not restored", e.ns_cflag);
    };
    if !own.iter().any(|&(c, id)| c as u32 == e.ns_cflag && id == Some(e.ns_id)) {
        bail!("{at}: a file of {name} namespace {} (ns_id), not the process's own: not restored yet", e.ns_id);
    }
    Ok(FdPlan {
        fd: f.fd as i32,
        id: f.id,
        path: PathBuf::from(format!("/proc/self/ns/{name}")),
        flags: super::reg::open_flags(e.flags),
        cloexec,
        ..Default::default()
    })
}
