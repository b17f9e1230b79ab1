//! The new task's side of a restore, between its creation and the jump into
//! the blob. `steps` runs named stages in an order that matters (each
//! stage's doc says why it comes where it does): `enter_groups` (cgroups,
//! the IPC namespace, session and process group; a task joining a group
//! led from another branch of the tree waits on a futex word the host
//! shared, [`Groups`]), `hold_sigchld`, `place_held` (the root only),
//! `take_terminal`, `make_tree_files` (the root only: the tree's shared
//! descriptions at their slots, chosen by `tree_files.rs`), `premap`
//! (`cow.rs`), `create_children` (helpers holding groups whose leader is
//! gone, children with their PIDs, then zombies, which end at once as they
//! ended before; the helpers are reaped last), `move_pipes`, `close_inherited`,
//! `place_fds` (service files, own fds, shared ones, anonymous-inode files,
//! then file locks), `set_knobs`, `set_fs` (with, for a cwd in an ended
//! process's /proc directory, a helper holding its PID meanwhile),
//! `unregister_rseq`, `wait_seized`.
//!
//! It runs in a child of a multi-threaded parent (log readers, a test
//! harness), made by a raw `clone3` (or, without clone3, `fork`), so it
//! uses only data prepared before the clone: no allocation, no locks, no
//! destructors. Its system calls go through glibc's thin wrappers
//! (`open`, `dup3`, `setns`, `prctl`, `mmap`, `sigprocmask`, `waitid`, ...:
//! one system call each, no lock, errno in the thread's own TLS; not all
//! are on POSIX's async-signal-safe list), `libc::syscall` or
//! `revenant_arch`, and `unregister_rseq` reads glibc's `__rseq_offset`
//! and `__rseq_size`. glibc did not see this task being made, so nothing
//! that takes a glibc lock or asks glibc about threads (stdio, `malloc`,
//! pthread calls) may be added. A failure writes one log line and exits
//! with [`SETUP_FAILED`]; nothing of the dumped program has run yet, so
//! the restore simply fails.

use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};

use linux_raw_sys::general as g;

use nix::libc;
use revenant_arch::conv::{by_ref, size};
use revenant_blob_abi::LogLevel;
use revenant_restorer::Log;

use super::plan::{Session, ZombieExit, ZombiePlan};

/// Exit code of a task that failed before entering the blob.
pub const SETUP_FAILED: i32 = 190;

/// How a task's log line about its failed setup starts.
pub const SETUP_ERROR: &str = "restore setup: ";

/// The open file descriptions several fds of the tree share (every pipe
/// end, socket and terminal, and regular files that were dup'd or
/// inherited): the root places or opens each once, at its slot above every
/// number any task of the tree uses or inherits from the host, before it
/// creates its children; each task dups the slots it needs to its own
/// numbers and closes them all.
#[derive(Debug, Clone, Default)]
pub struct TreeFiles {
    pub base: i32,
    /// The `files.img` id of each slot, from `base` up.
    pub ids: Vec<u32>,
    /// Regular files, each opened straight at its slot.
    pub regs: Vec<Open>,
    /// Descriptions the host made: pipe ends, memfds that are the object
    /// itself rather than a reopen of it (which would count as a writer and
    /// keep the program from executing it), terminals and sockets. A copy of
    /// the host's descriptor, inherited at a number above every slot, is
    /// dup'd to the slot, with the flags and offset of `Open`.
    pub held: Vec<(i32, Open)>,
}

impl TreeFiles {
    /// The slot of description `id`.
    pub fn slot(&self, id: u32) -> Option<i32> {
        self.ids.iter().position(|&x| x == id).map(|k| self.base + k as i32)
    }

    pub fn end(&self) -> i32 {
        self.base + self.ids.len() as i32
    }
}

/// A file to open in the child.
#[derive(Debug, Clone, Default)]
pub struct Open {
    pub path: CString,
    pub flags: i32,
    /// The number it must end up at.
    pub fd: i32,
    pub pos: u64,
    pub cloexec: bool,
    /// A named pipe: opened behind a read-write keeper (an open for
    /// reading or writing alone would wait for the other side), through
    /// which its bytes go in.
    pub fifo: Option<super::plan::FifoFill>,
}

