//! Cgroup memberships as the kernel shows them: `/proc/PID/cgroup` lines,
//! and the cgroup mounts of `/proc/self/mountinfo` that say where each
//! hierarchy's directories are. The dump records memberships ([`dump`]);
//! the restore finds each one's directory on this machine ([`restore`]).
//! What both read and parse is here.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub mod dump;
pub mod restore;

/// A task's cgroup in one hierarchy, as CRIU's `cg_member_entry` holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// The controller field of the line: "cpu,cpuacct", "name=systemd",
    /// "" for cgroup2.
    pub name: String,
    /// The cgroup's path in the hierarchy, from its root (as the reader's
    /// cgroup namespace sees it).
    pub path: String,
}

/// Parses a `/proc/PID/cgroup` file: one `ID:NAME:PATH` line per
/// hierarchy. The result is sorted by name, as CRIU sorts a set's members.
/// `what` names the file for errors.
pub fn parse_proc_cgroup(text: &str, what: &str) -> Result<Vec<Member>> {
    let mut v: Vec<Member> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        // The path may hold ':' itself: only the first two separate.
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(name), Some(path)) = (f.next(), f.next(), f.next()) else {
            bail!("{what}: line {}: {line:?} is not ID:CONTROLLERS:PATH", i + 1);
        };
        if !path.starts_with('/') {
            bail!("{what}: line {}: path {path:?} does not start with /", i + 1);
        }
        if v.iter().any(|m| m.name == name) {
            bail!("{what}: line {}: hierarchy {name:?} is listed twice", i + 1);
        }
        v.push(Member { name: name.to_string(), path: path.to_string() });
    }
    v.sort();
    Ok(v)
}

/// A cgroup filesystem mounted here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The super options of a cgroup v1 mount ("rw", "cpu", "cpuacct",
    /// "name=systemd", ...); `None` for cgroup2.
    pub options: Option<Vec<String>>,
    /// The cgroup the mount shows at its mount point (mountinfo field 4).
    pub root: String,
    pub point: PathBuf,
}

impl Mount {
    /// Whether this mount shows hierarchy `name` (a member's name): the
    /// cgroup2 one for "", else a v1 mount whose options hold every
    /// controller of the name (a controller is in one hierarchy only, so
    /// the first such mount is the one).
    pub fn shows(&self, name: &str) -> bool {
        match &self.options {
            None => name.is_empty(),
            Some(opts) => !name.is_empty() && name.split(',').all(|c| opts.iter().any(|o| o == c)),
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(c) = u8::try_from(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup and cgroup2 mounts of a mountinfo file, in its order.
pub fn parse_mountinfo(text: &str, what: &str) -> Result<Vec<Mount>> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        // Optional fields end at a lone "-"; the file system type, source
        // and super options follow it.
        let Some(dash) = f.iter().skip(6).position(|x| *x == "-").map(|p| p + 6) else {
            bail!("{what}: line {}: no \" - \" separator: {line:?}", i + 1);
        };
        if f.len() < dash + 4 {
            bail!("{what}: line {}: fields missing after \" - \": {line:?}", i + 1);
        }
        let options = match f[dash + 1] {
            "cgroup2" => None,
            "cgroup" => Some(f[dash + 3].split(',').map(str::to_string).collect()),
            _ => continue,
        };
        v.push(Mount { options, root: unescape(f[3]), point: PathBuf::from(unescape(f[4])) });
    }
    Ok(v)
}

/// Where a member's cgroup is on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Its directory.
    Dir(PathBuf),
    /// No mount shows the hierarchy.
    NotMounted,
    /// The hierarchy is mounted only from a cgroup that does not hold the
    /// path (this root, the first such mount's).
    Outside(String),
}

/// `path` below `root`, relative; `None` when `path` is not `root` or
/// below it.
fn below<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() { Some("") } else { rest.strip_prefix('/') }
}

/// Refuses a path that could leave the hierarchy's mount once joined to it
/// (images may come from anyone): every component must be a name.
pub fn check_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        bail!("not an absolute path");
    }
    if let Some(c) = path.split('/').find(|c| *c == "." || *c == "..") {
        bail!("holds a {c:?} component");
    }
    if path.contains('\0') {
        bail!("holds a NUL byte");
    }
    Ok(())
}

/// Finds the directory of `m` in `mounts` (see [`Place`]). The path must
/// have passed [`check_path`].
pub fn place(mounts: &[Mount], m: &Member) -> Place {
    let mut outside = None;
    for mount in mounts.iter().filter(|x| x.shows(&m.name)) {
        match below(&m.path, &mount.root) {
            Some("") => return Place::Dir(mount.point.clone()),
            Some(rel) => return Place::Dir(mount.point.join(rel.trim_end_matches('/'))),
            None => {
                outside.get_or_insert_with(|| mount.root.clone());
            }
        }
    }
    match outside {
        Some(root) => Place::Outside(root),
        None => Place::NotMounted,
    }
}

