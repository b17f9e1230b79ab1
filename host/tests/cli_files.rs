//! The files `revenant dump` and `restore` are pointed at on the command
//! line: the log is written however the command ends, its last line the
//! error printed to stderr; `-o` is taken in `-W` (default: `-D`) as CRIU
//! takes it; a link or FIFO at the log's path is refused, not followed;
//! and a hostile image directory fails quickly rather than hanging.

#![cfg(target_arch = "x86_64")]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("revenant-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A subdirectory, created.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a finished command said.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `revenant ARGS`, killing it if it has not ended in 30 s: a hang is
/// one of the failures under test.
fn revenant(scratch: &Scratch, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Ran {
    let (out, err) = (scratch.path(".stdout"), scratch.path(".stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_revenant"))
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("revenant {:?} did not end", args.iter().map(|a| a.as_ref().to_owned()).collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    Ran { ok: status.success(), stdout: read(&out), stderr: read(&err) }
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/criu-4.2/images")
}

/// A copy of fixture set `set` in `dir`.
fn copy_set(set: &str, dir: &Path) {
    for e in std::fs::read_dir(fixtures().join(set)).unwrap() {
        let e = e.unwrap();
        std::fs::write(dir.join(e.file_name()), std::fs::read(e.path()).unwrap()).unwrap();
    }
}

#[test]
fn a_failed_restore_writes_its_log_ending_with_the_error() {
    let _w = revenant_test_watchdog::start();
    let s = Scratch::new("restore-log");
    let images = s.dir("images");
    copy_set("loop-static", &images);
    let core = images.join("core-10562.img");
    let data = std::fs::read(&core).unwrap();
    std::fs::write(&core, &data[..data.len() / 2]).unwrap();
    let r =
        revenant(&s, &[&"--no-default-config", &"restore", &"-D", &images, &"-o", &"restore.log", &"--timeout", &"5"]);
    assert!(!r.ok && r.stderr.contains("core-10562.img"), "{}", r.stderr);
    // Relative to the image directory, as no -W was given.
    let log = std::fs::read_to_string(images.join("restore.log")).unwrap();
    assert_eq!(last_line(&log), last_line(&r.stderr), "{log}");
    assert!(log.contains("--no-default-config") && log.contains("--timeout 5: ignored"), "{log}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(images.join("restore.log")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_relative_log_goes_to_the_work_dir_and_an_absolute_one_where_it_says() {
    let _w = revenant_test_watchdog::start();
    let s = Scratch::new("work-dir");
    let (images, work) = (s.dir("images"), s.dir("work"));
    // Nothing to restore: the restore fails at once.
    let r = revenant(&s, &[&"restore", &"-D", &images, &"-W", &work, &"-o", &"r.log", &"--pidfile", &"pid"]);
    assert!(!r.ok && r.stderr.contains("inventory.img"), "{}", r.stderr);
    let log = std::fs::read_to_string(work.join("r.log")).unwrap();
    assert_eq!(last_line(&log), last_line(&r.stderr));
    assert!(!images.join("r.log").exists());
    let abs = s.path("abs.log");
    let r = revenant(&s, &[&"restore", &"--work-dir", &work, &"-D", &images, &"--log-file", &abs]);
    assert!(!r.ok);
    assert_eq!(last_line(&std::fs::read_to_string(&abs).unwrap()), last_line(&r.stderr));
    // A log left by an earlier run is replaced, not appended to.
    let again = revenant(&s, &[&"restore", &"-D", &images, &"-W", &work, &"-o", &"r.log"]);
    assert_eq!(std::fs::read_to_string(work.join("r.log")).unwrap(), again.stderr);
}

#[test]
fn a_link_or_fifo_at_the_log_path_is_refused_not_followed() {
    let _w = revenant_test_watchdog::start();
    let s = Scratch::new("log-link");
    let images = s.dir("images");
    let victim = s.path("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    symlink(&victim, images.join("restore.log")).unwrap();
    let r = revenant(&s, &[&"restore", &"-D", &images, &"-o", &"restore.log"]);
    assert!(!r.ok && r.stderr.contains("restore.log: is a symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    // A dangling link: nothing is created at its target either.
    let target = s.path("would-be-created");
    symlink(&target, images.join("dangling.log")).unwrap();
    let r = revenant(&s, &[&"restore", &"-D", &images, &"-o", &"dangling.log"]);
    assert!(!r.ok && r.stderr.contains("dangling.log: is a symbolic link"), "{}", r.stderr);
    assert!(!target.exists());
    // A FIFO with no reader: refused without waiting for one.
    nix::unistd::mkfifo(&images.join("fifo.log"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let r = revenant(&s, &[&"restore", &"-D", &images, &"-o", &"fifo.log"]);
    assert!(!r.ok && r.stderr.contains("fifo.log: is a FIFO"), "{}", r.stderr);
}

#[test]
fn a_hostile_image_dir_fails_quickly_on_the_command_line() {
    let _w = revenant_test_watchdog::start();
    let s = Scratch::new("hostile");
    let images = s.dir("images");
    copy_set("loop-static", &images);
    let inventory = images.join("inventory.img");
    std::fs::remove_file(&inventory).unwrap();
    nix::unistd::mkfifo(&inventory, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for args in [
        &[&"restore" as &dyn AsRef<std::ffi::OsStr>, &"-D", &images][..],
        &[&"show", &images],
        &[&"show", &"--json", &images],
        &[&"show", &inventory],
    ] {
        let r = revenant(&s, args);
        assert!(
            !r.ok && r.stderr.contains("inventory.img: is a FIFO; image files must be regular files"),
            "{}",
            r.stderr
        );
    }
    std::fs::remove_file(&inventory).unwrap();
    std::fs::copy(fixtures().join("loop-static/inventory.img"), &inventory).unwrap();
    let core = images.join("core-10562.img");
    std::fs::remove_file(&core).unwrap();
    symlink("/dev/zero", &core).unwrap();
    for args in [&[&"restore" as &dyn AsRef<std::ffi::OsStr>, &"-D", &images][..], &[&"show", &images]] {
        let r = revenant(&s, args);
        assert!(!r.ok && r.stderr.contains("core-10562.img: is a symbolic link"), "{}", r.stderr);
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn a_failed_dump_writes_its_log_ending_with_the_error() {
    let _w = revenant_test_watchdog::start();
    let s = Scratch::new("dump-log");
    let (images, work) = (s.path("images"), s.dir("work"));
    // A PID that was just freed: the dump fails before touching anything.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id().to_string();
    gone.wait().unwrap();
    let r = revenant(
        &s,
        &[
            &"dump",
            &"-t",
            &pid,
            &"-D",
            &images,
            &"-W",
            &work,
            &"-o",
            &"dump.log",
            &"-v",
            &"4",
            &"--timeout",
            &"3",
            &"--pidfile",
            &"p",
            &"--no-default-config",
        ],
    );
    assert!(!r.ok && r.stderr.contains(&format!("dumping process tree {pid}")), "{}", r.stderr);
    let log = std::fs::read_to_string(work.join("dump.log")).unwrap();
    assert_eq!(last_line(&log), last_line(&r.stderr), "{log}");
    for note in ["--pidfile p: ignored", "--no-default-config", "--timeout 3s"] {
        assert!(log.contains(note), "{note} missing: {log}");
    }
    assert!(!work.join("p").exists() && !images.join("p").exists());
}
