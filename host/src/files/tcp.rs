//! Established TCP connections (`--tcp-established`), through the
//! kernel's TCP repair mode, in CRIU's `tcp-stream-INO.img`.
//!
//! Locking without netfilter: from the moment the dump reads a
//! connection until the restored program runs, the socket carries a
//! filter that drops every segment it receives (`SO_ATTACH_FILTER`,
//! `ret #0`). A dropped segment is neither acknowledged nor answered
//! with a reset, so the peer sees a silent path and retransmits; and the
//! socket's state cannot move away from what the images hold (the frozen
//! program sends nothing new). Repair mode, in which the program's own
//! calls on the socket fail, is on only while the dump reads the socket:
//! a program that runs on with the filter still attached (its dump killed,
//! until the keeper takes the filter off) sees its peer late, never an
//! error. The socket outlives the killed program in a keeper process
//! (`tcp_keeper.rs`), in repair mode from then on so that closing it
//! sends nothing, and no segment ever reaches a port without a socket,
//! which the kernel would answer with a reset. A restore on the same
//! machine takes the very socket back from the keeper; elsewhere, or once
//! the keeper is gone, it builds a new one from the image in repair mode.
//! Either way the filter comes off and repair mode ends only once every
//! process is restored, right before the programs run.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::TcpStreamEntry;

use super::sockopt::{get as getopt, set as setopt};

/// TCP's states (include/net/tcp_states.h).
pub const ESTABLISHED: u32 = 1;
pub const FIN_WAIT1: u32 = 4;
pub const FIN_WAIT2: u32 = 5;
pub const CLOSE_WAIT: u32 = 8;
pub const LAST_ACK: u32 = 9;
pub const CLOSING: u32 = 11;

use linux_raw_sys::net::{TCPI_OPT_SACK, TCPI_OPT_TIMESTAMPS, TCPI_OPT_WSCALE};
/// TCP option kinds `TCP_REPAIR_OPTIONS` takes (RFC numbers; the uapi
/// headers do not carry them).
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
/// `TCP_REPAIR_QUEUE` values.
const NO_QUEUE: i32 = linux_raw_sys::net::TCP_NO_QUEUE as i32;
const RECV_QUEUE: i32 = linux_raw_sys::net::TCP_RECV_QUEUE as i32;
const SEND_QUEUE: i32 = linux_raw_sys::net::TCP_SEND_QUEUE as i32;
/// Bytes written but not yet sent (linux/sockios.h).
const SIOCOUTQNSD: libc::c_ulong = 0x894b;

/// States whose send queue ends with our FIN, which SIOCOUTQ counts as a
/// byte; and those whose receive side holds the peer's FIN.
fn our_fin(state: u32) -> bool {
    matches!(state, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK)
}

/// A connection as `tcp-stream-INO.img` holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    pub entry: TcpStreamEntry,
    /// Received, not yet read by the program.
    pub inq: Vec<u8>,
    /// Written, not yet acknowledged by the peer (the last `unsq_len`
    /// bytes never sent).
    pub outq: Vec<u8>,
}

fn repair(s: i32, on: bool) -> Result<()> {
    setopt(s, libc::IPPROTO_TCP, libc::TCP_REPAIR, &i32::from(on))
        .with_context(|| format!("turning TCP repair mode {}", if on { "on" } else { "off" }))
}

fn select_queue(s: i32, q: i32) -> Result<()> {
    setopt(s, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, &q).context("TCP_REPAIR_QUEUE")
}

fn ioctl_int(s: i32, req: libc::c_ulong, what: &str) -> Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int.
    if unsafe { libc::ioctl(s, req as _, &mut v) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("asking for {what}"));
    }
    Ok(v as u32)
}

/// Locks the connection `s` is on: every segment it receives dropped.
pub fn lock(s: i32) -> Result<()> {
    drop_all(s)
}

/// Lets a locked connection go: the filter off first, so that the window
/// probe leaving repair mode sends is answered; `reuseaddr` is its own
/// `SO_REUSEADDR`, which repair mode overrides.
pub fn unlock(s: i32, reuseaddr: i32) -> Result<()> {
    unlock_raw(s, reuseaddr).map_err(std::io::Error::from_raw_os_error).context("unlocking the connection")
}

