use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, Rel, Rela, SectionHeader, Sym, SymbolTable};
use object::{Endianness, pod};

use crate::{FlatBlob, Function, LinkError, Machine, Symbol, reloc_name};

/// A blob bigger than this is a build gone wrong, and refusing it keeps a
/// hostile `p_memsz` from making us allocate gigabytes.
const MAX_BLOB: u64 = 16 << 20;

// `include/uapi/linux/elf.h`: packed relative relocations (object 0.37 lacks them).
const DT_RELRSZ: u32 = 35;
const DT_RELR: u32 = 36;
const DT_RELRENT: u32 = 37;

/// Flattens the blob ELF `data`, which must be a PIE for `machine`.
pub fn flatten(data: &[u8], machine: Machine) -> Result<FlatBlob, LinkError> {
    if data.len() < 16 || &data[..4] != b"\x7fELF" {
        return Err(LinkError::Malformed("no ELF magic".into()));
    }
    match data[4] {
        elf::ELFCLASS32 => flatten_elf::<elf::FileHeader32<Endianness>>(data, machine),
        elf::ELFCLASS64 => flatten_elf::<elf::FileHeader64<Endianness>>(data, machine),
        c => Err(LinkError::Malformed(format!("unknown ELF class {c}"))),
    }
}

fn flatten_elf<H: FileHeader<Endian = Endianness>>(data: &[u8], machine: Machine) -> Result<FlatBlob, LinkError> {
    let header = H::parse(data)?;
    let e = header.endian()?;
    if header.e_type(e) != elf::ET_DYN {
        return Err(LinkError::NotPie { e_type: header.e_type(e) });
    }
    if header.e_machine(e) != machine.elf_machine() {
        return Err(LinkError::WrongMachine { expected: machine.elf_machine(), found: header.e_machine(e) });
    }

    let phdrs = header.program_headers(e, data)?;
    let mut loads = Vec::new();
    let mut dynamic: &[H::Dyn] = &[];
    for ph in phdrs {
        match ph.p_type(e) {
            elf::PT_LOAD => loads.push(ph),
            elf::PT_TLS => return Err(LinkError::ForbiddenSegment { name: "PT_TLS" }),
            elf::PT_INTERP => return Err(LinkError::ForbiddenSegment { name: "PT_INTERP" }),
            elf::PT_DYNAMIC => dynamic = ph.dynamic(e, data)?.unwrap_or(&[]),
            _ => {}
        }
    }
    let (image, bss_size, data_start) = build_image::<H>(&loads, e, data)?;

    let sections = header.sections(e, data)?;
    if sections.iter().any(|s| s.sh_type(e) == elf::SHT_RELR) {
        return Err(LinkError::ForbiddenDynamic { tag: "a SHT_RELR section (packed relocations)" });
    }
    let dynsym = sections.symbols(e, data, elf::SHT_DYNSYM)?;
    let symtab = sections.symbols(e, data, elf::SHT_SYMTAB)?;
    for table in [&symtab, &dynsym] {
        refuse_undefined::<H>(table, e)?;
    }

    let mut ctx = Relocator::<H> { machine, e, image, dynsym: &dynsym, relocs: Vec::new(), counts: Vec::new() };
    for table in dynamic_tables::<H>(dynamic, e)? {
        ctx.apply_table(table)?;
    }
    let Relocator { image, mut relocs, counts, .. } = ctx;
    relocs.sort_unstable();
    relocs.dedup();

    let exported = if symtab.is_empty() { &dynsym } else { &symtab };
    let mut symbols = exported_symbols::<H>(exported, e);
    symbols.sort_by(|a, b| a.name.cmp(&b.name));
    symbols.dedup_by(|a, b| a.name == b.name);
    let functions = functions::<H>(&symtab, e);

    Ok(FlatBlob {
        machine,
        image,
        bss_size,
        data_start,
        entry: header.e_entry(e).into(),
        symbols,
        functions,
        relocs,
        reloc_types: counts,
    })
}

