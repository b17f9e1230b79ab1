//! Typed wrappers over the raw traps, for the calls whose signature is the
//! same on every supported arch. Each returns the kernel's result unchanged
//! apart from turning `-errno` into [`Errno`]. Memory the kernel reads or
//! writes comes in as a reference or slice and goes out through
//! [`crate::conv`]; a `usize` address is memory Rust does not own (see
//! there), and the wrapper taking one is `unsafe` when the kernel acts on it.

mod signal;
mod thread;

use linux_raw_sys::general as g;

pub use signal::*;
pub use thread::*;

use crate::conv::{addr, by_ref, c_int, c_uint, size, slice, slice_mut, zero};
use crate::{Errno, check, syscall0, syscall1, syscall1_noreturn, syscall2, syscall3, syscall5};

/// `write(2)`.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    let (ptr, len) = slice(buf);
    // SAFETY: the kernel only reads `buf.len()` bytes from a live slice.
    check(unsafe { syscall3(g::__NR_write, c_int(fd), ptr, len) })
}

/// `write(2)` until everything is written or an error other than `EINTR`.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(Errno::EFAULT),
            Ok(n) => buf = &buf[n.min(buf.len())..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `read(2)`.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let (ptr, len) = slice_mut(buf);
    // SAFETY: the kernel writes at most `buf.len()` bytes into a live slice.
    check(unsafe { syscall3(g::__NR_read, c_int(fd), ptr, len) })
}

/// `close(2)`.
///
/// # Safety
/// `fd` must be the caller's to close: nothing else may use it afterwards,
/// since the number can be handed out again to an unrelated file.
pub unsafe fn close(fd: i32) -> Result<(), Errno> {
    // SAFETY: closing touches no memory; the caller owns the descriptor.
    check(unsafe { syscall1(g::__NR_close, c_int(fd)) }).map(|_| ())
}

/// `getpid(2)`.
pub fn getpid() -> u32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall0(g::__NR_getpid) as u32 }
}

/// `gettid(2)`.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall0(g::__NR_gettid) as u32 }
}

/// `exit_group(2)`: ends every thread of the process.
pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes a plain integer and never returns.
    unsafe { syscall1_noreturn(g::__NR_exit_group, c_int(code)) }
}

/// `userfaultfd(2)`.
pub fn userfaultfd(flags: u32) -> Result<i32, Errno> {
    // SAFETY: creating a descriptor touches no memory.
    check(unsafe { syscall1(g::__NR_userfaultfd, c_uint(flags)) }).map(|fd| fd as i32)
}

/// `sendmsg(2)` of `data` with one descriptor, `fd`, in `SCM_RIGHTS`.
pub fn send_fd(sock: i32, data: &[u8], fd: i32) -> Result<usize, Errno> {
    use linux_raw_sys::net;
    /// `CMSG_SPACE(sizeof(int))`: the header, then the int, padded to a
    /// native word, which `repr(C)` does by itself.
    #[repr(C)]
    struct Control {
        hdr: net::cmsghdr,
        fd: i32,
    }
    let control = Control {
        hdr: net::cmsghdr {
            cmsg_len: core::mem::offset_of!(Control, fd) + size_of::<i32>(),
            cmsg_level: net::SOL_SOCKET as i32,
            cmsg_type: net::SCM_RIGHTS as i32,
        },
        fd,
    };
    let mut iov = g::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() as _ };
    let msg = net::msghdr {
        msg_name: core::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: (&raw mut iov).cast(),
        msg_iovlen: 1,
        msg_control: (&raw const control).cast_mut().cast(),
        msg_controllen: size_of::<Control>(),
        msg_flags: 0,
    };
    // SAFETY: the kernel only reads the header, the iovec, `data` and the
    // control block, all live on this frame for the call.
    check(unsafe { syscall3(g::__NR_sendmsg, c_int(sock), by_ref(&msg), c_uint(net::MSG_NOSIGNAL)) })
}

