//! The process that holds a dump's locked TCP connections (`tcp.rs`):
//! it undoes the locks if the dump fails, or dies, and keeps a killed
//! program's connections until a restore takes them back.
//!
//! The dump forks the keeper before it locks the first connection and
//! hands it a copy of each socket before it locks it (`A`), over a
//! `SOCK_SEQPACKET` pair. Then either `R` (release: the dump failed, or
//! the tree runs on; the dump unlocks its own copies as well) or the end
//! of that pair (the dump died, even by SIGKILL) makes the keeper unlock
//! every connection and exit, so that the program is never left with its
//! connections locked; or `K` (keep: the tree was killed) puts them in
//! repair mode, hands the keeper an abstract unix socket named after the
//! image directory (its device and inode), bound before the dump returns,
//! and it serves there. A restore (peers of our own uid or root only) asks
//! for `T` (take): the keeper sends every socket, then waits; `D` (done)
//! from the restore, once its programs run, ends the keeper, and a restore
//! that fails and goes away leaves it serving the next. `Q` (quit) ends it
//! at once: its sockets close still in repair mode, which sends nothing,
//! and the connections are lost to both ends.
//!
//! Between its fork and its exit the keeper makes only system calls, on
//! what was allocated before the fork and on its own stack: the dump is
//! multi-threaded, and a lock another thread held at the fork stays held
//! in the child.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::libc;

const TAKE: u8 = b'T';
const DONE: u8 = b'D';
const QUIT: u8 = b'Q';
const ADD: u8 = b'A';
const RELEASE: u8 = b'R';
const KEEP: u8 = b'K';
/// The most connections one dump locks.
const MAX: usize = 4096;
/// Sockets per message: under the kernel's limit of 253 per
/// `SCM_RIGHTS` message.
const BATCH: usize = 200;

/// The keeper's address for the image directory `dir`: who restores
/// from the same directory finds the same keeper.
pub fn name(dir: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    Ok(format!("revenant-tcp-lock/{:x}:{:x}", m.dev(), m.ino()))
}

fn connect(name: &str) -> Result<Option<OwnedFd>> {
    crate::holder::connect(name, "the TCP lock's keeper")
}

fn send_byte(s: &OwnedFd, b: u8) -> Result<()> {
    if !crate::holder::send_byte(s.as_raw_fd(), b) {
        return Err(std::io::Error::last_os_error()).context("writing to the TCP lock's keeper");
    }
    Ok(())
}

/// The dump's end of its keeper.
#[derive(Debug)]
pub struct Guard {
    ctl: Option<OwnedFd>,
    pub pid: u32,
    held: usize,
}

/// Sends command `cmd` with word `word` and, if any, `fd` in flight;
/// waits for the keeper's answer (the command in lower case).
fn ask(ctl: &OwnedFd, cmd: u8, word: i32, fd: Option<RawFd>) -> Result<()> {
    let mut msg = [0u8; 5];
    msg[0] = cmd;
    msg[1..].copy_from_slice(&word.to_ne_bytes());
    let fds: Vec<RawFd> = fd.into_iter().collect();
    if super::unixsk::send_one(ctl.as_raw_fd(), &msg, None, &fds) != 5 {
        return Err(std::io::Error::last_os_error()).context("writing to the TCP lock's keeper");
    }
    match crate::holder::recv_byte(ctl.as_raw_fd()) {
        Some(b) if b == cmd.to_ascii_lowercase() => Ok(()),
        Some(b) => bail!("the TCP lock's keeper refused {:?} ({:?})", cmd as char, b as char),
        None => bail!("the TCP lock's keeper is gone"),
    }
}

