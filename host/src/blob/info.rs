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

/// The reference C loader `blob export` writes beside the header.
pub const EXAMPLE_LOADER: &str = include_str!("../../../examples/blob_loader.c");

/// Writes `blob.bin`, `relocs.bin`, `revenant_blob.h`, `blob_loader.c`,
/// `blob.json` and `SHA256SUMS` into `dir`: enough for another tool to
/// load and drive the blob without revenant.
pub fn export(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let b = &EMBEDDED;
    let relocs: Vec<u8> = b.relocs.iter().flat_map(|r| r.to_le_bytes()).collect();
    let header = super::header();
    let files: [(&str, &[u8], &str); 5] = [
        ("blob.bin", b.image, "the flat image; load it at a page-aligned base, followed by bss_size zero bytes"),
        (
            "relocs.bin",
            &relocs,
            "little-endian u32 offsets; add the load base to the word_size-byte little-endian word at each",
        ),
        (
            "revenant_blob.h",
            header.as_bytes(),
            "the ABI for C: every struct with each field's meaning and static asserts on size, alignment and offsets, the constants, the exit codes, this blob's facts, the entry's stack rule and the signal frame's layout",
        ),
        (
            "blob.elf",
            b.elf,
            "the ELF blob.bin was flattened from, with symbols and line tables: in gdb, `add-symbol-file blob.elf -o BASE` where BASE is the load base",
        ),
        (
            "blob_loader.c",
            EXAMPLE_LOADER.as_bytes(),
            "a reference loader in C: the self-test, and a one-page one-thread restore; its first comment says how to build and run it",
        ),
    ];
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
    };
    let mut sums = String::new();
    let mut listed = serde_json::Map::new();
    for (name, data, what) in files {
        write(name, data)?;
        let sum = hex(&Sha256::digest(data));
        sums += &format!("{sum}  {name}\n");
        listed.insert(name.into(), json!({"sha256": sum, "what": what}));
    }
    listed.insert("blob.json".into(), json!({"what": "this description"}));
    listed.insert(
        "SHA256SUMS".into(),
        json!({"what": "sha256 of every other file, blob.json included, as sha256sum -c reads them"}),
    );
    let mut desc = info_json();
    desc["files"] = Value::Object(listed);
    desc["byte_order"] = json!("little");
    desc["loading"] = json!([
        "map map_size bytes read+write at a page-aligned base; copy blob.bin to its start (the rest is zero)",
        "apply relocs.bin",
        "make [base, base + data_start) read+execute; on ARM flush the instruction cache (cacheflush)",
        "write the argument block (abi) at a multiple of BLOCK_ALIGN, with mapped_size the bytes readable there",
        "for a restore: unregister the C library's rseq area (preconditions)",
        "switch to a stack of your own that follows entry.stack_rule",
        "call base + entry as extern \"C\" fn(*const Header) -> ! with the argument block",
        "read Status records from status_fd (completion) and the process's end",
    ]);
    let frame = super::sigframe::frame();
    desc["entry"] = json!({
        "symbol": abi::ENTRY_SYMBOL,
        "signature": "extern \"C\" fn(*const Header) -> !",
        "stack_align": frame.stack_align,
        "stack_rule": match frame.stack_align {
            16 => "x86_64: rsp % 16 == 0 at the call (8 on arrival, after the return address), as the SysV ABI has it",
            _ => "ARM: sp % 8 == 0 at the call (AAPCS); ARM state (the entry is ARM code, not Thumb)",
        },
        "min_stack": abi::MIN_STACK,
        "checked": "a misaligned stack ends the blob with BadStack (207) before anything else runs; no status record",
    });
    desc["preconditions"] = preconditions();
    desc["completion"] = json!({
        "record": "Status",
        "size": size_of::<abi::Status>(),
        "magic": abi::STATUS_MAGIC,
        "protocol": [
            "the loader passes a writable fd (a pipe's write end) as Header::status_fd, or -1 for none",
            "the blob writes each Status record with one 8-byte write: {magic = STATUS_MAGIC, code}",
            "a restore writes code STATUS_RESTORED (0) right before its final rt_sigreturn, after the first thread's state is complete, then closes close_fds (list status_fd there so the loader sees end of file)",
            "the STATUS_RESTORED record is written after the thread's seccomp filters are in place: a filter that forbids write(2) kills the task there unless the loader holds it with PTRACE_O_SUSPEND_SECCOMP, as revenant does",
            "a self-test writes its result (below 128) right before it exits with it",
            "any refusal or failure after the header's checks writes its ExitCode (200 and up) right before exiting with it; the other threads of a restore report Seccomp or Creds failures the same way while the fd is open",
            "a header that fails its checks (magic, version, arch, flags, total_size, mapped_size), a misaligned block and a misaligned stack get no record: only the exit code tells",
            "read records until end of file; the last one is the outcome, and the process's exit status agrees with it (after STATUS_RESTORED the process is the restored program)",
        ],
    });
    desc["sigframe"] = json!({
        "arch": b.arch,
        "at": "Thread::sigframe: the stack pointer value the arch's rt_sigreturn expects",
        "layout": frame.layout,
        "size": frame.size,
        "align": frame.align,
        "fields": frame.slots.iter().map(|s| json!({"name": s.name, "offset": s.offset, "size": s.size, "doc": s.doc})).collect::<Vec<_>>(),
        "values": frame.values.iter().map(|(n, v, d)| json!({"name": n, "value": v, "doc": d})).collect::<Vec<_>>(),
    });
    desc["selftest"] = json!({
        "formula": "exit code = (((input + 3) * 5) ^ 0x55) % 128, in wrapping u32 arithmetic; also the Status::code",
        "input": abi::SELFTEST_EXAMPLE_INPUT,
        "expected": abi::selftest_exit_code(abi::SELFTEST_EXAMPLE_INPUT),
    });
    desc["abi"] = abi_json();
    let text = serde_json::to_string_pretty(&desc)? + "\n";
    write("blob.json", text.as_bytes())?;
    sums += &format!("{}  blob.json\n", hex(&Sha256::digest(text.as_bytes())));
    write("SHA256SUMS", sums.as_bytes())
}

