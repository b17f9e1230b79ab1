//! Terminals: `files.img` TTY entries (one per open description), and
//! `tty-info.img`, one entry per terminal with its settings, session and
//! foreground group; `tty-data.img` holds bytes queued in a pseudoterminal
//! pair whose two ends are both in the tree.

use crate::json::Fmt;
use crate::proto::{message, proto_enum};

use super::FownEntry;

proto_enum! {
    /// The terminal's driver, as CRIU tells them apart.
    pub enum TtyType {
        Unknown = 0 => "UNKNOWN",
        /// A pseudoterminal end: `/dev/ptmx` (master) or `/dev/pts/N`.
        Pty = 1 => "PTY",
        /// `/dev/console`.
        Console = 2 => "CONSOLE",
        /// A virtual console, `/dev/ttyN`.
        Vt = 3 => "VT",
        /// `/dev/tty`: whatever the opener's controlling terminal is.
        Ctty = 4 => "CTTY",
        ExtTty = 5 => "EXT_TTY",
        Serial = 6 => "SERIAL",
    }
}

message! {
    pub struct WinsizeEntry ("winsize_entry") {
        1 ws_row: required uint32,
        2 ws_col: required uint32,
        3 ws_xpixel: required uint32,
        4 ws_ypixel: required uint32,
    }
}

message! {
    /// `struct termios` field by field (`c_cc` one element per control
    /// character).
    pub struct TermiosEntry ("termios_entry") {
        1 c_iflag: required uint32,
        2 c_oflag: required uint32,
        3 c_cflag: required uint32,
        4 c_lflag: required uint32,
        5 c_line: required uint32,
        6 c_ispeed: required uint32,
        7 c_ospeed: required uint32,
        8 c_cc: repeated uint32,
    }
}

message! {
    pub struct TtyPtyEntry ("tty_pty_entry") {
        1 index: required uint32,
    }
}

message! {
    /// Bytes waiting to be read at the other end of terminal `tty_id`.
    pub struct TtyDataEntry ("tty_data_entry") {
        1 tty_id: required uint32,
        2 data: required bytes,
    }
}

message! {
    /// One terminal. Both ends of a pseudoterminal have an entry of their
    /// own (an id, even for the slave and odd for the master, twice the
    /// index plus one); `sid` and `pgrp` are the session it controls and
    /// its foreground group, 0 when it controls none.
    pub struct TtyInfoEntry ("tty_info_entry") {
        1 id: required uint32,
        2 r#type: required enumeration<TtyType>,
        3 locked: required bool,
        4 exclusive: required bool,
        5 packet_mode: required bool,
        6 sid: required uint32,
        7 pgrp: required uint32,
        8 rdev: required uint32,
        9 termios: optional message<TermiosEntry>,
        10 termios_locked: optional message<TermiosEntry>,
        11 winsize: optional message<WinsizeEntry>,
        12 pty: optional message<TtyPtyEntry>,
        13 dev: optional uint32,
        14 uid: optional uint32,
        15 gid: optional uint32,
    }
}

message! {
    /// An open description of terminal `tty_info_id`; `regf_id` names the
    /// `files.img` entry holding its path.
    pub struct TtyFileEntry ("tty_file_entry") {
        1 id: required uint32,
        2 tty_info_id: required uint32,
        3 flags: required uint32 [Fmt::Hex],
        4 fown: required message<FownEntry>,
        6 regf_id: optional uint32,
    }
}
