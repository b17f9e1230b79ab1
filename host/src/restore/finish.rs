//! The end of a restore, seen from the tracing parent: wait for the blob's
//! trap, let the task through `rt_sigreturn`, then make it unmap the
//! bootstrap area (the blob cannot unmap the code it runs on) and let it go.

use anyhow::{Context, Result, bail};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::describe_exit;

/// How the task ended up.
#[derive(Debug)]
pub enum Outcome {
    /// Running the dumped program, untraced.
    Running,
    /// Died before getting there.
    Failed(String),
}

fn wait(pid: Pid) -> Result<WaitStatus> {
    waitpid(pid, Some(WaitPidFlag::__WALL)).with_context(|| format!("waiting for restored task {pid}"))
}

/// Drives `pid` (already seized) to the point where the dumped program
/// runs, and unmaps `start..start+len` in it.
pub fn finish(pid: Pid, start: u64, len: u64) -> Result<Outcome> {
    // Phase 1: until the blob's trap right before rt_sigreturn.
    loop {
        match wait(pid)? {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => break,
            WaitStatus::Stopped(_, sig) => {
                let at = ptrace::getregs(pid).map(|r| ip(&r)).unwrap_or(0);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Ok(Outcome::Failed(format!("the restorer blob crashed with {sig} at {at:#x}")));
            }
            WaitStatus::Exited(_, code) => return Ok(Outcome::Failed(describe_exit(code))),
            WaitStatus::Signaled(_, sig, _) => {
                return Ok(Outcome::Failed(format!("killed by {sig} during the restore")));
            }
            // Group stops and other ptrace events: let it run on.
            _ => ptrace::cont(pid, None).with_context(|| format!("resuming {pid}"))?,
        }
    }

    // Phase 2: through rt_sigreturn. Its exit stop shows the restored
    // registers; the entry stop tells where the syscall instruction is.
    ptrace::syscall(pid, None).context("continuing to rt_sigreturn")?;
    expect_syscall_stop(pid)?;
    let entry = ptrace::getregs(pid).context("registers at rt_sigreturn")?;
    let insn = ip(&entry) - SYSCALL_INSN_LEN;
    ptrace::syscall(pid, None).context("finishing rt_sigreturn")?;
    expect_syscall_stop(pid)?;
    let restored = ptrace::getregs(pid).context("registers after rt_sigreturn")?;

    // Phase 3: run munmap(bootstrap) from the syscall instruction, which is
    // still mapped when the call starts, then put the registers back.
    let mut call = restored;
    set_syscall(&mut call, insn, MUNMAP, start, len);
    ptrace::setregs(pid, call).context("setting up the bootstrap unmap")?;
    ptrace::syscall(pid, None)?;
    expect_syscall_stop(pid)?;
    ptrace::syscall(pid, None)?;
    expect_syscall_stop(pid)?;
    let after = ptrace::getregs(pid)?;
    if ret(&after) != 0 {
        bail!("unmapping the bootstrap area in {pid} failed: {}", ret(&after) as i64);
    }
    ptrace::setregs(pid, restored).context("restoring the registers after the unmap")?;
    ptrace::detach(pid, None).with_context(|| format!("detaching from {pid}"))?;
    Ok(Outcome::Running)
}

fn expect_syscall_stop(pid: Pid) -> Result<()> {
    match wait(pid)? {
        WaitStatus::PtraceSyscall(_) => Ok(()),
        WaitStatus::Exited(_, code) => {
            bail!("restored task {pid} exited with {code} at its last step")
        }
        WaitStatus::Signaled(_, sig, _) => {
            bail!("restored task {pid} was killed by {sig} at its last step")
        }
        other => bail!("restored task {pid}: unexpected stop {other:?} at its last step"),
    }
}

// x86_64 only: this module needs ptrace, which qemu-user lacks.
const SYSCALL_INSN_LEN: u64 = 2;
const MUNMAP: u64 = linux_raw_sys::general::__NR_munmap as u64;

fn ip(r: &nix::libc::user_regs_struct) -> u64 {
    r.rip
}

fn ret(r: &nix::libc::user_regs_struct) -> u64 {
    r.rax
}

fn set_syscall(r: &mut nix::libc::user_regs_struct, insn: u64, nr: u64, a0: u64, a1: u64) {
    r.rip = insn;
    r.rax = nr;
    r.orig_rax = u64::MAX;
    r.rdi = a0;
    r.rsi = a1;
}
