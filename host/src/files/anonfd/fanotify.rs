//! fanotify: `fanotify_init`'s flags and event flags, and each mark with
//! the `FAN_MARK_*` flags it was added with, its event and ignored masks,
//! and what it is on: a file (by the handle the kernel shows and the path
//! the dumper found for it, as for inotify) or a mount (by its mount
//! point). Marks on a whole filesystem, and on a file unlinked since, are
//! refused. Events queued and not read are lost, as CRIU loses them.

use std::ffi::CString;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{
    FanotifyFileEntry, FanotifyInodeMarkEntry, FanotifyMarkEntry, FanotifyMountMarkEntry, FdType, FileEntry, FownEntry,
    MarkType,
};

use super::fhandle;

/// A fanotify group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `fanotify_init`'s flags, as fdinfo shows them.
    pub faflags: u32,
    /// `fanotify_init`'s `event_f_flags`.
    pub evflags: u32,
    pub marks: Vec<Mark>,
}

/// One mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// On a mount (`FAN_MARK_MOUNT`), else on a file.
    pub mount: bool,
    pub mflags: u32,
    pub mask: u32,
    pub ignored_mask: u32,
    pub sdev: u32,
    pub ino: u64,
    pub handle_type: u32,
    pub handle: Vec<u8>,
    pub mnt_id: u32,
    /// The marked file's path, or the mount point.
    pub path: CString,
}

/// The group behind fanotify `fd` of `pid`.
pub fn dump(pid: i32, fd: i32, fdinfo: &str, what: &str) -> Result<Group> {
    let mut group = Group { faflags: 0, evflags: 0, marks: vec![] };
    for line in fdinfo.lines().filter_map(|l| l.strip_prefix("fanotify ")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix(':'))
                .with_context(|| format!("{what}: no {k} in {line:?}"))
        };
        let hex = |k: &str| -> Result<u64> {
            let v = field(k)?;
            u64::from_str_radix(v, 16).with_context(|| format!("{what}: {k} {v:?}"))
        };
        if line.starts_with("flags:") {
            (group.faflags, group.evflags) = (hex("flags")? as u32, hex("event-flags")? as u32);
            continue;
        }
        let (mflags, mask, ignored_mask) = (hex("mflags")? as u32, hex("mask")? as u32, hex("ignored_mask")? as u32);
        if line.starts_with("ino:") {
            let handle = fhandle::parse(field("f_handle")?, what)?;
            let (sdev, handle_type, ino) = (hex("sdev")? as u32, hex("fhandle-type")? as u32, hex("ino")?);
            let (path, unlinked) = fhandle::path_of(pid, sdev, handle_type, &handle).with_context(|| {
                format!("process {pid}: fanotify fd {fd}: finding the file of the mark on {ino:#x}")
            })?;
            if unlinked.is_some() {
                bail!("process {pid}: fanotify fd {fd}: a mark on {path:?}, unlinked since: not supported yet");
            }
            group.marks.push(Mark {
                mount: false,
                mflags,
                mask,
                ignored_mask,
                sdev,
                ino,
                handle_type,
                handle,
                mnt_id: 0,
                path,
            });
        } else if line.starts_with("mnt_id:") {
            let mnt_id = hex("mnt_id")? as u32;
            let path = mount_point(pid, mnt_id)
                .with_context(|| format!("process {pid}: fanotify fd {fd}: the mount of a mark ({mnt_id:#x})"))?;
            group.marks.push(Mark {
                mount: true,
                mflags,
                mask,
                ignored_mask,
                sdev: 0,
                ino: 0,
                handle_type: 0,
                handle: vec![],
                mnt_id,
                path,
            });
        } else {
            bail!("process {pid}: fanotify fd {fd}: a mark on a whole filesystem ({line:?}): not supported yet");
        }
    }
    Ok(group)
}

