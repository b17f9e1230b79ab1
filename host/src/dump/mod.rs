//! `revenant dump`: checkpoint a live process tree (x86_64 or 32-bit ARM)
//! into CRIU-format images with ptrace.
//!
//! The tree is frozen first ([`freeze`]); everything after that reads the
//! stopped tasks from outside (/proc, ptrace, `process_vm_readv`) except a
//! few values only a task can ask for, which run as injected system calls
//! ([`inject`]). Any error releases the tree untouched: [`freeze::Frozen`]
//! resumes every task when dropped.
//!
//! [`dump()`] runs: namespaces other than ours (but IPC) refused, freeze,
//! [`collect`], [`write_images`] (all but the pages images, which `collect`
//! wrote as it went; everything under temporary names, renamed into place
//! with `inventory.img` last, see `imgdir.rs`), then `restorable`: the
//! restore's own planning on the images just written, so that what a
//! restore would refuse fails the dump while the program is still there
//! (the images are withdrawn, inventory first). Then `--leave-running`
//! releases the tree, or it is killed. `--timeout` bounds freezing and
//! collecting (`fault::Deadline`: a POSIX timer aims SIGALRM at the
//! dumping thread and the next step fails); the tree is resumed after the
//! timer is gone.
//!
//! [`collect`] reads each process in a fixed order (task state first, so
//! the checks that refuse a tree come early; files in the order CRIU
//! numbers them; memory last, its pages image written here), then the
//! tree-wide objects: terminal queues, unix socket peers, SysV segments,
//! shared anonymous memory, memfds, zombies, clocks.

/// For tests that read another process's memory or page frames as a dump
/// does: qemu-user, where the armv7 tests run, emulates neither (and has
/// no ptrace, which tells it apart). They run on x86_64 and in the ARM VM.
#[cfg(test)]
pub(crate) fn real_kernel() -> bool {
    let real = crate::kerndat::Kerndat::get().is_ok_and(|k| k.ptrace);
    if !real {
        eprintln!("no ptrace here (qemu-user?): skipped");
    }
    real
}

pub mod freeze;
pub mod inject;
pub mod maps;
pub mod memory;
pub mod model;
pub mod pagemap;
pub mod predump;
pub mod prev;
pub mod task;
pub mod track;
pub mod track_holder;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::imgdir::ImageDir;
use crate::regs::dump as regs;
use crate::shmem::dump as shmem;
use crate::{files, procfs};
use freeze::Frozen;
use maps::{PAGE, status};
use model::{Mm, Process, Tree, VmaOut};

/// What to do, as CRIU's options say it.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Resume the tree after the dump instead of killing it.
    pub leave_running: bool,
    /// The root may belong to the caller's session and process group.
    pub shell_job: bool,
    /// Unix sockets connected to named ones outside the tree are dumped to
    /// be connected to the same address again (CRIU's `--ext-unix-sk`).
    pub ext_unix_sk: bool,
    /// TCP connections are kept (`--tcp-established`): locked, read in
    /// repair mode, and held for the restore if the tree is killed.
    pub tcp_established: bool,
    /// Connections waiting in a TCP listener's queue are left out
    /// (`--skip-in-flight`) instead of refused.
    pub skip_in_flight: bool,
    /// The most data of an unlinked file carried (`--ghost-limit`).
    pub ghost_limit: Option<u64>,
    /// 0 quiet .. 4 debug; lines go to `log`.
    pub verbosity: u32,
    /// Created (mode 0600, never through a link) when the dump starts.
    pub log: Option<PathBuf>,
    /// How long freezing and collecting the tree may take (CRIU's
    /// `--timeout`); `None` for the default.
    pub timeout: Option<std::time::Duration>,
    /// Lines for the top of the log: options accepted but not used.
    pub notes: Vec<String>,
    /// The previous link of an iterative dump (`--prev-images-dir`), a
    /// path relative to the image directory as CRIU takes it: pages
    /// unchanged since it get `PE_PARENT` entries, and a `parent` link to
    /// it is written.
    pub prev_images_dir: Option<PathBuf>,
    /// Write only the pages images; everything else stays in the returned
    /// [`Tree`]. For tests of the collection, and the only mode that can
    /// succeed until the image layer (issue 3) can encode messages.
    pub pages_only: bool,
}

/// What a dump wrote, and how long the tree stood still.
#[derive(Debug)]
pub struct Dumped {
    pub tree: Tree,
    pub frozen_for: std::time::Duration,
}

