//! The `/dev/fuse` transport: the INIT handshake, then request threads that
//! each read requests from their own clone of the device fd and answer
//! through it. With FUSE over io_uring in use, one thread is left here for
//! what the kernel still sends through the device (forgets, interrupts).

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::poll::{PollWindow, Poller};
use super::wire::abi::{self, ArgReader, ArgWriter};
use super::wire::{Dispatch, InHeader, OUT_HEADER_SIZE, ReadSource, ReplyChannel};
use crate::sys;

/// The most a write request carries (`max_write`), and so the size of a
/// read reply: 1 MiB, the kernel's default limit of 256 pages a request.
pub const MAX_WRITE: u32 = 1 << 20;
const MAX_PAGES: u16 = (MAX_WRITE / 4096) as u16;
/// A request buffer: the largest write and its headers.
const BUFFER_SIZE: usize = MAX_WRITE as usize + 4096;

/// Answers through one `/dev/fuse` fd.
pub struct DevChannel {
    fd: Arc<OwnedFd>,
}

impl DevChannel {
    pub fn new(fd: Arc<OwnedFd>) -> DevChannel {
        DevChannel { fd }
    }

    /// Writes a message: an answer (`unique` ≠ 0) or a notification
    /// (`unique` 0, `error` the notice's code).
    fn write(&self, unique: u64, error: i32, body: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = OUT_HEADER_SIZE + body.iter().map(|piece| piece.len()).sum::<usize>();
        let mut header = ArgWriter::with_capacity(OUT_HEADER_SIZE);
        header.u32(len as u32).i32(error).u64(unique);
        let mut pieces = Vec::with_capacity(1 + body.len());
        pieces.push(IoSlice::new(&header.bytes));
        pieces.extend(body.iter().map(|piece| IoSlice::new(piece)));
        sys::write_reply(self.fd.as_fd(), &pieces).map_err(std::io::Error::from)
    }

    /// Tells the kernel the attributes it holds of node `ino` are stale
    /// (`FUSE_NOTIFY_INVAL_INODE`; offset -1 leaves its pages alone).
    pub fn invalidate_attrs(&self, ino: u64) -> std::io::Result<()> {
        let mut body = ArgWriter::with_capacity(24);
        body.u64(ino).i64(-1).i64(0);
        self.write(0, abi::NOTIFY_INVAL_INODE, &[&body.bytes])
    }
}

impl ReplyChannel for DevChannel {
    fn send(&self, unique: u64, error: i32, body: &[&[u8]]) -> std::io::Result<()> {
        self.write(unique, error, body)
    }

    /// Reads into a buffer kept by the request thread and writes the answer
    /// from it: no fresh (for a big read, freshly faulted-in) allocation, no
    /// zeroing, for every request.
    fn send_read(&self, unique: u64, source: ReadSource) -> std::io::Result<()> {
        READ_REPLY.with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() < source.size {
                // Zeroed once, as it grows to the largest read asked for.
                kept.resize(source.size, 0);
            }
            match source.read_into(&mut kept[..source.size]) {
                Ok(read) => self.write(unique, 0, &[&kept[..read]]),
                Err(error) => self.write(unique, error, &[]),
            }
        })
    }
}

thread_local! {
    /// Where a read's answer is read into, one for each request thread (as
    /// big as the largest read asked for: at most `MAX_WRITE` bytes).
    static READ_REPLY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What the kernel offered at INIT and what cowfs took.
#[derive(Clone, Copy, Debug)]
pub struct Negotiated {
    pub minor: u32,
    /// Every flag the kernel offered.
    pub offered: u64,
    /// The flags cowfs asked for and the kernel offered.
    pub flags: u64,
    pub max_write: u32,
    pub max_pages: u16,
}

impl Negotiated {
    /// Whether the kernel offered FUSE over io_uring (the fuse module's
    /// `enable_uring` parameter is on).
    pub fn io_uring_offered(&self) -> bool {
        self.offered & abi::init::OVER_IO_URING != 0
    }
}

/// What the filesystem asks for at INIT, given what the kernel offers.
pub struct InitAnswer {
    pub flags: u64,
    /// With passthrough: how deep backing files may stack.
    pub max_stack_depth: u32,
}

/// Reads the kernel's INIT and answers it with `choose`'s flags.
pub fn handshake(
    dev: &OwnedFd,
    choose: impl FnOnce(u64) -> InitAnswer,
) -> std::io::Result<Negotiated> {
    let mut buf = vec![0u8; 8192];
    let channel = DevChannel::new(Arc::new(dev.try_clone()?));
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let len = sys::read_request(dev.as_fd(), &mut buf)?;
    let header = InHeader::parse(&buf[..len]).ok_or_else(|| invalid("short FUSE request"))?;
    if header.opcode != abi::opcode::INIT {
        let _ = channel.send(header.unique, -libc::EIO, &[]);
        return Err(invalid("the first FUSE request was not INIT"));
    }
    let mut args = ArgReader::new(&buf[InHeader::SIZE..len]);
    let (major, minor) = (args.u32().unwrap_or(0), args.u32().unwrap_or(0));
    let max_readahead = args.u32().unwrap_or(0);
    let flags = u64::from(args.u32().unwrap_or(0));
    let flags2 = u64::from(args.u32().unwrap_or(0));
    if major != abi::KERNEL_MAJOR || minor < abi::OLDEST_MINOR {
        let _ = channel.send(header.unique, -libc::EPROTO, &[]);
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "FUSE protocol {major}.{minor} (cowfs needs 7.{})",
                abi::OLDEST_MINOR
            ),
        ));
    }
    let offered = if flags & abi::init::INIT_EXT != 0 {
        flags | (flags2 << 32)
    } else {
        flags
    };
    let base = abi::init::ASYNC_READ | abi::init::BIG_WRITES | abi::init::MAX_PAGES;
    let answer = choose(offered);
    let taken = (answer.flags | base | abi::init::INIT_EXT) & offered;
    let mut out = ArgWriter::with_capacity(64);
    out.u32(abi::KERNEL_MAJOR)
        .u32(abi::KERNEL_MINOR)
        .u32(max_readahead)
        .u32(taken as u32)
        .u16(16) // max_background
        .u16(0) // congestion_threshold: the kernel's default
        .u32(MAX_WRITE)
        .u32(1) // time_gran: nanoseconds
        .u16(MAX_PAGES)
        .u16(0) // map_alignment
        .u32((taken >> 32) as u32)
        .u32(if taken & abi::init::PASSTHROUGH != 0 {
            answer.max_stack_depth
        } else {
            0
        })
        .u16(0) // request_timeout
        .zeros(22);
    channel.send(header.unique, 0, &[&out.bytes])?;
    Ok(Negotiated {
        minor,
        offered,
        flags: taken,
        max_write: MAX_WRITE,
        max_pages: MAX_PAGES,
    })
}

