//! Socket options and the other small socket calls unix and inet sockets
//! share, for the dump (reading them through a copy of the program's
//! descriptor) and the restore (setting them on the host's socket).

use std::os::fd::{AsRawFd, FromRawFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{SkOptsEntry, SockOptEntry};

/// Which buffer sizes were set by hand (the libc crate lacks it).
pub const SO_BUF_LOCK: i32 = linux_raw_sys::net::SO_BUF_LOCK as i32;

/// A socket option. Only for plain C structs and integers, for which all
/// zeroes is a value.
pub fn get<T: Copy>(s: i32, level: i32, opt: i32) -> Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    if unsafe { libc::getsockopt(s, level, opt, v.as_mut_ptr().cast(), &mut len) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("getsockopt {level}/{opt}"));
    }
    // SAFETY: zeroed, then written by the kernel; callers use plain C data.
    Ok(unsafe { v.assume_init() })
}

pub fn set<T>(s: i32, level: i32, opt: i32, v: &T) -> Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes of `v`.
    let r = unsafe { libc::setsockopt(s, level, opt, (v as *const T).cast(), size_of::<T>() as _) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setsockopt {level}/{opt}"));
    }
    Ok(())
}

/// The classic socket filter `s` has attached, one instruction per word
/// in CRIU's order (`code` in the top 16 bits, then `jt`, `jf`, and `k`
/// in the low 32, so that the image reads the same on any arch); empty
/// for none. An eBPF program (`SO_ATTACH_BPF`), which the kernel does not
/// show (EACCES), is refused.
pub fn filter(s: i32) -> Result<Vec<u64>> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a length of 0 the kernel writes nothing but the length.
    if unsafe { libc::getsockopt(s, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, std::ptr::null_mut(), &mut len) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EACCES) {
            bail!("an eBPF socket filter (SO_ATTACH_BPF): not supported");
        }
        return Err(e).context("getsockopt SO_GET_FILTER");
    }
    if len == 0 {
        return Ok(vec![]);
    }
    // The kernel caps a filter at BPF_MAXINSNS (4096) instructions.
    let mut insns = vec![libc::sock_filter { code: 0, jt: 0, jf: 0, k: 0 }; len as usize];
    // SAFETY: for SO_GET_FILTER the length counts instructions and the
    // kernel writes at most `len` of them.
    if unsafe { libc::getsockopt(s, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, insns.as_mut_ptr().cast(), &mut len) } < 0
    {
        return Err(std::io::Error::last_os_error()).context("getsockopt SO_GET_FILTER");
    }
    insns.truncate(len as usize);
    Ok(insns
        .iter()
        .map(|f| u64::from(f.code) << 48 | u64::from(f.jt) << 40 | u64::from(f.jf) << 32 | u64::from(f.k))
        .collect())
}

/// Attaches the filter [`filter`] read (nothing for an empty one).
pub fn set_filter(s: i32, words: &[u64]) -> Result<()> {
    if words.is_empty() {
        return Ok(());
    }
    let mut insns: Vec<libc::sock_filter> = words
        .iter()
        .map(|&w| libc::sock_filter { code: (w >> 48) as u16, jt: (w >> 40) as u8, jf: (w >> 32) as u8, k: w as u32 })
        .collect();
    let len = u16::try_from(insns.len()).context("a socket filter longer than any the kernel takes")?;
    let prog = libc::sock_fprog { len, filter: insns.as_mut_ptr() };
    set(s, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).context("attaching its socket filter")
}

/// `shutdown`'s `how` for the kernel's shutdown bits (`RCV_SHUTDOWN` 1,
/// `SEND_SHUTDOWN` 2, as sock_diag and CRIU's images give them).
pub fn shutdown_how(bits: u32) -> Option<i32> {
    match bits & 3 {
        1 => Some(libc::SHUT_RD),
        2 => Some(libc::SHUT_WR),
        3 => Some(libc::SHUT_RDWR),
        _ => None,
    }
}

