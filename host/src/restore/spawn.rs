//! Turning a tree's plans into running processes: the host-made objects,
//! the tasks with their dumped PIDs, and the tracing parent's side until
//! every program runs.
//!
//! [`restore_tree`] first checks what planning could not (a PID taken
//! since, hard limits above ours, seccomp where ptrace is missing), then
//! makes, before any task exists, what the tasks share or cannot make:
//! SysV segments (`sysv::restore`, with their janitor), shared anonymous
//! memory and memfd objects (`shmem::restore`), terminals (`files::tty`),
//! pipes with their bytes, ends only in flight in queued messages included
//! (`files::pipe`), unix sockets, bound, listening and connected
//! (`files::unixsk`), TCP and UDP sockets (`files::inet`, connections
//! from the dump's keeper or rebuilt in repair mode, `files::tcp`), and
//! unlinked files, made at their old paths and unlinked again at once
//! (`files::ghost`). The tasks inherit the host's descriptors of them, or
//! open them through the host's `/proc/PID/fd/N`.
//!
//! `run_tree` then runs named stages:
//! - `prepare`: per process, its `ChildPlan` (paths as `CString`s, fd
//!   numbers, pipes to the host), credentials checked (`creds`) and its
//!   bootstrap area built in this process (`bootstrap`), after the premap
//!   region for copy-on-write sharing is reserved (`cow`);
//! - `wire`: who creates whom, the IPC namespace the root enters, and the
//!   tree's shared descriptions and their slots (`tree_files`); then the
//!   futex words for joined process groups (`child::Groups`);
//! - the root is created with its PID: a raw `clone3` with `set_tid`, or
//!   without clone3 (kernels before 5.5, qemu-user) `ns_last_pid` and
//!   `fork`, retried if another process takes the PID. The root runs
//!   `child::run`, which creates the rest of the tree;
//! - `seize` (x86_64): each task is traced as it appears
//!   (`PTRACE_O_TRACECLONE`, so the blob's threads are too;
//!   `PTRACE_O_SUSPEND_SECCOMP` for a sandboxed one), then given the
//!   go-ahead through its sync pipe;
//! - `catch`: each thread is held right after its blob's `rt_sigreturn`
//!   (`finish::catch`); with every process held, `held::set_held_state`
//!   sets what only another process may set, and the tree-wide last steps
//!   run (SysV removals, the host's hold on ghost files let go);
//! - `release`: per process, SIGTRAP's action back, the bootstrap area
//!   unmapped, registers back, detach (`finish::release`);
//! - `untraced` instead of the last three where ptrace is missing
//!   (qemu-user): each task runs on by itself and the last line of its log
//!   says whether its blob finished; the bootstrap area stays mapped.
//!
//! Each task's log reaches us through a pipe read on a thread of its own;
//! a failure kills the tree (threads collected before leaders, `reap`) and
//! the error carries the failing task's log.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::fcntl::OFlag;
use nix::libc;
use nix::unistd::{Pid, pipe2};
use revenant_arch::Errno;

use super::StopPoint;
use super::bootstrap::{self, ServiceFds};
use super::child::{self, ChildPlan, Open};
use super::plan::{Backing, PagesFile, ProcessPlan, ZombiePlan, cpath};
use super::{cow, held, tree_files};
use crate::sysv::restore::{self as sysv, IpcPlan};

/// How the tree is to be restored beyond its plans.
#[derive(Default)]
pub struct Run<'a> {
    /// The page server of a lazy restore.
    pub lazy: Option<&'a crate::lazy::PageServer>,
    /// `--watch`.
    pub watch: Option<std::time::Duration>,
    /// `--stop-at`, its PID resolved.
    pub stop: Option<super::StopAt>,
}

impl Run<'_> {
    /// Whether process `pid` is to be left at `point`.
    pub fn stops(&self, pid: i32, point: StopPoint) -> bool {
        self.stop.is_some_and(|s| s.point == point && s.pid == Some(pid))
    }
}

/// Where `--stop-at` left a task.
#[derive(Debug)]
pub struct Stopped {
    /// The point, in words.
    pub what: String,
    /// Where its blob is loaded, while it still is (a stop inside it).
    pub blob_base: Option<u64>,
}

/// A restored task, running the dumped program.
#[derive(Debug)]
pub struct Restored {
    pub pid: i32,
    /// What the blob logged.
    pub log: String,
    /// Left stopped for a debugger (`--stop-at`).
    pub stopped: Option<Stopped>,
}

