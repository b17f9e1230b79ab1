//! The machinery behind the message definitions.
//!
//! `prost`'s derive drops fields it does not know, so an image written by a
//! newer CRIU would lose them on a read/write round trip. The [`message!`]
//! macro instead writes the `prost::Message` impl itself: known fields go
//! through `prost::encoding`, unknown ones are kept as their wire bytes in
//! [`Unknown`] and written back after the known ones. The same field list
//! also drives the required-field and enum check ([`Proto::check`]) and
//! crit's JSON ([`Proto::to_json`]), so the three can never disagree about
//! a field's number, type or name.

use std::fmt;

use prost::DecodeError;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

use crate::json::{Fmt, Json};

/// What every message type of this crate can do beyond `prost::Message`.
pub trait Proto: prost::Message + Default + Clone + PartialEq + fmt::Debug {
    /// The message's name in CRIU's definitions, for error messages.
    const NAME: &'static str;

    /// Every required field was present and every enum value is known.
    /// Only meaningful on a decoded message: presence is recorded while
    /// decoding. The error is the field's path, e.g. `vmas[3].status: ...`.
    fn check(&self) -> Result<(), String>;

    /// The message as crit prints it; `hex` is inherited from a parent
    /// field marked as hex (crit prints every integer below it in hex).
    fn to_json(&self, hex: bool) -> Json;
}

/// An enum of CRIU's definitions: stored as `i32` in messages, printed by
/// name.
pub trait ProtoEnum {
    /// The name crit prints for `value`, if it is one of ours.
    fn name_of(value: i32) -> Option<&'static str>;
}

/// Fields of a message that this crate does not define, as wire bytes (key
/// and value) in the order they arrived.
#[derive(Clone, Default)]
pub struct Unknown {
    bytes: Vec<u8>,
    /// Tags below 64 seen while decoding, for the required-field check.
    /// Not part of equality: two messages with the same fields are equal
    /// however they were made.
    seen: u64,
}

impl PartialEq for Unknown {
    fn eq(&self, other: &Unknown) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Debug for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unknown({} bytes)", self.bytes.len())
    }
}

impl Unknown {
    /// The kept wire bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    #[doc(hidden)]
    pub fn mark(&mut self, tag: u32) {
        if tag < 64 {
            self.seen |= 1 << tag;
        }
    }

    #[doc(hidden)]
    pub fn has(&self, tag: u32) -> bool {
        tag < 64 && self.seen & (1 << tag) != 0
    }

    /// Copies the field at the front of `buf` into the kept bytes.
    #[doc(hidden)]
    pub fn keep(&mut self, tag: u32, wire_type: WireType, buf: &mut impl Buf) -> Result<(), DecodeError> {
        copy_field(tag, wire_type, buf, &mut self.bytes, 0)
    }
}

// prost offers no public constructor for a decode error other than this
// deprecated one; the alternative would be to lose the error's text.
#[allow(deprecated)]
fn decode_error(what: &'static str) -> DecodeError {
    DecodeError::new(what)
}

/// Groups nest; bound the nesting so hostile input cannot exhaust the stack.
const GROUP_DEPTH: u32 = 32;

fn copy_field(
    tag: u32,
    wire_type: WireType,
    buf: &mut impl Buf,
    out: &mut Vec<u8>,
    depth: u32,
) -> Result<(), DecodeError> {
    encode_key(tag, wire_type, out);
    match wire_type {
        WireType::Varint => {
            let v = decode_varint(buf)?;
            encode_varint(v, out);
        }
        WireType::ThirtyTwoBit => take(buf, 4, out)?,
        WireType::SixtyFourBit => take(buf, 8, out)?,
        WireType::LengthDelimited => {
            let len = decode_varint(buf)?;
            if len > buf.remaining() as u64 {
                return Err(decode_error("length of an unknown field runs past the end of its message"));
            }
            encode_varint(len, out);
            take(buf, len as usize, out)?;
        }
        WireType::StartGroup => {
            if depth >= GROUP_DEPTH {
                return Err(decode_error("unknown groups nested too deeply"));
            }
            loop {
                let (inner, inner_type) = decode_key(buf)?;
                if inner_type == WireType::EndGroup {
                    if inner != tag {
                        return Err(decode_error("group ends with the wrong tag"));
                    }
                    encode_key(inner, inner_type, out);
                    break;
                }
                copy_field(inner, inner_type, buf, out, depth + 1)?;
            }
        }
        WireType::EndGroup => return Err(decode_error("group end without a start")),
    }
    Ok(())
}

