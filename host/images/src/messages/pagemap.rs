//! `pagemap-PID.img` (and `pagemap-shmem-ID.img`): which runs of pages
//! have their contents in `pages-N.img`, in that file's order.

use crate::json::{Fmt, PMAP_FLAGS};
use crate::proto::message;

/// `PagemapEntry::flags` bits.
pub mod pe {
    /// The contents are in the parent checkpoint (incremental dumps).
    pub const PARENT: u32 = 1;
    /// The contents may be fetched later (lazy restore).
    pub const LAZY: u32 = 2;
    /// The contents are in this checkpoint's pages image.
    pub const PRESENT: u32 = 4;
}

message! {
    /// First entry of a pagemap: which pages image goes with it.
    pub struct PagemapHead ("pagemap_head") {
        1 pages_id: required uint32,
    }
}

message! {
    /// A run of pages.
    pub struct PagemapEntry ("pagemap_entry") {
        1 vaddr: required uint64 [Fmt::Hex],
        /// Old images' page count; 0 in new ones.
        2 compat_nr_pages: required uint32,
        /// Old images' way of saying [`pe::PARENT`].
        3 in_parent: optional bool,
        /// [`pe`] bits; absent in old images, meaning present.
        4 flags: optional uint32 [Fmt::Flags(PMAP_FLAGS)],
        5 nr_pages: optional uint64,
    }
}

impl PagemapEntry {
    /// Pages in the run (old images kept the count in `compat_nr_pages`).
    pub fn pages(&self) -> u64 {
        self.nr_pages.unwrap_or(u64::from(self.compat_nr_pages))
    }

    /// The [`pe`] flags, with old images' conventions translated.
    pub fn pe_flags(&self) -> u32 {
        match self.flags {
            Some(f) => f,
            None if self.in_parent == Some(true) => pe::PARENT,
            None => pe::PRESENT,
        }
    }
}