/// The options every socket family has, as CRIU keeps them: buffer sizes
/// (as `getsockopt` gives them: the kernel doubles what is set), which
/// of them were set by hand, timeouts, `SO_PASSCRED`, the filter.
pub fn common(s: i32) -> Result<SkOptsEntry> {
    let so = |o| get::<i32>(s, libc::SOL_SOCKET, o);
    let tv = |o| get::<libc::timeval>(s, libc::SOL_SOCKET, o).map(|t| (t.tv_sec as u64, t.tv_usec as u64));
    let (snd, rcv) = (tv(libc::SO_SNDTIMEO)?, tv(libc::SO_RCVTIMEO)?);
    Ok(SkOptsEntry {
        so_sndbuf: so(libc::SO_SNDBUF)? as u32,
        so_rcvbuf: so(libc::SO_RCVBUF)? as u32,
        so_snd_tmo_sec: snd.0,
        so_snd_tmo_usec: snd.1,
        so_rcv_tmo_sec: rcv.0,
        so_rcv_tmo_usec: rcv.1,
        // Newer kernels keep it for unix and netlink sockets only.
        so_passcred: so(libc::SO_PASSCRED).ok().map(|v| v != 0),
        so_buf_lock: Some(so(SO_BUF_LOCK)? as u32),
        so_filter: filter(s).context("reading its socket filter")?,
        ..Default::default()
    })
}

/// Sets what [`common`] read on our socket `s`.
pub fn set_common(s: i32, o: &SkOptsEntry) -> Result<()> {
    let tv = |sec: u64, usec: u64| libc::timeval { tv_sec: sec as _, tv_usec: usec as _ };
    set(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &((o.so_sndbuf / 2) as i32))?;
    set(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &((o.so_rcvbuf / 2) as i32))?;
    set(s, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv(o.so_snd_tmo_sec, o.so_snd_tmo_usec))?;
    set(s, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv(o.so_rcv_tmo_sec, o.so_rcv_tmo_usec))?;
    if o.so_passcred == Some(true) {
        set(s, libc::SOL_SOCKET, libc::SO_PASSCRED, &1i32)?;
    }
    // Forcing the sizes locked them; the dumped locks go back.
    set(s, libc::SOL_SOCKET, SO_BUF_LOCK, &(o.so_buf_lock.unwrap_or(0) as i32))?;
    set_filter(s, &o.so_filter)
}

/// Which sockets an option of [`EXTRA`] belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Has {
    /// Every socket (`SOL_SOCKET`).
    All,
    V4,
    V6,
    /// Multicast settings: datagram and raw sockets only (an accepted
    /// TCP socket's `IP_MULTICAST_TTL` is the TTL its SYN came with).
    Mc4,
    Mc6,
    Tcp,
    Udp,
}

/// `SOL_UDP`'s options (linux/udp.h; the libc crate lacks them).
const UDP_CORK: u32 = 1;
const UDP_SEGMENT: u32 = 103;
const UDP_GRO: u32 = 104;