/// Everything the child does, prepared by the parent.
#[derive(Debug)]
pub struct ChildPlan {
    pub session: Session,
    /// Inherited pipe ends, and the numbers they move to.
    pub log_fd: (i32, i32),
    pub sync_fd: (i32, i32),
    /// The page server's socket (lazy restore), inherited and where it
    /// goes: next to the pipes, below every file.
    pub lazy_fd: Option<(i32, i32)>,
    /// Free numbers above every fd used; for moving things out of the way.
    pub scratch: i32,
    /// Opened first, at their service numbers (pages, exe, mapped files).
    pub service: Vec<Open>,
    /// The dumped program's descriptors it alone had, opened by itself.
    pub fds: Vec<Open>,
    /// Its descriptors on the tree's shared descriptions: (fd, slot,
    /// close-on-exec), dup'd from the slots after its own files.
    pub takes: Vec<(i32, i32, bool)>,
    pub root: Option<CString>,
    pub cwd: CString,
    /// The cwd is the /proc directory of a process that ended, with this
    /// PID: a helper with it holds the directory while we enter it.
    pub cwd_holder: Option<i32>,
    pub umask: u32,
    pub entry: usize,
    pub args: usize,
    pub stack_top: usize,
    /// The PID it must get.
    pub pid: i32,
    /// Indices (in the tree's plans) of the children it creates.
    pub children: Vec<usize>,
    /// Its zombie children, created and left unreaped.
    pub zombies: Vec<ZombiePlan>,
    /// Groups whose leader is gone that its children or zombies join: a
    /// helper task with each group's id holds it while they do.
    pub helpers: Vec<i32>,
    /// An IPC namespace to enter first (the root only; children inherit it).
    pub ipc_ns: Option<i32>,
    /// `cgroup.procs` files to write "0" (ourselves) to, first thing.
    pub cgroups: Vec<CString>,
    /// The words of the groups tasks join across the tree.
    pub groups: GroupWords,
    /// The tree's shared descriptions, the same in every plan.
    pub tree_files: TreeFiles,
    pub knobs: super::plan::Knobs,
    /// Areas it fills from its pages images (`service[i]` for image `i`)
    /// before it forks its children, who inherit them copy-on-write
    /// (`cow.rs`).
    pub premap: Vec<super::cow::Fill>,
    /// eventfds, signalfds, timerfds and epolls to make, after every other
    /// fd of the program (an epoll's targets must be open).
    pub anon_fds: Vec<crate::files::anonfd::Make>,
    /// File locks to take again once every fd is in place.
    pub locks: Vec<crate::files::locks::Lock>,
    /// The terminal it takes as its session's (`TIOCSCTTY`).
    pub ctty: Option<CString>,
    /// It brings its group to its terminal's foreground.
    pub tty_fg: bool,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

struct Failed;

/// Runs the steps of `plans[me]` (creating its children first) and jumps
/// into its blob; never returns.
pub fn run(plans: &[ChildPlan], me: usize) -> ! {
    let p = &plans[me];
    let log = Log::new(p.log_fd.0, LogLevel::Debug as u32);
    match steps(plans, me, &log) {
        Ok(()) => {
            // SAFETY: the bootstrap area (blob, stack, arguments) was mapped
            // by the parent before the clone and is ours as a private copy.
            unsafe { revenant_arch::call_on_stack(p.entry, p.args, p.stack_top) }
        }
        Err(Failed) => revenant_arch::sys::exit_group(SETUP_FAILED),
    }
}

fn fail(log: &Log, what: &str, detail: &[u8]) -> Failed {
    let e = errno();
    log.error().s(SETUP_ERROR).s(what).s(" ").bytes(detail).s(": errno ").dec(e as u64).emit();
    Failed
}

/// Writes `uid` to our own `/proc/self/loginuid` unless it holds it
/// already; without allocating.
///
/// # Safety
/// Plain system calls on buffers of this frame.
unsafe fn set_loginuid(uid: u32) -> bool {
    let mut text = [0u8; 10];
    let mut n = 0;
    let mut v = uid;
    loop {
        text[text.len() - 1 - n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = &text[text.len() - n..];
    // SAFETY: see the function's contract.
    unsafe {
        let fd = libc::open(c"/proc/self/loginuid".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            // No audit support: only "unset" is what it would say.
            return uid == u32::MAX;
        }
        let mut now = [0u8; 16];
        let got = libc::read(fd, now.as_mut_ptr().cast(), now.len());
        let same = got >= 0 && &now[..got as usize] == digits;
        let ok = same || libc::pwrite(fd, digits.as_ptr().cast(), digits.len(), 0) == digits.len() as isize;
        libc::close(fd);
        ok
    }
}

/// A fork-like `clone3` that gives the child PID `pid`: 0 in the child,
/// the PID in the parent. Safe to call after a fork (no allocation).
///
/// # Safety
/// As `fork`: in a multi-threaded caller, the child may only run code like
/// [`run`] (raw system calls on data prepared before).
pub unsafe fn clone_with_pid(pid: i32) -> Result<usize, revenant_arch::Errno> {
    let tids = [pid];
    let args = revenant_arch::sys::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..revenant_arch::sys::CLONE_ARGS_ZERO
    };
    let len = size(size_of_val(&args));
    // SAFETY: no CLONE_VM and no new stack: the child gets a copy of
    // everything; the caller vouches for what it runs.
    let r = unsafe { revenant_arch::syscall2(linux_raw_sys::general::__NR_clone3, by_ref(&args), len) };
    revenant_arch::check(r)
}

/// Puts the calling task `me` into its session and group. A task joining
/// a group whose leader comes from another branch of the tree waits until
/// that leader has made its group and said so in `groups`.
fn enter(s: Session, me: i32, groups: &GroupWords) -> Result<(), &'static str> {
    // SAFETY: plain syscalls on integers; `groups` was inherited from the
    // restoring process, which made it before the first task.
    unsafe {
        match s {
            Session::Leader if libc::setsid() < 0 => return Err("setsid"),
            Session::GroupLeader if libc::setpgid(0, 0) < 0 => return Err("setpgid"),
            Session::Join(group) => {
                if !groups.wait_made(group, GROUP_WAIT) {
                    return Err("waiting for the leader of its process group");
                }
                if libc::setpgid(0, group) < 0 {
                    return Err("joining its process group");
                }
            }
            _ => {}
        }
        // Announces the group this task leads, however it came to lead it;
        // by the group it is in, so that a child that got the wrong PID from
        // ns_last_pid (and is killed at once) announces nothing.
        if libc::getpgrp() == me {
            groups.made(me);
        }
    }
    Ok(())
}

/// How long a task waits for the leader of the group it joins. Only a
/// leader that failed (and whose failure ends the restore anyway) takes
/// this long; the bound keeps a task from waiting forever for it.
const GROUP_WAIT: libc::time_t = 10;

/// One group that tasks join: its id, and 1 once its leader made it.
#[repr(C)]
struct GroupSlot {
    pgid: i32,
    made: AtomicU32,
}

/// The process groups that tasks of a tree join, each with a word its
/// leader sets once the group exists (a futex, as CRIU's tasks wait on
/// futexes in memory they share). Mapped shared and anonymous by the
/// restoring process before it creates the first task, so every task
/// inherits the same words; each task's copy goes when its blob unmaps
/// everything, ours when this is dropped.
#[derive(Debug)]
pub struct Groups {
    words: GroupWords,
    len: usize,
}

/// The tasks' view of [`Groups`]: where its slots are.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupWords {
    base: usize,
    count: usize,
}

