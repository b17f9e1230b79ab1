//! Unix socket pairs whose two ends are both in the tree (`socketpair`, as
//! event loops use to wake themselves, and parents and children to talk):
//! what a dump reads of each end (type, its peer, shutdown state, options,
//! the messages waiting in its receive queue), the `files.img` entries and
//! `sk-queues.img` CRIU writes for them, and how the restore makes the pair
//! again. Bound, listening and connected-by-name sockets, and a peer
//! outside the tree, are refused by name.
//!
//! The kernel says which socket is whose peer only through `sock_diag`
//! netlink (`UNIX_DIAG_PEER`); the queued messages are read with
//! `MSG_PEEK` through a copy of the descriptor (`pidfd_getfd`), walking
//! the queue with `SO_PEEK_OFF`, which is put back after.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FdinfoEntry, FileEntry, FownEntry, SkOptsEntry, SkPacketEntry, UnixSkEntry};
use revenant_images::{ImageSet, Kind, Writer};

/// What `sock_diag` says of one unix socket.
#[derive(Debug, Clone, Default)]
pub struct Diag {
    pub ty: u8,
    pub state: u8,
    pub peer: u32,
    pub name: Vec<u8>,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2).
    pub shutdown: u8,
}

// linux/sock_diag.h, linux/unix_diag.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
const TCP_ESTABLISHED: u8 = 1;

