//! From a loaded checkpoint to restore plans ([`plans`]: a `ProcessPlan`
//! per process, the zombies, and the tree-wide objects: SysV segments,
//! shared memory objects, terminals, unix sockets). Everything that can be
//! wrong with the images or with this machine is found here, before any
//! process exists, and named with the image file, entry and field; a dump
//! runs the same planning on its own images while the tree is still
//! frozen (`at_dump`).
//!
//! Refused here, or by the kind modules it calls: a PID in use (not at
//! dump, where the tree holds them); a PID or TID at or above
//! `/proc/sys/kernel/pid_max` (our PID namespace's limit); a memory area
//! reaching past this machine's user address space
//! (`layout::user_space_end`); a file whose size changed since the dump
//! (`files::reg`); fds and mappings of kinds not restored yet (each kind
//! module names its own); a tree spread over several IPC namespaces
//! (`sysv::restore`); a process in a group no process of the tree leads,
//! or (without `--shell-job`) in a session another process leads; 32-bit
//! tasks; seccomp filter chains missing, looping or malformed
//! (`seccomp::restore`: restoring a thread without its filters would lift
//! its sandbox); a cgroup a process must go back into that is not there
//! (`cgroup::restore`). Hard limits above ours are refused at spawn
//! (`limits.rs`) unless `--clamp-limits` lowers them here with a warning;
//! credentials we may not give are refused while the tasks are prepared
//! (`creds.rs`).
//!
//! On x86_64, `check_cpu` refuses threads that held XSAVE state this CPU's
//! XCR0 lacks (`--cpu-cap none` skips it): their code paths (glibc's IFUNCs
//! among them) were chosen for that CPU and would die with SIGILL. PKRU is
//! not counted when it holds the kernel's default rights (0x55555554): a
//! CPU without protection keys runs every program as if it held those.
//! The frame (`regs::xsave`) then carries only what this CPU has.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_blob_abi::{Creds, ITimer, MmMap, PosixTimer, QueuedSignal, Rlimit, SigAction, TIMER_SIGNAL_PENDING};
use revenant_images::messages::*;
use revenant_images::{ImageSet, Process, Zombie};

use super::convert;
use super::plan::{
    AltStack, Backing, Knobs, PagesFile, ProcessPlan, Rseq, Sched, Session, ThreadPlan, VmaPlan, ZombieExit, ZombiePlan,
};
use crate::files::ghost::REMAP_PROCFS;
use crate::regs::{ArmRegs, ArmVfp, Fpu, Regs, X86Regs};
use crate::sysv::restore::IpcPlan;
use revenant_images::messages::{pe, vma_status as vs};

/// Options that change the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The tree was started from a shell: it stays in the restoring
    /// session instead of getting its own.
    pub shell_job: bool,
    /// Proxy to the runtime vDSO even when it matches.
    pub vdso_proxy: bool,
    /// Skip the check that this CPU has the vector state the dumped threads
    /// were using (CRIU's `--cpu-cap none`).
    pub skip_cpu_check: bool,
    /// A SysV segment whose id is taken gets a new one (`--shm-new-ids`).
    pub shm_new_ids: bool,
    /// Hard limits above ours that we may not raise are lowered to ours
    /// instead of refused (`--clamp-limits`).
    pub clamp_limits: bool,
    /// TCP connections are restored (`--tcp-established`), not refused.
    pub tcp_established: bool,
    /// Pipes the caller gives in place of the images' (`--inherit-fd`).
    pub given_pipes: Vec<crate::files::pipe::Given>,
    /// Planned by a dump to check its own images: the tree still runs, so
    /// its PIDs are taken.
    pub at_dump: bool,
}

/// A whole checkpoint's restore.
#[derive(Debug, Clone)]
pub struct TreePlan {
    /// Parents before children; the root first.
    pub processes: Vec<ProcessPlan>,
    /// Each made by its parent in `processes`.
    pub zombies: Vec<ZombiePlan>,
    pub ipc: IpcPlan,
    /// What the host makes before any process exists.
    pub host: super::plan::HostObjects,
    /// What the plan changed from the images, for the user.
    pub warnings: Vec<String>,
}

/// Refuses images whose threads held vector state (AVX-512, AMX, ...) this
/// CPU cannot hold: such a program was chosen code paths (glibc's IFUNCs
/// among them) that would die here with SIGILL at their next use.
pub(crate) fn check_cpu(p: &ProcessPlan) -> Result<()> {
    cfg_select! {
        target_arch = "x86_64" => {
            // Protection-key rights (the PKRU component) as the kernel sets
            // them for every process: a CPU without protection keys runs
            // every program as if it held these, so a program that never
            // changed them loses nothing when they are dropped.
            const PKRU: u32 = 9;
            const PKRU_DEFAULT: u32 = 0x5555_5554;
            let here = crate::regs::xsave::xcr0();
            for t in &p.threads {
                if let Some(Fpu::X86(f)) = &t.fpu {
                    let mut missing = f.xstate_bv & !here;
                    let pkru = f.components.iter().find(|c| c.0 == PKRU).and_then(|c| c.1.get(..4));
                    if pkru.is_some_and(|v| v == PKRU_DEFAULT.to_le_bytes()) {
                        missing &= !(1 << PKRU);
                    }
                    if missing != 0 {
                        bail!(
                            "core-{}.img: entry 0: thread_info.fpregs.xsave.xstate_bv {:#x}: the dumped CPU had vector \
                             state (XSAVE features {missing:#x}) this CPU lacks (it has {here:#x}); the program would die \
                             with SIGILL. Restore on a CPU with those features (--cpu-cap none skips this check)",
                            t.tid,
                            f.xstate_bv
                        );
                    }
                }
            }
            Ok(())
        }
        _ => {
            let _ = p;
            Ok(())
        }
    }
}

