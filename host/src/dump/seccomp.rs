//! A thread's seccomp filters, read through ptrace (which needs
//! CAP_SYS_ADMIN). The kernel numbers them from the oldest (0), the order
//! a restore installs them in.

use anyhow::{Context, Result};
use nix::libc::{self, c_void};

/// `PTRACE_O_SUSPEND_SECCOMP`: the tracee's seccomp state judges none of
/// its calls while we trace it (CAP_SYS_ADMIN). The dump needs it to
/// inject calls, the restore to run the blob past the filters it installs.
pub const SUSPEND_SECCOMP: nix::sys::ptrace::Options = nix::sys::ptrace::Options::from_bits_retain(1 << 21);

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
