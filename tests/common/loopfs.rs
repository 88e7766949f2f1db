//! [`LoopFs`]: a filesystem image loop-mounted for a test; unmounted and its
//! loop device detached on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes a journaled ext4 image of `mib` MiB at `img` (default mount options:
/// data=ordered, delayed allocation, 5 s journal commit).
pub fn make_ext4_image(img: &Path, mib: u64) {
    make_image(img, mib, "ext4");
}

/// Makes an image of `mib` MiB at `img` with `mkfs.<fstype>` defaults.
pub fn make_image(img: &Path, mib: u64, fstype: &str) {
    let file = fs::File::create(img).unwrap();
    file.set_len(mib << 20).unwrap();
    drop(file);
    let mkfs = format!("mkfs.{fstype}");
    // Quiet, and over whatever the file held.
    let force = if fstype == "ext4" { "-F" } else { "-f" };
    run(&mkfs, Command::new(&mkfs).args(["-q", force]).arg(img));
}

pub struct LoopFs {
    pub mnt: PathBuf,
    dev: String,
    mounted: bool,
}

impl LoopFs {
    /// Attaches `img` to a free loop device and mounts it (rw, with
    /// `options` if not empty) on `mnt`, creating `mnt`.
    pub fn mount(img: &Path, mnt: &Path, options: &str) -> LoopFs {
        fs::create_dir_all(mnt).unwrap();
        let dev = run(
            "losetup",
            Command::new("losetup").args(["--find", "--show"]).arg(img),
        );
        let mut guard = LoopFs {
            mnt: mnt.to_path_buf(),
            dev,
            mounted: false,
        };
        let mut cmd = Command::new("mount");
        if !options.is_empty() {
            cmd.args(["-o", options]);
        }
        run("mount loop", cmd.arg(&guard.dev).arg(mnt));
        guard.mounted = true;
        guard
    }

    pub fn unmount(mut self) {
        run("umount loop", Command::new("umount").arg(&self.mnt));
        self.mounted = false;
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        // With a lazy unmount the device detaches once the fs lets go.
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