/// Plans the restore of every process in `set`.
pub fn plans(set: &ImageSet, opts: &PlanOptions) -> Result<TreePlan> {
    set.validate(revenant_arch::NAME)?;
    check_pid_limit(set, pid_max()?)?;
    let user_end = super::layout::user_space_end()?;
    let ipc = crate::sysv::restore::plan(set, opts)?;
    let mut processes: Vec<ProcessPlan> =
        set.processes.iter().map(|p| process(set, p, opts, &ipc, user_end)).collect::<Result<_>>()?;
    // Only images with memberships depend on this machine's cgroups.
    if set.cgroup.is_some() {
        let here = crate::cgroup::restore::Here::read()?;
        for (p, c) in processes.iter_mut().zip(crate::cgroup::restore::plan(set, &here, &|f| f.exists())?) {
            p.cgroups = c;
        }
    }
    let mut warnings = crate::files::pipe::check_given(set, &opts.given_pipes)?;
    if opts.clamp_limits {
        for p in &mut processes {
            warnings.extend(super::limits::clamp(p)?);
        }
    }
    let zombies: Vec<ZombiePlan> = set.zombies.iter().map(|z| zombie(set, z, opts)).collect::<Result<_>>()?;
    group_helpers(set, &mut processes, &zombies, opts)?;
    if !opts.skip_cpu_check {
        processes.iter().try_for_each(check_cpu)?;
    }
    let shmem = crate::shmem::restore::plan(set, &processes)?;
    let ttys = crate::files::tty::plan(set, opts.shell_job)?;
    let sockets = crate::files::unixsk::plan(set)?;
    let inet = crate::files::inet::plan(set, opts.tcp_established)?;
    let keeper =
        inet.iter().any(|(_, s)| s.stream.is_some()).then(|| crate::files::tcp_keeper::name(&set.dir)).transpose()?;
    let netlink = crate::files::netlink::plan(set)?;
    let packet = crate::files::packet::plan(set)?;
    let inflight = crate::files::unixsk::in_flight(set, &sockets)?;
    controlling_ttys(&ttys, &mut processes, &mut warnings)?;
    for p in &processes {
        let fds =
            p.fds.iter().filter_map(|f| Some((format!("PID {}: fd {}", p.pid, f.fd), &f.path, f.ghost.as_ref()?)));
        let maps = p.ghosts.iter().map(|(path, g)| (format!("PID {}", p.pid), path, g));
        warnings.extend(fds.chain(maps).filter_map(|(who, path, g)| crate::files::ghost::taken_warning(&who, path, g)));
    }
    let given_pipes = opts.given_pipes.clone();
    let host = super::plan::HostObjects { shmem, ttys, sockets, inet, netlink, packet, inflight, keeper, given_pipes };
    Ok(TreePlan { processes, zombies, ipc, host, warnings })
}

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// The PIDs of our PID namespace, which the tree is restored into, are
/// below this.
fn pid_max() -> Result<u32> {
    let text = std::fs::read_to_string(PID_MAX).with_context(|| format!("reading {PID_MAX}"))?;
    text.trim().parse().with_context(|| format!("{PID_MAX}: {:?} is not a PID limit", text.trim()))
}

/// Refuses PIDs and TIDs the kernel cannot hand out here: `clone3` would
/// refuse them only once part of the tree runs, the blob's thread creation
/// only past the point of no return.
fn check_pid_limit(set: &ImageSet, pid_max: u32) -> Result<()> {
    // Processes and zombies share pstree.img, in its order.
    let zombie_entries: Vec<usize> = set.zombies.iter().map(|z| z.entry).collect();
    let entries = (0..).filter(|i| !zombie_entries.contains(i));
    let pstree =
        set.processes.iter().map(|p| &p.pstree).zip(entries).chain(set.zombies.iter().map(|z| (&z.pstree, z.entry)));
    for (e, i) in pstree {
        let ids = std::iter::once(("pid".to_string(), e.pid))
            .chain(e.threads.iter().enumerate().skip(1).map(|(j, &t)| (format!("threads[{j}]"), t)));
        for (field, id) in ids {
            if id >= pid_max {
                bail!(
                    "pstree.img: entry {i}: {field} {id}: not below the limit of {pid_max} of this PID namespace \
                     ({PID_MAX}); the kernel cannot give a task this ID"
                );
            }
        }
    }
    Ok(())
}

/// Refuses an area the kernel would not map: at or above `user_end`, the
/// end of this machine's user address space.
fn check_user_end(at: &str, v: &VmaEntry, user_end: u64) -> Result<()> {
    let (field, value) = if v.start >= user_end {
        ("start", v.start)
    } else if v.end > user_end {
        ("end", v.end)
    } else {
        return Ok(());
    };
    bail!(
        "{at}.{field} {value:#x}: beyond the end of this machine's user address space ({user_end:#x}); the images \
         come from a machine with a larger one, or are damaged"
    )
}

