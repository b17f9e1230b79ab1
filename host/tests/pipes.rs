//! Pipes a process outside the dumped tree holds too (a shell pipeline's
//! other command, a parent talking to the program over its stdio): the
//! dump marks them and warns; a restore says, naming each and the option,
//! that it comes back connected to nobody unless it is given a pipe to use
//! instead (`--inherit-fd fd[N]:pipe:[INO]`, CRIU's form), and the program
//! then reads through the pipe it was given. A pipe whose other end nobody
//! holds any more is not marked: it comes back as it was, its reader at
//! the end of its input.

#![cfg(target_arch = "x86_64")]

#[allow(dead_code, reason = "each test file uses a part of it")]
mod support;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use nix::fcntl::OFlag;
use support::{REVENANT, dumpee, ok, scratch, state, subreaper, wait_lines, wait_until};

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

fn ino(fd: &OwnedFd) -> u64 {
    nix::sys::stat::fstat(fd).unwrap().st_ino
}

fn restore(images: &std::path::Path, extra: &[&str], stdin: Stdio) -> Output {
    Command::new(REVENANT).args(["restore", "-d", "-D"]).arg(images).args(extra).stdin(stdin).output().unwrap()
}

fn pongs(out: &std::path::Path, n: usize) -> Vec<String> {
    let text = wait_lines(out, |l| l.iter().filter(|l| l.starts_with("pong")).count() >= n);
    text.lines().filter(|l| l.starts_with("pong")).map(String::from).collect()
}

#[test]
fn a_pipe_held_outside_the_tree_is_warned_of_or_replaced_by_the_one_given() {
    let _w = revenant_test_watchdog::start();
    subreaper();
    let work = scratch("pipes", "outside");
    let (images, out) = (work.join("images"), work.join("out"));
    // stdin: a pipe whose write end stays here; fd 7: a pipe whose writer
    // is gone before the dump.
    let (in_r, mut in_w) = {
        let (r, w) = pipe();
        (r, File::from(w))
    };
    let (gone_r, gone_w) = pipe();
    let (in_ino, gone_ino) = (ino(&in_r), ino(&gone_r));
    let mut cmd = Command::new(dumpee("single"));
    cmd.arg("64").stdin(in_r).stdout(File::create(&out).unwrap()).stderr(Stdio::null());
    let gone_raw = gone_r.as_raw_fd();
    // SAFETY: setsid, dup2 and close_range are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if nix::libc::dup2(gone_raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else this test's own caller left open.
            nix::libc::syscall(nix::libc::SYS_close_range, 3, 6, 0);
            nix::libc::syscall(nix::libc::SYS_close_range, 8, u32::MAX, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop((gone_r, gone_w));
    let pid = child.id() as i32;
    wait_lines(&out, |l| l.iter().any(|l| l.starts_with("ready")));
    in_w.write_all(b"p").unwrap();
    assert_eq!(pongs(&out, 1), ["pong 1 ok=1"]);

    let dump = Command::new(REVENANT).args(["dump", "-t", &pid.to_string(), "-D"]).arg(&images).output().unwrap();
    ok(&dump, "dump");
    let said = String::from_utf8_lossy(&dump.stderr);
    assert!(
        said.contains(&format!("pipe:[{in_ino}] (fd 0 of process {pid}): its write end is open outside")),
        "{said}"
    );
    assert!(!said.contains(&format!("pipe:[{gone_ino}]")), "{said}");
    child.wait().unwrap();
    let set = revenant_images::ImageSet::load(&images).unwrap();
    let outside = |ino: u64| set.files.iter().filter_map(|f| f.pipe.as_ref()).find(|p| p.pipe_id as u64 == ino);
    assert_eq!(outside(in_ino).unwrap().outside, Some(true));
    assert_eq!(outside(gone_ino).unwrap().outside, None);

    // Without a pipe given, the restore says what it does: the program
    // comes back with a pipe connected to nobody, reads the end of its
    // input and ends. --check-only says the same.
    let check = Command::new(REVENANT).args(["restore", "--check-only", "-D"]).arg(&images).output().unwrap();
    ok(&check, "--check-only");
    let listed = String::from_utf8_lossy(&check.stdout);
    assert!(listed.contains(&format!("pipe:[{in_ino}] (fd 0 of PID {pid}) was held outside")), "{listed}");
    let alone = restore(&images, &[], Stdio::null());
    ok(&alone, "restore without --inherit-fd");
    let err = String::from_utf8_lossy(&alone.stderr);
    assert!(err.contains(&format!("warning: pipe:[{in_ino}] (fd 0 of PID {pid}) was held outside")), "{err}");
    assert!(err.contains("pipe.outside") && err.contains(&format!("--inherit-fd 'fd[N]:pipe:[{in_ino}]'")), "{err}");
    assert!(!err.contains(&format!("pipe:[{gone_ino}]")), "{err}");
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(st, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0));
    wait_until("the PID to be free", || state(pid) == '?');

    // What is given must be a pipe of the images, and a pipe.
    let given = format!("fd[0]:pipe:[{in_ino}]");
    for (args, stdin, says) in [
        (vec!["--inherit-fd", "fd[0]:pipe:[1]"], Stdio::null(), "the images hold no pipe:[1]".to_string()),
        (vec!["--inherit-fd", "fd[0]:socket:[5]"], Stdio::null(), "only pipes".into()),
        (vec!["--inherit-fd", &given], Stdio::from(File::open("/dev/null").unwrap()), "is not a pipe or FIFO".into()),
    ] {
        let o = restore(&images, &args, stdin);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&says), "{args:?}: {err}");
        assert_eq!(state(pid), '?');
    }

    // Given a new pipe as revenant's stdin, the program reads from it: its
    // count and memory carried on, and it ends when that pipe's writer
    // goes, as at the end of its input.
    let (new_r, new_w) = pipe();
    ok(&restore(&images, &["--inherit-fd", &given], Stdio::from(new_r)), "restore with --inherit-fd");
    let mut new_w = File::from(new_w);
    new_w.write_all(b"p").unwrap();
    assert_eq!(pongs(&out, 2), ["pong 1 ok=1", "pong 2 ok=1"]);
    let fd7 = std::fs::read_link(format!("/proc/{pid}/fd/7")).unwrap();
    assert!(fd7.to_string_lossy().starts_with("pipe:["), "{fd7:?}");
    // The old pipe has no reader left.
    assert!(in_w.write_all(b"p").is_err());
    drop(new_w);
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(st, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0));
    wait_until("the PID to be free", || state(pid) == '?');
    let _ = std::fs::remove_dir_all(&work);
}