impl Dumped {
    pub fn pages_written(&self) -> u64 {
        let runs = self.tree.procs.iter().flat_map(|p| &p.pagemap);
        runs.filter(|r| r.flags & pagemap::PE_PRESENT != 0).map(|r| r.nr_pages).sum()
    }

    /// Pages left to the previous link (`PE_PARENT` entries).
    pub fn pages_in_parent(&self) -> u64 {
        let runs = self.tree.procs.iter().flat_map(|p| &p.pagemap);
        runs.filter(|r| r.flags & pagemap::PE_PARENT != 0).map(|r| r.nr_pages).sum()
    }
}

/// Dumps the tree rooted at `pid` into `dir` (which must exist).
pub fn dump(pid: i32, dir: &Path, opts: &DumpOptions) -> Result<Dumped> {
    let mut log = Log::open(opts)?;
    let dir = ImageDir::open(dir)?;
    // What a dump killed here left; the next one removes it, whenever it fails.
    dir.remove_partial();
    // Taken from its holder before the tree stops: that is no time the
    // program needs to stand still for.
    let prev = opts.prev_images_dir.as_deref().map(|t| prev::PrevLink::open(&dir, t, &mut log)).transpose()?;
    // Made before the tree stops: see `Buffers`.
    let mut buffers = memory::Buffers::new(procfs::status(pid, pid).map_or(0, |s| s.rss_anon));
    let t0 = Instant::now();
    // Freezing and collecting stop at the deadline; resuming the tree
    // after a failure must not be cut short, so it is dropped first.
    let deadline = opts.timeout.map(crate::fault::Deadline::start).transpose()?;
    let late = |e: anyhow::Error, timed_out: bool| match opts.timeout {
        Some(t) if timed_out => {
            e.context(format!("freezing and collecting the tree took longer than --timeout ({} s)", t.as_secs_f64()))
        }
        _ => e,
    };
    check_namespaces(pid)?;
    let frozen = match Frozen::freeze(pid, deadline.is_some()) {
        Ok(f) => f,
        Err(e) => return Err(late(e, crate::fault::timed_out())),
    };
    log.line(1, &format!("froze {} processes in {:?}", frozen.procs.len(), t0.elapsed()));
    let write = |t: &Tree| {
        if opts.pages_only {
            return dir.commit(&pages_names(t));
        }
        let names = write_images(t, &dir, prev.as_ref().map(|p| p.target.as_path()))?;
        restorable(&dir, opts).inspect_err(|_| dir.withdraw(&names))
    };
    // The images are written and checked while the tree stands still: the
    // check compares them with the files and objects as they are, which a
    // running program changes.
    let collected = collect(&frozen, &dir, opts, prev.as_ref(), &mut buffers, &mut log).and_then(|t| {
        log.line(3, "collected; writing the images");
        write(&t).map(|()| t)
    });
    let timed_out = crate::fault::timed_out();
    drop(deadline);
    let mut tree = match collected {
        Ok(t) => t,
        Err(e) => {
            dir.remove_partial();
            // Dropping `frozen` resumes the tree.
            drop(frozen);
            return Err(late(e, timed_out));
        }
    };
    let frozen_for = t0.elapsed();
    let mut conns = std::mem::take(&mut tree.files.tcp);
    for name in &conns.locked {
        log.line(1, &format!("TCP connection {name} locked: every segment it receives is dropped"));
    }
    for s in &conns.skipped {
        log.line(0, &format!("warning: --skip-in-flight: {s} left out; their clients will be reset"));
    }
    if opts.leave_running {
        // The program would see its peer late, not at all.
        conns.release()?;
        frozen.release()?;
    } else {
        if let Err(e) = frozen.kill() {
            // The images are complete; the program is dead. Say what lingers.
            log.line(0, &format!("warning: {e:#}"));
        }
        if !conns.is_empty() {
            keep_connections(&dir, &mut conns, &mut log);
        }
    }
    // The chain's tracking has served: its holder goes.
    if let Some(p) = prev {
        p.done();
    }
    let d = Dumped { tree, frozen_for };
    log.line(
        1,
        &format!(
            "dump done: {} processes, {} pages, {} pages in the parent, frozen for {frozen_for:?}",
            d.tree.procs.len(),
            d.pages_written(),
            d.pages_in_parent()
        ),
    );
    Ok(d)
}

