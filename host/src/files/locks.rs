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
//! `F_SETLEASE`; one the kernel was breaking (someone opened the file in
//! a conflicting way) is taken as it was before and broken again the
//! way CRIU does it, by opening the file without waiting: the holder is
//! told of the break once, before the dump, and not again.

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::FileLockEntry;
use revenant_images::{ImageSet, Kind, Process, Writer};

pub const FL_POSIX: u32 = 1;
pub const FL_FLOCK: u32 = 2;
pub const FL_OFD: u32 = 4;
/// A lease (`F_SETLEASE`), CRIU's `FL_LEASE`.
pub const FL_LEASE: u32 = 8;
/// In a lease's `type`, beside the type it is being broken to (`F_UNLCK`
/// or `F_RDLCK`): CRIU's `LEASE_BREAKING`.
const LEASE_BREAKING: u32 = 4;

/// One lock to take again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    /// [`FL_POSIX`], [`FL_FLOCK`], [`FL_OFD`] or [`FL_LEASE`].
    pub kind: u32,
    /// `F_RDLCK` or `F_WRLCK`.
    pub write: bool,
    /// A lease the kernel is breaking: the type it is broken to,
    /// `F_UNLCK` or `F_RDLCK` (it was read or write before, as its
    /// description's access mode says).
    pub breaking_to: Option<u32>,
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
        "LEASE" if mode == "ACTIVE" || mode == "BREAKING" => FL_LEASE,
        other => bail!(
            "process {pid}: fd {fd} ({file}) holds a file lock ({other} {mode} {ty}), which dump does not support yet"
        ),
    };
    let breaking_to = match (mode, ty) {
        ("BREAKING", "UNLCK") => Some(libc::F_UNLCK as u32),
        ("BREAKING", "READ") => Some(libc::F_RDLCK as u32),
        ("BREAKING", _) => bail!("{}: a lease broken to {ty} cannot be taken again", bad()),
        _ => None,
    };
    let write = match ty {
        "WRITE" => true,
        "READ" | "UNLCK" if breaking_to.is_some() => false,
        "READ" => false,
        _ => bail!("{}: a {ty} lock cannot be taken again", bad()),
    };
    let owner: i32 = owner.parse().with_context(bad)?;
    if kind == FL_POSIX && owner != pid {
        return Ok(None);
    }
    let start: i64 = start.parse().with_context(bad)?;
    let len = if end == "EOF" { 0 } else { end.parse::<i64>().with_context(bad)? + 1 - start };
    Ok(Some(Lock { kind, write, breaking_to, pid, fd, start, len }))
}

/// CRIU's `type`: `F_RDLCK` or `F_WRLCK`.
fn ty(write: bool) -> u32 {
    if write { libc::F_WRLCK as u32 } else { libc::F_RDLCK as u32 }
}

impl Lock {
    pub fn entry(&self) -> FileLockEntry {
        FileLockEntry {
            flag: self.kind,
            r#type: self.breaking_to.map_or(ty(self.write), |to| to | LEASE_BREAKING),
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
        let breaking = e.flag == FL_LEASE && e.r#type & LEASE_BREAKING != 0;
        let (write, breaking_to) = match e.r#type & !if breaking { LEASE_BREAKING } else { 0 } {
            t if breaking && (t == libc::F_UNLCK as u32 || t == libc::F_RDLCK as u32) => (false, Some(t)),
            t if breaking => bail!("{at}: type {:#x}: a lease being broken to neither F_UNLCK nor F_RDLCK", t),
            t if t == ty(true) => (true, None),
            t if t == ty(false) => (false, None),
            t => bail!("{at}: type {t}: neither F_RDLCK nor F_WRLCK"),
        };
        if e.start < 0 || e.len < 0 || e.start.checked_add(e.len).is_none() {
            bail!("{at}: start {} len {}: not a range of a file", e.start, e.len);
        }
        Ok(Lock { kind: e.flag, write, breaking_to, pid: e.pid, fd: e.fd, start: e.start, len: e.len })
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
            } else if let Some(to) = self.breaking_to {
                return self.break_again(to);
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

    /// A lease being broken to `to`: taken as it was before the break
    /// (read on a read-only description, write otherwise), then broken
    /// by opening the file again through our fd, without waiting
    /// (`EWOULDBLOCK`: the break has begun). The kernel tells the holder,
    /// this task, with the fd's signal (`SIGIO` unless `F_SETSIG` chose
    /// another); the program was told before the dump, so that signal is
    /// blocked meanwhile and taken off again.
    ///
    /// # Safety
    /// As [`Lock::take`].
    unsafe fn break_again(&self, to: u32) -> Result<(), &'static str> {
        // SAFETY: system calls on the task's own fd, signal mask and
        // structs of ours.
        unsafe {
            let sig = match libc::fcntl(self.fd, linux_raw_sys::general::F_GETSIG as libc::c_int) {
                s if s < 0 => return Err("F_GETSIG on a lease being broken"),
                0 => libc::SIGIO,
                s => s,
            };
            let (mut only, mut before): (libc::sigset_t, libc::sigset_t) = (std::mem::zeroed(), std::mem::zeroed());
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, sig);
            if libc::sigprocmask(libc::SIG_BLOCK, &only, &mut before) < 0 {
                return Err("blocking the signal of a lease's break");
            }
            let fl = libc::fcntl(self.fd, libc::F_GETFL);
            if fl < 0 {
                libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
                return Err("F_GETFL on a lease being broken");
            }
            let read_only = fl & libc::O_ACCMODE == libc::O_RDONLY;
            let was = if read_only { libc::F_RDLCK } else { libc::F_WRLCK };
            // "/proc/self/fd/N" without allocating (this runs in the new task).
            let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0";
            let digits = self.fd.max(0).checked_ilog10().unwrap_or(0) as usize + 1;
            let mut n = self.fd.max(0) as u32;
            for at in (14..14 + digits).rev() {
                path[at] = b'0' + (n % 10) as u8;
                n /= 10;
            }
            let breaker = if to == libc::F_UNLCK as u32 { libc::O_WRONLY } else { libc::O_RDONLY };
            let res = if libc::fcntl(self.fd, libc::F_SETLEASE, was) < 0 {
                Err("taking a lease the program held (another process holds the file open now?)")
            } else {
                let opened = libc::open(path.as_ptr().cast(), breaker | libc::O_NONBLOCK | libc::O_CLOEXEC);
                if opened >= 0 {
                    libc::close(opened);
                    Err("breaking a lease again: the file opened without a break")
                } else if nix::errno::Errno::last_raw() != libc::EWOULDBLOCK {
                    Err("breaking a lease again: opening the file failed")
                } else {
                    let none: libc::timespec = std::mem::zeroed();
                    libc::sigtimedwait(&only, std::ptr::null_mut(), &none);
                    Ok(())
                }
            };
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            res
        }
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
