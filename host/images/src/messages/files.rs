//! `files.img`: every file object of the tree, once, by id. Descriptors
//! (`fdinfo`), mappings (`VmaEntry::shmid`), the executable and the
//! directories in `fs` point at these ids.

use crate::json::{Fmt, RFILE_FLAGS, SEALS_FLAGS};
use crate::proto::{message, proto_enum};

use super::TtyFileEntry;

proto_enum! {
    /// What kind of object a file entry describes.
    pub enum FdType {
        Und = 0 => "UND",
        Reg = 1 => "REG",
        Pipe = 2 => "PIPE",
        Fifo = 3 => "FIFO",
        Inetsk = 4 => "INETSK",
        Unixsk = 5 => "UNIXSK",
        Eventfd = 6 => "EVENTFD",
        Eventpoll = 7 => "EVENTPOLL",
        Inotify = 8 => "INOTIFY",
        Signalfd = 9 => "SIGNALFD",
        Packetsk = 10 => "PACKETSK",
        Tty = 11 => "TTY",
        Fanotify = 12 => "FANOTIFY",
        Netlinksk = 13 => "NETLINKSK",
        Ns = 14 => "NS",
        Tunf = 15 => "TUNF",
        Ext = 16 => "EXT",
        Timerfd = 17 => "TIMERFD",
        Memfd = 18 => "MEMFD",
        Bpfmap = 19 => "BPFMAP",
        Pidfd = 20 => "PIDFD",
        /// The controlling terminal (not a real descriptor).
        CtlTty = 65534 => "CTL_TTY",
        AutofsPipe = 65535 => "AUTOFS_PIPE",
    }
}

message! {
    /// Who receives SIGIO for a file (`F_SETOWN`).
    pub struct FownEntry ("fown_entry") {
        1 uid: required uint32,
        2 euid: required uint32,
        3 signum: required uint32,
        4 pid_type: required uint32,
        5 pid: required uint32,
    }
}

message! {
    /// A file opened by path: regular files, directories, device nodes.
    pub struct RegFileEntry ("reg_file_entry") {
        1 id: required uint32,
        /// `O_*` open flags.
        2 flags: required uint32 [Fmt::Flags(RFILE_FLAGS)],
        3 pos: required uint64,
        5 fown: required message<FownEntry>,
        /// Absolute path ("/" for the root).
        6 name: required string,
        /// Absent means -1 (unknown).
        7 mnt_id: optional sint32,
        /// Checked at restore: a file that changed size is refused.
        8 size: optional uint64,
        9 ext: optional bool,
        /// `st_mode`.
        10 mode: optional uint32,
        /// The ELF build ID, checked at restore when present.
        11 build_id: repeated uint32,
        12 checksum: optional uint32,
        13 checksum_config: optional uint32,
        14 checksum_parameter: optional uint32,
        /// revenant's own: the name it was opened or mapped by, in the
        /// same directory, unlinked since while `name` still links it:
        /// the restore links it there again for the time it opens it, so
        /// that /proc shows it as deleted, as it did.
        1000 unlinked_name: optional string,
    }
}

message! {
    /// A pipe end; both ends share `pipe_id`.
    pub struct PipeEntry ("pipe_entry") {
        1 id: required uint32,
        2 pipe_id: required uint32,
        /// `O_*` flags of the end.
        3 flags: required uint32 [Fmt::Hex],
        4 fown: required message<FownEntry>,
        /// revenant's own: a process outside the dumped tree held the
        /// pipe too (the other end, a shell pipeline's other command or
        /// a parent reading the output): a new pipe would be connected to
        /// nobody, which the restore says unless given one (`--inherit-fd`).
        1000 outside: optional bool,
    }
}

message! {
    /// A named pipe: the pipe plus the regular file entry of its path.
    pub struct FifoEntry ("fifo_entry") {
        1 id: required uint32,
        2 pipe_id: required uint32,
        3 regf_id: optional uint32,
    }
}

message! {
    /// An entry of `pipes-data.img` / `fifo-data.img`: the `bytes` bytes
    /// that follow it were queued in the pipe.
    pub struct PipeDataEntry ("pipe_data_entry") {
        1 pipe_id: required uint32,
        2 bytes: required uint32,
        /// The pipe's capacity (`F_GETPIPE_SZ`).
        3 size: optional uint32,
    }
}

