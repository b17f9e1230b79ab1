//! The program is never lost: `revenant dump` of a multi-threaded program
//! with a 1 ms interval timer, started as users start programs (detached,
//! a grandchild of nobody who dumps it), completes and restores every time,
//! and a dump stopped at any step, by an error or by SIGKILL, leaves the
//! program running exactly as it was.
//!
//! The dumpee (`tests/dumpees/survivor.c`) checks its own registers across
//! system calls, its signal masks, alternate stacks, pending signals and
//! memory, and says so in every line it writes. This test process is a
//! child subreaper, so killed dumpees come back to it and their PIDs are
//! free at once for the restore.

#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

#[allow(dead_code)]
mod support;
use support::{PATIENCE, REVENANT, dumpee, ok, start_grandchild, state, wait_lines};

fn scratch(name: &str) -> PathBuf {
    support::scratch("survive", name)
}

/// The running dumpee: its PID and the file it writes to.
struct Program {
    pid: i32,
    out: PathBuf,
}

impl Program {
    /// Starts the survivor.
    fn start(work: &Path) -> Program {
        let out = work.join("out");
        start_grandchild(&dumpee("survivor"), &[out.as_os_str()]);
        let ready = wait_lines(&out, |l| l.first().is_some_and(|f| f.starts_with("ready ")));
        let pid = ready.lines().next().unwrap()["ready ".len()..].trim().parse().unwrap();
        let p = Program { pid, out };
        p.carries_on("just started");
        p
    }

