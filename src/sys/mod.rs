//! Safe wrappers over the system calls cowfs makes on layer objects.
//!
//! Every path given here is a single name relative to a directory fd, opened
//! with `O_NOFOLLOW`: nothing in this module resolves a multi-component path
//! inside a layer, so a symlink planted in a layer can never lead outside it.
//! Objects are held as `O_PATH` fds; calls that do not accept an `O_PATH` fd
//! (xattrs, reopening for I/O) go through `/proc/self/fd/N`, which names the
//! object the fd already refers to and so cannot be redirected by a layer.
//!
//! This is the only module with `unsafe`; each use says why it is sound.

use std::ffi::{CStr, OsStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

mod copy;
mod durable;
pub mod fault;
pub use copy::{Copied, copy_file_data, copy_file_range};
pub use durable::{DataOrdering, data_ordering_of, start_write_back, write_back};

pub use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, RenameFlags, SeekFrom, Stat, StatVfs, Timespec, Timestamps,
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

/// Opens `name` in `dir` as an `O_PATH` handle, never following a symlink.
pub fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
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

fn xattr_result<T>(r: SysResult<T>) -> SysResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a whole xattr value; `None` when absent.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<Vec<u8>>> {
    let path = proc_path(fd);
    // Most values (overlay xattrs, ACLs) are short: one call reads them.
    let mut small = [0u8; 256];
    match xattr_result(rustix::fs::getxattr(path.as_cstr(), name, &mut small[..])) {
        Ok(Some(len)) => return Ok(Some(small[..len].to_vec())),
        Ok(None) => return Ok(None),
        Err(Errno::RANGE) => {}
        Err(e) => return Err(e),
    }
    loop {
        let Some(size) = xattr_result(rustix::fs::getxattr_query(path.as_cstr(), name))? else {
            return Ok(None);
        };
        let mut value = vec![0u8; size];
        match xattr_result(rustix::fs::getxattr(path.as_cstr(), name, &mut value[..])) {
            Ok(Some(len)) => {
                value.truncate(len);
                return Ok(Some(value));
            }
            Ok(None) => return Ok(None),
            // The value grew between the two calls: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether the xattr is set with a first byte equal to `flag`.
pub fn xattr_first_byte(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<u8>> {
    let mut byte = [0u8; 1];
    match rustix::fs::getxattr(proc_path(fd).as_cstr(), name, &mut byte[..]) {
        Ok(0) => Ok(Some(0)),
        Ok(_) => Ok(Some(byte[0])),
        Err(Errno::RANGE) => {
            // Longer than one byte: read it whole, only the first byte counts.
            Ok(get_xattr(fd, name)?.and_then(|v| v.first().copied()))
        }
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets an xattr on an open file or an `O_PATH` fd. The fd's own call goes
/// first: it needs no walk through /proc, and on an `O_PATH` fd it fails at
/// once with EBADF.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
    let flags = rustix::fs::XattrFlags::from_bits_retain(flags as _);
    match rustix::fs::fsetxattr(fd, name, value, flags) {
        Err(Errno::BADF) => rustix::fs::setxattr(proc_path(fd).as_cstr(), name, value, flags),
        done => done,
    }
}

/// The xattr names of an open file or an `O_PATH` fd: through the fd when
/// it is an open file (as in `set_xattr`), else through /proc.
pub fn list_xattr(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    match rustix::fs::flistxattr_query(fd) {
        Ok(_) => read_xattr_list(
            || rustix::fs::flistxattr_query(fd),
            |list| rustix::fs::flistxattr(fd, list),
        ),
        Err(Errno::BADF) => {
            let path = proc_path(fd);
            read_xattr_list(
                || rustix::fs::listxattr_query(path.as_cstr()),
                |list| rustix::fs::listxattr(path.as_cstr(), list),
            )
        }
        Err(e) => Err(e),
    }
}

/// Sizes the list, then reads it, again if it grew in between.
fn read_xattr_list(
    query: impl Fn() -> SysResult<usize>,
    read: impl Fn(&mut [u8]) -> SysResult<usize>,
) -> SysResult<Vec<u8>> {
    loop {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut list = vec![0u8; size];
        match read(&mut list[..]) {
            Ok(len) => {
                list.truncate(len);
                return Ok(list);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

pub fn remove_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::removexattr(proc_path(fd).as_cstr(), name)
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
    for_each_dir_entry(sub.as_fd(), |child, _, _| {
        let bytes = child.to_bytes();
        if bytes != b"." && bytes != b".." {
            children.push(OsStr::from_bytes(bytes).to_os_string());
        }
    })?;
    for child in children {
        remove_tree(sub.as_fd(), &child)?;
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

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> SysResult<()> {
    let flags = rustix::fs::FallocateFlags::from_bits_retain(mode as _);
    rustix::fs::fallocate(fd, flags, offset, len)
}

pub fn seek(fd: BorrowedFd<'_>, pos: SeekFrom) -> SysResult<u64> {
    rustix::fs::seek(fd, pos)
}

/// Takes an exclusive advisory lock without waiting.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
}

pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Raises the soft open-file limit to the hard one; cowfs budgets its fds
/// itself, this only gives the budget room.
pub fn raise_fd_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let target = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, target);
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
}

/// Who a fork returned to.
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// Forks the process. Must be called while the process has one thread only.
pub fn fork_single_threaded() -> SysResult<Forked> {
    // SAFETY: the caller guarantees the process is single-threaded (no other
    // thread can hold a lock the child would inherit), and the child only goes
    // on to run ordinary Rust code of this program.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

pub fn setsid() {
    let _ = rustix::process::setsid();
}

/// Points stdin, stdout and stderr at /dev/null, so a parent waiting for our
/// stdio to close (podman does) sees it close.
pub fn detach_stdio() -> SysResult<()> {
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
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

/// A pipe with both ends close-on-exec.
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
}

pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> SysResult<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn read_to_end(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Mode bits of `st` as a FileType.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
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

/// A file handle: what name_to_handle_at(2) returns for an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandleBytes {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

const MAX_HANDLE_SZ: usize = 128;
/// `struct file_handle` header: handle_bytes (u32) and handle_type (i32).
const HANDLE_HEADER: usize = 8;

/// The file handle of the object behind `fd`; `Err(OPNOTSUPP)` when its
/// filesystem cannot make handles.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> SysResult<FileHandleBytes> {
    // 8-byte aligned storage for the header and the largest handle.
    let mut storage = [0u64; (HANDLE_HEADER + MAX_HANDLE_SZ) / 8];
    let header = storage.as_mut_ptr().cast::<libc::file_handle>();
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `storage` is aligned for `file_handle` and holds its header plus
    // MAX_HANDLE_SZ bytes, which is what handle_bytes tells the kernel it may
    // write; the path is a valid empty C string used with AT_EMPTY_PATH.
    let rc = unsafe {
        (*header).handle_bytes = MAX_HANDLE_SZ as u32;
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            header,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    // SAFETY: the kernel filled in the header and `handle_bytes` bytes after it,
    // at most MAX_HANDLE_SZ, all inside `storage`.
    let (handle_type, bytes) = unsafe {
        let len = ((*header).handle_bytes as usize).min(MAX_HANDLE_SZ);
        let data = storage.as_ptr().cast::<u8>().add(HANDLE_HEADER);
        (
            (*header).handle_type,
            std::slice::from_raw_parts(data, len).to_vec(),
        )
    };
    Ok(FileHandleBytes { handle_type, bytes })
}

/// Opens the object a file handle names, on the filesystem of `mount_fd`.
/// Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle: &FileHandleBytes,
    flags: OFlags,
) -> SysResult<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE_SZ {
        return Err(Errno::INVAL);
    }
    let mut storage = [0u64; (HANDLE_HEADER + MAX_HANDLE_SZ) / 8];
    let header = storage.as_mut_ptr().cast::<libc::file_handle>();
    // SAFETY: `storage` is aligned for `file_handle` and large enough for its
    // header plus the handle bytes, which are copied right after the header.
    let fd = unsafe {
        (*header).handle_bytes = handle.bytes.len() as u32;
        (*header).handle_type = handle.handle_type;
        let data = storage.as_mut_ptr().cast::<u8>().add(HANDLE_HEADER);
        std::ptr::copy_nonoverlapping(handle.bytes.as_ptr(), data, handle.bytes.len());
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            header,
            (flags | OFlags::CLOEXEC).bits() as libc::c_int,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: open_by_handle_at returned a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The filesystem's UUID (FS_IOC_GETFSUUID), if it has one.
pub fn filesystem_uuid(dir: BorrowedFd<'_>) -> Option<[u8; 16]> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    // _IOR(0x15, 0, struct fsuuid2)
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let opened = open_dir_for_listing(dir).ok()?;
    let mut out = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: FS_IOC_GETFSUUID writes one `struct fsuuid2` (17 bytes, as
    // encoded in the request number) to the pointer, which is `out`.
    let rc = unsafe {
        libc::ioctl(
            opened.as_raw_fd(),
            FS_IOC_GETFSUUID as _,
            &mut out as *mut FsUuid2,
        )
    };
    (rc == 0 && out.len == 16 && out.uuid != [0; 16]).then_some(out.uuid)
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// Clears the process umask, so objects get exactly the modes given.
pub fn clear_umask() {
    rustix::process::umask(Mode::empty());
}

/// The link count of a stat, as u64 on every architecture.
#[allow(clippy::unnecessary_cast)]
pub fn nlink(st: &Stat) -> u64 {
    st.st_nlink as u64
}

/// Returns free heap memory to the system (glibc keeps it otherwise).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // the allocator's locks itself and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
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
