use object::elf;

use crate::Machine;

/// The conventional name of a relocation type, for error messages.
pub fn reloc_name(machine: Machine, r_type: u32) -> String {
    let known: &[(u32, &str)] = match machine {
        Machine::X86_64 => &[
            (elf::R_X86_64_NONE, "R_X86_64_NONE"),
            (elf::R_X86_64_64, "R_X86_64_64"),
            (elf::R_X86_64_PC32, "R_X86_64_PC32"),
            (elf::R_X86_64_GOT32, "R_X86_64_GOT32"),
            (elf::R_X86_64_PLT32, "R_X86_64_PLT32"),
            (elf::R_X86_64_COPY, "R_X86_64_COPY"),
            (elf::R_X86_64_GLOB_DAT, "R_X86_64_GLOB_DAT"),
            (elf::R_X86_64_JUMP_SLOT, "R_X86_64_JUMP_SLOT"),
            (elf::R_X86_64_RELATIVE, "R_X86_64_RELATIVE"),
            (elf::R_X86_64_GOTPCREL, "R_X86_64_GOTPCREL"),
            (elf::R_X86_64_32, "R_X86_64_32"),
            (elf::R_X86_64_32S, "R_X86_64_32S"),
            (elf::R_X86_64_DTPMOD64, "R_X86_64_DTPMOD64"),
            (elf::R_X86_64_DTPOFF64, "R_X86_64_DTPOFF64"),
            (elf::R_X86_64_TPOFF64, "R_X86_64_TPOFF64"),
            (elf::R_X86_64_IRELATIVE, "R_X86_64_IRELATIVE"),
            (elf::R_X86_64_RELATIVE64, "R_X86_64_RELATIVE64"),
        ],
        Machine::Arm => &[
            (elf::R_ARM_NONE, "R_ARM_NONE"),
            (elf::R_ARM_ABS32, "R_ARM_ABS32"),
            (elf::R_ARM_REL32, "R_ARM_REL32"),
            (elf::R_ARM_TLS_DTPMOD32, "R_ARM_TLS_DTPMOD32"),
            (elf::R_ARM_TLS_DTPOFF32, "R_ARM_TLS_DTPOFF32"),
            (elf::R_ARM_TLS_TPOFF32, "R_ARM_TLS_TPOFF32"),
            (elf::R_ARM_COPY, "R_ARM_COPY"),
            (elf::R_ARM_GLOB_DAT, "R_ARM_GLOB_DAT"),
            (elf::R_ARM_JUMP_SLOT, "R_ARM_JUMP_SLOT"),
            (elf::R_ARM_RELATIVE, "R_ARM_RELATIVE"),
            (elf::R_ARM_IRELATIVE, "R_ARM_IRELATIVE"),
        ],
        Machine::Aarch64 => &[
            (elf::R_AARCH64_NONE, "R_AARCH64_NONE"),
            (elf::R_AARCH64_ABS64, "R_AARCH64_ABS64"),
            (elf::R_AARCH64_COPY, "R_AARCH64_COPY"),
            (elf::R_AARCH64_GLOB_DAT, "R_AARCH64_GLOB_DAT"),
            (elf::R_AARCH64_JUMP_SLOT, "R_AARCH64_JUMP_SLOT"),
            (elf::R_AARCH64_RELATIVE, "R_AARCH64_RELATIVE"),
            (elf::R_AARCH64_TLS_TPREL, "R_AARCH64_TLS_TPREL"),
            (elf::R_AARCH64_IRELATIVE, "R_AARCH64_IRELATIVE"),
        ],
    };
    known
        .iter()
        .find(|(t, _)| *t == r_type)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("{}_reloc_{r_type}", machine.name()))
}
