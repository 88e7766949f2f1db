//! The [`Layers`] fixture and fixture builders (files, dirs, xattrs, whiteouts, opaque markers).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::kernel::KernelOverlay;
use super::mount::{CowfsMount, reference_mode};
use super::mountinfo::{cleanup_under, mounts_under};
use super::sys::{MOUNT_TIMEOUT, cowfs_bin, lsetxattr, mknod};
use std::process::Command;

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

/// A temp dir with the layers of a test in it. Dropping it is the last line of defence: every
/// cowfs daemon naming the dir is killed and every mount under it detached (see
/// [`cleanup_under`]), and the dir is left in place rather than deleted through a mount that
/// could not be detached. With [`Layers::with_deadline`] a watchdog does the same when the
/// deadline passes, so a hung FUSE request fails the test instead of hanging it.
pub struct Layers {
    tmp: Option<tempfile::TempDir>,
    /// Canonical path of the temp dir.
    pub root: PathBuf,
    /// `lowers[0]` is the top layer.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
    watchdog: Option<Watchdog>,
}

/// The thread started by [`Layers::with_deadline`] and the channel that stops it.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

// Only `Drop` touches it (stops and joins the thread), so a test's `catch_unwind` around code
// that borrows a `Layers` cannot observe it half-changed.
impl std::panic::RefUnwindSafe for Watchdog {}

impl Layers {
    /// `n` lower dirs `lower0..` (lower0 on top), `upper`, `work`, `mnt`.
    pub fn new(n: usize) -> Layers {
        let mut l = Layers::bare("cowfs-test-", &std::env::temp_dir());
        l.lowers = (0..n).map(|i| l.root.join(format!("lower{i}"))).collect();
        for d in l.lowers.iter().chain([&l.upper, &l.work, &l.mnt]) {
            fs::create_dir(d).unwrap();
        }
        l
    }

    /// An empty temp dir `PREFIX*` in `parent`, for tests that lay out their own tree: no lower
    /// dirs; `upper`, `work` and `mnt` are named (`upper`, `work`, `mnt` in it) but not created.
    pub fn bare(prefix: &str, parent: &Path) -> Layers {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .expect("tempdir");
        let root = tmp.path().canonicalize().unwrap();
        Layers {
            tmp: Some(tmp),
            lowers: Vec::new(),
            upper: root.join("upper"),
            work: root.join("work"),
            mnt: root.join("mnt"),
            root,
            watchdog: None,
        }
    }

    /// Starts a watchdog: once `deadline` has passed, it kills the cowfs daemons naming the dir
    /// and detaches the mounts under it (as dropping does).
    pub fn with_deadline(mut self, deadline: Duration) -> Layers {
        let (tx, rx) = mpsc::channel::<()>();
        let r = self.root.clone();
        let watchdog = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                eprintln!(
                    "DEADLINE ({deadline:?}) passed for {}: killing its cowfs daemons and detaching its mounts",
                    r.display()
                );
                cleanup_under(&r);
            }
        });
        self.watchdog = Some(Watchdog {
            stop: tx,
            thread: watchdog,
        });
        self
    }

    /// `root/rel`
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `root/rel` as a string (temp paths are UTF-8).
    pub fn s(&self, rel: &str) -> String {
        self.path(rel).to_str().expect("utf-8 path").to_string()
    }

    /// `mkdir -p root/rel`
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        mkdir(&p);
        p
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
        self.mount_with_env(extra, &[])
    }

    /// As [`Layers::mount_with`], the daemon with these environment variables besides ours
    /// (e.g. `COWFS_FAULT_FILE` for one mount).
    pub fn mount_with_env(&self, extra: &[&str], env: &[(&str, &Path)]) -> CowfsMount {
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
        if env.is_empty() {
            return CowfsMount::foreground(&args, &self.mnt, &self.root);
        }
        CowfsMount::spawn(
            Command::new(cowfs_bin())
                .args(&args)
                .envs(env.iter().copied())
                .env("RUST_BACKTRACE", "1"),
            &self.mnt,
            &self.root,
            MOUNT_TIMEOUT,
        )
    }

    /// `cowfs mount LOWERS UPPER MNT --workdir WORK` of these layers, for the caller's options.
    pub fn mount_command(&self) -> Command {
        let mut command = Command::new(cowfs_bin());
        command
            .arg("mount")
            .arg(self.lowerdir_arg())
            .arg(&self.upper)
            .arg(&self.mnt)
            .arg("--workdir")
            .arg(&self.work);
        command
    }

    /// `cowfs mount LOWERS UPPER MNT --workdir WORK EXTRA...` in the background, as a user runs
    /// it, for its exit status and messages (a mount it made is the caller's to undo).
    pub fn try_mount_with(&self, extra: &[&str]) -> std::process::Output {
        self.mount_command()
            .args(extra)
            .output()
            .expect("run cowfs mount")
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

    /// Moves the upper and work dirs onto the filesystem `fs` (fresh `upper` and `work` dirs
    /// at its root).
    pub fn upper_on(&mut self, fs: &super::loopfs::LoopFs) {
        self.upper = fs.dir.join("upper");
        self.work = fs.dir.join("work");
        fs::create_dir(&self.upper).unwrap();
        fs::create_dir(&self.work).unwrap();
    }

    /// Kernel overlayfs over the same lowers + upper, with a fresh workdir and mountpoint
    /// named `{tag}-work` / `{tag}-mnt`.
    pub fn kernel_mount(&self, tag: &str) -> KernelOverlay {
        self.kernel_mount_with(tag, "")
    }

    /// As [`Layers::kernel_mount`], with mount options besides the layers.
    pub fn kernel_mount_with(&self, tag: &str, opts: &str) -> KernelOverlay {
        let work = self.fresh_dir(&format!("{tag}-work"));
        let mnt = self.fresh_dir(&format!("{tag}-mnt"));
        KernelOverlay::try_mount(&self.lowers, &self.upper, &work, &mnt, opts)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Layers {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            drop(w.stop);
            let _ = w.thread.join();
        }
        cleanup_under(&self.root);
        if let Some(tmp) = self.tmp.take() {
            // A mount that could not be detached must not make us delete through it.
            if !mounts_under(&self.root).is_empty() {
                eprintln!("leaving {} behind: still mounted", self.root.display());
                std::mem::forget(tmp);
            }
        }
    }
}

pub fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.to_str().expect("utf-8 path").to_string())
        .collect::<Vec<_>>()
        .join(":")
}
