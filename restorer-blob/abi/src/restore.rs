//! Arguments of [`crate::Command::Restore`]: everything the blob needs to
//! turn the process it runs in into the dumped one, flattened into plain
//! arrays. The host has already validated all of it; the blob checks only
//! that arrays lie inside the block.

use crate::{Plain, Span};

/// The restore of one process (its threads are in [`Restore::threads`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Restore {
    /// The bootstrap area (blob, argument block, stacks, frames, vDSO park):
    /// the only memory the blob keeps while it unmaps everything else.
    pub bootstrap_start: u64,
    pub bootstrap_len: u64,
    /// Top of the user address space; everything below it but the
    /// bootstrap area is unmapped.
    pub task_size: u64,
    /// The pages image: mapped read-only and copied into place with
    /// `UFFDIO_COPY` where the kernel allows, else read with `preadv`, at
    /// [`PageRead::offset`]s.
    pub pages_fd: i32,
    /// The executable, for `PR_SET_MM_MAP`; -1 to leave it unchanged.
    pub exe_fd: i32,
    /// [`RESTORE_TRAP`] and friends.
    pub flags: u32,
    /// A TID no task has and none of the restored tree needs, for a helper
    /// thread that copies half of the pages (it runs on the first thread's
    /// unused zone stack and is gone before the other threads exist); 0 to
    /// fill alone.
    pub fill_helper_tid: u32,
    /// [`Vma`]s, sorted by address.
    pub vmas: Span,
    /// [`PageRead`]s, in pages-image order.
    pub page_reads: Span,
    /// [`Iovec`]s that the page reads index into.
    pub iovs: Span,
    /// [`Move`]s done before anything is unmapped (parking the runtime vDSO
    /// inside the bootstrap area).
    pub park: Span,
    /// [`Move`]s done after every VMA is mapped (the parked vDSO to the
    /// dumped address).
    pub unpark: Span,
    /// [`SigAction`]s to install.
    pub sigactions: Span,
    /// `i32` fds the blob closes before the sigreturn (its service fds).
    pub close_fds: Span,
    /// The saved auxv for `PR_SET_MM_MAP`, as bytes: pairs of the arch's
    /// native words (`unsigned long`).
    pub auxv: Span,
    /// [`Thread`]s; the first is the one running the blob.
    pub threads: Span,
    /// [`Rlimit`]s to set.
    pub rlimits: Span,
    /// [`ITimer`]s to arm, last thing before the sigreturn.
    pub itimers: Span,
    /// [`QueuedSignal`]s to queue again; they stay pending behind the
    /// blob's full signal mask and are delivered after the sigreturn.
    pub signals: Span,
    /// [`Patch`]es written into restored memory before protections are
    /// final (vDSO proxy trampolines).
    pub patches: Span,
    /// [`Creds`], one per thread in thread order, or none to keep the
    /// restoring process's.
    pub creds: Span,
    /// `u32` supplementary groups, shared by every thread's [`Creds`].
    pub groups: Span,
    /// [`PosixTimer`]s to create with their ids and arm.
    pub posix_timers: Span,
    /// [`Seccomp`] steps, each thread's in the order they are taken.
    pub seccomp: Span,
    /// `u8`: the BPF programs the [`Seccomp`] steps point into.
    pub seccomp_progs: Span,
    /// [`PageRead`]s (into [`Restore::iovs`]) for areas inherited from the
    /// parent ([`VMA_PREMAPPED`] areas the parent filled): each page is
    /// written only where it differs from what is there, so pages the
    /// parent and child still share stay shared copy-on-write.
    pub compare_reads: Span,
    /// [`Iovec`]s of inherited areas that hold no pages of this process:
    /// dropped (`MADV_DONTNEED`), so they read as zeros again.
    pub zero: Span,
    /// The premap region: areas filled before the tree's processes were
    /// forked, so that parent and children share their pages as before.
    /// Kept while the rest of the address space is unmapped; what is left
    /// of it once the [`VMA_PREMAPPED`] areas moved out is unmapped.
    pub premap_start: u64,
    pub premap_len: u64,
    /// The memory layout for `PR_SET_MM_MAP`.
    pub mm: MmMap,
    /// The process name (`PR_SET_NAME`), NUL-padded.
    pub comm: [u8; 16],
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

/// One dumped memory area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// File offset in bytes (file mappings).
    pub pgoff: u64,
    /// `MADV_*` numbers to apply, as a bit set (`1 << advice`).
    pub madv: u64,
    /// Final `PROT_*`.
    pub prot: u32,
    /// `MAP_*` flags for the `mmap` (without `MAP_FIXED`, which the blob adds).
    pub flags: u32,
    /// The open file to map, or -1 for anonymous memory.
    pub fd: i32,
    /// [`VMA_SKIP`] and friends.
    pub how: u32,
    /// [`VMA_SHM`]: the bytes `shmat` maps (the segment's size in pages),
    /// which may cover later pieces of the attachment too.
    pub attach_len: u64,
    /// [`VMA_PREMAPPED`]: where the area is before it moves to `start`.
    pub from: u64,
}

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

/// One `preadv` from the pages image.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageRead {
    /// Where in the pages image the first iovec's bytes start.
    pub offset: u64,
    /// Index of the first [`Iovec`] in [`Restore::iovs`] to fill.
    pub first_iov: u32,
    /// How many consecutive iovecs to fill.
    pub iov_count: u32,
}

/// A destination range in the restored address space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Iovec {
    pub base: u64,
    pub len: u64,
}

