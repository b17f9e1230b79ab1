//! Unix sockets of the tree: pairs (`socketpair`, as event loops use to
//! wake themselves, and parents and children to talk), sockets bound to a
//! path (with the socket file's mode and owner) or an abstract name,
//! listening ones with their backlog, the connections accepted from them
//! or still waiting on them, and datagram sockets connected to a named
//! one. What a dump reads of each (type, name, state, peer, shutdown
//! state, options, the messages waiting in its receive queue), the
//! `files.img` entries and `sk-queues.img` CRIU writes for them, and how
//! the restore makes them again ([`make`]): in the host, before any
//! process exists, handed to the tree's root like the other descriptions
//! the host makes, and placed at the tree's slots. Refused by name: other
//! socket families, a peer outside the tree, a waiting connection from
//! outside, a socket file moved elsewhere. One whose file was unlinked
//! (or replaced) is bound where its name says and unlinked again at once,
//! whatever is there now parked beside it meanwhile; connections reach
//! it through a descriptor of its file (`/proc/self/fd/N`), as CRIU does.
//!
//! The kernel says which socket is whose peer only through `sock_diag`
//! netlink (`UNIX_DIAG_PEER`); the queued messages are read with
//! `MSG_PEEK` through a copy of the descriptor (`pidfd_getfd`), walking
//! the queue with `SO_PEEK_OFF`, which is put back after.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{
    FdType, FileEntry, FilePermsEntry, FownEntry, ScmEntry, SkOptsEntry, SkPacketEntry, UnixSkEntry,
};
use revenant_images::{ImageSet, Kind, Writer};

use super::sockopt::{self, SO_BUF_LOCK};

/// What `sock_diag` says of one unix socket.
#[derive(Debug, Clone, Default)]
pub struct Diag {
    pub ty: u8,
    pub state: u8,
    pub peer: u32,
    pub name: Vec<u8>,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2).
    pub shutdown: u8,
    /// The socket file a path-bound socket was bound to: (inode, device).
    pub vfs: Option<(u32, u32)>,
    /// A listener's connections not accepted yet, by the inode of the
    /// socket each would be accepted as (0: its client is gone).
    pub icons: Vec<u32>,
    /// A listener's pending connections and backlog, or another socket's
    /// bytes queued to read and written not yet read.
    pub rqlen: (u32, u32),
}

// linux/sock_diag.h, linux/unix_diag.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_VFS: u32 = 2;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
// The socket states sock_diag and CRIU's images use (the TCP names).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
/// `SCM_RIGHTS`, as CRIU's images name the control message.
const SCM_RIGHTS: u32 = 1;
/// CRIU's `uflags` bit for a socket outside the tree.
const USK_EXTERN: u32 = 1;

/// Every unix socket of our network namespace (the tree's), by inode.
pub fn diag() -> Result<HashMap<u32, Diag>> {
    // unix_diag_req: family, protocol, pad, states, inode, show, cookie.
    let mut req = [0u8; 24];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    req[12..16].copy_from_slice(&show.to_ne_bytes());
    let mut out = HashMap::new();
    sock_diag(&req, |m| {
        if let Some((ino, d)) = parse_msg(m) {
            out.insert(ino, d);
        }
    })
    .context("asking sock_diag for unix sockets")?;
    Ok(out)
}

/// One `SOCK_DIAG_BY_FAMILY` dump request (`req`, after its netlink
/// header) to the kernel; each answer's payload goes to `each`.
pub fn sock_diag(req: &[u8], mut each: impl FnMut(&[u8])) -> Result<()> {
    // SAFETY: a new socket, owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a sock_diag netlink socket");
    }
    // SAFETY: just made and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut msg = vec![0u8; 16];
    msg[0..4].copy_from_slice(&(16 + req.len() as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(req);
    // SAFETY: sends our buffer to the kernel.
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("sending the request");
    }
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
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let err = msgs.get(16..20).map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                    let e = nix::errno::Errno::from_raw(-err);
                    if e == nix::errno::Errno::ENOENT {
                        bail!(
                            "the kernel cannot list these sockets (sock_diag: {e}): its module for the family is \
                             not loaded (modprobe unix_diag, inet_diag, tcp_diag or udp_diag)"
                        );
                    }
                    bail!("sock_diag refused the request: {e}");
                }
                _ => each(&msgs[16..len]),
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
        let word = |k: usize| data.get(k * 4..k * 4 + 4).map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        match ty {
            UNIX_DIAG_NAME => d.name = data.to_vec(),
            UNIX_DIAG_VFS => d.vfs = word(0).zip(word(1)),
            UNIX_DIAG_PEER => d.peer = word(0)?,
            UNIX_DIAG_ICONS => d.icons = (0..data.len() / 4).filter_map(word).collect(),
            UNIX_DIAG_RQLEN => d.rqlen = word(0).zip(word(1))?,
            UNIX_DIAG_SHUTDOWN if !data.is_empty() => d.shutdown = data[0],
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some((ino, d))
}

