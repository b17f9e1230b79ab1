//! The whole blob pipeline, observed from outside: build.rs built and
//! flattened the blob; here a forked child maps it, relocates it, switches
//! stacks and enters it, and the parent checks what the blob logged and how
//! it exited. Runs natively on x86_64 and under qemu-arm for armv7.

use revenant::blob::{EMBEDDED, LOAD_FAILED_BASE, run_in_child, run_selftest, selftest_block};
use revenant_blob_abi::{ExitCode, selftest_exit_code};
use revenant_test_watchdog as watchdog;

#[test]
fn selftest_runs_relocated_tables_and_exits_with_the_expected_code() {
    let _w = watchdog::start();
    assert_eq!(EMBEDDED.arch, revenant_e2e::ARCH);
    for input in [7, 1000, u32::MAX] {
        let out = run_selftest(input, "ping from the parent", None).unwrap();
        assert_eq!(out.signal, None, "blob crashed; log:\n{}", out.log);
        assert_eq!(out.exit_code, Some(selftest_exit_code(input) as i32), "log:\n{}", out.log);
        let lines: Vec<&str> = out.log.lines().collect();
        assert_eq!(lines[0], format!("blob: self-test in pid {}", out.pid));
        assert_eq!(lines[1], "blob: message: ping from the parent");
        assert_eq!(lines[2], "blob: check 1: relocated string table");
        assert_eq!(lines[3], "blob: check 2: function-pointer table");
        assert_eq!(lines[4], "blob: check 3: data and bss");
        assert!(lines[5].starts_with("blob: mmap ok at 0x"), "{}", lines[5]);
        let value = ((input.wrapping_add(3)).wrapping_mul(5)) ^ 0x55;
        assert_eq!(lines[6], format!("blob: value {value}, exiting with {}", value % 128));
    }
}

#[test]
fn selftest_works_at_a_chosen_address() {
    let _w = watchdog::start();
    // Far from where the kernel puts things on either arch.
    let hint: usize = if cfg!(target_pointer_width = "64") { (0x5a5a_0000_0000u64) as usize } else { 0x5a5a_0000 };
    let out = run_selftest(42, "fixed", Some(hint)).unwrap();
    assert_eq!(out.exit_code, Some(selftest_exit_code(42) as i32), "log:\n{}", out.log);
}

#[test]
fn refuses_a_block_with_a_bad_magic_version_or_arch() {
    let _w = watchdog::start();
    for (offset, code) in [(0, ExitCode::BadMagic), (4, ExitCode::BadVersion), (8, ExitCode::BadArch)] {
        let out = run_in_child(
            |fd| {
                let mut b = selftest_block(7, "x", fd);
                b.as_bytes_mut()[offset] ^= 0x40;
                b
            },
            None,
        )
        .unwrap();
        assert_eq!(out.exit_code, Some(code as i32), "offset {offset}");
        // An untrusted header's log fd is not used.
        assert_eq!(out.log, "");
    }
}

#[test]
fn reports_an_unknown_command_and_a_bad_span_in_the_log() {
    let _w = watchdog::start();
    let out = run_in_child(
        |fd| {
            let mut b = selftest_block(7, "x", fd);
            b.as_bytes_mut()[16] = 99; // command
            b
        },
        None,
    )
    .unwrap();
    assert_eq!(out.exit_code, Some(ExitCode::UnknownCommand as i32));
    assert_eq!(out.log, format!("blob: error: unknown command (exit code {})\n", ExitCode::UnknownCommand as u8));

    let out = run_in_child(
        |fd| {
            let mut b = selftest_block(7, "x", fd);
            b.as_bytes_mut()[32..36].copy_from_slice(&0xfff0u32.to_le_bytes()); // selftest.offset
            b
        },
        None,
    )
    .unwrap();
    assert_eq!(out.exit_code, Some(ExitCode::BadLayout as i32));
    assert!(out.log.contains("outside the block"), "{}", out.log);
}

#[test]
fn a_taken_address_is_refused_before_entering() {
    let _w = watchdog::start();
    // Occupy an address in the parent; the child inherits the mapping and
    // must not map the blob over it.
    let top = revenant::blob::map_stack(4096 * 16).unwrap();
    let taken = top - 4096 * 17;
    let out = run_selftest(1, "x", Some(taken)).unwrap();
    let eexist = LOAD_FAILED_BASE + 17;
    assert_eq!(out.exit_code, Some(eexist), "{out:?}");
}

/// `blob export` writes `revenant_blob.h`, generated from the ABI's Rust
/// definitions: C compilers for both arches accept it, which means every
/// size and offset assert in it holds, and it names every exit code and
/// constant a loader needs.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_exported_c_header_compiles_for_both_arches_with_its_layout_asserts() {
    let dir = std::env::temp_dir().join(format!("revenant-blob-export-{}", std::process::id()));
    revenant::blob::export(&dir).unwrap();
    let header = dir.join("revenant_blob.h");
    let text = std::fs::read_to_string(&header).unwrap();
    for c in ExitCode::ALL {
        assert!(text.contains(&format!(" {} /* {} */", c as u8, c.describe())), "{c:?} missing");
    }
    for (name, value, _) in revenant_blob_abi::CONSTANTS {
        assert!(text.contains(&format!("#define REVENANT_{name} {value:#x}u")), "{name} missing");
    }
    let asserts = text.matches("_Static_assert").count();
    let fields: usize = revenant_blob_abi::STRUCTS.iter().map(|s| s.fields.len() + 2).sum();
    assert_eq!(asserts, fields, "size and alignment asserts per struct and an offset assert per field");
    // Each field's meaning is in the header, with its offset.
    for s in revenant_blob_abi::STRUCTS {
        for f in s.fields {
            let doc = revenant::blob::plain_doc(f.doc);
            assert!(text.contains(&format!("offset {}): {doc} */", f.offset)), "{}.{}: no doc", s.name, f.name);
        }
    }
    let mut compilers = vec!["cc"];
    if std::process::Command::new("arm-linux-gnueabihf-gcc").arg("--version").output().is_ok() {
        compilers.push("arm-linux-gnueabihf-gcc");
    }
    for cc in compilers {
        let out = std::process::Command::new(cc)
            .args(["-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-x", "c"])
            .arg(&header)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cc}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
