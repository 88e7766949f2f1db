//! fsync is passed on: when fsync of a file copied up from a lower layer
//! returns, the daemon has fsync'ed the upper file and the upper dir the
//! copy was renamed into. With `volatile`, it syncs nothing (not even the
//! writeback a copy-up waits for before it places the copy).
//! Watched with strace on the daemon (file descriptors decoded to paths).

use crate::common::{CowfsMount, cowfs_bin};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// strace slows the daemon down: it gets this long to mount, and to exit after the unmount.
const TRACED_TIMEOUT: Duration = Duration::from_secs(20);

/// Mounts lower/upper under strace, appends to a lower file and fsyncs it
/// through the mount, unmounts, and returns the daemon's fsync calls.
fn fsyncs_for_one_fsync(extra: &[&str]) -> (Vec<String>, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    // canonical, so the mount point matches /proc/self/mountinfo
    let root = tmp.path().canonicalize().unwrap();
    let (lower, upper, mnt) = (root.join("lower"), root.join("upper"), root.join("mnt"));
    for dir in [&lower, &upper, &mnt] {
        fs::create_dir(dir).unwrap();
    }
    fs::create_dir(lower.join("d")).unwrap();
    fs::write(lower.join("d/f"), "lower").unwrap();
    let trace = root.join("strace.log");
    let traced = CowfsMount::spawn(
        Command::new("strace")
            .args([
                "-f",
                "-y",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,syncfs,sync_file_range",
                "-o",
            ])
            .arg(&trace)
            .arg(cowfs_bin())
            .args(["mount", "--foreground"])
            .arg(&lower)
            .arg(&upper)
            .arg(&mnt)
            .args(extra),
        &mnt,
        &root,
        TRACED_TIMEOUT,
    )
    .with_exit_timeout(TRACED_TIMEOUT);
    {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("d/f"))
            .unwrap();
        f.write_all(b"+new").unwrap();
        f.sync_all().expect("fsync through the mount");
    }
    assert_eq!(fs::read_to_string(upper.join("d/f")).unwrap(), "lower+new");
    // `cowfs umount` must succeed, the daemon (and strace) exit 0 and the mount be gone
    traced.cli_umount(&root, mnt.to_str().expect("utf-8 path"));
    let calls = fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sync"))
        .map(str::to_string)
        .collect();
    // Keep the temp dir alive until the trace is read.
    let upper_path = upper.clone();
    drop(tmp);
    (calls, upper_path)
}

#[test]
fn fsync_reaches_the_upper_file_and_its_dir() {
    let (calls, upper) = fsyncs_for_one_fsync(&[]);
    // The daemon's fds are beneath a private clone of the upper's mount
    // (src/privmount.rs), rooted at the dir above the upper: strace shows
    // their paths from there.
    let name = upper.file_name().unwrap().to_string_lossy().into_owned();
    let file = format!("/{name}/d/f>");
    let dir = format!("/{name}/d>");
    assert!(
        calls.iter().any(|c| c.contains(&file)),
        "no fsync of the upper file {file}: {calls:#?}"
    );
    assert!(
        calls.iter().any(|c| c.contains(&dir)),
        "no fsync of the upper dir {dir} after the copy-up: {calls:#?}"
    );
}

#[test]
fn volatile_skips_every_sync() {
    let (calls, _) = fsyncs_for_one_fsync(&["-o", "volatile"]);
    assert!(calls.is_empty(), "volatile mount synced: {calls:#?}");
}
