//! Per-process and per-thread state of a frozen process: what /proc and
//! ptrace tell from outside, and what needs injected system calls.

use anyhow::{Context, Result, bail};
use linux_raw_sys::general as nr;

use super::WalkGate;
use super::inject::{Injector, Trampoline, find_syscall_insn, scan, syscall_before};
use super::maps::{PAGE, PROT_EXEC, Vma, status};
use super::memory::read_bytes;
use super::model::{Creds, Seccomp, SigAction, TaskCore, Thread};
use crate::files::Fown;
use crate::procfs;
use crate::regs::dump as regs;

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;
const SIGCHLD: u32 = 17;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_GET_MDWE: u64 = 66;
const PR_GET_TSC: u64 = 25;
const PR_TSC_SIGSEGV: u32 = 2;
const PR_GET_MEMORY_MERGE: u64 = 68;

/// Finds the instructions injected calls of `pid`'s threads run on: a
/// [`Trampoline::Safe`] from its vDSO and code (smallest areas first: the
/// dynamic loader has both pieces), else a bare `syscall` in the vDSO,
/// right before a thread stopped in a system call, or in any code.
pub fn trampoline(pid: i32, vmas: &[Vma], leader_regs: &regs::Gp) -> Result<Trampoline> {
    let mut code: Vec<&Vma> =
        vmas.iter().filter(|v| v.prot & PROT_EXEC != 0 && (v.is(status::VDSO) || v.is(status::REGULAR))).collect();
    code.sort_by_key(|v| (!v.is(status::VDSO), v.end - v.start));
    let mut found = (None, None);
    let mut bare = None;
    for v in &code {
        let len = ((v.end - v.start) as usize).min(4 << 20);
        let Ok(b) = read_bytes(pid, v.start, len) else { continue };
        scan(&b, v.start, &mut found);
        if let (Some(syscall_ret), Some(sigreturn)) = found {
            return Ok(Trampoline::Safe { syscall_ret, sigreturn });
        }
        bare = bare.or_else(|| find_syscall_insn(&b, v.start));
    }
    bare = bare.or_else(|| syscall_before(pid, leader_regs));
    match bare {
        Some(syscall) => Ok(Trampoline::Bare { syscall }),
        None => bail!("process {pid}: no syscall instruction found in its vDSO or code to run system calls with"),
    }
}

/// A thread with a shadow stack (CET) would fault on a trampoline's `ret`.
fn shadow_stack(pid: i32, tid: i32) -> bool {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
    s.lines().any(|l| l.starts_with("x86_Thread_features:") && l.split_whitespace().any(|w| w == "shstk"))
}

/// The trampoline for one thread of `pid`.
pub fn for_thread(pid: i32, tid: i32, t: Trampoline) -> Trampoline {
    match t {
        Trampoline::Safe { syscall_ret, .. } if shadow_stack(pid, tid) => Trampoline::Bare { syscall: syscall_ret },
        t => t,
    }
}

fn check(r: i64, what: &str, tid: i32) -> Result<i64> {
    if (-4095..0).contains(&r) {
        bail!("task {tid}: injected {what} failed: {}", nix::errno::Errno::from_raw(-r as i32));
    }
    Ok(r)
}

/// Word `i` of a kernel structure of native words (`long`, pointers)
/// left in the scratch area: 8 bytes on x86_64, 4 on ARM.
fn word(b: &[u8], i: usize) -> u64 {
    const W: usize = size_of::<usize>();
    usize::from_ne_bytes(b[i * W..i * W + W].try_into().expect("a word")) as u64
}

/// Process-wide state read through the leader, plus the current brk and
/// the dumpable flag.
pub struct ProcessState {
    pub core: TaskCore,
    pub brk: u64,
    pub dumpable: i32,
    /// A SIGSTOP came while we asked: the process stops once let go.
    pub stopping: bool,
    /// The fds (of those asked about) whose description has an owner or a
    /// signal of its own.
    pub owners: Vec<(i32, Fown)>,
}

