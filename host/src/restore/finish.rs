//! The end of a restore, seen from the tracing parent: wait for every
//! thread's trap, let each through `rt_sigreturn` and hold it there
//! ([`catch`]); then make the task unmap the bootstrap area (the blob cannot
//! unmap the code it runs on) and let it go ([`release`]). Between the two,
//! with every process of the tree held, the host finishes what must happen
//! before any program runs. Needs ptrace, which qemu-user lacks (see
//! `Kerndat::ptrace`).

use anyhow::{Context, Result, bail};
use nix::sys::ptrace;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use revenant_blob_abi::SigAction;

use super::{StopPoint, describe_exit};
use crate::dump::inject::arch as call;
use crate::regs::dump::{self as regs, Gp, pc as ip};

/// How the task ended up.
#[derive(Debug)]
pub enum Outcome {
    /// Every thread is past its `rt_sigreturn`, held by us.
    Held(Held),
    /// Died before getting there.
    Failed(String),
    /// Left stopped for a debugger, detached (`--stop-at`): what to tell
    /// the user.
    Left(String),
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
    /// The blob's page-copying helper thread, which exits by itself.
    Helper,
    /// The helper after its exit.
    Gone,
    /// At the blob's last trap, to be left there (`--stop-at
    /// before-sigreturn`).
    Left,
}

#[derive(Debug)]
struct Thread {
    tid: Pid,
    step: Step,
    /// The syscall instruction `rt_sigreturn` ran from.
    insn: u64,
    restored: Option<Gp>,
}

