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
//! ids. A [`Janitor`] process, told each id as it is made, removes them
//! when we die before telling it that the tree runs. (A namespace of the
//! tree's own dies with us and the half-made tasks, segments and all.)

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::IpcVarEntry;

use super::plan::PageRun;

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

/// `shm_rmid_forced` is set last: set earlier, it would destroy each
/// segment the moment its filling attach goes away.
const RMID_FORCED: &str = "kernel/shm_rmid_forced";

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
            let id = make(s, plan.allow_new_ids)?;
            // Recorded at once: on a failure further on, dropping `created`
            // removes it too, and if we die, the janitor does.
            ids.push((s.id, id));
            if let Some(j) = janitor {
                j.tell(id)?;
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

/// `ipcns-var`'s fields and the sysctls (under /proc/sys) they hold, in
/// both directions: [`var_sysctls`] for a restore, [`read_var`] for a dump.
/// `kernel/auto_msgmni` is recorded but no longer settable.
pub fn var_sysctls(v: &IpcVarEntry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: String| out.push((name.to_string(), value));
    if v.sem_ctls.len() == 4 {
        put("kernel/sem", v.sem_ctls.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "));
    }
    put("kernel/msgmax", v.msg_ctlmax.to_string());
    put("kernel/msgmnb", v.msg_ctlmnb.to_string());
    put("kernel/msgmni", v.msg_ctlmni.to_string());
    put("kernel/shmmax", v.shm_ctlmax.to_string());
    put("kernel/shmall", v.shm_ctlall.to_string());
    put("kernel/shmmni", v.shm_ctlmni.to_string());
    put(RMID_FORCED, v.shm_rmid_forced.to_string());
    put("fs/mqueue/queues_max", v.mq_queues_max.to_string());
    put("fs/mqueue/msg_max", v.mq_msg_max.to_string());
    put("fs/mqueue/msgsize_max", v.mq_msgsize_max.to_string());
    if let Some(n) = v.mq_msg_default {
        put("fs/mqueue/msg_default", n.to_string());
    }
    if let Some(n) = v.mq_msgsize_default {
        put("fs/mqueue/msgsize_default", n.to_string());
    }
    out
}

/// `ipcns-var` from the sysctls of this thread's IPC namespace; a missing
/// or odd value stays 0.
pub fn read_var() -> IpcVarEntry {
    let get = |name: &str| std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap_or_default();
    let n32 = |name: &str| get(name).trim().parse::<u32>().unwrap_or(0);
    let n64 = |name: &str| get(name).trim().parse::<u64>().unwrap_or(0);
    let opt = |name: &str| get(name).trim().parse::<u32>().ok();
    IpcVarEntry {
        sem_ctls: get("kernel/sem").split_whitespace().filter_map(|w| w.parse().ok()).collect(),
        msg_ctlmax: n32("kernel/msgmax"),
        msg_ctlmnb: n32("kernel/msgmnb"),
        msg_ctlmni: n32("kernel/msgmni"),
        auto_msgmni: n32("kernel/auto_msgmni"),
        shm_ctlmax: n64("kernel/shmmax"),
        shm_ctlall: n64("kernel/shmall"),
        shm_ctlmni: n32("kernel/shmmni"),
        shm_rmid_forced: n32(RMID_FORCED),
        mq_queues_max: n32("fs/mqueue/queues_max"),
        mq_msg_max: n32("fs/mqueue/msg_max"),
        mq_msgsize_max: n32("fs/mqueue/msgsize_max"),
        mq_msg_default: opt("fs/mqueue/msg_default"),
        mq_msgsize_default: opt("fs/mqueue/msgsize_default"),
        ..Default::default()
    }
}

fn write_sysctl(name: &str, value: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/{name}"), value).with_context(|| format!("setting {name} to {value}"))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Creates segment `s` with its id (or, if allowed, any id); returns the id.
fn make(s: &SegmentPlan, allow_new_ids: bool) -> Result<i32> {
    let existing = stat(s.id).ok();
    if let (Some(ds), false) = (&existing, allow_new_ids) {
        bail!(
            "SysV segment {} (key {:#x}) cannot get its id back: segment {} (key {:#x}, {} bytes) exists; remove it \
             (ipcrm -m {}) or restore with --shm-new-ids",
            s.id,
            s.key,
            s.id,
            ds.shm_perm.__key,
            ds.shm_segsz,
            s.id
        );
    }
    if existing.is_none() {
        write_sysctl("kernel/shm_next_id", &s.id.to_string())?;
    }
    // SAFETY: shmget takes integers only.
    let id = unsafe { libc::shmget(s.key, s.size as usize, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    if id < 0 {
        let e = errno();
        if e.raw_os_error() == Some(libc::EEXIST) {
            bail!("SysV segment {}: its key {:#x} is used by another segment in this IPC namespace", s.id, s.key);
        }
        return Err(e).with_context(|| format!("creating SysV segment {} ({} bytes, key {:#x})", s.id, s.size, s.key));
    }
    if id != s.id && !allow_new_ids {
        // SAFETY: removes the segment just made; no buffer.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        bail!("SysV segment {} came back as {id}: this kernel ignored shm_next_id", s.id);
    }
    Ok(id)
}

/// `shmctl(IPC_STAT)` of segment `id` in this thread's namespace.
pub fn stat(id: i32) -> std::io::Result<libc::shmid_ds> {
    let mut ds = zeroed_ds();
    // SAFETY: IPC_STAT writes one shmid_ds into a live local.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(errno());
    }
    Ok(ds)
}

fn zeroed_ds() -> libc::shmid_ds {
    // SAFETY: shmid_ds is plain integers, for which zero is valid.
    unsafe { std::mem::zeroed() }
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
pub(super) fn read_runs(mem: &mut [u8], file: &std::path::Path, runs: &[PageRun]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions name the same sysctls: what a dump reads here is
    /// what a restore would write back, value for value.
    #[test]
    fn ipc_var_reads_back_as_the_sysctls_it_came_from() {
        let pairs = var_sysctls(&read_var());
        assert!(pairs.len() >= 11, "{pairs:?}");
        for (name, value) in pairs {
            let now = std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap();
            assert_eq!(now.split_whitespace().collect::<Vec<_>>().join(" "), value, "{name}");
        }
    }
}
