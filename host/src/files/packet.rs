//! Packet sockets (`AF_PACKET`, CRIU's `PACKETSK` entries): raw or
//! cooked link-layer access, as DHCP clients and capture tools hold it.
//! What one holds is its ethertype, the interface it is bound to (by
//! index, as CRIU keeps it), its `SOL_PACKET` settings, the link-layer
//! addresses it joined, its fanout group and the common socket options
//! (a DHCP client's filter among them). Frames waiting to be read came
//! from the network and cannot be queued again, and a memory-mapped ring
//! (`PACKET_RX_RING`, `PACKET_TX_RING`: tcpdump's) is not kept: a socket
//! with either is refused, naming it.
//!
//! The restore makes each socket in the host before any process exists.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, PacketMclist, PacketSockEntry};

use super::sockopt;

/// sock_diag's packet answers (linux/packet_diag.h).
const PACKET_SHOW_INFO: u32 = 1;
const PACKET_SHOW_MCLIST: u32 = 2;
const PACKET_SHOW_RING_CFG: u32 = 4;
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;
const PDI_AUXDATA: u32 = 2;
const PDI_ORIGDEV: u32 = 4;
const PDI_VNETHDR: u32 = 8;
const PDI_LOSS: u32 = 16;
/// `getsockopt(PACKET_FANOUT)` of a socket in no group.
const NO_FANOUT: u32 = u32::MAX;

/// What sock_diag says of a packet socket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diag {
    pub ty: u8,
    /// The ethertype, host order.
    pub protocol: u16,
    pub ifindex: u32,
    pub version: u32,
    pub reserve: u32,
    pub copy_thresh: u32,
    pub tstamp: u32,
    /// `PDI_*`.
    pub flags: u32,
    /// Each joined address once per time it was joined.
    pub mclist: Vec<PacketMclist>,
    /// A ring of either kind is set up.
    pub ring: bool,
}

/// Every packet socket of our network namespace, by inode.
pub fn diag() -> Result<HashMap<u32, Diag>> {
    // packet_diag_req: family, protocol, pad, inode, show, cookie.
    let mut req = [0u8; 20];
    req[0] = libc::AF_PACKET as u8;
    req[8..12].copy_from_slice(&(PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG).to_ne_bytes());
    let mut out = HashMap::new();
    super::unixsk::sock_diag(&req, |m| {
        if let Some((ino, d)) = parse_msg(m) {
            out.insert(ino, d);
        }
    })
    .context("asking sock_diag for packet sockets (module packet_diag)")?;
    Ok(out)
}

/// One `packet_diag_msg` and its attributes.
fn parse_msg(m: &[u8]) -> Option<(u32, Diag)> {
    let word = |b: &[u8], at: usize| Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let mut d =
        Diag { ty: *m.get(1)?, protocol: u16::from_ne_bytes(m.get(2..4)?.try_into().ok()?), ..Default::default() };
    let ino = word(m, 4)?;
    let mut attrs = m.get(16..)?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes(attrs[0..2].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(attrs[2..4].try_into().ok()?);
        let body = attrs.get(4..len)?;
        match ty {
            PACKET_DIAG_INFO => {
                d.ifindex = word(body, 0)?;
                d.version = word(body, 4)?;
                d.reserve = word(body, 8)?;
                d.copy_thresh = word(body, 12)?;
                d.tstamp = word(body, 16)?;
                d.flags = word(body, 20)?;
            }
            PACKET_DIAG_MCLIST => {
                // packet_diag_mclist: index, count, type (16), alen (16),
                // addr (32).
                for e in body.chunks_exact(44) {
                    let (index, count) = (word(e, 0)?, word(e, 4)?);
                    let ty = u16::from_ne_bytes(e[8..10].try_into().ok()?);
                    let alen = usize::from(u16::from_ne_bytes(e[10..12].try_into().ok()?)).min(32);
                    let one = PacketMclist {
                        index,
                        r#type: u32::from(ty),
                        addr: e[12..12 + alen].to_vec(),
                        ..Default::default()
                    };
                    d.mclist.extend(std::iter::repeat_n(one, count as usize));
                }
            }
            PACKET_DIAG_RX_RING | PACKET_DIAG_TX_RING => d.ring = true,
            _ => {}
        }
        attrs = attrs.get(len.next_multiple_of(4).min(attrs.len())..)?;
    }
    Some((ino, d))
}

