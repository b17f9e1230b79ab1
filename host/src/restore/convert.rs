//! CRIU's image conventions turned into plan terms: pure functions, so the
//! rules are tested without image files.

use anyhow::{Result, bail};

use revenant_images::messages::pe;

use super::plan::PageRun;
use crate::regs::X86Fpu;

/// The signal number of each of the 62 `sigactions` entries CRIU writes:
/// 1 to 64 without SIGKILL and SIGSTOP, which cannot have actions.
pub fn sigaction_signo(index: usize) -> Option<u32> {
    (1..=64u32).filter(|&s| s != 9 && s != 19).nth(index)
}

/// Page runs from pagemap entries `(vaddr, nr_pages, flags)`: every
/// present run takes the next pages of the pages image, in order; lazy
/// pages are still in the image (no lazy restore here); pages held by a
/// parent image are not supported.
pub fn page_runs(entries: &[(u64, u64, u32)], page: u64) -> Result<Vec<PageRun>> {
    let mut runs: Vec<PageRun> = Vec::with_capacity(entries.len());
    let mut offset = 0u64;
    for (i, &(vaddr, nr, flags)) in entries.iter().enumerate() {
        if flags & pe::PARENT != 0 {
            bail!("entry {i} (vaddr {vaddr:#x}): pages kept in a parent image (incremental dumps) are not supported");
        }
        if flags & pe::PRESENT == 0 {
            continue;
        }
        let len = nr.checked_mul(page).filter(|l| vaddr.checked_add(*l).is_some());
        let Some(len) = len else { bail!("entry {i} (vaddr {vaddr:#x}): nr_pages {nr} overflows") };
        match runs.last_mut() {
            // Adjacent in memory and in the file: one run.
            Some(last) if last.addr + last.len == vaddr && last.file_offset + last.len == offset => last.len += len,
            _ => runs.push(PageRun { addr: vaddr, len, file_offset: offset, file: 0 }),
        }
        offset += len;
    }
    Ok(runs)
}

/// The 512-byte FXSAVE area from `user_i387_struct`'s fields (x86_64).
#[allow(clippy::too_many_arguments)]
pub fn fxsave_area(
    cwd: u32,
    swd: u32,
    twd: u32,
    fop: u32,
    rip: u64,
    rdp: u64,
    mxcsr: u32,
    mxcsr_mask: u32,
    st_space: &[u32],
    xmm_space: &[u32],
) -> Result<[u8; 512]> {
    if st_space.len() != 32 || xmm_space.len() != 64 {
        bail!("st_space has {} words (32 expected), xmm_space {} (64 expected)", st_space.len(), xmm_space.len());
    }
    let mut a = [0u8; 512];
    a[0..2].copy_from_slice(&(cwd as u16).to_le_bytes());
    a[2..4].copy_from_slice(&(swd as u16).to_le_bytes());
    a[4..6].copy_from_slice(&(twd as u16).to_le_bytes());
    a[6..8].copy_from_slice(&(fop as u16).to_le_bytes());
    a[8..16].copy_from_slice(&rip.to_le_bytes());
    a[16..24].copy_from_slice(&rdp.to_le_bytes());
    a[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    a[28..32].copy_from_slice(&mxcsr_mask.to_le_bytes());
    for (i, w) in st_space.iter().chain(xmm_space).enumerate() {
        a[32 + 4 * i..36 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    Ok(a)
}

/// Little-endian bytes of words, for XSAVE components.
pub fn words_le<T: Copy + Into<u64>>(words: &[T], width: usize) -> Vec<u8> {
    words.iter().flat_map(|w| (*w).into().to_le_bytes()[..width].to_vec()).collect()
}

/// x86 FPU state from the fxsave fields and the xsave components CRIU keeps
/// (feature number, bytes).
pub fn x86_fpu(legacy: [u8; 512], xstate_bv: u64, components: Vec<(u32, Vec<u8>)>) -> X86Fpu {
    X86Fpu { legacy, xstate_bv, components: components.into_iter().filter(|(_, b)| !b.is_empty()).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigaction_entries_skip_kill_and_stop() {
        assert_eq!(sigaction_signo(0), Some(1));
        assert_eq!(sigaction_signo(7), Some(8));
        assert_eq!(sigaction_signo(8), Some(10));
        assert_eq!(sigaction_signo(16), Some(18));
        assert_eq!(sigaction_signo(17), Some(20));
        assert_eq!(sigaction_signo(61), Some(64));
        assert_eq!(sigaction_signo(62), None);
    }

    #[test]
    fn page_runs_follow_the_pages_image_and_merge_neighbours() {
        let p = 4096;
        let e = [
            (0x1000, 1, pe::PRESENT),
            (0x2000, 2, pe::PRESENT | pe::LAZY),
            (0x9000, 1, 0),
            (0x10000, 256, pe::PRESENT),
            (0x110000, 3, pe::PRESENT),
        ];
        let runs = page_runs(&e, p).unwrap();
        assert_eq!(
            runs,
            vec![
                PageRun { addr: 0x1000, len: 3 * p, file_offset: 0, file: 0 },
                PageRun { addr: 0x10000, len: 259 * p, file_offset: 3 * p, file: 0 },
            ]
        );
        assert!(page_runs(&[(0x1000, 1, pe::PRESENT | pe::PARENT)], p).is_err());
        assert!(page_runs(&[(u64::MAX - 4096, 2, pe::PRESENT)], p).is_err());
    }

    #[test]
    fn fxsave_area_has_the_hardware_layout() {
        let st: Vec<u32> = (0..32).collect();
        let xmm: Vec<u32> = (100..164).collect();
        let a = fxsave_area(0x37f, 1, 0xff, 2, 0x1122, 0x3344, 0x1f80, 0xffff, &st, &xmm).unwrap();
        assert_eq!(&a[0..2], &0x37fu16.to_le_bytes());
        assert_eq!(a[4], 0xff);
        assert_eq!(&a[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(&a[32..36], &0u32.to_le_bytes());
        assert_eq!(&a[160..164], &100u32.to_le_bytes());
        assert_eq!(&a[412..416], &163u32.to_le_bytes());
        assert!(fxsave_area(0, 0, 0, 0, 0, 0, 0, 0, &st[..3], &xmm).is_err());
    }
}