fn take(buf: &mut impl Buf, n: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        return Err(decode_error("unknown field runs past the end of its message"));
    }
    out.reserve(n);
    let mut left = n;
    while left > 0 {
        let chunk = buf.chunk();
        let k = chunk.len().min(left);
        out.extend_from_slice(&chunk[..k]);
        buf.advance(k);
        left -= k;
    }
    Ok(())
}

/// crit's key for a field: raw identifiers lose their `r#`.
pub fn key(name: &'static str) -> &'static str {
    name.strip_prefix("r#").unwrap_or(name)
}

/// A scalar's JSON as crit prints it.
pub trait Scalar {
    fn json(&self, fmt: Fmt, hex: bool) -> Json;
}

impl Scalar for u64 {
    fn json(&self, fmt: Fmt, hex: bool) -> Json {
        crate::json::unsigned(*self, fmt, hex)
    }
}

impl Scalar for u32 {
    fn json(&self, fmt: Fmt, hex: bool) -> Json {
        crate::json::unsigned(u64::from(*self), fmt, hex)
    }
}

impl Scalar for i64 {
    fn json(&self, fmt: Fmt, hex: bool) -> Json {
        crate::json::signed(*self, fmt, hex)
    }
}

impl Scalar for i32 {
    fn json(&self, fmt: Fmt, hex: bool) -> Json {
        crate::json::signed(i64::from(*self), fmt, hex)
    }
}

impl Scalar for bool {
    fn json(&self, _: Fmt, _: bool) -> Json {
        Json::Bool(*self)
    }
}

impl Scalar for String {
    fn json(&self, _: Fmt, _: bool) -> Json {
        Json::Str(self.clone())
    }
}

impl Scalar for Vec<u8> {
    fn json(&self, _: Fmt, _: bool) -> Json {
        Json::Str(crate::json::base64_mime(self))
    }
}

/// An enum field's JSON: its name, or the number if it has none.
pub fn enum_json<E: ProtoEnum>(value: i32) -> Json {
    match E::name_of(value) {
        Some(n) => Json::Str(n.to_string()),
        None => Json::Int(i64::from(value)),
    }
}

/// Checks an enum field's value.
pub fn enum_check<E: ProtoEnum>(name: &str, value: i32) -> Result<(), String> {
    match E::name_of(value) {
        Some(_) => Ok(()),
        None => Err(format!("{name}: unknown enum value {value}")),
    }
}

/// Prefixes a nested message's error path with the field holding it.
pub fn nest(name: &str, index: Option<usize>, err: String) -> String {
    match index {
        Some(i) => format!("{name}[{i}].{err}"),
        None => format!("{name}.{err}"),
    }
}

macro_rules! scalar_ty {
    (uint32) => { u32 };
    (uint64) => { u64 };
    (fixed64) => { u64 };
    (int32) => { i32 };
    (int64) => { i64 };
    (sint32) => { i32 };
    (sint64) => { i64 };
    (bool) => { bool };
    (string) => { String };
    (bytes) => { Vec<u8> };
}

macro_rules! field_ty {
    (required message<$t:ty>) => { $t };
    (optional message<$t:ty>) => { Option<$t> };
    (repeated message<$t:ty>) => { Vec<$t> };
    (required enumeration<$t:ty>) => { i32 };
    (optional enumeration<$t:ty>) => { Option<i32> };
    (repeated enumeration<$t:ty>) => { Vec<i32> };
    (required $k:ident) => { $crate::proto::scalar_ty!($k) };
    (optional $k:ident) => { Option<$crate::proto::scalar_ty!($k)> };
    (repeated $k:ident) => { Vec<$crate::proto::scalar_ty!($k)> };
}

macro_rules! field_default {
    (required $k:ident {$def:expr}) => {
        $def
    };
    ($label:ident $k:ident) => {
        Default::default()
    };
}

macro_rules! field_merge {
    (required enumeration, $wt:expr, $f:expr, $buf:expr, $ctx:expr) => {
        prost::encoding::int32::merge($wt, $f, $buf, $ctx)
    };
    (optional enumeration, $wt:expr, $f:expr, $buf:expr, $ctx:expr) => {
        prost::encoding::int32::merge($wt, $f.get_or_insert_with(Default::default), $buf, $ctx)
    };
    (repeated enumeration, $wt:expr, $f:expr, $buf:expr, $ctx:expr) => {
        prost::encoding::int32::merge_repeated($wt, $f, $buf, $ctx)
    };
    (required $k:ident, $wt:expr, $f:expr, $buf:expr, $ctx:expr) => {
        prost::encoding::$k::merge($wt, $f, $buf, $ctx)
    };
    (optional $k:ident, $wt:expr, $f:expr, $buf:expr, $ctx:expr) => {
        prost::encoding::$k::merge($wt, $f.get_or_insert_with(Default::default), $buf, $ctx)
    };
    (repeated $k:ident, $wt:expr, $f:expr, $buf:expr, $ctx:expr) => {
        prost::encoding::$k::merge_repeated($wt, $f, $buf, $ctx)
    };
}

// Required fields are always written, as protobuf-c does; repeated scalars
// unpacked, as proto2 does without `packed`.
macro_rules! field_encode {
    (required enumeration, $tag:expr, $f:expr, $buf:expr) => {
        prost::encoding::int32::encode($tag, $f, $buf)
    };
    (optional enumeration, $tag:expr, $f:expr, $buf:expr) => {
        if let Some(v) = $f {
            prost::encoding::int32::encode($tag, v, $buf)
        }
    };
    (repeated enumeration, $tag:expr, $f:expr, $buf:expr) => {
        prost::encoding::int32::encode_repeated($tag, $f, $buf)
    };
    (required $k:ident, $tag:expr, $f:expr, $buf:expr) => {
        prost::encoding::$k::encode($tag, $f, $buf)
    };
    (optional $k:ident, $tag:expr, $f:expr, $buf:expr) => {
        if let Some(v) = $f {
            prost::encoding::$k::encode($tag, v, $buf)
        }
    };
    (repeated $k:ident, $tag:expr, $f:expr, $buf:expr) => {
        prost::encoding::$k::encode_repeated($tag, $f, $buf)
    };
}

macro_rules! field_len {
    (required enumeration, $tag:expr, $f:expr) => {
        prost::encoding::int32::encoded_len($tag, $f)
    };
    (optional enumeration, $tag:expr, $f:expr) => {
        $f.as_ref().map_or(0, |v| prost::encoding::int32::encoded_len($tag, v))
    };
    (repeated enumeration, $tag:expr, $f:expr) => {
        prost::encoding::int32::encoded_len_repeated($tag, $f)
    };
    (required $k:ident, $tag:expr, $f:expr) => {
        prost::encoding::$k::encoded_len($tag, $f)
    };
    (optional $k:ident, $tag:expr, $f:expr) => {
        $f.as_ref().map_or(0, |v| prost::encoding::$k::encoded_len($tag, v))
    };
    (repeated $k:ident, $tag:expr, $f:expr) => {
        prost::encoding::$k::encoded_len_repeated($tag, $f)
    };
}

macro_rules! field_check {
    (required message<$t:ty>, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        if !$unk.has($tag) {
            return Err(format!("{}: required field missing", $crate::proto::key($n)));
        }
        $crate::proto::Proto::check($f).map_err(|e| $crate::proto::nest($crate::proto::key($n), None, e))?;
    }};
    (optional message<$t:ty>, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        if let Some(v) = $f {
            $crate::proto::Proto::check(v).map_err(|e| $crate::proto::nest($crate::proto::key($n), None, e))?;
        }
    }};
    (repeated message<$t:ty>, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        for (i, v) in $f.iter().enumerate() {
            $crate::proto::Proto::check(v).map_err(|e| $crate::proto::nest($crate::proto::key($n), Some(i), e))?;
        }
    }};
    (required enumeration<$t:ty>, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        if !$unk.has($tag) {
            return Err(format!("{}: required field missing", $crate::proto::key($n)));
        }
        $crate::proto::enum_check::<$t>($crate::proto::key($n), *$f)?;
    }};
    (optional enumeration<$t:ty>, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        if let Some(v) = $f {
            $crate::proto::enum_check::<$t>($crate::proto::key($n), *v)?;
        }
    }};
    (repeated enumeration<$t:ty>, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        for v in $f.iter() {
            $crate::proto::enum_check::<$t>($crate::proto::key($n), *v)?;
        }
    }};
    (required $k:ident, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{
        if !$unk.has($tag) {
            return Err(format!("{}: required field missing", $crate::proto::key($n)));
        }
    }};
    ($label:ident $k:ident, $tag:expr, $n:expr, $f:expr, $unk:expr) => {{}};
}

