//! `revenant show --json FILE` prints what crit printed for every image of
//! both CRIU fixture dumps (compared as JSON values). The binary is run
//! natively, so x86_64 only; the library is compared on both arches in
//! `host/images`.

#![cfg(target_arch = "x86_64")]

use std::path::Path;

use revenant_test_watchdog as watchdog;

#[test]
fn show_json_matches_crit_for_every_fixture_image() {
    let _w = watchdog::start();
    for dump in ["criu-4.2", "criu-4.2-x86-64-v3"] {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(dump);
        let mut checked = 0;
        for set in std::fs::read_dir(fixtures.join("crit-json")).unwrap() {
            let set = set.unwrap();
            for json in std::fs::read_dir(set.path()).unwrap() {
                let json = json.unwrap().path();
                let stem = json.file_stem().unwrap().to_string_lossy().into_owned();
                let dir = fixtures.join("images").join(set.file_name());
                let image = if dir.join(format!("{stem}.img")).exists() {
                    dir.join(format!("{stem}.img"))
                } else {
                    dir.join(&stem)
                };
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_revenant"))
                    .args(["show", "--json"])
                    .arg(&image)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
                let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let crit: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
                assert_eq!(ours, crit, "{}", image.display());
                checked += 1;
            }
        }
        assert!(checked >= 50, "{dump}: only {checked} fixture images compared");
    }
}

/// Two `--leave-running` dumps of a program that changed two of its pages
/// in between: `show --diff` names exactly those pages among its memory.
#[test]
fn diff_of_two_dumps_names_the_pages_that_changed() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let _w = watchdog::start();
    let work = std::env::temp_dir().join(format!("revenant-show-diff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let prog = work.join("pagediff");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dumpees/pagediff.c");
    assert!(Command::new("cc").arg("-o").arg(&prog).arg(&src).status().unwrap().success());
    let mut cmd = Command::new(&prog);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: setsid and close_range are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let words: Vec<&str> = ready.split(' ').collect();
    let pid = words[1].to_string();
    let base = u64::from_str_radix(words[2].trim_start_matches("0x"), 16).unwrap();
    let revenant = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_revenant")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (d1, d2) = (work.join("d1"), work.join("d2"));
    for d in [&d1, &d2] {
        std::fs::create_dir_all(d).unwrap();
    }
    revenant(&["dump".as_ref(), "-t".as_ref(), pid.as_ref(), "--leave-running".as_ref(), "-D".as_ref(), d1.as_ref()]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid.parse().unwrap()), nix::sys::signal::Signal::SIGUSR1)
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "changed 1");
    revenant(&["dump".as_ref(), "-t".as_ref(), pid.as_ref(), "--leave-running".as_ref(), "-D".as_ref(), d2.as_ref()]);
    let _ = child.kill();
    let _ = child.wait();
    let out = revenant(&["show".as_ref(), "--diff".as_ref(), d1.as_ref(), d2.as_ref()]);
    let page = |i: u64| base + i * 4096;
    for i in [3, 40] {
        let run = format!("{:#x}-{:#x} (1)", page(i), page(i + 1));
        assert!(out.contains(&run), "page {i} of the area ({run}) not named:\n{out}");
    }
    let differ = out.lines().find(|l| l.contains("differ:")).unwrap_or_default().to_string();
    for i in (0..64).filter(|i| ![3, 40].contains(i)) {
        assert!(!differ.contains(&format!("{:#x}-", page(i))), "unchanged page {i} named:\n{out}");
    }
    assert!(out.contains(&format!("processes: same ({pid})")), "{out}");
    std::fs::remove_dir_all(&work).unwrap();
}
