//! A shell job: a program a shell started on its terminal (Python, reading
//! its terminal settings and printing to it), dumped with `--shell-job`
//! and restored with `--shell-job` from another terminal (revenant in the
//! foreground there), which it then
//! runs on with the settings it had made (an interrupt character of its
//! own). Without `--shell-job` the restore refuses, saying so.

#![cfg(target_arch = "x86_64")]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;

const REVENANT: &str = env!("CARGO_BIN_EXE_revenant");

const JOB: &str = "import os, sys, termios, time
t = termios.tcgetattr(0)
t[6][termios.VINTR] = b'\\x01'
termios.tcsetattr(0, termios.TCSANOW, t)
n = 0
while True:
    n += 1
    ok = 'ok' if termios.tcgetattr(0)[6][termios.VINTR] == b'\\x01' else 'BAD'
    line = f\"tick={n} intr={ok} tty={os.ttyname(0)}\"
    print(line, flush=True)
    with open(sys.argv[1], 'a') as f:
        f.write(line + '\\n')
    time.sleep(0.03)
";

/// A new pseudoterminal: its master, and the slave's path.
fn pty() -> (File, PathBuf) {
    let m = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/dev/ptmx")
        .unwrap();
    let (unlock, mut n) = (0 as libc::c_int, 0 as libc::c_int);
    // SAFETY: both requests take a pointer to one int.
    unsafe {
        assert_eq!(libc::ioctl(m.as_raw_fd(), libc::TIOCSPTLCK, &unlock), 0);
        assert_eq!(libc::ioctl(m.as_raw_fd(), libc::TIOCGPTN, &mut n), 0);
    }
    (m, PathBuf::from(format!("/dev/pts/{n}")))
}

/// `cmd` with the terminal at `slave` as its stdio and its session's
/// controlling terminal, as a terminal emulator starts a shell.
fn on_terminal(mut cmd: Command, slave: &Path) -> Command {
    let tty = || OpenOptions::new().read(true).write(true).open(slave).unwrap();
    cmd.stdin(tty()).stdout(tty()).stderr(tty());
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out).unwrap_or_default().lines().map(String::from).collect()
}

fn wait_for(what: &str, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < Duration::from_secs(30), "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_shell_job_moves_to_the_restoring_terminal_with_its_settings() {
    let _w = revenant_test_watchdog::start();
    let work = std::env::temp_dir().join(format!("revenant-shelljob-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let images = work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (script, out) = (work.join("job.py"), work.join("out"));
    std::fs::write(&script, JOB).unwrap();

    // A shell on terminal A runs the job in its foreground.
    let (mut master_a, slave_a) = pty();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg("python3 \"$0\" \"$1\"; echo done").arg(&script).arg(&out);
    let mut sh = on_terminal(sh, &slave_a).spawn().unwrap();
    wait_for("the job's first ticks", || lines(&out).len() >= 3);
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", sh.id())).unwrap();
    let job: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert!(lines(&out).iter().all(|l| l.ends_with(&format!("intr=ok tty={}", slave_a.display()))));

    let dump = Command::new(REVENANT)
        .args(["dump", "-t", &job.to_string(), "--shell-job", "-D"])
        .arg(&images)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(dump.status.success(), "dump: {}", String::from_utf8_lossy(&dump.stderr));
    // The shell reaps its job and ends: the job's PID is free.
    sh.wait().unwrap();
    let mut drain = [0u8; 4096];
    let _ = master_a.read(&mut drain);
    let before = lines(&out).len();

    // Without --shell-job the restore says what it needs.
    let refused =
        Command::new(REVENANT).args(["restore", "-d", "-D"]).arg(&images).stdin(Stdio::null()).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--shell-job"), "{refused:?}");

    // From terminal B, the job comes back on B, in revenant's foreground
    // (here revenant leads the session: detached, its end would hang the
    // terminal up on the job).
    let (mut master_b, slave_b) = pty();
    let mut restore = Command::new(REVENANT);
    restore.args(["restore", "--shell-job", "-D"]).arg(&images);
    let mut restore = on_terminal(restore, &slave_b).spawn().unwrap();
    let want = format!("intr=ok tty={}", slave_b.display());
    wait_for("ticks on terminal B", || lines(&out)[before..].iter().filter(|l| l.ends_with(&want)).count() >= 3);
    let after = lines(&out)[before..].to_vec();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(job), nix::sys::signal::Signal::SIGKILL);
    let _ = restore.wait();
    assert!(after.iter().all(|l| l.ends_with(&want)), "{after:?}");
    let n = |l: &str| l.split(['=', ' ']).nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert_eq!(n(&after[0]), n(&lines(&out)[before - 1]) + 1, "{after:?}");
    // And its prints reach the terminal.
    let mut seen = String::new();
    wait_for("the job's output on terminal B", || {
        let mut buf = [0u8; 4096];
        if let Ok(k) = master_b.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..k]));
        }
        seen.contains(&want)
    });
    let _ = std::fs::remove_dir_all(&work);
}
