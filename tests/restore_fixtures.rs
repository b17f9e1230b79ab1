//! CRIU 4.2's own images (../shared/fixtures/criu-4.2) through `revenant
//! restore`: checked, planned, and restored when this machine can run them.

#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};

use revenant::restore::{Options, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/criu-4.2")
}

/// `revenant restore -d -D dir`, as the library runs it; the error text as
/// the command would print it.
fn restore_detached(dir: &Path) -> Result<(), String> {
    let opts = Options { detach: true, ..Default::default() };
    run(dir, &opts).map(|_| ()).map_err(|e| format!("{e:#}"))
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

#[test]
fn loop_fixtures_restore_or_are_refused_for_this_cpu_before_anything_runs() {
    install_binaries();
    for (set, pid) in [("loop-static", 10562), ("loop-dynamic", 10564), ("shm-ipcns", 10566)] {
        let out_file = format!("/var/tmp/revenant-fixtures/{set}.out");
        let _ = std::fs::remove_file(&out_file);
        let images = fixtures().join("images").join(set);
        if let Err(err) = restore_detached(&images) {
            // A CPU without the dumping CPU's AVX-512 state cannot run the
            // code glibc picked for it: refused, naming file and field, and
            // no process was created.
            assert!(err.contains("XSAVE features") && err.contains(&format!("core-{pid}.img")), "{set}: {err}");
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{set}: a process was left behind");
            continue;
        }
        // It runs: wait for a tick with a completed memory check.
        let mut seen = String::new();
        for _ in 0..100 {
            seen = std::fs::read_to_string(&out_file).unwrap_or_default();
            if seen.lines().any(|l| l.contains("check=ok") && l.starts_with(&format!("pid={pid} "))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let first = seen.lines().next().unwrap_or("");
        assert!(first.starts_with(&format!("pid={pid} tick=")), "{set}: {seen}");
        let tick: u64 = first.split("tick=").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
        assert!(tick > 1, "{set}: the counter restarted instead of carrying on");
        assert!(!seen.contains("BAD"), "{set}: memory check failed: {seen}");
    }
}

/// What the restore of `shm-ipcns` will do, whether or not this CPU can
/// run it: a new IPC namespace with CRIU's sysctls, the segment with its
/// id, key, size, mode and pages, attached read-only and read-write.
#[test]
fn the_shm_ipcns_fixture_is_planned_with_its_namespace_and_segment() {
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
    assert!(!Path::new("/proc/10562").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shell_and_its_child_restore_as_a_tree_or_are_refused_for_this_cpu() {
    install_binaries();
    let out_file = "/var/tmp/revenant-fixtures/sh-loop.out";
    let _ = std::fs::remove_file(out_file);
    let images = fixtures().join("images/sh-loop");
    match restore_detached(&images) {
        Err(err) => {
            // Planned as a tree (two processes) and refused only for the CPU.
            assert!(err.contains("XSAVE features") && err.contains("core-10569.img"), "{err}");
            assert!(!Path::new("/proc/10569").exists() && !Path::new("/proc/10653").exists());
        }
        Ok(()) => {
            let mut text = String::new();
            for _ in 0..100 {
                text = std::fs::read_to_string(out_file).unwrap_or_default();
                if text.lines().count() >= 2 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            for pid in [10653, 10569] {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let n: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            assert!(n.len() >= 2 && n[0] > 1 && n.windows(2).all(|w| w[1] == w[0] + 1), "{text}");
        }
    }
}

/// A thread in seccomp filter mode whose filters are not in the images is
/// refused before anything runs: restoring it would lift its sandbox.
#[test]
fn a_sandboxed_thread_without_its_filters_is_refused() {
    use revenant_images::Image;
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
