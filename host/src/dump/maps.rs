//! Memory areas from `/proc/PID/smaps`, classified the way CRIU's images
//! describe them: `MAP_*` flags, `VMA_*` status bits and `1 << MADV_*`
//! bits from the `VmFlags` line.

use anyhow::{Context, Result, bail};

/// `VMA_*` status bits of CRIU's images.
pub mod status {
    pub const REGULAR: u32 = 1 << 0;
    pub const STACK: u32 = 1 << 1;
    pub const VSYSCALL: u32 = 1 << 2;
    pub const VDSO: u32 = 1 << 3;
    pub const HEAP: u32 = 1 << 5;
    pub const FILE_PRIVATE: u32 = 1 << 6;
    pub const FILE_SHARED: u32 = 1 << 7;
    pub const ANON_SHARED: u32 = 1 << 8;
    pub const ANON_PRIVATE: u32 = 1 << 9;
    pub const SYSVIPC: u32 = 1 << 10;
    pub const VVAR: u32 = 1 << 12;
    pub const MEMFD: u32 = 1 << 14;
}

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
pub const MAP_SHARED: u32 = 0x01;
pub const MAP_PRIVATE: u32 = 0x02;
pub const MAP_DROPPABLE: u32 = 0x08;
pub const MAP_ANONYMOUS: u32 = 0x20;
pub const MAP_GROWSDOWN: u32 = 0x100;
pub const MAP_LOCKED: u32 = 0x2000;
pub const MAP_NORESERVE: u32 = 0x4000;
pub const MAP_HUGETLB: u32 = 0x40000;

/// One line of smaps plus its `VmFlags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// Offset into the file, in bytes.
    pub pgoff: u64,
    pub prot: u32,
    pub flags: u32,
    pub status: u32,
    pub madv: u64,
    /// Device (major, minor) and inode of a file mapping.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The path, `[heap]`-style name, or empty.
    pub name: String,
    /// The `VmFlags` two-letter codes, for checks made after parsing.
    pub vmflags: Vec<String>,
}

impl Vma {
    pub fn is(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    pub fn is_file(&self) -> bool {
        self.status & (status::FILE_PRIVATE | status::FILE_SHARED) != 0
    }

    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE
    }
}

pub const PAGE: u64 = 4096;

/// Parses smaps text (of process `pid`, for messages). `[vvar]` and
/// `[vvar_vclock]` pieces next to each other become one area, as CRIU
/// writes them.
pub fn parse_smaps(text: &str, pid: i32) -> Result<Vec<Vma>> {
    let mut out: Vec<Vma> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let what = || format!("/proc/{pid}/smaps line {}", n + 1);
        if let Some(rest) = line.strip_prefix("VmFlags:") {
            let v = out.last_mut().with_context(|| format!("{}: VmFlags before any area", what()))?;
            apply_vmflags(v, rest);
            continue;
        }
        // Header lines start with "start-end "; the others with "Key:".
        let first = line.split_whitespace().next().unwrap_or("");
        if first.ends_with(':') || first.is_empty() {
            continue;
        }
        out.push(parse_header(line).with_context(what)?);
    }
    // ARM's page of kernel sigreturn code: every process gets one at exec,
    // the restored ones too, and handlers installed with a restorer (as
    // glibc's and musl's are) never return through it.
    out.retain(|v| v.name != "[sigpage]");
    merge_vvar(out, pid)
}

