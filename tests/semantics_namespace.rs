//! One or more tests per behaviour in notes/SPEC.md, each on its own layers and mount:
//! unlink, rmdir, rename, link, read-only mounts, remount, cleanup.

use crate::common::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;

fn upper_paths(l: &Layers) -> Vec<String> {
    all_paths(&l.upper)
}

#[test]
fn unlink_lower_leaves_whiteout_upper_only_leaves_nothing() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("lf"), "l");
    write_file(&l.lower(0).join("d/lf2"), "l");
    write_file(&l.lower(1).join("cu"), "copy me");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::remove_file(mnt.join("lf")).unwrap();
    fs::remove_file(mnt.join("d/lf2")).unwrap();
    fs::write(mnt.join("new"), "n").unwrap();
    fs::remove_file(mnt.join("new")).unwrap();
    append(&mnt.join("cu"), "!"); // copied up, then unlinked -> still needs whiteout
    fs::remove_file(mnt.join("cu")).unwrap();
    for p in ["lf", "d/lf2", "new", "cu"] {
        assert_enoent(&mnt.join(p));
    }
    assert_eq!(list_names(mnt), names(&["d"]));
    assert_eq!(list_names(&mnt.join("d")), Vec::<String>::new());
    assert_whiteout(&l.upper.join("lf"));
    assert_whiteout(&l.upper.join("d/lf2"));
    assert_whiteout(&l.upper.join("cu"));
    assert_eq!(
        upper_paths(&l),
        names(&["cu", "d", "d/lf2", "lf"]),
        "no trace of upper-only file"
    );
    assert_eq!(read(&l.lower(1).join("lf")), "l", "lower untouched");
    m.unmount();
}

#[test]
fn rmdir_then_mkdir_gives_opaque_empty_dir() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("d/a"), "a");
    write_file(&l.lower(0).join("d/sub/b"), "b");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::remove_dir_all(mnt.join("d")).unwrap();
    assert_enoent(&mnt.join("d"));
    assert_whiteout(&l.upper.join("d"));
    fs::create_dir(mnt.join("d")).unwrap();
    assert_eq!(
        list_names(&mnt.join("d")),
        Vec::<String>::new(),
        "new dir must be empty"
    );
    assert_enoent(&mnt.join("d/a"));
    let ud = l.upper.join("d");
    assert!(
        fs::symlink_metadata(&ud).unwrap().is_dir(),
        "upper d is a dir"
    );
    assert_eq!(
        lgetxattr(&ud, "trusted.overlay.opaque").unwrap(),
        b"y",
        "opaque marker"
    );
    assert_eq!(list_names(&ud), Vec::<String>::new());
    assert!(
        !llistxattr(&mnt.join("d"))
            .unwrap()
            .iter()
            .any(|n| n.contains("overlay."))
    );
    fs::write(mnt.join("d/a"), "fresh").unwrap();
    assert_eq!(read(&mnt.join("d/a")), "fresh");
    m.unmount();
}

#[test]
fn rmdir_enotempty_judged_on_merged_view() {
    let l = Layers::new(2);
    write_file(&l.lower(0).join("d1/x"), "x");
    write_file(&l.lower(1).join("d2/x"), "x");
    whiteout(&l.lower(0).join("d2/x"));
    write_file(&l.lower(1).join("d3/x"), "x");
    oci_whiteout(&l.lower(0).join("d3"), "x");
    write_file(&l.lower(1).join("d4/x"), "x");
    write_file(&l.lower(1).join("d6/x"), "x");
    opaque_xattr(&l.lower(0).join("d6"));
    let m = l.mount();
    let mnt = &l.mnt;
    assert_errno(fs::remove_dir(mnt.join("d1")), libc::ENOTEMPTY, "rmdir d1");
    assert_eq!(list_names(&mnt.join("d1")), names(&["x"]));
    for d in ["d2", "d3", "d6"] {
        assert_eq!(
            list_names(&mnt.join(d)),
            Vec::<String>::new(),
            "{d} looks empty"
        );
        fs::remove_dir(mnt.join(d)).unwrap_or_else(|e| panic!("rmdir {d} (only whiteouts): {e}"));
        assert_enoent(&mnt.join(d));
        assert_whiteout(&l.upper.join(d));
    }
    assert_errno(fs::remove_dir(mnt.join("d4")), libc::ENOTEMPTY, "rmdir d4");
    fs::remove_file(mnt.join("d4/x")).unwrap();
    fs::remove_dir(mnt.join("d4")).unwrap();
    assert_whiteout(&l.upper.join("d4"));
    fs::create_dir(mnt.join("d5")).unwrap();
    fs::write(mnt.join("d5/f"), "").unwrap();
    assert_errno(fs::remove_dir(mnt.join("d5")), libc::ENOTEMPTY, "rmdir d5");
    fs::remove_file(mnt.join("d5/f")).unwrap();
    fs::remove_dir(mnt.join("d5")).unwrap();
    assert_eq!(list_names(mnt), names(&["d1"]));
    assert_eq!(upper_paths(&l), names(&["d2", "d3", "d4", "d6"]));
    m.unmount();
}

