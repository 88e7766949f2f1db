//! Acceptance scenario: the short CLI without --workdir, daemon mode, ~30 behaviours in one run,
//! persistence across `cowfs umount` + mount, and finally kernel overlayfs over the same upper.

use crate::common::*;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

const BULK: usize = 2000;
const T0: (i64, i64) = (1_300_000_000, 42);

/// `cowfs mount top:base upper mnt --pid-file cowfs.pid`, run in `root` with relative paths.
fn mount_short(root: &Path) -> CowfsMount {
    let pid_file = root.join("cowfs.pid");
    let _ = fs::remove_file(&pid_file);
    let args: Vec<OsString> = [
        "mount",
        "top:base",
        "upper",
        "mnt",
        "--pid-file",
        "cowfs.pid",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    CowfsMount::daemon(&args, root, &root.join("mnt"), &pid_file, root)
}

fn build(root: &Path) {
    let (top, base) = (root.join("top"), root.join("base"));
    write_file(&base.join("etc/config"), "base config\n");
    write_file_mode(&base.join("etc/passwd"), "root:x:0:0\n", 0o600);
    lchown(&base.join("etc/passwd"), 0, 42);
    set_xattr(&base.join("etc/passwd"), "user.sec", b"1");
    set_times(&base.join("etc/passwd"), T0, T0).unwrap();
    write_file_mode(&base.join("app/bin/tool"), "#!/bin/sh\necho tool\n", 0o755);
    for i in 0..BULK {
        write_file(&base.join(format!("bulk/sub{}/f{i}", i % 10)), "bulk");
    }
    write_file(&base.join("docs/readme"), "docs");
    write_file(&base.join("shadowed"), "base");
    write_file(&base.join("oci_gone"), "x");
    write_file(&base.join("oci_dir/a"), "a");
    write_file(&base.join("oci_dir/b"), "b");
    write_file(&base.join("opq_oci/old"), "old");
    write_file(&base.join("opq_x/old"), "old");
    symlink("etc/config", &base.join("link"));
    write_file(&base.join("trunc"), "t".repeat(100));
    symlink("trunc", &base.join("tlink"));
    write_file(&base.join("rmdir_me/f"), "f");
    write_file(&base.join("full/f"), "f");
    write_file(&base.join("hl"), "hard");
    write_file(&base.join("mv_src"), "move");
    write_file(&base.join("mv_dst"), "old dst");
    write_file(&base.join("del"), "delete me");
    // top layer (OCI style)
    write_file(&top.join("shadowed"), "top");
    write_file(&top.join("etc/extra"), "extra");
    oci_whiteout(&top, "oci_gone");
    oci_whiteout(&top, "docs");
    oci_whiteout(&top.join("oci_dir"), "a");
    opaque_oci(&top.join("opq_oci"));
    write_file(&top.join("opq_oci/new"), "new");
    opaque_xattr(&top.join("opq_x"));
    write_file(&top.join("opq_x/new"), "new");
}

/// Copy of an OCI-style layer in kernel overlayfs format (`.wh.X` -> 0/0 char dev X,
/// `.wh..wh..opq` -> trusted.overlay.opaque=y), metadata preserved.
fn copy_as_kernel_layer(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let (s, d) = (e.path(), dst.join(&name));
        let md = fs::symlink_metadata(&s).unwrap();
        if name == ".wh..wh..opq" {
            set_xattr(dst, "trusted.overlay.opaque", b"y");
            continue;
        }
        if let Some(n) = name.strip_prefix(".wh.") {
            whiteout(&dst.join(n));
            continue;
        }
        if md.is_dir() {
            copy_as_kernel_layer(&s, &d);
        } else if md.file_type().is_symlink() {
            symlink(fs::read_link(&s).unwrap().to_str().unwrap(), &d);
        } else {
            fs::copy(&s, &d).unwrap();
        }
        copy_meta(&s, &d, &md);
    }
    copy_meta(src, dst, &fs::symlink_metadata(src).unwrap());
}

fn copy_meta(s: &Path, d: &Path, md: &fs::Metadata) {
    lchown(d, md.uid(), md.gid());
    if !md.file_type().is_symlink() {
        chmod(d, md.mode() & 0o7777);
    }
    for n in llistxattr(s).unwrap() {
        lsetxattr(d, &n, &lgetxattr(s, &n).unwrap(), 0).unwrap();
    }
    set_times(d, atime_of(md), mtime_of(md)).unwrap();
}

