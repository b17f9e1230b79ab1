//! Files opened by path: fds on regular files, directories and character
//! devices, the executable, mapped files, cwd and root (`files.img` REG
//! entries). A restore refuses a regular file whose size changed since the
//! dump (a changed binary or library would crash the program), and opens
//! a process's own `/proc/PID/...` files only once the process exists.
//! Unlinked files carry their bytes (`ghost.rs`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::ImageSet;
use revenant_images::messages::{FdType, FdinfoEntry, FileEntry, FownEntry, RegFileEntry};

use super::{FdPlan, FileKind, Files};
use crate::procfs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegFile {
    /// Open flags without O_CLOEXEC (that one belongs to the fd).
    pub flags: u32,
    pub pos: u64,
    pub name: String,
    /// Only for regular files: a restore checks it.
    pub size: Option<u64>,
    pub mode: u32,
    /// The name it was opened or mapped by, unlinked since while `name`
    /// (in the same directory) still links it: /proc shows that one, as
    /// deleted, and so does a restore.
    pub unlinked_name: Option<String>,
}

impl Files {
    /// The entry of a mapped file or executable, given the path the kernel
    /// shows and a `/proc` link that opens it (`exe`, `map_files/A-B`).
    pub fn mapped(&mut self, pid: i32, link: &str, name: &str, flags: u32) -> Result<u32> {
        let p = procfs::path(pid, link);
        let m = fs::metadata(&p).with_context(|| format!("stat {} ({name})", p.display()))?;
        if let Some(&id) = self.by_inode.get(&(m.dev(), m.ino(), name.to_string())) {
            return Ok(id);
        }
        // Unlinked since it was mapped: carried as a ghost file, as its fds
        // are. One still linked under another name in the same directory
        // is mapped by that name; one linked elsewhere is refused.
        let unlinked = name.strip_suffix(" (deleted)");
        let linked = unlinked.filter(|_| m.file_type().is_file() && m.nlink() != 0).and_then(|p| linked_name(p, &m));
        let deleted = unlinked.filter(|_| linked.is_none());
        if let Some(path) = deleted {
            // On a kernel-internal mount (an AIO ring, shared anonymous
            // memory mapped privately): not a file to carry. Those have
            // no directory on their file system; a file of a tmpfs (a
            // POSIX semaphore in /dev/shm, unlinked at once as Python's
            // multiprocessing does) has its directory there.
            let on_its_mount = std::path::Path::new(path)
                .parent()
                .and_then(|d| fs::symlink_metadata(d).ok())
                .is_some_and(|d| d.is_dir() && d.dev() == m.dev());
            if nix::sys::stat::major(m.dev()) == 0 && !on_its_mount {
                let what = if name.starts_with("/[aio]") { "an AIO ring (io_setup)" } else { "kernel-internal memory" };
                bail!("process {pid}: {name}: a mapping of {what}: not supported yet");
            }
            if !m.file_type().is_file() || m.nlink() != 0 {
                bail!(
                    "process {pid}: {name}: a deleted file still linked elsewhere, or not a regular file: not supported"
                );
            }
        }
        let size = m.file_type().is_file().then_some(m.len());
        let unlinked_name = linked.as_ref().and(unlinked).map(String::from);
        let path = linked.unwrap_or_else(|| deleted.unwrap_or(name).to_string());
        let id = self.push(FileKind::Reg(RegFile { flags, pos: 0, name: path, size, mode: m.mode(), unlinked_name }));
        self.by_inode.insert((m.dev(), m.ino(), name.to_string()), id);
        if deleted.is_some() {
            self.add_ghost(id, &p, name, &m).with_context(|| format!("process {pid}: {link} ({name})"))?;
        }
        Ok(id)
    }