/// Gives each terminal's session leader its terminal back, and the leader
/// of its foreground group the foreground. A shell job's terminal is the
/// restoring shell's, and stays as it is.
fn controlling_ttys(
    ttys: &[crate::files::tty::TtyPlan],
    processes: &mut [ProcessPlan],
    warnings: &mut Vec<String>,
) -> Result<()> {
    for t in ttys.iter().filter(|t| !t.inherit && t.info.sid != 0) {
        let Some(path) = crate::files::tty::ctty_path(&t.info) else { continue };
        let at = format!("tty-info.img: id {:#x}", t.info.id);
        let sid = t.info.sid as i32;
        let leader = processes.iter_mut().find(|p| p.pid == sid).with_context(|| {
            format!("{at}: sid {sid}: the terminal controls a session whose leader is not in the images")
        })?;
        if leader.session != Session::Leader {
            bail!("{at}: sid {sid}: the terminal's session is not one its process leads in the restored tree");
        }
        if leader.ctty.as_ref().is_some_and(|p| *p != path) {
            bail!("{at}: session {sid} had two controlling terminals");
        }
        leader.ctty = Some(path);
        let pgrp = t.info.pgrp as i32;
        if pgrp != 0 && pgrp != sid {
            match processes.iter_mut().find(|p| p.pid == pgrp) {
                Some(p) => p.tty_fg = true,
                None => warnings.push(format!(
                    "{at}: the terminal's foreground group {pgrp} has no leader in the tree: the session leader's \
                     group takes the foreground"
                )),
            }
        }
    }
    Ok(())
}

/// How the process with pstree entry `e` gets its session and group.
fn session(set: &ImageSet, e: &PstreeEntry, is_root: bool, opts: &PlanOptions) -> Result<Session> {
    let pid = e.pid;
    let parent = set.processes.iter().find(|q| q.pstree.pid == e.ppid && q.pstree.pid != pid);
    Ok(if let (false, Some(parent)) = (is_root, parent) {
        if e.sid == parent.pstree.sid && e.pgid == parent.pstree.pgid {
            Session::Inherit
        } else if e.sid == e.pid {
            Session::Leader
        } else if e.sid == parent.pstree.sid && e.pgid == e.pid {
            Session::GroupLeader
        } else if e.sid == parent.pstree.sid {
            // A group no process of the tree leads any more (a pipeline's
            // first command, gone) is made by a helper (`group_helpers`).
            Session::Join(e.pgid as i32)
        } else {
            bail!(
                "pstree.img: PID {pid} is in process group {} of session {}, which is not its parent's session and \
                 which it does not lead",
                e.pgid,
                e.sid
            );
        }
    } else if opts.shell_job {
        Session::Inherit
    } else if e.sid == e.pid {
        Session::Leader
    } else if e.pgid == e.pid {
        Session::GroupLeader
    } else {
        bail!(
            "pstree.img: PID {pid} belonged to session {} led by another process; restore it with --shell-job",
            e.sid
        );
    })
}

/// Groups whose leader is gone but whose members are in the tree (a
/// pipeline whose first command exited, a zombie's group): the parent of
/// their members creates a helper task with the leader's PID that makes
/// the group, holds it while they join, and is reaped before any program
/// runs. Members of one such group must share their parent.
fn group_helpers(
    set: &ImageSet,
    processes: &mut [ProcessPlan],
    zombies: &[ZombiePlan],
    opts: &PlanOptions,
) -> Result<()> {
    let members =
        processes.iter().map(|p| (p.pid, p.ppid, p.session)).chain(zombies.iter().map(|z| (z.pid, z.ppid, z.session)));
    let entries = || set.processes.iter().map(|p| &p.pstree).chain(set.zombies.iter().map(|z| &z.pstree));
    let mut helpers: Vec<(i32, i32)> = vec![];
    for (pid, ppid, session) in members.collect::<Vec<_>>() {
        let Session::Join(g) = session else { continue };
        let sid = entries().find(|e| e.pid as i32 == pid).map_or(0, |e| e.sid);
        if leads_group(set, g as u32, sid) {
            continue;
        }
        match helpers.iter().find(|h| h.0 == g) {
            Some(&(_, parent)) if parent != ppid => bail!(
                "pstree.img: process group {g}, whose leader is gone, has members with different parents ({parent} \
                 and {ppid}): not restored yet"
            ),
            Some(_) => {}
            None => helpers.push((g, ppid)),
        }
    }
    let tids = set.processes.iter().flat_map(|p| p.threads.iter().map(|t| t.tid as i32));
    for tid in tids {
        if let Some(&(g, _)) = helpers.iter().find(|h| h.0 == tid) {
            bail!("pstree.img: process group {g}, whose leader is gone, has the id of a thread of the tree");
        }
    }
    for (g, ppid) in helpers {
        if !opts.at_dump {
            group_id_free(g)?;
        }
        let parent = processes.iter_mut().find(|p| p.pid == ppid).context("a group's parent is not in the tree")?;
        parent.group_helpers.push(g);
    }
    Ok(())
}

/// Whether a process or zombie of the tree is the leader of group `pgid`
/// in session `sid`.
fn leads_group(set: &ImageSet, pgid: u32, sid: u32) -> bool {
    let entries = set.processes.iter().map(|p| &p.pstree).chain(set.zombies.iter().map(|z| &z.pstree));
    entries.into_iter().any(|e| e.pid == pgid && e.pgid == pgid && e.sid == sid)
}