/// A unix socket, as dumped.
#[derive(Debug, Clone, PartialEq)]
pub struct UnixSock {
    pub ino: u32,
    /// What it is connected to: its pair's other end, the socket it sent
    /// to (datagrams), or, for a connection not accepted yet, the
    /// listening socket it waits on; 0 for none.
    pub peer: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub ty: u32,
    /// `TCP_ESTABLISHED` (connected), `TCP_CLOSE` (not) or `TCP_LISTEN`.
    pub state: u32,
    /// The address it is bound to (a path, or an abstract name starting
    /// with a NUL), empty if none. An accepted socket has its listener's.
    pub name: Vec<u8>,
    /// A listener's backlog.
    pub backlog: u32,
    /// The mode, owner and group of the socket file of a path.
    pub perms: Option<(u32, u32, u32)>,
    /// Its socket file was unlinked since (bound again, then unlinked).
    pub deleted: bool,
    /// The directory a relative path is relative to (the process's cwd
    /// when dumped, CRIU's `name_dir`).
    pub dir: Option<String>,
    /// A socket outside the tree a socket of it is connected to, known by
    /// its address (`--ext-unix-sk`): connected to again, never made.
    pub external: bool,
    /// File status flags (`O_NONBLOCK`, ...).
    pub flags: u32,
    pub shutdown: u32,
    pub opts: Opts,
    /// The messages waiting in its receive queue (a stream's bytes in
    /// pieces), oldest first.
    pub queue: Vec<Vec<u8>>,
    /// For each queued message, the `files.img` ids of the files it
    /// carries in flight (`SCM_RIGHTS`), empty for none.
    pub scm: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Opts {
    /// As `getsockopt` gives them (the kernel doubles what is set).
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub snd_timeout: (u64, u64),
    pub rcv_timeout: (u64, u64),
    pub passcred: bool,
    pub passsec: bool,
    /// `SO_BUF_LOCK`: which sizes were set by hand.
    pub buf_lock: u32,
    /// Its socket filter, in CRIU's form (`sockopt::filter`).
    pub filter: Vec<u64>,
    /// Options set that CRIU's entry has no field for (`sockopt::extra`).
    pub extra: Vec<revenant_images::messages::SockOptEntry>,
}

/// Reads unix socket `fd` (inode `ino`) of `pid`. Whether its peer is in
/// the tree is known only once every fd is seen (`Files::unix_peers`).
/// The descriptors in flight in its queued messages come back beside it,
/// one list per message, for the caller to describe.
pub fn dump(
    pid: i32,
    fd: i32,
    ino: u32,
    flags: u32,
    diag: &HashMap<u32, Diag>,
) -> Result<(UnixSock, Vec<Vec<OwnedFd>>)> {
    let what = format!("process {pid}: fd {fd} (socket:[{ino}])");
    let Some(d) = diag.get(&ino) else {
        bail!("{what} is a socket other than a unix one, which dump does not support yet");
    };
    let ty = u32::from(d.ty);
    if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&(ty as i32)) {
        bail!("{what}: unix socket type {ty} is not supported");
    }
    if ![TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN].contains(&d.state) {
        bail!("{what}: a unix socket in state {}, which dump does not support", d.state);
    }
    if d.state == TCP_LISTEN && d.icons.contains(&0) {
        bail!("{what}: a connection whose client is gone waits to be accepted on this listening socket");
    }
    let sock = crate::procfs::borrow_fd(pid, fd).with_context(|| format!("{what}: taking a copy to read it"))?;
    let s = sock.as_raw_fd();
    let (perms, deleted, dir) = path_perms(pid, s, d, &what)?;
    let opts = Opts {
        sndbuf: getopt::<i32>(s, libc::SO_SNDBUF)? as u32,
        rcvbuf: getopt::<i32>(s, libc::SO_RCVBUF)? as u32,
        snd_timeout: timeval(getopt(s, libc::SO_SNDTIMEO)?),
        rcv_timeout: timeval(getopt(s, libc::SO_RCVTIMEO)?),
        passcred: getopt::<i32>(s, libc::SO_PASSCRED)? != 0,
        passsec: getopt::<i32>(s, libc::SO_PASSSEC)? != 0,
        buf_lock: getopt::<i32>(s, SO_BUF_LOCK)? as u32,
        filter: sockopt::filter(s).with_context(|| format!("{what}: reading its socket filter"))?,
        extra: sockopt::extra(s, libc::AF_UNIX, ty as i32, 0)
            .with_context(|| format!("{what}: reading its options"))?,
    };
    // A listener queues connections, an unconnected stream socket nothing.
    let stream = ty != libc::SOCK_DGRAM as u32;
    let (queue, inflight): (Vec<Vec<u8>>, Vec<Vec<OwnedFd>>) = if d.state == TCP_LISTEN
        || (stream && d.state == TCP_CLOSE)
    {
        (vec![], vec![])
    } else {
        peek_queue(s, opts.rcvbuf as usize).with_context(|| format!("{what}: reading its queue"))?.into_iter().unzip()
    };
    // Each message carries what the socket asked for as it came: its
    // sender's credentials or label, its arrival time. Sent again by the
    // restore, it would carry the restore's.
    if !queue.is_empty() {
        let per_message = [
            (opts.passcred, "SO_PASSCRED"),
            (opts.passsec, "SO_PASSSEC"),
            (sockopt::has_extra(&opts.extra, libc::SO_PASSPIDFD), "SO_PASSPIDFD"),
            (sockopt::timestamps(&opts.extra), "SO_TIMESTAMP"),
        ];
        if let Some((_, name)) = per_message.iter().find(|(on, _)| *on) {
            bail!(
                "{what}: {} messages wait on a socket that gets each one's {} ({name}), which a restore cannot \
                 give them again",
                queue.len(),
                if *name == "SO_TIMESTAMP" { "arrival time" } else { "sender" }
            );
        }
    }
    let scm = vec![Vec::new(); queue.len()];
    let (state, name, backlog) =
        (u32::from(d.state), d.name.clone(), if d.state == TCP_LISTEN { d.rqlen.1 } else { 0 });
    let shutdown = u32::from(d.shutdown & 3);
    let external = false;
    let us = UnixSock {
        ino,
        peer: d.peer,
        ty,
        state,
        name,
        backlog,
        perms,
        deleted,
        dir,
        flags,
        shutdown,
        opts,
        queue,
        scm,
        external,
    };
    Ok((us, inflight))
}

/// The socket file of a socket bound to a path: its mode and owner, or
/// that it was unlinked; and, for a relative path, the directory it is
/// relative to.
type PathFacts = (Option<(u32, u32, u32)>, bool, Option<String>);

/// `SIOCUNIXFILE`: an `O_PATH` descriptor of the file a unix socket is
/// bound to (Linux 4.10+).
const SIOCUNIXFILE: libc::c_ulong = 0x89E0;

