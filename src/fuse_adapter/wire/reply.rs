//! Replies, one type per kind of answer. Each is sent at most once; one
//! dropped unsent (a panic in the request) answers EIO, so the caller never
//! waits for an answer that won't come.

use std::sync::Arc;
use std::time::Duration;

use super::abi::{self, ArgWriter, FileAttr};
use super::channel::{ReadSource, ReplyChannel};
use crate::error::Errno;

/// Sends one request's answer through the channel it came with.
pub struct Reply {
    unique: u64,
    channel: Option<Arc<dyn ReplyChannel>>,
}

impl Reply {
    pub fn new(unique: u64, channel: Arc<dyn ReplyChannel>) -> Reply {
        Reply {
            unique,
            channel: Some(channel),
        }
    }

    fn send(&mut self, error: i32, body: &[&[u8]]) {
        if let Some(channel) = self.channel.take()
            && let Err(e) = channel.send(self.unique, error, body)
        {
            // ENOENT: the request was interrupted and taken back.
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!(%e, unique = self.unique, "sending a reply failed");
            }
        }
    }

    pub fn error(mut self, e: Errno) {
        self.send(-e.raw_os_error(), &[]);
    }

    pub fn ok(mut self) {
        self.send(0, &[]);
    }

    pub fn bytes(mut self, body: &[u8]) {
        self.send(0, &[body]);
    }

    /// Answers with what `source` reads (see `ReplyChannel::send_read`).
    pub fn read_from(mut self, source: ReadSource) {
        if let Some(channel) = self.channel.take()
            && let Err(e) = channel.send_read(self.unique, source)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::warn!(%e, unique = self.unique, "sending a reply failed");
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.send(-libc::EIO, &[]);
    }
}

/// Declares a reply type that wraps `Reply` and can fail with an errno.
macro_rules! reply_kind {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(Reply);

        impl $name {
            pub fn new(reply: Reply) -> $name {
                $name(reply)
            }

            pub fn error(self, e: Errno) {
                self.0.error(e);
            }
        }
    };
}

reply_kind!(
    /// Success or an errno, nothing else.
    ReplyEmpty
);
reply_kind!(
    /// An object's attributes.
    ReplyAttr
);
reply_kind!(
    /// A name found or made: the kernel takes a reference on its node.
    ReplyEntry
);
reply_kind!(
    /// Bytes: file data, a symlink's target.
    ReplyData
);
reply_kind!(
    /// How many bytes were written or copied.
    ReplyWrite
);
reply_kind!(
    /// A file offset.
    ReplyLseek
);
reply_kind!(
    /// The filesystem's figures.
    ReplyStatfs
);
reply_kind!(
    /// An xattr value or name list, or its size.
    ReplyXattr
);
reply_kind!(
    /// An open file handle.
    ReplyOpen
);
reply_kind!(
    /// A file made and opened.
    ReplyCreate
);

impl ReplyEmpty {
    pub fn ok(self) {
        self.0.ok();
    }
}

/// `struct fuse_attr_out`.
fn attr_out(ttl: &Duration, attr: &FileAttr) -> ArgWriter {
    let mut w = ArgWriter::with_capacity(16 + abi::ATTR_SIZE);
    w.u64(ttl.as_secs())
        .u32(ttl.subsec_nanos())
        .u32(0)
        .attr(attr);
    w
}

impl ReplyAttr {
    pub fn attr(self, ttl: &Duration, attr: &FileAttr) {
        self.0.bytes(&attr_out(ttl, attr).bytes);
    }
}

impl ReplyEntry {
    pub fn entry(self, ttl: &Duration, attr: &FileAttr, generation: u64) {
        let mut w = ArgWriter::with_capacity(abi::ENTRY_OUT_SIZE);
        w.entry_out(attr.ino, generation, ttl, attr);
        self.0.bytes(&w.bytes);
    }
}

impl ReplyData {
    pub fn data(self, data: &[u8]) {
        self.0.bytes(data);
    }

    /// Answers with the data `source` reads, read into the buffer the
    /// answer goes from, or with the read's errno.
    pub fn read_from(self, source: ReadSource) {
        self.0.read_from(source);
    }
}

impl ReplyWrite {
    pub fn written(self, size: u32) {
        let mut w = ArgWriter::with_capacity(8);
        w.u32(size).u32(0);
        self.0.bytes(&w.bytes);
    }
}

impl ReplyLseek {
    pub fn offset(self, offset: i64) {
        let mut w = ArgWriter::with_capacity(8);
        w.i64(offset);
        self.0.bytes(&w.bytes);
    }
}

/// What `struct fuse_kstatfs` says.
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl ReplyStatfs {
    pub fn statfs(self, st: &Statfs) {
        let mut w = ArgWriter::with_capacity(80);
        w.u64(st.blocks)
            .u64(st.bfree)
            .u64(st.bavail)
            .u64(st.files)
            .u64(st.ffree)
            .u32(st.bsize)
            .u32(st.namelen)
            .u32(st.frsize)
            .u32(0)
            .zeros(24);
        self.0.bytes(&w.bytes);
    }
}

