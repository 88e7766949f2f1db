//! What a transport and the request dispatch agree on: a request arrives as
//! its header, its op's fixed argument struct and its payload; its answer
//! goes back through the `ReplyChannel` it came with. Both transports
//! (`/dev/fuse` reads and FUSE over io_uring) hand requests to the same
//! `Dispatch`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// `struct fuse_in_header`: what every request starts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InHeader {
    /// The whole request's length on `/dev/fuse` (header included).
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Length of the request extensions after the payload, in 8-byte units.
    pub total_extlen: u16,
}

impl InHeader {
    /// `sizeof(struct fuse_in_header)`.
    pub const SIZE: usize = 40;

    /// Reads a header from the first `SIZE` bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<InHeader> {
        let bytes = bytes.get(..Self::SIZE)?;
        let u32_at = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        Some(InHeader {
            len: u32_at(0),
            opcode: u32_at(4),
            unique: u64_at(8),
            nodeid: u64_at(16),
            uid: u32_at(24),
            gid: u32_at(28),
            pid: u32_at(32),
            total_extlen: u16::from_ne_bytes([bytes[36], bytes[37]]),
        })
    }
}

/// `sizeof(struct fuse_out_header)`: len, error, unique.
pub const OUT_HEADER_SIZE: usize = 16;

/// Where the answer to a request goes.
pub trait ReplyChannel: Send + Sync {
    /// Sends the answer to request `unique`: `error` is 0 or a negative
    /// errno, `body` the reply's bytes after `struct fuse_out_header`, in
    /// pieces (empty with an error). Called at most once per request.
    fn send(&self, unique: u64, error: i32, body: &[&[u8]]) -> std::io::Result<()>;

    /// Sends the answer to a read: what `source` reads, read by the
    /// transport into the buffer the answer is sent from (as libfuse's
    /// file-descriptor buffers are), or the read's errno. The default
    /// reads into a fresh buffer; a transport with a buffer of its own
    /// reads into that, so the data is neither zeroed first nor copied again
    /// on its way.
    fn send_read(&self, unique: u64, source: ReadSource) -> std::io::Result<()> {
        let mut body = vec![0; source.size];
        match source.read_into(&mut body) {
            Ok(read) => self.send(unique, 0, &[&body[..read]]),
            Err(error) => self.send(unique, error, &[]),
        }
    }
}

/// Serves requests, whichever transport brought them.
pub trait Dispatch: Send + Sync {
    /// Serves one request. `op_in` is the op's fixed argument struct (for
    /// a write, `struct fuse_write_in`; empty for ops that have none, such as
    /// a lookup); `payload` is what follows it (names, write data). The
    /// answer goes through `reply` before this returns, exactly once, also
    /// when the op panics (EIO). FORGET and BATCH_FORGET have no answer; the
    /// kernel sends them through `/dev/fuse` only.
    fn dispatch(
        &self,
        header: &InHeader,
        op_in: &[u8],
        payload: &[u8],
        reply: Arc<dyn ReplyChannel>,
    );

    /// Told when a transport found a request while polling for it, where
    /// it would otherwise have slept (for the mount's figures).
    fn found_polling(&self) {}
}

/// The data a read is answered with: at most `size` bytes at `offset` of an
/// open real file.
pub struct ReadSource {
    pub file: Arc<OwnedFd>,
    pub offset: u64,
    pub size: usize,
}

impl ReadSource {
    /// Reads the data into the start of `buf` (at most `size` bytes, at most
    /// `buf`'s length); returns how many came, or a negative errno.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<usize, i32> {
        let room = buf.len().min(self.size);
        crate::fileio::read_at(self.file.as_fd(), self.offset, &mut buf[..room])
            .map_err(|e| -e.raw_os_error())
    }
}
