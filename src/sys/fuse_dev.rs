//! The `/dev/fuse` device: reading requests, writing answers, cloning the fd
//! for a request thread of its own, registering passthrough backing files,
//! and receiving a mounted fd from fusermount3.

use std::io::IoSlice;
use std::sync::Arc;

use super::*;

/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;
/// `FUSE_DEV_IOC_BACKING_OPEN`: `_IOW(229, 1, struct fuse_backing_map)`.
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// `struct fuse_backing_map`.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

/// Reads one request into `buf`: its length. `Err(NODEV)` once the mount
/// is gone; interrupted reads (ENOENT for a request the kernel took back,
/// EINTR, EAGAIN) are retried here.
pub fn read_request(dev: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        match rustix::io::read(dev, &mut *buf) {
            Err(Errno::NOENT | Errno::INTR | Errno::AGAIN) => continue,
            result => return result,
        }
    }
}

/// One read of a request from a `/dev/fuse` fd set non-blocking:
/// `Ok(None)` when none is waiting.
pub fn try_read_request(dev: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<Option<usize>> {
    loop {
        match rustix::io::read(dev, &mut *buf) {
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::NOENT | Errno::INTR) => continue,
            result => return result.map(Some),
        }
    }
}

/// The file status flags of `dev`, for `set_nonblocking`.
pub fn status_flags(dev: BorrowedFd<'_>) -> SysResult<OFlags> {
    rustix::fs::fcntl_getfl(dev)
}

/// Makes reads of `dev` return EAGAIN instead of sleeping (`on`), or sleep
/// again; `flags` are its status flags (`status_flags`, read once: only
/// this changes them), so that each switch is one call. Sleeping reads are
/// the kernel's exclusive waiters, woken one per request; poll(2) waiters
/// would all be woken by every request.
pub fn set_nonblocking(dev: BorrowedFd<'_>, flags: OFlags, on: bool) -> SysResult<()> {
    let flags = if on {
        flags | OFlags::NONBLOCK
    } else {
        flags - OFlags::NONBLOCK
    };
    rustix::fs::fcntl_setfl(dev, flags)
}

/// Writes one answer (or notification) in one `writev`, as the device needs.
pub fn write_reply(dev: BorrowedFd<'_>, pieces: &[IoSlice<'_>]) -> SysResult<()> {
    rustix::io::writev(dev, pieces).map(drop)
}

/// A new `/dev/fuse` fd on the same connection: requests read from it are
/// answered through it, so each request thread has its own queue.
pub fn clone_dev_fuse(dev: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    let clone = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let mut source: u32 = dev.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to clone) from the
    // pointer, which points at a live local for the whole call; both fds
    // are open for its length.
    let rc = unsafe {
        libc::ioctl(
            clone.as_raw_fd(),
            FUSE_DEV_IOC_CLONE,
            &mut source as *mut u32,
        )
    };
    if rc < 0 {
        return Err(last_errno());
    }
    Ok(clone)
}

/// A file registered with the kernel as a passthrough backing file; the
/// registration ends when this is dropped.
pub struct Backing {
    dev: Arc<OwnedFd>,
    id: u32,
}

impl Backing {
    /// Registers `file` (needs CAP_SYS_ADMIN).
    pub fn open(dev: &Arc<OwnedFd>, file: BorrowedFd<'_>) -> std::io::Result<Backing> {
        let map = BackingMap {
            fd: file.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: the ioctl reads a `struct fuse_backing_map` (repr(C), the
        // kernel's layout) from a live local; `file` is open for the call.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                FUSE_DEV_IOC_BACKING_OPEN,
                &map as *const BackingMap,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Backing {
            dev: dev.clone(),
            id: rc as u32,
        })
    }

    /// The id an open reply names the backing file by.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let id = self.id;
        // SAFETY: the ioctl reads one u32 from a live local.
        let rc = unsafe {
            libc::ioctl(
                self.dev.as_raw_fd(),
                FUSE_DEV_IOC_BACKING_CLOSE,
                &id as *const u32,
            )
        };
        if rc < 0 {
            tracing::debug!(id, err = %std::io::Error::last_os_error(), "closing a backing id");
        }
    }
}

/// A socket pair for fusermount3's `_FUSE_COMMFD`: ours (close-on-exec)
/// and the one the child inherits.
pub fn fusermount_sockets() -> SysResult<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )?;
    rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC)?;
    Ok((ours, theirs))
}

/// Receives the `/dev/fuse` fd fusermount3 mounted, sent over `socket` as
/// SCM_RIGHTS. `Ok(None)` when it closed the socket without one.
pub fn receive_fd(socket: BorrowedFd<'_>) -> SysResult<Option<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut data = [std::io::IoSliceMut::new(&mut byte)];
    loop {
        match recvmsg(socket, &mut data, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}