/// Has the keeper hold the locked connections of the killed tree until
/// a restore takes them back. Failing that they are closed, and lost: say
/// so.
fn keep_connections(dir: &ImageDir, conns: &mut files::inet::Connections, log: &mut Log) {
    let n = conns.locked.len();
    let kept = files::tcp_keeper::name(dir.path()).and_then(|name| conns.keep(&name).map(|pid| (name, pid)));
    match kept {
        // A process of ours lingers: said at every log level.
        Ok((name, pid)) => log.line(
            0,
            &format!(
                "{n} TCP connections held locked by process {pid} (@{name}) until a restore from this directory \
                 takes them; killing it drops them"
            ),
        ),
        Err(e) => log.line(0, &format!("warning: the {n} TCP connections could not be held for the restore: {e:#}")),
    }
}

/// Reads everything of the frozen tree; writes the pages images as it goes
/// (under temporary names), the rest stays in memory.
pub fn collect(
    frozen: &Frozen,
    dir: &ImageDir,
    opts: &DumpOptions,
    prev: Option<&prev::PrevLink>,
    buffers: &mut memory::Buffers,
    log: &mut Log,
) -> Result<Tree> {
    let mut files = files::Files::default();
    files.tcp.keep = opts.tcp_established;
    files.tcp.skip_in_flight = opts.skip_in_flight;
    files.ghost_limit = opts.ghost_limit;
    files.tree = frozen.procs.iter().map(|p| p.pid).chain(frozen.zombies.iter().map(|z| z.0)).collect();
    files.parents = frozen.procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let host = HostFacts::get();
    let mut procs = Vec::new();
    check_unshared(&frozen.procs.iter().map(|p| p.pid).collect::<Vec<_>>())?;
    for i in 0..frozen.procs.len() {
        procs.push(process(frozen, i, &host, &mut files, dir, opts, prev, buffers, log)?);
    }
    files.tty_queues(opts.shell_job)?;
    files.unix_peers(opts.ext_unix_sk)?;
    for w in files.pipes_outside()? {
        log.line(0, &format!("warning: {w}"));
    }
    files.watched_ghosts()?;
    log.line(2, &format!("terminals: {}, queued bytes in {} pair ends", files.ttys.len(), files.tty_data.len()));
    let ipc = sysv(frozen, &procs, dir, log)?;
    let first = procs.len() as u32 + 1 + ipc.segments.len() as u32;
    let mut shmem = shared_anon(&procs, dir, first, log)?;
    let memfds = memfds(&files, &shmem, dir, first + shmem.len() as u32, log)?;
    shmem.extend(memfds);
    let zombies = zombies(frozen)?;
    let (monotonic, boottime) = clocks()?;
    Ok(Tree { procs, zombies, files, ipc, shmem, monotonic, boottime, own_cgroups: crate::cgroup::own()?.0 })
}

/// What every process is read against, found once per dump.
pub(super) struct HostFacts {
    /// The zero page's frame, whose pages need no copy.
    pub(super) zero_pfn: Option<u64>,
    /// Whether smaps still names the vDSO after a move; if not, it is
    /// found by its frames ([`mark_vdso_by_pfn`]).
    pub(super) names_reliable: bool,
}

impl HostFacts {
    pub(super) fn get() -> HostFacts {
        HostFacts {
            zero_pfn: pagemap::zero_page_pfn(),
            names_reliable: crate::kerndat::Kerndat::get()
                .ok()
                .and_then(|k| k.vdso_name_survives_mremap)
                .unwrap_or(true),
        }
    }
}

