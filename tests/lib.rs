//! Shared helpers for revenant's end-to-end tests.

/// The arch the tests run on, as revenant names it.
pub const ARCH: &str = revenant_arch_name();

const fn revenant_arch_name() -> &'static str {
    if cfg!(target_arch = "x86_64") { "x86_64" } else { "arm" }
}