/// An `mremap` of `len` bytes from `from` to `to`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Move {
    pub from: u64,
    pub to: u64,
    pub len: u64,
}

/// One signal action, in the kernel's `rt_sigaction` terms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SigAction {
    pub signo: u32,
    pub pad: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The fields of the kernel's `struct prctl_mm_map`, widened to u64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// Per-thread state the blob sets with syscalls; registers, FPU state,
/// signal mask and alternate stack travel in the signal frame instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Thread {
    pub tid: u32,
    pub rseq_len: u32,
    /// Where the thread's `rt_sigreturn` frame is: the stack pointer value
    /// the arch's `rt_sigreturn` expects.
    pub sigframe: u64,
    /// x86_64 `fs` base (TLS); ARM TLS register.
    pub tls: u64,
    /// x86_64 `gs` base; 0 elsewhere.
    pub gs_base: u64,
    pub clear_tid_addr: u64,
    pub robust_list: u64,
    pub robust_list_len: u64,
    /// 0 when the thread had no rseq registration.
    pub rseq_ptr: u64,
    pub rseq_sig: u32,
    /// `PR_SET_PDEATHSIG` signal, 0 for none.
    pub pdeath_sig: u32,
    /// Top of this thread's stack in the bootstrap area (16-byte aligned);
    /// the blob creates every thread but the first on it. The first
    /// thread runs on the blob's own stack; the fill helper takes its zone.
    pub stack: u64,
}

/// Bytes of stack below [`Thread::stack`].
pub const THREAD_STACK: u64 = 32 << 10;

/// One thread's credentials, set last (after everything privileged).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub secbits: u32,
    /// 1 to set `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: u32,
}

// SAFETY: as below.
unsafe impl Plain for Creds {}

/// Bytes to write at an address in a VMA the blob filled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Patch {
    pub at: u64,
    pub len: u32,
    pub pad: u32,
    pub bytes: [u8; 16],
}

// SAFETY: as below.
unsafe impl Plain for Patch {}

/// A POSIX timer (`timer_create` with its dumped id, then `timer_settime`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    pub signo: u32,
    /// `SIGEV_*`.
    pub notify: u32,
    /// The thread for `SIGEV_THREAD_ID`.
    pub notify_tid: u32,
    pub pad: u32,
    pub sival: u64,
    pub interval_sec: u64,
    pub interval_nsec: u64,
    pub value_sec: u64,
    pub value_nsec: u64,
}

// SAFETY: as below.
unsafe impl Plain for PosixTimer {}

/// One seccomp step of one thread, taken right before its credentials are
/// set (or, for [`SECCOMP_ALL_THREADS`], before the other threads exist): a
/// filter, or strict mode. The host holds the task with
/// `PTRACE_O_SUSPEND_SECCOMP` until it lets the program run, so the blob's
/// own calls after this are not filtered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Seccomp {
    /// Index into [`Restore::threads`].
    pub thread: u32,
    /// `SECCOMP_FILTER_FLAG_*` for the filter, or [`SECCOMP_STRICT`].
    pub flags: u32,
    /// The `struct sock_filter` array: a byte range of
    /// [`Restore::seccomp_progs`] (a multiple of 8 bytes; empty for strict).
    pub prog_offset: u32,
    pub prog_len: u32,
}

// SAFETY: as below.
unsafe impl Plain for Seccomp {}

/// [`Seccomp::flags`] for strict mode, which is entered last.
pub const SECCOMP_STRICT: u32 = 1 << 31;

/// [`Seccomp::thread`] for the filters every thread inherited: the first
/// thread installs them before it creates the others, which then share
/// them (as `SECCOMP_FILTER_FLAG_TSYNC` needs).
pub const SECCOMP_ALL_THREADS: u32 = u32::MAX;

/// One resource limit (`prlimit64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Rlimit {
    pub resource: u32,
    pub pad: u32,
    pub cur: u64,
    pub max: u64,
}

/// One interval timer (`setitimer`): `which` is ITIMER_REAL/VIRTUAL/PROF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ITimer {
    pub which: u32,
    pub pad: u32,
    pub interval_sec: u64,
    pub interval_usec: u64,
    pub value_sec: u64,
    pub value_usec: u64,
}

/// A pending signal: `info` is the kernel's 128-byte siginfo.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QueuedSignal {
    /// The thread it was pending on, or 0 for the whole process.
    pub tid: u32,
    pub signo: u32,
    pub info: [u8; 128],
}

impl Default for QueuedSignal {
    fn default() -> Self {
        QueuedSignal { tid: 0, signo: 0, info: [0; 128] }
    }
}

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
    assert!(size_of::<Restore>() == 320);
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
    assert!(size_of::<PageRead>() == 16);
    assert!(size_of::<Iovec>() == 16);
    assert!(size_of::<Move>() == 24);
    assert!(size_of::<SigAction>() == 40);
    assert!(size_of::<MmMap>() == 88);
    assert!(size_of::<Thread>() == 80);
    assert!(offset_of!(Thread, rseq_ptr) == 56);
    // Where a u64 follows u32s, and each struct's last field: the places a
    // different alignment or a forgotten pad would show.
    assert!(offset_of!(Restore, pages_fd) == 24);
    assert!(offset_of!(Restore, seccomp_progs) == 176);
    assert!(offset_of!(Vma, prot) == 32);
    assert!(offset_of!(Vma, attach_len) == 48);
    assert!(offset_of!(Vma, from) == 56);
    assert!(offset_of!(Restore, premap_len) == 208);
    assert!(offset_of!(PageRead, iov_count) == 12);
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
