//! A whole checkpoint directory, loaded into typed images, and written
//! back.
//!
//! Loading parses every image a restore needs and fails, naming the file,
//! entry and field, on any that is malformed; [`ImageSet::validate`]
//! (validate.rs) then checks what the restore relies on across images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::image::{Image, file_name};
use crate::messages::*;

/// One thread: its TID and its core image.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub tid: u32,
    pub core: CoreEntry,
}

/// One process of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub pstree: PstreeEntry,
    pub ids: TaskKobjIdsEntry,
    pub mm: MmEntry,
    pub pagemap_head: PagemapHead,
    pub pagemap: Vec<PagemapEntry>,
    /// `pages-N.img` for this process's pagemap (read where it is, never
    /// loaded whole).
    pub pages: PathBuf,
    pub fs: FsEntry,
    /// The fds of its files table (`fdinfo-<files_id>.img`, which must
    /// exist, even with no entries).
    pub fds: Vec<FdinfoEntry>,
    /// Leader first, in pstree order.
    pub threads: Vec<Thread>,
}

/// `task_state` of a process that runs.
pub const TASK_ALIVE: u32 = 1;
/// `task_state` of a process that had exited but was not yet waited for.
pub const TASK_DEAD: u32 = 2;
/// `task_state` of a process a signal had stopped (`stop_signo` says which).
pub const TASK_STOPPED: u32 = 3;

/// A zombie: a process that had exited but was not yet waited for. It has
/// only its pstree entry and the core image holding its exit status.
#[derive(Debug, Clone, PartialEq)]
pub struct Zombie {
    /// Its index in `pstree.img`.
    pub entry: usize,
    pub pstree: PstreeEntry,
    pub core: CoreEntry,
}

impl Zombie {
    /// Its core image's name: by its PID, as for every process. Its
    /// `threads` say nothing: CRIU 4.2 never seizes a zombie, and writes
    /// there whatever its memory held (seen: `[965315696]`, `[0]`); its
    /// own restore reads no thread of a zombie.
    pub fn core_name(&self) -> String {
        format!("core-{}.img", self.pstree.pid)
    }
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pstree.pid
    }

    /// The leader's name, from its task core.
    pub fn comm(&self) -> Option<&str> {
        self.threads.first()?.core.tc.as_ref().map(|t| t.comm.as_str())
    }
}

/// A SysV shared memory segment of an IPC namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct ShmSegment {
    pub entry: IpcShmEntry,
    /// Contents stored inline after the entry (empty when in a pagemap).
    pub data: Vec<u8>,
    /// Contents stored as pages: `pagemap-shmem-<id>.img` and its pages.
    pub pages: Option<ShmPages>,
}

/// A segment's pagemap; runs' `vaddr` are offsets into the segment.
#[derive(Debug, Clone, PartialEq)]
pub struct ShmPages {
    pub head: PagemapHead,
    pub entries: Vec<PagemapEntry>,
    /// `pages-N.img` for this pagemap.
    pub pages: PathBuf,
}

/// An IPC namespace's images (`ipcns-var-N.img`, `ipcns-shm-N.img`).
#[derive(Debug, Clone, PartialEq)]
pub struct IpcNamespace {
    pub id: u32,
    pub var: Option<IpcVarEntry>,
    pub shm: Vec<ShmSegment>,
}

/// A ghost file's data, as (offset, bytes) pieces.
pub type GhostData = Vec<(u64, Vec<u8>)>;

