//! One image file, decoded whole into typed entries, and back.

use std::path::Path;

use anyhow::{Context, Result};

use crate::file::ImageFile;
use crate::framing::{Reader, Writer};
use crate::json::Json;
use crate::magic::Kind;
use crate::messages::*;
use crate::proto::Proto;

/// The entries of one image file, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Image {
    Inventory(Vec<InventoryEntry>),
    Pstree(Vec<PstreeEntry>),
    Core(Vec<CoreEntry>),
    Ids(Vec<TaskKobjIdsEntry>),
    Mm(Vec<MmEntry>),
    /// The head, then the runs.
    Pagemap(PagemapHead, Vec<PagemapEntry>),
    Files(Vec<FileEntry>),
    Fdinfo(Vec<FdinfoEntry>),
    Fs(Vec<FsEntry>),
    Seccomp(Vec<SeccompEntry>),
    Timens(Vec<TimensEntry>),
    Stats(Vec<StatsEntry>),
    IpcVar(Vec<IpcVarEntry>),
    /// Each segment with the raw contents that follow it (empty when they
    /// are in a pagemap).
    IpcnsShm(Vec<(IpcShmEntry, Vec<u8>)>),
    /// Each entry with the queued bytes that follow it.
    PipesData(Vec<(PipeDataEntry, Vec<u8>)>),
    FifoData(Vec<(PipeDataEntry, Vec<u8>)>),
    Cgroup(Vec<CgroupEntry>),
    MemfdInode(Vec<MemfdInodeEntry>),
    FileLocks(Vec<FileLockEntry>),
    TtyInfo(Vec<TtyInfoEntry>),
    TtyData(Vec<TtyDataEntry>),
    /// Each queued message with its bytes.
    SkQueues(Vec<(SkPacketEntry, Vec<u8>)>),
    RemapFpath(Vec<RemapFilePathEntry>),
    /// The entry and the file's data, as (offset, bytes) pieces: one at 0
    /// for a whole file, one a chunk when `chunks` (a file with holes).
    GhostFile(GhostFileEntry, Vec<(u64, Vec<u8>)>),
    /// The connection, then its receive and send queues' bytes.
    TcpStream(TcpStreamEntry, Vec<u8>, Vec<u8>),
}

impl Image {
    /// Decodes a whole image. Errors name the entry and the field.
    pub fn decode(data: &[u8]) -> Result<Image> {
        let mut r = Reader::new(data)?;
        Ok(match r.kind {
            Kind::Inventory => Image::Inventory(r.all()?),
            Kind::Pstree => Image::Pstree(r.all()?),
            Kind::Core => Image::Core(r.all()?),
            Kind::Ids => Image::Ids(r.all()?),
            Kind::Mm => Image::Mm(r.all()?),
            Kind::Pagemap => {
                let head = r.decode_next()?.context("no pagemap_head entry: the file ends after its magic")?;
                Image::Pagemap(head, r.all()?)
            }
            Kind::Files => Image::Files(r.all()?),
            Kind::Fdinfo => Image::Fdinfo(r.all()?),
            Kind::Fs => Image::Fs(r.all()?),
            Kind::Seccomp => Image::Seccomp(r.all()?),
            Kind::Timens => Image::Timens(r.all()?),
            Kind::Cgroup => Image::Cgroup(r.all()?),
            Kind::MemfdInode => Image::MemfdInode(r.all()?),
            Kind::FileLocks => Image::FileLocks(r.all()?),
            Kind::TtyInfo => Image::TtyInfo(r.all()?),
            Kind::TtyData => Image::TtyData(r.all()?),
            Kind::Stats => Image::Stats(r.all()?),
            Kind::IpcVar => Image::IpcVar(r.all()?),
            Kind::IpcnsShm => {
                let mut v = Vec::new();
                while let Some(e) = r.decode_next::<IpcShmEntry>()? {
                    let data = r.raw(shm_payload_len(&e))?.to_vec();
                    v.push((e, data));
                }
                Image::IpcnsShm(v)
            }
            Kind::RemapFpath => Image::RemapFpath(r.all()?),
            Kind::GhostFile => {
                let e: GhostFileEntry =
                    r.decode_next()?.context("no ghost_file_entry: the file ends after its magic")?;
                let mut pieces = Vec::new();
                if e.chunks == Some(true) {
                    while let Some(c) = r.decode_next::<GhostChunkEntry>()? {
                        let end = c.off.checked_add(c.len).filter(|&end| end <= e.size.unwrap_or(0));
                        end.with_context(|| {
                            format!("ghost_chunk_entry at {}: {} bytes past the file's size", c.off, c.len)
                        })?;
                        pieces.push((c.off, r.raw(c.len)?.to_vec()));
                    }
                } else {
                    // CRIU gives no size for a whole file: the rest of the
                    // image is its bytes.
                    let data = match e.size {
                        Some(n) => r.raw(n)?,
                        None => r.raw_upto(u64::MAX),
                    };
                    pieces.push((0, data.to_vec()));
                }
                Image::GhostFile(e, pieces)
            }
            Kind::TcpStream => {
                let e: TcpStreamEntry =
                    r.decode_next()?.context("no tcp_stream_entry: the file ends after its magic")?;
                let inq = r.raw(u64::from(e.inq_len)).context("inq_len")?.to_vec();
                let outq = r.raw(u64::from(e.outq_len)).context("outq_len")?.to_vec();
                Image::TcpStream(e, inq, outq)
            }
            Kind::SkQueues => {
                let mut v = Vec::new();
                while let Some(e) = r.decode_next::<SkPacketEntry>()? {
                    let data = r.raw(u64::from(e.length))?.to_vec();
                    v.push((e, data));
                }
                Image::SkQueues(v)
            }
            Kind::PipesData | Kind::FifoData => {
                let mut v = Vec::new();
                while let Some(e) = r.decode_next::<PipeDataEntry>()? {
                    let data = r.raw(u64::from(e.bytes))?.to_vec();
                    v.push((e, data));
                }
                if r.kind == Kind::PipesData { Image::PipesData(v) } else { Image::FifoData(v) }
            }
        })
    }

