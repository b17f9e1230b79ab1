//! `revenant restore`: images to a restore plan, the plan to running
//! processes. See docs/architecture.md for the sequence.

mod bootstrap;
mod child;
pub mod convert;
mod creds;
mod frame;
pub mod from_images;
pub(crate) mod layout;
mod limits;
pub mod plan;
pub mod regs;
mod spawn;
pub mod sysv;
mod vdso;
#[cfg(target_arch = "x86_64")]
mod xsave;

#[cfg(target_arch = "x86_64")]
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

/// What `revenant restore` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub plan: from_images::PlanOptions,
    /// Return once the tree runs instead of waiting for it.
    pub detach: bool,
    /// Write the root PID here.
    pub pidfile: Option<std::path::PathBuf>,
    /// Write the restore log here (it never goes into the image directory
    /// unless asked to).
    pub log_file: Option<std::path::PathBuf>,
}

/// Restores the checkpoint in `dir`. With `detach`, returns 0 once the
/// tree runs; otherwise waits and returns the root's exit status (128 +
/// signal if a signal ended it).
pub fn run(dir: &std::path::Path, opts: &Options) -> anyhow::Result<i32> {
    use anyhow::Context;
    let plan = from_images::plan_dir(dir, &opts.plan).with_context(|| format!("{}", dir.display()))?;
    for w in &plan.warnings {
        eprintln!("revenant: warning: {w}");
    }
    let restored = spawn::restore_tree(&plan.processes, &plan.zombies, &plan.ipc)?;
    let warned = plan.warnings.iter().map(|w| format!("host: warning: {w}\n"));
    let log: String = warned.chain(restored.iter().map(|r| r.log.clone())).collect();
    let roots: Vec<i32> = restored.iter().map(|r| r.pid).collect();
    if let Some(path) = &opts.log_file {
        std::fs::write(path, &log).with_context(|| format!("writing the restore log {}", path.display()))?;
    }
    let root = roots[0];
    if let Some(path) = &opts.pidfile {
        std::fs::write(path, format!("{root}\n")).with_context(|| format!("writing {}", path.display()))?;
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
