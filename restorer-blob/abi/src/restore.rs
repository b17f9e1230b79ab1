//! Arguments of [`crate::Command::Restore`]: everything the blob needs to
//! turn the process it runs in into the dumped one, flattened into plain
//! arrays. The host has already validated all of it; the blob checks only
//! that arrays lie inside the block.

#[cfg(doc)]
use crate::ExitCode;
use crate::{Plain, Span};

abi_struct! {
    /// The restore of one process (its threads are in [`Restore::threads`]).
    pub struct Restore(Default) {
        /// Start of the bootstrap area (page-aligned): the blob's code and
        /// data, its stack, the argument block, the threads' stacks and
        /// signal frames; the only memory the blob keeps while it unmaps
        /// everything else. The blob checks that its code, the block and
        /// its stack lie inside ([`ExitCode::NotMapped`],
        /// [`ExitCode::BadStack`]).
        pub bootstrap_start: u64,
        /// Length of the bootstrap area in bytes (a multiple of the page
        /// size).
        pub bootstrap_len: u64,
        /// Top of the user address space (x86_64: 0x7ffffffff000 with
        /// 4-level paging; 32-bit ARM: 0xbf000000 on a 3G/1G kernel):
        /// everything in `[0, task_size)` but the bootstrap area and the
        /// premap region is unmapped. Above the kernel's own limit the
        /// unmap fails ([`ExitCode::Unmap`]).
        pub task_size: u64,
        /// A connected `SOCK_SEQPACKET` socket to the page server when
        /// any area is [`VMA_LAZY`], else -1. Once every area is mapped,
        /// the blob creates a userfaultfd (non-blocking, kernel faults
        /// included, with the fork, remap, remove and unmap events),
        /// registers the lazy areas for missing pages, and sends it here
        /// in one message: the process's PID as a little-endian `u32`,
        /// the descriptor in `SCM_RIGHTS`. From then on the server must
        /// answer every fault in those areas; the blob itself touches
        /// none of their pages. List the socket in `close_fds` too.
        pub lazy_fd: i32,
        /// The executable, for `PR_SET_MM_MAP`; -1 to leave it unchanged.
        pub exe_fd: i32,
        /// [`RESTORE_TRAP`] and the other `RESTORE_*` bits; others must be
        /// zero.
        pub flags: u32,
        /// A TID no task has and none of the restored tree needs, for a
        /// helper thread that copies half of the pages (it runs on the
        /// first thread's unused stack zone and is gone before the other
        /// threads exist); 0 to fill alone.
        pub fill_helper_tid: u32,
        /// The dumped memory areas, sorted by address, not overlapping
        /// the bootstrap area.
        pub vmas: Span => Vma,
        /// Reads from the pages images, in the order of each image.
        pub page_reads: Span => PageRead,
        /// The destination ranges the page reads index into.
        pub iovs: Span => Iovec,
        /// Moves done before anything is unmapped (parking the runtime
        /// vDSO inside the bootstrap area).
        pub park: Span => Move,
        /// Moves done after every area is mapped (the parked vDSO to the
        /// dumped address).
        pub unpark: Span => Move,
        /// Signal actions to install.
        pub sigactions: Span => SigAction,
        /// Descriptors the blob closes right before the sigreturn (its
        /// service fds: log, pages, status).
        pub close_fds: Span => i32,
        /// The saved auxv for `PR_SET_MM_MAP`, as bytes: pairs of the
        /// arch's native words (`unsigned long`).
        pub auxv: Span => u8,
        /// The threads; the first is the one running the blob. At least one.
        pub threads: Span => Thread,
        /// Resource limits to set.
        pub rlimits: Span => Rlimit,
        /// Interval timers to arm, last thing before the sigreturn.
        pub itimers: Span => ITimer,
        /// Pending signals to queue again; they stay pending behind the
        /// blob's full signal mask and are delivered after the sigreturn.
        pub signals: Span => QueuedSignal,
        /// Bytes written into filled memory before protections are final
        /// (vDSO proxy trampolines).
        pub patches: Span => Patch,
        /// Credentials, one per thread in thread order, or none to keep
        /// the restoring process's.
        pub creds: Span => Creds,
        /// Supplementary groups, shared by every thread's credentials
        /// (with [`RESTORE_SET_GROUPS`]).
        pub groups: Span => u32,
        /// POSIX timers to create with their ids and arm.
        pub posix_timers: Span => PosixTimer,
        /// Seccomp steps, each thread's in the order they are taken.
        pub seccomp: Span => Seccomp,
        /// The BPF programs (`struct sock_filter` arrays) the seccomp steps
        /// point into.
        pub seccomp_progs: Span => u8,
        /// Page reads (into `iovs`) for areas inherited from the parent
        /// ([`VMA_PREMAPPED`] areas the parent filled): each page is
        /// written only where it differs from what is there, so pages the
        /// parent and child still share stay shared copy-on-write.
        pub compare_reads: Span => PageRead,
        /// Ranges of inherited areas that hold no pages of this process:
        /// dropped (`MADV_DONTNEED`), so they read as zeros again.
        pub zero: Span => Iovec,
        /// Start of the premap region (0 for none): areas filled before
        /// the tree's processes were forked, so that parent and children
        /// share their pages as before. Kept while the rest is unmapped;
        /// what is left of it once its areas moved out is unmapped.
        pub premap_start: u64,
        /// Length of the premap region in bytes; 0 for none.
        pub premap_len: u64,
        /// The memory layout for `PR_SET_MM_MAP` (unused with
        /// [`RESTORE_NO_MM_MAP`]).
        pub mm: MmMap,
        /// The process name (`PR_SET_NAME`), NUL-padded.
        pub comm: [u8; 16],
        /// Guard regions (`MADV_GUARD_INSTALL`, Linux 6.13+), installed
        /// once every area has its pages and final protection; each lies
        /// inside mapped areas ([`ExitCode::Protect`] if the kernel
        /// refuses).
        pub guards: Span => Iovec,
    }

    /// One dumped memory area.
    pub struct Vma(Default) {
        /// First address (page-aligned).
        pub start: u64,
        /// End address, exclusive (page-aligned).
        pub end: u64,
        /// File offset in bytes (file mappings); 0 otherwise.
        pub pgoff: u64,
        /// `MADV_*` numbers to apply, as a bit set (`1 << advice`).
        pub madv: u64,
        /// Final `PROT_*`.
        pub prot: u32,
        /// `MAP_*` flags for the `mmap` (without `MAP_FIXED`, which the
        /// blob adds); `shmat` flags for [`VMA_SHM`].
        pub flags: u32,
        /// The open file to map, -1 for anonymous memory; the shmid for
        /// [`VMA_SHM`] and [`VMA_REPROTECT`].
        pub fd: i32,
        /// 0 (map it), or [`VMA_SKIP`] and the other `VMA_*` bits.
        pub how: u32,
        /// [`VMA_SHM`]: the bytes `shmat` maps (the segment's size in
        /// pages), which may cover later pieces of the attachment too.
        pub attach_len: u64,
        /// [`VMA_PREMAPPED`]: where the area is before it moves to `start`.
        pub from: u64,
    }

    /// One `preadv` from a pages image. An iterative dump's pages lie in
    /// several images (its own and its parents'), each an fd of its own.
    /// Private anonymous memory is copied with `UFFDIO_COPY` from a
    /// read-only map of each image where the kernel allows (for up to
    /// [`PAGES_FILES_MAPPED`] images; with more, everything is read with
    /// `preadv`).
    pub struct PageRead(Default) {
        /// Where in the pages image the first iovec's bytes start.
        pub offset: u64,
        /// Index of the first [`Iovec`] in [`Restore::iovs`] to fill.
        pub first_iov: u32,
        /// How many consecutive iovecs to fill.
        pub iov_count: u32,
        /// The pages image it reads from, an open fd.
        pub fd: i32,
        /// Reserved, zero.
        pub reserved: u32,
    }

    /// A destination range in the restored address space.
    pub struct Iovec(Default) {
        /// First address (page-aligned), inside an area being filled.
        pub base: u64,
        /// Bytes (a multiple of the page size).
        pub len: u64,
    }

    /// An `mremap` of `len` bytes from `from` to `to`.
    pub struct Move(Default) {
        /// Where the mapping is now.
        pub from: u64,
        /// Where it goes (`MREMAP_FIXED`).
        pub to: u64,
        /// Bytes moved.
        pub len: u64,
    }

    /// One signal action, in the kernel's `rt_sigaction` terms.
    pub struct SigAction(Default) {
        /// The signal number.
        pub signo: u32,
        /// Reserved: must be zero.
        pub pad: u32,
        /// `sa_handler` (or `SIG_DFL` 0, `SIG_IGN` 1).
        pub handler: u64,
        /// `sa_flags` (`SA_*`).
        pub flags: u64,
        /// `sa_restorer` (with `SA_RESTORER`).
        pub restorer: u64,
        /// `sa_mask`: bit `n - 1` blocks signal `n`.
        pub mask: u64,
    }

    /// The fields of the kernel's `struct prctl_mm_map`, widened to u64.
    pub struct MmMap(Default) {
        /// Start of the code segment.
        pub start_code: u64,
        /// End of the code segment.
        pub end_code: u64,
        /// Start of the data segment.
        pub start_data: u64,
        /// End of the data segment.
        pub end_data: u64,
        /// Start of the heap.
        pub start_brk: u64,
        /// Current program break.
        pub brk: u64,
        /// Start of the main stack.
        pub start_stack: u64,
        /// Start of the argument strings.
        pub arg_start: u64,
        /// End of the argument strings.
        pub arg_end: u64,
        /// Start of the environment strings.
        pub env_start: u64,
        /// End of the environment strings.
        pub env_end: u64,
    }

    /// Per-thread state the blob sets with syscalls; registers, FPU state,
    /// signal mask and alternate stack travel in the signal frame instead.
    pub struct Thread(Default) {
        /// The thread's TID: the first thread's is the restoring task's
        /// own; the others are created with theirs (`clone3` `set_tid`).
        pub tid: u32,
        /// Length of the rseq area (with `rseq_ptr`).
        pub rseq_len: u32,
        /// Where the thread's `rt_sigreturn` frame is: the stack pointer
        /// value the arch's `rt_sigreturn` expects (`sigframe` in
        /// `blob.json` describes the frame), inside the bootstrap area.
        pub sigframe: u64,
        /// x86_64 `fs` base (TLS); ARM TLS register.
        pub tls: u64,
        /// x86_64 `gs` base; 0 elsewhere.
        pub gs_base: u64,
        /// `set_tid_address` value (0 for none).
        pub clear_tid_addr: u64,
        /// `set_robust_list` head; 0 for none.
        pub robust_list: u64,
        /// `set_robust_list` length.
        pub robust_list_len: u64,
        /// The thread's rseq area; 0 when it had no rseq registration.
        pub rseq_ptr: u64,
        /// The rseq signature.
        pub rseq_sig: u32,
        /// `PR_SET_PDEATHSIG` signal, 0 for none.
        pub pdeath_sig: u32,
        /// Top of this thread's stack in the bootstrap area (16-byte
        /// aligned), [`THREAD_STACK`] bytes; the blob creates every thread
        /// but the first on it. The first thread runs on the blob's own
        /// stack; the fill helper takes its zone.
        pub stack: u64,
    }

    /// One thread's credentials, set last (after everything privileged).
    pub struct Creds(Default) {
        /// Real user ID.
        pub uid: u32,
        /// Effective user ID.
        pub euid: u32,
        /// Saved user ID.
        pub suid: u32,
        /// File system user ID.
        pub fsuid: u32,
        /// Real group ID.
        pub gid: u32,
        /// Effective group ID.
        pub egid: u32,
        /// Saved group ID.
        pub sgid: u32,
        /// File system group ID.
        pub fsgid: u32,
        /// Inheritable capabilities (bit n: capability n).
        pub cap_inh: u64,
        /// Permitted capabilities.
        pub cap_prm: u64,
        /// Effective capabilities.
        pub cap_eff: u64,
        /// Bounding set: capabilities not in it are dropped from it.
        pub cap_bnd: u64,
        /// Ambient capabilities.
        pub cap_amb: u64,
        /// `SECBIT_*` securebits.
        pub secbits: u32,
        /// 1 to set `PR_SET_NO_NEW_PRIVS`.
        pub no_new_privs: u32,
    }

    /// Bytes to write at an address in a VMA the blob filled.
    pub struct Patch(Default) {
        /// Where the bytes go, inside a [`VMA_FILL`] area.
        pub at: u64,
        /// How many of `bytes` (at most 16).
        pub len: u32,
        /// Reserved: must be zero.
        pub pad: u32,
        /// The bytes.
        pub bytes: [u8; 16],
    }

    /// A POSIX timer (`timer_create` with its dumped id, then
    /// `timer_settime`).
    pub struct PosixTimer(Default) {
        /// The timer id it must come back with.
        pub id: i32,
        /// `CLOCK_*`.
        pub clock: i32,
        /// `sigev_signo`.
        pub signo: u32,
        /// `SIGEV_*`.
        pub notify: u32,
        /// The thread for `SIGEV_THREAD_ID`.
        pub notify_tid: u32,
        /// [`TIMER_SIGNAL_PENDING`] or 0; other bits must be zero.
        pub flags: u32,
        /// `sigev_value`.
        pub sival: u64,
        /// Interval, seconds.
        pub interval_sec: u64,
        /// Interval, nanoseconds.
        pub interval_nsec: u64,
        /// Time to the next expiry, seconds.
        pub value_sec: u64,
        /// Time to the next expiry, nanoseconds.
        pub value_nsec: u64,
    }

    /// One seccomp step of one thread, taken right before its credentials
    /// are set (or, for [`SECCOMP_ALL_THREADS`], before the other threads
    /// exist): a filter, or strict mode. The host holds the task with
    /// `PTRACE_O_SUSPEND_SECCOMP` until it lets the program run, so the
    /// blob's own calls after this are not filtered.
    pub struct Seccomp(Default) {
        /// Index into [`Restore::threads`], or [`SECCOMP_ALL_THREADS`].
        pub thread: u32,
        /// `SECCOMP_FILTER_FLAG_*` for the filter, or [`SECCOMP_STRICT`].
        pub flags: u32,
        /// Start of the `struct sock_filter` array in
        /// [`Restore::seccomp_progs`], in bytes.
        pub prog_offset: u32,
        /// Its length in bytes (a multiple of 8; 0 for strict mode).
        pub prog_len: u32,
    }

    /// One resource limit (`prlimit64`).
    pub struct Rlimit(Default) {
        /// `RLIMIT_*`.
        pub resource: u32,
        /// Reserved: must be zero.
        pub pad: u32,
        /// Soft limit (`u64::MAX`: unlimited).
        pub cur: u64,
        /// Hard limit.
        pub max: u64,
    }

    /// One interval timer (`setitimer`).
    pub struct ITimer(Default) {
        /// `ITIMER_REAL`, `ITIMER_VIRTUAL` or `ITIMER_PROF`.
        pub which: u32,
        /// Reserved: must be zero.
        pub pad: u32,
        /// Interval, seconds.
        pub interval_sec: u64,
        /// Interval, microseconds.
        pub interval_usec: u64,
        /// Time to the next expiry, seconds.
        pub value_sec: u64,
        /// Time to the next expiry, microseconds.
        pub value_usec: u64,
    }

    /// A pending signal.
    pub struct QueuedSignal() {
        /// The thread it was pending on, or 0 for the whole process.
        pub tid: u32,
        /// The signal number.
        pub signo: u32,
        /// The kernel's 128-byte `siginfo`.
        pub info: [u8; 128],
    }
}

