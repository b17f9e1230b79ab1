//! Running system calls inside a stopped thread, for state only the task
//! itself can ask for (signal actions, the alternate stack, timers, prctl
//! values, brk).
//!
//! Nothing is written into the program's code. The thread runs existing
//! instructions under PTRACE_SYSCALL, from syscall entry to syscall exit;
//! results that are structures land in a scratch area below the stack's
//! red zone, whose old bytes are put back. All signals are blocked
//! meanwhile so no handler can run on the borrowed registers.
//!
//! revenant may die at any moment (SIGKILL, the OOM killer), and the kernel
//! then lets the thread go on from wherever it is. So, where the program's
//! code has the two pieces it needs (a [`Trampoline::Safe`]), the thread is
//! never left on borrowed registers that lead anywhere but home: before
//! anything is changed, a signal frame holding its real registers, FPU
//! state and signal mask is written below its stack; each call runs from a
//! `syscall; ret` whose `ret` goes to an `rt_sigreturn`, and between calls
//! the registers point at that `rt_sigreturn`. A thread let go at any step
//! finishes the call at hand (all of them only read) and returns through
//! the frame to exactly its own state.
//!
//! Leaving normally: the mask and registers go back exactly as they were,
//! and the thread is interrupted once more so it stops again inside the
//! signal code, where the kernel decides about restarting an interrupted
//! system call from the original registers, just as if we had never run
//! anything.

use anyhow::{Context, Result, bail};
use nix::libc::{self, c_void};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::memory::{read_bytes, write_bytes};
use crate::fault;
use crate::regs::dump::{self as regs, Gp};

cfg_select! {
    target_arch = "x86_64" => {
        pub(crate) mod x86_64;
        pub(crate) use x86_64 as arch;
    }
    target_arch = "arm" => {
        pub(crate) mod arm;
        pub(crate) use arm as arch;
    }
}

pub use arch::{find_syscall_insn, scan, syscall_before};

/// Bytes of scratch memory offered to calls.
pub const SCRATCH: usize = 512;

/// The instructions injected calls run on (addresses with the Thumb bit
/// on ARM).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trampoline {
    /// A system call followed by a return (`syscall; ret`, `svc 0; bx lr`)
    /// and an `rt_sigreturn`: a thread let go mid-injection returns to its
    /// own state.
    Safe { syscall_ret: u64, sigreturn: u64 },
    /// A bare system call instruction: a thread let go mid-injection runs
    /// on with the borrowed registers and likely dies. Only for programs
    /// lacking the pieces of [`Trampoline::Safe`].
    Bare { syscall: u64 },
}

impl Trampoline {
    fn syscall(&self) -> u64 {
        match *self {
            Trampoline::Safe { syscall_ret, .. } => syscall_ret,
            Trampoline::Bare { syscall } => syscall,
        }
    }
}

/// The borrowed area below the thread's stack: scratch for results and,
/// for a safe trampoline, the return frame.
struct Borrowed {
    /// Lowest address; the frame starts here.
    low: u64,
    old: Vec<u8>,
    scratch: u64,
    frame: Option<Vec<u8>>,
}

pub struct Injector {
    tid: i32,
    saved: Gp,
    saved_mask: u64,
    tramp: Trampoline,
    area: Borrowed,
    /// Registers or memory were changed and must be put back.
    dirty: bool,
    /// A SIGSTOP was held back during a call.
    stop_later: bool,
}

impl Injector {
    /// Prepares `tid` (in a PTRACE_INTERRUPT stop) to run system calls on
    /// `tramp`.
    pub fn new(tid: i32, tramp: Trampoline) -> Result<Injector> {
        let saved = regs::gpregs(tid).with_context(|| format!("registers of task {tid}"))?;
        let saved_mask = regs::sigmask(tid)?;
        let scratch = (regs::sp(&saved) - arch::RED_ZONE - SCRATCH as u64) & !15;
        let (low, frame) = match tramp {
            Trampoline::Safe { sigreturn, .. } => {
                let mut home = saved;
                regs::restart_syscall(&mut home);
                let (low, frame) = arch::frame(tid, &home, saved_mask, scratch, sigreturn)?;
                (low, Some(frame))
            }
            Trampoline::Bare { .. } => (scratch, None),
        };
        let top = scratch + SCRATCH as u64;
        let old = read_bytes(tid, low, (top - low) as usize)
            .with_context(|| format!("task {tid}: the stack below {:#x} is not readable", regs::sp(&saved)))?;
        let area = Borrowed { low, old, scratch, frame };
        Ok(Injector { tid, saved, saved_mask, tramp, area, dirty: false, stop_later: false })
    }

    /// Address of the scratch area in the task.
    pub fn scratch(&self) -> u64 {
        self.area.scratch
    }

    pub fn read_scratch(&self, len: usize) -> Result<Vec<u8>> {
        read_bytes(self.tid, self.area.scratch, len.min(SCRATCH))
    }

    fn step(&self, what: &str) -> Result<()> {
        fault::step(|| format!("task {}: {what}", self.tid))
    }

