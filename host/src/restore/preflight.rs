//! `revenant restore --check-only`: every check a restore makes before
//! its point of no return, made on this machine without creating anything
//! (no process stays, no file, SysV segment or socket is left; nothing is
//! written, the kernel facts' cache included), each problem reported, not
//! only the first.
//!
//! The checks are the restore's own functions, in independent groups so
//! that one failing does not hide the others:
//! - the images load and are valid (`ImageSet::validate`);
//! - every PID, TID and zombie of `pstree.img` is free (`pid_free`, read
//!   from /proc), whether or not the planning works;
//! - every file opened or mapped by path (the executable, mapped files,
//!   fds, cwd and root) is present, with the dumped size where
//!   `files.img` records one (`files::reg::check_size`); unlinked files
//!   are the planning's (their path must be free);
//! - the planning (`from_images::plans`) as a whole: its refusals (kinds
//!   not restored, sessions, seccomp chains, cgroups, the address space,
//!   pid_max, ...). It runs on a copy of the images where the PIDs and the
//!   files found wrong above are not checked again, so that it goes on to
//!   what else it refuses; with the CPU check left to its own group;
//! - with the plan: the CPU's XSAVE features (`check_cpu`, skipped by
//!   `--cpu-cap none`), every hard limit above ours (`limits`), seccomp
//!   without ptrace or without CAP_SYS_ADMIN to suspend it, the fd numbers
//!   against RLIMIT_NOFILE (the service fds counted, the host's pipe ends
//!   the child also inherits not: they are low), credentials we may not
//!   give (`creds::plan`), the ids of process groups whose leader is gone
//!   (a helper takes each: `from_images::group_helpers`), the
//!   pages images, the vDSO decision (`vdso::plan`), SysV ids and keys
//!   free and `shm_next_id` writable (`sysv::restore::problems`; a new
//!   IPC namespace needs CAP_SYS_ADMIN), TCP/UDP addresses (bound on a
//!   throwaway socket with the restore's own options, closed at once,
//!   never listening), unix socket addresses (abstract names bound on a
//!   throwaway socket; paths checked as the restore checks them, and their
//!   directory, never bound: that would make a file);
//! - the kernel: a PID can be chosen (`clone3` with `set_tid`, else
//!   `ns_last_pid` writable) and we may (CAP_SYS_ADMIN or
//!   CAP_CHECKPOINT_RESTORE).
//!
//! Not covered: what only the new tasks find (an fd or path that cannot be
//! opened for its flags, a cgroup write refused, a credential change the
//! kernel refuses), a PID taken between the check and a restore, a
//! detached restore's parent-death signal, `--lazy` beyond x86_64 and the
//! page server's start, and TCP connections (`--tcp-established`), for
//! which only the capability repair mode needs is checked.

use std::collections::BTreeMap;
use std::path::Path;

use revenant_images::ImageSet;
use revenant_images::messages::vma_status as vs;

use super::from_images::{self, PlanOptions, TreePlan};

/// One group of checks and what it found.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub problems: Vec<String>,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
}

/// Everything a preflight found.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// What the restore would warn about: not problems, but the restored
    /// tree differs from the dumped one in what they say.
    pub notes: Vec<String>,
}

impl Report {
    fn add(&mut self, name: &'static str, problems: Vec<String>) {
        self.checks.push(Check { name, problems, skipped: None });
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.checks.push(Check { name, problems: vec![], skipped: Some(why.into()) });
    }

    pub fn problems(&self) -> usize {
        self.checks.iter().map(|c| c.problems.len()).sum()
    }