    /// Waits for three more lines and checks that they say the program runs
    /// as before: timer firing, threads working, every check passing; and
    /// that no task of it is stopped or traced.
    fn carries_on(&self, when: &str) {
        let before = std::fs::read_to_string(&self.out).unwrap_or_default();
        let n = before.lines().count();
        let text = wait_lines(&self.out, |l| l.len() >= n + 3);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= n + 3, "{when}: program {} stopped writing:\n{}", self.pid, tail(&text));
        let last = lines[lines.len() - 1];
        let prev = lines[lines.len() - 3];
        assert_eq!(field(last, "bad"), "0", "{when}: program {} found itself changed: {last}", self.pid);
        for key in ["alarms", "iters"] {
            let (a, b) = (num(prev, key), num(last, key));
            assert!(b > a, "{when}: program {}: {key} does not grow ({prev} / {last})", self.pid);
        }
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).unwrap() {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
            let get = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").trim().to_string();
            assert_eq!(get("TracerPid:"), "0", "{when}: program {} is still traced", self.pid);
            assert!(!get("State:").starts_with('t'), "{when}: program {} left in a trace stop", self.pid);
            assert!(!get("State:").starts_with('T'), "{when}: program {} left stopped", self.pid);
        }
    }

    fn gone(&self) -> bool {
        // A zombie that came back to us counts as gone once collected.
        let _ = waitpid(Pid::from_raw(self.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        !Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Waits until the killed program has come back to us and is collected.
    fn collected(&self) {
        let _ = waitpid(Pid::from_raw(self.pid), None);
        let t = Instant::now();
        while !self.gone() {
            assert!(t.elapsed() < PATIENCE, "program {} is still there", self.pid);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        self.collected();
        // Gone, and its PID free for anyone.
        self.pid = 0;
    }
}

/// A failed test does not leave its program running (its 1 ms timer and
/// threads would slow every test and benchmark after it).
impl Drop for Program {
    fn drop(&mut self) {
        if self.pid > 0 {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

fn tail(text: &str) -> String {
    let l: Vec<&str> = text.lines().collect();
    l[l.len().saturating_sub(5)..].join("\n")
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).unwrap_or("")
}

fn num(line: &str, key: &str) -> u64 {
    field(line, key).parse().unwrap_or(0)
}

fn revenant(args: &[&str], dir: &Path, env: Option<(&str, String)>) -> Output {
    let mut c = Command::new(REVENANT);
    c.args(args).arg("-D").arg(dir);
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.output().expect("running revenant")
}

/// Dump with --leave-running, then dump, restore and carry on, fifty times.
#[test]
fn a_threaded_program_with_a_busy_timer_survives_50_dumps_and_restores() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("loop");
    let images = work.join("images");
    let p = Program::start(&work);
    let pid = p.pid.to_string();
    for i in 0..50 {
        let o = revenant(&["dump", "-t", &pid, "--leave-running"], &images, None);
        ok(&o, &format!("round {i}: dump --leave-running"));
        p.carries_on(&format!("round {i}, after dump --leave-running"));

        let o = revenant(&["dump", "-t", &pid], &images, None);
        ok(&o, &format!("round {i}: dump"));
        p.collected();
        let o = revenant(&["restore", "-d"], &images, None);
        ok(&o, &format!("round {i}: restore"));
        p.carries_on(&format!("round {i}, after restore"));
    }
    p.stop();
    std::fs::remove_dir_all(&work).unwrap();
}

/// The dump's steps, as `REVENANT_FAULT=list` names them.
fn steps(images: &Path, pid: &str) -> Vec<String> {
    let o = revenant(&["dump", "-t", pid, "--leave-running"], images, Some(("REVENANT_FAULT", "list".into())));
    ok(&o, "dump listing its steps");
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("revenant: step "))
        .map(|l| l.to_string())
        .collect()
}

/// No temporary image is left in `dir`.
fn no_leftovers(dir: &Path, when: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.ends_with(".part"), "{when}: {n} left behind");
    }
}

#[test]
fn a_dump_failing_or_killed_at_any_step_leaves_the_program_as_it_was() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("steps");
    let images = work.join("images");
    let p = Program::start(&work);
    let pid = p.pid.to_string();
    let steps = steps(&images, &pid);
    assert!(steps.len() > 50, "too few steps to believe: {steps:?}");
    assert!(steps.iter().any(|s| s.contains("system call")), "injection steps are walked: {steps:?}");
    for (i, name) in steps.iter().enumerate() {
        let n = i + 1;
        // As a dump killed earlier may leave, which a failing one removes too.
        std::fs::write(images.join(".pages-1.img.part"), b"stale").unwrap();
        let o = revenant(&["dump", "-t", &pid], &images, Some(("REVENANT_FAULT", format!("error:{n}"))));
        assert!(!o.status.success(), "step {name}: the dump went through a failing step");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("fault injected"), "step {name}: {err}");
        no_leftovers(&images, name);
        p.carries_on(&format!("dump failed at step {name}"));

        let o = revenant(&["dump", "-t", &pid], &images, Some(("REVENANT_FAULT", format!("kill:{n}"))));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(9), "step {name}: {}", String::from_utf8_lossy(&o.stderr));
        p.carries_on(&format!("dump killed at step {name}"));
    }
    p.stop();
    std::fs::remove_dir_all(&work).unwrap();
}

