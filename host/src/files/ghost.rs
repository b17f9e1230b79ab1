//! Unlinked files a program still holds open ("ghost" files, as CRIU
//! calls them): a dump carries their bytes in the images
//! (`remap-fpath.img` and `ghost-file-N.img`, CRIU's form), up to
//! [`LIMIT`] bytes of data (`--ghost-limit`), and refuses larger ones by
//! name; a restore creates each
//! again at its old path (which must be free), with its owner and mode,
//! holds it and unlinks it again before any task exists; the tasks open
//! it through the restore's descriptor. A file with holes is carried in
//! chunks (its data segments, `SEEK_DATA`/`SEEK_HOLE`) and made sparse
//! again; one opened under several names (hard links, all gone) is one
//! file linked under each again.

use std::os::fd::AsRawFd;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use revenant_images::messages::{GhostChunkEntry, GhostFileEntry, RegFileEntry, RemapFilePathEntry, Timeval};
use revenant_images::{ImageSet, Kind, Writer};

/// The most data of an unlinked file a dump carries unless told
/// otherwise (CRIU's default `--ghost-limit`); holes do not count.
pub const LIMIT: u64 = 1 << 20;

/// Whether `path` (existing) is on a kernel file system whose directories
/// are objects of their own (`/proc/PID`, a cgroup, a sysfs node), which
/// a `mkdir` would not make again, or would make as something else.
pub fn on_kernel_fs(path: &Path) -> bool {
    use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC, statfs};
    statfs(path).is_ok_and(|s| {
        [PROC_SUPER_MAGIC, SYSFS_MAGIC, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC].contains(&s.filesystem_type())
    })
}

/// What a restore needs to make one again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ghost {
    /// The same for every description of one file (its remap id).
    pub key: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// Access and modification times, (seconds, microseconds).
    pub atime: (u64, u64),
    pub mtime: (u64, u64),
    pub size: u64,
    /// Its data segments, (offset, bytes); the rest are holes.
    pub pieces: Vec<(u64, Vec<u8>)>,
    /// Its device (the kernel's encoding, major << 20 | minor) and inode
    /// when dumped.
    pub dev: u32,
    pub ino: u64,
    /// A device node's device (`st_rdev`, as CRIU keeps it).
    pub rdev: u32,
    /// A symbolic link's target.
    pub symlink: Option<String>,
    /// Its own path, when something else is there now (a log file
    /// made again by its rotation): it is then made beside it, under the
    /// name [`plan`] gives, which /proc shows for it.
    pub taken: Option<PathBuf>,
    /// Not a ghost of its own: a file still linked at this path, unlinked
    /// only under the name it was opened by, which it is linked under
    /// again for the time of the restore (`reg_file_entry.unlinked_name`).
    pub link_from: Option<PathBuf>,
    /// It was made with `O_TMPFILE` and never named: made again the same
    /// way, so that it can still be linked into a directory (`linkat`),
    /// which a file made at a path and unlinked never can.
    pub tmpfile: bool,
}

/// `remap_type` of a /proc directory whose process ended: `remap_id` is
/// its PID.
pub const REMAP_PROCFS: u32 = 2;

/// The bit of `O_TMPFILE` that is not `O_DIRECTORY`: what marks a file
/// made by it in its flags (`fdinfo` keeps it; CRIU's entries too).
pub const TMPFILE: i32 = nix::libc::O_TMPFILE & !nix::libc::O_DIRECTORY;

impl Ghost {
    /// A removed directory, deleted FIFO or device node: a node without
    /// contents.
    pub fn empty(key: u32, m: &std::fs::Metadata) -> Ghost {
        let atime = (m.atime() as u64, m.atime_nsec() as u64 / 1000);
        let mtime = (m.mtime() as u64, m.mtime_nsec() as u64 / 1000);
        let (dev, ino, rdev) = (kdev(m.dev()), m.ino(), m.rdev() as u32);
        Ghost { key, uid: m.uid(), gid: m.gid(), mode: m.mode(), atime, mtime, dev, ino, rdev, ..Ghost::default() }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & nix::libc::S_IFMT == nix::libc::S_IFDIR
    }

    pub fn is_fifo(&self) -> bool {
        self.mode & nix::libc::S_IFMT == nix::libc::S_IFIFO
    }