/// A packet socket of the tree, as its image entry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketSock {
    pub entry: PacketSockEntry,
}

/// Reads packet socket `fd` (inode `ino`) of `pid`; `None` if it is not
/// one.
pub fn dump(pid: i32, fd: i32, ino: u32, flags: u32, diag: &HashMap<u32, Diag>) -> Result<Option<PacketSock>> {
    let what = format!("process {pid}: fd {fd} (socket:[{ino}])");
    let sock = crate::procfs::borrow_fd(pid, fd).with_context(|| format!("{what}: taking a copy to read it"))?;
    let s = sock.as_raw_fd();
    if sockopt::get::<i32>(s, libc::SOL_SOCKET, libc::SO_DOMAIN)? != libc::AF_PACKET {
        return Ok(None);
    }
    let d = diag.get(&ino).with_context(|| format!("{what}: a packet socket sock_diag does not list"))?;
    let ty = u32::from(d.ty);
    if ty != libc::SOCK_RAW as u32 && ty != libc::SOCK_DGRAM as u32 {
        bail!("{what}: a packet socket of type {ty} (SOCK_PACKET, long deprecated): not supported");
    }
    if d.ring {
        bail!("{what}: a packet socket with a memory-mapped ring (PACKET_RX_RING or PACKET_TX_RING): not supported");
    }
    if sockopt::has_data(s) {
        bail!("{what}: a packet socket with frames waiting to be read: not supported (nothing can queue them again)");
    }
    let fanout = sockopt::get::<u32>(s, libc::SOL_PACKET, libc::PACKET_FANOUT).unwrap_or(0);
    let opts = sockopt::common(s).with_context(|| format!("{what}: reading its options"))?;
    let extra = sockopt::extra(s, libc::AF_PACKET, ty as i32, i32::from(d.protocol.to_be()))
        .with_context(|| format!("{what}: reading its options"))?;
    Ok(Some(PacketSock {
        entry: PacketSockEntry {
            r#type: ty,
            // Network order, as CRIU keeps it and `socket` takes it.
            protocol: u32::from(d.protocol.to_be()),
            flags,
            ifindex: d.ifindex,
            opts,
            version: d.version,
            reserve: d.reserve,
            aux_data: d.flags & PDI_AUXDATA != 0,
            orig_dev: d.flags & PDI_ORIGDEV != 0,
            vnet_hdr: d.flags & PDI_VNETHDR != 0,
            loss: d.flags & PDI_LOSS != 0,
            timestamp: d.tstamp,
            copy_thresh: d.copy_thresh,
            mclist: d.mclist.clone(),
            // A socket in no group reads 0.
            fanout: (fanout != 0).then_some(fanout),
            extra_opts: extra,
            ..Default::default()
        },
    }))
}

impl PacketSock {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        let psk = PacketSockEntry { id, fown, ..self.entry.clone() };
        FileEntry { r#type: FdType::Packetsk as i32, id, psk: Some(psk), ..Default::default() }
    }