/// A task that cannot stop (a vfork parent waits uninterruptibly until
/// its child exits) does not hang the dump: it gives up at its limit,
/// naming the task and what it waits in, and the program is let go,
/// neither traced nor stopped, and goes on once the wait is over.
#[test]
fn a_dump_gives_up_on_a_task_that_cannot_stop_and_lets_it_go() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("vfork");
    let images = work.join("images");
    let out = work.join("out");
    start_grandchild(&dumpee("vforker"), &[out.as_os_str(), "4".as_ref()]);
    let ready = wait_lines(&out, |l| l.first().is_some_and(|f| f.starts_with("ready ")));
    let pid: i32 = ready.lines().next().unwrap()["ready ".len()..].trim().parse().unwrap();
    // The vfork has begun once the parent sleeps uninterruptibly.
    let t = Instant::now();
    while state(pid) != 'D' && t.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = revenant(&["dump", "-t", &pid.to_string(), "--timeout", "1"], &images, None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the dump went through: {err}");
    assert!(err.contains(&format!("task {pid} of process {pid} did not stop")), "{err}");
    assert!(err.contains("uninterruptible sleep (D)") && err.contains("--timeout"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("done"), "the vfork was over before the dump gave up: {text}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "still traced:\n{status}");
    let done = wait_lines(&out, |l| l.iter().any(|x| x.starts_with("done ")));
    assert!(done.contains(&format!("done {pid}")), "{done}");
    assert!(!matches!(state(pid), 't' | 'T'), "left stopped");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);
    std::fs::remove_dir_all(&work).unwrap();
}

/// SIGKILL at random moments (a xorshift seeded from the clock; the seed is
/// printed so a failure can be replayed), and SIGINT/SIGTERM, which roll
/// the dump back.
#[test]
fn a_dump_killed_at_random_moments_or_interrupted_leaves_the_program_as_it_was() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("random");
    let images = work.join("images");
    let p = Program::start(&work);
    let mut seed = std::env::var("REVENANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64 | 1);
    eprintln!("seed {seed}");
    for round in 0..60 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 15_000);
        let sig = [Signal::SIGKILL, Signal::SIGKILL, Signal::SIGINT, Signal::SIGTERM][(seed >> 20) as usize % 4];
        // Each round's dump, not an earlier one's, is what a gone program
        // must have left.
        let _ = std::fs::remove_file(images.join("inventory.img"));
        let mut c = Command::new(REVENANT);
        c.args(["dump", "-t", &p.pid.to_string(), "-D"]).arg(&images).stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        std::thread::sleep(delay);
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let o = child.wait_with_output().unwrap();
        let when = format!("round {round}: {sig} after {delay:?}");
        if o.status.success() {
            // The dump finished first and killed the program, as asked.
            p.collected();
            ok(&revenant(&["restore", "-d"], &images, None), &when);
            p.carries_on(&format!("{when}, restored"));
            continue;
        }
        // A SIGINT or SIGTERM that came before the dump caught it (at its
        // start) killed it as SIGKILL does: what an earlier killed dump
        // left, the next dump removes. One caught rolls everything back.
        use std::os::unix::process::ExitStatusExt;
        if sig != Signal::SIGKILL && o.status.signal() != Some(sig as i32) {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("interrupted by"), "{when}: {err}");
            no_leftovers(&images, &when);
        }
        // Killed before it could finish: the program must run on. Killed
        // after it killed the tree (a dump of 1 MiB takes a few ms), the
        // dump was whole: it restores.
        let whole = images.join("inventory.img").exists();
        // A whole dump may have sent its SIGKILL a moment ago.
        let t = Instant::now();
        while whole && !p.gone() && t.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if p.gone() {
            assert!(whole, "{when}: the program is gone and the dump is not whole");
            p.collected();
            ok(&revenant(&["restore", "-d"], &images, None), &format!("{when}, after the tree was killed"));
            p.carries_on(&format!("{when}, restored after the tree was killed"));
            continue;
        }
        p.carries_on(&when);
    }
    p.stop();
    std::fs::remove_dir_all(&work).unwrap();
}

/// The tree's PIDs and TIDs, as its images name them.
fn tree_ids(images: &Path) -> Vec<i32> {
    let set = revenant_images::ImageSet::load(images).expect("loading the images");
    set.processes.iter().flat_map(|p| p.pstree.threads.iter().map(|&t| t as i32)).collect()
}

/// SysV segment ids in our namespace.
fn segments() -> Vec<i32> {
    let t = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    t.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect()
}