    pub fn is_device(&self) -> bool {
        [nix::libc::S_IFCHR, nix::libc::S_IFBLK].contains(&(self.mode & nix::libc::S_IFMT))
    }

    /// Whether it has holes (then CRIU's image has it in chunks).
    pub fn sparse(&self) -> bool {
        !(self.pieces.len() == 1 && self.pieces[0].0 == 0 && self.pieces[0].1.len() as u64 == self.size)
            && self.size != 0
    }
}

/// Where the symbolic link open (`O_PATH`) at fd `fd` of `pid` points.
pub fn link_target(pid: i32, fd: i32) -> Result<String> {
    let copy = crate::procfs::borrow_fd(pid, fd).context("taking a copy to read it")?;
    let to = nix::fcntl::readlinkat(&copy, "").context("reading where the link points")?;
    to.into_string().map_err(|t| anyhow::anyhow!("a link target that is not UTF-8: {t:?}"))
}

/// `st_dev` in the kernel's encoding, which inotify shows and CRIU's
/// ghost entries keep.
fn kdev(dev: u64) -> u32 {
    (nix::sys::stat::major(dev) << 20 | nix::sys::stat::minor(dev)) as u32
}

/// The path the unlinked file with device `dev` (the kernel's encoding)
/// and inode `ino` is made again at, if the images carry one: an inotify
/// watch on it watches that one.
pub fn watched(set: &ImageSet, dev: u32, ino: u64, at: &str) -> Result<Option<PathBuf>> {
    let Some((&key, _)) = set.ghosts.iter().find(|(_, (e, _))| e.dev == Some(dev) && e.ino == Some(ino)) else {
        return Ok(None);
    };
    let Some(id) = set.remaps.iter().find(|m| m.remap_id == key && m.remap_type == Some(1)).map(|m| m.orig_id) else {
        return Ok(None);
    };
    let r = set.file(id).and_then(|e| e.reg.as_ref());
    let r = r.with_context(|| format!("{at}: its unlinked file, files.img id {id}, is no regular file entry"))?;
    Ok(plan(set, id, r, at)?.map(|(path, _)| path))
}

/// Reads the unlinked file open at `link` (a `/proc/PID/fd/N`), shown as
/// `name`, if it holds at most `limit` bytes of data.
pub fn dump(link: &Path, name: &str, m: &std::fs::Metadata, key: u32, limit: u64) -> Result<Ghost> {
    let f = std::fs::File::open(link).with_context(|| format!("opening {} ({name})", link.display()))?;
    let size = m.len();
    let mut segments = vec![];
    let mut at = 0u64;
    while at < size {
        let seek = |off: u64, how: i32| {
            // SAFETY: a seek on our own descriptor.
            let r = unsafe { nix::libc::lseek(f.as_raw_fd(), off as nix::libc::off_t, how) };
            if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as u64) }
        };
        let start = match seek(at, nix::libc::SEEK_DATA) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => break,
            Err(e) => return Err(e).with_context(|| format!("{name}: SEEK_DATA")),
        };
        let end = seek(start, nix::libc::SEEK_HOLE).with_context(|| format!("{name}: SEEK_HOLE"))?.min(size);
        segments.push((start, end));
        at = end;
    }
    let data: u64 = segments.iter().map(|(s, e)| e - s).sum();
    if data > limit {
        bail!(
            "{name}: an unlinked file with {data} bytes of data, more than the {limit} a dump carries (raise it \
             with --ghost-limit)"
        );
    }
    use std::os::unix::fs::FileExt;
    let mut pieces = vec![];
    for (s, e) in segments {
        let mut buf = vec![0u8; (e - s) as usize];
        f.read_exact_at(&mut buf, s).with_context(|| format!("reading {name}"))?;
        pieces.push((s, buf));
    }
    if pieces.is_empty() {
        pieces.push((0, vec![]));
    }
    let atime = (m.atime() as u64, m.atime_nsec() as u64 / 1000);
    let mtime = (m.mtime() as u64, m.mtime_nsec() as u64 / 1000);
    let (dev, ino) = (kdev(m.dev()), m.ino());
    Ok(Ghost {
        key,
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode(),
        atime,
        mtime,
        size,
        pieces,
        dev,
        ino,
        ..Ghost::default()
    })
}

