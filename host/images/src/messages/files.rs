//! Files: what each file id is, and which fds point at which ids.

/// `fd_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FdType {
    Und = 0,
    Reg = 1,
    Pipe = 2,
    Fifo = 3,
    Inetsk = 4,
    Unixsk = 5,
    Eventfd = 6,
    Eventpoll = 7,
    Inotify = 8,
    Signalfd = 9,
    Packetsk = 10,
    Tty = 11,
    Fanotify = 12,
    Netlinksk = 13,
    Ns = 14,
    Tunf = 15,
    Ext = 16,
    Timerfd = 17,
    Memfd = 18,
    Bpfmap = 19,
    Pidfd = 20,
    CtlTty = 65534,
    AutofsPipe = 65535,
}

/// `files.img`: one entry per file object; the type picks the payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileEntry {
    #[prost(enumeration = "FdType", required, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, required, tag = "2")]
    pub id: u32,
    #[prost(message, optional, tag = "3")]
    pub reg: Option<RegFileEntry>,
    #[prost(message, optional, tag = "18")]
    pub pipe: Option<PipeEntry>,
}

/// Owner of signals-on-I/O for a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FownEntry {
    #[prost(uint32, required, tag = "1")]
    pub uid: u32,
    #[prost(uint32, required, tag = "2")]
    pub euid: u32,
    #[prost(uint32, required, tag = "3")]
    pub signum: u32,
    #[prost(uint32, required, tag = "4")]
    pub pid_type: u32,
    #[prost(uint32, required, tag = "5")]
    pub pid: u32,
}

/// A file opened by path: regular files, directories, device nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegFileEntry {
    #[prost(uint32, required, tag = "1")]
    pub id: u32,
    /// `O_*` open flags.
    #[prost(uint32, required, tag = "2")]
    pub flags: u32,
    #[prost(uint64, required, tag = "3")]
    pub pos: u64,
    #[prost(message, required, tag = "5")]
    pub fown: FownEntry,
    #[prost(string, required, tag = "6")]
    pub name: String,
    #[prost(sint32, optional, tag = "7")]
    pub mnt_id: Option<i32>,
    /// Checked at restore: a file that changed size is refused.
    #[prost(uint64, optional, tag = "8")]
    pub size: Option<u64>,
    #[prost(bool, optional, tag = "9")]
    pub ext: Option<bool>,
    #[prost(uint32, optional, tag = "10")]
    pub mode: Option<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "11")]
    pub build_id: Vec<u32>,
}

/// A pipe end; both ends share `pipe_id`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PipeEntry {
    #[prost(uint32, required, tag = "1")]
    pub id: u32,
    #[prost(uint32, required, tag = "2")]
    pub pipe_id: u32,
    #[prost(uint32, required, tag = "3")]
    pub flags: u32,
    #[prost(message, required, tag = "4")]
    pub fown: FownEntry,
}

/// `fdinfo-N.img`: one entry per fd of the tasks sharing files table N.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FdinfoEntry {
    #[prost(uint32, required, tag = "1")]
    pub id: u32,
    /// `FD_CLOEXEC`.
    #[prost(uint32, required, tag = "2")]
    pub flags: u32,
    #[prost(enumeration = "FdType", required, tag = "3")]
    pub r#type: i32,
    #[prost(uint32, required, tag = "4")]
    pub fd: u32,
    #[prost(string, optional, tag = "5")]
    pub xattr_security_selinux: Option<String>,
}
