//! A thread's seccomp state, put back right before its credentials: its
//! filters in the order they were installed, then strict mode if it had
//! it. Before the credentials because installing a filter takes
//! CAP_SYS_ADMIN or no_new_privs, and the credentials may drop the first.
//! The host holds the task with `PTRACE_O_SUSPEND_SECCOMP` until it lets
//! the program run, so the blob's own calls after this are not filtered.

use revenant_arch::{Errno, sys};
use revenant_blob_abi::{SECCOMP_ALL_THREADS, SECCOMP_STRICT, Seccomp};

/// Whether every step points inside `progs` at whole instructions and at a
/// thread that exists.
pub fn valid(steps: &[Seccomp], progs: &[u8], threads: usize) -> bool {
    steps.iter().all(|s| {
        let end = s.prog_offset as usize + s.prog_len as usize;
        let thread = (s.thread as usize) < threads || (s.thread == SECCOMP_ALL_THREADS && s.flags != SECCOMP_STRICT);
        thread && end <= progs.len() && s.prog_len % 8 == 0
    })
}

/// Takes every step of thread `thread` (or [`SECCOMP_ALL_THREADS`]); the
/// error names the step.
pub fn apply(steps: &[Seccomp], progs: &[u8], thread: u32) -> Result<(), (&'static str, Errno)> {
    for s in steps.iter().filter(|s| s.thread == thread) {
        if s.flags == SECCOMP_STRICT {
            sys::seccomp_strict().map_err(|e| ("entering strict mode", e))?;
            continue;
        }
        // In bounds: checked by `valid` before the restore began.
        let prog = &progs[s.prog_offset as usize..][..s.prog_len as usize];
        sys::seccomp_filter(s.flags, prog).map_err(|e| ("installing a filter", e))?;
    }
    Ok(())
}
