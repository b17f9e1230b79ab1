//! Whether the restoring process may give the restored threads their
//! credentials, decided before anything runs.

use anyhow::{Context, Result, bail};
use revenant_blob_abi::Creds;

use super::plan::ProcessPlan;

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;

/// What the blob is to do about credentials.
#[derive(Debug, Default)]
pub struct CredsPlan {
    /// One per thread, or empty to leave them as inherited.
    pub creds: Vec<Creds>,
    /// Supplementary groups, when they must be set.
    pub groups: Option<Vec<u32>>,
}

/// The restoring process's own credentials.
pub(super) struct Own {
    uids: [u32; 4],
    gids: [u32; 4],
    groups: Vec<u32>,
    prm: u64,
    pub(super) eff: u64,
    bnd: u64,
}

pub(super) fn own() -> Result<Own> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
    let ids = |name: &str| -> [u32; 4] {
        let v: Vec<u32> = field(name).split_whitespace().filter_map(|x| x.parse().ok()).collect();
        [0, 1, 2, 3].map(|i| v.get(i).copied().unwrap_or(0))
    };
    let caps = |name: &str| u64::from_str_radix(field(name), 16).unwrap_or(0);
    Ok(Own {
        uids: ids("Uid:"),
        gids: ids("Gid:"),
        groups: field("Groups:").split_whitespace().filter_map(|x| x.parse().ok()).collect(),
        prm: caps("CapPrm:"),
        eff: caps("CapEff:"),
        bnd: caps("CapBnd:"),
    })
}

pub fn plan(p: &ProcessPlan) -> Result<CredsPlan> {
    let wanted: Vec<Creds> = p.threads.iter().filter_map(|t| t.creds).collect();
    if wanted.is_empty() {
        return Ok(CredsPlan::default());
    }
    if wanted.len() != p.threads.len() {
        bail!("PID {}: some threads have credentials in the images and some do not", p.pid);
    }
    let me = own()?;
    let same = wanted.iter().all(|c| {
        [c.uid, c.euid, c.suid, c.fsuid] == me.uids
            && [c.gid, c.egid, c.sgid, c.fsgid] == me.gids
            && c.cap_prm == me.prm
            && c.cap_eff == me.eff
            && c.cap_bnd == me.bnd
            && c.cap_amb == 0
            && c.no_new_privs == 0
    });
    let mut groups = p.groups.clone();
    groups.sort_unstable();
    let mut my_groups = me.groups.clone();
    my_groups.sort_unstable();
    let set_groups = groups != my_groups;
    // Nothing to change: inheriting ours is exact and needs no privilege.
    if same && !set_groups {
        return Ok(CredsPlan::default());
    }
    let has = |cap: u32| me.eff & (1 << cap) != 0;
    let missing = |cap: u32, name: &str, why: &str| -> Result<()> {
        if has(cap) { Ok(()) } else { bail!("PID {}: {why} needs {name}, which this process lacks", p.pid) }
    };
    if set_groups {
        missing(CAP_SETGID, "CAP_SETGID", "setting the supplementary groups")?;
    }
    for (t, c) in p.threads.iter().zip(&wanted) {
        let uids = [c.uid, c.euid, c.suid, c.fsuid];
        let gids = [c.gid, c.egid, c.sgid, c.fsgid];
        if uids.iter().any(|u| !me.uids.contains(u)) {
            missing(CAP_SETUID, "CAP_SETUID", &format!("thread {}'s user IDs {uids:?}", t.tid))?;
        }
        if gids.iter().any(|g| !me.gids.contains(g)) {
            missing(CAP_SETGID, "CAP_SETGID", &format!("thread {}'s group IDs {gids:?}", t.tid))?;
        }
        let extra = c.cap_prm & !me.prm;
        if extra != 0 {
            bail!(
                "PID {}: thread {} had capabilities {extra:#x} that this process does not have to give",
                p.pid,
                t.tid
            );
        }
        let extra = c.cap_bnd & !me.bnd;
        if extra != 0 {
            bail!("PID {}: thread {}'s bounding set has {extra:#x} beyond this process's", p.pid, t.tid);
        }
        missing(CAP_SETPCAP, "CAP_SETPCAP", "setting securebits and the capability bounding set")?;
    }
    Ok(CredsPlan { creds: wanted, groups: set_groups.then_some(p.groups.clone()) })
}
