//! IPv4 and IPv6 sockets that hold no connection: TCP sockets listening
//! (with nothing waiting to be accepted) or not yet connected, UDP and
//! UDP-Lite sockets, bound or connected, with the datagrams waiting in
//! them, ping (ICMP datagram) and raw sockets with nothing waiting (their
//! packets come from the network or the kernel, which nothing can queue
//! again; their filters and header options are kept). The
//! dump reads each through a copy of its descriptor (`pidfd_getfd`):
//! addresses, TCP state and backlog (`TCP_INFO`), and the options servers
//! set (`SO_REUSEADDR`, `SO_REUSEPORT`, `SO_KEEPALIVE`, `TCP_NODELAY`,
//! `IP_TOS`, linger, buffer sizes, ...); it writes CRIU's `files.img`
//! INETSK entries. The restore makes each socket in the host before any
//! process exists, options first, then bound to its address (one in use
//! is refused, naming the socket and the address) and listening again.
//! TCP connections are kept with `--tcp-established` (`tcp.rs`: locked,
//! read in repair mode, built again or taken back from the dump's
//! keeper) and refused without it, naming the 4-tuple.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{
    FdType, FileEntry, FownEntry, InetSkEntry, IpOptsEntry, IpOptsRawEntry, SkOptsEntry, TcpOptsEntry,
};

const TCP_ESTABLISHED: u32 = 1;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;

/// One inet socket, as dumped.
#[derive(Debug, Clone, PartialEq)]
pub struct InetSock {
    pub ino: u32,
    pub family: u32,
    /// `SOCK_STREAM` (TCP) or `SOCK_DGRAM` (UDP).
    pub ty: u32,
    pub proto: u32,
    /// TCP's numbering: 7 not connected, 10 listening, 1 (UDP) connected.
    pub state: u32,
    pub local: SocketAddr,
    pub remote: Option<SocketAddr>,
    pub backlog: u32,
    pub flags: u32,
    pub opts: SkOptsEntry,
    pub ip: IpOptsEntry,
    pub tcp: Option<TcpOptsEntry>,
    /// Options set that CRIU's entry has no field for.
    pub extra: Vec<revenant_images::messages::SockOptEntry>,
    pub v6only: Option<bool>,
    /// Datagrams waiting to be read, oldest first.
    pub queue: Vec<Vec<u8>>,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2).
    pub shutdown: u32,
    /// A TCP connection's sequence numbers, options and queues.
    pub stream: Option<Box<super::tcp::Stream>>,
}

use super::sockopt::{SO_BUF_LOCK, get as getopt, set as setopt};
use super::tcp;

fn int(s: i32, level: i32, opt: i32) -> Result<u32> {
    getopt::<libc::c_int>(s, level, opt).map(|v| v as u32)
}

/// A socket address as the kernel has it, and back.
fn sockaddr(s: i32, peer: bool) -> Option<SocketAddr> {
    // SAFETY: all zeroes is a valid sockaddr_storage.
    let mut a: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_storage).cast();
    // SAFETY: the kernel writes at most `len` bytes.
    let r = unsafe { if peer { libc::getpeername(s, p, &mut len) } else { libc::getsockname(s, p, &mut len) } };
    if r < 0 {
        return None;
    }
    from_storage(&a)
}

fn from_storage(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let v = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(Ipv4Addr::from(u32::from_be(v.sin_addr.s_addr)).into(), u16::from_be(v.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let v = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::new(Ipv6Addr::from(v.sin6_addr.s6_addr).into(), u16::from_be(v.sin6_port)))
        }
        _ => None,
    }
}

fn to_storage(a: &SocketAddr, family: u32) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all zeroes is a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let ip6 = |ip: &IpAddr| match ip {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => *v,
    };
    if family == libc::AF_INET as u32 {
        let IpAddr::V4(v4) = a.ip() else { return (s, 0) };
        // SAFETY: sockaddr_in fits in the storage.
        let v = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        v.sin_family = libc::AF_INET as libc::sa_family_t;
        v.sin_port = a.port().to_be();
        v.sin_addr.s_addr = u32::from(v4).to_be();
        (s, size_of::<libc::sockaddr_in>() as libc::socklen_t)
    } else {
        // SAFETY: sockaddr_in6 fits in the storage.
        let v = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
        v.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        v.sin6_port = a.port().to_be();
        v.sin6_addr.s6_addr = ip6(&a.ip()).octets();
        (s, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
    }
}

/// The address as CRIU's images hold it: words in network byte order.
fn words(ip: &IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(v) => vec![u32::from_ne_bytes(v.octets())],
        IpAddr::V6(v) => v.octets().chunks(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

fn from_words(w: &[u32], at: &str) -> Result<IpAddr> {
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
    Ok(match bytes.len() {
        0 => Ipv4Addr::UNSPECIFIED.into(),
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(&bytes[..]).expect("4 bytes")).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..]).expect("16 bytes")).into(),
        n => bail!("{at}: an address of {n} bytes"),
    })
}

fn unspecified(family: u32) -> IpAddr {
    if family == libc::AF_INET as u32 { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() }
}

fn show(local: &SocketAddr, remote: Option<&SocketAddr>) -> String {
    match remote {
        Some(r) => format!("{local} -> {r}"),
        None => local.to_string(),
    }
}

/// TCP connections met by a dump: kept (`--tcp-established`) or refused;
/// the keeper that holds those locked so far, our own copies of them
/// (with their `SO_REUSEADDR`), and their names.
#[derive(Debug, Default)]
pub struct Connections {
    pub keep: bool,
    /// Listeners with connections waiting to be accepted are dumped
    /// without them (`--skip-in-flight`), each named in `skipped`.
    pub skip_in_flight: bool,
    pub skipped: Vec<String>,
    keeper: Option<super::tcp_keeper::Guard>,
    held: Vec<(OwnedFd, i32)>,
    pub locked: Vec<String>,
}

impl Connections {
    /// Unlocks every connection: through the keeper, and here too, so
    /// that a keeper gone or unanswering cannot leave one locked. Returns
    /// once they are unlocked; the program may run.
    pub fn release(&mut self) -> Result<()> {
        // The keeper's answer matters little: our copies are unlocked too.
        if let Some(k) = self.keeper.take() {
            let _ = k.release();
        }
        let mut res = Ok(());
        for (fd, reuseaddr) in self.held.drain(..) {
            if let Err(e) = tcp::unlock(fd.as_raw_fd(), reuseaddr) {
                res = Err(e);
            }
        }
        res.context("unlocking the TCP connections")
    }

