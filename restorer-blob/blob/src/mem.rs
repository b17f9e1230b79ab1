//! The memory functions the compiler emits calls to. On `*-linux-gnu`
//! targets `compiler_builtins` leaves them to libc, and the blob has none.
//!
//! Plain byte loops: the blob copies little (page contents arrive by
//! `preadv` straight into place). The empty `asm!` in each loop keeps LLVM
//! from recognising the loop as a `memcpy`/`memset` idiom and compiling it
//! into a call to the very function it is in.

use core::arch::asm;

/// # Safety
/// `dst` and `src` must be valid for `n` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: in bounds by the caller's contract.
        unsafe { *dst.add(i) = *src.add(i) };
        // SAFETY: an empty asm statement has no effect.
        unsafe { asm!("", options(nostack, preserves_flags)) };
    }
    dst
}

/// # Safety
/// `dst` and `src` must be valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) {
        for i in 0..n {
            // SAFETY: in bounds by the caller's contract; copying upwards
            // never reads a byte already overwritten.
            unsafe { *dst.add(i) = *src.add(i) };
            // SAFETY: an empty asm statement has no effect.
            unsafe { asm!("", options(nostack, preserves_flags)) };
        }
    } else {
        for i in (0..n).rev() {
            // SAFETY: as above, copying downwards.
            unsafe { *dst.add(i) = *src.add(i) };
            // SAFETY: an empty asm statement has no effect.
            unsafe { asm!("", options(nostack, preserves_flags)) };
        }
    }
    dst
}

/// # Safety
/// `dst` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: in bounds by the caller's contract.
        unsafe { *dst.add(i) = c as u8 };
        // SAFETY: an empty asm statement has no effect.
        unsafe { asm!("", options(nostack, preserves_flags)) };
    }
    dst
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: in bounds by the caller's contract.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}
