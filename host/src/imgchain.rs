//! The `parent` links of an iterative dump's image directories, followed
//! as hostile ground.
//!
//! A link of a chain (`pre-dump`, `dump --prev-images-dir`) holds a
//! symbolic link named `parent`, as CRIU's do, to the directory of the
//! link before it: CRIU writes what `--prev-images-dir` says, a path
//! relative to the image directory (`../DIR1`). Its pagemaps' `PE_PARENT`
//! entries say "this page is in the parent".
//!
//! The link is read with `readlinkat`, never opened through. Its target
//! must be a relative path of directories (`..` among them; no absolute
//! path, which would leave the chain's own tree); each component is opened
//! here, relative to the one before, with `O_DIRECTORY|O_NOFOLLOW`, so a
//! link anywhere on the way is refused, and the result must belong to the
//! image directory's owner or to us, so that images of one user cannot
//! pull another's memory into a restore. A chain is at most
//! [`MAX_CHAIN`] links long and never visits a directory twice. Files in
//! a parent are read through the opened directory
//! (`/proc/self/fd/N/NAME`, with the usual image file rules of
//! `revenant_images::file`), so nothing renamed on the way changes which
//! directory they come from.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fstat};

/// The most links a chain may have above the directory restored.
pub const MAX_CHAIN: usize = 64;

/// An image directory of a chain, opened.
#[derive(Debug)]
pub struct Link {
    dir: OwnedFd,
    /// Where it was reached, for messages: the path it was opened by, or
    /// its child's path joined with the `parent` link's target.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
}

impl Link {
    /// Opens the image directory `path` (the one the user named).
    pub fn open(path: &Path) -> Result<Link> {
        let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("opening the image directory {}", path.display()))?;
        Link::from_fd(fd, path.to_path_buf())
    }

    fn from_fd(dir: OwnedFd, path: PathBuf) -> Result<Link> {
        let st = fstat(&dir).with_context(|| format!("stat of {}", path.display()))?;
        // st_dev and st_ino are narrower on 32-bit arches.
        #[allow(clippy::useless_conversion)]
        let (dev, ino) = (u64::from(st.st_dev), u64::from(st.st_ino));
        Ok(Link { dir, path, dev, ino, uid: st.st_uid })
    }

    /// The path of file `name` in this directory, through its open fd.
    pub fn file(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd()))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The directory this one's `parent` link names, if it has one.
    pub fn parent(&self) -> Result<Option<Link>> {
        let target = match nix::fcntl::readlinkat(self.dir.as_fd(), "parent") {
            Ok(t) => PathBuf::from(t),
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::EINVAL) => bail!("{}/parent is not a symbolic link", self.path.display()),
            Err(e) => return Err(e).with_context(|| format!("reading the link {}/parent", self.path.display())),
        };
        let link = self.resolve(&target).with_context(|| {
            format!("{}/parent: the link to {} cannot be followed", self.path.display(), target.display())
        })?;
        Ok(Some(link))
    }

    /// Opens `target`, relative to this directory, component by
    /// component, as the module doc says.
    pub fn resolve(&self, target: &Path) -> Result<Link> {
        if target.as_os_str().is_empty() {
            bail!("an empty path");
        }
        let mut cur: Option<OwnedFd> = None;
        for c in target.components() {
            let name = match c {
                Component::CurDir => continue,
                Component::ParentDir => "..".as_ref(),
                Component::Normal(n) => n,
                Component::RootDir | Component::Prefix(_) => {
                    bail!("an absolute path: only a path relative to the image directory is followed")
                }
            };
            let from = cur.as_ref().map_or(self.dir.as_fd(), |f| f.as_fd());
            let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
            let next = openat(from, name, flags, Mode::empty()).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => anyhow::anyhow!(
                    "{}: a symbolic link or not a directory; every component must be a directory",
                    name.to_string_lossy()
                ),
                e => anyhow::Error::new(e).context(format!("opening {}", name.to_string_lossy())),
            })?;
            cur = Some(next);
        }
        let Some(dir) = cur else { bail!("a path naming the image directory itself") };
        let link = Link::from_fd(dir, self.path.join(target))?;
        let me = nix::unistd::geteuid().as_raw();
        if link.uid != self.uid && link.uid != me {
            bail!(
                "{} belongs to uid {}, neither to the owner of {} (uid {}) nor to us (uid {me})",
                link.path.display(),
                link.uid,
                self.path.display(),
                self.uid
            );
        }
        Ok(link)
    }
}

