//! `cowfs stats`: the figures a live mount serves on its socket match the operations a test
//! made; the socket is the owner's alone, lives exactly as long as the mount (also after a
//! kill -9 and the next mount), and shows nowhere in the mount; `--watch` repeats until stopped.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowfs::stats::Snapshot;

use crate::common::{
    Layers, cowfs_bin, cowfs_bounded as cowfs, expected_transport, kernel_opens, stats_of,
    write_file,
};

fn count(snapshot: &Snapshot, op: &str) -> u64 {
    snapshot.requests.get(op).map_or(0, |op| op.count)
}

/// Where the stats socket of the cowfs mount at `mnt` is: named by its device number.
fn socket_of(mnt: &Path) -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dev = info
        .lines()
        .rev()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&mnt.to_str().unwrap()) && f.contains(&"fuse.cowfs"))
        .map(|f| f[2].replace(':', "-"))
        .unwrap_or_else(|| panic!("{} is not a cowfs mount", mnt.display()));
    PathBuf::from(format!("/run/cowfs/{dev}.sock"))
}

/// Waits (up to 10 s) until `path` is gone; the daemon removes its socket just after the mount
/// goes away.
fn wait_gone(path: &Path) -> bool {
    let start = Instant::now();
    while path.symlink_metadata().is_ok() {
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn counts_match_the_operations_made() {
    const CREATES: usize = 12;
    const CHMODS: usize = 7;
    const UNLINKS: usize = 5;
    const TREE_FILES: usize = 4;
    const READS: usize = 6;
    let l = Layers::new(1).with_deadline(Duration::from_secs(120));
    let lower = l.lower(0);
    let mut chmod_bytes = 0;
    for i in 0..CHMODS {
        let data = vec![b'c'; 1000 + i];
        chmod_bytes += data.len() as u64;
        write_file(&lower.join(format!("chmod{i}")), data);
    }
    for i in 0..UNLINKS {
        write_file(&lower.join(format!("unlink{i}")), b"u");
    }
    for i in 0..TREE_FILES {
        write_file(&lower.join(format!("tree/file{i}")), b"t");
    }
    for i in 0..READS {
        write_file(&lower.join(format!("read{i}")), format!("read {i}"));
    }
    let m = l.mount();
    let before = stats_of(&m.mnt);
    assert_eq!(before.transport.kind, expected_transport());
    assert!(before.transport.threads >= 1);

    for i in 0..CREATES {
        fs::write(m.mnt.join(format!("new{i}")), b"new").unwrap();
    }
    for i in 0..CHMODS {
        fs::set_permissions(
            m.mnt.join(format!("chmod{i}")),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    for i in 0..UNLINKS {
        fs::remove_file(m.mnt.join(format!("unlink{i}"))).unwrap();
    }
    fs::remove_dir_all(m.mnt.join("tree")).unwrap();
    fs::create_dir(m.mnt.join("tree")).unwrap();
    for i in 0..READS {
        assert_eq!(
            fs::read_to_string(m.mnt.join(format!("read{i}"))).unwrap(),
            format!("read {i}")
        );
    }

    let after = stats_of(&m.mnt);
    // What cowfs decides is exact: a copy-up per chmod and one of tree/ (to hold the
    // whiteouts of its files), a whiteout per removed lower name, one opaque dir.
    assert_eq!(after.copy_ups.count, (CHMODS + 1) as u64, "{after:?}");
    assert_eq!(
        after.copy_ups.bytes_copied + after.copy_ups.bytes_cloned,
        chmod_bytes,
        "{after:?}"
    );
    assert_eq!(
        after.whiteouts,
        (UNLINKS + TREE_FILES + 1) as u64,
        "{after:?}"
    );
    assert_eq!(after.opaque_dirs, 1, "{after:?}");
    // Requests: at least one per call made (the kernel may add more, never fewer).
    let grew = |op: &str| count(&after, op) - count(&before, op);
    if kernel_opens() {
        // One create declined for the mount: files are made by MKNOD.
        assert!(grew("create") <= 1, "{after:?}");
        assert!(grew("mknod") >= CREATES as u64, "{after:?}");
    } else {
        assert!(grew("create") >= CREATES as u64, "{after:?}");
    }
    // (Not writes: they go to the upper files directly, by passthrough; nor releases, which
    // the kernel sends after close(2) has returned.)
    assert!(grew("setattr") >= CHMODS as u64, "{after:?}");
    assert!(grew("unlink") >= (UNLINKS + TREE_FILES) as u64, "{after:?}");
    assert!(grew("rmdir") >= 1 && grew("mkdir") >= 1, "{after:?}");
    if kernel_opens() {
        // One open declined for the mount (files created before it are still released);
        // the reads come to the daemon instead.
        assert!(grew("open") <= 1, "{after:?}");
        assert!(grew("read") >= READS as u64, "{after:?}");
    } else {
        assert!(grew("open") >= READS as u64, "{after:?}");
    }
    assert!(
        grew("lookup") >= (CHMODS + UNLINKS + READS) as u64,
        "{after:?}"
    );
    for op in after.requests.values() {
        assert!(op.p50_ns <= op.p99_ns && op.count > 0, "{after:?}");
    }
    assert!(
        after.tables.inodes >= (CREATES + CHMODS + READS) as u64,
        "{after:?}"
    );
    assert!(after.tables.fd_cache_hits > 0, "{after:?}");
    assert!(after.uptime_ms >= before.uptime_ms);

    let text = cowfs(&["stats", m.mnt.to_str().unwrap()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    for line in [
        "create",
        "copy-ups          8 ",
        "whiteouts made    10",
        "opaque dirs made  1",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    m.unmount();
}

#[test]
fn the_socket_is_private_and_lives_as_long_as_the_mount() {
    let l = Layers::new(1).with_deadline(Duration::from_secs(120));
    write_file(&l.lower(0).join("file"), b"data");
    let m = l.mount();
    let socket = socket_of(&m.mnt);
    let meta = fs::symlink_metadata(&socket).expect("stats socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0);
    let dir = fs::symlink_metadata(socket.parent().unwrap()).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.mode() & 0o7777, 0o700, "socket dir mode");
    // Nothing of it in the mount or the layers.
    assert_eq!(crate::common::list_names(&m.mnt), ["file"]);
    assert!(crate::common::list_names(&l.upper).is_empty());
    m.unmount();
    assert!(wait_gone(&socket), "{} left after umount", socket.display());

    // SIGTERM takes the mount down, and the socket with it.
    let m = l.mount();
    let socket = socket_of(&m.mnt);
    assert!(socket.exists());
    m.signal(libc::SIGTERM);
    assert!(
        wait_gone(&socket),
        "{} left after SIGTERM",
        socket.display()
    );

    // A daemon killed with SIGKILL leaves its socket; `cowfs stats` says it is stale and
    // returns, and the next mount serves its own.
    let mut m = l.mount();
    let socket = socket_of(&m.mnt);
    m.send_signal(libc::SIGKILL);
    assert!(
        m.wait_exit(Duration::from_secs(10)).is_some(),
        "daemon not dead"
    );
    // Stale, or already removed by a daemon starting beside this test: either way it says so.
    let out = cowfs(&["stats", m.mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("its daemon is gone"), "stderr: {err}");
    drop(m);
    let m = l.mount();
    let next = socket_of(&m.mnt);
    // The old name is gone, or taken by a live mount (its number freed and reused).
    let refused = std::os::unix::net::UnixStream::connect(&socket)
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(!refused, "stale socket {} kept", socket.display());
    assert_eq!(stats_of(&m.mnt).transport.kind, expected_transport());
    m.unmount();
    assert!(wait_gone(&next));
}

#[test]
fn stats_of_a_plain_dir_fail_clearly() {
    let l = Layers::new(1);
    let out = cowfs(&["stats", l.mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a cowfs mount"), "stderr: {err}");
    let out = cowfs(&["stats", l.root.join("missing").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

#[test]
fn other_users_are_refused() {
    let l = Layers::new(1).with_deadline(Duration::from_secs(60));
    let m = l.mount();
    // As nobody: the socket's dir and mode keep it out.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            cowfs_bin(),
        ])
        .args(["stats", m.mnt.to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "stderr: {err}");
    assert!(out.stdout.is_empty());

    // A peer that gets through the dir (euid nobody, fsuid root) is refused by the daemon,
    // which checks its credentials (SO_PEERCRED).
    let answer = connect_as_euid(&socket_of(&m.mnt), 65534);
    assert!(answer.contains("\"error\""), "answer: {answer}");
    assert!(!answer.contains("requests"), "answer: {answer}");
    assert!(connect_as_euid(&socket_of(&m.mnt), 0).contains("requests"));
    m.unmount();
}

/// Connects to `socket` from a forked child with effective uid `euid` but filesystem uid 0
/// (so the dir's permissions let it through) and returns what the daemon wrote.
fn connect_as_euid(socket: &Path, euid: u32) -> String {
    let path = socket.to_str().unwrap().as_bytes();
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let mut pipe = [0; 2];
    // Close-on-exec: a daemon another test spawns meanwhile must not keep the write end open.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // The child makes raw system calls only (it is forked from a threaded process).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            // Let go at once of the fds inherited from the other tests' threads (files open in
            // their mounts would keep those busy while this child lives).
            let keep = pipe[1] as libc::c_uint;
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                keep - 1,
                0 as libc::c_uint,
            );
            libc::syscall(
                libc::SYS_close_range,
                keep + 1,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            let no_change = -1 as libc::c_long;
            let euid = libc::c_long::from(euid);
            if libc::syscall(libc::SYS_setresuid, no_change, euid, no_change) != 0 {
                libc::_exit(2);
            }
            libc::syscall(libc::SYS_setfsuid, 0 as libc::c_long);
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                libc::_exit(3);
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(pipe[1], buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    unsafe { libc::close(pipe[1]) };
    let mut out = Vec::new();
    let mut reader = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(pipe[0]) };
    std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn watch_repeats_until_interrupted_or_the_reader_goes() {
    let l = Layers::new(1).with_deadline(Duration::from_secs(60));
    let m = l.mount();
    let mnt = m.mnt.to_str().unwrap();
    let watch = |json: bool| {
        let mut args = vec!["stats", mnt, "--watch", "0.05"];
        if json {
            args.push("--json");
        }
        Command::new(cowfs_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cowfs stats --watch")
    };
    let wait_end = |child: &mut std::process::Child| {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("cowfs stats --watch did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // SIGINT stops it.
    let mut child = watch(true);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut uptimes = Vec::new();
    for _ in 0..3 {
        let line = lines.next().expect("a line").expect("read");
        uptimes.push(Snapshot::from_json(&line).expect("JSON line").uptime_ms);
    }
    assert!(uptimes.windows(2).all(|w| w[0] < w[1]), "{uptimes:?}");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = wait_end(&mut child);
    assert!(!status.success(), "stopped by SIGINT: {status}");

    // A closed pipe stops it quietly.
    let mut child = watch(false);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("cowfs stats "), "{first:?}");
    drop(out);
    let status = wait_end(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.is_empty(), "stderr: {err}");
    m.unmount();
}

/// Readdirplus only where lookups follow: a listing alone (getdents, no stat) of a big cold
/// dir has the daemon stat and look up only the names of the kernel's first chunk; the rest
/// come as plain READDIR. The numbers plain entries carry are the ones stat shows after.
#[test]
fn a_listing_alone_looks_up_only_its_first_chunk() {
    use std::os::unix::fs::DirEntryExt;
    const NAMES: usize = 3000;
    let l = Layers::new(2);
    for i in 0..NAMES {
        // Spread over both layers, as merged dirs are.
        write_file(&l.lower(i % 2).join(format!("big/n{i:05}")), b"x");
    }
    let m = l.mount();
    let listed: Vec<(String, u64)> = fs::read_dir(m.mnt.join("big"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.ino())
        })
        .collect();
    assert_eq!(listed.len(), NAMES);
    let after_listing = stats_of(&m.mnt);
    assert!(
        count(&after_listing, "readdir") >= 1,
        "no plain READDIR: {:?}",
        after_listing.requests.keys().collect::<Vec<_>>()
    );
    assert!(
        after_listing.tables.inodes < (NAMES / 2) as u64,
        "{} inodes after listing {NAMES} names",
        after_listing.tables.inodes
    );
    // Then every name stats, with the number its entry carried.
    for (name, ino) in &listed {
        let meta = fs::symlink_metadata(m.mnt.join("big").join(name)).unwrap();
        assert_eq!(meta.ino(), *ino, "{name}: d_ino and st_ino differ");
    }
    assert!(stats_of(&m.mnt).tables.inodes >= NAMES as u64);
}
