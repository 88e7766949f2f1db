//! Helpers for the POSIX tests (posix.rs, posix_copyup.rs, posix_trust.rs): "kernel twin" mounts
//! sharing a cowfs fixture's lowers, and measuring how much file data an upper dir holds.
#![allow(dead_code)]

use crate::common::{KernelOverlay, Layers};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel overlayfs over `l`'s lowers with its own upper `{tag}-upper` (a `cp -a` copy of
/// `l.upper` as it is now), fresh workdir `{tag}-work` and mountpoint `{tag}-mnt`.
pub fn kernel_twin(l: &Layers, tag: &str) -> KernelOverlay {
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
    KernelOverlay::mount_ref(&l.lowers, &upper, &work, &mnt)
}

/// Remounts a kernel twin on the same upper / workdir / options (keeps the index).
pub fn kernel_remount(lowers: &[PathBuf], k: KernelOverlay) -> KernelOverlay {
    let (upper, work, mnt, opts) = (
        k.upper.clone(),
        k.work.clone(),
        k.mnt.clone(),
        k.opts.clone(),
    );
    k.unmount();
    KernelOverlay::try_mount(lowers, &upper, &work, &mnt, &opts).unwrap_or_else(|e| panic!("{e}"))
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