    /// The tree is gone: the keeper holds the connections, locked, for a
    /// restore from the directory `name` stands for. Returns its PID.
    pub fn keep(&mut self, name: &str) -> Result<u32> {
        let keeper = self.keeper.take().context("no TCP lock's keeper")?;
        let pid = keeper.pid;
        keeper.keep(name).with_context(|| format!("the TCP lock's keeper (process {pid})"))?;
        // Our copies close without a word: the keeper has its own.
        self.held.clear();
        Ok(pid)
    }

    pub fn is_empty(&self) -> bool {
        self.locked.is_empty()
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        if !self.held.is_empty() || self.keeper.is_some() {
            let _ = self.release();
        }
    }
}

/// The address family (`SO_DOMAIN`) of socket `fd` of `pid`.
pub fn domain(pid: i32, fd: i32) -> Result<u32> {
    let sock = crate::procfs::borrow_fd(pid, fd)
        .with_context(|| format!("process {pid}: fd {fd}: taking a copy of the socket to read it"))?;
    int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// Reads inet socket `fd` (inode `ino`) of `pid`; `None` if it is not one.
/// A TCP connection is locked (into `conns`) once all else is read.
pub fn dump(pid: i32, fd: i32, ino: u32, flags: u32, conns: &mut Connections) -> Result<Option<InetSock>> {
    let what = format!("process {pid}: fd {fd} (socket:[{ino}])");
    let sock = crate::procfs::borrow_fd(pid, fd).with_context(|| format!("{what}: taking a copy to read it"))?;
    let s = sock.as_raw_fd();
    let family = int(s, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    if family != libc::AF_INET as u32 && family != libc::AF_INET6 as u32 {
        return Ok(None);
    }
    let (ty, proto) = (int(s, libc::SOL_SOCKET, libc::SO_TYPE)?, int(s, libc::SOL_SOCKET, libc::SO_PROTOCOL)?);
    let local = sockaddr(s, false).with_context(|| format!("{what}: getsockname"))?;
    let remote = sockaddr(s, true);
    let tcp = ty == libc::SOCK_STREAM as u32 && proto == libc::IPPROTO_TCP as u32;
    let udp = ty == libc::SOCK_DGRAM as u32 && [libc::IPPROTO_UDP, libc::IPPROTO_UDPLITE].contains(&(proto as i32));
    let (icmp, raw) = (is_icmp(family, ty, proto), ty == libc::SOCK_RAW as u32);
    if !(tcp || udp || icmp || raw) {
        bail!(
            "{what}: an inet socket of type {ty}, protocol {proto}: only TCP, UDP, UDP-Lite, ICMP (ping) and raw \
             sockets are supported"
        );
    }
    if udp && proto == libc::IPPROTO_UDPLITE as u32 {
        for (opt, name) in [(UDPLITE_SEND_CSCOV, "UDPLITE_SEND_CSCOV"), (UDPLITE_RECV_CSCOV, "UDPLITE_RECV_CSCOV")] {
            if int(s, libc::IPPROTO_UDPLITE, opt)? != 0 {
                bail!("{what}: a UDP-Lite socket with a checksum coverage ({name}): not supported");
            }
        }
    }
    // Packets from the network or the kernel: nobody could send them
    // to it again.
    if (icmp || raw) && super::sockopt::has_data(s) {
        bail!("{what}: packets wait to be read on this {} socket: not supported", kind_name(ty, proto));
    }
    let (state, backlog) = if tcp {
        let info: libc::tcp_info = getopt(s, libc::IPPROTO_TCP, libc::TCP_INFO)?;
        let state = u32::from(info.tcpi_state);
        match state {
            TCP_LISTEN if info.tcpi_unacked != 0 && !conns.skip_in_flight => bail!(
                "{what}: the TCP socket listening on {local} has {} connections waiting to be accepted: not \
                 supported (--skip-in-flight dumps it without them: their clients are reset)",
                info.tcpi_unacked
            ),
            TCP_LISTEN if info.tcpi_unacked != 0 => {
                conns.skipped.push(format!("{} connections waiting on {local}", info.tcpi_unacked));
                (state, info.tcpi_sacked)
            }
            TCP_LISTEN => (state, info.tcpi_sacked),
            TCP_CLOSE => (state, 0),
            s if is_connection(s) && !conns.keep => bail!(
                "{what}: a TCP connection ({}, {}): dump with --tcp-established to keep it",
                show(&local, remote.as_ref()),
                revenant_images::tcp_state_name(s)
            ),
            s if is_connection(s) => (s, 0),
            _ => bail!(
                "{what}: a TCP socket in state {} ({}): not supported",
                revenant_images::tcp_state_name(state),
                show(&local, remote.as_ref())
            ),
        }
    } else {
        (if remote.is_some() { TCP_ESTABLISHED } else { TCP_CLOSE }, 0)
    };
    let so = |o| int(s, libc::SOL_SOCKET, o);
    let filter = super::sockopt::filter(s).with_context(|| format!("{what}: reading its socket filter"))?;
    if !filter.is_empty() && tcp && is_connection(state) {
        // The lock below takes the filter's place until the program runs.
        bail!(
            "{what}: the TCP connection {} has a socket filter (SO_ATTACH_FILTER): not supported",
            show(&local, remote.as_ref())
        );
    }
    let dev: [u8; libc::IFNAMSIZ] = getopt(s, libc::SOL_SOCKET, libc::SO_BINDTODEVICE).unwrap_or_default();
    let dev = String::from_utf8_lossy(&dev[..dev.iter().position(|&b| b == 0).unwrap_or(dev.len())]).into_owned();
    let tv = |o| getopt::<libc::timeval>(s, libc::SOL_SOCKET, o).map(|t| (t.tv_sec as u64, t.tv_usec as u64));
    let (snd, rcv) = (tv(libc::SO_SNDTIMEO)?, tv(libc::SO_RCVTIMEO)?);
    let linger: libc::linger = getopt(s, libc::SOL_SOCKET, libc::SO_LINGER)?;
    let opts = SkOptsEntry {
        so_sndbuf: so(libc::SO_SNDBUF)?,
        so_rcvbuf: so(libc::SO_RCVBUF)?,
        so_snd_tmo_sec: snd.0,
        so_snd_tmo_usec: snd.1,
        so_rcv_tmo_sec: rcv.0,
        so_rcv_tmo_usec: rcv.1,
        reuseaddr: Some(so(libc::SO_REUSEADDR)? != 0),
        so_priority: Some(so(libc::SO_PRIORITY)?),
        so_rcvlowat: Some(so(libc::SO_RCVLOWAT)?),
        so_mark: Some(so(libc::SO_MARK)?),
        so_reuseport: Some(so(libc::SO_REUSEPORT)? != 0),
        so_broadcast: Some(so(libc::SO_BROADCAST)? != 0),
        so_keepalive: Some(so(libc::SO_KEEPALIVE)? != 0),
        so_oobinline: Some(so(libc::SO_OOBINLINE)?),
        so_linger: (linger.l_onoff != 0).then_some(linger.l_linger as u32),
        so_buf_lock: Some(so(SO_BUF_LOCK)?),
        // Newer kernels keep these for unix and netlink sockets only.
        so_passcred: so(libc::SO_PASSCRED).ok().map(|v| v != 0),
        so_passsec: so(libc::SO_PASSSEC).ok().map(|v| v != 0),
        so_dontroute: Some(so(libc::SO_DONTROUTE)? != 0),
        so_no_check: Some(so(libc::SO_NO_CHECK)? != 0),
        so_filter: filter,
        so_bound_dev: (!dev.is_empty()).then_some(dev),
        ..Default::default()
    };
    let v4 = family == libc::AF_INET as u32;
    let ip = IpOptsEntry {
        freebind: Some(
            if v4 { int(s, libc::SOL_IP, libc::IP_FREEBIND)? } else { int(s, libc::SOL_IPV6, IPV6_FREEBIND)? } != 0,
        ),
        tos: Some(if v4 { int(s, libc::SOL_IP, libc::IP_TOS)? } else { int(s, libc::SOL_IPV6, libc::IPV6_TCLASS)? }),
        ttl: v4.then(|| int(s, libc::SOL_IP, libc::IP_TTL)).transpose()?,
        pktinfo: Some(
            if v4 { int(s, libc::SOL_IP, libc::IP_PKTINFO)? } else { int(s, libc::SOL_IPV6, libc::IPV6_RECVPKTINFO)? }
                != 0,
        ),
        raw: raw.then(|| raw_opts(s, v4, proto)).transpose().with_context(|| format!("{what}: raw socket options"))?,
        ..Default::default()
    };
    let tcp_opts = tcp
        .then(|| -> Result<TcpOptsEntry> {
            let t = |o| int(s, libc::IPPROTO_TCP, o);
            Ok(TcpOptsEntry {
                cork: Some(t(libc::TCP_CORK)? != 0),
                nodelay: Some(t(libc::TCP_NODELAY)? != 0),
                keepcnt: Some(t(libc::TCP_KEEPCNT)?),
                keepidle: Some(t(libc::TCP_KEEPIDLE)?),
                keepintvl: Some(t(libc::TCP_KEEPINTVL)?),
                ..Default::default()
            })
        })
        .transpose()?;
    let v6only = (!v4).then(|| int(s, libc::SOL_IPV6, libc::IPV6_V6ONLY).map(|v| v != 0)).transpose()?;
    let queue = if udp { peek_datagrams(s).with_context(|| format!("{what}: reading its queue"))? } else { vec![] };
    let shutdown = if icmp {
        // No sock_diag module lists ping sockets.
        poll_shutdown(s)
    } else {
        shutdown_of(family, ty, proto, ino).with_context(|| format!("{what}: asking sock_diag"))?
    };
    let mut extra = super::sockopt::extra(s, family as i32, ty as i32, proto as i32)
        .with_context(|| format!("{what}: reading its options"))?;
    if tcp && is_connection(state) {
        // What the handshake chose, not the program.
        let chosen = [libc::TCP_MAXSEG, libc::TCP_WINDOW_CLAMP];
        extra.retain(|o| !(o.level == libc::SOL_TCP as u32 && chosen.contains(&(o.name as i32))));
    }
    let mut state = state;
    let stream = if tcp && is_connection(state) {
        let name = show(&local, remote.as_ref());
        let keeper = match &mut conns.keeper {
            Some(k) => k,
            none => none.insert(
                super::tcp_keeper::Guard::start().with_context(|| format!("{what}: starting the TCP lock's keeper"))?,
            ),
        };
        // Handed over before it is locked: whenever the dump dies from
        // here on, the keeper unlocks it.
        let reuseaddr = i32::from(opts.reuseaddr == Some(true));
        keeper
            .hold(s, reuseaddr)
            .with_context(|| format!("{what}: handing the connection {name} to the TCP lock's keeper"))?;
        conns.held.push((sock.try_clone().context("dup")?, reuseaddr));
        tcp::lock(s).with_context(|| format!("{what}: locking the connection {name}"))?;
        conns.locked.push(name.clone());
        crate::fault::step(|| format!("connection {name} locked"))?;
        let (st, now) = tcp::read(s, reuseaddr).with_context(|| format!("{what}: reading the connection {name}"))?;
        if !is_connection(now) {
            bail!(
                "{what}: the connection {name} went to state {} while it was being locked",
                revenant_images::tcp_state_name(now)
            );
        }
        // Read locked: the state that goes with the sequence numbers.
        state = now;
        Some(Box::new(st))
    } else {
        None
    };
    let (remote, ip, tcp) = (remote, ip, tcp_opts);
    Ok(Some(InetSock {
        ino,
        family,
        ty,
        proto,
        state,
        local,
        remote,
        backlog,
        flags,
        opts,
        ip,
        tcp,
        extra,
        v6only,
        queue,
        shutdown,
        stream,
    }))
}

/// TCP states with a connection in a `tcp-stream` image.
fn is_connection(state: u32) -> bool {
    revenant_images::tcp_state_has_stream(state)
}

/// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) of the socket with inode
/// `ino`: only `sock_diag` tells (0 for one it does not list).
fn shutdown_of(family: u32, ty: u32, proto: u32, ino: u32) -> Result<u32> {
    // inet_diag_req_v2: family, protocol, ext, pad (raw sockets: their
    // protocol, asked as IPPROTO_RAW), states, then a zero socket id (48
    // bytes): every socket of that kind.
    let mut req = [0u8; 56];
    req[0] = family as u8;
    if ty == libc::SOCK_RAW as u32 {
        req[1] = libc::IPPROTO_RAW as u8;
        req[3] = proto as u8;
    } else {
        req[1] = proto as u8;
    }
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let mut found = None;
    super::unixsk::sock_diag(&req, |m| {
        // inet_diag_msg: 4 bytes, the id (48), expires, rqueue, wqueue,
        // uid, inode; then attributes.
        if m.len() < 72 || u32::from_ne_bytes([m[68], m[69], m[70], m[71]]) != ino {
            return;
        }
        let mut attrs = &m[72..];
        let mut shut = 0;
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
            if len < 4 || len > attrs.len() {
                break;
            }
            if ty == INET_DIAG_SHUTDOWN && len > 4 {
                shut = u32::from(attrs[4] & 3);
            }
            attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
        }
        found = Some(shut);
    })?;
    // Sockets never bound are in no table sock_diag walks.
    Ok(found.unwrap_or(0))
}

const INET_DIAG_SHUTDOWN: u16 = 8;
/// UDP-Lite's checksum coverage (linux/udp.h).
const UDPLITE_SEND_CSCOV: i32 = 10;
const UDPLITE_RECV_CSCOV: i32 = 11;
/// Raw sockets' own options (linux/in.h, linux/in6.h, linux/icmp.h,
/// linux/icmpv6.h).
const IP_NODEFRAG: i32 = 22;
const IPV6_HDRINCL: i32 = 36;
const ICMP_FILTER: i32 = 1;
const ICMPV6_FILTER: i32 = 1;
const SOL_ICMPV6: i32 = 58;
/// Mobile IPv6's header, whose raw sockets the kernel checksums at
/// offset 4 from the start.
const IPPROTO_MH: u32 = 135;

/// A ping socket (`SOCK_DGRAM` with ICMP, or ICMPv6 on IPv6).
fn is_icmp(family: u32, ty: u32, proto: u32) -> bool {
    let icmp = if family == libc::AF_INET as u32 { libc::IPPROTO_ICMP } else { libc::IPPROTO_ICMPV6 };
    ty == libc::SOCK_DGRAM as u32 && proto == icmp as u32
}

/// How messages name a socket of this type and protocol.
fn kind_name(ty: u32, proto: u32) -> &'static str {
    match (ty as i32, proto as i32) {
        (libc::SOCK_STREAM, _) => "TCP",
        (libc::SOCK_RAW, _) => "raw",
        (_, libc::IPPROTO_UDP) => "UDP",
        (_, libc::IPPROTO_UDPLITE) => "UDP-Lite",
        _ => "ICMP",
    }
}