/// Lays every `PT_LOAD` at its vaddr; returns the image, the bss size and
/// the first writable offset.
fn build_image<H: FileHeader<Endian = Endianness>>(
    loads: &[&H::ProgramHeader],
    e: Endianness,
    data: &[u8],
) -> Result<(Vec<u8>, u64, u64), LinkError> {
    if loads.is_empty() {
        return Err(LinkError::BadLayout("no PT_LOAD segment".into()));
    }
    let lowest = loads.iter().map(|p| p.p_vaddr(e).into()).min().unwrap_or(0);
    if lowest != 0 {
        return Err(LinkError::BadLayout(format!("lowest PT_LOAD starts at {lowest:#x}, not 0")));
    }
    let (mut file_end, mut mem_end) = (0u64, 0u64);
    for p in loads {
        let (vaddr, filesz, memsz) = (p.p_vaddr(e).into(), p.p_filesz(e).into(), p.p_memsz(e).into());
        let end = vaddr.checked_add(memsz).ok_or(LinkError::TooLarge { size: u64::MAX })?;
        if filesz > memsz {
            return Err(LinkError::BadLayout(format!("PT_LOAD at {vaddr:#x} has filesz > memsz")));
        }
        mem_end = mem_end.max(end);
        file_end = file_end.max(vaddr + filesz);
    }
    if mem_end > MAX_BLOB {
        return Err(LinkError::TooLarge { size: mem_end });
    }
    let mut image = vec![0u8; file_end as usize];
    let mut data_start = mem_end.next_multiple_of(4096);
    for p in loads {
        let vaddr = p.p_vaddr(e).into() as usize;
        let bytes = p
            .data(e, data)
            .map_err(|()| LinkError::Malformed(format!("PT_LOAD at {vaddr:#x} points outside the file")))?;
        image[vaddr..vaddr + bytes.len()].copy_from_slice(bytes);
        if p.p_flags(e) & elf::PF_W != 0 {
            data_start = data_start.min(vaddr as u64);
        }
    }
    if data_start % 4096 != 0 {
        return Err(LinkError::BadLayout(format!(
            "the writable part starts at {data_start:#x}, not on a page boundary"
        )));
    }
    Ok((image, mem_end - file_end, data_start))
}

fn refuse_undefined<H: FileHeader<Endian = Endianness>>(
    table: &SymbolTable<'_, H>,
    e: Endianness,
) -> Result<(), LinkError> {
    for sym in table.iter().skip(1) {
        if sym.st_shndx(e) == elf::SHN_UNDEF {
            let name = sym_name(table, e, sym);
            if !name.is_empty() {
                return Err(LinkError::UndefinedSymbol { name });
            }
        }
    }
    Ok(())
}

fn exported_symbols<H: FileHeader<Endian = Endianness>>(table: &SymbolTable<'_, H>, e: Endianness) -> Vec<Symbol> {
    table
        .iter()
        .filter(|s| s.st_shndx(e) != elf::SHN_UNDEF)
        .filter(|s| matches!(s.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK))
        .filter(|s| matches!(s.st_type(), elf::STT_FUNC | elf::STT_OBJECT))
        .filter_map(|s| {
            let name = sym_name(table, e, s);
            (!name.is_empty()).then(|| Symbol { name, offset: s.st_value(e).into() })
        })
        .collect()
}

/// Every function of the symbol table with its size, local ones too,
/// sorted by offset, with Rust's legacy mangling undone: what a fault's
/// address is named by.
fn functions<H: FileHeader<Endian = Endianness>>(table: &SymbolTable<'_, H>, e: Endianness) -> Vec<Function> {
    let mut out: Vec<Function> = table
        .iter()
        .filter(|s| s.st_shndx(e) != elf::SHN_UNDEF && s.st_type() == elf::STT_FUNC && s.st_size(e).into() > 0)
        .map(|s| Function {
            name: demangle(&sym_name(table, e, s)),
            offset: s.st_value(e).into(),
            size: s.st_size(e).into(),
        })
        .collect();
    out.sort_by_key(|f| f.offset);
    out
}

