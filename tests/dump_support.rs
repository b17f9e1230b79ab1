//! Building and running the C dumpees of `dumpees/`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// Long enough for any loaded machine; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// Compiles `dumpees/NAME.c` once per test binary build into the target dir.
pub fn build(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("dumpees").join(format!("{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dumpees");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    // Tests run in parallel: two building the same program would replace
    // the file under a process already running it (its exe then reads
    // "(deleted)"). One build at a time, and only when stale.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let stale = |o: &Path| {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let newest_src = [src.clone(), src.with_file_name("pingpong.h")].iter().filter_map(|p| m(p)).max();
        m(o).is_none() || m(o) < newest_src
    };
    if stale(&out) {
        let compiler = cc::Build::new()
            .target("x86_64-unknown-linux-gnu")
            .host("x86_64-unknown-linux-gnu")
            .opt_level(1)
            .cargo_metadata(false)
            .get_compiler();
        // Tests run in parallel: build under a private name, then rename.
        let tmp = dir.join(format!(".{name}.{}.{:?}", std::process::id(), std::thread::current().id()));
        let st = compiler
            .to_command()
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .arg("-pthread")
            .status()
            .expect("running the C compiler");
        assert!(st.success(), "compiling {}", src.display());
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// A running dumpee in its own session, with its stdin and stdout on pipes.
/// Killed and reaped when dropped.
pub struct Dumpee {
    pub child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Dumpee {
    pub fn start(name: &str, args: &[&str]) -> Dumpee {
        let mut cmd = Command::new(build(name));
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting the dumpee");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Dumpee { child, stdin, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line it prints.
    pub fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("the dumpee stopped talking")
    }

    /// Skips lines until one starts with `prefix`; returns it.
    pub fn expect(&self, prefix: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Asks a pingpong dumpee whether it runs and its memory is intact.
    pub fn ping(&mut self) -> String {
        self.stdin.write_all(b"p").unwrap();
        self.stdin.flush().unwrap();
        self.expect("pong")
    }

    /// Waits until the main thread sits in one of the given system calls.
    pub fn wait_in_syscall(&self, nrs: &[i64]) {
        self.wait_threads_in_syscall(1, nrs)
    }

    /// Waits until the process has `n` threads, each in one of the given
    /// system calls.
    pub fn wait_threads_in_syscall(&self, n: usize, nrs: &[i64]) {
        let pid = self.pid();
        let in_call = |tid: &str| {
            let sc = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).unwrap_or_default();
            sc.split_whitespace().next().and_then(|n| n.parse().ok()).is_some_and(|n: i64| nrs.contains(&n))
        };
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            if tids.len() == n && tids.iter().all(|t| in_call(t)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("dumpee {pid} never had {n} threads in system calls {nrs:?}");
    }
}

impl Drop for Dumpee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, empty directory for one test's images.
pub fn image_dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dump-images").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh scratch directory `revenant-FILE-NAME-PID`.
pub fn scratch(file: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("revenant-{file}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits (up to a minute: only a broken restore takes long) for `pred` on
/// the lines of `path`; returns its text.
pub fn wait_for(path: &Path, pred: impl Fn(&[&str]) -> bool) -> String {
    for _ in 0..600 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text.lines().collect::<Vec<_>>()) {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::read_to_string(path).unwrap_or_default()
}