/// Where socket `sock` (our copy) was bound, as `d` names it, asked of the
/// kernel (`SIOCUNIXFILE`): its file, still there or unlinked (replaced
/// by another since, or by nothing), and the directory a relative name
/// was bound in. Without that ioctl: the file at the path, if it is the
/// socket's, else refused (unless nothing is there).
fn path_perms(pid: i32, sock: i32, d: &Diag, what: &str) -> Result<PathFacts> {
    if d.name.is_empty() || d.name[0] == 0 {
        return Ok((None, false, None));
    }
    let path = path_of(&d.name);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // SAFETY: an ioctl on our copy of the socket; the result, a new
    // descriptor, is owned at once.
    let file = unsafe { libc::ioctl(sock, SIOCUNIXFILE as _) };
    if file >= 0 {
        // SAFETY: just returned by the kernel, ours alone.
        let file = unsafe { OwnedFd::from_raw_fd(file) };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .with_context(|| format!("{what}: reading where its socket file is"))?;
        let link = link.to_string_lossy();
        let (at, deleted) = match link.strip_suffix(" (deleted)") {
            Some(at) => (at, true),
            None => (&*link, false),
        };
        let dir = if path.starts_with('/') {
            None
        } else {
            let dir = at.strip_suffix(path.trim_start_matches("./")).and_then(|d| d.strip_suffix('/'));
            Some(dir.map(|d| if d.is_empty() { "/" } else { d }).map(String::from).with_context(|| {
                format!("{what} is bound to the relative path {path}, but its socket file is at {at}")
            })?)
        };
        let full = match &dir {
            Some(d) => std::path::Path::new(d).join(&path),
            None => std::path::PathBuf::from(&path),
        };
        if !deleted && std::path::Path::new(at) != full {
            bail!("{what} is bound to {path}, whose socket file was moved to {at}, which dump does not support yet");
        }
        let m = nix::sys::stat::fstat(&file).with_context(|| format!("{what}: its socket file"))?;
        let perms = (!deleted).then_some((m.st_mode, m.st_uid, m.st_gid));
        return Ok((perms, deleted, dir));
    }
    let (file, dir) = if path.starts_with('/') {
        (std::path::PathBuf::from(&path), None)
    } else {
        let cwd = std::fs::read_link(crate::procfs::path(pid, "cwd")).context("reading its cwd")?;
        (crate::procfs::path(pid, "cwd").join(&path), Some(cwd.to_string_lossy().into_owned()))
    };
    match std::fs::symlink_metadata(&file) {
        Ok(m) if m.file_type().is_socket() && d.vfs.is_some_and(|(ino, _)| u64::from(ino) == m.ino()) => {
            Ok((Some((m.mode(), m.uid(), m.gid())), false, dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_none() => Ok((None, true, None)),
        _ => bail!("{what} is bound to {path}, whose socket file was replaced (or is not where its name says)"),
    }
}

impl super::Files {
    /// Once every fd is seen: each unix socket's peer must be in the tree,
    /// or be a connection waiting on a listening socket of the tree (then
    /// the socket is written as connecting to that listener, as CRIU writes
    /// it), and every connection waiting on a listener must come from the
    /// tree.
    pub fn unix_peers(&mut self, ext_unix_sk: bool) -> Result<()> {
        let Some(diag) = &self.unix else { return Ok(()) };
        let ours: Vec<u32> = self.entries.iter().filter_map(|e| unix_of(&e.kind).map(|u| u.ino)).collect();
        // sock_diag names a waiting connection by its client (whose own
        // peer, the socket not accepted yet, shows as 0).
        let listener_of = |client: u32| {
            ours.iter()
                .copied()
                .find(|l| diag.get(l).is_some_and(|d| d.state == TCP_LISTEN && d.icons.contains(&client)))
        };
        let mut fixed = vec![];
        let mut external: Vec<UnixSock> = vec![];
        for u in self.entries.iter().filter_map(|e| unix_of(&e.kind)) {
            let what = format!("unix socket:[{}]", u.ino);
            if u.state == u32::from(TCP_LISTEN) {
                let d = diag.get(&u.ino).context("a unix socket sock_diag did not list")?;
                if let Some(client) = d.icons.iter().find(|c| !ours.contains(c)) {
                    bail!(
                        "{what} (listening on {}): a connection from socket:[{client}], outside the dumped tree, \
                         waits to be accepted",
                        show_name(&u.name)
                    );
                }
            }
            let stream = u.ty != libc::SOCK_DGRAM as u32;
            if stream && u.peer == 0 && u.state == u32::from(TCP_ESTABLISHED) {
                if let Some(l) = listener_of(u.ino) {
                    // What it sent sits in the socket not accepted yet,
                    // out of reach.
                    if diag.get(&u.ino).is_some_and(|e| e.rqlen.1 != 0) {
                        bail!(
                            "{what}: it sent bytes on a connection not accepted yet (on socket:[{l}]): not supported"
                        );
                    }
                    fixed.push((u.ino, l));
                }
                continue;
            }
            if u.peer == 0 || ours.contains(&u.peer) {
                continue;
            }
            let peer = diag.get(&u.peer);
            let peer_name = peer.map(|p| show_name(&p.name)).unwrap_or_else(|| "unknown".into());
            let reachable = peer.is_some_and(|p| !p.name.is_empty() && (p.name[0] == 0 || p.name[0] == b'/'));
            if !ext_unix_sk || !reachable {
                let how = if reachable { ": dump with --ext-unix-sk to connect to it again at restore" } else { "" };
                bail!(
                    "{what} is connected to socket:[{}] ({peer_name}), which is outside the dumped tree{how}",
                    u.peer
                );
            }
            if !u.queue.is_empty() {
                bail!(
                    "{what}: bytes from socket:[{}] ({peer_name}) outside the tree wait in it: not supported",
                    u.peer
                );
            }
            if let Some(p) = peer.filter(|_| !external.iter().any(|e| e.ino == u.peer)) {
                external.push(UnixSock {
                    ino: u.peer,
                    peer: 0,
                    ty: u.ty,
                    state: u32::from(p.state),
                    name: p.name.clone(),
                    backlog: 0,
                    perms: None,
                    deleted: false,
                    dir: None,
                    flags: 0,
                    shutdown: 0,
                    opts: Opts::default(),
                    queue: vec![],
                    scm: vec![],
                    external: true,
                });
            }
        }
        // CRIU's form: the outside peer has an entry of its own, no fd on
        // it, marked external.
        for u in external {
            self.push(super::FileKind::Unix(u));
        }
        for e in &mut self.entries {
            if let super::FileKind::Unix(u) = &mut e.kind
                && let Some((_, l)) = fixed.iter().find(|(ino, _)| *ino == u.ino)
            {
                u.peer = *l;
            }
        }
        Ok(())
    }
}

fn unix_of(k: &super::FileKind) -> Option<&UnixSock> {
    if let super::FileKind::Unix(u) = k { Some(u) } else { None }
}

/// A socket address for messages: a path, `@name` for an abstract one,
/// "no name".
pub fn show_name(name: &[u8]) -> String {
    match name.first() {
        None => "no name".into(),
        Some(0) => format!("@{}", String::from_utf8_lossy(&name[1..])),
        Some(_) => path_of(name),
    }
}

/// An address that reaches `s`: its own, or for a relative path, the path
/// from its directory (a client's peer name is the bound one whichever
/// path it connects by).
fn reach(made: &Made, s: &UnixSock) -> Vec<u8> {
    if let Some((_, file)) = made.unlinked.iter().find(|(ino, _)| *ino == s.ino) {
        // Its file is gone: connected to through our descriptor of it.
        let mut p = format!("/proc/self/fd/{}", file.as_raw_fd()).into_bytes();
        p.push(0);
        return p;
    }
    match &s.dir {
        Some(d) if s.name.first().is_some_and(|&b| b != 0) => {
            let mut p = std::path::Path::new(d).join(path_of(&s.name)).into_os_string().into_encoded_bytes();
            p.push(0);
            p
        }
        _ => s.name.clone(),
    }
}

/// The path of an address bound to one: the kernel keeps it with its
/// closing NUL.
fn path_of(name: &[u8]) -> String {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

fn timeval(t: libc::timeval) -> (u64, u64) {
    (t.tv_sec as u64, t.tv_usec as u64)
}

fn getopt<T: Copy>(s: i32, opt: i32) -> Result<T> {
    sockopt::get(s, libc::SOL_SOCKET, opt)
}

fn setopt<T>(s: i32, opt: i32, v: &T) -> Result<()> {
    sockopt::set(s, libc::SOL_SOCKET, opt, v)
}

/// Every message in the receive queue, left there: peeked one after the
/// other from a peek offset of 0, which is put back as it was.
fn peek_queue(s: i32, rcvbuf: usize) -> Result<Vec<(Vec<u8>, Vec<OwnedFd>)>> {
    let old: i32 = getopt(s, libc::SO_PEEK_OFF)?;
    setopt(s, libc::SO_PEEK_OFF, &0i32).context("SO_PEEK_OFF")?;
    let res = peek_all(s, rcvbuf.max(1 << 16));
    setopt(s, libc::SO_PEEK_OFF, &old).context("putting SO_PEEK_OFF back")?;
    res
}

/// The descriptors an `SCM_RIGHTS` message brought, ours now.
///
/// # Safety
/// `msg` was just filled by `recvmsg`, and the descriptors in it are
/// owned by no one else.
pub(crate) unsafe fn rights(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = vec![];
    // SAFETY: walking the control messages the kernel wrote (the
    // caller's promise); each descriptor in them is new.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                fds.extend((0..count).map(|i| OwnedFd::from_raw_fd(data.add(i).read_unaligned())));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    fds
}

fn peek_all(s: i32, size: usize) -> Result<Vec<(Vec<u8>, Vec<OwnedFd>)>> {
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
        // The peek put copies of the descriptors in flight here, ours now.
        // SAFETY: `msg` is what recvmsg just filled.
        let fds = unsafe { rights(&msg) };
        if n == 0 && fds.is_empty() {
            // The end of a stream shut down (an empty datagram, too, which
            // is not kept).
            return Ok(out);
        }
        out.push((buf[..n as usize].to_vec(), fds));
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
            so_passsec: Some(o.passsec),
            so_buf_lock: Some(o.buf_lock),
            so_filter: o.filter.clone(),
            ..Default::default()
        };
        FileEntry {
            r#type: FdType::Unixsk as i32,
            id,
            usk: Some(UnixSkEntry {
                id,
                ino: self.ino,
                r#type: self.ty,
                state: self.state,
                flags: self.flags,
                backlog: self.backlog,
                peer: self.peer,
                fown,
                opts,
                name: self.name.clone(),
                shutdown: (self.shutdown != 0).then_some(self.shutdown),
                file_perms: self.perms.map(|(mode, uid, gid)| FilePermsEntry { mode, uid, gid, ..Default::default() }),
                deleted: self.deleted.then_some(true),
                name_dir: self.dir.clone(),
                uflags: if self.external { USK_EXTERN } else { 0 },
                extra_opts: o.extra.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Its queue as `sk-queues.img` entries.
    pub fn packets(&self, id: u32) -> Vec<(SkPacketEntry, Vec<u8>)> {
        let none = vec![];
        self.queue
            .iter()
            .zip(self.scm.iter().chain(std::iter::repeat(&none)))
            .map(|(m, rights)| {
                let scm = if rights.is_empty() {
                    vec![]
                } else {
                    vec![ScmEntry { r#type: SCM_RIGHTS, rights: rights.clone(), ..Default::default() }]
                };
                (SkPacketEntry { id_for: id, length: m.len() as u32, scm, ..Default::default() }, m.clone())
            })
            .collect()
    }

    /// The end `e` (file `id`) of images, with the messages queued for it.
    pub fn from_entry(e: &UnixSkEntry, queues: &[(SkPacketEntry, Vec<u8>)], at: &str) -> Result<UnixSock> {
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&(e.r#type as i32)) {
            bail!("{at}: unix socket type {}", e.r#type);
        }
        let state = u8::try_from(e.state).unwrap_or(0);
        if ![TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN].contains(&state) {
            bail!("{at}: unix socket state {}: not restored", e.state);
        }
        if !e.name.is_empty() && e.name[0] != 0 && e.name[0] != b'/' && e.name_dir.is_none() {
            bail!("{at}: a unix socket bound to the relative path {:?} without its name_dir", path_of(&e.name));
        }
        sockopt::check_extra(&e.extra_opts, libc::AF_UNIX as u32, e.r#type, 0, at)?;
        let o = &e.opts;
        Ok(UnixSock {
            ino: e.ino,
            peer: e.peer,
            ty: e.r#type,
            state: e.state,
            name: e.name.clone(),
            backlog: e.backlog,
            perms: e.file_perms.as_ref().map(|p| (p.mode, p.uid, p.gid)),
            deleted: e.deleted.unwrap_or(false),
            dir: e.name_dir.clone(),
            external: e.uflags & USK_EXTERN != 0,
            flags: e.flags,
            shutdown: e.shutdown.unwrap_or(0) & 3,
            opts: Opts {
                sndbuf: o.so_sndbuf,
                rcvbuf: o.so_rcvbuf,
                snd_timeout: (o.so_snd_tmo_sec, o.so_snd_tmo_usec),
                rcv_timeout: (o.so_rcv_tmo_sec, o.so_rcv_tmo_usec),
                passcred: o.so_passcred.unwrap_or(false),
                passsec: o.so_passsec.unwrap_or(false),
                buf_lock: o.so_buf_lock.unwrap_or(0),
                filter: o.so_filter.clone(),
                extra: e.extra_opts.clone(),
            },
            queue: queues.iter().filter(|(p, _)| p.id_for == e.id).map(|(_, d)| d.clone()).collect(),
            scm: queues
                .iter()
                .filter(|(p, _)| p.id_for == e.id)
                .map(|(p, _)| p.scm.iter().filter(|c| c.r#type == SCM_RIGHTS).flat_map(|c| c.rights.clone()).collect())
                .collect(),
        })
    }
}

/// Every unix socket the tree's fds are on, once, with the messages queued
/// for it; refused here, naming the socket, when the restore could not
/// connect it as it was.
pub fn plan(set: &ImageSet) -> Result<Vec<(u32, UnixSock)>> {
    let mut out: Vec<(u32, UnixSock)> = Vec::new();
    let add = |id: u32, out: &mut Vec<(u32, UnixSock)>| -> Result<bool> {
        let Some(u) = set.file(id).and_then(|e| e.usk.as_ref()) else { return Ok(false) };
        if out.iter().any(|(i, _)| *i == id) {
            return Ok(false);
        }
        let at = format!("files.img: unix socket id {id} (socket:[{}])", u.ino);
        out.push((id, UnixSock::from_entry(u, &set.sk_queues, &at)?));
        Ok(true)
    };
    for f in set.processes.iter().flat_map(|p| &p.fds) {
        add(f.id, &mut out)?;
    }
    // Sockets in flight in the queued messages, and their peers, until
    // none is new.
    loop {
        let more: Vec<u32> = out
            .iter()
            .flat_map(|(_, s)| {
                let peer = set.files.iter().find(|e| e.usk.as_ref().is_some_and(|u| s.peer != 0 && u.ino == s.peer));
                let peer = peer.filter(|e| e.usk.as_ref().is_some_and(|u| u.uflags & USK_EXTERN == 0)).map(|e| e.id);
                s.scm.iter().flatten().copied().chain(peer)
            })
            .collect();
        let mut grew = false;
        for id in more {
            grew |= add(id, &mut out)?;
        }
        if !grew {
            break;
        }
    }
    // Sockets outside the tree that a socket of it is connected to, known
    // by their address (dumped with --ext-unix-sk).
    let mut outside: Vec<(u32, UnixSock)> = vec![];
    for (_, s) in &out {
        if s.peer != 0 && !out.iter().any(|(_, p)| p.ino == s.peer) {
            let e = set.files.iter().find_map(|e| e.usk.as_ref().filter(|u| u.ino == s.peer));
            if let Some(e) = e.filter(|e| e.uflags & USK_EXTERN != 0 && !outside.iter().any(|(_, o)| o.ino == e.ino)) {
                let at = format!("files.img: unix socket id {} (socket:[{}])", e.id, e.ino);
                outside.push((e.id, UnixSock::from_entry(e, &[], &at)?));
            }
        }
    }
    out.extend(outside);
    let by_ino = |ino: u32| out.iter().find(|(_, s)| s.ino == ino).map(|(_, s)| s);
    for (id, s) in &out {
        if s.external {
            if s.name.is_empty() {
                bail!("files.img: unix socket id {id}: outside the tree, and without an address to connect to");
            }
            continue;
        }
        let at = format!("files.img: unix socket id {id} (socket:[{}], {})", s.ino, show_name(&s.name));
        let stream = s.ty != libc::SOCK_DGRAM as u32;
        if s.peer == 0 {
            if stream && s.state == u32::from(TCP_ESTABLISHED) && s.shutdown != 3 {
                bail!("{at}: a connection whose other end is gone: not restored");
            }
            continue;
        }
        let Some(p) = by_ino(s.peer) else {
            bail!("{at}: its peer socket:[{}] is outside the tree: not restored yet", s.peer);
        };
        if p.ty != s.ty {
            bail!("{at}: connected to a socket of another type");
        }
        let mutual = p.peer == s.ino;
        if !stream {
            if !mutual && p.name.is_empty() {
                bail!("{at}: connected to socket:[{}], which has no address to connect to again", s.peer);
            }
            continue;
        }
        if p.state == u32::from(TCP_LISTEN) {
            continue;
        }
        if p.external {
            if !s.queue.is_empty() {
                bail!("{at}: bytes from outside the tree wait in it: not restored");
            }
            continue;
        }
        if !mutual {
            bail!("{at}: connected to socket:[{}], which is connected elsewhere", s.peer);
        }
        // One accepted from a listener closed since is made through a
        // listener of the restore's (`make`).
    }
    Ok(out)
}

/// `sk-queues.img`: the messages queued on every socket, each entry
/// followed by its bytes (none written when nothing is queued).
pub fn queues_image(queued: Vec<(SkPacketEntry, Vec<u8>)>) -> Option<Writer> {
    if queued.is_empty() {
        return None;
    }
    let mut q = Writer::new(Kind::SkQueues);
    for (e, data) in &queued {
        q.push(e).raw(data);
    }
    Some(q)
}

/// The unix sockets a restore made, by `files.img` id, and the socket
/// files it bound (unlinked again if the restore fails).
#[derive(Debug, Default)]
pub struct Made {
    pub fds: Vec<(u32, OwnedFd)>,
    bound: Vec<std::path::PathBuf>,
    /// The files of sockets whose file was unlinked when dumped (by
    /// inode), bound and unlinked again at once: connections reach them
    /// through these.
    unlinked: Vec<(u32, OwnedFd)>,
}

impl Made {
    /// The restore went through: the socket files stay.
    pub fn keep(&mut self) {
        self.bound.clear();
    }

    fn fd(&self, id: u32) -> Option<i32> {
        self.fds.iter().find(|(i, _)| *i == id).map(|(_, f)| f.as_raw_fd())
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for p in self.bound.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Makes every socket of `socks` (`files.img` id and socket) in the host,
/// before any process exists: bound to their addresses (an address in use
/// is refused, naming the socket; a stale socket file nobody listens on is
/// replaced), listening, connected as they were (pairs again as pairs,
/// accepted connections through their listening socket, connections not
/// accepted yet left waiting on it, datagram sockets to the address they
/// sent to), with their queued messages, options, shutdowns and flags.
pub fn make(socks: &[(u32, UnixSock)], carried: &[(u32, i32)]) -> Result<Made> {
    let mut made = Made::default();
    let by_ino = |ino: u32| socks.iter().find(|(_, s)| s.ino == ino);
    let named = |s: &UnixSock| !s.name.is_empty();
    let listener = |name: &[u8]| socks.iter().find(|(_, s)| s.state == u32::from(TCP_LISTEN) && s.name == name);
    let what = |id: u32, s: &UnixSock| format!("unix socket (files.img id {id}, {})", show_name(&s.name));
    let mutual = |s: &UnixSock| s.peer != 0 && by_ino(s.peer).is_some_and(|(_, p)| p.peer == s.ino);
    // An accepted socket carries its listener's address; it comes from accept().
    let accepted = |s: &UnixSock| {
        s.ty != libc::SOCK_DGRAM as u32
            && named(s)
            && s.state == u32::from(TCP_ESTABLISHED)
            && listener(&s.name).is_some()
    };
    // Accepted from a listener that is gone (`s`; `p` its client, bound
    // to an address of its own, or not).
    let accepted_gone = |s: &UnixSock, p: &UnixSock| {
        !s.external
            && !p.external
            && s.ty != libc::SOCK_DGRAM as u32
            && named(s)
            && s.state == u32::from(TCP_ESTABLISHED)
            && p.state == u32::from(TCP_ESTABLISHED)
            && listener(&s.name).is_none()
            // Both named (the client bound itself): the accepted one came
            // second.
            && (!named(p) || p.ino < s.ino)
    };
    // A connection not accepted yet: connected once its listener's accepted
    // ones are.
    let waiting = |s: &UnixSock| {
        s.ty != libc::SOCK_DGRAM as u32 && by_ino(s.peer).is_some_and(|(_, p)| p.state == u32::from(TCP_LISTEN))
    };
    // A connection whose other end is gone is made with a stand-in for it,
    // which sends its queue and then goes, as its end did.
    let mut gone: Vec<(u32, OwnedFd)> = Vec::new();
    let orphan = |s: &UnixSock| s.peer == 0 && s.state == u32::from(TCP_ESTABLISHED);
    let outside = |s: &UnixSock| by_ino(s.peer).is_some_and(|(_, p)| p.external);
    // First every socket that is bound, or stands alone.
    for (id, s) in socks {
        let gone_listener = by_ino(s.peer).is_some_and(|(_, p)| accepted_gone(s, p) || accepted_gone(p, s));
        if s.external || accepted(s) || gone_listener || waiting(s) || (!named(s) && mutual(s)) {
            continue;
        }
        if orphan(s) && !named(s) {
            let (a, b) = pair(s.ty).with_context(|| what(*id, s))?;
            made.fds.push((*id, a));
            gone.push((*id, b));
            continue;
        }
        let fd = new_socket(s.ty).with_context(|| what(*id, s))?;
        if named(s) {
            bind(&fd, s, &mut made).with_context(|| what(*id, s))?;
        }
        if s.state == u32::from(TCP_LISTEN) {
            // SAFETY: a plain call on our socket.
            if unsafe { libc::listen(fd.as_raw_fd(), s.backlog as i32) } < 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| format!("{}: listen", what(*id, s)));
            }
        }
        made.fds.push((*id, fd));
    }
    // Then connections: unnamed pairs as pairs, accepted ones through
    // their listener, datagram sockets to their peer's address.
    for (id, s) in socks {
        if s.external {
            continue;
        }
        if outside(s) && s.ty != libc::SOCK_DGRAM as u32 {
            // Connected again to the address it was connected to.
            let (_, p) = by_ino(s.peer).context("an outside peer")?;
            let fd = made.fd(*id).context("a socket not made")?;
            connect(fd, &reach(&made, p))
                .with_context(|| format!("{}: connecting to {}", what(*id, s), show_name(&p.name)))?;
            continue;
        }
        if made.fd(*id).is_some() && !(s.peer != 0 && s.ty == libc::SOCK_DGRAM as u32) {
            continue;
        }
        let peer = by_ino(s.peer);
        if s.ty == libc::SOCK_DGRAM as u32 {
            match peer {
                Some((pid, p)) if !named(s) && !named(p) && mutual(s) => {
                    if made.fd(*pid).is_none() {
                        let (a, b) = pair(s.ty).with_context(|| what(*id, s))?;
                        made.fds.push((*id, a));
                        made.fds.push((*pid, b));
                    }
                }
                Some((_, p)) if named(p) => {
                    let fd = made.fd(*id).context("a datagram socket not made")?;
                    connect(fd, &reach(&made, p))
                        .with_context(|| format!("{}: connecting to {}", what(*id, s), show_name(&p.name)))?;
                }
                _ => bail!("{}: connected to socket:[{}], which cannot be reached by name", what(*id, s), s.peer),
            }
            continue;
        }
        if accepted(s) && orphan(s) {
            let (_, l) = listener(&s.name).context("a listener")?;
            let (fd, client) = accept_from(&made, socks, l, s.ty).with_context(|| what(*id, s))?;
            made.fds.push((*id, fd));
            gone.push((*id, client));
            continue;
        }
        let Some((pid, p)) = peer else {
            bail!("{}: its peer socket:[{}] is not in the images", what(*id, s), s.peer);
        };
        if accepted(s) {
            continue; // made with its client, below
        }
        if p.state == u32::from(TCP_LISTEN) {
            continue; // waiting to be accepted: after every accepted one
        }
        if made.fd(*id).is_some() {
            continue;
        }
        if accepted(p) {
            let (lid, l) = listener(&p.name).context("a listener")?;
            let lfd = made.fd(*lid).context("a listener not made")?;
            let fd = new_socket(s.ty).with_context(|| what(*id, s))?;
            if named(s) {
                bind(&fd, s, &mut made).with_context(|| what(*id, s))?;
            }
            connect(fd.as_raw_fd(), &reach(&made, l))
                .with_context(|| format!("{}: connecting to {}", what(*id, s), show_name(&l.name)))?;
            // SAFETY: accept on our listening socket; the new fd is owned at once.
            let a = unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
            if a < 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| format!("{}: accept", what(*pid, p)));
            }
            made.fds.push((*id, fd));
            // SAFETY: just returned by accept4, ours.
            made.fds.push((*pid, unsafe { OwnedFd::from_raw_fd(a) }));
        } else if !named(s) && !named(p) {
            let (a, b) = pair(s.ty).with_context(|| what(*id, s))?;
            made.fds.push((*id, a));
            made.fds.push((*pid, b));
        } else if accepted_gone(s, p) || accepted_gone(p, s) {
            // Accepted from a listener that is closed now: it carries that
            // listener's address, which only accept() gives. A listener
            // of ours is bound there for the time of one accept.
            let ((aid, a), (cid, c)) = if accepted_gone(s, p) { ((*id, s), (*pid, p)) } else { ((*pid, p), (*id, s)) };
            let l = new_socket(s.ty).with_context(|| what(aid, a))?;
            bind(&l, a, &mut made).with_context(|| format!("{}: a listener in its place", what(aid, a)))?;
            let client = new_socket(s.ty).with_context(|| what(cid, c))?;
            if named(c) {
                bind(&client, c, &mut made).with_context(|| what(cid, c))?;
            }
            // SAFETY: plain calls on our sockets; the accepted fd is owned at once.
            let fd = unsafe {
                if libc::listen(l.as_raw_fd(), 1) < 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| what(aid, a));
                }
                connect(client.as_raw_fd(), &reach(&made, a))
                    .with_context(|| format!("{}: connecting to {}", what(cid, c), show_name(&a.name)))?;
                let fd = libc::accept4(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("{}: accept", what(aid, a)));
                }
                OwnedFd::from_raw_fd(fd)
            };
            made.fds.push((aid, fd));
            made.fds.push((cid, client));
        } else {
            bail!("{}: a connection with an address not made through a listening socket of the tree", what(*id, s));
        }
    }
    // Connections not accepted yet, each waiting on its listener again.
    for (id, s) in socks {
        let Some((_, l)) = by_ino(s.peer).filter(|_| waiting(s)) else { continue };
        let fd = new_socket(s.ty).with_context(|| what(*id, s))?;
        if named(s) {
            bind(&fd, s, &mut made).with_context(|| what(*id, s))?;
        }
        connect(fd.as_raw_fd(), &reach(&made, l))
            .with_context(|| format!("{}: connecting to {}", what(*id, s), show_name(&l.name)))?;
        made.fds.push((*id, fd));
    }
    for (id, s) in socks.iter().filter(|(_, s)| !s.queue.is_empty()) {
        let stand_in = gone.iter().find(|(g, _)| g == id).map(|(_, fd)| fd.as_raw_fd());
        requeue(socks, &made, *id, s, stand_in, carried)
            .with_context(|| format!("{}: its queued messages", what(*id, s)))?;
    }
    drop(gone);
    made.unlinked.clear();
    for (id, s) in socks.iter().filter(|(_, s)| !s.external) {
        let fd = made.fd(*id).with_context(|| format!("{}: not made", what(*id, s)))?;
        // SAFETY: options and flags on our own socket.
        unsafe { settle(s, fd) }.map_err(anyhow::Error::msg).with_context(|| what(*id, s))?;
        // After the queues: the filter was not there when they came, and
        // a peek offset would have moved as they came in.
        sockopt::set_filter(fd, &s.opts.filter).with_context(|| what(*id, s))?;
        sockopt::set_extra(fd, &s.opts.extra).with_context(|| what(*id, s))?;
    }
    Ok(made)
}

/// A connection accepted on listener `l` (made already), and its client.
fn accept_from(made: &Made, socks: &[(u32, UnixSock)], l: &UnixSock, ty: u32) -> Result<(OwnedFd, OwnedFd)> {
    let lid = socks.iter().find(|(_, x)| x.ino == l.ino).map(|(id, _)| *id).context("a listener")?;
    let lfd = made.fd(lid).context("a listener not made")?;
    let client = new_socket(ty)?;
    connect(client.as_raw_fd(), &reach(made, l)).with_context(|| format!("connecting to {}", show_name(&l.name)))?;
    // SAFETY: accept on our listening socket; the new fd is owned at once.
    let a = unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
    if a < 0 {
        return Err(std::io::Error::last_os_error()).context("accept");
    }
    // SAFETY: just returned by accept4, ours.
    Ok((unsafe { OwnedFd::from_raw_fd(a) }, client))
}

fn new_socket(ty: u32) -> Result<OwnedFd> {
    // SAFETY: a new socket, owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty as i32 | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pair(ty: u32) -> Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0i32; 2];
    // SAFETY: the kernel writes two new fds, owned at once.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty as i32 | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error()).context("socketpair");
    }
    // SAFETY: just made.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// `name` as a `sockaddr_un` and its length.
fn addr(name: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all zeroes is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.len() > a.sun_path.len() {
        bail!("an address of {} bytes, longer than a unix socket's", name.len());
    }
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok((a, (std::mem::offset_of!(libc::sockaddr_un, sun_path) + name.len()) as libc::socklen_t))
}

fn connect(fd: i32, name: &[u8]) -> Result<()> {
    let (a, len) = addr(name)?;
    // SAFETY: the kernel reads `len` bytes of the address.
    if unsafe { libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error()).context("connect");
    }
    Ok(())
}

/// Binds `fd` to `s`'s address. A socket file left at a path by the dead
/// program (nothing accepts on it) is replaced; anything else there, or
/// an abstract name in use, is refused. A relative path is bound from its
/// directory (a thread of ours with a cwd of its own); an unlinked one is
/// unlinked again at once.
fn bind(fd: &OwnedFd, s: &UnixSock, made: &mut Made) -> Result<()> {
    in_dir(s, || bind_here(fd, s, made))
}

/// Runs `f` where `s`'s relative path is meant: in its directory, on a
/// thread of ours with a cwd of its own.
fn in_dir<T: Send>(s: &UnixSock, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(dir) = &s.dir else { return f() };
    std::thread::scope(|t| {
        t.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).context("unshare(CLONE_FS)")?;
            nix::unistd::chdir(dir.as_str()).with_context(|| format!("entering {dir}"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("binding from {dir}: the thread panicked")))
    })
}

/// Refuses `s`'s path if something holds it; a stale socket file left by
/// the dead program (nothing accepts on it) may be replaced: true if one
/// is there.
fn path_free(s: &UnixSock, path: &std::path::Path) -> Result<bool> {
    let Ok(m) = std::fs::symlink_metadata(path) else { return Ok(false) };
    use std::os::unix::fs::FileTypeExt;
    // Nobody listens on a stale one: connecting is refused.
    let refused = |ty: i32| {
        new_socket(ty as u32).and_then(|p| connect(p.as_raw_fd(), &s.name)).is_err_and(|e| {
            e.root_cause().downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::ECONNREFUSED)
        })
    };
    if !m.file_type().is_socket() || !refused(s.ty as i32) {
        bail!("the address {} is in use on this machine", path.display());
    }
    Ok(true)
}

/// Every bound socket of `socks` whose address [`make`] would refuse:
/// an abstract name is bound on a throwaway socket, closed at once; a
/// path is checked as `make` checks it (anything there but a stale
/// socket file), and its directory must exist. Nothing is created.
pub fn problems(socks: &[(u32, UnixSock)]) -> Vec<anyhow::Error> {
    let mut out = vec![];
    // An accepted socket carries its listener's address; accept() gives it.
    let accepted = |s: &UnixSock| {
        s.ty != libc::SOCK_DGRAM as u32
            && s.state == u32::from(TCP_ESTABLISHED)
            && socks.iter().any(|(_, l)| l.state == u32::from(TCP_LISTEN) && l.name == s.name)
    };
    for (id, s) in socks.iter().filter(|(_, s)| !s.name.is_empty() && !s.external && !accepted(s)) {
        let what = format!("unix socket (files.img id {id}, {})", show_name(&s.name));
        let checked = in_dir(s, || {
            if s.name[0] == 0 {
                let fd = new_socket(s.ty)?;
                let (a, len) = addr(&s.name)?;
                // SAFETY: the kernel reads `len` bytes of the address.
                if unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EADDRINUSE) {
                        bail!("the address {} is in use on this machine", show_name(&s.name));
                    }
                    return Err(e).context("bind");
                }
                return Ok(());
            }
            let path = std::path::PathBuf::from(path_of(&s.name));
            if s.deleted {
                let aside = Parked::aside(&path);
                if let Ok(m) = std::fs::symlink_metadata(&path) {
                    Parked::parkable(&path, &m)?;
                }
                if std::fs::symlink_metadata(&path).is_ok() && std::fs::symlink_metadata(&aside).is_ok() {
                    bail!(
                        "{} is in the way of a socket whose file was unlinked, and {} is taken",
                        path.display(),
                        aside.display()
                    );
                }
                // Missing directories are made for the time being.
                return Ok(());
            }
            path_free(s, &path)?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                bail!("{}: the directory to bind it in is missing", path.display());
            }
            Ok(())
        });
        if let Err(e) = checked {
            out.push(e.context(what));
        }
    }
    out
}

fn bind_here(fd: &OwnedFd, s: &UnixSock, made: &mut Made) -> Result<()> {
    let path = (s.name[0] != 0).then(|| std::path::PathBuf::from(path_of(&s.name)));
    let full = path.as_ref().map(|path| match &s.dir {
        Some(d) => std::path::Path::new(d).join(path),
        None => path.clone(),
    });
    if let (Some(path), Some(full)) = (&path, &full)
        && s.deleted
    {
        // Bound where its name says, whatever is there now (another
        // socket of the tree, a FIFO made since) parked beside it for the
        // time being, then unlinked again.
        let parked = Parked::new(full)?;
        bind_addr(fd, s)?;
        let file = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("opening the socket file {} just bound", full.display()));
        let gone = std::fs::remove_file(path).with_context(|| format!("unlinking {} again", full.display()));
        parked.put_back()?;
        made.unlinked.push((s.ino, file?));
        return gone;
    }
    if let Some(path) = &path
        && path_free(s, path)?
    {
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket file {}", path.display()))?;
    }
    bind_addr(fd, s)?;
    let (Some(path), Some(full)) = (path, full) else { return Ok(()) };
    made.bound.push(full);
    if let Some((mode, uid, gid)) = s.perms {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

fn bind_addr(fd: &OwnedFd, s: &UnixSock) -> Result<()> {
    let (a, len) = addr(&s.name)?;
    // SAFETY: the kernel reads `len` bytes of the address.
    if unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            bail!("the address {} is in use on this machine", show_name(&s.name));
        }
        return Err(e).context("bind");
    }
    Ok(())
}

