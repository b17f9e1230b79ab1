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
    match attach_kind(addr, SHMLBA as u64) {
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
                    .hex(SHMLBA as u64)
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

    #[test]
    fn decides_by_alignment() {
        let page = 4096;
        assert_eq!(attach_kind(0x1000_0000, 4 * page), Attach::Direct);
        assert_eq!(attach_kind(0x1000_3000, 4 * page), Attach::AnywhereThenMove);
        assert_eq!(attach_kind(0x1000_3000, page), Attach::Direct);
    }
}
