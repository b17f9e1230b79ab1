//! `revenant-linker ELF ARCH [OUT_DIR]`: flattens a blob ELF by hand, prints
//! what it found, and with OUT_DIR writes `blob.bin` and `relocs.bin`
//! (little-endian u32 offsets). The build does the same through the library;
//! this is for looking at a blob while debugging.

use std::path::Path;
use std::process::ExitCode;

use revenant_linker::{Machine, flatten};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (elf, arch, out) = match args.as_slice() {
        [elf, arch] => (elf, arch, None),
        [elf, arch, out] => (elf, arch, Some(out)),
        _ => {
            eprintln!("usage: revenant-linker ELF x86_64|arm|aarch64 [OUT_DIR]");
            return ExitCode::from(2);
        }
    };
    match run(Path::new(elf), arch, out.map(Path::new)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("revenant-linker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(elf: &Path, arch: &str, out: Option<&Path>) -> Result<(), String> {
    let machine = Machine::from_name(arch).ok_or_else(|| format!("unknown arch {arch}"))?;
    let data = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let blob = flatten(&data, machine).map_err(|e| format!("{}: {e}", elf.display()))?;
    println!("arch {}", machine.name());
    println!("image {} bytes, bss {} bytes, data from {:#x}", blob.image.len(), blob.bss_size, blob.data_start);
    println!("entry {:#x}", blob.entry);
    for (name, n) in &blob.reloc_types {
        println!("relocations {n} {name}");
    }
    for s in &blob.symbols {
        println!("symbol {:#x} {}", s.offset, s.name);
    }
    if let Some(dir) = out {
        let relocs: Vec<u8> = blob.relocs.iter().flat_map(|r| r.to_le_bytes()).collect();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, bytes) in [("blob.bin", &blob.image), ("relocs.bin", &relocs)] {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}
