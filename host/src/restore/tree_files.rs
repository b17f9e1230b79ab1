//! The open file descriptions several fds of the tree share, or that the
//! host made: every pipe end, regular files dup'd or inherited, and the
//! memfds, terminals and unix sockets the host made before the tasks. The
//! root places each once, at a slot of its own, before it creates its
//! children (`child::TreeFiles`); here the host picks them and their slots.

use std::os::fd::FromRawFd;

use anyhow::{Context, Result, bail};

use super::child::{self, ChildPlan, Open};
use super::plan::{ProcessPlan, cpath};

/// The regular-file descriptions more than one fd of the tree is on
/// (dup'd, or inherited by a child): a task opening its own would give it
/// a description, and a file offset, of its own.
pub(super) fn shared_regs(plans: &[ProcessPlan]) -> Vec<u32> {
    let mut seen = std::collections::HashMap::<u32, usize>::new();
    for f in plans.iter().flat_map(|p| &p.fds) {
        *seen.entry(f.id).or_default() += 1;
    }
    let mut ids: Vec<u32> = seen.into_iter().filter(|&(_, n)| n > 1).map(|(id, _)| id).collect();
    ids.extend(plans.iter().flat_map(|p| &p.fds).filter(|f| is_memfd_itself(plans, f) || f.host_made()).map(|f| f.id));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every pipe end and `shared` regular file of the tree once, and the
/// slots they go to in the tasks: above every number a task uses or
/// inherits from us and needs (its plan's fds and scratch numbers, every
/// log and sync pipe, the IPC namespace).
pub(super) fn tree_files(
    plans: &[ProcessPlan],
    cps: &[ChildPlan],
    shared: &[u32],
    ipc_ns: Option<i32>,
    nofile: impl Into<u64>,
) -> Result<(child::TreeFiles, Vec<std::os::fd::OwnedFd>)> {
    let nofile: u64 = nofile.into();
    let mut pipes: Vec<super::plan::PipePlan> = Vec::new();
    for pp in plans.iter().flat_map(|p| &p.pipes) {
        let at = match pipes.iter().position(|x| x.pipe_id == pp.pipe_id) {
            Some(at) => at,
            None => {
                let data = pp.data.clone();
                pipes.push(super::plan::PipePlan { pipe_id: pp.pipe_id, data, size: pp.size, ends: Vec::new() });
                pipes.len() - 1
            }
        };
        for e in &pp.ends {
            if !pipes[at].ends.iter().any(|x| x.id == e.id) {
                pipes[at].ends.push(super::plan::PipeEnd { fds: Vec::new(), ..e.clone() });
            }
        }
    }
    let inherited = cps.iter().flat_map(|c| [c.scratch, c.log_fd.0 + 1, c.sync_fd.0 + 1]).chain(ipc_ns.map(|n| n + 1));
    // Two more for the temporary numbers the log and sync pipes pass by.
    let base = inherited.max().unwrap_or(3) + 2;
    let mut ids: Vec<u32> = pipes.iter().flat_map(|p| p.ends.iter().map(|e| e.id)).collect();
    ids.extend(shared);
    let end = base as u64 + ids.len() as u64;
    if !ids.is_empty() && end + 2 >= nofile {
        bail!(
            "the tree's {} shared file descriptions need fd numbers up to {end}, above RLIMIT_NOFILE ({nofile})",
            ids.len()
        );
    }
    let mut tree = child::TreeFiles { base, ids, regs: Vec::new(), held: Vec::new() };
    // Pipe ends are made by the host (`files::pipe::make_all`).
    for e in pipes.iter().flat_map(|p| &p.ends) {
        let slot = tree.slot(e.id).context("a pipe end without a slot")?;
        let from = e.object_fd.with_context(|| format!("pipe end {}: not made", e.id))?;
        tree.held.push((from, Open { flags: e.flags, fd: slot, ..Default::default() }));
    }
    for &id in shared {
        let f = plans.iter().flat_map(|p| &p.fds).find(|f| f.id == id).context("a shared file without a plan")?;
        let slot = tree.slot(id).context("a shared file without a slot")?;
        let open =
            Open { path: cpath(&f.path)?, flags: f.flags, fd: slot, pos: f.pos, cloexec: true, fifo: f.fifo.clone() };
        match f.object_fd.filter(|_| is_memfd_itself(plans, f) || f.host_made()) {
            Some(from) => tree.held.push((from, open)),
            None => tree.regs.push(open),
        }
    }
    // The root dups each to its slot from a copy of ours above every slot
    // (and the two numbers above them), so that no slot it fills is one it
    // has yet to take from; the copies stay ours until the root exists.
    let mut copies = Vec::new();
    for (from, _) in &mut tree.held {
        let above = tree.base + tree.ids.len() as i32 + 2;
        // SAFETY: a dup of a descriptor we hold; the copy is owned at once.
        let copy = unsafe { nix::libc::fcntl(*from, nix::libc::F_DUPFD_CLOEXEC, above) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error()).context("copying a description the host made");
        }
        if copy as u64 >= nofile {
            bail!("the host's descriptions for the tree need fd numbers up to {copy}, above RLIMIT_NOFILE ({nofile})");
        }
        // SAFETY: just made.
        copies.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy) });
        *from = copy;
    }
    Ok((tree, copies))
}

/// Whether `f` is on the first read-write description of its memfd, which
/// the restore gives the object itself (`memfd_create`'s description: a
/// reopen through /proc would count as a writer, and the kernel refuses to
/// execute a file open for writing).
fn is_memfd_itself(plans: &[ProcessPlan], f: &super::plan::FdPlan) -> bool {
    let rw = |g: &super::plan::FdPlan| g.flags & nix::libc::O_ACCMODE == nix::libc::O_RDWR;
    let Some(shmid) = f.shmem.filter(|_| rw(f)) else { return false };
    let first = plans.iter().flat_map(|p| &p.fds).filter(|g| g.shmem == Some(shmid) && rw(g)).map(|g| g.id).min();
    first == Some(f.id)
}

/// The (fd, slot, close-on-exec) of each fd of `p` on a description of the
/// tree's.
pub(super) fn takes(p: &ProcessPlan, tree: &child::TreeFiles, shared: &[u32]) -> Result<Vec<(i32, i32, bool)>> {
    let pipes = p.pipes.iter().flat_map(|pp| &pp.ends).flat_map(|e| e.fds.iter().map(move |&(fd, c)| (e.id, fd, c)));
    let regs = p.fds.iter().filter(|f| shared.contains(&f.id)).map(|f| (f.id, f.fd, f.cloexec));
    pipes
        .chain(regs)
        .map(|(id, fd, cloexec)| {
            let slot = tree.slot(id).with_context(|| format!("PID {}: fd {fd}: no slot for file {id}", p.pid))?;
            Ok((fd, slot, cloexec))
        })
        .collect()
}
