//! `revenant dump` of live C programs (`dumpees/`), each showing one
//! behaviour: the images' contents, and that the program runs on unchanged
//! with --leave-running (or is gone without it). x86_64 only: ptrace does not
//! exist under qemu-user.

#![cfg(target_arch = "x86_64")]

#[path = "dump_support.rs"]
#[allow(dead_code)]
mod support;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use revenant::dump::model::{Process, Tree};
use revenant::dump::{DumpOptions, dump};
use revenant::files::{FileKind, fd_type};
use revenant_images::ImageSet;
use revenant_test_watchdog as watchdog;
use support::{Dumpee, image_dir};

const NR_READ: i64 = 0;
const NR_POLL: i64 = 7;
const NR_PAUSE: i64 = 34;
const NR_NANOSLEEP: i64 = 35;
const NR_CLOCK_NANOSLEEP: i64 = 230;
const NR_RESTART_SYSCALL: i64 = 219;

fn leave_running() -> DumpOptions {
    DumpOptions { leave_running: true, ..DumpOptions::default() }
}

/// Dumps, then reads the images back with the image layer, validates the
/// set and checks it says what the dump found.
fn dump_ok(d: &Dumpee, test: &str, opts: &DumpOptions) -> (Tree, std::path::PathBuf) {
    let dir = image_dir(test);
    let out = dump(d.pid(), &dir, opts).unwrap_or_else(|e| panic!("dump of {}: {e:#}", d.pid()));
    if !opts.pages_only {
        check_images(&out.tree, &dir);
    }
    (out.tree, dir)
}

fn check_images(t: &Tree, dir: &std::path::Path) {
    let set = ImageSet::load(dir).unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()));
    set.validate("x86_64").unwrap_or_else(|e| panic!("validating {}: {e:#}", dir.display()));
    // No temporary files are left; the files CRIU's restore needs are there.
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(!n.starts_with('.'), "left behind: {n}");
    }
    for n in ["inventory.img", "pstree.img", "files.img", "seccomp.img", "timens-0.img", "cgroup.img"] {
        assert!(dir.join(n).exists(), "{n} missing");
    }
    assert_eq!(set.processes.len(), t.procs.len());
    assert_eq!(set.files.len(), t.files.entries.len());
    for (ip, p) in set.processes.iter().zip(&t.procs) {
        assert_eq!((ip.pstree.pid, ip.pstree.ppid), (p.pid as u32, p.ppid as u32));
        assert_eq!(ip.pstree.threads, p.threads.iter().map(|t| t.tid as u32).collect::<Vec<_>>());
        assert_eq!(ip.mm.vmas.len(), p.vmas.len());
        assert_eq!(ip.mm.exe_file_id, p.mm.exe_file_id);
        assert_eq!(ip.pagemap.len(), p.pagemap.len());
        assert_eq!(ip.fds.len(), p.fds.len());
        let pages: u64 = ip.pagemap.iter().map(|e| e.nr_pages.unwrap_or(0)).sum();
        assert_eq!(std::fs::metadata(&ip.pages).unwrap().len(), pages * 4096);
        for (it, th) in ip.threads.iter().zip(&p.threads) {
            let ti = it.core.thread_info.as_ref().expect("thread_info");
            assert_eq!((ti.gpregs.ip, ti.gpregs.sp, ti.gpregs.ax), (th.regs.rip, th.regs.rsp, th.regs.rax));
            assert_eq!(ti.fpregs.xsave.as_ref().map(|x| x.xstate_bv), Some(th.fpu.xstate_bv));
        }
        for th in &p.threads {
            // glibc registers rseq with its RSEQ_SIG; a restored thread
            // must register it again with the same one.
            if let Some((_, _, sig)) = th.rseq {
                assert_eq!(sig, 0x5305_3053, "task {}: rseq signature", th.tid);
            }
        }
        assert!(ip.threads[0].core.tc.is_some(), "the leader's core has the task core");
        assert!(ip.threads[1..].iter().all(|t| t.core.tc.is_none()));
    }
}

