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

use dump_support::wait_for;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use revenant::dump::{DumpOptions, dump};
use revenant::restore::{Options, run};
use revenant_test_watchdog as watchdog;

fn scratch(name: &str) -> PathBuf {
    dump_support::scratch("rt", name)
}

fn tick(line: &str) -> u64 {
    field(line, "tick").parse().unwrap_or(0)
}

/// The number after `key=` in a dumpee's line, -1 if there is none.
fn num(line: &str, key: &str) -> i64 {
    field(line, key).parse().unwrap_or(-1)
}

/// The value of `key=` in a dumpee's line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).unwrap_or("")
}

/// Restores `images` detached with `opts` and waits until `out` has four
/// lines more than before; returns how many it had and the whole text.
fn restore_and_watch(images: &Path, opts: &Options, out: &Path) -> (usize, String) {
    let n = std::fs::read_to_string(out).unwrap().lines().count();
    run(images, opts).unwrap();
    (n, wait_for(out, |l| l.len() >= n + 4))
}

/// Kills a restored process and collects it.
fn stop(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);
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

/// Starts dumpee `name` with `args` in its own session, stdio on
/// /dev/null and no other fds.
fn start(name: &str, args: &[&std::ffi::OsStr]) -> std::process::Child {
    start_with(name, args, false)
}

/// [`start`], in an IPC namespace of its own if `own_ipc`.
fn start_with(name: &str, args: &[&std::ffi::OsStr], own_ipc: bool) -> std::process::Child {
    let mut child = Command::new(dump_support::build(name));
    child.args(args);
    start_command(child, own_ipc)
}