/// A zombie: created with its PID, session and name by its parent, which
/// then leaves it unreaped; it ends at once the way it ended before.
fn zombie(set: &ImageSet, z: &Zombie, opts: &PlanOptions) -> Result<ZombiePlan> {
    let pid = z.pstree.pid as i32;
    let name = z.core_name();
    let tc = z.core.tc.as_ref().with_context(|| format!("{name}: entry 0: no tc"))?;
    if !opts.at_dump {
        pid_free(pid, "the zombie's PID")?;
    }
    // A wait status: the signal in the low 7 bits, else the code above.
    let status = tc.exit_code;
    let signal = status & 0x7f;
    let exit = if signal != 0 {
        if signal > 64 || NOT_FATAL.contains(&(signal as i32)) {
            bail!("{name}: entry 0: tc.exit_code {status:#x}: signal {signal} does not end a process");
        }
        ZombieExit::Signal(signal)
    } else {
        ZombieExit::Code((status >> 8) & 0xff)
    };
    let session = session(set, &z.pstree, false, opts)?;
    Ok(ZombiePlan { pid, ppid: z.pstree.ppid as i32, session, comm: comm(&tc.comm), exit })
}

/// Refuses the id of a group whose leader is gone where a task here has
/// it: its helper takes it (`group_helpers`).
pub(crate) fn group_id_free(g: i32) -> Result<()> {
    pid_free(g, "the id of a process group whose leader is gone,")
}

/// Refuses the PID of an ended process whose /proc directory is the cwd
/// of PID `of` where a task here has it: its holder takes it
/// (`cwd_holder`).
pub(crate) fn cwd_holder_free(holder: i32, of: i32) -> Result<()> {
    pid_free(holder, &format!("the PID whose /proc directory was the cwd of PID {of} (its process had ended),"))
}

/// Refuses a PID some task here has; `what` names it in the message.
pub(crate) fn pid_free(pid: i32, what: &str) -> Result<()> {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => bail!("pstree.img: {what} {pid} is in use (by {}): stop it or restore elsewhere", comm.trim()),
        Err(_) => Ok(()),
    }
}

/// A name as `PR_SET_NAME` takes it: at most 15 bytes, NUL-padded.
fn comm(name: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    comm
}

/// Signals whose default action does not end a process: a wait status
/// naming one cannot be real.
const NOT_FATAL: [i32; 8] = [
    libc::SIGCHLD,
    libc::SIGCONT,
    libc::SIGSTOP,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGWINCH,
];

