//! Guards for mounts other than cowfs: [`KernelOverlay`] (kernel overlayfs, the reference
//! implementation) and [`Tmpfs`].

use std::path::{Path, PathBuf};
use std::process::Command;

use super::layers::join_lowers;
use super::sys::cstr;

// ---------------------------------------------------------------------------
// KernelOverlay guard
// ---------------------------------------------------------------------------

/// Guard for a kernel overlayfs mount (the reference implementation), with extra mount options
/// if wanted; lazily unmounted on drop.
pub struct KernelOverlay {
    pub mnt: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The options given besides the layers.
    pub opts: String,
    mounted: bool,
}

/// Kernel overlayfs options that read everything cowfs writes (redirects, metacopy, the index
/// with a matching workdir).
pub const KERNEL_FULL_OPTS: &str = "redirect_dir=on,metacopy=on,index=on,nfs_export=off";
/// Fallback if the kernel refuses `KERNEL_FULL_OPTS`.
pub const KERNEL_NO_INDEX_OPTS: &str = "redirect_dir=on,metacopy=on";

impl KernelOverlay {
    /// Mounts with the kernel's default options.
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KernelOverlay {
        KernelOverlay::try_mount(lowers, upper, work, mnt, "").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts with `extra` options besides the layers (comma-separated; may be empty).
    pub fn mount_with(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        extra: &str,
    ) -> KernelOverlay {
        KernelOverlay::try_mount(lowers, upper, work, mnt, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts with `extra` options besides the layers; the mount's error if it fails.
    pub fn try_mount(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        extra: &str,
    ) -> Result<KernelOverlay, String> {
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
        Ok(KernelOverlay {
            mnt: mnt.to_path_buf(),
            upper: upper.to_path_buf(),
            work: work.to_path_buf(),
            opts: extra.to_string(),
            mounted: true,
        })
    }

    /// Mounts with `KERNEL_FULL_OPTS`, or without index if the kernel refuses (noted on stderr).
    pub fn mount_ref(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KernelOverlay {
        match KernelOverlay::try_mount(lowers, upper, work, mnt, KERNEL_FULL_OPTS) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("NOTE: kernel refused {KERNEL_FULL_OPTS} ({e}); retrying without index");
                KernelOverlay::try_mount(lowers, upper, work, mnt, KERNEL_NO_INDEX_OPTS)
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        }
    }

    /// Unmounts, and fails the test if the mount stays busy. A child another test forks holds
    /// the files this one has open in the mount for the moment until it execs (close-on-exec),
    /// so a busy mount is tried again for up to a second before that counts.
    pub fn unmount(mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let out = Command::new("umount").arg(&self.mnt).output().unwrap();
            if out.status.success() {
                break;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("busy") && std::time::Instant::now() < deadline,
                "umount {}: {stderr}",
                self.mnt.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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

/// Guard for a tmpfs mounted at a dir (created); lazily unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// A 64 MiB tmpfs.
    pub fn mount(dir: &Path) -> Tmpfs {
        Tmpfs::mount_sized(dir, "64m")
    }

    pub fn mount_sized(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
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
