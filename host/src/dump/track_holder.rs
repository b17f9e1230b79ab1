//! The process that keeps a pre-dump's write tracking alive until the
//! next link of the chain takes it.
//!
//! A userfaultfd's registrations end when its last fd closes, so after a
//! pre-dump returns somebody must hold each tracked process's userfaultfd
//! (with a pidfd naming that process). The pre-dump forks the holder,
//! twice so that init (or the nearest subreaper) is its parent, binds it
//! an abstract `SOCK_SEQPACKET` address named after the pre-dump's image
//! directory (its device and inode: who names the same directory with
//! `--prev-images-dir` finds it), and returns. The holder then waits, in
//! `poll`, for either:
//!
//! - every tracked process to exit (its pidfd turns readable): the
//!   tracking has nothing left to say, and the holder exits. So a chain
//!   that never gets its final dump leaves nothing behind once the tree
//!   is gone;
//! - a peer of our own uid (or root) asking `T` (take): it is sent the
//!   pre-dump's run id (also in its `inventory.img`, so that a taker can
//!   tell the holder belongs to the directory it names, not to an earlier
//!   one whose inode the directory reuses) and every (pid, pidfd,
//!   userfaultfd), then the holder waits for `D` (done: the
//!   next link owns the tracking now) and exits, or for the peer to go
//!   away without it (its dump failed) and serves the next one;
//! - `Q` (quit): it exits at once, and the tracking ends with it.
//!
//! Why a fork and not a re-executed binary: the dump is also a library
//! called from other programs (the tests among them), whose
//! `/proc/self/exe` knows no hidden subcommand, and the holder's whole
//! life is a few system calls (`poll`, `accept4`, `recv`, `sendmsg`) on
//! what was prepared before the fork, which is what a child of a
//! multi-threaded process may do (see `docs/architecture.md`, Forks).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use nix::libc;

use super::track::Tracker;

const TAKE: u8 = b'T';
const DONE: u8 = b'D';
const QUIT: u8 = b'Q';
/// The most processes one holder tracks: its arrays live on its stack.
pub const MAX: usize = 1024;
/// Processes per message: two fds each, under the kernel's 253 per
/// `SCM_RIGHTS` message.
const BATCH: usize = 100;
/// Bytes of a run id: 16 random bytes in hex.
pub const RUN_ID: usize = 32;
/// A message: the total count, the run id, then a batch of PIDs.
const HEAD: usize = 4 + RUN_ID;

/// A new run id for a pre-dump: its holder and its inventory carry it.
pub fn run_id() -> Result<String> {
    let mut b = [0u8; RUN_ID / 2];
    // SAFETY: the kernel writes at most `b.len()` bytes.
    if unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) } != b.len() as isize {
        return Err(std::io::Error::last_os_error()).context("getrandom for a pre-dump's run id");
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The holder's address for the image directory with `dev` and `ino`.
pub fn name(dev: u64, ino: u64) -> String {
    format!("revenant-track/{dev:x}:{ino:x}")
}

fn connect(name: &str) -> Result<Option<OwnedFd>> {
    let Some(s) = crate::holder::connect(name, "the write tracking's holder")? else { return Ok(None) };
    // A holder that does not answer in time is taken for gone.
    let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
    crate::files::sockopt::set(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    Ok(Some(s))
}

/// Starts a holder of `trackers` for the pre-dump `run_id` at `name`; a
/// holder of an earlier pre-dump into the same directory is told to quit
/// first. Returns the holder's PID.
pub fn start(name: &str, run_id: &str, trackers: &[Tracker]) -> Result<u32> {
    let id: [u8; RUN_ID] = run_id.as_bytes().try_into().context("a run id of the wrong length")?;
    if trackers.len() > MAX {
        bail!("{} processes to track: one holder tracks at most {MAX}", trackers.len());
    }
    let listener = crate::holder::listen(name, "the write tracking's holder", quit)?;
    // Everything the holder uses is made before the fork.
    let mut pids = [0i32; MAX];
    let mut fds = [-1 as RawFd; 2 * MAX];
    for (i, t) in trackers.iter().enumerate() {
        pids[i] = t.pid;
        fds[2 * i] = t.pidfd.as_raw_fd();
        fds[2 * i + 1] = t.uffd.as_raw_fd();
    }
    let n = trackers.len();
    let mut keep: Vec<RawFd> = fds[..2 * n].to_vec();
    keep.push(listener.as_raw_fd());
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context("/dev/null")?;
    keep.push(null.as_raw_fd());
    keep.sort_unstable();
    let lis = listener.as_raw_fd();
    // SAFETY: the child and grandchild make system calls only, on what
    // was prepared above, and end in _exit.
    let middle = unsafe { libc::fork() };
    if middle < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if middle == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            let holder = libc::fork();
            if holder != 0 {
                if holder > 0 {
                    let pid = holder.to_ne_bytes();
                    libc::write(wr.as_raw_fd(), pid.as_ptr().cast(), pid.len());
                }
                libc::_exit(0);
            }
            for fd in 0..3 {
                libc::dup2(null.as_raw_fd(), fd);
            }
            crate::holder::close_all_but(&keep, 1 << 20);
            libc::close(null.as_raw_fd());
            hold(lis, &id, &pids[..n], &fds[..2 * n]);
        }
    }
    drop(wr);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(middle), None);
    let mut pid = [0u8; 4];
    if nix::unistd::read(&rd, &mut pid).context("reading the holder's PID")? != 4 {
        bail!("the write tracking's holder did not start");
    }
    Ok(u32::from_ne_bytes(pid))
}

