//! Iterative dumps: pre-dumps while the program runs, a final dump that
//! leaves unchanged pages to its parent, and restores of the chain, byte
//! for byte (the dumpee, `dirtier.c`, checks every byte of its pages on
//! every tick against the generation it keeps for each).

#![cfg(target_arch = "x86_64")]

#[path = "dump_support.rs"]
#[allow(dead_code)]
mod dump_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dump_support::wait_for;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use revenant::dump::predump::{PreDumpOptions, PreDumped, pre_dump};
use revenant::dump::{DumpOptions, Dumped, dump};
use revenant::restore::{Options, run};
use revenant_test_watchdog as watchdog;

/// The dumpee's pages.
const PAGES: u64 = 4096;
/// Pages one SIGUSR1 round rewrites.
const ROUND: u64 = PAGES / 8;

fn scratch(name: &str) -> PathBuf {
    dump_support::scratch("predump", name)
}

fn start(out: &Path) -> Child {
    start_with(out, &[])
}

/// [`start`] with more arguments after the output file.
fn start_with(out: &Path, args: &[&str]) -> Child {
    let mut c = Command::new(dump_support::build("dirtier"));
    c.arg(out).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid and close_range are async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    c.spawn().unwrap()
}

fn ticks(out: &Path) -> usize {
    std::fs::read_to_string(out).unwrap_or_default().lines().filter(|l| l.contains("tick=")).count()
}

/// Asks for the next round of rewrites and waits until it is done.
fn dirty_round(pid: i32, out: &Path, round: u32) {
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let text = wait_for(out, |l| l.iter().any(|x| x.starts_with(&format!("round={round} "))));
    assert!(text.contains(&format!("round={round} pages={ROUND}")), "{text}");
}

fn pre(pid: i32, dir: &Path, prev: Option<&str>) -> PreDumped {
    std::fs::create_dir_all(dir).unwrap();
    let opts = PreDumpOptions { prev_images_dir: prev.map(PathBuf::from), ..Default::default() };
    pre_dump(pid, dir, &opts).unwrap()
}

/// The final dump (which kills the program); reaps it and waits until its
/// PID is free.
fn final_dump(child: &mut Child, dir: &Path, prev: &str) -> Dumped {
    std::fs::create_dir_all(dir).unwrap();
    let opts = DumpOptions { prev_images_dir: Some(prev.into()), ..Default::default() };
    let dumped = dump(child.id() as i32, dir, &opts);
    if dumped.is_err() {
        let _ = child.kill();
    }
    let dumped = dumped.unwrap();
    child.wait().unwrap();
    for p in &dumped.tree.procs {
        gone(p.pid);
    }
    dumped
}

fn gone(pid: i32) {
    for _ in 0..250 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} is still there");
}

/// Restores `dir` detached and checks that the program, on its own, finds
/// every byte of its pages right on ten ticks, and once more after a round
/// of rewrites; then stops it.
fn restore_checked(dir: &Path, out: &Path, pid: i32, round: u32) {
    restore_checked_by(dir, out, pid, round, |d| {
        run(d, &Options { detach: true, ..Default::default() }).unwrap();
    });
}

/// [`restore_checked`], restoring with `restore`.
fn restore_checked_by(dir: &Path, out: &Path, pid: i32, round: u32, restore: impl FnOnce(&Path)) {
    let before = ticks(out);
    // Killed however the test ends.
    let _kill = KillOnDrop(pid);
    restore(dir);
    let text = wait_for(out, |l| l.iter().filter(|x| x.contains("tick=")).count() >= before + 10);
    let after: Vec<&str> = text.lines().filter(|l| l.contains("tick=")).skip(before).collect();
    assert!(after.len() >= 10, "the restored program did not tick on: {text}");
    assert!(after.iter().all(|l| l.starts_with(&format!("pid={pid} ")) && l.ends_with("check=ok")), "{after:?}");
    dirty_round(pid, out, round);
    let n = ticks(out);
    let text = wait_for(out, |l| l.iter().filter(|x| x.contains("tick=")).count() >= n + 3);
    assert!(text.lines().filter(|l| l.contains("tick=")).skip(n).all(|l| l.ends_with("check=ok")), "{text}");
}

/// Sends SIGKILL to a PID and collects it (if it is our child) when
/// dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.0), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
}

