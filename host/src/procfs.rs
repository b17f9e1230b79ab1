//! Readers for the /proc files a dump needs. Each error names the file and
//! the field, because a failure here usually means a kernel whose format
//! differs from what we expect.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

pub fn path(pid: i32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

pub fn read_string(pid: i32, what: &str) -> Result<String> {
    let p = path(pid, what);
    fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// Numeric directory entries of `/proc/PID/task` (or any list of pids).
pub fn tids(pid: i32) -> Result<Vec<i32>> {
    let p = path(pid, "task");
    let mut out = Vec::new();
    for e in fs::read_dir(&p).with_context(|| format!("listing {}", p.display()))? {
        let e = e.with_context(|| format!("listing {}", p.display()))?;
        if let Some(t) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(t);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Children of every thread of `pid`, from `/proc/PID/task/TID/children`.
pub fn children(pid: i32, tids: &[i32]) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for t in tids {
        let p = format!("/proc/{pid}/task/{t}/children");
        let s = match fs::read_to_string(&p) {
            Ok(s) => s,
            // The thread went away; its children were reparented to another
            // thread of the process, which is listed too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {p}")),
        };
        for w in s.split_whitespace() {
            out.push(w.parse().with_context(|| format!("{p}: bad pid {w:?}"))?);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The fields of `/proc/PID/stat` a dump uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The controlling terminal's device number (0 for none), and its
    /// foreground process group (-1 for none).
    pub tty_nr: u32,
    pub tpgid: i32,
    pub flags: u32,
    pub nice: i32,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub rt_priority: u32,
    pub policy: u32,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub exit_signal: i32,
    /// The wait status of a zombie (field 52; 0 before Linux 3.5).
    pub exit_code: u32,
}

pub fn parse_stat(text: &str, what: &str) -> Result<Stat> {
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(').with_context(|| format!("{what}: no '('"))?;
    let close = text.rfind(')').with_context(|| format!("{what}: no ')'"))?;
    let comm = text[open + 1..close].to_string();
    // Field numbers below follow proc(5): field 3 (state) is f[0].
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let get = |n: usize, name: &str| -> Result<&str> {
        f.get(n - 3).copied().with_context(|| format!("{what}: field {n} ({name}) missing"))
    };
    let num = |n: usize, name: &str| -> Result<u64> {
        let s = get(n, name)?;
        s.parse::<u64>().with_context(|| format!("{what}: field {n} ({name}) = {s:?}"))
    };
    let int = |n: usize, name: &str| -> Result<i64> {
        let s = get(n, name)?;
        s.parse::<i64>().with_context(|| format!("{what}: field {n} ({name}) = {s:?}"))
    };
    Ok(Stat {
        comm,
        state: get(3, "state")?.chars().next().unwrap_or('?'),
        ppid: int(4, "ppid")? as i32,
        pgid: int(5, "pgrp")? as i32,
        sid: int(6, "session")? as i32,
        tty_nr: int(7, "tty_nr")? as u32,
        tpgid: int(8, "tpgid")? as i32,
        flags: num(9, "flags")? as u32,
        nice: int(19, "nice")? as i32,
        start_code: num(26, "startcode")?,
        end_code: num(27, "endcode")?,
        start_stack: num(28, "startstack")?,
        exit_signal: int(38, "exit_signal")? as i32,
        rt_priority: num(40, "rt_priority")? as u32,
        policy: num(41, "policy")? as u32,
        start_data: num(45, "start_data")?,
        end_data: num(46, "end_data")?,
        start_brk: num(47, "start_brk")?,
        arg_start: num(48, "arg_start")?,
        arg_end: num(49, "arg_end")?,
        env_start: num(50, "env_start")?,
        env_end: num(51, "env_end")?,
        exit_code: num(52, "exit_code").unwrap_or(0) as u32,
    })
}

pub fn stat(pid: i32, tid: i32) -> Result<Stat> {
    let what = format!("task/{tid}/stat");
    parse_stat(&read_string(pid, &what)?, &format!("/proc/{pid}/{what}"))
}

/// The fields of `/proc/PID/status` a dump uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub umask: u32,
    /// real, effective, saved, fs
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: u32,
    pub seccomp: u32,
    pub thp_enabled: bool,
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    /// Signals whose handler is `SIG_IGN`, and those with a handler of
    /// the program's (bit `n - 1` for signal `n`).
    pub sig_ign: u64,
    pub sig_cgt: u64,
    /// Resident memory, and the private anonymous part of it, in bytes.
    pub vm_rss: u64,
    pub rss_anon: u64,
}

pub fn parse_status(text: &str, what: &str) -> Result<Status> {
    let mut s = Status { thp_enabled: true, ..Status::default() };
    let mut seen = 0u32;
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else { continue };
        let val = val.trim();
        let hex = |v: &str| u64::from_str_radix(v, 16).with_context(|| format!("{what}: {key} = {v:?}"));
        let dec = |v: &str| v.parse::<u32>().with_context(|| format!("{what}: {key} = {v:?}"));
        let bytes = |v: &str| -> Result<u64> {
            let kib = v.strip_suffix(" kB").and_then(|k| k.parse::<u64>().ok());
            kib.map(|k| k * 1024).with_context(|| format!("{what}: {key} = {v:?}"))
        };
        let four = |v: &str| -> Result<[u32; 4]> {
            let w: Vec<u32> = v.split_whitespace().map(dec).collect::<Result<_>>()?;
            w.try_into().map_err(|w: Vec<u32>| anyhow::anyhow!("{what}: {key} has {} values, not 4", w.len()))
        };
        match key {
            "Umask" => s.umask = u32::from_str_radix(val, 8).with_context(|| format!("{what}: Umask = {val:?}"))?,
            "Uid" => (s.uids, seen) = (four(val)?, seen | 1),
            "Gid" => (s.gids, seen) = (four(val)?, seen | 2),
            "Groups" => s.groups = val.split_whitespace().map(dec).collect::<Result<_>>()?,
            "CapInh" => s.cap_inh = hex(val)?,
            "CapPrm" => (s.cap_prm, seen) = (hex(val)?, seen | 4),
            "CapEff" => s.cap_eff = hex(val)?,
            "CapBnd" => s.cap_bnd = hex(val)?,
            "CapAmb" => s.cap_amb = hex(val)?,
            "NoNewPrivs" => s.no_new_privs = dec(val)?,
            "Seccomp" => s.seccomp = dec(val)?,
            "THP_enabled" => s.thp_enabled = dec(val)? != 0,
            "SigPnd" => s.sig_pnd = hex(val)?,
            "ShdPnd" => s.shd_pnd = hex(val)?,
            "SigIgn" => s.sig_ign = hex(val)?,
            "SigCgt" => s.sig_cgt = hex(val)?,
            "VmRSS" => s.vm_rss = bytes(val)?,
            "RssAnon" => s.rss_anon = bytes(val)?,
            _ => {}
        }
    }
    if seen != 7 {
        bail!("{what}: Uid, Gid or CapPrm line missing");
    }
    Ok(s)
}

pub fn status(pid: i32, tid: i32) -> Result<Status> {
    let what = format!("task/{tid}/status");
    parse_status(&read_string(pid, &what)?, &format!("/proc/{pid}/{what}"))
}

/// `/proc/PID/limits`: (soft, hard) for each RLIMIT_* in number order, with
/// `unlimited` as `RLIM_INFINITY`. The rows are in RLIMIT_* order.
pub fn parse_limits(text: &str, what: &str) -> Result<Vec<(u64, u64)>> {
    let value = |v: &str| -> Result<u64> {
        if v == "unlimited" { Ok(u64::MAX) } else { v.parse().with_context(|| format!("{what}: limit {v:?}")) }
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // "Max open files            1024                 1048576              files"
        // The name column is 26 characters wide; the numbers follow.
        if line.len() < 26 {
            continue;
        }
        let mut it = line[25..].split_whitespace();
        let (Some(soft), Some(hard)) = (it.next(), it.next()) else {
            bail!("{what}: short line {line:?}");
        };
        out.push((value(soft)?, value(hard)?));
    }
    if out.len() < 16 {
        bail!("{what}: {} limits, expected 16", out.len());
    }
    Ok(out)
}

/// `/proc/PID/auxv` as native words, up to and including the AT_NULL pair.
pub fn auxv(pid: i32) -> Result<Vec<u64>> {
    let p = path(pid, "auxv");
    let raw = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(auxv_pairs(&raw))
}

/// The key/value words of an auxiliary vector, without the closing
/// AT_NULL pair: CRIU writes it so, and refuses more than its
/// `AT_VECTOR_SIZE` words (44 on x86_64), which the pair can tip over.
fn auxv_pairs(raw: &[u8]) -> Vec<u64> {
    const W: usize = size_of::<usize>();
    let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("a word")) as u64;
    let mut out = Vec::new();
    for pair in raw.chunks_exact(2 * W) {
        let k = word(&pair[..W]);
        if k == 0 {
            break;
        }
        out.extend([k, word(&pair[W..])]);
    }
    out
}

/// `/proc/PID/fdinfo/N`: position, open flags, mount id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    pub flags: u32,
    pub mnt_id: i32,
}

pub fn parse_fdinfo(text: &str, what: &str) -> Result<FdInfo> {
    let mut fi = FdInfo::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k {
            "pos" => (fi.pos, seen) = (v.parse().with_context(|| format!("{what}: pos {v:?}"))?, seen | 1),
            "flags" => {
                (fi.flags, seen) =
                    (u32::from_str_radix(v, 8).with_context(|| format!("{what}: flags {v:?}"))?, seen | 2)
            }
            "mnt_id" => fi.mnt_id = v.parse().with_context(|| format!("{what}: mnt_id {v:?}"))?,
            _ => {}
        }
    }
    if seen != 3 {
        bail!("{what}: pos or flags missing");
    }
    Ok(fi)
}

/// A namespace's identity: the inode of `/proc/PID/ns/NAME`.
pub fn ns_inode(pid: i32, name: &str) -> Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let p = path(pid, &format!("ns/{name}"));
    match fs::metadata(&p) {
        Ok(m) => Ok(Some(m.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("stat {}", p.display())),
    }
}

/// A pidfd of process `pid`: names it for as long as we hold it, whoever
/// gets its number later.
pub fn pidfd(pid: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: a plain system call on integers.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("pidfd_open of process {pid}"));
    }
    // SAFETY: a fresh descriptor of ours, owned at once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A descriptor of ours on the open file description behind fd `fd` of
/// `pid` (`pidfd_getfd`): what we do through it, the program sees.
pub fn borrow_fd(pid: i32, fd: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let pidfd = pidfd(pid)?;
    // SAFETY: plain system calls; the new descriptor is owned at once.
    unsafe {
        let got = nix::libc::syscall(nix::libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        if got < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("pidfd_getfd of fd {fd} of {pid}"));
        }
        Ok(OwnedFd::from_raw_fd(got as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_signal_sets_and_resident_memory() {
        let text = "Umask:\t0022\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmRSS:\t  132452 kB\nRssAnon:\t  131072 kB\n\
                    SigIgn:\t0000000000001000\nSigCgt:\t0000000000000200\nCapPrm:\t000001ffffffffff\n";
        let s = parse_status(text, "status").unwrap();
        assert_eq!((s.sig_ign, s.sig_cgt), (1 << 12, 1 << 9));
        assert_eq!((s.vm_rss, s.rss_anon), (132452 * 1024, 128 << 20));
        assert!(parse_status(&text.replace("132452 kB", "lots"), "status").is_err());
    }

    #[test]
    fn auxv_ends_before_at_null_as_criu_writes_it() {
        let words: Vec<u64> = vec![33, 0x7fff_1000, 6, 4096, 0, 0, 99, 99];
        let raw: Vec<u8> = words.iter().flat_map(|&w| (w as usize).to_ne_bytes()).collect();
        assert_eq!(auxv_pairs(&raw), vec![33, 0x7fff_1000, 6, 4096]);
        let own = auxv(std::process::id() as i32).unwrap();
        assert!(own.len().is_multiple_of(2) && !own.is_empty() && own.chunks(2).all(|p| p[0] != 0));
    }

    #[test]
    fn stat_with_awkward_comm() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 100 1000 50 \
                    18446744073709551615 4096 8192 140000 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 \
                    12288 16384 20480 140100 140200 140200 140300 0";
        let s = parse_stat(line, "test").unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.state, s.ppid, s.pgid, s.sid, s.flags), ('S', 1, 42, 42, 4194560));
        assert_eq!((s.start_code, s.end_code, s.start_stack), (4096, 8192, 140000));
        assert_eq!((s.start_data, s.end_data, s.start_brk), (12288, 16384, 20480));
        assert_eq!((s.arg_start, s.arg_end, s.env_start, s.env_end), (140100, 140200, 140200, 140300));
        assert_eq!(s.exit_signal, 17);
    }

    #[test]
    fn own_status_limits_and_auxv() {
        let me = std::process::id() as i32;
        let st = status(me, me).unwrap();
        assert_eq!(st.uids[0], nix::unistd::getuid().as_raw());
        let l = parse_limits(&read_string(me, "limits").unwrap(), "limits").unwrap();
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        // rlim_t is u32 on armv7: compared as text.
        assert_eq!(format!("{:?}", l[7]), format!("{nofile:?}"));
        let a = auxv(me).unwrap();
        assert_ne!(a[a.len() - 2], 0, "the closing AT_NULL pair is left out");
        assert!(a.chunks(2).any(|p| p[0] == 6 && p[1] == 4096), "AT_PAGESZ");
        let s = stat(me, me).unwrap();
        assert!(s.start_code > 0 && s.arg_start > 0);
    }

    #[test]
    fn fdinfo_fields() {
        let fi = parse_fdinfo("pos:\t12\nflags:\t0100002\nmnt_id:\t25\nino:\t7\n", "x").unwrap();
        assert_eq!(fi, FdInfo { pos: 12, flags: 0o100002, mnt_id: 25 });
        assert!(parse_fdinfo("pos: 1\n", "x").is_err());
    }
}
