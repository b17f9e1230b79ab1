//! Netlink sockets (CRIU's `NETLINKSK` entries): a program's channel to
//! the kernel's routing, uevent, audit, ... families, or to another
//! process. What one holds is its address (the port id it was bound to,
//! which the kernel picks at the first send when the program did not),
//! the multicast groups it joined, the address it is connected to, its
//! `SOL_NETLINK` options and the common socket options. Messages waiting
//! to be read cannot be sent to it again (only the kernel or the sender
//! can), nor can the rest of a dump the kernel is still answering: a
//! socket with either is refused, naming it, and the program runs on.
//!
//! The restore makes each socket in the host before any process exists,
//! like the inet ones.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, NetlinkSkEntry};

use super::sockopt;

/// sock_diag's netlink answers (linux/netlink_diag.h).
const NDIAG_PROTO_ALL: u8 = 255;
const NDIAG_SHOW_GROUPS: u32 = 2;
const NDIAG_SHOW_FLAGS: u32 = 8;
const NETLINK_DIAG_GROUPS: u16 = 1;
const NETLINK_DIAG_FLAGS: u16 = 4;
const NDIAG_FLAG_CB_RUNNING: u32 = 1;
/// `NETLINK_CONNECTED`, the state of a socket with a default destination.
const CONNECTED: u32 = 1;

/// The `SOL_NETLINK` flags a program turns on, each read and set again
/// by its own number (`NETLINK_PKTINFO` to `NETLINK_GET_STRICT_CHK`).
const FLAG_OPTS: [u32; 7] = {
    use linux_raw_sys::netlink::*;
    [
        NETLINK_PKTINFO,
        NETLINK_BROADCAST_ERROR,
        NETLINK_NO_ENOBUFS,
        NETLINK_LISTEN_ALL_NSID,
        NETLINK_CAP_ACK,
        NETLINK_EXT_ACK,
        NETLINK_GET_STRICT_CHK,
    ]
};

/// What sock_diag says of a bound netlink socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diag {
    pub protocol: u8,
    pub portid: u32,
    pub dst_portid: u32,
    pub dst_group: u32,
    pub state: u8,
    /// The groups' bitmap, in 32-bit words.
    pub groups: Vec<u32>,
    /// `NDIAG_FLAG_*`.
    pub flags: u32,
}

/// Every bound netlink socket of our network namespace (the tree's), by
/// inode; one never bound is not listed.
pub fn diag() -> Result<HashMap<u32, Diag>> {
    // netlink_diag_req: family, protocol, pad, inode, show, cookie.
    let mut req = [0u8; 20];
    req[0] = libc::AF_NETLINK as u8;
    req[1] = NDIAG_PROTO_ALL;
    req[8..12].copy_from_slice(&(NDIAG_SHOW_GROUPS | NDIAG_SHOW_FLAGS).to_ne_bytes());
    let mut out = HashMap::new();
    super::unixsk::sock_diag(&req, |m| {
        if let Some((ino, d)) = parse_msg(m) {
            out.insert(ino, d);
        }
    })
    .context("asking sock_diag for netlink sockets (module netlink_diag)")?;
    Ok(out)
}

/// One `netlink_diag_msg` and its attributes.
fn parse_msg(m: &[u8]) -> Option<(u32, Diag)> {
    let word = |at: usize| Some(u32::from_ne_bytes(m.get(at..at + 4)?.try_into().ok()?));
    let mut d = Diag {
        protocol: *m.get(2)?,
        state: *m.get(3)?,
        portid: word(4)?,
        dst_portid: word(8)?,
        dst_group: word(12)?,
        ..Default::default()
    };
    let ino = word(16)?;
    let mut attrs = m.get(28..)?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes(attrs[0..2].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(attrs[2..4].try_into().ok()?);
        let body = attrs.get(4..len)?;
        match ty {
            NETLINK_DIAG_GROUPS => {
                d.groups = body.chunks_exact(4).map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes"))).collect();
            }
            NETLINK_DIAG_FLAGS if body.len() >= 4 => d.flags = u32::from_ne_bytes(body[0..4].try_into().ok()?),
            _ => {}
        }
        attrs = attrs.get(len.next_multiple_of(4).min(attrs.len())..)?;
    }
    Some((ino, d))
}

/// A netlink socket of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct NetlinkSock {
    pub ino: u32,
    pub protocol: u32,
    /// `SOCK_RAW` or `SOCK_DGRAM`, which netlink treats alike.
    pub ty: u32,
    /// 0: never bound.
    pub portid: u32,
    /// The joined groups' bitmap, without trailing zero words.
    pub groups: Vec<u32>,
    pub dst_portid: u32,
    /// A group number (1 for bit 0), 0 for none.
    pub dst_group: u32,
    /// Status flags (`O_NONBLOCK`).
    pub flags: u32,
    pub opts: revenant_images::messages::SkOptsEntry,
    /// Bit N: `SOL_NETLINK` option N is on.
    pub nl_opts: u32,
    /// Socket options set that CRIU's entry has no field for.
    pub extra: Vec<revenant_images::messages::SockOptEntry>,
}