// crit lists the fields that are set: required ones always, optional ones
// when present, repeated ones when not empty.
macro_rules! field_json {
    (required message<$t:ty>, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        $o.push(($crate::proto::key($n).into(), $crate::proto::Proto::to_json($f, $hex || $fmt.is_hex())))
    };
    (optional message<$t:ty>, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        if let Some(v) = $f {
            $o.push(($crate::proto::key($n).into(), $crate::proto::Proto::to_json(v, $hex || $fmt.is_hex())))
        }
    };
    (repeated message<$t:ty>, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        if !$f.is_empty() {
            let h = $hex || $fmt.is_hex();
            $o.push((
                $crate::proto::key($n).into(),
                $crate::json::Json::Arr($f.iter().map(|v| $crate::proto::Proto::to_json(v, h)).collect()),
            ))
        }
    };
    (required enumeration<$t:ty>, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        $o.push(($crate::proto::key($n).into(), $crate::proto::enum_json::<$t>(*$f)))
    };
    (optional enumeration<$t:ty>, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        if let Some(v) = $f {
            $o.push(($crate::proto::key($n).into(), $crate::proto::enum_json::<$t>(*v)))
        }
    };
    (repeated enumeration<$t:ty>, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        if !$f.is_empty() {
            $o.push((
                $crate::proto::key($n).into(),
                $crate::json::Json::Arr($f.iter().map(|v| $crate::proto::enum_json::<$t>(*v)).collect()),
            ))
        }
    };
    (required $k:ident, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        $o.push(($crate::proto::key($n).into(), $crate::proto::Scalar::json($f, $fmt, $hex)))
    };
    (optional $k:ident, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        if let Some(v) = $f {
            $o.push(($crate::proto::key($n).into(), $crate::proto::Scalar::json(v, $fmt, $hex)))
        }
    };
    (repeated $k:ident, $o:expr, $n:expr, $f:expr, $hex:expr, $fmt:expr) => {
        if !$f.is_empty() {
            $o.push((
                $crate::proto::key($n).into(),
                $crate::json::Json::Arr($f.iter().map(|v| $crate::proto::Scalar::json(v, $fmt, $hex)).collect()),
            ))
        }
    };
}

