//! Stopping a process tree with ptrace, and letting it go again.
//!
//! Every thread is seized (PTRACE_SEIZE, which unlike PTRACE_ATTACH sends
//! no SIGSTOP the program could notice) and interrupted. A process can fork
//! or clone while we work through it, so the thread and child lists are
//! read again until a pass finds nothing new: a stopped thread cannot
//! create anything, so a pass that adds no thread means every creator is
//! stopped.
//!
//! [`Frozen`] owns the stopped tree. Dropping it resumes every task, which
//! makes every error path of a dump leave the tree as it was; a successful
//! dump either calls [`Frozen::release`] (`--leave-running`) or
//! [`Frozen::kill`].

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::procfs;

/// One stopped process.
#[derive(Debug, Clone)]
pub struct FrozenProc {
    pub pid: i32,
    /// The parent inside the tree; 0 for the root.
    pub ppid: i32,
    /// The leader first, then the other threads in tid order.
    pub threads: Vec<i32>,
}

/// A stopped tree; resumed when dropped.
#[derive(Debug)]
pub struct Frozen {
    /// Parents before their children.
    pub procs: Vec<FrozenProc>,
    /// Every thread we seized, in the order seized, and whether it is in a
    /// ptrace stop we have reaped.
    seized: Vec<(i32, bool)>,
    /// Children that had exited and were not waited for: (pid, ppid).
    pub zombies: Vec<(i32, i32)>,
    /// Processes a signal had stopped before we came: (pid, signal).
    pub stopped: Vec<(i32, Signal)>,
    done: bool,
}

