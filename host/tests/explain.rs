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

#[allow(dead_code)]
mod support;
use support::{REVENANT, dumpee, ok, state, subreaper, wait_until};

/// Dumps a fresh `single` (a one-thread program blocked in `read()`) into
/// `work/images`, which kills it, and waits until its PID is free; returns
/// the PID.
fn dumped(work: &Path) -> i32 {
    subreaper();
    // stdin is a FIFO it holds open both ways, so it blocks in read()
    // before and after any restore; its output goes nowhere, so no file
    // it has open changes size between restores.
    let fifo = work.join("in");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let stdin = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let mut cmd = Command::new(dumpee("single"));
    cmd.arg("64").stdin(stdin).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    // Asleep in read() twice in a row: the heap is filled.
    wait_until("single to fill its heap", || {
        state(child.id() as i32) == 'S' && {
            std::thread::sleep(Duration::from_millis(50));
            state(child.id() as i32) == 'S'
        }
    });
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

fn scratch(name: &str) -> PathBuf {
    support::scratch("explain", name)
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
        "SEGV_MAPERR: nothing mapped there) at address 0x0 (in no area the restored process has)".to_string(),
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

/// Reads the registers of stopped process `pid` as a debugger would
/// (seize, interrupt, read, let go), leaving it stopped.
fn registers(pid: i32) -> nix::libc::user_regs_struct {
    use nix::sys::ptrace;
    let p = nix::unistd::Pid::from_raw(pid);
    ptrace::seize(p, ptrace::Options::empty()).unwrap();
    ptrace::interrupt(p).unwrap();
    let _ = nix::sys::wait::waitpid(p, Some(nix::sys::wait::WaitPidFlag::__WALL)).unwrap();
    let regs = ptrace::getregs(p).unwrap();
    ptrace::detach(p, None).unwrap();
    regs
}

/// The hex number after `key` in `text`.
fn hex_after(text: &str, key: &str) -> u64 {
    let at = text.find(key).unwrap_or_else(|| panic!("{key:?} missing from:\n{text}")) + key.len();
    let digits: String = text[at..].trim_start_matches("0x").chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&digits, 16).unwrap()
}

#[test]
fn stop_at_leaves_the_process_where_asked_with_the_registers_of_that_point() {
    let _w = watchdog::start();
    let work = scratch("stop");
    let pid = dumped(&work);
    let images = work.join("images");
    let set = ImageSet::load(&images).unwrap();
    let dumped_ip = set.processes[0].threads[0].core.thread_info.as_ref().unwrap().gpregs.ip;
    for point in ["blob-entry", "before-sigreturn", "after-restore"] {
        let o = revenant(&["restore", "-d", "--stop-at", point], &images, &[]);
        ok(&o, point);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.contains(&format!("gdb -p {pid}")), "{point}: no attach hint:\n{err}");
        let t = Instant::now();
        while state(pid) != 'T' {
            assert!(t.elapsed() < Duration::from_secs(10), "{point}: {pid} is not stopped ({})", state(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = registers(pid);
        match point {
            "blob-entry" => {
                assert_eq!(r.rip, hex_after(&err, "blob's entry ("), "{point}: not at the entry:\n{err}");
                assert_eq!(r.rdi, hex_after(&err, "argument block "), "{point}: the argument is not the block");
                assert_eq!(r.rsp, hex_after(&err, "stack "));
            }
            "before-sigreturn" => {
                let base = hex_after(&err, "-o ");
                let size = revenant::blob::EMBEDDED.map_size() as u64;
                assert!((base..base + size).contains(&r.rip), "{point}: rip {:#x} is not in the blob:\n{err}", r.rip);
                assert!(err.contains("in the restorer blob: revenant_restorer::restore::run+"), "{err}");
            }
            _ => {
                // Where it was, or on the system call it is to restart.
                assert!(
                    r.rip == dumped_ip || r.rip + 2 == dumped_ip,
                    "{point}: rip {:#x}, dumped {dumped_ip:#x}",
                    r.rip
                );
                assert!(!err.contains("add-symbol-file"), "{err}");
            }
        }
        // Let go, it runs on as the program.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(state(pid), 'S' | 'R'), "{point}: after SIGCONT it is {}", state(pid));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        let t = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            let _ =
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            assert!(t.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::fs::remove_dir_all(&work).unwrap();
}
