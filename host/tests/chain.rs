//! Iterative dumps as a user runs them: `revenant pre-dump`, again with
//! `--prev-images-dir`, the final `dump --prev-images-dir`, then `restore
//! --lazy` of the chain (its pages gathered from three directories, then
//! served by the page server). The dumpee (`tests/dumpees/dirtier.c`)
//! checks every byte of its pages on every tick.

#![cfg(target_arch = "x86_64")]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

#[allow(dead_code)]
mod support;
use support::REVENANT;
/// Only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

fn revenant(args: &[&str], dir: &Path) {
    let o = Command::new(REVENANT).args(args).arg("-D").arg(dir).output().unwrap();
    assert!(o.status.success(), "revenant {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out).unwrap_or_default().lines().map(String::from).collect()
}

fn wait_for(out: &Path, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let l = lines(out);
        if pred(&l) {
            return l;
        }
        assert!(t0.elapsed() < PATIENCE, "waiting for {what}: {l:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs the program (and collects it, a child of ours as subreaper)
/// however the test ends.
struct Killed(i32);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.0), Some(WaitPidFlag::WNOHANG));
    }
}

#[test]
fn a_chain_made_and_restored_lazily_from_the_command_line_is_exact() {
    let _w = revenant_test_watchdog::start();
    // Programs the restore leaves behind come back to us.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let work = std::env::temp_dir().join(format!("revenant-chain-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("out");
    let mut cmd = Command::new(support::dumpee("dirtier"));
    cmd.arg(&out).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid and close_range are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let _kill = Killed(pid);
    let pid_s = pid.to_string();
    wait_for(&out, "ticks", |l| l.len() >= 3);
    let round = |r: u32| {
        kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
        wait_for(&out, "a round", |l| l.iter().any(|x| x.starts_with(&format!("round={r} "))));
    };
    revenant(&["pre-dump", "-t", &pid_s, "-o", "pre.log"], &work.join("d1"));
    round(1);
    revenant(&["pre-dump", "-t", &pid_s, "--prev-images-dir", "../d1", "--track-mem"], &work.join("d2"));
    round(2);
    revenant(
        &["dump", "-t", &pid_s, "--prev-images-dir", "../d2", "--track-mem", "-v", "1", "-o", "dump.log"],
        &work.join("d3"),
    );
    child.wait().unwrap();
    let log = std::fs::read_to_string(work.join("d3/dump.log")).unwrap();
    assert!(log.contains("took the write tracking of 1 processes") && !log.contains(" 0 pages in the parent"), "{log}");
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t0.elapsed() < PATIENCE, "process {pid} is still there");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = lines(&out).len();
    revenant(&["restore", "--lazy", "-d", "-o", "restore.log"], &work.join("d3"));
    let l = wait_for(&out, "ticks after the restore", |l| l.len() >= before + 10);
    assert!(l[before..].iter().all(|x| x.starts_with(&format!("pid={pid} ")) && x.ends_with("check=ok")), "{l:?}");
    round(3);
    let n = lines(&out).len();
    let l = wait_for(&out, "ticks after a round", |l| l.len() >= n + 3);
    assert!(l[n..].iter().all(|x| x.ends_with("check=ok")), "{l:?}");
    let _ = std::fs::remove_dir_all(&work);
}
