//! Memory: the mm fields, the VMAs, and which pages are in the pages image.

/// `mm-PID.img`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MmEntry {
    #[prost(uint64, required, tag = "1")]
    pub mm_start_code: u64,
    #[prost(uint64, required, tag = "2")]
    pub mm_end_code: u64,
    #[prost(uint64, required, tag = "3")]
    pub mm_start_data: u64,
    #[prost(uint64, required, tag = "4")]
    pub mm_end_data: u64,
    #[prost(uint64, required, tag = "5")]
    pub mm_start_stack: u64,
    #[prost(uint64, required, tag = "6")]
    pub mm_start_brk: u64,
    #[prost(uint64, required, tag = "7")]
    pub mm_brk: u64,
    #[prost(uint64, required, tag = "8")]
    pub mm_arg_start: u64,
    #[prost(uint64, required, tag = "9")]
    pub mm_arg_end: u64,
    #[prost(uint64, required, tag = "10")]
    pub mm_env_start: u64,
    #[prost(uint64, required, tag = "11")]
    pub mm_env_end: u64,
    #[prost(uint32, required, tag = "12")]
    pub exe_file_id: u32,
    #[prost(uint64, repeated, packed = "false", tag = "13")]
    pub mm_saved_auxv: Vec<u64>,
    #[prost(message, repeated, tag = "14")]
    pub vmas: Vec<VmaEntry>,
    #[prost(int32, optional, tag = "15")]
    pub dumpable: Option<i32>,
    #[prost(message, repeated, tag = "16")]
    pub aios: Vec<AioRingEntry>,
    #[prost(bool, optional, tag = "17")]
    pub thp_disabled: Option<bool>,
}

/// One memory area.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VmaEntry {
    #[prost(uint64, required, tag = "1")]
    pub start: u64,
    #[prost(uint64, required, tag = "2")]
    pub end: u64,
    /// File offset in bytes.
    #[prost(uint64, required, tag = "3")]
    pub pgoff: u64,
    /// The backing file's id in files.img, or the SysV segment id.
    #[prost(uint64, required, tag = "4")]
    pub shmid: u64,
    #[prost(uint32, required, tag = "5")]
    pub prot: u32,
    #[prost(uint32, required, tag = "6")]
    pub flags: u32,
    /// `VMA_AREA_*` / `VMA_FILE_*` / `VMA_ANON_*` bits.
    #[prost(uint32, required, tag = "7")]
    pub status: u32,
    #[prost(sint64, required, tag = "8")]
    pub fd: i64,
    /// `1 << MADV_*` bits.
    #[prost(uint64, optional, tag = "9")]
    pub madv: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub fdflags: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AioRingEntry {
    #[prost(uint64, required, tag = "1")]
    pub id: u64,
    #[prost(uint32, required, tag = "2")]
    pub nr_req: u32,
    #[prost(uint32, required, tag = "3")]
    pub ring_len: u32,
}

/// First entry of a pagemap image: which pages image goes with it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PagemapHead {
    #[prost(uint32, required, tag = "1")]
    pub pages_id: u32,
}

/// A run of pages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PagemapEntry {
    #[prost(uint64, required, tag = "1")]
    pub vaddr: u64,
    #[prost(uint32, required, tag = "2")]
    pub compat_nr_pages: u32,
    #[prost(bool, optional, tag = "3")]
    pub in_parent: Option<bool>,
    /// `PE_*` bits.
    #[prost(uint32, optional, tag = "4")]
    pub flags: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub nr_pages: Option<u64>,
}

impl PagemapEntry {
    /// Pages in the run (old images kept the count in `compat_nr_pages`).
    pub fn pages(&self) -> u64 {
        self.nr_pages.unwrap_or(self.compat_nr_pages as u64)
    }
}
