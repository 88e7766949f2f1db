//! Safe wrappers over the system calls cowfs makes on layer objects.
//!
//! Every path given here is a single name relative to a directory fd, opened
//! with `O_NOFOLLOW`: nothing in this module resolves a multi-component path
//! inside a layer, so a symlink planted in a layer can never lead outside it.
//! Objects are held as `O_PATH` fds; calls that do not accept an `O_PATH` fd
//! (xattrs, reopening for I/O) go through `/proc/self/fd/N`, which names the
//! object the fd already refers to and so cannot be redirected by a layer.
//!
//! This is the only module with `unsafe`; each use says why it is sound. One
//! file a concern: `fs` (objects in a layer), `xattr`, `copy` (file data),
//! `handle` (file handles), `mount` (FUSE and private layer mounts),
//! `process` (the daemon's process), `socket` (the stats socket), `fuse_dev`
//! (the /dev/fuse device: requests, replies, clones, backing files).

use std::ffi::{CStr, OsStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

mod copy;
mod durable;
pub mod fault;
mod fs;
mod fuse_dev;
mod handle;
mod mount;
mod process;
mod socket;
pub mod uring;
mod xattr;
pub use copy::{Copied, copy_file_data, copy_file_range};
pub use durable::{
    DataOrdering, data_ordering_of, start_write_back, start_write_back_of, write_back,
};
pub use fs::*;
pub use fuse_dev::*;
pub use handle::*;
pub use mount::{AtimeMode, MountFlags, clone_mount, fuse_mount, set_mount_atime, unmount};
pub use process::*;
pub use socket::{peer_uid, shut_down};
pub use xattr::*;

pub use rustix::fs::{
    AtFlags, FallocateFlags, FileType, Mode, OFlags, RenameFlags, SeekFrom, Stat, StatVfs,
    Timespec, Timestamps, XattrFlags,
};
pub use rustix::io::Errno;

pub type SysResult<T> = Result<T, Errno>;

const CWD: BorrowedFd<'static> = rustix::fs::CWD;

/// `/proc/self/fd/N` for an fd of ours: a name for the object itself.
fn proc_path(fd: BorrowedFd<'_>) -> ProcPath {
    ProcPath::of(fd)
}

/// `/proc/self/fd/N` built on the stack: xattr calls on upper files sit on
/// the lookup path, and this spares each a heap allocation.
struct ProcPath {
    bytes: [u8; 32],
    len: usize,
}

impl ProcPath {
    fn of(fd: BorrowedFd<'_>) -> ProcPath {
        use std::io::Write;
        let mut bytes = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut bytes[..]);
        // 14 bytes of prefix and at most 10 digits: room is left for the NUL.
        let _ = write!(cursor, "/proc/self/fd/{}", fd.as_raw_fd());
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        ProcPath { bytes, len }
    }

    fn as_cstr(&self) -> &CStr {
        // The path holds no NUL and one follows it.
        CStr::from_bytes_until_nul(&self.bytes[..=self.len]).unwrap_or(c"/proc/self/fd")
    }
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_path_names_the_fd_like_format_does() {
        let file = std::fs::File::open("/").expect("open /");
        let fd = file.as_fd();
        let want = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(proc_path(fd).as_cstr().to_str(), Ok(want.as_str()));
        // The path really names the same object.
        let via_proc = std::fs::metadata(want).expect("stat via /proc");
        let direct = fstat(fd).expect("fstat");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&via_proc),
            direct.st_ino
        );
    }
}
