//! SysV shared memory segments, recreated before any restored task exists:
//! with their ids (through the namespace's `shm_next_id`), keys, sizes,
//! owners, modes and contents, in a new IPC namespace when the dumped tree
//! had its own. The blobs attach them; once every process runs, segments
//! that were removed at dump time are removed again (an attached segment
//! stays until its last detach, as before the dump). If the restore fails,
//! every segment made here is removed.
//!
//! Everything here runs on a helper thread: an IPC namespace belongs to a
//! thread, and this process's own threads must stay where they are.
//!
//! Segments made in this process's namespace would outlive a restore that
//! is killed (SIGKILL, the OOM killer) and block the next one with their
//! ids. A `Janitor` process, told each id as it is made, removes them
//! when we die before telling it that the tree runs. (A namespace of the
//! tree's own dies with us and the half-made tasks, segments and all.)
//!
//! The plan comes from the `ipcns-*` images ([`plan`]); each area of an
//! attachment is checked against it ([`backing`]).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::ImageSet;
use revenant_images::messages::{VmaEntry, pe};

use super::{RMID_FORCED, errno, stat, var_sysctls, zeroed_ds};
use crate::restore::convert;
use crate::restore::from_images::PlanOptions;
use crate::restore::plan::{Backing, PageRun, ShmAttach, VmaPlan};

/// The tree's IPC namespace and its segments.
#[derive(Debug, Clone, Default)]
pub struct IpcPlan {
    /// The dumped tree had an IPC namespace of its own: make a new one.
    pub new_namespace: bool,
    /// Sysctls of the new namespace: (name under /proc/sys, value).
    pub sysctls: Vec<(String, String)>,
    pub segments: Vec<SegmentPlan>,
    /// When a dumped id is taken, create the segment with a new id (the
    /// restored program still holds the old one in its memory).
    pub allow_new_ids: bool,
}

/// One segment.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    pub id: i32,
    /// `IPC_PRIVATE` (0) for private and removed segments.
    pub key: i32,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Removed (`IPC_RMID`) at dump time while still attached.
    pub removed: bool,
    pub contents: Contents,
}

/// Where a segment's bytes come from.
#[derive(Debug, Clone)]
pub enum Contents {
    /// Stored after its entry in `ipcns-shm-N.img`.
    Inline(Vec<u8>),
    /// Runs of a pages image; `addr` is the offset in the segment.
    Pages { file: PathBuf, runs: Vec<PageRun> },
}

/// The segments of a restore in progress; removed again when dropped
/// before [`Created::keep`].
#[derive(Debug)]
pub struct Created {
    ns: Option<OwnedFd>,
    /// (dumped id, id it got).
    ids: Vec<(i32, i32)>,
    removed: Vec<i32>,
    rmid_forced: Option<String>,
    janitor: Option<Janitor>,
    done: bool,
}

/// Runs `f` on a thread of its own, which may change namespaces without
/// moving this one.
fn on_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|_| bail!("the IPC helper thread panicked")))
}

/// Runs `f` in `ns`; without `ns`, here, in this process's namespace.
fn in_ns<T: Send>(ns: Option<&OwnedFd>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(ns) = ns else { return f() };
    on_thread(|| {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWIPC)
            .context("entering the restored tree's IPC namespace")?;
        f()
    })
}

/// Creates the namespace (if the plan asks) and every segment. The
/// janitor's PID must not be one of `keep_free`.
pub fn create(plan: &IpcPlan, keep_free: &[i32]) -> Result<Created> {
    let ns = if plan.new_namespace {
        Some(on_thread(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC).context("creating an IPC namespace")?;
            for (name, value) in plan.sysctls.iter().filter(|(n, _)| n != RMID_FORCED) {
                write_sysctl(name, value)?;
            }
            Ok(OwnedFd::from(File::open("/proc/thread-self/ns/ipc").context("opening the new IPC namespace")?))
        })?)
    } else {
        None
    };
    let rmid_forced = plan.sysctls.iter().find(|(n, _)| n == RMID_FORCED).map(|(_, v)| v.clone());
    let janitor = if ns.is_none() && !plan.segments.is_empty() { Some(Janitor::start(keep_free)?) } else { None };
    let mut created = Created { ns, ids: Vec::new(), removed: Vec::new(), rmid_forced, janitor, done: false };
    let (ids, janitor) = (&mut created.ids, created.janitor.as_ref());
    in_ns(created.ns.as_ref(), || {
        for s in &plan.segments {
            let (id, made) = make(s, plan.allow_new_ids)?;
            // Recorded at once: on a failure further on, dropping `created`
            // removes it too, and if we die, the janitor does. One taken
            // back stays, as it was before the restore.
            if made {
                ids.push((s.id, id));
                if let Some(j) = janitor {
                    j.tell(id)?;
                }
            }
            crate::fault::step(|| format!("SysV segment {id} made"))?;
            fill(s, id)?;
            set_owner(s, id)?;
        }
        Ok(())
    })?;
    created.removed = plan.segments.iter().filter(|s| s.removed).map(|s| created.id_of(s.id)).collect();
    Ok(created)
}