/// Process `frozen.procs[i]`, read in a fixed order: its task state first
/// (the checks that refuse a tree come early), then its files in the order
/// CRIU numbers them, then its memory, whose pages image is written here.
#[allow(clippy::too_many_arguments)]
fn process(
    frozen: &Frozen,
    i: usize,
    host: &HostFacts,
    files: &mut files::Files,
    dir: &ImageDir,
    opts: &DumpOptions,
    prev: Option<&prev::PrevLink>,
    buffers: &mut memory::Buffers,
    log: &mut Log,
) -> Result<Process> {
    let fp = &frozen.procs[i];
    if i > 0 {
        check_namespaces(fp.pid)?;
    }
    let pid = fp.pid;
    let stat = procfs::stat(pid, pid)?;
    if i == 0 && !opts.shell_job && stat.sid != pid {
        bail!(
            "process {pid} is not a session leader (session {}): it belongs to a shell job; \
             start it with setsid or dump with --shell-job",
            stat.sid
        );
    }
    let status = procfs::status(pid, pid)?;
    // The tasks are asked first, by the layout `maps` gives at once: their
    // answers need a free CPU at each step, which the walks below would
    // take.
    let layout = maps::parse_smaps(&procfs::read_string(pid, "maps")?, pid)?;
    let ((ps, threads), vmas, words) = areas_and_words(pid, host, |gate| {
        let tasks = task_state(fp, &layout, gate, log);
        log.line(3, &format!("process {pid}: tasks asked"));
        tasks
    })?;
    log.line(3, &format!("process {pid}: areas and pagemap read"));
    log.line(2, &format!("process {pid}: {} threads, {} areas", threads.len(), vmas.len()));
    let cgroups = crate::cgroup::dump::memberships(pid, &fp.threads)?;

    // Files: the executable and mapped files first, as CRIU numbers them.
    let (exe_file_id, out_vmas) = mapped_files(pid, &vmas, files)?;
    let (fds, cwd_id, root_id) = fd_files(pid, &ps, files)?;
    log.line(3, &format!("process {pid}: files read"));

    // Memory.
    let pages_id = i as u32 + 1;
    let since = prev.map(|p| p.prev_for(pid, &vmas)).transpose()?.flatten();
    let runs = pages(pid, pages_id, &vmas, &words, &threads, since.as_ref(), dir, buffers, log)?;
    let guards = vmas.iter().zip(&words).flat_map(|(v, w)| pagemap::guards(v, w)).collect();

    let mm = mm(pid, &stat, &status, &ps, exe_file_id)?;
    Ok(Process {
        pid,
        stop_signal: stop_signal(frozen, pid, &ps, &threads),
        ppid: fp.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        kobj_id: i as u32 + 2,
        task: model::TaskCore { timer_slack_ns: threads[0].timer_slack_ns, ..ps.core },
        threads,
        mm,
        vmas: out_vmas,
        pages_id,
        pagemap: runs,
        guards,
        fds,
        cwd_id,
        root_id,
        umask: status.umask,
        cgroups,
    })
}

/// The process's memory areas, refused early if dump cannot keep one,
/// with the vDSO marked where smaps cannot be trusted to name it. (Their
/// memory policy is checked with the task state: `task::process_state`.)
pub(super) fn memory_areas(pid: i32, names_reliable: bool) -> Result<Vec<maps::Vma>> {
    let smaps = procfs::read_string(pid, "smaps")?;
    let mut vmas = maps::parse_smaps(&smaps, pid)?;
    for v in &vmas {
        maps::check_supported(v, pid)?;
    }
    if !names_reliable {
        mark_vdso_by_pfn(pid, &mut vmas)?;
    }
    Ok(vmas)
}

/// What only the process's tasks can tell (asked through injected calls
/// on a trampoline found in its code): the process's state, then each
/// thread's.
fn task_state(
    fp: &freeze::FrozenProc,
    vmas: &[maps::Vma],
    gate: WalkGate,
    log: &mut Log,
) -> Result<(task::ProcessState, Vec<model::Thread>)> {
    let pid = fp.pid;
    let leader_regs = regs::gpregs(pid)?;
    let tramp = task::trampoline(pid, vmas, &leader_regs)?;
    if let inject::Trampoline::Bare { .. } = tramp {
        log.line(0, &format!("warning: process {pid}: its code lacks a `syscall; ret` or an rt_sigreturn: if revenant is killed while it asks the process for its state, the process may crash"));
    }
    let ps = task::process_state(pid, tramp, &files::fd_numbers(pid)?, vmas, gate)?;
    let mut threads: Vec<model::Thread> = Vec::new();
    for &tid in &fp.threads {
        threads.push(task::thread_state(pid, tid, tramp)?);
    }
    // Restored threads inherit their creator's slack: one value for all.
    if let Some(t) = threads.iter().find(|t| t.timer_slack_ns != threads[0].timer_slack_ns) {
        bail!(
            "process {pid}: thread {} has a timer slack of {} ns and thread {pid} one of {} ns: per-thread \
             timer slack cannot be kept yet",
            t.tid,
            t.timer_slack_ns,
            threads[0].timer_slack_ns
        );
    }
    Ok((ps, threads))
}

