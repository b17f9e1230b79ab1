//! Damaged images give errors naming the file, entry and field; never a
//! panic, never an allocation beyond the input.

mod common;

use common::*;
use prost::Message as _;
use revenant_images::messages::*;
use revenant_images::{Image, ImageSet, Kind, Reader, Writer};

/// Offsets where an entry (or the magic) ends.
fn boundaries(data: &[u8]) -> Vec<usize> {
    let mut r = Reader::new(data).unwrap();
    let mut v = vec![r.kind.header_len()];
    let mut at = r.kind.header_len();
    while let Some(e) = r.next_raw().unwrap() {
        at += 4 + e.len();
        v.push(at);
    }
    v
}

#[test]
fn truncating_any_fixture_anywhere_gives_an_error_or_a_shorter_image() {
    for set in SETS {
        for path in image_files(set) {
            let data = std::fs::read(&path).unwrap();
            let full = Image::decode(&data).unwrap();
            let ends = boundaries(&data);
            // ipcns-shm payloads follow entries, so only the header and the
            // end are clean cuts there.
            let clean = |cut: usize| match full.kind() {
                Kind::IpcnsShm => cut == ends[0] || cut == data.len(),
                _ => ends.contains(&cut),
            };
            for cut in 0..data.len() {
                match Image::decode(&data[..cut]) {
                    Ok(img) => {
                        assert!(clean(cut), "{}: cut at {cut} decoded as if whole", path.display());
                        assert!(img.len() < full.len() || cut == data.len(), "{}: cut at {cut}", path.display());
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        assert!(
                            (msg.contains("entry") || msg.contains("magic") || msg.contains("too short"))
                                && !clean(cut)
                                || full.kind() == Kind::Pagemap && cut == ends[0],
                            "{}: cut at {cut}: unclear error: {msg}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_truncated_image_in_a_checkpoint_fails_the_load_naming_it() {
    for name in ["core-10562.img", "mm-10562.img", "pagemap-10562.img", "inventory.img", "pstree.img", "fs-10562.img"] {
        let dir = Scratch::copy_of("loop-static", &format!("trunc-{name}"));
        let data = std::fs::read(dir.path(name)).unwrap();
        for cut in [0, 3, 8, data.len() / 2, data.len() - 1] {
            std::fs::write(dir.path(name), &data[..cut]).unwrap();
            let err = ImageSet::load(&dir.0).map(|_| ()).unwrap_err();
            assert!(format!("{err:#}").contains(name), "cut {cut}: {err:#}");
        }
    }
}

#[test]
fn short_pages_fail_validation_naming_both_files() {
    let dir = Scratch::copy_of("loop-static", "short-pages");
    let pages = std::fs::read(dir.path("pages-1.img")).unwrap();
    std::fs::write(dir.path("pages-1.img"), &pages[..pages.len() - 4096]).unwrap();
    let err = format!("{:#}", ImageSet::load(&dir.0).unwrap().validate("x86_64").unwrap_err());
    assert!(err.contains("pages-1.img") && err.contains("pagemap-10562.img"), "{err}");
}

#[test]
fn wrong_magic_is_named() {
    let data = std::fs::read(set_dir("loop-static").join("core-10562.img")).unwrap();
    let mut bad = data.clone();
    bad[4] ^= 0xff;
    let err = format!("{:#}", Image::decode(&bad).unwrap_err());
    assert!(err.contains("magic") && err.contains("not an image kind"), "{err}");
    bad[0] ^= 0xff;
    let err = format!("{:#}", Image::decode(&bad).unwrap_err());
    assert!(err.contains("magic"), "{err}");
    let pages = std::fs::read(set_dir("loop-static").join("pages-1.img")).unwrap();
    let err = format!("{:#}", Image::decode(&pages[..4096]).unwrap_err());
    assert!(err.contains("pages image"), "{err}");
    assert!(Image::decode(&[]).is_err());
    assert!(Image::decode(b"\x19\x43").is_err());
}

#[test]
fn a_length_prefix_beyond_the_file_is_refused_before_allocating() {
    for set in SETS {
        for path in image_files(set) {
            let data = std::fs::read(&path).unwrap();
            let at = Kind::from_header(&data).unwrap().header_len();
            if data.len() < at + 4 {
                continue;
            }
            for len in [u32::MAX, (data.len() - at - 4 + 1) as u32] {
                let mut bad = data.clone();
                bad[at..at + 4].copy_from_slice(&len.to_le_bytes());
                let err = format!("{:#}", Image::decode(&bad).unwrap_err());
                assert!(err.contains("entry 0") && err.contains("runs past the end"), "{err}");
            }
        }
    }
}

fn one_entry(kind: Kind, entry: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(kind);
    w.raw(&(entry.len() as u32).to_le_bytes()).raw(entry);
    w.bytes().to_vec()
}

#[test]
fn garbage_protobuf_names_entry_and_message() {
    for garbage in [&[0xffu8; 9][..], &[0x0a, 0x7f, 1][..], &[0x07][..], &[0x08][..]] {
        let err = format!("{:#}", Image::decode(&one_entry(Kind::Core, garbage)).unwrap_err());
        assert!(err.contains("entry 0") && err.contains("core_entry"), "{err}");
    }
    // Second entry bad: the index says so.
    let good = PstreeEntry { pid: 1, ppid: 0, pgid: 1, sid: 1, threads: vec![1], ..Default::default() }.encode_to_vec();
    let mut data = one_entry(Kind::Pstree, &good);
    data.extend_from_slice(&3u32.to_le_bytes());
    data.extend_from_slice(&[0x28, 0x80, 0x80]);
    let err = format!("{:#}", Image::decode(&data).unwrap_err());
    assert!(err.contains("entry 1") && err.contains("pstree_entry.threads"), "{err}");
}

#[test]
fn nested_garbage_names_the_field_path() {
    // mm_entry.vmas[0] with a truncated start.
    let data = one_entry(Kind::Mm, &[0x72, 0x02, 0x08, 0x80]);
    let err = format!("{:#}", Image::decode(&data).unwrap_err());
    assert!(err.contains("mm_entry.vmas") && err.contains("vma_entry.start"), "{err}");
}

#[test]
fn unknown_enum_values_are_refused_naming_the_field() {
    let mut core = CoreEntry { mtype: 99, ..Default::default() };
    let err = format!("{:#}", Image::decode(&one_entry(Kind::Core, &core.encode_to_vec())).unwrap_err());
    assert!(err.contains("entry 0") && err.contains("mtype") && err.contains("99"), "{err}");
    core.mtype = Mtype::X8664 as i32;
    let f = FdinfoEntry { id: 1, flags: 0, r#type: 4242, fd: 0, ..Default::default() };
    let err = format!("{:#}", Image::decode(&one_entry(Kind::Fdinfo, &f.encode_to_vec())).unwrap_err());
    assert!(err.contains("fdinfo_entry: type: unknown enum value 4242"), "{err}");
    let c = CoreEntry {
        mtype: 1,
        thread_core: Some(ThreadCoreEntry { seccomp_mode: Some(7), ..Default::default() }),
        ..Default::default()
    };
    let err = format!("{:#}", Image::decode(&one_entry(Kind::Core, &c.encode_to_vec())).unwrap_err());
    assert!(err.contains("thread_core.seccomp_mode: unknown enum value 7"), "{err}");
}

#[test]
fn missing_required_fields_are_refused_naming_them() {
    // A pstree entry with only its pid.
    let err = format!("{:#}", Image::decode(&one_entry(Kind::Pstree, &[0x08, 0x05])).unwrap_err());
    assert!(err.contains("entry 0") && err.contains("pstree_entry: ppid: required field missing"), "{err}");
    // A VMA without its end, nested in an mm entry.
    let vma = VmaEntry { start: 0x1000, end: 0x2000, ..Default::default() }.encode_to_vec();
    let mut partial = Vec::new();
    // Drop the `end` field (tag 2): keep `start` only, then the rest.
    let start_len = 3;
    partial.extend_from_slice(&vma[..start_len]);
    partial.extend_from_slice(&vma[start_len + 3..]);
    let vma = VmaEntry::decode(partial.as_slice()).unwrap();
    assert_eq!(vma.end, 0);
    // Encoding writes every required field; append the partial VMA by hand.
    let mut body = MmEntry::default().encode_to_vec();
    body.push(0x72);
    body.push(partial.len() as u8);
    body.extend_from_slice(&partial);
    let err = format!("{:#}", Image::decode(&one_entry(Kind::Mm, &body)).unwrap_err());
    assert!(err.contains("mm_entry: vmas[0].end: required field missing"), "{err}");
}

#[test]
fn a_pages_image_handed_to_show_is_described_not_decoded() {
    let text = revenant_images::show(&set_dir("loop-static").join("pages-1.img"), false).unwrap();
    assert!(text.contains("raw pages image") && text.contains("271 pages"), "{text}");
    assert!(revenant_images::show(&set_dir("loop-static").join("pages-1.img"), true).is_err());
}

/// The fuzz target's property on deterministic random corruptions of the
/// fixtures: no panic; whatever decodes re-encodes and decodes to itself.
#[test]
fn random_corruptions_fail_cleanly_or_round_trip() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut decoded, mut refused) = (0, 0);
    for set in SETS {
        for path in image_files(set) {
            let data = std::fs::read(&path).unwrap();
            for _ in 0..60 {
                let mut bad = data.clone();
                for _ in 0..1 + next() % 4 {
                    let at = next() as usize % bad.len();
                    bad[at] = next() as u8;
                }
                match Image::decode(&bad) {
                    Ok(img) => {
                        decoded += 1;
                        let bytes = img.encode();
                        let again = Image::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                        assert_eq!(again, img, "{}", path.display());
                        assert_eq!(again.encode(), bytes);
                        let _ = img.to_json().pretty();
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(!format!("{e:#}").is_empty());
                    }
                }
            }
        }
    }
    assert!(decoded > 0 && refused > 0, "{decoded} decoded, {refused} refused");
}

/// A `tcp-stream` image whose queue lengths say more than the file holds
/// (a hostile `inq_len` or `outq_len` of up to 4 GiB) fails naming the
/// field, without allocating for it; exact lengths round-trip.
#[test]
fn a_tcp_stream_image_with_queue_lengths_past_its_end_is_refused() {
    let entry = |inq_len, outq_len| TcpStreamEntry { inq_len, outq_len, unsq_len: Some(0), ..Default::default() };
    let mut w = Writer::new(Kind::TcpStream);
    w.push(&entry(3, 2)).raw(b"abcde");
    match Image::decode(w.bytes()).unwrap() {
        Image::TcpStream(e, inq, outq) => assert_eq!((e.inq_len, inq, outq), (3, b"abc".to_vec(), b"de".to_vec())),
        other => panic!("{other:?}"),
    }
    for (inq, outq, field) in [(u32::MAX, 0, "inq_len"), (3, u32::MAX, "outq_len"), (6, 0, "inq_len")] {
        let mut w = Writer::new(Kind::TcpStream);
        w.push(&entry(inq, outq)).raw(b"abcde");
        let err = format!("{:#}", Image::decode(w.bytes()).unwrap_err());
        assert!(err.contains(field) && err.contains("past the end"), "{err}");
    }
}
