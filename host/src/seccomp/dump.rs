//! The dump half of seccomp: a thread's filters, read through ptrace
//! (which needs CAP_SYS_ADMIN), and the tree's as `seccomp.img` entries.
//! The kernel numbers them from the oldest (0), the order a restore
//! installs them in.

use anyhow::{Context, Result};
use nix::libc::{self, c_void};
use revenant_images::messages::{SeccompFilter, ThreadCoreEntry};

use crate::dump::model::{Thread, Tree};

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
/// `struct sock_filter`.
const INSN: usize = 8;

#[repr(C)]
struct Metadata {
    filter_off: u64,
    flags: u64,
}

/// The filters of the stopped thread `tid` as (flags, program bytes),
/// oldest first.
pub fn filters(tid: i32) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut out = vec![];
    for index in 0u64.. {
        // SAFETY: with a null buffer the kernel only returns the length.
        let n =
            unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index as *mut c_void, std::ptr::null_mut::<u8>()) };
        if n < 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::ENOENT && index > 0 {
                break;
            }
            return Err(e).with_context(|| format!("PTRACE_SECCOMP_GET_FILTER {index} of task {tid}"));
        }
        let mut prog = vec![0u8; n as usize * INSN];
        // SAFETY: the kernel writes `n` instructions, the buffer's size.
        let got = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index as *mut c_void, prog.as_mut_ptr()) };
        if got != n {
            return Err(nix::errno::Errno::last())
                .with_context(|| format!("PTRACE_SECCOMP_GET_FILTER {index} of task {tid}: the filter changed"));
        }
        let mut md = Metadata { filter_off: index, flags: 0 };
        // SAFETY: the kernel reads and writes `size_of::<Metadata>()` bytes.
        let r = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_METADATA,
                tid,
                size_of::<Metadata>() as *mut c_void,
                &mut md as *mut Metadata,
            )
        };
        if r < 0 {
            return Err(nix::errno::Errno::last())
                .with_context(|| format!("PTRACE_SECCOMP_GET_METADATA {index} of task {tid}"));
        }
        out.push((md.flags as u32, prog));
    }
    Ok(out)
}

/// Every thread's filters as one list where each filter names the one
/// installed before it; threads with the same filters (inherited from the
/// thread that installed them) share entries. Also each thread's last
/// filter.
pub fn filter_entries(tree: &Tree) -> (Vec<SeccompFilter>, std::collections::HashMap<i32, u32>) {
    let mut all: Vec<SeccompFilter> = vec![];
    let mut last = std::collections::HashMap::new();
    for t in tree.procs.iter().flat_map(|p| &p.threads) {
        let mut prev = None;
        for (flags, prog) in &t.seccomp.filters {
            let flags = Some(*flags).filter(|&f| f != 0);
            let f = SeccompFilter { filter: prog.clone(), prev, flags, ..Default::default() };
            let at = all.iter().position(|g| *g == f).unwrap_or_else(|| {
                all.push(f);
                all.len() - 1
            });
            prev = Some(at as u32);
        }
        if let Some(at) = prev {
            last.insert(t.tid, at);
        }
    }
    (all, last)
}

/// A thread's mode and last filter (from [`filter_entries`]) in its core
/// entry; a thread without seccomp leaves both out, as CRIU's images do.
pub fn thread_core(tc: &mut ThreadCoreEntry, t: &Thread, last_filter: &std::collections::HashMap<i32, u32>) {
    if t.seccomp.mode != 0 {
        tc.seccomp_mode = Some(t.seccomp.mode as i32);
        tc.seccomp_filter = last_filter.get(&t.tid).copied();
    }
}
