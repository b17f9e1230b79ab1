//! The `PR_SET_MM_MAP` probe.

use linux_raw_sys::general as g;
use linux_raw_sys::prctl::prctl_mm_map;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use revenant_arch::sys;

/// Whether `PR_SET_MM_MAP` works here. It does on any kernel since 3.18
/// built with checkpoint/restore support; qemu-user passes the call through
/// with the guest's structure layout, which the host kernel refuses.
pub fn mm_map_works() -> bool {
    // Read and parsed before the fork: the child of a multi-threaded process
    // must not allocate (under qemu-arm it once hung on the allocator's lock,
    // held at the fork by a thread that does not exist in the child). The
    // child's layout is a copy of ours, so ours is what it sets.
    let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok() else { return false };
    let Some(mut map) = layout_from_stat(&stat) else { return false };
    // SAFETY: the child only makes raw system calls on the prepared map and
    // leaves with exit_group; the parent waits for it.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // The break may have moved since /proc was read (another thread
            // allocating); the kernel checks the one the child has.
            // SAFETY: brk(0) only reports the current break.
            map.brk = unsafe { revenant_arch::syscall1(g::__NR_brk, revenant_arch::conv::zero()) } as u64;
            // SAFETY: the map's auxv is the child's own copy of ours; the
            // child exits right after, so its new layout bothers no one.
            let r = unsafe { sys::prctl_set_mm_map(&map) };
            sys::exit_group(if r.is_ok() { 0 } else { 1 })
        }
        Ok(ForkResult::Parent { child }) => matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0))),
        Err(_) => false,
    }
}

/// The memory layout `/proc/PID/stat` shows, as `PR_SET_MM_MAP` takes it
/// (`brk` left 0, without auxv or exe).
fn layout_from_stat(stat: &str) -> Option<prctl_mm_map> {
    // Fields after the command name, which may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // `rest` starts at field 3 of proc(5).
    let field = |n: usize| f.get(n - 3).copied();
    Some(prctl_mm_map {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        brk: 0,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
        auxv: std::ptr::null_mut(),
        auxv_size: 0,
        exe_fd: u32::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_read_from_stat_fields_after_the_name() {
        // A name with spaces and a parenthesis, then fields 3 to 52.
        let fields: Vec<String> = (3..=52).map(|n| (n * 10).to_string()).collect();
        let stat = format!("42 (a (b) c) {}", fields.join(" "));
        let m = layout_from_stat(&stat).unwrap();
        assert_eq!((m.start_code, m.end_code, m.start_stack), (260, 270, 280));
        assert_eq!((m.start_data, m.end_data, m.start_brk), (450, 460, 470));
        assert_eq!((m.arg_start, m.arg_end, m.env_start, m.env_end), (480, 490, 500, 510));
        // Old kernels stop before field 51: no layout.
        assert!(layout_from_stat(&stat[..stat.find(" 510").unwrap()]).is_none());
    }
}
