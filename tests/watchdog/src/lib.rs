//! A time limit for one test. Stable libtest has none: a test that hangs (a
//! forked child deadlocked on a lock, a wait for a process that never comes)
//! keeps `cargo test`, and with it CI, running forever, without saying
//! which test it is. A test that may hang holds a [`Watchdog`]; if the test
//! is still running when the time is up, the watchdog names it on stderr
//! and aborts the whole test process, which fails the run.
//!
//! The limit is [`DEFAULT_LIMIT`] seconds, or `REVENANT_TEST_TIMEOUT` (in
//! seconds) where tests run slower, as under an emulator.

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Seconds a test may run unless `REVENANT_TEST_TIMEOUT` says otherwise:
/// far above what any test takes, natively or under qemu-arm.
pub const DEFAULT_LIMIT: u64 = 300;

/// Aborts the process unless dropped within its limit.
#[derive(Debug)]
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A watchdog for the calling test, with the configured limit. libtest runs
/// each test on a thread named after it, which is the name reported.
pub fn start() -> Watchdog {
    let name = std::thread::current().name().unwrap_or("(unnamed)").to_owned();
    Watchdog::new(name, limit(std::env::var("REVENANT_TEST_TIMEOUT").ok().as_deref()))
}

/// The limit `REVENANT_TEST_TIMEOUT`'s value asks for; the default if it is
/// unset or not a number of seconds.
fn limit(env: Option<&str>) -> Duration {
    Duration::from_secs(env.and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_LIMIT))
}

impl Watchdog {
    /// Aborts the process, naming `test`, unless dropped within `limit`.
    pub fn new(test: String, limit: Duration) -> Watchdog {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("watchdog of {test}"))
            .spawn(move || {
                if rx.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                    // Straight to fd 2: libtest captures what this thread
                    // prints with eprintln! and would never show it.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\ntest {test} is still running after {limit:?}: aborting the test run"
                    );
                    std::process::abort();
                }
            })
            .expect("starting a watchdog thread");
        Watchdog { done: Some(done), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // A closed channel ends the wait at once.
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_comes_from_the_environment_or_the_default() {
        assert_eq!(limit(None), Duration::from_secs(DEFAULT_LIMIT));
        assert_eq!(limit(Some("1200")), Duration::from_secs(1200));
        assert_eq!(limit(Some(" 7\n")), Duration::from_secs(7));
        assert_eq!(limit(Some("soon")), Duration::from_secs(DEFAULT_LIMIT));
    }

    #[test]
    fn a_test_that_finishes_in_time_is_left_alone() {
        let w = Watchdog::new("quick".into(), Duration::from_millis(200));
        drop(w);
        // Past the limit: an armed watchdog would have aborted us by now.
        std::thread::sleep(Duration::from_millis(400));
    }

    /// The abort itself, in a child process of this test binary: it must
    /// die of SIGABRT and name the test. Not under qemu-user, which cannot
    /// run an ARM binary's child without binfmt_misc.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_test_past_its_limit_is_named_and_aborts_the_run() {
        if std::env::var_os("REVENANT_WATCHDOG_SELFTEST").is_some() {
            let _w = Watchdog::new("the hanging test".into(), Duration::from_millis(100));
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::a_test_past_its_limit_is_named_and_aborts_the_run", "--nocapture"])
            .env("REVENANT_WATCHDOG_SELFTEST", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(6), "{:?}: {err}", out.status);
        assert!(err.contains("test the hanging test is still running after 100ms: aborting"), "{err}");
    }

    #[test]
    fn start_names_the_running_test() {
        let w = start();
        let t = w.thread.as_ref().unwrap().thread().name().unwrap().to_owned();
        assert_eq!(t, "watchdog of tests::start_names_the_running_test");
    }
}
