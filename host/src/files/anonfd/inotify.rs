//! inotify: each watch, its number and mask, and the watched file, by
//! the file handle the kernel shows and by the path the dumper found for
//! that handle (`fh_entry.path`, which CRIU reads too). A watched file
//! unlinked since must be an unlinked file the tree holds (a `tail -f` of
//! a log deleted under it): the restore finds it among the unlinked files
//! by device and inode (`ghost_file_entry`'s, as CRIU matches them) and
//! watches the file it makes again. Events queued
//! and not read are lost, as CRIU loses them. The restore adds each watch by
//! path and, to give it its number again, adds and removes watches until
//! the kernel's cyclic numbering comes to it.

use std::ffi::CString;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, InotifyFileEntry, InotifyWdEntry};

use super::fhandle;

/// One watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub wd: u32,
    pub mask: u32,
    pub ino: u64,
    pub sdev: u32,
    pub handle_type: u32,
    pub handle: Vec<u8>,
    /// The watched file's path.
    pub path: CString,
    /// Unlinked since (dump only): its device and inode as `stat` gives
    /// them, for the dump to check that the tree carries it.
    pub unlinked: Option<(u64, u64)>,
}

/// The watches of inotify `fd` of `pid`.
pub fn dump(pid: i32, fd: i32, fdinfo: &str, what: &str) -> Result<Vec<Watch>> {
    let mut out = vec![];
    for line in fdinfo.lines().filter_map(|l| l.strip_prefix("inotify ")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix(':'))
                .with_context(|| format!("{what}: no {k} in {line:?}"))
        };
        let hex = |k: &str| -> Result<u64> {
            let v = field(k)?;
            u64::from_str_radix(v, 16).with_context(|| format!("{what}: {k} {v:?}"))
        };
        let handle = fhandle::parse(field("f_handle")?, what)?;
        let (sdev, handle_type) = (hex("sdev")? as u32, hex("fhandle-type")? as u32);
        let wd = field("wd")?;
        let (path, unlinked) = fhandle::path_of(pid, sdev, handle_type, &handle)
            .with_context(|| format!("process {pid}: inotify fd {fd}: finding the file of watch {wd}"))?;
        out.push(Watch {
            wd: hex("wd")? as u32,
            mask: hex("mask")? as u32,
            ino: hex("ino")?,
            sdev,
            handle_type,
            handle,
            path,
            unlinked,
        });
    }
    Ok(out)
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, watches: &[Watch]) -> FileEntry {
    let wd = watches
        .iter()
        .map(|w| InotifyWdEntry {
            id,
            i_ino: w.ino,
            mask: w.mask,
            ignored_mask: 0,
            s_dev: w.sdev,
            wd: w.wd,
            f_handle: fhandle::entry(&w.handle, w.handle_type, &w.path),
            ..Default::default()
        })
        .collect();
    FileEntry {
        r#type: FdType::Inotify as i32,
        id,
        ify: Some(InotifyFileEntry { id, flags, fown, wd, ..Default::default() }),
        ..Default::default()
    }
}

/// The watches of `e`, with their paths (the dumper's, or CRIU's where
/// it wrote one; an empty one where it did not).
pub fn from_entry(e: &InotifyFileEntry, at: &str) -> Result<Vec<Watch>> {
    let mut out: Vec<Watch> =
        e.wd.iter()
            .map(|w| {
                // None for a file unlinked since (CRIU writes none): the
                // restore finds it among the unlinked files (`ghost::watched`).
                let path = match &w.f_handle.path {
                    Some(p) if !p.starts_with('/') || p.contains('\0') => {
                        bail!("{at}: inotify watch {}: path {p:?} is not an absolute path", w.wd)
                    }
                    Some(p) => CString::new(p.as_str()).expect("checked for NULs"),
                    None => CString::default(),
                };
                let handle = fhandle::bytes(&w.f_handle);
                Ok(Watch {
                    wd: w.wd,
                    mask: w.mask,
                    ino: w.i_ino,
                    sdev: w.s_dev,
                    handle_type: w.f_handle.r#type,
                    handle,
                    path,
                    unlinked: None,
                })
            })
            .collect::<Result<_>>()?;
    out.sort_by_key(|w| w.wd);
    if out.windows(2).any(|p| p[0].wd == p[1].wd) || out.iter().any(|w| w.wd == 0 || w.wd > i32::MAX as u32) {
        bail!("{at}: inotify watch numbers repeat or are out of range");
    }
    Ok(out)
}

/// Makes the inotify with its watches, each under its number.
///
/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make(watches: &[Watch]) -> Result<i32, &'static str> {
    // SAFETY: plain system calls on our descriptor and NUL-terminated paths.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC);
        if fd < 0 {
            return Err("creating an inotify");
        }
        for w in watches {
            loop {
                let got = libc::inotify_add_watch(fd, w.path.as_ptr(), w.mask);
                if got < 0 {
                    return Err("adding an inotify watch (is the file still there?)");
                }
                if got as u32 == w.wd {
                    break;
                }
                // Numbers come cyclically: step past the ones below.
                if (got as u32) > w.wd || libc::inotify_rm_watch(fd, got) < 0 {
                    return Err("giving an inotify watch its number");
                }
            }
        }
        // Removing the stepping watches queued IN_IGNORED events the
        // program never caused: drop every event queued so far.
        let mut buf = [0u8; 4096];
        libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
        while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        Ok(fd)
    }
}
