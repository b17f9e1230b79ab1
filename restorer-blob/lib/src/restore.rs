//! The restore proper: from "a copy of the host process with the bootstrap
//! area mapped" to "the dumped process, about to return from a signal".
//!
//! The order matters and each step says why it comes where it does. Any
//! failure is past the point of no return (the old address space is gone or
//! going), so it ends the task with a distinct [`ExitCode`] after a log line
//! that names the object and the errno.

use linux_raw_sys::general as g;
use revenant_arch::{Errno, sys};
use revenant_blob_abi::{
    Creds, ExitCode, ITimer, Iovec, MIN_STACK, MmMap, Move, PageRead, Patch, PosixTimer, QueuedSignal,
    RESTORE_DUMPABLE, RESTORE_FLAGS, RESTORE_NO_MM_MAP, RESTORE_NOT_DUMPABLE, RESTORE_SET_GROUPS, RESTORE_TRAP,
    Restore, Rlimit, SECCOMP_ALL_THREADS, STATUS_RESTORED, Seccomp, SigAction, THREAD_STACK, TIMER_SIGNAL_PENDING,
    Thread, VMA_FILL, VMA_LAZY, VMA_PREMAPPED, VMA_REPROTECT, VMA_SHM, VMA_SKIP, Vma,
};

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

use crate::{Args, Log, fail};

/// Everything the restore reads, checked to lie inside the block before the
/// first irreversible step.
struct Plan<'a> {
    r: &'a Restore,
    vmas: &'a [Vma],
    page_reads: &'a [PageRead],
    compare_reads: &'a [PageRead],
    zero: &'a [Iovec],
    iovs: &'a [Iovec],
    park: &'a [Move],
    unpark: &'a [Move],
    sigactions: &'a [SigAction],
    close_fds: &'a [i32],
    auxv: &'a [u8],
    threads: &'a [Thread],
    rlimits: &'a [Rlimit],
    itimers: &'a [ITimer],
    signals: &'a [QueuedSignal],
    patches: &'a [Patch],
    creds: &'a [Creds],
    groups: &'a [u32],
    posix_timers: &'a [PosixTimer],
    seccomp: &'a [Seccomp],
    seccomp_progs: &'a [u8],
    guards: &'a [Iovec],
}

fn plan<'a>(args: &Args<'a>) -> Result<Plan<'a>, ExitCode> {
    let r: &Restore = args.one(args.header().restore)?;
    let p = Plan {
        r,
        vmas: args.array(r.vmas)?,
        page_reads: args.array(r.page_reads)?,
        compare_reads: args.array(r.compare_reads)?,
        zero: args.array(r.zero)?,
        iovs: args.array(r.iovs)?,
        park: args.array(r.park)?,
        unpark: args.array(r.unpark)?,
        sigactions: args.array(r.sigactions)?,
        close_fds: args.array(r.close_fds)?,
        auxv: args.array(r.auxv)?,
        threads: args.array(r.threads)?,
        rlimits: args.array(r.rlimits)?,
        itimers: args.array(r.itimers)?,
        signals: args.array(r.signals)?,
        patches: args.array(r.patches)?,
        guards: args.array(r.guards)?,
        creds: args.array(r.creds)?,
        groups: args.array(r.groups)?,
        posix_timers: args.array(r.posix_timers)?,
        seccomp: args.array(r.seccomp)?,
        seccomp_progs: args.array(r.seccomp_progs)?,
    };
    if !crate::seccomp::valid(p.seccomp, p.seccomp_progs, p.threads.len()) {
        return Err(ExitCode::BadLayout);
    }
    if !p.creds.is_empty() && p.creds.len() != p.threads.len() {
        return Err(ExitCode::BadLayout);
    }
    for read in p.page_reads.iter().chain(p.compare_reads) {
        let end = read.first_iov as usize + read.iov_count as usize;
        if end > p.iovs.len() {
            return Err(ExitCode::BadLayout);
        }
    }
    if p.threads.is_empty() {
        return Err(ExitCode::BadLayout);
    }
    // Reserved words and bits this version does not define.
    const VMA_HOW: u32 = VMA_SKIP | VMA_FILL | VMA_SHM | VMA_REPROTECT | VMA_PREMAPPED | VMA_LAZY;
    let reserved = r.flags & !RESTORE_FLAGS != 0
        || p.page_reads.iter().chain(p.compare_reads).any(|read| read.reserved != 0)
        || (r.lazy_fd < 0 && p.vmas.iter().any(|v| v.how & VMA_LAZY != 0))
        || p.vmas.iter().any(|v| v.how & !VMA_HOW != 0)
        || p.sigactions.iter().any(|a| a.pad != 0)
        || p.patches.iter().any(|x| x.pad != 0)
        || p.posix_timers.iter().any(|t| t.flags & !TIMER_SIGNAL_PENDING != 0)
        || p.rlimits.iter().any(|l| l.pad != 0)
        || p.itimers.iter().any(|t| t.pad != 0);
    if reserved {
        return Err(ExitCode::BadLayout);
    }
    Ok(p)
}

