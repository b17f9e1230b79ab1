//! Checks that each argument reaches the kernel where the kernel reads it.
//! The restorer's own tests cannot see a misrouted argument that happens to
//! be harmless for them (an offset of 0, an empty mask), so these pick values
//! that only the right register or field carries. They run natively and, for
//! armv7, under qemu-arm, which decodes guest registers as the kernel does.

use std::io::Write;
use std::os::fd::AsRawFd;

use revenant_arch::nr_general::{MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ};
use revenant_arch::sys;

const PAGE: usize = revenant_arch::PAGE_SIZE;

/// The sixth argument of `mmap`/`mmap2` is the file offset: a file mapped at
/// page 1 must show page 1's bytes, not page 0's.
#[test]
fn a_file_mapped_at_an_offset_shows_the_bytes_at_that_offset() {
    let path = std::env::temp_dir().join(format!("revenant-abi-{}", std::process::id()));
    let mut f = std::fs::File::create_new(&path).unwrap();
    for page in 0u8..3 {
        f.write_all(&vec![0xa0 + page; PAGE]).unwrap();
    }
    drop(f);
    let f = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // SAFETY: a fresh private read-only map of a file nothing else writes.
    let at = unsafe { revenant_arch::mmap(0, 2 * PAGE, PROT_READ, MAP_PRIVATE, f.as_raw_fd(), PAGE as u64) }.unwrap();
    // SAFETY: the map above is 2 pages long, readable and stays mapped until
    // the munmap below.
    let seen = unsafe { std::slice::from_raw_parts(at as *const u8, 2 * PAGE) };
    let (first, second) = (seen[0], seen[PAGE]);
    // SAFETY: unmaps the map made above, which nothing refers to any more.
    unsafe { sys::munmap(at, 2 * PAGE) }.unwrap();
    assert_eq!((first, second), (0xa1, 0xa2), "mapped at offset {PAGE}");

    // The same through the fixed-address call the restorer uses for VMAs.
    // SAFETY: reserves an anonymous range of our own to map over.
    let hole = unsafe { revenant_arch::mmap(0, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) }.unwrap();
    // SAFETY: replaces the range reserved just above, which nothing uses.
    unsafe { sys::mmap_fixed(hole, PAGE, PROT_READ, MAP_PRIVATE, f.as_raw_fd(), 2 * PAGE as u64) }.unwrap();
    // SAFETY: one readable page, mapped above.
    let byte = unsafe { *(hole as *const u8) };
    // SAFETY: unmaps our own page.
    unsafe { sys::munmap(hole, PAGE) }.unwrap();
    assert_eq!(byte, 0xa2, "mapped with MAP_FIXED at offset {}", 2 * PAGE);
}

extern "C" fn ignore(_: i32) {}

/// A handler installed through `rt_sigaction` runs with the mask it was
/// given: the kernel's view, read back through the C library, must hold
/// exactly the signals set, low word and high word alike.
#[test]
fn a_handler_is_installed_with_its_mask() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
    let wanted = [Signal::SIGUSR2, Signal::SIGTERM];
    let rt = 40u32; // a real-time signal: in the mask's second 32-bit word
    let mask = wanted.iter().fold(1u64 << (rt - 1), |m, s| m | 1 << (*s as u32 - 1));
    let restorer = 0;
    let act = sys::kernel_sigaction(ignore as *const () as usize, 0, restorer, mask);
    // SAFETY: `ignore` is a handler of this program; SIGUSR1 is not sent.
    unsafe { sys::rt_sigaction(Signal::SIGUSR1 as u32, &act) }.unwrap();
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restores the default action, reading back the one set above.
    let old = unsafe { nix::sys::signal::sigaction(Signal::SIGUSR1, &dfl) }.unwrap();
    let got = old.mask();
    for s in Signal::iterator() {
        assert_eq!(got.contains(s), wanted.contains(&s), "{s:?} in the installed mask");
    }
    let set: nix::libc::sigset_t = *got.as_ref();
    // SAFETY: sigismember reads an initialised set.
    assert_eq!(unsafe { nix::libc::sigismember(&set, rt as i32) }, 1, "real-time signal {rt} in the mask");
    match old.handler() {
        SigHandler::Handler(f) => assert_eq!(f as usize, ignore as *const () as usize),
        h => panic!("handler read back as {h:?}"),
    }
}