/// The holder: serves `fds` ((pidfd, userfaultfd) of each of `pids`) on
/// `listener` until every process is gone, a taker is done, or it is told
/// to quit.
///
/// # Safety
/// Only in the forked holder: the fds are its own.
unsafe fn hold(listener: RawFd, id: &[u8; RUN_ID], pids: &[i32], fds: &[RawFd]) -> ! {
    // SAFETY: system calls on the holder's own fds and stack buffers.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"revenant-track".as_ptr());
        // The dump's handlers and mask are not the holder's: a plain kill
        // ends it.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let n = pids.len();
        let mut polls = [libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 }; MAX + 1];
        polls[0].fd = listener;
        for i in 0..n {
            polls[i + 1].fd = fds[2 * i];
        }
        loop {
            // A gone process's pidfd stays readable: left out from then on
            // (a negative fd is skipped by poll).
            if polls[1..=n].iter().all(|p| p.fd < 0) {
                libc::_exit(0);
            }
            let r = libc::poll(polls.as_mut_ptr(), (n + 1) as libc::nfds_t, -1);
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            for p in polls[1..=n].iter_mut() {
                if p.fd >= 0 && p.revents != 0 {
                    p.fd = -1;
                }
            }
            if polls[0].revents & libc::POLLIN == 0 {
                continue;
            }
            let c = libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
            if c < 0 {
                continue;
            }
            let ok = crate::holder::peer_is_ours(c);
            match if ok { crate::holder::recv_byte(c) } else { None } {
                Some(QUIT) => libc::_exit(0),
                Some(TAKE) if send_all(c, id, pids, fds) && crate::holder::recv_byte(c) == Some(DONE) => libc::_exit(0),
                _ => {}
            }
            libc::close(c);
        }
    }
}

/// Sends every process in batches: each message holds the total count,
/// the run id, then its batch's PIDs, with their (pidfd, userfaultfd)
/// pairs in flight. System calls only (it runs in the holder).
fn send_all(c: RawFd, id: &[u8; RUN_ID], pids: &[i32], fds: &[RawFd]) -> bool {
    let total = (pids.len() as u32).to_ne_bytes();
    let mut msg = [0u8; HEAD + 4 * BATCH];
    let mut at = 0;
    loop {
        let batch = (pids.len() - at).min(BATCH);
        msg[..4].copy_from_slice(&total);
        msg[4..HEAD].copy_from_slice(id);
        for (i, pid) in pids[at..at + batch].iter().enumerate() {
            msg[HEAD + 4 * i..HEAD + 4 + 4 * i].copy_from_slice(&pid.to_ne_bytes());
        }
        let len = HEAD + 4 * batch;
        if crate::files::unixsk::send_one(c, &msg[..len], None, &fds[2 * at..2 * (at + batch)]) != len as isize {
            return false;
        }
        at += batch;
        if at == pids.len() {
            return true;
        }
    }
}

/// Tracking taken from a holder; the holder waits for [`Taken::done`].
#[derive(Debug)]
pub struct Taken {
    conn: OwnedFd,
    /// The run id of the pre-dump whose tracking this is.
    pub run_id: String,
    pub trackers: Vec<Tracker>,
}

impl Taken {
    /// The taker owns the tracking now: the holder exits.
    pub fn done(self) {
        drop(self.into_trackers());
    }

    /// [`Self::done`], keeping the trackers.
    pub fn into_trackers(self) -> Vec<Tracker> {
        crate::holder::send_byte(self.conn.as_raw_fd(), DONE);
        // It closes its end as it exits; waited for, so that its copies
        // are gone when the caller goes on.
        let _ = crate::holder::recv_byte(self.conn.as_raw_fd());
        self.trackers
    }
}

/// Takes the tracking held at `name`; `None` if no holder answers there
/// (it was killed, or every process it tracked is gone).
pub fn take(name: &str) -> Result<Option<Taken>> {
    let Some(conn) = connect(name)? else { return Ok(None) };
    crate::holder::check_peer(&conn, name, "a holder")?;
    if !crate::holder::send_byte(conn.as_raw_fd(), TAKE) {
        return Ok(None);
    }
    let mut trackers = Vec::new();
    let mut run_id = String::new();
    loop {
        let mut buf = [0u8; HEAD + 4 * BATCH];
        let (got, fds, truncated) = crate::holder::recv_rights(&conn, &mut buf);
        if got < HEAD as isize || !(got as usize - HEAD).is_multiple_of(4) {
            bail!("the write tracking's holder at @{name} went away while handing over its processes");
        }
        let total = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if run_id.is_empty() {
            run_id = String::from_utf8_lossy(&buf[4..HEAD]).into_owned();
        }
        let batch = (got as usize - HEAD) / 4;
        if truncated || fds.len() != 2 * batch {
            bail!("the write tracking's holder at @{name} sent {} descriptors for {batch} processes", fds.len());
        }
        let mut fds = fds.into_iter();
        for i in 0..batch {
            let pid = i32::from_ne_bytes(buf[HEAD + 4 * i..HEAD + 4 + 4 * i].try_into().expect("4 bytes"));
            let (pidfd, uffd) = (fds.next().expect("counted"), fds.next().expect("counted"));
            trackers.push(Tracker { pid, pidfd, uffd, inherited: true });
        }
        if trackers.len() >= total {
            break;
        }
    }
    Ok(Some(Taken { conn, run_id, trackers }))
}

/// Tells the holder at `name`, if any, to quit; returns whether one
/// answered.
pub fn quit(name: &str) -> Result<bool> {
    let Some(conn) = connect(name)? else { return Ok(false) };
    crate::holder::send_byte(conn.as_raw_fd(), QUIT);
    // It closes its end as it exits.
    let _ = crate::holder::recv_byte(conn.as_raw_fd());
    Ok(true)
}
