//! The guardian: a second process that holds a copy of every userfaultfd
//! the page server serves, so that the server's death cannot leave a
//! program reading zeros where its pages should be.
//!
//! While any copy is open a missing page waits for an answer; when the
//! last one closes the kernel drops the registration and the page reads as
//! zeros. So if the server dies before it is done (killed, crashed), the
//! guardian, which notices by its socket hanging up, kills every process
//! it holds pages for and everything they have forked since, waits for
//! them to die, and only then lets its copies go. A server that finishes
//! says so first, and the guardian just exits.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// The server's end.
pub struct Guard {
    sock: Option<OwnedFd>,
    next_id: u32,
}

/// How the guardian knows a held descriptor.
pub type Id = u32;

impl Guard {
    /// Forks the guardian. Call while the process has one thread.
    pub fn start() -> Result<Guard> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).context("socketpair")?;
        // SAFETY: the page server calls this first thing, single-threaded,
        // so the child can run ordinary code.
        match unsafe { nix::unistd::fork() }.context("forking the guardian")? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                guardian(theirs)
            }
            nix::unistd::ForkResult::Parent { .. } => Ok(Guard { sock: Some(ours), next_id: 0 }),
        }
    }

    /// Process `pid` of the tree, whose userfaultfd is `uffd`.
    pub fn hold(&mut self, pid: i32, uffd: &OwnedFd) -> Id {
        let pidfd = crate::procfs::pidfd(pid).ok();
        let mut fds = vec![uffd.as_raw_fd()];
        fds.extend(pidfd.as_ref().map(|f| f.as_raw_fd()));
        self.send(b'H', pid, &fds)
    }

    /// A process made by `fork` in one with pages still to come.
    pub fn hold_child(&mut self, parent: Option<i32>, uffd: &OwnedFd) -> Id {
        self.send(b'C', parent.unwrap_or(0), &[uffd.as_raw_fd()])
    }

    /// The process behind `id` has every page.
    pub fn release(&mut self, id: Id) {
        let mut msg = vec![b'R'];
        msg.extend(id.to_le_bytes());
        self.write(&msg, &[]);
    }

    /// Every process is served: the guardian may go.
    pub fn done(&mut self) {
        self.write(b"E", &[]);
    }

    fn send(&mut self, kind: u8, pid: i32, fds: &[RawFd]) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = vec![kind];
        msg.extend(id.to_le_bytes());
        msg.extend(pid.to_le_bytes());
        self.write(&msg, fds);
        id
    }

    fn write(&mut self, msg: &[u8], fds: &[RawFd]) {
        let Some(sock) = &self.sock else { return };
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs = if fds.is_empty() { &[][..] } else { &rights[..] };
        let res = sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(msg)], cmsgs, MsgFlags::MSG_NOSIGNAL, None);
        if let Err(e) = res {
            eprintln!("revenant lazy-pages: the guardian is gone ({e}); serving on without it");
            self.sock = None;
        }
    }
}

/// One held userfaultfd.
struct Held {
    id: Id,
    /// The tree's PID, or the parent's for a forked child (0: unknown).
    pid: i32,
    pidfd: Option<OwnedFd>,
    _uffd: OwnedFd,
}

fn guardian(sock: OwnedFd) -> ! {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    let mut held: Vec<Held> = vec![];
    loop {
        let mut buf = [0u8; 16];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let got = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC);
        let msg = match got {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        };
        let mut fds: Vec<OwnedFd> = vec![];
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(got.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("four bytes"));
        match (buf[0], n) {
            (_, 0) => break,
            (b'E', 1) => std::process::exit(0),
            (b'R', 5) => held.retain(|h| h.id != word(1)),
            (b'H' | b'C', 9) if !fds.is_empty() => {
                let mut fds = fds.into_iter();
                let uffd = fds.next().expect("one fd");
                held.push(Held { id: word(1), pid: word(5) as i32, pidfd: fds.next(), _uffd: uffd });
            }
            _ => {}
        }
    }
    if !held.is_empty() {
        kill_all(&held);
    }
    std::process::exit(0)
}

/// The page server died with pages still to serve: every process it
/// served, and whatever they have forked since, dies before the
/// descriptors close. Every process is signalled through a pidfd, never
/// by a bare PID, which may belong to someone else once its process is
/// gone.
fn kill_all(held: &[Held]) {
    let mut victims: Vec<(i32, OwnedFd)> = vec![];
    for h in held {
        let Some(fd) = &h.pidfd else { continue };
        if !exited(fd)
            && !victims.iter().any(|(p, _)| *p == h.pid)
            && let Ok(fd) = fd.try_clone()
        {
            victims.push((h.pid, fd));
        }
    }
    // Children found through /proc, each opened while its parent is
    // still the one we hold: a PID taken over since has another parent.
    let parents = parent_table();
    let mut i = 0;
    while i < victims.len() {
        let parent = victims[i].0;
        for &(child, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            if victims.iter().any(|(p, _)| *p == child) {
                continue;
            }
            if let Some(fd) = crate::procfs::pidfd(child).ok().filter(|_| ppid(child) == Some(parent)) {
                victims.push((child, fd));
            }
        }
        i += 1;
    }
    let pids: Vec<i32> = victims.iter().map(|(p, _)| *p).collect();
    eprintln!(
        "revenant lazy-pages: the page server died before every page was in; killing {} process(es) rather \
         than let them read zeros: {pids:?}",
        pids.len()
    );
    for (_, fd) in &victims {
        // SAFETY: a pidfd we hold; SIGKILL with no siginfo.
        unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_send_signal, fd.as_raw_fd(), nix::libc::SIGKILL, 0, 0) };
    }
    // Until they are gone, a thread that touches a missing page waits
    // rather than reads zeros; after that nobody is left to read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline && victims.iter().any(|(_, fd)| !exited(fd)) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether the process behind a pidfd has exited (the pidfd reads ready).
fn exited(fd: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// The parent of `pid`, from `/proc`.
fn ppid(pid: i32) -> Option<i32> {
    crate::procfs::stat(pid, pid).ok().map(|s| s.ppid)
}

/// (PID, parent) of every process, from `/proc`.
fn parent_table() -> Vec<(i32, i32)> {
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    pids.filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).filter_map(|p| Some((p, ppid(p)?))).collect()
}
