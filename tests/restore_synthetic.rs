//! Restores a process that never ran: a hand-written plan with one page of
//! x86_64 machine code and one of data, registers and an FPU register set
//! by hand, and stdout on a file. The program prints its message and xmm0,
//! then exits with r12. This exercises the whole restore path (clone3 with
//! the PID, fds, bootstrap, blob, pages, protections, sigframe with xsave,
//! ptrace finish) without depending on dump or on image parsing. On armv7
//! (under qemu-arm) the same program, in ARM code, with d0 for xmm0.

use std::path::PathBuf;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
#[cfg(target_arch = "arm")]
use revenant::regs::{ArmRegs, ArmVfp};
use revenant::regs::{Fpu, Regs};
#[cfg(target_arch = "x86_64")]
use revenant::regs::{X86Fpu, X86Regs};
use revenant::restore::plan::{
    AltStack, Backing, FdPlan, PageRun, ProcessPlan, Session, ShmAttach, ThreadPlan, VmaPlan,
};
use revenant::restore::restore_process;
use revenant_blob_abi::MmMap;
use revenant_test_watchdog as watchdog;

const CODE: u64 = 0x1000_0000;
const DATA: u64 = 0x1000_1000;
const MSG: &[u8] = b"hello from a restored process\n";

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const PROGRAM: &[u8] = &[
    0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1 (write)
    0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
    0x4c, 0x89, 0xee,                   // mov rsi, r13
    0x4c, 0x89, 0xf2,                   // mov rdx, r14
    0x0f, 0x05,                         // syscall
    0xf3, 0x41, 0x0f, 0x7f, 0x45, 0x40, // movdqu [r13 + 0x40], xmm0
    0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1
    0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
    0x49, 0x8d, 0x75, 0x40,             // lea rsi, [r13 + 0x40]
    0xba, 0x10, 0x00, 0x00, 0x00,       // mov edx, 16
    0x0f, 0x05,                         // syscall
    0xb8, 0xe7, 0x00, 0x00, 0x00,       // mov eax, 231 (exit_group)
    0x44, 0x89, 0xe7,                   // mov edi, r12d
    0x0f, 0x05,                         // syscall
];

/// Little-endian ARM words.
#[cfg(target_arch = "arm")]
const PROGRAM: &[u8] = &{
    const WORDS: [u32; 16] = [
        0xe3a07004, // mov r7, #4 (write)
        0xe3a00001, // mov r0, #1
        0xe1a01005, // mov r1, r5
        0xe1a02006, // mov r2, r6
        0xef000000, // svc 0
        0xed850b10, // vstr d0, [r5, #64]
        0xe2851040, // add r1, r5, #64
        0xe3a02008, // mov r2, #8
        0xe3a07004, // mov r7, #4
        0xe3a00001, // mov r0, #1
        0xef000000, // svc 0
        0xe3a070f8, // mov r7, #248 (exit_group)
        0xe1a00004, // mov r0, r4
        0xef000000, // svc 0
        0xe7f000f0, // udf
        0xe7f000f0, // udf
    ];
    let mut b = [0u8; 64];
    let mut i = 0;
    while i < 16 {
        let w = WORDS[i].to_le_bytes();
        b[4 * i] = w[0];
        b[4 * i + 1] = w[1];
        b[4 * i + 2] = w[2];
        b[4 * i + 3] = w[3];
        i += 1;
    }
    b
};

/// What the program prints after its message: xmm0 on x86_64, d0 on ARM.
#[cfg(target_arch = "x86_64")]
const VEC: &[u8] = b"xmm0 survives!!\n";
#[cfg(target_arch = "arm")]
const VEC: &[u8] = b"d0 ok!\n\0";