fn process(set: &ImageSet, p: &Process, opts: &PlanOptions, ipc: &IpcPlan, user_end: u64) -> Result<ProcessPlan> {
    let pid = p.pstree.pid as i32;
    let leader = &p.threads[0].core;
    let tc = leader.tc.as_ref().context("core: no task core")?;
    let core_name = format!("core-{pid}.img");
    let stop_signal = match tc.task_state {
        revenant_images::TASK_ALIVE => None,
        // Stopped by a signal: it stops again when the restore lets go.
        revenant_images::TASK_STOPPED => match tc.stop_signo.unwrap_or(libc::SIGSTOP as u32) as i32 {
            s @ (libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) => Some(s),
            s => bail!("{core_name}: entry 0: tc.stop_signo {s}: not a signal that stops a process"),
        },
        s => bail!("{core_name}: entry 0: tc.task_state {s}: only live and stopped tasks can be restored"),
    };
    if !opts.at_dump {
        pid_free(pid, "PID")?;
    }
    let is_root = std::ptr::eq(p, &set.processes[0]);
    let session = session(set, &p.pstree, is_root, opts)?;
    let comm = comm(&tc.comm);

    // Unlinked files it maps (or runs) are made again for it to map.
    let mut ghosts = Vec::new();
    let exe = if p.mm.exe_file_id != 0 {
        let (path, ghost) = crate::files::reg::mapped(set, p.mm.exe_file_id, "the executable")?;
        ghosts.extend(ghost.map(|g| (path.clone(), g)));
        Some(path)
    } else {
        None
    };
    // A cwd removed since is made again, as an unlinked file is; the /proc
    // directory of a process that ended is held by a helper with its PID
    // while the task enters it.
    let dead = set.remaps.iter().find(|m| m.orig_id == p.fs.cwd_id && m.remap_type == Some(REMAP_PROCFS));
    let (cwd, cwd_holder) = match dead {
        Some(m) => {
            let holder = i32::try_from(m.remap_id).ok().filter(|&h| h > 0).with_context(|| {
                format!("remap-fpath.img: the cwd of PID {pid}: remap_id {}: not a PID", m.remap_id)
            })?;
            let name = &crate::files::reg::by_id(set, p.fs.cwd_id, "the cwd")?.name;
            if *name != format!("/proc/{holder}") {
                bail!("files.img: entry id {} (the cwd of PID {pid}): {name:?} is not /proc/{holder}", p.fs.cwd_id);
            }
            if !opts.at_dump {
                cwd_holder_free(holder, pid)?;
            }
            (PathBuf::from(name), Some(holder))
        }
        None => {
            let (cwd, cwd_ghost) = crate::files::reg::mapped(set, p.fs.cwd_id, "the cwd")?;
            ghosts.extend(cwd_ghost.map(|g| (cwd.clone(), g)));
            (cwd, None)
        }
    };
    let root = PathBuf::from(&crate::files::reg::by_id(set, p.fs.root_id, "the root")?.name);

    let files = crate::files::plan(set, p)?;
    let mm_name = format!("mm-{pid}.img");
    let mut vmas = Vec::new();
    let mut guards = Vec::new();
    for (j, v) in p.mm.vmas.iter().enumerate() {
        let s = v.status;
        if s & vs::AREA_GUARD != 0 {
            guards.push((v.start, v.end));
            continue;
        }
        let backing = if s & vs::AREA_VSYSCALL != 0 {
            Backing::Vsyscall
        } else if s & vs::AREA_REGULAR == 0 {
            continue;
        } else if s & vs::AREA_VDSO != 0 {
            Backing::Vdso
        } else if s & vs::AREA_VVAR != 0 {
            Backing::Vvar
        } else if s & vs::AREA_SYSVIPC != 0 {
            crate::sysv::restore::backing(v, vmas.last(), ipc, &format!("{mm_name}: entry 0: vmas[{j}]"))?
        } else if s & vs::ANON_SHARED != 0 {
            Backing::Shmem { shmid: v.shmid }
        } else if s & vs::AREA_MEMFD != 0 {
            crate::files::memfd::backing(set, v, &format!("{mm_name}: entry 0: vmas[{j}]"))?
        } else if s & (vs::AREA_SOCKET | vs::AREA_AIORING | vs::AREA_MEMFD | vs::AREA_SHSTK) != 0 {
            bail!("{mm_name}: entry 0: vmas[{j}]: status {s:#x}: this kind of mapping is not restored yet");
        } else if s & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            let what = format!("{mm_name} vmas[{j}], mapped at {:#x}", v.start);
            let (path, ghost) = crate::files::reg::mapped(set, v.shmid as u32, &what)?;
            if let Some(g) = ghost.filter(|_| !ghosts.iter().any(|(p, _)| *p == path)) {
                ghosts.push((path.clone(), g));
            }
            let open_flags = v.fdflags.map(|f| f as i32).unwrap_or(libc::O_RDONLY) & libc::O_ACCMODE;
            Backing::File { path, open_flags }
        } else {
            Backing::Anon
        };
        // The vsyscall page (x86_64) and ARM's vector page are the kernel's,
        // at fixed places above user space on most machines; the restore
        // leaves them to it.
        if backing != Backing::Vsyscall {
            check_user_end(&format!("{mm_name}: entry 0: vmas[{j}]"), v, user_end)?;
        }
        vmas.push(VmaPlan {
            start: v.start,
            end: v.end,
            prot: v.prot,
            flags: v.flags,
            pgoff: v.pgoff,
            madv: v.madv.unwrap_or(0),
            backing,
        });
    }
    if !guards.is_empty() && !guard_regions_work() {
        bail!(
            "{mm_name}: {} guard regions (MADV_GUARD_INSTALL), which this kernel cannot install (Linux 6.13 and \
             later can)",
            guards.len()
        );
    }
    let (pages, page_runs) = pages(set, p)?;

    let mm = &p.mm;
    let sigactions = tc
        .sigactions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Some(SigAction {
                signo: convert::sigaction_signo(i)?,
                pad: 0,
                handler: s.sigaction,
                flags: s.flags,
                restorer: s.restorer,
                mask: s.mask,
            })
        })
        .collect();
    let rlimits = tc
        .rlimits
        .iter()
        .flat_map(|r| r.rlimits.iter().enumerate())
        .map(|(i, r)| Rlimit { resource: i as u32, pad: 0, cur: r.cur, max: r.max })
        .collect();
    let itimers = tc
        .timers
        .iter()
        .flat_map(|t| [(0, &t.real), (1, &t.virt), (2, &t.prof)])
        .filter(|(_, t)| t.vsec != 0 || t.vusec != 0 || t.isec != 0 || t.iusec != 0)
        .map(|(which, t)| {
            // A periodic timer reads 0 between its expiry and the delivery
            // of its signal, which rearms it; the signal is pending in the
            // images, and setitimer with 0 would disarm the timer for good.
            // Its next expiry is one interval on.
            let (value_sec, value_usec) =
                if t.vsec == 0 && t.vusec == 0 { (t.isec, t.iusec) } else { (t.vsec, t.vusec) };
            ITimer { which, pad: 0, interval_sec: t.isec, interval_usec: t.iusec, value_sec, value_usec }
        })
        .collect();
    let posix_timers = tc
        .timers
        .iter()
        .flat_map(|t| &t.posix)
        .map(|t| PosixTimer {
            id: t.it_id as i32,
            clock: t.clock_id as i32,
            signo: t.si_signo,
            notify: t.it_sigev_notify,
            notify_tid: t.notify_thread_id.unwrap_or(0) as u32,
            flags: 0,
            sival: t.sival_ptr,
            interval_sec: t.isec,
            interval_nsec: t.insec,
            value_sec: t.vsec,
            value_nsec: t.vnsec,
        })
        .collect::<Vec<_>>();
    let mut signals = queued(tc.signals_s.as_ref(), 0);
    let mut threads = Vec::new();
    for t in &p.threads {
        let th = thread(t.tid, &t.core, tc, set.seccomp.as_ref())?;
        if let Some(tcore) = &t.core.thread_core {
            signals.extend(queued(tcore.signals_p.as_ref(), t.tid));
        }
        threads.push(th);
    }
    let mut posix_timers = posix_timers;
    timers_own_signals(&mut signals, &mut posix_timers);
    let groups =
        leader.thread_core.as_ref().and_then(|t| t.creds.as_ref()).map(|c| c.groups.clone()).unwrap_or_default();

    Ok(ProcessPlan {
        stop_signal,
        pid,
        ppid: if is_root { 0 } else { p.pstree.ppid as i32 },
        session,
        comm,
        exe,
        cwd,
        cwd_holder,
        root,
        umask: p.fs.umask.unwrap_or(0o022),
        fds: files.fds,
        pipes: files.pipes,
        owners: files.owners,
        anon_fds: files.anon_fds,
        locks: files.locks,
        vmas,
        pages,
        page_runs,
        guards,
        group_helpers: vec![],
        mm: MmMap {
            start_code: mm.mm_start_code,
            end_code: mm.mm_end_code,
            start_data: mm.mm_start_data,
            end_data: mm.mm_end_data,
            start_brk: mm.mm_start_brk,
            brk: mm.mm_brk,
            start_stack: mm.mm_start_stack,
            arg_start: mm.mm_arg_start,
            arg_end: mm.mm_arg_end,
            env_start: mm.mm_env_start,
            env_end: mm.mm_env_end,
        },
        auxv: terminated(&mm.mm_saved_auxv),
        sigactions,
        rlimits,
        itimers,
        posix_timers,
        signals,
        threads,
        vdso_proxy: opts.vdso_proxy,
        groups,
        cgroups: Vec::new(),
        ghosts,
        ctty: None,
        tty_fg: false,
        knobs: Knobs {
            child_subreaper: tc.child_subreaper.unwrap_or(false),
            thp_disabled: mm.thp_disabled.unwrap_or(false),
            dumpable: match mm.dumpable {
                None => None,
                Some(d @ (0 | 1)) => Some(d == 1),
                // SUID_DUMP_ROOT: the kernel's own choice after a
                // credential change; no call sets it.
                Some(d) => bail!("{mm_name}: entry 0: dumpable {d}: only 0 and 1 can be set again"),
            },
            personality: personality(tc),
            timer_slack_ns: tc.timer_slack_ns,
            oom_score_adj: tc.oom_score_adj,
            loginuid: tc.loginuid,
            membarrier: tc.membarrier_registration_mask.unwrap_or(0),
            coredump_filter: tc.coredump_filter,
            memory_merge: tc.memory_merge.unwrap_or(false),
            autogroup_nice: tc.autogroup_nice,
        },
    })
}

