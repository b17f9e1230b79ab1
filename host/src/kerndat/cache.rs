//! Where kerndat is kept between runs.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
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
    let exists = if super::READ_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        run.is_dir()
    } else {
        std::fs::create_dir_all(run).is_ok()
    };
    if exists {
        return run.join(name);
    }
    std::env::temp_dir().join(format!("revenant-{name}"))
}

/// The cache is a few hundred bytes; anything much larger is not ours.
const MAX_CACHE: u64 = 1 << 16;

pub fn load(path: &std::path::Path, boot_id: &str) -> Option<Kerndat> {
    use std::os::unix::fs::MetadataExt;
    // In the temporary directory anyone may have put something there
    // first: a FIFO, a link, or facts of their own.
    let f = revenant_images::file::ImageFile::open(path).ok()?;
    if f.size > MAX_CACHE || f.file.metadata().ok()?.uid() != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let text = f.read_all().ok()?;
    let k = Kerndat::from_json(&serde_json::from_slice(&text).ok()?)?;
    (k.boot_id == boot_id && k.arch == revenant_arch::NAME).then_some(k)
}

/// Writes the cache atomically; failing to is not an error.
pub fn store(path: &std::path::Path, k: &Kerndat) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = k.to_json().to_string();
    // A new file of our own, never one (or a link) someone left there.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(revenant_images::file::OPEN_FLAGS)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => {
            if std::fs::rename(&tmp, path).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
        }
        Err(_) => {}
    }
}