    /// One line per check (one per problem), and the verdict last.
    pub fn text(&self, dir: &Path) -> String {
        let mut out = format!("revenant restore --check-only -D {}\n", dir.display());
        for c in &self.checks {
            match (&c.skipped, c.problems.is_empty()) {
                (Some(why), _) => out += &format!("  skipped  {}: {why}\n", c.name),
                (None, true) => out += &format!("  ok       {}\n", c.name),
                (None, false) => {
                    for p in &c.problems {
                        out += &format!("  PROBLEM  {}: {p}\n", c.name);
                    }
                }
            }
        }
        for n in &self.notes {
            out += &format!("  note     {n}\n");
        }
        match self.problems() {
            0 => out += "no problems: a restore would get past its checks\n",
            n => out += &format!("{n} problem(s): a restore would fail before its point of no return\n"),
        }
        out
    }
}

fn errs(r: Vec<anyhow::Error>) -> Vec<String> {
    r.into_iter().map(|e| format!("{e:#}")).collect()
}

/// Runs every check for restoring `dir` with `opts`.
pub fn check(dir: &Path, opts: &super::Options) -> Report {
    // Even the kernel facts' cache stays as it is.
    crate::kerndat::Kerndat::read_only();
    let mut r = Report::default();
    let set = match ImageSet::load(dir) {
        Ok(s) => s,
        Err(e) => {
            r.add("images load", vec![format!("{}: {e:#}", dir.display())]);
            r.skip("the other checks", "they need the images");
            return r;
        }
    };
    r.add("images load", vec![]);
    let valid = set.validate(revenant_arch::NAME);
    r.add("images valid", valid.as_ref().err().map(|e| format!("{e:#}")).into_iter().collect());
    r.add("PIDs and TIDs free", pids(&set));
    let (problems, bad_files) = files(&set);
    r.add("files present with their dumped size", problems);
    r.add("kernel features", kernel());

    let plan = if valid.is_ok() {
        let mut set = set.clone();
        for f in set.files.iter_mut().filter(|f| bad_files.contains(&f.id)) {
            if let Some(reg) = &mut f.reg {
                reg.size = None;
            }
        }
        // `at_dump` leaves out only the PID checks, made above for all.
        let popts = PlanOptions { at_dump: true, skip_cpu_check: true, ..opts.plan.clone() };
        match from_images::plans(&set, &popts) {
            Ok(p) => {
                r.add("planning", vec![]);
                r.notes.extend(p.warnings.iter().cloned());
                Some(p)
            }
            Err(e) => {
                r.add("planning", vec![format!("{e:#}")]);
                None
            }
        }
    } else {
        r.skip("planning", "the images are not valid");
        None
    };
    match &plan {
        Some(plan) => with_plan(&mut r, plan, opts),
        None => {
            let why = "needs the plan";
            for name in ["CPU features", "resource limits", "seccomp", "fd numbers within RLIMIT_NOFILE"] {
                r.skip(name, why);
            }
            for name in ["credentials", "process group ids free", "pages images", "vDSO"] {
                r.skip(name, why);
            }
            for name in ["SysV ids", "TCP/UDP addresses", "unix socket addresses"] {
                r.skip(name, why);
            }
        }
    }
    r
}