impl Groups {
    /// A slot for every group some task joins (`Session::Join`).
    pub fn new(sessions: impl IntoIterator<Item = Session>) -> anyhow::Result<Groups> {
        let mut pgids: Vec<i32> =
            sessions.into_iter().filter_map(|s| if let Session::Join(g) = s { Some(g) } else { None }).collect();
        pgids.sort_unstable();
        pgids.dedup();
        if pgids.is_empty() {
            return Ok(Groups { words: GroupWords::default(), len: 0 });
        }
        let len = (pgids.len() * size_of::<GroupSlot>()).next_multiple_of(revenant_arch::PAGE_SIZE);
        let (prot, flags) = (g::PROT_READ | g::PROT_WRITE, g::MAP_SHARED | g::MAP_ANONYMOUS);
        // SAFETY: a new anonymous mapping replaces nothing.
        let base = unsafe { revenant_arch::mmap(0, len, prot, flags, -1, 0) }
            .map_err(|e| anyhow::anyhow!("mapping the process group words: errno {}", e.raw()))?;
        for (i, &pgid) in pgids.iter().enumerate() {
            // SAFETY: slot i lies inside the fresh, zeroed, writable mapping,
            // which is page-aligned and so aligned for GroupSlot.
            unsafe { (base as *mut GroupSlot).add(i).write(GroupSlot { pgid, made: AtomicU32::new(0) }) };
        }
        Ok(Groups { words: GroupWords { base, count: pgids.len() }, len })
    }

    pub fn words(&self) -> GroupWords {
        self.words
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: our own mapping; the tasks have their own copies.
            let _ = unsafe { revenant_arch::sys::munmap(self.words.base, self.len) };
        }
    }
}

impl GroupWords {
    /// # Safety
    /// Only in a task created while the [`Groups`] these came from existed
    /// (or in the restoring process while it does).
    unsafe fn slot(&self, pgid: i32) -> Option<&GroupSlot> {
        if self.count == 0 {
            return None;
        }
        // SAFETY: `count` slots at `base`, mapped for as long as the caller
        // vouches for.
        let slots = unsafe { std::slice::from_raw_parts(self.base as *const GroupSlot, self.count) };
        slots.iter().find(|s| s.pgid == pgid)
    }

    /// Says that group `pgid` exists now, if some task waits for it.
    ///
    /// # Safety
    /// As [`GroupWords::slot`].
    unsafe fn made(&self, pgid: i32) {
        // SAFETY: forwarded.
        if let Some(slot) = unsafe { self.slot(pgid) } {
            slot.made.store(1, Ordering::Release);
            revenant_arch::sys::futex_wake(&slot.made, i32::MAX as u32);
        }
    }

    /// Waits until group `pgid` exists; false if nobody made it within
    /// `limit` seconds. Only system calls: safe after a fork.
    ///
    /// # Safety
    /// As [`GroupWords::slot`].
    unsafe fn wait_made(&self, pgid: i32, limit: libc::time_t) -> bool {
        // SAFETY: forwarded.
        let Some(slot) = (unsafe { self.slot(pgid) }) else { return false };
        let now = || {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes into the live local.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
            t
        };
        let start = now();
        let deadline = libc::timespec { tv_sec: start.tv_sec + limit, tv_nsec: start.tv_nsec };
        while slot.made.load(Ordering::Acquire) == 0 {
            let t = now();
            let mut left = libc::timespec { tv_sec: deadline.tv_sec - t.tv_sec, tv_nsec: deadline.tv_nsec - t.tv_nsec };
            if left.tv_nsec < 0 {
                (left.tv_sec, left.tv_nsec) = (left.tv_sec - 1, left.tv_nsec + 1_000_000_000);
            }
            if left.tv_sec < 0 {
                return false;
            }
            // Not FUTEX_PRIVATE: the word is shared between processes. It
            // returns when woken, when the word is no longer 0, on a signal
            // or at the timeout; the loop looks again each time.
            // SAFETY: the kernel reads the live atomic and the timeout.
            unsafe {
                libc::syscall(libc::SYS_futex, slot.made.as_ptr(), libc::FUTEX_WAIT, 0, &left as *const libc::timespec)
            };
        }
        true
    }
}

