//! The contract between revenant's host (or any other loader) and its
//! restorer blob.
//!
//! The loader lays out one argument block: a [`Header`] at offset 0, then
//! the arrays the header's [`Span`]s point at, all in one allocation of
//! `total_size` bytes. The blob receives a pointer to it as its only
//! argument. Every field has a fixed width and every address is a `u64`, so
//! the block has the same layout on every arch; [`abi_struct!`] refuses
//! padding and the asserts at the bottom pin the offsets, for each target
//! this crate is built for. Everything is little-endian (both arches are).
//!
//! Versioning (also written into `blob.json` and `revenant_blob.h`):
//! - [`VERSION`] names the whole contract: every struct's layout and every
//!   field's meaning, the constants, the exit codes, the entry rules and
//!   the [`Status`] protocol. Any change to any of them bumps it; there are
//!   no minor versions and no compatible changes under one number.
//! - A blob accepts exactly its own version and refuses any other with
//!   [`ExitCode::BadVersion`], before reading past the header's first
//!   words; a loader accepts exactly the version it was written for
//!   (`abi_version` in `blob.json`, `REVENANT_VERSION` in the header).
//! - Fields marked reserved must be zero, and [`Header::flags`] may only
//!   hold bits the version defines (none in version 6): a blob refuses
//!   anything else with [`ExitCode::BadLayout`], so such fields can gain a
//!   meaning later without a loader's garbage being taken for it.
//!
//! History: 3 → 4 added [`Header::mapped_size`] and [`Header::status_fd`]
//! (the header grew from 48 to 56 bytes), the [`Status`] record, the entry
//! stack check and exit codes 207 to 209; reserved fields are checked.
//! 4 → 5 added lazy areas: [`VMA_LAZY`], [`Restore::lazy_fd`] (the
//! restore grew from 320 to 328 bytes) and exit code 224.
//! 5 → 6: each [`PageRead`] names its pages image ([`PageRead::fd`], 24
//! bytes), so an iterative dump's images are read where they lie;
//! `Restore::pages_fd` and the restore's trailing reserved word went, and
//! [`Restore::lazy_fd`] took the first one's place;
//! [`Restore::guards`] came last (328 bytes again). [`PosixTimer::flags`]
//! (was a pad) holds [`TIMER_SIGNAL_PENDING`].

#![no_std]

use core::mem::{offset_of, size_of};

#[macro_use]
mod describe;
mod restore;

pub use describe::{Field, Struct};

pub use restore::{
    Creds, ITimer, Iovec, MmMap, Move, PAGES_FILES_MAPPED, PageRead, Patch, PosixTimer, QueuedSignal, RESTORE_DUMPABLE,
    RESTORE_FLAGS, RESTORE_NO_MM_MAP, RESTORE_NOT_DUMPABLE, RESTORE_SET_GROUPS, RESTORE_TRAP, Restore, Rlimit,
    SECCOMP_ALL_THREADS, SECCOMP_STRICT, Seccomp, SigAction, THREAD_STACK, TIMER_SIGNAL_PENDING, Thread, VMA_FILL,
    VMA_LAZY, VMA_PREMAPPED, VMA_REPROTECT, VMA_SHM, VMA_SKIP, Vma,
};

/// "RVNT", little-endian: the first word of every argument block.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RVNT");
/// The argument block layout described by this crate.
pub const VERSION: u32 = 6;
/// The exported symbol the loader jumps to, as `extern "C" fn(*const Header) -> !`.
pub const ENTRY_SYMBOL: &str = "blob_entry";
/// The argument block's address is a multiple of this
/// ([`ExitCode::BadLayout`] otherwise).
pub const BLOCK_ALIGN: u32 = 8;
/// "RVST", little-endian: [`Status::magic`].
pub const STATUS_MAGIC: u32 = u32::from_le_bytes(*b"RVST");
/// [`Status::code`] of a restore that reached its final `rt_sigreturn`.
pub const STATUS_RESTORED: u32 = 0;
/// Bytes of stack the blob's first thread needs below the stack pointer
/// it is entered with (a restore checks that they lie in the bootstrap
/// area).
pub const MIN_STACK: u32 = 64 << 10;

