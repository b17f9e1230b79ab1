//! Seccomp filters: the dump half ([`dump`]) reads them and
//! writes `seccomp.img`; the restore half ([`restore`]) plans each
//! thread's chain from the images. Both directions trace sandboxed tasks,
//! hence [`SUSPEND_SECCOMP`] here, on every arch.

pub mod dump;
pub mod restore;

/// `PTRACE_O_SUSPEND_SECCOMP`: the tracee's seccomp state judges none of
/// its calls while we trace it (CAP_SYS_ADMIN). The dump needs it to
/// inject calls, the restore to run the blob past the filters it installs.
pub const SUSPEND_SECCOMP: nix::sys::ptrace::Options = nix::sys::ptrace::Options::from_bits_retain(1 << 21);
