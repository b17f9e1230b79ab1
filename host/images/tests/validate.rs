//! Semantic validation: the fixtures pass; each kind of inconsistency is
//! refused with the file, entry and field named.

mod common;

use common::*;
use revenant_images::messages::*;
use revenant_images::{ImageSet, Process};

#[test]
fn every_fixture_loads_and_validates() {
    for set in SETS {
        let s = ImageSet::load(&set_dir(set)).unwrap_or_else(|e| panic!("{set}: {e:#}"));
        s.validate("x86_64").unwrap_or_else(|e| panic!("{set}: {e:#}"));
    }
    let s = ImageSet::load(&set_dir("sh-loop")).unwrap();
    assert_eq!(s.processes.len(), 2);
    assert_eq!(s.processes[1].comm(), Some("sleep"));
    assert_eq!(s.processes[1].pstree.ppid, s.processes[0].pid());
    let s = ImageSet::load(&set_dir("shm-ipcns")).unwrap();
    let seg = &s.ipc[0].shm[0];
    assert_eq!((seg.entry.desc.key, seg.entry.size), (0x5eed, 32768));
    assert_eq!(seg.pages.as_ref().unwrap().entries[0].pages(), 8);
    assert!(s.ipc[0].var.is_some() && s.seccomp.is_some() && s.timens.contains_key(&0));
}

/// Loads loop-static, changes it, writes it to a scratch directory and
/// validates that: the error must mention every one of `want`.
fn refused(tag: &str, change: impl FnOnce(&mut ImageSet), want: &[&str]) {
    let mut s = ImageSet::load(&set_dir("loop-static")).unwrap();
    change(&mut s);
    let out = Scratch::new(tag);
    s.write(&out.0).unwrap();
    let err = ImageSet::load(&out.0).and_then(|s| s.validate("x86_64")).unwrap_err();
    let err = format!("{err:#}");
    for w in want {
        assert!(err.contains(w), "{tag}: {err:?} does not mention {w:?}");
    }
}

fn proc0(s: &mut ImageSet) -> &mut Process {
    &mut s.processes[0]
}

#[test]
fn the_wrong_arch_is_refused() {
    let s = ImageSet::load(&set_dir("loop-static")).unwrap();
    let err = format!("{:#}", s.validate("arm").unwrap_err());
    assert!(err.contains("core-10562.img: entry 0: mtype") && err.contains("x86_64"), "{err}");
    refused("no-regs", |s| proc0(s).threads[0].core.thread_info = None, &["core-10562.img", "entry 0", "thread_info"]);
    refused("no-tc", |s| proc0(s).threads[0].core.tc = None, &["core-10562.img", "tc"]);
}

#[test]
fn overlapping_and_unsorted_vmas_are_refused() {
    refused(
        "overlap",
        |s| {
            let v = &mut proc0(s).mm.vmas;
            v[2].start = v[1].start;
        },
        &["mm-10562.img: entry 0: vmas[2].start", "overlaps"],
    );
}

