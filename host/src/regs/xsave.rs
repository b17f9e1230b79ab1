//! Restore half: builds a standard-format XSAVE area for this CPU from
//! dumped state, the way the kernel's `rt_sigreturn` wants it: legacy area
//! with the software bytes marking an extended frame, header, components at
//! the offsets CPUID gives, and the closing magic word.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::__cpuid_count;

use anyhow::Result;

use super::X86Fpu;
use revenant_arch::frame::{FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2, SW_BYTES_OFFSET};

/// AMX tile state is enabled on demand per task (XFD); a frame carrying it
/// would exceed the kernel's default signal frame size, so it is left out.
const XFD_FEATURES: u64 = (1 << 17) | (1 << 18);

/// The user features the OS enabled (XCR0).
pub fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) only reads XCR0; every x86_64 CPU Linux enables
    // XSAVE on supports it (checked by the CPUID leaf being non-zero).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

/// Offset and size of component `i` in the standard format.
fn component(i: u32) -> (usize, usize) {
    let r = __cpuid_count(0xd, i);
    (r.ebx as usize, r.eax as usize)
}

/// The area's bytes, including the trailing `FP_XSTATE_MAGIC2`.
pub fn area(f: &X86Fpu) -> Result<Vec<u8>> {
    let features = xcr0() & !XFD_FEATURES;
    let mut size = 576;
    for i in 2..63 {
        if features & (1 << i) != 0 {
            let (off, len) = component(i);
            size = size.max(off + len);
        }
    }
    let mut a = vec![0u8; size + 4];
    a[..512].copy_from_slice(&f.legacy);
    // Software bytes: this is an xsave frame of `size` bytes.
    let sw = &mut a[SW_BYTES_OFFSET..512];
    sw.fill(0);
    sw[0..4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    sw[4..8].copy_from_slice(&(size as u32 + 4).to_le_bytes());
    sw[8..16].copy_from_slice(&features.to_le_bytes());
    sw[16..20].copy_from_slice(&(size as u32).to_le_bytes());

    // Only state this CPU has and the dump carries can be loaded; the rest
    // starts in its init state.
    let mut bv = f.xstate_bv & features & 0b11;
    for (i, bytes) in &f.components {
        if *i >= 2 && *i < 63 && features & (1 << i) != 0 && f.xstate_bv & (1 << i) != 0 {
            let (off, len) = component(*i);
            let n = bytes.len().min(len);
            a[off..off + n].copy_from_slice(&bytes[..n]);
            bv |= 1 << i;
        }
    }
    a[512..520].copy_from_slice(&bv.to_le_bytes());
    a[size..size + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
    Ok(a)
}
