//! How requests reach the daemon (`-o io_uring=auto|on|off`): FUSE over io_uring where the kernel
//! offers it (the fuse module's `enable_uring`), reads of /dev/fuse otherwise. scripts/test.sh runs
//! the whole suite once per transport; these tests check the choice itself, on whichever the
//! kernel offers during this run.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::{Layers, lgetxattr, mounts_under, stats_of, write_file};

fn io_uring_offered() -> bool {
    fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|v| v.trim() == "Y")
}

fn transport_of(mnt: &Path) -> String {
    stats_of(mnt).transport.kind
}

/// Ordinary work through the mount: a lower file read, copied up and renamed, new files
/// listed, removed.
fn exercise(mnt: &Path) {
    let names_before = fs::read_dir(mnt).unwrap().count();
    assert_eq!(
        fs::read(mnt.join("lower.txt")).unwrap(),
        b"from the lower layer"
    );
    fs::write(mnt.join("lower.txt"), b"changed").unwrap();
    for i in 0..50 {
        fs::write(mnt.join(format!("new{i}")), vec![b'x'; i * 1000]).unwrap();
    }
    let big = vec![7u8; 3 << 20];
    fs::write(mnt.join("big"), &big).unwrap();
    assert_eq!(fs::read(mnt.join("big")).unwrap(), big);
    fs::rename(mnt.join("lower.txt"), mnt.join("renamed.txt")).unwrap();
    let names = fs::read_dir(mnt).unwrap().count();
    assert_eq!(names, names_before + 51);
    for i in 0..50 {
        assert_eq!(
            fs::metadata(mnt.join(format!("new{i}"))).unwrap().size(),
            i as u64 * 1000
        );
        fs::remove_file(mnt.join(format!("new{i}"))).unwrap();
    }
    assert_eq!(fs::read(mnt.join("renamed.txt")).unwrap(), b"changed");
}

#[test]
fn the_transport_is_the_one_asked_for_where_the_kernel_offers_it() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("lower.txt"), b"from the lower layer");
    let off = l.mount_with(&["-o", "io_uring=off"]);
    assert_eq!(transport_of(&off.mnt), "/dev/fuse read");
    drop(off);
    let auto = l.mount_with(&["-o", "io_uring=auto"]);
    let expected = if io_uring_offered() {
        "io_uring"
    } else {
        "/dev/fuse read"
    };
    assert_eq!(transport_of(&auto.mnt), expected);
    exercise(&auto.mnt);
    drop(auto);
    if io_uring_offered() {
        let on = l.mount_with(&["-o", "io_uring=on"]);
        assert_eq!(transport_of(&on.mnt), "io_uring");
        assert_eq!(fs::read(on.mnt.join("renamed.txt")).unwrap(), b"changed");
    }
}

#[test]
fn io_uring_on_fails_clearly_where_the_kernel_does_not_offer_it() {
    if io_uring_offered() {
        // The other run of the suite (enable_uring=N) checks the refusal; here `on` must work.
        let l = Layers::new(1);
        write_file(&l.lower(0).join("lower.txt"), b"from the lower layer");
        let on = l.mount_with(&["-o", "io_uring=on"]);
        exercise(&on.mnt);
        return;
    }
    let l = Layers::new(1);
    let out = l.try_mount_with(&["-o", "io_uring=on"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let _ = Command::new("umount").arg(&l.mnt).status();
        panic!("io_uring=on mounted without the kernel's offer");
    }
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("io_uring=on") && stderr.contains("enable_uring"),
        "stderr: {stderr}"
    );
    assert!(mounts_under(&l.root).is_empty(), "a mount was left behind");
}

#[test]
fn a_bad_io_uring_value_is_refused_before_anything_is_mounted() {
    let l = Layers::new(1);
    let out = l.try_mount_with(&["-o", "io_uring=sometimes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("'io_uring' must be auto, on or off"),
        "stderr: {stderr}"
    );
    assert!(mounts_under(&l.root).is_empty());
}

/// Uncached requests one after another: getxattr of a lower file, which the kernel asks the
/// daemon every time.
fn burst_of_requests(mnt: &Path, n: usize) {
    let path = mnt.join("steady.txt");
    for _ in 0..n {
        let absent = lgetxattr(&path, "user.none").unwrap_err();
        assert_eq!(absent.raw_os_error(), Some(libc::ENODATA));
    }
}

#[test]
fn request_threads_poll_for_the_next_request_within_the_window_only() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("lower.txt"), b"from the lower layer");
    write_file(&l.lower(0).join("steady.txt"), b"listed, never changed");

    let polling = l.mount_with(&["-o", "poll_us=1000"]);
    assert_eq!(stats_of(&polling.mnt).transport.poll_us, 1000);
    burst_of_requests(&polling.mnt, 3000);
    let found = stats_of(&polling.mnt).found_polling;
    // Each getxattr comes within microseconds of the last answer; even on a busy machine
    // (where a thread stops polling once another task wants its CPU) some are found awake.
    assert!(found > 0, "no request of 3000 found while polling");
    exercise(&polling.mnt);
    drop(polling);

    let sleeping = l.mount_with(&["-o", "poll_us=0"]);
    burst_of_requests(&sleeping.mnt, 500);
    let figures = stats_of(&sleeping.mnt);
    assert_eq!(figures.transport.poll_us, 0);
    assert_eq!(figures.found_polling, 0, "poll_us=0 polled");
    assert!(figures.requests["getxattr"].count >= 500);
}

#[test]
fn a_bad_poll_window_is_refused_before_anything_is_mounted() {
    let l = Layers::new(1);
    for bad in ["poll_us=2000", "poll_us=soon", "poll_us=-1"] {
        let out = l.try_mount_with(&["-o", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} mounted");
        assert!(stderr.contains("'poll_us'"), "{bad}: stderr: {stderr}");
        assert!(mounts_under(&l.root).is_empty());
    }
}