/// Architectures, as written into [`Header::arch`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64 = 1,
    Arm = 2,
}

impl Arch {
    /// The arch this crate was compiled for.
    pub const NATIVE: Arch = cfg_select! {
        target_arch = "x86_64" => { Arch::X86_64 }
        target_arch = "arm" => { Arch::Arm }
    };

    pub fn from_u32(v: u32) -> Option<Arch> {
        match v {
            1 => Some(Arch::X86_64),
            2 => Some(Arch::Arm),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm => "arm",
        }
    }
}

/// What the blob is asked to do.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Exercise relocated data, function-pointer tables, the log and
    /// syscalls, then exit with a code derived from [`SelfTest::input`].
    SelfTest = 1,
    /// Replace the whole address space and task state with the dumped
    /// ones described by [`Header::restore`], then `rt_sigreturn`.
    Restore = 2,
}

impl Command {
    pub fn from_u32(v: u32) -> Option<Command> {
        match v {
            1 => Some(Command::SelfTest),
            2 => Some(Command::Restore),
            _ => None,
        }
    }
}

/// Log verbosity, as in [`Header::log_level`]; a message is written when its
/// level is at most the header's.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

abi_struct! {
    /// An array inside the argument block: `count` elements starting
    /// `offset` bytes from the block's start.
    pub struct Span(Default, PartialEq, Eq) {
        /// Bytes from the start of the block to the first element; a
        /// multiple of the element type's alignment (the host uses 8 for
        /// every array).
        pub offset: u32,
        /// Number of elements (not bytes); 0 for an empty array.
        pub count: u32,
    }

    /// The start of every argument block, at offset 0 of a block whose
    /// address is a multiple of [`BLOCK_ALIGN`].
    pub struct Header(Default) {
        /// [`MAGIC`]: "RVNT" read as a little-endian u32.
        pub magic: u32,
        /// [`VERSION`]: the blob accepts exactly its own.
        pub version: u32,
        /// [`Arch`] as a number: the arch the block was made for.
        pub arch: u32,
        /// Bytes in the whole block, header included; at most
        /// `mapped_size`.
        pub total_size: u32,
        /// [`Command`] as a number: what the blob is asked to do.
        pub command: u32,
        /// [`LogLevel`] as a number; 0 silences the log.
        pub log_level: u32,
        /// Where log lines go (text, one line per event); -1 for nowhere.
        pub log_fd: i32,
        /// Feature bits the loader asks for. None are defined in this
        /// version: anything but zero ends the blob with
        /// [`ExitCode::BadLayout`] (a later version may define bits, which
        /// an older blob then refuses rather than ignores).
        pub flags: u32,
        /// One [`SelfTest`] for [`Command::SelfTest`], else empty.
        pub selftest: Span => SelfTest,
        /// One [`Restore`] for [`Command::Restore`], else empty.
        pub restore: Span => Restore,
        /// Bytes the loader has mapped readable at the block's address: the
        /// blob reads nothing past them, and refuses a `total_size` above
        /// them with [`ExitCode::NotMapped`].
        pub mapped_size: u32,
        /// Where the blob writes its [`Status`] records (the completion
        /// protocol); -1 for none.
        pub status_fd: i32,
    }

    /// Arguments of [`Command::SelfTest`].
    pub struct SelfTest(Default) {
        /// Fed through the blob's function-pointer table; the blob exits
        /// with [`selftest_exit_code`] of it.
        pub input: u32,
        /// Reserved: must be zero ([`ExitCode::BadLayout`] otherwise).
        pub pad: u32,
        /// Bytes in the block the blob logs back verbatim.
        pub message: Span => u8,
    }

    /// What the blob writes to [`Header::status_fd`], in one `write` of
    /// its 8 bytes, so a loader learns how it ended without parsing logs:
    /// right before a restore's final `rt_sigreturn` ([`STATUS_RESTORED`]),
    /// before a self-test exits (its result), and before any exit with an
    /// [`ExitCode`] once the header has passed its checks. A header that
    /// fails them (magic, version, arch, flags, sizes) gets no record: its
    /// `status_fd` cannot be trusted either, and only the exit code tells.
    pub struct Status(Default, PartialEq, Eq) {
        /// [`STATUS_MAGIC`]: "RVST" read as a little-endian u32.
        pub magic: u32,
        /// [`STATUS_RESTORED`], a self-test's result (below 128), or an
        /// [`ExitCode`] (200 and up): the exit code the blob is about to
        /// exit with.
        pub code: u32,
    }
}

