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
use revenant_images::messages::{FdType, FhEntry, FileEntry, FownEntry, InotifyFileEntry, InotifyWdEntry};

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
        let text = field("f_handle")?;
        let handle = (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .with_context(|| format!("{what}: f_handle {text:?}"))?;
        let (sdev, handle_type) = (hex("sdev")? as u32, hex("fhandle-type")? as u32);
        let wd = field("wd")?;
        let (path, unlinked) = path_of(pid, sdev, handle_type, &handle)
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

/// The path of the file with `handle` on the filesystem `sdev` (the
/// kernel's encoding, major << 20 | minor), found through a mount of it in
/// `pid`'s mount table; for one unlinked, the path it had, and its device
/// and inode.
pub(super) fn path_of(pid: i32, sdev: u32, handle_type: u32, handle: &[u8]) -> Result<(CString, Option<(u64, u64)>)> {
    let dev = format!("{}:{}", sdev >> 20, sdev & 0xfffff);
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).context("reading mountinfo")?;
    let mount = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.get(2) == Some(&dev.as_str()))
        .and_then(|w| w.get(4).map(|m| format!("/proc/{pid}/root{m}")))
        .with_context(|| format!("no mount of device {dev}"))?;
    let m = std::fs::File::open(&mount).with_context(|| format!("opening {mount}"))?;
    // struct file_handle: handle_bytes, handle_type, then the bytes.
    let mut fh = Vec::with_capacity(8 + handle.len());
    fh.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&(handle_type as i32).to_ne_bytes());
    fh.extend_from_slice(handle);
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: the kernel reads the handle we built.
    let fd = unsafe { libc::syscall(libc::SYS_open_by_handle_at, m.as_raw_fd(), fh.as_ptr(), libc::O_PATH) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("open_by_handle_at");
    }
    // SAFETY: just made, ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).context("reading its path")?;
    let path = link.to_str().context("a path that is not UTF-8")?.to_string();
    let unlinked = match path.strip_suffix(" (deleted)") {
        Some(_) => {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).context("its inode")?;
            Some((m.dev(), m.ino()))
        }
        None => None,
    };
    let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
    if !path.starts_with('/') {
        bail!("the watched file {path} has no path");
    }
    Ok((CString::new(path).context("a path with a NUL")?, unlinked))
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, watches: &[Watch]) -> FileEntry {
    let wd = watches
        .iter()
        .map(|w| {
            let mut words: Vec<u64> = w
                .handle
                .chunks(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(b)
                })
                .collect();
            words.resize(words.len().max(16), 0);
            InotifyWdEntry {
                id,
                i_ino: w.ino,
                mask: w.mask,
                ignored_mask: 0,
                s_dev: w.sdev,
                wd: w.wd,
                f_handle: FhEntry {
                    bytes: w.handle.len() as u32,
                    r#type: w.handle_type,
                    handle: words,
                    path: Some(w.path.to_string_lossy().into_owned()),
                    ..Default::default()
                },
                ..Default::default()
            }
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
                let bytes = (w.f_handle.bytes as usize).min(128);
                let handle: Vec<u8> = w.f_handle.handle.iter().flat_map(|x| x.to_le_bytes()).take(bytes).collect();
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
