//! A panic while serving one request answers that request with EIO, is
//! logged, and leaves the mount up for everything else.
//! (The daemon panics on purpose on a lookup of the name given in
//! `COWFS_TEST_PANIC_ON_LOOKUP`.)

use crate::daemon_support::{Daemon, wait_mounted};
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_panicking_request_answers_eio_and_the_mount_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper, mnt) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("mnt"),
    );
    for dir in [&lower, &upper, &mnt] {
        fs::create_dir(dir).unwrap();
    }
    fs::write(lower.join("fine"), "fine").unwrap();
    fs::write(lower.join("boom"), "never read").unwrap();
    let log = tmp.path().join("cowfs.log");
    let child = Command::new(env!("CARGO_BIN_EXE_cowfs"))
        .args(["mount", "--foreground", "--log-file"])
        .arg(&log)
        .arg(&lower)
        .arg(&upper)
        .arg(&mnt)
        .env("COWFS_TEST_PANIC_ON_LOOKUP", "boom")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cowfs");
    let mut daemon = Daemon {
        child,
        mnt: mnt.clone(),
    };
    assert!(
        wait_mounted(&mnt, Duration::from_secs(10)),
        "cowfs did not mount"
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
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon died of the panic"
    );
    let logged = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("injected panic") && logged.contains("answered EIO"),
        "the panic is not in the log:\n{logged}"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_cowfs"))
        .arg("umount")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "cowfs umount");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = daemon.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after umount"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "daemon exit status {exit}");
}
