//! `revenant restore --lazy`, as a user runs it: the restored program's
//! memory is right byte for byte while its pages are still arriving, when
//! the kernel reads it for a `write()`, when a child forked since reads
//! it, when several threads reach the same missing pages at once, and
//! after it dropped or moved memory; once every page is in, the memory
//! looks as after a normal restore; and if the page server dies first,
//! the program is killed rather than left reading zeros.
//!
//! The dumpee (`tests/dumpees/lazymem.c`) checks its own memory on
//! SIGUSR1 and writes `round=N bad=B`. This test process is a child
//! subreaper, so dumped and killed programs come back to it.

#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

#[allow(dead_code)]
mod support;
use support::{PATIENCE, REVENANT, dumpee, ok, start_grandchild, state, wait_lines};

/// The program, started as `setsid prog &` leaves it (a grandchild of the
/// test, in its own session), with 64 MiB and four checking threads.
struct Program {
    pid: i32,
    out: PathBuf,
}

impl Program {
    fn start(work: &Path) -> Program {
        let out = work.join("out");
        start_grandchild(&dumpee("lazymem"), &["64".as_ref(), out.as_os_str(), "4".as_ref()]);
        let text = wait_lines(&out, |l| !l.is_empty());
        let pid =
            text.lines().next().and_then(|l| l.strip_prefix("ready ")).expect("ready line").trim().parse().unwrap();
        Program { pid, out }
    }

    /// Asks for a round of checks and returns its line.
    fn round(&self, n: u32) -> String {
        kill(Pid::from_raw(self.pid), Signal::SIGUSR1).unwrap();
        let want = format!("round={n} ");
        let text = wait_lines(&self.out, |l| l.iter().any(|x| x.starts_with(&want)));
        let line = text.lines().find(|l| l.starts_with(&want));
        line.unwrap_or_else(|| panic!("no round {n} from {}:\n{text}", self.pid)).to_string()
    }

    /// Dumps it (which kills it) and waits until its PID is free.
    fn dump(&self, images: &Path) {
        ok(&revenant(&["dump", "-t", &self.pid.to_string()], images, &[]), "dump");
        self.reaped();
    }

    /// Collects it once it has ended; its wait status.
    fn reaped(&self) -> WaitStatus {
        let t = Instant::now();
        loop {
            match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(st) => return st,
                Err(_) if !Path::new(&format!("/proc/{}", self.pid)).exists() => return WaitStatus::StillAlive,
                Err(_) => {}
            }
            assert!(t.elapsed() < PATIENCE, "program {} is still there", self.pid);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        self.reaped();
    }

    /// `VmFlags` of every area, by address, and the number of areas still
    /// registered with a userfaultfd (`um`).
    fn smaps(&self) -> (Vec<String>, usize) {
        let text = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid)).unwrap();
        let mut areas = vec![];
        let mut head = String::new();
        for line in text.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                areas.push(format!("{head} {}", flags.trim()));
            } else if line.split(' ').next().is_some_and(|w| w.contains('-') && !w.ends_with(':')) {
                let w: Vec<&str> = line.split_whitespace().collect();
                head = format!("{} {} {} {}", w[0], w[1], w[2], w.get(5).unwrap_or(&""));
            }
        }
        let um = areas.iter().filter(|a| a.split(' ').any(|f| f == "um")).count();
        (areas, um)
    }
}

impl Drop for Program {
    /// A failed test leaves nothing running.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// A page server, killed if a test fails while it runs.
struct Server(i32);

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    support::scratch("lazy", name)
}

fn revenant(args: &[&str], dir: &Path, more: &[&std::ffi::OsStr]) -> Output {
    Command::new(REVENANT).args(args).arg("-D").arg(dir).args(more).output().expect("running revenant")
}

