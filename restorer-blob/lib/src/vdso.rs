//! Reads the dynamic symbols of a vDSO image, bounds-checked throughout: a
//! vDSO comes from a kernel or an image file we do not control, and a
//! malformed one must give an error, never a crash. `no_std` and
//! allocation-free, so the blob and the host share it.

/// Why an image is not a vDSO we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VdsoError {
    /// No ELF magic, an unknown class, or big-endian.
    NotElf,
    /// A header, table or string points outside the image.
    OutOfBounds,
    /// No `.dynsym` section (or its string table).
    NoSymbols,
}

fn get(b: &[u8], off: usize, len: usize) -> Result<&[u8], VdsoError> {
    off.checked_add(len).and_then(|end| b.get(off..end)).ok_or(VdsoError::OutOfBounds)
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, VdsoError> {
    Ok(u16::from_le_bytes(get(b, off, 2)?.try_into().map_err(|_| VdsoError::OutOfBounds)?))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, VdsoError> {
    Ok(u32::from_le_bytes(get(b, off, 4)?.try_into().map_err(|_| VdsoError::OutOfBounds)?))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, VdsoError> {
    Ok(u64::from_le_bytes(get(b, off, 8)?.try_into().map_err(|_| VdsoError::OutOfBounds)?))
}

/// A word of the image's class at `off`.
fn word(b: &[u8], off: usize, is64: bool) -> Result<u64, VdsoError> {
    if is64 { u64_at(b, off) } else { u32_at(b, off).map(u64::from) }
}

const SHT_DYNSYM: u32 = 11;
const PT_LOAD: u32 = 1;
const STT_FUNC: u8 = 2;
const STT_NOTYPE: u8 = 0;

/// Calls `f(name, offset)` for every defined function symbol, with offsets
/// from the start of the image (the lowest `PT_LOAD` address is subtracted).
pub fn for_each_symbol(image: &[u8], mut f: impl FnMut(&[u8], u64)) -> Result<(), VdsoError> {
    if get(image, 0, 4)? != b"\x7fELF" || get(image, 5, 1)? != [1] {
        return Err(VdsoError::NotElf);
    }
    let is64 = match get(image, 4, 1)?[0] {
        1 => false,
        2 => true,
        _ => return Err(VdsoError::NotElf),
    };
    let (phoff, shoff) = if is64 {
        (u64_at(image, 32)?, u64_at(image, 40)?)
    } else {
        (u32_at(image, 28)? as u64, u32_at(image, 32)? as u64)
    };
    let (e_off, w) = if is64 { (52, 8) } else { (40, 4) };
    let phentsize = u16_at(image, e_off + 2)? as usize;
    let phnum = u16_at(image, e_off + 4)? as usize;
    let shentsize = u16_at(image, e_off + 6)? as usize;
    let shnum = u16_at(image, e_off + 8)? as usize;

    let mut base = u64::MAX;
    for i in 0..phnum {
        let ph = (phoff as usize).checked_add(i * phentsize).ok_or(VdsoError::OutOfBounds)?;
        if u32_at(image, ph)? == PT_LOAD {
            let vaddr = word(image, ph + if is64 { 16 } else { 8 }, is64)?;
            base = base.min(vaddr);
        }
    }
    if base == u64::MAX {
        base = 0;
    }

    // Section header fields: type at 4; offset, size, link, entsize after
    // the flags and address words.
    let sh = |i: usize| -> Result<(u32, u64, u64, u32, u64), VdsoError> {
        let at = (shoff as usize)
            .checked_add(i.checked_mul(shentsize).ok_or(VdsoError::OutOfBounds)?)
            .ok_or(VdsoError::OutOfBounds)?;
        let ty = u32_at(image, at + 4)?;
        let off = word(image, at + 8 + 2 * w, is64)?;
        let size = word(image, at + 8 + 3 * w, is64)?;
        let link = u32_at(image, at + 8 + 4 * w)?;
        let entsize = word(image, at + 16 + 5 * w, is64)?;
        Ok((ty, off, size, link, entsize))
    };
    let mut dynsym = None;
    for i in 0..shnum {
        let s = sh(i)?;
        if s.0 == SHT_DYNSYM {
            dynsym = Some(s);
            break;
        }
    }
    let (_, sym_off, sym_size, link, entsize) = dynsym.ok_or(VdsoError::NoSymbols)?;
    let (_, str_off, str_size, _, _) =
        if (link as usize) < shnum { sh(link as usize)? } else { return Err(VdsoError::NoSymbols) };
    let strtab = get(image, str_off as usize, str_size as usize)?;
    let syms = get(image, sym_off as usize, sym_size as usize)?;
    let entsize = if entsize == 0 { if is64 { 24 } else { 16 } } else { entsize as usize };
    if entsize < if is64 { 24 } else { 16 } {
        return Err(VdsoError::OutOfBounds);
    }
    for s in syms.chunks_exact(entsize).skip(1) {
        let name = u32_at(s, 0)? as usize;
        let (info, shndx, value) =
            if is64 { (s[4], u16_at(s, 6)?, u64_at(s, 8)?) } else { (s[12], u16_at(s, 14)?, u32_at(s, 4)? as u64) };
        if shndx == 0 || !matches!(info & 0xf, STT_FUNC | STT_NOTYPE) {
            continue;
        }
        let rest = strtab.get(name..).ok_or(VdsoError::OutOfBounds)?;
        let len = rest.iter().position(|&c| c == 0).ok_or(VdsoError::OutOfBounds)?;
        if len > 0 && value >= base {
            f(&rest[..len], value - base);
        }
    }
    Ok(())
}

/// The offset of symbol `name`, if the image defines it.
pub fn lookup(image: &[u8], name: &[u8]) -> Result<Option<u64>, VdsoError> {
    let mut found = None;
    for_each_symbol(image, |n, off| {
        if n == name && found.is_none() {
            found = Some(off);
        }
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's vDSO, if it has one (qemu-user guests do not).
    fn live_vdso() -> Option<&'static [u8]> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
        let (range, _) = line.split_once(' ')?;
        let (s, e) = range.split_once('-')?;
        let (s, e) = (usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?);
        // SAFETY: the vDSO is mapped readable for its whole range, for the
        // life of the process.
        Some(unsafe { std::slice::from_raw_parts(s as *const u8, e - s) })
    }

    #[test]
    fn finds_clock_gettime_in_the_live_vdso() {
        let Some(image) = live_vdso() else { return };
        let off = lookup(image, b"__vdso_clock_gettime").unwrap().expect("clock_gettime in the vDSO");
        assert!((off as usize) < image.len());
        let mut n = 0;
        for_each_symbol(image, |_, _| n += 1).unwrap();
        assert!(n >= 4, "{n} symbols");
        assert_eq!(lookup(image, b"no_such_symbol").unwrap(), None);
    }

    #[test]
    fn refuses_garbage_and_survives_corruption() {
        assert_eq!(lookup(b"", b"x"), Err(VdsoError::OutOfBounds));
        assert_eq!(lookup(b"\x7fELF\x03\x01junkjunkjunk", b"x"), Err(VdsoError::NotElf));
        assert_eq!(lookup(&[0u8; 64], b"x"), Err(VdsoError::NotElf));
        let Some(image) = live_vdso() else { return };
        let mut seed = 0x9e37_79b9u32;
        for round in 0..5000usize {
            let mut bad = image.to_vec();
            for _ in 0..1 + round % 6 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // Mostly the headers and tables, where damage matters.
                let span = if round % 3 == 0 { bad.len() } else { 256.min(bad.len()) };
                let at = seed as usize % span;
                bad[at] = (seed >> 24) as u8;
            }
            let _ = for_each_symbol(&bad, |_, _| {});
            let cut = seed as usize % bad.len();
            let _ = for_each_symbol(&bad[..cut], |_, _| {});
        }
    }
}
