//! Terminals: pseudoterminal pairs the tree made (`/dev/ptmx` and its
//! `/dev/pts/N`), the terminal a shell job runs on (`--shell-job`),
//! `/dev/tty`, the console and virtual consoles.
//!
//! The dump writes what CRIU 4.2 writes: a `files.img` TTY entry per open
//! description (with a REG entry for its path), a `tty-info.img` entry per
//! terminal (settings, window size, lock, packet and exclusive modes, the
//! session it controls and its foreground group) and, for a pair whose
//! two ends the tree holds, the bytes queued at each end (`tty-data.img`).
//! A terminal can only be read by draining it: the bytes are read and
//! written back at once, while the tree is frozen, under settings that
//! keep the terminal from echoing or translating them again.
//!
//! The restore opens every terminal in the host, before any process
//! exists (a pair gets its dumped index, or the restore stops naming it),
//! sets it up and puts the queued bytes back; the root places the
//! descriptions at their slots like the tree's other shared files. A
//! session leader whose session had a terminal takes it again
//! (`TIOCSCTTY`) before it creates its children, and the leader of the
//! foreground group brings its group forward. The terminal of a shell job
//! (a slave whose master is outside the tree) is the restoring shell's:
//! revenant's stdin, with the dumped settings.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use linux_raw_sys::general::{self as g, termios, winsize};
use linux_raw_sys::ioctl as io;
use nix::libc;
use revenant_images::ImageSet;
use revenant_images::messages::{
    FdType, FdinfoEntry, FileEntry, FownEntry, TermiosEntry, TtyDataEntry, TtyFileEntry, TtyInfoEntry, TtyPtyEntry,
    TtyType, WinsizeEntry,
};

use super::{FdPlan, FileKind, Files, RegFile};
use crate::procfs;

/// Which kind of terminal a device number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    PtyMaster,
    PtySlave,
    Console,
    Vt,
    /// `/dev/tty`.
    Ctty,
}

impl Driver {
    /// The terminals revenant carries; `None` for other devices (and for
    /// serial lines, which a dump refuses as devices).
    pub fn of(rdev: u64) -> Option<Driver> {
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        Some(match (major, minor) {
            (5, 0) => Driver::Ctty,
            (5, 1) => Driver::Console,
            (5, 2) | (128..=135, _) => Driver::PtyMaster,
            (136..=143, _) => Driver::PtySlave,
            (4, 1..=63) => Driver::Vt,
            _ => return None,
        })
    }

    fn tty_type(self) -> TtyType {
        match self {
            Driver::PtyMaster | Driver::PtySlave => TtyType::Pty,
            Driver::Console => TtyType::Console,
            Driver::Vt => TtyType::Vt,
            Driver::Ctty => TtyType::Ctty,
        }
    }
}

/// CRIU's indexes of the terminals that are not pseudoterminals (theirs
/// are the pty number): `tty-info.img` ids are twice the index, plus one
/// for a master.
const CONSOLE_INDEX: u32 = 1002;
const VT_INDEX: u32 = 1004;
const CTTY_INDEX: u32 = 1006;

/// The most bytes carried from one end of a pair (the kernel's own buffer
/// holds 4 KiB).
const DATA_LIMIT: usize = 16 << 10;

/// One open description of a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tty {
    /// Its terminal's `tty-info.img` id.
    pub info_id: u32,
    pub flags: u32,
    /// The entry holding its path.
    pub regf_id: u32,
}

