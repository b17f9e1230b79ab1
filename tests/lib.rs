//! Shared helpers for revenant's end-to-end tests.

/// The arch the tests run on, as revenant names it.
pub const ARCH: &str = revenant_arch_name();

const fn revenant_arch_name() -> &'static str {
    if cfg!(target_arch = "x86_64") { "x86_64" } else { "arm" }
}

/// `CAP_SYS_RESOURCE`: raising hard resource limits, among other things.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Set in the process [`without_cap`] starts: the test it is to run.
const WITHOUT_CAP_TEST: &str = "REVENANT_E2E_WITHOUT_CAP";

/// Set in the process [`with_own_pids`] starts: the test it is to run.
const OWN_PIDS_TEST: &str = "REVENANT_E2E_OWN_PIDS";

/// Runs `body` as test `test` of this test binary in a process that lacks
/// capability `cap`, so that a refusal only the capability lifts is tested
/// as root too. The binary is started again for that one test; before the
/// exec `cap` leaves the bounding set (from which an exec as root fills
/// the permitted set) and the effective, permitted and inheritable sets.
/// There the body runs once the capability is checked to be gone; here the
/// other run must have passed.
pub fn without_cap(cap: u32, test: &str, body: impl FnOnce()) {
    if std::env::var(WITHOUT_CAP_TEST).as_deref() == Ok(test) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        // What we may use and what we could raise to; the bounding set
        // only matters at an exec, and a user's keeps every capability.
        for set in ["CapEff:", "CapPrm:"] {
            let hex = status.lines().find_map(|l| l.strip_prefix(set)).unwrap().trim();
            let caps = u64::from_str_radix(hex, 16).unwrap();
            assert_eq!(caps & (1 << cap), 0, "capability {cap} is still in {set} {hex}");
        }
        return body();
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.env(WITHOUT_CAP_TEST, test);
    // SAFETY: prctl, capget and capset are system calls on locals: safe
    // between fork and exec.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || drop_cap(cap)) };
    run_again(test, cmd, &format!("without capability {cap}"));
}

/// Runs `body` as test `test` of this test binary as the first process of
/// a new PID namespace with a /proc of its own. CRIU's images carry the
/// PIDs of the machine they were made on, which any process of this
/// machine may hold; there, every PID but 1 is free, so a test of such
/// images does not depend on what else runs here. When the body ends, the
/// namespace and whatever was restored into it end with it.
///
/// util-linux's `unshare` makes the namespace, mounts its /proc and kills
/// it should this test process die first.
pub fn with_own_pids(test: &str, body: impl FnOnce()) {
    if std::env::var(OWN_PIDS_TEST).as_deref() == Ok(test) {
        assert_eq!(std::process::id(), 1, "{test}: not the first process of its PID namespace");
        return body();
    }
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .arg(std::env::current_exe().unwrap())
        .env(OWN_PIDS_TEST, test);
    run_again(test, cmd, "in a PID namespace of its own");
}

/// Runs `cmd`, which starts this test binary, for test `test` alone and
/// asserts that the test passed there.
///
/// A re-exec rather than a fork: the body allocates and takes locks, which
/// a child forked from the multi-threaded test harness may not.
fn run_again(test: &str, mut cmd: std::process::Command, how: &str) {
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    let out = cmd.output().unwrap_or_else(|e| panic!("{test} {how}: {cmd:?}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} {how}: {}\n{stdout}\n{stderr}",
        out.status
    );
}

/// Drops `cap` from the bounding, effective, permitted and inheritable
/// sets of the calling thread. System calls only: for `pre_exec`.
fn drop_cap(cap: u32) -> std::io::Result<()> {
    use nix::libc;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // Without CAP_SETPCAP this fails; should an exec as root then give the
    // capability back, the re-run's own check says so.
    // SAFETY: a prctl on integers.
    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    let mut head = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capget fills the two live locals.
    if unsafe { libc::syscall(libc::SYS_capget, &mut head as *mut Header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    data[word].effective &= !bit;
    data[word].permitted &= !bit;
    data[word].inheritable &= !bit;
    // SAFETY: capset reads the two live locals; dropping is always allowed.
    if unsafe { libc::syscall(libc::SYS_capset, &mut head as *mut Header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
