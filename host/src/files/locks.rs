//! File locks a process holds: `flock`, POSIX record locks and OFD locks,
//! read at dump from the `lock:` lines of `/proc/PID/fdinfo/N`, written
//! as CRIU writes them (`filelocks.img`), and taken again by the restored
//! process itself, through the same fd, before its blob runs: a lock held
//! by someone else by then fails the restore, which is still undoable.
//!
//! The kernel shows a lock on every fd of the description it was taken
//! through. A POSIX lock belongs to a process (the pid in the line); a
//! flock, OFD lock or lease to the description, so one is written once,
//! for the first process and fd seen on it. Leases are taken again with
//! `F_SETLEASE` (a lease being broken, and delegations, are refused).

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::FileLockEntry;
use revenant_images::{ImageSet, Kind, Process, Writer};

pub const FL_POSIX: u32 = 1;
pub const FL_FLOCK: u32 = 2;
pub const FL_OFD: u32 = 4;
/// A lease (`F_SETLEASE`), CRIU's `FL_LEASE`.
pub const FL_LEASE: u32 = 8;

/// One lock to take again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    /// [`FL_POSIX`], [`FL_FLOCK`], [`FL_OFD`] or [`FL_LEASE`].
    pub kind: u32,
    /// `F_RDLCK` or `F_WRLCK`.
    pub write: bool,
    pub pid: i32,
    pub fd: i32,
    pub start: i64,
    /// 0: to the end of the file, however long it grows.
    pub len: i64,
}

/// The lock of one `lock:` line of fd `fd` (on `file`) of `pid` (text
/// after `lock:`),
/// if it is this process's to keep: `None` for a POSIX lock of another
/// process (it shows on its own fd too, or is not the tree's).
pub fn parse(line: &str, pid: i32, fd: i32, file: &str) -> Result<Option<Lock>> {
    // "1: POSIX  ADVISORY  WRITE 1234 00:2b:5678 0 EOF"; a lease says
    // ACTIVE, or BREAKING while the kernel breaks it.
    let w: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("process {pid}: fd {fd} ({file}): lock {:?}", line.trim());
    let (kind, mode, ty, owner, start, end) = match w.as_slice() {
        [_, kind, mode, ty, owner, _, start, end, ..] => (*kind, *mode, *ty, *owner, *start, *end),
        _ => bail!("{}: not a lock line this dump can read", bad()),
    };
    let kind = match kind {
        "POSIX" => FL_POSIX,
        "FLOCK" => FL_FLOCK,
        "OFDLCK" => FL_OFD,
        "LEASE" if mode == "ACTIVE" => FL_LEASE,
        other => bail!(
            "process {pid}: fd {fd} ({file}) holds a file lock ({other} {mode} {ty}), which dump does not support yet"
        ),
    };
    let write = match ty {
        "WRITE" => true,
        "READ" => false,
        _ => bail!("{}: a {ty} lock cannot be taken again", bad()),
    };
    let owner: i32 = owner.parse().with_context(bad)?;
    if kind == FL_POSIX && owner != pid {
        return Ok(None);
    }
    let start: i64 = start.parse().with_context(bad)?;
    let len = if end == "EOF" { 0 } else { end.parse::<i64>().with_context(bad)? + 1 - start };
    Ok(Some(Lock { kind, write, pid, fd, start, len }))
}

/// CRIU's `type`: `F_RDLCK` or `F_WRLCK`.
fn ty(write: bool) -> u32 {
    if write { libc::F_WRLCK as u32 } else { libc::F_RDLCK as u32 }
}

impl Lock {
    pub fn entry(&self) -> FileLockEntry {
        FileLockEntry {
            flag: self.kind,
            r#type: ty(self.write),
            pid: self.pid,
            fd: self.fd,
            start: self.start,
            len: self.len,
            ..Default::default()
        }
    }

    /// The lock of entry `i` of `filelocks.img`, checked.
    pub fn from_entry(e: &FileLockEntry, i: usize) -> Result<Lock> {
        let at = format!("filelocks.img: entry {i}");
        if ![FL_POSIX, FL_FLOCK, FL_OFD, FL_LEASE].contains(&e.flag) {
            bail!("{at}: flag {:#x}: only flock, POSIX and OFD locks and leases are restored", e.flag);
        }
        let write = match e.r#type {
            t if t == ty(true) => true,
            t if t == ty(false) => false,
            t => bail!("{at}: type {t}: neither F_RDLCK nor F_WRLCK"),
        };
        if e.start < 0 || e.len < 0 || e.start.checked_add(e.len).is_none() {
            bail!("{at}: start {} len {}: not a range of a file", e.start, e.len);
        }
        Ok(Lock { kind: e.flag, write, pid: e.pid, fd: e.fd, start: e.start, len: e.len })
    }

    /// Takes the lock again, without waiting: someone else holding it now
    /// fails the restore. Runs in the new task: system calls only.
    ///
    /// # Safety
    /// `fd` must be the task's descriptor the lock was taken through.
    pub unsafe fn take(&self) -> Result<(), &'static str> {
        // SAFETY: plain system calls on the task's own fd and a struct of ours.
        let res = unsafe {
            if self.kind == FL_FLOCK {
                libc::flock(self.fd, if self.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB)
            } else if self.kind == FL_LEASE {
                libc::fcntl(self.fd, libc::F_SETLEASE, ty(self.write) as libc::c_int)
            } else {
                // 64-bit offsets on every arch: `fcntl64` with
                // `F_SETLK64` where `off_t` is 32 bits (F_OFD_SETLK always
                // takes a `flock64`).
                let (nr, setlk) = cfg_select! {
                    target_pointer_width = "64" => { (libc::SYS_fcntl, libc::F_SETLK) }
                    _ => { (libc::SYS_fcntl64, 13) }
                };
                let mut fl: libc::flock64 = std::mem::zeroed();
                fl.l_type = ty(self.write) as libc::c_short;
                fl.l_whence = libc::SEEK_SET as libc::c_short;
                fl.l_start = self.start;
                fl.l_len = self.len;
                let cmd = if self.kind == FL_OFD { libc::F_OFD_SETLK } else { setlk };
                libc::syscall(nr, self.fd, cmd, &mut fl) as i32
            }
        };
        if res < 0 { Err("taking a file lock the program held (another process holds it now?)") } else { Ok(()) }
    }
}

/// The locks process `pid` (`p`) takes again, each through an fd it has.
pub fn plan(set: &ImageSet, p: &Process) -> Result<Vec<Lock>> {
    let pid = p.pstree.pid as i32;
    let mut locks = vec![];
    for (k, e) in set.file_locks.iter().enumerate().filter(|(_, e)| e.pid == pid) {
        let l = Lock::from_entry(e, k)?;
        if !p.fds.iter().any(|f| f.fd == l.fd as u32) {
            bail!("filelocks.img: entry {k}: fd {}: process {pid} has no such fd", l.fd);
        }
        locks.push(l);
    }
    Ok(locks)
}

/// `filelocks.img`, if the tree holds any lock.
pub fn image<'a>(locks: impl ExactSizeIterator<Item = &'a Lock>) -> Option<Writer> {
    if locks.len() == 0 {
        return None;
    }
    let mut w = Writer::new(Kind::FileLocks);
    for l in locks {
        w.push(&l.entry());
    }
    Some(w)
}
