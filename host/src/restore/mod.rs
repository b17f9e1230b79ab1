//! `revenant restore`: images to a restore plan, the plan to running
//! processes. See docs/architecture.md for the sequence.

mod bootstrap;
pub mod chain;
mod child;
pub mod convert;
mod cow;
mod creds;
pub mod dry_run;
mod explain;
pub mod from_images;
mod held;
pub(crate) mod layout;
mod limits;
pub mod plan;
pub mod preflight;
mod spawn;
mod tree_files;
mod vdso;

mod finish;

pub use spawn::{Restored, restore_process};

use revenant_blob_abi::ExitCode;

/// The blob's last log line before its sigreturn.
pub const DONE_LINE: &str = "blob: restore done, returning to the program";

/// Says what a restore that ended with exit `code` ran into.
fn describe_exit(code: i32) -> String {
    if code == child::SETUP_FAILED {
        return "failed while reopening files and setting up, before its memory was touched".into();
    }
    match ExitCode::from_code(code) {
        Some(c) => format!("the restorer blob failed with exit code {code}: {}", c.describe()),
        None => format!("exited with code {code} during the restore"),
    }
}

/// Where `--stop-at` leaves a process, stopped and detached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPoint {
    /// At the blob's first instruction: nothing of the program is in place.
    /// That task's blob then neither logs (nobody would read its log pipe)
    /// nor traps at its end.
    BlobEntry,
    /// At the blob's trap right before its `rt_sigreturn`: the program is
    /// in place, the bootstrap area still mapped.
    BeforeSigreturn,
    /// After the whole restore, at the program's own next instruction.
    AfterRestore,
}

/// `--stop-at POINT`, for process `pid` (the root if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopAt {
    pub point: StopPoint,
    pub pid: Option<i32>,
}

/// What `revenant restore` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub plan: from_images::PlanOptions,
    /// Return once the tree runs instead of waiting for it.
    pub detach: bool,
    /// Leave private anonymous pages to a page server (`crate::lazy`).
    pub lazy: Option<crate::lazy::Mode>,
    /// Keep tracing the programs this long after letting them run, and
    /// fail the restore, naming the fault, if one dies meanwhile.
    pub watch: Option<std::time::Duration>,
    /// Leave one process stopped for a debugger at this point.
    pub stop_at: Option<StopAt>,
    /// Write the root PID here.
    pub pidfile: Option<std::path::PathBuf>,
    /// Write the restore log here (it never goes into the image directory
    /// unless asked to).
    pub log_file: Option<std::path::PathBuf>,
    /// Lines for the top of the log: options accepted but not used.
    pub notes: Vec<String>,
}

/// How to attach to a process `--stop-at` left stopped.
fn attach_help(pid: i32, stopped: &spawn::Stopped) -> String {
    let symbols = match stopped.blob_base {
        Some(b) => format!(
            "\n  in gdb, for the blob's functions and lines: add-symbol-file DIR/blob.elf -o {b:#x}\n  \
             (DIR from `revenant blob export DIR`; this binary's blob)"
        ),
        None => String::new(),
    };
    format!(
        "revenant: PID {pid} is {}.\n  It is stopped and detached: gdb -p {pid}{symbols}\n  then `continue`; without a \
         debugger, kill -CONT {pid} lets it run",
        stopped.what
    )
}

/// Mode of the log and pidfile when created: the log can show addresses
/// and file names of the program.
const PRIVATE: u32 = 0o600;

/// Restores the checkpoint in `dir`. With `detach`, returns 0 once the
/// tree runs; otherwise waits and returns the root's exit status (128 +
/// signal if a signal ended it).
///
/// The log, if asked for, is created first and gets every line known when
/// the restore ends, however it ends; the caller adds the error.
pub fn run(dir: &std::path::Path, opts: &Options) -> anyhow::Result<i32> {
    use anyhow::Context;
    use std::io::Write;
    let mut log = match &opts.log_file {
        Some(path) => {
            let f = revenant_images::file::create(path, PRIVATE).context("creating the restore log")?;
            // A lazy restore's page server appends its lines to it too.
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND))
                .context("the restore log")?;
            Some(f)
        }
        None => None,
    };
    let mut log_line = |line: &str| -> anyhow::Result<()> {
        if let (Some(f), Some(path)) = (&mut log, &opts.log_file) {
            f.write_all(line.as_bytes()).with_context(|| format!("writing the restore log {}", path.display()))?;
        }
        Ok(())
    };
    for n in &opts.notes {
        log_line(&format!("host: {n}\n"))?;
    }
    let plan = from_images::plan_dir(dir, &opts.plan).with_context(|| format!("{}", dir.display()))?;
    crate::fault::step(|| "images read and planned".into())?;
    if opts.detach
        && let Some(root) = plan.processes.first()
        && let Some(t) = root.threads.iter().find(|t| t.pdeath_sig != 0)
    {
        // The root's parent is revenant, which a detached restore leaves at
        // once: the signal would come the moment the program runs.
        anyhow::bail!(
            "{}: core-{}.img: entry 0: thread_core.pdeath_sig {}: the root has a parent-death signal, and a \
             detached restore's parent exits at once; restore without -d (revenant then stays its parent)",
            dir.display(),
            t.tid,
            t.pdeath_sig
        );
    }
    for w in &plan.warnings {
        eprintln!("revenant: warning: {w}");
        log_line(&format!("host: warning: {w}\n"))?;
    }
    let stop = match opts.stop_at {
        Some(s) => {
            let pid = s.pid.unwrap_or_else(|| plan.processes[0].pid);
            if !plan.processes.iter().any(|p| p.pid == pid) {
                anyhow::bail!("--stop-at: PID {pid} is not a process of the checkpoint");
            }
            if !crate::kerndat::Kerndat::get()?.ptrace {
                anyhow::bail!("--stop-at needs ptrace, which is not available here (qemu-user?)");
            }
            Some(StopAt { pid: Some(pid), ..s })
        }
        None => None,
    };
    let lazy = if let Some(mode) = opts.lazy {
        let server = crate::lazy::start(opts.log_file.as_deref(), mode)?;
        log_line(&format!("host: lazy: page server PID {}\n", server.pid))?;
        Some(server)
    } else {
        None
    };
    let restored = spawn::restore_tree(
        &plan.processes,
        &plan.zombies,
        &plan.ipc,
        &plan.host,
        &spawn::Run { lazy: lazy.as_ref(), watch: opts.watch, stop },
    )?;
    // The tasks hold their own sockets until their blobs have handed over;
    // ours goes now, so the server sees the end once they have.
    drop(lazy);
    for r in &restored {
        log_line(&r.log)?;
    }
    for r in restored.iter() {
        if let Some(stopped) = &r.stopped {
            eprintln!("{}", attach_help(r.pid, stopped));
        }
    }
    let root = restored[0].pid;
    if let Some(path) = &opts.pidfile {
        let mut f = revenant_images::file::create(path, PRIVATE).context("creating the pidfile")?;
        f.write_all(format!("{root}\n").as_bytes())
            .with_context(|| format!("writing the pidfile {}", path.display()))?;
    }
    if opts.detach {
        return Ok(0);
    }
    use nix::sys::wait::{WaitStatus, waitpid};
    match waitpid(nix::unistd::Pid::from_raw(root), None).with_context(|| format!("waiting for {root}"))? {
        WaitStatus::Exited(_, code) => Ok(code),
        WaitStatus::Signaled(_, sig, _) => Ok(128 + sig as i32),
        other => anyhow::bail!("restored process {root} ended oddly: {other:?}"),
    }
}
