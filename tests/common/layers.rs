//! The [`Layers`] fixture and fixture builders (files, dirs, xattrs, whiteouts, opaque markers).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::mount::{CowfsMount, KernelOverlay, reference_mode};
use super::sys::{lsetxattr, mknod};

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
