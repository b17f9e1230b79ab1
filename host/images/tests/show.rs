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
