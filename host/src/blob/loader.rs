//! Maps the embedded blob into the current process and enters it.
//!
//! The loader runs in a freshly forked child just before the jump, so its
//! success path makes raw syscalls only: no allocation, no locks (a fork of
//! a multi-threaded parent may hold any of them).

use linux_raw_sys::general as g;
use revenant_arch::{Errno, PAGE_SIZE, sys};

use super::EMBEDDED;

/// The blob mapped and relocated at `base`.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub base: usize,
    pub len: usize,
}

/// Maps the blob at `hint` (exactly there, or fail) or anywhere, relocates
/// it, and protects code read+execute and data read+write.
pub fn load(hint: Option<usize>) -> Result<Loaded, Errno> {
    let blob = &EMBEDDED;
    let len = blob.map_size();
    let mut flags = g::MAP_PRIVATE | g::MAP_ANONYMOUS;
    if hint.is_some() {
        flags |= g::MAP_FIXED_NOREPLACE;
    }
    let prot = g::PROT_READ | g::PROT_WRITE;
    // SAFETY: a new anonymous mapping; MAP_FIXED_NOREPLACE never replaces.
    let base = unsafe { revenant_arch::mmap(hint.unwrap_or(0), len, prot, flags, -1, 0) }?;
    if hint.is_some_and(|h| h != base) {
        // Kernels before 4.17 treat MAP_FIXED_NOREPLACE as a hint.
        // SAFETY: we just mapped it and nothing refers to it.
        let _ = unsafe { sys::munmap(base, len) };
        return Err(Errno::EEXIST);
    }
    // SAFETY: `base..base + len` is our fresh writable mapping.
    let mem = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, len) };
    mem[..blob.image.len()].copy_from_slice(blob.image);
    revenant_linker::relocate_words(blob.word_size, blob.relocs, mem, base as u64);

    let text = (blob.data_start as usize).min(len);
    // SAFETY: only our own mapping changes protection, and nothing runs from
    // it or writes to its code part yet.
    unsafe {
        if text > 0 {
            sys::mprotect(base, text, g::PROT_READ | g::PROT_EXEC)?;
        }
        revenant_arch::flush_icache(base, base + len)?;
    }
    Ok(Loaded { base, len })
}

/// Maps a stack of `size` bytes with a guard page below it; returns its top.
pub fn map_stack(size: usize) -> Result<usize, Errno> {
    let size = size.next_multiple_of(PAGE_SIZE);
    let prot = g::PROT_READ | g::PROT_WRITE;
    let flags = g::MAP_PRIVATE | g::MAP_ANONYMOUS;
    // SAFETY: a new anonymous mapping replaces nothing.
    let low = unsafe { revenant_arch::mmap(0, size + PAGE_SIZE, prot, flags, -1, 0) }?;
    // SAFETY: the guard page is ours and unused.
    unsafe { sys::mprotect(low, PAGE_SIZE, g::PROT_NONE) }?;
    Ok(low + PAGE_SIZE + size)
}

impl Loaded {
    /// The blob's entry point.
    pub fn entry(&self) -> usize {
        self.base + EMBEDDED.entry as usize
    }

    /// Switches to `stack_top` and runs the blob on `args`.
    ///
    /// # Safety
    /// `args` must point at a valid argument block that outlives the blob
    /// (it does: the blob never returns), and `stack_top` must come from
    /// [`map_stack`]. Nothing on the current stack is used again.
    pub unsafe fn enter(&self, args: *const u8, stack_top: usize) -> ! {
        // SAFETY: the entry is the relocated blob_entry, which has the
        // `extern "C" fn(usize) -> !` shape call_on_stack needs.
        unsafe { revenant_arch::call_on_stack(self.entry(), args as usize, stack_top) }
    }
}
