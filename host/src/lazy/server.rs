//! The page server: answers the faults of lazily restored processes and
//! copies the rest of their pages in the background, then lets go.
//!
//! One thread, one loop: wait for the restore's messages and the
//! userfaultfds' events (without waiting while background work is left),
//! handle them all, copy one chunk in the background, repeat. Faults come
//! first so a touching thread waits for at most one chunk's copy. A
//! process is let go (its areas unregistered, the descriptor closed) as
//! soon as it has every page; the server exits when the restore has hung
//! up and no process is left.
//!
//! The page lists stay true while the program runs: a fork gives the child
//! the parent's lists (what the child already shares is skipped, as
//! `UFFDIO_COPY` never replaces a page), `mremap` moves entries, and
//! `madvise(MADV_DONTNEED)` or `munmap` drop them, so no stale page ever
//! lands on memory the program has since changed.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use linux_raw_sys::general as g;
use linux_raw_sys::ioctl::{UFFDIO_COPY, UFFDIO_UNREGISTER, UFFDIO_WAKE, UFFDIO_ZEROPAGE};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use revenant_arch::{Errno, PAGE_SIZE};

use super::guard::{Guard, Id};
use super::protocol::{self, Message};
use super::ranges::{Range, RangeSet};

const PAGE: u64 = PAGE_SIZE as u64;
/// Bytes copied per background step: small enough that a fault waits
/// little behind it, large enough that the loop's own calls cost little.
const CHUNK: u64 = 256 << 10;
/// Bytes copied for a fault: the page touched and the ones after it, as
/// programs tend to go through memory in order.
const FAULT_AHEAD: u64 = 16 * PAGE;
/// How long the server waits, idle, before it wakes every waiting thread.
const IDLE_MS: u16 = 100;

/// A pages image mapped read-only: the source of every copy.
struct Image {
    at: usize,
    len: usize,
}

impl Image {
    fn map(fd: &OwnedFd) -> Result<Image> {
        let len = nix::sys::stat::fstat(fd).context("the pages image")?.st_size as usize;
        if len == 0 {
            return Ok(Image { at: 0, len: 0 });
        }
        // SAFETY: a new read-only private mapping of a file; nothing is
        // replaced, and the pages are only ever read by the kernel's copies.
        let at = unsafe { revenant_arch::mmap(0, len, g::PROT_READ, g::MAP_PRIVATE, fd.as_raw_fd(), 0) }
            .map_err(|e| anyhow::anyhow!("mapping the pages image: errno {}", e.raw()))?;
        Ok(Image { at, len })
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: our mapping; no copy is running.
            let _ = unsafe { revenant_arch::sys::munmap(self.at, self.len) };
        }
    }
}

/// What the restore said about a process before its blob called.
struct Described {
    images: Rc<Vec<Image>>,
    pages: RangeSet,
    areas: Vec<(u64, u64)>,
}

/// A process being served.
struct Proc {
    /// "PID 123", or "a child of PID 123" for one made by `fork` since.
    name: String,
    /// Its PID when known (processes of the restored tree).
    pid: Option<i32>,
    uffd: OwnedFd,
    /// Its pages images, as [`Range::file`] numbers them.
    images: Rc<Vec<Image>>,
    /// Every page the images still hold for it.
    pages: RangeSet,
    /// The pages not in place yet.
    pending: RangeSet,
    /// The registered areas, to unregister when done.
    areas: RangeSet,
    /// Its copy in the guardian.
    held: Id,
    /// Readable once it has exited (known PIDs only): nothing to serve
    /// then, even when nothing copies in the background to notice.
    pidfd: Option<OwnedFd>,
    /// Faults that met its memory changing (`EAGAIN`: a fork, move or
    /// drop whose event is still to be read): answered again once the
    /// events are read, or the thread would wait for ever.
    waiting: Vec<u64>,
    since: Instant,
}

/// How a copy went.
enum Copied {
    Done,
    /// The process is gone (exited, or its memory was replaced by exec).
    Gone,
    /// Its memory is changing (an event is waiting): try again after the
    /// events are read.
    Later(Range),
}

pub struct Server {
    sock: Option<OwnedFd>,
    described: HashMap<i32, Described>,
    procs: Vec<Proc>,
    guard: Guard,
    next: usize,
}

