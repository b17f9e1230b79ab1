//! Opening files in an image directory, which may come from anyone.
//!
//! A FIFO there would block an open or a read forever, a link could lead
//! to `/dev/zero` (endless) or to a file the directory's author should not
//! be able to hand us, and a file grown or swapped while we read must not
//! make us read more than we planned. So every image file is opened here:
//! without following a link, without blocking, never becoming a
//! controlling terminal, close-on-exec; then `fstat`ed and refused unless
//! it is a regular file; then read by its size at that moment, exactly.
//! Files written into such a directory (images, logs, pidfiles) are opened
//! the same way, so a link planted there is refused, not written through.

use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use linux_raw_sys::errno::{ELOOP, ENXIO};
use linux_raw_sys::general::{O_NOCTTY, O_NOFOLLOW, O_NONBLOCK};

/// Added to every open; std adds `O_CLOEXEC` itself.
pub const OPEN_FLAGS: i32 = (O_NOFOLLOW | O_NONBLOCK | O_NOCTTY) as i32;

const READ_RULE: &str = "image files must be regular files";
const WRITE_RULE: &str = "revenant writes only to regular files, never through a link";

/// An image file known to be a regular file, with its size when opened.
#[derive(Debug)]
pub struct ImageFile {
    pub file: File,
    pub size: u64,
    path: PathBuf,
}

impl ImageFile {
    /// Opens `path` for reading; refuses anything but a regular file,
    /// naming what it is instead.
    pub fn open(path: &Path) -> Result<ImageFile> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(path)
            .map_err(|e| open_error(path, e, READ_RULE, "cannot read"))?;
        let size = regular_size(path, &file, READ_RULE)?;
        Ok(ImageFile { file, size, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every byte the file had when it was opened.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        self.read_head(self.size)
    }

    /// Its first `n` bytes, or all of them if it is shorter.
    pub fn read_head(&self, n: u64) -> Result<Vec<u8>> {
        let n = n.min(self.size);
        let len = usize::try_from(n)
            .map_err(|_| anyhow!("{}: {n} bytes are more than this machine can address", self.path.display()))?;
        let mut buf = Vec::new();
        // A size the allocator cannot meet is an error to report, not an abort.
        buf.try_reserve_exact(len)
            .map_err(|_| anyhow!("{}: cannot allocate {len} bytes to read it", self.path.display()))?;
        buf.resize(len, 0);
        self.file.read_exact_at(&mut buf, 0).with_context(|| {
            format!("{}: reading its {len} bytes (it shrank while being read?)", self.path.display())
        })?;
        Ok(buf)
    }
}

/// The whole of the image file at `path` (see [`ImageFile`]).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    ImageFile::open(path)?.read_all()
}

/// Whether anything is at `path`. A link counts even when dangling, so
/// that reading it is refused rather than the file taken for absent.
pub fn exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{}: cannot look it up", path.display())),
    }
}

/// Creates `path` with `mode` (less the umask), or empties it when a
/// regular file is already there; a link, FIFO, device or directory
/// there is refused, naming what it is.
pub fn create(path: &Path, mode: u32) -> Result<File> {
    open_for_writing(path, mode, false)
}

/// Like [`create`], but keeps what the file holds and writes at its end.
pub fn append(path: &Path, mode: u32) -> Result<File> {
    open_for_writing(path, mode, true)
}

fn open_for_writing(path: &Path, mode: u32, append: bool) -> Result<File> {
    // No O_TRUNC: nothing is cut before the file is known to be regular.
    let file = OpenOptions::new()
        .write(true)
        .append(append)
        .create(true)
        .mode(mode)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|e| open_error(path, e, WRITE_RULE, "cannot create"))?;
    regular_size(path, &file, WRITE_RULE)?;
    if !append {
        file.set_len(0).with_context(|| format!("{}: cannot empty it", path.display()))?;
    }
    Ok(file)
}

/// What a file type is, for messages.
pub fn describe(t: FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The error for a non-regular file of type `t` at `path`.
pub fn not_regular(path: &Path, t: FileType) -> anyhow::Error {
    anyhow!("{}: is {}; {READ_RULE}", path.display(), describe(t))
}

fn regular_size(path: &Path, file: &File, rule: &str) -> Result<u64> {
    let meta = file.metadata().with_context(|| format!("{}: cannot stat", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(anyhow!("{}: is {}; {rule}", path.display(), describe(meta.file_type())));
    }
    Ok(meta.len())
}

/// O_NOFOLLOW answers a link with ELOOP, and a socket answers ENXIO, as
/// does a FIFO opened for writing with no reader: say what is there.
fn open_error(path: &Path, e: io::Error, rule: &str, what: &str) -> anyhow::Error {
    let odd = matches!(e.raw_os_error(), Some(c) if c == ELOOP as i32 || c == ENXIO as i32);
    if odd
        && let Ok(m) = std::fs::symlink_metadata(path)
        && !m.file_type().is_file()
    {
        return anyhow!("{}: is {}; {rule}", path.display(), describe(m.file_type()));
    }
    anyhow::Error::new(e).context(format!("{}: {what}", path.display()))
}
