//! What the command-line tests share: the binary, the dumpees (compiled
//! once per test binary), starting a program as `setsid prog &` leaves it,
//! scratch directories and waiting. Each test file uses a part of it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const REVENANT: &str = env!("CARGO_BIN_EXE_revenant");
/// Only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Makes this test process a child subreaper, once: dumped and killed
/// programs come back to it, and their PIDs are free once collected.
pub fn subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Compiles `tests/dumpees/NAME.c` once per run.
pub fn dumpee(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if !built.iter().any(|b| b == name) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/dumpees/{name}.c"));
        let st = Command::new("cc").args(["-O1", "-pthread", "-o"]).arg(&out).arg(&src).status().expect("running cc");
        assert!(st.success(), "compiling {}", src.display());
        built.push(name.to_string());
    }
    out
}

/// Starts `prog` with `args` as a grandchild in its own session, the way a
/// shell's `setsid prog &` leaves it: its parent exits at once. Its stdio
/// is /dev/null and it inherits no other fd.
pub fn start_grandchild(prog: &Path, args: &[&std::ffi::OsStr]) {
    subreaper();
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: fork, setsid, close_range and _exit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if nix::unistd::fork()?.is_parent() {
                nix::libc::_exit(0);
            }
            nix::unistd::setsid()?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    cmd.status().expect("starting a dumpee");
}

/// A fresh scratch directory `revenant-FILE-NAME-PID` with an empty
/// `images` in it.
pub fn scratch(file: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("revenant-{file}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("images")).unwrap();
    d
}

/// Waits until `done`, failing the test after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < PATIENCE, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The complete lines of `path` once `pred` holds for them, or whatever
/// they are after [`PATIENCE`]. A line the program is writing may be read
/// in part (a read does not wait for a write), so it is left out.
pub fn wait_lines(path: &Path, pred: impl Fn(&[&str]) -> bool) -> String {
    let t = Instant::now();
    loop {
        let mut text = std::fs::read_to_string(path).unwrap_or_default();
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        if pred(&text.lines().collect::<Vec<_>>()) || t.elapsed() > PATIENCE {
            return text;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// The state letter of `pid` in /proc ('?' once it is gone).
pub fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()).unwrap_or('?')
}