/// The restore keeps only the bootstrap area: the blob's code and data,
/// its block and its stack must lie inside, or the first unmap pulls them
/// away mid-step. Checked while nothing is changed yet.
fn check_bootstrap(args: &Args<'_>, p: &Plan<'_>, entry_sp: usize) -> Result<(), (ExitCode, &'static str)> {
    let r = p.r;
    let (start, end) = (r.bootstrap_start, r.bootstrap_start.saturating_add(r.bootstrap_len));
    let inside = |at: usize, len: usize| start <= at as u64 && (at as u64).saturating_add(len as u64) <= end;
    let (block, block_len) = args.range();
    if !inside(block, block_len) {
        return Err((ExitCode::NotMapped, "the argument block lies outside the bootstrap area"));
    }
    let code = run as *const () as usize;
    let data = &READY as *const AtomicU32 as usize;
    if !inside(code, 1) || !inside(data, 4) {
        return Err((ExitCode::NotMapped, "the blob lies outside the bootstrap area"));
    }
    let mut mapped = p.vmas.iter().filter(|v| v.how & (VMA_SKIP | VMA_REPROTECT) == 0);
    if mapped.any(|v| v.start < end && start < v.end) {
        return Err((ExitCode::BadLayout, "a memory area overlaps the bootstrap area"));
    }
    let low = entry_sp.wrapping_sub(MIN_STACK as usize);
    if entry_sp < MIN_STACK as usize || !inside(low, MIN_STACK as usize) {
        return Err((ExitCode::BadStack, "the stack lies outside the bootstrap area or is too small there"));
    }
    Ok(())
}

/// A 32-byte `struct rseq`, for probing whether the thread has one
/// registered.
#[repr(C, align(32))]
struct RseqArea([AtomicU32; 8]);

static RSEQ_PROBE: RseqArea = RseqArea([const { AtomicU32::new(0) }; 8]);

/// Whether an rseq area (a C library's) is registered for this thread:
/// the kernel keeps writing to it, and would kill the task once the
/// restore has unmapped it. Registering an area of our own answers
/// `EINVAL` or `EBUSY` then; when it succeeds it is dropped at once.
fn rseq_registered() -> bool {
    let area = &RSEQ_PROBE as *const RseqArea as usize;
    // Any signature: nothing of ours ever aborts a sequence.
    let sig = 0x5256_4e54;
    // SAFETY: the area is a static of ours, 32-byte aligned and writable,
    // which the kernel may write to until it is unregistered below.
    match unsafe { sys::rseq(area, 32, 0, sig) } {
        Ok(()) => {
            // SAFETY: dropping the registration just made.
            let _ = unsafe { sys::rseq(area, 32, revenant_arch::consts::RSEQ_FLAG_UNREGISTER, sig) };
            false
        }
        Err(e) => e == Errno::EINVAL || e == Errno::EBUSY,
    }
}