/// Drives the seized task `leader` and the `threads - 1` threads it creates
/// through their `rt_sigreturn`, and holds them there. The thread `helper`,
/// if the blob starts it, runs on until it exits.
/// `place` says where an address lies, for a crash's report. With `stop`,
/// the task is left at that point instead (its blob entry's address
/// given for [`StopPoint::BlobEntry`]).
pub fn catch(
    leader: Pid,
    threads: usize,
    helper: Option<Pid>,
    place: &dyn Fn(u64) -> String,
    stop: Option<(StopPoint, u64)>,
) -> Result<Outcome> {
    let mut ts = vec![Thread { tid: leader, step: Step::InBlob, insn: 0, restored: None }];
    let program = |t: &&Thread| !matches!(t.step, Step::Helper | Step::Gone);
    while ts.iter().filter(program).count() < threads || ts.iter().any(|t| !matches!(t.step, Step::Done | Step::Gone)) {
        if ts.iter().filter(program).count() == threads && ts.iter().filter(program).all(|t| t.step == Step::Left) {
            let tids: Vec<Pid> = ts.iter().filter(|t| t.step != Step::Gone).map(|t| t.tid).collect();
            let at = regs::gpregs(leader.as_raw()).map(|r| ip(&r)).unwrap_or(0);
            leave_stopped(leader, &tids)?;
            return Ok(Outcome::Left(format!(
                "stopped at the blob's trap right before rt_sigreturn ({at:#x}, {}); every thread's program state is \
                 in place and the bootstrap area still mapped; once continued it returns to the program, whose \
                 SIGTRAP action is then the default",
                place(at)
            )));
        }
        let mut moved = false;
        for i in 0..ts.len() {
            let tid = ts[i].tid;
            if ts[i].step == Step::Gone {
                continue;
            }
            let status = waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG))
                .with_context(|| format!("waiting for restored task {tid}"))?;
            moved |= status != WaitStatus::StillAlive;
            match (status, ts[i].step) {
                (WaitStatus::StillAlive, _) => {}
                (WaitStatus::PtraceEvent(_, _, ev), _) if ev == nix::libc::PTRACE_EVENT_CLONE => {
                    let new = event_pid(ptrace::getevent(tid)?);
                    let step = if Some(new) == helper { Step::Helper } else { Step::InBlob };
                    ts.push(Thread { tid: new, step, insn: 0, restored: None });
                    ptrace::cont(tid, None)?;
                }
                (WaitStatus::Stopped(_, Signal::SIGTRAP), Step::InBlob) if matches!(stop, Some((StopPoint::BlobEntry, entry)) if ip(&regs::gpregs(tid.as_raw())?) == entry) =>
                {
                    set_breakpoint(tid, None)?;
                    let r = regs::gpregs(tid.as_raw())?;
                    leave_stopped(leader, &[tid])?;
                    return Ok(Outcome::Left(format!(
                        "stopped at the restorer blob's entry ({:#x}), argument block {:#x}, stack {:#x}; nothing \
                         of the program is in place yet; once continued the blob restores it and returns to it, \
                         leaving its bootstrap area mapped",
                        ip(&r),
                        regs::arg0(&r),
                        regs::sp(&r)
                    )));
                }
                (WaitStatus::Stopped(_, Signal::SIGTRAP), Step::InBlob)
                    if matches!(stop, Some((StopPoint::BeforeSigreturn, _))) =>
                {
                    ts[i].step = Step::Left;
                }
                (WaitStatus::Stopped(_, Signal::SIGTRAP), Step::InBlob) => {
                    let mut r = regs::gpregs(tid.as_raw())?;
                    if regs::step_over_trap(&mut r) {
                        regs::set_gpregs(tid.as_raw(), &r)?;
                    }
                    ts[i].step = Step::Trapped;
                    ptrace::syscall(tid, None).context("continuing to rt_sigreturn")?;
                }
                (WaitStatus::PtraceSyscall(_), Step::Trapped) => {
                    ts[i].insn = ip(&regs::gpregs(tid.as_raw())?) - regs::BLOB_SYSCALL_LEN;
                    ts[i].step = Step::InSigreturn;
                    ptrace::syscall(tid, None).context("finishing rt_sigreturn")?;
                }
                (WaitStatus::PtraceSyscall(_), Step::InSigreturn) => {
                    // A frame the kernel could not take leaves a SIGSEGV
                    // pending instead of the program's registers.
                    if let Some(sig) = fault_pending(tid) {
                        let at = regs::gpregs(tid.as_raw()).map(|r| ip(&r)).unwrap_or(0);
                        kill(leader);
                        return Ok(Outcome::Failed(format!(
                            "the kernel refused thread {tid}'s signal frame: its rt_sigreturn (at {at:#x}, {}) \
                             raised {sig}",
                            place(at)
                        )));
                    }
                    // Stays stopped until every thread is here.
                    ts[i].restored = Some(regs::gpregs(tid.as_raw()).context("registers after rt_sigreturn")?);
                    ts[i].step = Step::Done;
                }
                (WaitStatus::Stopped(_, sig), _) if sig != Signal::SIGTRAP && sig != Signal::SIGSTOP => {
                    let at = regs::gpregs(tid.as_raw()).map(|r| ip(&r)).unwrap_or(0);
                    let what = super::explain::signal(tid, sig, place);
                    kill(leader);
                    return Ok(Outcome::Failed(format!(
                        "thread {tid} got {what} during the restore; its instruction pointer {at:#x} is {}",
                        place(at)
                    )));
                }
                // Its exit, or the kill of a failing blob's exit_group (the
                // leader's own status, which says why, comes next).
                (WaitStatus::Exited(..) | WaitStatus::Signaled(..), Step::Helper) => ts[i].step = Step::Gone,
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
            wait_for_sigchld();
        }
    }

    ts.retain(|t| t.step != Step::Gone);
    Ok(Outcome::Held(Held { ts }))
}

