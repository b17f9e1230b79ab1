//! File handles as inotify and fanotify marks name their files: the hex
//! bytes fdinfo shows, CRIU's `fh_entry` (the bytes packed into
//! little-endian words, with the dumper's path for them), and the path a
//! handle leads to.

use std::ffi::CString;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::FhEntry;

/// The bytes of fdinfo's `f_handle:` hex text.
pub fn parse(text: &str, what: &str) -> Result<Vec<u8>> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2).unwrap_or("?"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .with_context(|| format!("{what}: f_handle {text:?}"))
}

/// `handle` (of `handle_type`, found at `path`) as CRIU writes it: at
/// least 16 words, as its fixed-size array had.
pub fn entry(handle: &[u8], handle_type: u32, path: &CString) -> FhEntry {
    let mut words: Vec<u64> = handle
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    words.resize(words.len().max(16), 0);
    FhEntry {
        bytes: handle.len() as u32,
        r#type: handle_type,
        handle: words,
        path: Some(path.to_string_lossy().into_owned()),
        ..Default::default()
    }
}

/// The handle's bytes back from `e` (at most the kernel's 128).
pub fn bytes(e: &FhEntry) -> Vec<u8> {
    let n = (e.bytes as usize).min(128);
    e.handle.iter().flat_map(|x| x.to_le_bytes()).take(n).collect()
}

/// The path of the file with `handle` on the filesystem `sdev` (the
/// kernel's encoding, major << 20 | minor), found through a mount of it in
/// `pid`'s mount table; for one unlinked, the path it had, and its device
/// and inode.
pub fn path_of(pid: i32, sdev: u32, handle_type: u32, handle: &[u8]) -> Result<(CString, Option<(u64, u64)>)> {
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