pub fn run(args: &Args<'_>, log: &Log, entry_sp: usize) -> ! {
    let p = match plan(args) {
        Ok(p) => p,
        Err(code) => fail(log, code, "restore arguments lie outside the block or set reserved fields"),
    };
    let r = p.r;
    if let Err((code, what)) = check_bootstrap(args, &p, entry_sp) {
        fail(log, code, what);
    }
    if rseq_registered() {
        fail(log, ExitCode::RseqRegistered, "an rseq area is registered for this thread; unregister it first");
    }
    log.info()
        .s("restoring: ")
        .dec(p.vmas.len() as u64)
        .s(" vmas, ")
        .dec(p.page_reads.len() as u64)
        .s(" page reads")
        .emit();

    // No signal may run a handler while the address space is half built;
    // the frame's mask replaces this one at the end.
    // SAFETY: blocking everything runs no handler, and nothing on this
    // thread waits for a signal.
    let res = unsafe { sys::rt_sigprocmask(g::SIG_SETMASK, !0) };
    check(log, res, ExitCode::Signals, "blocking signals", 0);

    // The runtime vDSO would be unmapped with everything else: keep it in
    // the bootstrap area until its final place exists.
    moves(log, p.park, "parking the vDSO");

    unmap_all_but_bootstrap(log, r);
    map_vmas(log, &p);
    drop_premap(log, r);
    crate::lazy::hand_over(log, p.vmas, r.lazy_fd);
    crate::inherit::settle(log, p.compare_reads, p.iovs, p.zero);
    let pages = crate::fill::Pages { vmas: p.vmas, reads: p.page_reads, iovs: p.iovs };
    crate::fill::fill(log, &pages, r.fill_helper_tid, p.threads[0].stack);
    apply_patches(log, &p);
    finish_vmas(log, p.vmas);
    install_guards(log, p.guards);
    moves(log, p.unpark, "moving the vDSO into place");
    set_mm(log, &p);
    set_sigactions(log, p.sigactions);
    for l in p.rlimits {
        check(log, sys::set_rlimit(l.resource, l.cur, l.max), ExitCode::Rlimits, "setting rlimit", l.resource as u64);
    }
    set_thread(log, &p.threads[0]);
    set_seccomp(&p, SECCOMP_ALL_THREADS, log);
    start_threads(log, &p);
    // All signals stay blocked until each thread's sigreturn. The kernel
    // lets a task pass a kill()'s or tgkill()'s sender info on only to
    // itself, so each thread queues its own (see `thread_main`).
    let me = sys::getpid();
    queue_own_signals(log, p.signals, me, |tid| tid == 0 || tid == me);
    create_posix_timers(log, p.posix_timers);
    // Timers last: they start counting when armed.
    for t in p.posix_timers {
        check(log, arm_posix_timer(t), ExitCode::Timers, "arming POSIX timer", t.id as u64);
    }
    for t in p.itimers {
        let res = sys::setitimer(t.which, (t.interval_sec, t.interval_usec), (t.value_sec, t.value_usec));
        check(log, res, ExitCode::Timers, "arming interval timer", t.which as u64);
    }

    set_seccomp(&p, 0, log);
    set_creds(p.creds.first(), &p, log);
    set_dumpable(p.r.flags, log);
    log.info().s("restore done, returning to the program").emit();
    crate::status::report(STATUS_RESTORED);
    // Service fds (the log and status among them) go last: nothing can be
    // reported after this.
    for &fd in p.close_fds {
        // SAFETY: the host hands over these descriptors for the restorer to
        // close; nothing after this uses them.
        let _ = unsafe { sys::close(fd) };
    }
    GO.store(1, Ordering::Release);
    sys::futex_wake(&GO, i32::MAX as u32);
    if r.flags & RESTORE_TRAP != 0 {
        revenant_arch::trap();
    }
    // SAFETY: the host built this frame for this thread; it holds the
    // dumped registers, FPU state, signal mask and alternate stack.
    unsafe { revenant_arch::rt_sigreturn(p.threads[0].sigframe as usize) }
}

