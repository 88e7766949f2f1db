//! The kernel's FUSE ABI (include/uapi/linux/fuse.h, protocol 7.x): the
//! opcodes, flags and struct layouts cowfs reads and writes, as byte
//! readers and writers (native endian, the kernel's layout): safe code
//! only, no struct casts.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

pub const KERNEL_MAJOR: u32 = 7;
/// The minor version cowfs speaks: 7.45 (Linux 6.18) has FUSE over io_uring.
pub const KERNEL_MINOR: u32 = 45;
/// The oldest minor cowfs serves: 7.31 (Linux 5.8) has every struct at the
/// size this module reads and writes.
pub const OLDEST_MINOR: u32 = 31;

pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
    pub const STATX: u32 = 52;
}

/// The size of an op's fixed argument struct (`in_args[0]`), which the
/// kernel puts before the payload on `/dev/fuse` and in `op_in` on a ring.
pub fn op_in_size(opcode: u32) -> usize {
    use opcode::*;
    match opcode {
        FORGET | RENAME | LINK | OPEN | OPENDIR | MKDIR | GETXATTR | LISTXATTR | ACCESS
        | INTERRUPT | BATCH_FORGET | SYNCFS | SETXATTR => 8,
        GETATTR | MKNOD | FSYNC | FSYNCDIR | CREATE | RENAME2 | BMAP | TMPFILE => 16,
        RELEASE | RELEASEDIR | FLUSH | LSEEK | POLL | STATX => 24,
        FALLOCATE | IOCTL => 32,
        READ | WRITE | READDIR | READDIRPLUS => 40,
        GETLK | SETLK | SETLKW => 48,
        COPY_FILE_RANGE => 56,
        SETATTR => 88,
        INIT => 64,
        _ => 0,
    }
}

/// INIT flags (the low 32 bits in `flags`, the high ones in `flags2`).
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// `fuse_setattr_in.valid` bits.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    /// The caller lacks CAP_FSETID: a size change must clear set-id bits
    /// (with FUSE_HANDLE_KILLPRIV_V2).
    pub const KILL_SUIDGID: u32 = 1 << 11;
}

/// `fuse_write_in.write_flags`: the writer lacks CAP_FSETID, so the write
/// must clear set-id bits (with FUSE_HANDLE_KILLPRIV_V2).
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;

/// `fuse_getattr_in.getattr_flags`: `fh` is valid.
pub const GETATTR_FH: u32 = 1 << 0;
/// `fuse_fsync_in.fsync_flags`: only the data.
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
/// `fuse_open_out.open_flags`.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;
/// `fuse_out_header.error` of an inode invalidation notice.
pub const NOTIFY_INVAL_INODE: i32 = 2;

/// Reads an argument struct field by field, in the kernel's order.
pub struct ArgReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ArgReader<'a> {
    pub fn new(bytes: &'a [u8]) -> ArgReader<'a> {
        ArgReader { bytes }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_ne_bytes)
    }

    pub fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_ne_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_ne_bytes)
    }

    pub fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_ne_bytes)
    }

    /// A NUL-terminated name (the NUL is consumed, not returned).
    pub fn name(&mut self) -> Option<&'a OsStr> {
        let end = self.bytes.iter().position(|&b| b == 0)?;
        let name = &self.bytes[..end];
        self.bytes = &self.bytes[end + 1..];
        Some(OsStr::from_bytes(name))
    }

    /// The bytes left.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Builds a reply body field by field, in the kernel's order.
#[derive(Default)]
pub struct ArgWriter {
    pub bytes: Vec<u8>,
}

impl ArgWriter {
    pub fn with_capacity(capacity: usize) -> ArgWriter {
        ArgWriter {
            bytes: Vec::with_capacity(capacity),
        }
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
        self
    }

    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
        self
    }

    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
        self
    }

    pub fn zeros(&mut self, count: usize) -> &mut Self {
        self.bytes.resize(self.bytes.len() + count, 0);
        self
    }

    /// Pads to the next multiple of 8, as dirents are.
    pub fn pad8(&mut self) -> &mut Self {
        let padded = self.bytes.len().next_multiple_of(8);
        self.bytes.resize(padded, 0);
        self
    }
}

/// What `struct fuse_attr` says of an object.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileAttr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// `sizeof(struct fuse_attr)`.
pub const ATTR_SIZE: usize = 88;
/// `sizeof(struct fuse_entry_out)`.
pub const ENTRY_OUT_SIZE: usize = 40 + ATTR_SIZE;

impl ArgWriter {
    /// `struct fuse_attr`.
    pub fn attr(&mut self, attr: &FileAttr) -> &mut Self {
        self.u64(attr.ino)
            .u64(attr.size)
            .u64(attr.blocks)
            .i64(attr.atime.0)
            .i64(attr.mtime.0)
            .i64(attr.ctime.0)
            .u32(attr.atime.1)
            .u32(attr.mtime.1)
            .u32(attr.ctime.1)
            .u32(attr.mode)
            .u32(attr.nlink)
            .u32(attr.uid)
            .u32(attr.gid)
            .u32(attr.rdev)
            .u32(attr.blksize)
            .u32(0)
    }

    /// `struct fuse_entry_out`: the node id and generation the kernel will
    /// hold, how long the name and the attributes may be cached.
    pub fn entry_out(
        &mut self,
        nodeid: u64,
        generation: u64,
        ttl: &std::time::Duration,
        attr: &FileAttr,
    ) -> &mut Self {
        self.u64(nodeid)
            .u64(generation)
            .u64(ttl.as_secs())
            .u64(ttl.as_secs())
            .u32(ttl.subsec_nanos())
            .u32(ttl.subsec_nanos())
            .attr(attr)
    }

    /// `struct fuse_dirent` of `name`, padded.
    pub fn dirent(&mut self, ino: u64, offset: u64, kind: u32, name: &[u8]) -> &mut Self {
        self.u64(ino).u64(offset).u32(name.len() as u32).u32(kind);
        self.bytes.extend_from_slice(name);
        self.pad8()
    }
}

/// The size of the dirent of a name of `len` bytes, padded.
pub fn dirent_size(len: usize) -> usize {
    (24 + len).next_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_the_kernels_sizes() {
        let mut w = ArgWriter::default();
        w.attr(&FileAttr::default());
        assert_eq!(w.bytes.len(), ATTR_SIZE);
        let mut w = ArgWriter::default();
        w.entry_out(
            1,
            0,
            &std::time::Duration::from_secs(1),
            &FileAttr::default(),
        );
        assert_eq!(w.bytes.len(), ENTRY_OUT_SIZE);
        let mut w = ArgWriter::default();
        w.dirent(1, 2, 4, b"abc");
        assert_eq!(w.bytes.len(), 32);
        assert_eq!(dirent_size(3), 32);
        assert_eq!(dirent_size(8), 32);
        assert_eq!(dirent_size(9), 40);
    }

    #[test]
    fn names_end_at_their_nul() {
        let mut r = ArgReader::new(b"old\0new\0");
        assert_eq!(r.name(), Some(OsStr::new("old")));
        assert_eq!(r.name(), Some(OsStr::new("new")));
        assert_eq!(r.name(), None);
    }
}