    /// A directory entry for cwd or root.
    pub fn dir(&mut self, pid: i32, link: &str) -> Result<u32> {
        let p = procfs::path(pid, link);
        let name = fs::read_link(&p).with_context(|| format!("reading {}", p.display()))?;
        let name = name.to_str().with_context(|| format!("{}: not UTF-8: {name:?}", p.display()))?.to_string();
        let m = fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
        let Some(path) = name.strip_suffix(" (deleted)") else {
            return Ok(self.push(FileKind::Reg(RegFile {
                flags: 0,
                pos: 0,
                name,
                size: None,
                mode: m.mode(),
                unlinked_name: None,
            })));
        };
        // The /proc directory of a process that ended since: a helper with
        // its PID holds it while the restored task enters it (CRIU's
        // PROCFS remap).
        if let Some(dead) = path.strip_prefix("/proc/").and_then(|n| n.parse::<u32>().ok())
            && link == "cwd"
            && super::ghost::on_kernel_fs(&p)
        {
            let reg = RegFile { flags: 0, pos: 0, name: path.into(), size: None, mode: m.mode(), unlinked_name: None };
            let id = self.push(FileKind::Reg(reg));
            self.dead_pids.push((id, dead));
            return Ok(id);
        }
        // Removed while the process sat in it (empty, as rmdir wants it):
        // carried as a ghost directory, as CRIU does, made again for the
        // tasks to enter and removed before the programs run.
        if link != "cwd" || !m.is_dir() || super::ghost::on_kernel_fs(&p) {
            bail!("process {pid}: its {link} {name} was deleted; that is not supported");
        }
        let id = self.push(FileKind::Reg(RegFile {
            flags: 0,
            pos: 0,
            name: path.into(),
            size: None,
            mode: m.mode(),
            unlinked_name: None,
        }));
        self.add_ghost(id, &p, &name, &m)?;
        Ok(id)
    }
}

/// The name, in the directory of `deleted`, of the file `m` (unlinked
/// there but still linked): glibc's `sem_open` makes a semaphore under a
/// temporary name, maps it, links it under its own and unlinks the first,
/// so the mapping shows the first name as deleted. Looked for among the
/// directory's first 4096 entries only.
pub fn linked_name(deleted: &str, m: &fs::Metadata) -> Option<String> {
    let dir = std::path::Path::new(deleted).parent()?;
    fs::read_dir(dir).ok()?.take(4096).flatten().find_map(|e| {
        let em = fs::symlink_metadata(e.path()).ok()?;
        (em.dev() == m.dev() && em.ino() == m.ino()).then(|| e.path().to_str().map(String::from)).flatten()
    })
}

