//! Builds the restorer blob for the target's arch with a nested cargo,
//! flattens it with `revenant-linker`, and leaves `blob.bin` plus
//! `blob_meta.rs` in OUT_DIR for `src/blob/embedded.rs` to include.
//!
//! The nested build gets its own target dir and exactly the blob's rustflags:
//! anything inherited from the outer build (coverage instrumentation, a
//! target-dir whose lock the outer cargo holds, profile overrides) would
//! break it or change it silently.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use revenant_linker::{Machine, flatten};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ has a parent").to_path_buf();
    let blob_dir = root.join("restorer-blob/blob");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let (triple, machine) = match arch.as_str() {
        "x86_64" => ("x86_64-unknown-linux-gnu", Machine::X86_64),
        "arm" => ("armv7-unknown-linux-gnueabihf", Machine::Arm),
        other => panic!("revenant's restorer blob supports x86_64 and arm, not {other}"),
    };

    for p in ["src", "build.rs", "blob.ld", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", blob_dir.join(p).display());
    }
    for dep in ["restorer-blob/lib", "restorer-blob/abi", "arch"] {
        for p in ["src", "Cargo.toml"] {
            println!("cargo:rerun-if-changed={}", root.join(dep).join(p).display());
        }
    }

    let target_dir = out.join("blob-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&blob_dir)
        .args(["build", "--release", "--target", triple])
        .arg("--manifest-path")
        .arg(blob_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for (key, _) in env::vars() {
        let inherited = key == "RUSTFLAGS"
            || key == "CARGO_BUILD_RUSTFLAGS"
            || key == "CARGO_TARGET_DIR"
            || key == "CARGO_BUILD_TARGET"
            || key == "CARGO_BUILD_TARGET_DIR"
            || key == "CARGO_BUILD_BUILD_DIR"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "RUSTC_WRAPPER"
            || key.starts_with("CARGO_PROFILE_")
            || (key.starts_with("CARGO_TARGET_")
                && (key.ends_with("_RUSTFLAGS") || key.ends_with("_LINKER") || key.ends_with("_RUNNER")));
        if inherited {
            cmd.env_remove(&key);
        }
    }
    // Replaces every other source of rustflags, config files included.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Clinker=rust-lld");
    let status = cmd.status().expect("cannot run the nested cargo for the restorer blob");
    assert!(status.success(), "building the restorer blob for {triple} failed");

    let elf_path = target_dir.join(triple).join("release/revenant-blob");
    let elf = fs::read(&elf_path).unwrap_or_else(|e| panic!("{}: {e}", elf_path.display()));
    let blob = flatten(&elf, machine).unwrap_or_else(|e| panic!("flattening {}: {e}", elf_path.display()));
    let entry = blob.symbol("blob_entry").expect("the blob defines blob_entry");
    assert_eq!(entry, blob.entry, "ELF entry and blob_entry disagree");

    fs::write(out.join("blob.bin"), &blob.image).expect("write blob.bin");
    // For debuggers: symbols and line tables at the image's own offsets.
    fs::write(out.join("blob.elf"), &elf).expect("write blob.elf");
    fs::write(out.join("blob_meta.rs"), meta(&blob)).expect("write blob_meta.rs");
}

fn meta(blob: &revenant_linker::FlatBlob) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pub const ARCH: &str = {:?};", blob.machine.name());
    let _ = writeln!(s, "pub const WORD_SIZE: usize = {};", blob.machine.word_size());
    let _ = writeln!(s, "pub const ENTRY: u64 = {:#x};", blob.entry);
    let _ = writeln!(s, "pub const BSS_SIZE: u64 = {:#x};", blob.bss_size);
    let _ = writeln!(s, "pub const DATA_START: u64 = {:#x};", blob.data_start);
    let _ = writeln!(s, "pub const RELOCS: &[u32] = &{:?};", blob.relocs);
    let _ = writeln!(s, "pub const RELOC_TYPES: &[(&str, usize)] = &{:?};", blob.reloc_types);
    let syms: Vec<(&str, u64)> = blob.symbols.iter().map(|s| (s.name.as_str(), s.offset)).collect();
    let _ = writeln!(s, "pub const SYMBOLS: &[(&str, u64)] = &{syms:?};");
    let funcs: Vec<(&str, u64, u64)> = blob.functions.iter().map(|f| (f.name.as_str(), f.offset, f.size)).collect();
    let _ = writeln!(s, "pub const FUNCTIONS: &[(&str, u64, u64)] = &{funcs:?};");
    s
}