/// The file entry with this id.
fn file(t: &Tree, id: u32) -> &FileKind {
    &t.files.entries.iter().find(|e| e.id == id).expect("file id").kind
}

fn reg_name(t: &Tree, id: u32) -> String {
    match file(t, id) {
        FileKind::Reg(r) => r.name.clone(),
        other => panic!("file {id} is {other:?}"),
    }
}

/// A thread stopped in a read() the kernel will restart: the dump shows it
/// about to issue read() again.
fn assert_rewound_read(p: &Process, tid: i32) {
    let t = p.threads.iter().find(|t| t.tid == tid).unwrap();
    assert_eq!(t.regs.orig_rax, NR_READ as u64);
    assert_eq!(t.regs.rax, NR_READ as u64, "rax should be the syscall number again");
    let insn = revenant::dump::memory::read_bytes(p.pid, t.regs.rip, 2).unwrap();
    assert_eq!(insn, [0x0f, 0x05], "rip should point at the syscall instruction");
}

#[test]
fn single_threaded_process_runs_on_after_leave_running() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("single", &["1024"]);
    d.expect("ready");
    d.wait_in_syscall(&[NR_READ]);
    let (t, dir) = dump_ok(&d, "single", &leave_running());
    assert_eq!(d.ping(), "pong 1 ok=1");

    assert_eq!(t.procs.len(), 1);
    let p = &t.procs[0];
    assert_eq!((p.pid, p.ppid, p.sid, p.pgid), (d.pid(), 0, d.pid(), d.pid()));
    assert_eq!(p.threads.len(), 1);
    assert_rewound_read(p, d.pid());
    assert!(reg_name(&t, p.mm.exe_file_id).ends_with("/single"));
    assert_eq!(p.task.sigactions.len(), 62);
    assert_eq!(p.task.rlimits.len(), 16);
    assert!(p.mm.brk >= p.mm.start_brk && p.mm.start_code < p.mm.end_code);
    // Without the closing AT_NULL pair, as CRIU writes it.
    assert!(p.mm.auxv.len() <= 44 && p.mm.auxv.chunks(2).all(|kv| kv[0] != 0), "{:?}", p.mm.auxv);

    // The 1 MiB heap pattern is in the pages image, in pagemap order.
    let pages = std::fs::read(dir.join("pages-1.img")).unwrap();
    let total: u64 = p.pagemap.iter().map(|r| r.nr_pages).sum();
    assert_eq!(pages.len() as u64, total * 4096);
    assert!(total >= 256, "{total} pages");
    let word = |i: usize| u64::from_ne_bytes(pages[i * 8..i * 8 + 8].try_into().unwrap());
    let k = 0x9E37_79B9_7F4A_7C15u64;
    let hit = (0..pages.len() / 8 - 1).find(|&i| word(i) == k && word(i + 1) == k.wrapping_mul(2));
    let first = hit.expect("the heap pattern is not in pages-1.img");
    assert!((0..1000).all(|j| word(first - 1 + j) == (j as u64).wrapping_mul(k)));
    // vvar and vsyscall never have pages; the vDSO does.
    let vdso = p.vmas.iter().find(|v| v.vma.name == "[vdso]").unwrap();
    assert!(p.pagemap.iter().any(|r| r.vaddr == vdso.vma.start));
    for v in p.vmas.iter().filter(|v| v.vma.name.starts_with("[vvar") || v.vma.name == "[vsyscall]") {
        assert!(!p.pagemap.iter().any(|r| r.vaddr >= v.vma.start && r.vaddr < v.vma.end));
    }
}

#[test]
fn without_leave_running_the_tree_is_killed() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("single", &["64"]);
    d.expect("ready");
    dump_ok(&d, "killed", &DumpOptions::default());
    let st = d.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "{st:?}");
}