/// Process-wide state; `fds` are the fds to ask the owner of, `vmas` the
/// areas whose memory policy is checked. `gate` is dropped once the walks
/// of the address space may start beside the calls that follow.
pub fn process_state(pid: i32, tramp: Trampoline, fds: &[i32], vmas: &[Vma], gate: WalkGate) -> Result<ProcessState> {
    let stat = procfs::stat(pid, pid)?;
    let mut core = TaskCore {
        flags: stat.flags,
        comm: stat.comm.clone(),
        exit_signal: stat.exit_signal,
        blk_sigset: regs::sigmask(pid)?,
        ..TaskCore::default()
    };
    let pers = procfs::read_string(pid, "personality")?;
    core.personality =
        u32::from_str_radix(pers.trim(), 16).with_context(|| format!("/proc/{pid}/personality: {pers:?}"))?;
    core.rlimits = procfs::parse_limits(&procfs::read_string(pid, "limits")?, &format!("/proc/{pid}/limits"))?;
    core.rlimits.truncate(16);
    core.signals_s = regs::pending(pid, true)?;
    let login = procfs::read_string(pid, "loginuid")?;
    core.loginuid = login.trim().parse().with_context(|| format!("/proc/{pid}/loginuid: {login:?}"))?;
    let filter = procfs::read_string(pid, "coredump_filter")?;
    core.coredump_filter =
        u32::from_str_radix(filter.trim(), 16).with_context(|| format!("/proc/{pid}/coredump_filter: {filter:?}"))?;
    core.autogroup_nice = autogroup_nice(pid)?;
    let oom = procfs::read_string(pid, "oom_score_adj")?;
    core.oom_score_adj = oom.trim().parse().with_context(|| format!("/proc/{pid}/oom_score_adj: {oom:?}"))?;

    let status = procfs::status(pid, pid)?;
    let mut inj = Injector::new(pid, for_thread(pid, pid, tramp))?;
    let s = inj.scratch();
    // First: brk takes the address space's lock for writing, even to
    // read, and would wait behind smaps for the whole walk.
    let brk = check(inj.syscall(nr::__NR_brk, &[0])?, "brk(0)", pid)? as u64;
    drop(gate);
    // A signal neither ignored nor caught has SIG_DFL, and its flags and
    // mask act only when a handler runs: asking costs an injected call a
    // signal, so only the others are asked, and SIGCHLD, whose
    // SA_NOCLDSTOP and SA_NOCLDWAIT act with SIG_DFL too. The rest keep
    // SIG_DFL with no flags.
    let set = status.sig_ign | status.sig_cgt | 1 << (SIGCHLD - 1);
    for sig in 1..=64u32 {
        if sig == SIGKILL || sig == SIGSTOP {
            continue;
        }
        if set & 1 << (sig - 1) == 0 {
            core.sigactions.push(SigAction::default());
            continue;
        }
        let r = inj.syscall(nr::__NR_rt_sigaction, &[sig as u64, 0, s, 8])?;
        check(r, &format!("rt_sigaction({sig})"), pid)?;
        let b = inj.read_scratch(32)?;
        core.sigactions.push(SigAction {
            handler: word(&b, 0),
            flags: word(&b, 1),
            restorer: word(&b, 2),
            // The 64-bit mask after three words, unaligned on ARM.
            mask: u64::from_ne_bytes(b[3 * size_of::<usize>()..][..8].try_into().expect("8 bytes")),
        });
    }
    for (i, which) in [0u64, 1, 2].into_iter().enumerate() {
        check(inj.syscall(nr::__NR_getitimer, &[which, s])?, "getitimer", pid)?;
        let b = inj.read_scratch(32)?;
        core.timers[i] = (word(&b, 0), word(&b, 1), word(&b, 2), word(&b, 3));
    }
    check(inj.syscall(nr::__NR_prctl, &[PR_GET_CHILD_SUBREAPER, s])?, "PR_GET_CHILD_SUBREAPER", pid)?;
    core.child_subreaper = inj.read_scratch(4)? != [0; 4];
    core.membarrier = membarrier_registrations(&mut inj, pid)?;
    // A restore maps code writable before it protects it: with
    // memory-deny-write-execute set first it could not, set last it is not
    // kept yet. (EINVAL: a kernel without it.)
    // KSM for the whole address space (Linux 6.4+; EINVAL before).
    core.memory_merge = inj.syscall(nr::__NR_prctl, &[PR_GET_MEMORY_MERGE, 0, 0, 0, 0])? == 1;
    let mdwe = inj.syscall(nr::__NR_prctl, &[PR_GET_MDWE, 0, 0, 0, 0])?;
    if mdwe > 0 {
        bail!(
            "process {pid}: it denies itself writable executable memory (PR_SET_MDWE {mdwe:#x}), which dump does not support yet"
        );
    }
    for mut t in posix_timers(&procfs::read_string(pid, "timers")?) {
        check(inj.syscall(nr::__NR_timer_gettime, &[t.id as u64, s])?, "timer_gettime", pid)?;
        let b = inj.read_scratch(32)?;
        t.times = (word(&b, 0), word(&b, 1), word(&b, 2), word(&b, 3));
        t.overrun = check(inj.syscall(nr::__NR_timer_getoverrun, &[t.id as u64])?, "timer_getoverrun", pid)? as u32;
        core.posix_timers.push(t);
    }
    let dumpable = check(inj.syscall(nr::__NR_prctl, &[PR_GET_DUMPABLE])?, "PR_GET_DUMPABLE", pid)? as i32;
    let owners = owners(&mut inj, pid, fds)?;
    check_mempolicy(&mut inj, pid, vmas, status.vm_rss / PAGE)?;
    let stopping = inj.finish()?;
    Ok(ProcessState { core, brk, dumpable, stopping, owners })
}

