//! The probes. The ones that damage the process that runs them (moving or
//! unmapping its vDSO, attaching SysV segments) run in a forked child that
//! reports one number back.
//!
//! This process may have other threads (a test harness, a restore's log
//! readers), so a forked child may only make async-signal-safe calls: any
//! lock another thread held at the fork (the allocator's, stdio's) stays
//! held in the child forever. Each probe prepares in the parent what its
//! child needs (addresses, a buffer for reading `/proc/self/maps`) and the
//! child makes raw system calls on it, nothing else.

use std::io::Read;
use std::os::fd::AsRawFd;

use anyhow::Result;
use linux_raw_sys::general as g;
use nix::libc;
use revenant_arch::conv::{by_ref, c_int, c_str, c_uint, size, zero};
use revenant_arch::{Errno, check, sys};

use super::{Kerndat, VdsoPiece, VdsoSymbol};
use crate::maps::{Mapping, own_maps, runtime_vdso};

pub fn run(boot_id: String) -> Result<Kerndat> {
    let maps = own_maps()?;
    let vdso = runtime_vdso(&maps);
    Ok(Kerndat {
        boot_id,
        arch: revenant_arch::NAME.into(),
        vdso_name_survives_mremap: if vdso.is_empty() { None } else { vdso_name_survives_mremap(&vdso) },
        vdso_layout: vdso.iter().map(|m| VdsoPiece { name: m.name.clone(), size: m.end - m.start }).collect(),
        vdso_symbols: vdso_symbols(&vdso),
        arch_map_vdso: if vdso.is_empty() { None } else { arch_map_vdso(&vdso) },
        pagemap_pfn: pagemap_pfn(),
        clone3_set_tid: clone3_set_tid(),
        mm_map: super::mm_map::mm_map_works(),
        shmat_align: in_child(&mut shmat_align).and_then(|a| (a > 0).then_some(a)),
        ptrace: ptrace_works(),
    })
}

/// Seizes a forked child, interrupts it and reads its registers.
fn ptrace_works() -> bool {
    use nix::sys::ptrace;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    // SAFETY: the child only waits for signals (pause), then dies by the
    // SIGKILL below.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => loop {
            nix::unistd::pause();
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(_) => return false,
    };
    let works = ptrace::seize(child, ptrace::Options::empty()).is_ok()
        && ptrace::interrupt(child).is_ok()
        && matches!(waitpid(child, Some(WaitPidFlag::__WALL)), Ok(WaitStatus::PtraceEvent(..)))
        && crate::regs::dump::gpregs(child.as_raw()).is_ok();
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(child, Some(WaitPidFlag::__WALL));
    works
}

/// Runs `f` in a forked child and returns what it reported; `None` if it
/// died or reported nothing. `f` runs after the fork: raw system calls on
/// what it captured, no allocation, no locks. Borrowed, so that nothing it
/// owns is freed in the child.
fn in_child(f: &mut dyn FnMut() -> Option<u64>) -> Option<u64> {
    let (rx, tx) = nix::unistd::pipe().ok()?;
    // SAFETY: the child runs `f`, which only makes raw system calls on data
    // prepared before the fork, writes to the pipe and leaves with
    // exit_group (no destructors, no atexit handlers).
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            if let Some(v) = f() {
                let _ = sys::write(tx.as_raw_fd(), &v.to_le_bytes());
            }
            sys::exit_group(0)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(tx);
            let mut buf = Vec::new();
            let _ = std::fs::File::from(rx).read_to_end(&mut buf);
            let _ = nix::sys::wait::waitpid(child, None);
            Some(u64::from_le_bytes(buf.try_into().ok()?))
        }
    }
}

/// Room for reading `/proc/self/maps` in a forked child: allocated before
/// the fork, filled and scanned a chunk at a time after it.
struct MapsBuf(Vec<u8>);

impl MapsBuf {
    /// Longer than any line (a path is at most 4096 bytes).
    fn new() -> MapsBuf {
        MapsBuf(vec![0; 16 << 10])
    }

