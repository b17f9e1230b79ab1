//! x86_64's registers at dump: read with PTRACE_GETREGSET (the XSAVE
//! area where the CPU has one), the GDT TLS slots, the syscall restart
//! rewrite, and the images' `thread_info` built from them.

use anyhow::{Context, Result, bail};
use nix::libc::{self, c_void, user_regs_struct};
use revenant_images::messages::{
    CoreEntry, Mtype, ThreadInfoX86, UserDescT, UserX86FpregsEntry, UserX86RegsEntry, UserX86XsaveEntry,
};

use crate::regs::X86Fpu;

/// General registers as ptrace hands them out.
pub type Gp = user_regs_struct;
/// FPU and vector state.
pub type Fpu = X86Fpu;
/// The TLS state: the GDT's three TLS slots (the FS base is in [`Gp`]).
pub type Tls = Vec<UserDesc>;

const NT_PRSTATUS: i32 = 1;
const NT_PRFPREG: i32 = 2;
const NT_X86_XSTATE: i32 = 0x202;

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
const EINTR: i64 = 4;

/// Size of a `syscall` instruction: an interrupted call restarts there.
const SYSCALL_INSN: u64 = 2;

/// Reads regset `nt` of `tid` into `buf`; returns the bytes the kernel filled.
fn getregset(tid: i32, nt: i32, buf: &mut [u8]) -> Result<usize, nix::errno::Errno> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut c_void, iov_len: buf.len() };
    // SAFETY: the kernel writes at most iov_len bytes into buf, which we
    // own, and updates iov_len to the amount written.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, nt as usize as *mut c_void, &mut iov as *mut _) };
    if r < 0 { Err(nix::errno::Errno::last()) } else { Ok(iov.iov_len) }
}

/// General registers.
pub fn gpregs(tid: i32) -> Result<user_regs_struct> {
    let mut buf = [0u8; size_of::<user_regs_struct>()];
    let n = getregset(tid, NT_PRSTATUS, &mut buf).with_context(|| format!("NT_PRSTATUS of task {tid}"))?;
    if n != buf.len() {
        bail!("NT_PRSTATUS of task {tid}: {n} bytes, expected {}", buf.len());
    }
    // SAFETY: user_regs_struct is plain integers; every bit pattern is valid
    // and buf has exactly its size.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const user_regs_struct) })
}

/// Sets the general registers.
pub fn set_gpregs(tid: i32, r: &Gp) -> Result<()> {
    nix::sys::ptrace::setregs(nix::unistd::Pid::from_raw(tid), *r).with_context(|| format!("setting registers of task {tid}"))
}

/// The images' machine type.
pub const MTYPE: Mtype = Mtype::X8664;

/// The length of the blob's system call instruction (`syscall`; `svc 0`
/// in ARM state, the blob being ARM code).
pub const BLOB_SYSCALL_LEN: u64 = 2;

pub fn pc(r: &Gp) -> u64 {
    r.rip
}

/// The first argument register.
pub fn arg0(r: &Gp) -> u64 {
    r.rdi
}

/// Nothing to do: `int3` reports with the instruction pointer after it.
pub fn step_over_trap(_r: &mut Gp) -> bool {
    false
}

pub fn sp(r: &Gp) -> u64 {
    r.rsp
}