/// Refuses NUMA memory policies (`set_mempolicy`, `mbind`), which a
/// restore does not set yet: the leader's own policy, then each area's.
/// A kernel without NUMA answers `ENOSYS`: nothing to check.
///
/// Each area's policy comes from `get_mempolicy(MPOL_F_ADDR)` (the default
/// for an area without one) or from `numa_maps` (an area's own policy,
/// else the leader's, which is default by then), whichever costs less
/// while the tree stands still: an injected call is about 50 µs here, and
/// `numa_maps` walks every resident page, about 70 ns each. A 256 MiB heap
/// in 23 areas asks (1.2 ms against 4.5); a JVM's 173 areas over 150 MiB
/// read (9 ms against 3).
fn check_mempolicy(inj: &mut Injector, pid: i32, vmas: &[Vma], resident_pages: u64) -> Result<()> {
    const MPOL_F_ADDR: u64 = 2;
    let s = inj.scratch();
    let r = inj.syscall(nr::__NR_get_mempolicy, &[s, 0, 0, 0, 0])?;
    if r == -(nix::libc::ENOSYS as i64) {
        return Ok(());
    }
    check(r, "get_mempolicy", pid)?;
    let mode = |inj: &Injector| -> Result<i32> { Ok(i32::from_ne_bytes(inj.read_scratch(4)?[..4].try_into()?)) };
    let m = mode(inj)?;
    if m != 0 {
        bail!(
            "process {pid}: its memory follows the NUMA policy {} (set_mempolicy), which dump does not support yet",
            mempolicy_name(m)
        );
    }
    if numa_maps_cheaper(resident_pages, vmas.len())
        && let Ok(text) = procfs::read_string(pid, "numa_maps")
    {
        return match area_policy(&text) {
            Some((start, name)) => bail!(
                "process {pid}: memory at {start:#x} follows the NUMA policy {name} (mbind), which dump does not \
                 support yet"
            ),
            None => Ok(()),
        };
    }
    // The vsyscall page is no area of the process's own.
    for v in vmas.iter().filter(|v| !v.is(status::VSYSCALL)) {
        let r = inj.syscall(nr::__NR_get_mempolicy, &[s, 0, 0, v.start, MPOL_F_ADDR])?;
        check(r, &format!("get_mempolicy at {:#x}", v.start), pid)?;
        let m = mode(inj)?;
        if m != 0 {
            bail!(
                "process {pid}: memory at {:#x} follows the NUMA policy {} (mbind), which dump does not support yet",
                v.start,
                mempolicy_name(m)
            );
        }
    }
    Ok(())
}

/// Whether reading `numa_maps` (a walk of `resident` pages) costs less
/// than asking each of `areas` with an injected call.
fn numa_maps_cheaper(resident: u64, areas: usize) -> bool {
    resident.saturating_mul(70) < areas as u64 * 50_000
}