/// Ends the restore if `res` failed, naming `what` and `at`.
pub(crate) fn check<T>(log: &Log, res: Result<T, Errno>, code: ExitCode, what: &str, at: u64) -> T {
    match res {
        Ok(v) => v,
        Err(e) => {
            log.error().s(what).s(" at ").hex(at).s(": ").errno(e).emit();
            fail(log, code, "restore failed")
        }
    }
}

fn moves(log: &Log, moves: &[Move], what: &str) {
    for m in moves {
        // SAFETY: the host planned these moves into free room (the bootstrap
        // park, or the dumped vDSO's address, which nothing else occupies).
        let res = unsafe { sys::mremap_fixed(m.from as usize, m.len as usize, m.to as usize, m.len as usize) };
        check(log, res, ExitCode::Vdso, what, m.from);
    }
}

fn unmap_all_but_bootstrap(log: &Log, r: &Restore) {
    // The bootstrap area, and the premap region (if any) after it or
    // before it: everything else goes.
    let mut keep = [(r.bootstrap_start, r.bootstrap_start + r.bootstrap_len), (0, 0)];
    if r.premap_len != 0 {
        keep[1] = (r.premap_start, r.premap_start + r.premap_len);
        if keep[1].0 < keep[0].0 {
            keep.swap(0, 1);
        }
    }
    let mut from = 0u64;
    for (start, end) in keep.into_iter().filter(|k| k.1 > k.0) {
        if start > from {
            // SAFETY: this removes the host's code, libraries, heap and
            // stacks. The blob runs on code, data and stack inside the
            // bootstrap area, which stays, as does the premap region.
            let res = unsafe { sys::munmap(from as usize, (start - from) as usize) };
            check(log, res, ExitCode::Unmap, "unmapping below", start);
        }
        from = end;
    }
    if r.task_size > from {
        // SAFETY: as above: nothing the blob uses lies above `from`.
        let res = unsafe { sys::munmap(from as usize, (r.task_size - from) as usize) };
        check(log, res, ExitCode::Unmap, "unmapping above", from);
    }
}

/// What is left of the premap region once its areas moved out: slots of
/// areas other processes of the tree have.
fn drop_premap(log: &Log, r: &Restore) {
    if r.premap_len != 0 {
        // SAFETY: the region holds nothing of this program any more.
        let res = unsafe { sys::munmap(r.premap_start as usize, r.premap_len as usize) };
        check(log, res, ExitCode::Unmap, "unmapping the premap region at", r.premap_start);
    }
}

fn map_vmas(log: &Log, p: &Plan<'_>) {
    for v in p.vmas.iter().filter(|v| v.how & (VMA_SKIP | VMA_REPROTECT) == 0) {
        if v.how & VMA_SHM != 0 {
            let res = crate::shm::arch_shmat(log, v.fd, v.start, v.flags, v.attach_len);
            check(log, res, ExitCode::MapVma, "attaching SysV segment at", v.start);
            continue;
        }
        let len = (v.end - v.start) as usize;
        if v.how & VMA_PREMAPPED != 0 {
            // SAFETY: the source is this area's slot in the premap region,
            // which nothing else uses; the target is free (as below).
            let res = unsafe { sys::mremap_fixed(v.from as usize, len, v.start as usize, len) };
            check(log, res, ExitCode::MapVma, "moving premapped vma to", v.start);
            continue;
        }
        let prot = if v.how & VMA_FILL != 0 { v.prot | g::PROT_WRITE } else { v.prot };
        // SAFETY: below and above the bootstrap nothing is mapped any more,
        // and the host checked that the VMAs do not overlap it.
        let res = unsafe { sys::mmap_fixed(v.start as usize, len, prot, v.flags, v.fd, v.pgoff) };
        check(log, res, ExitCode::MapVma, "mapping vma", v.start);
    }
}

