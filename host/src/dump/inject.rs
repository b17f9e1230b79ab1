//! Running system calls inside a stopped thread, for state only the task
//! itself can ask for (signal actions, the alternate stack, timers, prctl
//! values, brk).
//!
//! The thread is pointed at a `syscall` instruction already in its memory
//! with the call in its registers and run from syscall entry to syscall
//! exit under PTRACE_SYSCALL. Nothing is written into its code. Results that
//! are structures land in a scratch area below the stack's red zone, whose
//! old bytes are put back. All signals are blocked meanwhile so no handler
//! can run on the borrowed registers.
//!
//! Leaving: the registers and mask go back exactly as they were, and the
//! thread is interrupted once more so it stops again inside the signal code,
//! where the kernel decides about restarting an interrupted system call from
//! the original registers, just as if we had never run anything.

use anyhow::{Context, Result, bail};
use nix::libc::{self, c_void, user_regs_struct};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::memory::{read_bytes, write_bytes};

/// Bytes of scratch memory offered to calls.
pub const SCRATCH: usize = 512;
/// The x86_64 ABI lets leaf code use 128 bytes below the stack pointer.
const RED_ZONE: u64 = 128;

pub struct Injector {
    tid: i32,
    saved: user_regs_struct,
    saved_mask: u64,
    insn: u64,
    scratch: u64,
    saved_scratch: Vec<u8>,
    /// Registers or memory were changed and must be put back.
    dirty: bool,
}

impl Injector {
    /// Prepares `tid` (in a PTRACE_INTERRUPT stop) to run system calls from
    /// the `syscall` instruction at `insn`.
    pub fn new(tid: i32, insn: u64) -> Result<Injector> {
        let t = Pid::from_raw(tid);
        let saved = ptrace::getregs(t).with_context(|| format!("registers of task {tid}"))?;
        let saved_mask = super::regs::sigmask(tid)?;
        let scratch = (saved.rsp - RED_ZONE - SCRATCH as u64) & !15;
        let saved_scratch = read_bytes(tid, scratch, SCRATCH)
            .with_context(|| format!("task {tid}: the stack below {:#x} is not readable", saved.rsp))?;
        Ok(Injector { tid, saved, saved_mask, insn, scratch, saved_scratch, dirty: false })
    }

    /// Address of the scratch area in the task.
    pub fn scratch(&self) -> u64 {
        self.scratch
    }

    pub fn read_scratch(&self, len: usize) -> Result<Vec<u8>> {
        read_bytes(self.tid, self.scratch, len.min(SCRATCH))
    }

    /// Runs system call `nr` with `args`; returns the raw result (negative
    /// errno on failure).
    pub fn syscall(&mut self, nr: u32, args: &[u64]) -> Result<i64> {
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        if !self.dirty {
            set_sigmask(tid, !0)?;
            self.dirty = true;
        }
        let mut r = self.saved;
        r.rip = self.insn;
        r.rax = nr as u64;
        // Not inside a system call: the kernel must not restart anything
        // when it lets the thread go on to our instruction.
        r.orig_rax = u64::MAX;
        let regs = [&mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9];
        for (slot, a) in regs.into_iter().zip(args) {
            *slot = *a;
        }
        ptrace::setregs(t, r).with_context(|| format!("task {tid}: setting registers for system call {nr}"))?;
        for stage in ["entry", "exit"] {
            ptrace::syscall(t, None).with_context(|| format!("task {tid}: running system call {nr}"))?;
            self.wait_syscall_stop(nr, stage)?;
        }
        let out = ptrace::getregs(t).with_context(|| format!("task {tid}: result of system call {nr}"))?;
        if out.rip != self.insn + 2 {
            bail!("task {tid}: system call {nr} ended at {:#x}, not after {:#x}", out.rip, self.insn);
        }
        Ok(out.rax as i64)
    }

    fn wait_syscall_stop(&self, nr: u32, stage: &str) -> Result<()> {
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
                other => bail!("task {tid}: unexpected {other:?} during injected system call {nr} ({stage})"),
            }
        }
    }

    /// Puts everything back and leaves the thread in an interrupt stop.
    pub fn finish(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let tid = self.tid;
        let t = Pid::from_raw(tid);
        write_bytes(tid, self.scratch, &self.saved_scratch)?;
        ptrace::setregs(t, self.saved).with_context(|| format!("task {tid}: restoring registers"))?;
        set_sigmask(tid, self.saved_mask)?;
        ptrace::interrupt(t).with_context(|| format!("task {tid}: interrupting again"))?;
        ptrace::cont(t, None).with_context(|| format!("task {tid}: resuming into the interrupt"))?;
        match waitpid(t, Some(WaitPidFlag::__WALL)).with_context(|| format!("task {tid}: waiting to stop"))? {
            WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => Ok(()),
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

/// Finds a `syscall` instruction (0f 05) in `bytes` mapped at `base`.
pub fn find_syscall_insn(bytes: &[u8], base: u64) -> Option<u64> {
    bytes.windows(2).position(|w| w == [0x0f, 0x05]).map(|i| base + i as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_instruction() {
        assert_eq!(super::find_syscall_insn(&[0x90, 0x0f, 0x05, 0xc3], 0x1000), Some(0x1001));
        assert_eq!(super::find_syscall_insn(&[0x0f, 0x90, 0x05], 0x1000), None);
    }
}
