//! The restorer blob: a freestanding position-independent executable that
//! never runs as one. host/build.rs flattens it; a loader copies it into
//! memory the task running it keeps (for a restore, the bootstrap area the
//! new task inherits from the host), applies the RELATIVE relocations
//! before any of its code runs, and jumps to
//! [`blob_entry`] on a stack of its own with a pointer to the argument block.
//! All logic lives in `revenant-restorer`; this crate only supplies what a
//! freestanding binary must: the entry symbol, the panic handler and the
//! memory functions the compiler calls.

#![no_std]
#![no_main]

mod mem;

use revenant_blob_abi::ExitCode;

/// The blob's entry point, as `extern "C" fn(*const Header) -> !`: checks
/// the stack rule before any compiled code runs (a compiled prologue may
/// already rely on the alignment), exiting with [`ExitCode::BadStack`] when
/// it is broken, then goes on to [`blob_start`] with the stack pointer the
/// loader called it with.
///
/// x86_64: `rsp % 16 == 0` at the `call`, so 8 on arrival.
///
/// # Safety
/// The loader must have relocated the image, and `args` must point at a
/// valid argument block (see `revenant-blob-abi`).
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.blob_entry")]
#[unsafe(naked)]
pub unsafe extern "C" fn blob_entry(args: *const u8) -> ! {
    core::arch::naked_asm!(
        "lea rsi, [rsp + 8]",
        "test sil, 15",
        "jnz 2f",
        "jmp {start}",
        "2:",
        "mov edi, {bad}",
        "mov eax, {exit}",
        "syscall",
        "ud2",
        start = sym blob_start,
        bad = const ExitCode::BadStack as u8 as u32,
        exit = const revenant_arch::nr_general::__NR_exit_group,
    )
}

/// The blob's entry point; see the x86_64 one. ARM (AAPCS): `sp % 8 == 0`
/// at the call, which a `bl`/`blx` leaves unchanged.
///
/// # Safety
/// As for the x86_64 one.
#[cfg(target_arch = "arm")]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.blob_entry")]
#[unsafe(naked)]
pub unsafe extern "C" fn blob_entry(args: *const u8) -> ! {
    core::arch::naked_asm!(
        "mov r1, sp",
        "tst r1, #7",
        "bne 2f",
        "b {start}",
        "2:",
        "mov r0, #{bad}",
        "mov r7, #{exit}",
        "svc 0",
        "udf #0",
        start = sym blob_start,
        bad = const ExitCode::BadStack as u8 as u32,
        exit = const revenant_arch::nr_general::__NR_exit_group,
    )
}

/// Where [`blob_entry`] goes once the stack rule holds; `entry_sp` is the
/// stack pointer at the loader's call.
///
/// # Safety
/// As for [`blob_entry`].
unsafe extern "C" fn blob_start(args: *const u8, entry_sp: usize) -> ! {
    // SAFETY: forwarded from the loader's contract.
    unsafe { revenant_restorer::run(args, entry_sp) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // No formatting here: it would pull core::fmt into the blob. The exit
    // code (and status record) tells the loader a bug was hit.
    revenant_restorer::status::exit(ExitCode::Panic)
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
