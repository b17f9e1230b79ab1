//! `restore --check-only` and `restore --dry-run` on real dumps: a damaged
//! set has every one of its problems listed in one run, and nothing is
//! created; an intact one passes (and then restores), and its plan names
//! the blob's place and every area of `mm-PID.img`, in text and JSON.

#![cfg(target_arch = "x86_64")]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use revenant_images::ImageSet;
use revenant_images::messages::vma_status as vs;
use revenant_test_watchdog as watchdog;

#[allow(dead_code)]
mod support;
use support::{REVENANT, ok, start_grandchild, wait_until as wait_for};

fn compile(name: &str, to: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/dumpees/{name}.c"));
    let st = Command::new("cc").args(["-O1", "-pthread", "-o"]).arg(to).arg(&src).status().expect("running cc");
    assert!(st.success(), "compiling {}", src.display());
}

fn scratch(name: &str) -> PathBuf {
    support::scratch("preflight", name)
}

fn revenant(args: &[&str], dir: &Path) -> Output {
    Command::new(REVENANT).args(args).arg("-D").arg(dir).output().expect("running revenant")
}

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push((e.path(), m.len()));
        }
    }
    out.sort();
    out
}

/// SysV segment ids in our namespace.
fn segments() -> Vec<i32> {
    let t = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    let mut ids: Vec<i32> = t.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect();
    ids.sort();
    ids
}

/// When task `pid` started (field 22 of its stat), to tell it from
/// another with its PID.
fn start_time(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(19).map(str::to_string)
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).unwrap_or("")
}