/// The ghost files a restore made. Each is made at its path, opened, and
/// unlinked again (directories last) before any task exists: the tasks
/// open them through our descriptors ([`Made::opened_at`]), so that no
/// name appears or goes while the programs could watch (an inotify on
/// its directory would see it), and a watch can be put on one that has
/// no name. Held until [`Made::release`] (or until this goes).
#[derive(Debug, Default)]
pub struct Made {
    /// Made at these paths: removed again before [`make`] returns, or when
    /// it fails.
    paths: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// Each ghost by its planned path (a file `O_TMPFILE` made: `DIR/#INO`,
    /// which never exists), with our descriptor of it (`O_PATH`, or the
    /// `O_TMPFILE` description itself) and, if the tree takes that
    /// description as it is, its id.
    held: Vec<(PathBuf, std::fs::File, Option<u32>)>,
}

impl Made {
    /// Makes the directories above `path` that are gone (removed too when
    /// dumped, with nothing open in them), to be removed again with the
    /// ghosts, so that the ghost keeps its path.
    fn parents_of(&mut self, path: &Path) -> Result<()> {
        let missing: Vec<&Path> =
            path.ancestors().skip(1).take_while(|a| std::fs::symlink_metadata(a).is_err()).collect();
        for dir in missing.into_iter().rev() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}, removed when dumped, for {}", dir.display(), path.display()))?;
            self.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    /// Holds what was just made at `path`.
    fn hold(&mut self, path: &Path) -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("opening {}, just made", path.display()))?;
        self.held.push((path.to_path_buf(), f, None));
        Ok(())
    }

    /// Where the tasks open the ghost planned at `path`: through our
    /// descriptor of it (`/proc/PID/fd/N`), which reaches that very file
    /// and shows its name, deleted.
    pub fn opened_at(&self, path: &Path) -> Option<PathBuf> {
        let (_, f, _) = self.held.iter().find(|(p, _, _)| p == path)?;
        Some(PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd())))
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The descriptions made here that the tree takes as they are: (id,
    /// our descriptor).
    pub fn descriptions(&self) -> impl Iterator<Item = (u32, i32)> + '_ {
        self.held.iter().filter_map(|(_, f, id)| Some(((*id)?, f.as_raw_fd())))
    }

    /// The tasks have opened what they hold: ours go.
    pub fn release(&mut self) {
        self.held.clear();
    }

    fn unlink(&mut self) {
        for p in self.paths.drain(..) {
            let _ = std::fs::remove_file(&p);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Creates each (path, ghost) once, a file already made linked under any
/// further name it had, holds each and unlinks them all again; a path
/// taken since the dump is refused. A file made with `O_TMPFILE` is made
/// so again; `creator` names the fd plan (description id, open flags) of
/// the description that made it, if the program still holds it: that one
/// is the host's, handed to the tree.
pub fn make<'a>(ghosts: impl IntoIterator<Item = (&'a Path, &'a Ghost, Option<(u32, i32)>)>) -> Result<Made> {
    let mut made = Made::default();
    let mut firsts: Vec<(u32, PathBuf)> = vec![];
    // Directories first: an unlinked file may have been in one.
    let mut ghosts: Vec<_> = ghosts.into_iter().collect();
    ghosts.sort_by_key(|(p, g, _)| (!g.is_dir(), p.components().count()));
    let mut creators: Vec<(u32, (u32, i32))> = ghosts.iter().filter_map(|(_, g, c)| Some((g.key, (*c)?))).collect();
    // One per description, however many fds it has.
    creators.sort_unstable();
    creators.dedup_by_key(|(k, (id, _))| (*k, *id));
    for &(path, g, _) in &ghosts {
        if made.held.iter().any(|(p, _, _)| p == path) {
            continue;
        }
        if let Some(from) = &g.link_from {
            std::fs::hard_link(from, path).with_context(|| {
                format!("linking {} again as {}, the name it was opened by", from.display(), path.display())
            })?;
            made.paths.push(path.to_path_buf());
            made.hold(path)?;
            continue;
        }
        made.parents_of(path)?;
        if g.is_dir() {
            std::fs::DirBuilder::new()
                .mode(g.mode & 0o7777)
                .create(path)
                .with_context(|| format!("creating the removed directory {} again", path.display()))?;
            made.dirs.push(path.to_path_buf());
            let d = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            set_attrs(&d, path, g)?;
            made.hold(path)?;
            continue;
        }
        if let Some(to) = &g.symlink {
            std::os::unix::fs::symlink(to, path)
                .with_context(|| format!("making the deleted link {} (to {to}) again", path.display()))?;
            made.paths.push(path.to_path_buf());
            for &(id, flags) in creators.iter().filter(|(k, _)| *k == g.key).map(|(_, c)| c) {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags((flags & !nix::libc::O_ACCMODE) | nix::libc::O_PATH | nix::libc::O_NOFOLLOW)
                    .open(path)
                    .with_context(|| format!("opening the link {}", path.display()))?;
                made.held.push((path.to_path_buf(), f, Some(id)));
            }
            continue;
        }
        if g.is_device() {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(g.mode & nix::libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(g.mode & 0o7777);
            nix::sys::stat::mknod(path, kind, perm, u64::from(g.rdev))
                .with_context(|| format!("making the deleted device node {} again", path.display()))?;
            made.paths.push(path.to_path_buf());
            made.hold(path)?;
            let f = std::fs::File::open(made.opened_at(path).expect("just held"))
                .with_context(|| format!("opening {}", path.display()))?;
            set_attrs(&f, path, g)?;
            continue;
        }
        if g.is_fifo() {
            let perm = nix::sys::stat::Mode::from_bits_truncate(g.mode & 0o7777);
            nix::unistd::mkfifo(path, perm)
                .with_context(|| format!("creating the deleted FIFO {} again", path.display()))?;
            made.paths.push(path.to_path_buf());
            // Read-write: an open of one side alone would wait for the other.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            set_attrs(&f, path, g)?;
            made.hold(path)?;
            continue;
        }
        if let Some((_, first)) = firsts.iter().find(|(k, _)| *k == g.key) {
            std::fs::hard_link(first, path).with_context(|| {
                format!("linking the unlinked file {} again as {}", first.display(), path.display())
            })?;
            made.paths.push(path.to_path_buf());
            made.hold(path)?;
            continue;
        }
        firsts.push((g.key, path.to_path_buf()));
        let f = if g.tmpfile {
            let creator = creators.iter().find(|(k, _)| *k == g.key).map(|(_, c)| *c);
            let held = tmpfile(path, g, creator.map(|(_, flags)| flags))?;
            // Filled through a description of our own: the program's may
            // be write-only or appending.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", held.as_raw_fd()))
                .with_context(|| format!("opening the O_TMPFILE file {} again", path.display()))?;
            made.held.push((path.to_path_buf(), held, creator.map(|(id, _)| id)));
            f
        } else {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(g.mode & 0o7777)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
                .with_context(|| format!("creating the unlinked file {} again", path.display()))?;
            made.paths.push(path.to_path_buf());
            made.hold(path)?;
            f
        };
        use std::os::unix::fs::FileExt;
        f.set_len(g.size).with_context(|| format!("sizing {}", path.display()))?;
        for (off, data) in &g.pieces {
            f.write_all_at(data, *off).with_context(|| format!("writing {}", path.display()))?;
        }
        set_attrs(&f, path, g)?;
    }
    // Gone again before any task exists: nothing in the tree sees a name
    // come and go.
    made.unlink();
    Ok(made)
}

/// A new file made with `O_TMPFILE` in the directory of `path`, opened
/// with the program's `flags` (its access mode, `O_NOFOLLOW`, ...; those
/// `fcntl` sets are set where the tree takes it) or read-write.
fn tmpfile(path: &Path, g: &Ghost, flags: Option<i32>) -> Result<std::fs::File> {
    use nix::libc::{O_ACCMODE, O_APPEND, O_ASYNC, O_CLOEXEC, O_DIRECT, O_NOATIME, O_NONBLOCK, O_RDWR, O_TMPFILE};
    let dir = path.parent().unwrap_or(Path::new("/"));
    let flags = flags.unwrap_or(O_RDWR) & !(O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME | O_NONBLOCK);
    let d = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: a plain open of a NUL-terminated path; the descriptor is
    // owned at once.
    let fd = unsafe { nix::libc::open(d.as_ptr(), flags | O_TMPFILE | O_CLOEXEC, g.mode & 0o7777) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "creating the O_TMPFILE file {} again in {} ({})",
                path.display(),
                dir.display(),
                if flags & O_ACCMODE == O_RDWR { "read-write" } else { "write-only" }
            )
        });
    }
    // SAFETY: just opened, ours alone.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Gives `f`, made again at `path`, the owner, mode and times of `g`.