/// Service fd numbers: above every fd the program had, so opening them
/// never disturbs the program's own.
pub(super) fn service_fds(p: &ProcessPlan, lazy: bool) -> ServiceFds {
    let pipe_fds = p.pipes.iter().flat_map(|pp| &pp.ends).flat_map(|e| &e.fds).map(|f| f.0 + 1);
    let anon_fds = p.anon_fds.iter().flat_map(|m| std::iter::once(m.fd).chain(m.dups.iter().map(|d| d.0)));
    let base =
        p.fds.iter().map(|f| f.fd + 1).chain(pipe_fds).chain(anon_fds.map(|fd| fd + 1)).max().unwrap_or(0).max(3);
    let pages: Vec<i32> = (base + 4..).take(p.pages.len()).collect();
    let mut next = base + 4 + p.pages.len() as i32;
    let mut files: Vec<(PathBuf, i32, i32)> = vec![];
    let vma = p
        .vmas
        .iter()
        .map(|v| match &v.backing {
            Backing::File { path, open_flags } => {
                if let Some((_, _, fd)) = files.iter().find(|(p, f, _)| p == path && f == open_flags) {
                    return *fd;
                }
                files.push((path.clone(), *open_flags, next));
                next += 1;
                next - 1
            }
            _ => -1,
        })
        .collect();
    let exe = if p.exe.as_deref().is_some_and(|e| !is_own_exe(e)) { base + 3 } else { -1 };
    let lazy = if lazy { base + 2 } else { -1 };
    let mut all: Vec<i32> = (base + 3..next).filter(|&fd| fd != base + 3 || exe >= 0).collect();
    all.extend((lazy >= 0).then_some(lazy));
    // The log goes last: the blob closes these in order.
    all.extend([base + 1, base]);
    ServiceFds { log: base, sync: base + 1, lazy, pages, exe, vma, all }
}