/// The exit code a correct blob gives for a self-test of `input`: the input
/// goes through add 3, multiply by 5, xor 0x55, and is reduced below 128 so
/// it can never be mistaken for an [`ExitCode`].
pub const fn selftest_exit_code(input: u32) -> u8 {
    ((((input.wrapping_add(3)).wrapping_mul(5)) ^ 0x55) % 128) as u8
}

/// A self-test input `blob.json` and `revenant_blob.h` quote with its
/// expected result.
pub const SELFTEST_EXAMPLE_INPUT: u32 = 7;

/// Why a blob ended other than by finishing its command. These are the
/// process exit codes the host sees; all are at least 200 so they never
/// overlap a self-test result.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// The block does not start with [`MAGIC`].
    BadMagic = 200,
    /// The block's [`VERSION`] is not the blob's.
    BadVersion = 201,
    /// The block was made for another arch.
    BadArch = 202,
    /// The block is misaligned, a size or span points outside it or is
    /// misaligned, or a reserved field or flag is not zero.
    BadLayout = 203,
    /// The command number is unknown.
    UnknownCommand = 204,
    /// The blob hit a bug (a Rust panic).
    Panic = 205,
    /// A self-test check failed; the log says which.
    SelfTestFailed = 206,
    /// The stack pointer at entry breaks the stack rule: misaligned (the
    /// blob checks it before anything else), or for a restore not inside
    /// the bootstrap area with [`MIN_STACK`] bytes below it.
    BadStack = 207,
    /// `total_size` is above the `mapped_size` the loader declares, or a
    /// restore's blob or argument block lies outside its bootstrap area
    /// (the only memory a restore keeps).
    NotMapped = 208,
    /// A restore found an rseq area registered for its thread (a C
    /// library's): the kernel would write to it after it is unmapped.
    RseqRegistered = 209,
    /// Unmapping the old address space failed.
    Unmap = 210,
    /// Mapping a dumped VMA failed or landed elsewhere.
    MapVma = 211,
    /// Reading pages from the pages image failed or came up short.
    ReadPages = 212,
    /// Setting a VMA's final protection or madvise flags failed.
    Protect = 213,
    /// Moving the vDSO/vvar into place failed.
    Vdso = 214,
    /// `PR_SET_MM_MAP` (code/data/brk/stack/arg/env/auxv/exe) failed.
    MmMap = 215,
    /// Restoring a signal action or the signal mask failed.
    Signals = 216,
    /// Restoring thread state (TLS, tid address, robust list, rseq) failed.
    ThreadState = 217,
    /// `rt_sigreturn` came back, which means the kernel refused the frame.
    Sigreturn = 218,
    /// Creating a thread (with its dumped TID) failed.
    Threads = 219,
    /// Setting a resource limit failed.
    Rlimits = 220,
    /// Arming an interval timer failed.
    Timers = 221,
    /// Setting credentials (IDs, groups, capabilities, securebits) failed.
    Creds = 222,
    /// Installing a seccomp filter or entering strict mode failed.
    Seccomp = 223,
    /// Handing the lazy areas to the page server failed: creating or
    /// setting up the userfaultfd, registering an area, or sending it.
    LazyPages = 224,
}