/// A checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub dir: PathBuf,
    pub inventory: InventoryEntry,
    /// `files.img` (empty if absent).
    pub files: Vec<FileEntry>,
    /// The live ones, in pstree order: parents before children.
    pub processes: Vec<Process>,
    /// The zombies, in pstree order.
    pub zombies: Vec<Zombie>,
    /// `seccomp.img`, if present.
    pub seccomp: Option<SeccompEntry>,
    /// `timens-N.img` by N.
    pub timens: BTreeMap<u32, TimensEntry>,
    /// The IPC namespaces the tasks' ids name that have images.
    pub ipc: Vec<IpcNamespace>,
    /// `cgroup.img`, if present (CRIU leaves it out when every task was in
    /// its own cgroups: then no task needs moving).
    pub cgroup: Option<CgroupEntry>,
    /// `pipes-data.img`: each pipe's capacity and buffered bytes (empty if
    /// absent).
    pub pipes_data: Vec<(PipeDataEntry, Vec<u8>)>,
    /// `fifo-data.img`: each FIFO's capacity and buffered bytes (empty if
    /// absent).
    pub fifo_data: Vec<(PipeDataEntry, Vec<u8>)>,
    /// The contents of shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`)
    /// by the `shmid` its areas name: `pagemap-shmem-<shmid>.img` and its
    /// pages. An object without one reads as zeros. Memfd objects'
    /// contents are here too, by their inode's `shmid`.
    pub anon_shmem: BTreeMap<u64, ShmPages>,
    /// `memfd.img`: the memfd objects (empty if absent).
    pub memfd_inodes: Vec<MemfdInodeEntry>,
    /// `filelocks.img`: the locks the tree's processes hold (empty if
    /// absent).
    pub file_locks: Vec<FileLockEntry>,
    /// `tty-info.img`: every terminal the tree holds.
    pub tty_info: Vec<TtyInfoEntry>,
    /// `tty-data.img`: bytes queued in pseudoterminal pairs.
    pub tty_data: Vec<TtyDataEntry>,
    /// `sk-queues.img`: messages waiting in sockets, with their bytes
    /// (empty if absent).
    pub sk_queues: Vec<(SkPacketEntry, Vec<u8>)>,
    /// `remap-fpath.img` (empty if absent).
    pub remaps: Vec<RemapFilePathEntry>,
    /// Ghost files by remap id, with their data.
    pub ghosts: BTreeMap<u32, (GhostFileEntry, GhostData)>,
    /// `tcp-stream-INO.img` of each TCP connection, by socket inode: the
    /// entry, then the receive and send queues' bytes.
    pub tcp_streams: BTreeMap<u32, (TcpStreamEntry, Vec<u8>, Vec<u8>)>,
}

/// Whether `s` is a TCP socket with a connection, whose state is in a
/// `tcp-stream` image: connected, or closing with bytes still queued
/// (TCP's states 1 to 9 but for listening, 10, and closed, 7).
pub fn is_tcp_connection(s: &InetSkEntry) -> bool {
    const SOCK_STREAM: u32 = 1;
    const IPPROTO_TCP: u32 = 6;
    s.r#type == SOCK_STREAM && s.proto == IPPROTO_TCP && tcp_state_has_stream(s.state)
}

/// Whether a TCP socket in `state` has a connection a `tcp-stream` image
/// holds.
pub fn tcp_state_has_stream(state: u32) -> bool {
    matches!(state, 1 | 4 | 5 | 8 | 9 | 11)
}

/// TCP's name for `state` (include/net/tcp_states.h).
pub fn tcp_state_name(state: u32) -> &'static str {
    const NAMES: [&str; 12] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];
    NAMES.get(state as usize).copied().unwrap_or("?")
}

/// Reads `name` in `dir`, which must be an image of `kind`.
fn read(dir: &Path, name: &str) -> Result<Image> {
    Image::read(&dir.join(name))
}

fn read_opt(dir: &Path, name: &str) -> Result<Option<Image>> {
    if crate::file::exists(&dir.join(name))? { read(dir, name).map(Some) } else { Ok(None) }
}

fn wrong(name: &str, found: &Image, wanted: &str) -> anyhow::Error {
    anyhow::anyhow!("{name}: a {} image where {wanted} image was expected", found.kind().name())
}

/// Exactly one entry.
fn one<M>(name: &str, mut v: Vec<M>) -> Result<M> {
    match v.len() {
        1 => Ok(v.remove(0)),
        n => bail!("{name}: {n} entries, expected exactly one"),
    }
}

macro_rules! take {
    ($dir:expr, $name:expr, $variant:ident, $what:literal) => {{
        let name: &str = &$name;
        match read($dir, name)? {
            Image::$variant(v) => v,
            other => return Err(wrong(name, &other, $what)),
        }
    }};
}