    /// Whether some line of `/proc/self/maps` satisfies `pred`, given the
    /// line's start address and name; `None` if the file cannot be read.
    /// Allocation-free, for a forked child.
    fn any(&mut self, mut pred: impl FnMut(u64, &[u8]) -> bool) -> Option<bool> {
        let path = c"/proc/self/maps";
        let (dir, flags) = (c_int(g::AT_FDCWD), c_uint(g::O_RDONLY | g::O_CLOEXEC));
        // SAFETY: opening a NUL-terminated constant path.
        let r = unsafe { revenant_arch::syscall4(g::__NR_openat, dir, c_str(path), flags, zero()) };
        let fd = check(r).ok()? as i32;
        let found = scan_lines(
            &mut self.0,
            |buf| sys::read(fd, buf).ok(),
            |line| {
                let (start, name) = maps_line(line)?;
                pred(start, name).then_some(())
            },
        );
        // SAFETY: the descriptor opened above, used by nothing else.
        let _ = unsafe { sys::close(fd) };
        found
    }
}

/// Feeds `read` into `buf` and calls `each` on every complete line (and a
/// last one without a newline) until it returns `Some`; `Some(true)` then,
/// `Some(false)` at the end, `None` if a read fails or a line does not fit.
fn scan_lines(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8]) -> Option<usize>,
    mut each: impl FnMut(&[u8]) -> Option<()>,
) -> Option<bool> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return None;
        }
        let n = read(&mut buf[filled..])?;
        let end = filled + n;
        let mut from = 0;
        while let Some(nl) = buf[from..end].iter().position(|&b| b == b'\n') {
            if each(&buf[from..from + nl]).is_some() {
                return Some(true);
            }
            from += nl + 1;
        }
        if n == 0 {
            return Some(from < end && each(&buf[from..end]).is_some());
        }
        buf.copy_within(from..end, 0);
        filled = end - from;
    }
}

/// A maps line's start address and name (empty for anonymous memory).
fn maps_line(line: &[u8]) -> Option<(u64, &[u8])> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = u64::from_str_radix(std::str::from_utf8(&range[..dash]).ok()?, 16).ok()?;
    Some((start, fields.nth(4).unwrap_or(b"")))
}

/// Whether `[vdso]` keeps its name after the whole vDSO area (every piece,
/// keeping their layout) moves.
fn vdso_name_survives_mremap(pieces: &[Mapping]) -> Option<bool> {
    let (first, last) = (pieces.first()?.start, pieces.last()?.end);
    let moves: Vec<(usize, usize)> = pieces.iter().map(|m| (m.start as usize, (m.end - m.start) as usize)).collect();
    let vdso = pieces.iter().find(|m| m.name == "[vdso]")?.start;
    let mut maps = MapsBuf::new();
    in_child(&mut || {
        let to = reserve(last - first)?;
        for &(start, len) in &moves {
            // SAFETY: this throwaway child moves its own vDSO into its own
            // reservation and never calls into the vDSO again.
            unsafe { sys::mremap_fixed(start, len, to as usize + (start - first as usize), len) }.ok()?;
        }
        let at = to + vdso - first;
        maps.any(|start, name| start == at && name == b"[vdso]").map(u64::from)
    })
    .map(|v| v == 1)
}

