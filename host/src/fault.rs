//! The steps of a dump or a restore: where a SIGINT, SIGTERM or SIGHUP
//! the user sent takes effect (the step fails, and the ordinary error path
//! puts everything back), and where tests inject faults to show that every
//! step leaves the program as it was (dump) or nothing behind (restore).
//!
//! `REVENANT_FAULT` selects it:
//! - `list`: each step prints `revenant: step N: NAME` on stderr;
//! - `error:N`: step N fails as an ordinary error would;
//! - `kill:N`: revenant kills itself with SIGKILL at step N, as a user's
//!   `kill -9` or the OOM killer would;
//! - `sigstop:N:PID`: step N sends SIGSTOP to process PID, as a user's
//!   `kill -STOP` at the worst moment would;
//! - `bad-frame`: a restore hands each blob a first thread's signal frame
//!   pointer to nothing, so the final `rt_sigreturn` faults inside the
//!   blob (how the report of a blob's crash is tested).
//!
//! Unset, a step costs one load of a cached value.

use std::sync::OnceLock;

use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: nix::libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP make the next step fail instead
/// of killing us half-way. No SA_RESTART: a blocking wait returns EINTR
/// and fails its step sooner.
pub fn catch_interrupts() {
    let act = SigAction::new(SigHandler::Handler(note), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to atomics.
        let _ = unsafe { sigaction(sig, &act) };
    }
}

thread_local! {
    /// The [`Deadline`] of this thread has passed.
    static TIMED_OUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

extern "C" fn expired(_: nix::libc::c_int) {
    TIMED_OUT.with(|t| t.set(true));
}

/// A time limit on the steps that follow on this thread: when it passes, a
/// SIGALRM aimed at this thread (no SA_RESTART, so a blocking wait returns
/// EINTR) makes the next step fail. Each thread has its own, so dumps on
/// several threads do not cut each other short. Dropping it cancels it.
pub struct Deadline {
    timer: nix::libc::timer_t,
}

impl Deadline {
    pub fn start(limit: std::time::Duration) -> anyhow::Result<Deadline> {
        use nix::libc;
        TIMED_OUT.with(|t| t.set(false));
        let act = SigAction::new(SigHandler::Handler(expired), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler only sets a constant-initialised thread local.
        let _ = unsafe { sigaction(Signal::SIGALRM, &act) };
        // SAFETY: all zeros is a valid sigevent; the fields that matter are
        // set below.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_THREAD_ID;
        ev.sigev_signo = libc::SIGALRM;
        ev.sigev_notify_thread_id = nix::unistd::gettid().as_raw();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: the kernel reads the sigevent and writes the timer id,
        // both live locals.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) } < 0 {
            return Err(std::io::Error::last_os_error()).context("creating the --timeout timer");
        }
        // A zero value would disarm the timer: a limit of 0 is 1 ns.
        let value = libc::timespec {
            tv_sec: limit.as_secs() as libc::time_t,
            tv_nsec: limit.subsec_nanos().max(u32::from(limit.is_zero())) as libc::c_long,
        };
        let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: a timer of ours; the kernel reads the spec from a live local.
        if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: deleting the timer made above.
            unsafe { libc::timer_delete(timer) };
            return Err(e).context("arming the --timeout timer");
        }
        Ok(Deadline { timer })
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        // SAFETY: deleting our own timer, once.
        unsafe { nix::libc::timer_delete(self.timer) };
        TIMED_OUT.with(|t| t.set(false));
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Off,
    List,
    Error(u32),
    Kill(u32),
    Stop(u32, i32),
    BadFrame,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let Ok(v) = std::env::var("REVENANT_FAULT") else { return Mode::Off };
        let n = |s: &str| s.parse::<u32>().ok();
        match v.split_once(':') {
            None if v == "list" => Mode::List,
            None if v == "bad-frame" => Mode::BadFrame,
            Some(("error", at)) => n(at).map_or(Mode::Off, Mode::Error),
            Some(("kill", at)) => n(at).map_or(Mode::Off, Mode::Kill),
            Some(("sigstop", rest)) => match rest.split_once(':') {
                Some((at, pid)) => match (n(at), pid.parse()) {
                    (Some(at), Ok(pid)) => Mode::Stop(at, pid),
                    _ => Mode::Off,
                },
                None => Mode::Off,
            },
            _ => Mode::Off,
        }
    })
}

/// Whether the blob is to get a bad signal frame (`bad-frame`).
pub fn bad_frame() -> bool {
    mode() == Mode::BadFrame
}

/// Whether this thread's [`Deadline`] has passed.
pub fn timed_out() -> bool {
    TIMED_OUT.with(|t| t.get())
}

/// The signal that asked us to stop, if one did.
pub fn interrupted() -> Option<&'static str> {
    INTERRUPTED
        .load(Ordering::SeqCst)
        .then(|| Signal::try_from(SIGNAL.load(Ordering::SeqCst)).map_or("a signal", |s| s.as_str()))
}

/// Marks a step; `name` says what has just been done.
pub fn step(name: impl FnOnce() -> String) -> anyhow::Result<()> {
    if let Some(sig) = interrupted() {
        anyhow::bail!("stopped at a signal ({sig})");
    }
    if timed_out() {
        anyhow::bail!("out of time");
    }
    let m = mode();
    if m == Mode::Off {
        return Ok(());
    }
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    match m {
        Mode::List => eprintln!("revenant: step {n}: {}", name()),
        Mode::Error(at) if at == n => anyhow::bail!("fault injected at step {n} ({})", name()),
        Mode::Kill(at) if at == n => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        Mode::Stop(at, pid) if at == n => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP);
        }
        _ => {}
    }
    Ok(())
}