/// The executable and each area's backing object, named as the images
/// do: a file's id, a SysV segment's id, a shared anonymous object's
/// inode. Returns the executable's id and the areas with theirs.
fn mapped_files(pid: i32, vmas: &[maps::Vma], files: &mut files::Files) -> Result<(u32, Vec<VmaOut>)> {
    let exe_name = std::fs::read_link(procfs::path(pid, "exe"))
        .with_context(|| format!("reading /proc/{pid}/exe"))?
        .to_string_lossy()
        .into_owned();
    let exe_file_id = files.mapped(pid, "exe", &exe_name, 0)?;
    let mut out_vmas = Vec::new();
    for v in vmas {
        let link = || format!("map_files/{:x}-{:x}", v.start, v.end);
        let (shmid, fdflags) = if v.is(status::MEMFD) {
            let fdflags = map_file_flags(pid, &link())?;
            (files.memfd_mapping(pid, &link(), &v.name, fdflags)? as u64, Some(fdflags))
        } else if v.is_file() {
            let fdflags = map_file_flags(pid, &link())?;
            (files.mapped(pid, &link(), &v.name, fdflags)? as u64, Some(fdflags))
        } else if v.is(status::SYSVIPC) {
            // The inode of an attachment is its segment's id; the link's
            // mode says whether it was attached read-only.
            (v.inode, Some(map_file_flags(pid, &link())?))
        } else if shmem::is_shared_anon(v) {
            // The object's inode names it in every process that maps it.
            (v.inode, None)
        } else {
            (0, None)
        };
        out_vmas.push(VmaOut { vma: v.clone(), shmid, fdflags });
    }
    Ok((exe_file_id, out_vmas))
}

/// The process's fds (with the owners its tasks reported for them), then
/// its cwd and root: returns the fds and the two directories' ids.
fn fd_files(pid: i32, ps: &task::ProcessState, files: &mut files::Files) -> Result<(Vec<files::Fd>, u32, u32)> {
    let fds = files.fds(pid)?;
    for &(fd, owner) in &ps.owners {
        files.set_owner(pid, &fds, fd, owner)?;
    }
    let cwd_id = files.dir(pid, "cwd")?;
    let root_id = files.dir(pid, "root")?;
    Ok((fds, cwd_id, root_id))
}

/// The process's pages, copied into `pages-<pages_id>.img` while the tree
/// is frozen (but those `since` leaves to the previous link); returns the
/// runs the pagemap image describes them by.
#[allow(clippy::too_many_arguments)]
fn pages(
    pid: i32,
    pages_id: u32,
    vmas: &[maps::Vma],
    words: &[pagemap::Words],
    threads: &[model::Thread],
    since: Option<&track::Prev>,
    dir: &ImageDir,
    buffers: &mut memory::Buffers,
    log: &mut Log,
) -> Result<Vec<pagemap::Run>> {
    let stack_pages: Vec<u64> = threads.iter().map(|t| regs::sp(&t.regs) & !(PAGE - 1)).collect();
    let runs = page_runs(vmas, words, &stack_pages, since);
    let here: Vec<pagemap::Run> = runs.iter().filter(|r| r.flags & pagemap::PE_PRESENT != 0).copied().collect();
    let pages_name = format!("pages-{pages_id}.img");
    let t = Instant::now();
    let written = {
        let f = dir.create(&pages_name)?;
        memory::copy_pages(pid, &here, &f, buffers).with_context(|| format!("writing {pages_name}"))?
    };
    log.line(2, &format!("process {pid}: {} pages in {} entries, {:?}", written / PAGE, runs.len(), t.elapsed()));
    crate::fault::step(|| format!("process {pid}: pages written"))?;
    Ok(runs)
}

/// The pagemap entries of a process's areas `vmas`, given their words
/// (see `pagemap.rs` for the rules, `track.rs` for `since`).
pub(super) fn page_runs(
    vmas: &[maps::Vma],
    words: &[pagemap::Words],
    stack_pages: &[u64],
    since: Option<&track::Prev>,
) -> Vec<pagemap::Run> {
    let mut runs = Vec::new();
    for (v, w) in vmas.iter().zip(words) {
        pagemap::add_runs(&mut runs, v, w, stack_pages, since);
    }
    runs
}

