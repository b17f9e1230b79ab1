//! Where the bootstrap area goes, and what is inside it.

use anyhow::{Context, Result};

use crate::maps::Mapping;

/// A half-open address range.
pub type Range = (u64, u64);

/// The lowest address at which `len` bytes fit between `min` and `max`
/// without touching any range in `a` or `b` (each sorted or not).
pub fn find_hole(a: &[Range], b: &[Range], len: u64, min: u64, max: u64) -> Option<u64> {
    let mut taken: Vec<Range> = a.iter().chain(b).copied().filter(|r| r.1 > r.0).collect();
    taken.sort_unstable();
    let mut at = min;
    for (start, end) in taken {
        if start >= at && start - at >= len {
            break;
        }
        at = at.max(end);
    }
    (at.checked_add(len)? <= max).then_some(at)
}

/// The highest user address, exclusive.
pub fn task_size(maps: &[Mapping]) -> Result<u64> {
    cfg_select! {
        target_arch = "x86_64" => {
            // 47-bit unless something already lives above (5-level paging).
            let high = maps.iter().filter(|m| m.name != "[vsyscall]").map(|m| m.end).max().unwrap_or(0);
            if high <= 0x7fff_ffff_f000 { Ok(0x7fff_ffff_f000) } else if high <= 0x00ff_ffff_ffff_f000 { Ok(0x00ff_ffff_ffff_f000) } else { anyhow::bail!("unexpected mapping at {high:#x}") }
        }
        target_arch = "arm" => {
            // 3G/1G split; under qemu-user the guest space may end lower,
            // which munmap tolerates.
            let _ = maps;
            Ok(0xbf00_0000)
        }
    }
}

/// The end of the address space the kernel lets a process map here
/// (its TASK_SIZE), exclusive. It depends on the kernel's build and boot:
/// 47 or 56 bits on x86_64 (4- or 5-level paging), 3, 2 or 1 GiB on 32-bit
/// ARM kernels and up to 4 GiB for ARM tasks of a 64-bit kernel, and under
/// qemu-user on the emulator; so it is asked, once, by mapping a page at
/// addresses above everything we have mapped.
pub fn user_space_end() -> Result<u64> {
    static END: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(&end) = END.get() {
        return Ok(end);
    }
    let page = revenant_arch::PAGE_SIZE as u64;
    // The vsyscall page (x86_64) and the vector page (32-bit ARM) are the
    // kernel's, above the end on most machines: they say nothing of it.
    let low = crate::maps::own_maps()?
        .iter()
        .filter(|m| !matches!(m.name.as_str(), "[vsyscall]" | "[vectors]"))
        .map(|m| m.end)
        .max()
        .unwrap_or(0);
    let last_page = usize::MAX as u64 / page;
    let first = first_refused(low / page, last_page, |n| may_map(n * page));
    let end = first.checked_mul(page).context("every address can be mapped: no end to user space found")?;
    Ok(*END.get_or_init(|| end))
}

/// Whether the kernel would map a page at `addr` for this process (it
/// may be taken already). `MAP_FIXED_NOREPLACE` never disturbs what is
/// there; kernels before 4.17 and qemu-user up to 7.2 take it for a mere
/// hint, and put the page elsewhere when the address is out of reach.
fn may_map(addr: u64) -> bool {
    use linux_raw_sys::general as g;
    let len = revenant_arch::PAGE_SIZE;
    let flags = g::MAP_PRIVATE | g::MAP_ANONYMOUS | g::MAP_FIXED_NOREPLACE;
    // SAFETY: a new inaccessible anonymous page, replacing nothing, removed
    // again at once.
    match unsafe { revenant_arch::mmap(addr as usize, len, g::PROT_NONE, flags, -1, 0) } {
        Ok(got) => {
            // SAFETY: the page just mapped is ours and unused.
            let _ = unsafe { revenant_arch::sys::munmap(got, len) };
            got as u64 == addr
        }
        Err(e) => e == revenant_arch::Errno::EEXIST,
    }
}

/// The first page number in `low..=last` that `allowed` refuses, given that
/// it allows every page below some point and none from there on;
/// `last + 1` when it allows them all.
fn first_refused(mut low: u64, last: u64, mut allowed: impl FnMut(u64) -> bool) -> u64 {
    let mut high = last + 1;
    while low < high {
        let mid = low + (high - low) / 2;
        if allowed(mid) { low = mid + 1 } else { high = mid }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refused_page_is_found_at_either_end_and_between() {
        let mut asked = 0;
        let first = first_refused(0x7f00_0000, (1 << 52) - 1, |n| {
            asked += 1;
            n < 0x7_ffff_ffff
        });
        assert_eq!(first, 0x7_ffff_ffff);
        assert!(asked <= 53, "{asked} probes");
        assert_eq!(first_refused(0x100, 0xfffff, |n| n < 0xbf000), 0xbf000);
        assert_eq!(first_refused(0x100, 0xfffff, |_| true), 0x100000);
        assert_eq!(first_refused(0x100, 0xfffff, |_| false), 0x100);
    }

    /// The end found is where mapping stops working: the page below it can
    /// be mapped (or is taken), the page at it cannot, and all we have
    /// mapped but the kernel's special pages lies below it.
    #[test]
    fn the_user_space_end_is_where_mapping_stops() {
        let end = user_space_end().unwrap();
        let page = revenant_arch::PAGE_SIZE as u64;
        assert_eq!(end % page, 0);
        assert!(may_map(end - page), "{end:#x}");
        assert!(end > usize::MAX as u64 || !may_map(end), "{end:#x}");
        for m in crate::maps::own_maps().unwrap() {
            assert!(m.end <= end || m.name == "[vsyscall]" || m.name == "[vectors]", "{m:?} above {end:#x}");
        }
        #[cfg(target_arch = "x86_64")]
        assert!([0x7fff_ffff_f000, 0x00ff_ffff_ffff_f000].contains(&end), "{end:#x}");
    }

    #[test]
    fn finds_the_first_gap_avoiding_both_lists() {
        let own = [(0x10000, 0x20000), (0x40000, 0x50000)];
        let dumped = [(0x20000, 0x30000)];
        assert_eq!(find_hole(&own, &dumped, 0x10000, 0x10000, 1 << 40), Some(0x30000));
        assert_eq!(find_hole(&own, &dumped, 0x20000, 0x10000, 1 << 40), Some(0x50000));
        assert_eq!(find_hole(&own, &dumped, 0x8000, 0x0, 1 << 40), Some(0x0));
        // Overlapping and unsorted inputs.
        let own = [(0x50000, 0x60000), (0x10000, 0x58000)];
        assert_eq!(find_hole(&own, &[], 0x1000, 0x10000, 1 << 40), Some(0x60000));
        assert_eq!(find_hole(&own, &[], 0x1000, 0x10000, 0x60800), None);
    }
}
