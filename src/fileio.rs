//! Open files and dirs: open (copying up on a write open), read, write,
//! fsync, fallocate, lseek, copy_file_range.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::copyup::CopyUp;
use crate::error::OpResult;
use crate::handles::{FileHandle, Opened};
use crate::inode::Inode;
use crate::layer::{RealKey, UPPER};
use crate::namespace::{NewKind, NewObject};
use crate::overlay::Overlay;
use crate::sys::{self, Errno, FileType, OFlags, SeekFrom};

/// The open flags that are passed on to the real file. O_DIRECT is not:
/// data goes through the daemon's own buffers, which need no alignment, or
/// through passthrough, where the kernel applies it to the real file itself.
fn real_open_flags(flags: i32) -> OFlags {
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_NOATIME
        | libc::O_TRUNC
        | libc::O_LARGEFILE;
    OFlags::from_bits_retain((flags & keep) as _)
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl Overlay {
    /// Opens a regular file under a new handle.
    pub fn open(&self, inode: &Arc<Inode>, flags: i32) -> OpResult<Opened> {
        if inode.kind != FileType::RegularFile {
            return Err(if inode.is_dir() {
                Errno::ISDIR
            } else {
                Errno::INVAL
            });
        }
        let writable = wants_write(flags);
        let source = if writable {
            self.writable()?;
            let want = if flags & libc::O_TRUNC != 0 {
                CopyUp::Truncate
            } else {
                CopyUp::Data
            };
            self.copy_up_with(inode, want)?
        } else {
            inode.data().ok_or(Errno::STALE)?
        };
        let real_flags = real_open_flags(flags) | self.atime_flags(source.is_upper());
        let fd = self.open_real(&source, real_flags)?;
        let opened = self.register_file(inode.clone(), fd, source.key(), writable);
        if writable {
            // Attributes the kernel cached before this open must not
            // outlive writes through a mapping (see `attr_parts`).
            self.attrs_changed(inode.ino);
        }
        Ok(opened)
    }

    /// Creates a regular file and opens it under a new handle (the kernel's
    /// create).
    pub fn create_and_open(
        &self,
        parent: &Arc<Inode>,
        name: &std::ffi::OsStr,
        new: NewObject<'_>,
    ) -> OpResult<(Arc<Inode>, crate::overlay::Attr, Opened)> {
        let writable = match &new.kind {
            NewKind::File { flags } => {
                flags.bits() & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
            }
            _ => return Err(Errno::INVAL),
        };
        let (inode, attr, fd) = self.create(parent, name, new)?;
        let (Some(fd), Some(upper)) = (fd, inode.upper()) else {
            return Err(Errno::IO);
        };
        let opened = self.register_file(inode.clone(), fd, upper.key(), writable);
        Ok((inode, attr, opened))
    }

    /// O_NOATIME where reads through the mount must leave access times
    /// alone, as kernel overlayfs does: lower files never, upper files
    /// under noatime. This covers the reads the daemon makes itself when
    /// the layers could not be put on private mounts with that mode
    /// (`privmount`: an unprivileged daemon); the kernel's own reads of a
    /// passthrough file use a backing file it opens with the caller's
    /// flags, which only the mount's mode reaches. (A caller's O_NOATIME is
    /// passed on: the kernel checked its right to it before the request.)
    pub(crate) fn atime_flags(&self, on_upper: bool) -> OFlags {
        if !on_upper || self.options.noatime {
            OFlags::NOATIME
        } else {
            OFlags::empty()
        }
    }

    /// Keeps an open real file under a new handle number.
    pub fn register_file(
        &self,
        inode: Arc<Inode>,
        fd: OwnedFd,
        source: RealKey,
        writable: bool,
    ) -> Opened {
        self.handles().add_file(FileHandle {
            inode,
            fd: RwLock::new(Arc::new(fd)),
            on_upper: AtomicBool::new(source.layer == UPPER),
            writable,
            source,
        })
    }

    /// The real file behind a handle and the object it is.
    fn file(&self, fh: u64) -> OpResult<Arc<FileHandle>> {
        self.handles().file(fh).ok_or(Errno::BADF)
    }

    /// The fd to read through: a lower fd is swapped for the upper copy as
    /// soon as there is one.
    fn read_fd(&self, handle: &FileHandle) -> OpResult<Arc<OwnedFd>> {
        if !handle.on_upper.load(Ordering::Acquire)
            && let Some(upper) = handle.inode.data().filter(|d| d.is_upper())
        {
            let flags = OFlags::RDONLY | self.atime_flags(true);
            let fresh = Arc::new(self.open_real(&upper, flags)?);
            *handle.fd.write() = fresh.clone();
            handle.on_upper.store(true, Ordering::Release);
            return Ok(fresh);
        }
        Ok(handle.fd())
    }

    /// The real file a read of open file `fh` reads now (its upper copy
    /// once the file was copied up since it was opened).
    pub fn file_to_read_of(&self, fh: u64) -> OpResult<Arc<OwnedFd>> {
        let handle = self.file(fh)?;
        self.read_fd(&handle)
    }

    /// Reads up to `size` bytes at `offset` of open file `fh`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> OpResult<Vec<u8>> {
        let fd = self.file_to_read_of(fh)?;
        let mut data = vec![0; size as usize];
        let read = read_at(fd.as_fd(), offset, &mut data)?;
        data.truncate(read);
        Ok(data)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> OpResult<usize> {
        let handle = self.file(fh)?;
        if !handle.writable {
            return Err(Errno::BADF);
        }
        write_at(handle.fd().as_fd(), offset, data)
    }

    /// Attributes through an open file, which works after its last name is gone.
    pub fn getattr_open(&self, fh: u64) -> OpResult<crate::overlay::Attr> {
        let handle = self.file(fh)?;
        if !handle.on_upper.load(Ordering::Acquire) {
            // A lower file (or the data of a metacopy one): the inode's
            // attributes are the ones that count.
            return self.attr_of(&handle.inode);
        }
        let stat = sys::fstat(handle.fd().as_fd())?;
        let layers = handle.inode.layers();
        Ok(self.attr_from(&handle.inode, stat, &layers))
    }

    /// Attributes of `inode`, through the open file `fh` if the kernel
    /// names one that is open (fstat of an open file reaches it even after
    /// its last name is gone).
    pub fn getattr_through(
        &self,
        inode: &Arc<Inode>,
        fh: Option<u64>,
    ) -> OpResult<crate::overlay::Attr> {
        match fh {
            Some(fh) if self.handles().file(fh).is_some() => self.getattr_open(fh),
            _ => self.getattr(inode),
        }
    }

    /// The real file of handle `fh` if it is open for writing (a setattr
    /// that names one truncates through it).
    pub fn writable_fd(&self, fh: u64) -> Option<Arc<OwnedFd>> {
        self.handles()
            .file(fh)
            .filter(|h| h.writable)
            .map(|h| h.fd())
    }

    pub fn release(&self, fh: u64) {
        self.handles().remove_file(fh);
    }

    pub fn fsync(&self, fh: u64, data_only: bool) -> OpResult<()> {
        if self.options.no_sync {
            return Ok(());
        }
        let handle = self.file(fh)?;
        sys::fsync(handle.fd().as_fd(), data_only)?;
        if !data_only
            && !handle.on_upper.load(Ordering::Acquire)
            && let Some(upper) = handle.inode.upper()
        {
            // A metacopy file (or a copy behind its mark) is read from the
            // lower file; its metadata lives in the upper copy, which an
            // fsync must make last too, as the kernel's does.
            let meta = sys::reopen(self.real_fd(&upper)?.as_fd(), OFlags::RDONLY)?;
            sys::fsync(meta.as_fd(), false)?;
        }
        match handle.inode.upper() {
            Some(upper) => self.sync_parent_of(&upper),
            None => Ok(()),
        }
    }

    /// The copy-up that made a file is a rename in its dir: an fsync of the
    /// file makes that last too.
    pub(crate) fn sync_parent_of(&self, upper: &crate::inode::RealRef) -> OpResult<()> {
        if let Some(parent) = upper.parent()
            && let Some(dir) = parent.upper()
        {
            let dir_fd = sys::reopen(
                self.real_fd(&dir)?.as_fd(),
                OFlags::RDONLY | OFlags::DIRECTORY,
            )?;
            sys::fsync(dir_fd.as_fd(), false)?;
        }
        Ok(())
    }

    pub fn fsyncdir(&self, inode: &Inode, data_only: bool) -> OpResult<()> {
        if self.options.no_sync {
            return Ok(());
        }
        if let Some(upper) = inode.upper() {
            let fd = sys::reopen(
                self.real_fd(&upper)?.as_fd(),
                OFlags::RDONLY | OFlags::DIRECTORY,
            )?;
            sys::fsync(fd.as_fd(), data_only)?;
        }
        Ok(())
    }

    pub fn fallocate(
        &self,
        fh: u64,
        mode: sys::FallocateFlags,
        offset: u64,
        len: u64,
    ) -> OpResult<()> {
        let handle = self.file(fh)?;
        if !handle.writable {
            return Err(Errno::BADF);
        }
        sys::fallocate(handle.fd().as_fd(), mode, offset, len)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> OpResult<i64> {
        let handle = self.file(fh)?;
        let fd = self.read_fd(&handle)?;
        seek_in(fd.as_fd(), offset, whence)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> OpResult<usize> {
        let input = self.file(fh_in)?;
        let output = self.file(fh_out)?;
        if !output.writable {
            return Err(Errno::BADF);
        }
        let from = self.read_fd(&input)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
        sys::copy_file_range(
            from.as_fd(),
            offset_in,
            output.fd().as_fd(),
            offset_out,
            len,
        )
    }
}

/// A read request's answer from a real open file, into `into` (at most
/// its length): one read, since a short read of a regular file is its end,
/// and the kernel takes a short answer as the end too (reading on until the
/// buffer is full would cost every small file a second, empty read).
pub fn read_at(fd: BorrowedFd<'_>, offset: u64, into: &mut [u8]) -> OpResult<usize> {
    loop {
        match sys::pread(fd, into, offset) {
            Err(Errno::INTR) => continue,
            done => return done,
        }
    }
}

/// A write request's data into a real open file; a failure after some of
/// it was written answers what was written.
pub(crate) fn write_at(
    fd: std::os::fd::BorrowedFd<'_>,
    offset: u64,
    data: &[u8],
) -> OpResult<usize> {
    let mut written = 0;
    while written < data.len() {
        match sys::pwrite(fd, &data[written..], offset + written as u64) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(Errno::INTR) => continue,
            Err(e) if written == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(written)
}

/// lseek on a real open file, `whence` as the caller gave it.
pub(crate) fn seek_in(fd: std::os::fd::BorrowedFd<'_>, offset: i64, whence: i32) -> OpResult<i64> {
    let pos = match whence {
        libc::SEEK_SET => SeekFrom::Start(offset as u64),
        libc::SEEK_CUR => SeekFrom::Current(offset),
        libc::SEEK_END => SeekFrom::End(offset),
        libc::SEEK_DATA => SeekFrom::Data(u64::try_from(offset).map_err(|_| Errno::NXIO)?),
        libc::SEEK_HOLE => SeekFrom::Hole(u64::try_from(offset).map_err(|_| Errno::NXIO)?),
        _ => return Err(Errno::INVAL),
    };
    Ok(sys::seek(fd, pos)? as i64)
}
