//! Where the bootstrap area goes, and what is inside it.

use anyhow::{Context, Result};

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

/// A mapping of `/proc/self/maps`: range and name (`[vdso]`, a path, or "").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

pub fn parse_maps(text: &str) -> Result<Vec<Mapping>> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let mut it = line.split_whitespace();
            let range = it.next().with_context(|| format!("maps line {}: empty", i + 1))?;
            let (s, e) = range.split_once('-').with_context(|| format!("maps line {}: no range", i + 1))?;
            let start = u64::from_str_radix(s, 16).with_context(|| format!("maps line {}: start", i + 1))?;
            let end = u64::from_str_radix(e, 16).with_context(|| format!("maps line {}: end", i + 1))?;
            let name = it.nth(4).unwrap_or("").to_string();
            Ok(Mapping { start, end, name })
        })
        .collect()
}

pub fn own_maps() -> Result<Vec<Mapping>> {
    parse_maps(&std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?)
}

/// The runtime vDSO pieces, in address order, as (name, start, end).
pub fn runtime_vdso(maps: &[Mapping]) -> Vec<Mapping> {
    let mut v: Vec<Mapping> =
        maps.iter().filter(|m| matches!(m.name.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]")).cloned().collect();
    v.sort_by_key(|m| m.start);
    v
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn parses_maps_lines() {
        let text = "55d0c0000000-55d0c0001000 r--p 00000000 fd:01 123 /usr/bin/cat\n\
                    7ffc1000-7ffc3000 r-xp 00000000 00:00 0                  [vdso]\n\
                    7ffd0000-7ffd1000 rw-p 00000000 00:00 0\n";
        let m = parse_maps(text).unwrap();
        assert_eq!(m[0], Mapping { start: 0x55d0c0000000, end: 0x55d0c0001000, name: "/usr/bin/cat".into() });
        assert_eq!(m[1].name, "[vdso]");
        assert_eq!(m[2].name, "");
        assert!(parse_maps("zz-1 r--p").is_err());
    }
}