macro_rules! fmt_or_plain {
    () => {
        $crate::json::Fmt::Plain
    };
    ($fmt:expr) => {
        $fmt
    };
}

/// Defines a message: a struct with one public field per message field
/// plus `unknown`, and its `prost::Message` and [`Proto`] impls.
///
/// Each field is `TAG name: LABEL KIND`, where LABEL is `required`,
/// `optional` or `repeated` and KIND a protobuf scalar type, `message<T>`
/// or `enumeration<E>`; then optionally `[FMT]`, how crit prints it (a
/// [`Fmt`]), and `{DEFAULT}`, a required field's default. Fields are listed
/// in tag order, the order protobuf-c writes them in.
macro_rules! message {
    (
        $(#[$m:meta])*
        pub struct $name:ident ($proto:literal) {
            $(
                $(#[$fm:meta])*
                $tag:literal $field:ident : $label:ident $kind:ident $(<$arg:ty>)? $([$fmt:expr])? $({$def:expr})?
            ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Debug)]
        pub struct $name {
            $(
                $(#[$fm])*
                pub $field: $crate::proto::field_ty!($label $kind $(<$arg>)?),
            )*
            /// Fields not defined here, written back as they were read.
            pub unknown: $crate::proto::Unknown,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: $crate::proto::field_default!($label $kind $({$def})?), )*
                    unknown: Default::default(),
                }
            }
        }

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
                $( $crate::proto::field_encode!($label $kind, $tag, &self.$field, buf); )*
                buf.put_slice(self.unknown.bytes());
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: prost::encoding::WireType,
                buf: &mut impl prost::bytes::Buf,
                ctx: prost::encoding::DecodeContext,
            ) -> Result<(), prost::DecodeError> {
                let _ = &ctx;
                match tag {
                    $(
                        $tag => {
                            self.unknown.mark(tag);
                            $crate::proto::field_merge!($label $kind, wire_type, &mut self.$field, buf, ctx).map_err(
                                |mut e| {
                                    e.push($proto, $crate::proto::key(stringify!($field)));
                                    e
                                },
                            )
                        }
                    )*
                    _ => self.unknown.keep(tag, wire_type, buf),
                }
            }

            fn encoded_len(&self) -> usize {
                0 $( + $crate::proto::field_len!($label $kind, $tag, &self.$field) )* + self.unknown.bytes().len()
            }

            fn clear(&mut self) {
                *self = Self::default();
            }
        }

        impl $crate::proto::Proto for $name {
            const NAME: &'static str = $proto;

            fn check(&self) -> Result<(), String> {
                $( $crate::proto::field_check!($label $kind $(<$arg>)?, $tag, stringify!($field), &self.$field, &self.unknown); )*
                Ok(())
            }

            // One push per field, each behind its own presence test.
            #[allow(clippy::vec_init_then_push)]
            fn to_json(&self, hex: bool) -> $crate::json::Json {
                let _ = hex;
                let mut o: Vec<(std::borrow::Cow<'static, str>, $crate::json::Json)> = Vec::new();
                $(
                    $crate::proto::field_json!(
                        $label $kind $(<$arg>)?, o, stringify!($field), &self.$field, hex,
                        $crate::proto::fmt_or_plain!($($fmt)?)
                    );
                )*
                $crate::json::Json::Obj(o)
            }
        }
    };
}

/// Defines an enum of CRIU's definitions with the names crit prints.
macro_rules! proto_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident {
            $( $(#[$vm:meta])* $var:ident = $val:literal => $crit:literal ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum $name {
            $( $(#[$vm])* $var = $val, )*
        }

        impl $name {
            /// The name crit prints.
            pub fn crit_name(self) -> &'static str {
                match self {
                    $( $name::$var => $crit, )*
                }
            }
        }

        impl TryFrom<i32> for $name {
            type Error = i32;
            fn try_from(v: i32) -> Result<$name, i32> {
                match v {
                    $( $val => Ok($name::$var), )*
                    _ => Err(v),
                }
            }
        }

        impl $crate::proto::ProtoEnum for $name {
            fn name_of(value: i32) -> Option<&'static str> {
                $name::try_from(value).ok().map($name::crit_name)
            }
        }
    };
}

pub(crate) use {
    field_check, field_default, field_encode, field_json, field_len, field_merge, field_ty, fmt_or_plain, message,
    proto_enum, scalar_ty,
};
