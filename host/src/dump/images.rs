//! Writing the tree as CRIU images, through the image layer's messages and
//! framing. Every file goes under a temporary name first; the caller
//! renames them all into place once everything is written.

use std::io::Write;

use anyhow::{Context, Result};
use revenant_images::messages::*;
use revenant_images::{Kind, Writer};

use super::model::{Creds, Process, TaskCore, Thread, Tree};
use crate::imgdir::ImageDir;
use crate::regs::dump as regs;

/// Each image, as the caller writes it: under its final name, which it
/// also records.
type Put<'a> = dyn FnMut(String, &Writer) -> Result<()> + 'a;

/// Writes every image but the pages under temporary names; returns the
/// final names.
pub fn write(tree: &Tree, dir: &ImageDir) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut put = |name: String, w: &Writer| -> Result<()> {
        dir.create(&name).and_then(|mut f| f.write_all(w.bytes()).with_context(|| format!("writing {name}")))?;
        names.push(name);
        Ok(())
    };
    let (cgroup, cg_sets) = crate::cgroup::dump::sets(tree);
    inventory(&tree.procs[0], &mut put)?;
    pstree(tree, &mut put)?;
    let ipc_ns = if tree.ipc.own_ns { TREE_IPC_NS } else { DUMPER_IPC_NS };
    ipc_ns_images(tree, ipc_ns, &mut put)?;
    shmem_pagemaps(tree, &mut put)?;
    let (filters, last_filter) = crate::seccomp::dump::filter_entries(tree);
    for (p, &cg_set) in tree.procs.iter().zip(&cg_sets) {
        process_images(p, cg_set, ipc_ns, &last_filter, &mut put)?;
    }
    crate::files::images(&tree.files, &mut put)?;
    put(
        "seccomp.img".into(),
        Writer::new(Kind::Seccomp).push(&SeccompEntry { seccomp_filters: filters, ..Default::default() }),
    )?;
    timens(tree, &mut put)?;
    put("cgroup.img".into(), Writer::new(Kind::Cgroup).push(&cgroup))?;
    Ok(names)
}

/// CRIU reads the inventory first: the image version, and the ids of the
/// tool's own kernel objects and namespaces, against which it compares the
/// tree's.
fn inventory(root: &Process, put: &mut Put) -> Result<()> {
    put(
        "inventory.img".into(),
        Writer::new(Kind::Inventory).push(&InventoryEntry {
            img_version: 2,
            fdinfo_per_id: Some(true),
            // CRIU's own ids: 1 for each kernel object, and the
            // namespaces it shares with the tree.
            root_ids: Some(TaskKobjIdsEntry {
                vm_id: 1,
                files_id: 1,
                fs_id: 1,
                sighand_id: 1,
                ipc_ns_id: Some(DUMPER_IPC_NS),
                ..ids(root, DUMPER_IPC_NS)
            }),
            ns_per_id: Some(true),
            root_cg_set: Some(crate::cgroup::dump::OWN_CG_SET),
            lsmtype: Some(0),
            dump_uptime: None,
            pre_dump_mode: None,
            tcp_close: None,
            network_lock_method: None,
            ..Default::default()
        }),
    )
}

/// The tree's shape, zombies included; a zombie has no other image than
/// the dead task's core beside its pstree entry, so it is written here.
fn pstree(tree: &Tree, put: &mut Put) -> Result<()> {
    let mut pstree = Writer::new(Kind::Pstree);
    for p in &tree.procs {
        pstree.push(&PstreeEntry {
            pid: p.pid as u32,
            ppid: p.ppid as u32,
            pgid: p.pgid as u32,
            sid: p.sid as u32,
            threads: p.threads.iter().map(|t| t.tid as u32).collect(),
            ..Default::default()
        });
    }
    for z in &tree.zombies {
        let (pid, ppid, pgid, sid) = (z.pid as u32, z.ppid as u32, z.pgid as u32, z.sid as u32);
        pstree.push(&PstreeEntry { pid, ppid, pgid, sid, threads: vec![pid], ..Default::default() });
        let tc = TaskCoreEntry {
            task_state: revenant_images::TASK_DEAD,
            exit_code: z.exit_code,
            comm: z.comm.clone(),
            ..Default::default()
        };
        let core = CoreEntry { mtype: regs::MTYPE as i32, tc: Some(tc), ..Default::default() };
        put(format!("core-{pid}.img"), Writer::new(Kind::Core).push(&core))?;
    }
    put("pstree.img".into(), &pstree)
}

