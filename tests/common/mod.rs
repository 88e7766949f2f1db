//! Shared harness for the cowfs integration tests.
//!
//! * [`Layers`]: a fixture of lower dirs, upper, work dir and mountpoint inside a `TempDir`.
//! * [`CowfsMount`]: guard around a running cowfs daemon; unmounts and reaps it on drop.
//! * [`KernelOverlay`]: guard around a kernel overlayfs mount (the reference implementation).
//! * [`tree_snapshot`] / [`assert_trees_eq`]: compare whole trees, never following symlinks.
//!
//! Only `std`, `libc` and `tempfile` are used.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

fn check(ret: libc::c_int) -> io::Result<()> {
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

// ---------------------------------------------------------------------------
// fixture builders (plain paths; work on any dir: lowers, upper, merged view)
// ---------------------------------------------------------------------------

/// Writes `data` to `p`, creating missing parent directories (mode 0755).
pub fn write_file(p: &Path, data: impl AsRef<[u8]>) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub fn write_file_mode(p: &Path, data: impl AsRef<[u8]>, mode: u32) {
    write_file(p, data);
    chmod(p, mode);
}

pub fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", p.display()));
}

pub fn mkdir_mode(p: &Path, mode: u32) {
    mkdir(p);
    chmod(p, mode);
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

pub fn symlink(target: &str, p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(target, p)
        .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", p.display()));
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    lsetxattr(p, name, value, 0)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
}

/// Kernel-style whiteout: char device 0/0, mode 0.
pub fn whiteout(p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    mknod(p, libc::S_IFCHR, 0, 0).unwrap_or_else(|e| panic!("mknod whiteout {}: {e}", p.display()));
}

/// OCI whiteout: empty file `.wh.NAME` in `dir`.
pub fn oci_whiteout(dir: &Path, name: &str) {
    write_file(&dir.join(format!(".wh.{name}")), b"");
}

/// Marks `dir` opaque with `trusted.overlay.opaque=y`.
pub fn opaque_xattr(dir: &Path) {
    mkdir(dir);
    set_xattr(dir, "trusted.overlay.opaque", b"y");
}

/// Marks `dir` opaque with `user.overlay.opaque=y`.
pub fn opaque_user_xattr(dir: &Path) {
    mkdir(dir);
    set_xattr(dir, "user.overlay.opaque", b"y");
}

/// Marks `dir` opaque with an OCI `.wh..wh..opq` file.
pub fn opaque_oci(dir: &Path) {
    write_file(&dir.join(".wh..wh..opq"), b"");
}

/// A recognisable deterministic byte pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Layers fixture
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Layers {
    pub tmp: tempfile::TempDir,
    /// Canonical path of the temp dir.
    pub root: PathBuf,
    /// `lowers[0]` is the top layer.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Layers {
    /// `n` lower dirs `lower0..` (lower0 on top), `upper`, `work`, `mnt`.
    pub fn new(n: usize) -> Layers {
        let tmp = tempfile::Builder::new()
            .prefix("cowfs-test-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().canonicalize().unwrap();
        let lowers: Vec<PathBuf> = (0..n).map(|i| root.join(format!("lower{i}"))).collect();
        for l in &lowers {
            fs::create_dir(l).unwrap();
        }
        let upper = root.join("upper");
        let work = root.join("work");
        let mnt = root.join("mnt");
        for d in [&upper, &work, &mnt] {
            fs::create_dir(d).unwrap();
        }
        Layers {
            tmp,
            root,
            lowers,
            upper,
            work,
            mnt,
        }
    }

    pub fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }

    /// `lower0:lower1:...`
    pub fn lowerdir_arg(&self) -> String {
        join_lowers(&self.lowers)
    }

    /// A fresh directory inside the temp dir (not inside any layer).
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// `cowfs mount LOWERS UPPER MNT --workdir WORK --foreground`
    pub fn mount(&self) -> CowfsMount {
        self.mount_with(&[])
    }

    pub fn mount_with(&self, extra: &[&str]) -> CowfsMount {
        let mut args: Vec<OsString> = vec![
            "mount".into(),
            self.lowerdir_arg().into(),
            self.upper.clone().into(),
            self.mnt.clone().into(),
            "--workdir".into(),
            self.work.clone().into(),
            "--foreground".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        if reference_mode() {
            return CowfsMount::kernel_reference(
                &self.lowers,
                Some((&self.upper, &self.work)),
                &self.mnt,
            );
        }
        CowfsMount::foreground(&args, &self.mnt, &self.root)
    }

    /// Read-only: `cowfs mount LOWERS MNT --foreground`.
    pub fn mount_ro(&self) -> CowfsMount {
        let args: Vec<OsString> = vec![
            "mount".into(),
            self.lowerdir_arg().into(),
            self.mnt.clone().into(),
            "--foreground".into(),
        ];
        if reference_mode() {
            return CowfsMount::kernel_reference(&self.lowers, None, &self.mnt);
        }
        CowfsMount::foreground(&args, &self.mnt, &self.root)
    }

    /// Without `--workdir` (cowfs picks `.upper.cowfs-work` next to the upper dir).
    pub fn mount_no_workdir(&self) -> CowfsMount {
        let args: Vec<OsString> = vec![
            "mount".into(),
            self.lowerdir_arg().into(),
            self.upper.clone().into(),
            self.mnt.clone().into(),
            "--foreground".into(),
        ];
        if reference_mode() {
            let w = self.root.join(".upper.cowfs-work");
            let _ = fs::create_dir(&w);
            return CowfsMount::kernel_reference(&self.lowers, Some((&self.upper, &w)), &self.mnt);
        }
        CowfsMount::foreground(&args, &self.mnt, &self.root)
    }

    /// Kernel overlayfs over the same lowers + upper, with a fresh workdir and mountpoint
    /// named `{tag}-work` / `{tag}-mnt`.
    pub fn kernel_mount(&self, tag: &str) -> KernelOverlay {
        let work = self.fresh_dir(&format!("{tag}-work"));
        let mnt = self.fresh_dir(&format!("{tag}-mnt"));
        KernelOverlay::mount(&self.lowers, &self.upper, &work, &mnt)
    }
}

pub fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.to_str().expect("utf-8 path").to_string())
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------
// mount detection
// ---------------------------------------------------------------------------

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// fstype of whatever is mounted exactly at `mnt` (topmost), per /proc/self/mountinfo.
pub fn mount_fstype(mnt: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 {
            continue;
        }
        if unescape_mountinfo(fields[4]) != want {
            continue;
        }
        if let Some(sep) = fields.iter().position(|f| *f == "-")
            && let Some(t) = fields.get(sep + 1)
        {
            found = Some(t.to_string());
        }
    }
    found
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_fstype(mnt).is_some()
}