/// Serves until every process has its pages and the restore hung up.
pub fn run(sock: OwnedFd, guard: Guard, mode: super::Mode) -> Result<()> {
    let mut s = Server { sock: Some(sock), described: HashMap::new(), procs: vec![], guard, next: 0 };
    let background = mode.background;
    loop {
        if s.sock.is_none() && s.procs.is_empty() {
            break;
        }
        // The background copies wait until the restore has let the tree
        // go (and hung up): until then they would only slow it down.
        let busy = background && s.sock.is_none() && s.procs.iter().any(|p| !p.pending.is_empty());
        let waiting = s.procs.iter().any(|p| !p.waiting.is_empty());
        let (sock_ready, ready) = s.wait(busy || waiting)?;
        if sock_ready {
            s.read_socket()?;
        }
        for i in ready {
            s.events(i)?;
        }
        s.retry_waiting();
        if busy {
            s.background();
        }
        s.retire();
    }
    s.guard.done();
    Ok(())
}

impl Server {
    /// Which of the socket and the processes have something to read;
    /// processes that have exited are marked done.
    fn wait(&mut self, busy: bool) -> Result<(bool, Vec<usize>)> {
        let n = self.procs.len();
        let mut fds: Vec<PollFd<'_>> =
            self.procs.iter().map(|p| PollFd::new(p.uffd.as_fd(), PollFlags::POLLIN)).collect();
        let exits: Vec<usize> = (0..n).filter(|&i| self.procs[i].pidfd.is_some()).collect();
        let pidfds = exits.iter().filter_map(|&i| self.procs[i].pidfd.as_ref());
        fds.extend(pidfds.map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)));
        if let Some(s) = &self.sock {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        // Idle, it still looks every 100 ms (see `wake_all`).
        let timeout = if busy { PollTimeout::ZERO } else { PollTimeout::from(IDLE_MS) };
        let quiet = match poll(&mut fds, timeout) {
            Ok(n) => n == 0,
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => bail!("poll: {e}"),
        };
        let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        let sock_ready = self.sock.is_some() && fds.last().is_some_and(hit);
        let ready = (0..n).filter(|&i| hit(&fds[i])).collect();
        let exited: Vec<usize> = exits.iter().enumerate().filter(|(k, _)| hit(&fds[n + k])).map(|(_, &i)| i).collect();
        drop(fds);
        if quiet && !busy {
            self.wake_all();
        }
        for i in exited {
            // Its retirement finds nothing pending and lets it go.
            self.procs[i].pending = RangeSet::default();
            self.procs[i].waiting.clear();
        }
        Ok((sock_ready, ready))
    }

    /// One message from the restore or a blob; the end when all hung up.
    fn read_socket(&mut self) -> Result<()> {
        let Some(sock) = &self.sock else { return Ok(()) };
        let mut buf = [0u8; protocol::MAX];
        let mut space = nix::cmsg_space!([RawFd; protocol::MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .context("reading the restore's socket")?;
        let mut fds: Vec<OwnedFd> = vec![];
        for c in msg.cmsgs().context("the restore's message")? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(got.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        if n == 0 && fds.is_empty() {
            self.sock = None;
            self.described.clear();
            return Ok(());
        }
        match protocol::parse(&buf[..n], fds)? {
            Message::Describe { pid, images, list } => {
                let images = images.iter().map(Image::map).collect::<Result<Vec<_>>>();
                let images = Rc::new(images.with_context(|| format!("PID {pid}"))?);
                let lens: Vec<u64> = images.iter().map(|i| i.len as u64).collect();
                let (pages, areas) = protocol::read_list(&list, &lens).with_context(|| format!("PID {pid}"))?;
                self.described.insert(pid, Described { images, pages, areas });
            }
            Message::Uffd { pid, uffd } => {
                let Some(d) = self.described.remove(&pid) else {
                    bail!("PID {pid} sent a userfaultfd the restore did not describe");
                };
                let areas = RangeSet::new(
                    d.areas.iter().map(|&(s, e)| Range { start: s, end: e, offset: 0, file: 0 }).collect(),
                );
                let held = self.guard.hold(pid, &uffd);
                self.procs.push(Proc {
                    held,
                    pidfd: crate::procfs::pidfd(pid).ok(),
                    waiting: vec![],
                    name: format!("PID {pid}"),
                    pid: Some(pid),
                    uffd,
                    images: d.images,
                    pending: d.pages.clone(),
                    pages: d.pages,
                    areas,
                    since: Instant::now(),
                });
            }
        }
        Ok(())
    }

    /// Everything the userfaultfd of process `i` has to say.
    fn events(&mut self, i: usize) -> Result<()> {
        // SAFETY: uffd_msg is plain data; zero is a valid value.
        let mut msgs: [g::uffd_msg; 64] = unsafe { std::mem::zeroed() };
        loop {
            let bytes = revenant_arch::sys::read(self.procs[i].uffd.as_raw_fd(), as_bytes(&mut msgs));
            let n = match bytes {
                Ok(n) => n / size_of::<g::uffd_msg>(),
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => bail!("{}: reading its userfaultfd: errno {}", self.procs[i].name, e.raw()),
            };
            if n == 0 {
                return Ok(());
            }
            for m in &msgs[..n] {
                self.event(i, m)?;
            }
        }
    }

    fn event(&mut self, i: usize, m: &g::uffd_msg) -> Result<()> {
        // Each union member is plain integers; `event` says which one the
        // kernel filled.
        let arg = m.arg;
        match m.event as u32 {
            g::UFFD_EVENT_PAGEFAULT => {
                // SAFETY: as above.
                let addr = unsafe { arg.pagefault.address } & !(PAGE - 1);
                self.fault(i, addr);
            }
            g::UFFD_EVENT_FORK => {
                // SAFETY: as above.
                let fd = unsafe { arg.fork.ufd } as RawFd;
                // SAFETY: the kernel installed this new descriptor for us.
                let uffd = unsafe { OwnedFd::from_raw_fd(fd) };
                let parent = &self.procs[i];
                let name = format!("a child of {}", parent.name);
                let held = self.guard.hold_child(parent.pid, &uffd);
                let child = Proc {
                    held,
                    pidfd: None,
                    waiting: vec![],
                    name,
                    pid: None,
                    uffd,
                    images: parent.images.clone(),
                    // Every page the parent had in place is the child's too;
                    // copies onto those fail harmlessly.
                    pending: parent.pages.clone(),
                    pages: parent.pages.clone(),
                    areas: parent.areas.clone(),
                    since: Instant::now(),
                };
                self.procs.push(child);
            }
            g::UFFD_EVENT_REMAP => {
                // SAFETY: as above.
                let r = unsafe { arg.remap };
                let p = &mut self.procs[i];
                p.pages.moved(r.from, r.to, r.len);
                p.pending.moved(r.from, r.to, r.len);
                p.areas.moved(r.from, r.to, r.len);
            }
            g::UFFD_EVENT_REMOVE | g::UFFD_EVENT_UNMAP => {
                // SAFETY: as above.
                let r = unsafe { arg.remove };
                let p = &mut self.procs[i];
                p.pages.remove(r.start, r.end);
                p.pending.remove(r.start, r.end);
                if m.event as u32 == g::UFFD_EVENT_UNMAP {
                    p.areas.remove(r.start, r.end);
                }
            }
            other => bail!("{}: unexpected userfaultfd event {other}", self.procs[i].name),
        }
        Ok(())
    }

    /// A thread waits for the page at `addr`.
    fn fault(&mut self, i: usize, addr: u64) {
        let p = &mut self.procs[i];
        if let Some(r) = p.pending.take_at(addr, FAULT_AHEAD) {
            match copy(p, r) {
                Copied::Done => {}
                Copied::Gone => p.pending = RangeSet::default(),
                Copied::Later(rest) => {
                    p.pending.insert(rest);
                    p.waiting.push(addr);
                }
            }
            return;
        }
        // Not in the image (never touched before the dump, or dropped
        // since): zeros, as a fresh page would read.
        let mut z = g::uffdio_zeropage { range: g::uffdio_range { start: addr, len: PAGE }, mode: 0, zeropage: 0 };
        // SAFETY: UFFDIO_ZEROPAGE maps the zero page only where nothing is
        // mapped; it never replaces the program's data.
        let res = unsafe { revenant_arch::sys::ioctl(p.uffd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut z) };
        match res {
            Ok(_) => {}
            Err(Errno::EAGAIN) => p.waiting.push(addr),
            // A copy put the page there meanwhile, or the area went away:
            // the thread only needs waking (it faults again if need be).
            Err(_) => {
                let mut w = g::uffdio_range { start: addr, len: PAGE };
                // SAFETY: waking only resumes threads waiting on the range.
                let _ = unsafe { revenant_arch::sys::ioctl(p.uffd.as_raw_fd(), UFFDIO_WAKE, &mut w) };
            }
        }
    }

    /// Wakes every thread waiting in a registered area. A thread whose
    /// page is still missing faults again and its fault comes to us anew;
    /// so no fault whose answer was lost can leave a thread waiting for
    /// ever, even without background copies to wake it.
    fn wake_all(&self) {
        for p in &self.procs {
            for a in p.areas.iter() {
                let mut w = g::uffdio_range { start: a.start, len: a.len() };
                // SAFETY: waking only resumes threads waiting on the range.
                let _ = unsafe { revenant_arch::sys::ioctl(p.uffd.as_raw_fd(), UFFDIO_WAKE, &mut w) };
            }
        }
    }

    /// Answers again the faults that met memory changing.
    fn retry_waiting(&mut self) {
        for i in 0..self.procs.len() {
            for addr in std::mem::take(&mut self.procs[i].waiting) {
                self.fault(i, addr);
            }
        }
    }

    /// One chunk for the next process with pages left, in turn.
    fn background(&mut self) {
        let n = self.procs.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let p = &mut self.procs[i];
            let Some(r) = p.pending.take_first(CHUNK) else { continue };
            match copy(p, r) {
                Copied::Done => {}
                Copied::Gone => p.pending = RangeSet::default(),
                Copied::Later(rest) => p.pending.insert(rest),
            }
            self.next = i + 1;
            return;
        }
    }

    /// Lets go of processes that have every page (or are gone).
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.procs.len() {
            if !self.procs[i].pending.is_empty() || !self.procs[i].waiting.is_empty() {
                i += 1;
                continue;
            }
            let p = self.procs.swap_remove(i);
            for a in p.areas.iter() {
                let mut r = g::uffdio_range { start: a.start, len: a.len() };
                // SAFETY: with every page in place, the areas become plain
                // memory again; faults no longer come to us.
                let _ = unsafe { revenant_arch::sys::ioctl(p.uffd.as_raw_fd(), UFFDIO_UNREGISTER, &mut r) };
            }
            let ms = p.since.elapsed().as_secs_f64() * 1e3;
            eprintln!("revenant lazy-pages: {}: all pages in after {ms:.1} ms", p.name);
            self.guard.release(p.held);
        }
    }
}