/// The IPC namespace's images, named by its id: its settings, and its
/// SysV shared memory segments with their pages.
fn ipc_ns_images(tree: &Tree, ipc_ns: u32, put: &mut Put) -> Result<()> {
    if let Some(var) = &tree.ipc.var {
        put(format!("ipcns-var-{ipc_ns}.img"), Writer::new(Kind::IpcVar).push(var))?;
    }
    if !tree.ipc.segments.is_empty() {
        let mut shm = Writer::new(Kind::IpcnsShm);
        for s in &tree.ipc.segments {
            shm.push(&IpcShmEntry {
                desc: IpcDescEntry {
                    key: s.key,
                    uid: s.uid,
                    gid: s.gid,
                    cuid: s.cuid,
                    cgid: s.cgid,
                    mode: s.mode,
                    id: s.id as u32,
                    ..Default::default()
                },
                size: s.size,
                in_pagemaps: Some(true),
                ..Default::default()
            });
            put(format!("pagemap-shmem-{}.img", s.id), &crate::shmem::dump::shmem_pagemap(s.pages_id, &s.runs))?;
        }
        put(format!("ipcns-shm-{ipc_ns}.img"), &shm)?;
    }
    Ok(())
}

/// Shared anonymous memory, as CRIU keeps it: a pagemap named by the
/// object's shmid, offsets for addresses.
fn shmem_pagemaps(tree: &Tree, put: &mut Put) -> Result<()> {
    for o in &tree.shmem {
        put(format!("pagemap-shmem-{}.img", o.shmid), &crate::shmem::dump::shmem_pagemap(o.pages_id, &o.runs))?;
    }
    Ok(())
}

/// One process's images: each thread's core, then its ids, memory layout,
/// pagemap, fs and fds, each named by the pid or by its kernel objects' id.
fn process_images(
    p: &Process,
    cg_set: u32,
    ipc_ns: u32,
    last_filter: &std::collections::HashMap<i32, u32>,
    put: &mut Put,
) -> Result<()> {
    for (i, t) in p.threads.iter().enumerate() {
        let mut c = core(p, t, i == 0);
        // CRIU reads the thread's field first; the task's is for
        // readers of older images.
        if let Some(tc) = c.tc.as_mut() {
            tc.cg_set = Some(cg_set);
        }
        if let Some(tc) = c.thread_core.as_mut() {
            tc.cg_set = Some(cg_set);
            crate::seccomp::dump::thread_core(tc, t, last_filter);
        }
        put(format!("core-{}.img", t.tid), Writer::new(Kind::Core).push(&c))?;
    }
    put(format!("ids-{}.img", p.pid), Writer::new(Kind::Ids).push(&ids(p, ipc_ns)))?;
    put(format!("mm-{}.img", p.pid), Writer::new(Kind::Mm).push(&mm(p)))?;
    put(format!("pagemap-{}.img", p.pid), &pagemap(p))?;
    put(
        format!("fs-{}.img", p.pid),
        Writer::new(Kind::Fs).push(&FsEntry {
            cwd_id: p.cwd_id,
            root_id: p.root_id,
            umask: Some(p.umask),
            ..Default::default()
        }),
    )?;
    put(format!("fdinfo-{}.img", p.kobj_id), &fdinfo(p))
}

/// Where each run of the process's pages sits in its pages image, which
/// holds them in this order.
fn pagemap(p: &Process) -> Writer {
    let mut pm = Writer::new(Kind::Pagemap);
    pm.push(&PagemapHead { pages_id: p.pages_id, ..Default::default() });
    for r in &p.pagemap {
        pm.push(&PagemapEntry {
            vaddr: r.vaddr,
            compat_nr_pages: 0,
            in_parent: None,
            flags: Some(r.flags),
            nr_pages: Some(r.nr_pages),
            ..Default::default()
        });
    }
    pm
}

/// The process's fd numbers, each naming the shared description
/// (`files.img` id) it stands on.
fn fdinfo(p: &Process) -> Writer {
    let mut fdinfo = Writer::new(Kind::Fdinfo);
    for f in &p.fds {
        fdinfo.push(&FdinfoEntry {
            id: f.id,
            flags: f.cloexec as u32,
            r#type: f.kind as i32,
            fd: f.fd,
            xattr_security_selinux: None,
            ..Default::default()
        });
    }
    fdinfo
}