/// Whatever is at a path, renamed to `PATH.revenant-parked` while a socket
/// whose file was unlinked is bound there, and renamed back after (also
/// when this goes unasked, on a failure); directories above it that were
/// removed too are made for that time, and removed again.
struct Parked {
    path: std::path::PathBuf,
    aside: Option<std::path::PathBuf>,
    dirs: Vec<std::path::PathBuf>,
}

impl Parked {
    fn aside(path: &std::path::Path) -> std::path::PathBuf {
        let mut a = path.as_os_str().to_owned();
        a.push(".revenant-parked");
        a.into()
    }

    /// Only a socket file or a FIFO is moved aside for a moment: what a
    /// socket's path can hold since its file went (another socket bound
    /// there, a FIFO made there), never a file or directory of another
    /// program's.
    fn parkable(path: &std::path::Path, m: &std::fs::Metadata) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() && !m.file_type().is_fifo() {
            bail!(
                "{} is in the way of a socket whose file was unlinked, and is neither a socket file nor a FIFO",
                path.display()
            );
        }
        Ok(())
    }

    fn new(path: &std::path::Path) -> Result<Parked> {
        let mut p = Parked { path: path.to_path_buf(), aside: None, dirs: vec![] };
        let missing: Vec<&std::path::Path> =
            path.ancestors().skip(1).take_while(|a| std::fs::symlink_metadata(a).is_err()).collect();
        for dir in missing.into_iter().rev() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(dir).with_context(|| {
                format!("making {} again for a socket whose file was unlinked there", dir.display())
            })?;
            p.dirs.push(dir.to_path_buf());
        }
        if let Ok(m) = std::fs::symlink_metadata(path) {
            Parked::parkable(path, &m)?;
            let aside = Parked::aside(path);
            if std::fs::symlink_metadata(&aside).is_ok() {
                bail!(
                    "{} is in the way of a socket whose file was unlinked, and {} is taken",
                    path.display(),
                    aside.display()
                );
            }
            std::fs::rename(path, &aside)
                .with_context(|| format!("moving {} aside to bind a socket whose file was unlinked", path.display()))?;
            p.aside = Some(aside);
        }
        Ok(p)
    }

    fn put_back(mut self) -> Result<()> {
        let Some(aside) = self.aside.take() else { return Ok(()) };
        std::fs::rename(&aside, &self.path)
            .with_context(|| format!("moving {} back to {}", aside.display(), self.path.display()))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(aside) = self.aside.take() {
            let _ = std::fs::rename(aside, &self.path);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Sends `s`'s queued messages to it again, from the socket that may send
/// to it: its peer, or (a datagram socket nobody is connected to) a
/// socket of ours, the sender's address lost.
fn requeue(
    socks: &[(u32, UnixSock)],
    made: &Made,
    id: u32,
    s: &UnixSock,
    stand_in: Option<i32>,
    carried: &[(u32, i32)],
) -> Result<()> {
    let me = made.fd(id).context("not made")?;
    let peer = socks.iter().find(|(_, p)| p.ino == s.peer).map(|(pid, p)| (made.fd(*pid), p));
    let stream = s.ty != libc::SOCK_DGRAM as u32;
    let tmp;
    let (from, to_name) = match peer {
        _ if stand_in.is_some() => (stand_in.unwrap_or(-1), None),
        Some((Some(fd), p)) if stream || p.peer == s.ino => (fd, None),
        Some((Some(fd), _)) if !s.name.is_empty() => (fd, Some(reach(made, s))),
        None if !stream && s.peer == 0 && !s.name.is_empty() => {
            tmp = new_socket(s.ty)?;
            (tmp.as_raw_fd(), Some(reach(made, s)))
        }
        _ => bail!("no socket can send them to it again"),
    };
    let room: usize = s.queue.iter().map(|m| m.len() * 2 + 1024).sum();
    let big = (room as i32).max(1 << 16);
    let _ = setopt(from, libc::SO_SNDBUFFORCE, &big);
    let _ = setopt(me, libc::SO_RCVBUFFORCE, &big);
    let none = vec![];
    for (m, rights) in s.queue.iter().zip(s.scm.iter().chain(std::iter::repeat(&none))) {
        let fds = rights
            .iter()
            .map(|r| carried.iter().find(|(id, _)| id == r).map(|(_, fd)| *fd).or_else(|| made.fd(*r)))
            .collect::<Option<Vec<i32>>>()
            .context("a file in flight that was not made")?;
        let addr = to_name.as_deref().map(addr).transpose()?;
        if send_one(from, m, addr.as_ref(), &fds) != m.len() as isize {
            return Err(std::io::Error::last_os_error()).context("sending a queued message again");
        }
    }
    Ok(())
}

/// Sends `m` from `from` (to `to`, if given), with `fds` in flight.
pub(crate) fn send_one(from: i32, m: &[u8], to: Option<&(libc::sockaddr_un, libc::socklen_t)>, fds: &[i32]) -> isize {
    let mut iov = libc::iovec { iov_base: m.as_ptr() as *mut libc::c_void, iov_len: m.len() };
    // Room for one SCM_RIGHTS message of up to 253 descriptors (the
    // kernel's own limit).
    let mut ctl = [0u64; 256];
    // SAFETY: an msghdr over our buffers, the control message written
    // inside `ctl` with the macros that size it.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some((a, len)) = to {
            msg.msg_name = (a as *const libc::sockaddr_un).cast_mut().cast();
            msg.msg_namelen = *len;
        }
        if !fds.is_empty() {
            let bytes = size_of_val(fds) as u32;
            msg.msg_control = ctl.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<i32>(), fds.len());
        }
        libc::sendmsg(from, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }
}