/// Every unix socket of our network namespace (the tree's), by inode.
pub fn diag() -> Result<HashMap<u32, Diag>> {
    // SAFETY: a new socket, owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a sock_diag netlink socket");
    }
    // SAFETY: just made and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16 bytes) then unix_diag_req (24 bytes).
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[28..32].copy_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER).to_ne_bytes());
    // SAFETY: sends our buffer to the kernel.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("asking sock_diag for unix sockets");
    }
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: the kernel writes into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("reading sock_diag's answer");
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= 16 {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes(msgs[4..6].try_into().expect("2 bytes"));
            if len < 16 || len > msgs.len() {
                bail!("sock_diag: a message of {len} bytes in {} left", msgs.len());
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => bail!("sock_diag refused the request"),
                _ => {
                    if let Some((ino, d)) = parse_msg(&msgs[16..len]) {
                        out.insert(ino, d);
                    }
                }
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// One `unix_diag_msg` and its attributes.
fn parse_msg(m: &[u8]) -> Option<(u32, Diag)> {
    if m.len() < 16 {
        return None;
    }
    let mut d = Diag { ty: m[1], state: m[2], ..Default::default() };
    let ino = u32::from_ne_bytes(m[4..8].try_into().ok()?);
    let mut attrs = &m[16..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes(attrs[0..2].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(attrs[2..4].try_into().ok()?);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match ty {
            UNIX_DIAG_NAME => d.name = data.to_vec(),
            UNIX_DIAG_PEER if data.len() >= 4 => d.peer = u32::from_ne_bytes(data[..4].try_into().ok()?),
            UNIX_DIAG_SHUTDOWN if !data.is_empty() => d.shutdown = data[0],
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some((ino, d))
}

/// One end of a pair, as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSock {
    pub ino: u32,
    pub peer: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub ty: u32,
    /// File status flags (`O_NONBLOCK`, ...).
    pub flags: u32,
    pub shutdown: u32,
    pub opts: Opts,
    /// The messages waiting in its receive queue (a stream's bytes in
    /// pieces), oldest first.
    pub queue: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opts {
    /// As `getsockopt` gives them (the kernel doubles what is set).
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub snd_timeout: (u64, u64),
    pub rcv_timeout: (u64, u64),
    pub passcred: bool,
}

/// Reads unix socket `fd` (inode `ino`) of `pid`.
pub fn dump(pid: i32, fd: i32, ino: u32, flags: u32, diag: &HashMap<u32, Diag>) -> Result<UnixSock> {
    let what = format!("process {pid}: fd {fd} (socket:[{ino}])");
    let Some(d) = diag.get(&ino) else {
        bail!("{what} is a socket other than a unix one, which dump does not support yet");
    };
    if !d.name.is_empty() {
        bail!("{what} is a unix socket bound to a name, which dump does not support yet");
    }
    if d.state != TCP_ESTABLISHED || d.peer == 0 {
        bail!("{what} is a unix socket that is not one of a connected pair, which dump does not support yet");
    }
    match diag.get(&d.peer) {
        Some(p) if p.peer == ino && p.name.is_empty() => {}
        _ => bail!("{what} is a unix socket connected to a named or listening socket, which dump does not support yet"),
    }
    let ty = u32::from(d.ty);
    if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&(ty as i32)) {
        bail!("{what}: unix socket type {ty} is not supported");
    }
    let sock = crate::procfs::borrow_fd(pid, fd).with_context(|| format!("{what}: taking a copy to read it"))?;
    let s = sock.as_raw_fd();
    let opts = Opts {
        sndbuf: getopt::<i32>(s, libc::SO_SNDBUF)? as u32,
        rcvbuf: getopt::<i32>(s, libc::SO_RCVBUF)? as u32,
        snd_timeout: timeval(getopt(s, libc::SO_SNDTIMEO)?),
        rcv_timeout: timeval(getopt(s, libc::SO_RCVTIMEO)?),
        passcred: getopt::<i32>(s, libc::SO_PASSCRED)? != 0,
    };
    let queue = peek_queue(s, opts.rcvbuf as usize).with_context(|| format!("{what}: reading its queue"))?;
    Ok(UnixSock { ino, peer: d.peer, ty, flags, shutdown: u32::from(d.shutdown & 3), opts, queue })
}

fn timeval(t: libc::timeval) -> (u64, u64) {
    (t.tv_sec as u64, t.tv_usec as u64)
}

fn getopt<T: Copy + Default>(s: i32, opt: i32) -> Result<T> {
    let mut v = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    if unsafe { libc::getsockopt(s, libc::SOL_SOCKET, opt, (&mut v as *mut T).cast(), &mut len) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("getsockopt {opt}"));
    }
    Ok(v)
}

fn setopt<T>(s: i32, opt: i32, v: &T) -> std::io::Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes of `v`.
    let r = unsafe { libc::setsockopt(s, libc::SOL_SOCKET, opt, (v as *const T).cast(), size_of::<T>() as _) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Every message in the receive queue, left there: peeked one after the
/// other from a peek offset of 0, which is put back as it was.
fn peek_queue(s: i32, rcvbuf: usize) -> Result<Vec<Vec<u8>>> {
    let old: i32 = getopt(s, libc::SO_PEEK_OFF)?;
    setopt(s, libc::SO_PEEK_OFF, &0i32).context("SO_PEEK_OFF")?;
    let res = peek_all(s, rcvbuf.max(1 << 16));
    setopt(s, libc::SO_PEEK_OFF, &old).context("putting SO_PEEK_OFF back")?;
    res
}

fn peek_all(s: i32, size: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = vec![];
    let mut buf = vec![0u8; size];
    let mut ctl = [0u64; 64];
    loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: an msghdr over our buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&ctl) as _;
        // SAFETY: the kernel writes into the buffers `msg` describes.
        let n = unsafe { libc::recvmsg(s, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(out);
            }
            return Err(e).context("peeking at the queue");
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            bail!("a queued message is larger than the socket's receive buffer, or carries too much");
        }
        // SAFETY: walking the control messages the kernel wrote.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    // The peek put copies of the descriptors in flight here.
                    let data = libc::CMSG_DATA(c).cast::<i32>();
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    for i in 0..count {
                        libc::close(*data.add(i));
                    }
                    bail!("a queued message carries file descriptors (SCM_RIGHTS), which dump does not support yet");
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if n == 0 {
            // The end of a stream shut down (an empty datagram, too, which
            // is not kept).
            return Ok(out);
        }
        out.push(buf[..n as usize].to_vec());
    }
}

impl UnixSock {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        let o = &self.opts;
        let opts = SkOptsEntry {
            so_sndbuf: o.sndbuf,
            so_rcvbuf: o.rcvbuf,
            so_snd_tmo_sec: o.snd_timeout.0,
            so_snd_tmo_usec: o.snd_timeout.1,
            so_rcv_tmo_sec: o.rcv_timeout.0,
            so_rcv_tmo_usec: o.rcv_timeout.1,
            so_passcred: Some(o.passcred),
            ..Default::default()
        };
        FileEntry {
            r#type: FdType::Unixsk as i32,
            id,
            usk: Some(UnixSkEntry {
                id,
                ino: self.ino,
                r#type: self.ty,
                state: u32::from(TCP_ESTABLISHED),
                flags: self.flags,
                peer: self.peer,
                fown,
                opts,
                shutdown: (self.shutdown != 0).then_some(self.shutdown),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Its queue as `sk-queues.img` entries.
    pub fn packets(&self, id: u32) -> Vec<(SkPacketEntry, Vec<u8>)> {
        self.queue
            .iter()
            .map(|m| (SkPacketEntry { id_for: id, length: m.len() as u32, ..Default::default() }, m.clone()))
            .collect()
    }

    /// The end `e` (file `id`) of images, with the messages queued for it.
    pub fn from_entry(e: &UnixSkEntry, queues: &[(SkPacketEntry, Vec<u8>)], at: &str) -> Result<UnixSock> {
        if !e.name.is_empty() || e.state != u32::from(TCP_ESTABLISHED) || e.peer == 0 {
            bail!("{at}: a unix socket other than one end of a socket pair (bound, listening or unconnected)");
        }
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&(e.r#type as i32)) {
            bail!("{at}: unix socket type {}", e.r#type);
        }
        let o = &e.opts;
        Ok(UnixSock {
            ino: e.ino,
            peer: e.peer,
            ty: e.r#type,
            flags: e.flags,
            shutdown: e.shutdown.unwrap_or(0) & 3,
            opts: Opts {
                sndbuf: o.so_sndbuf,
                rcvbuf: o.so_rcvbuf,
                snd_timeout: (o.so_snd_tmo_sec, o.so_snd_tmo_usec),
                rcv_timeout: (o.so_rcv_tmo_sec, o.so_rcv_tmo_usec),
                passcred: o.so_passcred.unwrap_or(false),
            },
            queue: queues.iter().filter(|(p, _)| p.id_for == e.id).map(|(_, d)| d.clone()).collect(),
        })
    }
}

/// Makes the pair `(a, b)` at fds `at` (`a`'s) and `bt`: the socket pair,
/// each end's queue sent from the other end, options, then shutdowns and
/// status flags. The new sockets pass by numbers from `spare` up, above
/// both (the kernel may hand out `at` or `bt` themselves). Runs in the new
/// root task: system calls only, no allocation.
///
/// # Safety
/// Replaces whatever the task has at `at` and `bt` and from `spare` up.
pub unsafe fn make_pair(a: &UnixSock, b: &UnixSock, at: i32, bt: i32, spare: i32) -> Result<(), &'static str> {
    let mut sv = [0i32; 2];
    // SAFETY: plain system calls on the task's own descriptors and our data.
    unsafe {
        if libc::socketpair(libc::AF_UNIX, a.ty as i32 | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) < 0 {
            return Err("creating a unix socket pair");
        }
        for fd in &mut sv {
            let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, spare);
            libc::close(*fd);
            if high < 0 {
                return Err("moving a unix socket out of the way");
            }
            *fd = high;
        }
        for (fd, to) in [(sv[0], at), (sv[1], bt)] {
            if libc::dup3(fd, to, libc::O_CLOEXEC) < 0 {
                return Err("placing a unix socket");
            }
            libc::close(fd);
        }
        for (me, peer, fd, peer_fd) in [(a, b, at, bt), (b, a, bt, at)] {
            // Room for the queue on the sending side, whatever its final
            // buffer size: the messages were accepted under it once.
            let room: usize = me.queue.iter().map(|m| m.len() * 2 + 1024).sum::<usize>();
            let big = (room.max(peer.opts.sndbuf as usize) as i32).max(1 << 16);
            let _ = setopt(peer_fd, libc::SO_SNDBUFFORCE, &big);
            let _ = setopt(fd, libc::SO_RCVBUFFORCE, &big);
            for m in &me.queue {
                if libc::send(peer_fd, m.as_ptr().cast(), m.len(), libc::MSG_DONTWAIT) != m.len() as isize {
                    return Err("queueing a message in a unix socket again");
                }
            }
        }
        for (s, fd) in [(a, at), (b, bt)] {
            let tv = |(sec, usec): (u64, u64)| libc::timeval { tv_sec: sec as _, tv_usec: usec as _ };
            let half = |v: u32| (v / 2) as i32;
            if setopt(fd, libc::SO_SNDBUFFORCE, &half(s.opts.sndbuf)).is_err()
                || setopt(fd, libc::SO_RCVBUFFORCE, &half(s.opts.rcvbuf)).is_err()
                || setopt(fd, libc::SO_SNDTIMEO, &tv(s.opts.snd_timeout)).is_err()
                || setopt(fd, libc::SO_RCVTIMEO, &tv(s.opts.rcv_timeout)).is_err()
                || setopt(fd, libc::SO_PASSCRED, &(s.opts.passcred as i32)).is_err()
            {
                return Err("setting a unix socket's options");
            }
        }
        for (s, fd) in [(a, at), (b, bt)] {
            // The kernel's RCV_SHUTDOWN is 1, SEND_SHUTDOWN 2; shutting one
            // end also marks its peer, as it did.
            let how = match s.shutdown {
                1 => Some(libc::SHUT_RD),
                2 => Some(libc::SHUT_WR),
                3 => Some(libc::SHUT_RDWR),
                _ => None,
            };
            if let Some(how) = how
                && libc::shutdown(fd, how) < 0
            {
                return Err("shutting a unix socket down");
            }
            if libc::fcntl(fd, libc::F_SETFL, (s.flags & libc::O_NONBLOCK as u32) as i32) < 0 {
                return Err("setting a unix socket's flags");
            }
        }
    }
    Ok(())
}

/// An fd on one end (`files.img` id `id`) of a unix socket pair.
#[derive(Debug, Clone)]
pub struct SocketFd {
    pub fd: i32,
    pub id: u32,
    pub cloexec: bool,
    /// Both ends, the one with the lower id first.
    pub pair: [(u32, UnixSock); 2],
}

/// Fd `f` on unix socket `u`, one end of a pair whose other end some fd of
/// the tree holds.
pub fn plan_fd(set: &ImageSet, f: &FdinfoEntry, u: &UnixSkEntry, cloexec: bool, at: &str) -> Result<SocketFd> {
    let end = UnixSock::from_entry(u, &set.sk_queues, at)?;
    let peer_entry = set
        .files
        .iter()
        .filter_map(|e| e.usk.as_ref())
        .find(|p| p.ino == u.peer && p.peer == u.ino)
        .with_context(|| format!("{at}: its peer (socket inode {}) is not in files.img", u.peer))?;
    if !set.processes.iter().flat_map(|p| &p.fds).any(|g| g.id == peer_entry.id) {
        bail!("{at}: its peer (socket inode {}) is outside the tree: not restored yet", u.peer);
    }
    let peer = UnixSock::from_entry(peer_entry, &set.sk_queues, at)?;
    if peer.ty != end.ty {
        bail!("{at}: a socket pair of two types ({} and {})", end.ty, peer.ty);
    }
    let mut pair = [(u.id, end), (peer_entry.id, peer)];
    pair.sort_by_key(|(id, _)| *id);
    Ok(SocketFd { fd: f.fd as i32, id: f.id, cloexec, pair })
}

/// `sk-queues.img`: the messages queued on every socket of `socks`, each
/// entry followed by its bytes (none written when nothing is queued).
pub fn queues_image<'a>(socks: impl Iterator<Item = (u32, &'a UnixSock)>) -> Option<Writer> {
    let queued: Vec<_> = socks.flat_map(|(id, u)| u.packets(id)).collect();
    if queued.is_empty() {
        return None;
    }
    let mut q = Writer::new(Kind::SkQueues);
    for (e, data) in &queued {
        q.push(e).raw(data);
    }
    Some(q)
}