/// How long freezing may take when no `--timeout` bounds the dump. A task
/// stops only when it leaves an uninterruptible wait (a vfork parent
/// until its child execs or exits, a read from a dead NFS server never):
/// past this the dump gives up, naming it, rather than hang. CRIU's
/// default freeze timeout.
pub const FREEZE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Frozen {
    /// Seizes and stops every thread of `root` and of all its descendants;
    /// within [`FREEZE_LIMIT`] unless `bounded` (a deadline of the caller's
    /// runs).
    pub fn freeze(root: i32, bounded: bool) -> Result<Frozen> {
        let limit = (!bounded).then(|| crate::fault::Deadline::start(FREEZE_LIMIT)).transpose()?;
        let mut f =
            Frozen { procs: Vec::new(), seized: Vec::new(), zombies: Vec::new(), stopped: Vec::new(), done: false };
        // On error `f` is dropped here, resuming whatever was stopped.
        let frozen = f.freeze_tree(root);
        let timed_out = limit.is_some() && crate::fault::timed_out();
        drop(limit);
        frozen.map_err(|e| {
            if timed_out {
                e.context(format!(
                    "the tree did not stop within {} s (--timeout gives it longer)",
                    FREEZE_LIMIT.as_secs()
                ))
            } else {
                e
            }
        })?;
        Ok(f)
    }

    fn freeze_tree(&mut self, root: i32) -> Result<()> {
        let mut queue = vec![(root, 0)];
        let mut seen = BTreeSet::new();
        while let Some((pid, ppid)) = queue.pop() {
            if !seen.insert(pid) {
                continue;
            }
            // A zombie cannot be seized and has nothing to read but its
            // stat. Its parent is stopped, so it stays as it is. (A leader
            // that ended with pthread_exit shows Z too, but its process
            // lives on in its other threads.)
            let dead = procfs::stat(pid, pid).is_ok_and(|s| s.state == 'Z');
            if ppid != 0 && dead && procfs::tids(pid).is_ok_and(|t| t == [pid]) {
                self.zombies.push((pid, ppid));
                continue;
            }
            let threads = self.freeze_process(pid)?;
            // Children can only appear through a thread of this process, and
            // all of them are stopped now.
            for c in procfs::children(pid, &threads)? {
                queue.push((c, pid));
            }
            self.procs.push(FrozenProc { pid, ppid, threads });
        }
        Ok(())
    }

    fn freeze_process(&mut self, pid: i32) -> Result<Vec<i32>> {
        let mut mine: BTreeSet<i32> = BTreeSet::new();
        loop {
            let now = match procfs::tids(pid) {
                Ok(t) => t,
                Err(e) if pid_gone(pid) => bail!("process {pid} exited while the tree was being frozen: {e:#}"),
                Err(e) => return Err(e),
            };
            let new: Vec<i32> = now.iter().copied().filter(|t| !mine.contains(t)).collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                if self.seize(pid, tid)? {
                    mine.insert(tid);
                }
            }
        }
        if !mine.contains(&pid) {
            bail!("process {pid}: its leader thread could not be seized (it exited?)");
        }
        // Threads that exited after being seized are not part of the dump.
        let alive = procfs::tids(pid)?;
        let mut threads = vec![pid];
        threads.extend(mine.iter().copied().filter(|t| *t != pid && alive.contains(t)));
        Ok(threads)
    }

    /// Seizes and stops one thread. False when it exited before we got it.
    fn seize(&mut self, pid: i32, tid: i32) -> Result<bool> {
        let t = Pid::from_raw(tid);
        // Under seccomp, the calls we inject must not meet the thread's
        // filters (or strict mode's kill).
        let sandboxed = procfs::status(pid, tid).is_ok_and(|s| s.seccomp != 0);
        let opts =
            Options::PTRACE_O_TRACESYSGOOD | if sandboxed { crate::seccomp::SUSPEND_SECCOMP } else { Options::empty() };
        match ptrace::seize(t, opts) {
            Ok(()) => {}
            Err(Errno::ESRCH) if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() => {
                return Ok(false);
            }
            Err(Errno::EPERM) => {
                let state = procfs::stat(pid, tid).map(|s| s.state).unwrap_or('?');
                if state == 'Z' {
                    bail!("task {tid} of process {pid} exited while the tree was being frozen; dump again");
                }
                bail!(
                    "cannot seize task {tid} of process {pid}: permission denied (is it already traced, \
                     or do we lack CAP_SYS_PTRACE?)"
                );
            }
            Err(e) => return Err(e).with_context(|| format!("PTRACE_SEIZE of task {tid} (process {pid})")),
        }
        self.seized.push((tid, false));
        crate::fault::step(|| format!("task {tid} seized"))?;
        ptrace::interrupt(t).with_context(|| format!("PTRACE_INTERRUPT of task {tid} (process {pid})"))?;
        self.wait_stop(pid, tid)?;
        crate::fault::step(|| format!("task {tid} stopped"))?;
        Ok(true)
    }

    /// Waits until `tid` sits in the stop PTRACE_INTERRUPT asked for.
    fn wait_stop(&mut self, pid: i32, tid: i32) -> Result<()> {
        let t = Pid::from_raw(tid);
        loop {
            let st = match waitpid(t, Some(WaitPidFlag::__WALL)) {
                Ok(st) => st,
                Err(nix::errno::Errno::EINTR) if crate::fault::timed_out() => {
                    bail!("task {tid} of process {pid} did not stop: {}", waiting_in(pid, tid))
                }
                Err(e) => return Err(e).with_context(|| format!("waiting for task {tid} to stop")),
            };
            match st {
                WaitStatus::PtraceEvent(_, Signal::SIGTRAP, ev) if ev == nix::libc::PTRACE_EVENT_STOP => {
                    self.mark_stopped(tid);
                    return Ok(());
                }
                WaitStatus::PtraceEvent(_, sig, ev) if ev == nix::libc::PTRACE_EVENT_STOP => {
                    // A group stop: the process was stopped by SIGSTOP or
                    // similar before we came. The calls we inject run it all
                    // the same; it is stopped again when we let go.
                    self.mark_stopped(tid);
                    if !self.stopped.iter().any(|s| s.0 == pid) {
                        self.stopped.push((pid, sig));
                    }
                    return Ok(());
                }
                WaitStatus::Stopped(_, sig) => {
                    // A signal was about to be delivered. Let the task have
                    // it; the interrupt stays pending and stops it next.
                    ptrace::cont(t, sig).with_context(|| format!("passing {sig} on to task {tid}"))?;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    self.seized.retain(|(x, _)| *x != tid);
                    bail!("task {tid} of process {pid} exited while being frozen");
                }
                other => {
                    // Syscall stops cannot happen (we never asked for them);
                    // anything else: resume and wait for the interrupt.
                    let _ = other;
                    ptrace::cont(t, None).with_context(|| format!("resuming task {tid}"))?;
                }
            }
        }
    }

    fn mark_stopped(&mut self, tid: i32) {
        if let Some(e) = self.seized.iter_mut().find(|(t, _)| *t == tid) {
            e.1 = true;
        }
    }

    /// Every thread of every process.
    pub fn all_threads(&self) -> impl Iterator<Item = i32> + '_ {
        self.procs.iter().flat_map(|p| p.threads.iter().copied())
    }

    /// Resumes the tree as it was.
    pub fn release(mut self) -> Result<()> {
        self.done = true;
        detach_all(&self.seized, &self.stopped)
    }

    /// Kills every process of the tree (CRIU's default after a dump) and
    /// collects what only we, their tracer, can collect: every thread, and
    /// the leaders that are not our own children (our children's parent
    /// wait does that job). An error says which tasks are still there.
    pub fn kill(mut self) -> Result<()> {
        self.done = true;
        for p in &self.procs {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        let me = std::process::id() as i32;
        let others = self.procs.iter().flat_map(|p| p.threads[1..].iter().copied()).collect();
        let leaders =
            self.procs.iter().map(|p| p.pid).filter(|&pid| procfs::stat(pid, pid).map_or(true, |s| s.ppid != me));
        let left = crate::reap::collect(others, leaders.collect());
        if !left.is_empty() {
            bail!("killed tasks {left:?} were not reported gone within {:?}", crate::reap::BOUND);
        }
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done {
            let _ = detach_all(&self.seized, &self.stopped);
        }
    }
}