fn holder_gone(holder: u32) {
    // The holder's parent is init, which reaps it in its own time: gone
    // or a zombie both mean it holds nothing.
    for _ in 0..250 {
        let stat = std::fs::read_to_string(format!("/proc/{holder}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the holder {holder} is still there");
}

/// Pages the pagemap of `pid` in `dir` leaves to the parent, and the size
/// of its pages image against the pages it promises.
fn entries(dir: &Path, pid: i32) -> (u64, u64, u64) {
    let revenant_images::Image::Pagemap(head, e) =
        revenant_images::Image::read(&dir.join(format!("pagemap-{pid}.img"))).unwrap()
    else {
        panic!("not a pagemap")
    };
    let count = |f: u32| e.iter().filter(|x| x.pe_flags() & f != 0).map(|x| x.pages()).sum::<u64>();
    let size = std::fs::metadata(dir.join(format!("pages-{}.img", head.pages_id))).unwrap().len();
    (count(revenant_images::messages::pe::PARENT), count(revenant_images::messages::pe::PRESENT), size)
}

#[test]
fn a_chain_of_three_links_restores_exactly_and_holds_only_what_changed() {
    let _w = watchdog::start();
    let work = scratch("three");
    let out = work.join("out");
    let mut child = start(&out);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);

    let first = pre(pid, &work.join("d1"), None);
    assert_eq!(first.pages_in_parent(), 0);
    assert!(first.pages_written() >= PAGES, "{first:?}");
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    assert!(smaps.lines().any(|l| l.starts_with("VmFlags:") && l.contains(" uw")), "no area is tracked");

    dirty_round(pid, &out, 1);
    let second = pre(pid, &work.join("d2"), Some("../d1"));
    holder_gone(first.holder);
    // One round, a tick's page per 20 ms and what the C library touched
    // were written since: nearly all of the rest is left to the parent.
    assert!(second.pages_in_parent() >= PAGES - ROUND - 64, "{second:?}");
    assert!(second.pages_written() < ROUND + 128, "{second:?}");
    assert_eq!(std::fs::read_link(work.join("d2/parent")).unwrap(), Path::new("../d1"));

    dirty_round(pid, &out, 2);
    let last = final_dump(&mut child, &work.join("d3"), "../d2");
    holder_gone(second.holder);
    assert!(last.pages_in_parent() >= PAGES - ROUND - 64, "{}", last.pages_in_parent());
    assert!(last.pages_written() < ROUND + 128, "{}", last.pages_written());
    // The pages image holds what the pagemap promises here, nothing more.
    let (parent, present, size) = entries(&work.join("d3"), pid);
    assert_eq!((parent, present), (last.pages_in_parent(), last.pages_written()));
    assert_eq!(size, present * 4096);
    assert_eq!(std::fs::read_link(work.join("d3/parent")).unwrap(), Path::new("../d2"));
    // `show` says how many pages are in the parent, for both kinds of link.
    let shown = revenant_images::show(&work.join("d3"), false).unwrap();
    let says = format!("{} pages in the parent", last.pages_in_parent());
    assert!(shown.contains("parent: ../d2") && shown.contains(&says), "{shown}");
    let shown = revenant_images::show(&work.join("d2"), false).unwrap();
    let says = format!("process {pid}: {} pages", second.pages_written());
    assert!(shown.starts_with("pre-dump ") && shown.contains(&says), "{shown}");
    assert!(shown.contains(&format!("{} in the parent", second.pages_in_parent())), "{shown}");

    let listing = |d: &str| {
        let mut v: Vec<_> = std::fs::read_dir(work.join(d))
            .unwrap()
            .map(|e| {
                let m = e.as_ref().unwrap().metadata().unwrap();
                (e.unwrap().file_name(), m.len(), m.modified().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before: Vec<_> = ["d1", "d2", "d3"].iter().map(|d| listing(d)).collect();
    restore_checked(&work.join("d3"), &out, pid, 3);
    // A restore writes into no directory of the chain.
    assert_eq!(before, ["d1", "d2", "d3"].iter().map(|d| listing(d)).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&work);
}

/// More pages images than the blob maps to copy from
/// (`PAGES_FILES_MAPPED`): the pages the program rewrote between links
/// (one a tick, round robin) leave pages in every image of the chain, and
/// the restore reads them all with `preadv`, saying so in its log, and
/// exactly.
#[test]
fn a_chain_of_more_images_than_the_blob_maps_restores_exactly() {
    let _w = watchdog::start();
    let work = scratch("long");
    let out = work.join("out");
    let mut child = start(&out);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    let links = revenant_blob_abi::PAGES_FILES_MAPPED + 1;
    let mut prev: Option<String> = None;
    let tick_on = || {
        let n = ticks(&out);
        wait_for(&out, |l| l.iter().filter(|x| x.contains("tick=")).count() >= n + 2);
    };
    for i in 1..=links {
        let d = pre(pid, &work.join(format!("d{i}")), prev.as_deref());
        assert!(d.pages_written() > 0, "link {i}: {d:?}");
        prev = Some(format!("../d{i}"));
        tick_on();
    }
    let last = work.join(format!("d{}", links + 1));
    final_dump(&mut child, &last, prev.as_deref().unwrap());
    let log = work.join("restore.log");
    restore_checked_by(&last, &out, pid, 1, |d| {
        run(d, &Options { detach: true, log_file: Some(log.clone()), ..Default::default() }).unwrap();
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("more pages images than are mapped"), "{text}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn without_its_holder_the_final_dump_copies_everything_and_restores_exactly() {
    let _w = watchdog::start();
    let work = scratch("noholder");
    let out = work.join("out");
    let mut child = start(&out);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    let first = pre(pid, &work.join("d1"), None);
    kill(Pid::from_raw(first.holder as i32), Signal::SIGKILL).unwrap();
    holder_gone(first.holder);
    // The tracking ended with the holder: the areas are no longer
    // registered.
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    assert!(!smaps.lines().any(|l| l.starts_with("VmFlags:") && l.contains(" uw")), "still tracked");
    dirty_round(pid, &out, 1);
    let last = final_dump(&mut child, &work.join("d2"), "../d1");
    assert_eq!(last.pages_in_parent(), 0);
    assert!(last.pages_written() >= PAGES);
    restore_checked(&work.join("d2"), &out, pid, 2);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_holder_exits_with_the_tree() {
    let _w = watchdog::start();
    let work = scratch("exit");
    let out = work.join("out");
    let mut child = start(&out);
    wait_for(&out, |l| l.len() >= 3);
    let first = pre(child.id() as i32, &work.join("d1"), None);
    child.kill().unwrap();
    child.wait().unwrap();
    holder_gone(first.holder);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_chain_whose_parent_lost_pages_is_refused_naming_the_page() {
    let _w = watchdog::start();
    let work = scratch("lost");
    let out = work.join("out");
    let mut child = start(&out);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    pre(pid, &work.join("d1"), None);
    final_dump(&mut child, &work.join("d2"), "../d1");
    // The parent's pagemap without its entries: nothing to find there.
    let path = work.join(format!("d1/pagemap-{pid}.img"));
    let revenant_images::Image::Pagemap(head, _) = revenant_images::Image::read(&path).unwrap() else { panic!() };
    let mut w = revenant_images::Writer::new(revenant_images::Kind::Pagemap);
    w.push(&head);
    std::fs::write(&path, w.bytes()).unwrap();
    std::fs::write(work.join("d1/pages-1.img"), b"").unwrap();
    let e = format!("{:#}", run(&work.join("d2"), &Options { detach: true, ..Default::default() }).unwrap_err());
    assert!(e.contains(&format!("pagemap-{pid}.img: entry ")) && e.contains("is in the parent, but"), "{e}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a refused restore left the program running");
    let _ = std::fs::remove_dir_all(&work);
}

/// CRIU's restore reads revenant's chain: the `parent` links and the
/// `in_parent` entries, three links deep. Needs a CRIU binary (4.1 or
/// newer), which CI does not have.
#[test]
#[ignore = "needs CRIU: CRIU=/path/to/criu cargo test -p revenant-e2e --test predump -- --ignored criu_restores"]
fn criu_restores_our_chain() {
    let _w = watchdog::start();
    let criu = std::env::var_os("CRIU").expect("set CRIU to a criu binary");
    let work = scratch("criu");
    let out = work.join("out");
    let mut child = start(&out);
    let pid = child.id() as i32;
    let _kill = KillOnDrop(pid);
    wait_for(&out, |l| l.len() >= 3);
    pre(pid, &work.join("d1"), None);
    dirty_round(pid, &out, 1);
    pre(pid, &work.join("d2"), Some("../d1"));
    dirty_round(pid, &out, 2);
    let last = final_dump(&mut child, &work.join("d3"), "../d2");
    assert!(last.pages_in_parent() > 0);
    restore_checked_by(&work.join("d3"), &out, pid, 3, |d| {
        let st = Command::new(&criu).args(["restore", "-d", "-D"]).arg(d).args(["-o", "restore.log", "-v4"]).status();
        assert!(st.unwrap().success(), "criu restore failed; see {}/restore.log", d.display());
        let log = std::fs::read_to_string(d.join("restore.log")).unwrap();
        assert!(log.contains("(parent 2)"), "CRIU did not open three links of page reads");
    });
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_tree_sharing_pages_copy_on_write_restores_exactly() {
    let _w = watchdog::start();
    let work = scratch("tree");
    let out = work.join("out");
    let mut child = start_with(&out, &["4096", "fork"]);
    let pid = child.id() as i32;
    let lines_of = |p: i32| {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.lines().filter(|l| l.starts_with(&format!("pid={p} "))).map(String::from).collect::<Vec<_>>()
    };
    let text = wait_for(&out, |l| {
        let pids: std::collections::BTreeSet<&str> = l.iter().filter_map(|x| x.split(' ').next()).collect();
        pids.len() >= 2
    });
    let kid: i32 = text
        .lines()
        .filter_map(|l| l.split(' ').next()?.strip_prefix("pid=")?.parse().ok())
        .find(|&p| p != pid)
        .expect("the child's lines");
    let _kill = (KillOnDrop(pid), KillOnDrop(kid));
    let first = pre(pid, &work.join("d1"), None);
    assert_eq!(first.procs.len(), 2, "{first:?}");
    dirty_round(pid, &out, 1);
    let second = pre(pid, &work.join("d2"), Some("../d1"));
    holder_gone(first.holder);
    // The child wrote one page per tick only: nearly all of it is left to
    // the parent link.
    let kid_parent = second.procs.iter().find(|p| p.0 == kid).unwrap().1.iter();
    let kid_parent: u64 = kid_parent.filter(|r| r.flags & 1 != 0).map(|r| r.nr_pages).sum();
    assert!(kid_parent >= PAGES - 64, "{second:?}");
    let last = final_dump(&mut child, &work.join("d3"), "../d2");
    assert_eq!(last.tree.procs.len(), 2);
    assert!(last.pages_in_parent() >= 2 * PAGES - ROUND - 128, "{}", last.pages_in_parent());
    let before = (lines_of(pid).len(), lines_of(kid).len());
    run(&work.join("d3"), &Options { detach: true, ..Default::default() }).unwrap();
    wait_for(&out, |_| lines_of(pid).len() >= before.0 + 10 && lines_of(kid).len() >= before.1 + 10);
    for (p, n) in [(pid, before.0), (kid, before.1)] {
        let after = lines_of(p).split_off(n);
        assert!(after.len() >= 10 && after.iter().all(|l| l.ends_with("check=ok")), "{p}: {after:?}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_holder_of_another_pre_dump_is_not_trusted() {
    let _w = watchdog::start();
    let work = scratch("other");
    let out = work.join("out");
    let mut child = start(&out);
    let pid = child.id() as i32;
    wait_for(&out, |l| l.len() >= 3);
    let first = pre(pid, &work.join("d1"), None);
    // As if d1 had been made again, by a pre-dump whose holder is gone,
    // in a directory reusing the first one's inode: the holder's run id
    // no longer matches the inventory's.
    let path = work.join("d1/inventory.img");
    let revenant_images::Image::Inventory(mut inv) = revenant_images::Image::read(&path).unwrap() else { panic!() };
    assert_eq!(inv[0].dump_criu_run_id.as_ref().map(String::len), Some(32));
    inv[0].dump_criu_run_id = Some("0".repeat(32));
    let mut w = revenant_images::Writer::new(revenant_images::Kind::Inventory);
    w.push(&inv[0]);
    std::fs::write(&path, w.bytes()).unwrap();
    dirty_round(pid, &out, 1);
    let last = final_dump(&mut child, &work.join("d2"), "../d1");
    assert_eq!(last.pages_in_parent(), 0);
    // Not told to go: it went with the tree.
    holder_gone(first.holder);
    restore_checked(&work.join("d2"), &out, pid, 2);
    let _ = std::fs::remove_dir_all(&work);
}
