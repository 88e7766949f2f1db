//! fsync is passed on: when fsync of a file copied up from a lower layer
//! returns, the daemon has fsync'ed the upper file and the upper dir the
//! copy was renamed into. With `volatile`, it syncs nothing (not even the
//! writeback a copy-up waits for before it places the copy).
//! Watched with strace on the daemon (file descriptors decoded to paths).

use crate::daemon_support::{Daemon, wait_mounted};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Mounts lower/upper under strace, appends to a lower file and fsyncs it
/// through the mount, unmounts, and returns the daemon's fsync calls.
fn fsyncs_for_one_fsync(extra: &[&str]) -> (Vec<String>, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (lower, upper, mnt) = (root.join("lower"), root.join("upper"), root.join("mnt"));
    for dir in [&lower, &upper, &mnt] {
        fs::create_dir(dir).unwrap();
    }
    fs::create_dir(lower.join("d")).unwrap();
    fs::write(lower.join("d/f"), "lower").unwrap();
    let trace = root.join("strace.log");
    let child = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync_file_range",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_cowfs"))
        .args(["mount", "--foreground"])
        .arg(&lower)
        .arg(&upper)
        .arg(&mnt)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is needed for this test");
    let mut traced = Daemon {
        child,
        mnt: mnt.clone(),
    };
    assert!(
        wait_mounted(&mnt, Duration::from_secs(20)),
        "cowfs did not mount under strace"
    );
    {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("d/f"))
            .unwrap();
        f.write_all(b"+new").unwrap();
        f.sync_all().expect("fsync through the mount");
    }
    assert_eq!(fs::read_to_string(upper.join("d/f")).unwrap(), "lower+new");
    let status = Command::new(env!("CARGO_BIN_EXE_cowfs"))
        .arg("umount")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "cowfs umount");
    let deadline = Instant::now() + Duration::from_secs(20);
    while traced.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
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
