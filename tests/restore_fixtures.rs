//! CRIU 4.2's own images through `revenant restore`: two dumps of the same
//! four programs, `fixtures/criu-4.2` (made on a CPU with AVX-512) and
//! `fixtures/criu-4.2-x86-64-v3` (on one with AVX2 and no AVX-512). Where
//! this machine has what a set needs, the set restores and carries on;
//! where it has not, the restore must refuse it before anything runs,
//! naming what is missing. Which of the two is expected is worked out from
//! the images and from this machine's CPU features and files, never from a
//! CPU's name. Damaged copies are refused naming file and field.

#![cfg(target_arch = "x86_64")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use revenant::restore::from_images::PlanOptions;
use revenant::restore::{Options, run};
use revenant_e2e::{CAP_SYS_RESOURCE, with_own_pids, without_cap};
use revenant_images::{Image, ImageSet};
use revenant_test_watchdog as watchdog;

/// The image sets of each dump.
const SETS: [&str; 4] = ["loop-static", "loop-dynamic", "shm-ipcns", "sh-loop"];

/// A dump of the four programs, and the instruction-set features its
/// programs' code paths were chosen for (glibc picks its string functions
/// by the CPU it starts on; see each dump's README).
struct Dump {
    dir: &'static str,
    isa: &'static [&'static str],
}

/// x86-64-v3 (AVX2 and what comes with it), in `is_x86_feature_detected!`'s
/// names.
const X86_64_V3: &[&str] = &["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"];
/// x86-64-v4: v3 and AVX-512 F, BW, CD, DQ and VL.
const X86_64_V4: &[&str] = &[
    "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave", "avx512f", "avx512bw", "avx512cd",
    "avx512dq", "avx512vl",
];

const DUMPS: [Dump; 2] = [Dump { dir: "criu-4.2", isa: X86_64_V4 }, Dump { dir: "criu-4.2-x86-64-v3", isa: X86_64_V3 }];

/// The XSAVE component of protection-key rights, and the rights the kernel
/// gives every process: the restore drops this component where the CPU
/// lacks it, as a program holding these loses nothing.
const PKRU: u32 = 9;
const PKRU_DEFAULT: u32 = 0x5555_5554;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn images(dump: &Dump, set: &str) -> PathBuf {
    fixtures().join(dump.dir).join("images").join(set)
}

/// What an image set asks of the machine that restores it.
#[derive(Debug)]
struct Needs {
    /// Per thread: TID, the XSAVE components it held (`xstate_bv`), and
    /// whether its PKRU holds the kernel's default rights.
    threads: Vec<(u32, u64, bool)>,
    /// Regular files with the size they had (executables, libraries, open
    /// files): the restore refuses a file whose size changed.
    files: Vec<(String, u64)>,
    /// Instruction-set features the dumped code paths use.
    isa: &'static [&'static str],
    /// The processes, root first.
    pids: Vec<i32>,
}

fn needs_of(dir: &Path, isa: &'static [&'static str]) -> Needs {
    let set = ImageSet::load(dir).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
    let mut threads = vec![];
    for t in set.processes.iter().flat_map(|p| &p.threads) {
        let xsave = t.core.thread_info.as_ref().and_then(|ti| ti.fpregs.xsave.as_ref());
        let Some(x) = xsave else { continue };
        threads.push((t.tid, x.xstate_bv, x.pkru.first() == Some(&PKRU_DEFAULT)));
    }
    let files =
        set.files.iter().filter_map(|f| f.reg.as_ref()).filter_map(|r| Some((r.name.clone(), r.size?))).collect();
    let pids = set.processes.iter().map(|p| p.pid() as i32).collect();
    Needs { threads, files, isa, pids }
}

/// What is at a path on a machine.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Here {
    Missing,
    File(u64),
    /// A directory or device: no size to compare.
    Other,
}

/// What a machine offers a restore, as far as these images care.
struct Machine<'a> {
    /// XCR0: the XSAVE components the OS enabled on this CPU.
    xcr0: u64,
    /// Whether the CPU has an instruction-set feature.
    has: &'a dyn Fn(&str) -> bool,
    /// What is at a path.
    file: &'a dyn Fn(&str) -> Here,
}

