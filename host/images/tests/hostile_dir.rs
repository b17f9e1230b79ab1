//! Image directories may come from anyone: a FIFO, a device, a link or a
//! directory where an image should be is refused quickly, naming the file
//! and what it is; nothing is read through a link, nothing hangs, and no
//! length makes us allocate more than the file holds.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use revenant_images::{Image, ImageSet, Kind, show};

/// Runs `f` on another thread and gives up after a while. A hang is the
/// bug under test: `unblock` then opens the FIFO's other end so the thread
/// can end, and the test fails.
fn bounded<T: Send + 'static>(fifo: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(v) => v,
        Err(_) => {
            let _ = std::fs::OpenOptions::new().read(true).write(true).open(fifo);
            panic!("reading {} hung", fifo.display());
        }
    }
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_fifo_named_like_an_image_is_refused_without_waiting() {
    let dir = Scratch::copy_of("loop-static", "fifo");
    let fifo = dir.path("inventory.img");
    std::fs::remove_file(&fifo).unwrap();
    mkfifo(&fifo);
    let d = dir.0.clone();
    let errs = bounded(&fifo, move || {
        [
            err_of(ImageSet::load(&d)),
            err_of(show(&d, false)),
            err_of(show(&d, true)),
            err_of(show(&d.join("inventory.img"), false)),
            err_of(show(&d.join("inventory.img"), true)),
            err_of(Image::read(&d.join("inventory.img"))),
        ]
    });
    for e in errs {
        assert!(e.contains("inventory.img: is a FIFO; image files must be regular files"), "{e}");
    }
}

#[test]
fn a_link_to_dev_zero_is_refused_not_read() {
    let dir = Scratch::copy_of("loop-static", "zero");
    let core = dir.path("core-10562.img");
    std::fs::remove_file(&core).unwrap();
    symlink("/dev/zero", &core).unwrap();
    let d = dir.0.clone();
    let errs = bounded(&core, move || {
        [err_of(ImageSet::load(&d)), err_of(show(&d, true)), err_of(Image::read(&d.join("core-10562.img")))]
    });
    for e in errs {
        assert!(e.contains("core-10562.img: is a symbolic link; image files must be regular files"), "{e}");
    }
    // Named directly, the device itself is refused too.
    let e = err_of(Image::read(Path::new("/dev/zero")));
    assert!(e.contains("/dev/zero: is a character device"), "{e}");
}

#[test]
fn a_link_to_a_good_image_is_refused_too() {
    let dir = Scratch::copy_of("loop-static", "link");
    let elsewhere = Scratch::new("link-target");
    let mm = dir.path("mm-10562.img");
    std::fs::rename(&mm, elsewhere.path("mm-10562.img")).unwrap();
    symlink(elsewhere.path("mm-10562.img"), &mm).unwrap();
    let e = err_of(ImageSet::load(&dir.0));
    assert!(e.contains("mm-10562.img: is a symbolic link; image files must be regular files"), "{e}");
}

#[test]
fn a_dangling_link_for_an_optional_image_is_refused() {
    let dir = Scratch::copy_of("loop-static", "dangling");
    let seccomp = dir.path("seccomp.img");
    let _ = std::fs::remove_file(&seccomp);
    symlink("/nonexistent/seccomp.img", &seccomp).unwrap();
    let e = err_of(ImageSet::load(&dir.0));
    assert!(e.contains("seccomp.img: is a symbolic link"), "{e}");
}

#[test]
fn a_directory_named_like_an_image_is_refused() {
    let dir = Scratch::copy_of("loop-static", "dir");
    let fs = dir.path("fs-10562.img");
    std::fs::remove_file(&fs).unwrap();
    std::fs::create_dir(&fs).unwrap();
    for e in [err_of(ImageSet::load(&dir.0)), err_of(show(&dir.0, true))] {
        assert!(e.contains("fs-10562.img: is a directory; image files must be regular files"), "{e}");
    }
}

#[test]
fn a_linked_pages_image_fails_validation() {
    let dir = Scratch::copy_of("loop-static", "pages-link");
    let elsewhere = Scratch::new("pages-link-target");
    std::fs::rename(dir.path("pages-1.img"), elsewhere.path("pages-1.img")).unwrap();
    symlink(elsewhere.path("pages-1.img"), dir.path("pages-1.img")).unwrap();
    let set = ImageSet::load(&dir.0).unwrap();
    let e = err_of(set.validate("x86_64"));
    assert!(e.contains("pages-1.img: is a symbolic link"), "{e}");
    let e = err_of(show(&dir.path("pages-1.img"), false));
    assert!(e.contains("pages-1.img: is a symbolic link"), "{e}");
}

#[test]
fn a_huge_length_prefix_in_a_file_is_refused_before_allocating() {
    let dir = Scratch::copy_of("loop-static", "huge-len");
    let core = dir.path("core-10562.img");
    let mut data = std::fs::read(&core).unwrap();
    let at = Kind::from_header(&data).unwrap().header_len();
    data[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&core, &data).unwrap();
    let e = err_of(ImageSet::load(&dir.0));
    assert!(e.contains("core-10562.img") && e.contains("length 4294967295 runs past the end"), "{e}");
}

#[test]
fn images_are_never_written_through_a_link() {
    let dir = Scratch::new("write-link");
    let victim = dir.path("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let img = dir.path("core-1.img");
    symlink(&victim, &img).unwrap();
    let image = Image::read(&set_dir("loop-static").join("core-10562.img")).unwrap();
    let e = err_of(image.write(&img));
    assert!(e.contains("core-1.img: is a symbolic link"), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    // A whole set written over a directory holding a planted link.
    let set = ImageSet::load(&set_dir("loop-static")).unwrap();
    let out: PathBuf = dir.path("out");
    std::fs::create_dir(&out).unwrap();
    symlink(&victim, out.join("pages-1.img")).unwrap();
    let e = err_of(set.write(&out));
    assert!(e.contains("pages-1.img: is a symbolic link"), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}