/// The integer options programs set that CRIU's entries have no field
/// for, kept in revenant's own `extra_opts`: those that change what the
/// program receives (ancillary data: `IP_RECVTTL`, timestamps, ...) or
/// how the socket behaves. Options that report traffic rather than a
/// setting (`SO_INCOMING_CPU`, `TCP_QUICKACK`) are not here.
const EXTRA: &[(i32, u32, Has)] = {
    use Has::*;
    use linux_raw_sys::net::*;
    const S: i32 = libc::SOL_SOCKET;
    const IP: i32 = libc::SOL_IP;
    const IP6: i32 = libc::SOL_IPV6;
    const T: i32 = libc::SOL_TCP;
    const U: i32 = libc::SOL_UDP;
    &[
        (S, SO_DEBUG, All),
        (S, SO_TIMESTAMP_OLD, All),
        (S, SO_TIMESTAMP_NEW, All),
        (S, SO_TIMESTAMPNS_OLD, All),
        (S, SO_TIMESTAMPNS_NEW, All),
        (S, SO_TIMESTAMPING_OLD, All),
        (S, SO_TIMESTAMPING_NEW, All),
        (S, SO_RXQ_OVFL, All),
        (S, SO_WIFI_STATUS, All),
        (S, SO_PEEK_OFF, All),
        (S, SO_NOFCS, All),
        (S, SO_SELECT_ERR_QUEUE, All),
        (S, SO_BUSY_POLL, All),
        (S, SO_ZEROCOPY, All),
        (S, SO_RCVMARK, All),
        (S, SO_PASSPIDFD, All),
        (IP, IP_RECVOPTS, V4),
        (IP, IP_RETOPTS, V4),
        (IP, IP_MTU_DISCOVER, V4),
        (IP, IP_RECVERR, V4),
        (IP, IP_RECVTTL, V4),
        (IP, IP_RECVTOS, V4),
        (IP, IP_TRANSPARENT, V4),
        (IP, IP_RECVORIGDSTADDR, V4),
        (IP, IP_MINTTL, V4),
        (IP, IP_CHECKSUM, V4),
        (IP, IP_BIND_ADDRESS_NO_PORT, V4),
        (IP, IP_RECVFRAGSIZE, V4),
        (IP, IP_RECVERR_RFC4884, V4),
        (IP, IP_MULTICAST_TTL, Mc4),
        (IP, IP_MULTICAST_LOOP, Mc4),
        (IP, IP_MULTICAST_ALL, Mc4),
        (IP6, IPV6_UNICAST_HOPS, V6),
        (IP6, IPV6_MULTICAST_HOPS, Mc6),
        (IP6, IPV6_MULTICAST_LOOP, Mc6),
        (IP6, IPV6_MTU_DISCOVER, V6),
        (IP6, IPV6_RECVERR, V6),
        (IP6, IPV6_RECVHOPLIMIT, V6),
        (IP6, IPV6_RECVTCLASS, V6),
        (IP6, IPV6_DONTFRAG, V6),
        (IP6, IPV6_RECVPATHMTU, V6),
        (IP6, IPV6_AUTOFLOWLABEL, V6),
        (IP6, IPV6_TRANSPARENT, V6),
        (IP6, IPV6_RECVORIGDSTADDR, V6),
        (IP6, IPV6_MINHOPCOUNT, V6),
        (IP6, IPV6_MULTICAST_ALL, Mc6),
        (IP6, IPV6_RECVERR_RFC4884, V6),
        (IP6, IPV6_RECVFRAGSIZE, V6),
        (T, TCP_DEFER_ACCEPT, Tcp),
        (T, TCP_USER_TIMEOUT, Tcp),
        (T, TCP_FASTOPEN, Tcp),
        (T, TCP_FASTOPEN_CONNECT, Tcp),
        (T, TCP_NOTSENT_LOWAT, Tcp),
        (T, TCP_SYNCNT, Tcp),
        (T, TCP_LINGER2, Tcp),
        (T, TCP_WINDOW_CLAMP, Tcp),
        (T, TCP_THIN_LINEAR_TIMEOUTS, Tcp),
        (T, TCP_MAXSEG, Tcp),
        (T, TCP_SAVE_SYN, Tcp),
        (T, TCP_TX_DELAY, Tcp),
        (U, UDP_CORK, Udp),
        (U, UDP_SEGMENT, Udp),
        (U, UDP_GRO, Udp),
    ]
};

/// The options of [`EXTRA`] a socket of `family`, `ty` and `proto` has.
fn extra_for(family: i32, ty: i32, proto: i32) -> impl Iterator<Item = (i32, i32)> {
    let inet = family == libc::AF_INET || family == libc::AF_INET6;
    EXTRA
        .iter()
        .filter(move |(_, _, has)| match has {
            Has::All => true,
            // Dual-stack IPv6 sockets take IPv4's options too.
            Has::V4 => inet,
            Has::V6 => family == libc::AF_INET6,
            Has::Mc4 => inet && ty != libc::SOCK_STREAM,
            Has::Mc6 => family == libc::AF_INET6 && ty != libc::SOCK_STREAM,
            Has::Tcp => inet && ty == libc::SOCK_STREAM && proto == libc::IPPROTO_TCP,
            Has::Udp => inet && ty == libc::SOCK_DGRAM && [libc::IPPROTO_UDP, libc::IPPROTO_UDPLITE].contains(&proto),
        })
        .map(|&(level, name, _)| (level, name as i32))
}