fn st_dev(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.dev())
}

/// mountpoint's st_dev differs from its parent's.
fn dev_differs(mnt: &Path) -> bool {
    match (st_dev(mnt), mnt.parent().and_then(st_dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

fn umount2(mnt: &Path, flags: i32) -> io::Result<()> {
    check(unsafe { libc::umount2(cstr(mnt).as_ptr(), flags) })
}

fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => {
            // state is the field after the ")" closing comm
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
    }
}

// ---------------------------------------------------------------------------
// CowfsMount guard
// ---------------------------------------------------------------------------

enum Proc {
    /// `--foreground` daemon: our own child.
    Child(Child),
    /// daemon mode: detached pid (our child only if we are its subreaper).
    Daemon(i32),
    Gone,
}

pub struct CowfsMount {
    pub mnt: PathBuf,
    proc_: Proc,
    pub stderr_path: PathBuf,
}

fn log_paths(log_dir: &Path) -> (PathBuf, PathBuf) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    (
        log_dir.join(format!("cowfs-{n}.stdout")),
        log_dir.join(format!("cowfs-{n}.stderr")),
    )
}

/// `COWFS_TEST_REFERENCE=kernel`: `Layers::mount*` mount kernel overlayfs instead of cowfs, to
/// check the tests' own expectations against the reference. (cowfs-only features such as OCI
/// whiteouts, user.overlay.opaque or the fuse.cowfs fstype then fail, as expected.)
pub fn reference_mode() -> bool {
    std::env::var("COWFS_TEST_REFERENCE").is_ok_and(|v| v == "kernel")
}

impl CowfsMount {
    /// Reference mode only: a kernel overlayfs mount behind the same guard.
    pub fn kernel_reference(
        lowers: &[PathBuf],
        rw: Option<(&Path, &Path)>,
        mnt: &Path,
    ) -> CowfsMount {
        let mut opts = format!("lowerdir={}", join_lowers(lowers));
        if let Some((u, w)) = rw {
            opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount overlay {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: Proc::Gone,
            stderr_path: PathBuf::from("/dev/null"),
        }
    }

    /// Spawns `cowfs ARGS` (which must include `--foreground`) and waits until `mnt` is a
    /// mountpoint. Logs go to files in `log_dir`.
    pub fn foreground(args: &[OsString], mnt: &Path, log_dir: &Path) -> CowfsMount {
        let (out, err) = log_paths(log_dir);
        let child = Command::new(cowfs_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .expect("spawn cowfs");
        let mut m = CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: Proc::Child(child),
            stderr_path: err,
        };
        m.wait_mounted(args);
        m
    }

    /// Daemon mode: runs `cowfs ARGS` (without --foreground, with `--pid-file PIDFILE` among
    /// ARGS) in `cwd`, requires it to exit 0 with the mount already live, then reads the pid.
    pub fn daemon(
        args: &[OsString],
        cwd: &Path,
        mnt: &Path,
        pid_file: &Path,
        log_dir: &Path,
    ) -> CowfsMount {
        become_subreaper();
        let (out, err) = log_paths(log_dir);
        let mut child = Command::new(cowfs_bin())
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn cowfs");
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                let _ = umount2(mnt, libc::MNT_DETACH);
                panic!(
                    "`cowfs {args:?}` did not return within {MOUNT_TIMEOUT:?}; stderr:\n{}",
                    fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let pid = fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let mounted = is_mounted(mnt);
        let m = CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: match pid {
                Some(p) => Proc::Daemon(p),
                None => Proc::Gone,
            },
            stderr_path: err.clone(),
        };
        if !status.success() || pid.is_none() || !mounted {
            let msg = format!(
                "`cowfs {args:?}` (cwd {}) -> {status}; pid file {}: {:?}; mounted when it returned: {mounted}\nstderr:\n{}",
                cwd.display(),
                pid_file.display(),
                fs::read_to_string(pid_file),
                m.stderr()
            );
            drop(m);
            panic!("{msg}");
        }
        // the mount must be usable (st_dev differs) right away
        assert!(
            dev_differs(mnt),
            "mount at {} listed but st_dev equals parent's",
            mnt.display()
        );
        m
    }

    fn wait_mounted(&mut self, args: &[OsString]) {
        let start = Instant::now();
        loop {
            if let Proc::Child(c) = &mut self.proc_
                && let Some(st) = c.try_wait().unwrap()
            {
                self.proc_ = Proc::Gone;
                let _ = umount2(&self.mnt, libc::MNT_DETACH);
                panic!(
                    "cowfs {args:?} exited ({st}) before mounting; stderr:\n{}",
                    self.stderr()
                );
            }
            // check mountinfo first: stat on a half-initialised FUSE mount could block
            if is_mounted(&self.mnt) && dev_differs(&self.mnt) {
                return;
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                let msg = format!(
                    "cowfs {args:?} did not mount {} within {MOUNT_TIMEOUT:?}; stderr:\n{}",
                    self.mnt.display(),
                    self.stderr()
                );
                self.teardown();
                panic!("{msg}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        match &self.proc_ {
            Proc::Child(c) => Some(c.id() as i32),
            Proc::Daemon(p) => Some(*p),
            Proc::Gone => None,
        }
    }

    /// Waits up to `timeout` for the daemon to exit. `Some(Some(status))` if we could reap it,
    /// `Some(None)` if it is gone but not our child, `None` if still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            match &mut self.proc_ {
                Proc::Gone => return Some(None),
                Proc::Child(c) => {
                    if let Some(st) = c.try_wait().unwrap() {
                        self.proc_ = Proc::Gone;
                        return Some(Some(st));
                    }
                }
                Proc::Daemon(pid) => {
                    let pid = *pid;
                    let mut status = 0;
                    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                    if r == pid {
                        self.proc_ = Proc::Gone;
                        use std::os::unix::process::ExitStatusExt;
                        return Some(Some(ExitStatus::from_raw(status)));
                    }
                    if r < 0 && !pid_alive(pid) {
                        self.proc_ = Proc::Gone;
                        return Some(None);
                    }
                }
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        match &mut self.proc_ {
            Proc::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Proc::Daemon(pid) => {
                let pid = *pid;
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
            Proc::Gone => {}
        }
        self.proc_ = Proc::Gone;
    }

    fn teardown(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = umount2(&self.mnt, libc::MNT_DETACH);
        }
        if self.wait_exit(EXIT_TIMEOUT).is_none() {
            self.kill9();
        }
        // a killed daemon may leave the mount behind
        while mount_fstype(&self.mnt).is_some_and(|t| t.starts_with("fuse")) {
            if umount2(&self.mnt, libc::MNT_DETACH).is_err() {
                break;
            }
        }
    }

    /// Waits for the daemon after an unmount; returns its exit status if we could observe it
    /// (always for --foreground children; for daemons via PR_SET_CHILD_SUBREAPER).
    fn finish(mut self, how: &str) -> Option<ExitStatus> {
        let r = self.wait_exit(Duration::from_secs(10));
        let status = match r {
            None => {
                let msg = format!(
                    "cowfs daemon did not exit within 10s after {how}; stderr:\n{}",
                    self.stderr()
                );
                self.teardown();
                panic!("{msg}");
            }
            Some(Some(st)) => {
                assert!(
                    st.success(),
                    "cowfs daemon exited with {st} after {how}; stderr:\n{}",
                    self.stderr()
                );
                Some(st)
            }
            Some(None) => None,
        };
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted after {how}",
            self.mnt.display()
        );
        status
    }

    /// Unmounts with umount2(2), waits for the daemon and asserts it exited with status 0.
    pub fn unmount(mut self) -> Option<ExitStatus> {
        let mut tries = 0;
        loop {
            match umount2(&self.mnt, 0) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    let msg = format!(
                        "umount {}: {e}; stderr:\n{}",
                        self.mnt.display(),
                        self.stderr()
                    );
                    self.teardown();
                    panic!("{msg}");
                }
            }
        }
        self.finish("umount2")
    }

    /// Sends `sig` to the daemon; it must unmount and exit 0.
    pub fn signal(self, sig: i32) -> Option<ExitStatus> {
        let pid = self.pid().expect("daemon pid");
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid}");
        self.finish(&format!("signal {sig}"))
    }

    /// Unmounts with `cowfs umount MNT` run in `cwd` with the given mountpoint argument;
    /// asserts the command and the daemon exit 0.
    pub fn cli_umount(mut self, cwd: &Path, mnt_arg: &str) -> Option<ExitStatus> {
        let out = Command::new(cowfs_bin())
            .args(["umount", mnt_arg])
            .current_dir(cwd)
            .output()
            .expect("run cowfs umount");
        if !out.status.success() {
            let msg = format!(
                "`cowfs umount {mnt_arg}` -> {}; stderr: {}\ndaemon stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.stderr()
            );
            self.teardown();
            panic!("{msg}");
        }
        self.finish("cowfs umount")
    }
}