/// What must hold when the blob is entered, and what happens otherwise.
fn preconditions() -> Value {
    let rule = |rule: &str, broken: Option<abi::ExitCode>| match broken {
        Some(c) => json!({"rule": rule, "checked": true, "exit_code": c as u8, "exit_name": format!("{c:?}")}),
        None => json!({"rule": rule, "checked": false}),
    };
    use abi::ExitCode::*;
    json!([
        rule("the blob is mapped, copied, relocated and its code made executable (loading)", None),
        rule("the argument block's address is a multiple of BLOCK_ALIGN (8)", Some(BadLayout)),
        rule("Header::magic is MAGIC", Some(BadMagic)),
        rule("Header::version is this blob's abi_version", Some(BadVersion)),
        rule("Header::arch is this blob's arch", Some(BadArch)),
        rule("Header::flags is zero (no feature bits are defined in this version)", Some(BadLayout)),
        rule(
            "sizeof(Header) <= total_size <= mapped_size, and mapped_size bytes are readable at the block",
            Some(NotMapped)
        ),
        rule("every span lies inside the block, aligned for its element type", Some(BadLayout)),
        rule("reserved fields (pad) and undefined bits (Restore::flags, Vma::how) are zero", Some(BadLayout)),
        rule("the stack pointer at the call follows entry.stack_rule", Some(BadStack)),
        rule(
            "restore: the bootstrap area [bootstrap_start, bootstrap_start + bootstrap_len) holds all the blob uses until rt_sigreturn, as the rest of [0, task_size) is unmapped: its map_size bytes, the argument block, its stack, each Thread::sigframe's frame, THREAD_STACK bytes below each other thread's Thread::stack, the targets of Restore::park (the blob checks its code, data and block)",
            Some(NotMapped)
        ),
        rule(
            "restore: the stack has MIN_STACK bytes below the entry stack pointer, inside the bootstrap area",
            Some(BadStack)
        ),
        rule(
            "restore: no rseq area is registered for the thread (glibc registers one per thread: unregister it with rseq(RSEQ_FLAG_UNREGISTER), glibc 2.35+ exports __rseq_offset and __rseq_size)",
            Some(RseqRegistered)
        ),
        rule(
            "restore: the process is single-threaded (the blob replaces the address space other threads run in)",
            None
        ),
        rule(
            "restore: task_size is at most the kernel's TASK_SIZE for the process (the sigframe values give the usual one)",
            Some(Unmap)
        ),
        rule("restore: the VMAs it maps do not overlap the bootstrap area", Some(BadLayout)),
        rule("restore: no signal handler of the loader runs meanwhile (the blob blocks every signal first)", None),
        rule(
            "restore: every Thread::sigframe holds a frame as sigframe describes; the kernel kills the task with SIGSEGV on a frame it refuses",
            None
        ),
    ])
}

fn abi_json() -> Value {
    let structs: Vec<Value> = abi::STRUCTS
        .iter()
        .map(|s| {
            let fields: Vec<Value> = s
                .fields
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name, "offset": f.offset, "size": f.size, "align": f.align,
                        "type": f.ty, "elements": f.elem, "doc": super::header::plain(f.doc),
                    })
                })
                .collect();
            json!({"name": s.name, "size": s.size, "align": s.align, "doc": super::header::plain(s.doc), "fields": fields})
        })
        .collect();
    let exit_codes: Vec<Value> = abi::ExitCode::ALL
        .iter()
        .map(|c| {
            json!({"code": *c as u8, "name": format!("{c:?}"), "c_name": super::header::exit_name(*c), "meaning": c.describe()})
        })
        .collect();
    let constants: Vec<Value> = abi::CONSTANTS
        .iter()
        .map(|(name, value, doc)| json!({"name": name, "c_name": format!("REVENANT_{name}"), "value": value, "doc": doc}))
        .collect();
    json!({
        "magic": abi::MAGIC,
        "version": abi::VERSION,
        "version_rules": [
            "abi_version names the whole contract: every struct's layout and field meanings, the constants, the exit codes, the entry rules, the sigframe layout and the Status protocol; any change to any of them bumps it",
            "there are no minor versions: a blob accepts exactly its own version and refuses any other with BadVersion (201) before reading past the header",
            "a loader accepts exactly the version it was written for: compare abi_version (REVENANT_VERSION in the header) before loading",
            "reserved fields are zero and Header::flags holds only bits the version defines (none in version 4); the blob refuses anything else with BadLayout (203), so they can gain a meaning later without a loader's garbage being taken for it",
            "exit codes below 128 are self-test results, 200 and up ExitCodes; a loader treats an unknown code of 200 or more as a failure",
        ],
        "arches": {"x86_64": abi::Arch::X86_64 as u32, "arm": abi::Arch::Arm as u32},
        "commands": {"SelfTest": abi::Command::SelfTest as u32, "Restore": abi::Command::Restore as u32},
        "log_levels": {"Error": 1, "Warn": 2, "Info": 3, "Debug": 4},
        "counts": {"structs": structs.len(), "constants": constants.len(), "exit_codes": exit_codes.len()},
        "structs": structs,
        "constants": constants,
        "exit_codes": exit_codes,
        "block": "a Header at offset 0 of a BLOCK_ALIGN-aligned address; every Span is {offset from the block start, element count}; arrays are 8-byte aligned; total_size covers everything; little-endian",
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