/// Writes the host's patches (vDSO trampolines) while their VMAs are still
/// writable, and makes the new code visible to instruction fetch.
fn apply_patches(log: &Log, p: &Plan<'_>) {
    for patch in p.patches {
        let len = (patch.len as usize).min(patch.bytes.len());
        let inside =
            p.vmas.iter().any(|v| v.how & VMA_FILL != 0 && v.start <= patch.at && patch.at + len as u64 <= v.end);
        if !inside {
            fail(log, ExitCode::BadLayout, "a patch lies outside the filled memory");
        }
        for (i, b) in patch.bytes[..len].iter().enumerate() {
            // SAFETY: inside a VMA this blob mapped writable (checked above).
            unsafe { ((patch.at as usize + i) as *mut u8).write_volatile(*b) };
        }
        // SAFETY: the range is mapped (checked above).
        let res = unsafe { revenant_arch::flush_icache(patch.at as usize, patch.at as usize + len) };
        check(log, res, ExitCode::Vdso, "flushing patched code at", patch.at);
    }
    if !p.patches.is_empty() {
        log.info().s("vDSO: wrote ").dec(p.patches.len() as u64).s(" trampolines to the parked runtime vDSO").emit();
    }
}

fn finish_vmas(log: &Log, vmas: &[Vma]) {
    for v in vmas.iter().filter(|v| v.how & VMA_SKIP == 0) {
        let len = (v.end - v.start) as usize;
        let attached = v.how & (VMA_SHM | VMA_REPROTECT | VMA_PREMAPPED) != 0;
        if attached || (v.how & VMA_FILL != 0 && v.prot & g::PROT_WRITE == 0) {
            // SAFETY: the VMA was just mapped by us and filled.
            let res = unsafe { sys::mprotect(v.start as usize, len, v.prot) };
            check(log, res, ExitCode::Protect, "protecting vma", v.start);
        }
        for advice in (0..64).filter(|b| v.madv & (1u64 << b) != 0) {
            // SAFETY: the host passes only the advice the dumped VMA had
            // (hints such as MADV_DONTFORK, never ones that drop contents).
            let res = unsafe { sys::madvise(v.start as usize, len, advice) };
            check(log, res, ExitCode::Protect, "madvise on vma", v.start);
        }
    }
}

/// Guard regions last among the memory steps: installing one drops any
/// page in its range, and none of the areas' own steps may touch it after.
fn install_guards(log: &Log, guards: &[Iovec]) {
    for r in guards {
        // SAFETY: the range lies in areas of the restored program that had
        // guards there; their pages were never dumped (a guard page reads
        // nothing), so dropping what is there drops nothing of the program.
        let res = unsafe { sys::madvise(r.base as usize, r.len as usize, g::MADV_GUARD_INSTALL) };
        check(log, res, ExitCode::Protect, "installing a guard region at", r.base);
    }
    if !guards.is_empty() {
        log.info().s("installed ").dec(guards.len() as u64).s(" guard regions").emit();
    }
}

fn set_mm(log: &Log, p: &Plan<'_>) {
    let m: &MmMap = &p.r.mm;
    let map = linux_raw_sys::prctl::prctl_mm_map {
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: p.auxv.as_ptr() as *mut u64,
        auxv_size: p.auxv.len() as u32,
        exe_fd: p.r.exe_fd as u32,
    };
    if p.r.flags & RESTORE_NO_MM_MAP != 0 {
        log.warn().s("PR_SET_MM_MAP is unavailable here: memory layout fields and exe link stay unset").emit();
    } else {
        // SAFETY: the auxv the map points at is live in the argument block;
        // the new layout is the dumped program's, whose memory is in place.
        let res = unsafe { sys::prctl_set_mm_map(&map) };
        check(log, res, ExitCode::MmMap, "PR_SET_MM_MAP, start_code", m.start_code);
    }
    let res = sys::prctl_set_name(&p.r.comm);
    check(log, res, ExitCode::MmMap, "PR_SET_NAME", 0);
}

