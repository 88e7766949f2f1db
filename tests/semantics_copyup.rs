//! One or more tests per behaviour in notes/SPEC.md, each on its own layers and mount:
//! copy-up, setattr, xattrs, special files, data operations.

use crate::common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

fn upper_paths(l: &Layers) -> Vec<String> {
    all_paths(&l.upper)
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

fn getcap(p: &Path) -> String {
    let out = std::process::Command::new("getcap")
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "getcap {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// chown clears file capabilities, so a copy-up sets them after the owner,
/// as the kernel does; other security.* xattrs and user xattrs stay too.
#[test]
fn copy_up_keeps_file_capabilities() {
    let l = Layers::new(1);
    let f = l.lower(0).join("ping");
    write_file_mode(&f, "binary", 0o755);
    lchown(&f, 1234, 5678);
    let out = std::process::Command::new("setcap")
        .args(["cap_net_raw+ep"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "setcap: {:?}", out);
    set_xattr(&f, "user.other", b"kept");
    let want = getcap(&f);
    assert_eq!(want, "cap_net_raw=ep");
    let raw = lgetxattr(&f, "security.capability").unwrap();

    let m = l.mount();
    chmod(&m.mnt.join("ping"), 0o750);
    assert_eq!(getcap(&m.mnt.join("ping")), want, "merged view");
    assert_eq!(getcap(&l.upper.join("ping")), want, "upper");
    assert_eq!(
        lgetxattr(&l.upper.join("ping"), "security.capability").unwrap(),
        raw
    );
    assert_eq!(
        lgetxattr(&l.upper.join("ping"), "user.other").unwrap(),
        b"kept"
    );
    let meta = fs::symlink_metadata(l.upper.join("ping")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o750)
    );
    m.unmount();

    // The kernel, on the same lower file with a fresh upper.
    fs::remove_file(l.upper.join("ping")).unwrap();
    let k = l.kernel_mount("k");
    chmod(&k.mnt.join("ping"), 0o750);
    assert_eq!(getcap(&k.mnt.join("ping")), want, "kernel merged view");
    assert_eq!(getcap(&l.upper.join("ping")), want, "kernel upper");
    k.unmount();
}