/// Where mount `mnt_id` is in `pid`'s mount table.
fn mount_point(pid: i32, mnt_id: u32) -> Result<CString> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).context("reading mountinfo")?;
    let point = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first().and_then(|id| id.parse::<u32>().ok()) == Some(mnt_id))
        .and_then(|w| w.get(4).map(|m| m.to_string()))
        .context("not in mountinfo")?;
    if point.contains('\\') {
        bail!("mount point {point:?} has characters mountinfo escapes");
    }
    CString::new(point).context("a path with a NUL")
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, g: &Group) -> FileEntry {
    let mark = g
        .marks
        .iter()
        .map(|m| {
            let path = Some(m.path.to_string_lossy().into_owned());
            let (ie, me) = if m.mount {
                (None, Some(FanotifyMountMarkEntry { mnt_id: m.mnt_id, path, ..Default::default() }))
            } else {
                let f_handle = fhandle::entry(&m.handle, m.handle_type, &m.path);
                (Some(FanotifyInodeMarkEntry { i_ino: m.ino, f_handle, ..Default::default() }), None)
            };
            FanotifyMarkEntry {
                id,
                r#type: if m.mount { MarkType::Mount } else { MarkType::Inode } as i32,
                mflags: m.mflags,
                mask: m.mask,
                ignored_mask: m.ignored_mask,
                s_dev: m.sdev,
                ie,
                me,
                ..Default::default()
            }
        })
        .collect();
    let ffy = FanotifyFileEntry { id, flags, fown, faflags: g.faflags, evflags: g.evflags, mark, ..Default::default() };
    FileEntry { r#type: FdType::Fanotify as i32, id, ffy: Some(ffy), ..Default::default() }
}

/// The group `e` describes; each mark needs its path (revenant's images
/// and CRIU's mount marks have one; a file mark of CRIU's without one is
/// refused).
pub fn from_entry(e: &FanotifyFileEntry, at: &str) -> Result<Group> {
    let path = |p: Option<&String>, i: usize| -> Result<CString> {
        match p {
            Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(CString::new(p.as_str()).expect("checked")),
            other => bail!("{at}: fanotify mark {i}: path {other:?}: no absolute path to mark again"),
        }
    };
    let marks = e
        .mark
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mount = m.r#type == MarkType::Mount as i32;
            let (ino, handle_type, handle, mnt_id, path) = match (&m.ie, &m.me) {
                (Some(ie), _) if !mount => {
                    let handle = fhandle::bytes(&ie.f_handle);
                    (ie.i_ino, ie.f_handle.r#type, handle, 0, path(ie.f_handle.path.as_ref(), i)?)
                }
                (_, Some(me)) if mount => (0, 0, vec![], me.mnt_id, path(me.path.as_ref(), i)?),
                _ => bail!("{at}: fanotify mark {i}: type {} without its inode or mount", m.r#type),
            };
            Ok(Mark {
                mount,
                mflags: m.mflags,
                mask: m.mask,
                ignored_mask: m.ignored_mask,
                sdev: m.s_dev,
                ino,
                handle_type,
                handle,
                mnt_id,
                path,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Group { faflags: e.faflags, evflags: e.evflags, marks })
}

/// Makes the group with its marks.
///
/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make(g: &Group) -> Result<i32, &'static str> {
    // SAFETY: plain system calls on our descriptor and NUL-terminated paths.
    unsafe {
        // The flags exactly (fdinfo shows FAN_CLOEXEC and FAN_NONBLOCK
        // among them); the fd's own close-on-exec is set where it is placed.
        let fd = libc::fanotify_init(g.faflags, g.evflags);
        if fd < 0 {
            return Err("creating a fanotify group");
        }
        // The kernel lists a group's marks newest first: added in reverse,
        // they list as they did.
        for m in g.marks.iter().rev() {
            let flags = libc::FAN_MARK_ADD | m.mflags | if m.mount { libc::FAN_MARK_MOUNT } else { 0 };
            if m.mask != 0 && libc::fanotify_mark(fd, flags, u64::from(m.mask), libc::AT_FDCWD, m.path.as_ptr()) < 0 {
                libc::close(fd);
                return Err("adding a fanotify mark (is the file still there?)");
            }
            if m.ignored_mask != 0
                && libc::fanotify_mark(
                    fd,
                    flags | libc::FAN_MARK_IGNORED_MASK,
                    u64::from(m.ignored_mask),
                    libc::AT_FDCWD,
                    m.path.as_ptr(),
                ) < 0
            {
                libc::close(fd);
                return Err("adding a fanotify mark's ignored mask");
            }
        }
        Ok(fd)
    }
}