fn set_sigactions(log: &Log, actions: &[SigAction]) {
    for a in actions {
        let act = sys::kernel_sigaction(a.handler as usize, a.flags as usize, a.restorer as usize, a.mask);
        // SAFETY: the handlers are the dumped program's, whose memory is in
        // place by now; its signals stay blocked until the final sigreturn.
        let res = unsafe { sys::rt_sigaction(a.signo, &act) };
        check(log, res, ExitCode::Signals, "rt_sigaction, signal", a.signo as u64);
    }
}

/// Creates every POSIX timer with its dumped id: through
/// `PR_TIMER_CREATE_RESTORE_IDS` (Linux 6.15+), or on older kernels by
/// creating timers in id order until each wanted id comes up, deleting the
/// ones in between.
fn create_posix_timers(log: &Log, timers: &[PosixTimer]) {
    if timers.is_empty() {
        return;
    }
    use linux_raw_sys::prctl::{
        PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF, PR_TIMER_CREATE_RESTORE_IDS_ON,
    };
    let on = PR_TIMER_CREATE_RESTORE_IDS_ON as usize;
    // SAFETY: a plain integer option.
    let by_id = unsafe { sys::prctl(PR_TIMER_CREATE_RESTORE_IDS, on, 0, 0, 0) }.is_ok();
    for t in timers {
        let mut id = if by_id { t.id } else { 0 };
        loop {
            let res = sys::timer_create(t.clock, t.signo, t.notify, t.notify_tid, t.sival, &mut id);
            check(log, res, ExitCode::Timers, "creating POSIX timer", t.id as u64);
            if by_id || id >= t.id {
                break;
            }
            let _ = sys::timer_delete(id);
        }
        if id != t.id {
            log.error().s("POSIX timer ").dec(t.id as u64).s(" came back as ").dec(id as u64).emit();
            fail(log, ExitCode::Timers, "restore failed");
        }
    }
    if by_id {
        let off = PR_TIMER_CREATE_RESTORE_IDS_OFF as usize;
        // SAFETY: a plain integer option.
        let _ = unsafe { sys::prctl(PR_TIMER_CREATE_RESTORE_IDS, off, 0, 0, 0) };
    }
    log.info().s("created ").dec(timers.len() as u64).s(" POSIX timers with their ids").emit();
}

/// Arms `t` as dumped; one whose signal was pending fires at once (see
/// [`TIMER_SIGNAL_PENDING`]), one interval before its next expiry. A clock
/// the blob cannot read (another process's CPU time) fires it 1 ns from
/// now instead, its period then counted from here.
fn arm_posix_timer(t: &PosixTimer) -> Result<(), Errno> {
    let interval = (t.interval_sec, t.interval_nsec);
    let value = (t.value_sec, t.value_nsec);
    if t.flags & TIMER_SIGNAL_PENDING == 0 {
        return sys::timer_settime(t.id, 0, interval, value);
    }
    const NS: u64 = 1_000_000_000;
    let ns = |(sec, nsec): (u64, u64)| sec.saturating_mul(NS).saturating_add(nsec);
    match sys::clock_gettime(t.clock) {
        Ok(now) => {
            let at = (ns(now).saturating_add(ns(value))).saturating_sub(ns(interval)).max(1);
            sys::timer_settime(t.id, g::TIMER_ABSTIME, interval, (at / NS, at % NS))
        }
        Err(_) => sys::timer_settime(t.id, 0, interval, (0, 1)),
    }
}

