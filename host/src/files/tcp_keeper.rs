//! The process that holds a killed program's TCP connections, locked
//! (`tcp.rs`), until a restore takes them back.
//!
//! A dump that kills its tree hands the keeper its copies of the locked
//! sockets and an abstract unix socket named after the image directory
//! (its device and inode), bound before the dump returns so that a
//! restore right after it finds the keeper. Over that socket
//! (`SOCK_SEQPACKET`, peers of our own uid or root only) a restore asks
//! for `T` (take): the keeper sends every socket, then waits; `D` (done)
//! from the restore, once its programs run, ends the keeper, and a
//! restore that fails and goes away leaves it serving the next. `Q`
//! (quit) ends it at once: its sockets close still in repair mode, which
//! sends nothing, and the connections are lost to both ends.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::libc;

const TAKE: u8 = b'T';
const DONE: u8 = b'D';
const QUIT: u8 = b'Q';
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

fn address(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all zeroes is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name: a NUL, then the bytes, no terminator.
    for (d, s) in a.sun_path[1..].iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len().min(a.sun_path.len() - 1);
    (a, len as libc::socklen_t)
}

fn seqpacket() -> Result<OwnedFd> {
    // SAFETY: a new socket, owned at once.
    let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

fn connect(name: &str) -> Result<Option<OwnedFd>> {
    let s = seqpacket()?;
    let (a, len) = address(name);
    // SAFETY: the kernel reads `len` bytes of the address.
    if unsafe { libc::connect(s.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ENOENT) => Ok(None),
            _ => Err(e).with_context(|| format!("connecting to @{name}")),
        };
    }
    Ok(Some(s))
}

fn send_byte(s: &OwnedFd, b: u8) -> Result<()> {
    // SAFETY: the kernel reads one byte.
    if unsafe { libc::send(s.as_raw_fd(), (&b as *const u8).cast(), 1, libc::MSG_NOSIGNAL) } != 1 {
        return Err(std::io::Error::last_os_error()).context("writing to the TCP lock's keeper");
    }
    Ok(())
}

fn recv_byte(s: RawFd) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: the kernel writes at most one byte.
    let n = unsafe { libc::recv(s, (&mut b as *mut u8).cast(), 1, 0) };
    (n == 1).then_some(b)
}

/// Starts a keeper for `socks` (locked, still in repair mode) at `name`;
/// a keeper of an earlier dump into the same directory is told to quit
/// first. Returns its PID.
///
/// The keeper is forked, not executed (the dump may run inside another
/// program, such as a test harness), twice so that init is its parent.
/// Between fork and its exit it makes only system calls, on what was
/// allocated before the fork: whatever lock another thread of ours held
/// stays held in the child.
pub fn spawn(name: &str, socks: Vec<OwnedFd>) -> Result<u32> {
    let listener = seqpacket()?;
    let (a, len) = address(name);
    let mut tries = 0;
    loop {
        // SAFETY: the kernel reads `len` bytes of the address.
        if unsafe { libc::bind(listener.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EADDRINUSE) || tries == 50 {
            return Err(e).with_context(|| format!("binding @{name}"));
        }
        if tries == 0 {
            quit(name)?;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a plain call on our socket.
    if unsafe { libc::listen(listener.as_raw_fd(), 16) } < 0 {
        return Err(std::io::Error::last_os_error()).context("listen");
    }
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context("/dev/null")?;
    let mut keep: Vec<RawFd> = std::iter::once(&listener).chain(&socks).map(|f| f.as_raw_fd()).collect();
    keep.push(null.as_raw_fd());
    keep.sort_unstable();
    let raw: Vec<RawFd> = socks.iter().map(|f| f.as_raw_fd()).collect();
    // The PID comes back through a pipe: the middle process knows it.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    keep.push(wr.as_raw_fd());
    keep.sort_unstable();
    // SAFETY: see above; the child and grandchild only make system calls
    // and end in _exit.
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
                let pid = keeper.to_ne_bytes();
                libc::write(wr.as_raw_fd(), pid.as_ptr().cast(), pid.len());
                libc::_exit(0);
            }
            for fd in 0..3 {
                libc::dup2(null.as_raw_fd(), fd);
            }
            close_all_but(&keep);
            libc::close(wr.as_raw_fd());
            libc::close(null.as_raw_fd());
            serve(listener.as_raw_fd(), &raw);
        }
    }
    drop(wr);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(middle), None);
    let mut pid = [0u8; 4];
    nix::unistd::read(&rd, &mut pid).context("reading the keeper's PID")?;
    Ok(u32::from_ne_bytes(pid))
}

/// Closes every fd from 3 up but those of `keep` (sorted).
///
/// # Safety
/// Only in a forked child: nothing else may be using the fds it closes.
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut from = 3u32;
    for &fd in keep.iter().filter(|&&fd| fd >= 3) {
        if (fd as u32) > from {
            // SAFETY: the caller's promise.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd as u32 - 1, 0) };
        }
        from = fd as u32 + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// The keeper: serves `socks` on `listener` until a restore has taken
/// them or it is told to quit, then exits. System calls only.
///
/// # Safety
/// Only in the forked keeper: the fds are its own.
unsafe fn serve(listener: RawFd, socks: &[RawFd]) -> ! {
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
        let me = libc::geteuid();
        loop {
            let c = libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
            if c < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            let mut cred: libc::ucred = std::mem::zeroed();
            let mut len = size_of::<libc::ucred>() as libc::socklen_t;
            let ok = libc::getsockopt(
                c,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            ) == 0
                && (cred.uid == 0 || cred.uid == me);
            match if ok { recv_byte(c) } else { None } {
                Some(QUIT) => libc::_exit(0),
                Some(TAKE) if send_all(c, socks) && recv_byte(c) == Some(DONE) => libc::_exit(0),
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
    let cred: libc::ucred = super::sockopt::get(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED)?;
    // SAFETY: geteuid cannot fail.
    if cred.uid != 0 && cred.uid != unsafe { libc::geteuid() } {
        bail!("@{name} is held by process {} of uid {}, not by a keeper of ours", cred.pid, cred.uid);
    }
    send_byte(&conn, TAKE)?;
    let mut socks = vec![];
    loop {
        let mut word = [0u8; 4];
        let mut iov = libc::iovec { iov_base: word.as_mut_ptr().cast(), iov_len: word.len() };
        let mut ctl = [0u64; 256];
        // SAFETY: an msghdr over our buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&ctl) as _;
        // SAFETY: the kernel writes into the buffers `msg` describes.
        let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n != 4 {
            bail!("the TCP lock's keeper at @{name} went away while handing over its connections");
        }
        // SAFETY: just filled by recvmsg.
        socks.extend(unsafe { super::unixsk::rights(&msg) });
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
    send_byte(&conn, QUIT)?;
    // It closes its end as it exits.
    let _ = recv_byte(conn.as_raw_fd());
    Ok(true)
}
