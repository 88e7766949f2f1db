//! Copying file data between real files: clone, copy_file_range, sendfile
//! between filesystems, and a plain loop as the last resort; holes skipped.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    Errno, SeekFrom, Stat, SysResult, ftruncate, pread, pwrite, seek, start_write_back_of,
};

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
/// With `write_behind` (a copy that is made durable right after), the
/// writeback of each piece is started as soon as it is copied (see
/// [`WriteBehind`]).
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
    write_behind: bool,
) -> SysResult<Copied> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(Copied::Nothing);
    }
    let cross_fs = st.st_dev != to_dev;
    let mut behind = WriteBehind {
        to,
        on: write_behind,
        from: 0,
    };
    let mut copy_range = |start, end| {
        if cross_fs {
            copy_range_by_sendfile(from, to, start, end, &mut behind)
        } else {
            copy_range(from, to, start, end, &mut behind)
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

/// Starts the writeback of a copy's data a piece at a time as it is copied,
/// when the copy is to be made durable right after: the device (on these
/// machines, the loop device's worker on the other CPU) writes one piece
/// while the next is copied, and the wait after the copy finds most of it
/// written. Off, the copy goes in the biggest calls it can.
struct WriteBehind<'a> {
    to: BorrowedFd<'a>,
    on: bool,
    /// Where the data whose writeback was not started yet begins.
    from: u64,
}

impl WriteBehind<'_> {
    /// How much of a copy is written before its writeback is started.
    const PIECE: u64 = 4 << 20;

    /// The most to copy in one call at `pos`, up to `end`.
    fn chunk(&self, pos: u64, end: u64) -> usize {
        let most = if self.on { Self::PIECE } else { 1 << 30 };
        (end - pos).min(most) as usize
    }

    /// The copy has written everything up to `pos`: starts the writeback of
    /// what was written since the last start, once that is a whole piece
    /// (holes in it have nothing to write).
    fn copied_to(&mut self, pos: u64) -> SysResult<()> {
        if self.on && pos >= self.from + Self::PIECE {
            start_write_back_of(self.to, self.from, pos - self.from)?;
            self.from = pos;
        }
        Ok(())
    }
}

fn copy_range(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    start: u64,
    end: u64,
    behind: &mut WriteBehind<'_>,
) -> SysResult<()> {
    let mut pos = start;
    while pos < end {
        match copy_file_range(from, pos, to, pos, behind.chunk(pos, end)) {
            Ok(0) => break, // source shrank under us
            Ok(n) => {
                pos += n as u64;
                behind.copied_to(pos)?;
            }
            // Between two filesystems: sendfile still copies in the kernel.
            Err(Errno::XDEV) => return copy_range_by_sendfile(from, to, pos, end, behind),
            Err(Errno::NOSYS) | Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                return copy_range_by_hand(from, to, pos, end, behind);
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
    behind: &mut WriteBehind<'_>,
) -> SysResult<()> {
    // sendfile writes at the file position of `to`, which is 0 in a file
    // just opened (every caller's `to` is) and must be moved for a later
    // piece of a sparse file.
    if start != 0 {
        seek(to, SeekFrom::Start(start))?;
    }
    let mut pos = start;
    while pos < end {
        let chunk = behind.chunk(pos, end);
        match rustix::fs::sendfile(to, from, Some(&mut pos), chunk) {
            Ok(0) => break, // source shrank under us
            Ok(_) => behind.copied_to(pos)?,
            Err(Errno::INTR) => continue,
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                return copy_range_by_hand(from, to, pos, end, behind);
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
    behind: &mut WriteBehind<'_>,
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
        behind.copied_to(pos)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::fd::AsFd;

    /// A written copy made piece by piece with its writeback started as it
    /// goes holds the same bytes, holes and size as without.
    #[test]
    fn a_copy_written_behind_is_the_same_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = std::fs::File::create(dir.path().join("src")).expect("create");
        let piece = WriteBehind::PIECE as usize;
        let data: Vec<u8> = (0..piece * 2 + 12345).map(|i| (i % 251) as u8).collect();
        source.write_all(&data).expect("write");
        // A hole, then a tail past a piece boundary.
        source
            .seek(std::io::SeekFrom::Start((piece * 5) as u64))
            .expect("seek");
        source.write_all(&data[..piece + 7]).expect("write tail");
        source.sync_all().expect("sync");
        let source = std::fs::File::open(dir.path().join("src")).expect("open");
        let st = super::super::fstat(source.as_fd()).expect("fstat");
        for behind in [false, true] {
            let name = format!("copy-{behind}");
            let copy = std::fs::File::create(dir.path().join(&name)).expect("create copy");
            let copied = copy_file_data(
                source.as_fd(),
                copy.as_fd(),
                &st,
                st.st_dev,
                &AtomicBool::new(true),
                false,
                behind,
            )
            .expect("copy");
            assert_eq!(copied, Copied::Written);
            assert_eq!(
                std::fs::read(dir.path().join(&name)).expect("read copy"),
                std::fs::read(dir.path().join("src")).expect("read source"),
                "write_behind {behind}"
            );
        }
    }
}