/// What a restore must do.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Restore, and the programs carry on.
    Runs,
    /// Refuse before anything runs, with an error saying one of these.
    Refused(Vec<String>),
    /// The restore's checks pass, but the programs would die of SIGILL in
    /// code paths chosen for a CPU this one is not: nothing to restore here.
    CannotRun(String),
}

fn expect(n: &Needs, m: &Machine) -> Expect {
    let mut reasons = vec![];
    for (name, size) in &n.files {
        match (m.file)(name) {
            Here::Missing => reasons.push(format!("{name} is missing")),
            Here::File(now) if now != *size => reasons.push(format!("{name} has {now} bytes, but {size} when dumped")),
            _ => {}
        }
    }
    for &(tid, bv, default_pkru) in &n.threads {
        let mut missing = bv & !m.xcr0;
        if default_pkru {
            missing &= !(1 << PKRU);
        }
        if missing != 0 {
            reasons.push(format!(
                "core-{tid}.img: entry 0: thread_info.fpregs.xsave.xstate_bv {bv:#x}: the dumped CPU had vector state \
                 (XSAVE features {missing:#x}) this CPU lacks (it has {:#x})",
                m.xcr0
            ));
        }
    }
    if !reasons.is_empty() {
        return Expect::Refused(reasons);
    }
    match n.isa.iter().find(|f| !(m.has)(f)) {
        Some(f) => Expect::CannotRun(format!("this CPU lacks {f}, which the dumped code paths use")),
        None => Expect::Runs,
    }
}

/// XCR0 of this CPU (x87 and SSE only where there is no XSAVE).
fn xcr0() -> u64 {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return 0b11;
    }
    // SAFETY: the CPU has XSAVE and the OS enabled it (OSXSAVE), so XGETBV
    // exists and XCR0 is readable.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

fn cpu_has(feature: &str) -> bool {
    use std::arch::is_x86_feature_detected as has;
    match feature {
        "avx" => has!("avx"),
        "avx2" => has!("avx2"),
        "bmi1" => has!("bmi1"),
        "bmi2" => has!("bmi2"),
        "f16c" => has!("f16c"),
        "fma" => has!("fma"),
        "lzcnt" => has!("lzcnt"),
        "movbe" => has!("movbe"),
        "xsave" => has!("xsave"),
        "avx512f" => has!("avx512f"),
        "avx512bw" => has!("avx512bw"),
        "avx512cd" => has!("avx512cd"),
        "avx512dq" => has!("avx512dq"),
        "avx512vl" => has!("avx512vl"),
        _ => panic!("no detection for {feature}"),
    }
}

fn file_here(path: &str) -> Here {
    match std::fs::metadata(path) {
        Err(_) => Here::Missing,
        Ok(m) if m.is_file() => Here::File(m.len()),
        Ok(_) => Here::Other,
    }
}

fn this_machine() -> Machine<'static> {
    Machine { xcr0: xcr0(), has: &cpu_has, file: &file_here }
}

/// What restoring `dir` must do here. The fixture binaries are installed
/// first: they are part of what the images need.
fn expectation(dir: &Path, isa: &'static [&'static str]) -> (Needs, Expect) {
    install_binaries();
    let needs = needs_of(dir, isa);
    let e = expect(&needs, &this_machine());
    (needs, e)
}

/// `revenant restore -d -D dir`, as the library runs it; the error text as
/// the command would print it.
fn restore(dir: &Path, plan: PlanOptions) -> Result<(), String> {
    let opts = Options { detach: true, plan, ..Default::default() };
    run(dir, &opts).map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// The fixtures' machine allowed more processes (RLIMIT_NPROC's default
/// follows memory); where ours is lower and we may not raise it,
/// `--clamp-limits` lowers theirs to ours.
fn restore_clamped(dir: &Path) -> Result<(), String> {
    restore(dir, PlanOptions { clamp_limits: true, ..Default::default() })
}

/// [`restore_clamped`] without the CPU check, for images refused for
/// another reason, which must show on any CPU.
fn restore_any_cpu(dir: &Path) -> Result<(), String> {
    restore(dir, PlanOptions { clamp_limits: true, skip_cpu_check: true, ..Default::default() })
}

/// Asserts that restoring `dir` was refused for one of `reasons` and that
/// none of `pids` exists.
fn assert_refused(what: &str, result: Result<(), String>, reasons: &[String], pids: &[i32]) {
    let err =
        result.err().unwrap_or_else(|| panic!("{what}: restored, but this machine should refuse it: {reasons:?}"));
    assert!(
        reasons.iter().any(|r| err.contains(r.as_str())),
        "{what}: refused for another reason: {err}\nexpected one of {reasons:#?}"
    );
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{what}: PID {pid} exists after a refusal");
    }
}