/// The first area of `numa_maps` text whose policy is not the default:
/// its start and the policy's name (`bind`, `interleave`, ...). Each line
/// is an area's start, then its policy (`default`, `bind:0`,
/// `interleave=static:0-1`, `weighted interleave:0-1`, `prefer (many):0`),
/// then its page counts.
fn area_policy(text: &str) -> Option<(u64, String)> {
    text.lines().find_map(|line| {
        let (start, rest) = line.split_once(' ')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let first = rest.split(' ').next()?;
        (first != "default")
            .then(|| {
                let name = first.split([':', '=']).next().unwrap_or(first);
                match rest.split(' ').nth(1) {
                    Some(second) if name == "weighted" || second.starts_with('(') => {
                        format!("{name} {}", second.split([':', '=']).next().unwrap_or(second))
                    }
                    _ => name.to_string(),
                }
            })
            .map(|name| (start, name))
    })
}

/// A policy as `numa_maps` names it (flags aside).
fn mempolicy_name(mode: i32) -> String {
    const MODE_FLAGS: i32 = (1 << 15) | (1 << 14) | (1 << 13);
    match mode & !MODE_FLAGS {
        1 => "prefer".into(),
        2 => "bind".into(),
        3 => "interleave".into(),
        4 => "local".into(),
        5 => "prefer (many)".into(),
        6 => "weighted interleave".into(),
        m => format!("of mode {m}"),
    }
}

/// `F_GETOWN_EX`, `F_GETSIG` and `F_GETOWNER_UIDS` of each fd, where there
/// is an owner or a signal.
fn owners(inj: &mut Injector, pid: i32, fds: &[i32]) -> Result<Vec<(i32, Fown)>> {
    use nr::{F_GETOWN_EX, F_GETSIG};
    const F_GETOWNER_UIDS: u64 = 17;
    let s = inj.scratch();
    let mut out = Vec::new();
    for &fd in fds {
        let what = |call: &str| format!("fcntl({fd}, {call})");
        // An O_PATH descriptor answers EBADF: it can have no owner.
        let r = inj.syscall(nr::__NR_fcntl, &[fd as u64, F_GETOWN_EX as u64, s])?;
        if r == -(nix::libc::EBADF as i64) {
            continue;
        }
        check(r, &what("F_GETOWN_EX"), pid)?;
        let b = inj.read_scratch(8)?;
        let word = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (pid_type, owner) = (word(0), word(1));
        let signum = check(inj.syscall(nr::__NR_fcntl, &[fd as u64, F_GETSIG as u64])?, &what("F_GETSIG"), pid)?;
        if owner == 0 && signum == 0 {
            continue;
        }
        check(inj.syscall(nr::__NR_fcntl, &[fd as u64, F_GETOWNER_UIDS, s])?, &what("F_GETOWNER_UIDS"), pid)?;
        let b = inj.read_scratch(8)?;
        let uid = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        out.push((fd, Fown { uid: uid(0), euid: uid(1), signum: signum as u32, pid_type, pid: owner }));
    }
    Ok(out)
}

