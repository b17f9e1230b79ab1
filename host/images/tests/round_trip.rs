//! Reading and writing back gives the same bytes: every fixture image, a
//! whole checkpoint, and fields this crate does not define.

mod common;

use common::*;
use prost::Message as _;
use revenant_images::messages::*;
use revenant_images::{Image, ImageSet, Kind, Writer};

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

#[test]
fn every_fixture_image_re_encodes_byte_for_byte() {
    let mut n = 0;
    for set in SETS {
        for path in image_files(set) {
            let data = std::fs::read(&path).unwrap();
            let image = Image::decode(&data).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let again = image.encode();
            assert!(
                again == data,
                "{}: re-encoded image differs at byte {} (lengths {} and {})",
                path.display(),
                first_difference(&again, &data),
                again.len(),
                data.len()
            );
            n += 1;
        }
    }
    assert!(n >= 57, "only {n} fixture images");
}

#[test]
fn a_loaded_checkpoint_writes_back_identical_files() {
    for set in SETS {
        let loaded = ImageSet::load(&set_dir(set)).unwrap();
        let out = Scratch::new(&format!("write-{set}"));
        loaded.write(&out.0).unwrap();
        for e in std::fs::read_dir(&out.0).unwrap() {
            let name = e.unwrap().file_name();
            let ours = std::fs::read(out.0.join(&name)).unwrap();
            let theirs = std::fs::read(set_dir(set).join(&name))
                .unwrap_or_else(|_| panic!("{set}: wrote {name:?}, which the fixture does not have"));
            assert!(ours == theirs, "{set}/{name:?}: differs at byte {}", first_difference(&ours, &theirs));
        }
        // Everything but the dump statistics is carried.
        for path in std::fs::read_dir(set_dir(set)).unwrap() {
            let name = path.unwrap().file_name().into_string().unwrap();
            assert!(name == "stats-dump" || out.path(&name).exists(), "{set}: {name} was not written");
        }
        let again = ImageSet::load(&out.0).unwrap();
        assert_eq!(
            again.processes,
            loaded
                .processes
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.pages = out.0.join(p.pages.file_name().unwrap());
                    p
                })
                .collect::<Vec<_>>()
        );
        again.validate("x86_64").unwrap();
    }
}

/// Appends a field unknown to this crate (tag 1000, length-delimited and
/// varint) to an encoded message.
fn with_unknown(mut bytes: Vec<u8>) -> Vec<u8> {
    // Key of tag 1000, wire type 2: (1000 << 3) | 2 as a varint.
    bytes.extend_from_slice(&[0xc2, 0x3e, 3, b'n', b'e', b'w']);
    // Tag 1001, varint 300.
    bytes.extend_from_slice(&[0xc8, 0x3e, 0xac, 0x02]);
    bytes
}

#[test]
fn unknown_fields_survive_top_level_and_nested() {
    let path = set_dir("loop-static").join("mm-10562.img");
    let Image::Mm(v) = Image::read(&path).unwrap() else { panic!("not an mm image") };
    let mut mm = v[0].clone();
    // Nest an unknown field inside the second VMA by re-decoding it.
    let vma = VmaEntry::decode(with_unknown(mm.vmas[1].encode_to_vec()).as_slice()).unwrap();
    assert_eq!(vma.unknown.bytes().len(), 10);
    assert_eq!(vma.start, mm.vmas[1].start);
    mm.vmas[1] = vma;
    let outer = with_unknown(mm.encode_to_vec());
    let mut w = Writer::new(Kind::Mm);
    w.raw(&(outer.len() as u32).to_le_bytes()).raw(&outer);
    let file = w.bytes().to_vec();

    let image = Image::decode(&file).unwrap();
    let Image::Mm(v) = &image else { panic!("not an mm image") };
    assert_eq!(v[0].unknown.bytes().len(), 10);
    assert_eq!(v[0].vmas[1].unknown.bytes().len(), 10);
    assert_eq!(image.encode(), file, "unknown fields lost or moved");
    // crit does not print fields it does not know either.
    let plain = Image::read(&path).unwrap().to_json();
    assert_eq!(image.to_json(), plain);
}

