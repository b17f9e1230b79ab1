//! The pipeline self-test: proves, inside a freshly loaded blob, that the
//! loader applied the relocations (pointer tables are only usable if it
//! did), that `.data` and `.bss` are where the code expects them, and that
//! syscalls and the log work. A broken loader shows up as a crash or a wrong
//! exit code, which the host's test checks.

use core::hint::black_box;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use linux_raw_sys::general as g;
use revenant_arch::sys;
use revenant_blob_abi::{ExitCode, SelfTest};

use crate::{Args, Log, fail};

/// Pointers to string data: three RELATIVE relocations.
static NAMES: [&str; 3] = ["relocated string table", "function-pointer table", "data and bss"];

/// Function pointers: three more.
static STEPS: [fn(u32) -> u32; 3] = [add3, mul5, xor55];

fn add3(v: u32) -> u32 {
    v.wrapping_add(3)
}

fn mul5(v: u32) -> u32 {
    v.wrapping_mul(5)
}

fn xor55(v: u32) -> u32 {
    v ^ 0x55
}

/// Lives in `.data`: must read as its initial value.
static DATA: AtomicU32 = AtomicU32::new(0x5eed_0001);
/// Lives in `.bss`: must read as zero, which the loader provides.
static BSS: [AtomicU8; 64] = [const { AtomicU8::new(0) }; 64];

pub fn run(args: &Args<'_>, log: &Log) -> ! {
    let Ok(test) = args.one::<SelfTest>(args.header().selftest) else {
        fail(log, ExitCode::BadLayout, "self-test arguments lie outside the block");
    };
    if test.pad != 0 {
        fail(log, ExitCode::BadLayout, "the self-test's reserved word is not zero");
    }
    let Ok(message) = args.array::<u8>(test.message) else {
        fail(log, ExitCode::BadLayout, "self-test message lies outside the block");
    };
    log.info().s("self-test in pid ").dec(sys::getpid() as u64).emit();
    log.info().s("message: ").bytes(message).emit();

    let names = black_box(&NAMES);
    for (i, name) in names.iter().enumerate() {
        log.info().s("check ").dec(i as u64 + 1).s(": ").s(name).emit();
    }

    let steps = black_box(&STEPS);
    let value = steps.iter().fold(test.input, |v, step| step(v));

    if DATA.load(Ordering::Relaxed) != 0x5eed_0001 {
        fail(log, ExitCode::SelfTestFailed, ".data does not hold its initial value");
    }
    if black_box(&BSS).iter().any(|b| b.load(Ordering::Relaxed) != 0) {
        fail(log, ExitCode::SelfTestFailed, ".bss is not zero");
    }
    DATA.store(value, Ordering::Relaxed);
    BSS[63].store(1, Ordering::Relaxed);

    check_mmap(log);

    let code = (DATA.load(Ordering::Relaxed) % 128) as i32;
    log.info().s("value ").dec(value as u64).s(", exiting with ").dec(code as u64).emit();
    crate::status::report(code as u32);
    sys::exit_group(code)
}

/// Maps a page, writes through it, reads back and unmaps it.
fn check_mmap(log: &Log) {
    let prot = g::PROT_READ | g::PROT_WRITE;
    let flags = g::MAP_PRIVATE | g::MAP_ANONYMOUS;
    // SAFETY: a fresh anonymous mapping replaces nothing.
    let page = match unsafe { revenant_arch::mmap(0, revenant_arch::PAGE_SIZE, prot, flags, -1, 0) } {
        Ok(p) => p,
        Err(e) => {
            log.error().s("mmap: ").errno(e).emit();
            fail(log, ExitCode::SelfTestFailed, "cannot map a page");
        }
    };
    let words = page as *mut u32;
    for i in 0..16 {
        // SAFETY: `page` is a fresh, writable, page-sized mapping.
        unsafe { words.add(i).write_volatile(i as u32 * 0x0101_0101) };
    }
    // SAFETY: as above.
    let ok = (0..16).all(|i| unsafe { words.add(i).read_volatile() } == i as u32 * 0x0101_0101);
    // SAFETY: the mapping is ours and nothing refers to it any more.
    if !ok || unsafe { sys::munmap(page, revenant_arch::PAGE_SIZE) }.is_err() {
        fail(log, ExitCode::SelfTestFailed, "an anonymous page did not keep what was written");
    }
    log.info().s("mmap ok at ").hex(page as u64).emit();
}
