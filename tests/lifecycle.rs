//! The end of a mount: once `umount MNT` (or `fusermount3 -u MNT`) returns, the daemon holds
//! nothing on the layers, so their filesystems unmount right after, as they do after
//! fuse-overlayfs. Scripts (and container engines) run `umount MNT && umount LOWER_FS`.
//!
//! Lower and upper each live on a loop-mounted ext4 image of their own; each round mounts
//! cowfs as mount(8) would (daemon, started with its cwd on the lower fs), touches a file,
//! copies up a lower file, does I/O through passthrough opens, then unmounts the overlay and at
//! once both layer filesystems. ~20 rounds per test; `COWFS_LONG=1`: 200. The daemon opens the
//! layers through private clones of their mounts (as kernel overlayfs does), so what it holds
//! never keeps those mounts busy.

use crate::common::*;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn rounds() -> usize {
    if std::env::var_os("COWFS_LONG").is_some_and(|v| v == "1") {
        200
    } else {
        20
    }
}

#[derive(Clone, Copy, Debug)]
enum Unmount {
    /// umount(8)
    Umount,
    /// fusermount3 -u
    Fusermount,
}

struct Fixture {
    root: PathBuf,
    lower: LoopFs,
    upper: LoopFs,
    mnt: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("cowfs-lifecycle-")
            .tempdir()
            .unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let lower = LoopFs::new(&root.join("lower.img"), &root.join("lowerfs"), 16);
        let upper = LoopFs::new(&root.join("upper.img"), &root.join("upperfs"), 16);
        for i in 0..8 {
            write_file(
                &lower.dir.join(format!("layer/dir/file{i}")),
                pattern(64 << 10, i as u8),
            );
        }
        let mnt = root.join("mnt");
        fs::create_dir(&mnt).unwrap();
        Fixture {
            root,
            lower,
            upper,
            mnt,
            _tmp: tmp,
        }
    }

    /// Fresh upper and work dirs: each round starts from the lower alone.
    fn reset_upper(&self) -> (PathBuf, PathBuf) {
        let (upper, work) = (self.upper.dir.join("upper"), self.upper.dir.join("work"));
        for d in [&upper, &work] {
            if d.exists() {
                fs::remove_dir_all(d).unwrap();
            }
            fs::create_dir(d).unwrap();
        }
        (upper, work)
    }

    /// `cowfs -o lowerdir=..,upperdir=..,workdir=.. MNT`, run (as mount(8) runs its helper)
    /// from a cwd on the lower filesystem.
    fn mount(&self) -> CowfsMount {
        let (upper, work) = self.reset_upper();
        let pid_file = self.root.join("cowfs.pid");
        let _ = fs::remove_file(&pid_file);
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.dir.join("layer").display(),
            upper.display(),
            work.display()
        );
        let args: Vec<OsString> = vec![
            "-o".into(),
            opts.into(),
            self.mnt.clone().into(),
            "--pid-file".into(),
            pid_file.clone().into(),
        ];
        CowfsMount::daemon(&args, &self.lower.dir, &self.mnt, &pid_file, &self.root)
    }
}

/// What a short-lived container does to its root: a new file, a copy-up, passthrough I/O.
fn use_mount(mnt: &Path, round: usize) {
    fs::write(mnt.join(format!("touched{round}")), b"").unwrap();
    append(&mnt.join("dir/file0"), "copied up\n");
    // Upper files pass through: these opens register backing files with the kernel.
    let new = mnt.join("dir/new");
    let mut f = fs::File::create(&new).unwrap();
    f.write_all(&pattern(256 << 10, 7)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut held = Vec::new();
    for name in ["dir/new", "dir/file0"] {
        let mut f = fs::File::open(mnt.join(name)).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        held.push(f);
    }
    // A lower file read in place, and one listing.
    assert_eq!(
        fs::read(mnt.join("dir/file3")).unwrap(),
        pattern(64 << 10, 3)
    );
    assert_eq!(fs::read_dir(mnt.join("dir")).unwrap().count(), 9);
    drop(held);
}

fn unmount_overlay(mnt: &Path, how: Unmount) {
    let mut cmd = match how {
        Unmount::Umount => Command::new("umount"),
        Unmount::Fusermount => {
            let mut c = Command::new("fusermount3");
            c.arg("-u");
            c
        }
    };
    let out = cmd.arg(mnt).output().expect("run the unmount command");
    assert!(
        out.status.success(),
        "{how:?} {}: {}",
        mnt.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `umount MNT && umount LOWER_FS && umount UPPER_FS`, `rounds()` times. Every round where a
/// layer fs is still busy is counted (then unmounted once the daemon is gone, so the next round
/// can go on) and the test fails with the count.
fn layers_unmount_right_after(how: Unmount) {
    let mut fx = Fixture::new();
    let rounds = rounds();
    let mut busy = Vec::new();
    for round in 0..rounds {
        let mount = fx.mount();
        use_mount(&fx.mnt, round);
        unmount_overlay(&fx.mnt, how);
        let lower = fx.lower.unmount();
        let upper = fx.upper.unmount();
        // Waits for the daemon to exit, so no fs is ever mounted twice.
        drop(mount);
        for (fs, result) in [(&mut fx.lower, lower), (&mut fx.upper, upper)] {
            if let Err(e) = result {
                busy.push(format!("round {round}: {e}"));
                if let Err(e) = fs.unmount() {
                    panic!("round {round}: still busy after the daemon exited: {e}");
                }
            }
            fs.remount();
        }
    }
    assert!(
        busy.is_empty(),
        "{how:?}: {} layer fs unmounts of {} (in {rounds} rounds) failed right after the overlay's:\n{}",
        busy.len(),
        2 * rounds,
        busy.join("\n")
    );
}

/// One test at a time: a process forked by a test running beside this one inherits the files
/// this one has open in its mount until it execs, so `umount MNT` could find the mount busy.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn umount_releases_the_layers() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    layers_unmount_right_after(Unmount::Umount);
}

#[test]
fn fusermount_u_releases_the_layers() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    layers_unmount_right_after(Unmount::Fusermount);
}

/// As under kernel overlayfs, the layers' filesystems can even be unmounted while the overlay
/// is mounted: the daemon holds private clones of their mounts, so the overlay works on, and the
/// filesystems go away once it is unmounted.
#[test]
fn layer_filesystems_unmounted_under_a_live_mount() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut fx = Fixture::new();
    let mount = fx.mount();
    fx.lower.unmount().unwrap();
    fx.upper.unmount().unwrap();
    use_mount(&fx.mnt, 0);
    fs::write(fx.mnt.join("written after"), "kept\n").unwrap();
    mount.unmount();
    fx.lower.remount();
    fx.upper.remount();
    assert_eq!(read(&fx.upper.dir.join("upper/written after")), "kept\n");
    assert_eq!(
        fs::read(fx.upper.dir.join("upper/dir/file0"))
            .unwrap()
            .len(),
        (64 << 10) + "copied up\n".len()
    );
    assert_eq!(
        fs::read(fx.lower.dir.join("layer/dir/file0")).unwrap(),
        pattern(64 << 10, 0),
        "the lower file changed"
    );
}
