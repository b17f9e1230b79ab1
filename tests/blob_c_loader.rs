//! The blob as a product: `revenant blob export` into a fresh directory,
//! then the reference C loader it ships (`blob_loader.c`), built with a C
//! compiler against the exported `revenant_blob.h` and nothing of
//! revenant's, drives the blob. Natively on x86_64; for armv7 this test
//! binary runs under qemu-arm, builds the loader with the ARM cross
//! compiler and runs it under qemu-arm too.

use std::path::{Path, PathBuf};
use std::process::Command;

use revenant_blob_abi::{ExitCode, STATUS_RESTORED, VERSION, selftest_exit_code};
use revenant_test_watchdog as watchdog;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What the C loader's restored page exits with (`RESTORED_EXIT`).
const RESTORED_EXIT: i32 = 42;

/// A fresh export with the loader built in it.
struct Export {
    dir: PathBuf,
    json: Value,
}

impl Drop for Export {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn export(name: &str) -> Export {
    let dir = std::env::temp_dir().join(format!("revenant-blob-c-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    revenant::blob::export(&dir).unwrap();
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("blob.json")).unwrap()).unwrap();
    let e = Export { dir, json };
    build_loader(&e.dir);
    e
}

/// The compiler for this arch: the host's own, or the ARM cross compiler
/// (statically linked, so qemu-arm needs no sysroot).
fn build_loader(dir: &Path) {
    let (cc, extra): (&str, &[&str]) =
        if cfg!(target_arch = "arm") { ("arm-linux-gnueabihf-gcc", &["-static"]) } else { ("cc", &[]) };
    let out = Command::new(cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(dir.join("loader"))
        .arg("-I")
        .arg(dir)
        .arg(dir.join("blob_loader.c"))
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "{cc}: {}", String::from_utf8_lossy(&out.stderr));
}

/// How one run of the loader went: its own exit status, and the line it
/// printed about the blob's child.
#[derive(Debug)]
struct Run {
    loader_ok: bool,
    exit: i32,
    signal: i32,
    /// The last status record's code, if any came.
    status: Option<u32>,
    records: u32,
    stderr: String,
}

fn run(e: &Export, args: &[&str]) -> Run {
    let loader = e.dir.join("loader");
    let mut cmd = if cfg!(target_arch = "arm") {
        // This test runs under qemu-arm, whose exec hands an ARM binary to
        // the host kernel, which cannot run it.
        let mut c = Command::new("qemu-arm");
        c.arg(&loader);
        c
    } else {
        Command::new(&loader)
    };
    // glibc must register its rseq area as usual (the rseq case needs it).
    let out = cmd.arg(&e.dir).args(args).env_remove("GLIBC_TUNABLES").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line =
        stdout.lines().find(|l| l.starts_with("result ")).unwrap_or_else(|| panic!("{args:?}: {stdout}{stderr}"));
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {line}"))
    };
    Run {
        loader_ok: out.status.success(),
        exit: field("exit=").parse().unwrap(),
        signal: field("signal=").parse().unwrap(),
        status: field("status=").parse().ok(),
        records: field("records=").parse().unwrap(),
        stderr,
    }
}

#[test]
fn the_reference_c_loader_runs_the_selftest_and_a_one_page_restore() {
    let _w = watchdog::start();
    let e = export("product");

    // Every file is in SHA256SUMS, blob.json too, with its right sum.
    let sums = std::fs::read_to_string(e.dir.join("SHA256SUMS")).unwrap();
    let mut names: Vec<&str> = vec![];
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        let data = std::fs::read(e.dir.join(name)).unwrap();
        assert_eq!(sum, format!("{:x}", Sha256::digest(&data)), "{name}");
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["blob.bin", "blob.elf", "blob.json", "blob_loader.c", "relocs.bin", "revenant_blob.h"]);
    // The ELF for debuggers: what blob.bin was flattened from, with the
    // symbol a debugger stops at.
    let elf = std::fs::read(e.dir.join("blob.elf")).unwrap();
    assert!(elf.starts_with(b"\x7fELF"), "blob.elf is not an ELF file");
    assert!(elf.windows(10).any(|w| w == b"blob_entry"), "blob.elf has no symbol table");
    assert_eq!(e.json["abi_version"], VERSION);
    assert_eq!(e.json["byte_order"], "little");

    // The expected self-test value comes from blob.json.
    let input = e.json["selftest"]["input"].as_u64().unwrap() as u32;
    let expected = e.json["selftest"]["expected"].as_i64().unwrap() as i32;
    assert_eq!(expected, selftest_exit_code(input) as i32);
    let r = run(&e, &["selftest"]);
    assert!(r.loader_ok, "{r:?}");
    assert_eq!((r.exit, r.signal, r.status, r.records), (expected, 0, Some(expected as u32), 1), "{r:?}");
    assert!(r.stderr.contains("blob: message: hello from a C loader"), "{}", r.stderr);
    for input in [0, 1000, u32::MAX] {
        let r = run(&e, &["selftest", &input.to_string()]);
        assert!(r.loader_ok, "{r:?}");
        assert_eq!(r.exit, selftest_exit_code(input) as i32, "{r:?}");
    }

    // The child becomes the one-page process: the blob reported the
    // handover, and the page's code found its word and its registers.
    let r = run(&e, &["restore"]);
    assert!(r.loader_ok, "{r:?}");
    assert_eq!((r.exit, r.signal, r.status, r.records), (RESTORED_EXIT, 0, Some(STATUS_RESTORED), 1), "{r:?}");
    assert!(r.stderr.contains("blob: restore done"), "{}", r.stderr);
}

/// Each documented precondition, broken on purpose by the C loader, ends
/// the blob with the exit code `blob.json` documents for it, never a
/// crash; a status record comes exactly when the header was trusted.
#[test]
fn each_broken_precondition_gets_its_documented_exit_code() {
    let _w = watchdog::start();
    let e = export("broken");
    use ExitCode::*;
    let mut cases = vec![
        ("block-misaligned", BadLayout, false),
        ("bad-magic", BadMagic, false),
        ("bad-version", BadVersion, false),
        ("bad-arch", BadArch, false),
        ("header-flags", BadLayout, false),
        ("too-big", NotMapped, false),
        ("stack-misaligned", BadStack, false),
        ("stack-outside", BadStack, true),
        ("block-outside", NotMapped, true),
        ("restore-flags", BadLayout, true),
        ("vma-how", BadLayout, true),
        ("command", UnknownCommand, true),
    ];
    // qemu-user has no rseq, so glibc registers none there.
    if cfg!(target_arch = "x86_64") {
        cases.push(("rseq", RseqRegistered, true));
    }
    let documented: Vec<u64> =
        e.json["preconditions"].as_array().unwrap().iter().filter_map(|p| p["exit_code"].as_u64()).collect();
    let codes: Vec<u64> =
        e.json["abi"]["exit_codes"].as_array().unwrap().iter().map(|c| c["code"].as_u64().unwrap()).collect();
    for (what, code, record) in cases {
        let r = run(&e, &["restore", what]);
        assert!(r.loader_ok, "{what}: {r:?}");
        assert_eq!((r.exit, r.signal), (code as i32, 0), "{what}: {r:?}");
        let want = record.then_some(code as u32);
        assert_eq!((r.status, r.records), (want, record as u32), "{what}: {r:?}");
        assert!(codes.contains(&(code as u64)), "{what}: {code:?} not in blob.json");
        if code != UnknownCommand {
            assert!(documented.contains(&(code as u64)), "{what}: {code:?} not among the preconditions");
        }
    }
}