impl Drop for CowfsMount {
    fn drop(&mut self) {
        let live = !matches!(self.proc_, Proc::Gone) || is_mounted(&self.mnt);
        if std::thread::panicking() && live {
            eprintln!(
                "---- cowfs daemon stderr ({}) ----\n{}",
                self.stderr_path.display(),
                tail(&self.stderr(), 6000)
            );
        }
        self.teardown();
    }
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        s
    } else {
        let mut i = s.len() - n;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        &s[i..]
    }
}

fn become_subreaper() {
    // So a daemonised cowfs is re-parented to us and can be reaped / its status checked.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

// ---------------------------------------------------------------------------
// KernelOverlay guard
// ---------------------------------------------------------------------------

pub struct KernelOverlay {
    pub mnt: PathBuf,
    mounted: bool,
}

impl KernelOverlay {
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KernelOverlay {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            join_lowers(lowers),
            upper.display(),
            work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t overlay -o {opts} {}: {}{}",
            mnt.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        KernelOverlay {
            mnt: mnt.to_path_buf(),
            mounted: true,
        }
    }

    pub fn unmount(mut self) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(
            out.status.success(),
            "umount {}: {}",
            self.mnt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
    }
}

// ---------------------------------------------------------------------------
// tree snapshots
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    pub len: u64,
    pub hash: u64,
    /// first bytes, for messages only (not compared beyond hash/len)
    pub head: Vec<u8>,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len as usize == self.head.len() {
            write!(f, "{:?}", String::from_utf8_lossy(&self.head))
        } else {
            write!(
                f,
                "<{} bytes, fnv {:016x}, starts {:?}>",
                self.len,
                self.hash,
                String::from_utf8_lossy(&self.head)
            )
        }
    }
}

pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: Kind,
    /// permission bits (0o7777)
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// regular files only
    pub size: Option<u64>,
    pub content: Option<Content>,
    pub target: Option<String>,
    /// devices only
    pub rdev: Option<u64>,
    /// non-directories only
    pub nlink: Option<u64>,
    /// sorted, excluding trusted.overlay.* / user.overlay.*
    pub xattrs: Vec<(String, String)>,
    /// only when requested
    pub mtime: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SnapOpts {
    pub mtime: bool,
    /// also record trusted.overlay.opaque as a pseudo xattr `<opaque>` (for upper dirs)
    pub opaque: bool,
}

pub type Tree = BTreeMap<String, EntryInfo>;

fn is_overlay_xattr(n: &str) -> bool {
    n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.")
}

fn entry_info(p: &Path, opts: SnapOpts) -> EntryInfo {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let (size, content) = if kind == Kind::File {
        let data = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        assert_eq!(
            data.len() as u64,
            m.len(),
            "st_size of {} disagrees with bytes read",
            p.display()
        );
        (
            Some(m.len()),
            Some(Content {
                len: data.len() as u64,
                hash: fnv1a(&data),
                head: data[..data.len().min(48)].to_vec(),
            }),
        )
    } else {
        (None, None)
    };
    let target = if kind == Kind::Symlink {
        Some(
            fs::read_link(p)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()))
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    let rdev = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| m.rdev());
    let mut xattrs = Vec::new();
    let list = llistxattr(p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
    for n in list {
        if opts.opaque && n == "trusted.overlay.opaque" {
            let v = lgetxattr(p, &n).unwrap_or_default();
            xattrs.push(("<opaque>".into(), String::from_utf8_lossy(&v).into_owned()));
        }
        if is_overlay_xattr(&n) {
            continue;
        }
        let v = lgetxattr(p, &n).unwrap_or_else(|e| panic!("getxattr {n} {}: {e}", p.display()));
        xattrs.push((n, String::from_utf8_lossy(&v).into_owned()));
    }
    xattrs.sort();
    EntryInfo {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size,
        content,
        target,
        rdev,
        nlink: (kind != Kind::Dir).then(|| m.nlink()),
        xattrs,
        mtime: opts.mtime.then(|| mtime_of(&m)),
    }
}