fn parse_header(line: &str) -> Result<Vma> {
    let mut it = line.splitn(6, ' ');
    let range = it.next().context("no range")?;
    let perms = it.next().context("no perms")?;
    let off = it.next().context("no offset")?;
    let dev = it.next().context("no device")?;
    let inode = it.next().context("no inode")?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-').context("bad range")?;
    let start = u64::from_str_radix(s, 16).with_context(|| format!("start {s:?}"))?;
    let end = u64::from_str_radix(e, 16).with_context(|| format!("end {e:?}"))?;
    let pgoff = u64::from_str_radix(off, 16).with_context(|| format!("offset {off:?}"))?;
    let (ma, mi) = dev.split_once(':').context("bad device")?;
    let dev = (
        u32::from_str_radix(ma, 16).with_context(|| format!("device {dev:?}"))?,
        u32::from_str_radix(mi, 16).with_context(|| format!("device {dev:?}"))?,
    );
    let inode: u64 = inode.parse().with_context(|| format!("inode {inode:?}"))?;
    let p = perms.as_bytes();
    if p.len() != 4 {
        bail!("perms {perms:?}");
    }
    let mut prot = 0;
    if p[0] == b'r' {
        prot |= PROT_READ;
    }
    if p[1] == b'w' {
        prot |= PROT_WRITE;
    }
    if p[2] == b'x' {
        prot |= PROT_EXEC;
    }
    let shared = p[3] == b's';
    let mut flags = if shared { MAP_SHARED } else { MAP_PRIVATE };
    let mut status = status::REGULAR;
    // Shared anonymous memory shows as a deleted /dev/zero or a SysV
    // segment on the kernel's internal shmem mount (device 0:N, inode =
    // the segment's id); it is not a file to reopen. Its file mapped
    // privately (through /proc/PID/map_files) is a memfd's private
    // mapping, as CRIU writes the file: a memfd named /dev/zero.
    let sysv = name.starts_with("/SYSV") && name.ends_with(" (deleted)") && dev.0 == 0;
    let zero = name == "/dev/zero (deleted)" && dev.0 == 0;
    let shmem = (zero && shared) || sysv;
    let file = name.starts_with('/') && inode != 0 && !shmem;
    match name.as_str() {
        // ARM's vector page (the kuser helpers) is, like x86's vsyscall
        // page, the kernel's and in every process at the same address.
        "[vsyscall]" | "[vectors]" => {
            status = status::VSYSCALL;
        }
        "[vdso]" => status |= status::VDSO,
        "[vvar]" | "[vvar_vclock]" => status |= status::VVAR,
        "[heap]" => status |= status::HEAP,
        _ => {}
    }
    if file {
        status |= if shared { status::FILE_SHARED } else { status::FILE_PRIVATE };
    } else {
        flags |= MAP_ANONYMOUS;
        status |= if shared { status::ANON_SHARED } else { status::ANON_PRIVATE };
    }
    if sysv {
        status |= status::SYSVIPC;
    }
    if file && dev.0 == 0 && (name.starts_with("/memfd:") || zero) {
        status |= status::MEMFD;
    }
    Ok(Vma { start, end, pgoff, prot, flags, status, madv: 0, dev, inode, name, vmflags: Vec::new() })
}

fn apply_vmflags(v: &mut Vma, text: &str) {
    for tok in text.split_whitespace() {
        let madv_bit = |m: u32| 1u64 << m;
        match tok {
            "gd" => v.flags |= MAP_GROWSDOWN,
            "lo" => v.flags |= MAP_LOCKED,
            "nr" => v.flags |= MAP_NORESERVE,
            "ht" => v.flags |= MAP_HUGETLB,
            "dp" => v.flags |= MAP_DROPPABLE,
            "sr" => v.madv |= madv_bit(2),  // MADV_SEQUENTIAL
            "rr" => v.madv |= madv_bit(1),  // MADV_RANDOM
            "dc" => v.madv |= madv_bit(10), // MADV_DONTFORK
            "dd" => v.madv |= madv_bit(16), // MADV_DONTDUMP
            "mg" => v.madv |= madv_bit(12), // MADV_MERGEABLE
            "hg" => v.madv |= madv_bit(14), // MADV_HUGEPAGE
            "nh" => v.madv |= madv_bit(15), // MADV_NOHUGEPAGE
            "wf" => v.madv |= madv_bit(18), // MADV_WIPEONFORK
            _ => {}
        }
        v.vmflags.push(tok.to_string());
    }
    // A droppable mapping is private in nature but is not MAP_PRIVATE.
    if v.flags & MAP_DROPPABLE != 0 {
        v.flags &= !MAP_PRIVATE;
    }
}