#[test]
fn rename_file_within_and_between_dirs() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "F");
    write_file(&l.lower(0).join("d1/f"), "D1F");
    write_file(&l.lower(0).join("d2/other"), "O");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::rename(mnt.join("f"), mnt.join("g")).unwrap();
    assert_enoent(&mnt.join("f"));
    assert_eq!(read(&mnt.join("g")), "F");
    fs::rename(mnt.join("d1/f"), mnt.join("d2/f2")).unwrap();
    assert_eq!(list_names(&mnt.join("d1")), Vec::<String>::new());
    assert_eq!(list_names(&mnt.join("d2")), names(&["f2", "other"]));
    assert_eq!(read(&mnt.join("d2/f2")), "D1F");
    assert_whiteout(&l.upper.join("f"));
    assert_whiteout(&l.upper.join("d1/f"));
    assert_eq!(read(&l.upper.join("g")), "F");
    // upper-only file renamed: no whiteout for its old name
    fs::write(mnt.join("n"), "N").unwrap();
    fs::rename(mnt.join("n"), mnt.join("d2/n")).unwrap();
    assert_eq!(read(&mnt.join("d2/n")), "N");
    assert_eq!(
        upper_paths(&l),
        names(&["d1", "d1/f", "d2", "d2/f2", "d2/n", "f", "g"])
    );
    assert_eq!(read(&l.lower(0).join("f")), "F", "lower untouched");
    m.unmount();
}

#[test]
fn rename_over_existing_lower_file() {
    let l = Layers::new(2);
    write_file(&l.lower(0).join("a"), "A");
    write_file(&l.lower(1).join("b"), "B");
    write_file(&l.lower(1).join("c"), "C");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::rename(mnt.join("a"), mnt.join("b")).unwrap();
    assert_enoent(&mnt.join("a"));
    assert_eq!(read(&mnt.join("b")), "A");
    fs::write(mnt.join("n"), "N").unwrap();
    fs::rename(mnt.join("n"), mnt.join("c")).unwrap();
    assert_eq!(read(&mnt.join("c")), "N");
    assert_eq!(list_names(mnt), names(&["b", "c"]));
    assert_whiteout(&l.upper.join("a"));
    assert_eq!(read(&l.upper.join("b")), "A");
    assert_eq!(upper_paths(&l), names(&["a", "b", "c"]));
    m.unmount();
}

#[test]
fn rename_noreplace() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("a"), "A");
    write_file(&l.lower(0).join("b"), "B");
    let m = l.mount();
    let mnt = &l.mnt;
    let nr = libc::RENAME_NOREPLACE;
    assert_errno(
        renameat2(&mnt.join("a"), &mnt.join("b"), nr),
        libc::EEXIST,
        "NOREPLACE a->b",
    );
    assert_eq!(
        (read(&mnt.join("a")), read(&mnt.join("b"))),
        ("A".into(), "B".into())
    );
    renameat2(&mnt.join("a"), &mnt.join("c"), nr).unwrap();
    assert_eq!(read(&mnt.join("c")), "A");
    fs::remove_file(mnt.join("b")).unwrap(); // b is now a whiteout: does not count as existing
    renameat2(&mnt.join("c"), &mnt.join("b"), nr).unwrap();
    assert_eq!(read(&mnt.join("b")), "A");
    assert_eq!(list_names(mnt), names(&["b"]));
    m.unmount();
}

#[test]
fn rename_exchange() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("a"), "A");
    write_file(&l.lower(0).join("x"), "X");
    write_file(&l.lower(0).join("y"), "Y");
    let m = l.mount();
    let mnt = &l.mnt;
    let ex = libc::RENAME_EXCHANGE;
    fs::write(mnt.join("b"), "B").unwrap();
    renameat2(&mnt.join("a"), &mnt.join("b"), ex).unwrap();
    assert_eq!(
        (read(&mnt.join("a")), read(&mnt.join("b"))),
        ("B".into(), "A".into())
    );
    renameat2(&mnt.join("x"), &mnt.join("y"), ex).unwrap();
    assert_eq!(
        (read(&mnt.join("x")), read(&mnt.join("y"))),
        ("Y".into(), "X".into())
    );
    assert_errno(
        renameat2(&mnt.join("x"), &mnt.join("nope"), ex),
        libc::ENOENT,
        "EXCHANGE with missing",
    );
    assert_eq!(list_names(mnt), names(&["a", "b", "x", "y"]));
    m.unmount();
    let m = l.mount(); // and it persisted
    assert_eq!(
        (read(&l.mnt.join("a")), read(&l.mnt.join("y"))),
        ("B".into(), "X".into())
    );
    m.unmount();
}

