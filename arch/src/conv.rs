//! Typed syscall arguments. The raw traps take [`Arg`]s, not `usize`s, so a
//! call site cannot turn a reference into a bare number and lose track of
//! what it borrows: memory the kernel reads or writes is handed over with
//! [`by_ref`], [`by_mut`], [`slice`] or [`slice_mut`], whose [`Arg`] keeps
//! the borrow alive for as long as the argument exists, i.e. across the
//! trap. Pointers keep their provenance on the way into the register.
//!
//! Addresses that are genuinely integers stay integers and go through
//! [`addr`]: memory of the program being restored (its VMAs, its TLS, its
//! robust list, its rseq area), of another process, or mapped by the caller
//! and known only by number. Rust never dereferences those through the
//! argument, so there is no borrow to keep; the wrapper taking them is
//! `unsafe` when the kernel will write there.

use core::ffi::{CStr, c_void};
use core::marker::PhantomData;

/// One argument register of a system call, carrying the lifetime of any
/// memory it points at.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Arg<'a> {
    raw: *mut c_void,
    _borrow: PhantomData<&'a ()>,
}

impl core::fmt::Debug for Arg<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Arg({:#x})", self.raw.addr())
    }
}

impl Arg<'_> {
    #[inline(always)]
    const fn int(word: usize) -> Arg<'static> {
        Arg { raw: core::ptr::without_provenance_mut(word), _borrow: PhantomData }
    }

    /// The register's contents, for the trap's `asm!` operand.
    #[inline(always)]
    pub fn to_asm(self) -> *mut c_void {
        self.raw
    }
}

/// A struct the kernel only reads.
#[inline(always)]
pub fn by_ref<T>(r: &T) -> Arg<'_> {
    Arg { raw: (r as *const T).cast_mut().cast(), _borrow: PhantomData }
}

/// A struct the kernel may write.
#[inline(always)]
pub fn by_mut<T>(r: &mut T) -> Arg<'_> {
    Arg { raw: (r as *mut T).cast(), _borrow: PhantomData }
}

/// A buffer the kernel only reads: its address and its length in elements
/// (bytes for `[u8]`), in that order.
#[inline(always)]
pub fn slice<T>(s: &[T]) -> (Arg<'_>, Arg<'static>) {
    (Arg { raw: s.as_ptr().cast_mut().cast(), _borrow: PhantomData }, size(s.len()))
}

/// A buffer the kernel may write: address and length, as for [`slice`].
#[inline(always)]
pub fn slice_mut<T>(s: &mut [T]) -> (Arg<'_>, Arg<'static>) {
    let len = s.len();
    (Arg { raw: s.as_mut_ptr().cast(), _borrow: PhantomData }, size(len))
}

/// A NUL-terminated string the kernel reads.
#[inline(always)]
pub fn c_str(s: &CStr) -> Arg<'_> {
    Arg { raw: s.as_ptr().cast_mut().cast(), _borrow: PhantomData }
}

/// An `int`: a descriptor, a signal number, `AT_FDCWD`. Sign-extended, as a
/// C caller would pass it.
#[inline(always)]
pub const fn c_int(v: i32) -> Arg<'static> {
    Arg::int(v as isize as usize)
}

/// An `unsigned int`: flags, modes, IDs, options.
#[inline(always)]
pub const fn c_uint(v: u32) -> Arg<'static> {
    Arg::int(v as usize)
}

/// A `size_t` or `unsigned long`: a length, a count, a register-wide value.
#[inline(always)]
pub const fn size(v: usize) -> Arg<'static> {
    Arg::int(v)
}

/// An address only the kernel dereferences (see the module documentation).
#[inline(always)]
pub const fn addr(v: usize) -> Arg<'static> {
    Arg::int(v)
}

/// A null pointer, or zero for an unused argument.
#[inline(always)]
pub const fn zero() -> Arg<'static> {
    Arg::int(0)
}