#[test]
fn threads_each_have_their_state() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("threads", &[]);
    d.expect("ready");
    let pid = d.pid();
    // All four threads exist and block in read() (the waiters have set
    // their masks by then).
    d.wait_threads_in_syscall(4, &[NR_READ]);
    let (t, _) = dump_ok(&d, "threads", &leave_running());
    assert_eq!(d.ping(), "pong 1 ok=1");
    let p = &t.procs[0];
    assert_eq!(p.threads.len(), 4);
    assert_eq!(p.threads[0].tid, pid);
    // Each waiter blocked its own real-time signal; glibc's SIGRTMIN is 34.
    let mut masks: Vec<u64> = p.threads[1..].iter().map(|t| t.blk_sigset).collect();
    masks.sort_unstable();
    for (i, m) in masks.iter().enumerate() {
        let bit = 1u64 << (34 + i as u32);
        assert!(m & bit != 0, "thread mask {m:#x} lacks signal {}", 35 + i);
    }
    // Threads have their own TLS, stacks and tid addresses.
    let mut fs: Vec<u64> = p.threads.iter().map(|t| t.regs.fs_base).collect();
    fs.dedup();
    assert_eq!(fs.len(), 4);
    assert!(p.threads.iter().all(|t| t.clear_tid_addr != 0 && t.futex_rla != 0));
}

#[test]
fn a_child_is_dumped_with_its_parent() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("child", &[]);
    let child: i32 = d.expect("child").split_whitespace().nth(1).unwrap().parse().unwrap();
    d.expect("ready");
    let (t, _) = dump_ok(&d, "child", &leave_running());
    assert_eq!(d.ping(), "pong 1 ok=1");
    assert_eq!(t.procs.len(), 2);
    assert_eq!((t.procs[1].pid, t.procs[1].ppid), (child, d.pid()));
    assert_eq!(t.procs[1].sid, d.pid());
    assert_ne!(t.procs[0].kobj_id, t.procs[1].kobj_id);
    assert_eq!(t.procs[1].pages_id, 2);
    // The inherited stdout is one open file for both.
    let fd1 = |p: &Process| p.fds.iter().find(|f| f.fd == 1).unwrap().id;
    assert_eq!(fd1(&t.procs[0]), fd1(&t.procs[1]));
    assert!(std::path::Path::new(&format!("/proc/{child}")).exists());
    let sc = std::fs::read_to_string(format!("/proc/{child}/syscall")).unwrap();
    assert!(sc.starts_with(&format!("{NR_PAUSE} ")) || sc.starts_with("running"), "{sc}");
}