/// Held by what runs beside the smaps walk of [`areas_and_words`] until
/// the walk may start; dropping it lets it start.
pub struct WalkGate(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// A frozen process's memory areas (from smaps, refused first if dump
/// cannot keep one) and their pagemap words, read while `beside` runs.
/// Reading smaps walks every page of every area (6-7 ms for a 256 MiB
/// heap here), holding the address space's lock for reading: it has a
/// thread of its own, beside `beside` (the injected calls asking the
/// tasks, which wait on the tasks rather than on a CPU) and the pagemap
/// walk. It starts when `beside` drops the [`WalkGate`] it is given,
/// once nothing it asks needs that lock for writing (`brk`). The pagemap
/// walk goes by the layout in `maps` after `beside`, which comes at once;
/// if smaps shows another (asking the tasks can grow the main stack into
/// its scratch space, before or after smaps read it) both are read again.
pub(super) fn areas_and_words<T>(
    pid: i32,
    host: &HostFacts,
    beside: impl FnOnce(WalkGate) -> Result<T>,
) -> Result<(T, Vec<maps::Vma>, Vec<pagemap::Words>)> {
    let (gate, opened) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let areas = s.spawn(move || {
            // Ends when the gate is dropped: nothing is ever sent.
            let _ = opened.recv();
            memory_areas(pid, host.names_reliable)
        });
        let beside = beside(WalkGate(gate));
        let layout = beside.as_ref().ok().map(|_| -> Result<_> {
            let layout = maps::parse_smaps(&procfs::read_string(pid, "maps")?, pid)?;
            let words = words_of(pid, &layout, host.zero_pfn);
            Ok((layout, words))
        });
        let vmas = areas.join().map_err(|_| anyhow::anyhow!("the thread reading /proc/{pid}/smaps panicked"))?;
        let (t, (layout, words)) = (beside?, layout.expect("read when `beside` succeeded")?);
        let vmas = vmas?;
        let range = |v: &maps::Vma| (v.start, v.end);
        if layout.iter().map(range).eq(vmas.iter().map(range)) {
            return Ok((t, vmas, words?));
        }
        let vmas = memory_areas(pid, host.names_reliable)?;
        let words = words_of(pid, &vmas, host.zero_pfn)?;
        Ok((t, vmas, words))
    })
}

/// The pagemap words of each of `vmas` (none for vvar and vsyscall, whose
/// pages are the kernel's).
fn words_of(pid: i32, vmas: &[maps::Vma], zero_pfn: Option<u64>) -> Result<Vec<pagemap::Words>> {
    let pm = File::open(procfs::path(pid, "pagemap")).with_context(|| format!("opening /proc/{pid}/pagemap"))?;
    vmas.iter()
        .map(|v| {
            if v.is(status::VSYSCALL) || v.is(status::VVAR) {
                Ok(pagemap::Words::new())
            } else {
                pagemap::read_pagemap(&pm, pid, v, zero_pfn)
            }
        })
        .collect()
}

/// The process's memory layout, from its stat and status, the state its
/// tasks reported, and its auxiliary vector.
fn mm(pid: i32, stat: &procfs::Stat, status: &procfs::Status, ps: &task::ProcessState, exe_file_id: u32) -> Result<Mm> {
    Ok(Mm {
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_stack: stat.start_stack,
        start_brk: stat.start_brk,
        brk: ps.brk,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
        exe_file_id,
        auxv: procfs::auxv(pid)?,
        dumpable: ps.dumpable,
        thp_disabled: !status.thp_enabled,
    })
}

/// A SIGSTOP that came while we asked is pending again: the process stops
/// once let go, and so does the restored one; so does one a signal had
/// stopped before we came.
fn stop_signal(frozen: &Frozen, pid: i32, ps: &task::ProcessState, threads: &[model::Thread]) -> Option<u32> {
    frozen
        .stopped
        .iter()
        .find(|s| s.0 == pid)
        .map(|s| s.1 as u32)
        .or((ps.stopping || threads.iter().any(|t| t.stopping)).then_some(nix::libc::SIGSTOP as u32))
}

/// The tree's SysV IPC: its namespace (the dumper's or its own) and the
/// segments it holds, whose pages are written here after the processes'.
fn sysv(frozen: &Frozen, procs: &[Process], dir: &ImageDir, log: &mut Log) -> Result<crate::sysv::dump::Ipc> {
    let root = frozen.procs[0].pid;
    let pids: Vec<i32> = frozen.procs.iter().map(|p| p.pid).collect();
    let own_ipc = ipc_ns_is_own(&pids)?;
    let attached: std::collections::BTreeSet<i32> =
        procs.iter().flat_map(|p| &p.vmas).filter(|v| v.vma.is(status::SYSVIPC)).map(|v| v.shmid as i32).collect();
    let ipc = crate::sysv::dump::collect(root, own_ipc, &attached, dir, procs.len() as u32 + 1)?;
    log.line(2, &format!("SysV: {} segments, own IPC namespace: {own_ipc}", ipc.segments.len()));
    Ok(ipc)
}

/// Shared anonymous memory, read once however many processes map it;
/// pages ids from `first`.
fn shared_anon(procs: &[Process], dir: &ImageDir, first: u32, log: &mut Log) -> Result<Vec<shmem::Object>> {
    let areas = procs.iter().flat_map(|p| p.vmas.iter().map(move |v| (p.pid, &v.vma)));
    let shmem = shmem::collect(areas, dir, first)?;
    log.line(2, &format!("shared anonymous memory: {} objects", shmem.len()));
    Ok(shmem)
}