/// Starts `child` as [`start_with`] does.
fn start_command(mut child: Command, own_ipc: bool) -> std::process::Child {
    child.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid, unshare and close_range are async-signal-safe. Fds the
    // test harness leaks (cargo's jobserver pipe) are not the program's.
    unsafe {
        child.pre_exec(move || {
            nix::unistd::setsid()?;
            if own_ipc {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)?;
            }
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    child.spawn().unwrap()
}

/// Dumps `child`, whose ticking lines go to `out`, into `images` (which
/// kills it), restores it detached, and waits until it has ticked `more`
/// times since the dump. Returns its PID (running still), its last tick
/// before the dump and the lines it wrote after.
fn ticks_on(mut child: std::process::Child, out: &Path, images: &Path, more: u64) -> (i32, u64, Vec<String>) {
    let pid = child.id() as i32;
    dump_and_reap(&mut child, images);
    let last = tick(std::fs::read_to_string(out).unwrap().lines().last().unwrap());
    run(images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(out, |l| l.last().is_some_and(|x| tick(x) >= last + more));
    (pid, last, after.lines().filter(|l| tick(l) > last).map(String::from).collect())
}

/// Checks a program that writes "tick=N gap=MS" every 20 ms to `out`
/// through a dump and restore: it counts on from where it was, and after
/// the first tick (which waited through both) fires on time again
/// (generously: under 500 ms).
fn ticks_on_time(child: std::process::Child, out: &Path, images: &Path) {
    wait_for(out, |l| l.len() >= 5);
    let (pid, last, after) = ticks_on(child, out, images, 20);
    stop(pid);
    let ticks: Vec<u64> = after.iter().map(|l| tick(l)).collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1) && ticks[0] == last + 1, "{after:?}");
    assert!(after[1..].iter().all(|l| num(l, "gap") < 500), "{after:?}");
}

/// Runs dumpee `name` (with its output file, and the work directory when
/// `with_dir`), whose every line ends with `ok` while what it checks holds:
/// before the dump, and ticking on after the restore; then asks it
/// (SIGUSR1) to use what it holds once, which it says as "data=ok".
fn checked_then_used(name: &str, with_dir: bool, ok: &str) {
    checked_then_used_args(name, with_dir, &[], ok);
}

/// [`checked_then_used`] with the work directory and then `extra`
/// arguments.
fn checked_then_used_with(name: &str, extra: &[&str], ok: &str) {
    checked_then_used_args(name, true, extra, ok);
}

fn checked_then_used_args(name: &str, with_dir: bool, extra: &[&str], ok: &str) {
    let _w = watchdog::start();
    let work = scratch(name);
    let images = work.join("images");
    let out = work.join("out");
    let mut args = vec![out.as_os_str()];
    if with_dir {
        args.push(work.as_os_str());
    }
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let child = start(name, &args);
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with(ok)), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    assert!(after.iter().all(|l| l.ends_with(ok)), "{after:?}");
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let text = wait_for(&out, |l| l.iter().any(|x| x.starts_with("data=")));
    stop(pid);
    assert!(text.lines().any(|l| l == "data=ok"), "{text}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Dumps `child` into `images` (which kills it) and reaps it, so its PID
/// is free for the restore.
fn dump_and_reap(child: &mut std::process::Child, images: &Path) {
    dump_and_reap_with(child, images, &DumpOptions::default());
}

/// [`dump_and_reap`] with `opts`.
fn dump_and_reap_with(child: &mut std::process::Child, images: &Path, opts: &DumpOptions) {
    std::fs::create_dir_all(images).unwrap();
    let dumped = dump(child.id() as i32, images, opts);
    if dumped.is_err() {
        let _ = child.kill();
    }
    let dumped = dumped.unwrap();
    child.wait().unwrap();
    // Killed children went to init; wait until their PIDs are free.
    for _ in 0..100 {
        let pids = dumped.tree.procs.iter().map(|p| p.pid).chain(dumped.tree.zombies.iter().map(|z| z.pid));
        if pids.into_iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `counter` with `mib` MiB of heap through dump and restore, checks
/// that it carries on with its PID, memory, cwd and file offset, and
/// returns the restore log.
fn counter_round_trip(name: &str, mib: u32) -> String {
    let work = scratch(name);
    let images = work.join("images");
    let out = work.join("out");
    let log = work.join("restore.log");
    let mib = std::ffi::OsString::from(mib.to_string());
    let mut child = start("counter", &[out.as_os_str(), work.as_os_str(), &mib]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap();
    let last = tick(before.lines().last().unwrap());
    let listed = listing(&images);

    run(&images, &Options { detach: true, log_file: Some(log.clone()), ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 3));
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    stop(pid);

    assert_eq!(tasks, [pid.to_string()], "the restored process has threads it did not have");
    assert_eq!(listing(&images), listed, "the restore changed the image directory");
    let lines: Vec<&str> = after.lines().collect();
    assert!(tick(lines.last().unwrap()) >= last + 3, "the restored process did not carry on:\n{after}");
    // Every tick once, in order, at the file offset where the dump left it.
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(tick(l), i as u64 + 1, "line {i}: {l}\n{after}");
        let cwd = work.canonicalize().unwrap();
        assert_eq!(*l, format!("pid={pid} tick={} check=ok cwd={}", i + 1, cwd.display()));
    }
    let log = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    log
}

#[test]
fn a_counting_process_carries_on_after_dump_and_restore() {
    let _w = watchdog::start();
    counter_round_trip("counter", 1);
}

/// Large memory takes the fast way: pages placed with UFFDIO_COPY, half of
/// them by a helper thread, which must leave no trace in the restored
/// process (its TIDs are checked by the other tests).
#[test]
fn a_large_heap_is_copied_back_on_two_threads_intact() {
    let _w = watchdog::start();
    let log = counter_round_trip("counter-large", 48);
    assert!(log.contains("with UFFDIO_COPY on two threads"), "the fast copy did not run:\n{log}");
}

#[test]
fn threads_keep_their_tids_and_their_avx_registers() {
    let _w = watchdog::start();
    let work = scratch("avx");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("avxthreads", &[out.as_os_str()]);
    let pid = child.id() as i32;
    let tids = |text: &str| {
        let mut t: Vec<String> = text.lines().filter_map(|l| l.split(' ').next()).map(str::to_string).collect();
        t.sort();
        t.dedup();
        t
    };
    let before = wait_for(&out, |l| tids(&l.join("\n")).len() == 4 && l.len() >= 12);
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap_or(before);
    let n_before = before.lines().count();
    let threads = tids(&before);
    assert_eq!(threads.len(), 4, "{before}");

    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    // Every thread reports at least twice more.
    let after = wait_for(&out, |l| {
        let new = &l[n_before.min(l.len())..];
        threads.iter().all(|t| new.iter().filter(|x| x.starts_with(&format!("{t} "))).count() >= 2)
    });
    stop(pid);
    let new: Vec<&str> = after.lines().skip(n_before).collect();
    for t in &threads {
        assert!(
            new.iter().filter(|x| x.starts_with(&format!("{t} "))).count() >= 2,
            "{t} is missing after restore:\n{after}"
        );
    }
    assert_eq!(tids(&after), threads, "TIDs changed:\n{after}");
    assert!(new.iter().all(|l| l.ends_with("ymm=ok")), "a thread lost its ymm8:\n{after}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_pipe_comes_back_with_its_buffered_data_and_flags() {
    let _w = watchdog::start();
    let work = scratch("pipe");
    let images = work.join("images");
    let (out, go) = (work.join("out"), work.join("go"));
    let mut child = start("pipefile", &[out.as_os_str(), go.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 2);
    dump_and_reap(&mut child, &images);
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let n = std::fs::read_to_string(&out).unwrap().lines().count();
    wait_for(&out, |l| l.len() > n);
    std::fs::write(&go, b"").unwrap();
    let text = wait_for(&out, |l| l.last().is_some_and(|x| x.starts_with("pipe=")));
    let status = waitpid(Pid::from_raw(pid), None);
    let last = text.lines().last().unwrap_or("");
    // Read end still non-blocking: the second read finds only "again".
    assert_eq!(last, "pipe=through the pipe again=again (16 5) size=262144", "{text}");
    assert!(matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))), "{status:?}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_parent_and_its_two_children_come_back_as_a_family() {
    let _w = watchdog::start();
    let work = scratch("family");
    let images = work.join("images");
    let (out, go) = (work.join("out"), work.join("go"));
    let mut child = start("family", &[out.as_os_str(), go.as_os_str()]);
    let pid = child.id() as i32;
    let kids_in = |text: &str| {
        let mut k: Vec<i32> = text
            .lines()
            .filter(|l| l.starts_with("child "))
            .filter_map(|l| l.split("pid=").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let before = wait_for(&out, |l| kids_in(&l.join("\n")).len() == 2);
    let kids = kids_in(&before);
    assert_eq!(kids.len(), 2, "{before}");
    dump_and_reap(&mut child, &images);
    let n = std::fs::read_to_string(&out).unwrap().lines().count();
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| kids_in(&l[n.min(l.len())..].join("\n")).len() == 2);
    std::fs::write(&go, b"").unwrap();
    let done = wait_for(&out, |l| l.iter().filter(|x| x.starts_with("reaped")).count() == 2);
    let status = waitpid(Pid::from_raw(pid), None);
    for k in &kids {
        let _ = kill(Pid::from_raw(*k), Signal::SIGKILL);
    }
    let new: Vec<&str> = after.lines().skip(n).collect();
    // The group both children are in: the first one's.
    let pgid_of = |lines: &[&str], k: i32| {
        lines.iter().rev().find(|l| l.starts_with(&format!("child pid={k} "))).map(|l| num(l, "pgid"))
    };
    let old: Vec<&str> = before.lines().collect();
    let groups: Vec<_> = kids.iter().map(|&k| pgid_of(&old, k)).collect();
    assert!(groups[0] == groups[1] && groups[0] != Some(pid as i64), "the dumpee's groups: {groups:?}\n{before}");
    for k in &kids {
        assert!(new.iter().any(|l| l.starts_with(&format!("child pid={k} ppid={pid} "))), "{after}");
        assert_eq!(pgid_of(&new, *k), pgid_of(&old, *k), "child {k}'s process group\n{after}");
    }
    assert!(new.iter().any(|l| l.starts_with(&format!("parent pid={pid} "))), "{after}");
    let reaped: Vec<&str> = done.lines().filter(|l| l.starts_with("reaped")).collect();
    let mut expected: Vec<String> = kids.iter().map(|k| format!("reaped pid={k} signal=15")).collect();
    let mut got: Vec<String> = reaped.iter().map(|s| s.to_string()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{done}");
    assert!(matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))), "{status:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// glibc's clock_gettime goes through the vDSO; after the restore it must
/// still agree with the raw system call, with the vDSO moved into place and
/// with it proxied.
#[test]
fn clock_gettime_through_the_vdso_stays_right_moved_or_proxied() {
    let _w = watchdog::start();
    for proxy in [false, true] {
        let work = scratch(if proxy { "clock-proxy" } else { "clock" });
        let images = work.join("images");
        let out = work.join("out");
        let mut child = start("clock", &[out.as_os_str()]);
        let pid = child.id() as i32;
        wait_for(&out, |l| l.len() >= 2);
        dump_and_reap(&mut child, &images);
        let mut opts = Options { detach: true, ..Default::default() };
        opts.plan.vdso_proxy = proxy;
        let (n, after) = restore_and_watch(&images, &opts, &out);
        stop(pid);
        let new: Vec<&str> = after.lines().skip(n).collect();
        assert!(new.len() >= 4, "proxy={proxy}: the program did not carry on:\n{after}");
        assert!(new.iter().all(|l| l.ends_with("vdso=ok")), "proxy={proxy}:\n{after}");
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// A program that moved its own vvar, vvar_vclock and vDSO with mremap and
/// calls the moved vDSO directly: the dump finds the pieces where they are
/// now, and the restore puts the runtime vDSO there.
#[test]
fn a_vdso_the_program_moved_itself_keeps_working() {
    let _w = watchdog::start();
    let work = scratch("movedvdso");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("movedvdso", &[out.as_os_str()]);
    let pid = child.id() as i32;
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("moved=ok")), "before the dump:\n{before}");
    dump_and_reap(&mut child, &images);
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    stop(pid);
    let new: Vec<&str> = after.lines().skip(n).collect();
    assert!(new.len() >= 4 && new.iter().all(|l| l.ends_with("moved=ok")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn timers_alternate_stacks_and_blocked_and_pending_signals_come_back() {
    let _w = watchdog::start();
    let work = scratch("signals");
    let images = work.join("images");
    let (out, go) = (work.join("out"), work.join("go"));
    let mut child = start("signals", &[out.as_os_str(), go.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap();
    let last = num(before.lines().last().unwrap(), "alarms");
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    std::fs::write(&go, b"").unwrap();
    let done = wait_for(&out, |l| l.last().is_some_and(|x| x.starts_with("usr1=")));
    let status = waitpid(Pid::from_raw(pid), None);
    let new: Vec<&str> = after.lines().skip(n).collect();
    assert!(new.len() >= 4, "{after}");
    // The timer kept firing, on the alternate stack, counting on from the
    // dump; SIGUSR2 stayed blocked; SIGTRAP still has its handler.
    assert!(num(new.last().unwrap(), "alarms") > last, "{after}");
    assert!(new.iter().all(|l| l.ends_with("onstack=1 trap=1 usr2blocked=1")), "{after}");
    assert_eq!(done.lines().last().unwrap(), "usr1=delivered", "{done}");
    assert!(matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))), "{status:?}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_posix_timer_keeps_its_id_and_interval() {
    let _w = watchdog::start();
    let work = scratch("posixtimer");
    let images = work.join("images");
    let (out, go) = (work.join("out"), work.join("go"));
    let mut child = start("posixtimer", &[out.as_os_str(), go.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap();
    let last = num(before.lines().last().unwrap(), "fired");
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    // Two timers had their blocked signals pending: each is pending once
    // again, sent by the timer itself, not twice.
    std::fs::write(&go, b"").unwrap();
    let done = wait_for(&out, |l| l.iter().any(|x| x.starts_with("pending")));
    stop(pid);
    assert!(done.lines().any(|l| l == "pending rt1=1 rt2=1 other=0"), "{done}");
    let new: Vec<&str> = after.lines().skip(n).filter(|l| l.starts_with("fired=")).collect();
    assert!(new.len() >= 4, "{after}");
    assert!(num(new.last().unwrap(), "fired") > last, "the timer stopped firing:\n{after}");
    assert!(new.iter().all(|l| l.ends_with("interval_ns=20000000 id=1 armed=1")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Removes segments of the host's namespace a test left behind.
fn remove_segments<S: AsRef<str>>(ids: &[S]) {
    for id in ids.iter().filter_map(|i| i.as_ref().parse::<i32>().ok()) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { nix::libc::shmctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// Runs the `sysvshm` dumpee in `mode` (in its own IPC namespace or ours),
/// dumps it, lets `between` act on the images and the dumped line (it
/// returns whether to restore), restores, and checks the program carries
/// on with its segments shared, counted and marked as before.
fn sysv_round_trip(name: &str, mode: &[&str], own_ipc: bool, between: impl FnOnce(&Path, &str) -> bool) -> String {
    let work = scratch(name);
    let images = work.join("images");
    let out = work.join("out");
    let mut args = vec![out.as_os_str()];
    args.extend(mode.iter().map(std::ffi::OsStr::new));
    let mut child = start_with("sysvshm", &args, own_ipc);
    let pid = child.id() as i32;
    let before = wait_for(&out, |l| l.len() >= 3);
    assert!(before.lines().all(|l| l.ends_with("check=ok")), "{before}");
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap();
    let last = before.lines().last().unwrap().to_string();
    if !between(&images, &last) {
        let _ = std::fs::remove_dir_all(&work);
        return String::new();
    }
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= tick(&last) + 3));
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/ipc")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let ours = std::fs::metadata("/proc/self/ns/ipc").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let sysvipc = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    stop(pid);
    if !own_ipc {
        remove_segments(&[field(&last, "a"), field(&last, "b")]);
    }
    let lines: Vec<&str> = after.lines().collect();
    assert!(tick(lines.last().unwrap()) >= tick(&last) + 3, "the restored process did not carry on:\n{after}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(tick(l), i as u64 + 1, "{after}");
        assert!(l.ends_with("check=ok"), "line {i} after the restore: {l}\n{after}");
        assert_eq!((field(l, "a"), field(l, "b")), (field(&last, "a"), field(&last, "b")), "segment ids changed");
    }
    assert_eq!(theirs.unwrap() != ours, own_ipc, "the restored process is in the wrong IPC namespace");
    let _ = std::fs::remove_dir_all(&work);
    sysvipc
}

#[test]
fn sysv_segments_in_their_own_ipc_namespace_come_back_shared_counted_and_in_place() {
    let _w = watchdog::start();
    sysv_round_trip("shm-ns", &["keep"], true, |images, _| {
        assert!(images.join("ipcns-var-9.img").exists() && images.join("ipcns-shm-9.img").exists());
        true
    });
}

#[test]
fn sysv_segments_removed_before_the_dump_are_removed_again_in_the_hosts_namespace() {
    let _w = watchdog::start();
    let table = sysv_round_trip("shm-rmid", &["rmid"], false, |_, _| true);
    assert!(!table.is_empty());
}

/// In the host's namespace a kept segment outlives the dumped program.
/// While another process has it attached, the restore refuses to take
/// another id for it, naming the way out; once nobody has, the restore
/// takes it back (key, mode and attachments as before, and the dumped
/// bytes, which the program checks).
#[test]
fn a_kept_sysv_segment_in_the_hosts_namespace_is_taken_back_unless_attached() {
    let _w = watchdog::start();
    let mut key = String::new();
    let mut a = String::new();
    let table = sysv_round_trip("shm-host", &["keep"], false, |images, last| {
        a = field(last, "a").to_string();
        let pid: u32 = field(last, "pid").parse().unwrap();
        key = (0x7e00_0000u32 | pid).to_string();
        // Another process holds it (not this one: the tasks the restore
        // makes would inherit an attachment of ours).
        let holder = "import ctypes, sys, time; c = ctypes.CDLL(None); c.shmat.restype = ctypes.c_void_p; \
                      at = c.shmat(int(sys.argv[1]), None, 0o10000); print(at not in (None, 2**64 - 1), flush=True); \
                      time.sleep(60)";
        let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let mut held =
            Command::new(python).args(["-c", holder, &a]).stdout(Stdio::piped()).spawn().expect("starting python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(held.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "True", "python3 could not attach segment {a}");
        let err = format!("{:#}", run(images, &Options { detach: true, ..Default::default() }).unwrap_err());
        let _ = held.kill();
        let _ = held.wait();
        assert!(err.contains(&format!("ipcrm -m {a}")) && err.contains("attached 1 times"), "{err}");
        assert!(err.contains("--shm-new-ids"), "{err}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a failed restore left the process behind");
        true
    });
    let row = table.lines().find(|l| l.split_whitespace().nth(1) == Some(a.as_str())).expect("segment a is listed");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[0], cols[2], cols[6]), (key.as_str(), "640", "4"), "key, mode, attachments: {row}");
}

/// A child that inherited the attachments shares the segments with its
/// parent after the restore: what it writes, the parent sees.
#[test]
fn sysv_segments_stay_shared_between_a_parent_and_its_child() {
    let _w = watchdog::start();
    sysv_round_trip("shm-fork", &["rmid", "fork"], true, |images, _| {
        assert_eq!(
            std::fs::read_dir(images)
                .unwrap()
                .filter(|e| { e.as_ref().unwrap().file_name().to_string_lossy().starts_with("core-") })
                .count(),
            2,
            "parent and child were dumped"
        );
        true
    });
}

/// `--shm-new-ids`: a segment whose id is taken comes back under a new id
/// (the attachment moves with it); one whose id is free keeps it.
#[test]
fn a_taken_sysv_id_is_replaced_when_new_ids_are_allowed() {
    let _w = watchdog::start();
    let work = scratch("shm-newid");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start_with("sysvshm", &[out.as_os_str(), "keep".as_ref()], false);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 2);
    dump_and_reap(&mut child, &images);
    let text = std::fs::read_to_string(&out).unwrap();
    let last = text.lines().last().unwrap();
    let (a, b): (i32, i32) = (field(last, "a").parse().unwrap(), field(last, "b").parse().unwrap());
    // SAFETY: removes segment A the dumped program left; no buffer.
    unsafe { nix::libc::shmctl(a, nix::libc::IPC_RMID, std::ptr::null_mut()) };
    // B stays attached here, so it is not taken back: it holds its id.
    // SAFETY: an attachment at an address of the kernel's choosing.
    let at = unsafe { nix::libc::shmat(b, std::ptr::null(), nix::libc::SHM_RDONLY) };
    assert_ne!(at as isize, -1, "attaching segment {b}");
    let mut opts = Options { detach: true, ..Default::default() };
    opts.plan.shm_new_ids = true;
    let restored = run(&images, &opts);
    // SAFETY: detaches the attachment made above.
    unsafe { nix::libc::shmdt(at) };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    stop(pid);
    // SAFETY: removes the old segment B; no buffer.
    unsafe { nix::libc::shmctl(b, nix::libc::IPC_RMID, std::ptr::null_mut()) };
    restored.unwrap();
    let mut ids: Vec<i32> = maps
        .lines()
        .filter(|l| l.contains("/SYSV"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    ids.sort();
    ids.dedup();
    remove_segments(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(ids.len(), 2, "{maps}");
    assert!(ids.contains(&a) && !ids.contains(&b), "A keeps {a}, B leaves {b}: {ids:?}\n{maps}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Seccomp filters come back per thread: the main thread with its one
/// filter, the other thread with the one it inherited and its own; the
/// images hold the inherited filter once.
#[test]
fn seccomp_filters_come_back_for_each_thread() {
    let _w = watchdog::start();
    use revenant_images::Image;
    let work = scratch("seccomp");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("sandboxed", &[out.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let Image::Seccomp(sc) = Image::read(&images.join("seccomp.img")).unwrap() else { panic!("not a seccomp image") };
    assert_eq!(sc[0].seccomp_filters.len(), 2, "{sc:?}");

    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    let mut filters: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| {
            let status = std::fs::read_to_string(e.unwrap().path().join("status")).unwrap();
            let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("?").trim().to_string();
            format!("mode {} filters {}", field("Seccomp:"), field("Seccomp_filters:"))
        })
        .collect();
    filters.sort();
    stop(pid);

    assert_eq!(filters, ["mode 2 filters 1", "mode 2 filters 2"]);
    let lines: Vec<&str> = after.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(tick(l), i as u64 + 1, "{after}");
        if i + 1 >= n {
            // getppid fails in both threads (errno 77), getpgrp only in
            // the second (78).
            assert!(l.ends_with(" main=77,0 thread=77,78"), "line {i} after the restore: {l}\n{after}");
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Zombies come back as zombies of their parent, with their PIDs, names
/// and how they ended, which the parent learns when it reaps them after the
/// restore.
#[test]
fn zombie_children_come_back_unreaped_and_are_reaped_by_their_parent() {
    let _w = watchdog::start();
    zombies_round_trip("zombies", false);
}

/// CRIU 4.2 never seizes a zombie, so the thread list of its pstree entry
/// holds whatever CRIU's memory did (`[965315696]` and `[0]` were seen);
/// its restore opens the zombie's core image by the PID and reads no
/// thread. Ours did the same only while the list started with the PID: it
/// looked for `core-965315696.img`.
#[test]
fn zombies_whose_thread_lists_hold_garbage_as_criu_writes_them_come_back() {
    let _w = watchdog::start();
    zombies_round_trip("zombies-criu", true);
}

/// Dumps the `zombies` dumpee, restores it and checks the zombies come
/// back as they were; with `criu_threads` the zombies' thread lists in
/// `pstree.img` are first replaced with garbage, as CRIU writes them.
fn zombies_round_trip(name: &str, criu_threads: bool) {
    use revenant_images::{Image, TASK_DEAD};
    let work = scratch(name);
    let images = work.join("images");
    let out = work.join("out");
    let reap = work.join("reap");
    let mut child = start("zombies", &[out.as_os_str(), reap.as_os_str()]);
    let pid = child.id() as i32;
    let first = wait_for(&out, |l| l.len() >= 3);
    let line = first.lines().next().unwrap();
    let (a, b) = (num(line, "a"), num(line, "b"));
    let chld = field(first.lines().last().unwrap(), "chld").to_string();
    dump_and_reap(&mut child, &images);
    for (z, status) in [(a, 7 << 8), (b, nix::libc::SIGTERM as u32)] {
        let Image::Core(c) = Image::read(&images.join(format!("core-{z}.img"))).unwrap() else { panic!() };
        let tc = c[0].tc.as_ref().unwrap();
        assert_eq!((tc.task_state, tc.exit_code), (TASK_DEAD, status), "zombie {z}");
    }
    if criu_threads {
        let pstree = images.join("pstree.img");
        let Image::Pstree(mut entries) = Image::read(&pstree).unwrap() else { panic!("not a pstree image") };
        for (e, garbage) in entries.iter_mut().filter(|e| [a, b].contains(&(e.pid as i64))).zip([965_315_696, 0]) {
            e.threads = vec![garbage];
        }
        Image::Pstree(entries).write(&pstree).unwrap();
    }

    let (n, _) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    let states: Vec<String> = [a, b]
        .iter()
        .map(|z| {
            let stat = std::fs::read_to_string(format!("/proc/{z}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map_or("", |s| s.1);
            let f: Vec<&str> = after.split(' ').take(2).collect();
            format!(
                "{} {} ppid {}",
                stat.split(" (").nth(1).and_then(|s| s.split(')').next()).unwrap_or(""),
                f[0],
                f[1]
            )
        })
        .collect();
    std::fs::write(&reap, "").unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| x.contains("reaped")));
    stop(pid);

    assert_eq!(states, [format!("zombies Z ppid {pid}"), format!("zombies Z ppid {pid}")]);
    let lines: Vec<&str> = after.lines().collect();
    assert!(lines.len() > n, "{after}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(tick(l), i as u64 + 1, "{after}");
        // The zombies' making must not reach the program as a SIGCHLD.
        assert!(!l.contains(" zombies ") || field(l, "chld") == chld, "line {i}: {l}\n{after}");
    }
    assert!(
        lines.last().unwrap().ends_with(" reaped a=exit:7 b=signal:15"),
        "the parent did not find its children as they ended:\n{after}"
    );
    assert!(!Path::new(&format!("/proc/{a}")).exists() && !Path::new(&format!("/proc/{b}")).exists());
    let _ = std::fs::remove_dir_all(&work);
}

/// The state letter of `/proc/PID/stat` (R, S, T, Z...).
fn state_of(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").map_or("", |s| &s.1[..1]).to_string()
}

/// A process a signal had stopped comes back stopped, before running any
/// of its code, and carries on with its memory intact once continued.
#[test]
fn a_stopped_process_comes_back_stopped_and_goes_on_when_continued() {
    let _w = watchdog::start();
    use revenant_images::Image;
    let work = scratch("stopped");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("counter", &[out.as_os_str(), work.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    for _ in 0..100 {
        if state_of(pid) == "T" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    dump_and_reap(&mut child, &images);
    let Image::Core(c) = Image::read(&images.join(format!("core-{pid}.img"))).unwrap() else { panic!("not a core") };
    let tc = c[0].tc.as_ref().unwrap();
    assert_eq!((tc.task_state, tc.stop_signo), (revenant_images::TASK_STOPPED, Some(nix::libc::SIGSTOP as u32)));
    let n = std::fs::read_to_string(&out).unwrap().lines().count();

    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    // It was detached with SIGSTOP queued: it stops, or, restored running,
    // keeps ticking in S and never does.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state_of(pid) != "T" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (state, quiet) = (state_of(pid), std::fs::read_to_string(&out).unwrap().lines().count());
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    let after = wait_for(&out, |l| l.len() >= n + 3);
    stop(pid);

    assert_eq!((state.as_str(), quiet), ("T", n), "restored, it should sit stopped and silent");
    for (i, l) in after.lines().enumerate() {
        assert_eq!(tick(l), i as u64 + 1, "{after}");
        assert!(l.contains(" check=ok "), "{after}");
    }
    assert!(after.lines().count() >= n + 3, "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Settings a program made for itself come back with it: child subreaper,
/// THP disabled, personality, each thread's nice value and policy (with
/// SCHED_RESET_ON_FORK), timer slack, OOM score, membarrier registration,
/// CPU affinity, I/O priority, core dump filter, not being dumpable, KSM,
/// the autogroup's nice value.
#[test]
fn process_and_thread_settings_come_back() {
    let _w = watchdog::start();
    let work = scratch("knobs");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("knobs", &[out.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 2);
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap();
    let last = before.lines().last().unwrap().to_string();
    let want = "subreaper=1 thp_disabled=1 personality=0x40000 nice=7 worker_nice=3 worker_policy=1073741827 \
                slack=123456 worker_slack=123456 oom_score_adj=100 membarrier=0x10 worker_cpus=0x1 \
                worker_ioprio=0x4006 coredump_filter=0000003f dumpable=0 ";
    assert!(last.contains(want), "the program did not set itself up: {last}");
    // KSM for the whole address space: 1 where the kernel has it and lets
    // us (it takes CAP_SYS_RESOURCE), else 0 or -1; the same after.
    let ksm = field(&last, "ksm").to_string();
    assert!(["1", "0", "-1"].contains(&ksm.as_str()), "{last}");
    let autogroup = if Path::new("/proc/self/autogroup").exists() { "4" } else { "-" };
    assert_eq!(field(&last, "autogroup"), autogroup, "{last}");
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    stop(pid);
    let lines: Vec<&str> = after.lines().collect();
    assert!(lines.len() >= n + 4, "the restored program did not carry on:\n{after}");
    for l in &lines[n..] {
        assert!(l.contains(want) && field(l, "ksm") == ksm, "after the restore: {l}");
        assert_eq!(field(l, "autogroup"), autogroup, "after the restore: {l}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A pipe a parent and its child share is one pipe again after the
/// restore: the child goes on reading what the parent goes on writing.
#[test]
fn a_pipe_between_parent_and_child_stays_connected() {
    let _w = watchdog::start();
    let work = scratch("pipetree");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("pipetree", &[out.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let got = |l: &str| -> i64 { num(l, "got") };
    let before = std::fs::read_to_string(&out).unwrap();
    let last = got(before.lines().last().unwrap());
    assert!(last >= 3, "{before}");
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    let kid = field(after.lines().next().unwrap(), "child").parse::<i32>().unwrap_or(0);
    stop(pid);
    let _ = nix::sys::signal::kill(Pid::from_raw(kid), Signal::SIGKILL);
    let lines: Vec<&str> = after.lines().collect();
    // Every message once, in order, across the restore: the parent's
    // writes reach the restored child.
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(got(l), i as i64 + 1, "line {i}: {l}\n{after}");
    }
    assert!(lines.len() >= n + 4, "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// An open file description a parent and its child share keeps one offset
/// after the restore (their records never overwrite each other), and a
/// pipe end reopened through /proc keeps a description, and flags, of its
/// own, with the signal owner and signal the program gave it.
#[test]
fn shared_and_separate_file_descriptions_stay_so() {
    let _w = watchdog::start();
    let work = scratch("shareddesc");
    let images = work.join("images");
    let (out, file) = (work.join("out"), work.join("shared"));
    let mut child = start("shareddesc", &[out.as_os_str(), file.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let before = std::fs::read_to_string(&out).unwrap();
    let last = tick(before.lines().last().unwrap());
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 4));
    stop(pid);
    for l in after.lines() {
        assert!(l.ends_with("shared=ok pipe=ok owner=ok opath=ok"), "{l}\n{after}");
    }
    // Every record whole: nothing was written over.
    let records = std::fs::read_to_string(&file).unwrap();
    assert!(records.lines().all(|r| r == "child" || r.starts_with("parent ")), "{records}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A chrooted process comes back in its root, with its cwd below it.
#[test]
fn a_chrooted_process_keeps_its_root_and_cwd() {
    let _w = watchdog::start();
    let work = scratch("chrooted");
    let images = work.join("images");
    let (out, root) = (work.join("out"), work.join("root"));
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/marker"), b"").unwrap();
    let mut child = start("chrooted", &[out.as_os_str(), root.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 2);
    dump_and_reap(&mut child, &images);
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 3));
    let seen_root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    stop(pid);
    assert_eq!(seen_root, root, "{after}");
    assert!(after.lines().all(|l| l.ends_with("cwd=/sub found=1")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A cgroup made for a test, below the test's own cgroup in a mounted
/// hierarchy (so the dumpee stays under the limits the test runs with),
/// removed when dropped (once the processes in it are gone).
struct TestCgroup {
    /// The hierarchy's name as `/proc/PID/cgroup` gives it ("" for cgroup2).
    name: String,
    /// Its path in the hierarchy.
    path: String,
    dir: PathBuf,
}

impl TestCgroup {
    /// Makes a cgroup and moves `pid` into it, in the first hierarchy
    /// `hierarchy` accepts where that works (cgroup2 first; cpuset last,
    /// which needs its cpus and mems set before it takes a task). `None`
    /// when none does.
    fn with(tag: &str, pid: i32, hierarchy: fn(&str) -> bool) -> Option<TestCgroup> {
        use revenant::cgroup::{Place, own, place};
        let (mut members, mounts) = own().unwrap();
        members.sort_by_key(|m| (m.name.contains("cpuset"), m.name.clone()));
        let leaf = format!("revenant-rt-{tag}-{}", std::process::id());
        for m in members.into_iter().filter(|m| hierarchy(&m.name)) {
            let Place::Dir(parent) = place(&mounts, &m) else { continue };
            let dir = parent.join(&leaf);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let path = format!("{}/{leaf}", m.path.trim_end_matches('/'));
            let cg = TestCgroup { name: m.name.clone(), path, dir };
            if std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string()).is_ok() {
                return Some(cg);
            }
        }
        None
    }

    /// The cgroup task `tid` of process `pid` is in, in this hierarchy.
    fn of(&self, pid: i32, tid: i32) -> String {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/cgroup")).unwrap();
        let members = revenant::cgroup::parse_proc_cgroup(&text, "cgroup").unwrap();
        members.into_iter().find(|m| m.name == self.name).map(|m| m.path).unwrap_or_default()
    }

    /// Removes the directory, waiting for the last task in it to be gone.
    fn remove(&self) {
        for _ in 0..250 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} could not be removed", self.dir.display());
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A process moved into a cgroup of its own comes back in it, every
/// thread with it (the threads the blob creates inherit it).
#[test]
fn a_process_comes_back_in_its_cgroup_with_its_threads() {
    let _w = watchdog::start();
    cgroup_round_trip("threads", |_| true);
}

/// The same in a cgroup v1 hierarchy, where there is one.
#[test]
fn a_process_comes_back_in_its_cgroup_v1_hierarchy() {
    let _w = watchdog::start();
    cgroup_round_trip("v1", |name| !name.is_empty());
}

fn cgroup_round_trip(tag: &str, hierarchy: fn(&str) -> bool) {
    let work = scratch(&format!("cgroup-{tag}"));
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("avxthreads", &[out.as_os_str()]);
    let pid = child.id() as i32;
    let Some(cg) = TestCgroup::with(tag, pid, hierarchy) else {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("skipped: no cgroup mount here where a cgroup can be made and a process moved into it");
        return;
    };
    wait_for(&out, |l| l.len() >= 8);
    dump_and_reap(&mut child, &images);
    let sets = cgroup_sets(&images);
    assert!(sets.iter().any(|s| s.contains(&(cg.name.clone(), cg.path.clone()))), "{sets:?}");

    let (_, text) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    let places: Vec<String> = tids.iter().map(|&t| cg.of(pid, t)).collect();
    stop(pid);
    cg.remove();
    assert_eq!(tids.len(), 4, "{text}");
    assert!(places.iter().all(|p| *p == cg.path), "expected every thread in {}: {places:?}", cg.path);
    let _ = std::fs::remove_dir_all(&work);
}

/// The sets of `cgroup.img` in `images`, as (hierarchy, path) lists.
fn cgroup_sets(images: &Path) -> Vec<Vec<(String, String)>> {
    let set = revenant_images::ImageSet::load(images).unwrap();
    let cg = set.cgroup.expect("cgroup.img was written");
    cg.sets.iter().map(|s| s.ctls.iter().map(|m| (m.name.clone(), m.path.clone())).collect()).collect()
}

/// A cgroup removed after the dump makes the restore refuse, naming it and
/// how to go on, before any process exists.
#[test]
fn a_restore_refuses_when_the_cgroup_is_gone_naming_it() {
    let _w = watchdog::start();
    let work = scratch("cgroup-gone");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("counter", &[out.as_os_str(), work.as_os_str()]);
    let pid = child.id() as i32;
    let Some(cg) = TestCgroup::with("gone", pid, |_| true) else {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("skipped: no cgroup mount here where a cgroup can be made and a process moved into it");
        return;
    };
    wait_for(&out, |l| l.len() >= 2);
    dump_and_reap(&mut child, &images);
    cg.remove();

    let err = format!("{:#}", run(&images, &Options { detach: true, ..Default::default() }).unwrap_err());
    let hierarchy = if cg.name.is_empty() { "cgroup2".to_string() } else { format!("{:?}", cg.name) };
    assert!(
        err.contains("cgroup.img: set ")
            && err.contains(&hierarchy)
            && err.contains(&format!("path {}", cg.path))
            && err.contains(&cg.dir.display().to_string())
            && err.contains("create it"),
        "{err}"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a refused restore left the process behind");
    let _ = std::fs::remove_dir_all(&work);
}

/// Shared anonymous memory comes back shared: the child's writes reach its
/// parent, untouched pages read as zeros, an object mapped in two areas
/// (the second at an offset) is one object again; its file mapped
/// privately keeps the page written there and shows the object's other
/// pages (ZDTM `shmemfd-priv`).
#[test]
fn shared_anonymous_memory_stays_shared_between_parent_and_child() {
    let _w = watchdog::start();
    let work = scratch("shmanon");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("shmanon", &[out.as_os_str(), "priv".as_ref()]);
    wait_for(&out, |l| l.len() >= 3);
    let (pid, _, after) = ticks_on(child, &out, &images, 4);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("child=ok pattern=ok b=ok priv=ok")), "{after:?}");
    let shared: Vec<&str> = maps.lines().filter(|l| l.ends_with("/dev/zero (deleted)")).collect();
    assert_eq!(shared.len(), 4, "{maps}");
    assert!(shared.iter().any(|l| l.split_whitespace().nth(2) == Some("00002000")), "{maps}");
    assert_eq!(shared.iter().filter(|l| l.split_whitespace().nth(1) == Some("rw-p")).count(), 1, "{maps}");
    let _ = std::fs::remove_dir_all(&work);
}

/// CRIU 4.2 writes shared anonymous memory as a memfd object named
/// `/dev/zero` (`memfd.img`, `MEMFD` file entries, areas with
/// `VMA_AREA_MEMFD`): our own dump rewritten so restores as shared
/// anonymous memory again, shared with the child.
#[test]
fn shared_anonymous_memory_in_criu_memfd_form_is_restored() {
    use revenant_images::messages::{FdType, FileEntry, MemfdFileEntry, MemfdInodeEntry, vma_status as vs};
    let _w = watchdog::start();
    let work = scratch("shmanon-memfd");
    let (images, criu) = (work.join("images"), work.join("criu"));
    let out = work.join("out");
    let mut child = start("shmanon", &[out.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let mut set = revenant_images::ImageSet::load(&images).unwrap();
    let mut next_id = set.files.iter().map(|f| f.id).max().unwrap() + 1;
    let mut ids = std::collections::BTreeMap::new();
    for v in set.processes.iter_mut().flat_map(|p| &mut p.mm.vmas).filter(|v| v.status & vs::ANON_SHARED != 0) {
        let shmid = v.shmid;
        let id = *ids.entry(shmid).or_insert_with(|| {
            next_id += 1;
            next_id
        });
        (v.shmid, v.status, v.fdflags) = (id.into(), vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD, Some(2));
    }
    assert_eq!(ids.len(), 2, "shmanon maps two objects");
    for (&shmid, &id) in &ids {
        let memfd = MemfdFileEntry { id, flags: 2, inode_id: id, ..Default::default() };
        set.files.push(FileEntry { r#type: FdType::Memfd as i32, id, memfd: Some(memfd), ..Default::default() });
        let size = set.processes.iter().flat_map(|p| &p.mm.vmas).filter(|v| v.shmid == u64::from(id));
        let size = size.map(|v| v.pgoff + v.end - v.start).max().unwrap();
        set.memfd_inodes.push(MemfdInodeEntry {
            name: "/dev/zero".into(),
            size,
            shmid: shmid as u32,
            seals: 1,
            inode_id: id.into(),
            mode: Some(0o100777),
            ..Default::default()
        });
    }
    set.write(&criu).unwrap();
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    run(&criu, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 4));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    stop(pid);
    let restored: Vec<&str> = after.lines().filter(|l| tick(l) > last).collect();
    assert!(restored.iter().all(|l| l.ends_with("child=ok pattern=ok b=ok")), "{after}");
    assert_eq!(maps.lines().filter(|l| l.ends_with("/dev/zero (deleted)")).count(), 3, "{maps}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A process stopped by SIGTSTP in a group that is not orphaned comes back
/// stopped by SIGTSTP, as its parent's wait reports it.
#[test]
fn a_process_stopped_by_sigtstp_is_reported_so_after_the_restore() {
    let _w = watchdog::start();
    let work = scratch("tstp");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("tstp", &[out.as_os_str()]);
    let pid = child.id() as i32;
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("stopsig=20")), "{before}");
    dump_and_reap(&mut child, &images);
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 3));
    stop(pid);
    let new: Vec<&str> = after.lines().filter(|l| tick(l) > last).collect();
    assert!(new.iter().all(|l| l.ends_with("stopsig=20")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Private memory a parent and its child share copy-on-write since the
/// fork is one set of frames again after the restore (as CRIU's premapped
/// areas give, and ZDTM's cow00 checks), with each side's own changes made
/// since the fork: pages written by one of them, dropped, or never there.
#[test]
fn memory_shared_copy_on_write_after_fork_stays_shared() {
    let _w = watchdog::start();
    let work = scratch("cow");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("cow", &[out.as_os_str()]);
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("contents=ok shared=ok")), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("contents=ok shared=ok")), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// An event loop's eventfd (semaphore, counter, a dup), timerfd (interval,
/// firing), signalfd (mask) and the epoll watching them and a pipe (events
/// and data) carry on after the restore with their state.
#[test]
fn event_loop_files_keep_their_state() {
    let _w = watchdog::start();
    let work = scratch("evloop");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("evloop", &[out.as_os_str()]);
    let before = wait_for(&out, |l| l.len() >= 3);
    assert!(before.lines().all(|l| l.ends_with("efd=ok tfd=ok sfd=ok epoll=ok")), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 4);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("efd=ok tfd=ok sfd=ok epoll=ok")), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Node, a program nobody here wrote, with a `setInterval` timer: its event
/// loop (epoll, eventfds, pipes, seven threads) carries on after the
/// restore, counting on from where it was, on time.
#[test]
fn node_with_a_set_interval_timer_carries_on() {
    let _w = watchdog::start();
    let work = scratch("node");
    let images = work.join("images");
    let out = work.join("out");
    let script = work.join("tick.js");
    std::fs::write(
        &script,
        "const fs = require('fs'); let n = 0, last = Date.now();\n\
         setInterval(() => { const now = Date.now(); n++;\n\
           fs.appendFileSync(process.argv[2], `tick=${n} gap=${now - last}\\n`); last = now; }, 20);\n",
    )
    .unwrap();
    let mut node = Command::new("node");
    node.arg(&script).arg(&out);
    ticks_on_time(start_command(node, false), &out, &images);
    let _ = std::fs::remove_dir_all(&work);
}

/// What another process finds when it asks for the locks `locks.c` holds
/// in `dir`: (flock of a taken, the POSIX locks of b over [0, 10) and
/// [20, 30) as (type, pid), the OFD lock over c).
fn locks_seen(dir: &Path) -> (bool, (i32, i32), (i32, i32), i32) {
    use nix::libc;
    let open = |n: &str| std::fs::OpenOptions::new().read(true).write(true).open(dir.join(n)).unwrap();
    let (a, b, c) = (open("a"), open("b"), open("c"));
    use std::os::fd::AsRawFd;
    // SAFETY: plain lock calls on files we opened, and structs of ours.
    unsafe {
        let taken = libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) < 0;
        let probe = |fd: i32, cmd: i32, start: i64, len: i64| {
            let mut fl: libc::flock = std::mem::zeroed();
            (fl.l_type, fl.l_whence, fl.l_start, fl.l_len) = (libc::F_WRLCK as i16, libc::SEEK_SET as i16, start, len);
            assert_eq!(libc::fcntl(fd, cmd, &mut fl), 0);
            (fl.l_type as i32, fl.l_pid)
        };
        let first = probe(b.as_raw_fd(), libc::F_GETLK, 0, 10);
        let second = probe(b.as_raw_fd(), libc::F_GETLK, 20, 10);
        let ofd = probe(c.as_raw_fd(), libc::F_OFD_GETLK, 0, 0).0;
        (taken, first, second, ofd)
    }
}

/// flock, POSIX and OFD locks are held again by the restored process: a
/// process outside finds each of them taken, by it; its read and write
/// leases are its own again, and the two the kernel was breaking are
/// being broken again, without telling it a second time (ZDTM
/// `file_lease02`-`04`).
#[test]
fn file_locks_are_held_again_after_the_restore() {
    use nix::libc::{F_RDLCK, F_WRLCK};
    let _w = watchdog::start();
    let work = scratch("locks");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("locks", &[out.as_os_str(), work.as_os_str(), "breaking".as_ref()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 2);
    let want = (true, (F_WRLCK, pid), (F_RDLCK, pid), F_WRLCK);
    assert_eq!(locks_seen(&work), want, "before the dump");
    dump_and_reap(&mut child, &images);
    assert!(!locks_seen(&work).0, "the dumped process is gone, and its locks");
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let lines = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 2));
    let after = locks_seen(&work);
    stop(pid);
    assert_eq!(after, want, "after the restore");
    assert!(lines.lines().all(|l| l.ends_with("locks=ok")), "{lines}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A memfd a parent and its child share (fd, shared and private
/// mappings) comes back with its name, size, seals, contents, offset and
/// sharing.
#[test]
fn a_memfd_comes_back_shared_with_its_name_seals_and_contents() {
    let _w = watchdog::start();
    let work = scratch("memfd");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("memfd", &[out.as_os_str()]);
    let ok = "child=ok content=ok seals=ok name=ok pos=ok private=ok";
    let before = wait_for(&out, |l| l.len() >= 3);
    assert!(before.lines().all(|l| l.ends_with(ok)), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 4);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with(ok)), "{after:?}");
    assert_eq!(maps.lines().filter(|l| l.ends_with("/memfd:mybuf (deleted)")).count(), 2, "{maps}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A process's own /proc files (`/proc/self/maps` opened before the dump,
/// which names `/proc/PID/maps`) are opened again once its PID exists,
/// with their offsets; its namespace files name the namespaces it is in;
/// its child's /proc file, and the child's of its parent, name each other
/// again (ZDTM `child_opened_proc`).
#[test]
fn a_process_own_proc_files_and_its_kin_are_opened_again() {
    let _w = watchdog::start();
    let work = scratch("procself");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("procself", &[out.as_os_str()]);
    wait_for(&out, |l| l.len() >= 2);
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    let link = std::fs::read_link(format!("/proc/{pid}/fd/4")).unwrap();
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("ns=ok maps=ok pos=ok kin=ok")), "{after:?}");
    assert_eq!(link, Path::new(&format!("/proc/{pid}/maps")));
    let _ = std::fs::remove_dir_all(&work);
}

/// Unix socket pairs (stream between a parent and its child, datagram and
/// seqpacket with messages waiting, one shut down for writing) come back
/// connected, with their queues, message boundaries, shutdown state and
/// options.
#[test]
fn unix_socket_pairs_come_back_connected_with_their_queues() {
    let _w = watchdog::start();
    let work = scratch("sockpair");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("sockpair", &[out.as_os_str()]);
    let ok = "child=ok dgram=ok seqpacket=ok shutdown=ok opts=ok";
    let before = wait_for(&out, |l| l.len() >= 3);
    assert!(before.lines().all(|l| l.ends_with(ok)), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 4);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with(ok)), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Python's asyncio, with a periodic task: its event loop (epoll, and the
/// socket pair it wakes itself with) carries on after the restore,
/// counting on from where it was, on time.
#[test]
fn python_asyncio_with_a_periodic_task_carries_on() {
    let _w = watchdog::start();
    let work = scratch("asyncio");
    let images = work.join("images");
    let out = work.join("out");
    let script = work.join("tick.py");
    std::fs::write(
        &script,
        "import asyncio, sys, time\n\
         async def main():\n\
         \x20   n, last = 0, time.monotonic()\n\
         \x20   while True:\n\
         \x20       await asyncio.sleep(0.02)\n\
         \x20       now = time.monotonic(); n += 1\n\
         \x20       with open(sys.argv[1], 'a') as f: f.write(f'tick={n} gap={int((now - last) * 1000)}\\n')\n\
         \x20       last = now\n\
         asyncio.run(main())\n",
    )
    .unwrap();
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut py = Command::new(python);
    py.arg(&script).arg(&out);
    ticks_on_time(start_command(py, false), &out, &images);
    let _ = std::fs::remove_dir_all(&work);
}

/// Python's `multiprocessing`: a `Pool` of worker processes, its queues
/// and locks (POSIX semaphores in /dev/shm), started by `fork` and by
/// `forkserver` (Python 3.14's default: a server process forks the
/// workers, and every semaphore is mapped under the deleted name glibc
/// made it with), carries on, each round's results checked.
#[test]
fn python_multiprocessing_pools_carry_on_with_fork_and_forkserver() {
    let _w = watchdog::start();
    for method in ["fork", "forkserver"] {
        let work = scratch(&format!("mp-{method}"));
        let images = work.join("images");
        let out = work.join("out");
        let script = work.join("pool.py");
        std::fs::write(
            &script,
            "import hashlib, multiprocessing as mp, sys, time\n\
             def work(x):\n\
             \x20   return hashlib.sha256(str(x).encode()).hexdigest()\n\
             if __name__ == '__main__':\n\
             \x20   mp.set_start_method(sys.argv[2])\n\
             \x20   lock, q = mp.Lock(), mp.Queue()\n\
             \x20   with mp.Pool(2) as pool:\n\
             \x20       for n in range(1, 1000000):\n\
             \x20           got = pool.map(work, range(n, n + 8))\n\
             \x20           with lock:\n\
             \x20               q.put(n)\n\
             \x20               ok = q.get() == n and got == [work(x) for x in range(n, n + 8)]\n\
             \x20           with open(sys.argv[1], 'a') as f: f.write(f'tick={n} ok={ok}\\n')\n\
             \x20           time.sleep(0.05)\n",
        )
        .unwrap();
        let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let mut py = Command::new(python);
        py.arg(&script).arg(&out).arg(method);
        let child = start_command(py, false);
        wait_for(&out, |l| l.len() >= 3);
        let (pid, last, after) = ticks_on(child, &out, &images, 5);
        // The workers and the server end when the program's pipes close,
        // and Python's resource tracker then unlinks the semaphores left in
        // /dev/shm; all share the program's group.
        stop(pid);
        let t = std::time::Instant::now();
        while kill(Pid::from_raw(-pid), None).is_ok() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        assert!(after.len() >= 5 && after.iter().all(|l| l.ends_with("ok=True")), "{method}: {after:?}");
        assert_eq!(tick(&after[0]), last + 1, "{method}: {after:?}");
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// A named pipe comes back open at both ends with the bytes waiting in it.
#[test]
fn a_fifo_comes_back_with_its_bytes() {
    fifo_round_trip("fifo", &[]);
}

/// So does one unlinked since it was opened, unlinked again.
#[test]
fn an_unlinked_fifo_comes_back_unlinked_with_its_bytes() {
    fifo_round_trip("fifo-unlinked", &["unlinked"]);
}

fn fifo_round_trip(name: &str, extra: &[&str]) {
    let _w = watchdog::start();
    let work = scratch(name);
    let images = work.join("images");
    let out = work.join("out");
    let mut args = vec![out.as_os_str(), work.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let child = start("fifo", &args);
    wait_for(&out, |l| l.len() >= 2);
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("fifo=ok")), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A pseudoterminal pair the program holds both ends of comes back at its
/// index, as its session's controlling terminal with the child's group in
/// the foreground, with its settings, window size and the bytes waiting at
/// each end (read once, after the restore, byte for byte).
#[test]
fn a_pseudoterminal_comes_back_with_its_session_settings_and_queued_bytes() {
    checked_then_used("pty", false, "tty=ok");
}

/// A cwd removed while the process sat in it comes back removed: the
/// process still sits in it (mode kept, nothing can be made there) and
/// nothing is left at its path.
#[test]
fn a_removed_cwd_comes_back_removed() {
    checked_then_used("rmcwd", true, "cwd=ok");
}

/// A cwd in the /proc directory of a child that ended comes back so: a
/// helper with the child's PID holds the directory while the process
/// enters it and is gone before it runs (ZDTM `unhashed_proc`).
#[test]
fn a_cwd_in_an_ended_process_proc_directory_comes_back() {
    let _w = watchdog::start();
    let work = scratch("procgone");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("procgone", &[out.as_os_str()]);
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("cwd=ok")), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("cwd=ok")), "{after:?}");
    assert_eq!(children.trim(), "", "the holder is gone");
    let _ = std::fs::remove_dir_all(&work);
}

/// A fanotify group comes back with its flags and marks (fdinfo lists
/// them as before) and goes on reporting the marked file's changes (ZDTM
/// `fanotify00`); one a child shares is made once, by the host.
#[test]
fn a_fanotify_group_comes_back_with_its_marks() {
    fanotify_round_trip(false);
    fanotify_round_trip(true);
}

fn fanotify_round_trip(shared: bool) {
    let _w = watchdog::start();
    let work = scratch(if shared { "fanotify-shared" } else { "fanotify" });
    let images = work.join("images");
    let out = work.join("out");
    let mut args = vec![out.as_os_str(), work.as_os_str()];
    if shared {
        args.push("shared".as_ref());
    }
    let child = start("fanotify", &args);
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("fan=ok")), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    // The group's fd, and whether the child's is the same description.
    let fan = |p: i32| {
        std::fs::read_dir(format!("/proc/{p}/fd")).unwrap().flatten().find_map(|e| {
            let fanotify = std::fs::read_link(e.path()).ok()? == Path::new("anon_inode:[fanotify]");
            fanotify.then(|| e.file_name().to_str()?.parse::<i32>().ok()).flatten()
        })
    };
    let kid = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let kid: Option<i32> = kid.split_whitespace().next().map(|k| k.parse().unwrap());
    let same = kid.map(|k| {
        let (a, b) = (fan(pid).unwrap(), fan(k).unwrap());
        // SAFETY: kcmp only compares; KCMP_FILE is 0.
        unsafe { nix::libc::syscall(nix::libc::SYS_kcmp, pid, k, 0, a, b) }
    });
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("fan=ok")), "{after:?}");
    assert_eq!(same, shared.then_some(0), "the child holds the parent's group");
    let _ = std::fs::remove_dir_all(&work);
}

/// `show` says which paths were unlinked when dumped.
#[test]
fn show_marks_what_was_unlinked_when_dumped() {
    let _w = watchdog::start();
    let work = scratch("show-unlinked");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("rmcwd", &[out.as_os_str(), work.as_os_str()]);
    wait_for(&out, |l| !l.is_empty());
    dump_and_reap(&mut child, &images);
    let text = revenant_images::show(&images, false).unwrap();
    let mark = "[unlinked when dumped: made again for the restore, 0 bytes carried]";
    let gone = work.join("gone");
    assert!(text.contains(&format!("cwd {} {mark}", gone.display())), "{text}");
    assert!(text.lines().any(|l| l.contains("/up/down") && l.ends_with(mark)), "{text}");
    assert!(!text.lines().any(|l| l.contains("/dev/null") && l.contains("unlinked")), "{text}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A POSIX semaphore and shared memory, unlinked from /dev/shm at once
/// (as Python's multiprocessing leaves its locks), come back as the same
/// files for parent and child: the child still counts what the parent
/// posts.
#[test]
fn unlinked_posix_semaphores_and_shared_memory_stay_shared_with_a_child() {
    checked_then_used("posixsem", false, "sem=ok");
}

/// Named unix sockets come back bound to their addresses (the socket
/// file with its mode, an abstract name), a listener with one connection
/// accepted and one still waiting, a datagram socket with its queued
/// datagrams, each byte where it was (read once, after the restore).
#[test]
fn named_unix_sockets_come_back_listening_connected_and_queued() {
    checked_then_used("unixsrv", true, "named=ok");
}

/// An eventfd, a timerfd, a signalfd and an epoll watching the eventfd
/// that a parent made before it forked come back one file each for parent
/// and child: what the parent writes to the eventfd the child reads, the
/// timer still fires for it, the epoll still watches the eventfd.
#[test]
fn event_loop_files_shared_with_a_child_stay_shared() {
    checked_then_used("sharedfds", false, "shared=ok");
}

/// A pseudoterminal slave whose master was closed (a program left behind
/// by a terminal that closed) comes back hung up: the same slave for both
/// its descriptions, shown deleted, writes failing, reads at end of file.
#[test]
fn a_hung_up_terminal_comes_back_hung_up() {
    checked_then_used("hungpty", false, "hung=ok");
}

/// Unix sockets whose file is gone come back bound to their names, their
/// files gone again, and reachable by their clients: one whose path holds
/// another socket of the program now, one whose path holds a FIFO, and a
/// connection accepted from a listener closed since, in a directory
/// removed since; the FIFO and the other socket stay where they were.
#[test]
fn unix_sockets_whose_file_is_gone_come_back_bound_and_connected() {
    checked_then_used("unixgone", true, "gone=ok");
}

/// An idle server's TCP listeners (IPv4 and IPv6-only) and UDP sockets
/// come back on their ports with their options, listening, the datagrams
/// waiting where they were, the connected UDP socket still sending.
#[test]
fn idle_tcp_and_udp_sockets_come_back_on_their_ports() {
    checked_then_used("inetsrv", false, "inet=ok");
}

/// Ping, raw and UDP-Lite sockets come back with their echo id, ICMP
/// filters and header options, the UDP-Lite datagram waiting: a ping
/// after the restore gets its reply, which the raw socket sees too.
#[test]
fn ping_raw_and_udplite_sockets_come_back_with_their_filters() {
    checked_then_used("rawsock", false, "raw=ok");
}

/// A packet socket comes back bound to its interface and ethertype, with
/// its filter, settings, fanout group and multicast membership: a
/// datagram sent after the restore reaches it.
#[test]
fn packet_sockets_come_back_bound_with_their_settings() {
    checked_then_used("pktsock", false, "packet=ok");
}

/// Netlink sockets come back with their port ids, groups (past 32 too),
/// options and connection: the routing one still answers the kernel's
/// way, the user one still reaches its peer at the same port id.
#[test]
fn netlink_sockets_come_back_bound_joined_and_connected() {
    checked_then_used("nlsock", false, "netlink=ok");
}

/// Sockets connected to services outside the tree (a log daemon's
/// datagram socket, a server's stream socket) are refused by default,
/// naming the option; with `--ext-unix-sk` they are connected to the same
/// addresses again after the restore, and the services hear from them.
#[test]
fn sockets_to_services_outside_the_tree_connect_again_with_ext_unix_sk() {
    use std::io::BufRead;
    use std::os::unix::net::{UnixDatagram, UnixListener};
    let _w = watchdog::start();
    let work = scratch("extpeer");
    let images = work.join("images");
    let out = work.join("out");
    let log = UnixDatagram::bind(work.join("log")).unwrap();
    let srv = UnixListener::bind(work.join("srv")).unwrap();
    let mut child = start("extpeer", &[out.as_os_str(), work.as_os_str()]);
    let (first, _) = srv.accept().unwrap();
    wait_for(&out, |l| l.len() >= 3);
    std::fs::create_dir_all(&images).unwrap();
    let pid = child.id() as i32;
    let err =
        format!("{:#}", dump(pid, &images, &DumpOptions { leave_running: true, ..Default::default() }).unwrap_err());
    assert!(err.contains("--ext-unix-sk") && err.contains("outside the dumped tree"), "{err}");
    let dumped = dump(pid, &images, &DumpOptions { ext_unix_sk: true, ..Default::default() });
    if dumped.is_err() {
        let _ = child.kill();
    }
    dumped.unwrap();
    child.wait().unwrap();
    // The program sends a tick before it writes it to OUTFILE, and the
    // dump may come in between: what the old connection heard last counts.
    let last_written = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    let old: Vec<String> = std::io::BufReader::new(&first).lines().map_while(Result::ok).collect();
    let last_sent = old.last().and_then(|l| l.strip_prefix("tick ")?.parse::<u64>().ok()).unwrap_or(0);
    let last = last_written.max(last_sent);
    drop(first);
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let (again, _) = srv.accept().unwrap();
    again.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    log.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Both services hear the ticks that follow, in order (the datagrams
    // sent before the dump, unread, come first there).
    let mut lines = std::io::BufReader::new(&again).lines();
    let mut buf = [0u8; 64];
    let mut heard = vec![];
    while heard.last().is_none_or(|t| *t < last + 3) {
        let n = log.recv(&mut buf).unwrap();
        heard.push(std::str::from_utf8(&buf[..n]).unwrap().trim()[5..].parse::<u64>().unwrap());
    }
    for k in 1..=3 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("tick {}", last + k));
    }
    assert!(heard.windows(2).all(|w| w[1] == w[0] + 1), "{heard:?}");
    stop(pid);
    let after = std::fs::read_to_string(&out).unwrap();
    assert!(after.lines().filter(|l| tick(l) > last).all(|l| l.ends_with("ext=ok")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A program with more sockets than any fixed table would hold (a hundred
/// socket pairs, each with a message waiting) comes back with all of them.
#[test]
fn a_hundred_socket_pairs_come_back_with_their_messages() {
    let _w = watchdog::start();
    let work = scratch("manypairs");
    let images = work.join("images");
    let out = work.join("out");
    let script = work.join("many.py");
    std::fs::write(
        &script,
        "import socket, sys, time\n\
         pairs = [socket.socketpair() for _ in range(100)]\n\
         for i, (a, b) in enumerate(pairs): a.send(f'm{i}'.encode())\n\
         n = 0\n\
         while True:\n\
         \x20   n += 1\n\
         \x20   ok = all(b.recv(16, socket.MSG_PEEK) == f'm{i}'.encode() for i, (a, b) in enumerate(pairs))\n\
         \x20   with open(sys.argv[1], 'a') as f: f.write(f'tick={n} pairs={ok}\\n')\n\
         \x20   time.sleep(0.03)\n",
    )
    .unwrap();
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut py = Command::new(python);
    py.arg(&script).arg(&out);
    let child = start_command(py, false);
    wait_for(&out, |l| l.len() >= 2);
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("pairs=True")), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Descriptors in flight in a queued message (a pipe's read end, a file at
/// its offset, one end of a socket pair with bytes waiting in it) come back
/// in flight: the same pipe and offset when received, and the socket
/// still the pair of the end the program kept, its bytes there.
#[test]
fn descriptors_in_flight_come_back_in_flight() {
    // No GOFILE of that name appears: SIGUSR1 says when.
    checked_then_used_with("scm", &["/nonexistent/go", "sock"], "scm=ok");
}

/// Inotify watches come back with their numbers (one taken and dropped
/// before them too) and masks, reporting events on the same files.
#[test]
fn inotify_watches_come_back_with_their_numbers() {
    let _w = watchdog::start();
    let work = scratch("inotify");
    let images = work.join("images");
    let out = work.join("out");
    let watched = work.join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let child = start("inotify", &[out.as_os_str(), watched.as_os_str()]);
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("inotify=ok")), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("inotify=ok")), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A file unlinked while open (two descriptions of it) comes back with its
/// contents, offsets, mode and no link, under its old path; nothing is
/// left at that path. One whose path holds another file now (a rotated
/// log) comes back beside it, as the check says beforehand. One made with
/// `O_TMPFILE` (Python's `TemporaryFile`, glibc's `tmpfile`) comes back
/// the same way: one file behind its descriptions and mapping, and one
/// that can still be linked into its directory. An inotify watching the
/// directory of one sees nothing of its restore, one watching the file
/// itself sees its writes. A device node made and unlinked is still that
/// device, a symbolic link held by `O_PATH` still that link.
#[test]
fn an_unlinked_open_file_comes_back_unlinked_with_its_contents() {
    let _w = watchdog::start();
    let work = scratch("ghost");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("ghost", &[out.as_os_str(), work.as_os_str()]);
    wait_for(&out, |l| l.len() >= 2);
    let pid = child.id() as i32;
    dump_and_reap(&mut child, &images);
    // The rotated log's path holds the new log: `--check-only` says where
    // the old one will be made instead.
    let report = revenant::restore::preflight::check(&images, &Options::default());
    let log = work.join("app.log");
    let aside = work.join(".app.log.revenant-unlinked");
    let said = format!("{} was unlinked when dumped and something else is at that path now", log.display());
    assert!(report.notes.iter().any(|n| n.contains(&said) && n.contains(&*aside.to_string_lossy())), "{report:?}");
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 3));
    assert!(!work.join("scratch").exists() && !aside.exists());
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&work), ["app.log", "images", "out", "w"]);
    assert!(names(&work.join("w")).is_empty());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR1).unwrap();
    let after =
        wait_for(&out, |l| l.iter().any(|x| x.starts_with("link=")) && l.last().is_some_and(|x| tick(x) >= last + 5));
    stop(pid);
    assert!(after.lines().any(|l| l == "link=ok"), "{after}");
    let after: Vec<&str> = after.lines().filter(|l| l.starts_with("tick=") && tick(l) > last).collect();
    assert!(after.iter().all(|l| l.ends_with("ghost=ok")), "{after:?}");
    assert!(work.join("tmp-linked").exists());
    let _ = std::fs::remove_dir_all(&work);
}

/// A client outside the dumped tree: a request every 100 ms, each answer
/// checked byte for byte; any error, reset, short or wrong answer ends it
/// with that error.
struct TcpClient {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Result<u64, String>>,
}

impl TcpClient {
    fn start(to: std::net::SocketAddr) -> TcpClient {
        use std::io::{BufRead, Write};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, a) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let c = std::net::TcpStream::connect(to).map_err(|e| format!("connect: {e}"))?;
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let mut w = c;
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                w.write_all(format!("{i}\n").as_bytes()).map_err(|e| format!("request {i}: {e}"))?;
                let mut line = String::new();
                r.read_line(&mut line).map_err(|e| format!("answer {i}: {e}"))?;
                let want = format!("{} {}\n", i * 2, "x".repeat((i % 50) as usize));
                if line != want {
                    return Err(format!("answer {i}: {line:?}, not {want:?}"));
                }
                i += 1;
                a.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(i)
        });
        TcpClient { stop, answered, thread }
    }

    fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (at most a minute) until `n` requests are answered, or the
    /// client failed.
    fn wait(&self, n: u64) {
        for _ in 0..600 {
            if self.answered() >= n || self.thread.is_finished() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn finish(self) -> Result<u64, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// `tcpecho`'s ports, from its first line.
fn echo_ports(out: &Path) -> (u16, u16) {
    let text = wait_for(out, |l| !l.is_empty());
    let first = text.lines().next().unwrap();
    (num(first, "port4") as u16, num(first, "port6") as u16)
}

/// A TCP server dumped while a client outside the tree keeps its
/// connection busy (a request every 100 ms): without
/// `--tcp-established` the dump is refused naming the connection and the
/// server serves on; with it the connection stays locked while the
/// server is gone, the restore takes the very socket back from the
/// dump's keeper, and the client sees no error, reset, lost or
/// duplicated byte. The keeper is gone after.
#[test]
fn a_tcp_connection_with_a_client_outside_the_tree_carries_on() {
    let _w = watchdog::start();
    let work = scratch("tcpecho");
    let images = work.join("images");
    let out = work.join("out");
    let log = work.join("restore.log");
    let mut child = start("tcpecho", &[out.as_os_str()]);
    let pid = child.id() as i32;
    let (port4, _) = echo_ports(&out);
    let client = TcpClient::start(([127, 0, 0, 1], port4).into());
    client.wait(5);
    std::fs::create_dir_all(&images).unwrap();
    let err = dump(pid, &images, &DumpOptions { leave_running: true, ..Default::default() }).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains(&format!("127.0.0.1:{port4} -> 127.0.0.1:")) && err.contains("--tcp-established"), "{err}");
    let n = client.answered();
    client.wait(n + 3);
    assert!(client.answered() >= n + 3, "the server stopped serving after a refused dump");
    dump_and_reap_with(&mut child, &images, &DumpOptions { tcp_established: true, ..Default::default() });
    let shown = revenant_images::show(&images, false).unwrap();
    let conn = format!("INETSK TCP 127.0.0.1:{port4} -> 127.0.0.1:");
    assert!(shown.contains(&conn) && shown.contains(&format!("127.0.0.1:{port4} (LISTEN)")), "{shown}");
    // The client goes on asking while nothing serves it.
    std::thread::sleep(Duration::from_millis(500));
    let opts = revenant::restore::from_images::PlanOptions { tcp_established: true, ..Default::default() };
    let refused = run(&images, &Options { detach: true, ..Default::default() }).unwrap_err();
    assert!(format!("{refused:#}").contains("--tcp-established"), "{refused:#}");
    run(&images, &Options { detach: true, plan: opts, log_file: Some(log.clone()), ..Default::default() }).unwrap();
    let restored_log = std::fs::read_to_string(&log).unwrap();
    assert!(restored_log.contains("taken back from the dump's lock"), "{restored_log}");
    let n = client.answered();
    client.wait(n + 10);
    let done = client.finish();
    stop(pid);
    let answered = done.unwrap();
    assert!(answered >= n + 10, "{answered} answers");
    let name = revenant::files::tcp_keeper::name(&images).unwrap();
    assert!(!revenant::files::tcp_keeper::quit(&name).unwrap(), "the keeper still runs");
    let _ = std::fs::remove_dir_all(&work);
}

/// An IPv6 connection dumped with bytes in both of the server's queues
/// (the client's requests it has not read, a flood the client has not
/// taken), its keeper then gone: the restore builds the connection again
/// in repair mode from its image, and the client reads every byte of the
/// flood and every answer, in order.
#[test]
fn a_tcp_connection_with_full_queues_is_built_again_from_its_image() {
    use std::io::{BufRead, Read, Write};
    let _w = watchdog::start();
    let work = scratch("tcpfull");
    let images = work.join("images");
    let out = work.join("out");
    let log = work.join("restore.log");
    let mut child = start("tcpecho", &[out.as_os_str()]);
    let (_, port6) = echo_ports(&out);
    let c = std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port6)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // More than both ends' buffers hold: the server stalls writing it,
    // and the requests that follow stay unread.
    const FLOOD: usize = 16_000_000;
    const REQUESTS: u64 = 2000;
    let mut w = c.try_clone().unwrap();
    w.write_all(format!("flood {FLOOD}\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..REQUESTS {
        w.write_all(format!("{i}\n").as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    std::fs::create_dir_all(&images).unwrap();
    let pid = child.id() as i32;
    dump_and_reap_with(&mut child, &images, &DumpOptions { tcp_established: true, ..Default::default() });
    let set = revenant_images::ImageSet::load(&images).unwrap();
    let (st, _, _) = set.tcp_streams.values().find(|(e, _, _)| e.inq_len > 0).expect("a connection with bytes unread");
    assert!(st.outq_len > 0, "nothing in the server's send queue: {st:?}");
    let name = revenant::files::tcp_keeper::name(&images).unwrap();
    assert!(revenant::files::tcp_keeper::quit(&name).unwrap(), "no keeper held the connection");
    let opts = revenant::restore::from_images::PlanOptions { tcp_established: true, ..Default::default() };
    run(&images, &Options { detach: true, plan: opts, log_file: Some(log.clone()), ..Default::default() }).unwrap();
    let restored_log = std::fs::read_to_string(&log).unwrap();
    assert!(restored_log.contains("built again from tcp-stream-"), "{restored_log}");
    let mut r = std::io::BufReader::new(c);
    let mut flood = vec![0u8; FLOOD];
    let got = r.read_exact(&mut flood).map_err(|e| format!("reading the flood: {e}"));
    let answers: Result<Vec<String>, String> = (0..REQUESTS)
        .map(|i| {
            let mut line = String::new();
            r.read_line(&mut line).map(|_| line).map_err(|e| format!("answer {i}: {e}"))
        })
        .collect();
    stop(pid);
    got.unwrap();
    let bad = flood.iter().enumerate().position(|(i, &b)| b != ((i * 7 + 3) & 255) as u8);
    assert_eq!(bad, None, "the flood differs at byte {bad:?}");
    for (i, line) in answers.unwrap().iter().enumerate() {
        assert_eq!(*line, format!("{} {}\n", i * 2, "x".repeat(i % 50)), "answer {i}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Both ends of three TCP connections in the tree (IPv4, IPv6, and one
/// whose client has shut down its side), bytes in flight both ways: taken
/// back from the dump's keeper, every stream carries on byte for byte.
/// Dumped again and its keeper gone, the half-closed pair cannot be built
/// from its image (a segment of the peer's would have to come again): the
/// restore refuses it, naming the state, before any process exists.
#[test]
fn tcp_connections_within_the_tree_carry_on_half_closed_too() {
    let _w = watchdog::start();
    let work = scratch("tcpconn");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("tcpconn", &[out.as_os_str(), "half".as_ref()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 5);
    let keep = DumpOptions { tcp_established: true, ..Default::default() };
    dump_and_reap_with(&mut child, &images, &keep);
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    let plan = revenant::restore::from_images::PlanOptions { tcp_established: true, ..Default::default() };
    let opts = Options { detach: true, plan, ..Default::default() };
    run(&images, &opts).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 10));
    let after: Vec<&str> = after.lines().filter(|l| tick(l) > last).collect();
    assert!(after.len() >= 10 && after.iter().all(|l| l.ends_with("tcp=ok")), "{after:?}");

    let again = work.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let dumped = dump(pid, &again, &keep);
    if dumped.is_err() {
        stop(pid);
    }
    dumped.unwrap();
    let _ = waitpid(Pid::from_raw(pid), None);
    let name = revenant::files::tcp_keeper::name(&again).unwrap();
    assert!(revenant::files::tcp_keeper::quit(&name).unwrap(), "no keeper held the connections");
    let err = format!("{:#}", run(&again, &opts).unwrap_err());
    assert!(
        err.contains("cannot be built again") && (err.contains("CLOSE_WAIT") || err.contains("FIN_WAIT2")),
        "{err}"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a process exists after the refusal");
    let _ = std::fs::remove_dir_all(&work);
}

/// One HTTP/1.1 exchange on `c`: GET `path`, the whole answer back (its
/// status line, and its body by Content-Length).
fn http_get(c: &mut std::net::TcpStream, path: &str) -> (String, Vec<u8>) {
    use std::io::{BufRead, Read, Write};
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, body)
}

/// Python's `http.server` (threaded, HTTP/1.1 keep-alive): a client
/// outside the tree asks for a file, the server is dumped with the
/// connection open and restored, and the same request on the same
/// connection gets the same answer; a new connection is served too.
#[test]
fn python_http_server_answers_the_same_request_after_the_restore() {
    let _w = watchdog::start();
    let work = scratch("httpserver");
    let images = work.join("images");
    let out = work.join("out");
    let site = work.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let page: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(site.join("page.bin"), &page).unwrap();
    let script = work.join("serve.py");
    std::fs::write(
        &script,
        "import http.server, functools, sys\n\
         class H(http.server.SimpleHTTPRequestHandler):\n\
         \x20   protocol_version = 'HTTP/1.1'\n\
         \x20   def log_message(self, *a): pass\n\
         h = functools.partial(H, directory=sys.argv[2])\n\
         s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n\
         open(sys.argv[1], 'w').write(f'port={s.server_address[1]}\\n')\n\
         s.serve_forever()\n",
    )
    .unwrap();
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut py = Command::new(python);
    py.arg(&script).arg(&out).arg(&site);
    let mut child = start_command(py, false);
    let pid = child.id() as i32;
    let port = num(wait_for(&out, |l| !l.is_empty()).lines().next().unwrap(), "port") as u16;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let before = http_get(&mut c, "/page.bin");
    assert!(before.0.starts_with("HTTP/1.1 200") && before.1 == page, "{}", before.0);
    std::fs::create_dir_all(&images).unwrap();
    dump_and_reap_with(&mut child, &images, &DumpOptions { tcp_established: true, ..Default::default() });
    let plan = revenant::restore::from_images::PlanOptions { tcp_established: true, ..Default::default() };
    run(&images, &Options { detach: true, plan, ..Default::default() }).unwrap();
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| http_get(&mut c, "/page.bin")));
    let fresh = std::panic::catch_unwind(|| {
        let mut n = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        n.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        http_get(&mut n, "/page.bin")
    });
    stop(pid);
    assert_eq!(again.unwrap(), before, "the same connection");
    assert_eq!(fresh.unwrap(), before, "a new connection");
    let _ = std::fs::remove_dir_all(&work);
}

/// A Python program holding an unlinked 2 MiB file and a TCP listener it
/// never accepts from, with one client's connection waiting: refused by
/// default, naming the options that change it; with `--ghost-limit 4M`
/// and `--skip-in-flight` dumped and restored, the file's every byte back
/// and the listener taking new connections (the waiting one is reset).
#[test]
fn ghost_limit_and_skip_in_flight_carry_what_they_say() {
    let _w = watchdog::start();
    let work = scratch("limits");
    let images = work.join("images");
    let out = work.join("out");
    let script = work.join("hold.py");
    std::fs::write(
        &script,
        "import os, socket, sys, time\n\
         data = bytes((i * 7) % 251 for i in range(2 << 20))\n\
         f = open(os.path.join(sys.argv[2], 'big'), 'w+b'); f.write(data); f.flush()\n\
         os.unlink(f.name)\n\
         l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(4)\n\
         open(sys.argv[1], 'a').write(f'port={l.getsockname()[1]}\\n')\n\
         n = 0\n\
         while True:\n\
         \x20   n += 1; f.seek(0); ok = f.read() == data\n\
         \x20   open(sys.argv[1], 'a').write(f'tick={n} ghost={\"ok\" if ok else \"BAD\"}\\n')\n\
         \x20   time.sleep(0.05)\n",
    )
    .unwrap();
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut py = Command::new(python);
    py.arg(&script).arg(&out).arg(&work);
    let mut child = start_command(py, false);
    let text = wait_for(&out, |l| l.len() >= 3);
    let port = num(text.lines().next().unwrap(), "port") as u16;
    let waiting = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    std::fs::create_dir_all(&images).unwrap();
    let pid = child.id() as i32;
    let err =
        format!("{:#}", dump(pid, &images, &DumpOptions { leave_running: true, ..Default::default() }).unwrap_err());
    assert!(err.contains("--ghost-limit"), "{err}");
    let opts = DumpOptions { leave_running: true, ghost_limit: Some(4 << 20), ..Default::default() };
    let err = format!("{:#}", dump(pid, &images, &opts).unwrap_err());
    assert!(err.contains(&format!("listening on 127.0.0.1:{port}")) && err.contains("--skip-in-flight"), "{err}");
    let opts = DumpOptions { ghost_limit: Some(4 << 20), skip_in_flight: true, ..Default::default() };
    dump_and_reap_with(&mut child, &images, &opts);
    let last = tick(std::fs::read_to_string(&out).unwrap().lines().last().unwrap());
    run(&images, &Options { detach: true, ..Default::default() }).unwrap();
    let after = wait_for(&out, |l| l.last().is_some_and(|x| tick(x) >= last + 3));
    let fresh = std::net::TcpStream::connect(("127.0.0.1", port));
    stop(pid);
    let after: Vec<&str> = after.lines().filter(|l| tick(l) > last).collect();
    assert!(after.len() >= 3 && after.iter().all(|l| l.ends_with("ghost=ok")), "{after:?}");
    assert!(fresh.is_ok(), "the restored listener refused a new connection: {fresh:?}");
    drop(waiting);
    let _ = std::fs::remove_dir_all(&work);
}

/// pidfds on the process itself, its child and its grandchild (made by
/// the restore after the process opens its files) name the same
/// processes after the restore, with their flags.
#[test]
fn pidfds_on_processes_of_the_tree_come_back() {
    let _w = watchdog::start();
    let work = scratch("pidfds");
    let images = work.join("images");
    let out = work.join("out");
    let child = start("pidfds", &[out.as_os_str()]);
    let before = wait_for(&out, |l| l.len() >= 2);
    assert!(before.lines().all(|l| l.ends_with("pidfd=ok")), "{before}");
    let (pid, _, after) = ticks_on(child, &out, &images, 3);
    // The whole group: the child and grandchild too.
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    stop(pid);
    assert!(after.iter().all(|l| l.ends_with("pidfd=ok")), "{after:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Starts the `guards` dumpee and waits for its first line; None where
/// this kernel has no guard regions (it exits 3 before writing).
fn start_guards(out: &Path) -> Option<std::process::Child> {
    let mut child = start("guards", &[out.as_os_str()]);
    for _ in 0..600 {
        if std::fs::read_to_string(out).unwrap_or_default().lines().count() >= 2 {
            return Some(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert_eq!(status.code(), Some(3), "guards failed to start: {status:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("guards does not tick");
}

/// Guard regions (MADV_GUARD_INSTALL) come back: written as CRIU writes
/// them (entries of status AREA_GUARD alone after the areas), installed
/// again, faulting, the pages around them intact.
#[test]
fn guard_regions_come_back_where_they_were() {
    let _w = watchdog::start();
    let work = scratch("guards");
    let images = work.join("images");
    let out = work.join("out");
    let Some(mut child) = start_guards(&out) else {
        eprintln!("skipped: this kernel has no guard regions (Linux 6.13+)");
        return;
    };
    let pid = child.id() as i32;
    dump_and_reap(&mut child, &images);
    let set = revenant_images::ImageSet::load(&images).unwrap();
    let vs = revenant_images::messages::vma_status::AREA_GUARD;
    let guards: Vec<(u64, u64)> =
        set.processes[0].mm.vmas.iter().filter(|v| v.status == vs).map(|v| (v.end - v.start, v.start)).collect();
    assert_eq!(guards.iter().map(|g| g.0).collect::<Vec<_>>(), [2 * 4096, 4096], "{guards:x?}");
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    stop(pid);
    let new: Vec<&str> = after.lines().skip(n).collect();
    assert!(new.len() >= 4 && new.iter().all(|l| l.ends_with("guards=ok")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// The same through CRIU 4.2 both ways: CRIU restores our guard regions,
/// and we restore CRIU's.
#[test]
#[ignore = "needs CRIU: CRIU=/path/to/criu cargo test -p revenant-e2e --test roundtrip -- --ignored criu_"]
fn criu_and_revenant_restore_each_others_guard_regions() {
    let _w = watchdog::start();
    let criu = std::env::var_os("CRIU").expect("CRIU names a criu binary");
    let work = scratch("guards-criu");
    let out = work.join("out");
    let Some(mut child) = start_guards(&out) else {
        eprintln!("skipped: this kernel has no guard regions (Linux 6.13+)");
        return;
    };
    let pid = child.id() as i32;
    let ours = work.join("ours");
    dump_and_reap(&mut child, &ours);
    let criu_run = |args: &[&str], dir: &Path| {
        let st = Command::new(&criu).args(args).arg("-D").arg(dir).args(["-o", "criu.log", "-v4"]).status().unwrap();
        assert!(st.success(), "criu {args:?}: see {}", dir.join("criu.log").display());
    };
    criu_run(&["restore", "-d"], &ours);
    let n = std::fs::read_to_string(&out).unwrap().lines().count();
    let text = wait_for(&out, |l| l.len() >= n + 4);
    assert!(text.lines().skip(n).all(|l| l.ends_with("guards=ok")), "restored by CRIU:\n{text}");
    let theirs = work.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    criu_run(&["dump", "-t", &pid.to_string()], &theirs);
    // CRIU's restored child went to init, which reaps it in its own time.
    let t0 = std::time::Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "PID {pid} is still taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (n, after) = restore_and_watch(&theirs, &Options { detach: true, ..Default::default() }, &out);
    stop(pid);
    assert!(after.lines().skip(n).all(|l| l.ends_with("guards=ok")), "CRIU's images restored:\n{after}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A child in strict seccomp comes back in it, answering through its
/// pipes, its rdtsc still faulting (strict mode makes it so by itself).
#[test]
fn a_child_in_strict_seccomp_comes_back_in_it() {
    let _w = watchdog::start();
    let work = scratch("strict");
    let images = work.join("images");
    let (out, go) = (work.join("out"), work.join("go"));
    let mut child = start("strict", &[out.as_os_str(), go.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    let (_, _) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    std::fs::write(&go, b"").unwrap();
    let done = wait_for(&out, |l| l.iter().any(|x| x.starts_with("strict=")));
    let status = waitpid(Pid::from_raw(pid), None);
    assert!(done.lines().any(|l| l == "strict=ok"), "{done}");
    assert!(matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))), "{status:?}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A process group whose leader is gone (a pipeline's first command that
/// exited), with a sleeping member and a zombie in it: a helper with the
/// leader's id makes the group for them and is reaped before the program
/// runs, which finds both in the group, the zombie's status kept and the
/// leader's id free.
#[test]
fn a_group_whose_leader_is_gone_comes_back_with_its_members() {
    let _w = watchdog::start();
    let work = scratch("lonegroup");
    let images = work.join("images");
    let out = work.join("out");
    let mut child = start("lonegroup", &[out.as_os_str()]);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    dump_and_reap(&mut child, &images);
    // The check finds the group's id free (the helper will take it).
    let text = revenant::restore::preflight::check(&images, &Options::default()).text(&images);
    assert!(text.contains("ok       process group ids free") && !text.contains("PROBLEM"), "{text}");
    let (n, after) = restore_and_watch(&images, &Options { detach: true, ..Default::default() }, &out);
    stop(pid);
    let new: Vec<&str> = after.lines().skip(n).collect();
    assert!(new.len() >= 4 && new.iter().all(|l| l.ends_with("group=ok")), "{after}");
    let _ = std::fs::remove_dir_all(&work);
}