/// The options of [`EXTRA`] on which `s` differs from a socket of the
/// same kind made now (which reads the machine's defaults the same way).
pub fn extra(s: i32, family: i32, ty: i32, proto: i32) -> Result<Vec<SockOptEntry>> {
    let defaults = defaults(family, ty, proto)?;
    let mut out = vec![];
    for ((level, name), d) in extra_for(family, ty, proto).zip(defaults) {
        // An option this kernel does not have is one nobody set.
        let (Ok(v), Some(d)) = (get::<i32>(s, level, name), d) else { continue };
        if v != d {
            out.push(SockOptEntry { level: level as u32, name: name as u32, value: v, ..Default::default() });
        }
    }
    Ok(out)
}

/// What a new socket of this kind reads for each option of [`extra_for`]
/// (`None` where the kernel lacks it): asked once per kind, as a server's
/// thousand sockets are read while the tree is frozen.
fn defaults(family: i32, ty: i32, proto: i32) -> Result<Vec<Option<i32>>> {
    type Kinds = std::collections::HashMap<(i32, i32, i32), Vec<Option<i32>>>;
    static SEEN: std::sync::Mutex<Option<Kinds>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = seen.get_or_insert_default().get(&(family, ty, proto)) {
        return Ok(d.clone());
    }
    // SAFETY: a new socket, owned at once.
    let raw = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error())
            .context("making a socket of the same kind to compare with (the restore could not make one either)");
    }
    // SAFETY: just made.
    let fresh = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let d: Vec<Option<i32>> =
        extra_for(family, ty, proto).map(|(level, name)| get::<i32>(fresh.as_raw_fd(), level, name).ok()).collect();
    seen.get_or_insert_default().insert((family, ty, proto), d.clone());
    Ok(d)
}

/// Refuses an entry of `opts` that is not an option of [`EXTRA`] for
/// this kind of socket; `at` names the entry.
pub fn check_extra(opts: &[SockOptEntry], family: u32, ty: u32, proto: u32, at: &str) -> Result<()> {
    for o in opts {
        if !extra_for(family as i32, ty as i32, proto as i32).any(|k| k == (o.level as i32, o.name as i32)) {
            bail!("{at}: extra_opts: option {} at level {}: not one revenant sets on such a socket", o.name, o.level);
        }
    }
    Ok(())
}

/// Sets what [`extra`] read on our socket `s`.
pub fn set_extra(s: i32, opts: &[SockOptEntry]) -> Result<()> {
    for o in opts {
        set(s, o.level as i32, o.name as i32, &o.value)?;
    }
    Ok(())
}

/// Whether `opts` turns `SOL_SOCKET` option `name` on.
pub fn has_extra(opts: &[SockOptEntry], name: i32) -> bool {
    opts.iter().any(|o| o.level == libc::SOL_SOCKET as u32 && o.name == name as u32 && o.value != 0)
}

/// Whether `opts` asks for a time stamp on each message received.
pub fn timestamps(opts: &[SockOptEntry]) -> bool {
    use linux_raw_sys::net::*;
    [
        SO_TIMESTAMP_OLD,
        SO_TIMESTAMP_NEW,
        SO_TIMESTAMPNS_OLD,
        SO_TIMESTAMPNS_NEW,
        SO_TIMESTAMPING_OLD,
        SO_TIMESTAMPING_NEW,
    ]
    .into_iter()
    .any(|t| has_extra(opts, t as i32))
}

/// Whether something waits to be read on `s`: poll, which changes nothing
/// (ping, netlink and packet sockets have no `FIONREAD`).
pub fn has_data(s: i32) -> bool {
    let mut p = libc::pollfd { fd: s, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd of ours, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}
