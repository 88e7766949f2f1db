//! Putting copied data on disk before a name points at it, at the least
//! cost the upper filesystem allows.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::{Errno, SysResult, last_errno};

/// What a copy's data needs before the copy may be renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataOrdering {
    /// Nothing: the filesystem does not survive a power cut anyway (tmpfs),
    /// or the mount asked for no syncing (`volatile`, `fsync=0`).
    Nothing,
    /// Written back and waited for, without a journal commit. On a
    /// journaling filesystem that is enough: writeback allocates the blocks
    /// and sets the on-disk size in the running transaction, the rename
    /// that follows is logged in that transaction or a later one, and each
    /// commit flushes the device cache before its commit record, so no
    /// commit can hold the name without the data before it.
    WriteBack,
    /// `fdatasync`, as the kernel does: for filesystems not known to order
    /// their metadata that way.
    Sync,
}

const EXT4_MAGIC: i64 = 0xEF53;
const XFS_MAGIC: i64 = 0x5846_5342;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// How copies on the filesystem of `fd` are made durable.
// f_type is an i64 here, a u32 or i32 on other targets.
#[allow(clippy::unnecessary_cast)]
pub fn data_ordering_of(fd: BorrowedFd<'_>) -> DataOrdering {
    match rustix::fs::fstatfs(fd) {
        Ok(st) => match st.f_type as i64 {
            EXT4_MAGIC if has_jbd2_journal(fd) => DataOrdering::WriteBack,
            XFS_MAGIC => DataOrdering::WriteBack,
            TMPFS_MAGIC | RAMFS_MAGIC => DataOrdering::Nothing,
            // Also btrfs, where a written-back extent is entered in the
            // tree only after its pages are done, and ext4 without a
            // journal, which orders nothing.
            _ => DataOrdering::Sync,
        },
        Err(_) => DataOrdering::Sync,
    }
}

/// Whether the ext4 holding `fd` has a journal: jbd2 lists each journal it
/// runs in /proc/fs/jbd2 as `<device name>-<journal inode>`.
fn has_jbd2_journal(fd: BorrowedFd<'_>) -> bool {
    let Ok(st) = rustix::fs::fstat(fd) else {
        return false;
    };
    let dev = st.st_dev;
    let link = format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    // Host configuration, not a layer: reading these paths cannot lead
    // into the layers.
    let Some(name) = std::fs::read_link(link)
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_owned()))
    else {
        return false;
    };
    let mut prefix = name;
    prefix.push("-");
    let Ok(journals) = std::fs::read_dir("/proc/fs/jbd2") else {
        return false;
    };
    journals.flatten().any(|entry| {
        entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(prefix.as_encoded_bytes())
    })
}

/// Writes the dirty pages of an open file back and waits until the device
/// has them (no metadata, no journal commit: see [`DataOrdering::WriteBack`]).
/// Waiting for the end of the writeback matters: ext4 (unwritten extents)
/// and xfs (the on-disk size) log the last of it when the I/O completes.
pub fn write_back(fd: BorrowedFd<'_>) -> SysResult<()> {
    sync_file_range(
        fd,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )
}

/// Starts writing the dirty pages of an open file back, without waiting;
/// a later [`write_back`] waits for them.
pub fn start_write_back(fd: BorrowedFd<'_>) -> SysResult<()> {
    sync_file_range(fd, libc::SYNC_FILE_RANGE_WRITE)
}

/// [`start_write_back`] of the `len` bytes at `offset` only.
pub fn start_write_back_of(fd: BorrowedFd<'_>, offset: u64, len: u64) -> SysResult<()> {
    sync_file_range_of(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE)
}

fn sync_file_range(fd: BorrowedFd<'_>, flags: libc::c_uint) -> SysResult<()> {
    // 0, 0: the whole file.
    sync_file_range_of(fd, 0, 0, flags)
}

fn sync_file_range_of(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    flags: libc::c_uint,
) -> SysResult<()> {
    let offset = libc::off64_t::try_from(offset).map_err(|_| Errno::INVAL)?;
    let len = libc::off64_t::try_from(len).map_err(|_| Errno::INVAL)?;
    // SAFETY: sync_file_range reads only its integer arguments; the fd is
    // borrowed and stays open for the call.
    let rc = unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, flags) };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}