/// The signal set holding `sig` alone.
fn just(sig: i32) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid (empty) set; both calls only
    // write into the live local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

/// The zombie `z`'s own side: its session and name, then the end it had.
/// Never returns.
fn die_as(z: &ZombiePlan, groups: &GroupWords) -> ! {
    let _ = enter(z.session, z.pid, groups);
    // SAFETY: plain syscalls on integers and on a name the parent prepared.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, z.comm.as_ptr());
        if let ZombieExit::Signal(sig) = z.exit {
            // No core file for a death that already happened.
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
            let sig = sig as i32;
            // Ours were inherited from the restoring process (which ignores
            // SIGPIPE, say): the default action is what ended it.
            libc::signal(sig, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_UNBLOCK, &just(sig), std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
    }
    let code = match z.exit {
        ZombieExit::Code(c) => c as i32,
        ZombieExit::Signal(_) => SETUP_FAILED,
    };
    revenant_arch::sys::exit_group(code)
}

/// A helper's side: makes group `g` (its own id) and holds it until its
/// parent (`parent`) kills it, or dies. Never returns.
fn hold_group(g: i32, parent: i32, groups: &GroupWords) -> ! {
    // SAFETY: plain system calls on integers. A parent that fails before
    // it kills us takes us with it, rather than leave us holding the group.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(SETUP_FAILED);
        }
    }
    let _ = enter(Session::GroupLeader, g, groups);
    loop {
        // SAFETY: waits for the SIGKILL that ends it.
        unsafe { libc::pause() };
    }
}

/// A helper's side that only has to exist until its parent (`parent`)
/// kills it, or dies. Never returns.
fn hold_still(parent: i32) -> ! {
    // SAFETY: plain system calls on integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(SETUP_FAILED);
        }
        loop {
            libc::pause();
        }
    }
}

/// Creates the child `plans[k]` with its PID (clone3; no fallback here).
fn spawn_child(plans: &[ChildPlan], k: usize, log: &Log) -> Result<(), Failed> {
    // SAFETY: the new task runs `run`, which never returns.
    match unsafe { clone_with_pid(plans[k].pid) } {
        Ok(0) => run(plans, k),
        Ok(_) => Ok(()),
        Err(_) => Err(fail(log, "creating a child with its PID", b"")),
    }
}

/// The new task's setup between the clone and the blob, stage by stage;
/// the order matters (each stage says what it must come before or after).
fn steps(plans: &[ChildPlan], me: usize, log0: &Log) -> Result<(), Failed> {
    let p = &plans[me];
    // SAFETY: we are the new task of `plans[me]`, just cloned, running on
    // data the parent prepared before the clone: what every stage's
    // contract asks. Closing and replacing fds is the point of this step.
    unsafe {
        enter_groups(p, log0)?;
        let chld = hold_sigchld();
        if me == 0 {
            place_held(&p.tree_files, log0)?;
        }
        take_terminal(p, log0)?;
        if me == 0 {
            make_tree_files(&p.tree_files, log0)?;
        }
        premap(p, log0)?;
        create_children(plans, me, &chld, log0)?;
        let log = &move_pipes(p, log0)?;
        close_inherited(p);
        place_fds(p, log)?;
        set_knobs(p, log)?;
        set_fs(p, log)?;
        unregister_rseq();
        wait_seized(p, log)?;
    }
    Ok(())
}

/// First, so that everything the task makes from here on (pipes,
/// children, then the program's memory) is charged where it was, and its
/// children are born in its IPC namespace, session and group.
///
/// # Safety
/// Only in the new task of `p`, before anything else of its setup: moves
/// the whole process.
unsafe fn enter_groups(p: &ChildPlan, log0: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract.
    unsafe {
        join_cgroups(&p.cgroups, log0)?;
        if let Some(ns) = p.ipc_ns
            && libc::setns(ns, libc::CLONE_NEWIPC) < 0
        {
            return Err(fail(log0, "entering the restored IPC namespace", b""));
        }
    }
    if let Err(what) = enter(p.session, p.pid, &p.groups) {
        return Err(fail(log0, what, b""));
    }
    Ok(())
}

/// The restoring host may have been started with SIGCHLD ignored: then the
/// kernel would reap our zombie children at once. Blocked, their SIGCHLD
/// waits for us to drop it ([`create_children`]) instead of stopping us
/// before a tracing host. The blob sets the dumped action and mask.
/// Returns the set holding SIGCHLD.
///
/// # Safety
/// Only in the new task, before its children exist: changes the whole
/// process's SIGCHLD action.
unsafe fn hold_sigchld() -> libc::sigset_t {
    // SAFETY: see the function's contract; the mask is a live local.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let chld = just(libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        chld
    }
}

