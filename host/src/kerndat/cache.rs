//! Where kerndat is kept between runs.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Kerndat;

/// The kernel's boot id: changes on every boot, so it keys the cache.
pub fn boot_id() -> Result<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").context("reading the kernel's boot id")?;
    Ok(id.trim().to_string())
}

/// The cache file: under /run when it can be written (tmpfs, cleared at
/// boot), else the temporary directory. Either way the boot id inside
/// decides whether it is used.
pub fn cache_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REVENANT_KERNDAT") {
        return p.into();
    }
    let name = format!("kerndat-{}.json", revenant_arch::NAME);
    let run = std::path::Path::new("/run/revenant");
    if std::fs::create_dir_all(run).is_ok() {
        return run.join(name);
    }
    std::env::temp_dir().join(format!("revenant-{name}"))
}

pub fn load(path: &std::path::Path, boot_id: &str) -> Option<Kerndat> {
    let text = std::fs::read(path).ok()?;
    let k = Kerndat::from_json(&serde_json::from_slice(&text).ok()?)?;
    (k.boot_id == boot_id && k.arch == revenant_arch::NAME).then_some(k)
}

/// Writes the cache atomically; failing to is not an error.
pub fn store(path: &std::path::Path, k: &Kerndat) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = k.to_json().to_string();
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
