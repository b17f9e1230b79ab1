//! What the host sets from outside while a restored process is held right
//! before its first instruction: what only another process may set, or
//! what the restored task cannot set for itself.

use anyhow::{Context, Result, bail};
use nix::libc;

use super::plan::ProcessPlan;

/// Gives `p` its OOM score adjustment, and each of its
/// threads its scheduling policy, priority and nice value, from outside,
/// while it is held.
pub(super) fn set_held_state(p: &ProcessPlan) -> Result<()> {
    let write = |name: &str, value: String| -> Result<()> {
        let path = format!("/proc/{}/{name}", p.pid);
        if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() == value) {
            return Ok(());
        }
        std::fs::write(&path, &value).with_context(|| format!("PID {}: setting {name} to {value}", p.pid))
    };
    if let Some(adj) = p.knobs.oom_score_adj {
        write("oom_score_adj", adj.to_string())?;
    }
    if !p.owners.is_empty() {
        set_owners(p)?;
    }
    // Read as 8 hex digits; written in C syntax (a leading 0 alone is octal).
    if let Some(f) = p.knobs.coredump_filter
        && std::fs::read_to_string(format!("/proc/{}/coredump_filter", p.pid))
            .is_ok_and(|now| now.trim() != format!("{f:08x}"))
    {
        write("coredump_filter", format!("{f:#x}"))?;
    }

    if let Some(nice) = p.knobs.autogroup_nice
        && std::fs::read_to_string(format!("/proc/{}/autogroup", p.pid))
            .is_ok_and(|now| !now.trim_end().ends_with(&format!(" nice {nice}")))
    {
        write("autogroup", nice.to_string())?;
    }

    const SCHED_BATCH: u32 = 3;
    const SCHED_IDLE: u32 = 5;
    for t in &p.threads {
        let s = t.sched;
        let param = libc::sched_param { sched_priority: s.prio as i32 };
        // SAFETY: a plain system call on a TID and a parameter of ours.
        if unsafe { libc::sched_setscheduler(t.tid, s.policy as i32, &param) } < 0 {
            let e = std::io::Error::last_os_error();
            bail!("PID {}: thread {}: scheduling policy {} priority {}: {e}", p.pid, t.tid, s.policy, s.prio);
        }
        if matches!(s.policy & !(libc::SCHED_RESET_ON_FORK as u32), 0 | SCHED_BATCH | SCHED_IDLE) {
            // SAFETY: as above.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, t.tid as libc::id_t, s.nice) } < 0 {
                let e = std::io::Error::last_os_error();
                bail!("PID {}: thread {}: nice {}: {e}", p.pid, t.tid, s.nice);
            }
        }
        if !t.affinity.is_empty() {
            let len = std::mem::size_of_val(t.affinity.as_slice());
            // SAFETY: the kernel reads `len` bytes of a live slice.
            if unsafe { libc::syscall(libc::SYS_sched_setaffinity, t.tid, len, t.affinity.as_ptr()) } < 0 {
                let e = std::io::Error::last_os_error();
                bail!(
                    "PID {}: thread {}: CPU affinity {:x?} (none of those CPUs here?): {e}",
                    p.pid,
                    t.tid,
                    t.affinity
                );
            }
        }
        // Set only where it differs from what the thread has now: an I/O
        // priority never set follows the nice value, one set no longer does.
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        // SAFETY: a plain system call on integers.
        let now = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, t.tid) };
        if let Some(prio) = t.ioprio
            && now != prio as libc::c_long
            // SAFETY: as above.
            && unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, t.tid, prio) } < 0
        {
            let e = std::io::Error::last_os_error();
            bail!("PID {}: thread {}: I/O priority {prio:#x}: {e}", p.pid, t.tid);
        }
    }
    Ok(())
}

/// Gives each description of `p` that had one its signal owner and signal,
/// through a copy of one of its fds (`pidfd_getfd`: the same description).
/// The kernel keeps the uids of whoever sets the owner and checks them when
/// it signals: this thread takes the dumped ones for the call (raw
/// `setresuid` changes only the calling thread, and the saved uid 0 brings
/// it back).
fn set_owners(p: &ProcessPlan) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let pidfd = crate::procfs::pidfd(p.pid)?;
    for o in &p.owners {
        let what = || {
            format!(
                "PID {}: fd {}: setting its owner {} (type {}) and signal {}",
                p.pid, o.fd, o.pid, o.pid_type, o.signum
            )
        };
        // SAFETY: as above.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), o.fd, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).with_context(what);
        }
        // SAFETY: a fresh fd of ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let set_sig = linux_raw_sys::general::F_SETSIG as libc::c_int;
        // SAFETY: fcntl with integer arguments on our fd.
        if o.signum != 0 && unsafe { libc::fcntl(fd.as_raw_fd(), set_sig, o.signum as libc::c_int) } < 0 {
            return Err(std::io::Error::last_os_error()).with_context(what);
        }
        if o.pid == 0 {
            continue;
        }
        let owner = linux_raw_sys::general::f_owner_ex { type_: o.pid_type as _, pid: o.pid as _ };
        // SAFETY: per-thread credential switches by raw system call, undone
        // below; fcntl reads one f_owner_ex from a live local.
        let res = unsafe {
            if libc::syscall(libc::SYS_setresuid, o.uid, o.euid, u32::MAX) < 0 {
                return Err(std::io::Error::last_os_error()).with_context(what);
            }
            let res = libc::fcntl(fd.as_raw_fd(), linux_raw_sys::general::F_SETOWN_EX as libc::c_int, &owner);
            let err = std::io::Error::last_os_error();
            if libc::syscall(libc::SYS_setresuid, 0, 0, u32::MAX) < 0 {
                // This thread cannot get root back: nothing after it can work.
                std::process::abort();
            }
            (res, err)
        };
        if res.0 < 0 {
            return Err(res.1).with_context(what);
        }
    }
    Ok(())
}
