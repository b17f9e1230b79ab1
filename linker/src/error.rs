use std::fmt;

/// Why an ELF cannot become a flat blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Not a parsable ELF file, or a header/table that points outside it.
    Malformed(String),
    /// `e_type` is not `ET_DYN` (a position-independent executable).
    NotPie { e_type: u16 },
    /// `e_machine` is not the arch we build for.
    WrongMachine { expected: u16, found: u16 },
    /// A segment type a freestanding blob must not have.
    ForbiddenSegment { name: &'static str },
    /// A dynamic-table entry a freestanding blob must not have.
    ForbiddenDynamic { tag: &'static str },
    /// A relocation other than RELATIVE or NONE.
    Relocation { type_name: String, r_type: u32, offset: u64, symbol: Option<String> },
    /// A RELATIVE relocation whose word lies outside the file-backed image.
    RelocationOutOfImage { offset: u64 },
    /// A symbol the blob uses but nobody defines.
    UndefinedSymbol { name: String },
    /// The loadable segments span more than the loader accepts.
    TooLarge { size: u64 },
    /// No loadable segment, or the lowest one does not start at 0.
    BadLayout(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Malformed(what) => write!(f, "malformed ELF: {what}"),
            LinkError::NotPie { e_type } => {
                write!(f, "ELF type {e_type} is not ET_DYN: the blob must be linked as a PIE")
            }
            LinkError::WrongMachine { expected, found } => {
                write!(f, "ELF machine {found} is not the expected {expected}")
            }
            LinkError::ForbiddenSegment { name } => {
                write!(f, "the blob has a {name} segment; a freestanding blob cannot")
            }
            LinkError::ForbiddenDynamic { tag } => write!(
                f,
                "the blob's dynamic table has {tag}; only REL/RELA tables of RELATIVE relocations are allowed"
            ),
            LinkError::Relocation { type_name, r_type, offset, symbol } => {
                write!(f, "relocation {type_name} (type {r_type}) at offset {offset:#x}")?;
                match symbol {
                    Some(s) => write!(f, " against symbol `{s}`")?,
                    None => write!(f, " with no symbol")?,
                }
                write!(f, ": only RELATIVE relocations can be flattened")
            }
            LinkError::RelocationOutOfImage { offset } => {
                write!(f, "RELATIVE relocation at offset {offset:#x} lies outside the loaded image")
            }
            LinkError::UndefinedSymbol { name } => write!(
                f,
                "undefined symbol `{name}`: the blob must define everything it uses (no libc, no dynamic linker)"
            ),
            LinkError::TooLarge { size } => {
                write!(f, "loadable segments span {size:#x} bytes, more than the 16 MiB a blob may have")
            }
            LinkError::BadLayout(what) => write!(f, "unusable segment layout: {what}"),
        }
    }
}

impl std::error::Error for LinkError {}

impl From<object::read::Error> for LinkError {
    fn from(e: object::read::Error) -> Self {
        LinkError::Malformed(e.to_string())
    }
}
