//! A panic while serving one request answers that request with EIO, is
//! logged, and leaves the mount up for everything else.
//! (The daemon panics on purpose on a lookup of the name given in
//! `COWFS_TEST_PANIC_ON_LOOKUP`.)

use crate::common::{CowfsMount, MOUNT_TIMEOUT, cowfs_bin};
use std::fs;
use std::process::Command;

#[test]
fn a_panicking_request_answers_eio_and_the_mount_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    // canonical, so the mount point matches /proc/self/mountinfo
    let root = tmp.path().canonicalize().unwrap();
    let (lower, upper, mnt) = (root.join("lower"), root.join("upper"), root.join("mnt"));
    for dir in [&lower, &upper, &mnt] {
        fs::create_dir(dir).unwrap();
    }
    fs::write(lower.join("fine"), "fine").unwrap();
    fs::write(lower.join("boom"), "never read").unwrap();
    let log = root.join("cowfs.log");
    let mut daemon = CowfsMount::spawn(
        Command::new(cowfs_bin())
            .args(["mount", "--foreground", "--log-file"])
            .arg(&log)
            .arg(&lower)
            .arg(&upper)
            .arg(&mnt)
            .env("COWFS_TEST_PANIC_ON_LOOKUP", "boom"),
        &mnt,
        &root,
        MOUNT_TIMEOUT,
    );

    for _ in 0..3 {
        let err = fs::metadata(mnt.join("boom")).expect_err("the panicking lookup must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
    assert_eq!(
        fs::read_to_string(mnt.join("fine")).unwrap(),
        "fine",
        "other requests still work"
    );
    fs::write(mnt.join("new"), "new").unwrap();
    assert_eq!(fs::read_to_string(mnt.join("new")).unwrap(), "new");
    assert!(daemon.is_running(), "the daemon died of the panic");
    let logged = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("injected panic") && logged.contains("answered EIO"),
        "the panic is not in the log:\n{logged}"
    );

    // `cowfs umount` must succeed, the daemon exit 0 within 10s and the mount be gone
    daemon.cli_umount(&root, mnt.to_str().expect("utf-8 path"));
}
