//! The restorer blob: a freestanding position-independent executable that
//! never runs as one. The host flattens it, copies it into a hole in the
//! target process, applies the RELATIVE relocations, and jumps to
//! [`blob_entry`] on a stack of its own with a pointer to the argument block.
//! All logic lives in `revenant-restorer`; this crate only supplies what a
//! freestanding binary must: the entry symbol, the panic handler and the
//! memory functions the compiler calls.

#![no_std]
#![no_main]

mod mem;

use revenant_blob_abi::ExitCode;

/// The blob's entry point.
///
/// # Safety
/// The loader must have relocated the image, and `args` must point at a
/// valid argument block (see `revenant-blob-abi`).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.blob_entry")]
pub unsafe extern "C" fn blob_entry(args: *const u8) -> ! {
    // SAFETY: forwarded from the loader's contract.
    unsafe { revenant_restorer::run(args) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // No formatting here: it would pull core::fmt into the blob. The exit
    // code tells the host a bug was hit.
    revenant_arch::sys::exit_group(ExitCode::Panic as i32)
}

/// ARM's unwind tables in the precompiled `core` name these even with
/// panic=abort (the tables themselves are discarded by the linker script, the
/// references survive); nothing calls them. Defining them keeps the symbol
/// table free of undefined names, which the flattener refuses.
#[cfg(target_arch = "arm")]
mod unwind_names {
    #[unsafe(no_mangle)]
    extern "C" fn rust_eh_personality() {}
    #[unsafe(no_mangle)]
    extern "C" fn __aeabi_unwind_cpp_pr0() {}
    #[unsafe(no_mangle)]
    extern "C" fn __aeabi_unwind_cpp_pr1() {}
    #[unsafe(no_mangle)]
    extern "C" fn __aeabi_unwind_cpp_pr2() {}
}
