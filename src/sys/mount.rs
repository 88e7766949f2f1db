//! Private clones of the mounts the layers are on, so that the mount's
//! access-time mode applies to the real files, as the kernel's overlay does
//! with its private layer mounts (`clone_private_mount`, then atime flags
//! of its own choosing).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::mount::OpenTreeFlags;

use super::{CWD, Errno, Mode, OFlags, SysResult};

/// When reads of files change their access times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// Only when the access time is not after the modification or change
    /// time, or a day old (the default).
    #[default]
    Relatime,
    /// Never.
    NoAtime,
    /// On every access.
    StrictAtime,
}

// From <linux/mount.h>.
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;

/// `struct mount_attr` (the size the kernel is told is its version).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached clone of the mount `path` is on, rooted at `path`; needs
/// CAP_SYS_ADMIN. Nothing sees it but the fds opened beneath it.
pub fn clone_mount(path: &std::path::Path) -> SysResult<OwnedFd> {
    rustix::mount::open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
}

/// Sets the access-time mode of a detached mount made by `clone_mount`.
pub fn set_mount_atime(mount: BorrowedFd<'_>, mode: AtimeMode) -> SysResult<()> {
    let attr = MountAttr {
        attr_set: match mode {
            AtimeMode::Relatime => 0,
            AtimeMode::NoAtime => MOUNT_ATTR_NOATIME,
            AtimeMode::StrictAtime => MOUNT_ATTR_STRICTATIME,
        },
        attr_clr: MOUNT_ATTR_ATIME_MASK,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size` bytes of `attr`, a live, properly
    // laid out `struct mount_attr`, and the empty path is a valid C string;
    // it neither keeps the pointers nor writes through them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ));
    }
    Ok(())
}

/// Lazily detaches the mount at `path` (root only).
pub fn unmount(path: &std::path::Path, lazy: bool) -> SysResult<()> {
    let flags = if lazy {
        rustix::mount::UnmountFlags::DETACH
    } else {
        rustix::mount::UnmountFlags::empty()
    };
    rustix::mount::unmount(path, flags)
}

/// Kernel mount flags for a FUSE mount.
#[derive(Clone, Copy, Debug, Default)]
pub struct MountFlags {
    pub read_only: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub noatime: bool,
}

/// Opens /dev/fuse and mounts it at `mountpoint` as type `fuse.<subtype>`.
/// Needs CAP_SYS_ADMIN; `Err(PERM)` tells the caller to use fusermount3.
pub fn fuse_mount(
    mountpoint: &std::path::Path,
    source: &str,
    subtype: &str,
    flags: MountFlags,
    options: &str,
) -> SysResult<OwnedFd> {
    use rustix::mount::MountFlags as Ms;
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let root = rustix::fs::stat(mountpoint)?;
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}{}{}",
        dev.as_raw_fd(),
        root.st_mode & libc::S_IFMT,
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
        if options.is_empty() { "" } else { "," },
        options
    );
    let mut ms = Ms::empty();
    for (on, flag) in [
        (flags.read_only, Ms::RDONLY),
        (flags.nodev, Ms::NODEV),
        (flags.nosuid, Ms::NOSUID),
        (flags.noexec, Ms::NOEXEC),
        (flags.noatime, Ms::NOATIME),
    ] {
        if on {
            ms |= flag;
        }
    }
    let fstype = format!("fuse.{subtype}");
    let data = std::ffi::CString::new(data).map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(
        source,
        mountpoint,
        fstype.as_str(),
        ms,
        Some(data.as_c_str()),
    )?;
    Ok(dev)
}
