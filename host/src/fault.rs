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
//!   `kill -STOP` at the worst moment would.
//!
//! Unset, a step costs one load of a cached value.

use std::sync::OnceLock;
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Off,
    List,
    Error(u32),
    Kill(u32),
    Stop(u32, i32),
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let Ok(v) = std::env::var("REVENANT_FAULT") else { return Mode::Off };
        let n = |s: &str| s.parse::<u32>().ok();
        match v.split_once(':') {
            None if v == "list" => Mode::List,
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