/// Guard regions are entries of status AREA_GUARD alone after the areas,
/// in order, each covered by areas; anything else is refused, naming the
/// entry.
#[test]
fn guard_regions_must_follow_the_areas_inside_them() {
    let guard =
        |start: u64, end: u64| VmaEntry { start, end, status: vma_status::AREA_GUARD, fd: -1, ..Default::default() };
    let first = |s: &mut ImageSet| (proc0(s).mm.vmas[0].start, proc0(s).mm.vmas[0].end);
    // Good ones load: inside the first area, in order.
    let mut s = ImageSet::load(&set_dir("loop-static")).unwrap();
    let (a, _) = first(&mut s);
    let n = proc0(&mut s).mm.vmas.len();
    proc0(&mut s).mm.vmas.extend([guard(a, a + 0x1000), guard(a + 0x1000, a + 0x2000)]);
    let out = Scratch::new("guards-ok");
    s.write(&out.0).unwrap();
    ImageSet::load(&out.0).unwrap().validate("x86_64").unwrap();
    refused(
        "guard-outside",
        |s| {
            let last = proc0(s).mm.vmas.last().unwrap().end;
            proc0(s).mm.vmas.push(guard(last, last + 0x1000));
        },
        &[&format!("mm-10562.img: entry 0: vmas[{n}]"), "is in no area"],
    );
    refused(
        "guard-status",
        |s| {
            let (a, _) = first(s);
            proc0(s)
                .mm
                .vmas
                .push(VmaEntry { status: vma_status::AREA_GUARD | vma_status::AREA_REGULAR, ..guard(a, a + 0x1000) });
        },
        &[&format!("vmas[{n}].status"), "other status bits"],
    );
    refused(
        "area-after-guard",
        |s| {
            let (a, _) = first(s);
            let mut v = proc0(s).mm.vmas.last().unwrap().clone();
            (v.start, v.end) = (v.end + 0x10000, v.end + 0x11000);
            proc0(s).mm.vmas.push(guard(a, a + 0x1000));
            proc0(s).mm.vmas.push(v);
        },
        &["guard regions come last"],
    );
    refused(
        "guard-order",
        |s| {
            let (a, _) = first(s);
            proc0(s).mm.vmas.extend([guard(a + 0x1000, a + 0x2000), guard(a, a + 0x1000)]);
        },
        &[&format!("vmas[{}]", n + 1), "out of order"],
    );
}

#[test]
fn unaligned_or_empty_or_reversed_vmas_are_refused_naming_start_or_end() {
    refused(
        "unaligned-start",
        |s| proc0(s).mm.vmas[1].start += 1,
        &["mm-10562.img: entry 0: vmas[1].start: 0x401001 is not page aligned"],
    );
    refused(
        "unaligned-end",
        |s| proc0(s).mm.vmas[0].end += 1,
        &["mm-10562.img: entry 0: vmas[0].end: 0x401001 is not page aligned"],
    );
    refused(
        "reversed",
        |s| {
            // The last ordinary area (the stack), so the order still holds.
            let v = &mut proc0(s).mm.vmas[10];
            (v.start, v.end) = (v.end, v.start);
        },
        &["mm-10562.img: entry 0: vmas[10].end: 0x7ffd48fdc000 is not above the start 0x7ffd48ffd000"],
    );
    refused(
        "empty",
        |s| {
            let v = &mut proc0(s).mm.vmas[10];
            v.end = v.start;
        },
        &["mm-10562.img: entry 0: vmas[10].end: 0x7ffd48fdc000 is not above the start 0x7ffd48fdc000"],
    );
}

#[test]
fn pagemap_runs_outside_areas_or_out_of_order_are_refused() {
    refused(
        "run-outside",
        |s| proc0(s).pagemap[0].vaddr = 0x1000,
        &["pagemap-10562.img: entry 1: vaddr", "not inside"],
    );
    refused("run-order", |s| proc0(s).pagemap.swap(1, 2), &["pagemap-10562.img: entry 3: vaddr", "below the previous"]);
    refused(
        "run-parent",
        |s| proc0(s).pagemap[0].flags = Some(pe::PARENT | pe::PRESENT),
        &["pagemap-10562.img: entry 1: flags", "both in the parent checkpoint and in this one"],
    );
}

#[test]
fn a_pages_image_of_the_wrong_size_is_refused() {
    refused(
        "pages-size",
        |s| {
            let run = proc0(s).pagemap.iter_mut().find(|e| e.pages() > 1).unwrap();
            run.nr_pages = Some(run.pages() - 1);
        },
        &["pages-1.img", "pagemap-10562.img", "promises"],
    );
}

