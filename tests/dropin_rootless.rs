//! cowfs as a drop-in for fuse-overlayfs, rootless: mounts through fusermount3 and in a user
//! namespace, by an unprivileged user, with the overlay xattrs in `user.overlay.*` (a dir renamed
//! with lower content copied up whole, which the kernel's `userxattr` overlay reads).
//!
//! Every test has a deadline (see `dropin_support::Fix`) and leaves nothing mounted or running.

use crate::dropin::{DEADLINE, no_warnings};
use crate::dropin_support::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------
// 4. rootless: through fusermount3, and in a user namespace
// ---------------------------------------------------------------------------

#[test]
fn rootless_mount_through_fusermount3() {
    let fx = Fix::new(DEADLINE);
    let user = ensure_user(&fx, "cowfs-rootless");
    let _fuse = DevFuseOpen::ensure();
    // a copy of the binary the user can surely execute
    let cowfs = fx.path("bin/cowfs");
    fx.dir("bin");
    fs::copy(bin(), &cowfs).unwrap();
    let (l, u, mnt) = (fx.dir("L"), fx.dir("U"), fx.dir("mnt"));
    small_lower(&l);
    fx.run(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(&fx.root),
    )
    .expect_ok();
    chmod(&fx.root, 0o755);
    let sh = |script: &str| fx.as_user(&user, script).expect_ok();
    let m = |rel: &str| q(&mnt.join(rel));
    let pid_file = fx.path("cowfs.pid");
    let mount = format!(
        "{} mount {} {} {} --pid-file {}",
        q(&cowfs),
        q(&l),
        q(&u),
        q(&mnt),
        q(&pid_file)
    );
    let mounted = || {
        let out = sh(&mount);
        no_warnings(&out);
        let e = mount_entry(&mnt).expect("mounted");
        assert_eq!(e.fstype, "fuse.cowfs", "{e:?}");
        CowfsMount::adopt(read(&pid_file).trim().parse().unwrap(), &mnt)
    };
    let d = mounted();
    assert_eq!(sh(&format!("cat {}", m("f"))).stdout, "lower\n");
    // write: copy-up, owned by the user
    sh(&format!("echo more >> {}", m("f")));
    assert_eq!(read(&u.join("f")), "lower\nmore\n");
    assert_eq!(fs::metadata(u.join("f")).unwrap().uid(), user.uid);
    // delete
    sh(&format!("rm {0} && test ! -e {0}", m("gone")));
    let kind = whiteout_kind(&u, "gone");
    eprintln!("NOTE: rootless whiteout format in the upper: {kind}");
    // what the kernel allows this user decides the format
    let probe = fx.as_user(&user, "mknod wh-probe c 0 0 && rm wh-probe");
    let want = if probe.ok() { "chardev" } else { "oci" };
    assert_eq!(
        kind,
        want,
        "whiteout format; mknod probe: {}",
        probe.describe()
    );
    // rmdir + mkdir: opaque through user.overlay.opaque
    let out = sh(&format!(
        "rm {0}/z && rmdir {0} && mkdir {0} && ls -A {0}",
        m("rd")
    ));
    assert_eq!(out.stdout, "", "recreated dir shows lower entries");
    assert_eq!(
        lgetxattr(&u.join("rd"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    // rename of a lower dir: redirect_dir=auto is off rootless (the kernel's userxattr mount
    // never follows a redirect), so the dir is copied up whole, opaque, no redirect
    let ino_before = sh(&format!("stat -c %i {} {}/y", m("mvdir"), m("mvdir"))).stdout;
    let out = sh(&format!("mv {} {} && ls {1}", m("mvdir"), m("moved")));
    assert_eq!(out.stdout, "y\n");
    let moved = u.join("moved");
    assert!(
        lgetxattr(&moved, "user.overlay.redirect").is_err(),
        "user.overlay.redirect on upper/moved; upper xattrs {:?}",
        llistxattr(&moved).unwrap()
    );
    assert_eq!(lgetxattr(&moved, "user.overlay.opaque").unwrap(), b"y");
    assert_eq!(read(&moved.join("y")), "y", "moved/y copied up");
    // and it moves again, with what it holds (no ESTALE: the numbers the kernel knows stay)
    sh(&format!(
        "mv {0} {1} && mv {1}/y {1}/y2 && mv {1}/y2 {1}/y && mv {1} {0}",
        m("moved"),
        m("moved2")
    ));
    let ino_after = sh(&format!(
        "ls -A {0} >/dev/null && stat -c %i {0} {0}/y",
        m("moved")
    ))
    .stdout;
    assert_eq!(
        ino_after, ino_before,
        "st_ino of the moved dir and its file"
    );
    whiteout_kind(&u, "mvdir");
    let listing = format!("cd {} && find . | sort && cat f moved/y keep/k", q(&mnt));
    let before = sh(&listing).stdout;
    for gone in ["gone", "mvdir", "rd/z"] {
        assert!(!before.contains(&format!("./{gone}\n")), "{gone}: {before}");
    }
    sh(&format!("fusermount3 -u {}", q(&mnt)));
    d.expect_clean_exit("fusermount3 -u (as the user)");
    // remount: the same tree
    let d = mounted();
    assert_eq!(sh(&listing).stdout, before, "tree changed across remount");
    sh(&format!("fusermount3 -u {}", q(&mnt)));
    d.expect_clean_exit("fusermount3 -u (as the user), second mount");
    // the kernel's rootless format (userxattr) over the same layers: the same tree, no EPERM
    assert_eq!(
        kind, "chardev",
        "the kernel's overlay reads 0/0 whiteouts only (unprivileged mknod of them: Linux 5.8+)"
    );
    let (kwork, kmnt) = (fx.dir("kernel-work"), fx.dir("kernel-mnt"));
    let k = crate::common::KernelOverlay::mount_with(
        std::slice::from_ref(&l),
        &u,
        &kwork,
        &kmnt,
        "userxattr",
    );
    let klisting = format!("cd {} && find . | sort && cat f moved/y keep/k", q(&kmnt));
    let out = fx.run(Command::new("/bin/sh").arg("-c").arg(&klisting));
    assert_eq!(
        out.expect_ok().stdout,
        before,
        "kernel userxattr overlay's tree"
    );
    k.unmount();
}

#[test]
fn user_namespace_mount_with_unshare() {
    let fx = Fix::new(DEADLINE);
    let probe = fx.run(Command::new("unshare").args(["-r", "-m", "true"]));
    assert!(
        probe.ok(),
        "`unshare -r -m` does not work here (the tests need user namespaces): {}",
        probe.describe()
    );
    let (l, u, w, mnt) = (fx.dir("L"), fx.dir("U"), fx.dir("W"), fx.dir("mnt"));
    small_lower(&l);
    let m = |rel: &str| q(&mnt.join(rel));
    let script = format!(
        "set -e; {bin} -o lowerdir={l},upperdir={u},workdir={w} {mnt}; \
         awk -v m={mnt} '$5 == m {{ print $(NF-2) }}' /proc/self/mountinfo; cat {f}; echo more >> {f}; rm {gone}; \
         rm {rd}/z; rmdir {rd}; mkdir {rd}; mv {mvdir} {moved}; ls {moved}; {bin} umount {mnt}; \
         echo unmounted",
        bin = q(Path::new(bin())),
        l = q(&l),
        u = q(&u),
        w = q(&w),
        mnt = q(&mnt),
        f = m("f"),
        gone = m("gone"),
        rd = m("rd"),
        mvdir = m("mvdir"),
        moved = m("moved"),
    );
    let out = fx.run(Command::new("unshare").args(["-r", "-m", "/bin/sh", "-c", &script]));
    let out = out.expect_ok();
    assert_eq!(
        out.stdout,
        "fuse.cowfs\nlower\ny\nunmounted\n",
        "{}",
        out.describe()
    );
    assert!(!is_mounted(&mnt), "user-namespace mount visible outside");
    assert_eq!(read(&u.join("f")), "lower\nmore\n");
    eprintln!(
        "NOTE: whiteout format in a user namespace: {}",
        whiteout_kind(&u, "gone")
    );
    assert_eq!(
        lgetxattr(&u.join("rd"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    // redirect_dir=auto is off here too: user.overlay.* xattrs
    assert!(lgetxattr(&u.join("moved"), "user.overlay.redirect").is_err());
    assert_eq!(
        lgetxattr(&u.join("moved"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    // the daemon exits after `cowfs umount` inside the namespace
    let start = std::time::Instant::now();
    while !cowfs_pids(&fx.root.to_string_lossy()).is_empty() {
        assert!(start.elapsed() < EXIT_TIMEOUT, "daemon still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}
