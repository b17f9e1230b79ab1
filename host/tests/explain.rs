//! Failures explained, as someone debugging a restore meets them: a
//! program whose registers are wrong (here, an instruction pointer of 0)
//! is not a silent success under `--watch`, and a fault inside the blob
//! is reported with the blob's function and offset, the restore's step and
//! the blob's last log line.

#![cfg(target_arch = "x86_64")]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use revenant_images::ImageSet;
use revenant_test_watchdog as watchdog;

const REVENANT: &str = env!("CARGO_BIN_EXE_revenant");

/// Dumps a fresh `single` (a one-thread program blocked in `read()`) into
/// `work/images`, which kills it, and waits until its PID is free; returns
/// the PID.
fn dumped(work: &Path) -> i32 {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let prog = work.join("single");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dumpees/single.c");
    assert!(Command::new("cc").arg("-O1").arg("-o").arg(&prog).arg(&src).status().unwrap().success());
    let out = work.join("out");
    let mut cmd = Command::new(&prog);
    cmd.arg("64").stdin(Stdio::piped()).stdout(std::fs::File::create(&out).unwrap()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().starts_with("ready") {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id() as i32;
    std::fs::create_dir_all(work.join("images")).unwrap();
    ok(&revenant(&["dump", "-t", &pid.to_string()], &work.join("images"), &[]), "dump");
    let mut child = child;
    let _ = child.wait();
    pid
}

fn revenant(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(REVENANT).args(args).arg("-D").arg(dir).envs(env.iter().copied()).output().unwrap()
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("revenant-explain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_program_that_dies_at_once_is_reported_under_watch() {
    let _w = watchdog::start();
    let work = scratch("rip");
    let pid = dumped(&work);
    let mut set = ImageSet::load(&work.join("images")).unwrap();
    let t = &mut set.processes[0].threads[0];
    t.core.thread_info.as_mut().unwrap().gpregs.ip = 0;
    let bad = work.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    set.write(&bad).unwrap();
    let o = revenant(&["restore", "-d", "--watch", "2000"], &bad, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a program that died at once was restored silently");
    for want in [
        format!("PID {pid} was killed by SIGSEGV"),
        "SEGV_MAPERR".to_string(),
        "instruction pointer 0x0 is in no area the restored process has".to_string(),
        format!("core-{pid}.img"),
    ] {
        assert!(err.contains(&want), "{want:?} missing from:\n{err}");
    }
    eprintln!("{err}");
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn a_fault_inside_the_blob_names_its_function_step_and_last_log_line() {
    let _w = watchdog::start();
    let work = scratch("blob");
    let pid = dumped(&work);
    let o = revenant(&["restore", "-d"], &work.join("images"), &[("REVENANT_FAULT", "bad-frame")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for want in [
        format!("restoring PID {pid}: the kernel refused thread {pid}'s signal frame"),
        "raised SIGSEGV".to_string(),
        "in the restorer blob: revenant_restorer::restore::run+0x".to_string(),
        "blob: restore done, returning to the program".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} missing from:\n{err}");
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            std::thread::sleep(Duration::from_millis(200));
            let _ =
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            !Path::new(&format!("/proc/{pid}/exe")).exists()
        }
    );
    std::fs::remove_dir_all(&work).unwrap();
}
