//! CRIU 4.2's own images (../shared/fixtures/criu-4.2) through `revenant
//! restore`: checked, planned, and restored when this machine can run them.

#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};

use revenant::restore::from_images::PlanOptions;
use revenant::restore::{Options, run};
use revenant_images::{Image, ImageSet};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/criu-4.2")
}

/// `revenant restore -d -D dir`, as the library runs it; the error text as
/// the command would print it.
fn restore_detached(dir: &Path) -> Result<(), String> {
    let opts = Options { detach: true, ..Default::default() };
    run(dir, &opts).map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// The fixtures' PIDs are fixed: tests that restore them, or plan them
/// (which checks that the PIDs are free), take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch copy of fixture image set `set`, for a test to damage; the
/// binaries its files name are in place.
fn copy_of(set: &str, test: &str) -> PathBuf {
    install_binaries();
    let dir = std::env::temp_dir().join(format!("revenant-fixture-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixtures().join("images").join(set)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// A scratch image set: fixture set `set` as `change` leaves it, written by
/// the image layer (so files named by PID follow a changed PID).
fn changed_copy(set: &str, test: &str, change: impl FnOnce(&mut ImageSet)) -> PathBuf {
    install_binaries();
    let mut images = ImageSet::load(&fixtures().join("images").join(set)).unwrap();
    change(&mut images);
    let dir = std::env::temp_dir().join(format!("revenant-fixture-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    images.write(&dir).unwrap();
    dir
}

/// The fixture binaries must be where they ran (see the fixtures' README).
fn install_binaries() {
    let dst = Path::new("/var/tmp/revenant-fixtures");
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(fixtures().join("bin")).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if std::fs::metadata(&to).map(|m| m.len()).ok() != Some(e.metadata().unwrap().len()) {
            let _ = std::fs::remove_file(&to);
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The machine that dumped the fixtures allowed 96365 processes
/// (RLIMIT_NPROC's default follows memory); where ours is lower and we may
/// not raise it, `--clamp-limits` lowers theirs to ours.
fn restore_clamped(dir: &Path) -> Result<(), String> {
    let opts =
        Options { detach: true, plan: PlanOptions { clamp_limits: true, ..Default::default() }, ..Default::default() };
    run(dir, &opts).map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// Waits until `file` has a line `pred` likes; returns the text.
fn wait_for_line(file: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = std::fs::read_to_string(file).unwrap_or_default();
        if seen.lines().any(&pred) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    seen
}

/// Kills a restored process and waits until its PID is free (a detached
/// restore's root is our child).
fn kill(pid: i32) {
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(p, None);
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn loop_fixtures_restore_and_carry_on() {
    let _one = one_at_a_time();
    install_binaries();
    for (set, pid) in [("loop-static", 10562), ("loop-dynamic", 10564), ("shm-ipcns", 10566)] {
        let out_file = format!("/var/tmp/revenant-fixtures/{set}.out");
        let _ = std::fs::remove_file(&out_file);
        let images = fixtures().join("images").join(set);
        restore_clamped(&images).unwrap_or_else(|e| panic!("{set}: {e}"));
        // A tick with a completed memory check.
        let seen = wait_for_line(&out_file, |l| l.contains("check=ok") && l.starts_with(&format!("pid={pid} ")));
        kill(pid);
        let first = seen.lines().next().unwrap_or("");
        assert!(first.starts_with(&format!("pid={pid} tick=")), "{set}: {seen}");
        let tick: u64 = first.split("tick=").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
        assert!(tick > 1, "{set}: the counter restarted instead of carrying on");
        assert!(!seen.contains("BAD"), "{set}: memory check failed: {seen}");
    }
}

/// Without `--clamp-limits`, a hard limit above ours that we may not raise
/// is refused before anything runs, naming the limit and the way out.
#[test]
fn a_hard_limit_above_ours_is_refused_unless_clamped() {
    let _one = one_at_a_time();
    let dir = copy_of("loop-static", "limits");
    let Image::Core(mut entries) = Image::read(&dir.join("core-10562.img")).unwrap() else { panic!("not a core") };
    let rls = &mut entries[0].tc.as_mut().unwrap().rlimits.as_mut().unwrap().rlimits;
    for (i, rl) in rls.iter_mut().enumerate() {
        // Ours everywhere but RLIMIT_NOFILE, where no hard limit without
        // CAP_SYS_RESOURCE comes near u64::MAX - 1.
        let mut ours = [0u64; 2];
        // SAFETY: prlimit64 writes two u64s into a live local.
        unsafe { nix::libc::syscall(nix::libc::SYS_prlimit64, 0, i, std::ptr::null::<u64>(), ours.as_mut_ptr()) };
        (rl.cur, rl.max) = if i == 7 { (1024, u64::MAX - 1) } else { (ours[0], ours[1]) };
    }
    std::fs::remove_file(dir.join("core-10562.img")).unwrap();
    Image::Core(entries).write(&dir.join("core-10562.img")).unwrap();
    let err = restore_detached(&dir).unwrap_err();
    assert!(err.contains("rlimit 7 of PID 10562") && err.contains("--clamp-limits"), "{err}");
    assert!(!Path::new("/proc/10562").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the restore of `shm-ipcns` will do, whether or not this CPU can
/// run it: a new IPC namespace with CRIU's sysctls, the segment with its
/// id, key, size, mode and pages, attached read-only and read-write.
#[test]
fn the_shm_ipcns_fixture_is_planned_with_its_namespace_and_segment() {
    let _one = one_at_a_time();
    use revenant::restore::from_images::{PlanOptions, plan_dir};
    use revenant::restore::plan::{Backing, ShmAttach};
    use revenant::restore::sysv::Contents;
    let opts = PlanOptions { skip_cpu_check: true, ..Default::default() };
    let plan = plan_dir(&fixtures().join("images/shm-ipcns"), &opts).unwrap();
    let ipc = &plan.ipc;
    assert!(ipc.new_namespace);
    assert!(ipc.sysctls.contains(&("kernel/shmmni".into(), "4096".into())), "{:?}", ipc.sysctls);
    let [s] = &ipc.segments[..] else { panic!("{:?}", ipc.segments) };
    assert_eq!((s.id, s.key, s.size, s.mode, s.removed), (0, 0x5eed, 8 * 4096, 0o640, false));
    let Contents::Pages { file, runs } = &s.contents else { panic!("{:?}", s.contents) };
    assert!(file.ends_with("pages-2.img"));
    assert_eq!((runs[0].addr, runs[0].len, runs[0].file_offset), (0, 8 * 4096, 0));
    let shm: Vec<&Backing> =
        plan.processes[0].vmas.iter().map(|v| &v.backing).filter(|b| matches!(b, Backing::SysvShm { .. })).collect();
    let attach = |read_only| Backing::SysvShm { id: 0, attach: Some(ShmAttach { len: 8 * 4096, read_only }) };
    assert_eq!(shm, [&attach(true), &attach(false)]);
}

#[test]
fn a_missing_or_damaged_image_is_named() {
    let _one = one_at_a_time();
    let dir = copy_of("loop-static", "bad");
    std::fs::remove_file(dir.join("mm-10562.img")).unwrap();
    let err = restore_detached(&dir).unwrap_err();
    assert!(err.contains("mm-10562.img"), "{err}");
    let core = dir.join("core-10562.img");
    let data = std::fs::read(fixtures().join("images/loop-static/core-10562.img")).unwrap();
    std::fs::copy(fixtures().join("images/loop-static/mm-10562.img"), dir.join("mm-10562.img")).unwrap();
    std::fs::write(&core, &data[..data.len() / 2]).unwrap();
    let err = restore_detached(&dir).unwrap_err();
    assert!(err.contains("core-10562.img") && err.contains("runs past the end"), "{err}");
    std::fs::copy(fixtures().join("images/loop-static/core-10562.img"), &core).unwrap();
    // Without its fds' image the program would come back with none.
    std::fs::remove_file(dir.join("fdinfo-2.img")).unwrap();
    let err = restore_detached(&dir).unwrap_err();
    assert!(err.contains("ids-10562.img: entry 0: files_id 2: fdinfo-2.img does not exist"), "{err}");
    assert!(!Path::new("/proc/10562").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An area no x86_64 kernel maps (2^56 is past 5-level paging's end too)
/// is refused by the plan, not by the blob after the point of no return.
#[test]
fn an_area_beyond_user_space_is_refused_before_anything_runs() {
    let _one = one_at_a_time();
    let dir = changed_copy("loop-static", "user-end", |s| {
        let vmas = &mut s.processes[0].mm.vmas;
        // Between the stack and the vsyscall page, which stays accepted.
        let mut v = vmas[10].clone();
        (v.start, v.end) = (1 << 56, (1 << 56) + 0x1000);
        vmas.insert(11, v);
    });
    let err = restore_detached(&dir).unwrap_err();
    assert!(
        err.contains(
            "mm-10562.img: entry 0: vmas[11].start 0x100000000000000: beyond the end of this machine's user \
             address space"
        ),
        "{err}"
    );
    assert!(!Path::new("/proc/10562").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap()
}

/// A PID or TID the kernel cannot hand out here is refused by the plan,
/// with the limit, instead of by clone3 once part of the tree runs.
#[test]
fn pids_and_tids_at_or_above_pid_max_are_refused_before_anything_runs() {
    let _one = one_at_a_time();
    let max = pid_max();
    let dir = changed_copy("loop-static", "pid-max", |s| {
        let p = &mut s.processes[0];
        (p.pstree.pid, p.pstree.threads[0], p.threads[0].tid) = (max, max, max);
        (p.pstree.pgid, p.pstree.sid) = (max, max);
    });
    assert!(dir.join(format!("core-{max}.img")).exists());
    let err = restore_detached(&dir).unwrap_err();
    let want = format!("pstree.img: entry 0: pid {max}: not below the limit of {max} of this PID namespace");
    assert!(err.contains(&want), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    let dir = changed_copy("loop-static", "tid-max", |s| {
        let p = &mut s.processes[0];
        let mut t = p.threads[0].clone();
        t.tid = max + 7;
        t.core.tc = None;
        p.threads.push(t);
        p.pstree.threads.push(max + 7);
    });
    let err = restore_detached(&dir).unwrap_err();
    assert!(
        err.contains(&format!("pstree.img: entry 0: threads[1] {}: not below the limit of {max}", max + 7)),
        "{err}"
    );
    assert!(!Path::new("/proc/10562").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shell and its `sleep` child come back as a tree; the child finishes
/// its sleep and the shell reaps it and goes on counting.
#[test]
fn the_shell_and_its_child_restore_as_a_tree_and_carry_on() {
    let _one = one_at_a_time();
    install_binaries();
    let out_file = "/var/tmp/revenant-fixtures/sh-loop.out";
    let _ = std::fs::remove_file(out_file);
    let images = fixtures().join("images/sh-loop");
    restore_clamped(&images).unwrap();
    let stat = std::fs::read_to_string("/proc/10653/stat").unwrap_or_default();
    let text = wait_for_line(out_file, |_| false);
    let reaped = !Path::new("/proc/10653").exists();
    for pid in [10653, 10569] {
        kill(pid);
    }
    // Right after the restore the sleep is the shell's child again.
    let ppid = stat.rsplit_once(") ").and_then(|s| s.1.split(' ').nth(1));
    assert_eq!(ppid, Some("10569"), "{stat}");
    assert!(reaped, "the shell did not reap its restored child");
    let n: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(n.len() >= 20 && n[0] > 1 && n.windows(2).all(|w| w[1] == w[0] + 1), "{text}");
}

/// A thread in seccomp filter mode whose filters are not in the images is
/// refused before anything runs: restoring it would lift its sandbox.
#[test]
fn a_sandboxed_thread_without_its_filters_is_refused() {
    let _one = one_at_a_time();
    for (filter, want) in [
        (None, "core-10562.img: entry 0: thread_core.seccomp_filter is missing"),
        (Some(3), "core-10562.img: entry 0: thread_core.seccomp_filter: filter 3 is not in seccomp.img (0 filters)"),
    ] {
        let dir = copy_of("loop-static", "seccomp");
        let core = dir.join("core-10562.img");
        let Image::Core(mut entries) = Image::read(&core).unwrap() else { panic!("not a core image") };
        let tc = entries[0].thread_core.as_mut().unwrap();
        (tc.seccomp_mode, tc.seccomp_filter) = (Some(2), filter);
        std::fs::remove_file(&core).unwrap();
        Image::Core(entries).write(&core).unwrap();
        let err = restore_detached(&dir).unwrap_err();
        assert!(err.contains(want), "{err}");
        assert!(!Path::new("/proc/10562").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