/// The checks that need the plan.
fn with_plan(r: &mut Report, plan: &TreePlan, opts: &super::Options) {
    let each = |f: &dyn Fn(&super::plan::ProcessPlan) -> anyhow::Result<()>| -> Vec<String> {
        plan.processes.iter().filter_map(|p| f(p).err()).map(|e| format!("{e:#}")).collect()
    };
    if opts.plan.skip_cpu_check {
        r.skip("CPU features", "--cpu-cap none");
    } else {
        r.add("CPU features", each(&|p| from_images::check_cpu(p)));
    }
    let mut limits = vec![];
    for p in &plan.processes {
        match super::limits::problems(p) {
            Ok(found) => limits.extend(found),
            Err(e) => limits.push(format!("{e:#}")),
        }
    }
    r.add("resource limits", limits);
    let mut seccomp = each(&|p| super::spawn::seccomp_possible(p));
    let sandboxed = plan.processes.iter().filter(|p| p.threads.iter().any(|t| !t.seccomp.is_empty()));
    if crate::kerndat::Kerndat::get().is_ok_and(|k| k.ptrace) && !has_cap(CAP_SYS_ADMIN) {
        // The restore traces them with PTRACE_O_SUSPEND_SECCOMP.
        seccomp.extend(sandboxed.map(|p| {
            format!(
                "PID {}: tracing it with its seccomp suspended needs CAP_SYS_ADMIN, which this process lacks",
                p.pid
            )
        }));
    }
    r.add("seccomp", seccomp);
    // The child's first free fd lies above the service fds, and above the
    // host's pipe ends it inherits, which are low: this is its floor.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE);
    r.add(
        "fd numbers within RLIMIT_NOFILE",
        each(&|p| {
            let fds = super::spawn::service_fds(p, opts.lazy.is_some());
            let scratch = fds.all.iter().copied().max().unwrap_or(0) + 1;
            super::spawn::fd_room(p, scratch, nofile?.0 as u64)
        }),
    );
    r.add("credentials", each(&|p| super::creds::plan(p).map(drop)));
    // A group whose leader is gone is made by a helper with its id, and
    // the /proc directory of an ended process that is a cwd is held by one
    // with its PID.
    r.add(
        "process group ids free",
        each(&|p| {
            p.group_helpers.iter().try_for_each(|&g| from_images::group_id_free(g))?;
            p.cwd_holder.iter().try_for_each(|&h| from_images::cwd_holder_free(h, p.pid))
        }),
    );
    r.add("pages images", each(&|p| p.pages.iter().try_for_each(|f| f.open().map(drop))));
    r.add("vDSO", each(&vdso));

    let mut sysv = errs(crate::sysv::restore::problems(&plan.ipc));
    if plan.ipc.new_namespace && !has_cap(CAP_SYS_ADMIN) {
        sysv.push("the tree had its own IPC namespace; making one needs CAP_SYS_ADMIN".into());
    }
    r.add("SysV ids", sysv);
    let mut inet = errs(crate::files::inet::problems(&plan.host.inet));
    if plan.host.inet.iter().any(|(_, s)| s.stream.is_some()) && !has_cap(CAP_NET_ADMIN) {
        inet.push("TCP connections are built again in repair mode, which needs CAP_NET_ADMIN".into());
    }
    r.add("TCP/UDP addresses", inet);
    r.add("unix socket addresses", errs(crate::files::unixsk::problems(&plan.host.sockets)));
}