fn set_attrs(f: &std::fs::File, path: &Path, g: &Ghost) -> Result<()> {
    std::os::unix::fs::fchown(f, Some(g.uid), Some(g.gid))
        .with_context(|| format!("{}: owner {}:{}", path.display(), g.uid, g.gid))?;
    let mode = nix::sys::stat::Mode::from_bits_truncate(g.mode & 0o7777);
    nix::sys::stat::fchmod(f, mode).with_context(|| format!("{}: mode {:o}", path.display(), g.mode))?;
    let t =
        |(s, us): (u64, u64)| nix::sys::time::TimeSpec::new(s as nix::libc::time_t, (us * 1000) as nix::libc::c_long);
    nix::sys::stat::futimens(f, &t(g.atime), &t(g.mtime)).with_context(|| format!("{}: times", path.display()))
}

/// The unlinked file that `files.img` entry `id` (`r`) is, if
/// `remap-fpath.img` says so, and the path to make it again at: its own,
/// or, when something is there now, `.NAME.revenant-unlinked` beside it.
pub fn plan(set: &ImageSet, id: u32, r: &RegFileEntry, at: &str) -> Result<Option<(PathBuf, Ghost)>> {
    let Some(remap) = set.remaps.iter().find(|m| m.orig_id == id) else { return Ok(None) };
    if remap.remap_type != Some(1) {
        bail!("{at}: remap-fpath.img: {} is remapped in a way not restored yet (type {:?})", r.name, remap.remap_type);
    }
    let (e, data) = set
        .ghosts
        .get(&remap.remap_id)
        .with_context(|| format!("{at}: ghost-file-{:x}.img is missing", remap.remap_id))?;
    if !Path::new(&r.name).is_absolute() {
        bail!("{at}: {:?} was unlinked when dumped, but its path is not absolute", r.name);
    }
    if let Some(there) = Path::new(&r.name).ancestors().skip(1).find(|a| std::fs::symlink_metadata(a).is_ok())
        && on_kernel_fs(there)
    {
        bail!("{at}: {} was unlinked when dumped, and {} cannot make it again", r.name, there.display());
    }
    let own = PathBuf::from(&r.name);
    // Named as the kernel names a file made by O_TMPFILE, "#INO" (whose
    // number the dump checked), and unlinked: never named.
    let tmpfile = own.file_name().and_then(|n| n.to_str()?.strip_prefix('#')).is_some_and(|i| i.parse::<u64>().is_ok());
    let (path, taken) = if tmpfile || std::fs::symlink_metadata(&own).is_err() {
        (own, None)
    } else {
        let name = own.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let beside = own.with_file_name(format!(".{name}.revenant-unlinked"));
        if std::fs::symlink_metadata(&beside).is_ok() {
            bail!(
                "{at}: {} was unlinked when dumped, and something is at that path now, and at {} too",
                r.name,
                beside.display()
            );
        }
        (beside, Some(own))
    };
    let whole = data.iter().map(|(off, d)| off + d.len() as u64).max().unwrap_or(0);
    let (uid, gid, mode, size) = (e.uid, e.gid, e.mode, e.size.unwrap_or(whole));
    let time = |t: &Option<Timeval>| t.as_ref().map(|t| (t.tv_sec, t.tv_usec.min(999_999))).unwrap_or_default();
    let (atime, mtime) = (time(&e.atim), time(&e.mtim));
    let pieces = data.clone();
    let (dev, ino, rdev) = (e.dev.unwrap_or(0), e.ino.unwrap_or(0), e.rdev.unwrap_or(0));
    let symlink = e.symlnk_target.clone().filter(|_| mode & nix::libc::S_IFMT == nix::libc::S_IFLNK);
    let key = remap.remap_id;
    Ok(Some((
        path,
        Ghost {
            key,
            uid,
            gid,
            mode,
            atime,
            mtime,
            size,
            pieces,
            dev,
            ino,
            rdev,
            symlink,
            taken,
            tmpfile,
            link_from: None,
        },
    )))
}

