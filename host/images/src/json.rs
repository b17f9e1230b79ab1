//! crit's JSON: the value tree, the number conventions (hex strings, flag
//! names joined with ` | `, dictionary names), base64 for bytes, and a
//! printer that writes what Python's `json.dump(indent=4)` writes, so
//! `revenant show --json` can be diffed against `crit show` as text.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A JSON value whose objects keep their keys in insertion order (crit
/// lists fields in tag order).
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Obj(Vec<(Cow<'static, str>, Json)>),
    Arr(Vec<Json>),
    Str(String),
    Uint(u64),
    Int(i64),
    Bool(bool),
}

/// How crit prints an integer field, from CRIU's field options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fmt {
    Plain,
    /// `0x…`; inherited by every integer inside a message field so marked.
    Hex,
    /// Names of the set bits joined with ` | `, leftover bits as hex.
    Flags(&'static [(&'static str, u64)]),
    /// A name for known values, the number otherwise.
    Dict(&'static [(u64, &'static str)]),
    /// A device number in the kernel's own encoding (major << 20 |
    /// minor), as crit prints it: `MAJOR:MINOR`.
    Dev,
    /// A device number as `stat` gives it (glibc's encoding): `MAJOR:MINOR`.
    Odev,
}

impl Fmt {
    pub fn is_hex(self) -> bool {
        self == Fmt::Hex
    }
}

/// `PROT_*`.
pub const MMAP_PROT: &[(&str, u64)] = &[("PROT_READ", 0x1), ("PROT_WRITE", 0x2), ("PROT_EXEC", 0x4)];

/// The `MAP_*` bits crit names.
pub const MMAP_FLAGS: &[(&str, u64)] =
    &[("MAP_SHARED", 0x1), ("MAP_PRIVATE", 0x2), ("MAP_DROPPABLE", 0x8), ("MAP_ANON", 0x20), ("MAP_GROWSDOWN", 0x100)];

/// VMA status bits (`VMA_AREA_*`, `VMA_FILE_*`, `VMA_ANON_*`).
pub const MMAP_STATUS: &[(&str, u64)] = &[
    ("VMA_AREA_NONE", 0),
    ("VMA_AREA_REGULAR", 1 << 0),
    ("VMA_AREA_STACK", 1 << 1),
    ("VMA_AREA_VSYSCALL", 1 << 2),
    ("VMA_AREA_VDSO", 1 << 3),
    ("VMA_AREA_HEAP", 1 << 5),
    ("VMA_FILE_PRIVATE", 1 << 6),
    ("VMA_FILE_SHARED", 1 << 7),
    ("VMA_ANON_SHARED", 1 << 8),
    ("VMA_ANON_PRIVATE", 1 << 9),
    ("VMA_AREA_SYSVIPC", 1 << 10),
    ("VMA_AREA_SOCKET", 1 << 11),
    ("VMA_AREA_VVAR", 1 << 12),
    ("VMA_AREA_AIORING", 1 << 13),
    ("VMA_AREA_MEMFD", 1 << 14),
    ("VMA_AREA_SHSTK", 1 << 15),
    ("VMA_AREA_UPROBES", 1 << 17),
    ("VMA_UNSUPP", 1 << 31),
];

/// Open flags of regular files (octal, as in `<asm-generic/fcntl.h>`).
pub const RFILE_FLAGS: &[(&str, u64)] = &[
    ("O_WRONLY", 0o1),
    ("O_RDWR", 0o2),
    ("O_CREAT", 0o100),
    ("O_EXCL", 0o200),
    ("O_NOCTTY", 0o400),
    ("O_TRUNC", 0o1000),
    ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000),
    ("O_DSYNC", 0o10000),
    ("FASYNC", 0o20000),
    ("O_DIRECT", 0o40000),
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_NOFOLLOW", 0o400000),
    ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000),
];

/// memfd seals.
pub const SEALS_FLAGS: &[(&str, u64)] = &[
    ("F_SEAL_SEAL", 0x1),
    ("F_SEAL_SHRINK", 0x2),
    ("F_SEAL_GROW", 0x4),
    ("F_SEAL_WRITE", 0x8),
    ("F_SEAL_FUTURE_WRITE", 0x10),
];

/// Pagemap entry flags.
pub const PMAP_FLAGS: &[(&str, u64)] = &[("PE_PARENT", 1), ("PE_LAZY", 2), ("PE_PRESENT", 4)];

/// crit's names for a task's state.
pub const TASK_STATE: &[(u64, &str)] = &[(1, "Alive"), (2, "Dead"), (3, "Stopped"), (6, "Zombie")];

/// An unsigned field's JSON.
pub fn unsigned(v: u64, fmt: Fmt, hex: bool) -> Json {
    if hex || fmt == Fmt::Hex {
        return Json::Str(format!("{v:#x}"));
    }
    match fmt {
        Fmt::Flags(map) => Json::Str(flags(v, map)),
        Fmt::Dev => Json::Str(format!("{}:{}", v >> 20, v & 0xfffff)),
        Fmt::Odev => {
            let major = ((v >> 8) & 0xfff) | ((v >> 32) & !0xfff);
            let minor = (v & 0xff) | ((v >> 12) & !0xff);
            Json::Str(format!("{major}:{minor}"))
        }
        Fmt::Dict(map) => match map.iter().find(|(k, _)| *k == v) {
            Some((_, name)) => Json::Str(name.to_string()),
            None => Json::Uint(v),
        },
        _ => Json::Uint(v),
    }
}