impl ExitCode {
    pub const ALL: [ExitCode; 25] = [
        ExitCode::BadMagic,
        ExitCode::BadVersion,
        ExitCode::BadArch,
        ExitCode::BadLayout,
        ExitCode::UnknownCommand,
        ExitCode::Panic,
        ExitCode::SelfTestFailed,
        ExitCode::BadStack,
        ExitCode::NotMapped,
        ExitCode::RseqRegistered,
        ExitCode::Unmap,
        ExitCode::MapVma,
        ExitCode::ReadPages,
        ExitCode::Protect,
        ExitCode::Vdso,
        ExitCode::MmMap,
        ExitCode::Signals,
        ExitCode::ThreadState,
        ExitCode::Sigreturn,
        ExitCode::Threads,
        ExitCode::Rlimits,
        ExitCode::Timers,
        ExitCode::Creds,
        ExitCode::Seccomp,
        ExitCode::LazyPages,
    ];

    pub fn from_code(code: i32) -> Option<ExitCode> {
        Self::ALL.into_iter().find(|c| *c as i32 == code)
    }

    /// One line for a user reading the host's error message.
    pub fn describe(self) -> &'static str {
        match self {
            ExitCode::BadMagic => "argument block has a bad magic number",
            ExitCode::BadVersion => "argument block version differs from the blob's",
            ExitCode::BadArch => "argument block was made for another architecture",
            ExitCode::BadLayout => {
                "argument block is misaligned, has a size or array outside its bounds, or a reserved field set"
            }
            ExitCode::UnknownCommand => "unknown command in the argument block",
            ExitCode::Panic => "the blob panicked (a bug in revenant)",
            ExitCode::SelfTestFailed => "a blob self-test check failed",
            ExitCode::BadStack => "the blob was entered on a misaligned stack or one outside its bootstrap area",
            ExitCode::NotMapped => "the argument block or the blob lies outside the memory the loader declares mapped",
            ExitCode::RseqRegistered => "an rseq area is still registered for the restoring thread",
            ExitCode::Unmap => "unmapping the old address space failed",
            ExitCode::MapVma => "mapping a dumped memory area failed",
            ExitCode::ReadPages => "reading memory pages from the pages image failed",
            ExitCode::Protect => "setting a memory area's protection or madvise flags failed",
            ExitCode::Vdso => "moving the vDSO into place failed",
            ExitCode::MmMap => "PR_SET_MM_MAP (memory layout and exe file) failed",
            ExitCode::Signals => "restoring signal actions or the signal mask failed",
            ExitCode::ThreadState => "restoring TLS, tid address, robust list or rseq failed",
            ExitCode::Sigreturn => "the kernel refused the final rt_sigreturn frame",
            ExitCode::Threads => "creating a thread with its dumped TID failed",
            ExitCode::Rlimits => "setting a resource limit failed",
            ExitCode::Timers => "arming an interval timer failed",
            ExitCode::Creds => "setting credentials (IDs, groups, capabilities, securebits) failed",
            ExitCode::Seccomp => "installing a seccomp filter or entering strict mode failed",
            ExitCode::LazyPages => "handing the lazy memory areas to the page server failed",
        }
    }
}

