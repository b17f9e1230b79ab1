//! Raw Linux system calls and the per-architecture facts the restorer needs.
//!
//! Everything here is `no_std`, allocation-free and needs no libc: the
//! situation of the restorer blob, which the host has copied and relocated
//! into the new task (no code of the blob runs before that), and of the
//! new task's setup between `clone3` and the blob.
//! The layout follows one rule: numbers and types come from `linux-raw-sys`
//! (generated from kernel headers) or from [`consts`] (the few it lacks);
//! hand-written assembly lives only in the per-arch modules, which all export
//! the same items. Every trap argument is a [`conv::Arg`], so memory handed
//! to the kernel is always a borrow the compiler sees:
//!
//! | item | what it is |
//! | --- | --- |
//! | `NAME` | the arch as revenant names it (`"x86_64"`, `"arm"`) |
//! | `PAGE_SIZE`, `SHMLBA` | page size and SysV attach alignment |
//! | `syscall0` .. `syscall6` | the raw trap on [`conv::Arg`]s, returning the kernel's word |
//! | `syscall1_noreturn` | for `exit`/`exit_group`/`rt_sigreturn` |
//! | `mmap` | `mmap` or `mmap2`, whichever the arch has |
//! | `flush_icache` | make freshly written code visible to fetch |
//! | `call_on_stack` | switch to a new stack and call a function there |
//! | `preadv` | vectored read at an offset into kernel `iovec`s |
//! | `set_tls` | the thread's TLS register(s) |
//! | `trap` | a breakpoint trap (SIGTRAP) |
//! | `rt_sigreturn` | enter `rt_sigreturn` on a prepared frame |
//! | `thread_pointer` | where the C library's thread control block is |
//! | `clone3_thread`, `clone_thread` | create a thread running a function on its own stack |
//! | `jump_to` | machine code jumping to an address (vDSO proxy trampolines) |
//! | `ids` | numbers of the credential calls that take 32-bit IDs |

#![no_std]

pub mod consts;
pub mod conv;
mod errno;
pub mod sys;

pub use errno::Errno;
pub use linux_raw_sys::general as nr_general;

cfg_select! {
    target_arch = "x86_64" => {
        mod x86_64;
        pub use x86_64::*;
    }
    target_arch = "arm" => {
        mod arm;
        pub use arm::*;
    }
    _ => {
        compile_error!("revenant-arch supports only x86_64 and 32-bit ARM");
    }
}

/// Turns the kernel's return word into a typed result.
///
/// The kernel returns `-errno` in the range `-4095..=-1` for failures and
/// anything else for success.
#[inline(always)]
pub fn check(ret: usize) -> Result<usize, Errno> {
    if ret > (-4096isize) as usize { Err(Errno::from_raw((ret as isize).unsigned_abs() as u16)) } else { Ok(ret) }
}