/// Reads netlink socket `fd` (inode `ino`) of `pid`; `None` if it is not
/// one.
pub fn dump(pid: i32, fd: i32, ino: u32, flags: u32, diag: &HashMap<u32, Diag>) -> Result<Option<NetlinkSock>> {
    let what = format!("process {pid}: fd {fd} (socket:[{ino}])");
    let sock = crate::procfs::borrow_fd(pid, fd).with_context(|| format!("{what}: taking a copy to read it"))?;
    let s = sock.as_raw_fd();
    let int = |level, opt| sockopt::get::<i32>(s, level, opt).with_context(|| format!("{what}: getsockopt"));
    if int(libc::SOL_SOCKET, libc::SO_DOMAIN)? != libc::AF_NETLINK {
        return Ok(None);
    }
    let protocol = int(libc::SOL_SOCKET, libc::SO_PROTOCOL)? as u32;
    let ty = int(libc::SOL_SOCKET, libc::SO_TYPE)? as u32;
    let d = diag.get(&ino).cloned().unwrap_or_default();
    if d.flags & NDIAG_FLAG_CB_RUNNING != 0 {
        bail!("{what}: a netlink socket (protocol {protocol}) the kernel is still answering a dump request on");
    }
    if sockopt::has_data(s) {
        bail!("{what}: a netlink socket (protocol {protocol}) with messages waiting to be read: not supported");
    }
    let mut groups = d.groups;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let mut nl_opts = 0;
    for opt in FLAG_OPTS {
        if int(libc::SOL_NETLINK, opt as i32)? != 0 {
            nl_opts |= 1 << opt;
        }
    }
    let opts = sockopt::common(s).with_context(|| format!("{what}: reading its options"))?;
    let extra = sockopt::extra(s, libc::AF_NETLINK, ty as i32, protocol as i32)
        .with_context(|| format!("{what}: reading its options"))?;
    Ok(Some(NetlinkSock {
        ino,
        protocol,
        ty,
        portid: d.portid,
        groups,
        dst_portid: d.dst_portid,
        dst_group: d.dst_group,
        flags,
        opts,
        nl_opts,
        extra,
    }))
}

