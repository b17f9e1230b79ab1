//! What the restore and the blobs send the page server, over one
//! `SOCK_SEQPACKET` socket:
//! - the restore, for each lazy process before it runs: `'D'`, the PID
//!   (`u32`, little-endian), and descriptors: a list (a memfd), then the
//!   pages images (one, or an iterative dump's own and its parents'). The
//!   list: the number of page ranges `N` (`u64`), `N` quadruples
//!   (address, length, offset in the image, index of the image), then
//!   pairs (address, length) of the registered areas to the end;
//! - each blob, once its areas are registered: its PID (`u32`) and the
//!   userfaultfd, as the ABI's `Restore::lazy_fd` says.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail};

use super::ranges::{Range, RangeSet};

/// The longest message.
pub const MAX: usize = 16;
/// The most descriptors one message carries (the kernel's `SCM_MAX_FD`):
/// a description's list and up to 252 pages images.
pub const MAX_FDS: usize = 253;
const PAGE: u64 = revenant_arch::PAGE_SIZE as u64;
/// More ranges than any address space can hold pages for.
const MAX_RANGES: u64 = 1 << 24;

pub enum Message {
    Describe { pid: i32, images: Vec<OwnedFd>, list: OwnedFd },
    Uffd { pid: i32, uffd: OwnedFd },
}

pub fn parse(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<Message> {
    let pid = |b: &[u8]| i32::from_le_bytes(b.try_into().expect("four bytes"));
    let mut fds = fds.into_iter();
    match (bytes.len(), bytes.first(), fds.len()) {
        (4, _, 1) => Ok(Message::Uffd { pid: pid(bytes), uffd: fds.next().expect("one fd") }),
        (5, Some(b'D'), n) if n >= 2 => {
            let list = fds.next().expect("two fds");
            Ok(Message::Describe { pid: pid(&bytes[1..5]), images: fds.collect(), list })
        }
        (n, _, f) => bail!("a message of {n} bytes with {f} descriptors is not the page server's"),
    }
}

/// Encodes a description's list.
pub fn list_bytes(pages: &[Range], areas: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + pages.len() * 32 + areas.len() * 16);
    out.extend((pages.len() as u64).to_le_bytes());
    for r in pages {
        for w in [r.start, r.len(), r.offset, r.file as u64] {
            out.extend(w.to_le_bytes());
        }
    }
    for &(s, e) in areas {
        out.extend(s.to_le_bytes());
        out.extend((e - s).to_le_bytes());
    }
    out
}

/// Decodes and checks a description's list against the images' lengths.
pub fn read_list(list: &OwnedFd, image_lens: &[u64]) -> Result<(RangeSet, Vec<(u64, u64)>)> {
    use std::io::Read;
    let mut f = std::fs::File::from(list.try_clone().context("the list")?);
    let mut bytes = vec![];
    f.read_to_end(&mut bytes).context("reading the list")?;
    decode(&bytes, image_lens)
}

fn decode(bytes: &[u8], image_lens: &[u64]) -> Result<(RangeSet, Vec<(u64, u64)>)> {
    let words: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    let Some((&n, rest)) = words.split_first() else { bail!("an empty list") };
    if !bytes.len().is_multiple_of(8)
        || n > MAX_RANGES
        || rest.len() < 4 * n as usize
        || !(rest.len() - 4 * n as usize).is_multiple_of(2)
    {
        bail!("a list of {} bytes cannot hold {n} page ranges and whole areas", bytes.len());
    }
    let (quads, pairs) = rest.split_at(4 * n as usize);
    let aligned = |w: u64| w.is_multiple_of(PAGE);
    let mut pages = vec![];
    for t in quads.chunks_exact(4) {
        let (start, len, offset, file) = (t[0], t[1], t[2], t[3]);
        let end = start.checked_add(len).filter(|_| aligned(start) && aligned(len) && aligned(offset));
        let image_len = usize::try_from(file).ok().and_then(|i| image_lens.get(i));
        let inside = image_len.is_some_and(|&l| offset.checked_add(len).is_some_and(|e| e <= l));
        let Some(end) = end.filter(|_| inside) else {
            bail!(
                "page range {start:#x}+{len:#x} at offset {offset:#x} of image {file}: unaligned or outside the \
                 image"
            );
        };
        pages.push(Range { start, end, offset, file: file as u32 });
    }
    let mut areas = vec![];
    for p in pairs.chunks_exact(2) {
        let Some(end) = p[0].checked_add(p[1]).filter(|_| aligned(p[0]) && aligned(p[1])) else {
            bail!("area {:#x}+{:#x}: unaligned or past the end of memory", p[0], p[1]);
        };
        areas.push((p[0], end));
    }
    Ok((RangeSet::new(pages), areas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_bad_ones_are_refused() {
        let pages = [
            Range { start: 0x1000, end: 0x3000, offset: 0, file: 0 },
            Range { start: 0x8000, end: 0x9000, offset: 0x2000, file: 0 },
            Range { start: 0xb000, end: 0xc000, offset: 0x1000, file: 1 },
        ];
        let areas = [(0x1000, 0x4000), (0x8000, 0xa000), (0xb000, 0xc000)];
        let bytes = list_bytes(&pages, &areas);
        let (got, a) = decode(&bytes, &[0x3000, 0x2000]).unwrap();
        assert_eq!(got, RangeSet::new(pages.to_vec()));
        assert_eq!(a, areas);
        assert!(decode(&bytes, &[0x2fff, 0x2000]).is_err(), "a range past the image");
        assert!(decode(&bytes, &[0x3000, 0x1fff]).is_err(), "a range past the second image");
        assert!(decode(&bytes, &[0x3000]).is_err(), "an image that was not sent");
        assert!(decode(&bytes[..bytes.len() - 8], &[0x3000, 0x2000]).is_err(), "half an area");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge, &[0x3000, 0x2000]).is_err(), "a count that cannot be");
        let unaligned = list_bytes(&[Range { start: 0x1001, end: 0x2001, offset: 0, file: 0 }], &[]);
        assert!(decode(&unaligned, &[0x3000]).is_err());
    }
}