impl Guard {
    /// Forks the keeper, twice so that init is its parent.
    pub fn start() -> Result<Guard> {
        let mut pair = [0; 2];
        // SAFETY: the kernel writes two fds, owned at once.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) }
            < 0
        {
            return Err(std::io::Error::last_os_error()).context("socketpair");
        }
        // SAFETY: just made.
        let (mine, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context("/dev/null")?;
        // A keeper that does not answer in time is given up on: the dump
        // unlocks its own copies.
        let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
        super::sockopt::set(mine.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        let mut lim = libc::rlimit64 { rlim_cur: 1024, rlim_max: 1024 };
        // SAFETY: the kernel writes one rlimit64.
        unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut lim) };
        let nofile = lim.rlim_max;
        let mut keep = vec![theirs.as_raw_fd(), null.as_raw_fd()];
        // The PID comes back through a pipe: the middle process knows it.
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        keep.push(wr.as_raw_fd());
        keep.sort_unstable();
        // SAFETY: the child and grandchild make system calls only, and
        // end in _exit.
        let middle = unsafe { libc::fork() };
        if middle < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if middle == 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsid();
                let keeper = libc::fork();
                if keeper != 0 {
                    if keeper > 0 {
                        let pid = keeper.to_ne_bytes();
                        libc::write(wr.as_raw_fd(), pid.as_ptr().cast(), pid.len());
                    }
                    libc::_exit(0);
                }
                // Our end first: the keeper must see it close when the dump
                // dies, whatever else fails here.
                libc::close(mine.as_raw_fd());
                for fd in 0..3 {
                    libc::dup2(null.as_raw_fd(), fd);
                }
                // As many descriptors as the dump may lock.
                let lim = libc::rlimit64 { rlim_cur: nofile, rlim_max: nofile };
                libc::setrlimit64(libc::RLIMIT_NOFILE, &lim);
                crate::holder::close_all_but(&keep, nofile);
                libc::close(wr.as_raw_fd());
                libc::close(null.as_raw_fd());
                guard(theirs.as_raw_fd());
            }
        }
        drop((wr, theirs));
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(middle), None);
        let mut pid = [0u8; 4];
        if nix::unistd::read(&rd, &mut pid).context("reading the keeper's PID")? != 4 {
            bail!("the TCP lock's keeper did not start");
        }
        Ok(Guard { ctl: Some(mine), pid: u32::from_ne_bytes(pid), held: 0 })
    }

    /// Gives the keeper a copy of locked socket `fd`, whose own
    /// `SO_REUSEADDR` is `reuseaddr`.
    pub fn hold(&mut self, fd: RawFd, reuseaddr: i32) -> Result<()> {
        if self.held == MAX {
            bail!("more than {MAX} TCP connections");
        }
        let ctl = self.ctl.as_ref().context("the keeper was let go")?;
        ask(ctl, ADD, reuseaddr, Some(fd))?;
        self.held += 1;
        Ok(())
    }

    /// Has the keeper unlock every connection and exit; returns once they
    /// are unlocked.
    pub fn release(mut self) -> Result<()> {
        let ctl = self.ctl.take().context("the keeper was let go")?;
        ask(&ctl, RELEASE, 0, None)
    }

    /// Has the keeper hold the connections, locked, for a restore from the
    /// directory `name` stands for; a keeper of an earlier dump there is
    /// told to quit first.
    pub fn keep(mut self, name: &str) -> Result<()> {
        let listener = crate::holder::listen(name, "the TCP lock's keeper", quit)?;
        let ctl = self.ctl.take().context("the keeper was let go")?;
        ask(&ctl, KEEP, 0, Some(listener.as_raw_fd()))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            let _ = ask(&ctl, RELEASE, 0, None);
        }
    }
}

fn set_int(s: RawFd, level: i32, opt: i32, v: i32) {
    // SAFETY: the kernel reads one int.
    unsafe { libc::setsockopt(s, level, opt, (&v as *const i32).cast(), 4) };
}

/// The keeper, guarding: takes the sockets the dump locks until it is
/// told what becomes of them, then exits or serves.
///
/// # Safety
/// Only in the forked keeper; `ctl` is its own.
unsafe fn guard(ctl: RawFd) -> ! {
    let mut socks = [0 as RawFd; MAX];
    let mut reuse = [0i32; MAX];
    let mut n = 0;
    // SAFETY: system calls on the keeper's own fds and stack buffers.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"revenant-tcplck".as_ptr());
        // The dump's handlers and mask are not the keeper's: a plain kill
        // ends it.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        loop {
            let mut msg = [0u8; 5];
            let mut iov = libc::iovec { iov_base: msg.as_mut_ptr().cast(), iov_len: msg.len() };
            let mut space = [0u64; 8];
            let mut hdr: libc::msghdr = std::mem::zeroed();
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = space.as_mut_ptr().cast();
            hdr.msg_controllen = size_of_val(&space) as _;
            let got = libc::recvmsg(ctl, &mut hdr, libc::MSG_CMSG_CLOEXEC);
            if got < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            let mut fd = -1;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            if got == 5 && !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS {
                fd = libc::CMSG_DATA(c).cast::<RawFd>().read_unaligned();
            }
            let word = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
            let answer = |b: u8| {
                libc::send(ctl, (&b as *const u8).cast(), 1, libc::MSG_NOSIGNAL);
            };
            match msg[0] {
                ADD if got == 5 && fd >= 0 && n < MAX => {
                    socks[n] = fd;
                    reuse[n] = word;
                    n += 1;
                    answer(ADD.to_ascii_lowercase());
                }
                KEEP if got == 5 && fd >= 0 => {
                    // The program is gone: in repair mode a socket closes
                    // without a word to its peer, should nobody take it.
                    for &s in &socks[..n] {
                        set_int(s, libc::IPPROTO_TCP, libc::TCP_REPAIR, 1);
                    }
                    answer(KEEP.to_ascii_lowercase());
                    libc::close(ctl);
                    serve(fd, &socks[..n]);
                }
                _ => {
                    // Released, or the dump is gone: the program runs on.
                    // Out of repair mode too, in case the dump died reading one.
                    for (&s, &r) in socks[..n].iter().zip(&reuse[..n]) {
                        let _ = super::tcp::unlock_raw(s, r);
                    }
                    if got == 5 && msg[0] == RELEASE {
                        answer(RELEASE.to_ascii_lowercase());
                    }
                    libc::_exit(0);
                }
            }
        }
    }
}

