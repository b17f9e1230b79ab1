//! The contract between revenant's host and its restorer blob.
//!
//! The host lays out one argument block: a [`Header`] at offset 0, then the
//! arrays the header's [`Span`]s point at, all in one allocation of
//! `total_size` bytes. The blob receives a pointer to it as its only
//! argument. Every field has a fixed width and every address is a `u64`, so
//! the block has the same layout on every arch; the asserts at the bottom
//! hold that for each target this crate is built for.
//!
//! Versioning: [`VERSION`] changes whenever a field's meaning or place
//! changes. The blob refuses a block whose magic, version, arch or size it
//! does not expect, and exits with the matching [`ExitCode`].

#![no_std]

use core::mem::{offset_of, size_of};

mod restore;

pub use restore::{
    Creds, ITimer, Iovec, MmMap, Move, PageRead, Patch, PosixTimer, QueuedSignal, RESTORE_DUMPABLE, RESTORE_NO_MM_MAP,
    RESTORE_NOT_DUMPABLE, RESTORE_SET_GROUPS, RESTORE_TRAP, Restore, Rlimit, SECCOMP_ALL_THREADS, SECCOMP_STRICT,
    Seccomp, SigAction, THREAD_STACK, Thread, VMA_FILL, VMA_PREMAPPED, VMA_REPROTECT, VMA_SHM, VMA_SKIP, Vma,
};

/// "RVNT", little-endian: the first word of every argument block.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RVNT");
/// The argument block layout described by this crate.
pub const VERSION: u32 = 3;
/// The exported symbol the loader jumps to, as `extern "C" fn(*const Header) -> !`.
pub const ENTRY_SYMBOL: &str = "blob_entry";

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

/// An array inside the argument block: `count` elements starting `offset`
/// bytes from the block's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub offset: u32,
    pub count: u32,
}

/// The start of every argument block.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: u32,
    /// [`Arch`] as a number.
    pub arch: u32,
    /// Bytes in the whole block, header included.
    pub total_size: u32,
    /// [`Command`] as a number.
    pub command: u32,
    /// [`LogLevel`] as a number; 0 silences the log.
    pub log_level: u32,
    /// Where log lines go; -1 for nowhere.
    pub log_fd: i32,
    /// Reserved for a later version to negotiate: must be zero (the blob
    /// ends with [`ExitCode::BadLayout`] otherwise).
    pub flags: u32,
    /// One [`SelfTest`] for [`Command::SelfTest`].
    pub selftest: Span,
    /// One [`Restore`] for [`Command::Restore`].
    pub restore: Span,
}

/// Arguments of [`Command::SelfTest`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SelfTest {
    /// Fed through the blob's function-pointer table; the blob exits with
    /// [`selftest_exit_code`] of it.
    pub input: u32,
    /// Reserved, zero.
    pub pad: u32,
    /// A message (bytes in the block) the blob logs back verbatim.
    pub message: Span,
}

/// The exit code a correct blob gives for a self-test of `input`: the input
/// goes through add 3, multiply by 5, xor 0x55, and is reduced below 128 so
/// it can never be mistaken for an [`ExitCode`].
pub const fn selftest_exit_code(input: u32) -> u8 {
    ((((input.wrapping_add(3)).wrapping_mul(5)) ^ 0x55) % 128) as u8
}

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
    /// A size or span points outside the block, or is misaligned.
    BadLayout = 203,
    /// The command number is unknown.
    UnknownCommand = 204,
    /// The blob hit a bug (a Rust panic).
    Panic = 205,
    /// A self-test check failed; the log says which.
    SelfTestFailed = 206,
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
}

impl ExitCode {
    pub const ALL: [ExitCode; 21] = [
        ExitCode::BadMagic,
        ExitCode::BadVersion,
        ExitCode::BadArch,
        ExitCode::BadLayout,
        ExitCode::UnknownCommand,
        ExitCode::Panic,
        ExitCode::SelfTestFailed,
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
            ExitCode::BadLayout => "argument block has a size or array outside its bounds",
            ExitCode::UnknownCommand => "unknown command in the argument block",
            ExitCode::Panic => "the blob panicked (a bug in revenant)",
            ExitCode::SelfTestFailed => "a blob self-test check failed",
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
        }
    }
}