/// [`unlock`] in system calls only (the keeper runs it after a fork):
/// each step whatever the one before did (a filter already gone, a socket
/// not in repair mode, are fine); the first errno that matters.
pub fn unlock_raw(s: i32, reuseaddr: i32) -> Result<(), i32> {
    let set = |level, opt, v: i32| {
        // SAFETY: the kernel reads one int.
        match unsafe { libc::setsockopt(s, level, opt, (&v as *const i32).cast(), 4) } {
            0 => Ok(()),
            // SAFETY: reading our errno.
            _ => Err(unsafe { *libc::__errno_location() }),
        }
    };
    let filter = set(libc::SOL_SOCKET, libc::SO_DETACH_FILTER, 0).or_else(|e| match e {
        libc::ENOENT => Ok(()),
        e => Err(e),
    });
    let _ = set(libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, NO_QUEUE);
    let repair = set(libc::IPPROTO_TCP, libc::TCP_REPAIR, linux_raw_sys::net::TCP_REPAIR_OFF as i32);
    // Leaving repair mode clears SO_REUSEADDR.
    let reuse = set(libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr);
    filter.and(repair).and(reuse)
}

/// A restore's connection, locked until [`Lock::release`], right before
/// the programs run. Dropped (the restore failed), it closes its copy
/// still locked: a failed restore sends nothing, and whoever else holds
/// the socket (the dump's keeper) finds it unchanged.
#[derive(Debug)]
pub struct Lock {
    fd: OwnedFd,
    reuseaddr: i32,
    /// The program's own socket filter, which takes the lock's place.
    filter: Vec<u64>,
    /// The 4-tuple, for messages.
    pub name: String,
}

impl Lock {
    /// `fd`, locked; `reuseaddr` is the program's `SO_REUSEADDR`, `filter`
    /// its socket filter (CRIU's form).
    pub fn new(fd: OwnedFd, reuseaddr: bool, name: String, filter: Vec<u64>) -> Lock {
        Lock { fd, reuseaddr: i32::from(reuseaddr), filter, name }
    }

    pub fn release(self) -> Result<()> {
        let s = self.fd.as_raw_fd();
        unlock(s, self.reuseaddr)
            .and_then(|()| super::sockopt::set_filter(s, &self.filter))
            .with_context(|| format!("unlocking {}", self.name))
    }
}

/// The socket filter that drops everything.
fn drop_all(s: i32) -> Result<()> {
    let mut insn = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }];
    let prog = libc::sock_fprog { len: 1, filter: insn.as_mut_ptr() };
    setopt(s, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).context("attaching the filter that locks it")
}

/// Reads the locked connection `s` in repair mode, and leaves repair mode
/// (its `SO_REUSEADDR` back to `reuseaddr`). Returns it with the state it
/// was read in.
pub fn read(s: i32, reuseaddr: i32) -> Result<(Stream, u32)> {
    repair(s, true)?;
    let read = read_repairing(s);
    let _ = select_queue(s, NO_QUEUE);
    let left = repair(s, false).and_then(|()| setopt(s, libc::SOL_SOCKET, libc::SO_REUSEADDR, &reuseaddr));
    let st = read?;
    left.map(|()| st)
}