#[test]
fn rename_dirs() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("ld/x"), "X");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::create_dir(mnt.join("nd")).unwrap();
    fs::write(mnt.join("nd/a"), "A").unwrap();
    fs::create_dir(mnt.join("nd/sub")).unwrap();
    fs::write(mnt.join("nd/sub/b"), "B").unwrap();
    fs::rename(mnt.join("nd"), mnt.join("nd2")).unwrap();
    assert_enoent(&mnt.join("nd"));
    assert_eq!(read(&mnt.join("nd2/a")), "A");
    assert_eq!(read(&mnt.join("nd2/sub/b")), "B");
    assert!(
        lstat_opt(&l.upper.join("nd")).is_none(),
        "no trace of upper-only dir's old name"
    );
    match fs::rename(mnt.join("ld"), mnt.join("ld2")) {
        Ok(()) => {
            assert_enoent(&mnt.join("ld"));
            assert_eq!(read(&mnt.join("ld2/x")), "X");
            assert_eq!(list_names(mnt), names(&["ld2", "nd2"]));
        }
        Err(e) => {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EXDEV),
                "rename of lower dir: {e}"
            );
            assert_eq!(read(&mnt.join("ld/x")), "X");
            assert_eq!(list_names(mnt), names(&["ld", "nd2"]));
        }
    }
    m.unmount();
}

#[test]
fn hard_link_of_lower_file() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "F");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::hard_link(mnt.join("f"), mnt.join("g")).unwrap();
    let (f, g) = (
        fs::metadata(mnt.join("f")).unwrap(),
        fs::metadata(mnt.join("g")).unwrap(),
    );
    assert_eq!(f.ino(), g.ino(), "links share st_ino");
    assert_eq!((f.nlink(), g.nlink()), (2, 2), "nlink");
    append(&mnt.join("g"), "+g");
    assert_eq!(
        read(&mnt.join("f")),
        "F+g",
        "write through one link visible through the other"
    );
    let (uf, ug) = (
        fs::metadata(l.upper.join("f")).unwrap(),
        fs::metadata(l.upper.join("g")).unwrap(),
    );
    assert_eq!(uf.ino(), ug.ino(), "upper f and g are the same inode");
    assert_eq!(uf.nlink(), 2);
    assert_eq!(read(&l.lower(0).join("f")), "F");
    assert_eq!(fs::metadata(l.lower(0).join("f")).unwrap().nlink(), 1);
    fs::remove_file(mnt.join("f")).unwrap();
    assert_enoent(&mnt.join("f"));
    assert_eq!(read(&mnt.join("g")), "F+g");
    assert_eq!(fs::metadata(mnt.join("g")).unwrap().nlink(), 1);
    assert_whiteout(&l.upper.join("f"));
    m.unmount();
}

#[test]
fn rm_rf_10k_lower_dir() {
    let l = Layers::new(1);
    let big = l.lower(0).join("big");
    mkdir(&big);
    for i in 0..10_000 {
        fs::write(big.join(format!("f{i:05}")), "x").unwrap();
    }
    write_file(&big.join("sub/a"), "a");
    write_file(&l.lower(0).join("keep"), "k");
    let m = l.mount();
    let t = std::time::Instant::now();
    fs::remove_dir_all(l.mnt.join("big")).expect("rm -rf big through cowfs");
    let dt = t.elapsed();
    assert_enoent(&l.mnt.join("big"));
    assert_eq!(list_names(&l.mnt), names(&["keep"]));
    assert_eq!(
        upper_paths(&l),
        names(&["big"]),
        "only a whiteout remains in upper"
    );
    assert_whiteout(&l.upper.join("big"));
    assert_eq!(
        fs::read_dir(&big).unwrap().count(),
        10_001,
        "lower untouched"
    );
    assert!(dt.as_secs() < 120, "rm -rf took {dt:?}");
    m.unmount();
}