/// The arch part of a thread's core image: the machine type and what a
/// sigreturn frame needs, with the TLS slots and clear-tid address.
pub fn core_regs(r: &Gp, fpu: &Fpu, tls: &Tls, clear_tid_addr: u64) -> CoreEntry {
    CoreEntry {
        mtype: MTYPE as i32,
        thread_info: Some(ThreadInfoX86 {
            clear_tid_addr,
            gpregs: gpregs_entry(r),
            fpregs: fpregs_entry(fpu),
            tls: tls.iter().map(tls_entry).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The FPU and vector state as ptrace hands it out: the whole XSAVE area
/// in the standard format where the CPU has one (true), else the 512-byte
/// FXSAVE area (false).
pub fn fpu_raw(tid: i32) -> Result<(Vec<u8>, bool)> {
    let mut buf = vec![0u8; 64 * 1024];
    match getregset(tid, NT_X86_XSTATE, &mut buf) {
        Ok(n) if n >= 576 => {
            buf.truncate(n);
            Ok((buf, true))
        }
        Ok(_) | Err(nix::errno::Errno::ENODEV) | Err(nix::errno::Errno::EINVAL) => {
            buf.truncate(512);
            let n = getregset(tid, NT_PRFPREG, &mut buf).with_context(|| format!("NT_PRFPREG of task {tid}"))?;
            if n != 512 {
                bail!("NT_PRFPREG of task {tid}: {n} bytes, expected 512");
            }
            Ok((buf, false))
        }
        Err(e) => Err(e).with_context(|| format!("NT_X86_XSTATE of task {tid}")),
    }
}

/// The FPU and vector state split into the legacy area, the feature bitmap
/// and the components at the offsets CPUID gives for the standard format.
pub fn fpregs(tid: i32) -> Result<Fpu> {
    let (buf, xsave) = fpu_raw(tid)?;
    let mut legacy = [0u8; 512];
    legacy.copy_from_slice(&buf[..512]);
    if !xsave {
        return Ok(X86Fpu { legacy, xstate_bv: 0b11, components: Vec::new() });
    }
    let xstate_bv = u64::from_le_bytes(buf[512..520].try_into().expect("8 bytes"));
    let mut components = Vec::new();
    for i in 2..63u32 {
        if xstate_bv & (1 << i) == 0 {
            continue;
        }
        let (off, len) = component(i);
        if len == 0 || off + len > buf.len() {
            continue;
        }
        components.push((i, buf[off..off + len].to_vec()));
    }
    Ok(X86Fpu { legacy, xstate_bv, components })
}

/// Offset and size of XSAVE component `i` in the standard format.
pub fn component(i: u32) -> (usize, usize) {
    let r = std::arch::x86_64::__cpuid_count(0xd, i);
    (r.ebx as usize, r.eax as usize)
}

/// Rewrites registers of a thread stopped on its way out of an interrupted
/// system call the way the kernel would have restarted it, so the restored
/// thread repeats the call. Where the kernel would have used a restart
/// block, which cannot be carried over, `poll` is repeated with its own
/// arguments (its timeout starts again, as if the freeze had lasted
/// longer; an EINTR there ends the loop of programs such as `script`),
/// and the others (sleeps, timed futex waits) see EINTR.
pub fn restart_syscall(r: &mut user_regs_struct) {
    if (r.orig_rax as i64) < 0 {
        return;
    }
    match -(r.rax as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = r.orig_rax;
            r.rip -= SYSCALL_INSN;
        }
        ERESTART_RESTARTBLOCK if r.orig_rax == NR_POLL => {
            r.rax = r.orig_rax;
            r.rip -= SYSCALL_INSN;
        }
        ERESTART_RESTARTBLOCK => r.rax = (-EINTR) as u64,
        _ => {}
    }
}

/// x86_64's `poll`, whose interruption always leaves a restart block.
const NR_POLL: u64 = 7;

/// A GDT TLS slot (x86 `struct user_desc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserDesc {
    pub entry_number: u32,
    pub base_addr: u32,
    pub limit: u32,
    /// seg_32bit, contents (2 bits), read_exec_only, limit_in_pages,
    /// seg_not_present, useable: the kernel's bitfield word.
    pub bits: u32,
}

impl UserDesc {
    pub fn seg_32bit(&self) -> bool {
        self.bits & 1 != 0
    }
    pub fn contents(&self) -> u32 {
        (self.bits >> 1) & 3
    }
    pub fn read_exec_only(&self) -> bool {
        self.bits & (1 << 3) != 0
    }
    pub fn limit_in_pages(&self) -> bool {
        self.bits & (1 << 4) != 0
    }
    pub fn seg_not_present(&self) -> bool {
        self.bits & (1 << 5) != 0
    }
    pub fn usable(&self) -> bool {
        self.bits & (1 << 6) != 0
    }
}

/// The three TLS slots of the GDT (entries 12..14 on x86_64).
pub fn tls(tid: i32) -> Result<Tls> {
    const GDT_ENTRY_TLS_MIN: u32 = 12;
    const PTRACE_GET_THREAD_AREA: libc::c_uint = 25;
    let mut out = Vec::new();
    for e in GDT_ENTRY_TLS_MIN..GDT_ENTRY_TLS_MIN + 3 {
        let mut d = [0u32; 4];
        // SAFETY: PTRACE_GET_THREAD_AREA writes one 16-byte user_desc to
        // `data`.
        let r = unsafe { libc::ptrace(PTRACE_GET_THREAD_AREA, tid, e as usize as *mut c_void, d.as_mut_ptr()) };
        if r < 0 {
            return Err(nix::errno::Errno::last()).with_context(|| format!("PTRACE_GET_THREAD_AREA {e} of task {tid}"));
        }
        out.push(UserDesc { entry_number: d[0], base_addr: d[1], limit: d[2], bits: d[3] });
    }
    Ok(out)
}

/// The images' general registers: CRIU names them without the `r` and
/// records the mode (1, native 64-bit) that decides how it restores them.
pub fn gpregs_entry(r: &user_regs_struct) -> UserX86RegsEntry {
    UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(1),
        ..Default::default()
    }
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn u64s(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

/// The images' FPU state: CRIU splits the raw XSAVE area into the legacy
/// fields and one word list per component, which it reassembles at restore.
pub fn fpregs_entry(f: &X86Fpu) -> UserX86FpregsEntry {
    let l = &f.legacy;
    let u16_at = |i: usize| u16::from_le_bytes([l[i], l[i + 1]]) as u32;
    let comp = |n: u32| f.components.iter().find(|(i, _)| *i == n).map(|(_, b)| b.as_slice()).unwrap_or(&[]);
    UserX86FpregsEntry {
        cwd: u16_at(0),
        swd: u16_at(2),
        twd: u16_at(4),
        fop: u16_at(6),
        rip: u64s(&l[8..16])[0],
        rdp: u64s(&l[16..24])[0],
        mxcsr: u32s(&l[24..28])[0],
        mxcsr_mask: u32s(&l[28..32])[0],
        st_space: u32s(&l[32..160]),
        xmm_space: u32s(&l[160..416]),
        padding: vec![],
        xsave: Some(UserX86XsaveEntry {
            xstate_bv: f.xstate_bv,
            ymmh_space: u32s(comp(2)),
            bndreg_state: u64s(comp(3)),
            bndcsr_state: u64s(comp(4)),
            opmask_reg: u64s(comp(5)),
            zmm_upper: u64s(comp(6)),
            hi16_zmm: u64s(comp(7)),
            pkru: u32s(comp(9)),
            cet: None,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A TLS slot as the images spell it: the kernel's bitfield word as
/// separate flags.
pub fn tls_entry(d: &UserDesc) -> UserDescT {
    UserDescT {
        entry_number: d.entry_number,
        base_addr: d.base_addr,
        limit: d.limit,
        seg_32bit: d.seg_32bit(),
        contents_h: d.contents() & 2 != 0,
        contents_l: d.contents() & 1 != 0,
        read_exec_only: d.read_exec_only(),
        limit_in_pages: d.limit_in_pages(),
        seg_not_present: d.seg_not_present(),
        usable: d.bits & (1 << 6) != 0,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rax: i64, orig: i64) -> user_regs_struct {
        // SAFETY: all-zero integers are a valid user_regs_struct.
        let mut r: user_regs_struct = unsafe { std::mem::zeroed() };
        r.rax = rax as u64;
        r.orig_rax = orig as u64;
        r.rip = 0x1002;
        r
    }

    #[test]
    fn interrupted_syscalls_are_rewound_or_fail_with_eintr() {
        for e in [512, 513, 514] {
            let mut r = regs(-e, 7);
            restart_syscall(&mut r);
            assert_eq!((r.rax, r.rip), (7, 0x1000));
        }
        let mut r = regs(-516, 35);
        restart_syscall(&mut r);
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1002));
        // poll is repeated rather than failed.
        let mut r = regs(-516, 7);
        restart_syscall(&mut r);
        assert_eq!((r.rax, r.rip), (7, 0x1000));
        // Not in a syscall, or an ordinary result: untouched.
        for (rax, orig) in [(-512, -1), (-4, 7), (3, 7)] {
            let mut r = regs(rax, orig);
            restart_syscall(&mut r);
            assert_eq!((r.rax as i64, r.rip), (rax, 0x1002));
        }
    }
}