impl RegFile {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        FileEntry {
            r#type: FdType::Reg as i32,
            id,
            reg: Some(RegFileEntry {
                id,
                flags: self.flags,
                pos: self.pos,
                fown,
                name: self.name.clone(),
                size: self.size,
                mode: Some(self.mode),
                unlinked_name: self.unlinked_name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The path entry `id` of `files.img` (`what` says whose it is).
pub fn by_id<'a>(set: &'a ImageSet, id: u32, what: &str) -> Result<&'a RegFileEntry> {
    let f = set.file(id).with_context(|| format!("files.img: no entry with id {id} ({what})"))?;
    f.reg.as_ref().with_context(|| format!("files.img: entry id {id} ({what}) is not a file opened by path"))
}

/// Refuses a file whose size differs from the dump's, as a changed binary
/// or library would crash the restored program.
pub fn check_size(r: &RegFileEntry, what: &str) -> Result<()> {
    let Some(size) = r.size else { return Ok(()) };
    let meta = fs::metadata(&r.name)
        .with_context(|| format!("files.img: entry id {} ({what}): {} is missing", r.id, r.name))?;
    if meta.is_file() && meta.size() != size {
        bail!("files.img: entry id {} ({what}): {} has {} bytes, but {size} when dumped", r.id, r.name, meta.size());
    }
    Ok(())
}

/// The file entry `id` maps (or runs, `what`), and the unlinked file to
/// make again there if it was one.
pub fn mapped(set: &ImageSet, id: u32, what: &str) -> Result<(PathBuf, Option<super::ghost::Ghost>)> {
    let r = by_id(set, id, what)?;
    match super::ghost::plan(set, id, r, &format!("files.img: entry id {id} ({what})"))? {
        Some((path, ghost)) => Ok((path, Some(ghost))),
        None => {
            check_size(r, what)?;
            match super::ghost::relink(r) {
                Some((path, ghost)) => Ok((path, Some(ghost))),
                None => Ok((PathBuf::from(&r.name), None)),
            }
        }
    }
}

/// The live process of the tree whose /proc directory `name` is in.
pub fn proc_of_tree(set: &ImageSet, name: &str) -> Option<u32> {
    let of: u32 = name.strip_prefix("/proc/")?.split('/').next()?.parse().ok()?;
    set.processes.iter().any(|p| p.pid() == of).then_some(of)
}

/// Fd `f` of process `pid` on file `r`.
pub fn plan_fd(set: &ImageSet, pid: i32, f: &FdinfoEntry, r: &RegFileEntry, cloexec: bool, at: &str) -> Result<FdPlan> {
    let ghost = super::ghost::plan(set, f.id, r, at)?;
    let relinked = ghost.is_none().then(|| super::ghost::relink(r)).flatten();
    if relinked.is_some() {
        check_size(r, &format!("fd {}", f.fd))?;
    }
    let ghost = ghost.or(relinked);
    let path = ghost.as_ref().map_or_else(|| PathBuf::from(&r.name), |(p, _)| p.clone());
    let ghost = ghost.map(|(_, g)| g);
    if ghost.is_some() {
    } else if let Some(of) = proc_of_tree(set, &r.name) {
        // A /proc file of a process of the tree exists once that process
        // does: the task opens it itself, after making its children, and
        // alone (the tree's shared descriptions are opened by the root
        // before any other task exists).
        let users = set.processes.iter().filter(|q| q.fds.iter().any(|g| g.id == f.id)).count();
        let fds = set.processes.iter().flat_map(|q| &q.fds).filter(|g| g.id == f.id).count();
        if users > 1 {
            bail!("{at}: {} is shared with another process: not restored yet", r.name);
        }
        if fds > 1 && of != set.processes[0].pid() {
            bail!(
                "{at}: {} is on several fds: not restored yet (the root opens such a file before PID {of} exists)",
                r.name
            );
        }
        let parent = |p: u32| set.processes.iter().find(|q| q.pid() == p).map(|q| q.pstree.ppid);
        let mut up = Some(pid as u32);
        let mut reached = parent(of) == Some(pid as u32);
        // At most one step per process: parents named in a loop end it.
        for _ in 0..=set.processes.len() {
            let Some(p) = up.filter(|_| !reached) else { break };
            reached = p == of;
            up = parent(p).filter(|&pp| pp != 0);
        }
        if !reached {
            bail!(
                "{at}: {}: PID {of} is neither PID {pid}, nor its ancestor, nor its child: it may not exist yet when \
                 PID {pid} opens its files",
                r.name
            );
        }
    } else {
        check_size(r, &format!("fd {}", f.fd))?;
    }
    // The description O_TMPFILE made (the others were opened through
    // /proc), or one on a symbolic link: the host makes it.
    let ghost_itself = ghost
        .as_ref()
        .is_some_and(|g| (g.tmpfile && r.flags as i32 & super::ghost::TMPFILE != 0) || g.symlink.is_some());
    Ok(FdPlan {
        fd: f.fd as i32,
        id: f.id,
        path,
        ghost_itself,
        flags: open_flags(r.flags),
        pos: r.pos,
        cloexec,
        ghost,
        ..Default::default()
    })
}

/// The flags to open a file again with, from its entry's: without those
/// that create one (`O_TMPFILE` would make a new file where this one was).
pub fn open_flags(flags: u32) -> i32 {
    let mut flags = flags as i32 & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
    if flags & super::ghost::TMPFILE != 0 {
        flags &= !libc::O_TMPFILE;
    }
    flags
}
