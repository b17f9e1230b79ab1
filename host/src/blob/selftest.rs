//! Runs the blob's self-test in a forked child: the whole load-relocate-enter
//! pipeline, observed from outside through the log pipe and the exit status.

use std::io::Read;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, bail};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe};
use revenant_blob_abi::{Command, Header, LogLevel, SelfTest};

use super::{ArgBlock, BlockBuilder, load, map_stack};

/// What the parent saw.
#[derive(Debug)]
pub struct SelfTestOutcome {
    pub pid: i32,
    /// The child's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Everything the blob logged.
    pub log: String,
}

/// Forks; the child loads the blob at `hint` (or anywhere) and runs the
/// self-test on `input`, logging `message` back.
pub fn run_selftest(input: u32, message: &str, hint: Option<usize>) -> Result<SelfTestOutcome> {
    run_in_child(|log_fd| selftest_block(input, message, log_fd), hint)
}

/// The argument block of a self-test.
pub fn selftest_block(input: u32, message: &str, log_fd: i32) -> ArgBlock {
    let mut b = BlockBuilder::new();
    let message = b.push(message.as_bytes());
    let st = b.push(&[SelfTest { input, pad: 0, message }]);
    b.finish(Header {
        command: Command::SelfTest as u32,
        log_level: LogLevel::Debug as u32,
        log_fd,
        flags: 0,
        selftest: st,
        status_fd: -1,
        ..Default::default()
    })
}

/// Forks; the child loads the blob at `hint` (or anywhere) and enters it
/// with the block `make_block` returns for the log pipe's write end. The
/// parent collects the log and the child's end.
pub fn run_in_child(make_block: impl FnOnce(i32) -> ArgBlock, hint: Option<usize>) -> Result<SelfTestOutcome> {
    let (rx, tx) = pipe().context("pipe for the blob's log")?;
    let block = make_block(tx.as_raw_fd());

    // SAFETY: the child only makes raw syscalls (load, map_stack, enter) and
    // never returns into Rust code that could touch the parent's locks.
    match unsafe { fork() }.context("fork for the blob")? {
        ForkResult::Child => {
            drop(rx);
            let code = match load(hint).and_then(|blob| Ok((blob, map_stack(64 << 10)?))) {
                // SAFETY: a fresh stack and a block that lives until exit.
                Ok((blob, stack)) => unsafe { blob.enter(block.as_ptr(), stack) },
                Err(e) => LOAD_FAILED_BASE + (e.raw() as i32 % 50),
            };
            revenant_arch::sys::exit_group(code)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut log = String::new();
            std::fs::File::from(rx).read_to_string(&mut log).context("reading the blob's log")?;
            let status = waitpid(child, None).context("waiting for the blob's child")?;
            let (exit_code, signal) = match status {
                WaitStatus::Exited(_, c) => (Some(c), None),
                WaitStatus::Signaled(_, s, _) => (None, Some(s as i32)),
                other => bail!("blob child ended oddly: {other:?}"),
            };
            Ok(SelfTestOutcome { pid: child.as_raw(), exit_code, signal, log })
        }
    }
}

/// A child that could not load the blob exits with this plus the errno
/// (mod 50), below the blob's own exit codes.
pub const LOAD_FAILED_BASE: i32 = 150;
