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