#[cfg(target_arch = "x86_64")]
fn regs_and_fpu() -> (Regs, Fpu) {
    let mut legacy = [0u8; 512];
    legacy[0..2].copy_from_slice(&0x37fu16.to_le_bytes()); // fcw
    legacy[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // mxcsr
    legacy[160..176].copy_from_slice(VEC);
    let regs = Regs::X86_64(X86Regs {
        ip: CODE,
        sp: DATA + 0x800,
        cs: 0x33,
        ss: 0x2b,
        flags: 0x202,
        r12: 42,
        r13: DATA,
        r14: MSG.len() as u64,
        ..Default::default()
    });
    (regs, Fpu::X86(Box::new(X86Fpu { legacy, xstate_bv: 0b11, components: vec![] })))
}

#[cfg(target_arch = "arm")]
fn regs_and_fpu() -> (Regs, Fpu) {
    let mut r = [0u32; 16];
    r[4] = 42;
    r[5] = DATA as u32;
    r[6] = MSG.len() as u32;
    r[13] = (DATA + 0x800) as u32;
    r[15] = CODE as u32;
    let mut vfp = ArmVfp::default();
    vfp.fpregs[0] = u64::from_le_bytes(VEC.try_into().unwrap());
    (Regs::Arm(ArmRegs { r, cpsr: 0x10, orig_r0: 0, tls: 0 }), Fpu::ArmVfp(Box::new(vfp)))
}

/// A PID nobody uses, from the top of the range.
fn free_pid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    // Tests in this process run in parallel: each takes its own stretch.
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    let slot = NEXT.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
    let mut pid = max - 1000 - (std::process::id() as i32 % 1000) * 20 % 30000 - slot;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        pid -= 1;
    }
    pid
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("revenant-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plan(dir: &std::path::Path, pid: i32) -> ProcessPlan {
    let mut pages = vec![0u8; 8192];
    pages[..PROGRAM.len()].copy_from_slice(PROGRAM);
    pages[4096..4096 + MSG.len()].copy_from_slice(MSG);
    std::fs::write(dir.join("pages-1.img"), &pages).unwrap();
    std::fs::write(dir.join("out"), b"").unwrap();

    let (regs, fpu) = regs_and_fpu();
    let anon = |start: u64, prot: u32| VmaPlan {
        start,
        end: start + 4096,
        prot,
        flags: (nix::libc::MAP_PRIVATE | nix::libc::MAP_ANONYMOUS) as u32,
        pgoff: 0,
        madv: 0,
        backing: Backing::Anon,
    };
    let mut comm = [0u8; 16];
    comm[..9].copy_from_slice(b"synthetic");
    ProcessPlan {
        stop_signal: None,
        pid,
        ppid: 0,
        session: Session::Leader,
        comm,
        exe: None,
        cwd: dir.to_path_buf(),
        cwd_holder: None,
        root: "/".into(),
        umask: 0o022,
        fds: vec![
            FdPlan { fd: 0, id: 1, path: "/dev/null".into(), flags: nix::libc::O_RDONLY, ..Default::default() },
            FdPlan {
                fd: 1,
                id: 2,
                path: dir.join("out"),
                flags: nix::libc::O_WRONLY | nix::libc::O_APPEND,
                ..Default::default()
            },
        ],
        pipes: vec![],
        anon_fds: vec![],
        locks: vec![],
        owners: vec![],
        vmas: vec![
            anon(CODE, (nix::libc::PROT_READ | nix::libc::PROT_EXEC) as u32),
            anon(DATA, (nix::libc::PROT_READ | nix::libc::PROT_WRITE) as u32),
        ],
        pages: vec![revenant::restore::plan::PagesFile::Image(dir.join("pages-1.img"))],
        guards: vec![],
        group_helpers: vec![],
        page_runs: vec![
            PageRun { addr: CODE, len: 4096, file_offset: 0, file: 0 },
            PageRun { addr: DATA, len: 4096, file_offset: 4096, file: 0 },
        ],
        mm: MmMap {
            start_code: CODE,
            end_code: CODE + PROGRAM.len() as u64,
            start_data: DATA,
            end_data: DATA + 0x100,
            start_brk: DATA + 0x1000,
            brk: DATA + 0x1000,
            start_stack: DATA + 0x800,
            arg_start: DATA + 0x100,
            arg_end: DATA + 0x100,
            env_start: DATA + 0x100,
            env_end: DATA + 0x100,
        },
        auxv: vec![],
        sigactions: vec![],
        rlimits: vec![],
        itimers: vec![],
        posix_timers: vec![],
        signals: vec![],
        vdso_proxy: false,
        groups: vec![],
        knobs: Default::default(),
        cgroups: Vec::new(),
        ghosts: Vec::new(),
        ctty: None,
        tty_fg: false,
        threads: vec![ThreadPlan {
            tid: pid,
            regs,
            fpu: Some(fpu),
            sigmask: 0,
            altstack: AltStack { sp: 0, flags: 2, size: 0 },
            clear_tid_addr: 0,
            robust_list: 0,
            robust_list_len: 0,
            rseq: None,
            pdeath_sig: 0,
            sched: Default::default(),
            affinity: vec![],
            ioprio: None,
            creds: None,
            seccomp: Default::default(),
        }],
    }
}

