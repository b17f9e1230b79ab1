//! `revenant check --json`: every probe is reported, and a second run is
//! served from the per-boot cache with the same answers.

#![cfg(target_arch = "x86_64")]

use revenant_test_watchdog as watchdog;

#[test]
fn check_reports_every_probe_and_the_cache_gives_the_same_answers() {
    let _w = watchdog::start();
    let cache = std::env::temp_dir().join(format!("revenant-check-test-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&cache);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_revenant"))
            .args(args)
            .env("REVENANT_KERNDAT", &cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let fresh = run(&["check", "--json"]);
    for key in [
        "vdso_name_survives_mremap",
        "vdso_layout",
        "vdso_symbols",
        "arch_map_vdso",
        "pagemap_pfn",
        "clone3_set_tid",
        "mm_map",
        "shmat_align",
    ] {
        assert!(fresh.get(key).is_some(), "{key} missing: {fresh}");
    }
    assert!(cache.exists(), "the probes were not cached");
    assert_eq!(run(&["check", "--json"]), fresh);
    let _ = std::fs::remove_file(&cache);
}