/// How a hierarchy is named in messages.
pub fn hierarchy(name: &str) -> String {
    if name.is_empty() { "the cgroup2 hierarchy (\"\")".to_string() } else { format!("hierarchy {name:?}") }
}

/// `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub fn own() -> Result<(Vec<Member>, Vec<Mount>)> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {p}: {e}"));
    let members = parse_proc_cgroup(&read("/proc/self/cgroup")?, "/proc/self/cgroup")?;
    let mounts = parse_mountinfo(&read("/proc/self/mountinfo")?, "/proc/self/mountinfo")?;
    Ok((members, mounts))
}

/// The `cgroup.procs` file of cgroup directory `dir`.
pub fn procs_file(dir: &Path) -> PathBuf {
    dir.join("cgroup.procs")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP: &str = "12:net_prio:/\n\
        9:name=systemd:/user.slice/user-0.slice/session-3.scope\n\
        4:memory:/process_api/dd2c\n\
        2:cpu,cpuacct:/job:with:colons\n\
        0::/user.slice\n";

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /process_api /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified\\040dir rw,relatime - cgroup2 cgroup2 rw,nsdelegate
45 27 0:38 / /elsewhere rw,relatime - cgroup2 none rw
";

    fn member(name: &str, path: &str) -> Member {
        Member { name: name.into(), path: path.into() }
    }

    #[test]
    fn proc_cgroup_lines_become_members_sorted_by_name() {
        let v = parse_proc_cgroup(CGROUP, "/proc/1/cgroup").unwrap();
        assert_eq!(
            v,
            [
                member("", "/user.slice"),
                member("cpu,cpuacct", "/job:with:colons"),
                member("memory", "/process_api/dd2c"),
                member("name=systemd", "/user.slice/user-0.slice/session-3.scope"),
                member("net_prio", "/"),
            ]
        );
        let err = parse_proc_cgroup("1:cpu\n", "/proc/7/cgroup").unwrap_err().to_string();
        assert!(err.starts_with("/proc/7/cgroup: line 1: "), "{err}");
        let err = parse_proc_cgroup("1:cpu:/\n2:cpu:/a\n", "x").unwrap_err().to_string();
        assert!(err.contains("\"cpu\" is listed twice"), "{err}");
    }

    #[test]
    fn mountinfo_gives_the_cgroup_mounts_with_their_roots_and_options() {
        let m = parse_mountinfo(MOUNTINFO, "mountinfo").unwrap();
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(m[0].point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(m[0].shows("cpu,cpuacct") && m[0].shows("cpu") && !m[0].shows("cpuset") && !m[0].shows(""));
        assert_eq!(m[1].root, "/process_api");
        assert!(m[2].shows("name=systemd") && !m[2].shows("xattr,name=other"));
        assert_eq!((m[3].options.as_ref(), m[3].point.as_path()), (None, Path::new("/sys/fs/cgroup/unified dir")));
        assert!(m[3].shows("") && !m[3].shows("memory"));
        assert!(parse_mountinfo("1 2 0:1 / /x rw\n", "mi").unwrap_err().to_string().starts_with("mi: line 1:"));
    }

    #[test]
    fn a_member_resolves_below_its_mount_root_or_is_refused() {
        let m = parse_mountinfo(MOUNTINFO, "mountinfo").unwrap();
        let dir = |s: &str| Place::Dir(PathBuf::from(s));
        assert_eq!(place(&m, &member("cpu,cpuacct", "/job/a")), dir("/sys/fs/cgroup/cpu,cpuacct/job/a"));
        assert_eq!(place(&m, &member("cpu,cpuacct", "/")), dir("/sys/fs/cgroup/cpu,cpuacct"));
        // The first cgroup2 mount is taken.
        assert_eq!(place(&m, &member("", "/user.slice")), dir("/sys/fs/cgroup/unified dir/user.slice"));
        // The mount's root is cut off the path.
        assert_eq!(place(&m, &member("memory", "/process_api/x/y")), dir("/sys/fs/cgroup/memory/x/y"));
        assert_eq!(place(&m, &member("memory", "/process_api")), dir("/sys/fs/cgroup/memory"));
        assert_eq!(place(&m, &member("memory", "/process_apix")), Place::Outside("/process_api".into()));
        assert_eq!(place(&m, &member("memory", "/")), Place::Outside("/process_api".into()));
        assert_eq!(place(&m, &member("net_prio", "/")), Place::NotMounted);
        assert_eq!(place(&[], &member("", "/a")), Place::NotMounted);
    }

    #[test]
    fn paths_that_could_leave_the_mount_are_refused() {
        check_path("/a/b.c/..d").unwrap();
        check_path("/").unwrap();
        assert!(check_path("/a/../../etc").unwrap_err().to_string().contains("\"..\""));
        assert!(check_path("/a/./b").is_err());
        assert!(check_path("a").is_err());
        assert!(check_path("/a\0b").is_err());
    }

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape("a\\040b\\134c\\012"), "a b\\c\n");
        assert_eq!(unescape("tail\\04"), "tail\\04");
        assert_eq!(unescape("\\777x"), "\\777x");
    }
}