/// For a file entry `r` whose name still links it but which was opened
/// (or mapped) by another name in the same directory, unlinked since: the
/// path to link it under again for the time of the restore, its own or,
/// when something is there now, `.NAME.revenant-unlinked` beside it. None
/// if both are taken (it is then opened by the name that links it).
pub fn relink(r: &RegFileEntry) -> Option<(PathBuf, Ghost)> {
    let own = PathBuf::from(r.unlinked_name.as_ref()?);
    let name = Path::new(&r.name);
    if !own.is_absolute() || own.parent() != name.parent() || own.file_name().is_none() {
        return None;
    }
    let free = |p: &Path| std::fs::symlink_metadata(p).is_err();
    let (path, taken) = if free(&own) {
        (own, None)
    } else {
        let n = own.file_name()?.to_string_lossy().into_owned();
        let beside = own.with_file_name(format!(".{n}.revenant-unlinked"));
        if !free(&beside) {
            return None;
        }
        (beside, Some(own))
    };
    let mode = r.mode.unwrap_or(nix::libc::S_IFREG);
    Some((path, Ghost { mode, link_from: Some(name.to_path_buf()), taken, ..Ghost::default() }))
}

/// The warning for a ghost made at `path` because its own was taken.
pub fn taken_warning(who: &str, path: &Path, g: &Ghost) -> Option<String> {
    let own = g.taken.as_ref()?;
    Some(format!(
        "{who}: {} was unlinked when dumped and something else is at that path now: it is made again as {}, \
         the name /proc shows for it from now on",
        own.display(),
        path.display()
    ))
}