/// Waits until no task of `ids` and no segment of `segs` is left; a task
/// that came back to us (a subreaper) is collected.
fn nothing_left(ids: &[i32], segs: &[i32], when: &str) {
    let t = Instant::now();
    loop {
        for &id in ids {
            let _ = waitpid(Pid::from_raw(id), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        let tasks: Vec<i32> = ids.iter().copied().filter(|id| Path::new(&format!("/proc/{id}")).exists()).collect();
        let left: Vec<i32> = segments().into_iter().filter(|s| segs.contains(s)).collect();
        if tasks.is_empty() && left.is_empty() {
            return;
        }
        assert!(t.elapsed() < PATIENCE, "{when}: tasks {tasks:?} and segments {left:?} are left behind");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A tree of two processes sharing SysV segments made in our namespace (so
/// the restore makes them here, where they would outlive it) and removed
/// while attached, restored with a fault at each step: an error, or
/// SIGKILL. Each leaves no process and no segment; then the restore goes
/// through.
#[test]
fn a_restore_failing_or_killed_at_any_step_leaves_nothing_behind() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("restore-steps");
    let images = work.join("images");
    let out = work.join("out");
    start_grandchild(&dumpee("sysvshm"), &[out.as_os_str(), "rmid".as_ref(), "fork".as_ref()]);
    let text = wait_lines(&out, |l| l.len() >= 2);
    let first = text.lines().next().unwrap_or_default().to_string();
    assert!(first.ends_with("check=ok"), "{text}");
    let pid = field(&first, "pid").to_string();
    let segs: Vec<i32> = [field(&first, "a"), field(&first, "b")].iter().map(|s| s.parse().unwrap()).collect();
    ok(&revenant(&["dump", "-t", &pid], &images, None), "dump");
    let ids = tree_ids(&images);
    nothing_left(&ids, &segs, "after the dump");

    let dumped = std::fs::read(&out).unwrap();
    let o = revenant(&["restore", "-d"], &images, Some(("REVENANT_FAULT", "list".into())));
    ok(&o, "restore listing its steps");
    let steps: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("revenant: step "))
        .map(|l| l.to_string())
        .collect();
    assert!(steps.iter().any(|s| s.contains("SysV segment")), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("held")), "{steps:?}");
    for &id in &ids {
        let _ = kill(Pid::from_raw(id), Signal::SIGKILL);
    }
    nothing_left(&ids, &segs, "after the listing restore");
    // The restored tree wrote on; a restore wants its file as dumped.

    for (i, name) in steps.iter().enumerate() {
        for mode in ["error", "kill"] {
            std::fs::write(&out, &dumped).unwrap();
            let o = revenant(&["restore", "-d"], &images, Some(("REVENANT_FAULT", format!("{mode}:{}", i + 1))));
            let err = String::from_utf8_lossy(&o.stderr);
            use std::os::unix::process::ExitStatusExt;
            match mode {
                "error" => assert!(err.contains("fault injected"), "error at step {name}: {err}"),
                _ => assert_eq!(o.status.signal(), Some(9), "kill at step {name}: {err}"),
            }
            nothing_left(&ids, &segs, &format!("{mode} at step {name}"));
        }
    }
    std::fs::write(&out, &dumped).unwrap();
    ok(&revenant(&["restore", "-d"], &images, None), "restore after all that");
    let n = std::fs::read_to_string(&out).unwrap().lines().count();
    let text = wait_lines(&out, |l| l.len() >= n + 2);
    assert!(text.lines().last().unwrap().ends_with("check=ok"), "{text}");
    for &id in &ids {
        let _ = kill(Pid::from_raw(id), Signal::SIGKILL);
    }
    nothing_left(&ids, &segs, "at the end");
    std::fs::remove_dir_all(&work).unwrap();
}

/// Waits for `pid` to be stopped (state T).
fn stopped(pid: i32, when: &str) {
    let t = Instant::now();
    while state(pid) != 'T' {
        assert!(t.elapsed() < PATIENCE, "{when}: program {pid} is not stopped: {}", state(pid));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A SIGSTOP that comes once the tree is frozen meets the calls the dump
/// runs inside the threads: it is held back, the dump goes on, and the
/// program stops when let go (and after a restore), as it would have; at
/// SIGCONT it carries on intact.
#[test]
fn a_sigstop_during_the_dump_stops_the_program_after_it() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("sigstop");
    let images = work.join("images");
    let p = Program::start(&work);
    let pid = p.pid.to_string();
    let steps = steps(&images, &pid);
    // Right after the freeze, before the first injected call.
    let at = steps.iter().position(|s| s.contains("return frame written")).expect("an injection step");
    for leave_running in [true, false] {
        let mut args = vec!["dump", "-t", &pid];
        if leave_running {
            args.push("--leave-running");
        }
        let o = revenant(&args, &images, Some(("REVENANT_FAULT", format!("sigstop:{at}:{pid}"))));
        ok(&o, &format!("dump with a SIGSTOP at step {} ({})", at, steps[at - 1]));
        if !leave_running {
            p.collected();
            ok(&revenant(&["restore", "-d"], &images, None), "restore of a stopping program");
        }
        stopped(p.pid, if leave_running { "after dump --leave-running" } else { "after restore" });
        kill(Pid::from_raw(p.pid), Signal::SIGCONT).unwrap();
        p.carries_on(if leave_running { "continued after the dump" } else { "continued after the restore" });
    }
    p.stop();
    std::fs::remove_dir_all(&work).unwrap();
}

/// Whether a keeper of TCP locks forked by a dump into `images` still
/// runs (forked, not executed, it shows the dump's command line; a zombie
/// waiting for init holds nothing).
fn keeper_runs(images: &Path) -> bool {
    let dir = images.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        stat.split_once(") ").is_some_and(|(name, rest)| name.ends_with("(revenant-tcplck") && !rest.starts_with('Z'))
            && String::from_utf8_lossy(&cmdline).contains(&dir)
    })
}

/// A program holding both ends of TCP connections with bytes in flight
/// (`tcpconn.c`, which checks every byte and that every write goes
/// through): a `--tcp-established` dump failing or SIGKILLed at each step
/// from the first connection's lock on leaves it running with its
/// connections unlocked (the keeper undoes the locks when the dump fails
/// or dies) and no keeper behind.
#[test]
fn a_tcp_dump_failing_or_killed_after_locking_leaves_the_connections_working() {
    let _w = revenant_test_watchdog::start();
    let work = scratch("tcpsteps");
    let images = work.join("images");
    let out = work.join("out");
    start_grandchild(&dumpee("tcpconn"), &[out.as_os_str()]);
    wait_lines(&out, |l| l.len() >= 3);
    let needle = out.to_string_lossy().into_owned();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .expect("the tcpconn process");
    let pid_s = pid.to_string();
    let carries_on = |when: &str| {
        let n = std::fs::read_to_string(&out).unwrap().lines().count();
        // One line more than looked at: the last may be half written.
        let text = wait_lines(&out, |l| l.len() >= n + 4);
        let after: Vec<&str> = text.lines().skip(n).take(3).collect();
        assert!(after.len() >= 3 && after.iter().all(|l| l.ends_with("tcp=ok")), "{when}: {after:?}");
        let t0 = Instant::now();
        while keeper_runs(&images) && t0.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!keeper_runs(&images), "{when}: a keeper of TCP locks is left running");
    };
    let o = revenant(
        &["dump", "-t", &pid_s, "--leave-running", "--tcp-established"],
        &images,
        Some(("REVENANT_FAULT", "list".into())),
    );
    ok(&o, "dump listing its steps");
    let steps: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("revenant: step "))
        .map(String::from)
        .collect();
    carries_on("after --leave-running");
    let first = steps.iter().position(|s| s.contains("locked")).expect("a step after a connection is locked");
    for (i, name) in steps.iter().enumerate().skip(first) {
        let n = i + 1;
        for how in ["error", "kill"] {
            let fault = Some(("REVENANT_FAULT", format!("{how}:{n}")));
            let o = revenant(&["dump", "-t", &pid_s, "--tcp-established"], &images, fault);
            assert!(!o.status.success(), "step {name}: the dump went through a {how} step");
            carries_on(&format!("dump {how} at step {name}"));
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);
    std::fs::remove_dir_all(&work).unwrap();
}
