//! The human summaries of `revenant show`.

mod common;

use common::*;
use revenant_images::show;

#[test]
fn a_checkpoint_summary_lists_processes_threads_memory_and_files() {
    let text = show(&set_dir("sh-loop"), false).unwrap();
    for want in [
        "2 processes, 2 threads",
        "process 10569 (sh), x86_64: ppid 0",
        "process 10653 (sleep), x86_64: ppid 10569",
        "thread 10653:",
        "REGULAR|FILE_PRIVATE /usr/bin/dash",
        "REGULAR|HEAP|ANON_PRIVATE",
        "31 pages (124 KiB) in pages-1.img",
        "fd 251: PIPE pipe:[54915]",
        "cwd /var/tmp/revenant-fixtures",
    ] {
        assert!(text.contains(want), "summary lacks {want:?}:\n{text}");
    }
    let text = show(&set_dir("shm-ipcns"), false).unwrap();
    assert!(text.contains("shm key 0x5eed id 0 size 32768"), "{text}");
}

#[test]
fn single_files_are_listed_by_kind() {
    let dir = set_dir("loop-dynamic");
    let cases = [
        ("pstree.img", "pid 10564 ppid 0"),
        ("core-10564.img", "comm \"loop-dynamic\""),
        ("mm-10564.img", "r-x REGULAR|FILE_PRIVATE file"),
        ("pagemap-10564.img", "pages-1.img"),
        ("files.img", "REG /usr/lib/x86_64-linux-gnu/libc.so.6"),
        ("fdinfo-2.img", "fd   0 -> file"),
        ("timens-0.img", "\"monotonic\""),
        ("stats-dump", "STATS image, 1 entries"),
    ];
    for (file, want) in cases {
        let text = show(&dir.join(file), false).unwrap();
        assert!(text.contains(want), "{file}: lacks {want:?}:\n{text}");
    }
}

#[test]
fn every_fixture_file_and_set_shows_both_ways() {
    for set in SETS {
        assert!(show(&set_dir(set), false).is_ok() && show(&set_dir(set), true).is_ok(), "{set}");
        for path in image_files(set) {
            let text = show(&path, false).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(text.contains(" image, "), "{text}");
        }
    }
}

#[test]
fn absurd_page_counts_do_not_overflow_the_summary() {
    use revenant_images::ImageSet;
    let mut s = ImageSet::load(&set_dir("loop-static")).unwrap();
    for e in &mut s.processes[0].pagemap {
        e.nr_pages = Some(u64::MAX / 2);
    }
    let out = Scratch::new("absurd-pages");
    s.write(&out.0).unwrap();
    let text = show(&out.0, false).unwrap();
    assert!(text.contains("process 10562"), "{text}");
    assert!(show(&out.path("pagemap-10562.img"), false).is_ok());
    assert!(ImageSet::load(&out.0).unwrap().validate("x86_64").is_err());
}