    /// Writes the frame and points the thread at it, then blocks signals:
    /// in this order, a thread let go between two steps has its own mask
    /// back from the frame or never lost it.
    fn borrow(&mut self) -> Result<()> {
        let tid = self.tid;
        self.dirty = true;
        if let (Some(frame), Trampoline::Safe { sigreturn, .. }) = (&self.area.frame, self.tramp) {
            write_bytes(tid, self.area.low, frame).with_context(|| format!("task {tid}: writing the return frame"))?;
            self.step("return frame written")?;
            let r = arch::at_sigreturn(&self.saved, sigreturn, self.area.low);
            regs::set_gpregs(tid, &r).with_context(|| format!("task {tid}: pointing at the frame"))?;
            self.step("pointed at the return frame")?;
        }
        set_sigmask(tid, !0)?;
        self.step("signals blocked")
    }

    /// Runs system call `nr` with `args`; returns the raw result (negative
    /// errno on failure).
    pub fn syscall(&mut self, nr: u32, args: &[u64]) -> Result<i64> {
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        if !self.dirty {
            self.borrow()?;
        }
        let ret = match (self.tramp, &self.area.frame) {
            (Trampoline::Safe { sigreturn, .. }, Some(_)) => Some((self.area.low, sigreturn)),
            _ => None,
        };
        let r = arch::call(&self.saved, self.tramp.syscall(), nr, args, ret);
        regs::set_gpregs(tid, &r).with_context(|| format!("task {tid}: setting registers for system call {nr}"))?;
        self.step(&format!("registers set for system call {nr}"))?;
        for stage in ["entry", "exit"] {
            ptrace::syscall(t, None).with_context(|| format!("task {tid}: running system call {nr}"))?;
            self.wait_syscall_stop(nr, stage)?;
            if stage == "entry" {
                arch::at_entry(tid, nr)?;
            }
            self.step(&format!("system call {nr} {stage}"))?;
        }
        let out = regs::gpregs(tid).with_context(|| format!("task {tid}: result of system call {nr}"))?;
        let (ended, result) = arch::outcome(&out, self.tramp.syscall());
        if !ended {
            bail!("task {tid}: system call {nr} ended elsewhere than after {:#x}", self.tramp.syscall());
        }
        Ok(result)
    }

    fn wait_syscall_stop(&mut self, nr: u32, stage: &str) -> Result<()> {
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        loop {
            match waitpid(t, Some(WaitPidFlag::__WALL))
                .with_context(|| format!("task {tid}: waiting for system call {nr} {stage}"))?
            {
                WaitStatus::PtraceSyscall(_) => return Ok(()),
                // The interrupt that stopped the thread may still be queued
                // and report first.
                WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => {
                    ptrace::syscall(t, None)?;
                }
                WaitStatus::Stopped(_, Signal::SIGKILL) | WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    bail!("task {tid} died during injected system call {nr}")
                }
                // A SIGSTOP sent to the program (it cannot be blocked) is
                // about to stop it on our borrowed registers: held back
                // now, sent again once the thread is itself.
                WaitStatus::Stopped(_, Signal::SIGSTOP) => {
                    self.stop_later = true;
                    ptrace::syscall(t, None)?;
                }
                other => bail!("task {tid}: unexpected {other:?} during injected system call {nr} ({stage})"),
            }
        }
    }

    /// Puts everything back and leaves the thread in an interrupt stop.
    /// True if a SIGSTOP came meanwhile: it is pending again, and the
    /// process stops once let go.
    pub fn finish(mut self) -> Result<bool> {
        let stopped = self.stop_later;
        self.restore()?;
        Ok(stopped)
    }

    /// The reverse of [`Self::borrow`], safe to be let go at every step:
    /// the mask first (the registers still lead to the frame, which holds
    /// it too); the interrupt before the registers, so that a thread let go
    /// with its own registers at a syscall exit passes through the signal
    /// code, which restarts its interrupted call; the memory last.
    fn restore(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        set_sigmask(tid, self.saved_mask)?;
        self.step("signal mask restored")?;
        ptrace::interrupt(t).with_context(|| format!("task {tid}: interrupting again"))?;
        self.step("interrupt queued")?;
        regs::set_gpregs(tid, &self.saved).with_context(|| format!("task {tid}: restoring registers"))?;
        self.step("registers restored")?;
        write_bytes(tid, self.area.low, &self.area.old)?;
        self.step("stack restored")?;
        ptrace::cont(t, None).with_context(|| format!("task {tid}: resuming into the interrupt"))?;
        match waitpid(t, Some(WaitPidFlag::__WALL)).with_context(|| format!("task {tid}: waiting to stop"))? {
            WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => {
                if std::mem::take(&mut self.stop_later) {
                    // Pending while we hold the thread; it stops the
                    // program when we let go, as it would have.
                    nix::sys::signal::kill(Pid::from_raw(tid), Signal::SIGSTOP)
                        .with_context(|| format!("task {tid}: sending back its SIGSTOP"))?;
                }
                Ok(())
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => bail!("task {tid} died after injection"),
            other => bail!("task {tid}: unexpected {other:?} while stopping after injection"),
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        // An error path: put the thread back as well as we can before the
        // tree is released.
        let _ = self.restore();
    }
}

fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads `addr` (= 8) bytes from `data`.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK, tid, size_of::<u64>() as *mut c_void, &mask as *const u64) };
    if r < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_SETSIGMASK of task {tid}"));
    }
    Ok(())
}