/// The shutdown bits poll shows: reading shut (`POLLRDHUP`), both
/// (`POLLHUP`); writing alone shows nowhere.
fn poll_shutdown(s: i32) -> u32 {
    let mut p = libc::pollfd { fd: s, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one pollfd of ours, no waiting.
    if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
        return 0;
    }
    if p.revents & libc::POLLHUP != 0 { 3 } else { u32::from(p.revents & libc::POLLRDHUP != 0) }
}

/// The options of raw socket `s` (CRIU's `ip_opts_raw_entry`). A raw
/// IPv6 socket's checksum offset (`IPV6_CHECKSUM`), which CRIU's entry
/// keeps only as a flag, is refused when set.
fn raw_opts(s: i32, v4: bool, proto: u32) -> Result<IpOptsRawEntry> {
    let mut r = IpOptsRawEntry::default();
    if v4 {
        r.hdrincl = Some(int(s, libc::SOL_IP, libc::IP_HDRINCL)? != 0);
        r.nodefrag = Some(int(s, libc::SOL_IP, IP_NODEFRAG)? != 0);
        if proto == libc::IPPROTO_ICMP as u32 {
            r.icmpv_filter = vec![int(s, libc::SOL_RAW, ICMP_FILTER)?];
        }
    } else {
        r.hdrincl = Some(int(s, libc::SOL_IPV6, IPV6_HDRINCL)? != 0);
        if proto == libc::IPPROTO_ICMPV6 as u32 {
            r.icmpv_filter = getopt::<[u32; 8]>(s, SOL_ICMPV6, ICMPV6_FILTER)?.to_vec();
        } else if getopt::<i32>(s, libc::SOL_IPV6, libc::IPV6_CHECKSUM)? != if proto == IPPROTO_MH { 4 } else { -1 } {
            bail!("a checksum offset (IPV6_CHECKSUM): not supported");
        }
    }
    Ok(r)
}

