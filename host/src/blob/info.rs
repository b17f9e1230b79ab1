//! `revenant blob info` and `revenant blob export`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use revenant_blob_abi as abi;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::EMBEDDED;

/// The blob's facts as JSON.
pub fn info_json() -> Value {
    let b = &EMBEDDED;
    let types: serde_json::Map<String, Value> =
        b.reloc_types.iter().map(|(name, n)| (name.to_string(), json!(n))).collect();
    let symbols: serde_json::Map<String, Value> =
        b.symbols.iter().map(|(name, off)| (name.to_string(), json!(off))).collect();
    json!({
        "arch": b.arch,
        "abi_version": abi::VERSION,
        "image_size": b.image.len(),
        "bss_size": b.bss_size,
        "map_size": b.map_size(),
        "data_start": b.data_start,
        "entry": b.entry,
        "entry_symbol": abi::ENTRY_SYMBOL,
        "symbols": symbols,
        "relocations": { "count": b.relocs.len(), "word_size": b.word_size, "types": types },
        "sha256": hex(&Sha256::digest(b.image)),
    })
}

/// The blob's facts for a person.
pub fn info_text() -> String {
    let b = &EMBEDDED;
    let types: Vec<String> = b.reloc_types.iter().map(|(n, c)| format!("{c} {n}")).collect();
    format!(
        "arch        {}\nabi version {}\nimage       {} bytes (+{} bss, {} mapped)\ncode        [0, {:#x}) read+execute, data after\nentry       {:#x} ({})\nrelocations {} ({})\nsha256      {}\n",
        b.arch,
        abi::VERSION,
        b.image.len(),
        b.bss_size,
        b.map_size(),
        b.data_start,
        b.entry,
        abi::ENTRY_SYMBOL,
        b.relocs.len(),
        if types.is_empty() { "none".to_string() } else { types.join(", ") },
        hex(&Sha256::digest(b.image)),
    )
}

/// Writes `blob.bin`, `relocs.bin`, `blob.json` and `revenant_blob.h` into
/// `dir`: enough for another tool to load and drive the blob without
/// revenant.
pub fn export(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let b = &EMBEDDED;
    let relocs: Vec<u8> = b.relocs.iter().flat_map(|r| r.to_le_bytes()).collect();
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
    };
    write("blob.bin", b.image)?;
    write("relocs.bin", &relocs)?;
    write("revenant_blob.h", super::header().as_bytes())?;
    let mut desc = info_json();
    desc["files"] = json!({
        "blob.bin": "the flat image; load it at a page-aligned base, followed by bss_size zero bytes",
        "relocs.bin": "little-endian u32 offsets; add the load base to the word_size-byte little-endian word at each",
        "revenant_blob.h": "the ABI for C: every struct with static asserts on size and offsets, the constants, the exit codes",
    });
    desc["loading"] = json!([
        "map map_size bytes read+write at a page-aligned base; copy blob.bin to its start (the rest is zero)",
        "apply relocs.bin",
        "make [base, base + data_start) read+execute; on ARM flush the instruction cache (cacheflush)",
        "switch to a stack of your own (16-byte aligned on x86_64, 8 on ARM)",
        "call base + entry as extern \"C\" fn(*const Header) -> ! with the argument block",
    ]);
    desc["abi"] = abi_json();
    desc["abi"]["constants"] =
        abi::CONSTANTS.iter().map(|(name, value, doc)| json!({"name": name, "value": value, "doc": doc})).collect();
    let text = serde_json::to_string_pretty(&desc)? + "\n";
    write("blob.json", text.as_bytes())
}

fn abi_json() -> Value {
    let structs: Vec<Value> = abi::STRUCTS
        .iter()
        .map(|(name, size, fields)| {
            let fields: Vec<Value> = fields
                .iter()
                .map(|f| json!({"name": f.name, "offset": f.offset, "size": f.size, "type": f.ty}))
                .collect();
            json!({"name": name, "size": size, "fields": fields})
        })
        .collect();
    let exit_codes: Vec<Value> = abi::ExitCode::ALL
        .iter()
        .map(|c| json!({"code": *c as u8, "name": format!("{c:?}"), "meaning": c.describe()}))
        .collect();
    json!({
        "magic": abi::MAGIC,
        "version": abi::VERSION,
        "arches": {"x86_64": abi::Arch::X86_64 as u32, "arm": abi::Arch::Arm as u32},
        "commands": {"SelfTest": abi::Command::SelfTest as u32, "Restore": abi::Command::Restore as u32},
        "log_levels": {"Error": 1, "Warn": 2, "Info": 3, "Debug": 4},
        "structs": structs,
        "exit_codes": exit_codes,
        "block": "a Header at offset 0; every Span is {offset from the block start, element count}; arrays are 8-byte aligned; total_size covers everything",
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
