//! Conversions between the overlay's types and the FUSE wire's.

use crate::attr::SetTime;
use crate::overlay::Attr;
use crate::sys::FileType;

use super::wire::FileAttr;

/// The `d_type` of a dirent.
pub(super) fn kind_of(kind: FileType) -> u32 {
    u32::from(match kind {
        FileType::Directory => libc::DT_DIR,
        FileType::Symlink => libc::DT_LNK,
        FileType::CharacterDevice => libc::DT_CHR,
        FileType::BlockDevice => libc::DT_BLK,
        FileType::Fifo => libc::DT_FIFO,
        FileType::Socket => libc::DT_SOCK,
        _ => libc::DT_REG,
    })
}

/// A timestamp as `struct fuse_attr` holds it: seconds and nanoseconds.
fn time(secs: i64, nanos: u64) -> (i64, u32) {
    (secs, nanos.min(999_999_999) as u32)
}

pub(super) fn file_attr(attr: &Attr) -> FileAttr {
    let st = &attr.stat;
    FileAttr {
        ino: attr.ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
    }
}

/// The entry of a name that does not exist: node id 0 tells the kernel to
/// keep a negative dentry for the entry timeout.
pub(super) fn absent_entry_attr() -> FileAttr {
    FileAttr::default()
}

/// A time a setattr asks for: `set` says it was asked for, `now` that it
/// is the current time.
pub(super) fn set_time(set: bool, now: bool, secs: i64, nanos: u32) -> Option<SetTime> {
    if now {
        Some(SetTime::Now)
    } else if set {
        Some(SetTime::At {
            secs,
            nanos: nanos.min(999_999_999),
        })
    } else {
        None
    }
}