/// A signed field's JSON (Python prints negative hex as `-0x…`).
pub fn signed(v: i64, fmt: Fmt, hex: bool) -> Json {
    if v >= 0 {
        return match unsigned(v as u64, fmt, hex) {
            Json::Uint(u) => Json::Int(u as i64),
            j => j,
        };
    }
    if hex || fmt == Fmt::Hex {
        return Json::Str(format!("-{:#x}", v.unsigned_abs()));
    }
    Json::Int(v)
}

/// Set bits by name, in the map's order, then what no name covers.
pub fn flags(v: u64, map: &[(&str, u64)]) -> String {
    let mut names: Vec<String> = map.iter().filter(|(_, bit)| v & bit != 0).map(|(n, _)| n.to_string()).collect();
    let rest = v & !map.iter().fold(0, |acc, (_, bit)| acc | bit);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join(" | ")
}

/// Python's `base64.encodebytes`: lines of 76 characters, each ending in a
/// newline; nothing at all for no bytes.
pub fn base64_mime(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() / 3 * 4 + data.len() / 57 + 4);
    // 57 input bytes make one 76-character line.
    for line in data.chunks(57) {
        for c in line.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= c.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.push('\n');
    }
    out
}

impl Json {
    /// The same value as a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Json::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()),
            Json::Arr(a) => Value::Array(a.iter().map(Json::to_value).collect()),
            Json::Str(s) => Value::String(s.clone()),
            Json::Uint(u) => Value::from(*u),
            Json::Int(i) => Value::from(*i),
            Json::Bool(b) => Value::Bool(*b),
        }
    }

    /// The text `json.dump(value, indent=4)` writes.
    pub fn pretty(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, 0);
        s
    }

    fn write(&self, s: &mut String, depth: usize) {
        let pad = |s: &mut String, d: usize| {
            s.push('\n');
            for _ in 0..d * 4 {
                s.push(' ');
            }
        };
        match self {
            Json::Obj(o) if o.is_empty() => s.push_str("{}"),
            Json::Arr(a) if a.is_empty() => s.push_str("[]"),
            Json::Obj(o) => {
                s.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    pad(s, depth + 1);
                    write_str(s, k);
                    s.push_str(": ");
                    v.write(s, depth + 1);
                }
                pad(s, depth);
                s.push('}');
            }
            Json::Arr(a) => {
                s.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    pad(s, depth + 1);
                    v.write(s, depth + 1);
                }
                pad(s, depth);
                s.push(']');
            }
            Json::Str(v) => write_str(s, v),
            Json::Uint(u) => {
                let _ = write!(s, "{u}");
            }
            Json::Int(i) => {
                let _ = write!(s, "{i}");
            }
            Json::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        }
    }
}

/// A string as Python's json module writes it with `ensure_ascii`.
fn write_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            ' '..='~' => s.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(s, "\\u{u:04x}");
                }
            }
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_python() {
        assert_eq!(base64_mime(b""), "");
        assert_eq!(base64_mime(b"f"), "Zg==\n");
        assert_eq!(base64_mime(b"fo"), "Zm8=\n");
        assert_eq!(base64_mime(b"foo"), "Zm9v\n");
        let long = vec![0u8; 58];
        let enc = base64_mime(&long);
        assert_eq!(enc, format!("{}\nAA==\n", "A".repeat(76)));
    }

    #[test]
    fn flags_name_bits_and_leftovers() {
        assert_eq!(flags(0, PMAP_FLAGS), "");
        assert_eq!(flags(6, PMAP_FLAGS), "PE_LAZY | PE_PRESENT");
        assert_eq!(flags(0x18, PMAP_FLAGS), "0x18");
        assert_eq!(flags(0x1 | 0x40, MMAP_STATUS), "VMA_AREA_REGULAR | VMA_FILE_PRIVATE");
    }

    #[test]
    fn pretty_is_pythons_layout() {
        let j = Json::Obj(vec![
            ("a".into(), Json::Arr(vec![Json::Uint(1), Json::Int(-2)])),
            ("b".into(), Json::Obj(vec![])),
            ("c".into(), Json::Str("é\n\"".into())),
        ]);
        assert_eq!(
            j.pretty(),
            "{\n    \"a\": [\n        1,\n        -2\n    ],\n    \"b\": {},\n    \"c\": \"\\u00e9\\n\\\"\"\n}"
        );
        assert_eq!(signed(-5, Fmt::Hex, false), Json::Str("-0x5".into()));
        // crit's device numbers: the kernel's encoding and glibc's.
        assert_eq!(unsigned(254 << 20 | 3, Fmt::Dev, false), Json::Str("254:3".into()));
        assert_eq!(unsigned(0x103, Fmt::Odev, false), Json::Str("1:3".into()));
        assert_eq!(unsigned(0x10_032c, Fmt::Odev, false), Json::Str("3:300".into()));
    }
}
