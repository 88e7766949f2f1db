//! Extended attributes, read and written through the object's own fd (or
//! `/proc/self/fd/N` for an `O_PATH` fd).

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

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
    read_xattr(
        || rustix::fs::getxattr_query(path.as_cstr(), name),
        |value| rustix::fs::getxattr(path.as_cstr(), name, value),
    )
}

/// `get_xattr` of a file open for I/O (not `O_PATH`): through the fd
/// itself, no walk through /proc.
pub fn get_xattr_of_open_file(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<Vec<u8>>> {
    read_xattr(
        || rustix::fs::fgetxattr_query(fd, name),
        |value| rustix::fs::fgetxattr(fd, name, value),
    )
}

/// `get_xattr` of the object `name` in the dir `dir` (an `O_PATH` fd),
/// never following a symlink: one call, without opening the object.
/// `name` is one component. getxattrat(2) (Linux 6.13+) takes the dir fd
/// and the name as they are; before it, the name goes after the dir's
/// /proc path, a walk through /proc more (about 2.5x the time here).
pub fn get_xattr_of_child(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    xattr: &OsStr,
) -> SysResult<Option<Vec<u8>>> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
        return Err(Errno::INVAL);
    }
    let child = std::ffi::CString::new(bytes).map_err(|_| Errno::INVAL)?;
    let attr = std::ffi::CString::new(xattr.as_bytes()).map_err(|_| Errno::INVAL)?;
    if HAS_GETXATTRAT.load(Ordering::Relaxed) {
        match read_xattr(
            || getxattrat(dir, &child, &attr, &mut []),
            |value| getxattrat(dir, &child, &attr, value),
        ) {
            Err(Errno::NOSYS) => HAS_GETXATTRAT.store(false, Ordering::Relaxed),
            done => return done,
        }
    }
    let mut path = proc_path(dir).as_cstr().to_bytes().to_vec();
    path.push(b'/');
    path.extend_from_slice(bytes);
    let path = std::ffi::CString::new(path).map_err(|_| Errno::INVAL)?;
    read_xattr(
        || rustix::fs::lgetxattr_query(path.as_c_str(), xattr),
        |value| rustix::fs::lgetxattr(path.as_c_str(), xattr, value),
    )
}

/// Whether the kernel has getxattrat(2); cleared at the first ENOSYS.
static HAS_GETXATTRAT: AtomicBool = AtomicBool::new(true);

/// The argument block of getxattrat(2) (`struct xattr_args`).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// getxattrat(dir, child, AT_SYMLINK_NOFOLLOW, attr) into `value` (an
/// empty `value` asks for the size). rustix and libc lack a wrapper.
fn getxattrat(
    dir: BorrowedFd<'_>,
    child: &CStr,
    attr: &CStr,
    value: &mut [u8],
) -> SysResult<usize> {
    let mut args = XattrArgs {
        value: value.as_mut_ptr() as u64,
        size: u32::try_from(value.len()).unwrap_or(u32::MAX),
        flags: 0,
    };
    // SAFETY: getxattrat reads the two NUL-terminated strings and the
    // argument block, all borrowed for the call, and writes at most
    // `args.size` bytes at `args.value`, which is `value`'s length (capped
    // below it) into memory `value` borrows mutably; the dir fd is
    // borrowed and stays open for the call.
    let rc = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            child.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    if rc < 0 {
        return Err(last_errno());
    }
    usize::try_from(rc).map_err(|_| Errno::IO)
}

/// The syscall number of getxattrat(2): one for all architectures since
/// the unified syscall table (Linux 6.13).
const SYS_GETXATTRAT: libc::c_long = 464;

/// Reads a value in one call when it is short, else sizes it first.
fn read_xattr(
    query: impl Fn() -> SysResult<usize>,
    read: impl Fn(&mut [u8]) -> SysResult<usize>,
) -> SysResult<Option<Vec<u8>>> {
    // Most values (overlay xattrs, ACLs) are short: one call reads them.
    let mut small = [0u8; 256];
    match xattr_result(read(&mut small[..])) {
        Ok(Some(len)) => return Ok(Some(small[..len].to_vec())),
        Ok(None) => return Ok(None),
        Err(Errno::RANGE) => {}
        Err(e) => return Err(e),
    }
    loop {
        let Some(size) = xattr_result(query())? else {
            return Ok(None);
        };
        let mut value = vec![0u8; size];
        match xattr_result(read(&mut value[..])) {
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
pub fn set_xattr(
    fd: BorrowedFd<'_>,
    name: &OsStr,
    value: &[u8],
    flags: XattrFlags,
) -> SysResult<()> {
    match rustix::fs::fsetxattr(fd, name, value, flags) {
        Err(Errno::BADF) => rustix::fs::setxattr(proc_path(fd).as_cstr(), name, value, flags),
        done => done,
    }
}

/// The xattr names of an open file or an `O_PATH` fd: through the fd when
/// it is an open file (as in `set_xattr`), else through /proc.
pub fn list_xattr(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    match rustix::fs::flistxattr_query(fd) {
        // Most objects have no xattrs: the probe's answer is the list.
        Ok(0) => Ok(Vec::new()),
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

/// The xattr names of an object given by any fd (an `O_PATH` one
/// included), in one call for a list that fits a small buffer, which is
/// nearly always; an object on a filesystem without xattrs has none.
/// Lookups read this instead of asking for each overlay xattr by name:
/// most objects have none, and then none needs asking for.
pub fn xattr_name_list(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut small = [0u8; 1024];
    match rustix::fs::listxattr(proc_path(fd).as_cstr(), &mut small[..]) {
        Ok(len) => Ok(small[..len].to_vec()),
        Err(Errno::RANGE) => list_xattr(fd),
        Err(Errno::NOTSUP) => Ok(Vec::new()),
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

/// `remove_xattr` of a file open for I/O (not `O_PATH`): through the fd
/// itself, no walk through /proc.
pub fn remove_xattr_of_open_file(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::fremovexattr(fd, name)
}
