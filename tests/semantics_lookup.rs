//! One or more tests per behaviour in notes/SPEC.md, each on its own layers and mount:
//! name resolution, whiteouts, opaque dirs, readdir, inode numbers.

use crate::common::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

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
fn missing_names_are_cached_and_created_ones_replace_them() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("d/present"), "p");
    let m = l.mount();
    let mnt = &l.mnt;
    let missing = mnt.join("d/missing");
    assert!(fs::symlink_metadata(&missing).is_err(), "missing at first");
    // Made behind the mount's back: the kernel keeps its negative entry
    // (all changes are to go through the mount, as for kernel overlayfs).
    fs::create_dir_all(l.upper.join("d")).unwrap();
    write_file(&l.upper.join("d/missing"), "behind");
    assert!(
        fs::symlink_metadata(&missing).is_err(),
        "a missing name is remembered (negative dentry)"
    );
    fs::remove_file(l.upper.join("d/missing")).unwrap();
    // Through the mount: created, renamed onto and over, all seen at once.
    write_file(&missing, "made");
    assert_eq!(read(&missing), "made");
    let other = mnt.join("d/other");
    assert!(fs::symlink_metadata(&other).is_err());
    fs::rename(&missing, &other).unwrap();
    assert_eq!(read(&other), "made");
    assert!(fs::symlink_metadata(&missing).is_err());
    fs::create_dir(&missing).unwrap();
    assert!(fs::symlink_metadata(&missing).unwrap().is_dir());
    m.unmount();
}

#[test]
fn a_dir_copied_up_for_a_child_shows_its_copy_s_attributes() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("a/b/f"), "x");
    let m = l.mount();
    let mnt = &l.mnt;
    let before = fs::symlink_metadata(mnt.join("a")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Copies up a and a/b as a side effect of a request about f.
    append(&mnt.join("a/b/f"), "y");
    let upper_a = fs::symlink_metadata(l.upper.join("a")).unwrap();
    let after = fs::symlink_metadata(mnt.join("a")).unwrap();
    assert_ne!(
        (before.ctime(), before.ctime_nsec()),
        (upper_a.ctime(), upper_a.ctime_nsec()),
        "the copy's ctime differs from the lower dir's"
    );
    assert_eq!(
        (after.ctime(), after.ctime_nsec()),
        (upper_a.ctime(), upper_a.ctime_nsec()),
        "stat of a shows its copy's ctime, not the lower dir's cached one"
    );
    assert_eq!(after.ino(), before.ino(), "same inode number");
    m.unmount();
}
