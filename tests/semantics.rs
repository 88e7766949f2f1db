//! One or more tests per behaviour in notes/SPEC.md, each on its own layers and mount.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

fn upper_paths(l: &Layers) -> Vec<String> {
    all_paths(&l.upper)
}

#[test]
fn resolution_three_lowers_top_down() {
    let l = Layers::new(3);
    for (i, lw) in l.lowers.iter().enumerate() {
        write_file(&lw.join("a"), format!("a{i}"));
        write_file(&lw.join(format!("d/only{i}")), format!("d{i}"));
        write_file(&lw.join("d/shared"), format!("s{i}"));
    }
    write_file(&l.lower(1).join("b"), "b1");
    write_file(&l.lower(2).join("b"), "b2");
    write_file(&l.lower(2).join("c"), "c2");
    write_file(&l.lower(0).join("fd"), "file-top"); // file on top of a dir
    write_file(&l.lower(1).join("fd/x"), "");
    write_file(&l.lower(0).join("df/top"), ""); // dir on top of a file
    write_file(&l.lower(2).join("df"), "file-bottom");
    let m = l.mount();
    let mnt = &l.mnt;
    assert_eq!(
        mount_fstype(mnt).as_deref(),
        Some("fuse.cowfs"),
        "fstype in mountinfo"
    );
    assert_eq!(read(&mnt.join("a")), "a0", "top layer wins");
    assert_eq!(read(&mnt.join("b")), "b1", "middle layer wins over bottom");
    assert_eq!(read(&mnt.join("c")), "c2", "bottom-only file visible");
    assert_eq!(list_names(mnt), names(&["a", "b", "c", "d", "df", "fd"]));
    assert_eq!(
        list_names(&mnt.join("d")),
        names(&["only0", "only1", "only2", "shared"])
    );
    assert_eq!(read(&mnt.join("d/shared")), "s0");
    assert_eq!(read(&mnt.join("d/only2")), "d2");
    assert_eq!(
        read(&mnt.join("fd")),
        "file-top",
        "file above dir hides the dir"
    );
    assert_eq!(
        list_names(&mnt.join("df")),
        names(&["top"]),
        "dir above file"
    );
    assert!(
        upper_paths(&l).is_empty(),
        "reads wrote to upper: {:?}",
        upper_paths(&l)
    );
    m.unmount();
}

#[test]
fn chardev_whiteout_in_lower_hides() {
    let l = Layers::new(3);
    write_file(&l.lower(2).join("x"), "x2");
    write_file(&l.lower(2).join("dir/y"), "y2");
    write_file(&l.lower(2).join("dir/keep"), "k2");
    write_file(&l.lower(2).join("gone/z"), "z2");
    write_file(&l.lower(2).join("w"), "w2");
    whiteout(&l.lower(1).join("x"));
    whiteout(&l.lower(1).join("dir/y"));
    whiteout(&l.lower(1).join("gone"));
    whiteout(&l.lower(1).join("w"));
    write_file(&l.lower(0).join("w"), "w0"); // above the whiteout: visible
    write_file(&l.lower(2).join("u"), "u2");
    whiteout(&l.upper.join("u")); // whiteout in upper
    mknod(&l.lower(2).join("null"), libc::S_IFCHR | 0o666, 1, 3).unwrap(); // not a whiteout
    let m = l.mount();
    let mnt = &l.mnt;
    for p in ["x", "dir/y", "gone", "gone/z", "u"] {
        assert_enoent(&mnt.join(p));
    }
    assert_eq!(list_names(mnt), names(&["dir", "null", "w"]));
    assert_eq!(list_names(&mnt.join("dir")), names(&["keep"]));
    assert_eq!(read(&mnt.join("w")), "w0");
    let n = fs::symlink_metadata(mnt.join("null")).unwrap();
    assert!(
        n.file_type().is_char_device(),
        "1/3 char dev must show as device"
    );
    assert_eq!(n.rdev(), libc::makedev(1, 3));
    m.unmount();
}

