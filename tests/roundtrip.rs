//! Dump and restore round trips of live programs: the restored program
//! carries on where it was, with the same PID, memory, open file offsets
//! and cwd, and the image directory is left untouched by the restore.

#![cfg(target_arch = "x86_64")]

#[path = "dump_support.rs"]
#[allow(dead_code)]
mod dump_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use revenant::dump::{DumpOptions, dump};
use revenant::restore::{Options, run};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("revenant-rt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits (up to a minute: only a broken restore takes long) for `pred` on
/// the lines of `path`.
fn wait_for(path: &Path, pred: impl Fn(&[&str]) -> bool) -> String {
    for _ in 0..600 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text.lines().collect::<Vec<_>>()) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(path).unwrap_or_default()
}

fn tick(line: &str) -> u64 {
    line.split("tick=").nth(1).and_then(|t| t.split(' ').next()).and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// Names, sizes and modification times of every file in `dir`.
fn listing(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (e.file_name().to_string_lossy().into_owned(), m.len(), m.modified().unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_counting_process_carries_on_after_dump_and_restore() {
    let work = scratch("counter");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = Command::new(dump_support::build("counter"));
    child.arg(&out).arg(&work).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid and close_range are async-signal-safe. Fds the test
    // harness leaks (cargo's jobserver pipe) are not the program's.
    unsafe {
        child.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    let mut child = child.spawn().unwrap();
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);

    std::fs::create_dir_all(&images).unwrap();
    let dumped = dump(pid, &images, &DumpOptions::default());
    if dumped.is_err() {
        let _ = child.kill();
    }
    dumped.unwrap();
    // The dump killed it; reap it so its PID is free again.
    child.wait().unwrap();
    let before = std::fs::read_to_string(&out).unwrap();
    let last = tick(before.lines().last().unwrap());
    let listed = listing(&images);

    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 3));
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);

    assert_eq!(listing(&images), listed, "the restore changed the image directory");
    let lines: Vec<&str> = after.lines().collect();
    assert!(tick(lines.last().unwrap()) >= last + 3, "the restored process did not carry on:\n{after}");
    // Every tick once, in order, at the file offset where the dump left it.
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(tick(l), i as u64 + 1, "line {i}: {l}\n{after}");
        let cwd = work.canonicalize().unwrap();
        assert_eq!(*l, format!("pid={pid} tick={} check=ok cwd={}", i + 1, cwd.display()));
    }
    let _ = std::fs::remove_dir_all(&work);
}