/// One thread's state; `leader` says whether its mask is the process's.
pub fn thread_state(pid: i32, tid: i32, tramp: Trampoline) -> Result<Thread> {
    let stat = procfs::stat(pid, tid)?;
    let st = procfs::status(pid, tid)?;
    let seccomp = match st.seccomp {
        0 => Seccomp::default(),
        1 => Seccomp { mode: 1, filters: vec![] },
        2 => Seccomp { mode: 2, filters: crate::seccomp::dump::filters(tid)? },
        m => bail!("task {tid} of process {pid}: seccomp mode {m} is unknown"),
    };
    let blk_sigset = regs::sigmask(tid)?;
    // Installing seccomp filters may turn mitigations on by itself
    // (`spec_store_bypass_disable=seccomp`); the restore installs them again.
    if st.seccomp == 0 {
        check_speculation(pid, tid)?;
    }
    let mut inj = Injector::new(tid, for_thread(pid, tid, tramp))?;
    let s = inj.scratch();
    check(inj.syscall(nr::__NR_sigaltstack, &[0, s])?, "sigaltstack", tid)?;
    let b = inj.read_scratch(24)?;
    let sas = (word(&b, 0), word(&b, 2), word(&b, 1) as u32);
    check(inj.syscall(nr::__NR_prctl, &[PR_GET_TID_ADDRESS, s])?, "PR_GET_TID_ADDRESS", tid)?;
    let clear_tid_addr = word(&inj.read_scratch(8)?, 0);
    check(inj.syscall(nr::__NR_prctl, &[PR_GET_PDEATHSIG, s])?, "PR_GET_PDEATHSIG", tid)?;
    let pdeath_sig = u32::from_ne_bytes(inj.read_scratch(4)?.try_into().expect("4 bytes"));
    let secbits = check(inj.syscall(nr::__NR_prctl, &[PR_GET_SECUREBITS])?, "PR_GET_SECUREBITS", tid)? as u32;
    let timer_slack_ns = check(inj.syscall(nr::__NR_prctl, &[PR_GET_TIMERSLACK])?, "PR_GET_TIMERSLACK", tid)? as u64;
    // x86 only; EINVAL elsewhere, where there is nothing to keep. Strict
    // seccomp makes rdtsc fault by itself, and comes back with it.
    if inj.syscall(nr::__NR_prctl, &[PR_GET_TSC, s])? == 0
        && u32::from_ne_bytes(inj.read_scratch(4)?.try_into().expect("4 bytes")) == PR_TSC_SIGSEGV
        && st.seccomp != 1
    {
        bail!("process {pid}: thread {tid} made rdtsc fault (PR_SET_TSC), which dump does not support yet");
    }
    let stopping = inj.finish()?;

    let mut r = regs::gpregs(tid)?;
    regs::restart_syscall(&mut r);
    let (futex_rla, futex_rla_len) = robust_list(tid)?;
    let comm = procfs::read_string(pid, &format!("task/{tid}/comm"))?.trim_end_matches('\n').to_string();
    // With SCHED_RESET_ON_FORK, which /proc/PID/stat leaves out.
    // SAFETY: a plain system call on a TID.
    let sched_policy = unsafe { nix::libc::sched_getscheduler(tid) };
    if sched_policy < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("sched_getscheduler of thread {tid}"));
    }
    const SCHED_DEADLINE: i32 = 6;
    if sched_policy & !nix::libc::SCHED_RESET_ON_FORK == SCHED_DEADLINE {
        bail!("process {pid}: thread {tid} runs under SCHED_DEADLINE, which dump does not support yet");
    }
    // Set only by PR_SET_IO_FLUSHER (with PF_MEMALLOC_NOIO), which needs a
    // capability (CAP_SYS_RESOURCE) a restore may not have.
    const PF_LOCAL_THROTTLE: u32 = 0x0010_0000;
    if stat.flags & PF_LOCAL_THROTTLE != 0 {
        bail!("process {pid}: thread {tid} is an I/O flusher (PR_SET_IO_FLUSHER), which dump does not support yet");
    }
    if let Some(cookie) = core_sched_cookie(tid)?
        && cookie != 0
    {
        bail!(
            "process {pid}: thread {tid} has a core scheduling cookie (PR_SCHED_CORE), which dump does not support \
             yet"
        );
    }
    Ok(Thread {
        tid,
        timer_slack_ns,
        stopping,
        regs: r,
        fpu: regs::fpregs(tid)?,
        tls: regs::tls(tid)?,
        clear_tid_addr,
        futex_rla,
        futex_rla_len,
        sched_nice: stat.nice,
        sched_policy: sched_policy as u32,
        sched_prio: stat.rt_priority,
        affinity: affinity(tid)?,
        ioprio: ioprio(tid)?,
        blk_sigset,
        sas,
        pdeath_sig,
        signals_p: regs::pending(tid, false)?,
        creds: Creds {
            uids: st.uids,
            gids: st.gids,
            cap_inh: st.cap_inh,
            cap_prm: st.cap_prm,
            cap_eff: st.cap_eff,
            cap_bnd: st.cap_bnd,
            cap_amb: st.cap_amb,
            secbits,
            groups: st.groups,
            no_new_privs: st.no_new_privs,
        },
        comm,
        rseq: regs::rseq(tid)?,
        seccomp,
    })
}