impl Default for QueuedSignal {
    fn default() -> Self {
        QueuedSignal { tid: 0, signo: 0, info: [0; 128] }
    }
}

/// Stop with a breakpoint trap right before `rt_sigreturn`, so the tracing
/// host can catch the task there and unmap the bootstrap area after it.
pub const RESTORE_TRAP: u32 = 1;

/// Skip `PR_SET_MM_MAP`: the kernel (or emulator) cannot take it, as the
/// host's probe found. The memory layout fields stay as they are.
pub const RESTORE_NO_MM_MAP: u32 = 2;

/// Set the supplementary groups from [`Restore::groups`] (they differ from
/// the restoring process's).
pub const RESTORE_SET_GROUPS: u32 = 4;

/// Make the process not dumpable (`PR_SET_DUMPABLE` 0), or dumpable
/// ([`RESTORE_DUMPABLE`]), in each thread once its credentials are set: a
/// credential change resets the flag.
pub const RESTORE_NOT_DUMPABLE: u32 = 8;
pub const RESTORE_DUMPABLE: u32 = 16;
/// Every `RESTORE_*` bit this version defines; [`Restore::flags`] may hold
/// no other ([`ExitCode::BadLayout`]).
pub const RESTORE_FLAGS: u32 =
    RESTORE_TRAP | RESTORE_NO_MM_MAP | RESTORE_SET_GROUPS | RESTORE_NOT_DUMPABLE | RESTORE_DUMPABLE;

