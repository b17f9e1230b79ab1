//! Credentials, set last because every step before may need privilege.
//!
//! The order is forced by the kernel: groups while we may still change
//! them; "no setuid fixup" securebits so switching IDs does not wipe the
//! capabilities the remaining steps need; IDs; the dumped securebits; the
//! bounding set; capabilities; ambient capabilities; no_new_privs.

use linux_raw_sys::prctl as p;
use revenant_arch::conv::c_uint;
use revenant_arch::sys::{__user_cap_data_struct as CapData, __user_cap_header_struct as CapHeader};
use revenant_arch::{Errno, check, ids, sys};
use revenant_blob_abi::Creds;

/// `include/uapi/linux/securebits.h`: `1 << SECURE_NO_SETUID_FIXUP`.
const SECBIT_NO_SETUID_FIXUP: usize = 1 << 2;
/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_V3: u32 = 0x2008_0522;

fn prctl(option: u32, a2: usize, a3: usize) -> Result<usize, Errno> {
    // SAFETY: the credential prctls here take plain integers.
    unsafe { sys::prctl(option, a2, a3, 0, 0) }
}

fn ids3(nr: u32, a: u32, b: u32, c: u32) -> Result<(), Errno> {
    // SAFETY: plain integers.
    check(unsafe { revenant_arch::syscall3(nr, c_uint(a), c_uint(b), c_uint(c)) }).map(|_| ())
}

/// Applies `c` (and `groups` if given) to the calling thread. On failure,
/// says which step failed.
pub fn apply(c: &Creds, groups: Option<&[u32]>) -> Result<(), (&'static str, Errno)> {
    if let Some(g) = groups {
        sys::setgroups(g).map_err(|e| ("setgroups", e))?;
    }
    prctl(p::PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0).map_err(|e| ("PR_SET_SECUREBITS", e))?;
    ids3(ids::SETRESGID, c.gid, c.egid, c.sgid).map_err(|e| ("setresgid", e))?;
    // setfsgid/setfsuid report the old value, never an error.
    // SAFETY: plain integers.
    unsafe { revenant_arch::syscall1(ids::SETFSGID, c_uint(c.fsgid)) };
    ids3(ids::SETRESUID, c.uid, c.euid, c.suid).map_err(|e| ("setresuid", e))?;
    // SAFETY: plain integers.
    unsafe { revenant_arch::syscall1(ids::SETFSUID, c_uint(c.fsuid)) };
    prctl(p::PR_SET_SECUREBITS, c.secbits as usize, 0).map_err(|e| ("PR_SET_SECUREBITS", e))?;
    for cap in 0..64 {
        if c.cap_bnd & (1 << cap) == 0 {
            match prctl(p::PR_CAPBSET_DROP, cap, 0) {
                // Past the kernel's last capability.
                Ok(_) | Err(Errno::EINVAL) => {}
                Err(e) => return Err(("PR_CAPBSET_DROP", e)),
            }
        }
    }
    let mut header = CapHeader { version: CAPABILITY_V3, pid: 0 };
    let half = |shift: u32| CapData {
        effective: (c.cap_eff >> shift) as u32,
        permitted: (c.cap_prm >> shift) as u32,
        inheritable: (c.cap_inh >> shift) as u32,
    };
    sys::capset(&mut header, &[half(0), half(32)]).map_err(|e| ("capset", e))?;
    for cap in (0..64).filter(|b| c.cap_amb & (1 << b) != 0) {
        // SAFETY: plain integers.
        let r = unsafe { sys::prctl(p::PR_CAP_AMBIENT, p::PR_CAP_AMBIENT_RAISE as usize, cap, 0, 0) };
        r.map_err(|e| ("PR_CAP_AMBIENT_RAISE", e))?;
    }
    if c.no_new_privs != 0 {
        // SAFETY: plain integers.
        unsafe { sys::prctl(p::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.map_err(|e| ("PR_SET_NO_NEW_PRIVS", e))?;
    }
    Ok(())
}