/// `remap-fpath.img`, and a `ghost-file-ID.img` per file, as CRIU writes
/// them: each description of an unlinked file remapped (type GHOST, 1) to
/// the file's first description, whose id names its image; each /proc
/// directory of a process that ended (`dead_pids`: entry id, PID) remapped
/// (type PROCFS, 2) to that PID.
pub fn images(
    ghosts: &[(u32, Ghost)],
    dead_pids: &[(u32, u32)],
    put: &mut dyn FnMut(String, &Writer) -> Result<()>,
) -> Result<()> {
    if ghosts.is_empty() && dead_pids.is_empty() {
        return Ok(());
    }
    let mut remaps = Writer::new(Kind::RemapFpath);
    for &(orig_id, pid) in dead_pids {
        remaps.push(&RemapFilePathEntry {
            orig_id,
            remap_id: pid,
            remap_type: Some(REMAP_PROCFS),
            ..Default::default()
        });
    }
    for (id, g) in ghosts {
        let remap = RemapFilePathEntry { orig_id: *id, remap_id: g.key, remap_type: Some(1), ..Default::default() };
        remaps.push(&remap);
        if g.key != *id {
            continue;
        }
        let entry = GhostFileEntry {
            uid: g.uid,
            gid: g.gid,
            mode: g.mode,
            dev: Some(g.dev),
            ino: Some(g.ino),
            rdev: g.is_device().then_some(g.rdev),
            symlnk_target: g.symlink.clone(),
            atim: Some(Timeval { tv_sec: g.atime.0, tv_usec: g.atime.1, ..Default::default() }),
            mtim: Some(Timeval { tv_sec: g.mtime.0, tv_usec: g.mtime.1, ..Default::default() }),
            size: (!g.is_dir() && !g.is_fifo() && !g.is_device() && g.symlink.is_none()).then_some(g.size),
            chunks: g.sparse().then_some(true),
            ..Default::default()
        };
        let mut w = Writer::new(Kind::GhostFile);
        w.push(&entry);
        for (off, data) in &g.pieces {
            if g.sparse() {
                w.push(&GhostChunkEntry { len: data.len() as u64, off: *off, ..Default::default() });
            }
            w.raw(data);
        }
        put(format!("ghost-file-{id:x}.img"), &w)?;
    }
    put("remap-fpath.img".into(), &remaps)
}
