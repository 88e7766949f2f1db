//! Copying file data between real files: clone, copy_file_range, sendfile
//! between filesystems, and a plain loop as the last resort; holes skipped.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Errno, SeekFrom, Stat, SysResult, ftruncate, pread, pwrite, seek};

pub fn copy_file_range(
    from: BorrowedFd<'_>,
    from_offset: u64,
    to: BorrowedFd<'_>,
    to_offset: u64,
    len: usize,
) -> SysResult<usize> {
    let (mut from_offset, mut to_offset) = (from_offset, to_offset);
    rustix::fs::copy_file_range(from, Some(&mut from_offset), to, Some(&mut to_offset), len)
}

/// Copies all data of `from` into the empty file `to`, sharing blocks when the
/// filesystem can (FICLONE) and never writing the holes of a sparse source.
/// `clone_unsupported` remembers, for one destination fs, that it has said
/// it cannot clone, so that it is not asked again for every file.
///
/// `st` is the stat of `from`, `to_dev` the device `to` is on: between two
/// filesystems neither FICLONE nor copy_file_range can work, and sendfile is
/// used right away.
///
/// With `size_first`, a copy that is written (not cloned) gets its full
/// size before any data, so the size is logged at once, not when the data
/// is written back.
///
/// Says how the data got there: a copy that shares the source's blocks
/// needs no sync to be durable, a written one does.
pub fn copy_file_data(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    st: &Stat,
    to_dev: u64,
    clone_unsupported: &AtomicBool,
    size_first: bool,
) -> SysResult<Copied> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(Copied::Nothing);
    }
    let cross_fs = st.st_dev != to_dev;
    let copy_range = |start, end| {
        if cross_fs {
            copy_range_by_sendfile(from, to, start, end)
        } else {
            copy_range(from, to, start, end)
        }
    };
    if !cross_fs && !clone_unsupported.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(to, from) {
            Ok(()) => return Ok(Copied::Shared),
            Err(Errno::OPNOTSUPP) | Err(Errno::NOTTY) => {
                clone_unsupported.store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
    }
    if size_first {
        ftruncate(to, size)?;
    }
    if (st.st_blocks as u64) * 512 >= size {
        // Blocks for every byte: no holes to look for.
        return copy_range(0, size).map(|()| Copied::Written);
    }
    let mut offset = 0u64;
    while offset < size {
        let data_start = match seek(from, SeekFrom::Data(offset)) {
            Ok(pos) => pos,
            Err(Errno::NXIO) => break,   // only a hole remains
            Err(Errno::INVAL) => offset, // no SEEK_DATA support: copy everything
            Err(e) => return Err(e),
        };
        let data_end = match seek(from, SeekFrom::Hole(data_start)) {
            Ok(pos) => pos.min(size),
            Err(_) => size,
        };
        copy_range(data_start, data_end)?;
        offset = data_end;
    }
    if offset < size {
        // The tail is a hole (or the source shrank); the size must still be right.
        ftruncate(to, size)?;
    }
    Ok(Copied::Written)
}

/// How [`copy_file_data`] filled the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copied {
    /// The source was empty.
    Nothing,
    /// FICLONE: the copy shares the source's (already durable) blocks.
    Shared,
    /// The data was written: it sits in the page cache until written back.
    Written,
}

fn copy_range(from: BorrowedFd<'_>, to: BorrowedFd<'_>, start: u64, end: u64) -> SysResult<()> {
    let mut pos = start;
    while pos < end {
        let chunk = (end - pos).min(1 << 30) as usize;
        match copy_file_range(from, pos, to, pos, chunk) {
            Ok(0) => break, // source shrank under us
            Ok(n) => pos += n as u64,
            // Between two filesystems: sendfile still copies in the kernel.
            Err(Errno::XDEV) => return copy_range_by_sendfile(from, to, pos, end),
            Err(Errno::NOSYS) | Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                return copy_range_by_hand(from, to, pos, end);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_by_sendfile(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    start: u64,
    end: u64,
) -> SysResult<()> {
    // sendfile writes at the file position of `to`, which is 0 in a file
    // just opened (every caller's `to` is) and must be moved for a later
    // piece of a sparse file.
    if start != 0 {
        seek(to, SeekFrom::Start(start))?;
    }
    let mut pos = start;
    while pos < end {
        let chunk = (end - pos).min(1 << 30) as usize;
        match rustix::fs::sendfile(to, from, Some(&mut pos), chunk) {
            Ok(0) => break, // source shrank under us
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                return copy_range_by_hand(from, to, pos, end);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_by_hand(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    start: u64,
    end: u64,
) -> SysResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = pread(from, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            written += pwrite(to, &buf[written..n], pos + written as u64)?;
        }
        pos += n as u64;
    }
    Ok(())
}