/// The memfds the tree's fds hold, but those already read as shared
/// anonymous memory (`shmem`); pages ids from `first`.
fn memfds(
    files: &files::Files,
    shmem: &[shmem::Object],
    dir: &ImageDir,
    first: u32,
    log: &mut Log,
) -> Result<Vec<shmem::Object>> {
    // Shared anonymous memory an fd holds too is read once, above.
    let more: Vec<_> = files.memfds.iter().filter(|o| !shmem.iter().any(|s| s.shmid == o.ino)).cloned().collect();
    let memfds = shmem::collect_memfds(&more, dir, first)?;
    log.line(2, &format!("memfd: {} objects", memfds.len()));
    Ok(memfds)
}

/// Zombies have no memory or files: their ids and exit, from their stat.
fn zombies(frozen: &Frozen) -> Result<Vec<model::Zombie>> {
    frozen
        .zombies
        .iter()
        .map(|&(pid, ppid)| {
            let s = procfs::stat(pid, pid)?;
            Ok(model::Zombie { pid, ppid, pgid: s.pgid, sid: s.sid, exit_code: s.exit_code, comm: s.comm })
        })
        .collect::<Result<_>>()
}

/// The monotonic and boot clocks at dump, from which a restore offsets its
/// time namespace so that neither jumps.
fn clocks() -> Result<((i64, i64), (i64, i64))> {
    // time_t and long are 32-bit on ARM.
    #[allow(clippy::useless_conversion)]
    let clock = |c| nix::time::clock_gettime(c).map(|t| (i64::from(t.tv_sec()), i64::from(t.tv_nsec())));
    Ok((
        clock(nix::time::ClockId::CLOCK_MONOTONIC).context("CLOCK_MONOTONIC")?,
        clock(nix::time::ClockId::CLOCK_BOOTTIME).context("CLOCK_BOOTTIME")?,
    ))
}

/// How a mapped file must be opened: from the mode of its map_files link,
/// which mirrors the file's open mode.
fn map_file_flags(pid: i32, link: &str) -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let p = procfs::path(pid, link);
    let m = std::fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
    Ok(match m.mode() & 0o600 {
        0o200 => nix::libc::O_WRONLY as u32,
        0o600 => nix::libc::O_RDWR as u32,
        _ => nix::libc::O_RDONLY as u32,
    })
}

/// Without reliable names, a vDSO is recognised by its first page frame
/// being the one of our own vDSO.
fn mark_vdso_by_pfn(pid: i32, vmas: &mut [maps::Vma]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let own = crate::maps::own_maps()?;
    let Some(mine) = own.iter().find(|m| m.name == "[vdso]") else { return Ok(()) };
    let pfn = |path: String, addr: u64| -> Result<u64> {
        let f = File::open(&path).with_context(|| format!("opening {path}"))?;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, addr / PAGE * 8).with_context(|| format!("reading {path}"))?;
        Ok(u64::from_ne_bytes(b) & ((1 << 55) - 1))
    };
    let want = pfn("/proc/self/pagemap".into(), mine.start)?;
    if want == 0 {
        bail!("the vDSO cannot be found: its name is unreliable on this kernel and pagemap hides page frames");
    }
    for v in vmas.iter_mut() {
        v.status &= !status::VDSO;
        if v.is(status::REGULAR | status::ANON_PRIVATE)
            && v.flags & maps::MAP_GROWSDOWN == 0
            && v.prot & maps::PROT_READ != 0
            && pfn(format!("/proc/{pid}/pagemap"), v.start)? == want
        {
            v.status |= status::VDSO;
        }
    }
    Ok(())
}

/// Every namespace of the tree but its IPC one must be ours, and so must
/// the ones its processes' next children would get (a pending
/// `unshare(CLONE_NEWPID)` or `CLONE_NEWTIME`): dumping other namespaces is
/// not supported yet.
pub(super) fn check_namespaces(pid: i32) -> Result<()> {
    // Without a process every namespace reads as missing, which would be
    // taken for another one.
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!("there is no process {pid}");
    }
    // A zombie has no namespaces left to show either.
    let stat = procfs::read_string(pid, "stat").unwrap_or_default();
    if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) {
        bail!("process {pid} has exited: it is a zombie its parent has not collected yet");
    }
    let me = std::process::id() as i32;
    let names = ["pid", "net", "uts", "mnt", "user", "cgroup", "time", "pid_for_children", "time_for_children"];
    for ns in names {
        let (theirs, ours) = (procfs::ns_inode(pid, ns)?, procfs::ns_inode(me, ns)?);
        if theirs != ours {
            bail!("process {pid} is in another {ns} namespace than revenant: dumping namespaces is not supported yet");
        }
    }
    Ok(())
}