/// `_ZN` + length-prefixed parts + `17h<hash>E` (Rust's legacy scheme) as
/// `a::b::c`, with the common escapes undone; other names as they are.
pub fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else { return name.to_string() };
    let mut parts = vec![];
    while let Some(end) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&i| i > 0) {
        let Ok(len) = rest[..end].parse::<usize>() else { break };
        let Some(part) = rest.get(end..end + len) else { return name.to_string() };
        rest = &rest[end + len..];
        let is_hash = part.len() == 17 && part.starts_with('h') && part[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hash {
            parts.push(part.to_string());
        }
    }
    if rest != "E" || parts.is_empty() {
        return name.to_string();
    }
    let joined = parts.join("::");
    let escapes =
        [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$RF$", "&"), ("$BP$", "*"), ("..", "::")];
    escapes.iter().fold(joined, |s, (from, to)| s.replace(from, to))
}

/// One relocation table named by the dynamic section.
struct Table {
    addr: u64,
    size: u64,
    rela: bool,
}

fn dynamic_tables<H: FileHeader<Endian = Endianness>>(
    dynamic: &[H::Dyn],
    e: Endianness,
) -> Result<Vec<Table>, LinkError> {
    let (mut rel, mut relsz, mut rela, mut relasz) = (None, 0, None, 0);
    let (mut jmprel, mut pltrelsz, mut pltrel) = (None, 0, elf::DT_REL);
    for d in dynamic {
        let (tag, val) = (d.d_tag(e).into() as u32, d.d_val(e).into());
        match tag {
            elf::DT_NULL => break,
            elf::DT_REL => rel = Some(val),
            elf::DT_RELSZ => relsz = val,
            elf::DT_RELA => rela = Some(val),
            elf::DT_RELASZ => relasz = val,
            elf::DT_JMPREL => jmprel = Some(val),
            elf::DT_PLTRELSZ => pltrelsz = val,
            elf::DT_PLTREL => pltrel = val as u32,
            DT_RELRSZ | DT_RELR | DT_RELRENT => {
                return Err(LinkError::ForbiddenDynamic { tag: "DT_RELR (packed relocations)" });
            }
            elf::DT_NEEDED => {
                return Err(LinkError::ForbiddenDynamic { tag: "DT_NEEDED (a shared library)" });
            }
            elf::DT_TEXTREL => {
                return Err(LinkError::ForbiddenDynamic { tag: "DT_TEXTREL (relocations in code)" });
            }
            _ => {}
        }
    }
    let mut tables = Vec::new();
    if let Some(addr) = rel {
        tables.push(Table { addr, size: relsz, rela: false });
    }
    if let Some(addr) = rela {
        tables.push(Table { addr, size: relasz, rela: true });
    }
    if let Some(addr) = jmprel {
        tables.push(Table { addr, size: pltrelsz, rela: pltrel == elf::DT_RELA });
    }
    Ok(tables)
}

struct Relocator<'a, 'd, H: FileHeader<Endian = Endianness>> {
    machine: Machine,
    e: Endianness,
    image: Vec<u8>,
    dynsym: &'a SymbolTable<'d, H>,
    relocs: Vec<u32>,
    counts: Vec<(String, usize)>,
}

impl<H: FileHeader<Endian = Endianness>> Relocator<'_, '_, H> {
    fn apply_table(&mut self, t: Table) -> Result<(), LinkError> {
        let bytes = t
            .addr
            .checked_add(t.size)
            .and_then(|end| self.image.get(t.addr as usize..end as usize))
            .ok_or_else(|| LinkError::Malformed(format!("relocation table at {:#x} is outside the image", t.addr)))?
            .to_vec();
        let e = self.e;
        if t.rela {
            let n = bytes.len() / size_of::<H::Rela>();
            let (entries, _) = pod::slice_from_bytes::<H::Rela>(&bytes, n)
                .map_err(|()| LinkError::Malformed("misaligned RELA table".into()))?;
            for r in entries {
                let addend = r.r_addend(e).into();
                self.one(r.r_offset(e).into(), r.r_type(e, false), r.r_sym(e, false), Some(addend))?;
            }
        } else {
            let n = bytes.len() / size_of::<H::Rel>();
            let (entries, _) = pod::slice_from_bytes::<H::Rel>(&bytes, n)
                .map_err(|()| LinkError::Malformed("misaligned REL table".into()))?;
            for r in entries {
                self.one(r.r_offset(e).into(), r.r_type(e), r.r_sym(e), None)?;
            }
        }
        Ok(())
    }

    fn one(&mut self, offset: u64, r_type: u32, sym: u32, addend: Option<i64>) -> Result<(), LinkError> {
        let none = match self.machine {
            Machine::X86_64 => elf::R_X86_64_NONE,
            Machine::Arm => elf::R_ARM_NONE,
            Machine::Aarch64 => elf::R_AARCH64_NONE,
        };
        if r_type == none {
            return Ok(());
        }
        if r_type != self.machine.relative_reloc() {
            let symbol = (sym != 0)
                .then(|| self.dynsym.symbol(object::SymbolIndex(sym as usize)).ok())
                .flatten()
                .map(|s| sym_name(self.dynsym, self.e, s));
            return Err(LinkError::Relocation { type_name: reloc_name(self.machine, r_type), r_type, offset, symbol });
        }
        let w = self.machine.word_size();
        let word = offset
            .checked_add(w as u64)
            .and_then(|end| self.image.get_mut(offset as usize..end as usize))
            .ok_or(LinkError::RelocationOutOfImage { offset })?;
        // RELA keeps the addend in the table; REL (ARM) already has it in the
        // word. Either way the word ends up holding the image-relative value.
        if let Some(addend) = addend {
            if w == 4 {
                word.copy_from_slice(&(addend as u32).to_le_bytes());
            } else {
                word.copy_from_slice(&(addend as u64).to_le_bytes());
            }
        }
        let offset = u32::try_from(offset).map_err(|_| LinkError::RelocationOutOfImage { offset })?;
        self.relocs.push(offset);
        let name = reloc_name(self.machine, r_type);
        match self.counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.counts.push((name, 1)),
        }
        Ok(())
    }
}

fn sym_name<H: FileHeader<Endian = Endianness>>(table: &SymbolTable<'_, H>, e: Endianness, sym: &H::Sym) -> String {
    table.symbol_name(e, sym).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn legacy_rust_names_lose_their_hash_and_escapes() {
        assert_eq!(
            demangle("_ZN17revenant_restorer7restore3run17h084629cdaa579032E"),
            "revenant_restorer::restore::run"
        );
        assert_eq!(
            demangle("_ZN4core4iter8adapters7flatten17and_then_or_clear17h99ef28d499ca9eb2E"),
            "core::iter::adapters::flatten::and_then_or_clear"
        );
        assert_eq!(demangle("_ZN9$LT$T$GT$3foo17h0123456789abcdefE"), "<T>::foo");
        assert_eq!(demangle("memcpy"), "memcpy");
        assert_eq!(demangle("_ZN3abc"), "_ZN3abc", "cut short: kept as it is");
    }
}