/// x86_64 only: whether `ARCH_MAP_VDSO_64` maps a vDSO where the old one
/// was, once that is unmapped.
#[cfg(target_arch = "x86_64")]
fn arch_map_vdso(pieces: &[Mapping]) -> Option<bool> {
    let first = pieces.first()?.start;
    let unmaps: Vec<(usize, usize)> = pieces.iter().map(|m| (m.start as usize, (m.end - m.start) as usize)).collect();
    let mut maps = MapsBuf::new();
    in_child(&mut || {
        for &(start, len) in &unmaps {
            // SAFETY: this throwaway child drops its own vDSO and never calls it.
            unsafe { sys::munmap(start, len) }.ok()?;
        }
        let op = c_uint(revenant_arch::consts::ARCH_MAP_VDSO_64);
        // SAFETY: maps a new vDSO into the hole the old one left.
        if check(unsafe { revenant_arch::syscall2(g::__NR_arch_prctl, op, revenant_arch::conv::addr(first as usize)) })
            .is_err()
        {
            return Some(0);
        }
        maps.any(|_, name| name == b"[vdso]").map(u64::from)
    })
    .map(|v| v == 1)
}

#[cfg(not(target_arch = "x86_64"))]
fn arch_map_vdso(_: &[Mapping]) -> Option<bool> {
    None
}

/// Creates a 4-page segment and tries fixed attaches at a page-aligned and
/// at a 4-page-aligned address; returns the alignment that worked.
/// `SHM_REMAP` into a reservation keeps the try from depending on what else
/// is mapped (and is what qemu-user needs for any fixed attach). Runs in a
/// forked child: raw system calls only.
fn shmat_align() -> Option<u64> {
    let page = revenant_arch::PAGE_SIZE as u64;
    let ipc_creat = c_int(libc::IPC_CREAT | 0o600);
    let (key, len) = (c_int(libc::IPC_PRIVATE), size(4 * page as usize));
    // SAFETY: creates a private segment; no memory is touched.
    let r = unsafe { revenant_arch::syscall3(g::__NR_shmget, key, len, ipc_creat) };
    let id = check(r).ok()? as i32;
    // One attachment keeps the segment alive after IPC_RMID, so it never
    // outlives this child.
    // SAFETY: an attachment wherever the kernel finds room replaces nothing.
    let anchor = unsafe { sys::shmat(id, 0, 0) };
    // SAFETY: marking our own segment for removal; no buffer is passed.
    let _ = unsafe { revenant_arch::syscall3(g::__NR_shmctl, c_int(id), c_int(libc::IPC_RMID), zero()) };
    anchor.ok()?;
    let area = reserve(16 * page)?;
    let base = area.next_multiple_of(4 * page);
    for (at, align) in [(base + page, page), (base, 4 * page)] {
        // SAFETY: SHM_REMAP replaces only our own PROT_NONE reservation.
        let got = unsafe { sys::shmat(id, at as usize, revenant_arch::consts::SHM_REMAP) };
        if got == Ok(at as usize) {
            return Some(align);
        }
    }
    Some(0)
}

/// A PROT_NONE reservation of `len` bytes (a raw `mmap`: safe in a forked
/// child).
fn reserve(len: u64) -> Option<u64> {
    let flags = g::MAP_PRIVATE | g::MAP_ANONYMOUS;
    // SAFETY: a new anonymous mapping replaces nothing.
    unsafe { revenant_arch::mmap(0, len as usize, g::PROT_NONE, flags, -1, 0) }.ok().map(|p| p as u64)
}

/// Whether pagemap entries carry frame numbers for a page we touched.
fn pagemap_pfn() -> bool {
    let probe = Box::new([1u8; 64]);
    let addr = probe.as_ptr() as u64;
    let Ok(f) = std::fs::File::open("/proc/self/pagemap") else { return false };
    let mut entry = [0u8; 8];
    let off = addr / revenant_arch::PAGE_SIZE as u64 * 8;
    // SAFETY: pread into a live local buffer.
    let n = unsafe { libc::pread(f.as_raw_fd(), entry.as_mut_ptr().cast(), 8, off as libc::off_t) };
    let e = u64::from_le_bytes(entry);
    n == 8 && e & (1 << 63) != 0 && e & ((1 << 55) - 1) != 0
}