message! {
    pub struct EventfdFileEntry ("eventfd_file_entry") {
        1 id: required uint32,
        2 flags: required uint32,
        3 fown: required message<FownEntry>,
        4 counter: required uint64,
        /// revenant's own: `EFD_SEMAPHORE` (CRIU's entry has no field for
        /// it; protobuf readers skip what they do not know).
        1000 semaphore: optional bool,
    }
}

message! {
    /// One descriptor watched by an epoll instance.
    pub struct EventpollTfdEntry ("eventpoll_tfd_entry") {
        1 id: required uint32,
        2 tfd: required uint32,
        3 events: required uint32,
        4 data: required uint64,
        5 dev: optional uint32,
        6 inode: optional uint64,
        7 pos: optional uint64,
        /// revenant's own: the fd number the target was added under, when
        /// `tfd` is another fd of the same file (the first was closed).
        1000 added_as: optional uint32,
    }
}

message! {
    pub struct EventpollFileEntry ("eventpoll_file_entry") {
        1 id: required uint32,
        2 flags: required uint32,
        3 fown: required message<FownEntry>,
        4 tfd: repeated message<EventpollTfdEntry>,
    }
}

message! {
    pub struct SignalfdEntry ("signalfd_entry") {
        1 id: required uint32,
        2 flags: required uint32 [Fmt::Hex],
        3 fown: required message<FownEntry>,
        4 sigmask: required uint64 [Fmt::Hex],
    }
}

message! {
    pub struct TimerfdEntry ("timerfd_entry") {
        1 id: required uint32,
        2 flags: required uint32 [Fmt::Hex],
        3 fown: required message<FownEntry>,
        4 clockid: required uint32,
        5 ticks: required uint64,
        6 settime_flags: required uint32 [Fmt::Hex],
        7 vsec: required uint64,
        8 vnsec: required uint64,
        9 isec: required uint64,
        10 insec: required uint64,
    }
}

message! {
    /// An open namespace file (`/proc/PID/ns/*`).
    pub struct NsFileEntry ("ns_file_entry") {
        1 id: required uint32,
        2 ns_id: required uint32,
        3 ns_cflag: required uint32,
        4 flags: required uint32,
    }
}

message! {
    /// A file a plugin dumped.
    pub struct ExtFileEntry ("ext_file_entry") {
        1 id: required uint32,
        5 fown: required message<FownEntry>,
    }
}

message! {
    /// A memfd descriptor; its contents are in the memfd inode images.
    pub struct MemfdFileEntry ("memfd_file_entry") {
        1 id: required uint32,
        2 flags: required uint32 [Fmt::Flags(RFILE_FLAGS)],
        3 pos: required uint64,
        4 fown: required message<FownEntry>,
        5 inode_id: required uint32,
    }
}

message! {
    /// A memfd's object (`memfd.img`), shared by every descriptor and
    /// mapping of it. CRIU 4.2 writes shared anonymous memory this way too,
    /// named `/dev/zero`. Its contents are in `pagemap-shmem-SHMID.img`.
    pub struct MemfdInodeEntry ("memfd_inode_entry") {
        1 name: required string,
        2 uid: required uint32,
        3 gid: required uint32,
        4 size: required uint64,
        5 shmid: required uint32,
        6 seals: required uint32 [Fmt::Flags(SEALS_FLAGS)],
        7 inode_id: required uint64,
        8 hugetlb_flag: optional uint32,
        9 mode: optional uint32,
    }
}

message! {
    /// One file lock a process of the tree holds (`filelocks.img`):
    /// `flag` is the kind (1 POSIX, 2 flock, 4 OFD, 8 lease), `type`
    /// `F_RDLCK` or `F_WRLCK`, taken by `pid` through its `fd`; `len` 0
    /// reaches to the end of the file.
    pub struct FileLockEntry ("file_lock_entry") {
        1 flag: required uint32,
        2 r#type: required uint32,
        3 pid: required int32,
        4 fd: required int32,
        5 start: required int64,
        6 len: required int64,
    }
}