/// Options, shutdown and status flags, once the queues are in.
///
/// # Safety
/// `fd` is one of our sockets.
unsafe fn settle(s: &UnixSock, fd: i32) -> Result<(), &'static str> {
    let tv = |(sec, usec): (u64, u64)| libc::timeval { tv_sec: sec as _, tv_usec: usec as _ };
    let half = |v: u32| (v / 2) as i32;
    if setopt(fd, libc::SO_SNDBUFFORCE, &half(s.opts.sndbuf)).is_err()
        || setopt(fd, libc::SO_RCVBUFFORCE, &half(s.opts.rcvbuf)).is_err()
        || setopt(fd, libc::SO_SNDTIMEO, &tv(s.opts.snd_timeout)).is_err()
        || setopt(fd, libc::SO_RCVTIMEO, &tv(s.opts.rcv_timeout)).is_err()
        || setopt(fd, libc::SO_PASSCRED, &(s.opts.passcred as i32)).is_err()
        || setopt(fd, libc::SO_PASSSEC, &(s.opts.passsec as i32)).is_err()
        || setopt(fd, SO_BUF_LOCK, &(s.opts.buf_lock as i32)).is_err()
    {
        return Err("setting a unix socket's options");
    }
    // The kernel's RCV_SHUTDOWN is 1, SEND_SHUTDOWN 2; shutting one end
    // also marks its peer, as it did.
    // SAFETY: plain calls on the caller's socket.
    unsafe {
        if let Some(how) = sockopt::shutdown_how(s.shutdown)
            && libc::shutdown(fd, how) < 0
        {
            return Err("shutting a unix socket down");
        }
        if libc::fcntl(fd, libc::F_SETFL, (s.flags & libc::O_NONBLOCK as u32) as i32) < 0 {
            return Err("setting a unix socket's flags");
        }
    }
    Ok(())
}