/// The clocks' readings at dump, from which a restore sets its time
/// namespace's offsets so that they do not jump.
fn timens(tree: &Tree, put: &mut Put) -> Result<()> {
    let ts = |(s, ns): (i64, i64)| Timespec { tv_sec: s as u64, tv_nsec: ns as u64, ..Default::default() };
    put(
        "timens-0.img".into(),
        Writer::new(Kind::Timens).push(&TimensEntry {
            monotonic: ts(tree.monotonic),
            boottime: ts(tree.boottime),
            ..Default::default()
        }),
    )
}

/// Namespace ids in the images: CRIU numbers the dumping tool's own
/// namespaces first (the IPC one is 3); a namespace of the tree's own gets
/// a number after them.
const DUMPER_IPC_NS: u32 = 3;
const TREE_IPC_NS: u32 = 9;

fn ids(p: &Process, ipc_ns: u32) -> TaskKobjIdsEntry {
    TaskKobjIdsEntry {
        vm_id: p.kobj_id,
        files_id: p.kobj_id,
        fs_id: p.kobj_id,
        sighand_id: p.kobj_id,
        // The tree shares every namespace with the dumper (checked at the
        // start); CRIU numbers them in this order.
        pid_ns_id: Some(1),
        net_ns_id: Some(2),
        ipc_ns_id: Some(ipc_ns),
        uts_ns_id: Some(4),
        mnt_ns_id: Some(6),
        user_ns_id: Some(7),
        cgroup_ns_id: Some(8),
        time_ns_id: Some(5),
        ..Default::default()
    }
}

fn mm(p: &Process) -> MmEntry {
    let m = &p.mm;
    MmEntry {
        mm_start_code: m.start_code,
        mm_end_code: m.end_code,
        mm_start_data: m.start_data,
        mm_end_data: m.end_data,
        mm_start_stack: m.start_stack,
        mm_start_brk: m.start_brk,
        mm_brk: m.brk,
        mm_arg_start: m.arg_start,
        mm_arg_end: m.arg_end,
        mm_env_start: m.env_start,
        mm_env_end: m.env_end,
        exe_file_id: m.exe_file_id,
        mm_saved_auxv: m.auxv.clone(),
        vmas: p
            .vmas
            .iter()
            .map(|v| VmaEntry {
                start: v.vma.start,
                end: v.vma.end,
                pgoff: v.vma.pgoff,
                shmid: v.shmid,
                prot: v.vma.prot,
                flags: v.vma.flags,
                status: v.vma.status,
                fd: -1,
                madv: (v.vma.madv != 0).then_some(v.vma.madv),
                fdflags: v.fdflags,
                ..Default::default()
            })
            // Guard regions after every area, as CRIU writes them: entries
            // of their own, with their range and status alone.
            .chain(p.guards.iter().map(|&(start, end)| VmaEntry {
                start,
                end,
                status: revenant_images::messages::vma_status::AREA_GUARD,
                fd: -1,
                ..Default::default()
            }))
            .collect(),
        dumpable: Some(m.dumpable),
        aios: vec![],
        thp_disabled: Some(m.thp_disabled),
        ..Default::default()
    }
}

/// One thread's core image: its registers, the task's state (the leader
/// only: CRIU keeps one per process) and the thread's own.
fn core(p: &Process, t: &Thread, leader: bool) -> CoreEntry {
    CoreEntry {
        tc: leader.then(|| task_core(p)),
        ids: None,
        thread_core: Some(thread_core(t)),
        ..regs::core_regs(&t.regs, &t.fpu, &t.tls, t.clear_tid_addr)
    }
}

/// Pending signals as the images queue them; an empty queue is left out.
fn signal_queue(v: &[Vec<u8>]) -> Option<SignalQueueEntry> {
    (!v.is_empty()).then(|| SignalQueueEntry {
        signals: v.iter().map(|s| SiginfoEntry { siginfo: s.clone(), ..Default::default() }).collect(),
        ..Default::default()
    })
}

/// What the whole process shares: its state (a pending stop included),
/// name, signal handlers, limits, timers and per-process knobs.
fn task_core(p: &Process) -> TaskCoreEntry {
    let task = &p.task;
    TaskCoreEntry {
        task_state: if p.stop_signal.is_some() { revenant_images::TASK_STOPPED } else { revenant_images::TASK_ALIVE },
        stop_signo: p.stop_signal,
        exit_code: 0,
        personality: task.personality,
        flags: task.flags,
        blk_sigset: task.blk_sigset,
        comm: task.comm.clone(),
        timers: Some(timers(task)),
        rlimits: Some(TaskRlimitsEntry {
            rlimits: task.rlimits.iter().map(|&(cur, max)| RlimitEntry { cur, max, ..Default::default() }).collect(),
            ..Default::default()
        }),
        cg_set: None,
        signals_s: signal_queue(&task.signals_s),
        loginuid: Some(task.loginuid),
        oom_score_adj: Some(task.oom_score_adj),
        sigactions: sigactions(task),
        child_subreaper: Some(task.child_subreaper),
        timer_slack_ns: Some(task.timer_slack_ns),
        blk_sigset_extended: None,
        membarrier_registration_mask: (task.membarrier != 0).then_some(task.membarrier),
        coredump_filter: Some(task.coredump_filter),
        memory_merge: task.memory_merge.then_some(true),
        autogroup_nice: task.autogroup_nice,
        ..Default::default()
    }
}