/// A program with two SysV segments, dumped with --leave-running (so its
/// PID and segment ids stay taken), then damaged three more ways: its
/// executable moved away, the file it writes grown since, a hard limit
/// raised above ours in the images. One run lists all of it, fails, and
/// leaves no segment, file or process behind.
#[test]
fn a_damaged_set_has_every_problem_listed_at_once_and_nothing_made() {
    let _w = watchdog::start();
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let work = scratch("damaged");
    let images = work.join("images");
    let prog = work.join("sysvshm");
    compile("sysvshm", &prog);
    let out = work.join("out");
    start_grandchild(&prog, &[out.as_os_str(), "keep".as_ref()]);
    let mut first = String::new();
    wait_for("the program's first line", || {
        first = std::fs::read_to_string(&out).unwrap_or_default().lines().next().unwrap_or("").to_string();
        first.ends_with("check=ok")
    });
    let pid: i32 = field(&first, "pid").parse().unwrap();
    let (a, b): (i32, i32) = (field(&first, "a").parse().unwrap(), field(&first, "b").parse().unwrap());
    let cleanup = || {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        for id in [a, b] {
            // SAFETY: removes a segment by id; no buffer.
            unsafe { nix::libc::shmctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()) };
        }
    };

    let o = revenant(&["dump", "-t", &pid.to_string(), "--leave-running"], &images);
    if !o.status.success() {
        cleanup();
        panic!("dump failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let dumped_size = ImageSet::load(&images)
        .unwrap()
        .files
        .iter()
        .filter_map(|f| f.reg.as_ref())
        .find(|r| Path::new(&r.name) == out)
        .and_then(|r| r.size)
        .expect("the output file's size in files.img");
    wait_for("the program to write on", || std::fs::metadata(&out).unwrap().len() > dumped_size);
    std::fs::rename(&prog, work.join("sysvshm.moved")).unwrap();
    let mut set = ImageSet::load(&images).unwrap();
    let ours = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap().1;
    let tc = set.processes[0].threads[0].core.tc.as_mut().unwrap();
    tc.rlimits.as_mut().unwrap().rlimits[nix::libc::RLIMIT_NOFILE as usize].max = ours + 1;
    let bad = work.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    set.write(&bad).unwrap();

    // The program writes on to `out` meanwhile; nothing else may change.
    let kept = || files(&work).into_iter().filter(|(p, _)| *p != out).collect::<Vec<_>>();
    let (segs, before, started) = (segments(), kept(), start_time(pid));
    let o = revenant(&["restore", "--check-only"], &bad);
    let (text, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let after = (segments(), kept(), start_time(pid));
    cleanup();
    eprintln!("{text}{err}");
    assert_eq!(o.status.code(), Some(1), "{text}{err}");
    for want in [
        format!("PROBLEM  PIDs and TIDs free: pstree.img: PID {pid} is in use (by sysvshm)"),
        format!("{} is missing", prog.display()),
        format!("{} has ", out.display()),
        format!("bytes, but {dumped_size} when dumped"),
        format!("SysV segment {a} (key 0x{:x}) cannot get its id back", 0x7e00_0000 | pid),
        format!("SysV segment {b} (key 0x0) cannot get its id back"),
        format!(
            "rlimit {} of PID {pid}: its hard limit {} is above this process's {ours}",
            nix::libc::RLIMIT_NOFILE,
            ours + 1
        ),
        "problem(s): a restore would fail".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} missing from:\n{text}");
    }
    assert_eq!(after.0, segs, "SysV segments changed");
    assert_eq!(after.1, before, "files under the work directory changed");
    assert_eq!(after.2, started, "PID {pid} is no longer the program that had it");
    std::fs::remove_dir_all(&work).unwrap();
}

/// Dumps a fresh `single` (killed by the dump) and waits until its PID is
/// free; returns the PID.
fn dumped_single(work: &Path) -> i32 {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let prog = work.join("single");
    compile("single", &prog);
    let out = work.join("out");
    let mut cmd = Command::new(&prog);
    cmd.arg("64").stdin(Stdio::piped()).stdout(std::fs::File::create(&out).unwrap()).stderr(Stdio::null());
    // fd 251 is the one the RLIMIT_NOFILE check below must notice.
    // SAFETY: setsid and dup2 are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if nix::libc::dup2(2, 251) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    wait_for("single to be ready", || std::fs::read_to_string(&out).unwrap_or_default().starts_with("ready"));
    let pid = child.id() as i32;
    ok(&revenant(&["dump", "-t", &pid.to_string()], &work.join("images")), "dump");
    let _ = child.wait();
    wait_for("the PID to be free", || !Path::new(&format!("/proc/{pid}")).exists());
    pid
}

fn addr(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// An intact dump with its PID free passes the check (and restores); its
/// plan puts the blob where no dumped area is, and names every area of
/// mm-PID.img, in both forms, creating nothing.
#[test]
fn an_intact_set_passes_and_its_plan_names_the_blob_and_every_area() {
    let _w = watchdog::start();
    let work = scratch("intact");
    let images = work.join("images");
    let pid = dumped_single(&work);
    let before = files(&work);

    let o = revenant(&["restore", "--check-only"], &images);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("no problems: a restore would get past its checks"), "{text}");
    assert!(!text.contains("PROBLEM"), "{text}");

    // single holds fd 251: with fewer fds allowed, the check says so.
    let mut low = Command::new(REVENANT);
    low.args(["restore", "--check-only", "-D"]).arg(&images);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        low.pre_exec(|| {
            // The soft limit is the one a restore's fds meet; the hard
            // one stays, or the hard limit check would speak too.
            let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 200, hard)?;
            Ok(())
        });
    }
    let o = low.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let want = format!("PROBLEM  fd numbers within RLIMIT_NOFILE: PID {pid}: the images need fd numbers up to");
    assert!(text.contains(&want) && text.contains("above RLIMIT_NOFILE (200)"), "{want:?} missing from:\n{text}");
    assert!(text.contains("1 problem(s)"), "{text}");

    let o = revenant(&["restore", "--dry-run", "--json"], &images);
    ok(&o, "dry run (JSON)");
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the dry run's JSON");
    let o = revenant(&["restore", "--dry-run"], &images);
    ok(&o, "dry run");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    eprintln!("{text}");
    assert_eq!(files(&work), before, "a check or a dry run wrote something");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a check or a dry run made PID {pid}");

    let set = ImageSet::load(&images).unwrap();
    let mm = &set.processes[0].mm;
    let p = &plan["processes"][0];
    assert_eq!(p["pid"], pid);
    let dumped: Vec<(u64, u64)> = mm
        .vmas
        .iter()
        .filter(|v| v.status & (vs::AREA_REGULAR | vs::AREA_VSYSCALL) != 0)
        .map(|v| (v.start, v.end))
        .collect();
    let planned: Vec<(u64, u64)> =
        p["after"].as_array().unwrap().iter().map(|v| (addr(&v["start"]), addr(&v["end"]))).collect();
    assert_eq!(planned, dumped, "the plan's areas are not mm-{pid}.img's");
    for (s, e) in &dumped {
        assert!(text.contains(&format!("{s:#x}-{e:#x} ")), "area {s:#x}-{e:#x} missing from:\n{text}");
    }
    let pieces = p["bootstrap"]["pieces"].as_array().unwrap();
    let blob = pieces.iter().find(|x| x["what"] == "blob code").expect("the blob's place");
    let (bs, be) = (addr(&blob["start"]), addr(&blob["end"]));
    assert_eq!(bs, addr(&p["bootstrap"]["start"]));
    assert!(be > bs);
    assert!(dumped.iter().all(|&(s, e)| e <= bs || s >= be), "the blob at {bs:#x} overlaps a dumped area");
    assert!(text.contains(&format!("{bs:#x}-{be:#x}  blob code")), "{text}");
    let ip = set.processes[0].threads[0].core.thread_info.as_ref().unwrap().gpregs.ip;
    assert_eq!(addr(&p["threads"][0]["ip"]), ip);
    assert!(text.contains(&format!("TID {pid}: ip {ip:#x}")), "{text}");
    assert!(p["after"].as_array().unwrap().iter().any(|v| v["how"] == "mapped and filled"), "{p}");

    // The check said a restore would get through: it does.
    ok(&revenant(&["restore", "-d"], &images), "restore after the check");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);
    wait_for("the PID to be free again", || !Path::new(&format!("/proc/{pid}")).exists());

    // A planning that fails as a whole is one problem; the checks that
    // need no plan still run, the others say why they did not.
    let mut set = set;
    let heap = set.processes[0].mm.vmas.iter_mut().find(|v| v.status & vs::AREA_HEAP != 0).expect("a heap");
    heap.status |= vs::AREA_AIORING;
    let bad = work.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    set.write(&bad).unwrap();
    std::fs::rename(work.join("out"), work.join("out.moved")).unwrap();
    let o = revenant(&["restore", "--check-only"], &bad);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    for want in [
        "PROBLEM  planning: ".to_string(),
        "this kind of mapping is not restored yet".to_string(),
        "PROBLEM  files present with their dumped size: files.img: entry id".to_string(),
        format!("{} is missing", work.join("out").display()),
        "ok       PIDs and TIDs free".to_string(),
        "skipped  SysV ids: needs the plan".to_string(),
        "2 problem(s)".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} missing from:\n{text}");
    }
    std::fs::remove_dir_all(&work).unwrap();
}