/// Do not map this area: something else provides it (the vDSO moves in
/// through [`Restore::unpark`]; `[vsyscall]` is the kernel's).
pub const VMA_SKIP: u32 = 1;
/// Pages will be read into it: map it writable first and set the final
/// protection after the reads.
pub const VMA_FILL: u32 = 2;
/// A SysV shared memory attachment: attach segment `fd` (the shmid) at
/// `start`, `attach_len` bytes, with `flags` as `shmat`'s flags
/// (`SHM_RDONLY`, `SHM_EXEC`); then `mprotect` this piece to `prot`.
pub const VMA_SHM: u32 = 4;
/// Do not map: after the mapping and filling, `mprotect` the range to
/// `prot` (a later piece of an attachment whose protection was changed).
pub const VMA_REPROTECT: u32 = 8;
/// Already mapped (and filled, read+write) at [`Vma::from`] inside the
/// premap region: `mremap` it to `start` rather than map it, then set
/// `prot`. Its pages come only from [`Restore::compare_reads`].
pub const VMA_PREMAPPED: u32 = 16;
/// Private anonymous memory whose pages come later, from the page server
/// behind [`Restore::lazy_fd`]: map it with `prot` as it is, never read
/// pages into it (no [`VMA_FILL`]), register it for missing pages.
pub const VMA_LAZY: u32 = 32;