/// `[vvar]` and `[vvar_vclock]` are one area in the images; separate vvar
/// pieces that do not touch cannot be described.
fn merge_vvar(vmas: Vec<Vma>, pid: i32) -> Result<Vec<Vma>> {
    let mut out: Vec<Vma> = Vec::with_capacity(vmas.len());
    for v in vmas {
        if v.is(status::VVAR)
            && let Some(prev) = out.last_mut()
            && prev.is(status::VVAR)
        {
            if prev.end != v.start {
                bail!("process {pid}: vvar areas {:#x} and {:#x} are not adjacent", prev.start, v.start);
            }
            prev.end = v.end;
            continue;
        }
        out.push(v);
    }
    Ok(out)
}

/// What a dump cannot describe yet, named.
pub fn check_supported(v: &Vma, pid: i32) -> Result<()> {
    let at = || format!("process {pid}: memory area {:#x}-{:#x} {:?}", v.start, v.end, v.name);
    if v.vmflags.iter().any(|f| f == "ss") {
        bail!("{}: shadow stacks are not supported yet", at());
    }
    // A restore would map it unsealed: the program could then change what
    // it made sure nobody could.
    if v.vmflags.iter().any(|f| f == "sl") {
        bail!("{}: sealed (mseal) memory is not supported yet", at());
    }
    // A restore would lock it populated (MAP_LOCKED), or not at all.
    if v.vmflags.iter().any(|f| f == "lf") {
        bail!("{}: memory locked on fault (MLOCK_ONFAULT) is not supported yet", at());
    }
    if v.vmflags.iter().any(|f| f == "io" || f == "pf") && !v.is(status::VVAR) && !v.is(status::FILE_SHARED) {
        bail!("{}: an I/O or PFN mapping cannot be dumped", at());
    }
    if v.is(status::SYSVIPC) {
        return Ok(());
    }
    if v.flags & MAP_HUGETLB != 0 {
        bail!("{}: hugetlb mappings are not supported yet", at());
    }
    if v.name == "[uprobes]" {
        bail!("{}: uprobes areas are not supported", at());
    }
    // The name (PR_SET_VMA_ANON_NAME) would be lost.
    if v.name.starts_with("[anon:") || v.name.starts_with("[anon_shmem:") {
        bail!("{}: named anonymous memory (PR_SET_VMA_ANON_NAME) is not supported yet", at());
    }
    if v.name.starts_with('[') && v.name.ends_with(']') && v.inode == 0 {
        let known = ["[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[vectors]"];
        if !known.contains(&v.name.as_str()) && !v.name.starts_with("[anon:") && !v.name.starts_with("[stack:") {
            bail!("{}: unknown special area", at());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0001000 r--p 00000000 fe:01 1234                       /usr/bin/true
Size:                  4 kB
VmFlags: rd mr mw me sd
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000004000 r--p 00000000 00:00 0                          [vvar]
VmFlags: rd mr pf io de dd sd
7f0000004000-7f0000006000 r--p 00000000 00:00 0                          [vvar_vclock]
VmFlags: rd mr pf io de dd sd
7f0000006000-7f0000008000 r-xp 00000000 00:00 0                          [vdso]
VmFlags: rd ex mr mw me de sd
7f0000010000-7f0000011000 rw-s 00001000 fe:01 99                         /tmp/a file
VmFlags: rd wr sh mr mw me ms sd
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
VmFlags: ex
";

    #[test]
    fn smaps_classified_like_criu() {
        let v = parse_smaps(SMAPS, 1).unwrap();
        assert_eq!(v.len(), 7);
        assert_eq!(v[0].status, status::REGULAR | status::FILE_PRIVATE);
        assert_eq!((v[0].flags, v[0].prot, v[0].inode), (MAP_PRIVATE, PROT_READ, 1234));
        assert_eq!(v[1].status, status::REGULAR | status::HEAP | status::ANON_PRIVATE);
        assert_eq!(v[1].flags, MAP_PRIVATE | MAP_ANONYMOUS);
        // vvar + vvar_vclock: one area, 6 pages, MADV_DONTDUMP.
        assert_eq!((v[2].start, v[2].end), (0x7f0000000000, 0x7f0000006000));
        assert_eq!(v[2].status, status::REGULAR | status::VVAR | status::ANON_PRIVATE);
        assert_eq!(v[2].madv, 0x10000);
        assert_eq!(v[3].status, status::REGULAR | status::VDSO | status::ANON_PRIVATE);
        assert_eq!(v[4].name, "/tmp/a file");
        assert_eq!((v[4].status, v[4].flags, v[4].pgoff), (status::REGULAR | status::FILE_SHARED, MAP_SHARED, 4096));
        assert_eq!(v[5].flags, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN);
        assert_eq!(v[6].status, status::VSYSCALL | status::ANON_PRIVATE);
        for x in &v {
            check_supported(x, 1).unwrap();
        }
    }

    #[test]
    fn sysv_attachments_carry_their_segment_id() {
        let text = "7f0000010000-7f0000014000 r--s 00000000 00:01 131118 /SYSV00005eed (deleted)\nVmFlags: rd sh\n\
                    7f0000020000-7f0000021000 rw-s 00000000 fe:01 77 /SYSVlookalike (deleted)\nVmFlags: rd wr sh\n";
        let v = parse_smaps(text, 7).unwrap();
        assert_eq!(v[0].status, status::REGULAR | status::ANON_SHARED | status::SYSVIPC);
        assert_eq!((v[0].flags, v[0].inode), (MAP_SHARED | MAP_ANONYMOUS, 131118));
        check_supported(&v[0], 7).unwrap();
        // A deleted regular file with such a name is just that.
        assert_eq!(v[1].status & status::SYSVIPC, 0);
    }

    #[test]
    fn deleted_files_memfds_and_shared_anonymous_memory_are_told_apart() {
        // A deleted file is a file mapping (carried as a ghost file); a
        // memfd (on the shmem device) is a memfd.
        let text = "7f0000010000-7f0000011000 rw-s 00000000 fe:01 5 /tmp/gone (deleted)\nVmFlags: rd wr sh\n\
                    7f0000020000-7f0000021000 rw-s 00000000 00:01 6 /memfd:x (deleted)\nVmFlags: rd wr sh\n";
        let v = parse_smaps(text, 7).unwrap();
        assert!(v[0].is(status::FILE_SHARED) && !v[0].is(status::MEMFD));
        check_supported(&v[0], 7).unwrap();
        assert!(v[1].is(status::MEMFD | status::FILE_SHARED));
        check_supported(&v[1], 7).unwrap();
        // Shared anonymous memory is the deleted /dev/zero, and is dumped;
        // its file mapped privately is a memfd's private mapping.
        let text = "7f0000010000-7f0000011000 rw-s 00000000 00:01 5 /dev/zero (deleted)\nVmFlags: rd wr sh\n\
                    7f0000020000-7f0000023000 rw-p 00001000 00:01 5 /dev/zero (deleted)\nVmFlags: rd wr\n";
        let v = parse_smaps(text, 7).unwrap();
        assert!(v[0].is(status::ANON_SHARED));
        check_supported(&v[0], 7).unwrap();
        assert!(v[1].is(status::MEMFD | status::FILE_PRIVATE) && !v[1].is(status::ANON_PRIVATE));
        assert_eq!((v[1].flags, v[1].pgoff), (MAP_PRIVATE, 0x1000));
        check_supported(&v[1], 7).unwrap();
    }
}