/// The ancestors of image directory `dir`, nearest first: empty if it has
/// no `parent` link. Refuses a chain longer than [`MAX_CHAIN`] or one
/// that comes back to a directory it passed.
pub fn ancestors(dir: &Path) -> Result<Vec<Link>> {
    let start = Link::open(dir)?;
    let mut seen = vec![(start.dev, start.ino)];
    let mut out: Vec<Link> = Vec::new();
    loop {
        let here = out.last().unwrap_or(&start);
        let Some(p) = here.parent()? else { return Ok(out) };
        if seen.contains(&(p.dev, p.ino)) {
            bail!("{}/parent leads back to {}: the chain of parent links loops", here.path.display(), p.path.display());
        }
        if out.len() == MAX_CHAIN {
            bail!("{}: the chain of parent links is longer than {MAX_CHAIN}", dir.display());
        }
        seen.push((p.dev, p.ino));
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("revenant-imgchain-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn relative_links_are_followed_up_the_chain() {
        let d = scratch("ok");
        for n in ["a", "b", "c"] {
            std::fs::create_dir(d.join(n)).unwrap();
        }
        symlink("../a", d.join("b/parent")).unwrap();
        symlink("./../b/", d.join("c/parent")).unwrap();
        let chain = ancestors(&d.join("c")).unwrap();
        assert_eq!(chain.len(), 2);
        std::fs::write(d.join("a/x"), b"in a").unwrap();
        assert_eq!(std::fs::read(chain[1].file("x")).unwrap(), b"in a");
        assert!(ancestors(&d.join("a")).unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn escaping_missing_and_looping_links_are_refused() {
        let d = scratch("bad");
        for n in ["a", "b", "real"] {
            std::fs::create_dir(d.join(n)).unwrap();
        }
        let refused = |link: &str| {
            let _ = std::fs::remove_file(d.join("b/parent"));
            symlink(link, d.join("b/parent")).unwrap();
            format!("{:#}", ancestors(&d.join("b")).unwrap_err())
        };
        let e = refused("/tmp");
        assert!(e.contains("b/parent") && e.contains("an absolute path"), "{e}");
        let e = refused("../missing");
        assert!(e.contains("opening missing") && e.contains("ENOENT"), "{e}");
        // A link on the way is not followed, even to a good directory.
        symlink("real", d.join("sneaky")).unwrap();
        let e = refused("../sneaky");
        assert!(e.contains("sneaky: a symbolic link or not a directory"), "{e}");
        let e = refused(".");
        assert!(e.contains("the image directory itself"), "{e}");
        // b -> a -> b.
        symlink("../b", d.join("a/parent")).unwrap();
        let e = refused("../a");
        assert!(e.contains("loops"), "{e}");
        std::fs::remove_file(d.join("a/parent")).unwrap();
        // `parent` that is a directory, not a link.
        let _ = std::fs::remove_file(d.join("b/parent"));
        std::fs::create_dir(d.join("b/parent")).unwrap();
        let e = format!("{:#}", ancestors(&d.join("b")).unwrap_err());
        assert!(e.contains("b/parent is not a symbolic link"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn chains_longer_than_the_limit_are_refused() {
        let d = scratch("long");
        for i in 0..=MAX_CHAIN + 1 {
            std::fs::create_dir(d.join(i.to_string())).unwrap();
            if i > 0 {
                symlink(format!("../{}", i - 1), d.join(format!("{i}/parent"))).unwrap();
            }
        }
        assert_eq!(ancestors(&d.join(MAX_CHAIN.to_string())).unwrap().len(), MAX_CHAIN);
        let e = format!("{:#}", ancestors(&d.join((MAX_CHAIN + 1).to_string())).unwrap_err());
        assert!(e.contains("longer than 64"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_parent_of_another_owner_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = scratch("owner");
        for n in ["a", "b"] {
            std::fs::create_dir(d.join(n)).unwrap();
        }
        symlink("../a", d.join("b/parent")).unwrap();
        std::os::unix::fs::chown(d.join("b"), Some(65533), None).unwrap();
        // The parent may be ours (root's) or the child's owner's.
        ancestors(&d.join("b")).unwrap();
        std::os::unix::fs::chown(d.join("a"), Some(65533), None).unwrap();
        ancestors(&d.join("b")).unwrap();
        std::os::unix::fs::chown(d.join("a"), Some(65534), None).unwrap();
        let e = format!("{:#}", ancestors(&d.join("b")).unwrap_err());
        assert!(e.contains("belongs to uid 65534, neither to the owner"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