/// A file in flight in a message queued on a unix socket, which the host
/// makes to send along again.
#[derive(Debug, Clone)]
pub enum InFlight {
    /// A pipe end: made with the tree's pipes, the same pipe where the
    /// tree holds its other end.
    Pipe(super::pipe::PipePlan),
    /// A file opened by path.
    Reg { id: u32, path: std::path::PathBuf, flags: i32, pos: u64 },
}

impl InFlight {
    pub fn pipe(&self) -> Option<&super::pipe::PipePlan> {
        if let InFlight::Pipe(p) = self { Some(p) } else { None }
    }
}

/// The files in flight in the messages queued on `socks`, each once.
pub fn in_flight(set: &ImageSet, socks: &[(u32, UnixSock)]) -> Result<Vec<InFlight>> {
    let mut out = vec![];
    let mut seen = vec![];
    for id in socks.iter().flat_map(|(_, s)| s.scm.iter().flatten()).copied() {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let at = format!("sk-queues.img: a file in flight (files.img id {id})");
        let e = set.file(id).with_context(|| format!("{at}: not in files.img"))?;
        if e.usk.is_some() && socks.iter().any(|(i, _)| *i == id) {
            // Made with the tree's unix sockets.
            continue;
        } else if let Some(pe) = &e.pipe {
            out.push(InFlight::Pipe(super::pipe::in_flight(set, id, pe)));
        } else if let Some(r) = &e.reg {
            if set.remaps.iter().any(|m| m.orig_id == id) {
                bail!("{at}: an unlinked file in flight: not restored yet");
            }
            super::reg::check_size(r, "in flight")?;
            let flags = super::reg::open_flags(r.flags);
            out.push(InFlight::Reg { id, path: r.name.clone().into(), flags, pos: r.pos });
        } else {
            bail!("{at}: only pipes, unix sockets and files opened by path are restored in flight yet");
        }
    }
    Ok(out)
}