#[test]
fn oci_whiteout_hides_and_wh_names_never_listed() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("x"), "x1");
    write_file(&l.lower(1).join("sub/y"), "y1");
    write_file(&l.lower(1).join("sub/k"), "k1");
    write_file(&l.lower(1).join("gone/z"), "z1");
    write_file(&l.lower(1).join("u"), "u1");
    oci_whiteout(l.lower(0), "x");
    oci_whiteout(&l.lower(0).join("sub"), "y");
    oci_whiteout(l.lower(0), "gone");
    oci_whiteout(&l.upper, "u"); // OCI whiteout in the upper layer
    oci_whiteout(l.lower(0), "never-existed");
    let m = l.mount();
    let mnt = &l.mnt;
    assert_eq!(list_names(mnt), names(&["sub"]));
    assert_eq!(list_names(&mnt.join("sub")), names(&["k"]));
    for p in ["x", "sub/y", "gone", "u", "never-existed"] {
        assert_enoent(&mnt.join(p));
    }
    for p in [
        ".wh.x",
        "sub/.wh.y",
        ".wh.gone",
        ".wh.u",
        ".wh.never-existed",
    ] {
        assert_enoent(&mnt.join(p));
        assert_errno(
            fs::File::open(mnt.join(p)),
            libc::ENOENT,
            &format!("open {p}"),
        );
    }
    for e in readdir_raw(mnt)
        .iter()
        .chain(readdir_raw(&mnt.join("sub")).iter())
    {
        assert!(!e.name.starts_with(".wh."), "readdir shows {}", e.name);
    }
    // re-creating a whited-out name works and shows only the new content
    fs::create_dir(mnt.join("gone")).unwrap(); // dir hidden by an OCI whiteout below
    assert_eq!(list_names(&mnt.join("gone")), Vec::<String>::new());
    fs::write(mnt.join("x"), "new").unwrap();
    assert_eq!(read(&mnt.join("x")), "new");
    assert_eq!(list_names(mnt), names(&["gone", "sub", "x"]));
    m.unmount();
    let m = l.mount();
    assert_eq!(
        list_names(&l.mnt.join("gone")),
        Vec::<String>::new(),
        "after remount"
    );
    assert_enoent(&l.mnt.join("gone/z"));
    m.unmount();
}

fn check_opaque(mark: fn(&Path)) {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("d/hidden"), "h");
    write_file(&l.lower(1).join("d/sub/deep"), "h");
    write_file(&l.lower(0).join("d/own"), "o");
    mark(&l.lower(0).join("d"));
    // opaque dir in upper over a lower dir
    write_file(&l.lower(1).join("e/hidden"), "h");
    mkdir(&l.upper.join("e"));
    mark(&l.upper.join("e"));
    let m = l.mount();
    let mnt = &l.mnt;
    assert_eq!(list_names(&mnt.join("d")), names(&["own"]));
    assert_enoent(&mnt.join("d/hidden"));
    assert_enoent(&mnt.join("d/sub"));
    assert_enoent(&mnt.join("d/.wh..wh..opq"));
    assert_eq!(list_names(&mnt.join("e")), Vec::<String>::new());
    assert_enoent(&mnt.join("e/hidden"));
    for d in ["d", "e"] {
        let x = llistxattr(&mnt.join(d)).unwrap();
        assert!(
            !x.iter().any(|n| n.contains("overlay.")),
            "overlay xattrs listed on {d}: {x:?}"
        );
    }
    m.unmount();
}

#[test]
fn opaque_via_trusted_xattr() {
    check_opaque(opaque_xattr);
}

#[test]
fn opaque_via_user_xattr() {
    check_opaque(opaque_user_xattr);
}

#[test]
fn opaque_via_oci_marker() {
    check_opaque(opaque_oci);
}

