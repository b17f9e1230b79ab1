//! The flattener on hand-built ELF files: what it accepts and, above all,
//! everything it must refuse.

mod support;

use object::elf;
use revenant_linker::{LinkError, Machine, flatten};
use support::{DATA, Reloc, Spec, build};

fn x86(relocs: Vec<Reloc>) -> Spec {
    let mut s = Spec::new(true, elf::EM_X86_64);
    s.relocs = relocs;
    s
}

fn rel(offset: u64, r_type: u32, sym: u32, addend: i64) -> Reloc {
    Reloc { offset, r_type, sym, addend }
}

#[test]
fn rela_addends_are_written_into_the_image() {
    let spec = x86(vec![
        rel(DATA, elf::R_X86_64_RELATIVE, 0, 0x1234),
        rel(DATA + 8, elf::R_X86_64_NONE, 0, 0),
        rel(DATA + 16, elf::R_X86_64_RELATIVE, 0, 0x40),
    ]);
    let blob = flatten(&build(&spec), Machine::X86_64).unwrap();
    assert_eq!(blob.relocs, vec![DATA as u32, DATA as u32 + 16]);
    assert_eq!(blob.reloc_types, vec![("R_X86_64_RELATIVE".to_string(), 2)]);
    let word = |img: &[u8], at: u64| u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap());
    assert_eq!(word(&blob.image, DATA), 0x1234);

    let mut img = blob.image.clone();
    blob.relocate(&mut img, 0x7000_0000);
    assert_eq!(word(&img, DATA), 0x7000_1234);
    assert_eq!(word(&img, DATA + 16), 0x7000_0040);
    // NONE is skipped: its word keeps what the file had.
    assert_eq!(word(&img, DATA + 8), word(&blob.image, DATA + 8));
}

#[test]
fn rel_addends_stay_in_place_on_arm() {
    let mut spec = Spec::new(false, elf::EM_ARM);
    spec.relocs = vec![rel(DATA + 4, elf::R_ARM_RELATIVE, 0, 0)];
    spec.bss = 0x100;
    let blob = flatten(&build(&spec), Machine::Arm).unwrap();
    assert_eq!(blob.relocs, vec![DATA as u32 + 4]);
    assert_eq!(blob.bss_size, 0x100);
    let mut img = blob.image.clone();
    blob.relocate(&mut img, 0x10000);
    let w = u32::from_le_bytes(img[DATA as usize + 4..DATA as usize + 8].try_into().unwrap());
    assert_eq!(w, 0x10000 + 0x48);
}

#[test]
fn refuses_a_symbolic_relocation_naming_type_offset_and_symbol() {
    let mut spec = x86(vec![rel(DATA + 8, elf::R_X86_64_GLOB_DAT, 1, 0)]);
    spec.symbols = vec![("table", 1)];
    let err = flatten(&build(&spec), Machine::X86_64).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LinkError::Relocation { r_type: elf::R_X86_64_GLOB_DAT, offset, .. } if offset == DATA + 8));
    assert!(msg.contains("R_X86_64_GLOB_DAT") && msg.contains("0x208") && msg.contains("`table`"), "{msg}");

    let spec = x86(vec![rel(DATA, elf::R_X86_64_64, 0, 0)]);
    let msg = flatten(&build(&spec), Machine::X86_64).unwrap_err().to_string();
    assert!(msg.contains("R_X86_64_64") && msg.contains("no symbol"), "{msg}");
}

#[test]
fn refuses_undefined_symbols_by_name() {
    let mut spec = x86(vec![]);
    spec.symbols = vec![("memcpy", 0)];
    let err = flatten(&build(&spec), Machine::X86_64).unwrap_err();
    assert_eq!(err, LinkError::UndefinedSymbol { name: "memcpy".into() });
    assert!(err.to_string().contains("`memcpy`"));
}

#[test]
fn refuses_arm_abs32_and_tls_relocations() {
    for (t, name) in [(elf::R_ARM_ABS32, "R_ARM_ABS32"), (elf::R_ARM_TLS_TPOFF32, "R_ARM_TLS_TPOFF32")] {
        let mut spec = Spec::new(false, elf::EM_ARM);
        spec.relocs = vec![rel(DATA, t, 0, 0)];
        let err = flatten(&build(&spec), Machine::Arm).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn refuses_tls_and_interp_segments() {
    for (pt, name) in [(elf::PT_TLS, "PT_TLS"), (elf::PT_INTERP, "PT_INTERP")] {
        let mut spec = x86(vec![]);
        spec.extra_segments = vec![pt];
        let err = flatten(&build(&spec), Machine::X86_64).unwrap_err();
        assert_eq!(err, LinkError::ForbiddenSegment { name });
    }
}

#[test]
fn refuses_relr_and_needed() {
    for (tag, word) in [(36u64, "DT_RELR"), (elf::DT_NEEDED as u64, "DT_NEEDED")] {
        let mut spec = x86(vec![]);
        spec.extra_dynamic = vec![(tag, DATA)];
        let err = flatten(&build(&spec), Machine::X86_64).unwrap_err();
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn refuses_wrong_machine_and_non_pie() {
    let err = flatten(&build(&x86(vec![])), Machine::Arm).unwrap_err();
    assert!(matches!(err, LinkError::WrongMachine { .. }));
    let mut spec = x86(vec![]);
    spec.e_type = elf::ET_EXEC;
    assert_eq!(flatten(&build(&spec), Machine::X86_64).unwrap_err(), LinkError::NotPie { e_type: 2 });
}

#[test]
fn refuses_relocations_outside_the_image() {
    let spec = x86(vec![rel(0x10_0000, elf::R_X86_64_RELATIVE, 0, 0)]);
    let err = flatten(&build(&spec), Machine::X86_64).unwrap_err();
    assert_eq!(err, LinkError::RelocationOutOfImage { offset: 0x10_0000 });
}

#[test]
fn survives_truncated_and_garbage_input() {
    let good = build(&x86(vec![rel(DATA, elf::R_X86_64_RELATIVE, 0, 8)]));
    for len in (0..good.len()).step_by(7) {
        assert!(flatten(&good[..len], Machine::X86_64).is_err(), "truncated at {len} was accepted");
    }
    let mut huge = Spec::new(true, elf::EM_X86_64);
    huge.bss = 1 << 40;
    assert!(matches!(flatten(&build(&huge), Machine::X86_64), Err(LinkError::TooLarge { .. })));
    assert!(flatten(b"not an elf at all", Machine::X86_64).is_err());
}