fn pagemap(dir: &Path, name: &str) -> Result<(PagemapHead, Vec<PagemapEntry>)> {
    match read(dir, name)? {
        Image::Pagemap(head, v) => Ok((head, v)),
        other => Err(wrong(name, &other, "a PAGEMAP")),
    }
}

impl ImageSet {
    /// Loads the checkpoint in `dir`; [`ImageSet::validate`] checks it.
    pub fn load(dir: &Path) -> Result<ImageSet> {
        Self::load_inner(dir).with_context(|| format!("loading the checkpoint in {}", dir.display()))
    }

    fn load_inner(dir: &Path) -> Result<ImageSet> {
        let inventory = one("inventory.img", take!(dir, "inventory.img", Inventory, "an INVENTORY"))?;
        let pstree = take!(dir, "pstree.img", Pstree, "a PSTREE");
        if pstree.is_empty() {
            bail!("pstree.img: no processes");
        }
        let files = match read_opt(dir, "files.img")? {
            Some(Image::Files(v)) => v,
            Some(other) => return Err(wrong("files.img", &other, "a FILES")),
            None => Vec::new(),
        };
        let mut processes = Vec::new();
        let mut zombies = Vec::new();
        for (entry, p) in pstree.into_iter().enumerate() {
            let pid = p.pid;
            // The leader's core is named by the PID, as CRIU's restore
            // opens it: a zombie's thread list may hold anything (see
            // `Zombie::core_name`), a live process's must start with the
            // PID (`validate`).
            let name = format!("core-{pid}.img");
            let core = one(&name, take!(dir, name, Core, "a CORE"))?;
            if core.tc.as_ref().is_some_and(|tc| tc.task_state == TASK_DEAD) {
                zombies.push(Zombie { entry, pstree: p, core });
                continue;
            }
            let ids = one(&format!("ids-{pid}.img"), take!(dir, format!("ids-{pid}.img"), Ids, "an IDS"))?;
            let mm = one(&format!("mm-{pid}.img"), take!(dir, format!("mm-{pid}.img"), Mm, "an MM"))?;
            let (pagemap_head, pagemap) = pagemap(dir, &format!("pagemap-{pid}.img"))?;
            let fs = one(&format!("fs-{pid}.img"), take!(dir, format!("fs-{pid}.img"), Fs, "an FS"))?;
            let fdinfo = format!("fdinfo-{}.img", ids.files_id);
            // CRIU writes a files table's image even when it holds no fds;
            // without it the program would come back with none, its
            // stdin, stdout and stderr closed under it.
            if !crate::file::exists(&dir.join(&fdinfo))? {
                bail!("ids-{pid}.img: entry 0: files_id {}: {fdinfo} does not exist", ids.files_id);
            }
            let fds = take!(dir, fdinfo, Fdinfo, "an FDINFO");
            let mut threads = vec![Thread { tid: pid, core }];
            for &tid in p.threads.iter().skip(1) {
                let name = format!("core-{tid}.img");
                let core = one(&name, take!(dir, name, Core, "a CORE"))?;
                threads.push(Thread { tid, core });
            }
            let pages = dir.join(format!("pages-{}.img", pagemap_head.pages_id));
            processes.push(Process { pstree: p, ids, mm, pagemap_head, pagemap, pages, fs, fds, threads });
        }
        let seccomp = match read_opt(dir, "seccomp.img")? {
            Some(Image::Seccomp(v)) => Some(one("seccomp.img", v)?),
            Some(other) => return Err(wrong("seccomp.img", &other, "a SECCOMP")),
            None => None,
        };
        let mut timens = BTreeMap::new();
        for (n, name) in numbered(dir, "timens-")? {
            timens.insert(n, one(&name, take!(dir, name, Timens, "a TIMENS"))?);
        }
        let mut ipc = Vec::new();
        let mut ns_ids: Vec<u32> = processes.iter().filter_map(|p| p.ids.ipc_ns_id).collect();
        ns_ids.sort_unstable();
        ns_ids.dedup();
        for id in ns_ids {
            if let Some(ns) = load_ipc(dir, id)? {
                ipc.push(ns);
            }
        }
        let cgroup = match read_opt(dir, "cgroup.img")? {
            Some(Image::Cgroup(v)) => Some(one("cgroup.img", v)?),
            Some(other) => return Err(wrong("cgroup.img", &other, "a CGROUP")),
            None => None,
        };
        let memfd_inodes = match read_opt(dir, "memfd.img")? {
            Some(Image::MemfdInode(v)) => v,
            Some(other) => return Err(wrong("memfd.img", &other, "a MEMFD_INODE")),
            None => Vec::new(),
        };
        let file_locks = match read_opt(dir, "filelocks.img")? {
            Some(Image::FileLocks(v)) => v,
            Some(other) => return Err(wrong("filelocks.img", &other, "a FILE_LOCKS")),
            None => Vec::new(),
        };
        let tty_info = match read_opt(dir, "tty-info.img")? {
            Some(Image::TtyInfo(v)) => v,
            Some(other) => return Err(wrong("tty-info.img", &other, "a TTY_INFO")),
            None => Vec::new(),
        };
        let tty_data = match read_opt(dir, "tty-data.img")? {
            Some(Image::TtyData(v)) => v,
            Some(other) => return Err(wrong("tty-data.img", &other, "a TTY_DATA")),
            None => Vec::new(),
        };
        let sk_queues = match read_opt(dir, "sk-queues.img")? {
            Some(Image::SkQueues(v)) => v,
            Some(other) => return Err(wrong("sk-queues.img", &other, "a SK_QUEUES")),
            None => Vec::new(),
        };
        let remaps = match read_opt(dir, "remap-fpath.img")? {
            Some(Image::RemapFpath(v)) => v,
            Some(other) => return Err(wrong("remap-fpath.img", &other, "a REMAP_FPATH")),
            None => Vec::new(),
        };
        let mut ghosts = BTreeMap::new();
        for r in remaps.iter().filter(|r| r.remap_type == Some(1)) {
            let name = format!("ghost-file-{:x}.img", r.remap_id);
            match read(dir, &name)? {
                Image::GhostFile(e, data) => ghosts.insert(r.remap_id, (e, data)),
                other => return Err(wrong(&name, &other, "a GHOST_FILE")),
            };
        }
        let mut tcp_streams = BTreeMap::new();
        let connected = files.iter().filter_map(|f| f.isk.as_ref()).filter(|s| is_tcp_connection(s));
        for sk in connected {
            let name = format!("tcp-stream-{:x}.img", sk.ino);
            match read(dir, &name)? {
                Image::TcpStream(e, inq, outq) => tcp_streams.insert(sk.ino, (e, inq, outq)),
                other => return Err(wrong(&name, &other, "a TCP_STREAM")),
            };
        }
        let mut anon_shmem = BTreeMap::new();
        let shared = vma_status::ANON_SHARED;
        let areas = processes.iter().flat_map(|p| &p.mm.vmas);
        let anon = areas.filter(|v| v.status & (shared | vma_status::AREA_SYSVIPC) == shared).map(|v| v.shmid);
        let memfd = memfd_inodes.iter().map(|m| u64::from(m.shmid));
        for shmid in anon.chain(memfd) {
            let name = format!("pagemap-shmem-{shmid}.img");
            if anon_shmem.contains_key(&shmid) || !crate::file::exists(&dir.join(&name))? {
                continue;
            }
            let (head, entries) = pagemap(dir, &name)?;
            let pages = dir.join(format!("pages-{}.img", head.pages_id));
            anon_shmem.insert(shmid, ShmPages { head, entries, pages });
        }
        let fifo_data = match read_opt(dir, "fifo-data.img")? {
            Some(Image::FifoData(v)) => v,
            Some(other) => return Err(wrong("fifo-data.img", &other, "a FIFO_DATA")),
            None => Vec::new(),
        };
        let pipes_data = match read_opt(dir, "pipes-data.img")? {
            Some(Image::PipesData(v)) => v,
            Some(other) => return Err(wrong("pipes-data.img", &other, "a PIPES_DATA")),
            None => Vec::new(),
        };
        Ok(ImageSet {
            dir: dir.to_path_buf(),
            inventory,
            files,
            processes,
            zombies,
            seccomp,
            timens,
            ipc,
            cgroup,
            pipes_data,
            fifo_data,
            anon_shmem,
            memfd_inodes,
            file_locks,
            tty_info,
            tty_data,
            sk_queues,
            remaps,
            ghosts,
            tcp_streams,
        })
    }

