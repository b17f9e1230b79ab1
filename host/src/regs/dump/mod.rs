//! The dump half: a stopped thread's registers, read with ptrace, and the
//! other per-thread state ptrace hands out directly (signal mask, pending
//! signals, rseq), and the registers as the images' messages spell them.
//! The arch files hold the same items: `Gp`, `Fpu`, `Tls`, `gpregs`,
//! `set_gpregs`, `fpregs`, `tls`, `pc`, `sp`, `arg0`, `step_over_trap`,
//! `BLOB_SYSCALL_LEN`, `restart_syscall`, `core_regs`, `MTYPE`.

use anyhow::{Context, Result};
use nix::libc::{self, c_void};

cfg_select! {
    target_arch = "x86_64" => {
        mod x86_64;
        pub use x86_64::*;
    }
    target_arch = "arm" => {
        mod arm;
        pub use arm::*;
    }
}

/// The blocked-signal mask.
pub fn sigmask(tid: i32) -> Result<u64> {
    let mut mask = 0u64;
    // SAFETY: PTRACE_GETSIGMASK writes `addr` (= 8) bytes to `data`.
    let r =
        unsafe { libc::ptrace(libc::PTRACE_GETSIGMASK, tid, size_of::<u64>() as *mut c_void, &mut mask as *mut u64) };
    if r < 0 {
        return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_GETSIGMASK of task {tid}"));
    }
    Ok(mask)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

/// Pending signals as raw 128-byte siginfos: the thread's own queue, or the
/// process's shared one.
pub fn pending(tid: i32, shared: bool) -> Result<Vec<Vec<u8>>> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let mut buf = vec![0u8; 128 * BATCH];
        // SAFETY: the kernel writes at most `nr` siginfos (128 bytes each)
        // into buf, which has room for exactly that many.
        let n = unsafe {
            libc::ptrace(
                libc::PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekSiginfoArgs as *mut c_void,
                buf.as_mut_ptr() as *mut c_void,
            )
        };
        if n < 0 {
            return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_PEEKSIGINFO of task {tid}"));
        }
        out.extend(buf.chunks_exact(128).take(n as usize).map(|c| c.to_vec()));
        if (n as usize) < BATCH {
            return Ok(out);
        }
    }
}

/// rseq registration: (pointer, length, signature), or None.
pub fn rseq(tid: i32) -> Result<Option<(u64, u32, u32)>> {
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        ptr: u64,
        len: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;
    let mut c = Conf::default();
    // SAFETY: the kernel writes at most `addr` bytes (the struct's size)
    // into `c`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION as _,
            tid,
            size_of::<Conf>() as *mut c_void,
            &mut c as *mut Conf as *mut c_void,
        )
    };
    if r < 0 {
        let e = nix::errno::Errno::last();
        // Kernels before 5.13 do not have the request; rseq cannot be
        // registered there either in practice (glibc checks).
        if e == nix::errno::Errno::EIO {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("PTRACE_GET_RSEQ_CONFIGURATION of task {tid}"));
    }
    Ok((c.ptr != 0).then_some((c.ptr, c.len, c.sig)))
}
