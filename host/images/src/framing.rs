//! The container every image shares: magic words, then entries, each a
//! little-endian u32 length and that many bytes of protobuf. Some entries
//! are followed by raw payload of a size the entry itself gives; callers
//! that know such a kind read it with [`Reader::raw`].

use anyhow::{Context, Result, bail};

use crate::magic::Kind;

/// Reads entries from an image held in memory. Never allocates more than
/// the input holds: every length is checked against what is left first.
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
        let kind = Kind::from_header(data).context("not a CRIU image: unknown or missing magic")?;
        let at = if kind.lead().is_some() { 8 } else { 4 };
        Ok(Reader { kind, data, at, index: 0 })
    }

    /// The next entry's bytes, or `None` at the end of the file.
    pub fn next_raw(&mut self) -> Result<Option<&'a [u8]>> {
        if self.at == self.data.len() {
            return Ok(None);
        }
        let rest = &self.data[self.at..];
        if rest.len() < 4 {
            bail!("entry {}: {} stray bytes where a length prefix should be", self.index, rest.len());
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > rest.len() - 4 {
            bail!("entry {}: length {len} runs past the end of the file ({} bytes left)", self.index, rest.len() - 4);
        }
        self.at += 4 + len;
        self.index += 1;
        Ok(Some(&rest[4..4 + len]))
    }

    /// The next entry, decoded.
    pub fn decode_next<M: prost::Message + Default>(&mut self) -> Result<Option<M>> {
        let index = self.index;
        match self.next_raw()? {
            None => Ok(None),
            Some(bytes) => M::decode(bytes).map(Some).with_context(|| format!("entry {index}: bad protobuf")),
        }
    }

    /// All remaining entries, decoded.
    pub fn all<M: prost::Message + Default>(&mut self) -> Result<Vec<M>> {
        let mut v = Vec::new();
        while let Some(m) = self.decode_next()? {
            v.push(m);
        }
        Ok(v)
    }

    /// `len` bytes of raw payload following the last entry.
    pub fn raw(&mut self, len: usize) -> Result<&'a [u8]> {
        let rest = &self.data[self.at..];
        if len > rest.len() {
            bail!("entry {}: payload of {len} bytes runs past the end of the file", self.index.saturating_sub(1));
        }
        self.at += len;
        Ok(&rest[..len])
    }
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

    pub fn push<M: prost::Message>(&mut self, m: &M) -> &mut Self {
        let len = m.encoded_len();
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        m.encode(&mut self.buf).expect("a Vec grows as needed");
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

    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        std::fs::write(path, &self.buf).with_context(|| format!("writing {}", path.display()))
    }
}
