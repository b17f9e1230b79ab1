//! Builds tiny position-independent ELF files for the flattener's tests.
//!
//! Layout: one PT_LOAD covering the whole file at vaddr 0 (so every file
//! offset is also a vaddr), a PT_DYNAMIC, and section headers for `.dynsym`
//! and `.dynstr` so relocations can name their symbols. 32-bit files use REL
//! (addend in the word), 64-bit ones RELA, as ARM and x86_64 do.

pub struct Reloc {
    pub offset: u64,
    pub r_type: u32,
    pub sym: u32,
    pub addend: i64,
}

pub struct Spec {
    pub class64: bool,
    pub machine: u16,
    pub e_type: u16,
    /// Dynamic symbols (index 1, 2, ...): name and section index, where 0
    /// means undefined.
    pub symbols: Vec<(&'static str, u16)>,
    pub relocs: Vec<Reloc>,
    /// Extra program header types (PT_TLS = 7, PT_INTERP = 3) to add.
    pub extra_segments: Vec<u32>,
    /// Extra dynamic tags to add before DT_NULL.
    pub extra_dynamic: Vec<(u64, u64)>,
    pub bss: u64,
}

impl Spec {
    pub fn new(class64: bool, machine: u16) -> Spec {
        Spec {
            class64,
            machine,
            e_type: 3,
            symbols: vec![],
            relocs: vec![],
            extra_segments: vec![],
            extra_dynamic: vec![],
            bss: 0,
        }
    }
}

/// Offset of the 64-byte data area the relocations can point into.
pub const DATA: u64 = 0x200;

struct Out {
    buf: Vec<u8>,
    w64: bool,
}

impl Out {
    fn at(&mut self, off: u64) {
        self.buf.resize(self.buf.len().max(off as usize), 0);
        self.buf.truncate(off as usize);
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn word(&mut self, v: u64) {
        if self.w64 {
            self.buf.extend_from_slice(&v.to_le_bytes());
        } else {
            self.u32(v as u32);
        }
    }
}

pub fn build(spec: &Spec) -> Vec<u8> {
    let w = if spec.class64 { 8 } else { 4 };
    let (ehsize, phentsize, shentsize) = if spec.class64 { (64, 56, 64) } else { (52, 32, 40) };
    let (symsize, relsize, dynsize) = if spec.class64 { (24, 24, 16) } else { (16, 8, 8) };
    let phnum = 2 + spec.extra_segments.len() as u64;

    let nsyms = 1 + spec.symbols.len() as u64;
    let dynsym = 0x300u64;
    let dynstr = dynsym + nsyms * symsize;
    let mut strtab = vec![0u8];
    let mut name_offs = vec![];
    for (n, _) in &spec.symbols {
        name_offs.push(strtab.len() as u32);
        strtab.extend_from_slice(n.as_bytes());
        strtab.push(0);
    }
    let rel = (dynstr + strtab.len() as u64).next_multiple_of(8);
    let dynamic = rel + spec.relocs.len() as u64 * relsize;
    let ndyn = 6 + spec.extra_dynamic.len() as u64;
    let shstrtab = dynamic + ndyn * dynsize;
    let shnames: &[u8] = b"\0.dynsym\0.dynstr\0.shstrtab\0";
    let shoff = (shstrtab + shnames.len() as u64).next_multiple_of(8);
    let file_len = shoff + 4 * shentsize;

    let mut o = Out { buf: Vec::new(), w64: spec.class64 };
    // ELF header.
    o.buf.extend_from_slice(b"\x7fELF");
    o.u8(if spec.class64 { 2 } else { 1 });
    o.u8(1); // little-endian
    o.u8(1); // version
    o.at(16);
    o.u16(spec.e_type);
    o.u16(spec.machine);
    o.u32(1);
    o.word(0); // entry
    o.word(ehsize); // phoff
    o.word(shoff);
    o.u32(0); // flags
    o.u16(ehsize as u16);
    o.u16(phentsize as u16);
    o.u16(phnum as u16);
    o.u16(shentsize as u16);
    o.u16(4); // shnum
    o.u16(3); // shstrndx
    // Program headers.
    let phdr = |o: &mut Out, p_type: u32, off: u64, filesz: u64, memsz: u64, flags: u32| {
        o.u32(p_type);
        if spec.class64 {
            o.u32(flags);
        }
        o.word(off);
        o.word(off);
        o.word(off);
        o.word(filesz);
        o.word(memsz);
        if !spec.class64 {
            o.u32(flags);
        }
        o.word(if p_type == 1 { 0x1000 } else { w });
    };
    phdr(&mut o, 1, 0, file_len, file_len + spec.bss, 7);
    phdr(&mut o, 2, dynamic, ndyn * dynsize, ndyn * dynsize, 6);
    for &t in &spec.extra_segments {
        phdr(&mut o, t, DATA, 8, 8, 4);
    }
    // Data area: words holding their REL addends.
    o.at(DATA);
    for i in 0..(64 / w) {
        o.word(0x40 + i * 8);
    }
    // .dynsym: null, then the symbols (global, no type).
    o.at(dynsym);
    for i in 0..nsyms as usize {
        let name = if i == 0 { 0 } else { name_offs[i - 1] };
        let info = if i == 0 { 0 } else { 0x10 };
        let shndx = if i == 0 { 0 } else { spec.symbols[i - 1].1 };
        if spec.class64 {
            o.u32(name);
            o.u8(info);
            o.u8(0);
            o.u16(shndx);
            o.word(0);
            o.word(0);
        } else {
            o.u32(name);
            o.word(0);
            o.word(0);
            o.u8(info);
            o.u8(0);
            o.u16(shndx);
        }
    }
    o.buf.extend_from_slice(&strtab);
    o.at(rel);
    for r in &spec.relocs {
        o.word(r.offset);
        if spec.class64 {
            o.word(((r.sym as u64) << 32) | r.r_type as u64);
            o.word(r.addend as u64);
        } else {
            o.word(((r.sym as u64) << 8) | r.r_type as u64);
        }
    }
    o.at(dynamic);
    let (t_rel, t_relsz, t_relent) = if spec.class64 { (7, 8, 9) } else { (17, 18, 19) };
    for (tag, val) in
        [(t_rel, rel), (t_relsz, spec.relocs.len() as u64 * relsize), (t_relent, relsize), (6, dynsym), (5, dynstr)]
            .into_iter()
            .chain(spec.extra_dynamic.iter().copied())
            .chain([(0, 0)])
    {
        o.word(tag);
        o.word(val);
    }
    o.buf.extend_from_slice(shnames);
    // Section headers: null, .dynsym (links .dynstr), .dynstr, .shstrtab.
    o.at(shoff);
    let shdr = |o: &mut Out, name: u32, sh_type: u32, off: u64, size: u64, link: u32, info: u32, entsize: u64| {
        o.u32(name);
        o.u32(sh_type);
        o.word(2); // SHF_ALLOC
        o.word(off);
        o.word(off);
        o.word(size);
        o.u32(link);
        o.u32(info);
        o.word(w);
        o.word(entsize);
    };
    o.buf.extend(std::iter::repeat_n(0, shentsize as usize));
    shdr(&mut o, 1, 11, dynsym, nsyms * symsize, 2, 1, symsize);
    shdr(&mut o, 9, 3, dynstr, strtab.len() as u64, 0, 0, 0);
    shdr(&mut o, 17, 3, shstrtab, shnames.len() as u64, 0, 0, 0);
    assert_eq!(o.buf.len() as u64, file_len);
    o.buf
}