/// `clone3` asked for our own (taken) PID answers EEXIST only when it
/// supports `set_tid` and we may use it; no task is created either way.
fn clone3_set_tid() -> bool {
    let me = [std::process::id() as i32];
    let args = sys::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: me.as_ptr() as u64,
        set_tid_size: 1,
        ..sys::CLONE_ARGS_ZERO
    };
    let len = size(size_of_val(&args));
    // SAFETY: with a taken PID the kernel refuses before creating anything.
    let r = unsafe { revenant_arch::syscall2(linux_raw_sys::general::__NR_clone3, by_ref(&args), len) };
    match check(r) {
        Err(e) => e == Errno::EEXIST,
        Ok(0) => revenant_arch::sys::exit_group(0),
        Ok(_) => true,
    }
}

/// The runtime vDSO's dynamic symbols, by offset from its start.
fn vdso_symbols(pieces: &[Mapping]) -> Vec<VdsoSymbol> {
    let Some(vdso) = pieces.iter().find(|m| m.name == "[vdso]") else { return vec![] };
    // SAFETY: the vDSO is mapped readable for its whole range.
    let image = unsafe { std::slice::from_raw_parts(vdso.start as *const u8, (vdso.end - vdso.start) as usize) };
    parse_vdso_symbols(image).unwrap_or_default()
}

/// Symbols of a vDSO ELF image, sorted by name; `None` if it cannot be read.
pub fn parse_vdso_symbols(image: &[u8]) -> Option<Vec<VdsoSymbol>> {
    let mut v = Vec::new();
    revenant_restorer::vdso::for_each_symbol(image, |name, offset| {
        v.push(VdsoSymbol { name: String::from_utf8_lossy(name).into_owned(), offset })
    })
    .ok()?;
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a.name == b.name);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scan_lines` over `text` read `chunk` bytes at a time into a buffer
    /// of `room` bytes: the lines it saw, and its answer.
    fn scan(text: &[u8], chunk: usize, room: usize, stop_at: &[u8]) -> (Vec<Vec<u8>>, Option<bool>) {
        let mut buf = vec![0; room];
        let mut at = 0;
        let mut seen = vec![];
        let read = |out: &mut [u8]| {
            let n = chunk.min(out.len()).min(text.len() - at);
            out[..n].copy_from_slice(&text[at..at + n]);
            at += n;
            Some(n)
        };
        let found = scan_lines(&mut buf, read, |l| {
            seen.push(l.to_vec());
            (l == stop_at).then_some(())
        });
        (seen, found)
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        let text = b"first line\nsecond\n\nlast without newline";
        let want: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        for chunk in 1..text.len() + 2 {
            assert_eq!(scan(text, chunk, 64, b"none"), (want.clone(), Some(false)), "chunk {chunk}");
            let (seen, found) = scan(text, chunk, 64, b"second");
            assert_eq!((seen.len(), found), (2, Some(true)), "chunk {chunk}");
        }
        // A line longer than the buffer cannot be judged.
        assert_eq!(scan(b"0123456789abcdef\n", 4, 8, b"none").1, None);
    }

    #[test]
    fn maps_lines_give_start_and_name() {
        let line = b"7ffd1a3f2000-7ffd1a3f4000 r-xp 00000000 00:00 0                          [vdso]";
        assert_eq!(maps_line(line), Some((0x7ffd_1a3f_2000, &b"[vdso]"[..])));
        let anon = b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 ";
        assert_eq!(maps_line(anon), Some((0x7f00_0000_0000, &b""[..])));
        assert_eq!(maps_line(b"nonsense"), None);
    }

    /// The allocation-free reader finds in our own maps what the ordinary
    /// parser finds.
    #[test]
    fn the_fork_safe_maps_reader_agrees_with_the_parser() {
        let maps = own_maps().unwrap();
        let mut buf = MapsBuf::new();
        for m in maps.iter().filter(|m| !m.name.is_empty()).take(5) {
            assert_eq!(buf.any(|start, name| start == m.start && name == m.name.as_bytes()), Some(true), "{m:?}");
        }
        assert_eq!(buf.any(|start, _| start == 1), Some(false));
    }
}
