//! Copy-up error paths: an error at any step of a copy-up (an injected EIO,
//! through the `test-hooks` feature's hook, or a real ENOSPC on a full
//! upper filesystem) fails the operation with that errno, leaves no temp
//! object in `<workdir>/work`, leaves the file as it was in the merged view,
//! and a retry once the fault is gone succeeds.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::*;

/// The copy-up steps that can fail, in order (names of the hook points).
const STEPS: [&str; 9] = [
    "copyup-create",
    "copyup-data",
    "copyup-sync",
    "copyup-xattrs",
    "copyup-owner",
    "copyup-mode",
    "copyup-times",
    "copyup-rename",
    "copyup-parent-times",
];

const DATA: &[u8] = b"lower data, which must stay visible";

/// The daemon reads its faults from here (one path for the whole test
/// binary: the daemons inherit it from the environment).
fn fault_file() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("cowfs-faults-{}", std::process::id()));
        fs::write(&path, "").unwrap();
        // SAFETY: set once, before any daemon is spawned, by the one test
        // of this binary that uses it.
        unsafe { std::env::set_var("COWFS_FAULT_FILE", &path) };
        path
    })
    .clone()
}

fn work_temps(work: &Path) -> Vec<String> {
    list_names(&work.join("work"))
}

fn chmod_errno(p: &Path, mode: u32) -> i32 {
    match fs::set_permissions(p, fs::Permissions::from_mode(mode)) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// After a failed copy-up: the errno, no temp, the file as it was.
fn check_failed(l: &Layers, what: &str, got: i32, want: i32) {
    assert_eq!(got, want, "{what}: chmod through the mount");
    let temps = work_temps(&l.work);
    assert!(temps.is_empty(), "{what}: temps left in work: {temps:?}");
    let f = l.mnt.join("d/f");
    assert_eq!(fs::read(&f).unwrap(), DATA, "{what}: merged content");
    let mode = fs::symlink_metadata(&f).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o644, "{what}: merged mode");
}

/// After the retry: done, and still no temp.
fn check_retried(l: &Layers, what: &str) {
    let f = l.mnt.join("d/f");
    assert_eq!(chmod_errno(&f, 0o600), 0, "{what}: retry");
    assert_eq!(fs::read(&f).unwrap(), DATA, "{what}: content after retry");
    assert_eq!(
        fs::symlink_metadata(&f).unwrap().mode() & 0o7777,
        0o600,
        "{what}: mode after retry"
    );
    assert_eq!(
        fs::read(l.upper.join("d/f")).unwrap(),
        DATA,
        "{what}: upper"
    );
    let temps = work_temps(&l.work);
    assert!(
        temps.is_empty(),
        "{what}: temps left after retry: {temps:?}"
    );
}

fn lower_with_file(l: &Layers) {
    write_file_mode(&l.lower(0).join("d/f"), DATA, 0o644);
    set_xattr(&l.lower(0).join("d/f"), "user.kept", b"1");
}

fn injected_errors() {
    let faults = fault_file();
    for step in STEPS {
        let l = Layers::new(1);
        lower_with_file(&l);
        let m = l.mount();
        fs::write(&faults, format!("{step} {}\n", libc::EIO)).unwrap();
        let got = chmod_errno(&l.mnt.join("d/f"), 0o600);
        check_failed(&l, step, got, libc::EIO);
        fs::write(&faults, "").unwrap();
        check_retried(&l, step);
        drop(m);
    }
}

/// A real ENOSPC: the upper on a small ext4 that is full.
fn full_upper() {
    let mut l = Layers::new(1);
    // Bigger than what is left: the data copy fails.
    let big = pattern(2 << 20, 7);
    write_file_mode(&l.lower(0).join("d/f"), &big, 0o644);
    let img = l.root.join("small.img");
    make_ext4_image(&img, 16);
    let mut upperfs = LoopFs::mount(&img, &l.root.join("upperfs"), "");
    l.upper_on(&upperfs);
    let m = l.mount();
    // The parent dir is copied up before the space runs out.
    fs::create_dir(l.mnt.join("d/sub")).unwrap();
    // Leave a little room, less than the copy needs.
    let filler = fill_leaving(&upperfs.dir, 256 << 10);
    let f = l.mnt.join("d/f");
    let got = chmod_errno(&f, 0o600);
    assert_eq!(got, libc::ENOSPC, "chmod on a full upper");
    let temps = work_temps(&l.work);
    assert!(temps.is_empty(), "ENOSPC: temps left in work: {temps:?}");
    assert!(fs::read(&f).unwrap() == big, "ENOSPC: merged content");
    assert_eq!(fs::symlink_metadata(&f).unwrap().mode() & 0o7777, 0o644);
    fs::remove_file(&filler).unwrap();
    // The freed blocks can be reused once ext4 has committed the unlink.
    let dir = fs::File::open(&upperfs.dir).unwrap();
    // SAFETY: syncfs takes an fd that stays open for the call.
    assert_eq!(
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) },
        0
    );
    drop(dir);
    assert_eq!(chmod_errno(&f, 0o600), 0, "retry with room");
    assert!(fs::read(&f).unwrap() == big, "content after retry");
    assert!(
        fs::read(l.upper.join("d/f")).unwrap() == big,
        "upper after retry"
    );
    assert!(work_temps(&l.work).is_empty());
    m.unmount();
    upperfs.unmount().unwrap();
}

/// The copy for a chmod is answered behind a metacopy mark, which comes
/// off once its data is on disk. If that fails, the file stays a valid
/// metacopy file: the change is kept, the data read from the lower file,
/// and the next write copies the data again and takes the mark off.
fn settling_fails() {
    let faults = fault_file();
    let l = Layers::new(1);
    lower_with_file(&l);
    let m = l.mount();
    fs::write(&faults, format!("copyup-settle {}\n", libc::EIO)).unwrap();
    let f = l.mnt.join("d/f");
    assert_eq!(chmod_errno(&f, 0o600), 0, "chmod: answered before settling");
    let upper = l.upper.join("d/f");
    assert!(
        lgetxattr(&upper, "trusted.overlay.metacopy").is_ok(),
        "the copy keeps its mark when settling fails"
    );
    assert_eq!(
        fs::read(&f).unwrap(),
        DATA,
        "merged content of the marked copy"
    );
    assert_eq!(fs::symlink_metadata(&f).unwrap().mode() & 0o7777, 0o600);
    drop(m);
    // Also the next mount reads it as a metacopy file (so does a kernel
    // mount with metacopy=on).
    let m = l.mount();
    assert_eq!(fs::read(&f).unwrap(), DATA, "after remount");
    let kernel = l.kernel_mount_with("kernel", KERNEL_NO_INDEX_OPTS);
    assert_eq!(
        fs::read(kernel.mnt.join("d/f")).unwrap(),
        DATA,
        "kernel, metacopy=on"
    );
    kernel.unmount();
    fs::write(&faults, "").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"+")
        .unwrap();
    let mut want = DATA.to_vec();
    want.push(b'+');
    assert_eq!(fs::read(&f).unwrap(), want, "merged content after a write");
    assert_eq!(fs::read(&upper).unwrap(), want, "upper after a write");
    assert!(
        lgetxattr(&upper, "trusted.overlay.metacopy").is_err(),
        "the write took the mark off"
    );
    assert!(work_temps(&l.work).is_empty(), "temps left");
    drop(m);
}

/// One test: the daemons share the fault file through the environment.
#[test]
fn copy_up_failures_clean_up_and_can_be_retried() {
    injected_errors();
    settling_fails();
    full_upper();
}