#[test]
fn read_only_mount_gives_erofs() {
    let l = Layers::new(2);
    write_file(&l.lower(0).join("f"), "F");
    write_file(&l.lower(1).join("d/g"), "G");
    let before: Vec<_> = l.lowers.iter().map(|p| tree_snapshot(p)).collect();
    let m = l.mount_ro();
    let mnt = &l.mnt;
    assert_eq!(read(&mnt.join("f")), "F");
    assert_eq!(read(&mnt.join("d/g")), "G");
    let e = libc::EROFS;
    assert_errno(
        OpenOptions::new().write(true).open(mnt.join("f")),
        e,
        "open for write",
    );
    assert_errno(fs::write(mnt.join("new"), "x"), e, "create");
    assert_errno(fs::create_dir(mnt.join("nd")), e, "mkdir");
    assert_errno(fs::remove_file(mnt.join("f")), e, "unlink");
    assert_errno(fs::remove_dir_all(mnt.join("d")), e, "rm -rf");
    assert_errno(fs::rename(mnt.join("f"), mnt.join("f2")), e, "rename");
    assert_errno(std::os::unix::fs::symlink("f", mnt.join("s")), e, "symlink");
    assert_errno(fs::hard_link(mnt.join("f"), mnt.join("h")), e, "link");
    assert_errno(lsetxattr(&mnt.join("f"), "user.x", b"1", 0), e, "setxattr");
    assert_errno(truncate_path(&mnt.join("f"), 0), e, "truncate");
    assert_errno(set_times(&mnt.join("f"), (1, 0), (1, 0)), e, "utimensat");
    assert_errno(
        fs::set_permissions(
            mnt.join("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        ),
        e,
        "chmod",
    );
    m.unmount();
    let after: Vec<_> = l.lowers.iter().map(|p| tree_snapshot(p)).collect();
    assert_eq!(before, after, "lowers changed by read-only mount");
    assert!(all_paths(&l.upper).is_empty());
}

#[test]
fn persistence_across_remount() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("a"), "A");
    write_file(&l.lower(1).join("d/x"), "X");
    write_file(&l.lower(0).join("d/y"), "Y");
    write_file(&l.lower(0).join("e/z"), "Z");
    symlink("a", &l.lower(1).join("s"));
    let m = l.mount();
    let mnt = &l.mnt;
    append(&mnt.join("a"), "+");
    fs::remove_file(mnt.join("d/x")).unwrap();
    fs::remove_dir_all(mnt.join("e")).unwrap();
    fs::create_dir(mnt.join("e")).unwrap();
    fs::write(mnt.join("e/new"), "N").unwrap();
    fs::rename(mnt.join("d/y"), mnt.join("y2")).unwrap();
    set_xattr(&mnt.join("y2"), "user.k", b"v");
    chmod(&mnt.join("a"), 0o600);
    fs::hard_link(mnt.join("a"), mnt.join("a2")).unwrap();
    let opts = SnapOpts {
        mtime: true,
        ..Default::default()
    };
    let before = tree_snapshot_with(mnt, opts);
    assert!(
        before.contains_key("e/new") && !before.contains_key("d/x"),
        "ops took effect"
    );
    m.unmount();
    let m = l.mount();
    let after = tree_snapshot_with(mnt, opts);
    assert_trees_eq(&before, &after, "before remount", "after remount");
    m.unmount();
    let m = l.mount_no_workdir(); // a different work dir must not matter either
    assert_trees_eq(
        &before,
        &tree_snapshot_with(mnt, opts),
        "before remount",
        "after no-workdir remount",
    );
    m.unmount();
}

#[test]
fn no_artifacts_in_upper() {
    let l = Layers::new(1);
    let lw = l.lower(0);
    write_file(&lw.join("a"), "A");
    write_file(&lw.join("d/x"), "X");
    write_file(&lw.join("d/y"), "Y");
    write_file(&lw.join("e/z"), "Z");
    write_file(&lw.join("untouched/u"), "U");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::write(mnt.join("n"), "N").unwrap();
    append(&mnt.join("a"), "+");
    fs::remove_file(mnt.join("d/x")).unwrap();
    chmod(&mnt.join("d/y"), 0o600);
    fs::create_dir(mnt.join("newdir")).unwrap();
    fs::write(mnt.join("newdir/f"), "").unwrap();
    fs::remove_dir_all(mnt.join("e")).unwrap();
    std::os::unix::fs::symlink("a", mnt.join("t")).unwrap();
    fs::rename(mnt.join("n"), mnt.join("n2")).unwrap();
    let tmp = mnt.join("tmpfile");
    fs::write(&tmp, "t").unwrap();
    fs::remove_file(&tmp).unwrap();
    let _ = fs::read_dir(mnt.join("untouched")).unwrap().count();
    m.unmount();
    assert_eq!(
        upper_paths(&l),
        names(&["a", "d", "d/x", "d/y", "e", "n2", "newdir", "newdir/f", "t"]),
        "upper must contain exactly what the operations produced"
    );
    assert_whiteout(&l.upper.join("d/x"));
    assert_whiteout(&l.upper.join("e"));
    assert_no_artifacts(&l.upper);
    for e in fs::read_dir(&l.work).unwrap() {
        let n = e.unwrap().file_name();
        assert!(n == "work" || n == "index", "unexpected {n:?} in work dir");
    }
}

