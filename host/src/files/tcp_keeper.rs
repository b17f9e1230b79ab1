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
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::libc;

const TAKE: u8 = b'T';
const DONE: u8 = b'D';
const QUIT: u8 = b'Q';
/// Sockets per message: under the kernel's limit of 253 per
/// `SCM_RIGHTS` message.
const BATCH: usize = 200;
/// Where the keeper finds its listening socket, then the connections.
const FIRST_FD: RawFd = 3;

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
        if tries == 0
            && let Some(old) = connect(name)?
        {
            send_byte(&old, QUIT)?;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a plain call on our socket.
    if unsafe { libc::listen(listener.as_raw_fd(), 16) } < 0 {
        return Err(std::io::Error::last_os_error()).context("listen");
    }
    let fds: Vec<RawFd> = std::iter::once(&listener).chain(&socks).map(|f| f.as_raw_fd()).collect();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("revenant")
        .arg("tcp-keeper")
        .arg(socks.len().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: each fd
    // is first moved above every target number (close-on-exec), then put
    // in place without the flag.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let above = FIRST_FD + fds.len() as RawFd;
            let mut moved = [0 as RawFd; 1 + BATCH * 64];
            if fds.len() > moved.len() {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            for (i, &fd) in fds.iter().enumerate() {
                moved[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in moved[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, FIRST_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting the process that keeps the connections")?;
    Ok(child.id())
}

/// The keeper itself (`revenant tcp-keeper N`): serves its `n`
/// sockets until a restore has taken them or it is told to quit.
pub fn serve(n: usize) -> Result<()> {
    // SAFETY: fds the dump placed for us; ours from now on.
    let listener = unsafe { OwnedFd::from_raw_fd(FIRST_FD) };
    let socks: Vec<OwnedFd> =
        // SAFETY: as above.
        (0..n).map(|i| unsafe { OwnedFd::from_raw_fd(FIRST_FD + 1 + i as RawFd) }).collect();
    let _ = nix::sys::prctl::set_name(c"revenant-tcplck");
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        // SAFETY: a plain call; the new fd is owned at once.
        let c = unsafe { libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if c < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(std::io::Error::last_os_error()).context("accept");
        }
        // SAFETY: just accepted.
        let c = unsafe { OwnedFd::from_raw_fd(c) };
        let Ok(cred) = super::sockopt::get::<libc::ucred>(c.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED) else {
            continue;
        };
        if cred.uid != 0 && cred.uid != me {
            continue;
        }
        match recv_byte(c.as_raw_fd()) {
            Some(QUIT) => return Ok(()),
            Some(TAKE) => {
                if send_all(&c, &socks).is_ok() && recv_byte(c.as_raw_fd()) == Some(DONE) {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

/// Sends `socks` in batches, each message saying how many there are in
/// all.
fn send_all(c: &OwnedFd, socks: &[OwnedFd]) -> Result<()> {
    let total = (socks.len() as u32).to_ne_bytes();
    let chunks: Vec<&[OwnedFd]> = if socks.is_empty() { vec![&[]] } else { socks.chunks(BATCH).collect() };
    for chunk in chunks {
        let fds: Vec<RawFd> = chunk.iter().map(|f| f.as_raw_fd()).collect();
        let mut tries = 0;
        while super::unixsk::send_one(c.as_raw_fd(), &total, None, &fds) != 4 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EAGAIN) || tries == 500 {
                return Err(e).context("sending the connections");
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
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