/// Whether `path` is this program's own executable. The task inherits
/// that one already, and the kernel refuses to replace an exe link with
/// itself while the file is mapped (EBUSY).
fn is_own_exe(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The plan of one task; `shared` are the regular-file descriptions the
/// tree's root opens for all (see [`tree_files`]).
fn child_plan(
    p: &ProcessPlan,
    fds: &ServiceFds,
    (log, sync): (i32, i32),
    lazy: Option<i32>,
    shared: &[u32],
    slots: &[Option<cow::Slot>],
) -> Result<ChildPlan> {
    // The pages images come first: `child::premap` finds image `i` at
    // `service[i]`.
    let mut service = p
        .pages
        .iter()
        .zip(&fds.pages)
        .map(|(f, &fd)| {
            let (path, flags) = match f {
                // The child cannot say much when an open fails: the pages
                // image is checked here, and the child's own open (by path,
                // after this check) still neither follows a link nor waits
                // on a FIFO put there since.
                PagesFile::Image(path) => {
                    revenant_images::file::ImageFile::open(path)?;
                    (cpath(path)?, libc::O_RDONLY | revenant_images::file::OPEN_FLAGS)
                }
                // A parent's, held open since the chain was read: opened
                // again through our fd's /proc link (the child closes what
                // it inherits before it opens its files).
                PagesFile::Parent { file, .. } => {
                    let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
                    (std::ffi::CString::new(path).expect("no NUL"), libc::O_RDONLY)
                }
            };
            Ok(Open { path, flags, fd, cloexec: true, ..Default::default() })
        })
        .collect::<Result<Vec<_>>>()?;
    if let (Some(exe), true) = (&p.exe, fds.exe >= 0) {
        service.push(Open {
            path: cpath(exe)?,
            flags: libc::O_RDONLY,
            fd: fds.exe,
            cloexec: true,
            ..Default::default()
        });
    }
    for (v, &fd) in p.vmas.iter().zip(&fds.vma) {
        if let Backing::File { path, open_flags } = &v.backing
            && !service.iter().any(|o| o.fd == fd)
        {
            service.push(Open { path: cpath(path)?, flags: *open_flags, fd, cloexec: true, ..Default::default() });
        }
    }
    let targets = p
        .fds
        .iter()
        .filter(|f| !shared.contains(&f.id))
        .map(|f| {
            let (path, flags, fd, pos, cloexec, fifo) =
                (cpath(&f.path)?, f.flags, f.fd, f.pos, f.cloexec, f.fifo.clone());
            Ok(Open { path, flags, fd, pos, cloexec, fifo })
        })
        .collect::<Result<Vec<_>>>()?;
    let highest = fds.all.iter().copied().max().unwrap_or(0);
    Ok(ChildPlan {
        session: p.session,
        log_fd: (log, fds.log),
        sync_fd: (sync, fds.sync),
        lazy_fd: lazy.map(|l| (l, fds.lazy)),
        scratch: highest.max(log).max(sync).max(lazy.unwrap_or(0)) + 1,
        service,
        fds: targets,
        takes: Vec::new(),
        root: (p.root != std::path::Path::new("/")).then(|| cpath(&p.root)).transpose()?,
        cwd: cpath(&p.cwd)?,
        cwd_holder: p.cwd_holder,
        umask: p.umask,
        entry: 0,
        args: 0,
        stack_top: 0,
        pid: p.pid,
        children: Vec::new(),
        zombies: Vec::new(),
        helpers: p.group_helpers.clone(),
        ipc_ns: None,
        cgroups: p.cgroups.iter().map(|c| cpath(c)).collect::<Result<_>>()?,
        groups: Default::default(),
        tree_files: Default::default(),
        knobs: p.knobs,
        premap: cow::fills(&p.vmas, &p.page_runs, slots)?,
        anon_fds: p.anon_fds.clone(),
        locks: p.locks.clone(),
        ctty: p.ctty.as_deref().map(cpath).transpose()?,
        tty_fg: p.tty_fg,
    })
}

/// Creates the task for `p` with its PID, lets it restore itself, and
/// returns once the dumped program runs in it.
pub fn restore_process(p: &ProcessPlan) -> Result<Restored> {
    Ok(restore_tree(std::slice::from_ref(p), &[], &IpcPlan::default(), &Default::default(), &Run::default())?.remove(0))
}

/// Refuses a sandboxed process where its filters cannot be held off the
/// restorer.
pub(super) fn seccomp_possible(p: &ProcessPlan) -> Result<()> {
    if p.threads.iter().any(|t| !t.seccomp.is_empty()) && !crate::kerndat::Kerndat::get()?.ptrace {
        bail!(
            "PID {}: restoring seccomp needs ptrace (PTRACE_O_SUSPEND_SECCOMP) to hold the filters off the \
             restorer, and ptrace is not available here",
            p.pid
        );
    }
    Ok(())
}

/// Refuses `p` when the fds it needs, up to `scratch` (the child's first
/// free one, above every service fd), reach RLIMIT_NOFILE (`nofile`).
pub(super) fn fd_room(p: &ProcessPlan, scratch: i32, nofile: u64) -> Result<()> {
    if scratch as u64 + 2 >= nofile {
        bail!("PID {}: the images need fd numbers up to {}, above RLIMIT_NOFILE ({nofile})", p.pid, scratch + 2);
    }
    Ok(())
}

/// One process, prepared in this process before any task exists.
struct Prepared {
    area: bootstrap::Bootstrap,
    log_rx: Option<OwnedFd>,
    log_tx: Option<OwnedFd>,
    sync_rx: Option<OwnedFd>,
    sync_tx: Option<OwnedFd>,
}

/// Restores a process tree: `plans[0]` is the root and every other plan's
/// parent comes before it. The root is created from here; each process
/// creates its own children (so they are its children again) before it
/// enters its blob, and its `zombies` too; the SysV segments of `ipc` exist
/// before any of them. Returns once every program runs.
pub fn restore_tree(
    plans: &[ProcessPlan],
    zombies: &[ZombiePlan],
    ipc: &IpcPlan,
    host: &super::plan::HostObjects,
    run: &Run<'_>,
) -> Result<Vec<Restored>> {
    let shmem = &host.shmem[..];
    for p in plans {
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)) {
            bail!("PID {} is in use (by {}): cannot restore the process with its dumped PID", p.pid, comm.trim());
        }
        super::limits::check(p)?;
        seccomp_possible(p)?;
    }
    let needed: Vec<i32> =
        plans.iter().flat_map(|p| p.threads.iter().map(|t| t.tid)).chain(zombies.iter().map(|z| z.pid)).collect();
    let mut shm = sysv::create(ipc, &needed)?;
    let renumbered: Vec<ProcessPlan>;
    let plans = if ipc.segments.iter().any(|s| shm.id_of(s.id) != s.id) {
        renumbered = plans.iter().map(|p| p.with_shm_ids(|id| shm.id_of(id))).collect();
        &renumbered[..]
    } else {
        plans
    };
    // Held until every task has mapped its areas of them.
    let objects = crate::shmem::restore::make(shmem)?;
    let mapped: Vec<ProcessPlan>;
    let plans = if shmem.is_empty() {
        plans
    } else {
        mapped = plans.iter().map(|p| objects.apply(p)).collect::<Result<_>>()?;
        &mapped[..]
    };
    // Terminals are opened here, each description once, and handed to the
    // root like the memfds; ours go once the tasks hold theirs.
    let tty_fds: Vec<&super::plan::FdPlan> = plans.iter().flat_map(|p| &p.fds).filter(|f| f.tty.is_some()).collect();
    let ttys = crate::files::tty::make(&host.ttys, &tty_fds)?;
    // Pipes, with the ends only in flight in queued messages, and the
    // files in flight opened by path, before the sockets that carry them.
    let in_flight_pipes = host.inflight.iter().filter_map(|f| f.pipe());
    let pipes =
        crate::files::pipe::make_all(plans.iter().flat_map(|p| &p.pipes).chain(in_flight_pipes), &host.given_pipes)?;
    let in_flight_regs = crate::files::unixsk::open_in_flight(&host.inflight)?;
    let carried: Vec<(u32, i32)> =
        pipes.iter().chain(&in_flight_regs).map(|(id, fd)| (*id, std::os::fd::AsRawFd::as_raw_fd(fd))).collect();
    let mut sockets = crate::files::unixsk::make(&host.sockets, &carried)?;
    let mut inet = crate::files::inet::make(&host.inet, host.keeper.as_deref())?;
    let netlink = crate::files::netlink::make(&host.netlink)?;
    let packet = crate::files::packet::make(&host.packet)?;
    let dead_pidfds = crate::files::anonfd::pidfd::make_dead(plans.iter().flat_map(|p| &p.fds))?;
    let shared_anon = crate::files::anonfd::make_shared(plans.iter().flat_map(|p| &p.fds))?;
    // Unlinked files are made at their paths and unlinked again before any
    // task exists: the tasks open them through our descriptors.
    let ghosts = plans.iter().flat_map(|p| {
        let fds = p.fds.iter().filter_map(|f| {
            let creator = f.ghost_itself.then_some((f.id, f.flags));
            f.ghost.as_ref().map(|g| (f.path.as_path(), g, creator))
        });
        fds.chain(p.ghosts.iter().map(|(path, g)| (path.as_path(), g, None)))
    });
    let mut ghosts = crate::files::ghost::make(ghosts)?;
    let made: Vec<(u32, i32)> = ttys
        .fds
        .iter()
        .chain(&sockets.fds)
        .chain(&inet.fds)
        .chain(&netlink.fds)
        .chain(&packet)
        .chain(&dead_pidfds)
        .chain(&shared_anon)
        .chain(&pipes)
        .map(|(id, fd)| (*id, std::os::fd::AsRawFd::as_raw_fd(fd)))
        .chain(ghosts.descriptions())
        .collect();
    crate::files::anonfd::watch_shared(plans, &made)?;
    let with_made: Vec<ProcessPlan>;
    let plans = if made.is_empty() && ghosts.is_empty() {
        plans
    } else {
        with_made = plans.iter().map(|p| p.with_host_made(&made).with_paths(|path| ghosts.opened_at(path))).collect();
        &with_made[..]
    };
    // Until `keep`, a failure removes the segments again.
    let mut restored = run_tree(plans, zombies, shm.ns_fd(), run, || {
        ghosts.release();
        // The keeper goes first: one that outlived a failure from here on
        // would hold sockets the programs use.
        inet.done()?;
        inet.release()?;
        shm.finish()
    })?;
    shm.keep();
    sockets.keep();
    if let Some(r) = restored.first_mut() {
        let notes: String = inet.notes.iter().chain(&netlink.notes).map(|n| format!("host: {n}\n")).collect();
        r.log.insert_str(0, &notes);
    }
    Ok(restored)
}

