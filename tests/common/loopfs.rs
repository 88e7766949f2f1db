//! [`LoopFs`]: a filesystem in an image file, loop-mounted for a test: a layer on a filesystem
//! of its own, so a test can see whether anything still holds that filesystem (umount answers
//! EBUSY), an upper where freed inode numbers come back at once (ext4 hands out the lowest free
//! one), or the disk a power cut leaves (a copy of the image taken while it is mounted).
//! Unmounted on drop; the loop device goes with it (autoclear).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::umount2;

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a journaled ext4 image of `mib` MiB at `img` (default mount options: data=ordered,
/// delayed allocation, 5 s journal commit).
pub fn make_ext4_image(img: &Path, mib: u64) {
    make_image(img, mib, "ext4");
}

/// Makes an image of `mib` MiB at `img` with `mkfs.<fstype>` defaults (for ext4 without lazy
/// init: a background init thread would keep the fs busy after mount).
pub fn make_image(img: &Path, mib: u64, fstype: &str) {
    let file = fs::File::create(img).unwrap();
    file.set_len(mib << 20).unwrap();
    drop(file);
    let mkfs = format!("mkfs.{fstype}");
    let mut cmd = Command::new(&mkfs);
    if fstype == "ext4" {
        cmd.args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]);
    } else {
        cmd.args(["-q", "-f"]);
    }
    run(&mkfs, cmd.arg(img));
}

pub struct LoopFs {
    pub image: PathBuf,
    /// Where it is mounted.
    pub dir: PathBuf,
    options: String,
    mounted: bool,
}

impl LoopFs {
    /// Makes a `size_mb` ext4 image at `image` and mounts it on `dir` (created if missing).
    pub fn new(image: &Path, dir: &Path, size_mb: u64) -> LoopFs {
        make_ext4_image(image, size_mb);
        LoopFs::mount(image, dir, "")
    }

    /// Mounts the image `image` on `dir` (created if missing), with `options` if not empty.
    pub fn mount(image: &Path, dir: &Path, options: &str) -> LoopFs {
        fs::create_dir_all(dir).unwrap();
        let mut fs = LoopFs {
            image: image.to_path_buf(),
            dir: dir.to_path_buf(),
            options: options.to_string(),
            mounted: false,
        };
        fs.remount();
        fs
    }

    /// Mounts the image again (after [`LoopFs::unmount`]).
    pub fn remount(&mut self) {
        assert!(!self.mounted, "{} already mounted", self.dir.display());
        let options = match self.options.as_str() {
            "" => "loop".to_string(),
            more => format!("loop,{more}"),
        };
        run(
            "mount -o loop",
            Command::new("mount")
                .args(["-o", &options])
                .arg(&self.image)
                .arg(&self.dir),
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

/// Fills the filesystem of `dir` with one file, `dir/filler`, then shrinks it so that about
/// `room` bytes stay free: less than a copy needs, more than its small steps do. Returns the
/// filler's path (remove it to make room again).
pub fn fill_leaving(dir: &Path, room: u64) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    file.sync_all().unwrap();
    file.set_len(written.saturating_sub(room)).unwrap();
    filler
}
