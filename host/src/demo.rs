//! `revenant demo`: checkpoint and restore a running program, start to
//! finish, with nothing to build or set up. The program is this binary
//! itself, started as `revenant demo-child FILE`: a counter that writes a
//! line per tick and checks a megabyte of memory each time.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// The counter run by `revenant demo-child`. Never returns.
pub fn child(out: &Path) -> Result<()> {
    let mut file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let pattern: Vec<u64> = (0..(1u64 << 17)).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let pid = std::process::id();
    for tick in 1u64.. {
        let ok = pattern.iter().enumerate().all(|(i, v)| *v == (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        writeln!(file, "pid={pid} tick={tick} memory={}", if ok { "ok" } else { "BAD" })?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let l = lines(path);
        if l.len() >= n {
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lines(path)
}

/// Runs the demo, printing what happens.
pub fn run() -> Result<()> {
    let work = std::env::temp_dir().join(format!("revenant-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = demo(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn demo(work: &Path) -> Result<()> {
    let out = work.join("counter.out");
    let images = work.join("images");
    crate::imgdir::create(&images)?;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("demo-child").arg(&out).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid and close_range are async-signal-safe; the counter
    // gets its own session and no stray fds.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3, u32::MAX, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the counter")?;
    let pid = child.id() as i32;
    println!("started a counter as PID {pid}: it writes a line every 100 ms and checks 1 MiB of its memory");
    for l in wait_lines(&out, 4) {
        println!("    {l}");
    }

    let t = Instant::now();
    let dumped = crate::dump::dump(pid, &images, &crate::dump::DumpOptions::default());
    if let Err(e) = dumped {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context("dumping the counter"));
    }
    let dump_time = t.elapsed();
    child.wait().context("reaping the dumped counter")?;
    let pages: u64 = std::fs::read_dir(&images)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let before = lines(&out).len();
    println!(
        "dumped it to {} in {:.1} ms ({} KiB of memory pages); the counter was killed",
        images.display(),
        dump_time.as_secs_f64() * 1e3,
        pages / 1024
    );

    let t = Instant::now();
    crate::restore::run(&images, &crate::restore::Options { detach: true, ..Default::default() })
        .context("restoring the counter")?;
    let restore_time = t.elapsed();
    println!("restored it in {:.1} ms, with the same PID; it carries on:", restore_time.as_secs_f64() * 1e3);
    let after = wait_lines(&out, before + 4);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);
    for l in after.iter().skip(before.saturating_sub(1)) {
        println!("    {l}");
    }
    if after.len() < before + 4 || after.iter().any(|l| l.contains("BAD")) {
        bail!("the restored counter did not carry on as it should");
    }
    println!("stopped it; done");
    Ok(())
}
