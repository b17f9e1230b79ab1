//! This process's own mappings (`/proc/self/maps`): where our vDSO is, for
//! the kernel probes, the dump and the restore's bootstrap area alike.

use anyhow::{Context, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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