/// Sets what [`raw_opts`] read on our socket `f`.
fn set_raw_opts(f: i32, family: u32, proto: u32, r: &IpOptsRawEntry) -> Result<()> {
    let v4 = family == libc::AF_INET as u32;
    if let Some(h) = r.hdrincl {
        let (level, opt) = if v4 { (libc::SOL_IP, libc::IP_HDRINCL) } else { (libc::SOL_IPV6, IPV6_HDRINCL) };
        setopt(f, level, opt, &i32::from(h)).context("IP_HDRINCL")?;
    }
    if v4 && r.nodefrag == Some(true) {
        setopt(f, libc::SOL_IP, IP_NODEFRAG, &1i32).context("IP_NODEFRAG")?;
    }
    match (v4, r.icmpv_filter.as_slice()) {
        (_, []) => {}
        (true, [w]) if proto == libc::IPPROTO_ICMP as u32 => setopt(f, libc::SOL_RAW, ICMP_FILTER, w)?,
        (false, w) if w.len() == 8 && proto == libc::IPPROTO_ICMPV6 as u32 => {
            let words: [u32; 8] = w.try_into().expect("8 words");
            setopt(f, SOL_ICMPV6, ICMPV6_FILTER, &words)?;
        }
        (_, w) => bail!("an ICMP filter of {} words on a socket of protocol {proto}", w.len()),
    }
    Ok(())
}
const IPV6_FREEBIND: i32 = linux_raw_sys::net::IPV6_FREEBIND as i32;

