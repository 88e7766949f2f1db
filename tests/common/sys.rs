//! Small libc wrappers, errno assertions and directory-listing helpers.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn cowfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cowfs")
}

// ---------------------------------------------------------------------------
// small libc wrappers
// ---------------------------------------------------------------------------

pub fn cstr<P: AsRef<Path>>(p: P) -> CString {
    CString::new(p.as_ref().as_os_str().as_bytes()).expect("path contains NUL")
}

pub fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The errno of a failed operation; panics (with `what`) if it succeeded.
pub fn errno_of<T: fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, but it succeeded with {v:?}"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

pub fn assert_errno<T: fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) {
    let got = errno_of(r, what);
    assert_eq!(
        got,
        errno,
        "{what}: expected errno {errno} ({}), got {got} ({})",
        io::Error::from_raw_os_error(errno),
        io::Error::from_raw_os_error(got)
    );
}

/// `lstat` that says "does not exist" as `None`, panicking on other errors.
pub fn lstat_opt(p: &Path) -> Option<fs::Metadata> {
    match fs::symlink_metadata(p) {
        Ok(m) => Some(m),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => panic!("lstat {}: {e}", p.display()),
    }
}

pub fn assert_enoent(p: &Path) {
    assert_errno(
        fs::symlink_metadata(p),
        libc::ENOENT,
        &format!("lstat {}", p.display()),
    );
}

pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    check(unsafe { libc::mknod(cstr(p).as_ptr(), mode as libc::mode_t, dev) })
}

pub fn mkfifo(p: &Path, mode: u32) -> io::Result<()> {
    check(unsafe { libc::mkfifo(cstr(p).as_ptr(), mode as libc::mode_t) })
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let n = CString::new(name).unwrap();
    check(unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            flags,
        )
    })
}

pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c = cstr(p);
    let n = CString::new(name).unwrap();
    loop {
        let sz = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if sz < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; sz as usize + 1];
        let got = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

/// All xattr names of `p` (not following symlinks), sorted.
pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cstr(p);
    loop {
        let sz = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if sz < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; sz as usize + 1];
        let got = unsafe {
            libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len())
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        let mut names: Vec<String> = buf
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        names.sort();
        return Ok(names);
    }
}

pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let n = CString::new(name).unwrap();
    check(unsafe { libc::lremovexattr(cstr(p).as_ptr(), n.as_ptr()) })
}

/// `utimensat(AT_FDCWD, p, ..., AT_SYMLINK_NOFOLLOW)`; each time is (sec, nsec), nsec may be
/// `libc::UTIME_NOW` / `libc::UTIME_OMIT`.
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ];
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cstr(p).as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cstr(from).as_ptr(),
            libc::AT_FDCWD,
            cstr(to).as_ptr(),
            flags as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn truncate_path(p: &Path, len: i64) -> io::Result<()> {
    check(unsafe { libc::truncate(cstr(p).as_ptr(), len as libc::off_t) })
}

pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(cstr(p).as_ptr(), &mut s) })?;
    Ok(s)
}

pub fn mtime_of(m: &fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

pub fn atime_of(m: &fs::Metadata) -> (i64, i64) {
    (m.atime(), m.atime_nsec())
}

pub fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Asserts `p` (a path in an upper/lower dir) is a 0/0 character device whiteout.
pub fn assert_whiteout(p: &Path) {
    let m = fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("expected whiteout at {}: {e}", p.display()));
    assert!(
        is_whiteout(&m),
        "expected 0/0 char-device whiteout at {}, found {:?} rdev={:#x}",
        p.display(),
        m.file_type(),
        m.rdev()
    );
}

/// Sorted names from `read_dir` (which skips `.` and `..`).
pub fn list_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// One raw `readdir(3)` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirent {
    pub name: String,
    pub ino: u64,
    pub dtype: u8,
    pub pos: i64,
}

/// All entries (including `.`/`..`) via libc opendir/readdir, with the `telldir` position
/// taken before each entry was read.
pub fn readdir_raw(dir: &Path) -> Vec<RawDirent> {
    let c = cstr(dir);
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(
        !d.is_null(),
        "opendir {}: {}",
        dir.display(),
        io::Error::last_os_error()
    );
    let mut out = Vec::new();
    loop {
        let pos = unsafe { libc::telldir(d) };
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            unsafe { libc::closedir(d) };
            assert!(
                e.raw_os_error() == Some(0) || e.raw_os_error().is_none(),
                "readdir {}: {e}",
                dir.display()
            );
            break;
        }
        let ent = unsafe { &*ent };
        let name = unsafe { std::ffi::CStr::from_ptr(ent.d_name.as_ptr()) };
        out.push(RawDirent {
            name: name.to_string_lossy().into_owned(),
            ino: ent.d_ino,
            dtype: ent.d_type,
            pos: pos as i64,
        });
    }
    out
}

pub fn dtype_for(m: &fs::Metadata) -> u8 {
    let ft = m.file_type();
    if ft.is_dir() {
        libc::DT_DIR
    } else if ft.is_file() {
        libc::DT_REG
    } else if ft.is_symlink() {
        libc::DT_LNK
    } else if ft.is_char_device() {
        libc::DT_CHR
    } else if ft.is_block_device() {
        libc::DT_BLK
    } else if ft.is_fifo() {
        libc::DT_FIFO
    } else if ft.is_socket() {
        libc::DT_SOCK
    } else {
        libc::DT_UNKNOWN
    }
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
