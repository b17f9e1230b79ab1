//! Validated access to the argument block.

use core::mem::{align_of, size_of};

use revenant_blob_abi::{Arch, BLOCK_ALIGN, ExitCode, Header, MAGIC, Plain, Span, VERSION};

/// The argument block, checked: magic, version, arch and size are right,
/// and every array handed out lies inside it.
pub struct Args<'a> {
    bytes: &'a [u8],
    header: Header,
}

impl<'a> Args<'a> {
    /// # Safety
    /// `block`, if aligned, must point at a readable [`Header`] and, if
    /// that header's checks pass, at `mapped_size` readable bytes that stay
    /// unchanged for `'a`.
    pub unsafe fn from_ptr(block: *const u8) -> Result<Args<'a>, ExitCode> {
        // Checked before the first read: a misaligned pointer is a loader
        // that got the rules wrong, and reading through it may fault.
        if block.is_null() || !(block as usize).is_multiple_of(BLOCK_ALIGN as usize) {
            return Err(ExitCode::BadLayout);
        }
        // Magic and version first: a block of another version may have a
        // shorter header, and nothing past its first words is read before
        // it is known to be ours.
        // SAFETY: the caller guarantees a readable header at this aligned
        // address, and every version's starts with these two words.
        let [magic, version] = unsafe { block.cast::<[u32; 2]>().read() };
        check_words(magic, version)?;
        // SAFETY: as above; the version says the header is this crate's.
        let header = unsafe { block.cast::<Header>().read() };
        check_header(&header)?;
        // SAFETY: the header passed its checks (total_size <= mapped_size
        // among them), so the caller guarantees `total_size` readable bytes.
        let bytes = unsafe { core::slice::from_raw_parts(block, header.total_size as usize) };
        Self::from_bytes(bytes)
    }

    /// Checks a block held in a slice.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Args<'a>, ExitCode> {
        if bytes.len() < size_of::<Header>() {
            return Err(ExitCode::BadLayout);
        }
        // SAFETY: the slice holds at least a Header, and Header is Plain.
        let header = unsafe { bytes.as_ptr().cast::<Header>().read_unaligned() };
        check_header(&header)?;
        if header.total_size as usize != bytes.len() {
            return Err(ExitCode::BadLayout);
        }
        Ok(Args { bytes, header })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Where the block starts and how long it is.
    pub fn range(&self) -> (usize, usize) {
        (self.bytes.as_ptr() as usize, self.bytes.len())
    }

    /// The `span.count` elements of `T` at `span.offset`.
    pub fn array<T: Plain>(&self, span: Span) -> Result<&'a [T], ExitCode> {
        let start = span.offset as usize;
        let len = (span.count as usize).checked_mul(size_of::<T>()).ok_or(ExitCode::BadLayout)?;
        let end = start.checked_add(len).ok_or(ExitCode::BadLayout)?;
        let bytes = self.bytes.get(start..end).ok_or(ExitCode::BadLayout)?;
        if !(bytes.as_ptr() as usize).is_multiple_of(align_of::<T>()) {
            return Err(ExitCode::BadLayout);
        }
        // SAFETY: in bounds and aligned (checked above); T is Plain, so any
        // bytes are a valid T.
        Ok(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), span.count as usize) })
    }

    /// Exactly one `T` at `span`.
    pub fn one<T: Plain>(&self, span: Span) -> Result<&'a T, ExitCode> {
        match self.array::<T>(span)? {
            [one] => Ok(one),
            _ => Err(ExitCode::BadLayout),
        }
    }
}

fn check_words(magic: u32, version: u32) -> Result<(), ExitCode> {
    if magic != MAGIC {
        return Err(ExitCode::BadMagic);
    }
    if version != VERSION {
        return Err(ExitCode::BadVersion);
    }
    Ok(())
}