#[test]
fn regular_files_with_positions_and_shared_descriptions() {
    let _w = watchdog::start();
    let dir = image_dir("files-data");
    let data = dir.join("data");
    std::fs::write(&data, b"0123456789").unwrap();
    let mut d = Dumpee::start("files", &[data.to_str().unwrap()]);
    d.expect("ready");
    let (t, _) = dump_ok(&d, "files", &leave_running());
    assert_eq!(d.ping(), "pong 1 ok=1");
    let p = &t.procs[0];
    let fd = |n: u32| *p.fds.iter().find(|f| f.fd == n).unwrap_or_else(|| panic!("fd {n}"));
    let (f3, f10, f7) = (fd(3), fd(10), fd(7));
    assert_eq!(f3.id, f10.id, "dup'd fds share one open file");
    assert_eq!((f3.kind, f3.cloexec, f7.cloexec), (fd_type::REG, false, true));
    match file(&t, f3.id) {
        FileKind::Reg(r) => {
            assert_eq!(r.name, data.to_str().unwrap());
            assert_eq!((r.pos, r.size, r.flags & 3), (5, Some(10), 2 /* O_RDWR */));
        }
        other => panic!("{other:?}"),
    }
    match file(&t, f7.id) {
        FileKind::Reg(r) => assert_eq!((r.name.as_str(), r.size, r.flags & 3), ("/dev/null", None, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(reg_name(&t, p.root_id), "/");
    assert_eq!(reg_name(&t, p.cwd_id), std::env::current_dir().unwrap().to_str().unwrap());
}

#[test]
fn a_pipe_and_its_buffered_data() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("pipe", &[]);
    d.expect("ready");
    // A full dump carries the buffered bytes in pipes-data.img.
    let full = image_dir("pipe-full");
    dump(d.pid(), &full, &leave_running()).unwrap();
    assert_eq!(d.ping(), "pong 1 ok=1");
    match revenant_images::Image::read(&full.join("pipes-data.img")).unwrap() {
        // One entry per pipe (the dumpee's stdin and stdout are pipes too),
        // each with its capacity, as CRIU writes them.
        revenant_images::Image::PipesData(v) => {
            assert!(v.iter().any(|(_, d)| d == b"buffered"), "{v:?}");
            assert!(v.iter().all(|(e, _)| e.size == Some(65536)), "{v:?}");
        }
        other => panic!("{other:?}"),
    }
    // What the dump found, without the images.
    let opts = DumpOptions { pages_only: true, ..leave_running() };
    let (t, _) = dump_ok(&d, "pipe", &opts);
    assert_eq!(d.ping(), "pong 2 ok=1");
    let p = &t.procs[0];
    let pipe_of = |n: u32| {
        let f = p.fds.iter().find(|f| f.fd == n).unwrap();
        assert_eq!(f.kind, fd_type::PIPE);
        match file(&t, f.id) {
            FileKind::Pipe(x) => x.clone(),
            other => panic!("{other:?}"),
        }
    };
    let (r, w) = (pipe_of(3), pipe_of(4));
    assert_eq!(r.pipe_id, w.pipe_id);
    assert_eq!((r.flags & 3, w.flags & 3), (0, 1));
    let data = t.files.pipe_data.iter().find(|x| x.pipe_id == r.pipe_id).expect("pipe data");
    assert_eq!(data.data, b"buffered");
}

#[test]
fn a_process_in_nanosleep_gets_eintr_and_keeps_its_signal_state() {
    let _w = watchdog::start();
    let d = Dumpee::start("sleeper", &[]);
    d.expect("ready");
    d.wait_in_syscall(&[NR_NANOSLEEP, NR_CLOCK_NANOSLEEP, NR_RESTART_SYSCALL]);
    let (t, _) = dump_ok(&d, "sleeper", &leave_running());
    let p = &t.procs[0];
    let r = &p.threads[0].regs;
    // Either the sleep was interrupted (restart block: -EINTR, which the
    // program's loop handles) or the thread was between calls.
    if [NR_NANOSLEEP, NR_CLOCK_NANOSLEEP].contains(&(r.orig_rax as i64)) {
        assert_eq!(r.rax as i64, -4, "{r:x?}");
    }
    // Signals 1..=64 without SIGKILL (9) and SIGSTOP (19): SIGUSR1 (10) is
    // the ninth entry.
    let usr1 = p.task.sigactions[8];
    assert_ne!(usr1.handler, 0);
    const SA_ONSTACK: u64 = 0x0800_0000;
    const SA_RESTART: u64 = 0x1000_0000;
    assert_eq!(usr1.flags & (SA_ONSTACK | SA_RESTART), SA_ONSTACK | SA_RESTART);
    // SIGPIPE (13) ignored with its flags; SIGCHLD (17) at its default
    // but with SA_NOCLDSTOP, which acts there; SIGUSR2 (12) untouched.
    let (pipe, chld, usr2) = (p.task.sigactions[11], p.task.sigactions[15], p.task.sigactions[10]);
    assert_eq!((pipe.handler, pipe.flags & SA_RESTART), (1, SA_RESTART), "{pipe:x?}");
    assert_eq!((chld.handler, chld.flags & 1), (0, 1), "{chld:x?}");
    assert_eq!((usr2.handler, usr2.flags), (0, 0), "{usr2:x?}");
    assert_eq!(p.task.blk_sigset, 1 << (12 - 1), "SIGUSR2 blocked");
    assert_eq!(p.threads[0].sas.1, 65536);
    // It carries on ticking.
    let n: u64 = d.expect("tick").split_whitespace().nth(1).unwrap().parse().unwrap();
    let m: u64 = d.expect("tick").split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(m, n + 1);
}

/// A poll() the dump interrupted is repeated, not failed with EINTR (the
/// kernel keeps its restart in a restart block no restore can carry).
#[test]
fn a_process_in_poll_repeats_its_poll() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("poller", &[]);
    d.expect("ready");
    d.wait_in_syscall(&[NR_POLL, NR_RESTART_SYSCALL]);
    let (t, _) = dump_ok(&d, "poller", &leave_running());
    let r = &t.procs[0].threads[0].regs;
    if r.orig_rax as i64 == NR_POLL {
        assert_eq!(r.rax as i64, NR_POLL, "rewound to repeat the call: {r:x?}");
    }
    assert_eq!(d.ping(), "pong 1 ok=1");
    assert_eq!(d.ping(), "pong 2 ok=1");
}

#[test]
fn a_failed_dump_leaves_the_process_running_and_names_the_fd() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("socket", &[]);
    d.expect("ready");
    d.wait_in_syscall(&[NR_READ]);
    let dir = image_dir("socket");
    let err = format!("{:#}", dump(d.pid(), &dir, &leave_running()).unwrap_err());
    assert!(err.contains("fd 3") && err.contains("socket"), "{err}");
    // Nothing that looks like images was left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    // Untraced, still in its read, and answering.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "{status}");
    d.wait_in_syscall(&[NR_READ]);
    assert_eq!(d.ping(), "pong 1 ok=1");
    // And it can be failed again the same way (nothing stuck half-done).
    assert!(dump(d.pid(), &dir, &leave_running()).is_err());
    assert_eq!(d.ping(), "pong 2 ok=1");
}