message! {
    pub struct PidfdEntry ("pidfd_entry") {
        1 id: required uint32,
        2 ino: required uint32,
        3 flags: required uint32,
        4 nspid: required int32,
        5 fown: required message<FownEntry>,
    }
}

message! {
    /// Socket options CRIU keeps for every socket (the ones not named here
    /// stay as unknown fields).
    pub struct SkOptsEntry ("sk_opts_entry") {
        1 so_sndbuf: required uint32,
        2 so_rcvbuf: required uint32,
        3 so_snd_tmo_sec: required uint64,
        4 so_snd_tmo_usec: required uint64,
        5 so_rcv_tmo_sec: required uint64,
        6 so_rcv_tmo_usec: required uint64,
        7 reuseaddr: optional bool,
        8 so_priority: optional uint32,
        9 so_rcvlowat: optional uint32,
        10 so_mark: optional uint32,
        11 so_passcred: optional bool,
        12 so_passsec: optional bool,
        13 so_dontroute: optional bool,
        14 so_no_check: optional bool,
        15 so_bound_dev: optional string,
        16 so_filter: repeated fixed64,
        17 so_reuseport: optional bool,
        18 so_broadcast: optional bool,
        19 so_keepalive: optional bool,
        23 so_oobinline: optional uint32,
        24 so_linger: optional uint32,
        25 so_buf_lock: optional uint32,
    }
}

message! {
    /// revenant's own: one integer socket option a program set, which
    /// CRIU's entries have no field for (`IP_RECVTTL`, `SO_TIMESTAMP`,
    /// `TCP_DEFER_ACCEPT`, ...), at `level` (`SOL_SOCKET`, `SOL_IP`, ...).
    pub struct SockOptEntry ("revenant_sock_opt_entry") {
        1 level: required uint32,
        2 name: required uint32,
        3 value: required int32,
    }
}

message! {
    /// IP-level options only raw sockets have: `icmpv_filter` is the ICMP
    /// types an ICMP socket drops (one word for IPv4's `ICMP_FILTER`,
    /// eight for IPv6's `ICMPV6_FILTER`).
    pub struct IpOptsRawEntry ("ip_opts_raw_entry") {
        1 hdrincl: optional bool,
        2 nodefrag: optional bool,
        3 checksum: optional bool,
        4 icmpv_filter: repeated uint32,
    }
}

message! {
    /// IP-level options of an inet socket.
    pub struct IpOptsEntry ("ip_opts_entry") {
        1 freebind: optional bool,
        4 raw: optional message<IpOptsRawEntry>,
        5 pktinfo: optional bool,
        6 tos: optional uint32,
        7 ttl: optional uint32,
    }
}

message! {
    /// TCP options of a TCP socket.
    pub struct TcpOptsEntry ("tcp_opts_entry") {
        1 cork: optional bool,
        2 nodelay: optional bool,
        3 keepcnt: optional uint32,
        4 keepidle: optional uint32,
        5 keepintvl: optional uint32,
    }
}

message! {
    /// An established TCP connection (`tcp-stream-INO.img`, INO its
    /// socket's inode in hex); `inq_len` bytes received and not yet read,
    /// then `outq_len` bytes written and not yet acknowledged (the last
    /// `unsq_len` of them never sent), follow the entry. Sequence numbers
    /// are those after each queue's last byte.
    pub struct TcpStreamEntry ("tcp_stream_entry") {
        1 inq_len: required uint32,
        2 inq_seq: required uint32,
        3 outq_len: required uint32,
        4 outq_seq: required uint32,
        5 opt_mask: required uint32 [Fmt::Hex],
        6 snd_wscale: required uint32,
        7 mss_clamp: required uint32,
        8 rcv_wscale: optional uint32,
        9 timestamp: optional uint32,
        10 cork: optional bool,
        11 nodelay: optional bool,
        12 unsq_len: optional uint32,
        13 snd_wl1: optional uint32,
        14 snd_wnd: optional uint32,
        15 max_window: optional uint32,
        16 rcv_wnd: optional uint32,
        17 rcv_wup: optional uint32,
    }
}