/// [`PosixTimer::flags`]: its signal was pending at dump. Instead of a
/// copy in [`Restore::signals`], the timer itself fires at once, so the
/// pending signal is its own, as the kernel keeps one per timer and counts
/// overruns. It is armed at the absolute time one interval before its next
/// expiry (`value`), which keeps its period where it was.
pub const TIMER_SIGNAL_PENDING: u32 = 1;

/// Pages images a restore maps to copy from: up to this many distinct
/// fds among [`Restore::page_reads`].
pub const PAGES_FILES_MAPPED: u32 = 16;

/// Bytes of stack below [`Thread::stack`].
pub const THREAD_STACK: u64 = 32 << 10;

/// [`Seccomp::flags`] for strict mode, which is entered last.
pub const SECCOMP_STRICT: u32 = 1 << 31;

/// [`Seccomp::thread`] for the filters every thread inherited: the first
/// thread installs them before it creates the others, which then share
/// them (as `SECCOMP_FILTER_FLAG_TSYNC` needs).
pub const SECCOMP_ALL_THREADS: u32 = u32::MAX;

// SAFETY: as below.
unsafe impl Plain for Creds {}
// SAFETY: as below.
unsafe impl Plain for Patch {}
// SAFETY: as below.
unsafe impl Plain for PosixTimer {}
// SAFETY: as below.
unsafe impl Plain for Seccomp {}
// SAFETY: as below.
unsafe impl Plain for Rlimit {}
// SAFETY: as below.
unsafe impl Plain for ITimer {}
// SAFETY: as below.
unsafe impl Plain for QueuedSignal {}

