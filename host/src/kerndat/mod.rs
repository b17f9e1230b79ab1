//! Kernel facts ("kerndat"): what this kernel lets a restore do, found by
//! probing in a short-lived child and cached per boot.
//!
//! The facts ([`Kerndat`]): the vDSO's layout and symbols (read with
//! `object` from the live vDSO), whether `[vdso]` keeps its name after an
//! `mremap`, `ARCH_MAP_VDSO_64`, page frame numbers in pagemap, `clone3`
//! with `set_tid` (asked for our own PID: EEXIST means yes),
//! `PR_SET_MM_MAP` (`mm_map.rs`), and the alignment a fixed SysV `shmat`
//! demands (4096 on x86_64, 16384 under qemu-arm). Probes that damage the
//! process that runs them run in a forked child (`probes.rs`).
//!
//! The cache (`cache.rs`) is JSON in `/run/revenant/kerndat-ARCH.json`, or
//! the temporary directory when `/run/revenant` cannot be made
//! (`REVENANT_KERNDAT` overrides), keyed by the kernel's boot id, so a file
//! left from another boot (or another kernel) is simply ignored; a missing,
//! stale or damaged cache is never an error, only a reason to probe again.
//! In the temporary directory anyone may plant one, so a cache that is a
//! link, a FIFO, over 64 KiB or not ours is ignored, and a new one is
//! written under a fresh name and renamed into place. `revenant check
//! [--json] [--no-cache]` prints the facts.

mod cache;
mod mm_map;
mod probes;

use anyhow::Result;
use serde_json::{Value, json};

pub use cache::cache_path;
pub use probes::parse_vdso_symbols;

/// One piece of the runtime vDSO area, in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdsoPiece {
    pub name: String,
    pub size: u64,
}

/// A symbol of the runtime vDSO, by offset from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdsoSymbol {
    pub name: String,
    pub offset: u64,
}

/// Set by [`Kerndat::read_only`].
static READ_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the probes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kerndat {
    pub boot_id: String,
    pub arch: String,
    /// `[vdso]` keeps its name in /proc/PID/maps after an `mremap`
    /// (Linux 3.16+), so dump may find vDSOs by name.
    pub vdso_name_survives_mremap: Option<bool>,
    /// `[vvar]`, `[vvar_vclock]`, `[vdso]` as mapped here; empty without
    /// a vDSO (qemu-user).
    pub vdso_layout: Vec<VdsoPiece>,
    pub vdso_symbols: Vec<VdsoSymbol>,
    /// x86_64 `arch_prctl(ARCH_MAP_VDSO_64)` maps a vDSO at a chosen place.
    pub arch_map_vdso: Option<bool>,
    /// /proc/PID/pagemap shows page frame numbers to us.
    pub pagemap_pfn: bool,
    /// `clone3` can create a task with a chosen PID.
    pub clone3_set_tid: bool,
    /// `prctl(PR_SET_MM, PR_SET_MM_MAP)` works.
    pub mm_map: bool,
    /// The alignment a fixed-address SysV `shmat` demands (SHMLBA in effect).
    pub shmat_align: Option<u64>,
    /// This process can trace a child and read its registers (not under
    /// qemu-user): dump, and a restore that holds each task after its
    /// `rt_sigreturn` to unmap the bootstrap area.
    pub ptrace: bool,
}

impl Kerndat {
    /// Loads the cached facts for this boot, probing (and caching) if there
    /// are none.
    pub fn get() -> Result<Kerndat> {
        Self::get_cached_at(&cache_path())
    }