impl Created {
    /// The namespace the root task must enter, if a new one was made.
    pub fn ns_fd(&self) -> Option<i32> {
        self.ns.as_ref().map(|f| f.as_raw_fd())
    }

    /// The id a dumped segment got (the same unless new ids were allowed).
    pub fn id_of(&self, dumped: i32) -> i32 {
        self.ids.iter().find(|p| p.0 == dumped).map_or(dumped, |p| p.1)
    }

    /// Every process is held with its attachments, about to run: remove
    /// what was removed before, set `shm_rmid_forced`, and send the janitor
    /// away (from now on a program may run with the segments). Until
    /// [`Created::keep`], a failure still removes them all.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(j) = self.janitor.take() {
            j.dismiss()?;
        }
        in_ns(self.ns.as_ref(), || {
            for &id in &self.removed {
                // SAFETY: no buffer is passed for IPC_RMID.
                if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("removing segment {id}"));
                }
            }
            if let Some(v) = &self.rmid_forced {
                write_sysctl(RMID_FORCED, v)?;
            }
            Ok(())
        })
    }
}

impl Created {
    /// The restored tree runs: the segments are its own now.
    pub fn keep(mut self) {
        self.done = true;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.done || self.ids.is_empty() {
            return;
        }
        let _ = in_ns(self.ns.as_ref(), || {
            for &(_, id) in &self.ids {
                // SAFETY: no buffer is passed for IPC_RMID.
                unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            }
            Ok(())
        });
        // Removed by us: the ids may belong to someone else from now on.
        if let Some(j) = self.janitor.take() {
            let _ = j.dismiss();
        }
    }
}

/// A process of its own that removes the segments it was told of when the
/// pipe from us closes without a dismissal: when we die.
#[derive(Debug)]
struct Janitor {
    tx: OwnedFd,
}

/// The word that dismisses the janitor (never a segment id).
const DISMISS: i32 = -1;
/// Segments a janitor remembers; `shmmni`'s default.
const JANITOR_IDS: usize = 4096;

