//! Turns the restorer blob's ELF (a freestanding static PIE) into what a
//! loader needs and nothing else: one flat image holding every `PT_LOAD` at
//! its virtual address, the size of the zeroed tail (bss), the entry and
//! exported symbol offsets, and a list of word offsets to which the loader
//! adds the load base.
//!
//! Only `*_RELATIVE` relocations can be expressed that way. Anything else in
//! the ELF means the blob was built wrongly (a symbol it expects someone else
//! to provide, thread-local storage, a program interpreter, packed RELR
//! relocations), and the flattener refuses it with an error naming what it
//! found, so the mistake surfaces at build time instead of as a crash inside
//! a half-restored process.

mod error;
mod flatten;
mod reloc_names;

pub use error::LinkError;
pub use flatten::{demangle, flatten};
pub use reloc_names::reloc_name;

/// The machines whose blobs we can flatten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    X86_64,
    Arm,
    Aarch64,
}

impl Machine {
    /// The arch name used in revenant's outputs.
    pub fn name(self) -> &'static str {
        match self {
            Machine::X86_64 => "x86_64",
            Machine::Arm => "arm",
            Machine::Aarch64 => "aarch64",
        }
    }

    /// Parses [`Machine::name`] back.
    pub fn from_name(name: &str) -> Option<Self> {
        [Machine::X86_64, Machine::Arm, Machine::Aarch64].into_iter().find(|m| m.name() == name)
    }

    /// The ELF `e_machine` value.
    pub fn elf_machine(self) -> u16 {
        match self {
            Machine::X86_64 => object::elf::EM_X86_64,
            Machine::Arm => object::elf::EM_ARM,
            Machine::Aarch64 => object::elf::EM_AARCH64,
        }
    }

    /// Size in bytes of a relocated word (a pointer).
    pub fn word_size(self) -> usize {
        match self {
            Machine::Arm => 4,
            Machine::X86_64 | Machine::Aarch64 => 8,
        }
    }

    /// The one relocation type a flat blob may carry.
    pub fn relative_reloc(self) -> u32 {
        match self {
            Machine::X86_64 => object::elf::R_X86_64_RELATIVE,
            Machine::Arm => object::elf::R_ARM_RELATIVE,
            Machine::Aarch64 => object::elf::R_AARCH64_RELATIVE,
        }
    }
}

/// A symbol the blob defines, by offset from the load base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub offset: u64,
}

/// A function of the blob: where it starts and how long it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// The flattened blob.
#[derive(Clone, Debug)]
pub struct FlatBlob {
    pub machine: Machine,
    /// File-backed bytes of all loadable segments, placed at their vaddr.
    pub image: Vec<u8>,
    /// Zeroed bytes the loader maps after `image` (bss).
    pub bss_size: u64,
    /// Offset of the first writable page: `[0, data_start)` is mapped
    /// read+execute, the rest read+write.
    pub data_start: u64,
    /// Offset of the entry point.
    pub entry: u64,
    /// Global symbols the blob defines, sorted by name.
    pub symbols: Vec<Symbol>,
    /// Every function (local ones too) with its size, sorted by offset;
    /// empty for a stripped ELF.
    pub functions: Vec<Function>,
    /// Offsets of words that need the load base added, sorted. Each word
    /// already holds its addend relative to the image start.
    pub relocs: Vec<u32>,
    /// How many relocations of each type the ELF carried (RELATIVE only,
    /// unless NONE entries were skipped), for reports.
    pub reloc_types: Vec<(String, usize)>,
}

impl FlatBlob {
    /// Image plus bss: what the loader must map.
    pub fn mem_size(&self) -> u64 {
        self.image.len() as u64 + self.bss_size
    }

    /// The offset of a defined symbol.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.binary_search_by(|s| s.name.as_str().cmp(name)).ok().map(|i| self.symbols[i].offset)
    }

    /// Applies the relocations for a load at `base` to a copy of the image.
    ///
    /// This is what a loader does after copying the image; it lives here so
    /// that tests and tools share one implementation with the host.
    pub fn relocate(&self, image: &mut [u8], base: u64) {
        relocate_words(self.machine.word_size(), &self.relocs, image, base);
    }
}

/// Adds `base` to each word at the given offsets (little-endian).
///
/// Offsets outside `image` are skipped; [`flatten`] never produces them.
pub fn relocate_words(word_size: usize, relocs: &[u32], image: &mut [u8], base: u64) {
    for &off in relocs {
        let off = off as usize;
        let Some(word) = image.get_mut(off..off + word_size) else {
            continue;
        };
        if word_size == 4 {
            let v = u32::from_le_bytes(word.try_into().unwrap_or([0; 4]));
            word.copy_from_slice(&v.wrapping_add(base as u32).to_le_bytes());
        } else {
            let v = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            word.copy_from_slice(&v.wrapping_add(base).to_le_bytes());
        }
    }
}