/// Sets (or with `None` clears) an execution breakpoint at `at` in thread
/// `tid`, which must be in a ptrace stop: debug register 0 and its enable
/// bit in debug register 7.
#[cfg(target_arch = "x86_64")]
pub fn set_breakpoint(tid: Pid, at: Option<u64>) -> Result<()> {
    let dr = |n: usize| (std::mem::offset_of!(nix::libc::user, u_debugreg) + 8 * n) as ptrace::AddressType;
    // SAFETY: PTRACE_POKEUSER writes a word of the stopped tracee's user
    // area at a debug register's offset; no memory of ours is involved.
    let poke = |n: usize, v: u64| unsafe {
        nix::libc::ptrace(nix::libc::PTRACE_POKEUSER, tid.as_raw(), dr(n), v as nix::libc::c_long)
    };
    let res = match at {
        Some(a) => {
            if poke(0, a) < 0 {
                -1
            } else {
                poke(7, 1)
            }
        }
        None => poke(7, 0),
    };
    if res < 0 {
        bail!("setting a breakpoint in {tid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn set_breakpoint(_tid: Pid, _at: Option<u64>) -> Result<()> {
    bail!("a breakpoint at the blob's entry uses x86 debug registers: x86_64 only so far")
}

/// Lets the threads `tids` of `leader` (all in ptrace stops) go, stopped:
/// the leader takes a SIGSTOP first, so no thread runs a single
/// instruction before the group stop catches it.
fn leave_stopped(leader: Pid, tids: &[Pid]) -> Result<()> {
    ptrace::detach(leader, Some(Signal::SIGSTOP)).with_context(|| format!("detaching from {leader}"))?;
    let stopped = || crate::procfs::stat(leader.as_raw(), leader.as_raw()).is_ok_and(|s| s.state == 'T');
    let t = std::time::Instant::now();
    while !stopped() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    for &t in tids.iter().filter(|&&t| t != leader) {
        let _ = ptrace::detach(t, None);
    }
    Ok(())
}

/// A synchronous fault signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE) pending
/// for thread `tid`, from its `/proc` status.
fn fault_pending(tid: Pid) -> Option<Signal> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let pending = status.lines().find_map(|l| l.strip_prefix("SigPnd:"))?;
    let bits = u64::from_str_radix(pending.trim(), 16).ok()?;
    [Signal::SIGSEGV, Signal::SIGBUS, Signal::SIGILL, Signal::SIGFPE]
        .into_iter()
        .find(|&s| bits & (1 << (s as u64 - 1)) != 0)
}

/// Keeps `SIGCHLD` blocked in this thread, and in the threads it starts,
/// while it lives, so that [`catch`] can sleep until a tracee stops: a
/// `SIGCHLD` nobody blocks is dropped on arrival (its default action is to
/// ignore it).
pub struct SigchldBlocked(SigSet);

impl SigchldBlocked {
    pub fn new() -> Result<SigchldBlocked> {
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::from(Signal::SIGCHLD)), Some(&mut old))
            .context("blocking SIGCHLD")?;
        Ok(SigchldBlocked(old))
    }
}

