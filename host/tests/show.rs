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
