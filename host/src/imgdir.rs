//! The image directory a dump writes into.
//!
//! A root dump writes the memory of another user's program, so the
//! directory is treated as hostile ground: it must be writable by us alone
//! (anyone else could swap images under us or plant names), every file is
//! created relative to one directory descriptor with
//! `O_CREAT|O_EXCL|O_NOFOLLOW|O_NONBLOCK`, so a planted link is never
//! followed and a planted FIFO never blocks us, and images appear under
//! their final names only by `renameat` at the very end, `inventory.img`
//! last, so a dump that stops half-way never leaves a set that looks whole.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Creates image directory `path` (and its parents) if missing, writable by
/// us alone.
pub fn create(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating the image directory {}", path.display()))
}

/// An open image directory.
#[derive(Debug)]
pub struct ImageDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The temporary name of image `name` while it is being written.
fn tmp(name: &str) -> String {
    format!(".{name}.part")
}

impl ImageDir {
    /// Opens `path` (which must exist) and checks that nobody but us can
    /// write into it.
    pub fn open(path: &Path) -> Result<ImageDir> {
        let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("opening the image directory {}", path.display()))?;
        let st = fstat(&fd).with_context(|| format!("stat of the image directory {}", path.display()))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me {
            bail!(
                "the image directory {} belongs to uid {}, not to us (uid {me}): its owner could plant or swap \
                 files under a dump; use a directory of our own",
                path.display(),
                st.st_uid
            );
        }
        if st.st_mode & 0o022 != 0 {
            bail!(
                "the image directory {} is writable by {} (mode {:o}): others could plant or swap files under a \
                 dump; use a directory only its owner can write (chmod go-w)",
                path.display(),
                if st.st_mode & 0o002 != 0 { "everyone" } else { "its group" },
                st.st_mode & 0o7777
            );
        }
        Ok(ImageDir { fd, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates image `name` under its temporary name, for writing. A file
    /// already there (a stale one of an interrupted dump, or anything
    /// planted) is unlinked, never opened.
    pub fn create(&self, name: &str) -> Result<File> {
        let t = tmp(name);
        let flags =
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        for _ in 0..2 {
            match openat(self.fd.as_fd(), t.as_str(), flags, Mode::from_bits_truncate(0o600)) {
                Ok(fd) => return Ok(File::from(fd)),
                Err(Errno::EEXIST) => {
                    unlinkat(self.fd.as_fd(), t.as_str(), UnlinkatFlags::NoRemoveDir)
                        .with_context(|| format!("removing {} before writing {name}", self.path.join(&t).display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", self.path.join(&t).display()));
                }
            }
        }
        bail!("{}: something keeps creating this name while we write it", self.path.join(&t).display())
    }

    /// Creates the symbolic link `name` to `target` under its temporary
    /// name (an iterative dump's `parent`); [`Self::commit`] moves it into
    /// place like an image.
    pub fn create_link(&self, name: &str, target: &Path) -> Result<()> {
        let t = tmp(name);
        for _ in 0..2 {
            match nix::unistd::symlinkat(target, self.fd.as_fd(), t.as_str()) {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) => {
                    unlinkat(self.fd.as_fd(), t.as_str(), UnlinkatFlags::NoRemoveDir)
                        .with_context(|| format!("removing {} before writing {name}", self.path.join(&t).display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("creating the link {}", self.path.join(&t).display())),
            }
        }
        bail!("{}: something keeps creating this name while we write it", self.path.join(&t).display())
    }

    /// Moves the temporary images `names` into place, `inventory.img` last
    /// (a restore starts from it). An existing `inventory.img` goes first,
    /// so a set half-replaced by an interrupted commit never looks whole.
    pub fn commit(&self, names: &[String]) -> Result<()> {
        let mut names = names.to_vec();
        names.sort_by_key(|n| n == "inventory.img");
        if names.iter().any(|n| n == "inventory.img") {
            match unlinkat(self.fd.as_fd(), "inventory.img", UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e).context("removing the old inventory.img"),
            }
        }
        for n in names {
            renameat(self.fd.as_fd(), tmp(&n).as_str(), self.fd.as_fd(), n.as_str())
                .with_context(|| format!("renaming {n} into place in {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Removes every temporary image (ours, by their names' shape).
    pub fn remove_partial(&self) {
        let Ok(rd) = std::fs::read_dir(&self.path) else { return };
        for e in rd.flatten() {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            if n.starts_with('.') && n.ends_with(".part") {
                let _ = unlinkat(self.fd.as_fd(), n, UnlinkatFlags::NoRemoveDir);
            }
        }
    }

    /// Unlinks images committed by this dump, the inventory first, so that
    /// the directory no longer reads as a checkpoint.
    pub fn withdraw(&self, names: &[String]) {
        let _ = unlinkat(self.fd.as_fd(), "inventory.img", UnlinkatFlags::NoRemoveDir);
        for n in names {
            let _ = unlinkat(self.fd.as_fd(), n.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// Whether `name` exists in the directory (not following links).
    pub fn has(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::ImageDir;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("revenant-imgdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn planted_links_and_fifos_are_replaced_not_followed() {
        let d = scratch("planted");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(".pages-1.img.part")).unwrap();
        nix::unistd::mkfifo(&d.join(".core-1.img.part"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let dir = ImageDir::open(&d).unwrap();
        dir.create("pages-1.img").unwrap().write_all(b"pages").unwrap();
        dir.create("core-1.img").unwrap().write_all(b"core").unwrap();
        // A link at a final name is replaced by the rename, not written through.
        std::os::unix::fs::symlink(&victim, d.join("inventory.img")).unwrap();
        dir.create("inventory.img").unwrap().write_all(b"inv").unwrap();
        dir.commit(&["pages-1.img".into(), "core-1.img".into(), "inventory.img".into()]).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(d.join("pages-1.img")).unwrap(), b"pages");
        assert_eq!(std::fs::read(d.join("core-1.img")).unwrap(), b"core");
        assert!(std::fs::symlink_metadata(d.join("inventory.img")).unwrap().file_type().is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let d = scratch("shared");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", ImageDir::open(&d).unwrap_err());
        assert!(e.contains("writable by everyone"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = format!("{:#}", ImageDir::open(&d).unwrap_err());
        assert!(e.contains("writable by its group"), "{e}");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            let e = format!("{:#}", ImageDir::open(&d).unwrap_err());
            assert!(e.contains("belongs to uid 65534"), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