fn check_header(h: &Header) -> Result<(), ExitCode> {
    check_words(h.magic, h.version)?;
    if Arch::from_u32(h.arch) != Some(Arch::NATIVE) {
        return Err(ExitCode::BadArch);
    }
    // Reserved for what a later version negotiates: anything but zero is
    // a loader that expects what this blob does not do.
    if h.flags != 0 {
        return Err(ExitCode::BadLayout);
    }
    if (h.total_size as usize) < size_of::<Header>() {
        return Err(ExitCode::BadLayout);
    }
    // Reading the block is the first thing the blob does with it: beyond
    // what the loader says it mapped, that read could fault.
    if h.total_size > h.mapped_size {
        return Err(ExitCode::NotMapped);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use revenant_blob_abi::{Command, SelfTest};

    /// An 8-aligned buffer, as the host allocates blocks.
    fn block(extra: &[u8]) -> Vec<u64> {
        let total = size_of::<Header>() + extra.len();
        let h = Header {
            magic: MAGIC,
            version: VERSION,
            arch: Arch::NATIVE as u32,
            total_size: total as u32,
            command: Command::SelfTest as u32,
            log_level: 3,
            log_fd: 2,
            flags: 0,
            selftest: Span { offset: size_of::<Header>() as u32, count: 1 },
            restore: Span::default(),
            mapped_size: total as u32,
            status_fd: -1,
        };
        let mut bytes = vec![0u8; total];
        // SAFETY: Header is Plain; we copy its bytes.
        let hb = unsafe { core::slice::from_raw_parts((&h as *const Header).cast::<u8>(), size_of::<Header>()) };
        bytes[..hb.len()].copy_from_slice(hb);
        bytes[hb.len()..].copy_from_slice(extra);
        let mut words = vec![0u64; total.div_ceil(8)];
        // SAFETY: words has at least `total` bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), total) };
        words
    }

    fn view(words: &[u64], len: usize) -> &[u8] {
        // SAFETY: reading `len` <= 8 * words.len() bytes of a live Vec<u64>.
        unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
    }

    const H: usize = size_of::<Header>();
    const TOTAL: usize = H + 16;

    #[test]
    fn accepts_a_good_block_and_reads_arrays() {
        let st = [7u8, 0, 0, 0, 0, 0, 0, 0, H as u8, 0, 0, 0, 0, 0, 0, 0];
        let w = block(&st);
        let args = Args::from_bytes(view(&w, TOTAL)).unwrap();
        let t: &SelfTest = args.one(args.header().selftest).unwrap();
        assert_eq!(t.input, 7);
    }

    #[test]
    fn refuses_bad_headers_with_distinct_codes() {
        let mut w = block(&[0; 16]);
        let mut b = view(&w, TOTAL).to_vec();
        b[0] ^= 1;
        assert_eq!(Args::from_bytes(&b).err(), Some(ExitCode::BadMagic));
        let mut b = view(&w, TOTAL).to_vec();
        b[4] = 99;
        assert_eq!(Args::from_bytes(&b).err(), Some(ExitCode::BadVersion));
        let mut b = view(&w, TOTAL).to_vec();
        b[8] = 77;
        assert_eq!(Args::from_bytes(&b).err(), Some(ExitCode::BadArch));
        // The reserved flags word (offset 28) must be zero.
        let mut b = view(&w, TOTAL).to_vec();
        b[28] = 1;
        assert_eq!(Args::from_bytes(&b).err(), Some(ExitCode::BadLayout));
        // total_size (offset 12) above mapped_size (offset 48).
        let mut b = view(&w, TOTAL).to_vec();
        b[48..52].copy_from_slice(&(TOTAL as u32 - 8).to_le_bytes());
        assert_eq!(Args::from_bytes(&b).err(), Some(ExitCode::NotMapped));
        assert_eq!(Args::from_bytes(view(&w, TOTAL - 6)).err(), Some(ExitCode::BadLayout));
        w.truncate(4);
        assert_eq!(Args::from_bytes(view(&w, 32)).err(), Some(ExitCode::BadLayout));
    }

    /// A block of another version is refused having read only its first
    /// two words: here they end a mapping, and reading on would fault.
    #[test]
    fn refuses_another_version_reading_only_magic_and_version() {
        use linux_raw_sys::general as g;
        let page = revenant_arch::PAGE_SIZE;
        let (prot, flags) = (g::PROT_READ | g::PROT_WRITE, g::MAP_PRIVATE | g::MAP_ANONYMOUS);
        // SAFETY: a fresh anonymous mapping of two pages; the second is
        // then unmapped, so the first page's end is the mapping's end.
        let base = unsafe { revenant_arch::mmap(0, 2 * page, prot, flags, -1, 0) }.unwrap();
        // SAFETY: the second page is ours and unused.
        unsafe { revenant_arch::sys::munmap(base + page, page) }.unwrap();
        let at = (base + page - 8) as *mut u32;
        for (magic, version, code) in
            [(MAGIC, VERSION - 1, ExitCode::BadVersion), (!MAGIC, VERSION, ExitCode::BadMagic)]
        {
            // SAFETY: the last 8 bytes of our mapping.
            unsafe { at.write(magic) };
            // SAFETY: as above.
            unsafe { at.add(1).write(version) };
            // SAFETY: 8 readable bytes; the refusal reads no more.
            assert_eq!(unsafe { Args::from_ptr(at.cast::<u8>()) }.err(), Some(code));
        }
        // SAFETY: our mapping.
        unsafe { revenant_arch::sys::munmap(base, page) }.unwrap();
    }

    #[test]
    fn refuses_a_misaligned_or_null_block_before_reading_it() {
        let w = block(&[0; 16]);
        // SAFETY: the block is live and readable; the checks refuse it
        // before any read through the misaligned pointer.
        let misaligned = unsafe { Args::from_ptr(w.as_ptr().cast::<u8>().add(4)) };
        assert_eq!(misaligned.err(), Some(ExitCode::BadLayout));
        // SAFETY: refused before any read.
        assert_eq!(unsafe { Args::from_ptr(core::ptr::null()) }.err(), Some(ExitCode::BadLayout));
        // SAFETY: an aligned, complete block.
        assert!(unsafe { Args::from_ptr(w.as_ptr().cast::<u8>()) }.is_ok());
    }

    #[test]
    fn refuses_spans_outside_the_block() {
        let w = block(&[0; 16]);
        let args = Args::from_bytes(view(&w, TOTAL)).unwrap();
        let h = H as u32;
        let outside = Span { offset: h + 8, count: 1 };
        assert_eq!(args.one::<SelfTest>(outside).err(), Some(ExitCode::BadLayout));
        let huge = Span { offset: h, count: u32::MAX };
        assert_eq!(args.array::<SelfTest>(huge).err(), Some(ExitCode::BadLayout));
        let misaligned = Span { offset: h + 1, count: 1 };
        assert_eq!(args.array::<u32>(misaligned).err(), Some(ExitCode::BadLayout));
        assert_eq!(args.array::<u8>(Span { offset: h, count: 16 }).unwrap().len(), 16);
    }
}
