//! Named pipes (FIFOs): the description (`files.img` FIFO entry, pointing
//! at a regular-file entry for its path, as CRIU writes it) and the bytes
//! buffered in it (`fifo-data.img`, the form of `pipes-data.img`). The
//! restore opens the FIFO at its path behind a read-write keeper (an open
//! for one direction alone would wait for the other side) and puts the
//! bytes back through the first description of it. A FIFO whose path was
//! deleted is carried as a ghost (`ghost.rs`): made again for the tasks
//! to open, then unlinked.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::ImageSet;
use revenant_images::messages::{FdType, FdinfoEntry, FifoEntry, FileEntry};

use super::pipe::{PipeData, contents};
use super::{FdPlan, FileKind, Files, RegFile};

/// A named pipe's description: its inode, and the entry of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fifo {
    pub pipe_id: u32,
    pub regf_id: u32,
}

impl Files {
    /// Fd `fd` of `pid` on the FIFO at `path` (inode `ino`, mode `mode`).
    pub(super) fn fifo(&mut self, pid: i32, fd: i32, path: &str, ino: u64, mode: u32, flags: u32) -> Result<FileKind> {
        let pipe_id = ino as u32;
        if !self.fifo_data.iter().any(|d| d.pipe_id == pipe_id) {
            let (data, size) = contents(pid, fd)?;
            self.fifo_data.push(PipeData { pipe_id, data, size });
        }
        let reg = RegFile { flags, pos: 0, name: path.to_string(), size: None, mode, unlinked_name: None };
        let regf_id = self.push(FileKind::Reg(reg));
        Ok(FileKind::Fifo(Fifo { pipe_id, regf_id }))
    }
}

impl Fifo {
    pub fn entry(&self, id: u32) -> FileEntry {
        FileEntry {
            r#type: FdType::Fifo as i32,
            id,
            fifo: Some(FifoEntry { id, pipe_id: self.pipe_id, regf_id: Some(self.regf_id), ..Default::default() }),
            ..Default::default()
        }
    }
}

/// A named pipe's buffered bytes and capacity, written by the one
/// description of the tree that carries them (the others carry none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FifoFill {
    pub data: Vec<u8>,
    pub size: Option<u32>,
}

/// Fd `f` on FIFO `fe`: its path must still be a FIFO here.
pub fn plan_fd(set: &ImageSet, f: &FdinfoEntry, fe: &FifoEntry, cloexec: bool, at: &str) -> Result<FdPlan> {
    let reg = fe.regf_id.and_then(|id| set.file(id)).and_then(|e| e.reg.as_ref());
    let reg = reg.with_context(|| format!("{at}: a FIFO whose path (regf_id {:?}) is not in files.img", fe.regf_id))?;
    use std::os::unix::fs::FileTypeExt;
    // Deleted when dumped: made again at its path for the tasks to open.
    let ghost = super::ghost::plan(set, reg.id, reg, at)?;
    if let Some((_, g)) = &ghost
        && !g.is_fifo()
    {
        bail!("{at}: the FIFO {} is remapped to a ghost that is no FIFO (mode {:o})", reg.name, g.mode);
    }
    let path = ghost.as_ref().map_or_else(|| PathBuf::from(&reg.name), |(p, _)| p.clone());
    let ghost = ghost.map(|(_, g)| g);
    if ghost.is_none() && !std::fs::metadata(&reg.name).is_ok_and(|m| m.file_type().is_fifo()) {
        bail!("{at}: the FIFO {} is missing (or no longer a FIFO)", reg.name);
    }
    // The FIFO's bytes go in with the first description of it.
    let first =
        set.files.iter().filter(|e| e.fifo.as_ref().is_some_and(|x| x.pipe_id == fe.pipe_id)).map(|e| e.id).min();
    let (data, size) = set
        .fifo_data
        .iter()
        .find(|(e, _)| e.pipe_id == fe.pipe_id && first == Some(f.id))
        .map(|(e, d)| (d.clone(), e.size))
        .unwrap_or_default();
    Ok(FdPlan {
        fd: f.fd as i32,
        id: f.id,
        path,
        flags: reg.flags as i32 & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC),
        cloexec,
        fifo: Some(FifoFill { data, size }),
        ghost,
        ..Default::default()
    })
}
