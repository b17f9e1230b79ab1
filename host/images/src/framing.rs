//! The container every image shares: magic words, then entries, each a
//! little-endian u32 length and that many bytes of protobuf, until the end
//! of the file. Some kinds put raw payload after an entry, of a size the
//! entry gives; callers that know such a kind read it with [`Reader::raw`].

use anyhow::{Context, Result, anyhow, bail};

use crate::magic::Kind;
use crate::proto::Proto;

/// Reads entries from an image held in memory. Never allocates more than
/// the input holds: every length is checked against what is left first,
/// and entries are borrowed from the input.
#[derive(Debug)]
pub struct Reader<'a> {
    pub kind: Kind,
    data: &'a [u8],
    at: usize,
    /// Index of the next entry, for error messages.
    pub index: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Result<Reader<'a>> {
        let kind =
            Kind::from_header(data).ok_or_else(|| anyhow!("not a CRIU image: {}", Kind::describe_header(data)))?;
        Ok(Reader { kind, data, at: kind.header_len(), index: 0 })
    }

    /// Whether every byte has been read.
    pub fn at_end(&self) -> bool {
        self.at >= self.data.len()
    }

    /// The next entry's bytes, or `None` at the end of the file.
    pub fn next_raw(&mut self) -> Result<Option<&'a [u8]>> {
        let rest = self.data.get(self.at..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < 4 {
            bail!("entry {}: {} stray bytes where a length prefix should be", self.index, rest.len());
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let left = rest.len() - 4;
        // Compared as u64: on 32-bit hosts a u32 length may not fit usize.
        if u64::from(len) > left as u64 {
            bail!("entry {}: length {len} runs past the end of the file ({left} bytes left)", self.index);
        }
        let len = len as usize;
        self.at += 4 + len;
        self.index += 1;
        Ok(Some(&rest[4..4 + len]))
    }

    /// The next entry, decoded and checked (required fields present, enum
    /// values known).
    pub fn decode_next<M: Proto>(&mut self) -> Result<Option<M>> {
        let index = self.index;
        match self.next_raw()? {
            None => Ok(None),
            Some(bytes) => decode::<M>(bytes).map(Some).with_context(|| format!("entry {index}")),
        }
    }

    /// All remaining entries, decoded and checked.
    pub fn all<M: Proto>(&mut self) -> Result<Vec<M>> {
        let mut v = Vec::new();
        while let Some(m) = self.decode_next()? {
            v.push(m);
        }
        Ok(v)
    }

    /// `len` bytes of raw payload following the last entry.
    pub fn raw(&mut self, len: u64) -> Result<&'a [u8]> {
        let rest = self.data.get(self.at..).unwrap_or_default();
        if len > rest.len() as u64 {
            bail!(
                "entry {}: payload of {len} bytes runs past the end of the file ({} bytes left)",
                self.index.saturating_sub(1),
                rest.len()
            );
        }
        let len = len as usize;
        self.at += len;
        Ok(&rest[..len])
    }

    /// Everything left, at most `len` bytes (crit's way with payloads).
    pub fn raw_upto(&mut self, len: u64) -> &'a [u8] {
        let rest = self.data.get(self.at..).unwrap_or_default();
        let n = if len > rest.len() as u64 { rest.len() } else { len as usize };
        self.at += n;
        &rest[..n]
    }
}

/// Decodes one message and checks it. Errors name the message's field.
pub fn decode<M: Proto>(bytes: &[u8]) -> Result<M> {
    let m = M::decode(bytes).map_err(|e| anyhow!("{}: bad protobuf: {e}", M::NAME))?;
    m.check().map_err(|field| anyhow!("{}: {field}", M::NAME))?;
    Ok(m)
}

/// Builds an image in memory.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(kind: Kind) -> Writer {
        let mut buf = Vec::new();
        if let Some(lead) = kind.lead() {
            buf.extend_from_slice(&lead.to_le_bytes());
        }
        buf.extend_from_slice(&kind.magic().to_le_bytes());
        Writer { buf }
    }

    /// Appends an entry.
    pub fn push<M: prost::Message>(&mut self, m: &M) -> &mut Self {
        let len = m.encoded_len();
        // No image entry comes near 4 GiB; the length word cannot say more.
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        m.encode_raw(&mut self.buf);
        self
    }

    /// Raw payload after the last entry.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        crate::image::write_file(path, &self.buf)
    }
}