/// Snapshot of the tree under `root` (key "." is the root itself), never following symlinks.
pub fn tree_snapshot(root: &Path) -> Tree {
    tree_snapshot_with(root, SnapOpts::default())
}

pub fn tree_snapshot_with(root: &Path, opts: SnapOpts) -> Tree {
    let mut out = BTreeMap::new();
    out.insert(".".to_string(), entry_info(root, opts));
    walk(root, "", opts, &mut out);
    out
}

fn walk(dir: &Path, rel: &str, opts: SnapOpts, out: &mut Tree) {
    let mut entries: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
                .file_name()
        })
        .collect();
    entries.sort();
    for name in entries {
        let p = dir.join(&name);
        let r = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let info = entry_info(&p, opts);
        let is_dir = info.kind == Kind::Dir;
        assert!(
            out.insert(r.clone(), info).is_none(),
            "duplicate entry {r} in readdir of {}",
            dir.display()
        );
        if is_dir {
            walk(&p, &r, opts, out);
        }
    }
}

/// Human readable differences between two trees (empty if equal).
pub fn diff_trees(a: &Tree, b: &Tree, name_a: &str, name_b: &str) -> Vec<String> {
    let mut d = Vec::new();
    for (k, va) in a {
        match b.get(k) {
            None => d.push(format!("  only in {name_a}: {k}  {va:?}")),
            Some(vb) if vb != va => {
                let mut fields = Vec::new();
                macro_rules! cmp {
                    ($f:ident) => {
                        if va.$f != vb.$f {
                            fields.push(format!(
                                "{}: {name_a}={:?} {name_b}={:?}",
                                stringify!($f),
                                va.$f,
                                vb.$f
                            ));
                        }
                    };
                }
                cmp!(kind);
                if va.mode != vb.mode {
                    fields.push(format!(
                        "mode: {name_a}={:o} {name_b}={:o}",
                        va.mode, vb.mode
                    ));
                }
                cmp!(uid);
                cmp!(gid);
                cmp!(size);
                cmp!(content);
                cmp!(target);
                cmp!(rdev);
                cmp!(nlink);
                cmp!(xattrs);
                cmp!(mtime);
                d.push(format!("  differs: {k}\n      {}", fields.join("\n      ")));
            }
            _ => {}
        }
    }
    for (k, vb) in b {
        if !a.contains_key(k) {
            d.push(format!("  only in {name_b}: {k}  {vb:?}"));
        }
    }
    d
}