/// Opens the files in flight that are opened by path, at their offsets.
pub fn open_in_flight(inflight: &[InFlight]) -> Result<Vec<(u32, OwnedFd)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = vec![];
    for f in inflight {
        let InFlight::Reg { id, path, flags, pos } = f else { continue };
        let acc = flags & libc::O_ACCMODE;
        let file = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .custom_flags((flags & !libc::O_ACCMODE) | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening {} (in flight)", path.display()))?;
        use std::io::Seek;
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(*pos)).with_context(|| format!("seeking in {}", path.display()))?;
        out.push((*id, file.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("revenant-unixsk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A FIFO in the way of a socket whose file was unlinked is moved
    /// aside and back, as are missing directories made and removed; a
    /// regular file is never moved, and the parking fails before touching
    /// anything.
    #[test]
    fn only_sockets_and_fifos_are_parked() {
        let d = scratch("park");
        let fifo = d.join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = Parked::new(&fifo).unwrap();
        assert!(std::fs::symlink_metadata(&fifo).is_err() && Parked::aside(&fifo).exists());
        p.put_back().unwrap();
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

        let file = d.join("data");
        std::fs::write(&file, b"keep").unwrap();
        let err = format!("{:#}", Parked::new(&file).err().expect("a regular file is not parked"));
        assert!(err.contains("neither a socket file nor a FIFO"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        assert!(!Parked::aside(&file).exists());

        let deep = d.join("gone/deeper/s");
        drop(Parked::new(&deep).unwrap());
        assert!(!d.join("gone").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