fn make_rich_file(p: &Path) {
    write_file(p, "lower-data");
    chmod(p, 0o640);
    lchown(p, 1234, 5678);
    set_xattr(p, "user.foo", b"bar");
    set_xattr(p, "trusted.baz", b"qux");
    set_times(p, (1_000_000_000, 111), (1_100_000_000, 222)).unwrap();
}

#[test]
fn copy_up_preserves_data_mode_owner_times_xattrs() {
    let l = Layers::new(1);
    let (lf, lg) = (l.lower(0).join("f"), l.lower(0).join("g"));
    make_rich_file(&lf);
    make_rich_file(&lg);
    let lower_before = tree_snapshot_with(
        l.lower(0),
        SnapOpts {
            mtime: true,
            ..Default::default()
        },
    );
    let m = l.mount();
    // metadata-only trigger: setxattr must not change data, mode, owner or mtime
    set_xattr(&l.mnt.join("f"), "user.trigger", b"1");
    let uf = l.upper.join("f");
    let um = fs::symlink_metadata(&uf).expect("f copied up");
    assert_eq!(fs::read(&uf).unwrap(), b"lower-data");
    assert_eq!(um.mode() & 0o7777, 0o640, "mode copied");
    assert_eq!((um.uid(), um.gid()), (1234, 5678), "owner copied");
    assert_eq!(mtime_of(&um), (1_100_000_000, 222), "mtime copied");
    let la = atime_of(&fs::symlink_metadata(&lf).unwrap());
    assert!(
        atime_of(&um) == (1_000_000_000, 111) || atime_of(&um) == la,
        "atime not copied: {:?}",
        atime_of(&um)
    );
    assert_eq!(lgetxattr(&uf, "user.foo").unwrap(), b"bar");
    assert_eq!(lgetxattr(&uf, "trusted.baz").unwrap(), b"qux");
    assert_eq!(lgetxattr(&uf, "user.trigger").unwrap(), b"1");
    // data trigger: append
    append(&l.mnt.join("g"), "+more");
    let ug = l.upper.join("g");
    let gm = fs::symlink_metadata(&ug).expect("g copied up");
    assert_eq!(read(&ug), "lower-data+more");
    assert_eq!(read(&l.mnt.join("g")), "lower-data+more");
    assert_eq!(gm.mode() & 0o7777, 0o640);
    assert_eq!((gm.uid(), gm.gid()), (1234, 5678));
    assert_eq!(lgetxattr(&ug, "user.foo").unwrap(), b"bar");
    assert_eq!(lgetxattr(&ug, "trusted.baz").unwrap(), b"qux");
    let mm = fs::metadata(l.mnt.join("g")).unwrap();
    assert_eq!(
        (mm.uid(), mm.gid(), mm.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(
        upper_paths(&l),
        names(&["f", "g"]),
        "upper has only the copied-up files"
    );
    m.unmount();
    let lower_after = tree_snapshot_with(
        l.lower(0),
        SnapOpts {
            mtime: true,
            ..Default::default()
        },
    );
    assert_trees_eq(&lower_before, &lower_after, "lower before", "lower after");
}

#[test]
fn copy_up_creates_missing_parents_with_metadata() {
    let l = Layers::new(2);
    let lw = l.lower(1);
    write_file(&lw.join("a/b/c/file"), "deep");
    lchown(&lw.join("a"), 10, 20);
    chmod(&lw.join("a"), 0o750);
    chmod(&lw.join("a/b"), 0o700);
    set_xattr(&lw.join("a/b"), "user.dirattr", b"v");
    chmod(&lw.join("a/b/c"), 0o711);
    for (i, d) in ["a", "a/b", "a/b/c"].iter().enumerate() {
        set_times(&lw.join(d), (900_000_000, 0), (900_000_000 + i as i64, 5)).unwrap();
    }
    let m = l.mount();
    append(&l.mnt.join("a/b/c/file"), "!");
    assert_eq!(read(&l.mnt.join("a/b/c/file")), "deep!");
    let expect = [
        ("a", 0o750, 10, 20),
        ("a/b", 0o700, 0, 0),
        ("a/b/c", 0o711, 0, 0),
    ];
    for (i, (d, mode, uid, gid)) in expect.iter().enumerate() {
        let md = fs::symlink_metadata(l.upper.join(d)).unwrap_or_else(|e| panic!("upper {d}: {e}"));
        assert!(md.is_dir(), "upper {d} is a dir");
        assert_eq!(md.mode() & 0o7777, *mode, "mode of upper {d}");
        assert_eq!((md.uid(), md.gid()), (*uid, *gid), "owner of upper {d}");
        assert_eq!(
            mtime_of(&md),
            (900_000_000 + i as i64, 5),
            "mtime of upper {d}"
        );
    }
    assert_eq!(
        lgetxattr(&l.upper.join("a/b"), "user.dirattr").unwrap(),
        b"v"
    );
    assert_eq!(upper_paths(&l), names(&["a", "a/b", "a/b/c", "a/b/c/file"]));
    assert_eq!(read(&lw.join("a/b/c/file")), "deep", "lower unchanged");
    m.unmount();
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
fn truncate_through_symlink() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("t"), "x".repeat(100));
    symlink("t", &l.lower(0).join("s"));
    write_file(&l.lower(0).join("t2"), "old content");
    symlink("t2", &l.lower(0).join("s2"));
    let m = l.mount();
    let mnt = &l.mnt;
    truncate_path(&mnt.join("s"), 10).unwrap();
    assert_eq!(read(&mnt.join("t")), "x".repeat(10));
    assert!(
        fs::symlink_metadata(mnt.join("s"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(mnt.join("s2"))
        .unwrap();
    f.write_all(b"new").unwrap();
    drop(f);
    assert_eq!(read(&mnt.join("t2")), "new");
    assert_eq!(fs::metadata(l.upper.join("t")).unwrap().len(), 10);
    assert_eq!(
        upper_paths(&l),
        names(&["t", "t2"]),
        "symlinks are not copied up"
    );
    assert_eq!(read(&l.lower(0).join("t")).len(), 100, "lower untouched");
    m.unmount();
}

#[test]
fn setattr_chmod_chown_utimens() {
    let l = Layers::new(1);
    write_file_mode(&l.lower(0).join("f"), "F", 0o644);
    mkdir_mode(&l.lower(0).join("d"), 0o755);
    let m = l.mount();
    let f = l.mnt.join("f");
    chmod(&f, 0o600);
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o600);
    lchown(&f, 1000, 2000);
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    chmod(&f, 0o4750);
    set_times(&f, (100, 5), (200, 7)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((atime_of(&md), mtime_of(&md)), ((100, 5), (200, 7)));
    set_times(&f, (0, libc::UTIME_OMIT), (0, libc::UTIME_NOW)).unwrap();
    let md = fs::metadata(&f).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(atime_of(&md), (100, 5), "UTIME_OMIT keeps atime");
    assert!(
        (md.mtime() - now).abs() < 60,
        "UTIME_NOW mtime {} vs now {now}",
        md.mtime()
    );
    let mt = mtime_of(&md);
    set_times(&f, (300, 0), (0, libc::UTIME_OMIT)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((atime_of(&md), mtime_of(&md)), ((300, 0), mt));
    let u = fs::metadata(l.upper.join("f")).unwrap();
    assert_eq!(
        (u.mode() & 0o7777, u.uid(), u.gid()),
        (0o4750, 1000, 2000),
        "upper attrs"
    );
    assert_eq!((atime_of(&u), mtime_of(&u)), ((300, 0), mt), "upper times");
    chmod(&l.mnt.join("d"), 0o700);
    assert_eq!(
        fs::metadata(l.upper.join("d")).unwrap().mode() & 0o7777,
        0o700
    );
    let lm = fs::metadata(l.lower(0).join("f")).unwrap();
    assert_eq!(
        (lm.mode() & 0o7777, lm.uid()),
        (0o644, 0),
        "lower untouched"
    );
    m.unmount();
}

#[test]
fn mknod_fifo_and_device() {
    let l = Layers::new(1);
    mkdir(&l.lower(0).join("d"));
    let m = l.mount();
    mkfifo(&l.mnt.join("d/p"), 0o640).unwrap();
    let md = fs::symlink_metadata(l.mnt.join("d/p")).unwrap();
    assert!(md.file_type().is_fifo(), "fifo through mount");
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert!(
        fs::symlink_metadata(l.upper.join("d/p"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    mknod(&l.mnt.join("null"), libc::S_IFCHR | 0o600, 1, 3).unwrap();
    let md = fs::symlink_metadata(l.mnt.join("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    assert_eq!(list_names(&l.mnt), names(&["d", "null"]));
    m.unmount();
}

#[test]
fn symlink_and_readlink() {
    let l = Layers::new(1);
    symlink("../elsewhere", &l.lower(0).join("old"));
    let m = l.mount();
    let mnt = &l.mnt;
    assert_eq!(
        fs::read_link(mnt.join("old")).unwrap().to_str(),
        Some("../elsewhere")
    );
    std::os::unix::fs::symlink("target/x", mnt.join("ln")).unwrap();
    assert!(
        fs::symlink_metadata(mnt.join("ln"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(mnt.join("ln")).unwrap().to_str(),
        Some("target/x")
    );
    assert_eq!(
        fs::read_link(l.upper.join("ln")).unwrap().to_str(),
        Some("target/x")
    );
    assert_errno(
        fs::read_link(mnt.join("nope")),
        libc::ENOENT,
        "readlink missing",
    );
    m.unmount();
}

#[test]
fn xattr_set_get_list_remove() {
    let l = Layers::new(1);
    let lf = l.lower(0).join("f");
    write_file(&lf, "F");
    set_xattr(&lf, "user.lower", b"L");
    set_xattr(&lf, "trusted.t", b"T");
    set_xattr(&lf, "trusted.overlay.junk", b"j");
    set_xattr(&lf, "user.overlay.junk", b"j");
    mkdir(&l.lower(0).join("d"));
    let m = l.mount();
    let f = l.mnt.join("f");
    assert_eq!(llistxattr(&f).unwrap(), names(&["trusted.t", "user.lower"]));
    assert_eq!(lgetxattr(&f, "user.lower").unwrap(), b"L");
    set_xattr(&f, "user.new", b"N");
    assert_eq!(lgetxattr(&f, "user.new").unwrap(), b"N");
    assert_eq!(
        llistxattr(&f).unwrap(),
        names(&["trusted.t", "user.lower", "user.new"])
    );
    assert_errno(
        lsetxattr(&f, "user.new", b"x", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE",
    );
    assert_errno(
        lsetxattr(&f, "user.missing", b"x", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE",
    );
    lsetxattr(&f, "user.new", b"N2", libc::XATTR_REPLACE).unwrap();
    assert_eq!(lgetxattr(&f, "user.new").unwrap(), b"N2");
    lremovexattr(&f, "user.lower").unwrap();
    assert_errno(lgetxattr(&f, "user.lower"), libc::ENODATA, "get removed");
    assert_errno(
        lremovexattr(&f, "user.lower"),
        libc::ENODATA,
        "remove twice",
    );
    assert_eq!(llistxattr(&f).unwrap(), names(&["trusted.t", "user.new"]));
    let uf = l.upper.join("f");
    assert_eq!(lgetxattr(&uf, "user.new").unwrap(), b"N2");
    assert_errno(
        lgetxattr(&uf, "user.lower"),
        libc::ENODATA,
        "upper lacks removed xattr",
    );
    assert_eq!(
        lgetxattr(&lf, "user.lower").unwrap(),
        b"L",
        "lower untouched"
    );
    set_xattr(&l.mnt.join("d"), "user.dx", b"D");
    assert_eq!(llistxattr(&l.mnt.join("d")).unwrap(), names(&["user.dx"]));
    assert_eq!(lgetxattr(&l.upper.join("d"), "user.dx").unwrap(), b"D");
    m.unmount();
}

#[test]
fn readdir_dino_and_dtype() {
    let l = Layers::new(2);
    let (l0, l1) = (l.lower(0), l.lower(1));
    write_file(&l1.join("f1"), "1");
    write_file(&l1.join("dd/inner"), "i");
    write_file(&l0.join("dd/top"), "t");
    symlink("f1", &l1.join("sl"));
    mkfifo(&l1.join("ff"), 0o644).unwrap();
    mknod(&l1.join("cd"), libc::S_IFCHR | 0o644, 1, 3).unwrap();
    write_file(&l0.join("f0"), "0");
    write_file(&l1.join("f0"), "shadowed");
    let m = l.mount();
    let mnt = &l.mnt;
    fs::write(mnt.join("new"), "n").unwrap();
    let all = names(&["cd", "dd", "f0", "f1", "ff", "new", "sl"]);
    assert_eq!(check_dirents(mnt), all);
    assert_eq!(check_dirents(&mnt.join("dd")), names(&["inner", "top"]));
    append(&mnt.join("f1"), "copy-up");
    fs::write(mnt.join("dd/new2"), "").unwrap();
    assert_eq!(check_dirents(mnt), all);
    assert_eq!(
        check_dirents(&mnt.join("dd")),
        names(&["inner", "new2", "top"])
    );
    m.unmount();
}

#[test]
fn seekdir_telldir() {
    let l = Layers::new(1);
    for i in 0..30 {
        write_file(&l.lower(0).join(format!("d/low{i:02}")), "");
    }
    let m = l.mount();
    let d = l.mnt.join("d");
    for i in 0..30 {
        fs::write(d.join(format!("up{i:02}")), "").unwrap();
    }
    let ents = readdir_raw(&d);
    assert_eq!(ents.len(), 62, "60 entries + dots");
    let c = cstr(&d);
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!dir.is_null());
    for k in [0usize, 17, 45, 61, 3] {
        unsafe { libc::seekdir(dir, ents[k].pos as libc::c_long) };
        let e = unsafe { libc::readdir(dir) };
        assert!(!e.is_null(), "readdir after seekdir to entry {k}");
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        assert_eq!(name.to_str().unwrap(), ents[k].name, "seekdir to entry {k}");
    }
    unsafe { libc::rewinddir(dir) };
    let e = unsafe { libc::readdir(dir) };
    let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
    assert_eq!(name.to_str().unwrap(), ents[0].name, "rewinddir");
    unsafe { libc::closedir(dir) };
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
fn statfs_reports_upper_fs() {
    let l = Layers::new(1);
    let m = l.mount();
    let s = statvfs(&l.mnt).unwrap();
    let u = statvfs(&l.upper).unwrap();
    assert!(
        s.f_bsize > 0 && s.f_blocks > 0 && s.f_namemax > 0,
        "statfs: bsize {} blocks {}",
        s.f_bsize,
        s.f_blocks
    );
    let total = |v: &libc::statvfs| v.f_blocks as f64 * v.f_frsize as f64;
    let ratio = total(&s) / total(&u);
    assert!(
        (0.99..1.01).contains(&ratio),
        "size {} vs upper fs {}",
        total(&s),
        total(&u)
    );
    m.unmount();
}

#[test]
fn fallocate_on_lower_file() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "abc");
    let m = l.mount();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.mnt.join("f"))
        .unwrap();
    let fd = f.as_raw_fd();
    assert_eq!(
        unsafe { libc::fallocate(fd, 0, 0, 1 << 20) },
        0,
        "fallocate: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    assert_eq!(
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 2 << 20) },
        0
    );
    assert_eq!(f.metadata().unwrap().len(), 1 << 20, "KEEP_SIZE");
    let mut head = [0u8; 3];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"abc");
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(
        unsafe { libc::fallocate(fd, punch, 0, 4096) },
        0,
        "punch: {}",
        std::io::Error::last_os_error()
    );
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, [0, 0, 0], "punched hole reads zeros");
    drop(f);
    assert_eq!(fs::metadata(l.upper.join("f")).unwrap().len(), 1 << 20);
    assert_eq!(read(&l.lower(0).join("f")), "abc");
    m.unmount();
}

#[test]
fn lseek_data_hole() {
    let l = Layers::new(1);
    let lf = fs::File::create(l.lower(0).join("sparse")).unwrap();
    lf.write_all_at(&[1u8; 4096], 0).unwrap();
    lf.write_all_at(&[2u8; 4096], 1 << 20).unwrap();
    drop(lf);
    let m = l.mount();
    check_seek(&fs::File::open(l.mnt.join("sparse")).unwrap(), "lower file");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(l.mnt.join("new"))
        .unwrap();
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    f.write_all_at(&[2u8; 4096], 1 << 20).unwrap();
    f.sync_all().unwrap();
    check_seek(&f, "upper file");
    drop(f);
    m.unmount();
}

#[test]
fn copy_file_range_between_files() {
    let l = Layers::new(1);
    let data = pattern(100_000, 7);
    write_file(&l.lower(0).join("src"), &data);
    write_file(&l.lower(0).join("dst2"), vec![b'z'; 1000]);
    let m = l.mount();
    let src = fs::File::open(l.mnt.join("src")).unwrap();
    let dst = fs::File::create(l.mnt.join("dst")).unwrap();
    copy_range(&src, &dst, 0, 0, data.len());
    drop(dst);
    assert_eq!(fs::read(l.mnt.join("dst")).unwrap(), data);
    let dst2 = OpenOptions::new()
        .write(true)
        .open(l.mnt.join("dst2"))
        .unwrap();
    copy_range(&src, &dst2, 10, 500, 1000);
    drop((dst2, src));
    let mut want = vec![b'z'; 500];
    want.extend_from_slice(&data[10..1010]);
    assert_eq!(
        fs::read(l.mnt.join("dst2")).unwrap(),
        want,
        "copy into lower file"
    );
    assert_eq!(fs::read(l.upper.join("dst2")).unwrap(), want);
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
fn st_ino_stable_across_copy_up() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("f"), "F");
    write_file(&l.lower(1).join("g"), "G");
    write_file(&l.lower(0).join("d/x"), "X");
    let m = l.mount();
    let mnt = &l.mnt;
    let ino = |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap().ino();
    let (f0, g0, d0) = (ino("f"), ino("g"), ino("d"));
    assert_ne!(f0, g0, "distinct files have distinct st_ino");
    let ro = fs::File::open(mnt.join("f")).unwrap();
    append(&mnt.join("f"), "+");
    lchown(&mnt.join("g"), 7, 7);
    fs::write(mnt.join("d/new"), "").unwrap();
    assert!(lstat_opt(&l.upper.join("f")).is_some(), "f was copied up");
    assert_eq!(ino("f"), f0, "st_ino of f changed by copy-up");
    assert_eq!(
        ro.metadata().unwrap().ino(),
        f0,
        "fstat of fd opened before copy-up"
    );
    assert_eq!(ino("g"), g0, "st_ino of g changed by metadata copy-up");
    assert_eq!(ino("d"), d0, "st_ino of dir changed by copy-up");
    drop(ro);
    m.unmount();
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
fn concurrent_writers_single_copy_up() {
    let l = Layers::new(1);
    const FILES: usize = 10;
    const THREADS: usize = 8;
    let orig = pattern(THREADS * 4096 * 4, 3);
    for i in 0..FILES {
        write_file(&l.lower(0).join(format!("f{i}")), &orig);
    }
    let m = l.mount();
    for i in 0..FILES {
        let p = l.mnt.join(format!("f{i}"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (p, b) = (p.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .expect("open for write");
                    f.write_all_at(&[t as u8 + 1; 4096], (t * 4096) as u64)
                        .unwrap();
                    f.metadata().unwrap().ino()
                })
            })
            .collect();
        let inos: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            inos.iter().all(|x| *x == inos[0]),
            "st_ino differs between writers: {inos:?}"
        );
        let mut want = orig.clone();
        for t in 0..THREADS {
            want[t * 4096..(t + 1) * 4096].fill(t as u8 + 1);
        }
        assert!(
            fs::read(&p).unwrap() == want,
            "merged content of f{i} inconsistent"
        );
        assert!(
            fs::read(l.upper.join(format!("f{i}"))).unwrap() == want,
            "upper f{i} content"
        );
    }
    let want: Vec<String> = (0..FILES).map(|i| format!("f{i}")).collect();
    assert_eq!(
        upper_paths(&l),
        names(&want.iter().map(|s| s.as_str()).collect::<Vec<_>>())
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
fn open_file_survives_unlink_and_mmap_writes_copy_up() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "hello");
    write_file(&l.lower(0).join("m"), "mmap-me");
    let m = l.mount();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.mnt.join("f"))
        .unwrap();
    fs::remove_file(l.mnt.join("f")).unwrap();
    assert_enoent(&l.mnt.join("f"));
    f.write_all_at(b"HE", 0).unwrap();
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"HEllo", "fd of an unlinked file still works");
    drop(f);
    assert_whiteout(&l.upper.join("f"));
    let mf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.mnt.join("m"))
        .unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            7,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            mf.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        std::ptr::copy_nonoverlapping(b"MMAP".as_ptr(), p as *mut u8, 4);
        assert_eq!(libc::msync(p, 7, libc::MS_SYNC), 0);
        libc::munmap(p, 7);
    }
    drop(mf);
    assert_eq!(read(&l.mnt.join("m")), "MMAP-me");
    assert_eq!(read(&l.upper.join("m")), "MMAP-me");
    assert_eq!(read(&l.lower(0).join("m")), "mmap-me");
    m.unmount();
}

#[test]
fn copy_up_of_special_files_and_o_trunc() {
    let l = Layers::new(1);
    symlink("target", &l.lower(0).join("sl"));
    mkfifo(&l.lower(0).join("fifo"), 0o644).unwrap();
    write_file(&l.lower(0).join("t"), "truncate me");
    let m = l.mount();
    lchown(&l.mnt.join("sl"), 5, 6);
    chmod(&l.mnt.join("fifo"), 0o600);
    let u = fs::symlink_metadata(l.upper.join("sl")).unwrap();
    assert!(u.file_type().is_symlink(), "symlink copied up as symlink");
    assert_eq!((u.uid(), u.gid()), (5, 6));
    assert_eq!(
        fs::read_link(l.upper.join("sl")).unwrap().to_str(),
        Some("target")
    );
    let u = fs::symlink_metadata(l.upper.join("fifo")).unwrap();
    assert!(u.file_type().is_fifo());
    assert_eq!(u.mode() & 0o7777, 0o600);
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(l.mnt.join("t"))
            .unwrap(),
    );
    assert_eq!(read(&l.mnt.join("t")), "");
    assert_eq!(read(&l.upper.join("t")), "");
    assert_eq!(read(&l.lower(0).join("t")), "truncate me");
    m.unmount();
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