    /// The socket `e` describes; `at` names it for errors.
    pub fn from_entry(e: &PacketSockEntry, at: &str) -> Result<PacketSock> {
        if e.r#type != libc::SOCK_RAW as u32 && e.r#type != libc::SOCK_DGRAM as u32 {
            bail!("{at}: type {}: a packet socket is raw or datagram", e.r#type);
        }
        if e.protocol > u32::from(u16::MAX) {
            bail!("{at}: protocol {:#x}: not an ethertype", e.protocol);
        }
        if e.rx_ring.is_some() || e.tx_ring.is_some() {
            bail!("{at}: a memory-mapped ring (rx_ring, tx_ring): not restored");
        }
        if let Some(m) = e.mclist.iter().find(|m| m.addr.len() > 8) {
            bail!("{at}: mclist: an address of {} bytes (at most 8)", m.addr.len());
        }
        // Each one is a system call at restore.
        if e.mclist.len() > 1 << 12 {
            bail!("{at}: mclist: {} entries", e.mclist.len());
        }
        sockopt::check_extra(&e.extra_opts, libc::AF_PACKET as u32, e.r#type, e.protocol, at)?;
        Ok(PacketSock { entry: e.clone() })
    }
}

/// Every packet socket of `set`, by file id.
pub fn plan(set: &revenant_images::ImageSet) -> Result<Vec<(u32, PacketSock)>> {
    let mut out: Vec<(u32, PacketSock)> = Vec::new();
    for f in set.processes.iter().flat_map(|p| &p.fds) {
        let Some(e) = set.file(f.id).and_then(|e| e.psk.as_ref()) else { continue };
        if !out.iter().any(|(id, _)| *id == f.id) {
            let at = format!("files.img: packet socket id {}", f.id);
            out.push((f.id, PacketSock::from_entry(e, &at)?));
        }
    }
    Ok(out)
}

/// Makes every socket of `socks` in the host, in order (the first of a
/// fanout group makes it, the others join).
pub fn make(socks: &[(u32, PacketSock)]) -> Result<Vec<(u32, OwnedFd)>> {
    socks
        .iter()
        .map(|(id, s)| {
            let e = &s.entry;
            let ethertype = u16::from_be(e.protocol as u16);
            let what =
                || format!("packet socket (files.img id {id}, ethertype {ethertype:#06x}, interface {})", e.ifindex);
            make_one(e).with_context(what).map(|fd| (*id, fd))
        })
        .collect()
}

fn make_one(e: &PacketSockEntry) -> Result<OwnedFd> {
    // SAFETY: a new socket, owned at once.
    let raw = unsafe { libc::socket(libc::AF_PACKET, e.r#type as i32 | libc::SOCK_CLOEXEC, e.protocol as i32) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let f = fd.as_raw_fd();
    // Only what differs from a new socket's zero: some settings cannot
    // even be set to zero on some sockets (PACKET_VNET_HDR on a cooked one).
    let int = |opt: i32, v: u32, name: &str| match v {
        0 => Ok(()),
        v => sockopt::set(f, libc::SOL_PACKET, opt, &(v as i32)).with_context(|| format!("setting {name}")),
    };
    // The version first: it decides what the other settings mean.
    int(libc::PACKET_VERSION, e.version, "PACKET_VERSION")?;
    int(libc::PACKET_RESERVE, e.reserve, "PACKET_RESERVE")?;
    int(libc::PACKET_AUXDATA, u32::from(e.aux_data), "PACKET_AUXDATA")?;
    int(libc::PACKET_ORIGDEV, u32::from(e.orig_dev), "PACKET_ORIGDEV")?;
    int(libc::PACKET_VNET_HDR, u32::from(e.vnet_hdr), "PACKET_VNET_HDR")?;
    int(libc::PACKET_LOSS, u32::from(e.loss), "PACKET_LOSS")?;
    int(libc::PACKET_TIMESTAMP, e.timestamp, "PACKET_TIMESTAMP")?;
    int(libc::PACKET_COPY_THRESH, e.copy_thresh, "PACKET_COPY_THRESH")?;
    sockopt::set_common(f, &e.opts)?;
    sockopt::set_extra(f, &e.extra_opts)?;
    if e.ifindex != 0 {
        // SAFETY: all zeroes is a valid sockaddr_ll.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = e.protocol as u16;
        a.sll_ifindex = e.ifindex as i32;
        let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the kernel reads `len` bytes of the address.
        if unsafe { libc::bind(f, (&a as *const libc::sockaddr_ll).cast(), len) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("binding to interface {} (it must be here, with that index)", e.ifindex));
        }
    }
    for m in &e.mclist {
        // SAFETY: all zeroes is a valid packet_mreq.
        let mut r: libc::packet_mreq = unsafe { std::mem::zeroed() };
        r.mr_ifindex = m.index as i32;
        r.mr_type = m.r#type as u16;
        r.mr_alen = m.addr.len() as u16;
        r.mr_address[..m.addr.len()].copy_from_slice(&m.addr);
        sockopt::set(f, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &r)
            .with_context(|| format!("joining {:02x?} on interface {}", m.addr, m.index))?;
    }
    // A fanout group takes running sockets only: after the bind.
    if let Some(g) = e.fanout.filter(|&g| g != NO_FANOUT) {
        int(libc::PACKET_FANOUT, g, "PACKET_FANOUT")?;
    }
    Ok(fd)
}