/// The root makes every shared description, for all to inherit; the
/// host's first (memfds, terminals), whose numbers the other slots may
/// take. Each goes above every slot first, so that placing one never
/// closes another still to be placed.
///
/// # Safety
/// Only in the root's new task: replaces whatever is at the slots.
unsafe fn place_held(tree: &TreeFiles, log0: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract; the host's copies were
    // inherited at their numbers, all above every slot.
    unsafe {
        for (from, o) in &tree.held {
            // Set only where they differ, and sought only when not at 0:
            // an O_PATH description (a link's) takes neither.
            let settable = libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;
            let flags = o.flags & settable;
            if libc::dup3(*from, o.fd, libc::O_CLOEXEC) < 0
                || (libc::fcntl(o.fd, libc::F_GETFL) & settable != flags && libc::fcntl(o.fd, libc::F_SETFL, flags) < 0)
                || (o.pos != 0
                    && libc::lseek(o.fd, o.pos as libc::off_t, libc::SEEK_SET) < 0
                    && errno() != libc::ESPIPE)
            {
                return Err(fail(log0, "placing a description the host made", b""));
            }
        }
    }
    Ok(())
}

/// A session leader takes its terminal before anything opens /dev/tty and
/// before its children (who inherit it) exist; then its group takes the
/// foreground if it had it.
///
/// # Safety
/// Only in the new task of `p`, after its session is made.
unsafe fn take_terminal(p: &ChildPlan, log0: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract; NUL-terminated paths, and the
    // mask and group are live locals.
    unsafe {
        if let Some(path) = &p.ctty {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(fail(log0, "taking its controlling terminal", path.as_bytes()));
            }
            libc::close(fd);
        }
        if p.tty_fg {
            // From a background group this would stop us with SIGTTOU.
            let ttou = just(libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
            let fd = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            let pgrp = libc::getpgrp();
            if fd < 0 || libc::ioctl(fd, libc::TIOCSPGRP, &pgrp) < 0 {
                return Err(fail(log0, "bringing its group to the terminal's foreground", b""));
            }
            libc::close(fd);
        }
    }
    Ok(())
}

/// The rest of the shared descriptions the root makes for all to inherit:
/// regular files, each opened at its slot.
///
/// # Safety
/// Only in the root's new task, after the host's descriptions are placed:
/// replaces whatever is at the slots.
unsafe fn make_tree_files(tree: &TreeFiles, log0: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract.
    unsafe {
        for o in &tree.regs {
            open_at(o, log0)?;
        }
    }
    Ok(())
}

/// Children first: they must be ours, in our session, and they need the
/// pipes we are about to close. Zombies end before we go on, and the
/// SIGCHLD they leave (`chld`, blocked) is dropped rather than reach the
/// program after the restore.
///
/// # Safety
/// Only in the new task of `plans[me]`, with SIGCHLD blocked
/// ([`hold_sigchld`]).
unsafe fn create_children(plans: &[ChildPlan], me: usize, chld: &libc::sigset_t, log0: &Log) -> Result<(), Failed> {
    let p = &plans[me];
    for &g in &p.helpers {
        // SAFETY: see the function's contract; the helper only holds its
        // group until killed.
        match unsafe { clone_with_pid(g) } {
            Ok(0) => hold_group(g, p.pid, &p.groups),
            // Made here as well, so that it exists before anyone joins.
            // SAFETY: a plain system call on our own child.
            Ok(_) => unsafe { libc::setpgid(g, g) },
            Err(_) => return Err(fail(log0, "creating the helper of a process group with its id", b"")),
        };
    }
    for &k in &p.children {
        spawn_child(plans, k, log0)?;
        // In a helper's group before the helper goes (its own join comes
        // later, and finds it there).
        if let Session::Join(g) = plans[k].session
            && p.helpers.contains(&g)
            // SAFETY: a plain system call on our own child.
            && unsafe { libc::setpgid(plans[k].pid, g) } < 0
        {
            return Err(fail(log0, "joining a child to a helper's process group", b""));
        }
    }
    // SAFETY: see the function's contract; a zombie's task only dies.
    unsafe {
        for z in &p.zombies {
            match clone_with_pid(z.pid) {
                Ok(0) => die_as(z, &p.groups),
                // Dead before we go on, so that its SIGCHLD is pending by
                // the time we drop it below.
                Ok(_) => {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    let how = libc::WEXITED | libc::WNOWAIT;
                    if libc::waitid(libc::P_PID, z.pid as libc::id_t, &mut info, how) < 0 {
                        return Err(fail(log0, "waiting for a zombie child to end", b""));
                    }
                }
                Err(_) => return Err(fail(log0, "creating a zombie child with its PID", b"")),
            }
        }
        // Every member is in its group now (the zombies joined before they
        // died): the helpers go, reaped, as if the group had lost its
        // leader long ago.
        for &g in &p.helpers {
            libc::kill(g, libc::SIGKILL);
            if libc::waitpid(g, std::ptr::null_mut(), 0) != g {
                return Err(fail(log0, "reaping the helper of a process group", b""));
            }
        }
        if !p.zombies.is_empty() || !p.helpers.is_empty() {
            // Nobody asked for their SIGCHLD: it goes now rather than reach
            // the program after the restore.
            let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::sigtimedwait(chld, std::ptr::null_mut(), &now);
        }
    }
    Ok(())
}