/// A dump that runs out of its `--timeout` fails saying so, and the
/// program runs on as it was; with time enough the same dump works.
#[test]
fn a_dump_out_of_time_leaves_the_program_running() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("threads", &[]);
    d.expect("ready");
    let dir = image_dir("timeout");
    let opts = DumpOptions { timeout: Some(std::time::Duration::from_micros(1)), ..leave_running() };
    let err = format!("{:#}", dump(d.pid(), &dir, &opts).unwrap_err());
    assert!(err.contains("took longer than --timeout"), "{err}");
    assert!(!dir.join("inventory.img").exists(), "{err}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    assert!(status.contains("TracerPid:\t0\n") && !status.contains("State:\tt"), "{status}");
    assert!(d.ping().starts_with("pong 1"), "the program does not answer after the failed dump");
    let opts = DumpOptions { timeout: Some(std::time::Duration::from_secs(60)), ..leave_running() };
    dump(d.pid(), &dir, &opts).unwrap();
    assert!(d.ping().starts_with("pong 2"));
}

#[test]
fn a_dump_that_cannot_write_kills_nothing_and_releases_the_whole_tree() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("child", &[]);
    let child: i32 = d.expect("child").split_whitespace().nth(1).unwrap().parse().unwrap();
    d.expect("ready");
    // A directory sits where the first image goes, and a dump never removes
    // one: the first write fails with the tree frozen.
    let dir = image_dir("cannot-write");
    std::fs::create_dir_all(dir.join(".pages-1.img.part/keep")).unwrap();
    let err = dump(d.pid(), &dir, &DumpOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("pages-1.img"), "{err:#}");
    for pid in [d.pid(), child] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("TracerPid:\t0\n") && !status.contains("State:\tZ"), "{pid}: {status}");
    }
    assert_eq!(d.ping(), "pong 1 ok=1");
}