/// Every constant a loader needs, for `revenant_blob.h` and `blob.json`:
/// name (as the header spells it), value, meaning.
pub const CONSTANTS: &[(&str, u64, &str)] = &[
    ("MAGIC", MAGIC as u64, "Header::magic: \"RVNT\" read as a little-endian u32"),
    (
        "VERSION",
        VERSION as u64,
        "Header::version: the blob accepts exactly this version, a loader exactly the one it was written for",
    ),
    ("BLOCK_ALIGN", BLOCK_ALIGN as u64, "the argument block's address is a multiple of this"),
    ("STATUS_MAGIC", STATUS_MAGIC as u64, "Status::magic: \"RVST\" read as a little-endian u32"),
    ("STATUS_RESTORED", STATUS_RESTORED as u64, "Status::code: the restore reached its final rt_sigreturn"),
    ("MIN_STACK", MIN_STACK as u64, "bytes of stack the blob's first thread needs below its entry stack pointer"),
    ("SELFTEST_EXAMPLE_INPUT", SELFTEST_EXAMPLE_INPUT as u64, "a SelfTest::input the exports quote"),
    (
        "SELFTEST_EXAMPLE_EXIT",
        selftest_exit_code(SELFTEST_EXAMPLE_INPUT) as u64,
        "the exit code and Status::code of a correct blob's self-test of SELFTEST_EXAMPLE_INPUT",
    ),
    ("ARCH_X86_64", Arch::X86_64 as u64, "Header::arch on x86_64"),
    ("ARCH_ARM", Arch::Arm as u64, "Header::arch on 32-bit ARM (EABI, ARM mode)"),
    ("COMMAND_SELFTEST", Command::SelfTest as u64, "Header::command: run the self-test"),
    ("COMMAND_RESTORE", Command::Restore as u64, "Header::command: restore a process"),
    ("LOG_ERROR", LogLevel::Error as u64, "Header::log_level: errors only"),
    ("LOG_WARN", LogLevel::Warn as u64, "Header::log_level: and warnings"),
    ("LOG_INFO", LogLevel::Info as u64, "Header::log_level: and progress"),
    ("LOG_DEBUG", LogLevel::Debug as u64, "Header::log_level: everything"),
    ("RESTORE_TRAP", RESTORE_TRAP as u64, "Restore::flags: trap (int3/bkpt) right before rt_sigreturn"),
    ("RESTORE_NO_MM_MAP", RESTORE_NO_MM_MAP as u64, "Restore::flags: skip PR_SET_MM_MAP"),
    ("RESTORE_SET_GROUPS", RESTORE_SET_GROUPS as u64, "Restore::flags: set the supplementary groups"),
    ("RESTORE_NOT_DUMPABLE", RESTORE_NOT_DUMPABLE as u64, "Restore::flags: PR_SET_DUMPABLE 0 per thread"),
    ("RESTORE_DUMPABLE", RESTORE_DUMPABLE as u64, "Restore::flags: PR_SET_DUMPABLE 1 per thread"),
    ("RESTORE_FLAGS", RESTORE_FLAGS as u64, "Restore::flags: every bit this version defines; others must be zero"),
    ("VMA_SKIP", VMA_SKIP as u64, "Vma::how: do not map (vDSO, vsyscall)"),
    ("VMA_FILL", VMA_FILL as u64, "Vma::how: pages are read into it (mapped writable first)"),
    ("VMA_SHM", VMA_SHM as u64, "Vma::how: attach SysV segment `fd` at `start`"),
    ("VMA_REPROTECT", VMA_REPROTECT as u64, "Vma::how: only mprotect the range to `prot`"),
    ("VMA_PREMAPPED", VMA_PREMAPPED as u64, "Vma::how: mremap from `from` in the premap region"),
    ("VMA_LAZY", VMA_LAZY as u64, "Vma::how: map, register with a userfaultfd and send it to `lazy_fd`"),
    (
        "PAGES_FILES_MAPPED",
        PAGES_FILES_MAPPED as u64,
        "distinct PageRead::fd values mapped to copy from; more are read",
    ),
    ("TIMER_SIGNAL_PENDING", TIMER_SIGNAL_PENDING as u64, "PosixTimer::flags: fire at once, its signal was pending"),
    ("THREAD_STACK", THREAD_STACK, "bytes of bootstrap stack each extra thread needs"),
    ("SECCOMP_STRICT", SECCOMP_STRICT as u64, "Seccomp::flags: strict mode rather than a filter"),
    ("SECCOMP_ALL_THREADS", SECCOMP_ALL_THREADS as u64, "Seccomp::thread: a filter every thread starts with"),
];

/// Every ABI struct, each after the ones it holds.
pub const STRUCTS: &[Struct] = &[
    Span::DESCRIPTION,
    Header::DESCRIPTION,
    SelfTest::DESCRIPTION,
    Status::DESCRIPTION,
    MmMap::DESCRIPTION,
    Restore::DESCRIPTION,
    Vma::DESCRIPTION,
    PageRead::DESCRIPTION,
    Iovec::DESCRIPTION,
    Move::DESCRIPTION,
    SigAction::DESCRIPTION,
    Thread::DESCRIPTION,
    Rlimit::DESCRIPTION,
    ITimer::DESCRIPTION,
    QueuedSignal::DESCRIPTION,
    Patch::DESCRIPTION,
    Creds::DESCRIPTION,
    PosixTimer::DESCRIPTION,
    Seccomp::DESCRIPTION,
];