/// Starts `prog` with `args` as a grandchild in its own session; returns
/// once its OUTFILE (`out`) has a line with `ready`.
fn start_server(prog: &Path, args: &[&std::ffi::OsStr], out: &Path, ready: &str) {
    start_grandchild(prog, args);
    wait_for(ready, || std::fs::read_to_string(out).unwrap_or_default().contains(ready));
}

/// Servers dumped with --leave-running still hold their addresses: the
/// check tries each (TCP and UDP on a throwaway socket, an abstract unix
/// name likewise, a unix path as the restore would find it) and names
/// every one in use, without taking any.
#[test]
fn addresses_in_use_are_named_each() {
    let _w = watchdog::start();
    let work = scratch("sockets");
    let (inet, unix) = (work.join("inetsrv"), work.join("unixsrv"));
    compile("inetsrv", &inet);
    compile("unixsrv", &unix);
    let (inet_out, unix_out, sock_dir) = (work.join("inet.out"), work.join("unix.out"), work.join("socks"));
    std::fs::create_dir_all(&sock_dir).unwrap();
    start_server(&inet, &[inet_out.as_os_str()], &inet_out, "inet=ok");
    start_server(&unix, &[unix_out.as_os_str(), sock_dir.as_os_str()], &unix_out, "named=ok");
    let pid_of = |out: &Path| -> i32 {
        // The servers' first line names no PID: find the task writing it.
        let want = std::fs::canonicalize(out).unwrap();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let fd = std::fs::read_dir(format!("/proc/{pid}/fd"));
                fd.into_iter().flatten().flatten().any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l == want))
            })
            .min()
            .expect("the server's PID")
    };
    let pids = [pid_of(&inet_out), pid_of(&unix_out)];
    // Stopped, they hold their addresses but no longer tick into their
    // OUTFILEs: a tick between the dump and the check would change a
    // file's size and fail the planning before the address checks run.
    for &pid in &pids {
        kill(Pid::from_raw(-pid), Signal::SIGSTOP).unwrap();
    }
    for &pid in &pids {
        let tids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for t in tids.split_whitespace().chain([pid.to_string().as_str()]) {
            wait_for("the server to stop", || {
                let stat = std::fs::read_to_string(format!("/proc/{t}/stat")).unwrap_or_default();
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            });
        }
    }
    // The servers and what they forked (unixsrv has a child).
    let stop = || {
        let mut all = pids.to_vec();
        let mut i = 0;
        while i < all.len() {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", all[i])).unwrap_or_default();
            all.extend(children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            i += 1;
        }
        for &pid in &all {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for &pid in &all {
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        all
    };
    let mut reports = vec![];
    for (pid, name) in pids.iter().zip(["inet", "unix"]) {
        let images = work.join(format!("images-{name}"));
        std::fs::create_dir_all(&images).unwrap();
        let o = revenant(&["dump", "-t", &pid.to_string(), "--leave-running"], &images);
        if !o.status.success() {
            stop();
            panic!("dumping {name}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let o = revenant(&["restore", "--check-only"], &images);
        reports.push((o.status.code(), String::from_utf8_lossy(&o.stdout).to_string(), images));
    }
    let all = stop();
    let set = ImageSet::load(&reports[0].2).unwrap();
    let ports: Vec<String> = set
        .files
        .iter()
        .filter_map(|f| f.isk.as_ref())
        .filter(|s| s.src_port != 0)
        .map(|s| format!(":{} is in use on this machine", s.src_port))
        .collect();
    assert!(ports.len() >= 3, "{ports:?}");
    let (code, text, _) = &reports[0];
    eprintln!("{text}");
    assert_eq!(*code, Some(1), "{text}");
    for want in ports {
        assert!(text.contains(&want), "{want:?} missing from:\n{text}");
    }
    assert!(text.contains("PROBLEM  TCP/UDP addresses: TCP socket (files.img id"), "{text}");
    assert!(text.contains("PROBLEM  TCP/UDP addresses: UDP socket (files.img id"), "{text}");
    let (code, text, _) = &reports[1];
    eprintln!("{text}");
    assert_eq!(*code, Some(1), "{text}");
    assert!(text.contains(&format!("the address {} is in use", sock_dir.join("srv.sock").display())), "{text}");
    assert!(text.contains("PROBLEM  unix socket addresses: unix socket (files.img id"), "{text}");
    assert!(text.contains("the address @"), "the abstract name is missing from:\n{text}");

    // Once the servers are gone their addresses pass (the socket files
    // they left are stale: nobody accepts on them).
    for pid in all {
        wait_for("the PID to be free", || !Path::new(&format!("/proc/{pid}")).exists());
    }
    for ((_, _, images), line) in reports.iter().zip(["ok       TCP/UDP addresses", "ok       unix socket addresses"]) {
        let text = String::from_utf8_lossy(&revenant(&["restore", "--check-only"], images).stdout).to_string();
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
        assert!(text.contains("ok       PIDs and TIDs free"), "{text}");
    }
    assert!(sock_dir.join("srv.sock").exists(), "the check removed a stale socket file");
    std::fs::remove_dir_all(&work).unwrap();
}

/// A parent and child sharing private memory copy-on-write: the plan
/// reserves the premap region, moves the shared areas from it, and puts
/// each process's bootstrap area apart from the region, from the other's
/// and from every area of its own. The tree keeps running (its PIDs need
/// not be free for a plan).
#[test]
fn a_tree_sharing_memory_is_planned_through_the_premap_region() {
    let _w = watchdog::start();
    let work = scratch("cow");
    let (prog, out) = (work.join("cow"), work.join("out"));
    compile("cow", &prog);
    start_server(&prog, &[out.as_os_str()], &out, "shared=ok");
    let text = std::fs::read_to_string(&out).unwrap();
    let pid: i32 = field(text.lines().next().unwrap(), "pid").parse().unwrap();
    let images = work.join("images");
    let dumped = revenant(&["dump", "-t", &pid.to_string(), "--leave-running"], &images);
    let set = ImageSet::load(&images);
    let tree: Vec<i32> = set.iter().flat_map(|s| s.processes.iter().map(|p| p.pstree.pid as i32)).collect();
    // All killed before any is waited for: the child, orphaned, comes to
    // us (a subreaper) to be collected.
    let all: Vec<i32> = std::iter::once(pid).chain(tree.into_iter().filter(|&p| p != pid)).collect();
    for &p in &all {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    for &p in &all {
        let _ = waitpid(Pid::from_raw(p), None);
    }
    ok(&dumped, "dump");
    // It wrote on after the dump; the plan wants the file as dumped.
    let set = set.unwrap();
    let size = set.files.iter().filter_map(|f| f.reg.as_ref()).find(|r| Path::new(&r.name) == out).unwrap().size;
    std::fs::OpenOptions::new().write(true).open(&out).unwrap().set_len(size.unwrap()).unwrap();
    let planned = revenant(&["restore", "--dry-run", "--json"], &images);
    ok(&planned, "dry run");
    let plan: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    let procs = plan["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "{plan}");
    let region = &procs[0]["premap"];
    let (rs, re) = (addr(&region["start"]), addr(&region["end"]));
    assert!(re > rs, "no premap region: {plan}");
    let mut areas = vec![];
    for p in procs {
        assert_eq!(p["premap"], *region, "the processes' premap regions differ");
        let moved: Vec<u64> = p["after"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["how"].as_str()?.strip_prefix("moved from the premap region at 0x"))
            .map(|a| u64::from_str_radix(a, 16).unwrap())
            .collect();
        assert!(!moved.is_empty(), "no area moved from the premap region: {p}");
        assert!(moved.iter().all(|&a| a >= rs && a < re), "{moved:x?} outside {rs:#x}-{re:#x}");
        let (bs, be) = (addr(&p["bootstrap"]["start"]), addr(&p["bootstrap"]["end"]));
        let own: Vec<(u64, u64)> =
            p["after"].as_array().unwrap().iter().map(|v| (addr(&v["start"]), addr(&v["end"]))).collect();
        assert!(own.iter().chain([&(rs, re)]).all(|&(s, e)| e <= bs || s >= be), "bootstrap area {bs:#x} overlaps");
        areas.push((bs, be));
    }
    assert!(areas[0].1 <= areas[1].0 || areas[1].1 <= areas[0].0, "the bootstrap areas overlap: {areas:x?}");
    std::fs::remove_dir_all(&work).unwrap();
}