impl Janitor {
    /// Starts the janitor, orphaned at once (so nobody has to collect it)
    /// and in a session of its own (so a terminal's ^C spares it).
    fn start(keep_free: &[i32]) -> Result<Janitor> {
        use nix::unistd::{ForkResult, fork, pipe2};
        for _ in 0..8 {
            let (rx, tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the janitor's pipe")?;
            let (pid_rx, pid_tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the janitor's pipe")?;
            // SAFETY: the children make only raw system calls on values
            // prepared before the fork (see `janitor`), as a child of a
            // multi-threaded process must.
            match unsafe { fork() }.context("starting the SysV janitor")? {
                ForkResult::Child => {
                    // SAFETY: as above.
                    if let Ok(ForkResult::Child) = unsafe { fork() } {
                        drop(tx);
                        janitor(rx.as_raw_fd(), pid_tx.as_raw_fd());
                    }
                    // SAFETY: leaving the intermediate child without running
                    // anything of the parent's (no atexit, no destructors).
                    unsafe { libc::_exit(0) };
                }
                ForkResult::Parent { child } => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    drop((rx, pid_tx));
                    let mut b = [0u8; 4];
                    let n = nix::unistd::read(&pid_rx, &mut b).context("hearing from the SysV janitor")?;
                    if n != 4 {
                        bail!("the SysV janitor did not start");
                    }
                    let pid = i32::from_ne_bytes(b);
                    // Its PID may be one the tree needs: then another one.
                    if keep_free.contains(&pid) {
                        drop(tx);
                        continue;
                    }
                    return Ok(Janitor { tx });
                }
            }
        }
        bail!("the SysV janitor kept getting PIDs the restored tree needs")
    }

    fn tell(&self, id: i32) -> Result<()> {
        nix::unistd::write(&self.tx, &id.to_ne_bytes()).context("telling the SysV janitor a segment id")?;
        Ok(())
    }

    fn dismiss(self) -> Result<()> {
        self.tell(DISMISS)
    }
}

/// The janitor's life: collect ids until dismissed, or remove them all at
/// end of file. Raw system calls only, on the stack.
fn janitor(rx: i32, pid_tx: i32) -> ! {
    // SAFETY: plain system calls on integers and on buffers of this frame.
    unsafe {
        libc::setsid();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let me = libc::getpid().to_ne_bytes();
        libc::write(pid_tx, me.as_ptr().cast(), 4);
        libc::dup2(rx, 0);
        libc::syscall(libc::SYS_close_range, 1, u32::MAX, 0);
        let mut ids = [0i32; JANITOR_IDS];
        let mut n = 0;
        loop {
            let mut b = [0u8; 4];
            match libc::read(0, b.as_mut_ptr().cast(), 4) {
                4 => {
                    let id = i32::from_ne_bytes(b);
                    if id == DISMISS {
                        libc::_exit(0);
                    }
                    if n < JANITOR_IDS {
                        ids[n] = id;
                        n += 1;
                    }
                }
                r if r < 0 && *libc::__errno_location() == libc::EINTR => {}
                _ => break,
            }
        }
        for &id in &ids[..n] {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
        libc::_exit(0)
    }
}

fn write_sysctl(name: &str, value: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/{name}"), value).with_context(|| format!("setting {name} to {value}"))
}

/// Creates segment `s` with its id (or, if allowed, any id), or takes it
/// back where the dumped tree left it; returns the id and whether it was
/// made here.
fn make(s: &SegmentPlan, allow_new_ids: bool) -> Result<(i32, bool)> {
    let existing = match slot(s, allow_new_ids)? {
        Slot::LeftBehind => return Ok((s.id, false)),
        Slot::Free => None,
        Slot::Taken(ds) => Some(ds),
    };
    if existing.is_none() {
        write_sysctl("kernel/shm_next_id", &s.id.to_string())?;
    }
    // SAFETY: shmget takes integers only.
    let id = unsafe { libc::shmget(s.key, s.size as usize, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    if id < 0 {
        let e = errno();
        if e.raw_os_error() == Some(libc::EEXIST) {
            bail!("{}", key_used(s));
        }
        return Err(e).with_context(|| format!("creating SysV segment {} ({} bytes, key {:#x})", s.id, s.size, s.key));
    }
    if id != s.id && !allow_new_ids {
        // SAFETY: removes the segment just made; no buffer.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        bail!("SysV segment {} came back as {id}: this kernel ignored shm_next_id", s.id);
    }
    Ok((id, true))
}

fn key_used(s: &SegmentPlan) -> String {
    format!("SysV segment {}: its key {:#x} is used by another segment in this IPC namespace", s.id, s.key)
}

/// What holds `s`'s id here.
enum Slot {
    Free,
    /// Another segment, which `s` may leave it to (`--shm-new-ids`).
    Taken(libc::shmid_ds),
    /// The dumped segment itself: a segment not removed outlives the tree
    /// a dump kills (a PostgreSQL server's, say). It has the id, key,
    /// size, owner and mode the images give, and nobody has it attached,
    /// so the restore takes it back and fills it with the dumped bytes.
    /// (Ids are not reused soon: each new segment in a slot gets a new
    /// sequence number in its id.)
    LeftBehind,
}

/// What holds `s`'s id; refused when another segment does and `s` may not
/// get another id.
fn slot(s: &SegmentPlan, allow_new_ids: bool) -> Result<Slot> {
    let Ok(ds) = stat(s.id) else { return Ok(Slot::Free) };
    let p = &ds.shm_perm;
    let same = p.__key == s.key
        && ds.shm_segsz as u64 == s.size
        && (p.uid, p.gid, p.mode as u32 & 0o777) == (s.uid, s.gid, s.mode & 0o777);
    if same && !s.removed && ds.shm_nattch == 0 {
        return Ok(Slot::LeftBehind);
    }
    if !allow_new_ids {
        let whose = if same { format!(", attached {} times", ds.shm_nattch) } else { String::new() };
        bail!(
            "SysV segment {} (key {:#x}) cannot get its id back: segment {} (key {:#x}, {} bytes{whose}) exists; \
             remove it (ipcrm -m {}) or restore with --shm-new-ids",
            s.id,
            s.key,
            s.id,
            p.__key,
            ds.shm_segsz,
            s.id
        );
    }
    Ok(Slot::Taken(ds))
}

/// What [`create`] would refuse, found without creating anything: each
/// segment whose id is taken (without `--shm-new-ids`), whose key another
/// segment holds, and `shm_next_id` when we may not write it. A new IPC
/// namespace starts empty: nothing there can be taken.
pub fn problems(plan: &IpcPlan) -> Vec<anyhow::Error> {
    if plan.new_namespace {
        return vec![];
    }
    let mut out = vec![];
    let mut next_id_needed = false;
    for s in &plan.segments {
        match slot(s, plan.allow_new_ids) {
            Err(e) => out.push(e),
            Ok(Slot::LeftBehind) => {}
            Ok(existing) => {
                next_id_needed |= matches!(existing, Slot::Free);
                // SAFETY: shmget takes integers only; without IPC_CREAT it
                // only looks the key up.
                if s.key != libc::IPC_PRIVATE && unsafe { libc::shmget(s.key, 0, 0) } >= 0 {
                    out.push(anyhow::anyhow!(key_used(s)));
                }
            }
        }
    }
    // Opened, never written: the restore writes it before each segment.
    let next_id = "/proc/sys/kernel/shm_next_id";
    if next_id_needed && let Err(e) = std::fs::OpenOptions::new().write(true).open(next_id) {
        out.push(anyhow::Error::new(e).context(format!("{next_id} cannot be written: SysV ids cannot be chosen")));
    }
    out
}

/// Writes the dumped contents through a temporary attachment.
fn fill(s: &SegmentPlan, id: i32) -> Result<()> {
    // SAFETY: an attach at an address of the kernel's choosing replaces nothing.
    let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if at as isize == -1 {
        return Err(errno()).with_context(|| format!("attaching SysV segment {id} to fill it"));
    }
    // SAFETY: the attachment maps the segment in whole pages, ours alone
    // until it is detached below.
    let mem = unsafe { std::slice::from_raw_parts_mut(at.cast::<u8>(), s.size.next_multiple_of(4096) as usize) };
    let res = match &s.contents {
        Contents::Inline(data) => {
            let n = data.len().min(mem.len());
            mem[..n].copy_from_slice(&data[..n]);
            Ok(())
        }
        Contents::Pages { file, runs } => read_runs(mem, file, runs),
    };
    // SAFETY: detaching the attachment made above; `mem` is not used after.
    unsafe { libc::shmdt(at) };
    res.with_context(|| format!("filling SysV segment {}", s.id))
}

/// Reads the runs of pages image `file` into `mem` (a shared memory
/// object mapped whole; a run's `addr` is its offset there).
pub(crate) fn read_runs(mem: &mut [u8], file: &std::path::Path, runs: &[PageRun]) -> Result<()> {
    let f = revenant_images::file::ImageFile::open(file)?.file;
    runs.iter().try_for_each(|r| {
        let dst = mem
            .get_mut(r.addr as usize..(r.addr + r.len) as usize)
            .with_context(|| format!("pages at offset {:#x} lie outside the object", r.addr))?;
        f.read_exact_at(dst, r.file_offset)
            .with_context(|| format!("reading {} bytes at {} of {}", r.len, r.file_offset, file.display()))
    })
}

fn set_owner(s: &SegmentPlan, id: i32) -> Result<()> {
    let mut ds = zeroed_ds();
    ds.shm_perm.uid = s.uid;
    ds.shm_perm.gid = s.gid;
    ds.shm_perm.mode = (s.mode & 0o777) as _;
    // SAFETY: IPC_SET reads one shmid_ds from a live local.
    if unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } < 0 {
        return Err(errno())
            .with_context(|| format!("setting owner {}:{} and mode {:o} of segment {id}", s.uid, s.gid, s.mode));
    }
    Ok(())
}

/// The tree's IPC namespace: a new one when the tree's differs from the
/// dumping tool's own (inventory's `root_ids`), with its segments.
pub fn plan(set: &ImageSet, opts: &PlanOptions) -> Result<IpcPlan> {
    let root = &set.processes[0];
    let ns = root.ids.ipc_ns_id;
    for p in &set.processes[1..] {
        if p.ids.ipc_ns_id != ns {
            bail!(
                "ids-{}.img: entry 0: ipc_ns_id {:?}: the root is in IPC namespace {ns:?}; a tree across IPC \
                 namespaces is not restored yet",
                p.pid(),
                p.ids.ipc_ns_id
            );
        }
    }
    let dumper_ns = set.inventory.root_ids.as_ref().and_then(|r| r.ipc_ns_id);
    let new_namespace = ns.is_some() && ns != dumper_ns;
    let mut plan = IpcPlan { new_namespace, allow_new_ids: opts.shm_new_ids, ..Default::default() };
    let Some(images) = set.ipc.iter().find(|n| Some(n.id) == ns) else { return Ok(plan) };
    if let (true, Some(v)) = (new_namespace, &images.var) {
        plan.sysctls = var_sysctls(v);
    }
    let name = format!("ipcns-shm-{}.img", images.id);
    for (i, s) in images.shm.iter().enumerate() {
        let e = &s.entry;
        let at = |field: &str| format!("{name}: entry {i}: {field}");
        if e.hugetlb_flag.unwrap_or(0) != 0 {
            bail!("{}: hugetlb segments are not restored yet", at("hugetlb_flag"));
        }
        if e.size == 0 || e.size > isize::MAX as u64 {
            bail!("{} {}: not a segment size", at("size"), e.size);
        }
        let id =
            i32::try_from(e.desc.id).map_err(|_| anyhow::anyhow!("{} {}: not a SysV id", at("desc.id"), e.desc.id))?;
        let contents = match &s.pages {
            Some(pm) => {
                let entries: Vec<(u64, u64, u32)> =
                    pm.entries.iter().map(|e| (e.vaddr, e.pages(), e.flags.unwrap_or(pe::PRESENT))).collect();
                let runs = convert::page_runs(&entries, 4096).with_context(|| format!("pagemap-shmem-{id}.img"))?;
                Contents::Pages { file: pm.pages.clone(), runs }
            }
            None => Contents::Inline(s.data.clone()),
        };
        plan.segments.push(SegmentPlan {
            id,
            key: e.desc.key as i32,
            size: e.size,
            mode: e.desc.mode & 0o777,
            uid: e.desc.uid,
            gid: e.desc.gid,
            removed: e.desc.mode & SHM_DEST != 0,
            contents,
        });
    }
    Ok(plan)
}

/// `shmctl`'s mark of a segment removed while attached (linux/shm.h).
const SHM_DEST: u32 = 0o1000;

/// How the area `v` of an attachment is mapped: attached whole, or part of
/// the attachment `prev` before it.
pub fn backing(v: &VmaEntry, prev: Option<&VmaPlan>, ipc: &IpcPlan, at: &str) -> Result<Backing> {
    let id = i32::try_from(v.shmid).map_err(|_| anyhow::anyhow!("{at}.shmid {}: not a SysV id", v.shmid))?;
    let seg = ipc
        .segments
        .iter()
        .find(|s| s.id == id)
        .with_context(|| format!("{at}.shmid {id}: no such segment in the tree's IPC namespace images"))?;
    let len = seg.size.next_multiple_of(4096);
    if let Some(prev) = prev
        && let Backing::SysvShm { id: prev_id, .. } = prev.backing
        && prev_id == id
        && prev.end == v.start
        && prev.pgoff + prev.len() == v.pgoff
    {
        return Ok(Backing::SysvShm { id, attach: None });
    }
    if v.pgoff != 0 || v.end - v.start > len {
        bail!(
            "{at}: pgoff {:#x}, {:#x} bytes: only part of SysV segment {id} ({len:#x} bytes) is mapped here; \
             partly unmapped attachments are not restored yet",
            v.pgoff,
            v.end - v.start
        );
    }
    // The attach mode is the open mode of the attachment's file; the
    // protection of this piece may have been lowered since.
    let read_only = match v.fdflags {
        Some(f) => f as i32 & libc::O_ACCMODE == libc::O_RDONLY,
        None => v.prot & libc::PROT_WRITE as u32 == 0,
    };
    Ok(Backing::SysvShm { id, attach: Some(ShmAttach { len, read_only }) })
}