/// Where process `p`'s pages come from, and its page runs. Pages an
/// iterative dump left to its parents are read from the parents' images
/// (`chain.rs`).
fn pages(set: &ImageSet, p: &Process) -> Result<(Vec<PagesFile>, Vec<super::plan::PageRun>)> {
    let pid = p.pstree.pid;
    if p.pagemap.iter().all(|e| e.pe_flags() & pe::PARENT == 0) {
        let entries: Vec<(u64, u64, u32)> = p.pagemap.iter().map(|e| (e.vaddr, e.pages(), e.pe_flags())).collect();
        let runs = convert::page_runs(&entries, 4096).with_context(|| format!("pagemap-{pid}.img"))?;
        return Ok((vec![PagesFile::Image(p.pages.clone())], runs));
    }
    let levels = super::chain::levels(&set.dir, pid, &p.pagemap, &p.pages)?;
    let pieces = super::chain::resolve(&levels)?;
    super::chain::runs(&levels, &pieces)
}

/// Whether this kernel installs guard regions (`MADV_GUARD_INSTALL`),
/// tried once on a page of our own.
fn guard_regions_work() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        let len = std::num::NonZeroUsize::new(4096).expect("not zero");
        let (prot, flags) = (nix::sys::mman::ProtFlags::PROT_READ, nix::sys::mman::MapFlags::MAP_PRIVATE);
        // SAFETY: a fresh anonymous page of our own, unmapped below.
        let Ok(page) = (unsafe { nix::sys::mman::mmap_anonymous(None, len, prot, flags) }) else { return false };
        // SAFETY: a plain system call on that page, which nothing uses.
        let works =
            unsafe { libc::madvise(page.as_ptr(), 4096, linux_raw_sys::general::MADV_GUARD_INSTALL as i32) } == 0;
        // SAFETY: our own page, mapped above.
        let _ = unsafe { nix::sys::mman::munmap(page, 4096) };
        works
    })
}

/// The dumped personality. CRIU 4.2 reads `/proc/PID/personality`, which
/// is hex, with `atoi`: its images hold the hex digits read as decimal
/// (`ADDR_NO_RANDOMIZE`, 0x40000, becomes 40000). Images without
/// revenant's own timer slack field are CRIU's; theirs is read back as
/// hex, which is exact unless the value had a digit a-f (there `atoi`
/// stopped, and what follows is lost).
fn personality(tc: &TaskCoreEntry) -> u32 {
    if tc.timer_slack_ns.is_some() {
        return tc.personality;
    }
    u32::from_str_radix(&tc.personality.to_string(), 16).unwrap_or(tc.personality)
}

fn queued(q: Option<&SignalQueueEntry>, tid: u32) -> Vec<QueuedSignal> {
    q.iter()
        .flat_map(|q| &q.signals)
        .filter(|s| s.siginfo.len() >= 4)
        .map(|s| {
            let mut info = [0u8; 128];
            let n = s.siginfo.len().min(128);
            info[..n].copy_from_slice(&s.siginfo[..n]);
            QueuedSignal { tid, signo: u32::from_le_bytes([info[0], info[1], info[2], info[3]]), info }
        })
        .collect()
}