impl Drop for SigchldBlocked {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Sleeps until a `SIGCHLD` (a tracee stopped or exited) or for at most a
/// millisecond: another thread that does not block it (a test harness's)
/// may take the signal, and then the timeout is the wake-up.
fn wait_for_sigchld() {
    let set = SigSet::from(Signal::SIGCHLD);
    let timeout = nix::libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
    // SAFETY: the kernel reads the set and the timeout, both live locals,
    // and writes no siginfo (null).
    unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
}

/// Puts the program's own `SIGTRAP` action back, unmaps `start..start+len`
/// in the held task `leader` and lets the program run, or, if `stopped`, sit
/// stopped.
///
/// Each thread's trap at the end of the blob is a forced `SIGTRAP` taken
/// with every signal blocked, which makes the kernel reset the action to
/// `SIG_DFL` (the tracer swallows the signal itself): the program's
/// handler, or its `SIG_IGN`, is set again here, once no thread traps any
/// more.
///
/// With `watch`, the threads run on still traced (see [`watch`]) and
/// their TIDs are returned; otherwise they are detached.
pub fn release(
    leader: Pid,
    held: Held,
    (start, len): (u64, u64),
    sigtrap: &SigAction,
    stop: Option<i32>,
    watch: bool,
    leave: bool,
) -> Result<Vec<Pid>> {
    // Every thread is past its sigreturn. Run the calls in the first one
    // from the syscall instruction, which is still mapped when the last
    // call starts, then put its registers back.
    let ts = held.ts;
    let first = &ts[0];
    let restored = first.restored.context("first thread has no registers")?;
    // The program's own mask is in force now; a signal it lets through
    // (its interval timer, say) must wait until we are gone, not interrupt
    // the calls.
    let mask = sigmask(leader, None)?;
    sigmask(leader, Some(!0))?;
    if sigtrap.handler != 0 {
        // The bootstrap area is ours and done with: the kernel's sigaction
        // goes at its start.
        // The kernel's struct sigaction: three native words, the mask.
        let act: Vec<u8> = [sigtrap.handler, sigtrap.flags, sigtrap.restorer]
            .into_iter()
            .flat_map(|w| (w as usize).to_ne_bytes())
            .chain(sigtrap.mask.to_ne_bytes())
            .collect();
        crate::dump::memory::write_bytes(leader.as_raw(), start, &act).context("writing SIGTRAP's action")?;
        let signo = Signal::SIGTRAP as u64;
        let ret = run_syscall(leader, restored, first.insn, RT_SIGACTION, [signo, start, 0, 8])?;
        if ret != 0 {
            bail!("setting SIGTRAP's action in {leader} again failed: {ret}");
        }
    }
    let ret = run_syscall(leader, restored, first.insn, MUNMAP, [start, len, 0, 0])?;
    if ret != 0 {
        bail!("unmapping the bootstrap area in {leader} failed: {ret}");
    }
    regs::set_gpregs(leader.as_raw(), &restored).context("restoring the registers after the unmap")?;
    sigmask(leader, Some(mask))?;
    // Queued while every thread is held, the stop signal is the first
    // thing each one meets once let go: none runs program code first. The
    // one that stopped it before, as its parent's wait reports it; but the
    // kernel drops SIGTSTP and friends for a process of an orphaned group
    // (as a restored session's own group is): SIGSTOP there.
    if let Some(sig) = stop {
        let sig = if sig == nix::libc::SIGSTOP || group_orphaned(leader)? { nix::libc::SIGSTOP } else { sig };
        let sig = Signal::try_from(sig).context("the dumped stop signal")?;
        nix::sys::signal::kill(leader, sig).context("stopping the restored process again")?;
    }
    let tids: Vec<Pid> = ts.iter().map(|t| t.tid).collect();
    if leave {
        leave_stopped(leader, &tids)?;
        return Ok(vec![]);
    }
    // A stopped process is not watched: its stop is what it does first.
    if watch && stop.is_none() {
        for t in &ts {
            ptrace::cont(t.tid, None).with_context(|| format!("letting {} run", t.tid))?;
        }
        return Ok(ts.iter().map(|t| t.tid).collect());
    }
    for t in &ts {
        ptrace::detach(t.tid, None).with_context(|| format!("detaching from {}", t.tid))?;
    }
    Ok(vec![])
}

/// A restored process that died while watched.
pub struct Death {
    pub pid: Pid,
    /// What killed it, or its exit code.
    pub how: String,
    /// The first fault signal it got, put in words.
    pub first_fault: Option<String>,
    pub after: std::time::Duration,
}

/// A process let go still traced: its leader, its threads, and how to say
/// where an address lies in it.
pub type Watched<'a> = (Pid, Vec<Pid>, &'a dyn Fn(u64) -> String);

/// Watches processes let go by [`release`] with `watch` (each a leader,
/// its threads and how to say where an address lies) for `span`: signals
/// pass on to them as they would without us, new threads are followed,
/// and a process that dies is reported with the first fault it got. Then
/// every thread left is detached.
pub fn watch(procs: Vec<Watched<'_>>, span: std::time::Duration) -> Result<Vec<Death>> {
    let start = std::time::Instant::now();
    let mut deaths = vec![];
    let mut live: Vec<(usize, Pid)> =
        procs.iter().enumerate().flat_map(|(i, (_, ts, _))| ts.iter().map(move |&t| (i, t))).collect();
    let mut faults: Vec<Option<String>> = vec![None; procs.len()];
    while start.elapsed() < span && !live.is_empty() {
        let mut moved = false;
        let mut k = 0;
        while k < live.len() {
            let (i, tid) = live[k];
            let status = match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(s) => s,
                Err(_) => {
                    live.swap_remove(k);
                    continue;
                }
            };
            moved |= status != WaitStatus::StillAlive;
            match status {
                WaitStatus::StillAlive => {}
                WaitStatus::PtraceEvent(_, _, ev) if ev == nix::libc::PTRACE_EVENT_CLONE => {
                    if let Ok(new) = ptrace::getevent(tid) {
                        live.push((i, event_pid(new)));
                    }
                    let _ = ptrace::cont(tid, None);
                }
                WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_) => {
                    let _ = ptrace::cont(tid, None);
                }
                WaitStatus::Stopped(_, sig) => {
                    let fault = matches!(sig, Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE);
                    if fault && faults[i].is_none() {
                        let at = regs::gpregs(tid.as_raw()).map(|r| ip(&r)).unwrap_or(0);
                        let what = super::explain::signal(tid, sig, procs[i].2);
                        let place = (procs[i].2)(at);
                        faults[i] =
                            Some(format!("thread {tid} got {what}; its instruction pointer {at:#x} is {place}"));
                    }
                    // Delivered as it would have been: its handler may
                    // take it (a JVM's null checks do).
                    let _ = ptrace::cont(tid, Some(sig));
                }
                // Ending by itself is no fault, unless a fault came first.
                WaitStatus::Exited(_, code) if tid == procs[i].0 && faults[i].is_some() => {
                    let how = format!("exited with code {code}");
                    deaths.push(Death { pid: tid, how, first_fault: faults[i].take(), after: start.elapsed() });
                    live.retain(|&(j, _)| j != i);
                    continue;
                }
                WaitStatus::Signaled(_, sig, _) if tid == procs[i].0 => {
                    let how = format!("was killed by {sig}");
                    deaths.push(Death { pid: tid, how, first_fault: faults[i].take(), after: start.elapsed() });
                    live.retain(|&(j, _)| j != i);
                    continue;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    live.swap_remove(k);
                    continue;
                }
                _ => {
                    let _ = ptrace::cont(tid, None);
                }
            }
            k += 1;
        }
        if !moved {
            wait_for_sigchld();
        }
    }
    for (_, tid) in live {
        // Detaching needs a stop; a signal that comes with it goes on.
        if ptrace::interrupt(tid).is_ok() {
            let sig = match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, sig)) if sig != Signal::SIGTRAP => Some(sig),
                _ => None,
            };
            let _ = ptrace::detach(tid, sig);
        }
    }
    Ok(deaths)
}