message! {
    /// An IPv4 or IPv6 socket: addresses as 1 (IPv4) or 4 (IPv6) words in
    /// network byte order, ports in host order; `state` in TCP's numbering
    /// (7 for one not connected, 10 listening).
    pub struct InetSkEntry ("inet_sk_entry") {
        1 id: required uint32,
        2 ino: required uint32,
        3 family: required uint32,
        4 r#type: required uint32,
        5 proto: required uint32,
        6 state: required uint32,
        7 src_port: required uint32,
        8 dst_port: required uint32,
        9 flags: required uint32 [Fmt::Hex],
        10 backlog: required uint32,
        11 src_addr: repeated uint32,
        12 dst_addr: repeated uint32,
        13 fown: required message<FownEntry>,
        14 opts: required message<SkOptsEntry>,
        15 v6only: optional bool,
        16 ip_opts: optional message<IpOptsEntry>,
        17 ifname: optional string,
        18 ns_id: optional uint32,
        19 shutdown: optional uint32,
        20 tcp_opts: optional message<TcpOptsEntry>,
        /// revenant's own (protobuf readers skip what they do not know):
        /// the options set that have no field above.
        1000 extra_opts: repeated message<SockOptEntry>,
    }
}

message! {
    /// A link-layer address a packet socket joined (`PACKET_ADD_MEMBERSHIP`):
    /// `index` the interface, `type` `PACKET_MR_*`.
    pub struct PacketMclist ("packet_mclist") {
        1 index: required uint32,
        2 r#type: required uint32,
        3 addr: required bytes,
    }
}

message! {
    /// A packet socket's memory-mapped ring (`PACKET_RX_RING`,
    /// `PACKET_TX_RING`).
    pub struct PacketRing ("packet_ring") {
        1 block_size: required uint32,
        2 block_nr: required uint32,
        3 frame_size: required uint32,
        4 frame_nr: required uint32,
        5 retire_tmo: required uint32,
        6 sizeof_priv: required uint32,
        7 features: required uint32,
    }
}

message! {
    /// A packet socket (`AF_PACKET`): `protocol` the ethertype it takes
    /// (in network order, as `socket` takes it), `ifindex` the interface it is bound to (0: all),
    /// `fanout` `id | type << 16 | flags << 24` (none: all ones).
    pub struct PacketSockEntry ("packet_sock_entry") {
        1 id: required uint32,
        2 r#type: required uint32,
        3 protocol: required uint32,
        4 flags: required uint32 [Fmt::Hex],
        5 ifindex: required uint32,
        6 fown: required message<FownEntry>,
        7 opts: required message<SkOptsEntry>,
        8 version: required uint32,
        9 reserve: required uint32,
        10 aux_data: required bool,
        11 orig_dev: required bool,
        12 vnet_hdr: required bool,
        13 loss: required bool,
        14 timestamp: required uint32,
        15 copy_thresh: required uint32,
        16 mclist: repeated message<PacketMclist>,
        17 fanout: optional uint32,
        18 rx_ring: optional message<PacketRing>,
        19 tx_ring: optional message<PacketRing>,
        20 ns_id: optional uint32,
        /// revenant's own: socket options set that have no field above.
        1000 extra_opts: repeated message<SockOptEntry>,
    }
}

message! {
    /// A netlink socket: `portid` 0 for one never bound, `groups` the
    /// multicast groups it joined (bit N-1 of the bitmap for group N),
    /// `state` 1 once connected to `dst_portid` or group `dst_group`.
    pub struct NetlinkSkEntry ("netlink_sk_entry") {
        1 id: required uint32,
        2 ino: required uint32,
        3 protocol: required uint32,
        4 state: required uint32,
        6 flags: required uint32 [Fmt::Hex],
        7 portid: required uint32,
        8 groups: repeated uint32,
        9 dst_portid: required uint32,
        10 dst_group: required uint32,
        11 fown: required message<FownEntry>,
        12 opts: required message<SkOptsEntry>,
        13 ns_id: optional uint32,
        /// revenant's own (CRIU's entry has no field for them; protobuf
        /// readers skip what they do not know): the `SOL_NETLINK` options
        /// turned on, bit N for option N (`NETLINK_PKTINFO` 3 to
        /// `NETLINK_GET_STRICT_CHK` 12).
        1000 nl_opts: optional uint32 [Fmt::Hex],
        /// revenant's own: the socket's type when it is not `SOCK_RAW`
        /// (CRIU makes every one raw).
        1001 sk_type: optional uint32,
        /// revenant's own: socket options set that have no field above.
        1002 extra_opts: repeated message<SockOptEntry>,
    }
}

