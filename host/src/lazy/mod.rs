//! Lazy restore (`revenant restore --lazy`): the restore returns once the
//! tree is set up, and the memory of private anonymous areas arrives
//! afterwards, each page when first touched and all of them in the
//! background, from a page server process.
//!
//! - [`start`] runs the server (`revenant lazy-pages`, a fresh process of
//!   our own binary, in its own session) before any task exists, and
//!   [`PageServer::describe`] tells it, per process, which pages of which
//!   image go where.
//! - The blob maps each lazy area (`VMA_LAZY` in the ABI), registers it
//!   with a userfaultfd and sends that to the server over the socket the
//!   restore placed in the task, before anything can touch the areas.
//! - `server.rs` answers faults and copies the rest; `guard.rs` keeps a
//!   copy of every userfaultfd and kills the programs if the server dies
//!   before it is done, so nobody reads zeros where its data should be.
//!
//! The areas are the dumped ones, mapped the same way; the pages land
//! with `UFFDIO_COPY` as in a normal restore. While pages are still
//! coming, `/proc/PID/smaps` shows the `um` flag on the lazy areas; when
//! the last page is in, the server unregisters them and they are what a
//! normal restore leaves.

mod guard;
pub mod protocol;
pub mod ranges;
mod server;

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::sys::socket::{AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair};

pub use ranges::Range;

/// The restore's side of a running page server.
pub struct PageServer {
    /// The end the tasks get (and the restore writes descriptions to).
    client: OwnedFd,
    pub pid: u32,
}

/// How the server works.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Copy pages nobody asked for yet (off only in tests, to catch the
    /// program reading pages that are still missing).
    pub background: bool,
}

/// The descriptor number the server finds its socket at.
const SERVER_FD: RawFd = 3;

/// Starts the page server; its messages go to `log` (appended) if given.
pub fn start(log: Option<&Path>, mode: Mode) -> Result<PageServer> {
    use std::os::unix::process::CommandExt;
    userfaultfd_exists()?;
    let (client, server) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .context("creating the page server's socket")?;
    let stderr = match log {
        Some(p) => std::process::Stdio::from(
            revenant_images::file::append(p, 0o600).with_context(|| format!("{} for the page server", p.display()))?,
        ),
        None => std::process::Stdio::null(),
    };
    let raw = server.as_raw_fd();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("revenant").args(["lazy-pages", "--fd", &SERVER_FD.to_string()]);
    if !mode.background {
        cmd.arg("--no-background");
    }
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(stderr);
    // SAFETY: between fork and exec only async-signal-safe calls: its own
    // session (a terminal's signals for the restore must not reach it) and
    // the socket at its fixed number, without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::libc::setsid();
            let ok = if raw == SERVER_FD {
                nix::libc::fcntl(raw, nix::libc::F_SETFD, 0) == 0
            } else {
                nix::libc::dup2(raw, SERVER_FD) == SERVER_FD
            };
            if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        })
    };
    let child = cmd.spawn().context("starting the page server (revenant lazy-pages)")?;
    drop(server);
    Ok(PageServer { client, pid: child.id() })
}

impl PageServer {
    /// The socket each lazy task gets at its service number.
    pub fn client_fd(&self) -> RawFd {
        self.client.as_raw_fd()
    }

    /// Which pages of `images` (opened pages images, as [`Range::file`]
    /// numbers them) belong where in process `pid`, and its lazy areas.
    pub fn describe(&self, pid: i32, images: &[std::fs::File], pages: &[Range], areas: &[(u64, u64)]) -> Result<()> {
        let list: OwnedFd =
            nix::sys::memfd::memfd_create(c"revenant-lazy-list", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .context("memfd_create")?;
        let mut f = std::fs::File::from(list);
        f.write_all(&protocol::list_bytes(pages, areas)).context("writing the page list")?;
        use std::io::Seek;
        f.rewind().context("rewinding the page list")?;
        let mut msg = vec![b'D'];
        msg.extend(pid.to_le_bytes());
        let fds: Vec<RawFd> = std::iter::once(f.as_raw_fd()).chain(images.iter().map(|i| i.as_raw_fd())).collect();
        if fds.len() > protocol::MAX_FDS {
            bail!(
                "PID {pid}: its pages lie in {} images of a chain; a lazy restore serves at most {}",
                images.len(),
                protocol::MAX_FDS - 1
            );
        }
        let sent = sendmsg::<()>(
            self.client.as_raw_fd(),
            &[IoSlice::new(&msg)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(n) if n == msg.len() => Ok(()),
            Ok(n) => bail!("the page server took {n} of {} bytes", msg.len()),
            Err(e) => {
                Err(e).with_context(|| format!("telling the page server about PID {pid} (did it exit? see its log)"))
            }
        }
    }
}

/// `revenant lazy-pages --fd N`: the server's own process.
pub fn serve(fd: RawFd, mode: Mode) -> Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: the restore placed the socket at this number for us alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .context("the page server's socket")?;
    let g = guard::Guard::start()?;
    server::run(sock, g, mode)
}

/// Refuses a lazy restore before anything is made where there is no
/// userfaultfd (a kernel without it, qemu-user).
fn userfaultfd_exists() -> Result<()> {
    const UFFD_USER_MODE_ONLY: nix::libc::c_int = 1;
    // SAFETY: a plain system call; the descriptor, if any, is closed at once.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_userfaultfd, nix::libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(nix::libc::ENOSYS) {
            anyhow::bail!("--lazy needs userfaultfd, which this kernel (or qemu-user) does not have");
        }
        return Ok(());
    }
    // SAFETY: our own fresh descriptor.
    unsafe { nix::libc::close(fd as nix::libc::c_int) };
    Ok(())
}