/// A field of an ABI struct, for the machine-readable description that
/// `revenant blob export` writes.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    pub ty: &'static str,
}

macro_rules! fields {
    ($t:ty { $($f:ident : $ty:literal),* $(,)? }) => {
        &[$(Field {
            name: stringify!($f),
            offset: offset_of!($t, $f),
            size: { const fn sz<T>(_: fn(&$t) -> &T) -> usize { size_of::<T>() } sz(|s: &$t| &s.$f) },
            ty: $ty,
        }),*]
    };
}

/// Every constant a loader needs, for `revenant_blob.h` and `blob.json`:
/// name (as the header spells it), value, meaning.
pub const CONSTANTS: &[(&str, u64, &str)] = &[
    ("MAGIC", MAGIC as u64, "Header::magic: \"RVNT\" read as a little-endian u32"),
    ("VERSION", VERSION as u64, "Header::version: the blob accepts exactly this version"),
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
    ("VMA_SKIP", VMA_SKIP as u64, "Vma::how: do not map (vDSO, vsyscall)"),
    ("VMA_FILL", VMA_FILL as u64, "Vma::how: pages are read into it (mapped writable first)"),
    ("VMA_SHM", VMA_SHM as u64, "Vma::how: attach SysV segment `fd` at `start`"),
    ("VMA_REPROTECT", VMA_REPROTECT as u64, "Vma::how: only mprotect the range to `prot`"),
    ("VMA_PREMAPPED", VMA_PREMAPPED as u64, "Vma::how: mremap from `from` in the premap region"),
    ("THREAD_STACK", THREAD_STACK, "bytes of bootstrap stack each extra thread needs"),
    ("SECCOMP_STRICT", SECCOMP_STRICT as u64, "Seccomp::flags: strict mode rather than a filter"),
    ("SECCOMP_ALL_THREADS", SECCOMP_ALL_THREADS as u64, "Seccomp::thread: a filter every thread starts with"),
];