/// Log and sync pipes to their fixed numbers, via scratch numbers so
/// neither overwrites the other; returns the log on its new number.
///
/// # Safety
/// Only in the new task of `p`: its fixed numbers are replaced.
unsafe fn move_pipes(p: &ChildPlan, log0: &Log) -> Result<Log, Failed> {
    // SAFETY: see the function's contract.
    unsafe {
        let t_log = libc::fcntl(p.log_fd.0, libc::F_DUPFD, p.scratch);
        let t_sync = libc::fcntl(p.sync_fd.0, libc::F_DUPFD, p.scratch);
        let t_lazy = p.lazy_fd.map(|(from, to)| (libc::fcntl(from, libc::F_DUPFD, p.scratch), to));
        if t_log < 0 || t_sync < 0 || t_lazy.is_some_and(|t| t.0 < 0) {
            return Err(fail(log0, "moving the pipes to scratch numbers", b""));
        }
        libc::dup2(t_log, p.log_fd.1);
        libc::dup2(t_sync, p.sync_fd.1);
        if let Some((from, to)) = t_lazy {
            libc::dup2(from, to);
        }
    }
    Ok(Log::new(p.log_fd.1, LogLevel::Debug as u32))
}

/// Nothing the parent had open may reach the program: everything goes but
/// the log and sync pipes, and the tree's slots (above every other
/// number) until we have taken ours.
///
/// # Safety
/// Only in the new task of `p`, after [`move_pipes`] and its children:
/// closes nearly every fd.
unsafe fn close_inherited(p: &ChildPlan) {
    // The kept numbers, in order: the pipes and the page server's socket
    // (fixed numbers next to each other), then the slots.
    let mut keep = [p.log_fd.1, p.sync_fd.1, p.lazy_fd.map_or(-1, |l| l.1)];
    keep.sort_unstable();
    let (slots_lo, slots_hi) = (p.tree_files.base, p.tree_files.end());
    let mut from = 0;
    // SAFETY: see the function's contract.
    unsafe {
        for k in keep.into_iter().filter(|&k| k >= 0) {
            if k > from {
                libc::syscall(libc::SYS_close_range, from, k - 1, 0);
            }
            from = k + 1;
        }
        if slots_hi > slots_lo {
            libc::syscall(libc::SYS_close_range, from, slots_lo - 1, 0);
            libc::syscall(libc::SYS_close_range, slots_hi, u32::MAX, 0);
        } else {
            libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
        }
    }
}

/// The program's descriptors at their numbers: the service files and its
/// own, then those on the tree's shared descriptions (after which the
/// slots go), then the anonymous ones (an epoll's targets must be open),
/// then the file locks, which need every fd in place.
///
/// # Safety
/// Only in the new task of `p`, after [`close_inherited`]: replaces
/// whatever is at the numbers.
unsafe fn place_fds(p: &ChildPlan, log: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract.
    unsafe {
        for o in p.service.iter().chain(p.fds.iter().filter(|o| !shows_fds(&o.path))) {
            open_at(o, log)?;
        }
        for &(fd, slot, cloexec) in &p.takes {
            if libc::dup3(slot, fd, if cloexec { libc::O_CLOEXEC } else { 0 }) < 0 {
                return Err(fail(log, "placing a shared file description", b""));
            }
        }
        let (slots_lo, slots_hi) = (p.tree_files.base, p.tree_files.end());
        if slots_hi > slots_lo {
            libc::syscall(libc::SYS_close_range, slots_lo, slots_hi - 1, 0);
        }
        if let Err(what) = crate::files::anonfd::make_all(&p.anon_fds) {
            return Err(fail(log, what, b""));
        }
        // What shows the fds, last: every fd it names exists by now.
        for o in p.fds.iter().filter(|o| shows_fds(&o.path)) {
            open_at(o, log)?;
        }
        for l in &p.locks {
            if let Err(what) = l.take() {
                return Err(fail(log, what, b""));
            }
        }
    }
    Ok(())
}

/// Whether `path` is a `/proc` file or directory that shows a process's
/// fds (`fd/`, `fdinfo/`), which can only be opened once those exist.
fn shows_fds(path: &CString) -> bool {
    let p = path.as_bytes();
    p.starts_with(b"/proc/") && (p.windows(4).any(|w| w == b"/fd/") || p.windows(8).any(|w| w == b"/fdinfo/"))
}

/// The process's settings the blob does not set: subreaper, THP, timer
/// slack, KSM, membarrier registrations, login uid, personality. Before
/// chroot: /proc may be missing inside.
///
/// # Safety
/// Only in the new task of `p`: sets them for the whole process.
unsafe fn set_knobs(p: &ChildPlan, log: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract; plain syscalls on integers.
    unsafe {
        if p.knobs.child_subreaper && libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 {
            return Err(fail(log, "PR_SET_CHILD_SUBREAPER", b""));
        }
        if p.knobs.thp_disabled && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) < 0 {
            return Err(fail(log, "PR_SET_THP_DISABLE", b""));
        }
        if let Some(ns) = p.knobs.timer_slack_ns
            && libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) < 0
        {
            return Err(fail(log, "PR_SET_TIMERSLACK", b""));
        }
        const PR_SET_MEMORY_MERGE: libc::c_int = 67;
        if p.knobs.memory_merge && libc::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) < 0 {
            return Err(fail(log, "PR_SET_MEMORY_MERGE", b""));
        }
        for bit in (0..32).filter(|b| p.knobs.membarrier & (1 << b) != 0) {
            if libc::syscall(libc::SYS_membarrier, 1 << bit, 0, 0) < 0 {
                return Err(fail(log, "registering for membarrier", b""));
            }
        }
        if let Some(uid) = p.knobs.loginuid
            && !set_loginuid(uid)
        {
            return Err(fail(log, "setting the login uid", b""));
        }
        let pers = p.knobs.personality as libc::c_ulong;
        if libc::personality(0xffff_ffff) as libc::c_ulong != pers && libc::personality(pers) < 0 {
            return Err(fail(log, "personality", b""));
        }
    }
    Ok(())
}

