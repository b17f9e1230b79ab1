//! Collecting killed tasks that we trace.
//!
//! A traced thread that exits stays a zombie until its tracer collects it,
//! and a leader's exit is reported only once every other thread of its
//! process is gone. So the threads that are not leaders are collected
//! first, then the leaders; waiting for a leader first can block forever.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How long killed tasks get to be reported gone.
pub const BOUND: Duration = Duration::from_secs(10);

/// Collects the exits of `others` (threads that are not leaders), then of
/// `leaders`, for at most [`BOUND`]; returns the tasks still not collected.
pub fn collect(others: Vec<i32>, leaders: Vec<i32>) -> Vec<i32> {
    let deadline = Instant::now() + BOUND;
    let left = wait_gone(others, deadline);
    if !left.is_empty() {
        return left;
    }
    wait_gone(leaders, deadline)
}

fn wait_gone(mut tids: Vec<i32>, deadline: Instant) -> Vec<i32> {
    loop {
        tids.retain(|&tid| {
            let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
            !matches!(
                waitpid(Pid::from_raw(tid), Some(flags)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD | Errno::ESRCH)
            )
        });
        if tids.is_empty() || Instant::now() > deadline {
            return tids;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