/// Restores the tree; `before_run` runs once every process is restored,
/// before any program runs again where the host can hold them (ptrace),
/// else right after they all run. The stages, in order: [`prepare`] each
/// task's plan and bootstrap area, [`wire`] the tree (who creates whom, the
/// shared descriptions, the group words), create the root, then where
/// ptrace works [`seize`] each task as it appears, [`catch`] each one right
/// after its blob's sigreturn, set what the host sets while they are held,
/// and [`release`] them; elsewhere each task runs on by itself
/// ([`untraced`]).
fn run_tree(
    plans: &[ProcessPlan],
    zombies: &[ZombiePlan],
    ipc_ns: Option<i32>,
    run: &Run<'_>,
    before_run: impl FnOnce() -> Result<()>,
) -> Result<Vec<Restored>> {
    // Where ptrace works, the host catches each task after its sigreturn and
    // unmaps its bootstrap area; elsewhere (qemu-user) the area stays.
    let traced = crate::kerndat::Kerndat::get()?.ptrace;
    // Before the log readers start, so that they block it too.
    let _sigchld = traced.then(super::finish::SigchldBlocked::new).transpose()?;
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?.0 as u64;
    let helpers = helper_tids(plans, zombies);
    let shared = tree_files::shared_regs(plans);
    // Reserved before the bootstrap areas, which keep out of it; the tasks
    // inherit it, so ours can go once the root exists.
    let premap = cow::plan(plans)?;
    let (prepared, mut cps) = prepare(plans, &helpers, &shared, traced, nofile, premap.as_ref(), run)?;
    // The root takes the host's descriptions from these copies.
    let held = wire(plans, zombies, &mut cps, &shared, ipc_ns, nofile)?;
    // Every task inherits these from the root: ours can go once it exists.
    let groups = child::Groups::new(plans.iter().map(|p| p.session).chain(zombies.iter().map(|z| z.session)))?;
    cps.iter_mut().for_each(|c| c.groups = groups.words());
    let root = spawn_with_pid(plans[0].pid, &cps, 0)?;
    drop(held);
    drop(groups);
    drop(premap);
    let started = Started::new(plans, prepared, root);
    if traced {
        traced_finish(plans, &helpers, started, run, before_run)
    } else {
        untraced(plans, started, run, before_run)
    }
}