    /// The file entry with `id`.
    pub fn file(&self, id: u32) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.id == id)
    }

    /// The process with `pid`.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.iter().find(|p| p.pstree.pid == pid)
    }

    /// Every image of the set, by file name, as they would be written.
    /// Pages images are not included: see [`ImageSet::pages_files`].
    pub fn images(&self) -> Vec<(String, Image)> {
        let mut v = vec![
            ("inventory.img".to_string(), Image::Inventory(vec![self.inventory.clone()])),
            (
                "pstree.img".to_string(),
                Image::Pstree(
                    self.processes
                        .iter()
                        .map(|p| &p.pstree)
                        .chain(self.zombies.iter().map(|z| &z.pstree))
                        .cloned()
                        .collect(),
                ),
            ),
            ("files.img".to_string(), Image::Files(self.files.clone())),
        ];
        let mut fdinfo_done = Vec::new();
        for p in &self.processes {
            let pid = p.pstree.pid;
            v.push((format!("ids-{pid}.img"), Image::Ids(vec![p.ids.clone()])));
            v.push((format!("mm-{pid}.img"), Image::Mm(vec![p.mm.clone()])));
            v.push((format!("pagemap-{pid}.img"), Image::Pagemap(p.pagemap_head.clone(), p.pagemap.clone())));
            v.push((format!("fs-{pid}.img"), Image::Fs(vec![p.fs.clone()])));
            // Tasks sharing a files table share its image.
            if !fdinfo_done.contains(&p.ids.files_id) {
                fdinfo_done.push(p.ids.files_id);
                v.push((format!("fdinfo-{}.img", p.ids.files_id), Image::Fdinfo(p.fds.clone())));
            }
            for t in &p.threads {
                v.push((format!("core-{}.img", t.tid), Image::Core(vec![t.core.clone()])));
            }
        }
        for z in &self.zombies {
            v.push((z.core_name(), Image::Core(vec![z.core.clone()])));
        }
        if let Some(s) = &self.seccomp {
            v.push(("seccomp.img".to_string(), Image::Seccomp(vec![s.clone()])));
        }
        for (n, t) in &self.timens {
            v.push((format!("timens-{n}.img"), Image::Timens(vec![t.clone()])));
        }
        if let Some(c) = &self.cgroup {
            v.push(("cgroup.img".to_string(), Image::Cgroup(vec![c.clone()])));
        }
        if !self.remaps.is_empty() {
            v.push(("remap-fpath.img".to_string(), Image::RemapFpath(self.remaps.clone())));
        }
        for (id, (e, data)) in &self.ghosts {
            v.push((format!("ghost-file-{id:x}.img"), Image::GhostFile(e.clone(), data.clone())));
        }
        for (ino, (e, inq, outq)) in &self.tcp_streams {
            v.push((format!("tcp-stream-{ino:x}.img"), Image::TcpStream(e.clone(), inq.clone(), outq.clone())));
        }
        if !self.sk_queues.is_empty() {
            v.push(("sk-queues.img".to_string(), Image::SkQueues(self.sk_queues.clone())));
        }
        if !self.tty_info.is_empty() {
            v.push(("tty-info.img".to_string(), Image::TtyInfo(self.tty_info.clone())));
        }
        if !self.tty_data.is_empty() {
            v.push(("tty-data.img".to_string(), Image::TtyData(self.tty_data.clone())));
        }
        if !self.file_locks.is_empty() {
            v.push(("filelocks.img".to_string(), Image::FileLocks(self.file_locks.clone())));
        }
        if !self.memfd_inodes.is_empty() {
            v.push(("memfd.img".to_string(), Image::MemfdInode(self.memfd_inodes.clone())));
        }
        for (shmid, pm) in &self.anon_shmem {
            v.push((format!("pagemap-shmem-{shmid}.img"), Image::Pagemap(pm.head.clone(), pm.entries.clone())));
        }
        if !self.fifo_data.is_empty() {
            v.push(("fifo-data.img".to_string(), Image::FifoData(self.fifo_data.clone())));
        }
        if !self.pipes_data.is_empty() {
            v.push(("pipes-data.img".to_string(), Image::PipesData(self.pipes_data.clone())));
        }
        for ns in &self.ipc {
            if let Some(var) = &ns.var {
                v.push((format!("ipcns-var-{}.img", ns.id), Image::IpcVar(vec![var.clone()])));
            }
            let shm = ns.shm.iter().map(|s| (s.entry.clone(), s.data.clone())).collect();
            v.push((format!("ipcns-shm-{}.img", ns.id), Image::IpcnsShm(shm)));
            for s in &ns.shm {
                if let Some(pm) = &s.pages {
                    v.push((
                        format!("pagemap-shmem-{}.img", s.entry.desc.id),
                        Image::Pagemap(pm.head.clone(), pm.entries.clone()),
                    ));
                }
            }
        }
        v
    }

    /// The pages images the set refers to, as (file name, where it is now).
    pub fn pages_files(&self) -> Vec<(String, PathBuf)> {
        let mut v: Vec<(String, PathBuf)> = Vec::new();
        let all = self
            .processes
            .iter()
            .map(|p| &p.pages)
            .chain(self.ipc.iter().flat_map(|ns| ns.shm.iter().filter_map(|s| s.pages.as_ref().map(|p| &p.pages))))
            .chain(self.anon_shmem.values().map(|p| &p.pages));
        for path in all {
            let name = file_name(path);
            if !v.iter().any(|(n, _)| *n == name) {
                v.push((name, path.clone()));
            }
        }
        v
    }

    /// Writes every image into `dir` (created if needed) and copies the
    /// pages images there, so CRIU (or [`ImageSet::load`]) can read it.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, image) in self.images() {
            image.write(&dir.join(&name))?;
        }
        for (name, from) in self.pages_files() {
            let to = dir.join(&name);
            let same = match (from.canonicalize(), to.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if !same {
                copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            }
        }
        Ok(())
    }
}