/// The vDSO decision as the bootstrap area's build makes it (a dumped vDSO
/// that differs must be readable to be proxied).
fn vdso(p: &super::plan::ProcessPlan) -> anyhow::Result<()> {
    let maps = crate::maps::own_maps()?;
    let runtime = crate::maps::runtime_vdso(&maps);
    let kd = crate::kerndat::Kerndat::get()?;
    super::vdso::plan(p, &runtime, &kd.vdso_symbols, 0).map(drop)
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_NET_ADMIN: u32 = 12;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

fn has_cap(cap: u32) -> bool {
    super::creds::own().is_ok_and(|o| o.eff & (1 << cap) != 0)
}

/// Every PID and TID of the tree, and every zombie's PID, not in use.
fn pids(set: &ImageSet) -> Vec<String> {
    let mut out = vec![];
    let mut free = |id: u32, what: &str| {
        if let Err(e) = from_images::pid_free(id as i32, what) {
            out.push(format!("{e:#}"));
        }
    };
    for p in &set.processes {
        free(p.pstree.pid, "PID");
        for &t in p.pstree.threads.iter().filter(|&&t| t != p.pstree.pid) {
            free(t, "TID");
        }
    }
    for z in &set.zombies {
        free(z.pstree.pid, "the zombie's PID");
    }
    out
}

/// Every file the tree opened or mapped by path, once each: missing, or
/// (where the images say) of another size. Returns the problems and the
/// `files.img` ids they concern.
fn files(set: &ImageSet) -> (Vec<String>, Vec<u32>) {
    let mut wanted: BTreeMap<u32, String> = BTreeMap::new();
    for p in &set.processes {
        let pid = p.pstree.pid;
        if p.mm.exe_file_id != 0 {
            wanted.entry(p.mm.exe_file_id).or_insert_with(|| "the executable".into());
        }
        wanted.entry(p.fs.cwd_id).or_insert_with(|| "the cwd".into());
        wanted.entry(p.fs.root_id).or_insert_with(|| "the root".into());
        let special = vs::AREA_VDSO
            | vs::AREA_VVAR
            | vs::AREA_VSYSCALL
            | vs::AREA_SYSVIPC
            | vs::ANON_SHARED
            | vs::AREA_MEMFD
            | vs::AREA_SOCKET
            | vs::AREA_AIORING
            | vs::AREA_SHSTK;
        for (j, v) in p.mm.vmas.iter().enumerate() {
            let s = v.status;
            if s & vs::AREA_REGULAR != 0 && s & special == 0 && s & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
                let what = format!("mm-{pid}.img vmas[{j}], mapped at {:#x}", v.start);
                wanted.entry(v.shmid as u32).or_insert(what);
            }
        }
        for f in &p.fds {
            // The /proc files of the tree's processes exist once they do.
            let tree_proc = set
                .file(f.id)
                .and_then(|e| e.reg.as_ref())
                .is_some_and(|r| crate::files::reg::proc_of_tree(set, &r.name).is_some());
            if !tree_proc {
                wanted.entry(f.id).or_insert_with(|| format!("fd {} of PID {pid}", f.fd));
            }
        }
    }
    let (mut out, mut bad) = (vec![], vec![]);
    for (id, what) in wanted {
        // Not a file opened by path (sockets, pipes, ...), or unlinked: the
        // planning's own checks.
        let Some(r) = set.file(id).and_then(|e| e.reg.as_ref()) else { continue };
        if set.remaps.iter().any(|m| m.orig_id == id) {
            continue;
        }
        let found = crate::files::reg::check_size(r, &what).and_then(|()| {
            // A size-less entry (CRIU's images of some files) is still opened.
            std::fs::symlink_metadata(&r.name)
                .map(drop)
                .map_err(|_| anyhow::anyhow!("files.img: entry id {} ({what}): {} is missing", r.id, r.name))
        });
        if let Err(e) = found {
            out.push(format!("{e:#}"));
            bad.push(id);
        }
    }
    (out, bad)
}

/// What the kernel must let a restore do before the first task exists:
/// create a task with a chosen PID.
fn kernel() -> Vec<String> {
    let mut out = vec![];
    match crate::kerndat::Kerndat::get() {
        Ok(k) if !k.clone3_set_tid => {
            let last_pid = "/proc/sys/kernel/ns_last_pid";
            // Opened for writing, never written.
            if let Err(e) = std::fs::OpenOptions::new().write(true).open(last_pid) {
                out.push(format!(
                    "clone3 cannot choose a PID here, and {last_pid} cannot be written ({e}): no PID can be chosen"
                ));
            }
        }
        Ok(_) => {}
        Err(e) => out.push(format!("probing the kernel: {e:#}")),
    }
    if !has_cap(CAP_SYS_ADMIN) && !has_cap(CAP_CHECKPOINT_RESTORE) {
        out.push("creating a task with its dumped PID needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE".into());
    }
    out
}

/// `revenant restore --check-only` (or, with `dry_run`, `--dry-run`):
/// prints the report (or the plan, as JSON with `json`); a check-only run
/// with problems fails.
pub fn cli(dir: &Path, opts: &super::Options, dry_run: bool, json: bool) -> anyhow::Result<()> {
    if dry_run {
        let plan = super::dry_run::plan(dir, opts)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", super::dry_run::text(&plan));
        }
        return Ok(());
    }
    let report = check(dir, opts);
    print!("{}", report.text(dir));
    match report.problems() {
        0 => Ok(()),
        n => anyhow::bail!("{}: {n} problem(s) found; a restore would fail", dir.display()),
    }
}