/// Lets every seized thread go; a process that was stopped is stopped
/// again.
fn detach_all(seized: &[(i32, bool)], stopped: &[(i32, Signal)]) -> Result<()> {
    let mut first_err = None;
    for (tid, in_stop) in seized {
        if !*in_stop {
            // PTRACE_DETACH needs a ptrace stop. One still in an
            // uninterruptible wait (why the freeze gave up) cannot be
            // detached before it leaves it: it is let go when this process
            // exits, which the command does at once.
            let t = Pid::from_raw(*tid);
            if ptrace::interrupt(t).is_ok() && !stops_within(t, std::time::Duration::from_millis(500)) {
                first_err.get_or_insert(anyhow::anyhow!(
                    "task {tid} did not stop to be let go; it is let go when this process exits"
                ));
            }
        }
    }
    // With every thread held, a queued SIGSTOP is the first thing each one
    // meets once let go (SIGSTOP whatever stopped it: the kernel drops
    // SIGTSTP and friends for an orphaned group).
    for (pid, _) in stopped {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
    }
    // Children before parents: a parent never runs while a child of the
    // tree is still stopped under us.
    for (tid, _) in seized.iter().rev() {
        let t = Pid::from_raw(*tid);
        match ptrace::detach(t, None) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("detaching from task {tid}: {e}"));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Whether `t` reports a stop (or is gone) within `limit`.
fn stops_within(t: Pid, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        match waitpid(t, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if start.elapsed() < limit => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) | Err(_) => return true,
        }
    }
}

/// What task `tid` of `pid` is doing, from its stat and wchan: "in
/// uninterruptible sleep (D), waiting in do_vfork", say.
fn waiting_in(pid: i32, tid: i32) -> String {
    let task = |f: &str| procfs::read_string(pid, &format!("task/{tid}/{f}")).unwrap_or_default();
    let state = task("stat").rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()).unwrap_or('?');
    let what = match state {
        'D' => "in uninterruptible sleep (D)".to_string(),
        'R' => "running (R)".to_string(),
        'S' => "sleeping (S)".to_string(),
        c => format!("in state {c}"),
    };
    match task("wchan").trim() {
        "" | "0" => what,
        w if w.contains("clone") || w.contains("vfork") => {
            format!("{what}, waiting in {w} (a vfork parent waits until its child execs or exits)")
        }
        w => format!("{what}, waiting in {w}"),
    }
}

fn pid_gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