/// The robust futex list head, asked from outside.
/// The nice value of the autogroup of `pid` ("/autogroup-N nice X"); `None`
/// where the kernel has no autogroups (no file).
fn autogroup_nice(pid: i32) -> Result<Option<i32>> {
    let path = format!("/proc/{pid}/autogroup");
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.with_context(|| format!("reading {path}"))?,
    };
    let nice = text.split_whitespace().skip_while(|w| *w != "nice").nth(1);
    let nice = nice.and_then(|n| n.parse().ok()).with_context(|| format!("{path}: {text:?}"))?;
    Ok(Some(nice))
}

/// The thread's core scheduling cookie; `None` where the kernel has no core
/// scheduling (EINVAL).
fn core_sched_cookie(tid: i32) -> Result<Option<u64>> {
    const PR_SCHED_CORE: i32 = 62;
    const PR_SCHED_CORE_GET: u64 = 0;
    const PIDTYPE_PID: u64 = 0;
    let mut cookie = 0u64;
    // SAFETY: the kernel writes one u64 into `cookie`.
    let res = unsafe {
        nix::libc::prctl(
            PR_SCHED_CORE,
            PR_SCHED_CORE_GET as nix::libc::c_ulong,
            tid as nix::libc::c_ulong,
            PIDTYPE_PID as nix::libc::c_ulong,
            &mut cookie as *mut u64,
        )
    };
    if res < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(nix::libc::EINVAL) {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("PR_SCHED_CORE_GET of thread {tid}"));
    }
    Ok(Some(cookie))
}

fn robust_list(tid: i32) -> Result<(u64, u32)> {
    let mut head = 0u64;
    let mut len = 0usize;
    // SAFETY: get_robust_list writes one pointer and one size_t to the
    // addresses given, both ours.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_get_robust_list, tid, &mut head as *mut u64, &mut len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("get_robust_list of task {tid}"));
    }
    Ok((head, len as u32))
}

/// The timers of /proc/PID/timers: blocks of "ID:", "signal: SIGNO/SIVAL",
/// "notify: KIND/pid.N" or "KIND/tid.N", "ClockID:".
fn posix_timers(text: &str) -> Vec<super::model::PosixTimer> {
    let mut out: Vec<super::model::PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, val)) = line.split_once(": ") else { continue };
        if key == "ID" {
            out.push(super::model::PosixTimer { id: val.trim().parse().unwrap_or(0), ..Default::default() });
            continue;
        }
        let Some(t) = out.last_mut() else { continue };
        match key {
            "signal" => {
                let (signo, sival) = val.split_once('/').unwrap_or((val, "0"));
                t.signo = signo.trim().parse().unwrap_or(0);
                t.sival = u64::from_str_radix(sival.trim().trim_start_matches("0x"), 16).unwrap_or(0);
            }
            "notify" => {
                let (kind, target) = val.split_once('/').unwrap_or((val, ""));
                let base = match kind {
                    "signal" => 0,
                    "none" => 1,
                    _ => 2,
                };
                let (who, n) = target.split_once('.').unwrap_or(("pid", "0"));
                t.notify = base | if who == "tid" { 4 } else { 0 };
                t.notify_tid = if who == "tid" { n.trim().parse().unwrap_or(0) } else { 0 };
            }
            "ClockID" => t.clock = val.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// Refuses a thread whose speculation controls (`PR_SET_SPECULATION_CTRL`)
/// are not what a new thread of ours gets: a restore does not set them yet,
/// and a program that asked for a mitigation must not silently lose it.
fn check_speculation(pid: i32, tid: i32) -> Result<()> {
    let theirs = procfs::read_string(pid, &format!("task/{tid}/status"))?;
    let ours = std::fs::read_to_string("/proc/thread-self/status").context("reading /proc/thread-self/status")?;
    let line = |text: &str, key: &str| text.lines().find(|l| l.starts_with(key)).map(str::to_string);
    for key in ["Speculation_Store_Bypass:", "SpeculationIndirectBranch:"] {
        if line(&theirs, key) != line(&ours, key) {
            bail!(
                "process {pid}: thread {tid} has its own speculation control ({}), which dump does not support yet",
                line(&theirs, key).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
    }
    Ok(())
}

/// The CPUs thread `tid` may run on, as the kernel's mask words.
fn affinity(tid: i32) -> Result<Vec<u64>> {
    let mut words = [0u64; 128];
    // SAFETY: the kernel writes at most the given size into a live buffer.
    let n = unsafe {
        nix::libc::syscall(nix::libc::SYS_sched_getaffinity, tid, std::mem::size_of_val(&words), words.as_mut_ptr())
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("sched_getaffinity of thread {tid}"));
    }
    Ok(words[..(n as usize).div_ceil(8)].to_vec())
}

/// Thread `tid`'s I/O priority (`IOPRIO_WHO_PROCESS` names a thread).
fn ioprio(tid: i32) -> Result<u32> {
    const IOPRIO_WHO_PROCESS: i32 = 1;
    // SAFETY: a plain system call on integers.
    let p = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if p < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("ioprio_get of thread {tid}"));
    }
    Ok(p as u32)
}