/// `ioctl(2)` on a struct `request` reads and writes.
///
/// # Safety
/// `T` must be the struct `request` expects, and the request's side effects
/// (on memory, for `UFFDIO_COPY`) must be wanted.
pub unsafe fn ioctl<T>(fd: i32, request: u32, arg: &mut T) -> Result<usize, Errno> {
    // SAFETY: the struct is live and writable; the caller vouches for the
    // request.
    check(unsafe { syscall3(g::__NR_ioctl, c_int(fd), c_uint(request), crate::conv::by_mut(arg)) })
}

/// `struct sock_fprog` (`include/uapi/linux/filter.h`), which `linux-raw-sys`
/// leaves to its `net` feature.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SockFprog>() == 2 * size_of::<usize>());
    assert!(offset_of!(SockFprog, filter) == size_of::<usize>());
};

/// `seccomp(SECCOMP_SET_MODE_FILTER)` with `prog`, an array of
/// `struct sock_filter` (8 bytes each).
pub fn seccomp_filter(flags: u32, prog: &[u8]) -> Result<(), Errno> {
    let len = u16::try_from(prog.len() / 8).map_err(|_| Errno::EINVAL)?;
    let fprog = SockFprog { len, filter: prog.as_ptr() };
    let op = c_uint(crate::consts::SECCOMP_SET_MODE_FILTER);
    // SAFETY: the kernel reads the program header and the program, both live.
    check(unsafe { syscall3(g::__NR_seccomp, op, c_uint(flags), by_ref(&fprog)) }).map(|_| ())
}

/// `seccomp(SECCOMP_SET_MODE_STRICT)`: from now on only read, write,
/// exit and sigreturn.
pub fn seccomp_strict() -> Result<(), Errno> {
    let op = c_uint(crate::consts::SECCOMP_SET_MODE_STRICT);
    // SAFETY: strict mode takes no memory.
    check(unsafe { syscall3(g::__NR_seccomp, op, zero(), zero()) }).map(|_| ())
}

/// `munmap(2)`.
///
/// # Safety
/// Nothing may use the range afterwards.
pub unsafe fn munmap(start: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller vouches that the range is no longer used.
    check(unsafe { syscall2(g::__NR_munmap, addr(start), size(len)) }).map(|_| ())
}

/// `mprotect(2)`.
///
/// # Safety
/// Removing access from memory still in use makes its next use fault.
pub unsafe fn mprotect(start: usize, len: usize, prot: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the new protection.
    check(unsafe { syscall3(g::__NR_mprotect, addr(start), size(len), c_uint(prot)) }).map(|_| ())
}

/// `mremap(2)` with `MREMAP_FIXED | MREMAP_MAYMOVE`: moves a mapping to `new`.
///
/// # Safety
/// Whatever was mapped at `new..new + len` is replaced, and nothing may use
/// `old` afterwards.
pub unsafe fn mremap_fixed(old: usize, old_len: usize, new: usize, len: usize) -> Result<usize, Errno> {
    let flags = c_uint(g::MREMAP_FIXED | g::MREMAP_MAYMOVE);
    // SAFETY: the caller vouches for both ranges.
    check(unsafe { syscall5(g::__NR_mremap, addr(old), size(old_len), size(len), flags, addr(new)) })
}

/// `madvise(2)`.
///
/// # Safety
/// Some advice (`MADV_DONTNEED`, `MADV_REMOVE`) discards memory contents.
pub unsafe fn madvise(start: usize, len: usize, advice: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the advice on this range.
    check(unsafe { syscall3(g::__NR_madvise, addr(start), size(len), c_uint(advice)) }).map(|_| ())
}

/// `mmap` that must land exactly at `addr`, replacing what is there.
///
/// # Safety
/// Whatever was mapped at the range is gone.
pub unsafe fn mmap_fixed(at: usize, len: usize, prot: u32, flags: u32, fd: i32, offset: u64) -> Result<(), Errno> {
    // SAFETY: forwarded.
    let got = unsafe { crate::mmap(at, len, prot, flags | g::MAP_FIXED, fd, offset) }?;
    if got == at { Ok(()) } else { Err(Errno::EFAULT) }
}