/// The page server, from the restore log.
fn server_of(log: &Path) -> Server {
    let text = std::fs::read_to_string(log).unwrap();
    let pid = text.lines().find_map(|l| l.strip_prefix("host: lazy: page server PID "));
    Server(pid.unwrap_or_else(|| panic!("no page server in the log:\n{text}")).trim().parse().unwrap())
}

fn alive(pid: i32) -> bool {
    !matches!(state(pid), 'Z' | '?')
}

/// The page server (and its guardian) as children of ours: wait for them.
fn server_gone(pid: i32) {
    let t = Instant::now();
    while alive(pid) {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        assert!(t.elapsed() < PATIENCE, "page server {pid} is still there");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Restores lazily with faults only, so every page the checks reach is
/// still missing when they reach it.
fn restore_faults_only(images: &Path, log: &Path) {
    let o = revenant(&["restore", "-d", "--lazy", "--lazy-no-background"], images, &["-o".as_ref(), log.as_os_str()]);
    ok(&o, "restore --lazy");
}

#[test]
fn memory_is_right_while_pages_arrive_for_the_kernel_a_child_and_threads_at_once() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("faults");
    let images = work.join("images");
    let p = Program::start(&work);
    assert_eq!(p.round(1), "round=1 bad=0", "before any dump");
    p.dump(&images);
    let log = work.join("restore.log");
    restore_faults_only(&images, &log);
    let server = server_of(&log);
    let (_, um) = p.smaps();
    assert!(um > 0, "no area is waiting for pages: the restore was not lazy");
    assert_eq!(p.round(2), "round=2 bad=0", "first touches after a lazy restore");
    assert_eq!(p.round(3), "round=3 bad=0");
    assert!(alive(server.0), "the page server left with pages nobody touched yet");
    p.stop();
    let _ = kill(Pid::from_raw(server.0), Signal::SIGKILL);
    server_gone(server.0);
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn once_every_page_is_in_memory_is_as_after_a_normal_restore() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("background");
    let images = work.join("images");
    let p = Program::start(&work);
    p.dump(&images);
    ok(&revenant(&["restore", "-d"], &images, &[]), "restore");
    let (normal, um) = p.smaps();
    assert_eq!(um, 0);
    p.stop();

    let log = work.join("restore.log");
    ok(&revenant(&["restore", "-d", "--lazy"], &images, &["-o".as_ref(), log.as_os_str()]), "restore --lazy");
    let server = server_of(&log);
    server_gone(server.0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("PID {}: all pages in after", p.pid)), "{text}");
    let (lazy, um) = p.smaps();
    assert_eq!(um, 0, "areas still registered after the last page");
    assert_eq!(lazy, normal, "areas and their flags differ from a normal restore's");
    assert_eq!(p.round(1), "round=1 bad=0");
    // A later dump sees an ordinary program.
    p.dump(&images);
    ok(&revenant(&["restore", "-d"], &images, &[]), "restore of a dump after a lazy restore");
    assert_eq!(p.round(2), "round=2 bad=0");
    p.stop();
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn killing_the_page_server_kills_the_program() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("kill");
    let images = work.join("images");
    let p = Program::start(&work);
    p.dump(&images);
    let log = work.join("restore.log");
    restore_faults_only(&images, &log);
    let server = server_of(&log);
    kill(Pid::from_raw(server.0), Signal::SIGKILL).unwrap();
    // Touching missing pages now must never read zeros.
    let _ = kill(Pid::from_raw(p.pid), Signal::SIGUSR1);
    let st = p.reaped();
    assert!(
        matches!(st, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "the program was not killed: {st:?}; it wrote:\n{}",
        std::fs::read_to_string(&p.out).unwrap()
    );
    let out = std::fs::read_to_string(&p.out).unwrap();
    assert!(out.lines().all(|l| !l.starts_with("round=") || l.ends_with(" bad=0")), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the page server died before every page was in"), "{text}");
    server_gone(server.0);
    std::fs::remove_dir_all(&work).unwrap();
}
