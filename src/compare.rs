//! What differs between two objects of the same path: the one the lowers
//! show and the one the merged view shows. Used by the change walk to tell
//! a changed path (`C`) from one that was only copied up.

use std::os::fd::{AsFd, BorrowedFd};

use crate::layerview;
use crate::sys::{self, FileType, OFlags, Stat, SysResult};

/// The parts of an object that changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct What {
    /// The kind of object (a file became a dir, ...).
    pub kind: bool,
    /// File content, symlink target or device number.
    pub data: bool,
    pub mode: bool,
    pub owner: bool,
    /// The modification time.
    pub times: bool,
    pub xattrs: bool,
    /// The number of names (a hard link was added or removed).
    pub links: bool,
}

impl What {
    pub fn any(&self) -> bool {
        *self != What::default()
    }

    /// The changed parts by name, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        let parts = [
            (self.kind, "kind"),
            (self.data, "data"),
            (self.mode, "mode"),
            (self.owner, "owner"),
            (self.times, "times"),
            (self.xattrs, "xattrs"),
            (self.links, "links"),
        ];
        parts
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// One side of a comparison: an object held by an `O_PATH` fd, its stat,
/// and the link count the view it belongs to shows.
pub struct Side<'a> {
    pub fd: BorrowedFd<'a>,
    pub stat: &'a Stat,
    pub nlink: u64,
}

/// Compares the merged object `merged` with the lower one `lower`.
/// `merged_data` is where the merged object's data is, when not in the
/// object itself (a metacopy file's lower data).
pub fn compare(
    merged: &Side<'_>,
    merged_data: Option<&Side<'_>>,
    lower: &Side<'_>,
) -> SysResult<What> {
    let (m, l) = (merged.stat, lower.stat);
    if same_object(m, l) {
        return Ok(What::default());
    }
    let kind = sys::file_type(m);
    if kind != sys::file_type(l) {
        return Ok(What {
            kind: true,
            ..What::default()
        });
    }
    let mut what = What {
        mode: m.st_mode & 0o7777 != l.st_mode & 0o7777,
        owner: m.st_uid != l.st_uid || m.st_gid != l.st_gid,
        times: (m.st_mtime, m.st_mtime_nsec) != (l.st_mtime, l.st_mtime_nsec),
        links: kind != FileType::Directory && merged.nlink != lower.nlink,
        ..What::default()
    };
    what.xattrs = layerview::visible_xattrs(merged.fd)? != layerview::visible_xattrs(lower.fd)?;
    what.data = match kind {
        FileType::RegularFile => {
            let data = merged_data.unwrap_or(merged);
            !same_object(data.stat, l) && !same_content(data, lower)?
        }
        FileType::Symlink => sys::readlink(merged.fd)? != sys::readlink(lower.fd)?,
        FileType::CharacterDevice | FileType::BlockDevice => m.st_rdev != l.st_rdev,
        _ => false,
    };
    Ok(what)
}

pub fn same_object(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Whether two regular files hold the same bytes.
fn same_content(a: &Side<'_>, b: &Side<'_>) -> SysResult<bool> {
    if a.stat.st_size != b.stat.st_size {
        return Ok(false);
    }
    let fa = sys::reopen(a.fd, OFlags::RDONLY)?;
    let fb = sys::reopen(b.fd, OFlags::RDONLY)?;
    let mut buf_a = vec![0u8; 256 * 1024];
    let mut buf_b = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = read_full(fa.as_fd(), &mut buf_a, offset)?;
        let m = read_full(fb.as_fd(), &mut buf_b, offset)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the file ends.
pub fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread(fd, &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