/// The fixtures' PIDs are fixed: tests that restore them, or plan them
/// (which checks that the PIDs are free), take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch copy of image set `set` of `dump`, for a test to damage; the
/// binaries its files name are in place.
fn copy_of(dump: &Dump, set: &str, test: &str) -> PathBuf {
    install_binaries();
    let dir = std::env::temp_dir().join(format!("revenant-fixture-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(images(dump, set)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// A scratch image set: fixture set `set` as `change` leaves it, written by
/// the image layer (so files named by PID follow a changed PID).
fn changed_copy(set: &str, test: &str, change: impl FnOnce(&mut ImageSet)) -> PathBuf {
    install_binaries();
    let mut images = ImageSet::load(&images(&DUMPS[0], set)).unwrap();
    change(&mut images);
    let dir = std::env::temp_dir().join(format!("revenant-fixture-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    images.write(&dir).unwrap();
    dir
}

/// The fixture binaries must be where they ran (see the fixtures' README);
/// both dumps ran the same ones.
fn install_binaries() {
    let dst = Path::new("/var/tmp/revenant-fixtures");
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(fixtures().join("criu-4.2/bin")).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if std::fs::metadata(&to).map(|m| m.len()).ok() != Some(e.metadata().unwrap().len()) {
            let _ = std::fs::remove_file(&to);
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Reads `file` until `done` likes its text or a minute has passed (only a
/// broken restore takes that long); returns the last text read.
fn wait_for_text(file: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a restored process and waits until its PID is free (a detached
/// restore's root is our child).
fn kill(pid: i32) {
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(p, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn loop_fixtures_restore_and_carry_on_where_this_machine_can_run_them() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    with_own_pids("loop_fixtures_restore_and_carry_on_where_this_machine_can_run_them", || {
        for dump in &DUMPS {
            for set in ["loop-static", "loop-dynamic", "shm-ipcns"] {
                let what = format!("{}/{set}", dump.dir);
                let dir = images(dump, set);
                let (needs, expected) = expectation(&dir, dump.isa);
                let pid = needs.pids[0];
                let out_file = format!("/var/tmp/revenant-fixtures/{set}.out");
                let _ = std::fs::remove_file(&out_file);
                match expected {
                    Expect::Refused(reasons) => assert_refused(&what, restore_clamped(&dir), &reasons, &needs.pids),
                    Expect::CannotRun(why) => eprintln!("{what}: not restored: {why}"),
                    Expect::Runs => {
                        restore_clamped(&dir).unwrap_or_else(|e| panic!("{what}: {e}"));
                        // A tick with a completed memory check.
                        let ours = format!("pid={pid} ");
                        let seen = wait_for_text(&out_file, |t| {
                            t.lines().any(|l| l.starts_with(&ours) && l.contains("check=ok"))
                        });
                        kill(pid);
                        let first = seen.lines().next().unwrap_or("");
                        assert!(first.starts_with(&format!("pid={pid} tick=")), "{what}: {seen}");
                        let tick: u64 =
                            first.split("tick=").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
                        assert!(tick > 1, "{what}: the counter restarted instead of carrying on");
                        assert!(seen.contains("check=ok"), "{what}: no memory check completed: {seen}");
                        assert!(!seen.contains("BAD"), "{what}: memory check failed: {seen}");
                    }
                }
            }
        }
    });
}

/// A shell and its `sleep` child come back as a tree; the child finishes
/// its sleep and the shell reaps it and goes on counting.
#[test]
fn the_shell_and_its_child_restore_as_a_tree_and_carry_on_where_this_machine_can_run_them() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    with_own_pids("the_shell_and_its_child_restore_as_a_tree_and_carry_on_where_this_machine_can_run_them", || {
        for dump in &DUMPS {
            let what = format!("{}/sh-loop", dump.dir);
            let dir = images(dump, "sh-loop");
            let (needs, expected) = expectation(&dir, dump.isa);
            let (shell, child) = (needs.pids[0], needs.pids[1]);
            let out_file = "/var/tmp/revenant-fixtures/sh-loop.out";
            let _ = std::fs::remove_file(out_file);
            match expected {
                Expect::Refused(reasons) => assert_refused(&what, restore_clamped(&dir), &reasons, &needs.pids),
                Expect::CannotRun(why) => eprintln!("{what}: not restored: {why}"),
                Expect::Runs => {
                    restore_clamped(&dir).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                    // The shell writes its next number only once it has reaped
                    // the restored sleep: 20 numbers are 19 sleeps after it.
                    let numbers = |t: &str| t.lines().filter(|l| l.trim().parse::<u64>().is_ok()).count();
                    let text = wait_for_text(out_file, |t| numbers(t) >= 20);
                    let reaped = !Path::new(&format!("/proc/{child}")).exists();
                    for pid in [child, shell] {
                        kill(pid);
                    }
                    // Right after the restore the sleep is the shell's child again.
                    let ppid = stat.rsplit_once(") ").and_then(|s| s.1.split(' ').nth(1));
                    assert_eq!(ppid, Some(shell.to_string().as_str()), "{what}: {stat}");
                    assert!(reaped, "{what}: the shell did not reap its restored child");
                    let n: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                    assert!(n.len() >= 20 && n[0] > 1 && n.windows(2).all(|w| w[1] == w[0] + 1), "{what}: {text}");
                }
            }
        }
    });
}

/// Every thread's vector state is checked against this CPU: a copy of a
/// set that ran everywhere, with a component this CPU does not enable
/// added to its thread, is refused naming the component. This is the
/// branch machines without AVX-512 take for `criu-4.2`, taken here on any
/// CPU.
#[test]
fn vector_state_this_cpu_lacks_is_refused_naming_it() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    with_own_pids("vector_state_this_cpu_lacks_is_refused_naming_it", || {
        let v3 = &DUMPS[1];
        let here = xcr0();
        // MPX (3, 4) is gone from kernels since 5.6, AMX (17, 18) from CPUs
        // before 2023: one of them is missing anywhere.
        let bit =
            [3, 4, 17, 18, 19].into_iter().find(|b| here & (1 << b) == 0).expect("a CPU with MPX and AMX enabled");
        let dir = copy_of(v3, "loop-static", "xsave");
        let pid = needs_of(&dir, v3.isa).pids[0];
        let core = dir.join(format!("core-{pid}.img"));
        let Image::Core(mut entries) = Image::read(&core).unwrap() else { panic!("not a core image") };
        let x = entries[0].thread_info.as_mut().unwrap().fpregs.xsave.as_mut().unwrap();
        x.xstate_bv |= 1 << bit;
        std::fs::remove_file(&core).unwrap();
        Image::Core(entries).write(&core).unwrap();
        let (needs, expected) = expectation(&dir, v3.isa);
        let Expect::Refused(reasons) = expected else { panic!("component {bit} not missing: {expected:?}") };
        assert!(reasons.iter().any(|r| r.contains(&format!("XSAVE features {:#x}", 1u64 << bit))), "{reasons:?}");
        assert_refused("xsave", restore_clamped(&dir), &reasons, &needs.pids);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// The expectation itself: the same images on CPUs with and without
/// AVX-512, with and without protection keys, without AVX2, and with
/// another libc, each described by its features.
#[test]
fn the_expectation_follows_the_machines_features() {
    let all: Vec<(&str, &str, Needs)> =
        DUMPS.iter().flat_map(|d| SETS.map(|s| (d.dir, s, needs_of(&images(d, s), d.isa)))).collect();
    let v3_only = |f: &str| X86_64_V3.contains(&f);
    let sse_only = |_: &str| false;
    let everything = |_: &str| true;
    let run = |xcr0: u64, has: &dyn Fn(&str) -> bool, libc_size: Option<u64>| -> HashMap<String, Expect> {
        all.iter()
            .map(|(dump, set, needs)| {
                let dumped: HashMap<&str, u64> = needs.files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
                let file = |p: &str| match (p.ends_with("/libc.so.6"), libc_size) {
                    (true, Some(size)) => Here::File(size),
                    _ => dumped.get(p).map_or(Here::Other, |s| Here::File(*s)),
                };
                (format!("{dump}/{set}"), expect(needs, &Machine { xcr0, has, file: &file }))
            })
            .collect()
    };
    let refused_for = |e: &Expect, what: &str| matches!(e, Expect::Refused(r) if r.iter().any(|r| r.contains(what)));

    // AVX-512 and protection keys: everything runs.
    for (k, e) in run(0x2e7, &everything, None) {
        assert_eq!(e, Expect::Runs, "{k}");
    }
    // AVX2 with or without protection keys: the AVX-512 dump is refused,
    // naming opmask and hi16_zmm (bits 5 and 7; its PKRU is the default),
    // and the other dump runs.
    for xcr0 in [0x207, 0x7] {
        for (k, e) in run(xcr0, &v3_only, None) {
            if k.starts_with("criu-4.2/") {
                assert!(refused_for(&e, "(XSAVE features 0xa0) this CPU lacks"), "{xcr0:#x} {k}: {e:?}");
            } else {
                assert_eq!(e, Expect::Runs, "{xcr0:#x} {k}");
            }
        }
    }
    // x87 and SSE only: the AVX-512 dump is refused, the AVX2 dump's state
    // would load but its code paths would not run.
    for (k, e) in run(0x3, &sse_only, None) {
        if k.starts_with("criu-4.2/") {
            assert!(refused_for(&e, "XSAVE features 0xa0"), "{k}: {e:?}");
        } else {
            assert_eq!(e, Expect::CannotRun("this CPU lacks avx, which the dumped code paths use".into()), "{k}");
        }
    }
    // Another libc: what maps it is refused naming it, the rest runs.
    for (k, e) in run(0x2e7, &everything, Some(2_000_000)) {
        if k.ends_with("/loop-dynamic") || k.ends_with("/sh-loop") {
            let why = "/usr/lib/x86_64-linux-gnu/libc.so.6 has 2000000 bytes, but 1926232 when dumped";
            assert!(refused_for(&e, why), "{k}: {e:?}");
        } else {
            assert_eq!(e, Expect::Runs, "{k}");
        }
    }
}

/// Without `--clamp-limits`, a hard limit above ours that we may not raise
/// is refused before anything runs, naming the limit and the way out. Run
/// without CAP_SYS_RESOURCE, so that it is refused as root too.
#[test]
fn a_hard_limit_above_ours_is_refused_unless_clamped() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    without_cap(CAP_SYS_RESOURCE, "a_hard_limit_above_ours_is_refused_unless_clamped", || {
        // The namespace inside: its process lacks the capability too.
        with_own_pids("a_hard_limit_above_ours_is_refused_unless_clamped", || {
            let dump = &DUMPS[0];
            let dir = copy_of(dump, "loop-static", "limits");
            let pid = needs_of(&dir, dump.isa).pids[0];
            let core = dir.join(format!("core-{pid}.img"));
            let Image::Core(mut entries) = Image::read(&core).unwrap() else { panic!("not a core") };
            let rls = &mut entries[0].tc.as_mut().unwrap().rlimits.as_mut().unwrap().rlimits;
            for (i, rl) in rls.iter_mut().enumerate() {
                // Ours everywhere but RLIMIT_NOFILE, where no hard limit without
                // CAP_SYS_RESOURCE comes near u64::MAX - 1.
                let mut ours = [0u64; 2];
                // SAFETY: prlimit64 writes two u64s into a live local.
                unsafe {
                    nix::libc::syscall(nix::libc::SYS_prlimit64, 0, i, std::ptr::null::<u64>(), ours.as_mut_ptr())
                };
                (rl.cur, rl.max) = if i == 7 { (1024, u64::MAX - 1) } else { (ours[0], ours[1]) };
            }
            std::fs::remove_file(&core).unwrap();
            Image::Core(entries).write(&core).unwrap();
            // Whatever this CPU is: the limits are what is tested.
            let err = restore(&dir, PlanOptions { skip_cpu_check: true, ..Default::default() }).unwrap_err();
            assert!(err.contains(&format!("rlimit 7 of PID {pid}")) && err.contains("--clamp-limits"), "{err}");
            assert!(!Path::new(&format!("/proc/{pid}")).exists());
            let _ = std::fs::remove_dir_all(&dir);
        });
    });
}

/// What the restore of `shm-ipcns` will do, whether or not this CPU can
/// run it: a new IPC namespace with CRIU's sysctls, the segment with its
/// id, key, size, mode and pages, attached read-only and read-write.
#[test]
fn the_shm_ipcns_fixture_is_planned_with_its_namespace_and_segment() {
    let _one = one_at_a_time();
    with_own_pids("the_shm_ipcns_fixture_is_planned_with_its_namespace_and_segment", || {
        use revenant::restore::from_images::plan_dir;
        use revenant::restore::plan::{Backing, ShmAttach};
        use revenant::sysv::restore::Contents;
        install_binaries();
        let opts = PlanOptions { skip_cpu_check: true, ..Default::default() };
        for dump in &DUMPS {
            let plan = plan_dir(&images(dump, "shm-ipcns"), &opts).unwrap();
            let ipc = &plan.ipc;
            assert!(ipc.new_namespace);
            assert!(ipc.sysctls.contains(&("kernel/shmmni".into(), "4096".into())), "{:?}", ipc.sysctls);
            let [s] = &ipc.segments[..] else { panic!("{:?}", ipc.segments) };
            assert_eq!((s.id, s.key, s.size, s.mode, s.removed), (0, 0x5eed, 8 * 4096, 0o640, false));
            let Contents::Pages { file, runs } = &s.contents else { panic!("{:?}", s.contents) };
            assert!(file.ends_with("pages-2.img"));
            assert_eq!((runs[0].addr, runs[0].len, runs[0].file_offset), (0, 8 * 4096, 0));
            let shm: Vec<&Backing> = plan.processes[0]
                .vmas
                .iter()
                .map(|v| &v.backing)
                .filter(|b| matches!(b, Backing::SysvShm { .. }))
                .collect();
            let attach = |read_only| Backing::SysvShm { id: 0, attach: Some(ShmAttach { len: 8 * 4096, read_only }) };
            assert_eq!(shm, [&attach(true), &attach(false)], "{}", dump.dir);
        }
    });
}

#[test]
fn a_missing_or_damaged_image_is_named() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    with_own_pids("a_missing_or_damaged_image_is_named", || {
        let dump = &DUMPS[0];
        let dir = copy_of(dump, "loop-static", "bad");
        std::fs::remove_file(dir.join("mm-10562.img")).unwrap();
        let err = restore_clamped(&dir).unwrap_err();
        assert!(err.contains("mm-10562.img"), "{err}");
        let core = dir.join("core-10562.img");
        let data = std::fs::read(images(dump, "loop-static/core-10562.img")).unwrap();
        std::fs::copy(images(dump, "loop-static/mm-10562.img"), dir.join("mm-10562.img")).unwrap();
        std::fs::write(&core, &data[..data.len() / 2]).unwrap();
        let err = restore_clamped(&dir).unwrap_err();
        assert!(err.contains("core-10562.img") && err.contains("runs past the end"), "{err}");
        std::fs::copy(images(dump, "loop-static/core-10562.img"), &core).unwrap();
        // Without its fds' image the program would come back with none.
        std::fs::remove_file(dir.join("fdinfo-2.img")).unwrap();
        let err = restore_clamped(&dir).unwrap_err();
        assert!(err.contains("ids-10562.img: entry 0: files_id 2: fdinfo-2.img does not exist"), "{err}");
        assert!(!Path::new("/proc/10562").exists());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// An area no x86_64 kernel maps (2^56 is past 5-level paging's end too)
/// is refused by the plan, not by the blob after the point of no return.
#[test]
fn an_area_beyond_user_space_is_refused_before_anything_runs() {
    let _one = one_at_a_time();
    with_own_pids("an_area_beyond_user_space_is_refused_before_anything_runs", || {
        let dir = changed_copy("loop-static", "user-end", |s| {
            let vmas = &mut s.processes[0].mm.vmas;
            // Between the stack and the vsyscall page, which stays accepted.
            let mut v = vmas[10].clone();
            (v.start, v.end) = (1 << 56, (1 << 56) + 0x1000);
            vmas.insert(11, v);
        });
        let err = restore_any_cpu(&dir).unwrap_err();
        assert!(
            err.contains(
                "mm-10562.img: entry 0: vmas[11].start 0x100000000000000: beyond the end of this machine's user \
                 address space"
            ),
            "{err}"
        );
        assert!(!Path::new("/proc/10562").exists());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap()
}

/// A PID or TID the kernel cannot hand out here is refused by the plan,
/// with the limit, instead of by clone3 once part of the tree runs.
#[test]
fn pids_and_tids_at_or_above_pid_max_are_refused_before_anything_runs() {
    let _one = one_at_a_time();
    with_own_pids("pids_and_tids_at_or_above_pid_max_are_refused_before_anything_runs", || {
        let max = pid_max();
        let dir = changed_copy("loop-static", "pid-max", |s| {
            let p = &mut s.processes[0];
            (p.pstree.pid, p.pstree.threads[0], p.threads[0].tid) = (max, max, max);
            (p.pstree.pgid, p.pstree.sid) = (max, max);
        });
        assert!(dir.join(format!("core-{max}.img")).exists());
        let err = restore_any_cpu(&dir).unwrap_err();
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
        let err = restore_any_cpu(&dir).unwrap_err();
        assert!(
            err.contains(&format!("pstree.img: entry 0: threads[1] {}: not below the limit of {max}", max + 7)),
            "{err}"
        );
        assert!(!Path::new("/proc/10562").exists());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A thread in seccomp filter mode whose filters are not in the images is
/// refused before anything runs: restoring it would lift its sandbox.
#[test]
fn a_sandboxed_thread_without_its_filters_is_refused() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    with_own_pids("a_sandboxed_thread_without_its_filters_is_refused", || {
        for (filter, want) in [
            (None, "core-10562.img: entry 0: thread_core.seccomp_filter is missing"),
            (
                Some(3),
                "core-10562.img: entry 0: thread_core.seccomp_filter: filter 3 is not in seccomp.img (0 filters)",
            ),
        ] {
            let dir = copy_of(&DUMPS[0], "loop-static", "seccomp");
            let core = dir.join("core-10562.img");
            let Image::Core(mut entries) = Image::read(&core).unwrap() else { panic!("not a core image") };
            let tc = entries[0].thread_core.as_mut().unwrap();
            (tc.seccomp_mode, tc.seccomp_filter) = (Some(2), filter);
            std::fs::remove_file(&core).unwrap();
            Image::Core(entries).write(&core).unwrap();
            let err = restore_clamped(&dir).unwrap_err();
            assert!(err.contains(want), "{err}");
            assert!(!Path::new("/proc/10562").exists());
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

/// A root with a parent-death signal would get it the moment a detached
/// restore's revenant exits: refused, naming the field, before anything runs.
#[test]
fn a_detached_root_with_a_parent_death_signal_is_refused() {
    let _w = watchdog::start();
    let _one = one_at_a_time();
    with_own_pids("a_detached_root_with_a_parent_death_signal_is_refused", || {
        let dir = changed_copy("loop-static", "pdeathsig", |s| {
            let tc = s.processes[0].threads[0].core.thread_core.as_mut().expect("thread_core");
            tc.pdeath_sig = Some(9);
        });
        let err = restore_any_cpu(&dir).unwrap_err();
        assert!(err.contains("core-10562.img: entry 0: thread_core.pdeath_sig 9"), "{err}");
        assert!(!Path::new("/proc/10562").exists());
        let _ = std::fs::remove_dir_all(&dir);
    });
}
