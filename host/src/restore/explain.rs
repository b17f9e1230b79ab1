//! Faults put in words: where an address lies for someone debugging a
//! restore (the blob's function and offset, the bootstrap area, an area of
//! the restored program, or nothing mapped), and what a fault signal's
//! code means.

use super::plan::{Backing, ProcessPlan};
use crate::blob::EMBEDDED;

/// Where `addr` lies in process `p`, whose bootstrap area is at `start`,
/// `len` bytes long.
pub fn place(addr: u64, p: &ProcessPlan, start: u64, len: u64) -> String {
    let blob_end = start + EMBEDDED.map_size() as u64;
    if (start..blob_end).contains(&addr) {
        let name = EMBEDDED.name_offset(addr - start).unwrap_or_else(|| "its data".into());
        return format!("in the restorer blob: {name} (blob offset {:#x}, loaded at {start:#x})", addr - start);
    }
    if (start..start + len).contains(&addr) {
        return format!(
            "in the bootstrap area at {start:#x} (+{:#x}: the blob's stacks, thread frames or arguments)",
            addr - start
        );
    }
    match p.vmas.iter().find(|v| (v.start..v.end).contains(&addr)) {
        Some(v) => {
            let prot = |bit: u32, c: char| if v.prot & bit != 0 { c } else { '-' };
            let what = match &v.backing {
                Backing::File { path, .. } => path.display().to_string(),
                Backing::Anon => "anonymous".into(),
                other => format!("{other:?}"),
            };
            format!(
                "in the program's area {:#x}-{:#x} {}{}{} {what}",
                v.start,
                v.end,
                prot(nix::libc::PROT_READ as u32, 'r'),
                prot(nix::libc::PROT_WRITE as u32, 'w'),
                prot(nix::libc::PROT_EXEC as u32, 'x'),
            )
        }
        None => "in no area the restored process has".into(),
    }
}

/// The signal, its code's name and the address it is about (with where
/// that lies, by `place`), from a stopped thread's siginfo.
pub fn signal(tid: nix::unistd::Pid, sig: nix::sys::signal::Signal, place: &dyn Fn(u64) -> String) -> String {
    let Ok(info) = nix::sys::ptrace::getsiginfo(tid) else { return sig.to_string() };
    let fault = matches!(
        sig,
        nix::sys::signal::Signal::SIGSEGV
            | nix::sys::signal::Signal::SIGBUS
            | nix::sys::signal::Signal::SIGILL
            | nix::sys::signal::Signal::SIGFPE
    );
    if !fault || info.si_code <= 0 {
        return format!("{sig} (sent, code {})", info.si_code);
    }
    // SAFETY: for these signals with a kernel code, si_addr is the member
    // the kernel filled.
    let addr = unsafe { info.si_addr() } as u64;
    let code = match (sig, info.si_code) {
        (nix::sys::signal::Signal::SIGSEGV, 1) => "SEGV_MAPERR: nothing mapped there",
        (nix::sys::signal::Signal::SIGSEGV, 2) => "SEGV_ACCERR: the protection forbids it",
        (nix::sys::signal::Signal::SIGBUS, 1) => "BUS_ADRALN",
        (nix::sys::signal::Signal::SIGBUS, 2) => "BUS_ADRERR: past the end of a file",
        (nix::sys::signal::Signal::SIGILL, 1) => "ILL_ILLOPC: an instruction this CPU does not have",
        (nix::sys::signal::Signal::SIGILL, 2) => "ILL_ILLOPN",
        (_, 0x80) => "SI_KERNEL: raised by the kernel itself (a signal frame it could not read, for one)",
        _ => "",
    };
    let code = if code.is_empty() { format!("code {}", info.si_code) } else { code.to_string() };
    if info.si_code == 0x80 {
        return format!("{sig} ({code})");
    }
    format!("{sig} ({code}) at address {addr:#x} ({})", place(addr))
}
