//! The `PR_SET_MM_MAP` probe.

use nix::libc;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// Whether `PR_SET_MM_MAP` works here. It does on any kernel since 3.18
/// built with checkpoint/restore support; qemu-user passes the call through
/// with the guest's structure layout, which the host kernel refuses.
pub fn mm_map_works() -> bool {
    // SAFETY: the child only reads /proc, makes prctl/brk calls on its own
    // mm and exits; the parent waits for it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let ok = set_own_mm_map().is_some();
            // SAFETY: leaving the child without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0))),
        Err(_) => false,
    }
}

/// Sets this process's memory layout to what it already is.
fn set_own_mm_map() -> Option<()> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // `rest` starts at field 3 of proc(5).
    let field = |n: usize| f.get(n - 3).copied();
    // SAFETY: brk(0) only reports the current break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0) } as u64;
    let map = linux_raw_sys::prctl::prctl_mm_map {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        brk,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
        auxv: std::ptr::null_mut(),
        auxv_size: 0,
        exe_fd: u32::MAX,
    };
    let (opt, sub) = (linux_raw_sys::prctl::PR_SET_MM, linux_raw_sys::prctl::PR_SET_MM_MAP);
    // SAFETY: the kernel reads the map from a live local.
    let r = unsafe {
        libc::prctl(opt as i32, sub as libc::c_ulong, &map as *const _ as libc::c_ulong, size_of_val(&map), 0)
    };
    (r == 0).then_some(())
}