// The layout is part of the ABI: these hold on every arch the crate builds for.
const _: () = {
    assert!(size_of::<Span>() == 8);
    assert!(size_of::<Header>() == 56);
    assert!(offset_of!(Header, log_fd) == 24);
    assert!(offset_of!(Header, flags) == 28);
    assert!(offset_of!(Header, selftest) == 32);
    assert!(offset_of!(Header, restore) == 40);
    assert!(offset_of!(Header, mapped_size) == 48);
    assert!(offset_of!(Header, status_fd) == 52);
    assert!(size_of::<Status>() == 8);
    assert!(size_of::<SelfTest>() == 16);
    assert!(offset_of!(SelfTest, message) == 8);
    assert!(core::mem::align_of::<Header>() == 4);
};

/// Types the blob may view directly inside the argument block.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or primitive), have no padding, and be
/// valid for every bit pattern.
pub unsafe trait Plain: Copy {}

// SAFETY: primitives are valid for every bit pattern.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: two u32s, repr(C), no padding (size asserted above).
unsafe impl Plain for Span {}
// SAFETY: u32s and a Span, repr(C), no padding (size asserted above).
unsafe impl Plain for SelfTest {}
// SAFETY: u32s, i32s and Spans, repr(C), no padding (size asserted above).
unsafe impl Plain for Header {}
// SAFETY: two u32s, repr(C), no padding (size asserted above).
unsafe impl Plain for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Plain` promises no padding: every struct's fields must tile it
    /// exactly, in order, with none missing from the description.
    #[test]
    fn described_structs_have_no_padding_and_list_every_field() {
        for s in STRUCTS {
            let mut at = 0;
            for f in s.fields {
                assert_eq!(f.offset, at, "{}.{} is not where the previous field ended", s.name, f.name);
                assert!(f.offset.is_multiple_of(f.align), "{}.{} is misaligned", s.name, f.name);
                assert!(!f.doc.trim().is_empty(), "{}.{} has no doc", s.name, f.name);
                at += f.size;
            }
            assert_eq!(at, s.size, "{}: fields cover {at} of {} bytes", s.name, s.size);
        }
    }

    /// The exports emit each struct once, after the structs it holds, and
    /// every span names an element type that is a primitive or listed.
    #[test]
    fn structs_come_after_what_they_hold_and_spans_name_known_types() {
        let primitive = ["u8", "u32", "i32", "u64"];
        for (i, s) in STRUCTS.iter().enumerate() {
            assert!(STRUCTS[i + 1..].iter().all(|o| o.name != s.name), "{} listed twice", s.name);
            for f in s.fields {
                let inner = f.ty.trim_start_matches('[').split(';').next().unwrap();
                if !primitive.contains(&inner) {
                    assert!(STRUCTS[..i].iter().any(|o| o.name == inner), "{}.{}: {inner} not before", s.name, f.name);
                }
                assert_eq!(f.ty == "Span", f.elem.is_some(), "{}.{}: a span names its elements", s.name, f.name);
                if let Some(e) = f.elem {
                    assert!(
                        primitive.contains(&e) || STRUCTS.iter().any(|o| o.name == e),
                        "{}.{}: {e}",
                        s.name,
                        f.name
                    );
                }
            }
        }
    }

    #[test]
    fn exit_codes_are_distinct_and_above_selftest_results() {
        for (i, a) in ExitCode::ALL.iter().enumerate() {
            assert!(*a as u8 >= 200);
            assert_eq!(ExitCode::from_code(*a as i32), Some(*a));
            assert!(ExitCode::ALL[i + 1..].iter().all(|b| *b as u8 != *a as u8));
        }
        assert!((0..=u32::MAX).step_by(65537).all(|i| selftest_exit_code(i) < 128));
    }
}