/// Copies `r` into process `p`, page by page past any that are there.
fn copy(p: &Proc, r: Range) -> Copied {
    let mut at = r.start;
    while at < r.end {
        let off = r.offset + (at - r.start);
        let image = p.images.get(r.file as usize);
        let src = image.and_then(|i| (off as usize).checked_add(i.at).filter(|_| off + (r.end - at) <= i.len as u64));
        let Some(src) = src else {
            // Checked when the list came in; a range past the image is
            // skipped rather than copied from beyond the map.
            return Copied::Done;
        };
        let mut c = g::uffdio_copy { dst: at, src: src as u64, len: r.end - at, mode: 0, copy: 0 };
        // SAFETY: `src` lies inside our read-only map of the image; `dst`
        // in the process's registered area, where only missing pages are
        // filled.
        let res = unsafe { revenant_arch::sys::ioctl(p.uffd.as_raw_fd(), UFFDIO_COPY, &mut c) };
        let done = c.copy.max(0) as u64;
        match res {
            Ok(_) => return Copied::Done,
            Err(Errno::EEXIST) => at += done + PAGE,
            Err(Errno::EAGAIN) => return Copied::Later(Range { start: at + done, offset: off + done, ..r }),
            Err(Errno::ESRCH) => return Copied::Gone,
            // The area went away (an unmap whose event is on its way):
            // nothing there to fill.
            Err(Errno::ENOENT) => at += done + PAGE,
            Err(e) => {
                eprintln!("revenant lazy-pages: {}: UFFDIO_COPY at {at:#x}: errno {}", p.name, e.raw());
                at += done + PAGE;
            }
        }
    }
    Copied::Done
}

fn as_bytes(msgs: &mut [g::uffd_msg]) -> &mut [u8] {
    let len = size_of_val(msgs);
    // SAFETY: uffd_msg is plain data without padding, and any bytes are a
    // valid value of it.
    unsafe { std::slice::from_raw_parts_mut(msgs.as_mut_ptr().cast(), len) }
}