/// Each task's plan and bootstrap area, with the pipes it talks to us by.
fn prepare(
    plans: &[ProcessPlan],
    helpers: &[u32],
    shared: &[u32],
    traced: bool,
    nofile: u64,
    premap: Option<&cow::Premap>,
    run: &Run<'_>,
) -> Result<(Vec<Prepared>, Vec<ChildPlan>)> {
    let lazy = run.lazy;
    let mut prepared = Vec::new();
    let mut cps = Vec::new();
    for (i, (p, &helper)) in plans.iter().zip(helpers).enumerate() {
        let fds = service_fds(p, lazy.is_some());
        let (log_rx, log_tx) = pipe2(OFlag::O_CLOEXEC).context("creating the log pipe")?;
        let (sync_rx, sync_tx) = pipe2(OFlag::O_CLOEXEC).context("creating the sync pipe")?;
        let premapped = premap.map_or_else(bootstrap::Premapped::default, |m| bootstrap::Premapped {
            region: (m.start, m.len),
            slots: &m.slots[i],
        });
        let pipes = (log_tx.as_raw_fd(), sync_rx.as_raw_fd());
        let mut cp = child_plan(p, &fds, pipes, lazy.map(|l| l.client_fd()), shared, premapped.slots)?;
        fd_room(p, cp.scratch, nofile)?;
        let creds = super::creds::plan(p)?;
        // Stopped at the blob's entry and left to a debugger, a task must
        // not trap at the end for a host that is gone by then.
        let at_entry = run.stops(p.pid, StopPoint::BlobEntry);
        let modes = bootstrap::Modes { trap: traced && !at_entry, lazy: lazy.is_some(), log: !at_entry };
        let area = bootstrap::build(p, &fds, modes, &creds, helper, premapped)?;
        if let Some(server) = lazy
            && !area.lazy.areas.is_empty()
        {
            let images = p.pages.iter().map(|f| f.open()).collect::<Result<Vec<_>>>()?;
            server.describe(p.pid, &images, &area.lazy.pages, &area.lazy.areas)?;
        }
        cp.entry = area.entry as usize;
        cp.args = area.args as usize;
        cp.stack_top = area.stack_top as usize;
        cps.push(cp);
        prepared.push(Prepared {
            area,
            log_rx: Some(log_rx),
            log_tx: Some(log_tx),
            sync_rx: Some(sync_rx),
            sync_tx: Some(sync_tx),
        });
    }
    Ok((prepared, cps))
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`
/// field 22).
fn start_ticks(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Who creates whom (each process its children and zombies), the IPC
/// namespace the root enters, and the tree's shared descriptions; returns
/// the copies of the host's descriptions the root takes its slots from.
fn wire(
    plans: &[ProcessPlan],
    zombies: &[ZombiePlan],
    cps: &mut [ChildPlan],
    shared: &[u32],
    ipc_ns: Option<i32>,
    nofile: u64,
) -> Result<Vec<std::os::fd::OwnedFd>> {
    for (i, p) in plans.iter().enumerate().skip(1) {
        let parent = plans[..i]
            .iter()
            .position(|q| q.pid == p.ppid)
            .with_context(|| format!("PID {}: its parent {} is not restored before it", p.pid, p.ppid))?;
        cps[parent].children.push(i);
    }
    for z in zombies {
        let parent = plans
            .iter()
            .position(|q| q.pid == z.ppid)
            .with_context(|| format!("zombie {}: its parent {} is not restored", z.pid, z.ppid))?;
        cps[parent].zombies.push(z.clone());
    }
    if plans.len() > 1 && cps.iter().any(|c| c.scratch <= 0) {
        bail!("bad fd plan");
    }
    cps[0].ipc_ns = ipc_ns;
    let (tree, copies) = tree_files::tree_files(plans, cps, shared, ipc_ns, nofile)?;
    for (c, p) in cps.iter_mut().zip(plans) {
        c.takes = tree_files::takes(p, &tree, shared)?;
        c.tree_files = tree.clone();
    }
    Ok(copies)
}

/// The tree once its root exists: each task's PID, bootstrap area, log
/// reader and go-ahead pipe.
struct Started {
    root: Pid,
    pids: Vec<Pid>,
    /// (bootstrap start, length, what the host logged for it).
    spans: Vec<(u64, u64, String)>,
    readers: Vec<std::thread::JoinHandle<String>>,
    syncs: Vec<OwnedFd>,
    /// Every thread of the tree but the leaders.
    threads: Vec<i32>,
    /// When the root started (clock ticks since boot): every task of the
    /// tree started since.
    since: u64,
}

impl Started {
    fn new(plans: &[ProcessPlan], mut prepared: Vec<Prepared>, root: Pid) -> Started {
        let mut spans = Vec::new();
        let mut readers = Vec::new();
        for pr in &mut prepared {
            let host = format!("host: blob at {:#x}\nhost: {}\n", pr.area.start, pr.area.vdso);
            spans.push((pr.area.start, pr.area.unmap_len, host));
            drop(pr.log_tx.take());
            drop(pr.sync_rx.take());
            let rx = pr.log_rx.take().expect("prepared once");
            readers.push(std::thread::spawn(move || read_all(rx)));
        }
        // The parent's copies of the bootstrap areas are no longer needed.
        let syncs = prepared.iter_mut().map(|pr| pr.sync_tx.take().expect("prepared once")).collect();
        let pids = plans.iter().map(|p| Pid::from_raw(p.pid)).collect();
        let threads = plans.iter().flat_map(|p| p.threads.iter().map(|t| t.tid).filter(move |&t| t != p.pid)).collect();
        let since = start_ticks(root).unwrap_or(0);
        Started { root, pids, spans, readers, syncs, threads, since }
    }

    /// Kills the tree. Traced or not, every thread is collected before
    /// the leaders: see [`crate::reap`].
    fn kill_all(&self) {
        for pid in self.pids.iter().rev().filter(|p| self.ours(**p)) {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = crate::reap::collect(self.threads.clone(), self.pids.iter().map(|p| p.as_raw()).collect());
        let _ = nix::sys::wait::waitpid(self.root, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }

    /// Whether `pid` is a process this restore made: a restore that failed
    /// because a PID of the tree was taken meanwhile must not kill whoever
    /// took it (a thread of ours, say, or a process that was there first).
    /// Ours: a process (not a thread), not us, started since the root.
    fn ours(&self, pid: Pid) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
        let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")?.trim().parse::<i32>().ok());
        tgid == Some(pid.as_raw())
            && pid.as_raw() != std::process::id() as i32
            && start_ticks(pid).is_some_and(|t| t >= self.since)
    }

    /// Each task's whole log, after what the host said of it.
    /// Every task's log; `open` marks tasks that still hold theirs (left
    /// at their blob's entry), whose reader is not waited for.
    fn logs(&mut self, open: &[bool]) -> Vec<String> {
        std::mem::take(&mut self.readers)
            .into_iter()
            .zip(&self.spans)
            .enumerate()
            .map(|(i, (r, s))| {
                if open.get(i).copied().unwrap_or(false) {
                    return s.2.clone();
                }
                s.2.clone() + &r.join().unwrap_or_default()
            })
            .collect()
    }
}

/// A failed stage: which plan it concerns, and why.
type Failure = (usize, anyhow::Error);

/// The traced end of a restore: seize, catch, set the held state, let
/// `before_run` act, release; on any failure the tree is killed and the
/// error carries the failing task's log.
fn traced_finish(
    plans: &[ProcessPlan],
    helpers: &[u32],
    mut started: Started,
    run: &Run<'_>,
    before_run: impl FnOnce() -> Result<()>,
) -> Result<Vec<Restored>> {
    let syncs = std::mem::take(&mut started.syncs);
    let mut setup_failed = false;
    let outcome = seize(plans, &started.pids, &syncs, &mut setup_failed, run, &started.spans)
        .and_then(|()| {
            drop(syncs);
            catch(plans, &started.pids, helpers, &started.spans, run)
        })
        .and_then(|held| {
            // Every program is held right before its first instruction.
            plans.iter().try_for_each(held::set_held_state).map_err(|e| (0, e))?;
            before_run()
                .and_then(|()| crate::fault::step(|| "about to let the programs run".into()))
                .map_err(|e| (0, e))?;
            release(plans, &started.pids, held, &started.spans, run)
        });
    if outcome.is_err() {
        started.kill_all();
    }
    let open: Vec<bool> = plans.iter().map(|p| run.stops(p.pid, StopPoint::BlobEntry)).collect();
    let logs = started.logs(if outcome.is_ok() { &open } else { &[] });
    match outcome {
        Ok(restored) => {
            Ok(restored.into_iter().zip(logs).map(|((pid, stopped), log)| Restored { pid, log, stopped }).collect())
        }
        Err((i, e)) => {
            let own = logs.iter().position(|l| l.contains(child::SETUP_ERROR)).filter(|_| setup_failed);
            if let Some(j) = own {
                let why = super::describe_exit(child::SETUP_FAILED);
                return Err(anyhow::anyhow!("restoring PID {}: {why}{}", plans[j].pid, log_tail(&logs[j])));
            }
            Err(anyhow::anyhow!("{e:#}{}", log_tail(&logs[i])))
        }
    }
}

/// Traces each task as it appears (its parent creates it) and gives it
/// the go-ahead. A task that fails its own setup exits, and our ptrace or
/// pipe call fails: its log says why, our error does not (`setup_failed`).
fn seize(
    plans: &[ProcessPlan],
    pids: &[Pid],
    syncs: &[OwnedFd],
    setup_failed: &mut bool,
    run: &Run<'_>,
    spans: &[(u64, u64, String)],
) -> Result<(), Failure> {
    use nix::sys::ptrace;
    let opts = ptrace::Options::PTRACE_O_TRACESYSGOOD
        | ptrace::Options::PTRACE_O_EXITKILL
        | ptrace::Options::PTRACE_O_TRACECLONE;
    // Until we let go, the filters the blob installs must not judge its
    // own calls or our munmap.
    let suspend = crate::seccomp::SUSPEND_SECCOMP;
    for (i, ((pid, sync), p)) in pids.iter().zip(syncs).zip(plans).enumerate() {
        let sandboxed = p.threads.iter().any(|t| !t.seccomp.is_empty());
        let opts = if sandboxed { opts | suspend } else { opts };
        // Children appear once their parent has created them.
        let mut tries = 0;
        while !std::path::Path::new(&format!("/proc/{pid}")).exists() && tries < 5000 {
            std::thread::sleep(std::time::Duration::from_micros(200));
            tries += 1;
        }
        let traced = match ptrace::seize(*pid, opts) {
            Err(nix::errno::Errno::EPERM) if sandboxed => Err(anyhow::anyhow!(
                "cannot trace the new task {pid} with its seccomp suspended: that needs CAP_SYS_ADMIN"
            )),
            Err(e) => Err(anyhow::anyhow!("cannot trace the new task {pid}: {e}")),
            Ok(()) => break_at_entry(*pid, run.stops(p.pid, StopPoint::BlobEntry).then_some(spans[i].0))
                .and_then(|()| nix::unistd::write(sync, &[1]).map(drop).context("releasing a new task")),
        };
        if let Err(e) = traced {
            *setup_failed = true;
            return Err((i, e));
        }
        crate::fault::step(|| format!("PID {pid} created and traced")).map_err(|e| (i, e))?;
    }
    Ok(())
}

/// With `area` (its bootstrap area), stops the seized task `pid` at its
/// blob's first instruction, with a hardware breakpoint: the code stays
/// as it is for a debugger to read.
fn break_at_entry(pid: Pid, area: Option<u64>) -> Result<()> {
    use nix::sys::ptrace;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Some(area) = area else { return Ok(()) };
    ptrace::interrupt(pid).with_context(|| format!("stopping {pid} to set a breakpoint"))?;
    match waitpid(pid, Some(WaitPidFlag::__WALL)).with_context(|| format!("waiting for {pid}"))? {
        WaitStatus::PtraceEvent(..) => {}
        other => bail!("{pid}: {other:?} instead of the stop asked for"),
    }
    super::finish::set_breakpoint(pid, Some(area + crate::blob::EMBEDDED.entry))?;
    ptrace::cont(pid, None).with_context(|| format!("resuming {pid}"))
}

/// Holds every task right after its blob's sigreturn.
fn catch(
    plans: &[ProcessPlan],
    pids: &[Pid],
    helpers: &[u32],
    spans: &[(u64, u64, String)],
    run: &Run<'_>,
) -> Result<Vec<Result<super::finish::Held, String>>, Failure> {
    use super::finish::Outcome;
    let mut held = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let helper = (helpers[i] != 0).then(|| Pid::from_raw(helpers[i] as i32));
        let (start, len) = (spans[i].0, spans[i].1);
        let place = |addr: u64| super::explain::place(addr, p, start, len);
        let stop = [StopPoint::BlobEntry, StopPoint::BeforeSigreturn]
            .into_iter()
            .find(|&s| run.stops(p.pid, s))
            .map(|s| (s, start + crate::blob::EMBEDDED.entry));
        match super::finish::catch(pids[i], p.threads.len(), helper, &place, stop) {
            Ok(Outcome::Left(what)) => held.push(Err(what)),
            Ok(Outcome::Held(h)) => {
                held.push(Ok(h));
                crate::fault::step(|| format!("PID {} restored and held", p.pid)).map_err(|e| (i, e))?;
            }
            Ok(Outcome::Failed(why)) => return Err((i, anyhow::anyhow!("restoring PID {}: {why}", p.pid))),
            Err(e) => return Err((i, e.context(format!("restoring PID {}", p.pid)))),
        }
    }
    Ok(held)
}

/// Lets every held task go: its SIGTRAP action back, its bootstrap area
/// unmapped, detached (stopped again if it was).
fn release(
    plans: &[ProcessPlan],
    pids: &[Pid],
    held: Vec<Result<super::finish::Held, String>>,
    spans: &[(u64, u64, String)],
    run: &Run<'_>,
) -> Result<Vec<(i32, Option<Stopped>)>, Failure> {
    let watch = run.watch;
    let mut restored = Vec::new();
    let mut watched = Vec::new();
    for (i, h) in held.into_iter().enumerate() {
        let (start, len, _) = &spans[i];
        let p = &plans[i];
        let h = match h {
            Ok(h) => h,
            Err(left) => {
                restored.push((p.pid, Some(Stopped { what: left, blob_base: Some(*start) })));
                continue;
            }
        };
        let sigtrap = p.sigactions.iter().find(|a| a.signo == libc::SIGTRAP as u32).copied().unwrap_or_default();
        let leave = run.stops(p.pid, StopPoint::AfterRestore);
        let tids = super::finish::release(pids[i], h, (*start, *len), &sigtrap, p.stop_signal, watch.is_some(), leave)
            .map_err(|e| (i, e.context(format!("restoring PID {}", p.pid))))?;
        if !tids.is_empty() {
            watched.push((i, tids));
        }
        let what = "stopped right after its restore, at the program's own next instruction";
        let note = leave.then(|| Stopped { what: what.into(), blob_base: None });
        restored.push((p.pid, note));
    }
    let Some(span) = watch else { return Ok(restored) };
    let places: Vec<_> = watched
        .iter()
        .map(|(i, _)| {
            let (p, (start, len)) = (&plans[*i], (spans[*i].0, spans[*i].1));
            move |addr: u64| super::explain::place(addr, p, start, len)
        })
        .collect();
    let procs = watched
        .iter()
        .zip(&places)
        .map(|((i, tids), place)| (pids[*i], tids.clone(), place as &dyn Fn(u64) -> String))
        .collect();
    let deaths = super::finish::watch(procs, span).map_err(|e| (0, e))?;
    if let Some(d) = deaths.first() {
        let i = plans.iter().position(|p| p.pid == d.pid.as_raw()).unwrap_or(0);
        let fault = d.first_fault.as_deref().map(|f| format!(": {f}")).unwrap_or_default();
        let ms = d.after.as_secs_f64() * 1e3;
        return Err((
            i,
            anyhow::anyhow!(
                "PID {} {} {ms:.1} ms after the restore let it run{fault} (its registers came from core-{}.img)",
                d.pid,
                d.how,
                d.pid
            ),
        ));
    }
    Ok(restored)
}

/// Without ptrace (qemu-user): each task runs on once its blob is done;
/// the last line of its log says whether it was.
fn untraced(
    plans: &[ProcessPlan],
    mut started: Started,
    run: &Run<'_>,
    before_run: impl FnOnce() -> Result<()>,
) -> Result<Vec<Restored>> {
    if run.watch.is_some() || run.stop.is_some() {
        bail!("--watch and --stop-at need ptrace, which is not available here");
    }
    for sync in &started.syncs {
        nix::unistd::write(sync, &[1]).context("releasing a new task")?;
    }
    drop(std::mem::take(&mut started.syncs));
    // Each blob closes its log right before its sigreturn, or exits after
    // logging an error: the first that fails ends the restore.
    let readers = std::mem::take(&mut started.readers);
    let mut out = Vec::new();
    for ((r, s), p) in readers.into_iter().zip(&started.spans).zip(plans) {
        let log = s.2.clone() + &r.join().unwrap_or_default();
        if log.lines().last() != Some(super::DONE_LINE) {
            let why = match nix::sys::wait::waitpid(Pid::from_raw(p.pid), None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => super::describe_exit(code),
                Ok(other) => format!("ended with {other:?}"),
                Err(e) => format!("cannot be waited for: {e}"),
            };
            started.kill_all();
            bail!("restoring PID {}: {why}{}", p.pid, log_tail(&log));
        }
        out.push(Restored { pid: p.pid, log, stopped: None });
    }
    // Without ptrace nothing holds the programs: they already run.
    for p in plans.iter().filter(|p| p.stop_signal.is_some()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), nix::sys::signal::Signal::SIGSTOP);
    }
    if let Err(e) = plans.iter().try_for_each(held::set_held_state).and_then(|()| before_run()) {
        started.kill_all();
        return Err(e);
    }
    Ok(out)
}

/// Below this many bytes of pages a second copying thread costs more than
/// it saves.
const HELPER_FILL: u64 = 16 << 20;

/// For each process with much memory to fill, a TID for the blob's helper
/// thread (0 for none): free now, and neither a TID or zombie of the tree
/// nor another process's helper. Taken from the top of the PID range, where the kernel
/// gets to last when it hands out PIDs. If the TID is taken by the time the
/// blob wants it, the blob fills alone.
pub(super) fn helper_tids(plans: &[ProcessPlan], zombies: &[ZombiePlan]) -> Vec<u32> {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(32768);
    let mut taken: std::collections::HashSet<u32> = plans
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| t.tid as u32))
        .chain(zombies.iter().map(|z| z.pid as u32))
        .collect();
    let mut next = pid_max;
    plans
        .iter()
        .map(|p| {
            if p.page_runs.iter().map(|r| r.len).sum::<u64>() < HELPER_FILL {
                return 0;
            }
            // A few tries: a busy top of the range means something odd.
            for _ in 0..16 {
                next = next.saturating_sub(1);
                if next > 300 && !taken.contains(&next) && !std::path::Path::new(&format!("/proc/{next}")).exists() {
                    taken.insert(next);
                    return next;
                }
            }
            0
        })
        .collect()
}

/// Creates the task with PID `pid` running `child::run(cps, me)`.
fn spawn_with_pid(pid: i32, cps: &[ChildPlan], me: usize) -> Result<Pid> {
    // SAFETY: the child runs `child::run`, which never returns.
    match unsafe { child::clone_with_pid(pid) } {
        Ok(0) => child::run(cps, me),
        Ok(child) => Ok(Pid::from_raw(child as i32)),
        Err(Errno::EEXIST) => {
            bail!("PID {pid} is in use: cannot restore the process with its dumped PID")
        }
        Err(Errno::EPERM) => {
            bail!("creating PID {pid} needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE) in the PID namespace")
        }
        Err(Errno::ENOSYS) => spawn_via_last_pid(pid, cps, me),
        Err(e) => bail!("clone3 with PID {pid} failed: errno {}", e.raw()),
    }
}

/// Without clone3 (kernels before 5.5, qemu-user): set the namespace's
/// last PID and fork. The file is locked for the whole attempt, as CRIU
/// locks it, so restores (ours, CRIU's, other threads of this process)
/// wait for each other. Any other task created in between still takes the
/// PID; the child we got instead is killed, and if the thief is gone
/// within a grace period the attempt is repeated.
fn spawn_via_last_pid(pid: i32, cps: &[ChildPlan], me: usize) -> Result<Pid> {
    const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
    const GRACE: std::time::Duration = std::time::Duration::from_secs(3);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(LAST_PID)
        .with_context(|| format!("clone3 is missing, and opening {LAST_PID} failed"))?;
    let _locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {LAST_PID}"))?;
    for _ in 0..16 {
        std::fs::write(LAST_PID, format!("{}", pid - 1))
            .with_context(|| format!("clone3 is missing, and writing {LAST_PID} failed"))?;
        // SAFETY: the child runs `child::run`, which only makes raw syscalls
        // on data prepared before the fork and never returns.
        match unsafe { nix::unistd::fork() }.context("fork")? {
            nix::unistd::ForkResult::Child => child::run(cps, me),
            nix::unistd::ForkResult::Parent { child } if child.as_raw() == pid => return Ok(child),
            nix::unistd::ForkResult::Parent { child } => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                let proc = PathBuf::from(format!("/proc/{pid}"));
                let since = std::time::Instant::now();
                while proc.exists() {
                    if since.elapsed() > GRACE {
                        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
                        bail!("PID {pid} was taken while restoring, by {:?}, which still runs", comm.trim_end());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }
    bail!("could not get PID {pid}: other processes kept taking it")
}

fn log_tail(log: &str) -> String {
    if log.is_empty() { String::new() } else { format!("\nrestore log:\n{}", log.trim_end()) }
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    let _ = std::fs::File::from(fd).read_to_string(&mut s);
    s
}
