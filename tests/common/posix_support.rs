//! Helpers for tests/posix.rs and tests/posix_copyup.rs: kernel overlayfs mounts with explicit
//! options, a tmpfs guard, "kernel twin" mounts sharing a cowfs fixture's lowers, and measuring
//! how much file data an upper dir holds.
//!
//! Included with `#[path = "common/posix_support.rs"] mod posix_support;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::{Layers, cstr, join_lowers};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The options the kernel reference runs with (index=on needs nfs_export=off and a fresh or
/// matching workdir).
pub const KERNEL_FULL_OPTS: &str = "redirect_dir=on,metacopy=on,index=on,nfs_export=off";
/// Fallback if the kernel refuses `KERNEL_FULL_OPTS`.
pub const KERNEL_NO_INDEX_OPTS: &str = "redirect_dir=on,metacopy=on";

/// Guard for a kernel overlayfs mount with arbitrary extra options; lazily unmounted on drop.
pub struct KOverlay {
    pub mnt: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub opts: String,
    mounted: bool,
}

impl KOverlay {
    pub fn try_mount(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        extra: &str,
    ) -> Result<KOverlay, String> {
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            join_lowers(lowers),
            upper.display(),
            work.display()
        );
        if !extra.is_empty() {
            opts = format!("{opts},{extra}");
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .expect("run mount");
        if !out.status.success() {
            return Err(format!(
                "mount -t overlay -o {opts} {}: {}{}",
                mnt.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(KOverlay {
            mnt: mnt.to_path_buf(),
            upper: upper.to_path_buf(),
            work: work.to_path_buf(),
            opts: extra.to_string(),
            mounted: true,
        })
    }

    /// Mounts with `KERNEL_FULL_OPTS`, or without index if the kernel refuses (noted on stderr).
    pub fn mount_ref(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KOverlay {
        match KOverlay::try_mount(lowers, upper, work, mnt, KERNEL_FULL_OPTS) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("NOTE: kernel refused {KERNEL_FULL_OPTS} ({e}); retrying without index");
                KOverlay::try_mount(lowers, upper, work, mnt, KERNEL_NO_INDEX_OPTS)
                    .unwrap_or_else(|e| panic!("{e}"))
            }
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

impl Drop for KOverlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
    }
}

/// A kernel overlayfs over `l`'s lowers with its own upper `{tag}-upper` (a `cp -a` copy of
/// `l.upper` as it is now), fresh workdir `{tag}-work` and mountpoint `{tag}-mnt`.
pub fn kernel_twin(l: &Layers, tag: &str) -> KOverlay {
    let upper = l.root.join(format!("{tag}-upper"));
    let out = Command::new("cp")
        .arg("-a")
        .arg(&l.upper)
        .arg(&upper)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a upper: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = l.fresh_dir(&format!("{tag}-work"));
    let mnt = l.fresh_dir(&format!("{tag}-mnt"));
    KOverlay::mount_ref(&l.lowers, &upper, &work, &mnt)
}

/// Remounts a kernel twin on the same upper / workdir / options (keeps the index).
pub fn kernel_remount(lowers: &[PathBuf], k: KOverlay) -> KOverlay {
    let (upper, work, mnt, opts) = (
        k.upper.clone(),
        k.work.clone(),
        k.mnt.clone(),
        k.opts.clone(),
    );
    k.unmount();
    KOverlay::try_mount(lowers, &upper, &work, &mnt, &opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Guard for a tmpfs mounted at `dir` (created if missing); lazily unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unsafe { libc::umount2(cstr(&self.dir).as_ptr(), libc::MNT_DETACH) };
    }
}

/// Regular files under `root` (not following symlinks): (count, sum of st_blocks * 512).
pub fn regular_file_bytes(root: &Path) -> (u64, u64) {
    let mut count = 0;
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                count += 1;
                bytes += m.blocks() * 512;
            }
        }
    }
    (count, bytes)
}

/// Every path under `root` (relative, "." for the root) with its st_ino, never following
/// symlinks.
pub fn ino_map(root: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    out.insert(".".to_string(), fs::symlink_metadata(root).unwrap().ino());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.insert(r.clone(), m.ino());
            if m.is_dir() {
                stack.push((e.path(), r));
            }
        }
    }
    out
}

/// renameat2 returning the errno (0 on success).
pub fn rename_errno(from: &Path, to: &Path, flags: u32) -> i32 {
    match crate::common::renameat2(from, to, flags) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}