/// The process's interval timers (real, virtual, profiling) and its POSIX
/// timers, with the thread a timer signals when it targets one.
fn timers(task: &TaskCore) -> TaskTimersEntry {
    let itimer = |(isec, iusec, vsec, vusec): (u64, u64, u64, u64)| ItimerEntry {
        isec,
        iusec,
        vsec,
        vusec,
        ..Default::default()
    };
    TaskTimersEntry {
        real: itimer(task.timers[0]),
        virt: itimer(task.timers[1]),
        prof: itimer(task.timers[2]),
        posix: task
            .posix_timers
            .iter()
            .map(|t| PosixTimerEntry {
                it_id: t.id,
                clock_id: t.clock,
                si_signo: t.signo,
                it_sigev_notify: t.notify,
                sival_ptr: t.sival,
                overrun: t.overrun,
                isec: t.times.0,
                insec: t.times.1,
                vsec: t.times.2,
                vnsec: t.times.3,
                notify_thread_id: (t.notify & 4 != 0).then_some(t.notify_tid),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Every signal's handler, in native (not compat) form.
fn sigactions(task: &TaskCore) -> Vec<SaEntry> {
    task.sigactions
        .iter()
        .map(|a| SaEntry {
            sigaction: a.handler,
            flags: a.flags,
            restorer: a.restorer,
            mask: a.mask,
            compat_sigaction: Some(false),
            mask_extended: None,
            ..Default::default()
        })
        .collect()
}

/// What each thread has of its own: scheduling, signal mask and stack,
/// pending signals, credentials, name, rseq area. Seccomp and the cgroup
/// set are filled in by the caller, which knows the whole tree.
fn thread_core(t: &Thread) -> ThreadCoreEntry {
    ThreadCoreEntry {
        futex_rla: t.futex_rla,
        futex_rla_len: t.futex_rla_len,
        sched_nice: Some(t.sched_nice),
        sched_policy: Some(t.sched_policy),
        sched_prio: Some(t.sched_prio),
        cpu_affinity: t.affinity.clone(),
        ioprio: Some(t.ioprio),
        blk_sigset: Some(t.blk_sigset),
        sas: Some(ThreadSasEntry { ss_sp: t.sas.0, ss_size: t.sas.1, ss_flags: t.sas.2, ..Default::default() }),
        pdeath_sig: Some(t.pdeath_sig),
        signals_p: signal_queue(&t.signals_p),
        creds: Some(creds(&t.creds)),
        seccomp_mode: None,
        seccomp_filter: None,
        comm: Some(t.comm.clone()),
        blk_sigset_extended: None,
        rseq_entry: t.rseq.map(|(ptr, len, sig)| RseqEntry {
            rseq_abi_pointer: ptr,
            rseq_abi_size: len,
            signature: sig,
            rseq_cs_pointer: None,
            ..Default::default()
        }),
        cg_set: None,
        ..Default::default()
    }
}

/// Credentials as the images keep them: capability sets as 32-bit words,
/// low first, and no LSM labels.
fn creds(c: &Creds) -> CredsEntry {
    let words = |v: u64| vec![v as u32, (v >> 32) as u32];
    CredsEntry {
        uid: c.uids[0],
        gid: c.gids[0],
        euid: c.uids[1],
        egid: c.gids[1],
        suid: c.uids[2],
        sgid: c.gids[2],
        fsuid: c.uids[3],
        fsgid: c.gids[3],
        cap_inh: words(c.cap_inh),
        cap_prm: words(c.cap_prm),
        cap_eff: words(c.cap_eff),
        cap_bnd: words(c.cap_bnd),
        secbits: c.secbits,
        groups: c.groups.clone(),
        lsm_profile: None,
        lsm_sockcreate: None,
        apparmor_data: None,
        no_new_privs: Some(c.no_new_privs),
        cap_amb: words(c.cap_amb),
        ..Default::default()
    }
}