message! {
    /// A unix socket. `ino` is its inode, `peer` its peer's; `shutdown`:
    /// 1 read, 2 write, 3 both.
    pub struct UnixSkEntry ("unix_sk_entry") {
        1 id: required uint32,
        2 ino: required uint32,
        3 r#type: required uint32,
        4 state: required uint32,
        5 flags: required uint32 [Fmt::Hex],
        6 uflags: required uint32 [Fmt::Hex],
        7 backlog: required uint32,
        8 peer: required uint32,
        9 fown: required message<FownEntry>,
        10 opts: required message<SkOptsEntry>,
        11 name: required bytes,
        12 shutdown: optional uint32,
        13 file_perms: optional message<FilePermsEntry>,
        14 name_dir: optional string,
        15 deleted: optional bool,
        /// revenant's own: socket options set that CRIU's entries have
        /// no field for (`SO_PASSPIDFD`, `SO_TIMESTAMP`, `SO_PEEK_OFF`).
        1000 extra_opts: repeated message<SockOptEntry>,
    }
}

message! {
    /// The mode, owner and group of a bound socket's file.
    pub struct FilePermsEntry ("file_perms_entry") {
        1 mode: required uint32,
        2 uid: required uint32,
        3 gid: required uint32,
    }
}

message! {
    /// An entry of `sk-queues.img`: the `length` bytes that follow it are
    /// one message (a stream socket's whole queue) waiting in the receive
    /// queue of socket `id_for`.
    pub struct SkPacketEntry ("sk_packet_entry") {
        1 id_for: required uint32,
        2 length: required uint32,
        4 scm: repeated message<ScmEntry>,
    }
}

message! {
    /// A control message a queued message carries: for `SCM_RIGHTS` (1),
    /// the `files.img` ids of the files in flight.
    pub struct ScmEntry ("scm_entry") {
        1 r#type: required uint32,
        2 rights: repeated uint32,
    }
}

message! {
    /// A file handle (`name_to_handle_at`), the handle's bytes packed into
    /// little-endian words; `path` where the dumper knew it.
    pub struct FhEntry ("fh_entry") {
        1 bytes: required uint32,
        2 r#type: required uint32,
        3 handle: repeated uint64,
        4 path: optional string,
        5 mnt_id: optional uint32,
    }
}

message! {
    /// One inotify watch: its descriptor number, mask and the watched
    /// inode (by handle).
    pub struct InotifyWdEntry ("inotify_wd_entry") {
        1 id: required uint32,
        2 i_ino: required uint64,
        3 mask: required uint32 [Fmt::Hex],
        4 ignored_mask: required uint32 [Fmt::Hex],
        5 s_dev: required uint32 [Fmt::Dev],
        6 wd: required uint32,
        7 f_handle: required message<FhEntry>,
    }
}

message! {
    pub struct InotifyFileEntry ("inotify_file_entry") {
        1 id: required uint32,
        2 flags: required uint32 [Fmt::Hex],
        4 fown: required message<FownEntry>,
        5 wd: repeated message<InotifyWdEntry>,
    }
}

proto_enum! {
    /// What a fanotify mark is on.
    pub enum MarkType {
        Inode = 1 => "INODE",
        Mount = 2 => "MOUNT",
    }
}

message! {
    /// A fanotify mark on an inode: the file, by handle (and path).
    pub struct FanotifyInodeMarkEntry ("fanotify_inode_mark_entry") {
        1 i_ino: required uint64,
        2 f_handle: required message<FhEntry>,
    }
}

message! {
    /// A fanotify mark on a mount: its id and mount point.
    pub struct FanotifyMountMarkEntry ("fanotify_mount_mark_entry") {
        1 mnt_id: required uint32,
        2 path: optional string,
    }
}