/// The keeper, serving: `socks` on `listener` until a restore has taken
/// them or it is told to quit, then exits.
///
/// # Safety
/// Only in the forked keeper: the fds are its own.
unsafe fn serve(listener: RawFd, socks: &[RawFd]) -> ! {
    // SAFETY: system calls on the keeper's own fds and stack buffers.
    unsafe {
        loop {
            let c = libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
            if c < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            let ok = crate::holder::peer_is_ours(c);
            match if ok { crate::holder::recv_byte(c) } else { None } {
                Some(QUIT) => libc::_exit(0),
                Some(TAKE) if send_all(c, socks) && crate::holder::recv_byte(c) == Some(DONE) => libc::_exit(0),
                _ => {}
            }
            libc::close(c);
        }
    }
}

/// Sends `socks` in batches, each message saying how many there are in
/// all. System calls only (it runs in the keeper).
fn send_all(c: RawFd, socks: &[RawFd]) -> bool {
    let total = (socks.len() as u32).to_ne_bytes();
    let empty: [RawFd; 0] = [];
    let mut chunks = socks.chunks(BATCH);
    let mut next = if socks.is_empty() { Some(&empty[..]) } else { chunks.next() };
    while let Some(fds) = next {
        let mut tries = 0;
        while super::unixsk::send_one(c, &total, None, fds) != 4 {
            // SAFETY: reading our errno.
            if unsafe { *libc::__errno_location() } != libc::EAGAIN || tries == 500 {
                return false;
            }
            tries += 1;
            // SAFETY: a plain system call.
            unsafe { libc::usleep(10_000) };
        }
        next = chunks.next();
    }
    true
}

/// The connections a keeper gave back, and the line to tell it they are
/// in use.
#[derive(Debug)]
pub struct Kept {
    conn: OwnedFd,
    pub socks: Vec<OwnedFd>,
}

impl Kept {
    /// The programs run: the keeper may go.
    pub fn done(self) -> Result<()> {
        send_byte(&self.conn, DONE)
    }
}

/// Takes the connections kept for the dump named `name`; `None` if no
/// keeper answers there.
pub fn take(name: &str) -> Result<Option<Kept>> {
    let Some(conn) = connect(name)? else { return Ok(None) };
    crate::holder::check_peer(&conn, name, "a keeper")?;
    send_byte(&conn, TAKE)?;
    let mut socks = vec![];
    loop {
        let mut word = [0u8; 4];
        let (n, fds, truncated) = crate::holder::recv_rights(&conn, &mut word);
        if n != 4 {
            bail!("the TCP lock's keeper at @{name} went away while handing over its connections");
        }
        socks.extend(fds);
        if truncated {
            bail!("the connections the TCP lock's keeper at @{name} sent do not fit under RLIMIT_NOFILE");
        }
        if socks.len() >= u32::from_ne_bytes(word) as usize {
            break;
        }
    }
    Ok(Some(Kept { conn, socks }))
}

/// Tells the keeper at `name`, if any, to quit, dropping its connections;
/// returns whether one answered.
pub fn quit(name: &str) -> Result<bool> {
    let Some(conn) = connect(name)? else { return Ok(false) };
    // A keeper busy with a restore answers later, or not: not waited for.
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    super::sockopt::set(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    let cred: libc::ucred = super::sockopt::get(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED)?;
    let gone = crate::procfs::pidfd(cred.pid).ok();
    send_byte(&conn, QUIT)?;
    let _ = crate::holder::recv_byte(conn.as_raw_fd());
    // Its control socket may close before the connections do: they are
    // free for a restore only once the keeper has exited.
    if let Some(fd) = gone {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd of ours.
        unsafe { libc::poll(&mut p, 1, 2000) };
    }
    Ok(true)
}
