//! `show --json` against what `crit show` printed for every fixture image.

mod common;

use common::*;
use revenant_images::show;

#[test]
fn json_equals_crits_for_every_fixture_image() {
    let mut compared = 0;
    for set in SETS {
        for path in image_files(set) {
            let Some(theirs) = crit_text(set, &path) else { continue };
            let ours = show(&path, true).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let a: serde_json::Value = serde_json::from_str(&ours).unwrap();
            let b: serde_json::Value = serde_json::from_str(&theirs).unwrap();
            assert!(a == b, "{}: our JSON differs from crit's\nours: {ours}", path.display());
            compared += 1;
        }
    }
    assert!(compared >= 57, "compared only {compared} images");
}

#[test]
fn json_text_is_crits_byte_for_byte() {
    // Same key order, indentation and escapes as Python's json.dump, so a
    // plain diff against crit's output is empty.
    for set in SETS {
        for path in image_files(set) {
            let Some(theirs) = crit_text(set, &path) else { continue };
            let ours = show(&path, true).unwrap();
            if ours != theirs {
                let line = ours.lines().zip(theirs.lines()).position(|(a, b)| a != b);
                panic!("{}: text differs from crit's at line {line:?}", path.display());
            }
        }
    }
}

#[test]
fn directory_json_holds_every_image_by_name() {
    let dir = set_dir("shm-ipcns");
    let v: serde_json::Value = serde_json::from_str(&show(&dir, true).unwrap()).unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(o["ipcns-shm-9.img"]["magic"], "IPCNS_SHM");
    assert_eq!(o["pagemap-shmem-0.img"]["entries"][1]["flags"], "PE_PRESENT");
    assert!(!o.contains_key("pages-1.img"), "raw pages have no JSON");
    assert_eq!(o.len(), image_files("shm-ipcns").len());
}