#[test]
fn acceptance_scenario() {
    let tmp = tempfile::Builder::new()
        .prefix("cowfs-scn-")
        .tempdir()
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    for d in ["top", "base", "upper", "mnt"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    build(&root);
    let (base, upper, mnt) = (root.join("base"), root.join("upper"), root.join("mnt"));
    let base_snap = tree_snapshot(&base);
    let top_snap = tree_snapshot(&root.join("top"));
    let m = mount_short(&root); // 1. daemon mode: returns once live (checked in harness)
    let p = |s: &str| mnt.join(s);

    // 2. mount shows as fuse.cowfs; pid file names a live process
    assert_eq!(mount_fstype(&mnt).as_deref(), Some("fuse.cowfs"));
    let pid: i32 = read(&root.join("cowfs.pid")).trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "daemon {pid} alive");
    // 3. reads through layers; 4. top shadows base
    assert_eq!(read(&p("etc/config")), "base config\n");
    assert_eq!(read(&p("shadowed")), "top");
    // 5. merged directory
    assert_eq!(list_names(&p("etc")), names(&["config", "extra", "passwd"]));
    // 6-8. OCI whiteouts hide a file, a dir, an entry inside a dir
    assert_enoent(&p("oci_gone"));
    assert_enoent(&p("docs"));
    assert_eq!(list_names(&p("oci_dir")), names(&["b"]));
    // 9. .wh.* never listed or looked up
    for n in [
        ".wh.oci_gone",
        ".wh.docs",
        "oci_dir/.wh.a",
        "opq_oci/.wh..wh..opq",
    ] {
        assert_enoent(&p(n));
    }
    check_dirents(&mnt);
    check_dirents(&p("oci_dir"));
    // 10-11. opaque dirs (OCI marker and xattr)
    assert_eq!(list_names(&p("opq_oci")), names(&["new"]));
    assert_eq!(list_names(&p("opq_x")), names(&["new"]));
    assert!(
        !llistxattr(&p("opq_x"))
            .unwrap()
            .iter()
            .any(|x| x.contains("overlay"))
    );
    // 12. symlinks
    assert_eq!(
        fs::read_link(p("link")).unwrap().to_str(),
        Some("etc/config")
    );
    assert_eq!(read(&p("link")), "base config\n");
    assert!(
        list_names(&upper).is_empty(),
        "reads must not write to upper"
    );

    // 13. copy-up of data (st_ino stable: 29)
    let ino = fs::metadata(p("etc/config")).unwrap().ino();
    OpenOptions::new()
        .append(true)
        .open(p("etc/config"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    assert_eq!(read(&p("etc/config")), "base config\nmore\n");
    assert_eq!(read(&upper.join("etc/config")), "base config\nmore\n");
    assert_eq!(
        fs::metadata(p("etc/config")).unwrap().ino(),
        ino,
        "st_ino across copy-up"
    );
    // 14. copy-up of metadata + xattrs
    set_xattr(&p("etc/passwd"), "user.new", b"2");
    let up = fs::symlink_metadata(upper.join("etc/passwd")).unwrap();
    assert_eq!((up.mode() & 0o7777, up.uid(), up.gid()), (0o600, 0, 42));
    assert_eq!(mtime_of(&up), T0, "mtime copied up");
    assert_eq!(
        lgetxattr(&upper.join("etc/passwd"), "user.sec").unwrap(),
        b"1"
    );
    assert_eq!(
        llistxattr(&p("etc/passwd")).unwrap(),
        names(&["user.new", "user.sec"])
    );
    // 15. chmod / chown
    chmod(&p("app/bin/tool"), 0o700);
    lchown(&p("app/bin/tool"), 5, 6);
    let t = fs::metadata(upper.join("app/bin/tool")).unwrap();
    assert_eq!((t.mode() & 0o7777, t.uid(), t.gid()), (0o700, 5, 6));
    assert_eq!(
        fs::metadata(upper.join("app")).unwrap().mode() & 0o777,
        0o755
    );
    // 16. unlink of a base file leaves a 0/0 whiteout; 17. upper-only leaves nothing
    fs::remove_file(p("del")).unwrap();
    assert_enoent(&p("del"));
    assert_whiteout(&upper.join("del"));
    fs::write(p("scratch"), "s").unwrap();
    fs::remove_file(p("scratch")).unwrap();
    assert!(lstat_opt(&upper.join("scratch")).is_none());
    // 18. rmdir then mkdir -> opaque and empty; 19. ENOTEMPTY
    assert_errno(fs::remove_dir(p("full")), libc::ENOTEMPTY, "rmdir full");
    fs::remove_file(p("rmdir_me/f")).unwrap();
    fs::remove_dir(p("rmdir_me")).unwrap();
    assert_whiteout(&upper.join("rmdir_me"));
    fs::create_dir(p("rmdir_me")).unwrap();
    assert!(list_names(&p("rmdir_me")).is_empty());
    assert_eq!(
        lgetxattr(&upper.join("rmdir_me"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    // 20-23. renames
    fs::rename(p("mv_src"), p("mv_dst")).unwrap();
    assert_eq!(read(&p("mv_dst")), "move");
    assert_enoent(&p("mv_src"));
    assert_whiteout(&upper.join("mv_src"));
    fs::rename(p("etc/extra"), p("app/extra")).unwrap();
    assert_eq!(read(&p("app/extra")), "extra");
    fs::create_dir(p("newdir")).unwrap();
    fs::write(p("newdir/inside"), "in").unwrap();
    fs::rename(p("newdir"), p("newdir2")).unwrap();
    assert_eq!(read(&p("newdir2/inside")), "in");
    assert_errno(
        renameat2(&p("hl"), &p("mv_dst"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE",
    );
    // 24. hard link of a base file
    fs::hard_link(p("hl"), p("hl2")).unwrap();
    let (a, b) = (
        fs::metadata(p("hl")).unwrap(),
        fs::metadata(p("hl2")).unwrap(),
    );
    assert_eq!(
        (a.ino(), a.nlink(), b.nlink()),
        (b.ino(), 2, 2),
        "hard link"
    );
    // 25. truncate through a symlink
    truncate_path(&p("tlink"), 7).unwrap();
    assert_eq!(read(&p("trunc")), "ttttttt");
    assert!(
        fs::symlink_metadata(p("tlink"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // 26. rm -rf of 2000 entries
    fs::remove_dir_all(p("bulk")).unwrap();
    assert_enoent(&p("bulk"));
    assert_whiteout(&upper.join("bulk"));
    // 27. new files, dirs, symlinks, fifos
    fs::create_dir_all(p("new/a/b")).unwrap();
    fs::write(p("new/a/b/file"), "nested").unwrap();
    std::os::unix::fs::symlink("../etc/passwd", p("new/pw")).unwrap();
    mkfifo(&p("new/fifo"), 0o600).unwrap();
    assert!(
        fs::symlink_metadata(p("new/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(read(&p("new/pw")), "root:x:0:0\n");
    // 28. xattrs on new and opaque dirs; overlay xattrs hidden
    set_xattr(&p("rmdir_me"), "user.d", b"dir");
    assert_eq!(llistxattr(&p("rmdir_me")).unwrap(), names(&["user.d"]));
    // 30. readdir consistency after all that
    for d in ["", "etc", "app", "rmdir_me", "new", "opq_x"] {
        check_dirents(&p(d));
    }
    let opts = SnapOpts {
        mtime: true,
        ..Default::default()
    };
    let view1 = tree_snapshot_with(&mnt, opts);
    assert!(view1.contains_key("new/a/b/file") && !view1.keys().any(|k| k.starts_with("bulk")));

    // 31. persistence across `cowfs umount` + mount
    let st = m.cli_umount(&root, "mnt");
    assert!(st.is_some(), "daemon exit status not observed (not reaped)");
    assert!(list_names(&mnt).is_empty(), "mountpoint empty after umount");
    let m = mount_short(&root);
    assert_trees_eq(
        &view1,
        &tree_snapshot_with(&mnt, opts),
        "before remount",
        "after remount",
    );
    fs::write(p("after_remount"), "r").unwrap();
    fs::remove_file(p("shadowed")).unwrap();
    let view2 = tree_snapshot_with(&mnt, opts);
    // 32. SIGTERM unmounts cleanly, exit 0
    let st = m.signal(libc::SIGTERM);
    assert!(
        st.is_some(),
        "daemon exit status after SIGTERM not observed"
    );

    // 33. no cowfs artifacts in upper; work dir is the sibling
    assert_no_artifacts(&upper);
    let work = root.join(".upper.cowfs-work");
    assert!(work.is_dir(), "default work dir {} missing", work.display());
    for e in fs::read_dir(&work).unwrap() {
        let n = e.unwrap().file_name();
        assert!(n == "work" || n == "index", "unexpected {n:?} in work dir");
    }
    let mut expected_top = list_names(&root);
    expected_top.retain(|n| !n.starts_with("cowfs-"));
    assert_eq!(
        expected_top,
        names(&[
            ".upper.cowfs-work",
            "base",
            "cowfs.pid",
            "mnt",
            "top",
            "upper"
        ]),
        "nothing else created next to the layers"
    );
    assert_eq!(tree_snapshot(&base), base_snap, "base layer modified");
    assert_eq!(
        tree_snapshot(&root.join("top")),
        top_snap,
        "top layer modified"
    );

    // 34. kernel overlayfs over the same layers (top converted to kernel whiteout format)
    let ktop = root.join("ktop");
    copy_as_kernel_layer(&root.join("top"), &ktop);
    fs::create_dir(root.join("kwork")).unwrap();
    fs::create_dir(root.join("kmnt")).unwrap();
    let k = KernelOverlay::mount(
        &[ktop, base.clone()],
        &upper,
        &root.join("kwork"),
        &root.join("kmnt"),
    );
    let kview = tree_snapshot_with(&k.mnt, opts);
    assert_trees_eq(&kview, &view2, "kernel overlayfs", "cowfs");
    k.unmount();
}
