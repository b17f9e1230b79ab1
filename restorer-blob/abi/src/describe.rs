//! The ABI structs describe themselves: each is declared once through
//! [`abi_struct!`], which emits the `#[repr(C)]` struct and a [`Struct`]
//! table (size, alignment, each field's offset, size, type and doc) that
//! `revenant blob export` turns into `revenant_blob.h` and `blob.json`. A
//! field without a doc comment does not compile, nor does a struct whose
//! fields leave padding between them.

/// A field of an ABI struct.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    pub align: usize,
    /// The Rust type as written (`u32`, `Span`, `[u8; 16]`, `MmMap`).
    pub ty: &'static str,
    /// For a [`crate::Span`]: the type of the elements it counts.
    pub elem: Option<&'static str>,
    /// The field's doc comment, one `#[doc]` line per line.
    pub doc: &'static str,
}

/// An ABI struct.
#[derive(Clone, Copy, Debug)]
pub struct Struct {
    pub name: &'static str,
    pub size: usize,
    pub align: usize,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

#[doc(hidden)]
#[macro_export]
macro_rules! __abi_elem {
    () => {
        None
    };
    ($e:ty) => {
        Some(stringify!($e))
    };
}

/// Declares `#[repr(C)]` ABI structs (deriving `Clone, Copy, Debug` and
/// whatever the parentheses after the name add) with their [`Struct`]
/// description as `NAME::DESCRIPTION`. A span field names its element type
/// after `=>`.
#[macro_export]
macro_rules! abi_struct {
    ($(
        $(#[doc = $sdoc:literal])+
        pub struct $name:ident ($($derive:ident),*) {
            $(
                $(#[doc = $fdoc:literal])+
                pub $f:ident : $t:ty $(=> $e:ty)?
            ),* $(,)?
        }
    )*) => {$(
        $(#[doc = $sdoc])+
        #[repr(C)]
        #[derive(Clone, Copy, Debug $(, $derive)*)]
        pub struct $name {
            $(
                $(#[doc = $fdoc])+
                pub $f: $t,
            )*
        }

        impl $name {
            pub const DESCRIPTION: $crate::Struct = $crate::Struct {
                name: stringify!($name),
                size: ::core::mem::size_of::<$name>(),
                align: ::core::mem::align_of::<$name>(),
                doc: concat!($($sdoc, "\n"),+),
                fields: &[$($crate::Field {
                    name: stringify!($f),
                    offset: ::core::mem::offset_of!($name, $f),
                    size: ::core::mem::size_of::<$t>(),
                    align: ::core::mem::align_of::<$t>(),
                    ty: stringify!($t),
                    elem: $crate::__abi_elem!($($e)?),
                    doc: concat!($($fdoc, "\n"),+),
                }),*],
            };
        }

        // No padding anywhere: the fields tile the struct (the `Plain`
        // promise), on every arch this crate is built for.
        const _: () = assert!(0 $(+ ::core::mem::size_of::<$t>())* == ::core::mem::size_of::<$name>());
    )*};
}