/// The CRIU to run: `$CRIU`, or `criu` on PATH.
fn criu() -> std::ffi::OsString {
    std::env::var_os("CRIU").unwrap_or_else(|| "criu".into())
}

/// `criu --version` as (major, minor).
fn criu_version() -> Option<(u32, u32)> {
    let out = std::process::Command::new(criu()).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.lines().find_map(|l| l.strip_prefix("Version: "))?;
    let mut it = v.trim().split('.').map(|n| n.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// CRIU itself restores revenant's images of a single-threaded and of a
/// multi-threaded program, which then carry on. It needs a CRIU of 4.1 or
/// newer (older ones cannot handle `[vvar_vclock]` on Linux 6.13+), which
/// CI does not have.
#[test]
#[ignore = "needs CRIU 4.1+: CRIU=/path/to/criu cargo test -p revenant-e2e --test dump -- --ignored criu_restores"]
fn criu_restores_our_images() {
    let _w = watchdog::start();
    match criu_version() {
        Some(v) if v >= (4, 1) => {}
        Some((a, b)) => panic!("{:?} is CRIU {a}.{b}; 4.1 or newer is needed", criu()),
        None => panic!("no CRIU at {:?}: set CRIU to its path", criu()),
    }
    for name in ["sleeper", "tickthreads"] {
        let dir = image_dir(&format!("criu-{name}"));
        let out = dir.join("out");
        // Files only: a restore cannot reconnect pipes to this test.
        let mut cmd = std::process::Command::new(support::build(name));
        cmd.stdin(std::process::Stdio::null()).stdout(std::fs::File::create(&out).unwrap());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        // Killed however the test ends; restored, it is CRIU's child.
        let _kill = KillOnDrop(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // sleeper writes "tick N", tickthreads "tick N SUM".
        let ticked = |s: &str| s.lines().any(|l| l == "tick 1" || l.starts_with("tick 1 "));
        while !ticked(&std::fs::read_to_string(&out).unwrap()) {
            assert!(std::time::Instant::now() < deadline, "{name} does not tick");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        dump(pid, &images, &DumpOptions::default()).unwrap();
        child.wait().unwrap();
        let ticks = |s: &str| s.lines().filter(|l| l.starts_with("tick")).count();
        let before = ticks(&std::fs::read_to_string(&out).unwrap());
        let st = std::process::Command::new(criu())
            .args(["restore", "-d", "-D"])
            .arg(&images)
            .args(["-o", "restore.log", "-v4"])
            .status()
            .unwrap();
        assert!(st.success(), "criu restore failed; see {}/restore.log", images.display());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while ticks(&std::fs::read_to_string(&out).unwrap()) <= before + 1 {
            assert!(std::time::Instant::now() < deadline, "the restored {name} does not tick");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Sends SIGKILL to a PID when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn a_thread_interrupted_in_user_code_is_left_as_it_was() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("spin", &[]);
    d.expect("ready");
    let pid = d.pid();
    let (t, _) = dump_ok(&d, "spin", &leave_running());
    assert_eq!(d.ping(), "pong 1 ok=1");
    let main = &t.procs[0].threads[0];
    assert_eq!(main.tid, pid);
    assert_eq!(main.regs.orig_rax, u64::MAX, "not in a system call: {:x?}", main.regs);
    // Still computing: its CPU time keeps growing.
    let utime = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
        s[s.rfind(')').unwrap() + 2..].split_whitespace().nth(11).unwrap().parse::<u64>().unwrap()
    };
    let before = utime();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while utime() == before {
        assert!(std::time::Instant::now() < deadline, "the spinning thread stopped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A process a signal had stopped is dumped with its stop signal and,
/// left running, is stopped again afterwards; continued, it answers.
#[test]
fn a_stopped_process_is_dumped_and_left_stopped() {
    let _w = watchdog::start();
    let mut d = Dumpee::start("single", &["1024"]);
    d.expect("ready");
    d.wait_in_syscall(&[NR_READ]);
    let pid = Pid::from_raw(d.pid());
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let state = || revenant::procfs::stat(d.pid(), d.pid()).unwrap().state;
    for _ in 0..100 {
        if state() == 'T' {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (t, _) = dump_ok(&d, "stopped", &leave_running());
    assert_eq!(t.procs[0].stop_signal, Some(Signal::SIGSTOP as u32));
    // Detached with SIGSTOP queued, it stops again; let run, it would sit
    // in read (S) and never get there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state() != 'T' && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(state(), 'T', "the dump let a stopped process run");
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(d.ping(), "pong 1 ok=1");
}

/// What a dump cannot keep (tables clone shares, a pending namespace, a
/// /proc file of the tree, sealed memory, memory-deny-write-execute, a
/// speculation control of its own, a NUMA policy (the process's, or an area's found either way the
/// dump looks), memory locked on fault, a named anonymous area, a
/// core scheduling cookie, messages waiting on a socket that got each
/// one's sender or arrival time) is refused by name; the program runs on.
#[test]
fn state_a_dump_cannot_keep_is_refused_by_name() {
    let _w = watchdog::start();
    for (mode, want) in [
        ("files", "share one file descriptor table (CLONE_FILES)"),
        ("fs", "share one cwd, root and umask (CLONE_FS)"),
        ("timens", "in another time_for_children namespace"),
        ("procfile", "is a /proc file of a thread, or of a process of the tree neither its ancestor nor its child,"),
        ("mseal", "sealed (mseal) memory"),
        ("mdwe", "PR_SET_MDWE"),
        ("speculation", "its own speculation control"),
        ("mempolicy", "follows the NUMA policy bind"),
        ("mbind", "follows the NUMA policy bind (mbind)"),
        ("mbindbig", "follows the NUMA policy bind (mbind)"),
        ("onfault", "memory locked on fault (MLOCK_ONFAULT)"),
        ("anonname", "named anonymous memory (PR_SET_VMA_ANON_NAME)"),
        ("corecookie", "a core scheduling cookie (PR_SCHED_CORE)"),
        ("passcred", "gets each one's sender (SO_PASSCRED)"),
        ("timestamp", "gets each one's arrival time (SO_TIMESTAMP)"),
    ] {
        let dir = image_dir(&format!("sharing-{mode}"));
        let d = Dumpee::start("sharing", &[mode]);
        if d.line() == "unsupported" {
            eprintln!("{mode}: this kernel lacks it; skipped");
            let _ = nix::sys::signal::killpg(Pid::from_raw(d.pid()), Signal::SIGKILL);
            continue;
        }
        let err = format!("{:#}", dump(d.pid(), &dir, &leave_running()).unwrap_err());
        assert!(err.contains(want), "{mode}: {err}");
        // Refused after the images were written (the restore's own checks,
        // run by the dump): none of them is left to look like a checkpoint.
        assert!(!dir.join("inventory.img").exists(), "{mode}: an inventory was left");
        let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        assert!(status.contains("TracerPid:\t0\n") && !status.contains("State:\tT"), "{mode}: {status}");
        assert!(!status.contains("State:\tt") && !status.contains("State:\tZ"), "{mode}: {status}");
        // The CLONE_FILES/CLONE_FS child goes with its parent's session.
        let _ = nix::sys::signal::killpg(Pid::from_raw(d.pid()), Signal::SIGKILL);
    }
}

/// A PID nobody has is named as such, not taken for a process in
/// another namespace (every namespace of a missing process reads as
/// missing).
#[test]
fn a_pid_nobody_has_is_refused_as_missing() {
    let _w = watchdog::start();
    // Above pid_max: never a process.
    let pid = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse::<i32>().unwrap() + 1;
    let dir = image_dir("missing-pid");
    let err = format!("{:#}", dump(pid, &dir, &leave_running()).unwrap_err());
    assert!(err.contains(&format!("there is no process {pid}")), "{err}");
    assert!(!err.contains("namespace"), "{err}");
}
