//! Link arguments for the blob. They assume `-C linker=rust-lld` (ld flavor),
//! which host/build.rs passes; a hand build does the same through
//! `.cargo/config.toml` beside this file.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=blob.ld");
    for arg in
        ["--no-dynamic-linker", "-znorelro", "-ztext", "-zmax-page-size=4096", "--build-id=none", "--gc-sections"]
    {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{dir}/blob.ld");
}