/// A pending signal one of the process's POSIX timers sent (`SI_TIMER`,
/// naming the timer, where it sends) leaves the queue: the timer fires
/// again at once instead (`TIMER_SIGNAL_PENDING`). The kernel keeps at
/// most one signal per timer and counts further expiries as overruns; a
/// copy queued beside the timer's own would be a second one (glibc's
/// `SIGEV_THREAD` then starts two threads at once). The overruns counted
/// before the dump are lost.
fn timers_own_signals(signals: &mut Vec<QueuedSignal>, timers: &mut [PosixTimer]) {
    const SI_TIMER: i32 = -2;
    const SIGEV_SIGNAL: u32 = 0;
    const SIGEV_THREAD_ID: u32 = 4;
    // `si_tid`, the timer's id: the union after three ints, aligned to a
    // pointer.
    let at = 12usize.next_multiple_of(std::mem::size_of::<usize>());
    let word = |info: &[u8; 128], at: usize| i32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    signals.retain(|s| {
        if word(&s.info, 8) != SI_TIMER {
            return true;
        }
        let sent_by = |t: &PosixTimer| {
            t.id == word(&s.info, at)
                && t.signo == s.signo
                && t.flags == 0
                && match t.notify {
                    SIGEV_SIGNAL => s.tid == 0,
                    SIGEV_THREAD_ID => s.tid == t.notify_tid,
                    _ => false,
                }
        };
        match timers.iter_mut().find(|t| sent_by(t)) {
            Some(t) => {
                t.flags = TIMER_SIGNAL_PENDING;
                false
            }
            None => true,
        }
    });
}

fn caps(words: &[u32]) -> u64 {
    words.first().copied().unwrap_or(0) as u64 | (words.get(1).copied().unwrap_or(0) as u64) << 32
}

fn thread(tid: u32, core: &CoreEntry, tc: &TaskCoreEntry, sc: Option<&SeccompEntry>) -> Result<ThreadPlan> {
    let name = format!("core-{tid}.img");
    let tcore = core.thread_core.as_ref().with_context(|| format!("{name}: entry 0: no thread_core"))?;
    let seccomp = crate::seccomp::restore::plan(&name, tcore, tc, sc)?;
    let (regs, fpu, clear_tid_addr) = if let Some(ti) = &core.thread_info {
        let g = &ti.gpregs;
        if g.mode.unwrap_or(1) != 1 {
            bail!("{name}: entry 0: thread_info.gpregs.mode: 32-bit (compat) tasks are not supported");
        }
        let regs = Regs::X86_64(X86Regs {
            r15: g.r15,
            r14: g.r14,
            r13: g.r13,
            r12: g.r12,
            bp: g.bp,
            bx: g.bx,
            r11: g.r11,
            r10: g.r10,
            r9: g.r9,
            r8: g.r8,
            ax: g.ax,
            cx: g.cx,
            dx: g.dx,
            si: g.si,
            di: g.di,
            orig_ax: g.orig_ax,
            ip: g.ip,
            cs: g.cs,
            flags: g.flags,
            sp: g.sp,
            ss: g.ss,
            fs_base: g.fs_base,
            gs_base: g.gs_base,
        });
        let f = &ti.fpregs;
        let legacy = convert::fxsave_area(
            f.cwd,
            f.swd,
            f.twd,
            f.fop,
            f.rip,
            f.rdp,
            f.mxcsr,
            f.mxcsr_mask,
            &f.st_space,
            &f.xmm_space,
        )
        .with_context(|| format!("{name}: entry 0: thread_info.fpregs"))?;
        let (bv, comps) = match &f.xsave {
            Some(x) => (
                x.xstate_bv,
                vec![
                    (2, convert::words_le(&x.ymmh_space, 4)),
                    (3, convert::words_le(&x.bndreg_state, 8)),
                    (4, convert::words_le(&x.bndcsr_state, 8)),
                    (5, convert::words_le(&x.opmask_reg, 8)),
                    (6, convert::words_le(&x.zmm_upper, 8)),
                    (7, convert::words_le(&x.hi16_zmm, 8)),
                    (9, convert::words_le(&x.pkru, 4)),
                ],
            ),
            None => (0b11, vec![]),
        };
        (regs, Fpu::X86(Box::new(convert::x86_fpu(legacy, bv, comps))), ti.clear_tid_addr)
    } else if let Some(ti) = &core.ti_arm {
        let g = &ti.gpregs;
        let r = [g.r0, g.r1, g.r2, g.r3, g.r4, g.r5, g.r6, g.r7, g.r8, g.r9, g.r10, g.fp, g.ip, g.sp, g.lr, g.pc];
        let mut fpregs = [0u64; 32];
        for (d, s) in fpregs.iter_mut().zip(&ti.fpstate.vfp_regs) {
            *d = *s;
        }
        let vfp = ArmVfp {
            fpregs,
            fpscr: ti.fpstate.fpscr,
            fpexc: ti.fpstate.fpexc,
            fpinst: ti.fpstate.fpinst,
            fpinst2: ti.fpstate.fpinst2,
        };
        let regs = Regs::Arm(ArmRegs { r, cpsr: g.cpsr, orig_r0: g.orig_r0, tls: ti.tls });
        (regs, Fpu::ArmVfp(Box::new(vfp)), ti.clear_tid_addr)
    } else {
        bail!("{name}: entry 0: no register set");
    };
    let sigmask = tcore.blk_sigset.unwrap_or(tc.blk_sigset);
    let altstack = tcore
        .sas
        .as_ref()
        .map(|s| AltStack { sp: s.ss_sp, flags: s.ss_flags as i32, size: s.ss_size })
        .unwrap_or(AltStack { sp: 0, flags: 2, size: 0 });
    let creds = tcore.creds.as_ref().map(|c| Creds {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        cap_inh: caps(&c.cap_inh),
        cap_prm: caps(&c.cap_prm),
        cap_eff: caps(&c.cap_eff),
        cap_bnd: caps(&c.cap_bnd),
        cap_amb: caps(&c.cap_amb),
        secbits: c.secbits,
        no_new_privs: c.no_new_privs.unwrap_or(0),
    });
    Ok(ThreadPlan {
        tid: tid as i32,
        regs,
        fpu: Some(fpu),
        sigmask,
        altstack,
        clear_tid_addr,
        robust_list: tcore.futex_rla,
        robust_list_len: tcore.futex_rla_len as u64,
        rseq: tcore.rseq_entry.as_ref().filter(|r| r.rseq_abi_pointer != 0).map(|r| Rseq {
            ptr: r.rseq_abi_pointer,
            len: r.rseq_abi_size,
            sig: r.signature,
        }),
        pdeath_sig: tcore.pdeath_sig.unwrap_or(0),
        sched: Sched {
            policy: tcore.sched_policy.unwrap_or(0),
            prio: tcore.sched_prio.unwrap_or(0),
            nice: tcore.sched_nice.unwrap_or(0),
        },
        affinity: tcore.cpu_affinity.clone(),
        ioprio: tcore.ioprio,
        creds,
        seccomp,
    })
}