/// Threads that have finished their own setup.
static READY: AtomicU32 = AtomicU32::new(0);
/// Set by the first thread when every thread may return to the program.
static GO: AtomicU32 = AtomicU32::new(0);
/// What the other threads need from the header: log fd and level, flags.
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static LOG_LEVEL: AtomicU32 = AtomicU32::new(0);
static FLAGS: AtomicU32 = AtomicU32::new(0);

/// Creates every thread but the first with its TID and waits until each
/// has set its own state. They then wait for [`GO`].
fn start_threads(log: &Log, p: &Plan<'_>) {
    let others = &p.threads[1..];
    if others.is_empty() {
        return;
    }
    let (fd, level) = log.params();
    LOG_FD.store(fd, Ordering::Relaxed);
    LOG_LEVEL.store(level, Ordering::Relaxed);
    FLAGS.store(p.r.flags, Ordering::Relaxed);
    PLAN.store(p as *const Plan<'_> as usize, Ordering::Relaxed);
    for t in others {
        let tids = [t.tid as i32];
        let args = sys::clone_args {
            flags: sys::CLONE_THREAD_FLAGS,
            stack: t.stack - THREAD_STACK,
            stack_size: THREAD_STACK,
            set_tid: tids.as_ptr() as u64,
            set_tid_size: 1,
            ..sys::CLONE_ARGS_ZERO
        };
        let entry: extern "C" fn(&Thread) -> ! = thread_main;
        // SAFETY: a thread on its own stack in the bootstrap area, running
        // `thread_main` on its own `Thread`, both of which outlive it.
        let res = unsafe { revenant_arch::clone3_thread(&args, entry, t) };
        let res = match res {
            Err(Errno::ENOSYS) => {
                log.warn().s("no clone3 here: thread ").dec(t.tid as u64).s(" gets a new TID").emit();
                let flags = sys::CLONE_THREAD_FLAGS as usize;
                // SAFETY: as above.
                unsafe { revenant_arch::clone_thread(flags, t.stack as usize, entry, t) }
            }
            other => other,
        };
        check(log, res, ExitCode::Threads, "creating thread", t.tid as u64);
    }
    let want = others.len() as u32;
    loop {
        let ready = READY.load(Ordering::Acquire);
        if ready >= want {
            break;
        }
        sys::futex_wait(&READY, ready);
    }
    log.info().s("started ").dec(want as u64).s(" more threads").emit();
}

/// Where every thread but the first starts.
/// `t` lies inside the argument block, which stays mapped until after the
/// sigreturn.
extern "C" fn thread_main(t: &Thread) -> ! {
    let log = Log::new(LOG_FD.load(Ordering::Relaxed), LOG_LEVEL.load(Ordering::Relaxed));
    set_thread(&log, t);
    READY.fetch_add(1, Ordering::Release);
    sys::futex_wake(&READY, 1);
    while GO.load(Ordering::Acquire) == 0 {
        sys::futex_wait(&GO, 0);
    }
    let p = PLAN.load(Ordering::Relaxed) as *const Plan<'static>;
    // SAFETY: the first thread stored its plan (on its own stack, which it
    // keeps until its sigreturn) before creating this thread.
    let plan = unsafe { &*p };
    let index = plan.threads.iter().position(|x| core::ptr::eq(x, t)).unwrap_or(0);
    queue_own_signals(&log, plan.signals, sys::getpid(), |tid| tid == t.tid);
    set_seccomp(plan, index as u32, &log);
    set_creds(plan.creds.get(index), plan, &log);
    set_dumpable(FLAGS.load(Ordering::Relaxed), &log);
    if FLAGS.load(Ordering::Relaxed) & RESTORE_TRAP != 0 {
        revenant_arch::trap();
    }
    // SAFETY: the host built this thread's frame.
    unsafe { revenant_arch::rt_sigreturn(t.sigframe as usize) }
}

/// Queues the pending signals of `signals` that `mine` picks, as the
/// calling thread of process `me`.
fn queue_own_signals(log: &Log, signals: &[QueuedSignal], me: u32, mine: impl Fn(u32) -> bool) {
    for s in signals.iter().filter(|s| mine(s.tid)) {
        let res = sys::sigqueue(me, s.tid, s.signo, &s.info);
        check(log, res, ExitCode::Signals, "queueing signal", s.signo as u64);
    }
}

/// The plan, for the other threads' credentials.
static PLAN: AtomicUsize = AtomicUsize::new(0);

/// Puts back thread `index`'s seccomp filters and mode. As with the
/// credentials, the log may be closed by now.
fn set_seccomp(p: &Plan<'_>, index: u32, log: &Log) {
    if let Err((what, e)) = crate::seccomp::apply(p.seccomp, p.seccomp_progs, index) {
        log.error().s("seccomp: ").s(what).s(": ").errno(e).emit();
        crate::status::exit(ExitCode::Seccomp);
    }
}

/// Sets a thread's credentials, if the host asked for any. After the log
/// fd is closed there is no one to tell of a failure but the exit code.
fn set_creds(c: Option<&Creds>, p: &Plan<'_>, log: &Log) {
    let Some(c) = c else { return };
    let groups = (p.r.flags & RESTORE_SET_GROUPS != 0).then_some(p.groups);
    if let Err((what, e)) = crate::creds::apply(c, groups) {
        log.error().s("credentials: ").s(what).s(": ").errno(e).emit();
        crate::status::exit(ExitCode::Creds);
    }
}

/// `PR_SET_DUMPABLE` as dumped, after this thread's credentials (which
/// reset it when they change).
fn set_dumpable(flags: u32, log: &Log) {
    let value = match (flags & RESTORE_NOT_DUMPABLE != 0, flags & RESTORE_DUMPABLE != 0) {
        (true, _) => 0,
        (false, true) => 1,
        _ => return,
    };
    // SAFETY: a plain integer option.
    let res = unsafe { sys::prctl(linux_raw_sys::prctl::PR_SET_DUMPABLE, value, 0, 0, 0) };
    if res.is_err() {
        log.error().s("PR_SET_DUMPABLE ").dec(value as u64).emit();
        crate::status::exit(ExitCode::Creds);
    }
}

fn set_thread(log: &Log, t: &Thread) {
    // SAFETY: the dumped thread's own word in its memory, which is back in
    // place; its C library expects the kernel to clear it at exit.
    unsafe { sys::set_tid_address(t.clear_tid_addr as usize) };
    if t.robust_list != 0 {
        // SAFETY: the dumped thread's own list head, back in place.
        let res = unsafe { sys::set_robust_list(t.robust_list as usize, t.robust_list_len as usize) };
        check(log, res, ExitCode::ThreadState, "set_robust_list", t.robust_list);
    }
    // SAFETY: the blob keeps nothing in thread-local storage; the bases are
    // the dumped thread's, for after its sigreturn.
    let res = unsafe { revenant_arch::set_tls(t.tls, t.gs_base) };
    check(log, res, ExitCode::ThreadState, "setting TLS", t.tls);
    if t.pdeath_sig != 0 {
        // SAFETY: PR_SET_PDEATHSIG takes a plain signal number.
        let res = unsafe { sys::prctl(linux_raw_sys::prctl::PR_SET_PDEATHSIG, t.pdeath_sig as usize, 0, 0, 0) };
        check(log, res, ExitCode::ThreadState, "PR_SET_PDEATHSIG", t.pdeath_sig as u64);
    }
    if t.rseq_ptr != 0 {
        // SAFETY: the dumped program registered this area; its memory is
        // back in place.
        let res = unsafe { sys::rseq(t.rseq_ptr as usize, t.rseq_len, 0, t.rseq_sig) };
        check(log, res, ExitCode::ThreadState, "rseq", t.rseq_ptr);
    }
}
