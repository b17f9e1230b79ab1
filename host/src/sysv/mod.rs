//! SysV shared memory segments, in one place for both directions: the
//! dump half ([`dump`]), the restore plan from the images and
//! the making of the segments ([`restore`]), and here what both share: the
//! IPC namespace's sysctls (`ipcns-var`) and `IPC_STAT`.

use nix::libc;
use revenant_images::messages::IpcVarEntry;

pub mod dump;
pub mod restore;

/// `shm_rmid_forced` is set last: set earlier, it would destroy each
/// segment the moment its filling attach goes away.
const RMID_FORCED: &str = "kernel/shm_rmid_forced";

/// `ipcns-var`'s fields and the sysctls (under /proc/sys) they hold, in
/// both directions: [`var_sysctls`] for a restore, [`read_var`] for a dump.
/// `kernel/auto_msgmni` is recorded but no longer settable.
pub fn var_sysctls(v: &IpcVarEntry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: String| out.push((name.to_string(), value));
    if v.sem_ctls.len() == 4 {
        put("kernel/sem", v.sem_ctls.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "));
    }
    put("kernel/msgmax", v.msg_ctlmax.to_string());
    put("kernel/msgmnb", v.msg_ctlmnb.to_string());
    put("kernel/msgmni", v.msg_ctlmni.to_string());
    put("kernel/shmmax", v.shm_ctlmax.to_string());
    put("kernel/shmall", v.shm_ctlall.to_string());
    put("kernel/shmmni", v.shm_ctlmni.to_string());
    put(RMID_FORCED, v.shm_rmid_forced.to_string());
    put("fs/mqueue/queues_max", v.mq_queues_max.to_string());
    put("fs/mqueue/msg_max", v.mq_msg_max.to_string());
    put("fs/mqueue/msgsize_max", v.mq_msgsize_max.to_string());
    if let Some(n) = v.mq_msg_default {
        put("fs/mqueue/msg_default", n.to_string());
    }
    if let Some(n) = v.mq_msgsize_default {
        put("fs/mqueue/msgsize_default", n.to_string());
    }
    out
}

/// `ipcns-var` from the sysctls of this thread's IPC namespace; a missing
/// or odd value stays 0.
pub fn read_var() -> IpcVarEntry {
    let get = |name: &str| std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap_or_default();
    let n32 = |name: &str| get(name).trim().parse::<u32>().unwrap_or(0);
    let n64 = |name: &str| get(name).trim().parse::<u64>().unwrap_or(0);
    let opt = |name: &str| get(name).trim().parse::<u32>().ok();
    IpcVarEntry {
        sem_ctls: get("kernel/sem").split_whitespace().filter_map(|w| w.parse().ok()).collect(),
        msg_ctlmax: n32("kernel/msgmax"),
        msg_ctlmnb: n32("kernel/msgmnb"),
        msg_ctlmni: n32("kernel/msgmni"),
        auto_msgmni: n32("kernel/auto_msgmni"),
        shm_ctlmax: n64("kernel/shmmax"),
        shm_ctlall: n64("kernel/shmall"),
        shm_ctlmni: n32("kernel/shmmni"),
        shm_rmid_forced: n32(RMID_FORCED),
        mq_queues_max: n32("fs/mqueue/queues_max"),
        mq_msg_max: n32("fs/mqueue/msg_max"),
        mq_msgsize_max: n32("fs/mqueue/msgsize_max"),
        mq_msg_default: opt("fs/mqueue/msg_default"),
        mq_msgsize_default: opt("fs/mqueue/msgsize_default"),
        ..Default::default()
    }
}

/// `shmctl(IPC_STAT)` of segment `id` in this thread's namespace.
pub fn stat(id: i32) -> std::io::Result<libc::shmid_ds> {
    let mut ds = zeroed_ds();
    // SAFETY: IPC_STAT writes one shmid_ds into a live local.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(errno());
    }
    Ok(ds)
}

fn zeroed_ds() -> libc::shmid_ds {
    // SAFETY: shmid_ds is plain integers, for which zero is valid.
    unsafe { std::mem::zeroed() }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions name the same sysctls: what a dump reads here is
    /// what a restore would write back, value for value.
    #[test]
    fn ipc_var_reads_back_as_the_sysctls_it_came_from() {
        let pairs = var_sysctls(&read_var());
        assert!(pairs.len() >= 11, "{pairs:?}");
        for (name, value) in pairs {
            let now = std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap();
            assert_eq!(now.split_whitespace().collect::<Vec<_>>().join(" "), value, "{name}");
        }
    }
}