#[test]
fn a_hand_made_process_runs_with_its_pid_registers_memory_fpu_and_fds() {
    let _w = watchdog::start();
    let dir = scratch_dir("synthetic");
    let pid = free_pid();
    let restored = restore_process(&plan(&dir, pid)).unwrap();
    assert_eq!(restored.pid, pid);
    assert!(restored.log.contains("restore done"), "{}", restored.log);
    let status = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 42), "log:\n{}", restored.log);
    let out = std::fs::read(dir.join("out")).unwrap();
    assert_eq!(out, [MSG, VEC].concat());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_pid_is_refused_before_anything_runs() {
    let _w = watchdog::start();
    let dir = scratch_dir("taken");
    let me = std::process::id() as i32;
    let err = restore_process(&plan(&dir, me)).unwrap_err();
    assert!(format!("{err:#}").contains(&format!("PID {me} is in use")), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two threads. The second prints its message and its TID and exits; the
/// first waits for it through the futex word the kernel clears at thread
/// exit (its restored `clear_tid_addr`), then runs the single-thread
/// program above. Checks thread creation with the dumped TID, per-thread
/// registers, the tid address, and that the host catches both threads.
#[cfg(target_arch = "x86_64")]
#[test]
fn two_threads_come_back_with_their_tids_and_their_own_registers() {
    let _w = watchdog::start();
    #[rustfmt::skip]
    const WAIT: &[u8] = &[
        0x8b, 0x07,                         // 0: mov eax, [rdi]
        0x85, 0xc0,                         //    test eax, eax
        0x74, 0x10,                         //    jz +16 (the program)
        0x89, 0xc2,                         //    mov edx, eax
        0x31, 0xf6,                         //    xor esi, esi (FUTEX_WAIT)
        0x4d, 0x31, 0xd2,                   //    xor r10, r10
        0xb8, 0xca, 0x00, 0x00, 0x00,       //    mov eax, 202 (futex)
        0x0f, 0x05,                         //    syscall
        0xeb, 0xea,                         //    jmp 0
    ];
    #[rustfmt::skip]
    const SECOND: &[u8] = &[
        0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1 (write)
        0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
        0x4c, 0x89, 0xee,                   // mov rsi, r13
        0x4c, 0x89, 0xf2,                   // mov rdx, r14
        0x0f, 0x05,                         // syscall
        0xb8, 0xba, 0x00, 0x00, 0x00,       // mov eax, 186 (gettid)
        0x0f, 0x05,                         // syscall
        0x41, 0x89, 0x45, 0x40,             // mov [r13 + 0x40], eax
        0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1
        0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
        0x49, 0x8d, 0x75, 0x40,             // lea rsi, [r13 + 0x40]
        0xba, 0x04, 0x00, 0x00, 0x00,       // mov edx, 4
        0x0f, 0x05,                         // syscall
        0xb8, 0x3c, 0x00, 0x00, 0x00,       // mov eax, 60 (exit: this thread)
        0x31, 0xff,                         // xor edi, edi
        0x0f, 0x05,                         // syscall
    ];
    const MSG2: &[u8] = b"thread two\n";
    const TIDWORD: u64 = DATA + 0x200;
    const MSG2_AT: u64 = DATA + 0x400;
    const SECOND_AT: u64 = CODE + 0x200;

    let dir = scratch_dir("threads");
    let pid = free_pid();
    let tid2 = free_pid();
    let mut p = plan(&dir, pid);
    // Code page: WAIT, then the single-thread program; SECOND further on.
    let mut pages = std::fs::read(image_of(&p)).unwrap();
    let code = [WAIT, PROGRAM].concat();
    pages[..code.len()].copy_from_slice(&code);
    pages[0x200..0x200 + SECOND.len()].copy_from_slice(SECOND);
    pages[4096 + 0x200..4096 + 0x204].copy_from_slice(&(tid2 as u32).to_le_bytes());
    pages[4096 + 0x400..4096 + 0x400 + MSG2.len()].copy_from_slice(MSG2);
    std::fs::write(image_of(&p), &pages).unwrap();
    p.mm.end_code = CODE + 0x300;

    let Regs::X86_64(leader) = &mut p.threads[0].regs else { unreachable!() };
    leader.di = TIDWORD;
    let mut second = p.threads[0].clone();
    second.tid = tid2;
    second.clear_tid_addr = TIDWORD;
    let Regs::X86_64(r) = &mut second.regs else { unreachable!() };
    r.ip = SECOND_AT;
    r.sp = DATA + 0xc00;
    r.r13 = MSG2_AT;
    r.r14 = MSG2.len() as u64;
    p.threads.push(second);

    let restored = restore_process(&p).unwrap();
    assert!(restored.log.contains("started 1 more threads"), "{}", restored.log);
    let status = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 42), "log:\n{}", restored.log);
    let out = std::fs::read(dir.join("out")).unwrap();
    let expected = [MSG2, &(tid2 as u32).to_le_bytes(), MSG, VEC].concat();
    assert_eq!(out, expected, "log:\n{}", restored.log);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process that sleeps in `pause` with SIGUSR1 and SIGUSR2 blocked: one
/// pending process-wide, one on the thread. Its open-files limit is lowered
/// and a one-second real-time timer armed, whose SIGALRM then ends it.
#[cfg(target_arch = "x86_64")]
#[test]
fn limits_pending_signals_and_timers_come_back() {
    let _w = watchdog::start();
    use revenant_blob_abi::{ITimer, QueuedSignal, Rlimit};

    #[rustfmt::skip]
    const PAUSE: &[u8] = &[
        0xb8, 0x22, 0x00, 0x00, 0x00,       // mov eax, 34 (pause)
        0x0f, 0x05,                         // syscall
        0xeb, 0xf7,                         // jmp back
    ];
    let (usr1, usr2) = (nix::libc::SIGUSR1 as u32, nix::libc::SIGUSR2 as u32);
    let queued = |tid: u32, signo: u32| {
        let mut info = [0u8; 128];
        info[0..4].copy_from_slice(&signo.to_le_bytes());
        info[8..12].copy_from_slice(&(-1i32).to_le_bytes()); // SI_QUEUE
        QueuedSignal { tid, signo, info }
    };
    let dir = scratch_dir("signals");
    let pid = free_pid();
    let mut p = plan(&dir, pid);
    let mut pages = std::fs::read(image_of(&p)).unwrap();
    pages[..PAUSE.len()].copy_from_slice(PAUSE);
    std::fs::write(image_of(&p), &pages).unwrap();
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap().1;
    p.rlimits = vec![Rlimit { resource: nix::libc::RLIMIT_NOFILE, pad: 0, cur: 100, max: hard }];
    p.itimers = vec![ITimer { which: 0, value_sec: 1, ..Default::default() }];
    p.signals = vec![queued(0, usr1), queued(pid as u32, usr2)];
    p.threads[0].sigmask = (1 << (usr1 - 1)) | (1 << (usr2 - 1));

    let restored = restore_process(&p).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    assert_eq!(field("ShdPnd:"), "0000000000000200", "{status}");
    assert_eq!(field("SigPnd:"), "0000000000000800", "{status}");
    assert_eq!(field("SigBlk:"), "0000000000000a00", "{status}");
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(nofile.split_whitespace().nth(3), Some("100"), "{limits}");
    let end = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        end,
        WaitStatus::Signaled(Pid::from_raw(pid), nix::sys::signal::Signal::SIGALRM, false),
        "{}",
        restored.log
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run without CAP_SYS_RESOURCE (which would allow raising the limit), so
/// that it is refused as root too.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_hard_limit_above_ours_is_refused_before_anything_runs() {
    let _w = watchdog::start();
    let test = "a_hard_limit_above_ours_is_refused_before_anything_runs";
    revenant_e2e::without_cap(revenant_e2e::CAP_SYS_RESOURCE, test, || {
        let dir = scratch_dir("hardlimit");
        let pid = free_pid();
        let mut p = plan(&dir, pid);
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap().1;
        let nofile = nix::libc::RLIMIT_NOFILE;
        p.rlimits = vec![revenant_blob_abi::Rlimit { resource: nofile, pad: 0, cur: 10, max: hard + 1 }];
        let err = format!("{:#}", restore_process(&p).unwrap_err());
        assert!(err.contains("CAP_SYS_RESOURCE") && err.contains("rlimit 7"), "{err}");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A program that calls `clock_gettime` through "its" vDSO: a copy of this
/// kernel's vDSO placed elsewhere, behind a zeroed vvar area, as a dump
/// would have recorded it. Restored once by moving the runtime vDSO there
/// and once through the proxy (trampolines into the parked runtime vDSO);
/// both times the call must return the current monotonic time.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_vdso_works_after_restore_moved_or_proxied() {
    let _w = watchdog::start();
    #[rustfmt::skip]
    const CALL: &[u8] = &[
        0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1 (CLOCK_MONOTONIC)
        0x49, 0x8d, 0x75, 0x40,             // lea rsi, [r13 + 0x40]
        0x4c, 0x89, 0xf8,                   // mov rax, r15
        0xff, 0xd0,                         // call rax
        0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1 (write)
        0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
        0x49, 0x8d, 0x75, 0x40,             // lea rsi, [r13 + 0x40]
        0xba, 0x10, 0x00, 0x00, 0x00,       // mov edx, 16
        0x0f, 0x05,                         // syscall
        0xb8, 0xe7, 0x00, 0x00, 0x00,       // mov eax, 231 (exit_group)
        0x44, 0x89, 0xe7,                   // mov edi, r12d
        0x0f, 0x05,                         // syscall
    ];
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let piece = |name: &str| {
        maps.lines().find(|l| l.ends_with(name)).map(|l| {
            let (s, e) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
            (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap())
        })
    };
    let Some(vdso) = piece("[vdso]") else { return };
    let vvar_start = piece("[vvar]").map(|v| v.0).unwrap_or(vdso.0);
    let (vvar_len, vdso_len) = (vdso.0 - vvar_start, vdso.1 - vdso.0);
    // SAFETY: our vDSO is mapped readable for its whole range.
    let image = unsafe { std::slice::from_raw_parts(vdso.0 as *const u8, vdso_len as usize) }.to_vec();
    let off = revenant_restorer::vdso::lookup(&image, b"__vdso_clock_gettime").unwrap().unwrap();

    for proxy in [false, true] {
        let dir = scratch_dir(if proxy { "vdso-proxy" } else { "vdso-move" });
        let pid = free_pid();
        let mut p = plan(&dir, pid);
        let dumped_vvar = 0x2000_0000u64;
        let dumped_vdso = dumped_vvar + vvar_len;
        let mut pages = std::fs::read(image_of(&p)).unwrap();
        pages[..CALL.len()].copy_from_slice(CALL);
        let vdso_at = pages.len() as u64;
        pages.extend_from_slice(&image);
        std::fs::write(image_of(&p), &pages).unwrap();
        let anon = |start: u64, end: u64, prot: i32, backing: Backing| VmaPlan {
            start,
            end,
            prot: prot as u32,
            flags: (nix::libc::MAP_PRIVATE | nix::libc::MAP_ANONYMOUS) as u32,
            pgoff: 0,
            madv: 0,
            backing,
        };
        p.vmas.push(anon(dumped_vvar, dumped_vdso, nix::libc::PROT_READ, Backing::Vvar));
        p.vmas.push(anon(
            dumped_vdso,
            dumped_vdso + vdso_len,
            nix::libc::PROT_READ | nix::libc::PROT_EXEC,
            Backing::Vdso,
        ));
        p.page_runs.push(PageRun { addr: dumped_vdso, len: vdso_len, file_offset: vdso_at, file: 0 });
        p.vdso_proxy = proxy;
        let Regs::X86_64(r) = &mut p.threads[0].regs else { unreachable!() };
        r.r15 = dumped_vdso + off;

        let restored = restore_process(&p).unwrap();
        let expect = if proxy { "proxying the dumped vDSO" } else { "matches the dumped one" };
        assert!(restored.log.contains(expect), "{}", restored.log);
        let status = waitpid(Pid::from_raw(pid), None).unwrap();
        assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 42), "proxy={proxy}, log:\n{}", restored.log);
        let out = std::fs::read(dir.join("out")).unwrap();
        assert_eq!(out.len(), 16, "proxy={proxy}");
        let ts = &out[..];
        let (sec, nsec) =
            (u64::from_le_bytes(ts[..8].try_into().unwrap()), u64::from_le_bytes(ts[8..16].try_into().unwrap()));
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        assert!(nsec < 1_000_000_000 && sec > 0, "proxy={proxy}: {sec}.{nsec}");
        assert!(
            now.tv_sec() as u64 >= sec && now.tv_sec() as u64 - sec < 10,
            "proxy={proxy}: {sec} vs {}",
            now.tv_sec()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The program prints from a SysV segment attached where no fixed `shmat`
/// may put it on ARM (page- but not SHMLBA-aligned); the blob's
/// `arch_shmat` attaches it anywhere and moves it there. On x86_64 the same
/// address is a direct attach.
#[test]
fn shm_segment_needing_the_mremap_fallback_is_attached_at_its_address() {
    let _w = watchdog::start();
    shm_restore(0x1001_3000, true);
}

#[test]
fn shm_segment_at_an_shmlba_aligned_address_is_attached_directly() {
    let _w = watchdog::start();
    shm_restore(0x1001_0000, false);
}

/// Restores the program with a 4-page segment at `shm_at`; on ARM the log
/// tells whether the attach-anywhere-and-move path was taken.
fn shm_restore(shm_at: u64, moved_on_arm: bool) {
    use nix::libc;
    const SHM_MSG: &[u8] = b"from shared memory\n";
    let page = 4096usize;
    // SAFETY: a private segment of this test; removed below, and kept alive
    // meanwhile only by the restored process's attachment.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4 * page, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0);
    // SAFETY: attach, write, detach our own segment.
    unsafe {
        let at = libc::shmat(id, std::ptr::null(), 0);
        assert_ne!(at as isize, -1);
        std::ptr::copy_nonoverlapping(SHM_MSG.as_ptr(), at.cast::<u8>(), SHM_MSG.len());
        libc::shmdt(at);
    }
    let dir = scratch_dir(if moved_on_arm { "shm-moved" } else { "shm-direct" });
    let pid = free_pid();
    let mut p = plan(&dir, pid);
    p.vmas.push(VmaPlan {
        start: shm_at,
        end: shm_at + 4 * page as u64,
        prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
        flags: libc::MAP_SHARED as u32,
        pgoff: 0,
        madv: 0,
        backing: Backing::SysvShm { id, attach: Some(ShmAttach { len: 4 * page as u64, read_only: false }) },
    });
    match &mut p.threads[0].regs {
        Regs::X86_64(r) => (r.r13, r.r14) = (shm_at, SHM_MSG.len() as u64),
        Regs::Arm(r) => (r.r[5], r.r[6]) = (shm_at as u32, SHM_MSG.len() as u32),
    }
    let restored = restore_process(&p);
    // SAFETY: marking our segment for removal once its last user detaches.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let restored = restored.unwrap();
    let status = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 42), "log:\n{}", restored.log);
    assert_eq!(std::fs::read(dir.join("out")).unwrap(), [SHM_MSG, VEC].concat());
    let moved = restored.log.contains("and moved");
    if cfg!(target_arch = "arm") {
        assert_eq!(moved, moved_on_arm, "{}", restored.log);
        if moved {
            assert!(restored.log.contains("blob: warn: SysV segment"), "{}", restored.log);
        }
    } else {
        assert!(!moved, "x86_64 attaches directly: {}", restored.log);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The process comes back as `nobody` with no capabilities and no
/// supplementary groups, after everything privileged was done as root.
#[test]
fn credentials_are_set_last() {
    let _w = watchdog::start();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |s: &str, name: &str| s.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    let bnd = u64::from_str_radix(&field(&status, "CapBnd:"), 16).unwrap();
    if field(&status, "Uid:").split_whitespace().next() != Some("0") {
        return; // Needs root to change IDs.
    }
    #[rustfmt::skip]
    const PAUSE: &[u8] = &[0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];
    let dir = scratch_dir("creds");
    let pid = free_pid();
    let mut p = plan(&dir, pid);
    if cfg!(target_arch = "x86_64") {
        let mut pages = std::fs::read(image_of(&p)).unwrap();
        pages[..PAUSE.len()].copy_from_slice(PAUSE);
        std::fs::write(image_of(&p), &pages).unwrap();
    }
    let nobody = 65534;
    p.threads[0].creds = Some(revenant_blob_abi::Creds {
        uid: nobody,
        euid: nobody,
        suid: nobody,
        fsuid: nobody,
        gid: nobody,
        egid: nobody,
        sgid: nobody,
        fsgid: nobody,
        cap_bnd: bnd,
        ..Default::default()
    });
    let restored = restore_process(&p).unwrap();
    let pid_ = Pid::from_raw(pid);
    if cfg!(target_arch = "x86_64") {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert_eq!(field(&s, "Uid:").split_whitespace().collect::<Vec<_>>(), ["65534"; 4], "{s}");
        assert_eq!(field(&s, "Gid:").split_whitespace().collect::<Vec<_>>(), ["65534"; 4], "{s}");
        assert_eq!(field(&s, "CapEff:"), "0000000000000000");
        assert_eq!(field(&s, "CapPrm:"), "0000000000000000");
        assert_eq!(field(&s, "Groups:"), "");
        nix::sys::signal::kill(pid_, nix::sys::signal::Signal::SIGKILL).unwrap();
        let _ = waitpid(pid_, None);
    } else {
        let status = waitpid(pid_, None).unwrap();
        assert_eq!(status, WaitStatus::Exited(pid_, 42), "log:\n{}", restored.log);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pages image a synthetic plan reads from.
fn image_of(p: &revenant::restore::plan::ProcessPlan) -> std::path::PathBuf {
    match &p.pages[0] {
        revenant::restore::plan::PagesFile::Image(path) => path.clone(),
        other => panic!("a synthetic plan reads its own image, not {other:?}"),
    }
}