/// The cwd, root and umask of the dumped process (its `fs` image). The
/// cwd's path is the one seen from our root, which the chroot hides:
/// change to it first (a chroot leaves the cwd alone).
///
/// # Safety
/// Only in the new task of `p`, after everything that opens paths outside
/// its root.
unsafe fn set_fs(p: &ChildPlan, log: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract; NUL-terminated paths the parent
    // prepared.
    unsafe {
        if let Some(h) = p.cwd_holder {
            match clone_with_pid(h) {
                Ok(0) => hold_still(p.pid),
                Ok(_) => {}
                Err(_) => return Err(fail(log, "creating the holder of a /proc directory with its PID", b"")),
            }
        }
        let entered = libc::chdir(p.cwd.as_ptr());
        if let Some(h) = p.cwd_holder {
            // It ends, reaped, its SIGCHLD taken off: the directory is
            // left as the dump found it, its process gone.
            libc::kill(h, libc::SIGKILL);
            if libc::waitpid(h, std::ptr::null_mut(), 0) != h {
                return Err(fail(log, "reaping the holder of a /proc directory", b""));
            }
            let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::sigtimedwait(&just(libc::SIGCHLD), std::ptr::null_mut(), &now);
        }
        if entered < 0 {
            return Err(fail(log, "chdir", p.cwd.as_bytes()));
        }
        if let Some(root) = &p.root
            && libc::chroot(root.as_ptr()) < 0
        {
            return Err(fail(log, "chroot", root.as_bytes()));
        }
        libc::umask(p.umask);
    }
    Ok(())
}

