//! The image layer against real CRIU 4.2 images and what crit printed.

use std::path::{Path, PathBuf};

use revenant_images::messages::*;
use revenant_images::{ImageSet, Kind, Reader, Writer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/criu-4.2")
}

fn sets() -> Vec<PathBuf> {
    ["loop-static", "loop-dynamic", "sh-loop", "shm-ipcns"].iter().map(|s| fixtures().join("images").join(s)).collect()
}

fn image_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("pages-"))
        .collect();
    v.sort();
    v
}

fn crit(set: &Path, file: &str) -> serde_json::Value {
    let name = set.file_name().unwrap();
    let json = fixtures().join("crit-json").join(name).join(file.replace(".img", "") + ".json");
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Decodes every entry of `data` as `M` and encodes it again: equal bytes
/// mean every field number, type and encoding matches CRIU's.
fn round_trip<M: prost::Message + Default>(data: &[u8]) {
    let mut r = Reader::new(data).unwrap();
    let mut w = Writer::new(r.kind);
    while let Some(m) = r.decode_next::<M>().unwrap() {
        w.push(&m);
    }
    assert_same(w.bytes(), data);
}

fn assert_same(ours: &[u8], theirs: &[u8]) {
    if ours != theirs {
        let at = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap_or(ours.len().min(theirs.len()));
        panic!("re-encoded image differs at byte {at} (lengths {} and {})", ours.len(), theirs.len());
    }
}

#[test]
fn restore_critical_images_re_encode_byte_for_byte() {
    for set in sets() {
        for path in image_files(&set) {
            let data = std::fs::read(&path).unwrap();
            let kind = Kind::from_header(&data).unwrap_or_else(|| panic!("{}: unknown magic", path.display()));
            match kind {
                Kind::Pstree => round_trip::<PstreeEntry>(&data),
                Kind::Core => round_trip::<CoreEntry>(&data),
                Kind::Ids => round_trip::<TaskKobjIdsEntry>(&data),
                Kind::Mm => round_trip::<MmEntry>(&data),
                Kind::Fs => round_trip::<FsEntry>(&data),
                Kind::Fdinfo => round_trip::<FdinfoEntry>(&data),
                Kind::Files => round_trip::<FileEntry>(&data),
                Kind::Timens => round_trip::<TimensEntry>(&data),
                Kind::IpcVar => round_trip::<IpcVarEntry>(&data),
                Kind::Pagemap => {
                    let mut r = Reader::new(&data).unwrap();
                    let mut w = Writer::new(Kind::Pagemap);
                    w.push(&r.decode_next::<PagemapHead>().unwrap().unwrap());
                    for e in r.all::<PagemapEntry>().unwrap() {
                        w.push(&e);
                    }
                    assert_same(w.bytes(), &data);
                }
                // Newer optional fields we do not model are dropped.
                Kind::Inventory | Kind::Stats | Kind::Seccomp | Kind::IpcnsShm => {
                    let mut r = Reader::new(&data).unwrap();
                    while r.next_raw().unwrap().is_some() {}
                }
            }
        }
    }
}

#[test]
fn every_fixture_loads_and_validates_and_matches_crit() {
    for set in sets() {
        let s = ImageSet::load(&set).unwrap();
        s.validate("x86_64").unwrap_or_else(|e| panic!("{}: {e:#}", set.display()));
        let pstree = crit(&set, "pstree.img");
        for (p, j) in s.processes.iter().zip(pstree["entries"].as_array().unwrap()) {
            assert_eq!(p.pstree.pid as u64, j["pid"].as_u64().unwrap());
            let pid = p.pstree.pid;
            let mm = crit(&set, &format!("mm-{pid}.img"));
            let vmas = mm["entries"][0]["vmas"].as_array().unwrap();
            assert_eq!(p.mm.vmas.len(), vmas.len());
            for (v, j) in p.mm.vmas.iter().zip(vmas) {
                assert_eq!(format!("{:#x}", v.start), j["start"].as_str().unwrap());
                assert_eq!(format!("{:#x}", v.end), j["end"].as_str().unwrap());
            }
            let core = crit(&set, &format!("core-{pid}.img"));
            let ip = core["entries"][0]["thread_info"]["gpregs"]["ip"].as_str().unwrap();
            let regs = &p.threads[0].core.thread_info.as_ref().unwrap().gpregs;
            assert_eq!(format!("{:#x}", regs.ip), ip);
            let comm = core["entries"][0]["tc"]["comm"].as_str().unwrap();
            assert_eq!(p.threads[0].core.tc.as_ref().unwrap().comm, comm);
        }
    }
}

#[test]
fn the_wrong_arch_is_refused_naming_file_and_field() {
    let s = ImageSet::load(&sets()[0]).unwrap();
    let err = format!("{:#}", s.validate("arm").unwrap_err());
    assert!(err.contains("core-10562.img") && err.contains("mtype") && err.contains("x86_64"), "{err}");
}

#[test]
fn damaged_images_give_errors_never_panics() {
    for set in sets() {
        for path in image_files(&set) {
            let data = std::fs::read(&path).unwrap();
            for cut in (0..data.len()).step_by(3) {
                let mut r = match Reader::new(&data[..cut]) {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                let mut n = 0;
                while let Ok(Some(_)) = r.next_raw() {
                    n += 1;
                }
                let _ = n;
                let _ = Reader::new(&data[..cut]).and_then(|mut r| r.all::<CoreEntry>());
                let _ = Reader::new(&data[..cut]).and_then(|mut r| r.all::<MmEntry>());
            }
            // A length prefix far beyond the file must not allocate or panic.
            let mut huge = data.clone();
            if huge.len() >= 12 {
                let at = if Kind::from_header(&huge) == Some(Kind::Inventory) { 4 } else { 8 };
                huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                let err = Reader::new(&huge).unwrap().next_raw().unwrap_err();
                assert!(format!("{err}").contains("runs past the end"), "{err}");
            }
            // Garbage after a good magic.
            let mut junk = data[..8.min(data.len())].to_vec();
            junk.extend_from_slice(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
            let _ = Reader::new(&junk).and_then(|mut r| r.all::<CoreEntry>());
        }
    }
    assert!(Reader::new(b"nope").is_err());
    assert!(Reader::new(&[]).is_err());
}

#[test]
fn validation_names_file_entry_and_field() {
    let dir = std::env::temp_dir().join(format!("revenant-images-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = &sets()[0];
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    // Overlapping VMAs.
    let mm_path = dir.join("mm-10562.img");
    let data = std::fs::read(&mm_path).unwrap();
    let mut mm: MmEntry = Reader::new(&data).unwrap().decode_next().unwrap().unwrap();
    mm.vmas[2].start = mm.vmas[1].start;
    Writer::new(Kind::Mm).push(&mm).write(&mm_path).unwrap();
    let err = format!("{:#}", ImageSet::load(&dir).unwrap().validate("x86_64").unwrap_err());
    assert!(err.contains("mm-10562.img") && err.contains("vmas[2]"), "{err}");

    // A pages image shorter than the pagemap promises.
    std::fs::write(dir.join("mm-10562.img"), std::fs::read(src.join("mm-10562.img")).unwrap()).unwrap();
    let pages = std::fs::read(src.join("pages-1.img")).unwrap();
    std::fs::write(dir.join("pages-1.img"), &pages[..pages.len() - 4096]).unwrap();
    let err = format!("{:#}", ImageSet::load(&dir).unwrap().validate("x86_64").unwrap_err());
    assert!(err.contains("pages-1.img") && err.contains("pagemap-10562.img"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