#[test]
fn unknown_payloads_of_file_entries_survive() {
    // A file entry of a kind not modelled (a tun device, field 11).
    let mut e = FileEntry { r#type: FdType::Tunf as i32, id: 7, ..Default::default() }.encode_to_vec();
    e.extend_from_slice(&[0x5a, 2, 0x08, 0x07]);
    let f = FileEntry::decode(e.as_slice()).unwrap();
    assert_eq!(f.encode_to_vec(), e);
}

#[test]
fn messages_built_in_code_encode_like_criu() {
    // What a dumper writes: required fields always present, optional
    // ones only when set, in tag order.
    let e = PagemapEntry { vaddr: 0x1000, nr_pages: Some(2), flags: Some(pe::PRESENT), ..Default::default() };
    assert_eq!(e.encode_to_vec(), [0x08, 0x80, 0x20, 0x10, 0x00, 0x20, 0x04, 0x28, 0x02]);
    let d = UserDescT::default();
    assert!(d.read_exec_only && d.seg_not_present, "proto2 defaults of user_desc_t");
}

/// `cgroup.img` as a dump writes it: sets of memberships and one entry per
/// hierarchy; it decodes to the same messages, carries CRIU's magic, and
/// a checkpoint holding it loads and writes it back.
#[test]
fn a_cgroup_image_round_trips_alone_and_in_a_checkpoint() {
    let member = |name: &str, path: &str| CgMemberEntry { name: name.into(), path: path.into(), ..Default::default() };
    let cg = CgroupEntry {
        sets: vec![
            CgSetEntry {
                id: 1,
                ctls: vec![member("", "/"), member("cpu,cpuacct", "/"), member("name=systemd", "/")],
                ..Default::default()
            },
            CgSetEntry {
                id: 2,
                ctls: vec![member("", "/job"), member("cpu,cpuacct", "/job/a"), member("name=systemd", "/")],
                ..Default::default()
            },
        ],
        controllers: vec![
            CgControllerEntry { cnames: vec![], ..Default::default() },
            CgControllerEntry { cnames: vec!["cpu".into(), "cpuacct".into()], ..Default::default() },
            CgControllerEntry { cnames: vec!["name=systemd".into()], ..Default::default() },
        ],
        ..Default::default()
    };
    // Field numbers as in CRIU's cgroup.proto: name 1, path 2.
    assert_eq!(member("cpu", "/a").encode_to_vec(), [0x0a, 3, b'c', b'p', b'u', 0x12, 2, b'/', b'a']);
    let image = Image::Cgroup(vec![cg.clone()]);
    let bytes = image.encode();
    assert_eq!(bytes[..8], [0x19, 0x43, 0x56, 0x54, 0x30, 0x33, 0x38, 0x59], "IMG_COMMON then CGROUP_MAGIC");
    assert_eq!(Kind::from_header(&bytes), Some(Kind::Cgroup));
    assert_eq!(Image::decode(&bytes).unwrap(), image);
    let json = image.to_json().pretty();
    assert!(json.contains("\"CGROUP\"") && json.contains("\"cpu,cpuacct\"") && json.contains("/job/a"), "{json}");

    let dir = Scratch::copy_of("loop-static", "cgroup");
    image.write(&dir.path("cgroup.img")).unwrap();
    let set = ImageSet::load(&dir.0).unwrap();
    assert_eq!(set.cgroup.as_ref(), Some(&cg));
    let out = Scratch::new("cgroup-out");
    set.write(&out.0).unwrap();
    assert_eq!(std::fs::read(out.path("cgroup.img")).unwrap(), bytes);
    // Absent, it stays absent.
    assert_eq!(ImageSet::load(&set_dir("loop-static")).unwrap().cgroup, None);
}
