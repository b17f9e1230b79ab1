//! The `revenant` command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use revenant::blob;
use revenant::kerndat::Kerndat;

/// Checkpoint and restore Linux process trees, in CRIU's image format.
#[derive(Parser)]
#[command(name = "revenant", version)]
struct Cli {
    /// Accepted for CRIU compatibility: revenant reads no configuration
    /// file.
    #[arg(long, global = true)]
    no_default_config: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show what revenant does: checkpoint a running counter, kill it,
    /// restore it, watch it carry on.
    Demo,
    /// The counter `demo` checkpoints (not for direct use).
    #[command(hide = true)]
    DemoChild { out: PathBuf },
    /// The page server of `restore --lazy` (started by it, not for direct
    /// use): serves the pages on the socket at descriptor FD.
    #[command(hide = true)]
    LazyPages {
        #[arg(long)]
        fd: i32,
        /// Serve faults only (for tests: pages then stay missing until
        /// touched).
        #[arg(long)]
        no_background: bool,
    },
    /// Probe what this kernel lets revenant do (cached per boot).
    Check {
        /// Print the probes as JSON.
        #[arg(long)]
        json: bool,
        /// Probe again instead of using (or writing) the cache.
        #[arg(long)]
        no_cache: bool,
    },
    /// Checkpoint the process tree rooted at PID into CRIU images in DIR.
    Dump {
        /// The root of the tree.
        #[arg(short = 't', long = "tree")]
        pid: i32,
        /// The image directory (created if missing).
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// Let the tree run on after the dump instead of killing it.
        #[arg(long)]
        leave_running: bool,
        /// The root may be a shell job (not a session leader).
        #[arg(long)]
        shell_job: bool,
        /// A unix socket connected to one outside the tree (a daemon's
        /// /dev/log) is dumped, to connect to the same address again at
        /// restore, instead of refused.
        #[arg(long)]
        ext_unix_sk: bool,
        /// Keep established TCP connections (locked while the tree is
        /// frozen, then held for the restore if it is killed) instead of
        /// refusing them.
        #[arg(long)]
        tcp_established: bool,
        /// Leave out connections waiting in a TCP listener's queue (their
        /// clients are reset) instead of refusing the listener.
        #[arg(long)]
        skip_in_flight: bool,
        /// The most data of an unlinked file the images carry (default
        /// 1M; K, M and G suffixes).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        ghost_limit: Option<u64>,
        /// Accepted for CRIU compatibility and ignored: unlinked files are
        /// always read by their data segments (SEEK_DATA and SEEK_HOLE).
        #[arg(long)]
        ghost_fiemap: bool,
        /// Accepted for CRIU compatibility and ignored, as --ghost-fiemap.
        #[arg(long)]
        no_ghost_fiemap: bool,
        /// Log file (default: stderr); a relative path is taken in the
        /// work directory. Written however the dump ends, the error last.
        #[arg(short = 'o', long = "log-file")]
        log: Option<PathBuf>,
        /// Where a relative log file goes (default: the image directory).
        #[arg(short = 'W', long = "work-dir")]
        work_dir: Option<PathBuf>,
        /// Log level, 0 to 4.
        #[arg(short = 'v', default_value_t = 0)]
        verbosity: u32,
        /// Seconds allowed for freezing and collecting the tree.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Accepted for CRIU compatibility and ignored: a dump writes no
        /// pidfile.
        #[arg(long)]
        pidfile: Option<PathBuf>,
        /// The previous link of an iterative dump (a pre-dump's directory),
        /// relative to the image directory: pages its holder's tracking
        /// proves unchanged since are left to it (`in_parent` entries), and
        /// a `parent` link to it is written. Without a holder (killed, or
        /// its tree gone) every page is dumped.
        #[arg(long, value_name = "DIR")]
        prev_images_dir: Option<PathBuf>,
        /// Accepted for CRIU compatibility: a dump uses the tracking a
        /// pre-dump armed; it arms none for a later link itself.
        #[arg(long)]
        track_mem: bool,
        /// Write only the pages images (benchmarks, until the image layer
        /// can write the rest).
        #[arg(long, hide = true)]
        pages_only: bool,
    },
    /// Copy the memory of the tree rooted at PID into DIR while it runs
    /// (it stands still only to arm write tracking), as a link a later
    /// `dump --prev-images-dir` builds on. A process of revenant's
    /// ("revenant-track") holds the tracking until that dump, or a further
    /// pre-dump, takes it; it exits when the tree does. Meanwhile the
    /// tree's areas show `uw` in their smaps VmFlags.
    PreDump {
        /// The root of the tree.
        #[arg(short = 't', long = "tree")]
        pid: i32,
        /// The image directory (created if missing).
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// An earlier pre-dump's directory, relative to the image
        /// directory: pages unchanged since are left to it.
        #[arg(long, value_name = "DIR")]
        prev_images_dir: Option<PathBuf>,
        /// Accepted for CRIU compatibility: a pre-dump always tracks.
        #[arg(long)]
        track_mem: bool,
        /// Log file (default: stderr); a relative path is taken in the
        /// work directory.
        #[arg(short = 'o', long = "log-file")]
        log: Option<PathBuf>,
        /// Where a relative log file goes (default: the image directory).
        #[arg(short = 'W', long = "work-dir")]
        work_dir: Option<PathBuf>,
        /// Log level, 0 to 4.
        #[arg(short = 'v', default_value_t = 0)]
        verbosity: u32,
    },
    /// Restore the process tree checkpointed in DIR.
    Restore {
        /// The image directory (never written to).
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// Return once the tree runs instead of waiting for it to exit.
        #[arg(short = 'd', long = "restore-detached")]
        detach: bool,
        /// Write the root's PID to this file (relative: in the work
        /// directory).
        #[arg(long)]
        pidfile: Option<PathBuf>,
        /// Write the restore log to this file (relative: in the work
        /// directory), however the restore ends, the error last.
        #[arg(short = 'o', long = "log-file")]
        log: Option<PathBuf>,
        /// Where a relative log file or pidfile goes (default: the image
        /// directory).
        #[arg(short = 'W', long = "work-dir")]
        work_dir: Option<PathBuf>,
        /// Log level, 0 to 4 (accepted for CRIU compatibility).
        #[arg(short = 'v', default_value_t = 0)]
        verbosity: u32,
        /// Accepted for CRIU compatibility and ignored: it bounds a dump's
        /// freezing.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// The tree was a job of a shell: keep it in this session.
        #[arg(long)]
        shell_job: bool,
        /// Always proxy to this kernel's vDSO, even when the dumped one matches.
        #[arg(long)]
        vdso_proxy: bool,
        /// CPU compatibility check: "fpu" (default) refuses images that used
        /// vector state this CPU lacks; "none" skips it.
        #[arg(long, default_value = "fpu", value_parser = ["fpu", "none"])]
        cpu_cap: String,
        /// A SysV segment whose id is taken here gets a new id instead of
        /// failing the restore (the program still knows the old one).
        #[arg(long)]
        shm_new_ids: bool,
        /// Lower hard resource limits this process may not raise to its
        /// own instead of failing (RLIMIT_NPROC's default differs between
        /// machines with their memory).
        #[arg(long)]
        clamp_limits: bool,
        /// Restore established TCP connections (taken back from the dump's
        /// lock, or built again in repair mode) instead of refusing them.
        #[arg(long)]
        tcp_established: bool,
        /// Use this process's fd N in place of pipe INO of the images
        /// (CRIU's form): needed for a pipe the dump saw held outside the
        /// tree (a shell pipeline's other command, whoever read the
        /// program's output). Every end the tree had is opened again from
        /// it; the bytes the old pipe held are not put in
        #[arg(long, value_name = "fd[N]:pipe:[INO]")]
        inherit_fd: Vec<revenant::files::pipe::Given>,
        /// Return before the memory is in: private anonymous pages arrive
        /// when first touched and in the background, from a page server
        /// process that exits once all are in (its PID is in the log). If
        /// it dies before that, the restored processes are killed.
        #[arg(long)]
        lazy: bool,
        /// Keep watching the restored programs for MS milliseconds while
        /// they run, still traced: one that dies meanwhile (a bad
        /// instruction pointer, a CPU feature it lacks) fails the restore
        /// with its first fault explained. Off by default.
        #[arg(long, value_name = "MS")]
        watch: Option<u64>,
        /// Leave a process stopped for a debugger, detached: at
        /// `blob-entry` (the restorer blob's first instruction),
        /// `before-sigreturn` (the blob's last stop, the program in place)
        /// or `after-restore`. The restore prints how to attach.
        #[arg(long, value_name = "POINT", value_parser = ["blob-entry", "before-sigreturn", "after-restore"])]
        stop_at: Option<String>,
        /// With --stop-at: the process to stop (default: the root).
        #[arg(long, value_name = "PID", requires = "stop_at")]
        stop_pid: Option<i32>,
        /// With --lazy: serve only touched pages, copy nothing in the
        /// background (for tests).
        #[arg(long, hide = true, requires = "lazy")]
        lazy_no_background: bool,
        /// Make every check a restore makes before its point of no return,
        /// creating nothing, and list every problem found; exit 1 if any.
        #[arg(long, conflicts_with = "dry_run")]
        check_only: bool,
        /// Print what a restore would do here, per process: where the
        /// bootstrap area's pieces go, the address space before and after,
        /// descriptors, registers. Creates nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Print a checkpoint directory or one image file.
    Show {
        /// An image file or a checkpoint directory.
        path: PathBuf,
        /// Print what crit would print (for a directory: every image's JSON,
        /// keyed by file name).
        #[arg(long)]
        json: bool,
        /// Compare checkpoint PATH with LATER, one of the same tree:
        /// processes, threads and their state, areas, pages, descriptors.
        #[arg(long, requires = "later", conflicts_with = "json")]
        diff: bool,
        /// With --diff: the later checkpoint.
        #[arg(requires = "diff")]
        later: Option<PathBuf>,
    },
    /// Inspect or export the restorer blob built into this binary.
    Blob {
        #[command(subcommand)]
        command: BlobCmd,
    },
}

#[derive(Subcommand)]
enum BlobCmd {
    /// Arch, sizes, entry, relocations and checksum of the blob.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Write what another tool needs to drive the blob: the flat blob, its
    /// relocations, the ABI as a C header and as JSON, a reference C
    /// loader, and SHA256SUMS.
    Export { dir: PathBuf },
    /// Load the blob in a child process and run its self-test.
    Selftest {
        /// The number the self-test feeds through its function table.
        #[arg(long, default_value_t = 7)]
        input: u32,
    },
}

fn main() -> ExitCode {
    let mut log = None;
    match run(Cli::parse(), &mut log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A signal makes a blocking call fail before its step notices.
            let e = match revenant::fault::interrupted() {
                Some(sig) => e.context(format!("interrupted by {sig}; everything was put back")),
                None => e,
            };
            let msg = format!("revenant: {e:#}");
            eprintln!("{msg}");
            // The log is wanted most when things fail: the error ends it.
            if let Some(path) = &log {
                let added = revenant_images::file::append(path, LOG_MODE)
                    .and_then(|mut f| Ok(f.write_all(format!("{msg}\n").as_bytes())?));
                if let Err(le) = added {
                    eprintln!("revenant: and the error could not be added to the log {}: {le:#}", path.display());
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs and pidfiles can show what the program had open and where.
const LOG_MODE: u32 = 0o600;

/// CRIU's rule for files named on the command line: relative to the work
/// directory (`-W`), which is the image directory unless given; absolute
/// as they are.
fn in_work_dir(path: &Path, work_dir: Option<&Path>, images: &Path) -> PathBuf {
    work_dir.unwrap_or(images).join(path)
}

/// Creates (or empties) the log before the command starts, so that it
/// exists whatever happens next, and records it in `out` for the error.
fn start_log(log: Option<&Path>, work_dir: Option<&Path>, images: &Path, out: &mut Option<PathBuf>) -> Result<()> {
    if let Some(log) = log {
        let path = in_work_dir(log, work_dir, images);
        revenant_images::file::create(&path, LOG_MODE).context("creating the log file")?;
        *out = Some(path);
    }
    Ok(())
}

fn run(cli: Cli, log_out: &mut Option<PathBuf>) -> Result<()> {
    if matches!(cli.command, Cmd::Dump { .. } | Cmd::PreDump { .. } | Cmd::Restore { .. }) {
        revenant::fault::catch_interrupts();
    }
    let mut notes = Vec::new();
    if cli.no_default_config {
        notes.push("--no-default-config: accepted; revenant reads no configuration file".to_string());
    }
    match cli.command {
        Cmd::Demo if Kerndat::get()?.ptrace => revenant::demo::run(),
        // Without ptrace (qemu-user) there is no dump: show the part that
        // runs everywhere.
        Cmd::Demo => {
            eprintln!("revenant: no ptrace here, so no dump: running the restorer's self-test instead");
            selftest(7)
        }
        Cmd::DemoChild { out } => revenant::demo::child(&out),
        Cmd::Check { json, no_cache } => {
            let k = if no_cache { Kerndat::probe()? } else { Kerndat::get()? };
            if json {
                println!("{}", serde_json::to_string_pretty(&k.to_json())?);
            } else {
                print!("{}", k.report());
            }
            Ok(())
        }
        Cmd::Dump {
            pid,
            dir,
            leave_running,
            shell_job,
            ext_unix_sk,
            tcp_established,
            skip_in_flight,
            ghost_limit,
            ghost_fiemap,
            no_ghost_fiemap,
            log,
            work_dir,
            verbosity,
            timeout,
            pidfile,
            prev_images_dir,
            track_mem,
            pages_only,
        } => {
            let made = revenant::imgdir::create(&dir);
            // A log outside the image directory can tell that it was missing.
            let started = start_log(log.as_deref(), work_dir.as_deref(), &dir, log_out);
            made?;
            started?;
            if let Some(p) = pidfile {
                notes.push(format!("--pidfile {}: ignored; a dump writes no pidfile", p.display()));
            }
            if track_mem {
                notes.push("--track-mem: accepted; a dump uses the tracking a pre-dump armed".into());
            }
            if ghost_fiemap || no_ghost_fiemap {
                notes.push("--ghost-fiemap: ignored; unlinked files are read by their data segments".into());
            }
            let timeout = timeout.map(std::time::Duration::from_secs);
            let log = log_out.clone();
            let opts = revenant::dump::DumpOptions {
                leave_running,
                shell_job,
                ext_unix_sk,
                tcp_established,
                skip_in_flight,
                ghost_limit,
                verbosity,
                log,
                timeout,
                notes,
                pages_only,
                prev_images_dir,
            };
            revenant::dump::dump(pid, &dir, &opts).with_context(|| format!("dumping process tree {pid}"))?;
            Ok(())
        }
        Cmd::PreDump { pid, dir, prev_images_dir, track_mem, log, work_dir, verbosity } => {
            let made = revenant::imgdir::create(&dir);
            let started = start_log(log.as_deref(), work_dir.as_deref(), &dir, log_out);
            made?;
            started?;
            if track_mem {
                notes.push("--track-mem: accepted; a pre-dump always tracks".into());
            }
            let opts =
                revenant::dump::predump::PreDumpOptions { prev_images_dir, verbosity, log: log_out.clone(), notes };
            revenant::dump::predump::pre_dump(pid, &dir, &opts)
                .with_context(|| format!("pre-dumping process tree {pid}"))?;
            Ok(())
        }
        Cmd::Restore {
            dir,
            detach,
            pidfile,
            log,
            work_dir,
            verbosity: _,
            timeout,
            shell_job,
            vdso_proxy,
            cpu_cap,
            shm_new_ids,
            clamp_limits,
            tcp_established,
            inherit_fd,
            lazy,
            lazy_no_background,
            watch,
            stop_at,
            stop_pid,
            check_only,
            dry_run,
            json,
        } => {
            let plan = revenant::restore::from_images::PlanOptions {
                shell_job,
                vdso_proxy,
                skip_cpu_check: cpu_cap == "none",
                shm_new_ids,
                clamp_limits,
                tcp_established,
                given_pipes: inherit_fd,
                at_dump: false,
            };
            let lazy = lazy.then_some(revenant::lazy::Mode { background: !lazy_no_background });
            if check_only || dry_run {
                // Neither writes anything: no log, no pidfile.
                let opts = revenant::restore::Options { plan, detach, lazy, ..Default::default() };
                return revenant::restore::preflight::cli(&dir, &opts, dry_run, json);
            }
            start_log(log.as_deref(), work_dir.as_deref(), &dir, log_out)?;
            if let Some(t) = timeout {
                notes.push(format!("--timeout {t}: ignored; it bounds a dump's freezing"));
            }
            let pidfile = pidfile.map(|p| in_work_dir(&p, work_dir.as_deref(), &dir));
            let opts = revenant::restore::Options {
                plan,
                detach,
                lazy,
                watch: watch.map(std::time::Duration::from_millis),
                stop_at: stop_at.map(|s| {
                    use revenant::restore::StopPoint;
                    let point = match s.as_str() {
                        "blob-entry" => StopPoint::BlobEntry,
                        "before-sigreturn" => StopPoint::BeforeSigreturn,
                        _ => StopPoint::AfterRestore,
                    };
                    revenant::restore::StopAt { point, pid: stop_pid }
                }),
                pidfile,
                log_file: log_out.clone(),
                notes,
            };
            let code = revenant::restore::run(&dir, &opts)?;
            std::process::exit(code)
        }
        Cmd::LazyPages { fd, no_background } => {
            revenant::lazy::serve(fd, revenant::lazy::Mode { background: !no_background })
        }
        Cmd::Show { path, json, diff: _, later } => {
            match later {
                Some(later) => print!("{}", revenant_images::diff(&path, &later)?),
                None => print!("{}", revenant_images::show(&path, json)?),
            }
            Ok(())
        }
        Cmd::Blob { command: BlobCmd::Info { json } } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&blob::info_json())?);
            } else {
                print!("{}", blob::info_text());
            }
            Ok(())
        }
        Cmd::Blob { command: BlobCmd::Export { dir } } => {
            blob::export(&dir).with_context(|| format!("exporting the blob to {}", dir.display()))
        }
        Cmd::Blob { command: BlobCmd::Selftest { input } } => selftest(input),
    }
}

/// A size as CRIU's options take it: bytes, or with a K, M or G suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (a number, with K, M or G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

fn selftest(input: u32) -> Result<()> {
    let expected = revenant_blob_abi::selftest_exit_code(input) as i32;
    println!("loading the {} restorer blob into a child process and running its self-test", blob::EMBEDDED.arch);
    let out = blob::run_selftest(input, "hello from the host", None)?;
    print!("{}", out.log);
    match (out.exit_code, out.signal) {
        (Some(c), _) if c == expected => {
            println!("child {} exited with {c}, as expected: load, relocation and entry work", out.pid);
            Ok(())
        }
        (Some(c), _) => match revenant_blob_abi::ExitCode::from_code(c) {
            Some(why) => bail!("blob exited with {c}: {}", why.describe()),
            None => bail!("blob exited with {c}, expected {expected}"),
        },
        (None, Some(sig)) => bail!("blob was killed by signal {sig}"),
        (None, None) => bail!("blob ended without an exit status"),
    }
}
