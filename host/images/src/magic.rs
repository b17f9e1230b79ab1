//! The magic numbers at the start of each image file.
//!
//! Every image but the inventory starts with two little-endian words: a
//! lead word ([`COMMON`], or [`SERVICE`] for service files such as stats)
//! and the image kind's own magic. The inventory has its magic alone. Raw
//! images (`pages-N.img`) have none.

/// First word of every ordinary image.
pub const COMMON: u32 = 0x5456_4319;
/// First word of service images (stats).
pub const SERVICE: u32 = 0x5510_5940;

/// Image kinds this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Inventory,
    Pstree,
    Core,
    Ids,
    Mm,
    /// Both `pagemap-PID.img` and `pagemap-shmem-ID.img`.
    Pagemap,
    Files,
    Fdinfo,
    Fs,
    Seccomp,
    Timens,
    Stats,
    IpcVar,
    IpcnsShm,
    PipesData,
    FifoData,
    Cgroup,
    MemfdInode,
    FileLocks,
    SkQueues,
    RemapFpath,
    GhostFile,
    TtyInfo,
    TtyData,
    TcpStream,
}

impl Kind {
    pub const ALL: [Kind; 25] = [
        Kind::Inventory,
        Kind::Pstree,
        Kind::Core,
        Kind::Ids,
        Kind::Mm,
        Kind::Pagemap,
        Kind::Files,
        Kind::Fdinfo,
        Kind::Fs,
        Kind::Seccomp,
        Kind::Timens,
        Kind::Stats,
        Kind::IpcVar,
        Kind::IpcnsShm,
        Kind::PipesData,
        Kind::FifoData,
        Kind::Cgroup,
        Kind::MemfdInode,
        Kind::FileLocks,
        Kind::SkQueues,
        Kind::RemapFpath,
        Kind::GhostFile,
        Kind::TtyInfo,
        Kind::TtyData,
        Kind::TcpStream,
    ];

    /// The kind's own magic (the second word, or the only one for the
    /// inventory).
    pub fn magic(self) -> u32 {
        match self {
            Kind::Inventory => 0x5831_3116,
            Kind::Pstree => 0x5027_3030,
            Kind::Core => 0x5505_3847,
            Kind::Ids => 0x5443_2030,
            Kind::Mm => 0x5749_2820,
            Kind::Pagemap => 0x5608_4025,
            Kind::Files => 0x5630_3138,
            Kind::Fdinfo => 0x5621_3732,
            Kind::Fs => 0x5140_3912,
            Kind::Seccomp => 0x6441_3049,
            Kind::Timens => 0x4311_4433,
            Kind::Stats => 0x5709_3306,
            Kind::IpcVar => 0x5311_5007,
            Kind::IpcnsShm => 0x4628_3044,
            Kind::PipesData => 0x5645_3709,
            Kind::FifoData => 0x5933_3054,
            Kind::Cgroup => 0x5938_3330,
            Kind::MemfdInode => 0x4845_3499,
            Kind::FileLocks => 0x5432_3616,
            Kind::SkQueues => 0x5626_4026,
            Kind::RemapFpath => 0x5913_3954,
            Kind::GhostFile => 0x5258_3605,
            Kind::TtyInfo => 0x5945_3036,
            Kind::TtyData => 0x5941_3026,
            Kind::TcpStream => 0x5146_5506,
        }
    }

    /// The lead word, if the kind has one.
    pub fn lead(self) -> Option<u32> {
        match self {
            Kind::Inventory => None,
            Kind::Stats => Some(SERVICE),
            _ => Some(COMMON),
        }
    }

    /// Bytes of magic before the first entry.
    pub fn header_len(self) -> usize {
        if self.lead().is_some() { 8 } else { 4 }
    }

    /// The name crit prints as "magic".
    pub fn name(self) -> &'static str {
        match self {
            Kind::Inventory => "INVENTORY",
            Kind::Pstree => "PSTREE",
            Kind::Core => "CORE",
            Kind::Ids => "IDS",
            Kind::Mm => "MM",
            Kind::Pagemap => "PAGEMAP",
            Kind::Files => "FILES",
            Kind::Fdinfo => "FDINFO",
            Kind::Fs => "FS",
            Kind::Seccomp => "SECCOMP",
            Kind::Timens => "TIMENS",
            Kind::Stats => "STATS",
            Kind::IpcVar => "IPC_VAR",
            Kind::IpcnsShm => "IPCNS_SHM",
            Kind::PipesData => "PIPES_DATA",
            Kind::FifoData => "FIFO_DATA",
            Kind::Cgroup => "CGROUP",
            Kind::MemfdInode => "MEMFD_INODE",
            Kind::FileLocks => "FILE_LOCKS",
            Kind::SkQueues => "SK_QUEUES",
            Kind::RemapFpath => "REMAP_FPATH",
            Kind::GhostFile => "GHOST_FILE",
            Kind::TtyInfo => "TTY_INFO",
            Kind::TtyData => "TTY_DATA",
            Kind::TcpStream => "TCP_STREAM",
        }
    }

    /// Recognises a file by its first eight bytes.
    pub fn from_header(head: &[u8]) -> Option<Kind> {
        let word = |i: usize| head.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let first = word(0)?;
        if first == Kind::Inventory.magic() {
            return Some(Kind::Inventory);
        }
        let second = word(4)?;
        Kind::ALL.into_iter().find(|k| k.lead() == Some(first) && k.magic() == second)
    }

    /// Why `head` is not an image this crate knows, for error messages.
    pub fn describe_header(head: &[u8]) -> String {
        let word = |i: usize| head.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match (word(0), word(4)) {
            (None, _) => format!("{} bytes: too short for a magic number", head.len()),
            (Some(w), _) if w != COMMON && w != SERVICE => {
                format!("magic {w:#010x} is not a CRIU image's (raw data such as a pages image has none)")
            }
            (Some(_), None) => "the second magic word is missing".to_string(),
            (Some(_), Some(m)) => format!("magic {m:#010x} is not an image kind revenant knows"),
        }
    }
}
