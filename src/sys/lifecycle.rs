//! The two ends of a daemon's hold on its layers: what its fds on them pin,
//! and letting go of all of them at once.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};
use rustix::mount::OpenTreeFlags;

use super::SysResult;

/// Private clones of the mounts the layers are on, one per mount, by mount
/// id, with the path the mount is seen at. Layer roots are opened through
/// them, as kernel overlayfs opens its layers through private clones: the
/// daemon's fds then pin the clones, never the mounts the user sees, so
/// `umount LOWER_FS` works as soon as `umount MNT` has returned, however
/// late the daemon gets to run and exit (the filesystem itself lives on
/// until it does). One clone per mount, not per layer: rename, link and
/// FICLONE refuse to work across two mounts, even of one filesystem.
/// Kept until the process exits.
static CLONES: parking_lot::Mutex<Vec<(u64, OwnedFd, PathBuf)>> =
    parking_lot::Mutex::new(Vec::new());

/// Opens a layer root (an absolute, canonical path) as an `O_PATH` dir,
/// through a private clone of its mount when the process may make one
/// (root), else where it is.
pub(super) fn open_layer_root(path: &Path) -> SysResult<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let in_place = || rustix::fs::openat(CWD, path, flags, Mode::empty());
    let Some((id, top)) = mount_of(path) else {
        return in_place();
    };
    let mut clones = CLONES.lock();
    let index = match clones.iter().position(|(mnt, _, _)| *mnt == id) {
        Some(i) => i,
        None => match private_clone(&top) {
            Ok(fd) => {
                clones.push((id, fd, top));
                clones.len() - 1
            }
            // No privilege (a user mount), or a kernel before 5.12.
            Err(_) => return in_place(),
        },
    };
    let (_, clone, top) = &clones[index];
    match path.strip_prefix(top) {
        Ok(rel) if rel.as_os_str().is_empty() => {
            rustix::fs::openat(clone, ".", flags, Mode::empty())
        }
        Ok(rel) => rustix::fs::openat(clone, rel, flags, Mode::empty()),
        Err(_) => in_place(),
    }
}

/// The id of the mount `path` is on, and the path that mount is seen at
/// (the highest ancestor on the same mount).
fn mount_of(path: &Path) -> Option<(u64, PathBuf)> {
    let mnt_id = |p: &Path| {
        rustix::fs::statx(CWD, p, AtFlags::empty(), StatxFlags::MNT_ID)
            .ok()
            .filter(|st| StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID))
            .map(|st| st.stx_mnt_id)
    };
    let id = mnt_id(path)?;
    let mut top = path;
    for parent in path.ancestors().skip(1) {
        if mnt_id(parent) != Some(id) {
            break;
        }
        top = parent;
    }
    Some((id, top.to_path_buf()))
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached, private clone of the mount seen at `top` (that mount only,
/// not the ones below it, as kernel overlayfs clones its layers): nothing
/// mounted or unmounted elsewhere propagates into it, or is held by it.
fn private_clone(top: &Path) -> SysResult<OwnedFd> {
    let clone = rustix::mount::open_tree(
        CWD,
        top,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from
    // `attr`, a live `struct mount_attr` (repr(C), the kernel's layout);
    // the empty path is a NUL-terminated literal; `clone` is an open fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            clone.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(super::last_errno());
    }
    Ok(clone)
}

/// Moves the cwd to `/`: a daemon's cwd would keep its filesystem busy
/// for as long as it runs (mount(8) may start it anywhere, even in a layer).
pub fn leave_cwd() {
    let _ = rustix::process::chdir("/");
}

/// Ends the process, first letting go of the cwd and of every fd but stdio
/// (layer files, the work dir lock, /dev/fuse, whose closing frees the
/// passthrough backing files the kernel holds). Whatever the process holds
/// keeps its filesystem busy, and exit(2) closes files only after tearing
/// down the address space, which takes a while for a big heap. For the very
/// end of a daemon whose other threads no longer use fds.
pub fn exit_releasing_fds(code: i32) -> ! {
    leave_cwd();
    // SAFETY: the fds closed here are never used or closed again: the
    // caller has joined or stopped every other thread that uses fds, and
    // nothing runs after this call but process exit (std::process::exit
    // runs no destructors, so no OwnedFd is dropped). Kernels before 5.9
    // lack close_range (ENOSYS): exit(2) closes the fds then, only later.
    let _ = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    std::process::exit(code)
}
