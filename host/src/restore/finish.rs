//! The end of a restore, seen from the tracing parent: wait for every
//! thread's trap, let each through `rt_sigreturn` and hold it there
//! ([`catch`]); then make the task unmap the bootstrap area (the blob cannot
//! unmap the code it runs on) and let it go ([`release`]). Between the two,
//! with every process of the tree held, the host finishes what must happen
//! before any program runs. x86_64 only: this needs ptrace, which
//! qemu-user lacks.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::libc::user_regs_struct;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::describe_exit;

/// How the task ended up.
#[derive(Debug)]
pub enum Outcome {
    /// Every thread is past its `rt_sigreturn`, held by us.
    Held(Held),
    /// Died before getting there.
    Failed(String),
}

/// The threads of a task held right after their `rt_sigreturn`.
#[derive(Debug)]
pub struct Held {
    ts: Vec<Thread>,
}

/// Where one thread is on its way out of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    InBlob,
    Trapped,
    InSigreturn,
    Done,
}

#[derive(Debug)]
struct Thread {
    tid: Pid,
    step: Step,
    /// The syscall instruction `rt_sigreturn` ran from.
    insn: u64,
    restored: Option<user_regs_struct>,
}

/// Drives the seized task `leader` and the `threads - 1` threads it creates
/// through their `rt_sigreturn`, and holds them there.
pub fn catch(leader: Pid, threads: usize) -> Result<Outcome> {
    let mut ts = vec![Thread { tid: leader, step: Step::InBlob, insn: 0, restored: None }];
    while ts.len() < threads || ts.iter().any(|t| t.step != Step::Done) {
        let mut moved = false;
        for i in 0..ts.len() {
            let tid = ts[i].tid;
            let status = waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG))
                .with_context(|| format!("waiting for restored task {tid}"))?;
            moved |= status != WaitStatus::StillAlive;
            match (status, ts[i].step) {
                (WaitStatus::StillAlive, _) => {}
                (WaitStatus::PtraceEvent(_, _, ev), _) if ev == nix::libc::PTRACE_EVENT_CLONE => {
                    let new = Pid::from_raw(ptrace::getevent(tid)? as i32);
                    ts.push(Thread { tid: new, step: Step::InBlob, insn: 0, restored: None });
                    ptrace::cont(tid, None)?;
                }
                (WaitStatus::Stopped(_, Signal::SIGTRAP), Step::InBlob) => {
                    ts[i].step = Step::Trapped;
                    ptrace::syscall(tid, None).context("continuing to rt_sigreturn")?;
                }
                (WaitStatus::PtraceSyscall(_), Step::Trapped) => {
                    ts[i].insn = ip(&ptrace::getregs(tid)?) - SYSCALL_INSN_LEN;
                    ts[i].step = Step::InSigreturn;
                    ptrace::syscall(tid, None).context("finishing rt_sigreturn")?;
                }
                (WaitStatus::PtraceSyscall(_), Step::InSigreturn) => {
                    // Stays stopped until every thread is here.
                    ts[i].restored = Some(ptrace::getregs(tid).context("registers after rt_sigreturn")?);
                    ts[i].step = Step::Done;
                }
                (WaitStatus::Stopped(_, sig), _) if sig != Signal::SIGTRAP && sig != Signal::SIGSTOP => {
                    let at = ptrace::getregs(tid).map(|r| ip(&r)).unwrap_or(0);
                    kill(leader);
                    return Ok(Outcome::Failed(format!(
                        "the restorer blob crashed with {sig} at {at:#x} in thread {tid}"
                    )));
                }
                (WaitStatus::Exited(_, code), _) => {
                    kill(leader);
                    return Ok(Outcome::Failed(describe_exit(code)));
                }
                (WaitStatus::Signaled(_, sig, _), _) => {
                    kill(leader);
                    return Ok(Outcome::Failed(format!("killed by {sig} during the restore")));
                }
                // New threads' first stop, group stops, stray SIGSTOPs: run on.
                _ => ptrace::cont(tid, None).with_context(|| format!("resuming {tid}"))?,
            }
        }
        if !moved {
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    Ok(Outcome::Held(Held { ts }))
}

/// Unmaps `start..start+len` in the held task `leader` and lets the program
/// run.
pub fn release(leader: Pid, held: Held, start: u64, len: u64) -> Result<()> {
    // Every thread is past its sigreturn. Run munmap(bootstrap) in the first
    // one from the syscall instruction, which is still mapped when the call
    // starts, then put its registers back.
    let ts = held.ts;
    let first = &ts[0];
    let restored = first.restored.context("first thread has no registers")?;
    let mut call = restored;
    set_syscall(&mut call, first.insn, MUNMAP, start, len);
    // The program's own mask is in force now; a signal it lets through
    // (its interval timer, say) must wait until we are gone, not interrupt
    // the unmap.
    let mask = sigmask(leader, None)?;
    sigmask(leader, Some(!0))?;
    ptrace::setregs(leader, call).context("setting up the bootstrap unmap")?;
    for _ in 0..2 {
        ptrace::syscall(leader, None)?;
        match waitpid(leader, Some(WaitPidFlag::__WALL))? {
            WaitStatus::PtraceSyscall(_) => {}
            other => bail!("restored task {leader}: unexpected {other:?} while unmapping the bootstrap area"),
        }
    }
    let ret = ptrace::getregs(leader)?.rax as i64;
    if ret != 0 {
        bail!("unmapping the bootstrap area in {leader} failed: {ret}");
    }
    ptrace::setregs(leader, restored).context("restoring the registers after the unmap")?;
    sigmask(leader, Some(mask))?;
    for t in &ts {
        ptrace::detach(t.tid, None).with_context(|| format!("detaching from {}", t.tid))?;
    }
    Ok(())
}

/// `PTRACE_GETSIGMASK`, or `PTRACE_SETSIGMASK` to `set`; returns the mask.
fn sigmask(pid: Pid, set: Option<u64>) -> Result<u64> {
    const PTRACE_GETSIGMASK: nix::libc::c_uint = 0x420a;
    const PTRACE_SETSIGMASK: nix::libc::c_uint = 0x420b;
    let mut mask = set.unwrap_or(0);
    let req = if set.is_some() { PTRACE_SETSIGMASK } else { PTRACE_GETSIGMASK };
    // SAFETY: the kernel reads or writes 8 bytes of a live local.
    let r = unsafe { nix::libc::ptrace(req, pid.as_raw(), 8usize, &mut mask as *mut u64) };
    if r < 0 {
        bail!(
            "{} of {pid}: {}",
            if set.is_some() { "setting the signal mask" } else { "reading the signal mask" },
            std::io::Error::last_os_error()
        );
    }
    Ok(mask)
}

fn kill(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

const SYSCALL_INSN_LEN: u64 = 2;
const MUNMAP: u64 = linux_raw_sys::general::__NR_munmap as u64;

fn ip(r: &user_regs_struct) -> u64 {
    r.rip
}

fn set_syscall(r: &mut user_regs_struct, insn: u64, nr: u64, a0: u64, a1: u64) {
    r.rip = insn;
    r.rax = nr;
    r.orig_rax = u64::MAX;
    r.rdi = a0;
    r.rsi = a1;
}
