//! Building the argument block the blob reads (see `revenant-blob-abi`).

use std::mem::size_of;

use revenant_blob_abi::{Arch, Header, MAGIC, Plain, Span, VERSION};

/// Every array starts on this boundary, which suits every ABI type.
const ALIGN: usize = 8;

/// Collects arrays behind a header placeholder.
#[derive(Debug)]
pub struct BlockBuilder {
    bytes: Vec<u8>,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockBuilder {
    pub fn new() -> Self {
        BlockBuilder { bytes: vec![0; size_of::<Header>().next_multiple_of(ALIGN)] }
    }

    /// Appends `items`, returning where they are.
    pub fn push<T: Plain>(&mut self, items: &[T]) -> Span {
        self.bytes.resize(self.bytes.len().next_multiple_of(ALIGN), 0);
        let offset = self.bytes.len() as u32;
        self.bytes.extend_from_slice(as_bytes(items));
        Span { offset, count: items.len() as u32 }
    }

    /// Fills in magic, version, arch and the sizes (the block is all that
    /// is declared mapped), and writes `header` in front.
    pub fn finish(mut self, mut header: Header) -> ArgBlock {
        let len = self.bytes.len();
        header.magic = MAGIC;
        header.version = VERSION;
        header.arch = Arch::NATIVE as u32;
        header.total_size = len as u32;
        header.mapped_size = len as u32;
        self.bytes[..size_of::<Header>()].copy_from_slice(as_bytes(std::slice::from_ref(&header)));
        let mut words = vec![0u64; len.div_ceil(8)];
        as_bytes_mut(&mut words)[..len].copy_from_slice(&self.bytes);
        ArgBlock { words, len }
    }
}

/// A finished argument block, 8-byte aligned.
#[derive(Debug, Clone)]
pub struct ArgBlock {
    words: Vec<u64>,
    len: usize,
}

impl ArgBlock {
    pub fn as_ptr(&self) -> *const u8 {
        self.words.as_ptr().cast()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &as_bytes(&self.words)[..self.len]
    }

    /// For tests that hand the blob a damaged block.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut as_bytes_mut(&mut self.words)[..self.len]
    }
}

fn as_bytes<T: Plain>(items: &[T]) -> &[u8] {
    // SAFETY: Plain types have no padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast(), std::mem::size_of_val(items)) }
}

fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: any bytes are a valid u64.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), std::mem::size_of_val(words)) }
}