/// The `membarrier` commands the process registered for, as the mask of
/// `MEMBARRIER_CMD_REGISTER_*` bits: asked directly (Linux 6.3+), or else
/// found by issuing each private expedited barrier, which only a registered
/// process may (the register command is the barrier's bit shifted by one).
fn membarrier_registrations(inj: &mut Injector, pid: i32) -> Result<u32> {
    const GET_REGISTRATIONS: u64 = 1 << 9;
    const PRIVATE_EXPEDITED: [u64; 3] = [1 << 3, 1 << 5, 1 << 7];
    let got = inj.syscall(nr::__NR_membarrier, &[GET_REGISTRATIONS, 0, 0])?;
    if got >= 0 {
        return Ok(got as u32);
    }
    let mut mask = 0;
    for cmd in PRIVATE_EXPEDITED {
        match inj.syscall(nr::__NR_membarrier, &[cmd, 0, 0])? {
            0 => mask |= (cmd << 1) as u32,
            e if [-nix::libc::EPERM, -nix::libc::EINVAL, -nix::libc::ENOSYS].contains(&(e as i32)) => {}
            e => bail!("process {pid}: membarrier({cmd:#x}) failed: {e}"),
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod timer_tests {
    #[test]
    fn parses_proc_timers() {
        let t = super::posix_timers(
            "ID: 0\nsignal: 12/00000000deadbeef\nnotify: signal/pid.77\nClockID: 1\nID: 3\nsignal: 10/0000000000000000\nnotify: signal/tid.78\nClockID: 0\n",
        );
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id, t[0].signo, t[0].sival, t[0].notify, t[0].clock), (0, 12, 0xdeadbeef, 0, 1));
        assert_eq!((t[1].id, t[1].notify, t[1].notify_tid, t[1].clock), (3, 4, 78, 0));
    }
}

#[cfg(test)]
mod mempolicy_tests {
    use super::{area_policy, numa_maps_cheaper};

    #[test]
    fn numa_maps_policies_are_read_by_name() {
        let text = "\
55d0c8a00000 default file=/usr/bin/cat mapped=5 N0=5 kernelpagesize_kB=4
7f0000000000 default anon=3 dirty=3 N0=3 kernelpagesize_kB=4
7f0000200000 bind:0 anon=1 dirty=1 N0=1 kernelpagesize_kB=4
";
        assert_eq!(area_policy(text), Some((0x7f00_0020_0000, "bind".to_string())));
        assert_eq!(area_policy("7f0000000000 default anon=3\n"), None);
        for (policy, name) in [
            ("interleave=static:0-1", "interleave"),
            ("weighted interleave:0-1", "weighted interleave"),
            ("prefer (many):0", "prefer (many)"),
            ("local", "local"),
        ] {
            assert_eq!(area_policy(&format!("1000 {policy} anon=1\n")), Some((0x1000, name.to_string())), "{policy}");
        }
        // The cost: a 256 MiB heap in 23 areas is asked, a JVM's 173 areas
        // over 150 MiB are read.
        assert!(!numa_maps_cheaper(65536, 23));
        assert!(numa_maps_cheaper(38000, 173));
    }
}