/// Splits a request read from `/dev/fuse` into header, op argument and
/// payload (request extensions at the end left out).
fn split(request: &[u8]) -> Option<(InHeader, &[u8], &[u8])> {
    let header = InHeader::parse(request)?;
    let body = request.get(InHeader::SIZE..)?;
    let extensions = usize::from(header.total_extlen) * 8;
    let body = &body[..body.len().saturating_sub(extensions)];
    let op_in_len = abi::op_in_size(header.opcode).min(body.len());
    let (op_in, payload) = body.split_at(op_in_len);
    Some((header, op_in, payload))
}

/// Serves requests read from `fd` until the mount is gone; after each
/// answer it polls for the next request for `poll` before it sleeps.
pub fn serve_device(
    fd: Arc<OwnedFd>,
    dispatch: &dyn Dispatch,
    poll: PollWindow,
) -> std::io::Result<()> {
    let channel: Arc<dyn ReplyChannel> = Arc::new(DevChannel::new(fd.clone()));
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut poller = Poller::new(poll);
    // Without its flags the fd is not switched to polling.
    let flags = sys::status_flags(fd.as_fd()).ok();
    loop {
        let answered = Instant::now();
        let polled = flags.and_then(|flags| {
            poll_for_request((fd.as_fd(), flags), &mut buf, &mut poller, answered)
        });
        let read = match polled {
            Some(polled) => {
                dispatch.found_polling();
                polled
            }
            None => {
                let read = sys::read_request(fd.as_fd(), &mut buf);
                poller.slept(answered.elapsed());
                read
            }
        };
        let len = match read {
            Ok(len) => len,
            // ECONNABORTED: a read that took a request as the unmount tore
            // the connection down (the kernel ends that request itself).
            Err(sys::Errno::NODEV | sys::Errno::CONNABORTED) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match split(&buf[..len]) {
            Some((header, op_in, payload)) => {
                dispatch.dispatch(&header, op_in, payload, channel.clone());
            }
            None => tracing::error!(len, "short FUSE request ignored"),
        }
    }
}

/// Tries non-blocking reads of `fd` for the poller's window: `None` when
/// none found a request (the caller then sleeps in a blocking read).
fn poll_for_request(
    (fd, flags): (BorrowedFd<'_>, sys::OFlags),
    buf: &mut [u8],
    poller: &mut Poller,
    answered: Instant,
) -> Option<sys::SysResult<usize>> {
    if !poller.polls() || sys::set_nonblocking(fd, flags, true).is_err() {
        return None;
    }
    let polled = poller.poll(answered, || match sys::try_read_request(fd, buf) {
        Ok(None) => None,
        Ok(Some(len)) => Some(Ok(len)),
        Err(e) => Some(Err(e)),
    });
    match sys::set_nonblocking(fd, flags, false) {
        Ok(()) => polled,
        // A request read is served all the same; else the thread ends: left
        // non-blocking, its sleeping reads would spin.
        Err(e) => polled.or(Some(Err(e))),
    }
}

/// Starts `threads` request threads on `dev`, each on its own clone of the
/// fd (the first on `dev` itself), and returns their handles.
pub fn spawn_device_threads(
    dev: &Arc<OwnedFd>,
    dispatch: Arc<dyn Dispatch>,
    threads: usize,
    poll: PollWindow,
) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads.max(1) {
        let fd = if index == 0 {
            dev.clone()
        } else {
            Arc::new(sys::clone_dev_fuse(dev.as_fd())?)
        };
        let dispatch = dispatch.clone();
        let handle = std::thread::Builder::new()
            .name(format!("cowfs-req-{index}"))
            .spawn(move || serve_device(fd, &*dispatch, poll))?;
        handles.push(handle);
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_splits_at_its_ops_argument() {
        let mut request = vec![0u8; InHeader::SIZE];
        request[4] = abi::opcode::MKDIR as u8;
        request.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        request.extend_from_slice(b"name\0");
        let (header, op_in, payload) = split(&request).unwrap();
        assert_eq!(header.opcode, abi::opcode::MKDIR);
        assert_eq!(op_in.len(), 8);
        assert_eq!(payload, b"name\0");
    }
}