/// [`read`]'s reading: sequence numbers, negotiated options, window, and
/// both queues (left in place), and the state.
fn read_repairing(s: i32) -> Result<(Stream, u32)> {
    // tcp_info: state, ca_state, retransmits, probes, backoff, options,
    // then the window scales in one byte (send's in the low nibble).
    let info: [u8; 8] = getopt(s, libc::IPPROTO_TCP, libc::TCP_INFO)?;
    let state = u32::from(info[0]);
    let mut outq_len = ioctl_int(s, libc::TIOCOUTQ, "the send queue's length")?;
    let mut unsq_len = ioctl_int(s, SIOCOUTQNSD, "the length of what is not sent yet")?;
    // The FIN we sent is counted as a byte of the send queue.
    if our_fin(state) {
        outq_len = outq_len.saturating_sub(1);
        unsq_len = unsq_len.saturating_sub(1);
    }
    let inq_len = ioctl_int(s, libc::FIONREAD, "the receive queue's length")?;
    let opt_mask = u32::from(info[5]);
    let mss_clamp = getopt::<u32>(s, libc::IPPROTO_TCP, libc::TCP_MAXSEG).context("TCP_MAXSEG")?;
    let mut e = TcpStreamEntry { opt_mask, mss_clamp, unsq_len: Some(unsq_len), ..Default::default() };
    if opt_mask & TCPI_OPT_WSCALE != 0 {
        e.snd_wscale = u32::from(info[6] & 0xf);
        e.rcv_wscale = Some(u32::from(info[6] >> 4));
    }
    if opt_mask & TCPI_OPT_TIMESTAMPS != 0 {
        e.timestamp = Some(getopt(s, libc::IPPROTO_TCP, libc::TCP_TIMESTAMP).context("TCP_TIMESTAMP")?);
    }
    let w: linux_raw_sys::net::tcp_repair_window =
        getopt(s, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW).context("TCP_REPAIR_WINDOW")?;
    (e.snd_wl1, e.snd_wnd, e.max_window, e.rcv_wnd, e.rcv_wup) =
        (Some(w.snd_wl1), Some(w.snd_wnd), Some(w.max_window), Some(w.rcv_wnd), Some(w.rcv_wup));
    let (inq_seq, inq) = queue(s, RECV_QUEUE, inq_len).context("reading the receive queue")?;
    let (outq_seq, outq) = queue(s, SEND_QUEUE, outq_len).context("reading the send queue")?;
    select_queue(s, NO_QUEUE)?;
    (e.inq_len, e.inq_seq, e.outq_len, e.outq_seq) = (inq_len, inq_seq, outq_len, outq_seq);
    Ok((Stream { entry: e, inq, outq }, state))
}

/// One queue's sequence number and bytes, peeked: one byte more is asked
/// for, to be sure the kernel's length was all of it.
fn queue(s: i32, q: i32, len: u32) -> Result<(u32, Vec<u8>)> {
    select_queue(s, q)?;
    let seq: u32 = getopt(s, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ).context("TCP_QUEUE_SEQ")?;
    if len == 0 {
        return Ok((seq, vec![]));
    }
    let mut buf = vec![0u8; len as usize + 1];
    // SAFETY: the kernel writes at most `buf.len()` bytes into it.
    let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n != len as isize {
        let err = std::io::Error::last_os_error();
        bail!("{n} bytes where the kernel said {len} ({err})");
    }
    buf.truncate(len as usize);
    Ok((seq, buf))
}

/// Whether a connection in `state` can be built again from its image
/// alone. A state reached by a segment of the peer's (its FIN, or its
/// acknowledgement of ours) cannot: the segment would have to be received
/// again, forged.
pub fn rebuildable(state: u32) -> bool {
    matches!(state, ESTABLISHED | FIN_WAIT1)
}