impl Tty {
    pub fn entry(&self, id: u32, fown: FownEntry) -> FileEntry {
        FileEntry {
            r#type: FdType::Tty as i32,
            id,
            tty: Some(TtyFileEntry {
                id,
                tty_info_id: self.info_id,
                flags: self.flags,
                fown,
                regf_id: Some(self.regf_id),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A terminal the dump saw, with a descriptor of ours on it for reading
/// its queue (pseudoterminals only).
#[derive(Debug)]
pub struct Seen {
    pub info: TtyInfoEntry,
    /// The path the program opened it by.
    pub path: String,
    fd: Option<OwnedFd>,
}

impl Files {
    /// Fd `fd` of `pid` on a terminal (`target`, of kind `driver`).
    pub(super) fn tty(
        &mut self,
        pid: i32,
        fd: i32,
        target: &str,
        m: &fs::Metadata,
        driver: Driver,
        flags: u32,
    ) -> Result<FileKind> {
        let what = || format!("process {pid}: fd {fd} ({target})");
        let own = procfs::borrow_fd(pid, fd).with_context(what)?;
        let index = match driver {
            Driver::PtyMaster => get::<u32>(own.as_fd(), io::TIOCGPTN).with_context(what)?,
            Driver::PtySlave => {
                ((nix::sys::stat::major(m.rdev()) - 136) * 256 + nix::sys::stat::minor(m.rdev())) as u32
            }
            Driver::Console => CONSOLE_INDEX,
            Driver::Vt => VT_INDEX,
            Driver::Ctty => CTTY_INDEX,
        };
        let info_id = index * 2 + u32::from(driver == Driver::PtyMaster);
        if !self.ttys.iter().any(|t| t.info.id == info_id) {
            let info = info(pid, own.as_fd(), driver, info_id, index, m).with_context(what)?;
            let pty = driver == Driver::PtyMaster || driver == Driver::PtySlave;
            self.ttys.push(Seen { info, path: target.to_string(), fd: pty.then_some(own) });
        }
        let regf_id = self.push(FileKind::Reg(RegFile {
            flags,
            pos: 0,
            name: target.into(),
            size: None,
            mode: m.mode(),
            unlinked_name: None,
        }));
        Ok(FileKind::Tty(Tty { info_id, flags, regf_id }))
    }

    /// Once every fd is seen: refuses a pseudoterminal whose master is
    /// outside the tree unless it is a shell job's terminal, and reads
    /// the bytes queued in each pair the tree holds both ends of.
    pub fn tty_queues(&mut self, shell_job: bool) -> Result<()> {
        let mut external = None;
        for t in &self.ttys {
            let i = &t.info;
            if i.r#type != TtyType::Pty as i32
                || i.id % 2 == 1
                || self.ttys.iter().any(|m| m.info.id == i.id + 1)
                || hung_up(i)
            {
                continue;
            }
            if !shell_job {
                bail!(
                    "{} is a terminal whose master is outside the dumped tree (the terminal of the shell it runs \
                     in?): dump with --shell-job, and restore with --shell-job to give it the restoring terminal",
                    t.path
                );
            }
            if external.is_some_and(|e| e != i.id) {
                bail!(
                    "the tree holds two terminals from outside it ({} and another): only one can be a shell job's",
                    t.path
                );
            }
            external = Some(i.id);
        }
        let masters: Vec<usize> = (0..self.ttys.len()).filter(|&k| is_master(&self.ttys[k].info)).collect();
        for k in masters {
            let index = self.ttys[k].info.pty.as_ref().map_or(0, |p| p.index);
            let slave_id = self.ttys[k].info.id - 1;
            // The slave may be only some session's terminal, with no fd on it.
            let opened;
            let slave = match self.ttys.iter().find(|t| t.info.id == slave_id).and_then(|t| t.fd.as_ref()) {
                Some(fd) => fd.as_fd(),
                None if self.ttys[k].info.locked => continue,
                None => {
                    opened = open_slave(&slave_path(index)).with_context(|| format!("opening /dev/pts/{index}"))?;
                    opened.as_fd()
                }
            };
            let master = self.ttys[k].fd.as_ref().context("a master without a descriptor")?.as_fd();
            let (to_slave, to_master) =
                drain(master, slave).with_context(|| format!("reading the queues of pseudoterminal {index}"))?;
            for (tty_id, data) in [(slave_id, to_slave), (slave_id + 1, to_master)] {
                if !data.is_empty() {
                    self.tty_data.push(TtyDataEntry { tty_id, data, ..Default::default() });
                }
            }
        }
        Ok(())
    }
}

fn ty_of(i: &TtyInfoEntry) -> TtyType {
    TtyType::try_from(i.r#type).unwrap_or(TtyType::Unknown)
}

/// A pseudoterminal slave whose master was closed (CRIU's entry then has
/// no termios).
fn hung_up(i: &TtyInfoEntry) -> bool {
    i.r#type == TtyType::Pty as i32 && i.id.is_multiple_of(2) && i.termios.is_none()
}

fn is_master(i: &TtyInfoEntry) -> bool {
    i.r#type == TtyType::Pty as i32 && i.id % 2 == 1
}

fn slave_path(index: u32) -> String {
    format!("/dev/pts/{index}")
}

fn open_slave(path: &str) -> std::io::Result<OwnedFd> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

/// What the dump records of a terminal.
fn info(pid: i32, fd: BorrowedFd, driver: Driver, id: u32, index: u32, m: &fs::Metadata) -> Result<TtyInfoEntry> {
    let pty = matches!(driver, Driver::PtyMaster | Driver::PtySlave);
    // A slave's session is asked of its processes: TIOCGSID answers only
    // the terminal's own session, or through the master.
    let (sid, pgrp) = match driver {
        Driver::PtyMaster => (or_zero(fd, io::TIOCGSID)?, or_zero(fd, io::TIOCGPGRP)?),
        Driver::Ctty => (0, 0),
        _ => {
            let st = procfs::stat(pid, pid)?;
            if u64::from(st.tty_nr) == m.rdev() { (st.sid as u32, st.tpgid.max(0) as u32) } else { (0, 0) }
        }
    };
    let t: termios = match get(fd, io::TCGETS) {
        // A slave whose master was closed: hung up, no settings, no
        // session (CRIU's entry has no termios then).
        Err(e) if e.raw_os_error() == Some(libc::EIO) && driver == Driver::PtySlave => {
            return Ok(TtyInfoEntry {
                id,
                r#type: driver.tty_type() as i32,
                rdev: m.rdev() as u32,
                pty: Some(TtyPtyEntry { index, ..Default::default() }),
                dev: Some(m.dev() as u32),
                uid: Some(m.uid()),
                gid: Some(m.gid()),
                ..Default::default()
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {
            bail!("the terminal was hung up (its other end closed): not supported")
        }
        r => r.context("TCGETS")?,
    };
    let locked: termios = get(fd, io::TIOCGLCKTRMIOS).context("TIOCGLCKTRMIOS")?;
    let w: winsize = get(fd, io::TIOCGWINSZ).context("TIOCGWINSZ")?;
    let (packet, lock) = if pty { (or_zero(fd, io::TIOCGPKT)?, or_zero(fd, io::TIOCGPTLCK)?) } else { (0, 0) };
    Ok(TtyInfoEntry {
        id,
        r#type: driver.tty_type() as i32,
        locked: lock != 0,
        exclusive: or_zero(fd, io::TIOCGEXCL)? != 0,
        packet_mode: packet != 0,
        sid,
        pgrp,
        rdev: m.rdev() as u32,
        termios: Some(termios_entry(&t)),
        termios_locked: Some(termios_entry(&locked)),
        winsize: Some(WinsizeEntry {
            ws_row: w.ws_row.into(),
            ws_col: w.ws_col.into(),
            ws_xpixel: w.ws_xpixel.into(),
            ws_ypixel: w.ws_ypixel.into(),
            ..Default::default()
        }),
        pty: pty.then_some(TtyPtyEntry { index, ..Default::default() }),
        dev: Some(m.dev() as u32),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        ..Default::default()
    })
}

fn termios_entry(t: &termios) -> TermiosEntry {
    TermiosEntry {
        c_iflag: t.c_iflag,
        c_oflag: t.c_oflag,
        c_cflag: t.c_cflag,
        c_lflag: t.c_lflag,
        c_line: t.c_line.into(),
        c_ispeed: 0,
        c_ospeed: 0,
        c_cc: t.c_cc.iter().map(|&c| c.into()).collect(),
        ..Default::default()
    }
}

fn termios_of(e: &TermiosEntry) -> termios {
    let mut c_cc = [0u8; 19];
    for (d, s) in c_cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    termios {
        c_iflag: e.c_iflag,
        c_oflag: e.c_oflag,
        c_cflag: e.c_cflag,
        c_lflag: e.c_lflag,
        c_line: e.c_line as u8,
        c_cc,
    }
}

/// `t` as it must be while queued bytes are moved through the terminal:
/// no echo, no signals from control characters, no translation of input
/// or output; line editing stays as it was, so lines stay lines.
fn quiet(t: &termios) -> termios {
    termios {
        c_iflag: t.c_iflag & !(g::ICRNL | g::INLCR | g::IGNCR | g::ISTRIP | g::IXON | g::IUCLC),
        c_oflag: t.c_oflag & !g::OPOST,
        c_lflag: t.c_lflag & !(g::ECHO | g::ECHOE | g::ECHOK | g::ECHONL | g::ECHOCTL | g::ECHOKE | g::ISIG),
        ..*t
    }
}

/// The bytes queued towards the slave's reader and towards the master's,
/// read and written back at once (a terminal has no peek).
fn drain(master: BorrowedFd, slave: BorrowedFd) -> Result<(Vec<u8>, Vec<u8>)> {
    let t: termios = get(slave, io::TCGETS).context("TCGETS")?;
    // Non-canonical with VMIN 0, a read returns what there is at once,
    // partial lines included.
    let mut raw = quiet(&t);
    raw.c_lflag &= !g::ICANON;
    raw.c_cc[g::VMIN as usize] = 0;
    raw.c_cc[g::VTIME as usize] = 0;
    set(slave, io::TCSETS, &raw).context("TCSETS")?;
    let to_slave = read_all(slave, None);
    let queued = or_zero(master, io::FIONREAD).unwrap_or(0) as usize;
    let to_master = if queued > 0 { read_all(master, Some(queued)) } else { Ok(Vec::new()) };
    // Back in, whatever happened, under settings that leave them as read.
    set(slave, io::TCSETS, &quiet(&t)).context("TCSETS")?;
    let back = refill(slave, to_slave.as_deref().unwrap_or(&[]), to_master.as_deref().unwrap_or(&[]));
    set(slave, io::TCSETS, &t).context("TCSETS (putting the settings back)")?;
    back?;
    Ok((to_slave?, to_master?))
}

/// Puts back what the slave's reader had queued (typed in through
/// `TIOCSTI`, which the line discipline takes at once: written into the
/// master, the bytes would reach it later, under whatever settings hold
/// by then) and what the master's reader had (written by the slave, whose
/// output processing runs in the write). The slave's settings must be
/// quiet meanwhile.
fn refill(slave: BorrowedFd, to_slave: &[u8], to_master: &[u8]) -> Result<()> {
    for b in to_slave {
        set(slave, io::TIOCSTI, b).context("TIOCSTI")?;
    }
    let n = nix::unistd::write(slave, to_master).context("writing queued bytes back")?;
    if n != to_master.len() {
        bail!("the terminal took back only {n} of {} queued bytes", to_master.len());
    }
    Ok(())
}

/// Reads until the terminal has nothing more (or `want` bytes).
fn read_all(fd: BorrowedFd, want: Option<usize>) -> Result<Vec<u8>> {
    let mut out = vec![0u8; want.unwrap_or(DATA_LIMIT).min(DATA_LIMIT)];
    let mut got = 0;
    while got < out.len() {
        match nix::unistd::read(fd, &mut out[got..]) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("reading a terminal's queue"),
        }
    }
    out.truncate(got);
    Ok(out)
}

/// An ioctl that reads a `T`.
fn get<T: Copy>(fd: BorrowedFd, req: u32) -> std::io::Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: each request used here writes at most one `T`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, v.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed, then written by the kernel; every T here is plain data.
    Ok(unsafe { v.assume_init() })
}

/// An int-reading ioctl, 0 where the terminal does not answer it (ENOTTY).
fn or_zero(fd: BorrowedFd, req: u32) -> Result<u32> {
    match get::<libc::c_int>(fd, req) {
        Ok(v) => Ok(v as u32),
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) || e.raw_os_error() == Some(libc::EINVAL) => Ok(0),
        Err(e) => Err(e).with_context(|| format!("ioctl {req:#x}")),
    }
}

/// An ioctl that takes a pointer to `v`.
fn set<T>(fd: BorrowedFd, req: u32, v: &T) -> std::io::Result<()> {
    // SAFETY: the kernel reads one `T`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, v as *const T) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An ioctl that takes an int by value (or none).
fn set_int(fd: BorrowedFd, req: u32, v: libc::c_int) -> std::io::Result<()> {
    // SAFETY: no memory is passed.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, v) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `tty-info.img` and `tty-data.img`.
pub fn images(files: &Files, put: &mut dyn FnMut(String, &revenant_images::Writer) -> Result<()>) -> Result<()> {
    use revenant_images::{Kind, Writer};
    if files.ttys.is_empty() {
        return Ok(());
    }
    let mut w = Writer::new(Kind::TtyInfo);
    for t in &files.ttys {
        w.push(&t.info);
    }
    put("tty-info.img".into(), &w)?;
    if !files.tty_data.is_empty() {
        let mut w = Writer::new(Kind::TtyData);
        for d in &files.tty_data {
            w.push(d);
        }
        put("tty-data.img".into(), &w)?;
    }
    Ok(())
}

/// A terminal to open in the host for the restore.
#[derive(Debug, Clone)]
pub struct TtyPlan {
    pub info: TtyInfoEntry,
    /// Bytes to put back for this end's reader.
    pub queued: Vec<u8>,
    /// A shell job's terminal: revenant's stdin stands in for it.
    pub inherit: bool,
}

impl TtyPlan {
    fn index(&self) -> u32 {
        self.info.pty.as_ref().map_or(self.info.id / 2, |p| p.index)
    }
}

/// The terminals of the images, each once, and which of them are a shell
/// job's (a slave without its master: refused without `--shell-job`).
pub fn plan(set: &ImageSet, shell_job: bool) -> Result<Vec<TtyPlan>> {
    let mut out = Vec::new();
    for i in &set.tty_info {
        let at = format!("tty-info.img: id {:#x}", i.id);
        if out.iter().any(|t: &TtyPlan| t.info.id == i.id) {
            bail!("{at}: listed twice");
        }
        let ty = TtyType::try_from(i.r#type).map_err(|_| anyhow::anyhow!("{at}: type {}: unknown", i.r#type))?;
        let inherit =
            ty == TtyType::Pty && i.id % 2 == 0 && !set.tty_info.iter().any(|m| m.id == i.id + 1) && !hung_up(i);
        match ty {
            TtyType::Pty if i.pty.is_none() => bail!("{at}: a pseudoterminal without its pty index"),
            TtyType::Pty | TtyType::Console | TtyType::Vt | TtyType::Ctty => {}
            _ => bail!("{at}: type {ty:?}: not restored yet"),
        }
        if inherit && !shell_job {
            bail!(
                "{at}: pseudoterminal {} has its master outside the images (a shell job's terminal): restore with \
                 --shell-job to give it revenant's terminal",
                i.pty.as_ref().map_or(0, |p| p.index)
            );
        }
        if ty != TtyType::Ctty && i.termios.is_none() && !hung_up(i) {
            bail!("{at}: no termios (a terminal that was hung up): not restored");
        }
        if hung_up(i) && set.tty_info.iter().any(|m| m.id == i.id + 1) {
            bail!("{at}: a pseudoterminal slave hung up while the images hold its master");
        }
        let data = set.tty_data.iter().filter(|d| d.tty_id == i.id && ty == TtyType::Pty);
        let queued: Vec<u8> = data.flat_map(|d| d.data.iter().copied()).collect();
        if queued.len() > DATA_LIMIT {
            bail!("tty-data.img: {} bytes for terminal {:#x}: more than a terminal holds", queued.len(), i.id);
        }
        out.push(TtyPlan { info: i.clone(), queued, inherit });
    }
    if out.iter().filter(|t| t.inherit).count() > 1 {
        bail!("tty-info.img: several terminals from outside the tree: only one can be the restoring terminal");
    }
    Ok(out)
}

/// Fd `f` on terminal description `t`: the host opens it (all but
/// `/dev/tty`, which means the opener's terminal and is opened by the
/// process itself).
pub fn plan_fd(set: &ImageSet, f: &FdinfoEntry, t: &TtyFileEntry, cloexec: bool, at: &str) -> Result<FdPlan> {
    let info = set
        .tty_info
        .iter()
        .find(|i| i.id == t.tty_info_id)
        .with_context(|| format!("{at}: tty_info_id {:#x}: not in tty-info.img", t.tty_info_id))?;
    let path = match t.regf_id.and_then(|id| set.file(id)).and_then(|e| e.reg.as_ref()) {
        Some(r) => PathBuf::from(&r.name),
        None => PathBuf::from(match info.pty.as_ref() {
            Some(p) if info.id % 2 == 0 => slave_path(p.index),
            Some(_) => "/dev/ptmx".into(),
            None => bail!("{at}: regf_id {:?}: the terminal's path is not in files.img", t.regf_id),
        }),
    };
    let ctty = info.r#type == TtyType::Ctty as i32;
    Ok(FdPlan {
        fd: f.fd as i32,
        id: f.id,
        path,
        flags: t.flags as i32 & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC),
        cloexec,
        tty: (!ctty).then_some(t.tty_info_id),
        ..Default::default()
    })
}

/// The path of the slave of pseudoterminal `info` (a pair's session
/// leader takes its terminal through it).
pub fn ctty_path(info: &TtyInfoEntry) -> Option<PathBuf> {
    let p = info.pty.as_ref().filter(|_| info.r#type == TtyType::Pty as i32)?;
    Some(PathBuf::from(slave_path(p.index)))
}

/// The terminals a restore made, by `files.img` id; dropped once the
/// tasks hold their own.
#[derive(Debug, Default)]
pub struct Made {
    pub fds: Vec<(u32, OwnedFd)>,
}

/// Opens every terminal description of `plans` (by `files.img` id),
/// pairs at their dumped index, and sets each terminal up with its queued
/// bytes. Fails, naming the terminal, before any process exists.
pub fn make(ttys: &[TtyPlan], fds: &[&FdPlan]) -> Result<Made> {
    let mut made = Made::default();
    let info = |id: u32| ttys.iter().find(|t| t.info.id == id).with_context(|| format!("terminal {id:#x}: no plan"));
    let mut descs: Vec<&FdPlan> = Vec::new();
    for f in fds.iter().filter(|f| f.tty.is_some()) {
        if !descs.iter().any(|d| d.id == f.id) {
            descs.push(f);
        }
    }
    // Masters first: their slaves exist only once they do.
    descs.sort_by_key(|f| f.tty.map(|id| id % 2 == 0));
    // A hung-up slave is opened through a master of ours, closed once
    // they all are: that hangs them up, and its /dev/pts entry goes.
    let mut hang: Vec<(u32, OwnedFd, u32)> = Vec::new();
    for f in descs {
        let id = f.tty.unwrap_or_default();
        let t = info(id)?;
        let at = || format!("terminal {} (files.img id {}, tty-info.img id {id:#x})", f.path.display(), f.id);
        let fd = if hung_up(&t.info) {
            if !hang.iter().any(|(h, _, _)| *h == id) {
                // Its own index if free, else any: its name is gone anyway.
                let m = match open_ptmx(t.index(), 0) {
                    Ok(m) => m,
                    Err(_) => fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                        .open("/dev/ptmx")
                        .map(OwnedFd::from)
                        .with_context(at)?,
                };
                set(m.as_fd(), io::TIOCSPTLCK, &0i32).with_context(at)?;
                let n: u32 = get(m.as_fd(), io::TIOCGPTN).with_context(at)?;
                hang.push((id, m, n));
            }
            let n = hang.iter().find(|(h, _, _)| *h == id).map_or(0, |(_, _, n)| *n);
            let f2 = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags((f.flags & !libc::O_ACCMODE) | libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(slave_path(n))
                .with_context(at)?;
            OwnedFd::from(f2)
        } else if t.inherit {
            if !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
                bail!("{}: a shell job's terminal, and revenant's stdin is not a terminal to give it", at());
            }
            let fd = std::io::stdin().as_fd().try_clone_to_owned().with_context(at)?;
            // A shell job left its terminal as it needs it (a full-screen
            // program in raw mode); the window size is the terminal's own.
            if let Some(tm) = &t.info.termios {
                set(fd.as_fd(), io::TCSETS, &termios_of(tm)).with_context(at)?;
            }
            fd
        } else if is_master(&t.info) {
            let fd = open_ptmx(t.index(), f.flags).with_context(at)?;
            set(fd.as_fd(), io::TIOCSPTLCK, &0i32).with_context(at)?;
            fd
        } else {
            let f2 = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags((f.flags & !libc::O_ACCMODE) | libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(&f.path)
                .with_context(at)?;
            OwnedFd::from(f2)
        };
        made.fds.push((f.id, fd));
    }
    drop(hang);
    // Each terminal set up once, through any description of it.
    for t in ttys.iter().filter(|t| !t.inherit && !hung_up(&t.info)) {
        let Some(fd) = made.fds.iter().find(|(id, _)| fds.iter().any(|f| f.id == *id && f.tty == Some(t.info.id)))
        else {
            continue;
        };
        setup(t, fd.1.as_fd(), &made, fds).with_context(|| format!("setting up terminal {:#x}", t.info.id))?;
    }
    Ok(made)
}

/// The pty master with index `index`: `/dev/ptmx` opened until the kernel
/// hands out that index (it gives the lowest free one).
fn open_ptmx(index: u32, flags: i32) -> Result<OwnedFd> {
    let mut held = Vec::new();
    loop {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((flags & !libc::O_ACCMODE) | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open("/dev/ptmx")
            .context("opening /dev/ptmx")?;
        let got: u32 = get(f.as_fd(), io::TIOCGPTN).context("TIOCGPTN")?;
        if got == index {
            return Ok(f.into());
        }
        if got > index || held.len() > 1024 {
            bail!("pseudoterminal {index} is taken on this machine (the kernel gave {got})");
        }
        held.push(f);
    }
}

/// Sets up terminal `t` through `fd`: its queued bytes (written in by the
/// other end, under quiet settings), settings, locked settings, window
/// size, modes, lock and owner.
fn setup(t: &TtyPlan, fd: BorrowedFd, made: &Made, fds: &[&FdPlan]) -> Result<()> {
    let i = &t.info;
    let tm = i.termios.as_ref().map(termios_of);
    if let Some(tm) = &tm
        && !t.queued.is_empty()
    {
        // Both ways go through the slave: this end, or the pair's slave.
        let opened;
        let slave = if is_master(i) {
            let peer = made.fds.iter().find(|(id, _)| fds.iter().any(|f| f.id == *id && f.tty == Some(i.id - 1)));
            match peer {
                Some((_, p)) => p.as_fd(),
                None => {
                    opened = open_slave(&slave_path(t.index())).context("opening the slave to write its queue")?;
                    opened.as_fd()
                }
            }
        } else {
            fd
        };
        // Through a master, the settings are its slave's: one set for both.
        set(slave, io::TCSETS, &quiet(tm)).context("TCSETS")?;
        let (to_slave, to_master): (&[u8], &[u8]) = if is_master(i) { (&[], &t.queued) } else { (&t.queued, &[]) };
        let put = refill(slave, to_slave, to_master);
        set(slave, io::TCSETS, tm).context("TCSETS")?;
        put?;
    }
    if let Some(tm) = &tm {
        set(fd, io::TCSETS, tm).context("TCSETS")?;
    }
    if let Some(l) = &i.termios_locked {
        set(fd, io::TIOCSLCKTRMIOS, &termios_of(l)).context("TIOCSLCKTRMIOS")?;
    }
    if let Some(w) = &i.winsize {
        let w = winsize {
            ws_row: w.ws_row as u16,
            ws_col: w.ws_col as u16,
            ws_xpixel: w.ws_xpixel as u16,
            ws_ypixel: w.ws_ypixel as u16,
        };
        set(fd, io::TIOCSWINSZ, &w).context("TIOCSWINSZ")?;
    }
    if i.exclusive {
        set_int(fd, io::TIOCEXCL, 0).context("TIOCEXCL")?;
    }
    if is_master(i) {
        if i.packet_mode {
            set(fd, io::TIOCPKT, &1i32).context("TIOCPKT")?;
        }
        if i.locked {
            set(fd, io::TIOCSPTLCK, &1i32).context("TIOCSPTLCK")?;
        }
    } else if let (TtyType::Pty, Some(uid), Some(gid)) = (ty_of(i), i.uid, i.gid) {
        nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into())).context("fchown")?;
    }
    Ok(())
}