#[track_caller]
pub fn assert_trees_eq(a: &Tree, b: &Tree, name_a: &str, name_b: &str) {
    let d = diff_trees(a, b, name_a, name_b);
    assert!(
        d.is_empty(),
        "trees differ ({name_a} vs {name_b}), {} difference(s):\n{}",
        d.len(),
        d.join("\n")
    );
}

/// Relative paths of every entry under `root` (excluding the root), sorted.
pub fn all_paths(root: &Path) -> Vec<String> {
    tree_snapshot(root)
        .into_keys()
        .filter(|k| k != ".")
        .collect()
}

/// Asserts that nothing under `upper` looks like a cowfs/OCI artifact.
#[track_caller]
pub fn assert_no_artifacts(upper: &Path) {
    for p in all_paths(upper) {
        let base = p.rsplit('/').next().unwrap();
        assert!(
            !base.starts_with(".wh."),
            "OCI whiteout {p} written into upper {}",
            upper.display()
        );
        assert!(
            !base.to_ascii_lowercase().contains("cowfs"),
            "cowfs artifact {p} in upper {}",
            upper.display()
        );
    }
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

// ---------------------------------------------------------------------------
// assertion helpers shared by the test files
// ---------------------------------------------------------------------------

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn append(p: &Path, data: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", p.display()));
    f.write_all(data.as_bytes()).unwrap();
}

pub fn check_dirents(dir: &Path) -> Vec<String> {
    let ents = readdir_raw(dir);
    let mut seen = std::collections::BTreeSet::new();
    for e in &ents {
        assert!(
            seen.insert(e.name.clone()),
            "duplicate {} in {}",
            e.name,
            dir.display()
        );
        assert!(
            !e.name.starts_with(".wh."),
            "{} listed in {}",
            e.name,
            dir.display()
        );
        if e.name == ".." {
            continue;
        }
        let md = fs::symlink_metadata(dir.join(&e.name)).unwrap();
        assert_eq!(
            e.ino,
            md.ino(),
            "d_ino != st_ino for {}/{}",
            dir.display(),
            e.name
        );
        assert_eq!(
            e.dtype,
            dtype_for(&md),
            "d_type of {}/{}",
            dir.display(),
            e.name
        );
    }
    assert!(
        seen.contains(".") && seen.contains(".."),
        "dot entries in {}",
        dir.display()
    );
    seen.into_iter().filter(|n| n != "." && n != "..").collect()
}

pub fn check_seek(f: &fs::File, what: &str) {
    let fd = f.as_raw_fd();
    let mib = 1i64 << 20;
    let seek = |off: i64, wh: i32| unsafe { libc::lseek(fd, off, wh) };
    assert_eq!(seek(0, libc::SEEK_DATA), 0, "{what}: SEEK_DATA 0");
    let hole = seek(0, libc::SEEK_HOLE);
    assert!(
        (4096..mib).contains(&hole),
        "{what}: SEEK_HOLE from 0 = {hole}"
    );
    assert_eq!(
        seek(8192, libc::SEEK_DATA),
        mib,
        "{what}: SEEK_DATA from 8192"
    );
    assert_eq!(
        seek(mib, libc::SEEK_HOLE),
        mib + 4096,
        "{what}: SEEK_HOLE at EOF"
    );
    assert_eq!(
        seek(mib + 4096, libc::SEEK_DATA),
        -1,
        "{what}: SEEK_DATA past EOF"
    );
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENXIO)
    );
}

pub fn copy_range(
    src: &fs::File,
    dst: &fs::File,
    mut off_in: i64,
    mut off_out: i64,
    mut len: usize,
) {
    while len > 0 {
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        assert!(
            n > 0,
            "copy_file_range: {} ({n})",
            std::io::Error::last_os_error()
        );
        len -= n as usize;
    }
}
