//! The probes. The ones that damage the process that runs them (moving or
//! unmapping its vDSO) run in a forked child that reports one number back.

use std::io::Read;
use std::os::fd::AsRawFd;

use anyhow::Result;
use nix::libc;

use super::{Kerndat, VdsoPiece, VdsoSymbol};
use crate::restore::layout::{Mapping, own_maps, runtime_vdso};

pub fn run(boot_id: String) -> Result<Kerndat> {
    let maps = own_maps()?;
    let vdso = runtime_vdso(&maps);
    Ok(Kerndat {
        boot_id,
        arch: revenant_arch::NAME.into(),
        vdso_name_survives_mremap: if vdso.is_empty() {
            None
        } else {
            in_child(vdso_name_survives_mremap).map(|v| v == 1)
        },
        vdso_layout: vdso.iter().map(|m| VdsoPiece { name: m.name.clone(), size: m.end - m.start }).collect(),
        vdso_symbols: vdso_symbols(&vdso),
        arch_map_vdso: if vdso.is_empty() { None } else { arch_map_vdso() },
        pagemap_pfn: pagemap_pfn(),
        clone3_set_tid: clone3_set_tid(),
        mm_map: super::mm_map::mm_map_works(),
        shmat_align: in_child(shmat_align).and_then(|a| (a > 0).then_some(a)),
    })
}

/// Runs `f` in a forked child and returns what it reported; `None` if it
/// died or reported nothing.
fn in_child(f: fn() -> Option<u64>) -> Option<u64> {
    let (rx, tx) = nix::unistd::pipe().ok()?;
    // SAFETY: the child runs `f` (syscalls and /proc reads) and `_exit`s.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            drop(rx);
            if let Some(v) = f() {
                let _ = nix::unistd::write(&tx, &v.to_le_bytes());
            }
            // SAFETY: leaving without the parent's destructors or atexit.
            unsafe { libc::_exit(0) }
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

/// Moves the whole vDSO area (every piece, keeping their layout) and looks
/// for `[vdso]` at the new place. 1 if found, 0 if not.
fn vdso_name_survives_mremap() -> Option<u64> {
    let pieces = runtime_vdso(&own_maps().ok()?);
    let (first, last) = (pieces.first()?.start, pieces.last()?.end);
    let to = reserve(last - first)?;
    for m in &pieces {
        let len = (m.end - m.start) as usize;
        // SAFETY: this throwaway child moves its own vDSO into its own
        // reservation and never calls into the vDSO again.
        unsafe { revenant_arch::sys::mremap_fixed(m.start as usize, len, (to + m.start - first) as usize, len) }
            .ok()?;
    }
    let vdso = pieces.iter().find(|m| m.name == "[vdso]")?;
    let at = to + vdso.start - first;
    Some(own_maps().ok()?.iter().any(|m| m.start == at && m.name == "[vdso]") as u64)
}

/// x86_64 only: whether `ARCH_MAP_VDSO_64` works.
#[cfg(target_arch = "x86_64")]
fn arch_map_vdso() -> Option<bool> {
    in_child(unmap_and_map_vdso).map(|v| v == 1)
}

#[cfg(not(target_arch = "x86_64"))]
fn arch_map_vdso() -> Option<bool> {
    None
}

/// Unmaps the vDSO and asks `ARCH_MAP_VDSO_64` for it back at the same
/// place; 1 if `[vdso]` is there afterwards.
#[cfg(target_arch = "x86_64")]
fn unmap_and_map_vdso() -> Option<u64> {
    let pieces = runtime_vdso(&own_maps().ok()?);
    let first = pieces.first()?.start;
    for m in &pieces {
        // SAFETY: this throwaway child drops its own vDSO and never calls it.
        unsafe { revenant_arch::sys::munmap(m.start as usize, (m.end - m.start) as usize) }.ok()?;
    }
    let op = revenant_arch::consts::ARCH_MAP_VDSO_64 as libc::c_long;
    // SAFETY: maps a new vDSO into the hole the old one left.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, op, first as libc::c_long) };
    if r < 0 {
        return Some(0);
    }
    Some(own_maps().ok()?.iter().any(|m| m.name == "[vdso]") as u64)
}

/// Creates a 4-page segment and tries fixed attaches at a page-aligned and
/// at a 4-page-aligned address; returns the alignment that worked.
/// `SHM_REMAP` into a reservation keeps the try from depending on what else
/// is mapped (and is what qemu-user needs for any fixed attach).
fn shmat_align() -> Option<u64> {
    let page = revenant_arch::PAGE_SIZE as u64;
    // SAFETY: plain SysV calls on a private segment this child creates and
    // removes; attachments go into its own reservation.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, 4 * page as usize, libc::IPC_CREAT | 0o600);
        if id < 0 {
            return None;
        }
        // One attachment keeps the segment alive after IPC_RMID, so it
        // never outlives this child.
        let anchor = libc::shmat(id, std::ptr::null(), 0);
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        if anchor as isize == -1 {
            return None;
        }
        let area = reserve(16 * page)?;
        let base = area.next_multiple_of(4 * page);
        let remap = revenant_arch::consts::SHM_REMAP as i32;
        for (at, align) in [(base + page, page), (base, 4 * page)] {
            let got = libc::shmat(id, at as *const libc::c_void, remap);
            if got as u64 == at {
                return Some(align);
            }
        }
        Some(0)
    }
}

/// A PROT_NONE reservation of `len` bytes.
fn reserve(len: u64) -> Option<u64> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a new anonymous mapping replaces nothing.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len as usize, libc::PROT_NONE, flags, -1, 0) };
    (p != libc::MAP_FAILED).then_some(p as u64)
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
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64;
    args[8] = me.as_ptr() as u64;
    args[9] = 1;
    // SAFETY: with a taken PID the kernel refuses before creating anything.
    let r = unsafe { revenant_arch::syscall2(linux_raw_sys::general::__NR_clone3, args.as_ptr() as usize, 88) };
    match revenant_arch::check(r) {
        Err(e) => e == revenant_arch::Errno::EEXIST,
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
