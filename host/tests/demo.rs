//! The README's main command: `revenant demo` must show a counter dumped,
//! restored with its PID and carrying on.

#![cfg(target_arch = "x86_64")]

use revenant_test_watchdog as watchdog;

#[test]
fn demo_dumps_restores_and_shows_the_counter_carrying_on() {
    let _w = watchdog::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revenant")).arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let pid = text.split("as PID ").nth(1).and_then(|s| s.split(':').next()).unwrap();
    let after: Vec<&str> = text.split("carries on:").nth(1).unwrap().lines().filter(|l| l.contains("tick=")).collect();
    assert!(after.len() >= 4, "{text}");
    assert!(after.iter().all(|l| l.trim().starts_with(&format!("pid={pid} ")) && l.ends_with("memory=ok")), "{text}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the demo left its counter running");
}
