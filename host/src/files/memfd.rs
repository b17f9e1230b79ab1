//! memfds: the object (`memfd.img`: name, size, seals, owner, mode; its
//! contents in `pagemap-shmem-SHMID.img` like shared anonymous memory) and
//! each description of it (`files.img` MEMFD entries, for fds and for the
//! mappings of it). The restore makes each object once in the host, fills
//! it, and the tasks reopen it or take the object's own descriptor (see
//! `restore/tree_files.rs`). CRIU writes shared anonymous memory held
//! through an fd as a memfd named `/dev/zero`; that comes back as shared
//! anonymous memory.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::ImageSet;
use revenant_images::messages::{FdType, FdinfoEntry, FileEntry, FownEntry, MemfdFileEntry, MemfdInodeEntry, VmaEntry};

use super::{FdPlan, FileKind, Files};
use crate::procfs;
use crate::restore::plan::Backing;

/// A memfd description (one of an fd, or the one for its mappings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdFile {
    pub flags: u32,
    pub pos: u64,
    /// Its object's inode.
    pub ino: u64,
}

/// A memfd object: written once (`memfd.img`, contents in
/// `pagemap-shmem-INO.img`), however many fds and mappings it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdObject {
    pub ino: u64,
    /// What `memfd_create` was given.
    pub name: String,
    pub size: u64,
    pub seals: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A `/proc` link that opens it, while the tree is frozen.
    pub source: PathBuf,
}

impl Files {
    /// The entry the mappings of a memfd name (`VmaEntry::shmid`), given
    /// its `map_files` link.
    pub fn memfd_mapping(&mut self, pid: i32, link: &str, name: &str, flags: u32) -> Result<u32> {
        let p = procfs::path(pid, link);
        let m = fs::metadata(&p).with_context(|| format!("stat {} ({name})", p.display()))?;
        if let Some(&id) = self.memfd_maps.get(&m.ino()) {
            return Ok(id);
        }
        self.memfd_object(&p, name, &m)?;
        let id = self.push(FileKind::Memfd(MemfdFile { flags, pos: 0, ino: m.ino() }));
        self.memfd_maps.insert(m.ino(), id);
        Ok(id)
    }

    /// Notes the memfd object behind `source` (shown as `name`) once.
    pub(super) fn memfd_object(&mut self, source: &std::path::Path, name: &str, m: &fs::Metadata) -> Result<()> {
        if self.memfds.iter().any(|o| o.ino == m.ino()) {
            return Ok(());
        }
        // CRIU's images name the object by a 32-bit shmid.
        if m.ino() > u64::from(u32::MAX) {
            bail!("{name}: inode {} does not fit the images' 32-bit shmid", m.ino());
        }
        let f = fs::File::open(source).with_context(|| format!("opening {} ({name})", source.display()))?;
        let seals = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GET_SEALS)
            .with_context(|| format!("F_GET_SEALS on {} ({name})", source.display()))?;
        let bare = name.strip_prefix("/memfd:").unwrap_or(name);
        let bare = bare.strip_suffix(" (deleted)").unwrap_or(bare);
        self.memfds.push(MemfdObject {
            ino: m.ino(),
            name: bare.to_string(),
            size: m.len(),
            seals: seals as u32,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            source: source.to_path_buf(),
        });
        Ok(())
    }
}

/// The id `memfd.img` gives the object with inode `ino`.
fn inode_id(objects: &[MemfdObject], ino: u64) -> u32 {
    objects.iter().position(|o| o.ino == ino).map_or(0, |i| i as u32 + 1)
}

impl MemfdFile {
    pub fn entry(&self, id: u32, fown: FownEntry, objects: &[MemfdObject]) -> FileEntry {
        FileEntry {
            r#type: FdType::Memfd as i32,
            id,
            memfd: Some(MemfdFileEntry {
                id,
                flags: self.flags,
                pos: self.pos,
                fown,
                inode_id: inode_id(objects, self.ino),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// `memfd.img`'s entries, one per object.
pub fn inode_entries(objects: &[MemfdObject]) -> impl Iterator<Item = MemfdInodeEntry> + '_ {
    objects.iter().map(|o| MemfdInodeEntry {
        name: o.name.clone(),
        uid: o.uid,
        gid: o.gid,
        size: o.size,
        shmid: o.ino as u32,
        seals: o.seals,
        inode_id: inode_id(objects, o.ino).into(),
        mode: Some(o.mode),
        ..Default::default()
    })
}

/// Fd `f` on memfd description `m`: opened from its object, which the
/// host makes first.
pub fn plan_fd(set: &ImageSet, f: &FdinfoEntry, m: &MemfdFileEntry, cloexec: bool, at: &str) -> Result<FdPlan> {
    let inode = inode(set, m, at)?;
    Ok(FdPlan {
        fd: f.fd as i32,
        id: f.id,
        path: PathBuf::from(format!("memfd:{}", inode.name)),
        flags: m.flags as i32 & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC),
        pos: m.pos,
        cloexec,
        shmem: Some(u64::from(inode.shmid)),
        ..Default::default()
    })
}

/// A memfd area: a mapping of the object its file entry names.
pub fn backing(set: &ImageSet, v: &VmaEntry, at: &str) -> Result<Backing> {
    let file = u32::try_from(v.shmid)
        .ok()
        .and_then(|id| set.file(id))
        .with_context(|| format!("{at}.shmid {}: no such file in files.img", v.shmid))?;
    let m =
        file.memfd.as_ref().with_context(|| format!("{at}.shmid {}: files.img has no memfd entry for it", v.shmid))?;
    let inode = inode(set, m, at)?;
    Ok(Backing::Shmem { shmid: u64::from(inode.shmid) })
}

/// The object of memfd file entry `m`, which a restore can make.
pub fn inode<'a>(set: &'a ImageSet, m: &MemfdFileEntry, at: &str) -> Result<&'a MemfdInodeEntry> {
    let inode = set
        .memfd_inodes
        .iter()
        .find(|i| i.inode_id == u64::from(m.inode_id))
        .with_context(|| format!("{at}: files.img id {}: inode_id {}: not in memfd.img", m.id, m.inode_id))?;
    if inode.hugetlb_flag.is_some_and(|f| f != 0) {
        bail!("{at}: memfd {:?}: hugetlb memfds are not restored yet", inode.name);
    }
    Ok(inode)
}
