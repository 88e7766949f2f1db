//! Objects in a layer: opening by one name relative to a dir fd (never
//! following a symlink), stat, creating, renaming and removing names, data I/O.

use super::*;

/// Opens `name` in `dir` as an `O_PATH` handle, never following a symlink.
pub fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the object `name` in `dir` for I/O with `flags`, never following
/// a symlink and never creating.
pub fn open_child(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> SysResult<OwnedFd> {
    let flags = (flags | OFlags::NOFOLLOW | OFlags::CLOEXEC)
        & !(OFlags::CREATE | OFlags::EXCL | OFlags::PATH);
    rustix::fs::openat(dir, name, flags, Mode::empty())
}

/// Opens a directory given by an absolute path (a layer root) as `O_PATH`.
pub fn open_root(path: &std::path::Path) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// lstat of `name` in `dir`; `None` when it does not exist (a name too
/// long to exist, such as `.wh.` + a 252-byte name, does not exist either).
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) | Err(Errno::NAMETOOLONG) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    rustix::fs::fstat(fd)
}

/// The filesystem type (`statfs`'s `f_type`, a `*_SUPER_MAGIC`) an object is on.
#[allow(clippy::unnecessary_cast)]
pub fn filesystem_type(fd: BorrowedFd<'_>) -> SysResult<i64> {
    Ok(rustix::fs::fstatfs(fd)?.f_type as i64)
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> SysResult<StatVfs> {
    rustix::fs::fstatvfs(fd)
}

/// Opens the object behind an `O_PATH` fd for I/O. Only regular files and
/// directories are ever reopened this way.
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> SysResult<OwnedFd> {
    let flags = (flags | OFlags::CLOEXEC) & !(OFlags::NOFOLLOW | OFlags::CREATE | OFlags::EXCL);
    rustix::fs::openat(CWD, proc_path(fd).as_cstr(), flags, Mode::empty())
}

/// Opens a directory (given as an `O_PATH` fd) for reading its entries.
pub fn open_dir_for_listing(dir: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Creates and opens a new regular file in `dir`.
pub fn create_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: OFlags,
    mode: u32,
) -> SysResult<OwnedFd> {
    let flags = (flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC)
        & !OFlags::TRUNC;
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))
}

/// Calls `each(name, d_type, d_ino)` for every entry of a directory opened for
/// listing, `.` and `..` included.
pub fn for_each_dir_entry(
    dir: BorrowedFd<'_>,
    mut each: impl FnMut(&CStr, FileType, u64),
) -> SysResult<()> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut iter = rustix::fs::RawDir::new(dir, &mut buf);
    while let Some(entry) = iter.next() {
        let entry = entry?;
        each(entry.file_name(), entry.file_type(), entry.ino());
    }
    Ok(())
}

/// chmod of the object itself (symlinks have no mode to change on Linux),
/// given as an open file or an `O_PATH` fd: fchmodat2 with AT_EMPTY_PATH
/// takes both (Linux 6.6+; rustix lacks it); before it, fchmod for an open
/// file, else through /proc, a path walk more.
pub fn chmod(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // SAFETY: fchmodat2 reads only its arguments: a borrowed fd that stays
    // open for the call, a NUL-terminated empty path from a C string
    // literal, a mode and flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match last_errno() {
        Errno::NOSYS | Errno::INVAL => match rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)) {
            Err(Errno::BADF) => rustix::fs::chmodat(
                CWD,
                proc_path(fd).as_cstr(),
                Mode::from_raw_mode(mode),
                AtFlags::empty(),
            ),
            done => done,
        },
        e => Err(e),
    }
}

/// chown of the object itself, never of a symlink's target.
pub fn chown(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    rustix::fs::chownat(
        fd,
        c"",
        uid.map(rustix::fs::Uid::from_raw),
        gid.map(rustix::fs::Gid::from_raw),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// Sets atime and mtime of the object itself; `UTIME_NOW`/`UTIME_OMIT` allowed.
pub fn set_times(fd: BorrowedFd<'_>, times: &Timestamps) -> SysResult<()> {
    rustix::fs::utimensat(
        fd,
        c"",
        times,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

pub const UTIME_NOW: i64 = rustix::fs::UTIME_NOW;
pub const UTIME_OMIT: i64 = rustix::fs::UTIME_OMIT;

pub fn readlink(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    Ok(rustix::fs::readlinkat(fd, c"", Vec::new())?.into_bytes())
}

pub fn mkdir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))
}

pub fn symlink(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::symlinkat(target, dir, name)
}

/// mknod of a fifo, socket or device; `file_type` from the mode's S_IFMT bits.
pub fn mknod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let file_type = FileType::from_raw_mode(mode);
    rustix::fs::mknodat(
        dir,
        name,
        file_type,
        Mode::from_raw_mode(mode & 0o7777),
        rdev,
    )
}

/// The kernel overlayfs whiteout: a character device with number 0/0.
pub fn mknod_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
}

pub fn rename(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: RenameFlags,
) -> SysResult<()> {
    rustix::fs::renameat_with(old_dir, old, new_dir, new, flags)
}

/// Gives the object behind `fd` one more name. Through `/proc` so that it also
/// works without CAP_DAC_READ_SEARCH (which `AT_EMPTY_PATH` needs).
pub fn link_fd(fd: BorrowedFd<'_>, new_dir: BorrowedFd<'_>, new: &OsStr) -> SysResult<()> {
    rustix::fs::linkat(
        CWD,
        proc_path(fd).as_cstr(),
        new_dir,
        new,
        AtFlags::SYMLINK_FOLLOW,
    )
}

pub fn unlink(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty())
}

pub fn rmdir(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Removes `name` in `dir` and, for a directory, everything below it, without
/// following symlinks. Used only inside the work dir.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return unlink(dir, name);
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    for_each_dir_entry(sub.as_fd(), |child, kind, _| {
        let bytes = child.to_bytes();
        if bytes != b"." && bytes != b".." {
            children.push((OsStr::from_bytes(bytes).to_os_string(), kind));
        }
    })?;
    for (child, kind) in children {
        // The entry's type from the listing spares a stat of each non-dir
        // (a removed dir full of whiteouts is the common case).
        match kind {
            FileType::Directory | FileType::Unknown => remove_tree(sub.as_fd(), &child)?,
            _ => match unlink(sub.as_fd(), &child) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            },
        }
    }
    rmdir(dir, name)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    rustix::io::pread(fd, buf, offset)
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> SysResult<usize> {
    rustix::io::pwrite(fd, buf, offset)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    rustix::fs::ftruncate(fd, size)
}

pub fn fsync(fd: BorrowedFd<'_>, data_only: bool) -> SysResult<()> {
    if data_only {
        rustix::fs::fdatasync(fd)
    } else {
        rustix::fs::fsync(fd)
    }
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: FallocateFlags, offset: u64, len: u64) -> SysResult<()> {
    rustix::fs::fallocate(fd, mode, offset, len)
}

pub fn seek(fd: BorrowedFd<'_>, pos: SeekFrom) -> SysResult<u64> {
    rustix::fs::seek(fd, pos)
}

/// Takes an exclusive advisory lock without waiting.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
}

/// Mode bits of `st` as a FileType.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The link count of a stat, as u64 on every architecture.
#[allow(clippy::unnecessary_cast)]
pub fn nlink(st: &Stat) -> u64 {
    st.st_nlink as u64
}