message! {
    /// One fanotify mark: the `FAN_MARK_*` flags it was added with, its
    /// event and ignored masks, and what it is on.
    pub struct FanotifyMarkEntry ("fanotify_mark_entry") {
        1 id: required uint32,
        2 r#type: required enumeration<MarkType>,
        3 mflags: required uint32 [Fmt::Hex],
        4 mask: required uint32 [Fmt::Hex],
        5 ignored_mask: required uint32 [Fmt::Hex],
        6 s_dev: required uint32 [Fmt::Dev],
        7 ie: optional message<FanotifyInodeMarkEntry>,
        8 me: optional message<FanotifyMountMarkEntry>,
    }
}

message! {
    /// A fanotify group: `fanotify_init`'s flags and event flags, and its
    /// marks.
    pub struct FanotifyFileEntry ("fanotify_file_entry") {
        1 id: required uint32,
        2 flags: required uint32 [Fmt::Hex],
        3 fown: required message<FownEntry>,
        4 faflags: required uint32 [Fmt::Hex],
        5 evflags: required uint32 [Fmt::Hex],
        6 mark: repeated message<FanotifyMarkEntry>,
    }
}

message! {
    /// `remap-fpath.img`: file `orig_id` is restored from elsewhere;
    /// `remap_type` 1 (ghost): from `ghost-file-<remap_id in hex>.img`.
    pub struct RemapFilePathEntry ("remap_file_path_entry") {
        1 orig_id: required uint32,
        2 remap_id: required uint32,
        3 remap_type: optional uint32,
    }
}

message! {
    /// A time in seconds and microseconds.
    pub struct Timeval ("timeval") {
        1 tv_sec: required uint64,
        2 tv_usec: required uint64,
    }
}

message! {
    /// A deleted file still open, carried in the images: its owner, mode,
    /// times and size; its bytes follow the entry, whole (to the end of
    /// the image when `size` is absent) or in chunks.
    pub struct GhostFileEntry ("ghost_file_entry") {
        1 uid: required uint32,
        2 gid: required uint32,
        3 mode: required uint32,
        /// The file's device (the kernel's encoding) and inode when
        /// dumped: what an inotify watch on it is matched by.
        4 dev: optional uint32 [Fmt::Dev],
        5 ino: optional uint64,
        /// A device node's device (`st_rdev`, glibc's encoding).
        6 rdev: optional uint32 [Fmt::Odev],
        7 atim: optional message<Timeval>,
        8 mtim: optional message<Timeval>,
        9 chunks: optional bool,
        10 size: optional uint64,
        /// A symbolic link's target.
        11 symlnk_target: optional string,
    }
}

message! {
    /// One piece of a ghost file written in chunks (it has holes): `len`
    /// bytes at `off`, which follow the entry.
    pub struct GhostChunkEntry ("ghost_chunk_entry") {
        1 len: required uint64,
        2 off: required uint64,
    }
}

message! {
    /// One file object; `type` says which of the optional payloads is set.
    /// Payloads of kinds not modelled here stay in `unknown`.
    pub struct FileEntry ("file_entry") {
        1 r#type: required enumeration<FdType>,
        2 id: required uint32,
        3 reg: optional message<RegFileEntry>,
        4 isk: optional message<InetSkEntry>,
        5 nsf: optional message<NsFileEntry>,
        6 psk: optional message<PacketSockEntry>,
        7 nlsk: optional message<NetlinkSkEntry>,
        8 efd: optional message<EventfdFileEntry>,
        9 epfd: optional message<EventpollFileEntry>,
        10 sgfd: optional message<SignalfdEntry>,
        12 tfd: optional message<TimerfdEntry>,
        13 ify: optional message<InotifyFileEntry>,
        14 ffy: optional message<FanotifyFileEntry>,
        15 ext: optional message<ExtFileEntry>,
        16 usk: optional message<UnixSkEntry>,
        17 fifo: optional message<FifoEntry>,
        18 pipe: optional message<PipeEntry>,
        19 tty: optional message<TtyFileEntry>,
        20 memfd: optional message<MemfdFileEntry>,
        22 pidfd: optional message<PidfdEntry>,
    }
}
