//! The blob built by build.rs for this binary's arch.

mod meta {
    include!(concat!(env!("OUT_DIR"), "/blob_meta.rs"));
}

/// Everything known about the embedded blob.
#[derive(Debug)]
pub struct Embedded {
    pub arch: &'static str,
    pub word_size: usize,
    /// File-backed bytes, loaded at offset 0.
    pub image: &'static [u8],
    /// Zeroed bytes after `image`.
    pub bss_size: u64,
    /// First writable offset; below it is code and read-only data.
    pub data_start: u64,
    pub entry: u64,
    /// Offsets of words to which the load base is added.
    pub relocs: &'static [u32],
    pub reloc_types: &'static [(&'static str, usize)],
    pub symbols: &'static [(&'static str, u64)],
    /// Every function: name, offset, size; sorted by offset.
    pub functions: &'static [(&'static str, u64, u64)],
    /// The ELF the image was flattened from, with symbols and line
    /// tables, for a debugger (`add-symbol-file blob.elf -o BASE`).
    pub elf: &'static [u8],
}

impl Embedded {
    /// `function+0xoffset` for an offset into the blob's code.
    pub fn name_offset(&self, offset: u64) -> Option<String> {
        let i = self.functions.partition_point(|f| f.1 <= offset).checked_sub(1)?;
        let (name, start, size) = self.functions[i];
        (offset < start + size).then(|| format!("{name}+{:#x}", offset - start))
    }

    /// Image plus bss, rounded up to whole pages: what the loader maps.
    pub fn map_size(&self) -> usize {
        (self.image.len() + self.bss_size as usize).next_multiple_of(revenant_arch::PAGE_SIZE)
    }
}

pub static EMBEDDED: Embedded = Embedded {
    arch: meta::ARCH,
    word_size: meta::WORD_SIZE,
    image: include_bytes!(concat!(env!("OUT_DIR"), "/blob.bin")),
    bss_size: meta::BSS_SIZE,
    data_start: meta::DATA_START,
    entry: meta::ENTRY,
    relocs: meta::RELOCS,
    reloc_types: meta::RELOC_TYPES,
    symbols: meta::SYMBOLS,
    functions: meta::FUNCTIONS,
    elf: include_bytes!(concat!(env!("OUT_DIR"), "/blob.elf")),
};