/// A SysV attachment's piece: its first piece attaches the whole segment,
/// later ones (same segment, contiguous, continuing its offsets) are only
/// re-protected.
/// Loads `dir` and plans its restore.
pub fn plan_dir(dir: &Path, opts: &PlanOptions) -> Result<TreePlan> {
    let set = ImageSet::load(dir)?;
    plans(&set, opts)
}

/// The saved auxiliary vector with its closing AT_NULL pair, which CRIU's
/// images leave out: the kernel copies only the words it is given over the
/// restorer's own vector, and a reader of /proc/PID/auxv stops at AT_NULL.
fn terminated(auxv: &[u64]) -> Vec<u64> {
    let mut v = auxv.to_vec();
    if !v.len().is_multiple_of(2) {
        v.push(0);
    }
    if v.chunks(2).all(|kv| kv[0] != 0) {
        v.extend([0, 0]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRIU writes the hex personality read as decimal; ours is exact.
    #[test]
    fn criu_personalities_are_read_back_as_hex() {
        let criu = TaskCoreEntry { personality: 40000, ..Default::default() };
        assert_eq!(personality(&criu), 0x40000);
        let ours = TaskCoreEntry { personality: 0x40000, timer_slack_ns: Some(50000), ..Default::default() };
        assert_eq!(personality(&ours), 0x40000);
    }

    fn fixture(set: &str) -> ImageSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/criu-4.2/images").join(set);
        ImageSet::load(&dir).unwrap()
    }

    #[test]
    fn an_area_reaching_past_the_user_space_end_is_refused_naming_start_or_end() {
        let end = 0x7fff_ffff_f000;
        let vma = |start, end| VmaEntry { start, end, ..Default::default() };
        check_user_end("mm-1.img: entry 0: vmas[3]", &vma(0x7fff_fffd_e000, end), end).unwrap();
        let err = check_user_end("mm-1.img: entry 0: vmas[3]", &vma(0x7fff_fffd_e000, end + 0x1000), end).unwrap_err();
        assert!(
            err.to_string().starts_with("mm-1.img: entry 0: vmas[3].end 0x800000000000: beyond the end")
                && err.to_string().contains("(0x7ffffffff000)"),
            "{err}"
        );
        let err = check_user_end("mm-1.img: entry 0: vmas[4]", &vma(end, end + 0x1000), end).unwrap_err();
        assert!(err.to_string().starts_with("mm-1.img: entry 0: vmas[4].start 0x7ffffffff000: beyond"), "{err}");
    }

    /// A PID or TID equal to the limit is already out of reach; pstree
    /// entries are counted with the zombies among them.
    #[test]
    fn pids_and_tids_from_the_limit_up_are_refused_naming_the_entry() {
        let mut set = fixture("sh-loop");
        let (root, child) = (set.processes[0].pid(), set.processes[1].pid());
        assert!(root < child, "{root} {child}");
        check_pid_limit(&set, child + 1).unwrap();
        let err = check_pid_limit(&set, child).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("pstree.img: entry 1: pid {child}: not below the limit of {child} ")),
            "{err}"
        );

        // A zombie listed before the child moves it to entry 2.
        let mut pstree = set.processes[1].pstree.clone();
        pstree.pid = child + 10;
        pstree.threads = vec![child + 10];
        let core = set.processes[1].threads[0].core.clone();
        set.zombies.push(Zombie { entry: 1, pstree, core });
        let err = check_pid_limit(&set, child).unwrap_err().to_string();
        assert!(err.starts_with(&format!("pstree.img: entry 2: pid {child}:")), "{err}");
        let err = check_pid_limit(&set, child + 1).unwrap_err().to_string();
        assert!(err.starts_with(&format!("pstree.img: entry 1: pid {}:", child + 10)), "{err}");
        set.zombies.clear();

        set.processes[0].pstree.threads.push(child + 20);
        let err = check_pid_limit(&set, child + 20).unwrap_err().to_string();
        assert!(err.starts_with(&format!("pstree.img: entry 0: threads[1] {}:", child + 20)), "{err}");
        assert!(err.contains(PID_MAX), "{err}");
        check_pid_limit(&set, child + 21).unwrap();
    }
}