/// Builds connection `st` again on `s`, a new socket already in repair
/// mode, locked and bound: sequence numbers, then the connection itself
/// (repair mode sends nothing), its options, queues and window.
pub fn rebuild(s: i32, state: u32, peer: &libc::sockaddr_storage, peer_len: u32, st: &Stream) -> Result<()> {
    let e = &st.entry;
    if st.inq.len() != e.inq_len as usize || st.outq.len() != e.outq_len as usize {
        bail!("the queues' bytes do not match inq_len and outq_len");
    }
    let unsq = e.unsq_len.context("no unsq_len: the image does not say what was sent")?;
    if !(48..=65535).contains(&e.mss_clamp) {
        bail!("mss_clamp {} is not a segment size (48 to 65535)", e.mss_clamp);
    }
    if unsq > e.outq_len {
        bail!("unsq_len {unsq} is more than outq_len {}", e.outq_len);
    }
    let set_seq = |q, seq: u32| -> Result<()> {
        select_queue(s, q)?;
        setopt(s, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ, &seq).context("TCP_QUEUE_SEQ")
    };
    // The image's FIN is not a byte of the queue.
    let outq_seq = if our_fin(state) { e.outq_seq.wrapping_sub(1) } else { e.outq_seq };
    set_seq(RECV_QUEUE, e.inq_seq.wrapping_sub(e.inq_len))?;
    set_seq(SEND_QUEUE, outq_seq.wrapping_sub(e.outq_len))?;
    // SAFETY: the kernel reads `peer_len` bytes of the address.
    if unsafe { libc::connect(s, (peer as *const libc::sockaddr_storage).cast(), peer_len) } < 0 {
        return Err(std::io::Error::last_os_error()).context("connecting in repair mode");
    }
    let mut opts: Vec<linux_raw_sys::net::tcp_repair_opt> = vec![];
    let opt = |opt_code, opt_val| linux_raw_sys::net::tcp_repair_opt { opt_code, opt_val };
    if e.opt_mask & TCPI_OPT_SACK != 0 {
        opts.push(opt(TCPOPT_SACK_PERM, 0));
    }
    if e.opt_mask & TCPI_OPT_WSCALE != 0 {
        opts.push(opt(TCPOPT_WINDOW, e.snd_wscale | e.rcv_wscale.unwrap_or(0) << 16));
    }
    if e.opt_mask & TCPI_OPT_TIMESTAMPS != 0 {
        opts.push(opt(TCPOPT_TIMESTAMP, 0));
    }
    opts.push(opt(TCPOPT_MAXSEG, e.mss_clamp));
    // SAFETY: the kernel reads the array's bytes.
    let r = unsafe {
        libc::setsockopt(
            s,
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR_OPTIONS,
            opts.as_ptr().cast(),
            size_of_val(&opts[..]) as _,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("TCP_REPAIR_OPTIONS");
    }
    if let Some(ts) = e.timestamp.filter(|_| e.opt_mask & TCPI_OPT_TIMESTAMPS != 0) {
        setopt(s, libc::IPPROTO_TCP, libc::TCP_TIMESTAMP, &ts).context("TCP_TIMESTAMP")?;
    }
    select_queue(s, RECV_QUEUE)?;
    send_all(s, &st.inq).context("filling the receive queue")?;
    // What was sent goes in as sent (acknowledgements may come for it);
    // what was not, as the program's own writes, out of repair mode.
    let sent = (e.outq_len - unsq) as usize;
    select_queue(s, SEND_QUEUE)?;
    send_all(s, &st.outq[..sent]).context("filling the send queue")?;
    if unsq > 0 {
        select_queue(s, NO_QUEUE)?;
        repair(s, false)?;
        send_all(s, &st.outq[sent..]).context("writing what was not sent yet")?;
        repair(s, true)?;
    }
    if let (Some(snd_wl1), Some(snd_wnd), Some(max_window), Some(rcv_wnd), Some(rcv_wup)) =
        (e.snd_wl1, e.snd_wnd, e.max_window, e.rcv_wnd, e.rcv_wup)
    {
        let w = linux_raw_sys::net::tcp_repair_window { snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup };
        setopt(s, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW, &w).context("TCP_REPAIR_WINDOW")?;
    }
    if state == FIN_WAIT1 {
        // Our FIN, not acknowledged yet: queued again by shutting down.
        select_queue(s, NO_QUEUE)?;
        // SAFETY: a plain call on our socket.
        if unsafe { libc::shutdown(s, libc::SHUT_WR) } < 0 {
            return Err(std::io::Error::last_os_error()).context("shutdown");
        }
    }
    Ok(())
}

/// Writes `data` whole; in repair mode the kernel may refuse a large
/// piece at once (one linear buffer), so pieces shrink until it takes
/// them.
fn send_all(s: i32, mut data: &[u8]) -> Result<()> {
    let mut piece = data.len().max(1);
    while !data.is_empty() {
        let n = piece.min(data.len());
        // SAFETY: the kernel reads `n` bytes of our buffer.
        let r = unsafe { libc::send(s, data.as_ptr().cast(), n, libc::MSG_DONTWAIT) };
        if r <= 0 {
            if piece > 1024 {
                piece /= 2;
                continue;
            }
            return Err(std::io::Error::last_os_error()).with_context(|| format!("{} bytes left", data.len()));
        }
        data = &data[r as usize..];
    }
    Ok(())
}

/// A new socket like the dumped one, locked before it is bound.
pub fn new_locked(family: u32) -> Result<OwnedFd> {
    // SAFETY: a new socket, owned at once.
    let raw = unsafe { libc::socket(family as i32, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: just made.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    drop_all(fd.as_raw_fd())?;
    repair(fd.as_raw_fd(), true)?;
    Ok(fd)
}