/// `preadv` takes the iovec array and its count, then the 64-bit offset in
/// one register (x86_64) or as two (ARM): two buffers must fill, in order,
/// from that offset.
#[test]
fn preadv_fills_each_buffer_from_the_offset() {
    use revenant_arch::nr_general::iovec;
    let path = std::env::temp_dir().join(format!("revenant-abi-preadv-{}", std::process::id()));
    std::fs::write(&path, (0..=255u8).collect::<Vec<_>>()).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
    let iov = [
        iovec { iov_base: a.as_mut_ptr().cast(), iov_len: a.len() as _ },
        iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() as _ },
    ];
    // SAFETY: both iovecs describe live local buffers of the given lengths.
    let n = unsafe { revenant_arch::preadv(f.as_raw_fd(), &iov, 100) }.unwrap();
    assert_eq!((n, a, b), (8, [100, 101, 102], [103, 104, 105, 106, 107]));
}

/// `setitimer` reads the kernel's `long`-based itimerval: what it arms must
/// read back, interval and value in their places.
#[test]
fn an_interval_timer_reads_back_as_set() {
    use nix::libc;
    let which = libc::ITIMER_VIRTUAL as u32;
    sys::setitimer(which, (7, 5000), (9, 0)).unwrap();
    // SAFETY: itimerval is plain integers, for which all zeros is valid.
    let mut got: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: getitimer writes one itimerval into a live local.
    assert_eq!(unsafe { libc::getitimer(libc::ITIMER_VIRTUAL, &mut got) }, 0);
    sys::setitimer(which, (0, 0), (0, 0)).unwrap();
    assert_eq!((got.it_interval.tv_sec, got.it_interval.tv_usec), (7, 5000));
    assert!(got.it_value.tv_sec <= 9 && got.it_value.tv_sec >= 8, "value {:?}", got.it_value.tv_sec);
}

/// `timer_create` reads the kernel's sigevent and writes the id;
/// `timer_settime` reads an itimerspec. A `SIGEV_NONE` timer armed for an
/// hour must report about an hour left.
#[test]
fn a_posix_timer_is_created_and_armed() {
    use nix::libc;
    let mut id = 0;
    sys::timer_create(libc::CLOCK_MONOTONIC, 0, libc::SIGEV_NONE as u32, 0, 0, &mut id).unwrap();
    sys::timer_settime(id, 0, (0, 0), (3600, 0)).unwrap();
    let mut got = [0 as libc::c_long; 4];
    // SAFETY: timer_gettime writes one `long`-based itimerspec into a live
    // local of four longs.
    let r = unsafe { libc::syscall(libc::SYS_timer_gettime, id, got.as_mut_ptr()) };
    sys::timer_delete(id).unwrap();
    assert_eq!(r, 0);
    assert!((3590..=3600).contains(&got[2]), "seconds left: {}", got[2]);
}

/// `clock_gettime` writes a timespec the way libc reads it, and
/// `timer_settime` passes its flags: an absolute expiry an hour from now
/// leaves about an hour.
#[test]
fn clock_gettime_and_an_absolute_expiry_agree() {
    use nix::libc;
    let (sec, nsec) = sys::clock_gettime(libc::CLOCK_MONOTONIC).unwrap();
    let ours = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    assert!(nsec < 1_000_000_000 && (ours.tv_sec() as u64).abs_diff(sec) <= 1, "{sec}.{nsec} against {ours}");
    let mut id = 0;
    sys::timer_create(libc::CLOCK_MONOTONIC, 0, libc::SIGEV_NONE as u32, 0, 0, &mut id).unwrap();
    sys::timer_settime(id, libc::TIMER_ABSTIME as u32, (0, 0), (sec + 3600, nsec)).unwrap();
    let mut got = [0 as libc::c_long; 4];
    // SAFETY: as in the test above.
    let r = unsafe { libc::syscall(libc::SYS_timer_gettime, id, got.as_mut_ptr()) };
    sys::timer_delete(id).unwrap();
    assert_eq!(r, 0);
    assert!((3590..=3600).contains(&got[2]), "seconds left: {}", got[2]);
}