    /// [`Kerndat::get`] with the cache file at `path`.
    pub fn get_cached_at(path: &std::path::Path) -> Result<Kerndat> {
        let boot_id = cache::boot_id()?;
        if let Some(k) = cache::load(path, &boot_id) {
            return Ok(k);
        }
        let k = probes::run(boot_id)?;
        if !READ_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
            cache::store(path, &k);
        }
        Ok(k)
    }

    /// From now on this process writes no cache (nor its directory): a
    /// preflight or a dry run leaves nothing behind.
    pub fn read_only() {
        READ_ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Probes now, ignoring and not touching the cache.
    pub fn probe() -> Result<Kerndat> {
        probes::run(cache::boot_id()?)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "boot_id": self.boot_id,
            "arch": self.arch,
            "vdso_name_survives_mremap": self.vdso_name_survives_mremap,
            "vdso_layout": self.vdso_layout.iter().map(|p| json!({"name": p.name, "size": p.size})).collect::<Vec<_>>(),
            "vdso_symbols": self.vdso_symbols.iter().map(|s| json!({"name": s.name, "offset": s.offset})).collect::<Vec<_>>(),
            "arch_map_vdso": self.arch_map_vdso,
            "pagemap_pfn": self.pagemap_pfn,
            "clone3_set_tid": self.clone3_set_tid,
            "mm_map": self.mm_map,
            "shmat_align": self.shmat_align,
            "ptrace": self.ptrace,
        })
    }

    pub fn from_json(v: &Value) -> Option<Kerndat> {
        let list = |key: &str| v.get(key)?.as_array().cloned();
        Some(Kerndat {
            boot_id: v.get("boot_id")?.as_str()?.to_string(),
            arch: v.get("arch")?.as_str()?.to_string(),
            vdso_name_survives_mremap: v.get("vdso_name_survives_mremap")?.as_bool(),
            vdso_layout: list("vdso_layout")?
                .iter()
                .map(|p| Some(VdsoPiece { name: p.get("name")?.as_str()?.into(), size: p.get("size")?.as_u64()? }))
                .collect::<Option<_>>()?,
            vdso_symbols: list("vdso_symbols")?
                .iter()
                .map(|s| Some(VdsoSymbol { name: s.get("name")?.as_str()?.into(), offset: s.get("offset")?.as_u64()? }))
                .collect::<Option<_>>()?,
            arch_map_vdso: v.get("arch_map_vdso")?.as_bool(),
            pagemap_pfn: v.get("pagemap_pfn")?.as_bool()?,
            clone3_set_tid: v.get("clone3_set_tid")?.as_bool()?,
            mm_map: v.get("mm_map")?.as_bool()?,
            shmat_align: v.get("shmat_align")?.as_u64(),
            ptrace: v.get("ptrace")?.as_bool()?,
        })
    }

    /// `criu check`-style lines: each feature with a verdict.
    pub fn report(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let maybe = |b: Option<bool>| b.map(yes).unwrap_or("n/a");
        let layout: Vec<String> = self.vdso_layout.iter().map(|p| format!("{} {}K", p.name, p.size / 1024)).collect();
        let mut s = String::new();
        let mut line = |what: &str, verdict: &str, note: &str| {
            s += &format!("{what:<34} {verdict:<5} {note}\n");
        };
        line("vDSO layout", if layout.is_empty() { "none" } else { "ok" }, &layout.join(", "));
        line("vDSO symbols", &self.vdso_symbols.len().to_string(), "");
        line(
            "vDSO name survives mremap",
            maybe(self.vdso_name_survives_mremap),
            "dump finds vDSOs by name; otherwise by page frame numbers",
        );
        line("ARCH_MAP_VDSO_64", maybe(self.arch_map_vdso), "");
        line("page frame numbers in pagemap", yes(self.pagemap_pfn), "");
        line("clone3 with set_tid", yes(self.clone3_set_tid), "otherwise ns_last_pid and fork");
        line("PR_SET_MM_MAP", yes(self.mm_map), "otherwise memory layout fields are not restored");
        let shm = self.shmat_align.map(|a| format!("{a}")).unwrap_or_else(|| "n/a".into());
        line("SysV shmat fixed-address alignment", &shm, "");
        line("ptrace", yes(self.ptrace), "otherwise no dump, and a restore leaves its bootstrap area mapped");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("revenant-kerndat-test-{name}-{}", std::process::id()))
    }

    #[test]
    fn probes_are_cached_per_boot_and_bad_caches_are_ignored() {
        let _w = revenant_test_watchdog::start();
        let path = scratch("cache");
        let _ = std::fs::remove_file(&path);
        let fresh = Kerndat::get_cached_at(&path).unwrap();
        assert_eq!(fresh.arch, revenant_arch::NAME);
        assert!(path.exists(), "the probe result was not cached");
        assert_eq!(Kerndat::get_cached_at(&path).unwrap(), fresh);

        // A cache from another boot is not trusted: it is probed over.
        let mut old = fresh.clone();
        old.boot_id = "another-boot".into();
        old.mm_map = !fresh.mm_map;
        std::fs::write(&path, old.to_json().to_string()).unwrap();
        let again = Kerndat::get_cached_at(&path).unwrap();
        assert_eq!((&again.boot_id, again.mm_map), (&fresh.boot_id, fresh.mm_map));

        // Damaged or foreign files are no error either, and get replaced.
        for junk in [&b"{not json"[..], b"{}", b"[1,2]", b""] {
            std::fs::write(&path, junk).unwrap();
            assert_eq!(Kerndat::get_cached_at(&path).unwrap().boot_id, fresh.boot_id);
            assert!(Kerndat::from_json(&serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()).is_some());
        }
        let _ = std::fs::remove_file(&path);
    }

    /// In the temporary directory someone else may have put a FIFO (which
    /// would block the read) or a link where the cache goes: neither is
    /// read or written through; the cache is probed and replaced.
    #[test]
    fn a_fifo_or_link_at_the_cache_path_is_not_used() {
        let path = scratch("hostile");
        let victim = scratch("hostile-victim");
        std::fs::write(&victim, b"keep me").unwrap();
        for plant in [0, 1] {
            let _ = std::fs::remove_file(&path);
            if plant == 0 {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            } else {
                std::os::unix::fs::symlink(&victim, &path).unwrap();
            }
            let k = Kerndat::get_cached_at(&path).unwrap();
            assert_eq!(k.arch, revenant_arch::NAME);
            assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file());
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&victim);
    }

    #[test]
    fn json_round_trips() {
        let _w = revenant_test_watchdog::start();
        let k = Kerndat::probe().unwrap();
        assert_eq!(Kerndat::from_json(&k.to_json()), Some(k));
    }

    #[test]
    fn this_machine_can_restore() {
        let _w = revenant_test_watchdog::start();
        let k = Kerndat::probe().unwrap();
        // Fork-based probes worked and found the SysV rule of the arch.
        let expected = if cfg!(target_arch = "arm") { 16384 } else { 4096 };
        assert_eq!(k.shmat_align, Some(expected));
        // (ARM: no ptrace under qemu-user, ptrace in the VM.)
        if cfg!(target_arch = "x86_64") {
            assert!(k.ptrace && k.mm_map && k.clone3_set_tid, "{k:?}");
            assert!(k.vdso_layout.iter().any(|p| p.name == "[vdso]"));
            assert!(k.vdso_symbols.iter().any(|s| s.name.contains("clock_gettime")), "{:?}", k.vdso_symbols);
        }
    }
}