/// Every ABI struct: name, size, fields.
pub const STRUCTS: &[(&str, usize, &[Field])] = &[
    (
        "Header",
        size_of::<Header>(),
        fields!(Header {
            magic: "u32",
            version: "u32",
            arch: "u32",
            total_size: "u32",
            command: "u32",
            log_level: "u32",
            log_fd: "i32",
            flags: "u32",
            selftest: "Span<SelfTest>",
            restore: "Span<Restore>",
        }),
    ),
    ("Span", size_of::<Span>(), fields!(Span { offset: "u32", count: "u32" })),
    ("SelfTest", size_of::<SelfTest>(), fields!(SelfTest { input: "u32", pad: "u32", message: "Span<u8>" })),
    (
        "Restore",
        size_of::<Restore>(),
        fields!(Restore {
            bootstrap_start: "u64",
            bootstrap_len: "u64",
            task_size: "u64",
            pages_fd: "i32",
            exe_fd: "i32",
            flags: "u32",
            fill_helper_tid: "u32",
            vmas: "Span<Vma>",
            page_reads: "Span<PageRead>",
            iovs: "Span<Iovec>",
            park: "Span<Move>",
            unpark: "Span<Move>",
            sigactions: "Span<SigAction>",
            close_fds: "Span<i32>",
            auxv: "Span<u8>",
            threads: "Span<Thread>",
            rlimits: "Span<Rlimit>",
            itimers: "Span<ITimer>",
            signals: "Span<QueuedSignal>",
            patches: "Span<Patch>",
            creds: "Span<Creds>",
            groups: "Span<u32>",
            posix_timers: "Span<PosixTimer>",
            seccomp: "Span<Seccomp>",
            seccomp_progs: "Span<u8>",
            compare_reads: "Span<PageRead>",
            zero: "Span<Iovec>",
            premap_start: "u64",
            premap_len: "u64",
            mm: "MmMap",
            comm: "[u8; 16]",
        }),
    ),
    (
        "Vma",
        size_of::<Vma>(),
        fields!(Vma {
            start: "u64",
            end: "u64",
            pgoff: "u64",
            madv: "u64",
            prot: "u32",
            flags: "u32",
            fd: "i32",
            how: "u32",
            attach_len: "u64",
            from: "u64",
        }),
    ),
    (
        "Creds",
        size_of::<Creds>(),
        fields!(Creds {
            uid: "u32",
            euid: "u32",
            suid: "u32",
            fsuid: "u32",
            gid: "u32",
            egid: "u32",
            sgid: "u32",
            fsgid: "u32",
            cap_inh: "u64",
            cap_prm: "u64",
            cap_eff: "u64",
            cap_bnd: "u64",
            cap_amb: "u64",
            secbits: "u32",
            no_new_privs: "u32",
        }),
    ),
    (
        "PosixTimer",
        size_of::<PosixTimer>(),
        fields!(PosixTimer {
            id: "i32",
            clock: "i32",
            signo: "u32",
            notify: "u32",
            notify_tid: "u32",
            pad: "u32",
            sival: "u64",
            interval_sec: "u64",
            interval_nsec: "u64",
            value_sec: "u64",
            value_nsec: "u64",
        }),
    ),
    (
        "Seccomp",
        size_of::<Seccomp>(),
        fields!(Seccomp { thread: "u32", flags: "u32", prog_offset: "u32", prog_len: "u32" }),
    ),
    ("Patch", size_of::<Patch>(), fields!(Patch { at: "u64", len: "u32", pad: "u32", bytes: "[u8; 16]" })),
    ("Rlimit", size_of::<Rlimit>(), fields!(Rlimit { resource: "u32", pad: "u32", cur: "u64", max: "u64" })),
    (
        "ITimer",
        size_of::<ITimer>(),
        fields!(ITimer {
            which: "u32",
            pad: "u32",
            interval_sec: "u64",
            interval_usec: "u64",
            value_sec: "u64",
            value_usec: "u64",
        }),
    ),
    ("QueuedSignal", size_of::<QueuedSignal>(), fields!(QueuedSignal { tid: "u32", signo: "u32", info: "[u8; 128]" })),
    ("PageRead", size_of::<PageRead>(), fields!(PageRead { offset: "u64", first_iov: "u32", iov_count: "u32" })),
    ("Iovec", size_of::<Iovec>(), fields!(Iovec { base: "u64", len: "u64" })),
    ("Move", size_of::<Move>(), fields!(Move { from: "u64", to: "u64", len: "u64" })),
    (
        "SigAction",
        size_of::<SigAction>(),
        fields!(SigAction { signo: "u32", pad: "u32", handler: "u64", flags: "u64", restorer: "u64", mask: "u64" }),
    ),
    (
        "MmMap",
        size_of::<MmMap>(),
        fields!(MmMap {
            start_code: "u64",
            end_code: "u64",
            start_data: "u64",
            end_data: "u64",
            start_brk: "u64",
            brk: "u64",
            start_stack: "u64",
            arg_start: "u64",
            arg_end: "u64",
            env_start: "u64",
            env_end: "u64",
        }),
    ),
    (
        "Thread",
        size_of::<Thread>(),
        fields!(Thread {
            tid: "u32",
            rseq_len: "u32",
            sigframe: "u64",
            tls: "u64",
            gs_base: "u64",
            clear_tid_addr: "u64",
            robust_list: "u64",
            robust_list_len: "u64",
            rseq_ptr: "u64",
            rseq_sig: "u32",
            pdeath_sig: "u32",
            stack: "u64",
        }),
    ),
];

// The layout is part of the ABI: these hold on every arch the crate builds for.
const _: () = {
    assert!(size_of::<Span>() == 8);
    assert!(size_of::<Header>() == 48);
    assert!(offset_of!(Header, log_fd) == 24);
    assert!(offset_of!(Header, selftest) == 32);
    assert!(offset_of!(Header, restore) == 40);
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
// SAFETY: u32s, an i32 and a Span, repr(C), no padding (size asserted above).
unsafe impl Plain for Header {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Plain` promises no padding: every struct's fields must tile it
    /// exactly, in order, with none missing from the description.
    #[test]
    fn described_structs_have_no_padding_and_list_every_field() {
        for (name, size, fields) in STRUCTS {
            let mut at = 0;
            for f in *fields {
                assert_eq!(f.offset, at, "{name}.{} is not where the previous field ended", f.name);
                at += f.size;
            }
            assert_eq!(at, *size, "{name}: fields cover {at} of {size} bytes");
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