/// What `clone` can share between processes (not threads) and a dump
/// cannot keep shared yet: each pair of the tree's processes is compared.
fn check_unshared(pids: &[i32]) -> Result<()> {
    const SHARED: [(nix::libc::c_int, &str); 4] = [
        (1, "address space (CLONE_VM, vfork)"),
        (2, "file descriptor table (CLONE_FILES)"),
        (3, "cwd, root and umask (CLONE_FS)"),
        (4, "signal handlers (CLONE_SIGHAND)"),
    ];
    for (i, &a) in pids.iter().enumerate() {
        for &b in &pids[i + 1..] {
            for (kind, what) in SHARED {
                // SAFETY: kcmp only compares kernel objects; no memory is passed.
                let r = unsafe { nix::libc::syscall(nix::libc::SYS_kcmp, a, b, kind, 0usize, 0usize) };
                if r == 0 {
                    bail!("processes {a} and {b} share one {what}, which dump does not support yet");
                }
            }
        }
    }
    Ok(())
}

/// Whether the tree has an IPC namespace of its own; all its processes
/// must share one.
fn ipc_ns_is_own(pids: &[i32]) -> Result<bool> {
    let root = procfs::ns_inode(pids[0], "ipc")?;
    for &pid in &pids[1..] {
        if procfs::ns_inode(pid, "ipc")? != root {
            bail!("process {pid} is in another IPC namespace than the root {}: not supported yet", pids[0]);
        }
    }
    Ok(root != procfs::ns_inode(std::process::id() as i32, "ipc")?)
}

fn pages_names(tree: &Tree) -> Vec<String> {
    let procs = tree.procs.iter().map(|p| format!("pages-{}.img", p.pages_id));
    let shmem = tree.shmem.iter().map(|o| format!("pages-{}.img", o.pages_id));
    procs.chain(tree.ipc.pages_names()).chain(shmem).collect()
}

/// Writes every image but the pages (already written by [`collect`]), and
/// the `parent` link to `parent` if given; returns the names of all.
pub fn write_images(tree: &Tree, dir: &ImageDir, parent: Option<&Path>) -> Result<Vec<String>> {
    let mut names = pages_names(tree);
    names.extend(images::write(tree, dir)?);
    if let Some(p) = parent {
        dir.create_link("parent", p)?;
        names.push("parent".into());
    }
    crate::fault::step(|| "images written".into())?;
    dir.commit(&names)?;
    Ok(names)
}

/// Plans the restore of the images just written, as `revenant restore`
/// would, while the tree is still frozen: what a restore would refuse
/// (a process group whose leader is gone, ...) is refused now, with the
/// program still there, instead of after it has been killed.
fn restorable(dir: &ImageDir, opts: &DumpOptions) -> Result<()> {
    let plan_opts = crate::restore::from_images::PlanOptions {
        shell_job: opts.shell_job,
        tcp_established: opts.tcp_established,
        at_dump: true,
        ..Default::default()
    };
    crate::restore::from_images::plan_dir(dir.path(), &plan_opts).map(|_| ()).context("the images would not restore")
}

mod images;

/// The dump log (`-o`, `-v`).
pub struct Log {
    out: Option<File>,
    level: u32,
    start: Instant,
}

impl Log {
    pub fn open(opts: &DumpOptions) -> Result<Log> {
        let out = match &opts.log {
            Some(p) => Some(revenant_images::file::create(p, 0o600).context("creating the log file")?),
            None => None,
        };
        let mut log = Log { out, level: opts.verbosity, start: Instant::now() };
        for n in &opts.notes {
            log.line(1, n);
        }
        if let Some(t) = opts.timeout {
            log.line(1, &format!("--timeout {}s: freezing and collecting the tree may take that long", t.as_secs()));
        }
        Ok(log)
    }

    pub fn quiet() -> Log {
        Log { out: None, level: 0, start: Instant::now() }
    }

    pub fn line(&mut self, level: u32, msg: &str) {
        if level > self.level {
            return;
        }
        let line = format!("({:>9.6}) {msg}\n", self.start.elapsed().as_secs_f64());
        match &mut self.out {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => eprint!("{line}"),
        }
    }
}