/// `shmat(2)`: attaches SysV segment `id` at `addr` (0: anywhere).
///
/// # Safety
/// With `SHM_REMAP`, whatever was mapped at the range is replaced.
pub unsafe fn shmat(id: i32, at: usize, flags: u32) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for the range.
    check(unsafe { syscall3(g::__NR_shmat, c_int(id), addr(at), c_uint(flags)) })
}

/// `prctl(2)` with up to four further integer arguments.
///
/// # Safety
/// Some options read or write memory at an address given as an integer;
/// those that take a struct have their own wrapper below.
pub unsafe fn prctl(option: u32, a2: usize, a3: usize, a4: usize, a5: usize) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for what the option does with the arguments.
    check(unsafe { syscall5(g::__NR_prctl, c_uint(option), size(a2), size(a3), size(a4), size(a5)) })
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP, map)`: the process's memory layout
/// fields, auxv and exe link at once.
///
/// # Safety
/// `map.auxv` must point at `map.auxv_size` readable bytes. Afterwards
/// `brk` grows from the new break and `/proc` shows the new layout.
pub unsafe fn prctl_set_mm_map(map: &linux_raw_sys::prctl::prctl_mm_map) -> Result<(), Errno> {
    use linux_raw_sys::prctl::{PR_SET_MM, PR_SET_MM_MAP};
    let len = size(size_of_val(map));
    let (op, sub) = (c_uint(PR_SET_MM), c_uint(PR_SET_MM_MAP));
    // SAFETY: the kernel reads the live map; the caller vouches for the auxv
    // it points at and for the new layout.
    check(unsafe { syscall5(g::__NR_prctl, op, sub, by_ref(map), len, zero()) }).map(|_| ())
}

/// `prctl(PR_SET_NAME)`: the thread's name, at most 15 bytes before a NUL.
pub fn prctl_set_name(name: &[u8; 16]) -> Result<(), Errno> {
    let op = c_uint(linux_raw_sys::prctl::PR_SET_NAME);
    // SAFETY: the kernel reads at most 16 bytes of the live array.
    check(unsafe { syscall5(g::__NR_prctl, op, by_ref(name), zero(), zero(), zero()) }).map(|_| ())
}

/// `setgroups(2)`, with 32-bit IDs on every arch.
pub fn setgroups(groups: &[u32]) -> Result<(), Errno> {
    let (ptr, len) = slice(groups);
    // SAFETY: the kernel reads `groups.len()` u32s from a live slice.
    check(unsafe { syscall2(crate::ids::SETGROUPS, len, ptr) }).map(|_| ())
}

pub use linux_raw_sys::general::{__user_cap_data_struct, __user_cap_header_struct};

/// `capset(2)` with a version 3 header: two data records, low then high 32
/// capabilities.
/// The kernel writes its own version into `header` when it rejects this one.
pub fn capset(header: &mut __user_cap_header_struct, data: &[__user_cap_data_struct; 2]) -> Result<(), Errno> {
    // SAFETY: the kernel reads both records and reads (maybe writes) the
    // header, all live.
    check(unsafe { syscall2(g::__NR_capset, crate::conv::by_mut(header), by_ref(data)) }).map(|_| ())
}

/// `prlimit64(0, resource, new, NULL)`: sets one limit of this process.
pub fn set_rlimit(resource: u32, cur: u64, max: u64) -> Result<(), Errno> {
    let new = g::rlimit64 { rlim_cur: cur, rlim_max: max };
    // SAFETY: the kernel reads one rlimit64 from a live local.
    check(unsafe { crate::syscall4(g::__NR_prlimit64, zero(), c_uint(resource), by_ref(&new), zero()) }).map(|_| ())
}
