//! A small ext4 filesystem in an image file, loop-mounted: a layer on a filesystem of its own,
//! so a test can see whether anything still holds that filesystem (umount answers EBUSY), and
//! an upper where freed inode numbers come back at once (ext4 hands out the lowest free one).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::umount2;

pub struct LoopFs {
    pub image: PathBuf,
    pub dir: PathBuf,
    mounted: bool,
}

impl LoopFs {
    /// Makes a `size_mb` ext4 image at `image` and mounts it on `dir` (created if missing).
    pub fn new(image: &Path, dir: &Path, size_mb: u64) -> LoopFs {
        let file = fs::File::create(image).unwrap();
        file.set_len(size_mb << 20).unwrap();
        drop(file);
        // No lazy init: a background init thread would keep the fs busy after mount.
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(image)
            .output()
            .expect("run mkfs.ext4");
        assert!(
            out.status.success(),
            "mkfs.ext4 {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::create_dir_all(dir).unwrap();
        let mut fs = LoopFs {
            image: image.to_path_buf(),
            dir: dir.to_path_buf(),
            mounted: false,
        };
        fs.mount();
        fs
    }

    /// Mounts the image again (after [`LoopFs::unmount`]).
    pub fn mount(&mut self) {
        assert!(!self.mounted, "{} already mounted", self.dir.display());
        let out = Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&self.image)
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -o loop {} {}: {}",
            self.image.display(),
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    /// `umount DIR` (umount(8)); on failure the fs stays mounted and the error is returned.
    pub fn unmount(&mut self) -> Result<(), String> {
        let out = Command::new("umount")
            .arg(&self.dir)
            .output()
            .expect("run umount");
        if out.status.success() {
            self.mounted = false;
            Ok(())
        } else {
            Err(format!(
                "umount {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            // The loop device goes away (autoclear) once whatever held the fs lets go.
            let _ = umount2(&self.dir, libc::MNT_DETACH);
        }
    }
}
