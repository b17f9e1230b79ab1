//! Fixture access shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const SETS: [&str; 4] = ["loop-static", "loop-dynamic", "sh-loop", "shm-ipcns"];

/// CRIU 4.2's images, carried in the end-to-end tests' data.
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/criu-4.2"))
}

pub fn set_dir(set: &str) -> PathBuf {
    fixtures().join("images").join(set)
}

/// Every image file of a set but the raw pages, sorted.
pub fn image_files(set: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(set_dir(set))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("pages-"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {set}");
    v
}

/// crit's JSON text for an image file, if crit-json has it.
pub fn crit_text(set: &str, image: &Path) -> Option<String> {
    let name = image.file_name().unwrap().to_string_lossy();
    let json = fixtures().join("crit-json").join(set).join(format!("{}.json", name.trim_end_matches(".img")));
    std::fs::read_to_string(json).ok()
}

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("revenant-images-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A scratch copy of a fixture set.
    pub fn copy_of(set: &str, tag: &str) -> Scratch {
        let s = Scratch::new(tag);
        for e in std::fs::read_dir(set_dir(set)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), s.0.join(e.file_name())).unwrap();
            let mut perm = std::fs::metadata(s.0.join(e.file_name())).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(s.0.join(e.file_name()), perm).unwrap();
        }
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