// SAFETY: every type here is repr(C), built only from u32/i32/u64, byte
// arrays and Spans, laid out without padding (asserted below).
unsafe impl Plain for Restore {}
// SAFETY: as above.
unsafe impl Plain for Vma {}
// SAFETY: as above.
unsafe impl Plain for PageRead {}
// SAFETY: as above.
unsafe impl Plain for Iovec {}
// SAFETY: as above.
unsafe impl Plain for Move {}
// SAFETY: as above.
unsafe impl Plain for SigAction {}
// SAFETY: as above.
unsafe impl Plain for MmMap {}
// SAFETY: as above.
unsafe impl Plain for Thread {}
// SAFETY: a primitive.
unsafe impl Plain for i32 {}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Restore>() == 328);
    assert!(offset_of!(Restore, guards) == 320);
    assert!(offset_of!(Restore, lazy_fd) == 24);
    assert!(size_of::<Seccomp>() == 16);
    assert!(size_of::<PosixTimer>() == 64);
    assert!(size_of::<Creds>() == 80);
    assert!(size_of::<Patch>() == 32);
    assert!(size_of::<Rlimit>() == 24);
    assert!(size_of::<ITimer>() == 40);
    assert!(size_of::<QueuedSignal>() == 136);
    assert!(offset_of!(Restore, vmas) == 40);
    assert!(offset_of!(Restore, mm) == 216);
    assert!(offset_of!(Restore, comm) == 304);
    assert!(size_of::<Vma>() == 64);
    assert!(size_of::<PageRead>() == 24);
    assert!(size_of::<Iovec>() == 16);
    assert!(size_of::<Move>() == 24);
    assert!(size_of::<SigAction>() == 40);
    assert!(size_of::<MmMap>() == 88);
    assert!(size_of::<Thread>() == 80);
    assert!(offset_of!(Thread, rseq_ptr) == 56);
    // Where a u64 follows u32s, and each struct's last field: the places a
    // different alignment or a forgotten pad would show.
    assert!(offset_of!(Restore, exe_fd) == 28);
    assert!(offset_of!(Restore, seccomp_progs) == 176);
    assert!(offset_of!(Vma, prot) == 32);
    assert!(offset_of!(Vma, attach_len) == 48);
    assert!(offset_of!(Vma, from) == 56);
    assert!(offset_of!(Restore, premap_len) == 208);
    assert!(offset_of!(PageRead, iov_count) == 12);
    assert!(offset_of!(PageRead, reserved) == 20);
    assert!(offset_of!(Iovec, len) == 8);
    assert!(offset_of!(Move, len) == 16);
    assert!(offset_of!(SigAction, handler) == 8);
    assert!(offset_of!(SigAction, mask) == 32);
    assert!(offset_of!(MmMap, env_end) == 80);
    assert!(offset_of!(Thread, sigframe) == 8);
    assert!(offset_of!(Thread, rseq_sig) == 64);
    assert!(offset_of!(Thread, stack) == 72);
    assert!(offset_of!(Creds, cap_inh) == 32);
    assert!(offset_of!(Creds, no_new_privs) == 76);
    assert!(offset_of!(Patch, bytes) == 16);
    assert!(offset_of!(PosixTimer, sival) == 24);
    assert!(offset_of!(PosixTimer, value_nsec) == 56);
    assert!(offset_of!(Seccomp, prog_len) == 12);
    assert!(offset_of!(Rlimit, cur) == 8);
    assert!(offset_of!(ITimer, interval_sec) == 8);
    assert!(offset_of!(ITimer, value_usec) == 32);
    assert!(offset_of!(QueuedSignal, info) == 8);
};
