//! Conversions between the overlay's types and FUSE's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType as FuseType, INodeNo, TimeOrNow};

use crate::attr::SetTime;
use crate::overlay::Attr;
use crate::sys::FileType;

pub(super) fn kind_of(kind: FileType) -> FuseType {
    match kind {
        FileType::Directory => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::CharacterDevice => FuseType::CharDevice,
        FileType::BlockDevice => FuseType::BlockDevice,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::Socket => FuseType::Socket,
        _ => FuseType::RegularFile,
    }
}

fn time(secs: i64, nanos: u64) -> SystemTime {
    let nanos = Duration::from_nanos(nanos.min(999_999_999));
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

pub(super) fn file_attr(attr: &Attr) -> FileAttr {
    let st = &attr.stat;
    FileAttr {
        ino: INodeNo(attr.ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(crate::sys::file_type(st)),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The entry of a name that does not exist: node id 0 tells the kernel to
/// keep a negative dentry for the entry timeout.
pub(super) fn absent_entry_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

pub(super) fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(at) => match at.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                SetTime::At {
                    secs: -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0),
                    nanos: if d.subsec_nanos() > 0 {
                        1_000_000_000 - d.subsec_nanos()
                    } else {
                        0
                    },
                }
            }
        },
    })
}

/// Who sent a request, for the checks the kernel leaves to the server.
pub(super) fn caller_of(req: &fuser::Request) -> crate::attr::Caller {
    crate::attr::Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}
