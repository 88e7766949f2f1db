//! File I/O by inode, for mounts where the kernel opens and closes files
//! without a request (`open=kernel`, FUSE's no-open mode).
//!
//! There is no open file of the daemon's behind a read or a write: each
//! names the inode, and goes to the real file the inode shows at that
//! moment. So a reader of a lower file reads the upper copy from the first
//! read after a copy-up, as on the kernel's overlayfs, and the first write
//! is what copies a lower file up (an open for writing alone changes
//! nothing). The real files are kept open in two bounded caches, one of
//! files open for reading and one of upper files open for writing, keyed by
//! real object like the `O_PATH` cache, so that a stream of reads of one
//! file opens it once; an object that is removed leaves both at once.
//!
//! An upper file whose last name goes while the kernel holds its inode may
//! still be open: the inode keeps an `O_PATH` fd of it
//! (`Location::Kept`), through which it is read, written and stat'ed until
//! the kernel forgets it.
//!
//! Files are made by MKNOD there (CREATE is declined, since it would open
//! the new file for the daemon), and the kernel opens them itself.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::copyup::CopyUp;
use crate::error::OpResult;
use crate::fdcache::FdCache;
use crate::inode::{Inode, RealRef};
use crate::overlay::Overlay;
use crate::sys::{self, Errno, FileType, OFlags};

/// Real files open for I/O, by real object.
pub struct InodeFiles {
    readers: FdCache,
    writers: FdCache,
}

impl InodeFiles {
    /// Caches bounded by a share of the `O_PATH` cache's budget: open files
    /// are needed only for the files in use right now.
    pub fn new(fd_budget: usize) -> InodeFiles {
        InodeFiles {
            readers: FdCache::new((fd_budget / 4).max(64)),
            writers: FdCache::new((fd_budget / 8).max(64)),
        }
    }

    /// Drops the open files of a removed real object: its number may be
    /// given to a new object, and an upper file's space is freed only once
    /// nothing holds it open.
    pub fn forget(&self, layer: crate::layer::LayerId, real_ino: u64) {
        self.readers.remove(layer, real_ino);
        self.writers.remove(layer, real_ino);
    }

    /// Closes every file (they are opened again on demand).
    pub fn clear(&self) {
        self.readers.clear();
        self.writers.clear();
    }
}

/// Whether an open real file may be kept in a cache: not one with no name
/// left (`Location::Kept`), whose space an open file in a cache would hold
/// after its inode is gone, until the cache dropped it.
fn cacheable(real: &RealRef) -> bool {
    !matches!(real.loc, crate::inode::Location::Kept(_))
}

fn regular(inode: &Inode) -> OpResult<()> {
    match inode.kind {
        FileType::RegularFile => Ok(()),
        FileType::Directory => Err(Errno::ISDIR),
        _ => Err(Errno::INVAL),
    }
}

impl Overlay {
    /// The real file to read `inode` from now: its upper copy once there
    /// is one with data, else its lower file.
    fn reading_fd(&self, inode: &Inode) -> OpResult<Arc<OwnedFd>> {
        regular(inode)?;
        let source = inode.data().ok_or(Errno::STALE)?;
        let files = self.inode_files();
        if let Some(fd) = files.readers.get(source.layer, source.real_ino) {
            return Ok(fd);
        }
        let flags = OFlags::RDONLY | self.atime_flags(source.is_upper());
        let fd = Arc::new(self.open_real(&source, flags)?);
        if cacheable(&source) {
            files
                .readers
                .insert(source.layer, source.real_ino, fd.clone());
        }
        Ok(fd)
    }

    /// The upper file of `inode` open for writing, copied up first.
    fn writing_fd(&self, inode: &Arc<Inode>) -> OpResult<Arc<OwnedFd>> {
        regular(inode)?;
        let upper = self.copy_up_with(inode, CopyUp::Data)?;
        self.upper_file_for_writing(&upper)
    }

    /// An upper file open for writing, from the cache or opened now.
    fn upper_file_for_writing(&self, upper: &RealRef) -> OpResult<Arc<OwnedFd>> {
        let files = self.inode_files();
        if let Some(fd) = files.writers.get(upper.layer, upper.real_ino) {
            return Ok(fd);
        }
        // Read and write, so that the same file serves copy_file_range and
        // fallocate; a daemon without CAP_DAC_OVERRIDE may only write a
        // file whose mode lets its owner write but not read.
        let fd = match self.open_real(upper, OFlags::RDWR) {
            Err(Errno::ACCESS) => self.open_real(upper, OFlags::WRONLY)?,
            opened => opened?,
        };
        let fd = Arc::new(fd);
        if cacheable(upper) {
            files
                .writers
                .insert(upper.layer, upper.real_ino, fd.clone());
        }
        Ok(fd)
    }