#[test]
fn harness_cleans_up_after_panic() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "F");
    let mnt = l.mnt.clone();
    let r = std::panic::catch_unwind(|| {
        let m = l.mount();
        let pid = m.pid();
        assert_eq!(read(&l.mnt.join("f")), "F");
        std::panic::panic_any(pid);
    });
    let pid = *r
        .expect_err("closure panics")
        .downcast::<Option<i32>>()
        .unwrap();
    assert!(!is_mounted(&mnt), "mount left behind after a panic");
    if let Some(pid) = pid {
        let gone = fs::read_to_string(format!("/proc/{pid}/stat")).is_err();
        assert!(
            gone,
            "daemon {pid} still running (or unreaped) after a panic"
        );
    }
}

#[test]
fn permissions_enforced_for_non_root() {
    use std::os::unix::process::CommandExt;
    let l = Layers::new(1);
    chmod(&l.root, 0o755); // let uid 65534 reach the mountpoint
    write_file_mode(&l.lower(0).join("ro"), "root only", 0o644);
    write_file_mode(&l.lower(0).join("rw"), "shared", 0o666);
    mkdir_mode(&l.lower(0).join("d"), 0o755);
    let m = l.mount();
    let as_nobody = |script: &str| {
        std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(&l.mnt)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        as_nobody("cat ro >/dev/null"),
        "other users can read a 0644 file"
    );
    assert!(
        as_nobody("echo more >> rw"),
        "other users can write a 0666 file"
    );
    assert!(
        !as_nobody("echo evil >> ro"),
        "write to a root 0644 file must fail"
    );
    assert!(
        !as_nobody("touch d/new"),
        "create in a root 0755 dir must fail"
    );
    assert!(
        !as_nobody("rm -f ro"),
        "unlink in a root 0755 dir must fail"
    );
    assert_eq!(read(&l.mnt.join("ro")), "root only");
    assert_eq!(read(&l.mnt.join("rw")), "sharedmore\n");
    assert_eq!(upper_paths(&l), names(&["rw"]));
    m.unmount();
}

/// fstat of a file that is open while its name goes (unlink, or a rename
/// over it) answers from the open file, with no names left, as on any
/// filesystem: for an upper file, a copied-up one and a lower one opened
/// read-only, with and without passthrough.
#[test]
fn fstat_of_open_file_after_its_name_is_gone() {
    for options in ["", "passthrough=off"] {
        let l = Layers::new(1);
        write_file(&l.lower(0).join("lower_ro"), "lower data");
        write_file(&l.lower(0).join("lower_rw"), "lower data");
        write_file(&l.lower(0).join("lower_replaced"), "lower data");
        let m = if options.is_empty() {
            l.mount()
        } else {
            l.mount_with(&["-o", options])
        };
        let mnt = &l.mnt;
        write_file(&mnt.join("upper"), "upper data!");
        write_file(&mnt.join("other"), "replacement");
        let mut open = Vec::new();
        for (name, write) in [
            ("upper", true),
            ("lower_ro", false),
            ("lower_rw", true),
            ("lower_replaced", false),
        ] {
            let file = OpenOptions::new()
                .read(true)
                .write(write)
                .open(mnt.join(name))
                .unwrap();
            open.push((name, file, fs::metadata(mnt.join(name)).unwrap()));
        }
        for name in ["upper", "lower_ro", "lower_rw"] {
            fs::remove_file(mnt.join(name)).unwrap();
        }
        fs::rename(mnt.join("other"), mnt.join("lower_replaced")).unwrap();
        for (name, file, before) in &open {
            let st = file
                .metadata()
                .unwrap_or_else(|e| panic!("fstat of {name} ({options:?}): {e}"));
            assert_eq!(st.nlink(), 0, "{name} ({options:?}): no names left");
            assert_eq!(st.ino(), before.ino(), "{name} ({options:?}): same inode");
            assert_eq!(st.len(), before.len(), "{name} ({options:?}): same size");
        }
        assert_eq!(read(&mnt.join("lower_replaced")), "replacement");
        drop(open);
        m.unmount();
    }
}