/// The datagrams waiting in a UDP socket, left there: peeked one after
/// the other from a peek offset of 0, put back as it was.
fn peek_datagrams(s: i32) -> Result<Vec<Vec<u8>>> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(s, libc::FIONREAD, &mut queued) } < 0 || queued == 0 {
        return Ok(vec![]);
    }
    let old: libc::c_int = getopt(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    setopt(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, &0i32)
        .context("SO_PEEK_OFF (this kernel cannot peek UDP queues)")?;
    let mut out = vec![];
    let mut buf = vec![0u8; 1 << 16];
    let res = loop {
        // SAFETY: the kernel writes into our buffer.
        let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            break if e.raw_os_error() == Some(libc::EAGAIN) { Ok(()) } else { Err(e).context("peeking") };
        }
        out.push(buf[..n as usize].to_vec());
        if out.len() > 4096 {
            break Err(anyhow::anyhow!("more than 4096 datagrams queued"));
        }
    };
    setopt(s, libc::SOL_SOCKET, libc::SO_PEEK_OFF, &old).context("putting SO_PEEK_OFF back")?;
    res.map(|()| out)
}

impl InetSock {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        FileEntry {
            r#type: FdType::Inetsk as i32,
            id,
            isk: Some(InetSkEntry {
                id,
                ino: self.ino,
                family: self.family,
                r#type: self.ty,
                proto: self.proto,
                state: self.state,
                src_port: u32::from(self.local.port()),
                dst_port: self.remote.map_or(0, |r| u32::from(r.port())),
                flags: self.flags,
                backlog: self.backlog,
                src_addr: words(&self.local.ip()),
                // CRIU wants both addresses, zeros for none.
                dst_addr: words(&self.remote.map_or_else(|| unspecified(self.family), |r| r.ip())),
                fown,
                opts: self.opts.clone(),
                v6only: self.v6only,
                ip_opts: Some(self.ip.clone()),
                tcp_opts: self.tcp.clone(),
                extra_opts: self.extra.clone(),
                shutdown: (self.shutdown != 0).then_some(self.shutdown),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The socket entry `e` (`at` for errors) of `set`.
    pub fn from_entry(e: &InetSkEntry, set: &revenant_images::ImageSet, keep: bool, at: &str) -> Result<InetSock> {
        let tcp = e.r#type == libc::SOCK_STREAM as u32 && e.proto == libc::IPPROTO_TCP as u32;
        let udp = e.r#type == libc::SOCK_DGRAM as u32
            && [libc::IPPROTO_UDP, libc::IPPROTO_UDPLITE].contains(&(e.proto as i32));
        let (icmp, raw) = (is_icmp(e.family, e.r#type, e.proto), e.r#type == libc::SOCK_RAW as u32);
        if e.family != libc::AF_INET as u32 && e.family != libc::AF_INET6 as u32 || !(tcp || udp || icmp || raw) {
            bail!(
                "{at}: family {}, type {}, protocol {}: only TCP, UDP, UDP-Lite, ICMP and raw sockets over IPv4 \
                 and IPv6 are restored",
                e.family,
                e.r#type,
                e.proto
            );
        }
        if (icmp || raw) && set.sk_queues.iter().any(|(p, _)| p.id_for == e.id) {
            bail!(
                "{at}: packets queued on a {} socket: only the network could queue them",
                kind_name(e.r#type, e.proto)
            );
        }
        super::sockopt::check_extra(&e.extra_opts, e.family, e.r#type, e.proto, at)?;
        if let Some(r) = e.ip_opts.as_ref().and_then(|o| o.raw.as_ref()) {
            let words = if e.family == libc::AF_INET as u32 { 1 } else { 8 };
            if !r.icmpv_filter.is_empty() && (!raw || r.icmpv_filter.len() != words) {
                bail!(
                    "{at}: ip_opts.raw.icmpv_filter: {} words, not {words} on a raw ICMP socket",
                    r.icmpv_filter.len()
                );
            }
        }
        let port = |p: u32| u16::try_from(p).map_err(|_| anyhow::anyhow!("{at}: port {p}"));
        if let Some(dev) = e.opts.so_bound_dev.as_deref()
            && (dev.len() >= libc::IFNAMSIZ || dev.contains(['\0', '/']) || dev.chars().any(char::is_whitespace))
        {
            bail!("{at}: opts.so_bound_dev {dev:?} is not a network device name");
        }
        let local = SocketAddr::new(from_words(&e.src_addr, at)?, port(e.src_port)?);
        let remote = (!e.dst_addr.is_empty() && e.dst_port != 0)
            .then(|| Ok::<_, anyhow::Error>(SocketAddr::new(from_words(&e.dst_addr, at)?, port(e.dst_port)?)))
            .transpose()?;
        let mut stream = None;
        match (tcp, e.state) {
            (true, TCP_LISTEN | TCP_CLOSE) | (false, TCP_CLOSE | TCP_ESTABLISHED) => {}
            (true, s) if is_connection(s) => {
                let name = show(&local, remote.as_ref());
                if !keep {
                    bail!(
                        "{at}: a TCP connection ({name}, {}): restore with --tcp-established",
                        revenant_images::tcp_state_name(s)
                    );
                }
                if remote.is_none() {
                    bail!("{at}: a TCP connection without a peer (dst_addr, dst_port)");
                }
                let img = format!("tcp-stream-{:x}.img", e.ino);
                let (entry, inq, outq) =
                    set.tcp_streams.get(&e.ino).with_context(|| format!("{at}: the connection {name}: no {img}"))?;
                if entry.unsq_len.is_none_or(|u| u > entry.outq_len) {
                    bail!("{img}: unsq_len {:?}: missing or more than outq_len {}", entry.unsq_len, entry.outq_len);
                }
                let st = tcp::Stream { entry: entry.clone(), inq: inq.clone(), outq: outq.clone() };
                stream = Some(Box::new(st));
            }
            (_, s) => bail!("{at}: a socket in TCP state {s} ({}): not restored", revenant_images::tcp_state_name(s)),
        }
        if e.ifname.as_ref().is_some_and(|n| !n.is_empty()) {
            bail!("{at}: bound to interface {:?}: not restored yet", e.ifname);
        }
        Ok(InetSock {
            ino: e.ino,
            family: e.family,
            ty: e.r#type,
            proto: e.proto,
            state: e.state,
            local,
            remote,
            backlog: e.backlog,
            flags: e.flags,
            opts: e.opts.clone(),
            ip: e.ip_opts.clone().unwrap_or_default(),
            tcp: e.tcp_opts.clone(),
            extra: e.extra_opts.clone(),
            v6only: e.v6only,
            queue: set.sk_queues.iter().filter(|(p, _)| p.id_for == e.id).map(|(_, d)| d.clone()).collect(),
            shutdown: e.shutdown.unwrap_or(0) & 3,
            stream,
        })
    }

    /// Its queue as `sk-queues.img` entries.
    pub fn packets(&self, id: u32) -> Vec<(revenant_images::messages::SkPacketEntry, Vec<u8>)> {
        let e = |m: &Vec<u8>| revenant_images::messages::SkPacketEntry {
            id_for: id,
            length: m.len() as u32,
            ..Default::default()
        };
        self.queue.iter().map(|m| (e(m), m.clone())).collect()
    }
}

/// Every inet socket the tree's fds are on, once; TCP connections only
/// if `keep` (`--tcp-established`).
pub fn plan(set: &revenant_images::ImageSet, keep: bool) -> Result<Vec<(u32, InetSock)>> {
    let mut out: Vec<(u32, InetSock)> = Vec::new();
    for f in set.processes.iter().flat_map(|p| &p.fds) {
        let Some(e) = set.file(f.id).and_then(|e| e.isk.as_ref()) else { continue };
        if !out.iter().any(|(id, _)| *id == f.id) {
            let at = format!("files.img: inet socket id {} (socket:[{}])", f.id, e.ino);
            out.push((f.id, InetSock::from_entry(e, set, keep, &at)?));
        }
    }
    Ok(out)
}

/// The sockets the host made, and the TCP connections among them, held
/// still until [`Made::release`].
#[derive(Debug, Default)]
pub struct Made {
    pub fds: Vec<(u32, OwnedFd)>,
    locks: Vec<tcp::Lock>,
    kept: Option<super::tcp_keeper::Kept>,
    /// What became of each connection, for the log.
    pub notes: Vec<String>,
}

impl Made {
    /// Every process is restored: the connections go on.
    pub fn release(&mut self) -> Result<()> {
        self.locks.drain(..).try_for_each(tcp::Lock::release)
    }

    /// Every process is restored: the keeper that held the connections
    /// goes, before they are released (one left serving would hold sockets
    /// the programs use).
    pub fn done(&mut self) -> Result<()> {
        self.kept.take().map_or(Ok(()), super::tcp_keeper::Kept::done)
    }
}

/// Makes every socket of `socks` in the host: options, then bound to its
/// address, listening, connected (UDP), its datagrams sent to it again
/// (from a socket of ours: their sender is lost), status flags. A TCP
/// connection is taken back from the dump's keeper at `keeper` if it
/// still holds it, else built again from its image.
pub fn make(socks: &[(u32, InetSock)], keeper: Option<&str>) -> Result<Made> {
    let mut made = Made::default();
    // Sockets of the tree sharing an address (SO_REUSEPORT groups, one of
    // which may have turned the option off since it bound) all bind with
    // the option on; each gets its own value once all are bound.
    let bound = |s: &InetSock| s.stream.is_none() && s.local.port() != 0;
    let shared: Vec<SocketAddr> = socks
        .iter()
        .filter(|(_, s)| bound(s) && socks.iter().filter(|(_, o)| bound(o) && o.local == s.local).count() > 1)
        .map(|(_, s)| s.local)
        .collect();
    if let Some(name) = keeper.filter(|_| socks.iter().any(|(_, s)| s.stream.is_some())) {
        made.kept = super::tcp_keeper::take(name)?;
    }
    for (id, s) in socks {
        let kind = kind_name(s.ty, s.proto);
        let what = format!("{kind} socket (files.img id {id}, {})", show(&s.local, s.remote.as_ref()));
        let name = show(&s.local, s.remote.as_ref());
        let reuse = s.opts.reuseaddr.unwrap_or(false);
        let fd = match s.stream.as_ref().and(made.kept.as_mut()).and_then(|k| take_kept(k, s)) {
            Some(fd) => {
                made.notes.push(format!("connection {name}: taken back from the dump's lock"));
                fd
            }
            None => {
                let fd = make_one(s, shared.contains(&s.local)).with_context(|| what.clone())?;
                if s.stream.is_some() {
                    made.notes.push(format!("connection {name}: built again from tcp-stream-{:x}.img", s.ino));
                }
                fd
            }
        };
        if s.stream.is_some() {
            let copy = fd.try_clone().with_context(|| format!("{what}: dup"))?;
            made.locks.push(tcp::Lock::new(copy, reuse, name, s.opts.so_filter.clone()));
        }
        made.fds.push((*id, fd));
    }
    for ((id, s), (_, fd)) in socks.iter().zip(&made.fds).filter(|((_, s), _)| bound(s) && shared.contains(&s.local)) {
        let reuseport = i32::from(s.opts.so_reuseport.unwrap_or(false));
        setopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, &reuseport)
            .with_context(|| format!("files.img id {id}: setting SO_REUSEPORT back"))?;
    }
    Ok(made)
}

/// The kept socket that is `s`: the same inode, the same addresses.
fn take_kept(k: &mut super::tcp_keeper::Kept, s: &InetSock) -> Option<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let same = |f: &OwnedFd| {
        let ino = f.try_clone().ok().and_then(|c| std::fs::File::from(c).metadata().ok()).map(|m| m.ino());
        let raw = f.as_raw_fd();
        ino == Some(u64::from(s.ino)) && sockaddr(raw, false) == Some(s.local) && sockaddr(raw, true) == s.remote
    };
    let at = k.socks.iter().position(same)?;
    Some(k.socks.remove(at))
}

/// Makes `s`; `share` binds it with `SO_REUSEPORT` on whatever its own
/// value, for another socket of the tree binds the same address.
fn make_one(s: &InetSock, share: bool) -> Result<OwnedFd> {
    configure(s, bound(s, share)?)
}

/// Every socket of `socks` that is bound (connections aside: repair mode
/// binds those beside anything), made and bound as [`make`] would, then
/// closed at once: whether each address can be had here. A listener is
/// not made to listen, so nothing can connect to it meanwhile.
pub fn problems(socks: &[(u32, InetSock)]) -> Vec<anyhow::Error> {
    let is_bound = |s: &InetSock| s.stream.is_none() && !(s.local.port() == 0 && s.local.ip().is_unspecified());
    let shared = |s: &InetSock| socks.iter().filter(|(_, o)| is_bound(o) && o.local == s.local).count() > 1;
    let mut out = vec![];
    for (id, s) in socks.iter().filter(|(_, s)| is_bound(s)) {
        let kind = kind_name(s.ty, s.proto);
        let what = format!("{kind} socket (files.img id {id}, {})", show(&s.local, s.remote.as_ref()));
        // Sockets sharing an address bind with SO_REUSEPORT, as in `make`;
        // the first one bound stands for them all.
        if let Err(e) = bound(s, shared(s)) {
            out.push(e.context(what));
        }
    }
    out
}

/// A socket for `s`, its options that matter to binding set, bound to its
/// address.
fn bound(s: &InetSock, share: bool) -> Result<OwnedFd> {
    let fd = if s.stream.is_some() {
        // In repair mode, which lets it bind beside the listener.
        tcp::new_locked(s.family)?
    } else {
        // SAFETY: a new socket, owned at once.
        let raw = unsafe { libc::socket(s.family as i32, s.ty as i32 | libc::SOCK_CLOEXEC, s.proto as i32) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket");
        }
        // SAFETY: just made.
        unsafe { OwnedFd::from_raw_fd(raw) }
    };
    let f = fd.as_raw_fd();
    let o = &s.opts;
    let flag = |v: Option<bool>| i32::from(v.unwrap_or(false));
    // A raw socket takes packets from the moment it exists: its filter
    // first.
    if let Some(r) = s.ip.raw.as_ref().filter(|_| s.ty == libc::SOCK_RAW as u32) {
        set_raw_opts(f, s.family, s.proto, r)?;
    }
    // Some bear on binding (IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT) or
    // listening (TCP_FASTOPEN, TCP_SAVE_SYN).
    super::sockopt::set_extra(f, &s.extra)?;
    // A listener binds beside the connections it accepted (which a restore
    // may have made already): with SO_REUSEADDR, put back once it listens.
    // Repair mode has its own.
    let listener = s.state == TCP_LISTEN;
    if s.stream.is_none() {
        setopt(f, libc::SOL_SOCKET, libc::SO_REUSEADDR, &(flag(o.reuseaddr) | i32::from(listener)))?;
    }
    setopt(f, libc::SOL_SOCKET, libc::SO_REUSEPORT, &(flag(o.so_reuseport) | i32::from(share)))?;
    // A raw socket has its protocol for a port from the start, which
    // fixes the option.
    if let Some(v6) = s.v6only.filter(|_| s.ty != libc::SOCK_RAW as u32) {
        setopt(f, libc::SOL_IPV6, libc::IPV6_V6ONLY, &i32::from(v6))?;
    }
    if s.ip.freebind == Some(true) {
        if s.family == libc::AF_INET as u32 {
            setopt(f, libc::SOL_IP, libc::IP_FREEBIND, &1i32)?;
        } else {
            setopt(f, libc::SOL_IPV6, IPV6_FREEBIND, &1i32)?;
        }
    }
    if let Some(dev) = o.so_bound_dev.as_deref().filter(|d| !d.is_empty()) {
        // By name, as CRIU keeps it: the device must be here by that name.
        // SAFETY: the kernel reads `dev.len()` bytes of the name.
        if unsafe { libc::setsockopt(f, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, dev.as_ptr().cast(), dev.len() as _) }
            < 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("binding it to the network device {dev:?} (SO_BINDTODEVICE)"));
        }
    }
    let unbound = s.local.port() == 0 && s.local.ip().is_unspecified();
    if !unbound {
        let (a, len) = to_storage(&s.local, s.family);
        // SAFETY: the kernel reads `len` bytes of the address.
        let bind = || unsafe { libc::bind(f, (&a as *const libc::sockaddr_storage).cast(), len) };
        let freebind = |v: i32| {
            if s.family == libc::AF_INET as u32 {
                setopt(f, libc::SOL_IP, libc::IP_FREEBIND, &v)
            } else {
                setopt(f, libc::SOL_IPV6, IPV6_FREEBIND, &v)
            }
        };
        let mut r = if bind() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
        // Bound while it could bind to any address, and no longer can:
        // bound the same way, then put back.
        if r.as_ref().is_err_and(|e| e.raw_os_error() == Some(libc::EADDRNOTAVAIL)) && s.ip.freebind != Some(true) {
            freebind(1)?;
            r = if bind() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
            freebind(0)?;
        }
        if let Err(e) = r {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                bail!("the address {} is in use on this machine", s.local);
            }
            return Err(e).with_context(|| format!("binding to {}", s.local));
        }
    }
    Ok(fd)
}

/// `s` made whole once `fd` is bound: listening, its datagrams, connected,
/// shut down, the rest of its options.
fn configure(s: &InetSock, fd: OwnedFd) -> Result<OwnedFd> {
    let f = fd.as_raw_fd();
    let o = &s.opts;
    let flag = |v: Option<bool>| i32::from(v.unwrap_or(false));
    if s.state == TCP_LISTEN {
        // SAFETY: a plain call on our socket.
        if unsafe { libc::listen(f, s.backlog as i32) } < 0 {
            return Err(std::io::Error::last_os_error()).context("listen");
        }
        setopt(f, libc::SOL_SOCKET, libc::SO_REUSEADDR, &flag(o.reuseaddr))?;
    }
    // Datagrams first: once connected, it would take them from its peer
    // only; those already queued stay.
    requeue(s, f)?;
    if let (Some(r), TCP_ESTABLISHED, None) = (&s.remote, s.state, &s.stream) {
        let (a, len) = to_storage(r, s.family);
        // SAFETY: the kernel reads `len` bytes of the address.
        if unsafe { libc::connect(f, (&a as *const libc::sockaddr_storage).cast(), len) } < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("connecting to {r}"));
        }
    }
    // A connection's sending side is in its state.
    let shutdown = if s.stream.is_some() { s.shutdown & 1 } else { s.shutdown };
    if let Some(how) = super::sockopt::shutdown_how(shutdown) {
        // SAFETY: a plain call on our socket. (Not connected, the kernel
        // marks it and says ENOTCONN, as it did for the program.)
        let r = unsafe { libc::shutdown(f, how) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOTCONN) {
            return Err(std::io::Error::last_os_error()).context("shutdown");
        }
    }
    let tv = |sec: u64, usec: u64| libc::timeval { tv_sec: sec as _, tv_usec: usec as _ };
    setopt(f, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &((o.so_sndbuf / 2) as i32))?;
    setopt(f, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &((o.so_rcvbuf / 2) as i32))?;
    setopt(f, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv(o.so_snd_tmo_sec, o.so_snd_tmo_usec))?;
    setopt(f, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv(o.so_rcv_tmo_sec, o.so_rcv_tmo_usec))?;
    for (opt, v) in [
        (libc::SO_KEEPALIVE, flag(o.so_keepalive)),
        (libc::SO_BROADCAST, flag(o.so_broadcast)),
        (libc::SO_PRIORITY, o.so_priority.unwrap_or(0) as i32),
        (libc::SO_RCVLOWAT, o.so_rcvlowat.unwrap_or(1).max(1) as i32),
        (libc::SO_MARK, o.so_mark.unwrap_or(0) as i32),
        (libc::SO_OOBINLINE, o.so_oobinline.unwrap_or(0) as i32),
        (libc::SO_DONTROUTE, flag(o.so_dontroute)),
        (libc::SO_NO_CHECK, flag(o.so_no_check)),
    ] {
        setopt(f, libc::SOL_SOCKET, opt, &v)?;
    }
    for (opt, on) in [(libc::SO_PASSCRED, o.so_passcred), (libc::SO_PASSSEC, o.so_passsec)] {
        if on == Some(true) {
            setopt(f, libc::SOL_SOCKET, opt, &1i32)?;
        }
    }
    // Forcing the sizes locked them; the dumped locks go back.
    setopt(f, libc::SOL_SOCKET, SO_BUF_LOCK, &(o.so_buf_lock.unwrap_or(0) as i32))?;
    if let Some(l) = o.so_linger {
        setopt(f, libc::SOL_SOCKET, libc::SO_LINGER, &libc::linger { l_onoff: 1, l_linger: l as i32 })?;
    }
    // A connection's lock holds the filter slot: its own filter goes on
    // when the lock comes off.
    if s.stream.is_none() {
        super::sockopt::set_filter(f, &o.so_filter)?;
    }
    if let Some(tos) = s.ip.tos.filter(|&t| t != 0) {
        if s.family == libc::AF_INET as u32 {
            setopt(f, libc::SOL_IP, libc::IP_TOS, &(tos as i32))?;
        } else {
            setopt(f, libc::SOL_IPV6, libc::IPV6_TCLASS, &(tos as i32))?;
        }
    }
    if let Some(ttl) = s.ip.ttl.filter(|_| s.family == libc::AF_INET as u32) {
        setopt(f, libc::SOL_IP, libc::IP_TTL, &(ttl as i32))?;
    }
    if s.ip.pktinfo == Some(true) {
        if s.family == libc::AF_INET as u32 {
            setopt(f, libc::SOL_IP, libc::IP_PKTINFO, &1i32)?;
        } else {
            setopt(f, libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, &1i32)?;
        }
    }
    // CRIU writes TCP options for UDP sockets too.
    if let Some(t) = s.tcp.as_ref().filter(|_| s.proto == libc::IPPROTO_TCP as u32) {
        let tcp = |opt, v: i32| setopt(f, libc::IPPROTO_TCP, opt, &v);
        tcp(libc::TCP_NODELAY, flag(t.nodelay))?;
        tcp(libc::TCP_CORK, flag(t.cork))?;
        for (opt, v) in
            [(libc::TCP_KEEPCNT, t.keepcnt), (libc::TCP_KEEPIDLE, t.keepidle), (libc::TCP_KEEPINTVL, t.keepintvl)]
        {
            if let Some(v) = v.filter(|&v| v != 0) {
                tcp(opt, v as i32)?;
            }
        }
    }
    if let (Some(st), Some(r)) = (&s.stream, &s.remote) {
        if !tcp::rebuildable(s.state) {
            bail!(
                "the connection in state {} cannot be built again from its image (a segment of the peer's, \
                 its FIN or its acknowledgement of ours, would have to be received again), and the dump's lock no \
                 longer holds it",
                revenant_images::tcp_state_name(s.state)
            );
        }
        let (a, len) = to_storage(r, s.family);
        tcp::rebuild(f, s.state, &a, len, st).map_err(|e| match e.root_cause().downcast_ref::<std::io::Error>() {
            Some(io) if matches!(io.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)) => e.context(
                "the connection is in use on this machine: the dumped program, another restore of it, or the \
                 keeper of a dump whose images were copied elsewhere still holds it",
            ),
            _ => e,
        })?;
    }
    // SAFETY: a plain call on our socket.
    if unsafe { libc::fcntl(f, libc::F_SETFL, (s.flags & libc::O_NONBLOCK as u32) as i32) } < 0 {
        return Err(std::io::Error::last_os_error()).context("setting its flags");
    }
    Ok(fd)
}

/// Sends a UDP socket's datagrams to it again, before it is connected,
/// from a socket of ours on the loopback: an unspecified address stands
/// for the loopback one.
fn requeue(s: &InetSock, f: i32) -> Result<()> {
    if s.queue.is_empty() {
        return Ok(());
    }
    let here = sockaddr(f, false).context("getsockname")?;
    let to = if here.ip().is_unspecified() {
        let lo: IpAddr =
            if s.family == libc::AF_INET as u32 { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(lo, here.port())
    } else {
        here
    };
    let big = (s.queue.iter().map(|m| m.len() * 2 + 1024).sum::<usize>() as i32).max(1 << 16);
    let _ = setopt(f, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big);
    // SAFETY: a new socket, owned at once.
    let tmp = unsafe { libc::socket(s.family as i32, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, s.proto as i32) };
    if tmp < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    let tmp = unsafe { OwnedFd::from_raw_fd(tmp) };
    let (a, len) = to_storage(&to, s.family);
    for m in &s.queue {
        // SAFETY: sends our buffer to the address.
        let n = unsafe {
            libc::sendto(
                tmp.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&a as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if n != m.len() as isize {
            return Err(std::io::Error::last_os_error()).context("sending a queued datagram again");
        }
    }
    Ok(())
}