impl ReplyXattr {
    /// The size a value would need (the caller asked with size 0).
    pub fn size(self, size: u32) {
        let mut w = ArgWriter::with_capacity(8);
        w.u32(size).u32(0);
        self.0.bytes(&w.bytes);
    }

    pub fn data(self, data: &[u8]) {
        self.0.bytes(data);
    }
}

/// `struct fuse_open_out`.
fn open_out(fh: u64, open_flags: u32, backing_id: i32) -> ArgWriter {
    let mut w = ArgWriter::with_capacity(16);
    w.u64(fh).u32(open_flags).i32(backing_id);
    w
}

/// How the kernel does I/O on an open file.
#[derive(Clone, Copy, Debug)]
pub enum OpenIo {
    /// Through the daemon, keeping the page cache (`FOPEN_KEEP_CACHE`) or not.
    Cached { keep_cache: bool },
    /// Straight to the backing file the kernel registered under this id.
    Passthrough(u32),
}

impl OpenIo {
    fn flags_and_backing(self) -> (u32, i32) {
        match self {
            OpenIo::Cached { keep_cache } => {
                (if keep_cache { abi::FOPEN_KEEP_CACHE } else { 0 }, 0)
            }
            OpenIo::Passthrough(id) => (abi::FOPEN_PASSTHROUGH, id as i32),
        }
    }
}

impl ReplyOpen {
    pub fn opened(self, fh: u64, io: OpenIo) {
        let (flags, backing) = io.flags_and_backing();
        self.0.bytes(&open_out(fh, flags, backing).bytes);
    }
}

impl ReplyCreate {
    pub fn created(self, ttl: &Duration, attr: &FileAttr, generation: u64, fh: u64, io: OpenIo) {
        let (flags, backing) = io.flags_and_backing();
        let mut w = ArgWriter::with_capacity(abi::ENTRY_OUT_SIZE + 16);
        w.entry_out(attr.ino, generation, ttl, attr);
        w.bytes
            .extend_from_slice(&open_out(fh, flags, backing).bytes);
        self.0.bytes(&w.bytes);
    }
}

/// A readdir or readdirplus reply, filled entry by entry up to the size
/// the kernel asked for.
pub struct ReplyDirectory {
    reply: Reply,
    buf: ArgWriter,
    max: usize,
}

impl ReplyDirectory {
    pub fn new(reply: Reply, max: usize) -> ReplyDirectory {
        ReplyDirectory {
            reply,
            buf: ArgWriter::with_capacity(max),
            max,
        }
    }

    /// Adds a plain entry; `true` when it did not fit (the reply is full).
    pub fn add(&mut self, ino: u64, offset: u64, kind: u32, name: &[u8]) -> bool {
        if self.buf.bytes.len() + abi::dirent_size(name.len()) > self.max {
            return true;
        }
        self.buf.dirent(ino, offset, kind, name);
        false
    }

    /// Adds a readdirplus entry: the name's lookup answer (`None`: node id
    /// 0, which tells the kernel to keep what it holds of the name, or to
    /// look it up when it needs it), then its dirent; `true` when it did not
    /// fit (the kernel then holds no reference).
    pub fn add_plus(
        &mut self,
        offset: u64,
        name: &[u8],
        (d_ino, d_type): (u64, u32),
        entry: Option<(&Duration, &FileAttr, u64)>,
    ) -> bool {
        let size = abi::ENTRY_OUT_SIZE + abi::dirent_size(name.len());
        if self.buf.bytes.len() + size > self.max {
            return true;
        }
        match entry {
            Some((ttl, attr, generation)) => self.buf.entry_out(attr.ino, generation, ttl, attr),
            None => self.buf.zeros(abi::ENTRY_OUT_SIZE),
        };
        self.buf.dirent(d_ino, offset, d_type, name);
        false
    }

    pub fn ok(self) {
        self.reply.bytes(&self.buf.bytes);
    }

    pub fn error(self, e: Errno) {
        self.reply.error(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Keeps what was sent: (error, body).
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(i32, Vec<u8>)>>);

    impl ReplyChannel for Recorded {
        fn send(&self, _unique: u64, error: i32, body: &[&[u8]]) -> std::io::Result<()> {
            self.0.lock().push((error, body.concat()));
            Ok(())
        }
    }

    fn read_from(path: &std::path::Path, offset: u64, size: usize) -> Vec<(i32, Vec<u8>)> {
        let channel = Arc::new(Recorded::default());
        let file = Arc::new(std::os::fd::OwnedFd::from(
            std::fs::File::open(path).expect("open"),
        ));
        let source = ReadSource { file, offset, size };
        ReplyData::new(Reply::new(1, channel.clone())).read_from(source);
        std::mem::take(&mut *channel.0.lock())
    }

    #[test]
    fn a_read_answers_once_with_at_most_the_asked_bytes_or_its_errno() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").expect("write");
        assert_eq!(read_from(&path, 2, 4), [(0, b"2345".to_vec())]);
        assert_eq!(read_from(&path, 8, 64), [(0, b"89".to_vec())]);
        assert_eq!(read_from(&path, 10, 4), [(0, Vec::new())]);
        // A read of a dir fails with its errno, and nothing else is sent.
        assert_eq!(read_from(dir.path(), 0, 4), [(-libc::EISDIR, Vec::new())]);
    }
}