    /// Reads and decodes `path`; errors start with the file's name.
    pub fn read(path: &Path) -> Result<Image> {
        Image::read_file(&ImageFile::open(path)?)
    }

    /// Reads and decodes an image file already open.
    pub fn read_file(f: &ImageFile) -> Result<Image> {
        Image::decode(&f.read_all()?).with_context(|| file_name(f.path()))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Image::Inventory(_) => Kind::Inventory,
            Image::Pstree(_) => Kind::Pstree,
            Image::Core(_) => Kind::Core,
            Image::Ids(_) => Kind::Ids,
            Image::Mm(_) => Kind::Mm,
            Image::Pagemap(..) => Kind::Pagemap,
            Image::Files(_) => Kind::Files,
            Image::Fdinfo(_) => Kind::Fdinfo,
            Image::Fs(_) => Kind::Fs,
            Image::Seccomp(_) => Kind::Seccomp,
            Image::Timens(_) => Kind::Timens,
            Image::Cgroup(_) => Kind::Cgroup,
            Image::MemfdInode(_) => Kind::MemfdInode,
            Image::FileLocks(_) => Kind::FileLocks,
            Image::TtyInfo(_) => Kind::TtyInfo,
            Image::TtyData(_) => Kind::TtyData,
            Image::SkQueues(_) => Kind::SkQueues,
            Image::RemapFpath(_) => Kind::RemapFpath,
            Image::GhostFile(..) => Kind::GhostFile,
            Image::TcpStream(..) => Kind::TcpStream,
            Image::Stats(_) => Kind::Stats,
            Image::IpcVar(_) => Kind::IpcVar,
            Image::IpcnsShm(_) => Kind::IpcnsShm,
            Image::PipesData(_) => Kind::PipesData,
            Image::FifoData(_) => Kind::FifoData,
        }
    }

    /// The file's bytes: magic, entries, payloads.
    pub fn encode(&self) -> Vec<u8> {
        fn all<M: Proto>(w: &mut Writer, v: &[M]) {
            for m in v {
                w.push(m);
            }
        }
        let mut w = Writer::new(self.kind());
        match self {
            Image::Inventory(v) => all(&mut w, v),
            Image::Pstree(v) => all(&mut w, v),
            Image::Core(v) => all(&mut w, v),
            Image::Ids(v) => all(&mut w, v),
            Image::Mm(v) => all(&mut w, v),
            Image::Pagemap(head, v) => {
                w.push(head);
                all(&mut w, v);
            }
            Image::Files(v) => all(&mut w, v),
            Image::Fdinfo(v) => all(&mut w, v),
            Image::Fs(v) => all(&mut w, v),
            Image::Seccomp(v) => all(&mut w, v),
            Image::Timens(v) => all(&mut w, v),
            Image::Cgroup(v) => all(&mut w, v),
            Image::MemfdInode(v) => all(&mut w, v),
            Image::FileLocks(v) => all(&mut w, v),
            Image::TtyInfo(v) => all(&mut w, v),
            Image::TtyData(v) => all(&mut w, v),
            Image::Stats(v) => all(&mut w, v),
            Image::IpcVar(v) => all(&mut w, v),
            Image::IpcnsShm(v) => {
                for (e, data) in v {
                    w.push(e).raw(data);
                }
            }
            Image::PipesData(v) | Image::FifoData(v) => {
                for (e, data) in v {
                    w.push(e).raw(data);
                }
            }
            Image::SkQueues(v) => {
                for (e, data) in v {
                    w.push(e).raw(data);
                }
            }
            Image::RemapFpath(v) => all(&mut w, v),
            Image::TcpStream(e, inq, outq) => {
                w.push(e).raw(inq).raw(outq);
            }
            Image::GhostFile(e, pieces) => {
                w.push(e);
                for (off, data) in pieces {
                    if e.chunks == Some(true) {
                        w.push(&GhostChunkEntry { len: data.len() as u64, off: *off, ..Default::default() });
                    }
                    w.raw(data);
                }
            }
        }
        w.into_bytes()
    }

    /// Encodes and writes to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_file(path, &self.encode())
    }

    /// Number of entries (a pagemap's head counts).
    pub fn len(&self) -> usize {
        match self {
            Image::Inventory(v) => v.len(),
            Image::Pstree(v) => v.len(),
            Image::Core(v) => v.len(),
            Image::Ids(v) => v.len(),
            Image::Mm(v) => v.len(),
            Image::Pagemap(_, v) => v.len() + 1,
            Image::Files(v) => v.len(),
            Image::Fdinfo(v) => v.len(),
            Image::Fs(v) => v.len(),
            Image::Seccomp(v) => v.len(),
            Image::Timens(v) => v.len(),
            Image::Cgroup(v) => v.len(),
            Image::MemfdInode(v) => v.len(),
            Image::FileLocks(v) => v.len(),
            Image::TtyInfo(v) => v.len(),
            Image::TtyData(v) => v.len(),
            Image::SkQueues(v) => v.len(),
            Image::RemapFpath(v) => v.len(),
            Image::GhostFile(..) | Image::TcpStream(..) => 1,
            Image::Stats(v) => v.len(),
            Image::IpcVar(v) => v.len(),
            Image::IpcnsShm(v) => v.len(),
            Image::PipesData(v) | Image::FifoData(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `crit show` prints for the file.
    pub fn to_json(&self) -> Json {
        fn all<M: Proto>(v: &[M]) -> Vec<Json> {
            v.iter().map(|m| m.to_json(false)).collect()
        }
        // crit appends the payload as "extra", base64 like bytes fields.
        fn with_extra<M: Proto>(m: &M, extra: &[u8]) -> Json {
            match m.to_json(false) {
                Json::Obj(mut o) => {
                    o.push(("extra".into(), Json::Str(crate::json::base64_mime(extra))));
                    Json::Obj(o)
                }
                j => j,
            }
        }
        let entries = match self {
            Image::Inventory(v) => all(v),
            Image::Pstree(v) => all(v),
            Image::Core(v) => all(v),
            Image::Ids(v) => all(v),
            Image::Mm(v) => all(v),
            Image::Pagemap(head, v) => std::iter::once(head.to_json(false)).chain(all(v)).collect(),
            Image::Files(v) => all(v),
            Image::Fdinfo(v) => all(v),
            Image::Fs(v) => all(v),
            Image::Seccomp(v) => all(v),
            Image::Timens(v) => all(v),
            Image::Cgroup(v) => all(v),
            Image::MemfdInode(v) => all(v),
            Image::FileLocks(v) => all(v),
            Image::TtyInfo(v) => all(v),
            Image::TtyData(v) => all(v),
            Image::Stats(v) => all(v),
            Image::IpcVar(v) => all(v),
            // crit shows `size` bytes of the payload, without the padding.
            Image::IpcnsShm(v) => v
                .iter()
                .map(|(e, data)| with_extra(e, &data[..data.len().min(usize::try_from(e.size).unwrap_or(usize::MAX))]))
                .collect(),
            Image::PipesData(v) | Image::FifoData(v) => v.iter().map(|(e, data)| with_extra(e, data)).collect(),
            Image::SkQueues(v) => v.iter().map(|(e, data)| with_extra(e, data)).collect(),
            Image::RemapFpath(v) => all(v),
            Image::GhostFile(e, pieces) => pieces.iter().map(|(_, data)| with_extra(e, data)).collect(),
            // crit shows both queues under "extra".
            Image::TcpStream(e, inq, outq) => vec![match e.to_json(false) {
                Json::Obj(mut o) => {
                    let q = |b: &[u8]| Json::Str(crate::json::base64_mime(b));
                    o.push(("extra".into(), Json::Obj(vec![("inq".into(), q(inq)), ("outq".into(), q(outq))])));
                    Json::Obj(o)
                }
                j => j,
            }],
        };
        Json::Obj(vec![("magic".into(), Json::Str(self.kind().name().into())), ("entries".into(), Json::Arr(entries))])
    }
}

/// Bytes of segment contents after an `ipcns-shm` entry: none when they
/// are in a pagemap, else the size rounded up to 4.
pub fn shm_payload_len(e: &IpcShmEntry) -> u64 {
    if e.in_pagemaps == Some(true) { 0 } else { e.size.saturating_add(3) & !3 }
}

/// Writes `bytes` to a new (or emptied) regular file at `path`, never
/// through a link; the mode is what `std::fs::write` gives.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    crate::file::create(path, 0o666)?.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Checks that `data` is a CRIU image at all (for callers that only want
/// to know, such as a directory listing).
pub fn is_image(data: &[u8]) -> bool {
    Kind::from_header(data).is_some()
}

/// crit's JSON for the image at `path`.
pub fn crit_json(path: &Path) -> Result<Json> {
    Ok(Image::read(path)?.to_json())
}