    /// A file MKNOD just made, open for reading and writing: kept as the
    /// file its first write goes to, so that neither that write nor the
    /// kernel's read of security.capability before it opens it again.
    pub fn keep_made_file(&self, inode: &Inode, fd: OwnedFd) {
        if !self.options.kernel_opens {
            return;
        }
        if let Some(upper) = inode.upper()
            && cacheable(&upper)
        {
            self.inode_files()
                .writers
                .insert(upper.layer, upper.real_ino, Arc::new(fd));
        }
    }

    /// The upper file of `inode` if one is open for writing already: a
    /// handle's, or (`open=kernel`) the writers cache's. Calls that do not
    /// take an `O_PATH` fd can use it directly.
    pub(crate) fn open_writer_of(&self, inode: &Inode) -> Option<Arc<OwnedFd>> {
        if let Some(open) = self.handles().writer_fd(inode) {
            return Some(open);
        }
        if !self.options.kernel_opens {
            return None;
        }
        let upper = inode.upper()?;
        self.inode_files().writers.get(upper.layer, upper.real_ino)
    }

    /// The real file a read of `inode` reads now: its upper copy once there
    /// is one with data, else its lower file (the transport reads the
    /// answer from it into the buffer the answer is sent from).
    pub fn file_to_read(&self, inode: &Inode) -> OpResult<Arc<OwnedFd>> {
        self.reading_fd(inode)
    }

    /// Writes at `offset` (the kernel places appends itself, from the size
    /// it knows); `open_flags` are the flags the file was opened with, whose
    /// O_SYNC and O_DSYNC make the write durable before it is answered.
    pub fn write_inode(
        &self,
        inode: &Arc<Inode>,
        offset: u64,
        data: &[u8],
        open_flags: i32,
    ) -> OpResult<usize> {
        let fd = self.writing_fd(inode)?;
        let written = crate::fileio::write_at(fd.as_fd(), offset, data)?;
        if open_flags & libc::O_DSYNC != 0 && !self.options.no_sync {
            // O_SYNC includes O_DSYNC's bit and asks for the metadata too.
            let data_only = open_flags & libc::O_SYNC != libc::O_SYNC;
            sys::fsync(fd.as_fd(), data_only)?;
        }
        Ok(written)
    }

    /// fsync of an open file of `inode`: its upper copy, what the kernel's
    /// fsync makes durable (a file never written has none: nothing to do).
    pub fn fsync_inode(&self, inode: &Inode, data_only: bool) -> OpResult<()> {
        if self.options.no_sync {
            return Ok(());
        }
        regular(inode)?;
        let Some(upper) = inode.upper() else {
            return Ok(());
        };
        let fd = sys::reopen(self.real_fd(&upper)?.as_fd(), OFlags::RDONLY)?;
        // For a metacopy file (or a copy behind its mark) this is the copy
        // holding its metadata; its data is the lower file's, durable.
        sys::fsync(fd.as_fd(), data_only)?;
        self.sync_parent_of(&upper)
    }

    pub fn fallocate_inode(
        &self,
        inode: &Arc<Inode>,
        mode: sys::FallocateFlags,
        offset: u64,
        len: u64,
    ) -> OpResult<()> {
        let fd = self.writing_fd(inode)?;
        sys::fallocate(fd.as_fd(), mode, offset, len)
    }

    pub fn lseek_inode(&self, inode: &Inode, offset: i64, whence: i32) -> OpResult<i64> {
        let fd = self.reading_fd(inode)?;
        crate::fileio::seek_in(fd.as_fd(), offset, whence)
    }

    pub fn copy_file_range_inode(
        &self,
        (from, offset_in): (&Inode, u64),
        (to, offset_out): (&Arc<Inode>, u64),
        len: u64,
    ) -> OpResult<usize> {
        let output = self.writing_fd(to)?;
        let input = self.reading_fd(from)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
        sys::copy_file_range(input.as_fd(), offset_in, output.as_fd(), offset_out, len)
    }

    /// Before the last name of an upper file goes: the inode keeps the
    /// file reachable for the opens the kernel may hold (`open=kernel`).
    pub(crate) fn keep_if_open_possible(&self, inode: &Inode) {
        if !self.options.kernel_opens || inode.kind != FileType::RegularFile {
            return;
        }
        if let Some(upper) = inode.upper()
            && let Ok(fd) = self.real_fd(&upper)
        {
            inode.keep_upper(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_objects_leave_both_caches() {
        let files = InodeFiles::new(512);
        let open = || Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        files.readers.insert(0, 7, open());
        files.writers.insert(0, 7, open());
        files.forget(0, 7);
        assert!(files.readers.get(0, 7).is_none());
        assert!(files.writers.get(0, 7).is_none());
    }
}
