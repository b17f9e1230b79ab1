//! `arch_shmat`: putting a SysV segment back at its dumped address.
//!
//! A fixed-address `shmat` demands SHMLBA alignment, which on ARM is four
//! pages, yet an attach at NULL there may return any page-aligned address.
//! So a process can be dumped with a segment at an address `shmat` refuses.
//! The way back: attach anywhere and `mremap` it into place. The move keeps
//! the sharing; on CPUs whose caches alias (VIPT, ARMv6 and earlier) a
//! writable segment at an unaligned address can see stale data, which is
//! why the blob warns loudly when it takes that path.

use revenant_arch::{Errno, SHMLBA, consts, sys};

use crate::Log;

/// How to attach at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `shmat` at the address itself.
    Direct,
    /// `shmat` anywhere, then move it (unless it landed right).
    AnywhereThenMove,
}

/// The decision, for `addr` under an alignment rule of `shmlba`.
pub fn attach_kind(addr: u64, shmlba: u64) -> Attach {
    if addr.is_multiple_of(shmlba) { Attach::Direct } else { Attach::AnywhereThenMove }
}

/// Attaches segment `id` at exactly `addr` (`size` bytes), whatever the
/// arch's SHMLBA. The range must be free of anything the blob needs.
pub fn arch_shmat(log: &Log, id: i32, addr: u64, flags: u32, size: u64) -> Result<(), Errno> {
    attach_under(log, id, addr, flags, size, SHMLBA as u64)
}

/// [`arch_shmat`] under an alignment rule of `shmlba`, so both arches' paths
/// can be tested on either.
fn attach_under(log: &Log, id: i32, addr: u64, flags: u32, size: u64, shmlba: u64) -> Result<(), Errno> {
    match attach_kind(addr, shmlba) {
        Attach::Direct => {
            // SHM_REMAP: the range is ours (everything was unmapped), and
            // qemu-user refuses any fixed attach without it.
            // SAFETY: see above.
            let got = unsafe { sys::shmat(id, addr as usize, flags | consts::SHM_REMAP) }?;
            if got as u64 != addr {
                return Err(Errno::EFAULT);
            }
        }
        Attach::AnywhereThenMove => {
            // SAFETY: an attach at NULL replaces nothing.
            let got = unsafe { sys::shmat(id, 0, flags) }? as u64;
            if got != addr {
                log.warn()
                    .s("SysV segment ")
                    .dec(id as u64)
                    .s(" belongs at ")
                    .hex(addr)
                    .s(", not aligned to SHMLBA ")
                    .hex(shmlba)
                    .s(": attached at ")
                    .hex(got)
                    .s(" and moved; a writable segment can see stale data on CPUs with aliasing caches")
                    .emit();
                // SAFETY: the attachment at `got` is new and only ours; the
                // target range was unmapped with everything else.
                unsafe { sys::mremap_fixed(got as usize, size as usize, addr as usize, size as usize) }?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use linux_raw_sys::general as g;
    use revenant_arch::conv::{c_int, c_uint, size, zero};
    use revenant_arch::{check, syscall3, syscall6};

    const PAGE: u64 = 4096;
    const SHMLBA_ARM: u64 = 4 * PAGE;

    #[test]
    fn decides_by_alignment() {
        assert_eq!(attach_kind(0x1000_0000, SHMLBA_ARM), Attach::Direct);
        assert_eq!(attach_kind(0x1000_3000, SHMLBA_ARM), Attach::AnywhereThenMove);
        assert_eq!(attach_kind(0x1000_3000, PAGE), Attach::Direct);
    }

    /// A private 2-page segment, removed when the test ends.
    struct Segment(i32);

    impl Segment {
        fn new() -> Segment {
            const IPC_CREAT: u32 = 0o1000;
            // SAFETY: shmget takes integers only.
            let id =
                check(unsafe { syscall3(g::__NR_shmget, zero(), size(2 * PAGE as usize), c_uint(IPC_CREAT | 0o600)) });
            Segment(id.expect("shmget") as i32)
        }
    }

    impl Drop for Segment {
        fn drop(&mut self) {
            const IPC_RMID: u32 = 0;
            // SAFETY: removes our own segment; no buffer is passed.
            let _ = unsafe { syscall3(g::__NR_shmctl, c_int(self.0), c_uint(IPC_RMID), zero()) };
        }
    }

    /// An address `off` bytes past an SHMLBA_ARM boundary inside a free
    /// reserved range (PROT_NONE, which the attach replaces).
    fn reserved(off: u64) -> u64 {
        #[cfg(target_arch = "arm")]
        let nr = g::__NR_mmap2;
        #[cfg(not(target_arch = "arm"))]
        let nr = g::__NR_mmap;
        let flags = c_uint(g::MAP_PRIVATE | g::MAP_ANONYMOUS);
        let len = size(8 * PAGE as usize);
        // SAFETY: a fresh anonymous reservation that nothing else uses.
        let base = check(unsafe { syscall6(nr, zero(), len, zero(), flags, c_int(-1), zero()) }).expect("mmap") as u64;
        base.next_multiple_of(SHMLBA_ARM) + off
    }

    fn log() -> Log {
        Log::new(-1, 0)
    }

    fn word_at(addr: u64) -> u64 {
        // SAFETY: the caller attached a readable segment there.
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }

    #[test]
    fn both_paths_attach_the_same_segment_where_asked() {
        let seg = Segment::new();
        let direct = reserved(0);
        let moved = reserved(PAGE);
        attach_under(&log(), seg.0, direct, 0, 2 * PAGE, SHMLBA_ARM).expect("direct attach");
        attach_under(&log(), seg.0, moved, 0, 2 * PAGE, SHMLBA_ARM).expect("attach and move");
        // SAFETY: `direct` is a writable attachment of the segment.
        unsafe { core::ptr::write_volatile((direct + PAGE) as *mut u64, 0x5eed) };
        assert_eq!(word_at(moved + PAGE), 0x5eed, "the moved attachment shares the segment");
    }

    #[test]
    fn a_failing_shmat_is_reported_on_either_path() {
        for off in [0, PAGE] {
            let at = reserved(off);
            assert_eq!(attach_under(&log(), -1, at, 0, 2 * PAGE, SHMLBA_ARM), Err(Errno::EINVAL), "offset {off:#x}");
        }
    }

    #[test]
    fn a_failing_move_is_reported() {
        let seg = Segment::new();
        // Longer than the attachment: mremap refuses to move what is not there.
        let res = attach_under(&log(), seg.0, reserved(PAGE), 0, 6 * PAGE, SHMLBA_ARM);
        assert!(res.is_err(), "{res:?}");
    }
}