#[test]
fn missing_file_ids_are_refused() {
    refused("exe", |s| proc0(s).mm.exe_file_id = 999, &["mm-10562.img: entry 0: exe_file_id", "999"]);
    refused(
        "vma-file",
        |s| {
            let v = proc0(s).mm.vmas.iter_mut().find(|v| v.status & vma_status::FILE_PRIVATE != 0).unwrap();
            v.shmid = 999;
        },
        &["mm-10562.img: entry 0: vmas[0].shmid", "999"],
    );
    refused("cwd", |s| proc0(s).fs.cwd_id = 999, &["fs-10562.img: entry 0: cwd_id", "999"]);
    refused("fd", |s| proc0(s).fds[1].id = 999, &["fdinfo-2.img: entry 1: id", "999"]);
    refused("fd-type", |s| proc0(s).fds[1].r#type = FdType::Pipe as i32, &["fdinfo-2.img: entry 1: type", "PIPE"]);
    refused("dup-fd", |s| proc0(s).fds[1].fd = 0, &["fdinfo-2.img: entry 1: fd", "twice"]);
    refused("dup-file", |s| s.files[1].id = s.files[0].id, &["files.img: entry 1: id", "twice"]);
    refused("no-reg", |s| s.files[0].reg = None, &["files.img: entry 0: reg", "REG"]);
}

#[test]
fn an_inconsistent_process_tree_is_refused() {
    let mut s = ImageSet::load(&set_dir("sh-loop")).unwrap();
    s.processes[1].pstree.ppid = 4242;
    let err = format!("{:#}", s.validate("x86_64").unwrap_err());
    assert!(err.contains("pstree.img: entry 1: ppid") && err.contains("4242"), "{err}");

    let mut s = ImageSet::load(&set_dir("sh-loop")).unwrap();
    s.processes[1].pstree.threads = vec![s.processes[1].pstree.pid, s.processes[0].pstree.pid];
    let err = format!("{:#}", s.validate("x86_64").unwrap_err());
    assert!(err.contains("pstree.img: entry 1: threads[1]") && err.contains("twice"), "{err}");

    let mut s = ImageSet::load(&set_dir("sh-loop")).unwrap();
    s.processes[0].pstree.threads = vec![1];
    let err = format!("{:#}", s.validate("x86_64").unwrap_err());
    assert!(err.contains("pstree.img: entry 0: threads"), "{err}");

    let mut s = ImageSet::load(&set_dir("sh-loop")).unwrap();
    s.processes[1].pstree.pid = s.processes[0].pstree.pid;
    let err = format!("{:#}", s.validate("x86_64").unwrap_err());
    assert!(err.contains("pstree.img: entry 1: pid") && err.contains("twice"), "{err}");
}

/// CRIU writes `fdinfo-N.img` for every files table, with no entries
/// when the process had no fds: that loads, but no image at all is a
/// damaged set, named by the field that points at it.
#[test]
fn a_missing_fdinfo_image_is_refused_but_an_empty_one_loads() {
    let dir = Scratch::copy_of("loop-static", "no-fdinfo");
    std::fs::remove_file(dir.path("fdinfo-2.img")).unwrap();
    let err = format!("{:#}", ImageSet::load(&dir.0).unwrap_err());
    assert!(err.contains("ids-10562.img: entry 0: files_id 2: fdinfo-2.img does not exist"), "{err}");

    revenant_images::Image::Fdinfo(vec![]).write(&dir.path("fdinfo-2.img")).unwrap();
    let s = ImageSet::load(&dir.0).unwrap();
    assert!(s.processes[0].fds.is_empty());
    s.validate("x86_64").unwrap();
}

#[test]
fn a_missing_image_is_named() {
    let dir = Scratch::copy_of("loop-static", "missing");
    std::fs::remove_file(dir.path("core-10562.img")).unwrap();
    let err = format!("{:#}", ImageSet::load(&dir.0).unwrap_err());
    assert!(err.contains("core-10562.img") && err.contains("cannot read"), "{err}");
    // An image of the wrong kind under a name.
    std::fs::copy(dir.path("mm-10562.img"), dir.path("core-10562.img")).unwrap();
    let err = format!("{:#}", ImageSet::load(&dir.0).unwrap_err());
    assert!(err.contains("core-10562.img: a MM image where a CORE image was expected"), "{err}");
}
