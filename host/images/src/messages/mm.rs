//! `mm-PID.img`: the address space's layout fields and its memory areas.

use crate::json::{Fmt, MMAP_FLAGS, MMAP_PROT, MMAP_STATUS};
use crate::proto::message;

/// `VmaEntry::status` bits.
pub mod vma_status {
    /// Mapped by the restorer (the rest are kernel-provided or special).
    pub const AREA_REGULAR: u32 = 1 << 0;
    pub const AREA_STACK: u32 = 1 << 1;
    pub const AREA_VSYSCALL: u32 = 1 << 2;
    pub const AREA_VDSO: u32 = 1 << 3;
    pub const AREA_HEAP: u32 = 1 << 5;
    pub const FILE_PRIVATE: u32 = 1 << 6;
    pub const FILE_SHARED: u32 = 1 << 7;
    pub const ANON_SHARED: u32 = 1 << 8;
    pub const ANON_PRIVATE: u32 = 1 << 9;
    pub const AREA_SYSVIPC: u32 = 1 << 10;
    pub const AREA_SOCKET: u32 = 1 << 11;
    pub const AREA_VVAR: u32 = 1 << 12;
    pub const AREA_AIORING: u32 = 1 << 13;
    pub const AREA_MEMFD: u32 = 1 << 14;
    pub const AREA_SHSTK: u32 = 1 << 15;
    pub const AREA_GUARD: u32 = 1 << 16;
    pub const AREA_UPROBES: u32 = 1 << 17;
    /// A mapping the dumper could not handle; never valid in an image.
    pub const UNSUPP: u32 = 1 << 31;
}

message! {
    /// One memory area.
    pub struct VmaEntry ("vma_entry") {
        1 start: required uint64 [Fmt::Hex],
        2 end: required uint64 [Fmt::Hex],
        /// File offset in bytes.
        3 pgoff: required uint64,
        /// The backing file's id in `files.img`, or the SysV segment id.
        4 shmid: required uint64,
        5 prot: required uint32 [Fmt::Flags(MMAP_PROT)],
        6 flags: required uint32 [Fmt::Flags(MMAP_FLAGS)],
        /// [`vma_status`] bits.
        7 status: required uint32 [Fmt::Flags(MMAP_STATUS)],
        /// -1 in images.
        8 fd: required sint64,
        /// `1 << MADV_*` for each advice in effect.
        9 madv: optional uint64 [Fmt::Hex],
        /// Open flags for the mapped file.
        10 fdflags: optional uint32 [Fmt::Hex],
    }
}

message! {
    /// An AIO ring (its memory is one of the areas).
    pub struct AioRingEntry ("aio_ring_entry") {
        1 id: required uint64,
        2 nr_req: required uint32,
        3 ring_len: required uint32,
    }
}

message! {
    /// The single entry of `mm-PID.img`.
    pub struct MmEntry ("mm_entry") {
        1 mm_start_code: required uint64 [Fmt::Hex],
        2 mm_end_code: required uint64 [Fmt::Hex],
        3 mm_start_data: required uint64 [Fmt::Hex],
        4 mm_end_data: required uint64 [Fmt::Hex],
        5 mm_start_stack: required uint64 [Fmt::Hex],
        6 mm_start_brk: required uint64 [Fmt::Hex],
        7 mm_brk: required uint64 [Fmt::Hex],
        8 mm_arg_start: required uint64 [Fmt::Hex],
        9 mm_arg_end: required uint64 [Fmt::Hex],
        10 mm_env_start: required uint64 [Fmt::Hex],
        11 mm_env_end: required uint64 [Fmt::Hex],
        /// The executable's id in `files.img`.
        12 exe_file_id: required uint32,
        /// The auxiliary vector as key, value pairs.
        13 mm_saved_auxv: repeated uint64,
        /// Sorted by address.
        14 vmas: repeated message<VmaEntry>,
        15 dumpable: optional int32,
        16 aios: repeated message<AioRingEntry>,
        17 thp_disabled: optional bool,
    }
}