impl NetlinkSock {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        let connected = self.dst_portid != 0 || self.dst_group != 0;
        FileEntry {
            r#type: FdType::Netlinksk as i32,
            id,
            nlsk: Some(NetlinkSkEntry {
                id,
                ino: self.ino,
                protocol: self.protocol,
                state: if connected { CONNECTED } else { 0 },
                flags: self.flags,
                portid: self.portid,
                groups: self.groups.clone(),
                dst_portid: self.dst_portid,
                dst_group: self.dst_group,
                fown,
                opts: self.opts.clone(),
                nl_opts: (self.nl_opts != 0).then_some(self.nl_opts),
                sk_type: (self.ty != libc::SOCK_RAW as u32).then_some(self.ty),
                extra_opts: self.extra.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The socket `e` describes; `at` names it for errors.
    pub fn from_entry(e: &NetlinkSkEntry, at: &str) -> Result<NetlinkSock> {
        let ty = e.sk_type.unwrap_or(libc::SOCK_RAW as u32);
        if ty != libc::SOCK_RAW as u32 && ty != libc::SOCK_DGRAM as u32 {
            bail!("{at}: sk_type {ty}: a netlink socket is raw or datagram");
        }
        if e.protocol >= linux_raw_sys::netlink::MAX_LINKS {
            bail!("{at}: protocol {}: no such netlink family", e.protocol);
        }
        // The kernel has 32 groups per family but for the generic one,
        // whose ids are allocated as families register.
        if e.groups.len() > 1 << 10 {
            bail!("{at}: groups: {} words", e.groups.len());
        }
        if e.portid == 0 && e.groups.iter().any(|&g| g != 0) {
            bail!("{at}: groups joined without a portid, which the kernel never has");
        }
        if e.dst_group > 32 {
            bail!("{at}: dst_group {}: only groups 1 to 32 can be a destination", e.dst_group);
        }
        if let Some(o) = e.nl_opts.filter(|o| o & !FLAG_OPTS.iter().fold(0, |m, &f| m | 1 << f) != 0) {
            bail!("{at}: nl_opts {o:#x}: an option revenant does not know");
        }
        sockopt::check_extra(&e.extra_opts, libc::AF_NETLINK as u32, ty, e.protocol, at)?;
        Ok(NetlinkSock {
            ino: e.ino,
            protocol: e.protocol,
            ty,
            portid: e.portid,
            groups: e.groups.clone(),
            dst_portid: e.dst_portid,
            dst_group: if e.state == CONNECTED { e.dst_group } else { 0 },
            flags: e.flags,
            opts: e.opts.clone(),
            nl_opts: e.nl_opts.unwrap_or(0),
            extra: e.extra_opts.clone(),
        })
    }
}

/// Every netlink socket of `set`, by file id.
pub fn plan(set: &revenant_images::ImageSet) -> Result<Vec<(u32, NetlinkSock)>> {
    let mut out: Vec<(u32, NetlinkSock)> = Vec::new();
    for f in set.processes.iter().flat_map(|p| &p.fds) {
        let Some(e) = set.file(f.id).and_then(|e| e.nlsk.as_ref()) else { continue };
        if !out.iter().any(|(id, _)| *id == f.id) {
            let at = format!("files.img: netlink socket id {} (socket:[{}])", f.id, e.ino);
            out.push((f.id, NetlinkSock::from_entry(e, &at)?));
        }
    }
    Ok(out)
}

/// The sockets the host made.
#[derive(Debug, Default)]
pub struct Made {
    pub fds: Vec<(u32, OwnedFd)>,
    /// Sockets whose port id was taken here, for the log.
    pub notes: Vec<String>,
}

/// Makes every socket of `socks` in the host: bound to its port id and
/// groups, connected, its options set. A port id another socket holds
/// here is given up for one the kernel picks, as CRIU does (kernel
/// families answer whatever id asked; the log says so).
pub fn make(socks: &[(u32, NetlinkSock)]) -> Result<Made> {
    let mut made = Made::default();
    for (id, s) in socks {
        let what = || format!("netlink socket (files.img id {id}, protocol {}, port id {})", s.protocol, s.portid);
        let fd = make_one(s, &mut made.notes).with_context(what)?;
        made.fds.push((*id, fd));
    }
    Ok(made)
}

fn make_one(s: &NetlinkSock, notes: &mut Vec<String>) -> Result<OwnedFd> {
    // SAFETY: a new socket, owned at once.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, s.ty as i32 | libc::SOCK_CLOEXEC, s.protocol as i32) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let f = fd.as_raw_fd();
    let address = |portid: u32, groups: u32| {
        // SAFETY: all zeroes is a valid sockaddr_nl.
        let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        a.nl_family = libc::AF_NETLINK as u16;
        a.nl_pid = portid;
        a.nl_groups = groups;
        a
    };
    let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    if s.portid != 0 {
        let first = s.groups.first().copied().unwrap_or(0);
        let bind = |a: &libc::sockaddr_nl| {
            // SAFETY: the kernel reads `len` bytes of the address.
            match unsafe { libc::bind(f, (a as *const libc::sockaddr_nl).cast(), len) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        };
        match bind(&address(s.portid, first)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                bind(&address(0, first)).context("bind, to a port id of the kernel's")?;
                let now = getsockname(f)?;
                notes.push(format!(
                    "netlink socket:[{}]: port id {} is taken here; it has {now} instead",
                    s.ino, s.portid
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("bind to port id {}", s.portid)),
        }
        // Groups past 32 are joined one by one.
        for (w, &word) in s.groups.iter().enumerate().skip(1) {
            for bit in (0..32).filter(|b| word & 1 << b != 0) {
                let group = (w * 32 + bit + 1) as i32;
                let opt = linux_raw_sys::netlink::NETLINK_ADD_MEMBERSHIP as i32;
                sockopt::set(f, libc::SOL_NETLINK, opt, &group).with_context(|| format!("joining group {group}"))?;
            }
        }
    }
    if s.dst_portid != 0 || s.dst_group != 0 {
        let mask = if s.dst_group == 0 { 0 } else { 1u32 << (s.dst_group - 1) };
        let a = address(s.dst_portid, mask);
        // SAFETY: the kernel reads `len` bytes of the address.
        if unsafe { libc::connect(f, (&a as *const libc::sockaddr_nl).cast(), len) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("connecting to port id {}, group {}", s.dst_portid, s.dst_group));
        }
    }
    for opt in FLAG_OPTS.into_iter().filter(|&o| s.nl_opts & 1 << o != 0) {
        sockopt::set(f, libc::SOL_NETLINK, opt as i32, &1i32)
            .with_context(|| format!("turning netlink option {opt} on"))?;
    }
    sockopt::set_common(f, &s.opts)?;
    sockopt::set_extra(f, &s.extra)?;
    Ok(fd)
}

/// The port id of our netlink socket `f`.
fn getsockname(f: i32) -> Result<u32> {
    // SAFETY: all zeroes is a valid sockaddr_nl.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes.
    if unsafe { libc::getsockname(f, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len) } < 0 {
        return Err(std::io::Error::last_os_error()).context("getsockname");
    }
    Ok(a.nl_pid)
}