/// Last: the blob ends on a trap that only a tracer survives, so we wait
/// until the parent has seized us.
///
/// # Safety
/// Only in the new task of `p`, whose sync pipe is at its fixed number.
unsafe fn wait_seized(p: &ChildPlan, log: &Log) -> Result<(), Failed> {
    let mut b = [0u8; 1];
    // SAFETY: see the function's contract; reads one byte into a live local.
    if unsafe { libc::read(p.sync_fd.1, b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(fail(log, "waiting for the parent", b""));
    }
    Ok(())
}

/// Maps and fills the areas this task shares with its children, in their
/// slots of the premap region (which the host reserved for the tree).
///
/// # Safety
/// Maps over the premap reservation only, and reads into those mappings.
unsafe fn premap(p: &ChildPlan, log: &Log) -> Result<(), Failed> {
    if p.premap.is_empty() {
        return Ok(());
    }
    for f in &p.premap {
        let (prot, flags) = (libc::PROT_READ | libc::PROT_WRITE, f.flags as libc::c_int | libc::MAP_FIXED);
        let (file, offset) = match &f.file {
            Some((path, open_flags, pgoff)) => {
                // SAFETY: a NUL-terminated path the parent prepared.
                match unsafe { libc::open(path.as_ptr(), *open_flags | libc::O_CLOEXEC) } {
                    fd if fd >= 0 => (fd, *pgoff),
                    _ => return Err(fail(log, "opening a premapped file", path.as_bytes())),
                }
            }
            None => (-1, 0),
        };
        // SAFETY: the slot lies in the premap reservation, which holds
        // nothing else.
        let got = unsafe { libc::mmap(f.at as _, f.len as usize, prot, flags, file, offset as libc::off_t) };
        if file >= 0 {
            // SAFETY: our own descriptor; the mapping keeps the file.
            unsafe { libc::close(file) };
        }
        if got as u64 != f.at {
            return Err(fail(log, "mapping a premapped area", b""));
        }
    }
    // Pages image `i` is `service[i]` (`spawn::child_plan`); each is opened
    // once, for the runs it holds.
    let runs = || p.premap.iter().flat_map(|f| &f.runs);
    let Some(last) = runs().map(|r| r.file as usize).max() else { return Ok(()) };
    for (i, image) in p.service.iter().enumerate().take(last + 1) {
        if !runs().any(|r| r.file as usize == i) {
            continue;
        }
        // SAFETY: a NUL-terminated path the parent prepared.
        let fd = unsafe { libc::open(image.path.as_ptr(), image.flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(fail(log, "opening the pages image", image.path.as_bytes()));
        }
        for r in runs().filter(|r| r.file as usize == i) {
            let mut done = 0;
            while done < r.len {
                let dst = (r.addr + done) as *mut libc::c_void;
                let want = (r.len - done) as usize;
                // SAFETY: the destination is inside a slot mapped above.
                let n = unsafe { libc::pread(fd, dst, want, (r.file_offset + done) as libc::off_t) };
                if n <= 0 && !(n < 0 && errno() == libc::EINTR) {
                    return Err(fail(log, "reading pages into a premapped area", b""));
                }
                done += n.max(0) as u64;
            }
        }
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Moves this task (single-threaded still, so the whole process) into the
/// cgroup of each `cgroup.procs` file: "0" names the writer, in cgroup v1
/// and v2 alike. Children created afterwards inherit the cgroups.
///
/// # Safety
/// Plain system calls on NUL-terminated paths of the plan and a static
/// buffer.
unsafe fn join_cgroups(files: &[CString], log: &Log) -> Result<(), Failed> {
    for f in files {
        // SAFETY: see the function's contract.
        unsafe {
            let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(fail(log, "opening", f.as_bytes()));
            }
            if libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                // Before the close, which may change errno.
                let failed = fail(log, "moving itself into the cgroup by writing 0 to", f.as_bytes());
                libc::close(fd);
                return Err(failed);
            }
            libc::close(fd);
        }
    }
    Ok(())
}

/// Opens `o.path` and puts it at `o.fd` with its position and close-on-exec.
///
/// # Safety
/// Plain syscalls; `o.fd` may replace whatever was at that number.
unsafe fn open_at(o: &Open, log: &Log) -> Result<(), Failed> {
    // SAFETY: see the function's contract.
    unsafe {
        let keeper = match &o.fifo {
            Some(_) => libc::open(o.path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC),
            None => 0,
        };
        if keeper < 0 {
            return Err(fail(log, "opening the FIFO", o.path.as_bytes()));
        }
        let fd = libc::open(o.path.as_ptr(), o.flags | libc::O_NOCTTY, 0);
        if fd < 0 {
            return Err(fail(log, "opening", o.path.as_bytes()));
        }
        if let Some(fill) = &o.fifo {
            if let Some(size) = fill.size
                && libc::fcntl(keeper, libc::F_SETPIPE_SZ, size as libc::c_int) < 0
            {
                return Err(fail(log, "sizing the FIFO", o.path.as_bytes()));
            }
            if !fill.data.is_empty()
                && libc::write(keeper, fill.data.as_ptr().cast(), fill.data.len()) != fill.data.len() as isize
            {
                return Err(fail(log, "filling the FIFO", o.path.as_bytes()));
            }
            libc::close(keeper);
        }
        if fd != o.fd {
            let flags = if o.cloexec { libc::O_CLOEXEC } else { 0 };
            if libc::dup3(fd, o.fd, flags) < 0 {
                return Err(fail(log, "placing fd for", o.path.as_bytes()));
            }
            libc::close(fd);
        } else if o.cloexec {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        if o.pos != 0 && libc::lseek(o.fd, o.pos as libc::off_t, libc::SEEK_SET) < 0 {
            return Err(fail(log, "seeking in", o.path.as_bytes()));
        }
    }
    Ok(())
}

unsafe extern "C" {
    /// glibc (2.35+): the rseq area's offset from the thread pointer, and
    /// its registered size (0 when glibc did not register).
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The kernel writes to a registered rseq area on every preemption; once
/// the blob unmaps glibc's copy, that write would kill the task.
fn unregister_rseq() {
    // SAFETY: glibc defines these read-only symbols.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    let area = revenant_arch::thread_pointer().wrapping_add_signed(offset);
    let sig = cfg_select! {
        target_arch = "x86_64" => { 0x5305_3053u32 }
        target_arch = "arm" => { 0xe7f5_def3u32 }
    };
    // The registration's length must match exactly: glibc registers 32
    // bytes or its reported feature size.
    for len in [32, size] {
        // SAFETY: dropping our own thread's registration of glibc's area.
        let res = unsafe { revenant_arch::sys::rseq(area, len, revenant_arch::consts::RSEQ_FLAG_UNREGISTER, sig) };
        if res.is_ok() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task in another process sees the group made: the words are shared,
    /// and the futex wakes across processes.
    #[test]
    fn a_joiner_waits_for_the_group_its_leader_makes_in_another_process() {
        let _w = revenant_test_watchdog::start();
        let groups =
            Groups::new([Session::Join(4242), Session::Join(77), Session::Leader, Session::Join(4242)]).unwrap();
        let words = groups.words();
        assert_eq!(words.count, 2);
        // SAFETY: the child only waits on the shared word (atomics and
        // system calls) and leaves with exit_group.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: `groups` lives in the parent until we are reaped.
                let ok = unsafe { words.wait_made(4242, 60) };
                revenant_arch::sys::exit_group(if ok { 0 } else { 1 })
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        // SAFETY: `groups` is alive.
        unsafe { words.made(4242) };
        let end = nix::sys::wait::waitpid(child, None).unwrap();
        assert_eq!(end, nix::sys::wait::WaitStatus::Exited(child, 0));
        // SAFETY: `groups` is alive.
        unsafe {
            // Made once, it stays made; the other group was never made, and
            // a group nobody joins has no word.
            assert!(words.wait_made(4242, 0));
            assert!(!words.wait_made(77, 0));
            assert!(!words.wait_made(5, 0));
        }
    }

    #[test]
    fn no_joiners_need_no_words() {
        let groups = Groups::new([Session::Leader, Session::GroupLeader, Session::Inherit]).unwrap();
        assert_eq!((groups.words().count, groups.len), (0, 0));
    }
}