/// Whether `pid`'s process group is orphaned: no member has its parent in
/// another group of the same session (the kernel's test before it lets
/// SIGTSTP, SIGTTIN or SIGTTOU stop a process).
fn group_orphaned(pid: Pid) -> Result<bool> {
    // (pid, ppid, pgrp, session) from /proc/PID/stat.
    let stat = |p: &str| -> Option<(i32, i32, i32, i32)> {
        let text = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = text.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((p.parse().ok()?, f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
    };
    let (_, _, pgrp, sid) = stat(&pid.to_string()).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let all: Vec<_> = std::fs::read_dir("/proc")
        .context("listing /proc")?
        .filter_map(|e| stat(e.ok()?.file_name().to_str()?))
        .collect();
    let parent = |ppid: i32| all.iter().find(|p| p.0 == ppid);
    Ok(!all.iter().filter(|m| m.2 == pgrp).any(|m| parent(m.1).is_some_and(|p| p.3 == sid && p.2 != pgrp)))
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

const MUNMAP: u32 = linux_raw_sys::general::__NR_munmap;
const RT_SIGACTION: u32 = linux_raw_sys::general::__NR_rt_sigaction;

/// The new thread's TID a clone event carries (a C long).
#[allow(clippy::useless_conversion)] // c_long is i32 on ARM
fn event_pid(msg: nix::libc::c_long) -> Pid {
    Pid::from_raw(i32::try_from(msg).unwrap_or(-1))
}

/// Runs system call `nr` in the held thread `tid` from the syscall
/// instruction at `insn`, its other registers as in `saved`; returns what
/// the kernel returned.
fn run_syscall(tid: Pid, saved: Gp, insn: u64, nr: u32, args: [u64; 4]) -> Result<i64> {
    let r = call::call(&saved, insn, nr, &args, None);
    regs::set_gpregs(tid.as_raw(), &r).with_context(|| format!("setting up system call {nr}"))?;
    for stage in 0..2 {
        ptrace::syscall(tid, None)?;
        match waitpid(tid, Some(WaitPidFlag::__WALL))? {
            WaitStatus::PtraceSyscall(_) if stage == 0 => call::at_entry(tid.as_raw(), nr)?,
            WaitStatus::PtraceSyscall(_) => {}
            other => bail!("restored task {tid}: unexpected {other:?} in system call {nr}"),
        }
    }
    let (ended, result) = call::outcome(&regs::gpregs(tid.as_raw())?, insn);
    if !ended {
        bail!("restored task {tid}: system call {nr} ended elsewhere than after {insn:#x}");
    }
    Ok(result)
}
