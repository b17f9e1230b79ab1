//! Restores a process that never ran: a hand-written plan with one page of
//! x86_64 machine code and one of data, registers and an FPU register set
//! by hand, and stdout on a file. The program prints its message and xmm0,
//! then exits with r12. This exercises the whole restore path (clone3 with
//! the PID, fds, bootstrap, blob, pages, protections, sigframe with xsave,
//! ptrace finish) without depending on dump or on image parsing.

#![cfg(target_arch = "x86_64")]

use std::path::PathBuf;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use revenant::restore::plan::{
    AltStack, Backing, FdPlan, PageRun, ProcessPlan, Session, ThreadPlan, VmaPlan,
};
use revenant::restore::regs::{Fpu, Regs, X86Fpu, X86Regs};
use revenant::restore::restore_process;
use revenant_blob_abi::MmMap;

const CODE: u64 = 0x1000_0000;
const DATA: u64 = 0x1000_1000;
const MSG: &[u8] = b"hello from a restored process\n";

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

/// A PID nobody uses, from the top of the range.
fn free_pid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut pid = max - 1000 - (std::process::id() as i32 % 1000);
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

fn plan(dir: &std::path::Path, pid: i32, xmm0: [u8; 16]) -> ProcessPlan {
    let mut pages = vec![0u8; 8192];
    pages[..PROGRAM.len()].copy_from_slice(PROGRAM);
    pages[4096..4096 + MSG.len()].copy_from_slice(MSG);
    std::fs::write(dir.join("pages-1.img"), &pages).unwrap();
    std::fs::write(dir.join("out"), b"").unwrap();

    let mut legacy = [0u8; 512];
    legacy[0..2].copy_from_slice(&0x37fu16.to_le_bytes()); // fcw
    legacy[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // mxcsr
    legacy[160..176].copy_from_slice(&xmm0);
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
        pid,
        session: Session::Leader,
        comm,
        exe: None,
        cwd: dir.to_path_buf(),
        root: "/".into(),
        umask: 0o022,
        fds: vec![
            FdPlan {
                fd: 0,
                path: "/dev/null".into(),
                flags: nix::libc::O_RDONLY,
                pos: 0,
                cloexec: false,
            },
            FdPlan {
                fd: 1,
                path: dir.join("out"),
                flags: nix::libc::O_WRONLY | nix::libc::O_APPEND,
                pos: 0,
                cloexec: false,
            },
        ],
        vmas: vec![
            anon(CODE, (nix::libc::PROT_READ | nix::libc::PROT_EXEC) as u32),
            anon(DATA, (nix::libc::PROT_READ | nix::libc::PROT_WRITE) as u32),
        ],
        pages: dir.join("pages-1.img"),
        page_runs: vec![
            PageRun {
                addr: CODE,
                len: 4096,
                file_offset: 0,
            },
            PageRun {
                addr: DATA,
                len: 4096,
                file_offset: 4096,
            },
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
        threads: vec![ThreadPlan {
            tid: pid,
            regs: Regs::X86_64(X86Regs {
                ip: CODE,
                sp: DATA + 0x800,
                cs: 0x33,
                ss: 0x2b,
                flags: 0x202,
                r12: 42,
                r13: DATA,
                r14: MSG.len() as u64,
                ..Default::default()
            }),
            fpu: Some(Fpu::X86(Box::new(X86Fpu {
                legacy,
                xstate_bv: 0b11,
                components: vec![],
            }))),
            sigmask: 0,
            altstack: AltStack {
                sp: 0,
                flags: 2,
                size: 0,
            },
            clear_tid_addr: 0,
            robust_list: 0,
            robust_list_len: 0,
            rseq: None,
        }],
    }
}

#[test]
fn a_hand_made_process_runs_with_its_pid_registers_memory_fpu_and_fds() {
    let dir = scratch_dir("synthetic");
    let pid = free_pid();
    let xmm0 = *b"xmm0 survives!!\n";
    let restored = restore_process(&plan(&dir, pid, xmm0)).unwrap();
    assert_eq!(restored.pid, pid);
    assert!(restored.log.contains("restore done"), "{}", restored.log);
    let status = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        status,
        WaitStatus::Exited(Pid::from_raw(pid), 42),
        "log:\n{}",
        restored.log
    );
    let out = std::fs::read(dir.join("out")).unwrap();
    assert_eq!(out, [MSG, &xmm0].concat());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_pid_is_refused_before_anything_runs() {
    let dir = scratch_dir("taken");
    let me = std::process::id() as i32;
    let err = restore_process(&plan(&dir, me, [0; 16])).unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("PID {me} is in use")),
        "{err:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