/// Copies the pages image `from` to `to`, as much as it held when opened.
fn copy(from: &Path, to: &Path) -> Result<()> {
    use std::io::Read as _;
    let src = crate::file::ImageFile::open(from)?;
    let mut dst = crate::file::create(to, 0o666)?;
    let n = std::io::copy(&mut (&src.file).take(src.size), &mut dst)?;
    if n != src.size {
        bail!("{}: {n} bytes copied of {}", from.display(), src.size);
    }
    Ok(())
}

/// Files `<prefix>N.img` in `dir`, by N.
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(u32, String)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let name = e.with_context(|| format!("{}: cannot list", dir.display()))?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix(prefix).and_then(|s| s.strip_suffix(".img")).and_then(|s| s.parse().ok()) {
            v.push((n, name.into_owned()));
        }
    }
    v.sort();
    Ok(v)
}

fn load_ipc(dir: &Path, id: u32) -> Result<Option<IpcNamespace>> {
    let var_name = format!("ipcns-var-{id}.img");
    let var = match read_opt(dir, &var_name)? {
        Some(Image::IpcVar(v)) => Some(one(&var_name, v)?),
        Some(other) => return Err(wrong(&var_name, &other, "an IPC_VAR")),
        None => None,
    };
    let shm_name = format!("ipcns-shm-{id}.img");
    let segs = match read_opt(dir, &shm_name)? {
        Some(Image::IpcnsShm(v)) => Some(v),
        Some(other) => return Err(wrong(&shm_name, &other, "an IPCNS_SHM")),
        None => None,
    };
    if var.is_none() && segs.is_none() {
        return Ok(None);
    }
    let mut shm = Vec::new();
    for (entry, data) in segs.unwrap_or_default() {
        let pages = if entry.in_pagemaps == Some(true) {
            let name = format!("pagemap-shmem-{}.img", entry.desc.id);
            let (head, entries) = pagemap(dir, &name)?;
            let pages = dir.join(format!("pages-{}.img", head.pages_id));
            Some(ShmPages { head, entries, pages })
        } else {
            None
        };
        shm.push(ShmSegment { entry, data, pages });
    }
    Ok(Some(IpcNamespace { id, var, shm }))
}
