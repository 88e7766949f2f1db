//! Tests of the overlay core without FUSE: each builds small layer trees with
//! std::fs, drives `Overlay` directly, and checks both the merged view and
//! what ends up in the upper dir on disk.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use cowfs::attr::SetAttr;
use cowfs::error::Errno;
use cowfs::inode::{Inode, ROOT_INO};
use cowfs::layer::LayerStack;
use cowfs::listing::DirEntry;
use cowfs::namespace::{NewKind, NewObject};

const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
use cowfs::overlay::{Overlay, OverlayOptions};
use cowfs::sys::{FileType, OFlags};
use cowfs::workdir::WorkDir;
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

/// An upper dir, a work dir and `n` lower dirs (top first) in one temp dir.
struct Env {
    _tmp: TempDir,
    upper: PathBuf,
    work: PathBuf,
    lowers: Vec<PathBuf>,
}

impl Env {
    fn new(n: usize) -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mk = |name: &str| {
            let p = tmp.path().join(name);
            fs::create_dir(&p).expect("mkdir layer");
            p
        };
        let (upper, work) = (mk("upper"), mk("work"));
        let lowers = (0..n).map(|i| mk(&format!("lower{i}"))).collect();
        let _tmp = tmp;
        Env {
            _tmp,
            upper,
            work,
            lowers,
        }
    }

    /// A path in lower `i` (0 is the top lower).
    fn l(&self, i: usize, rel: &str) -> PathBuf {
        self.lowers[i].join(rel)
    }

    /// A path in the upper dir.
    fn u(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    fn mount(&self) -> Overlay {
        let layers = LayerStack::open(Some(&self.upper), &self.lowers).expect("open layers");
        let work = WorkDir::prepare(&self.work).expect("prepare work dir");
        Overlay::new(layers, Some(work), OverlayOptions::default()).expect("new overlay")
    }

    fn mount_ro(&self) -> Overlay {
        let layers = LayerStack::open(None, &self.lowers).expect("open layers");
        Overlay::new(layers, None, OverlayOptions::default()).expect("new overlay")
    }

    /// Sorted names in the upper root.
    fn upper_names(&self) -> Vec<String> {
        disk_names(&self.upper)
    }

    /// Asserts the work dir's `work` subdir holds nothing.
    fn assert_work_clean(&self) {
        let left = disk_names(&self.work.join("work"));
        assert!(left.is_empty(), "work dir leftovers: {left:?}");
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Writes a file, creating its parent dirs.
fn put(path: &Path, data: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"))
}

/// A kernel whiteout: a 0/0 char device.
fn whiteout(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let rc = unsafe { libc::mknod(cpath(path).as_ptr(), libc::S_IFCHR | 0o600, 0) };
    assert_eq!(rc, 0, "mknod whiteout {path:?}");
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let (v, len) = (value.as_ptr().cast(), value.len());
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), v, len, 0) };
    assert_eq!(rc, 0, "setxattr {name} on {path:?}");
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    let (b, len) = (buf.as_mut_ptr().cast(), buf.len());
    let got = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), b, len) };
    (got >= 0).then(|| buf[..got as usize].to_vec())
}

/// Sorted names in a real dir.
fn disk_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn root(ov: &Overlay) -> Arc<Inode> {
    ov.inode(ROOT_INO).expect("root inode")
}

/// Looks up a slash-separated path from the root.
fn walk(ov: &Overlay, path: &str) -> Result<Arc<Inode>, Errno> {
    let mut cur = root(ov);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur = ov.lookup(&cur, os(part))?.0;
    }
    Ok(cur)
}

fn must(ov: &Overlay, path: &str) -> Arc<Inode> {
    walk(ov, path).unwrap_or_else(|e| panic!("lookup {path}: {e}"))
}

/// The parent inode and last name of a path.
fn split<'a>(ov: &Overlay, path: &'a str) -> (Arc<Inode>, &'a OsStr) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (must(ov, dir), os(name))
}

/// The st_ino that lookup reports.
fn ino_of(ov: &Overlay, path: &str) -> u64 {
    let (dir, name) = split(ov, path);
    let found = ov.lookup(&dir, name);
    found.unwrap_or_else(|e| panic!("lookup {path}: {e}")).1.ino
}

fn rm(ov: &Overlay, path: &str, is_dir: bool) -> Result<(), Errno> {
    let (dir, name) = split(ov, path);
    ov.remove(&dir, name, is_dir)
}

/// Renames within the root.
fn mv(ov: &Overlay, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
    let r = root(ov);
    ov.rename(
        &r,
        os(from),
        &r,
        os(to),
        cowfs::sys::RenameFlags::from_bits_retain(flags),
    )
}

/// Sorted merged names of a dir; fails on duplicates.
fn merged(ov: &Overlay, path: &str) -> Vec<String> {
    let entries = ov.list_dir(&must(ov, path));
    let entries = entries.unwrap_or_else(|e| panic!("list_dir {path}: {e}"));
    let name = |e: DirEntry| e.name.to_string_lossy().into_owned();
    let mut v: Vec<String> = entries.into_iter().map(name).collect();
    v.sort();
    let n = v.len();
    v.dedup();
    assert_eq!(v.len(), n, "list_dir({path:?}) has duplicates: {v:?}");
    v
}

fn read_fh(ov: &Overlay, fh: u64) -> String {
    String::from_utf8(ov.read(fh, 0, 1 << 20).expect("read")).unwrap()
}

fn cat(ov: &Overlay, path: &str) -> String {
    let fh = ov.open(&must(ov, path), libc::O_RDONLY).expect("open").fh;
    let data = read_fh(ov, fh);
    ov.release(fh);
    data
}

fn obj(kind: NewKind<'_>) -> NewObject<'_> {
    let (mode, uid, gid) = (0o644, 0, 0);
    NewObject {
        kind,
        mode,
        umask: 0,
        uid,
        gid,
    }
}

fn file() -> NewObject<'static> {
    let flags = OFlags::WRONLY;
    obj(NewKind::File { flags })
}

fn chmod(mode: u32) -> SetAttr {
    let mode = Some(mode);
    SetAttr {
        mode,
        ..SetAttr::default()
    }
}

fn mkdir(ov: &Overlay, path: &str) -> Result<(), Errno> {
    let (dir, name) = split(ov, path);
    ov.create(&dir, name, obj(NewKind::Dir)).map(drop)
}

/// Creates a file in the merged view holding `data`.
fn create_file(ov: &Overlay, path: &str, data: &str) {
    let (dir, name) = split(ov, path);
    let made = ov.create(&dir, name, file());
    let (inode, _, _) = made.unwrap_or_else(|e| panic!("create {path}: {e}"));
    let fh = ov.open(&inode, libc::O_WRONLY).unwrap().fh;
    assert_eq!(ov.write(fh, 0, data.as_bytes()), Ok(data.len()));
    ov.release(fh);
}

// ------------------------------------------------------------------ tests

#[test]
fn three_lowers_resolve_top_down() {
    let env = Env::new(3);
    for i in 0..3 {
        put(&env.l(i, "a"), &format!("a{i}"));
        put(&env.l(i, &format!("d/only{i}")), &format!("o{i}"));
        put(&env.l(i, "d/shared"), &format!("s{i}"));
    }
    put(&env.l(1, "b"), "b1");
    put(&env.l(2, "b"), "b2");
    put(&env.l(2, "c"), "c2");
    put(&env.l(0, "fd"), "file over dir");
    put(&env.l(1, "fd/hidden"), "");
    let ov = env.mount();

    assert_eq!(cat(&ov, "a"), "a0", "the top lower wins");
    assert_eq!(cat(&ov, "b"), "b1", "middle wins over bottom");
    assert_eq!(cat(&ov, "c"), "c2", "a bottom-only file shows");
    assert_eq!(cat(&ov, "d/shared"), "s0");
    assert_eq!(cat(&ov, "d/only2"), "o2");
    assert_eq!(cat(&ov, "fd"), "file over dir", "file hides dir");
    assert_eq!(merged(&ov, ""), ["a", "b", "c", "d", "fd"]);
    let d = ["only0", "only1", "only2", "shared"];
    assert_eq!(merged(&ov, "d"), d);
    let lower_ino = fs::metadata(env.l(0, "a")).unwrap().ino();
    assert_eq!(ino_of(&ov, "a"), lower_ino, "st_ino of top lower a");
    assert!(env.upper_names().is_empty(), "reads wrote upper");
}

#[test]
fn whiteouts_hide_lower_entries_and_are_never_listed() {
    let env = Env::new(2);
    for name in ["a", "b", "c", "keep", "d/x"] {
        put(&env.l(1, name), "lower");
    }
    whiteout(&env.l(0, "a"));
    put(&env.l(0, ".wh.b"), "");
    whiteout(&env.u("c"));
    put(&env.u(".wh.d"), "");
    put(&env.u(".wh.ghost"), ""); // hides nothing, shows nothing
    let ov = env.mount();

    assert_eq!(merged(&ov, ""), ["keep"], "whited-out names listed");
    for name in ["a", "b", "c", "d", ".wh.b", ".wh.d", "ghost"] {
        let found = walk(&ov, name).err();
        assert_eq!(found, Some(Errno::NOENT), "lookup of {name:?}");
    }
    // A whiteout hides only the layers below it.
    put(&env.u("a"), "upper a");
    assert_eq!(cat(&ov, "a"), "upper a");
}

#[test]
fn opaque_dirs_hide_lower_dirs() {
    let env = Env::new(2);
    for p in ["x/old", "y/old", "z/old"] {
        put(&env.l(1, p), "");
    }
    for p in ["x/new", "y/new", "z/new", "y/.wh..wh..opq"] {
        put(&env.l(0, p), "");
    }
    set_xattr(&env.l(0, "x"), "trusted.overlay.opaque", b"y");
    set_xattr(&env.l(0, "z"), "trusted.overlay.opaque", b"n");
    let ov = env.mount();

    assert_eq!(merged(&ov, "x"), ["new"], "xattr-opaque dir");
    assert_eq!(merged(&ov, "y"), ["new"], "OCI-opaque dir");
    let z = ["new", "old"];
    assert_eq!(merged(&ov, "z"), z, "opaque=n is transparent");
    assert_eq!(walk(&ov, "x/old").err(), Some(Errno::NOENT));
    assert_eq!(walk(&ov, "y/old").err(), Some(Errno::NOENT));
}

#[test]
fn list_dir_dedups_and_d_ino_matches_lookup() {
    let env = Env::new(2);
    for layer in [env.l(0, ""), env.l(1, ""), env.u("")] {
        put(&layer.join("same"), "x");
        put(&layer.join("dir/f"), "x");
    }
    put(&env.l(1, "low_only"), "x");
    put(&env.l(0, "copied"), "x");
    put(&env.l(1, "copied"), "x");
    std::os::unix::fs::symlink("same", env.l(1, "link")).unwrap();
    put(&env.u("up_only"), "x");
    let ov = env.mount();
    ov.copy_up(&must(&ov, "copied")).expect("copy_up");

    let r = root(&ov);
    let entries = ov.list_dir(&r).unwrap();
    let all = ["copied", "dir", "link", "low_only", "same", "up_only"];
    assert_eq!(merged(&ov, ""), all);
    for e in &entries {
        let (_, attr) = ov.lookup(&r, &e.name).unwrap();
        assert_eq!(e.ino, attr.ino, "d_ino vs lookup ino of {:?}", e.name);
        let kind = FileType::from_raw_mode(attr.stat.st_mode);
        assert_eq!(e.kind, kind, "d_type of {:?}", e.name);
    }
    // readdir by offset reports the same numbers, plus . and ..
    let listing = ov.readdir(&r, 0).unwrap();
    let got: Vec<(String, u64)> = listing
        .entries_after(0)
        .map(|(_, e)| (e.name.to_string_lossy().into_owned(), e.ino))
        .collect();
    let dots = [(".".into(), ROOT_INO), ("..".into(), ROOT_INO)];
    assert_eq!(&got[..2], &dots, "readdir starts with . and ..");
    for e in &entries {
        let name = e.name.to_string_lossy().into_owned();
        assert!(got.contains(&(name, e.ino)), "readdir lacks {:?}", e.name);
    }
}

#[test]
fn copy_up_keeps_data_metadata_and_xattrs() {
    let env = Env::new(1);
    let (lower_f, lower_a) = (env.l(0, "a/b/f"), env.l(0, "a"));
    put(&lower_f, "payload");
    fs::set_permissions(&lower_f, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(&lower_f, Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(&lower_a, Some(42), Some(43)).unwrap();
    fs::set_permissions(&lower_a, fs::Permissions::from_mode(0o750)).unwrap();
    set_xattr(&lower_f, "user.color", b"blue");
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    let f = fs::File::options().write(true).open(&lower_f).unwrap();
    f.set_modified(mtime).unwrap();
    let before = fs::metadata(&lower_f).unwrap();
    let ov = env.mount();
    let inode = must(&ov, "a/b/f");
    let ino_before = ov.attr_of(&inode).unwrap().ino;

    ov.copy_up(&inode).expect("copy_up");
    let up_f = env.u("a/b/f");
    let up = fs::symlink_metadata(&up_f).expect("upper copy exists");
    assert_eq!(text(&up_f), "payload");
    assert_eq!(up.mode(), before.mode(), "mode");
    assert_eq!((up.uid(), up.gid()), (1234, 5678), "owner");
    assert_eq!((up.mtime(), up.mtime_nsec()), (1_000_000_000, 123_456_789));
    let color = get_xattr(&up_f, "user.color");
    assert_eq!(color.as_deref(), Some(&b"blue"[..]), "user xattr");
    let up_a = fs::symlink_metadata(env.u("a")).expect("parent copied up");
    let a_meta = (up_a.uid(), up_a.gid(), up_a.mode() & 0o7777);
    assert_eq!(a_meta, (42, 43, 0o750), "parent dir owner and mode");
    assert!(env.u("a/b").is_dir(), "intermediate parent copied up");
    assert_eq!(ov.attr_of(&inode).unwrap().ino, ino_before, "attr ino");
    // Overlay's own xattrs stay private.
    let list = ov.listxattr(&inode).unwrap();
    assert_eq!(list, b"user.color\0".to_vec(), "listxattr after copy-up");
    let color = ov.getxattr(&inode, os("user.color"));
    assert_eq!(color, Ok(b"blue".to_vec()));

    // Writing and chmod go to the copy only.
    let fh = ov.open(&inode, libc::O_WRONLY).unwrap().fh;
    assert_eq!(ov.write(fh, 0, b"PAY"), Ok(3));
    ov.release(fh);
    let chmod = chmod(0o600);
    ov.setattr(&inode, &chmod, None).unwrap();
    assert_eq!(cat(&ov, "a/b/f"), "PAYload");
    assert_eq!(text(&up_f), "PAYload");
    assert_eq!(fs::metadata(&up_f).unwrap().mode() & 0o7777, 0o600);
    let after = fs::metadata(&lower_f).unwrap();
    assert_eq!(text(&lower_f), "payload", "lower data");
    assert_eq!(after.mode(), before.mode(), "lower mode");
    assert_eq!(after.mtime(), before.mtime(), "lower mtime");
    env.assert_work_clean();
}

#[test]
fn copy_up_keeps_st_ino_and_symlink_target() {
    let env = Env::new(1);
    put(&env.l(0, "f"), "x");
    std::os::unix::fs::symlink("target/path", env.l(0, "l")).unwrap();
    let ov = env.mount();
    let lower_ino = fs::metadata(env.l(0, "f")).unwrap().ino();
    assert_eq!(ino_of(&ov, "f"), lower_ino);
    for name in ["f", "l"] {
        let before = ino_of(&ov, name);
        let inode = must(&ov, name);
        ov.copy_up(&inode).unwrap();
        let copied = fs::symlink_metadata(env.u(name)).is_ok();
        assert!(copied, "{name} not copied up");
        // Also after the kernel forgot it: a fresh lookup.
        ov.forget(inode.ino, inode.lookup_count());
        drop(inode);
        assert_eq!(ino_of(&ov, name), before, "st_ino of {name}");
    }
    let link = must(&ov, "l");
    assert_eq!(ov.readlink(&link), Ok(b"target/path".to_vec()));
    let target = fs::read_link(env.u("l")).unwrap();
    assert_eq!(target, Path::new("target/path"));
}

#[test]
fn remove_leaves_whiteout_only_where_lower_has_the_name() {
    let env = Env::new(1);
    put(&env.l(0, "low"), "lower data");
    put(&env.l(0, "copied"), "lower data");
    let ov = env.mount();
    create_file(&ov, "fresh", "new");
    ov.copy_up(&must(&ov, "copied")).unwrap();

    for name in ["low", "copied", "fresh"] {
        rm(&ov, name, false).unwrap_or_else(|e| panic!("unlink {name}: {e}"));
        let found = walk(&ov, name).err();
        assert_eq!(found, Some(Errno::NOENT), "{name} after unlink");
    }
    assert!(is_whiteout(&env.u("low")), "whiteout for lower file");
    assert!(is_whiteout(&env.u("copied")), "whiteout for copied-up file");
    let names = env.upper_names();
    assert_eq!(names, ["copied", "low"], "upper-only file left traces");
    assert!(merged(&ov, "").is_empty());
    assert_eq!(rm(&ov, "low", false), Err(Errno::NOENT), "second unlink");
    assert_eq!(text(&env.l(0, "low")), "lower data");

    // A new file over the whiteout is new, and the whiteout is gone.
    create_file(&ov, "low", "again");
    assert_eq!(cat(&ov, "low"), "again");
    let meta = fs::symlink_metadata(env.u("low")).unwrap();
    assert!(meta.is_file(), "upper low is a regular file");
    env.assert_work_clean();
}

#[test]
fn rmdir_then_mkdir_gives_an_empty_opaque_dir() {
    let env = Env::new(1);
    put(&env.l(0, "d/x"), "");
    put(&env.l(0, "d/sub/y"), "");
    let ov = env.mount();
    create_file(&ov, "d/up", "");
    for (path, is_dir) in [("d/x", false), ("d/up", false), ("d/sub/y", false)] {
        rm(&ov, path, is_dir).unwrap_or_else(|e| panic!("rm {path}: {e}"));
    }
    rm(&ov, "d/sub", true).expect("rmdir d/sub");
    rm(&ov, "d", true).expect("rmdir d");
    assert!(is_whiteout(&env.u("d")), "whiteout for merged dir");
    assert_eq!(walk(&ov, "d").err(), Some(Errno::NOENT));

    mkdir(&ov, "d").expect("mkdir d");
    let up_d = env.u("d");
    assert!(up_d.is_dir(), "upper d is a dir");
    let opaque = get_xattr(&up_d, "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]), "new dir is opaque");
    assert!(merged(&ov, "d").is_empty(), "lower entries leak into d");
    let left = disk_names(&up_d);
    assert!(left.is_empty(), "upper d holds {left:?}");
    assert_eq!(walk(&ov, "d/x").err(), Some(Errno::NOENT));
    env.assert_work_clean();
}

#[test]
fn rmdir_enotempty_is_judged_on_the_merged_view() {
    let env = Env::new(1);
    put(&env.l(0, "lower_full/x"), "");
    fs::create_dir(env.u("upper_empty")).unwrap();
    put(&env.l(0, "upper_empty/x"), "");
    put(&env.l(0, "all_whited/x"), "");
    whiteout(&env.u("all_whited/x"));
    fs::create_dir(env.l(0, "empty")).unwrap();
    let ov = env.mount();

    for name in ["lower_full", "upper_empty"] {
        assert_eq!(rm(&ov, name, true), Err(Errno::NOTEMPTY), "rmdir {name}");
        let child = walk(&ov, &format!("{name}/x"));
        assert!(child.is_ok(), "{name}/x must survive");
    }
    rm(&ov, "all_whited", true).expect("rmdir of dir with all entries whited out");
    rm(&ov, "empty", true).expect("rmdir empty");
    assert!(is_whiteout(&env.u("all_whited")));
    assert!(is_whiteout(&env.u("empty")));
    assert_eq!(merged(&ov, ""), ["lower_full", "upper_empty"]);
    // rename over a non-empty merged dir is refused too.
    mkdir(&ov, "newdir").unwrap();
    let res = mv(&ov, "newdir", "lower_full", 0);
    assert_eq!(res, Err(Errno::NOTEMPTY), "rename over non-empty dir");
}

#[test]
fn rename_over_lower_file_then_remove_does_not_resurrect() {
    let env = Env::new(1);
    put(&env.l(0, "old"), "lower old");
    put(&env.l(0, "src"), "lower src");
    put(&env.l(0, "victim"), "lower victim");
    let ov = env.mount();
    // In the inode table, as after a stat by the kernel.
    let _old = must(&ov, "old");
    create_file(&ov, "new", "fresh");

    // A new file over a lower file, then gone: the lower file stays hidden.
    mv(&ov, "new", "old", 0).unwrap();
    assert_eq!(cat(&ov, "old"), "fresh");
    assert_eq!(walk(&ov, "new").err(), Some(Errno::NOENT));
    rm(&ov, "old", false).unwrap();
    let old = walk(&ov, "old").err();
    assert_eq!(old, Some(Errno::NOENT), "lower old resurrected");
    assert!(is_whiteout(&env.u("old")), "upper old is a whiteout");

    // A lower file over another lower file, then gone: both stay hidden.
    let _src = must(&ov, "src"); // the kernel looks a source up first
    mv(&ov, "src", "victim", 0).unwrap();
    assert_eq!(cat(&ov, "victim"), "lower src");
    rm(&ov, "victim", false).unwrap();
    let left = merged(&ov, "");
    assert!(left.is_empty(), "resurrected: {left:?}");
    assert!(is_whiteout(&env.u("src")));
    assert!(is_whiteout(&env.u("victim")));
    assert_eq!(env.upper_names(), ["old", "src", "victim"]);
    env.assert_work_clean();
}

#[test]
fn rename_noreplace_and_exchange() {
    let env = Env::new(1);
    put(&env.l(0, "x"), "lower x");
    put(&env.l(0, "y"), "lower y");
    let ov = env.mount();
    let _x = must(&ov, "x");
    create_file(&ov, "u", "upper u");

    let res = mv(&ov, "u", "x", RENAME_NOREPLACE);
    assert_eq!(res, Err(Errno::EXIST), "NOREPLACE over a lower file");
    assert_eq!(cat(&ov, "x"), "lower x");
    assert_eq!(cat(&ov, "u"), "upper u");
    let res = mv(&ov, "u", "nope", RENAME_EXCHANGE);
    assert_eq!(res, Err(Errno::NOENT), "EXCHANGE with a missing name");

    mv(&ov, "x", "u", RENAME_EXCHANGE).expect("exchange lower x, upper u");
    assert_eq!(cat(&ov, "x"), "upper u");
    assert_eq!(cat(&ov, "u"), "lower x");
    assert_eq!(text(&env.u("x")), "upper u");
    assert_eq!(text(&env.u("u")), "lower x");
    assert_eq!(text(&env.l(0, "x")), "lower x");
    assert_eq!(merged(&ov, ""), ["u", "x", "y"]);

    // NOREPLACE onto a whited-out name is allowed.
    rm(&ov, "y", false).unwrap();
    mv(&ov, "u", "y", RENAME_NOREPLACE).expect("NOREPLACE onto a whiteout");
    assert_eq!(cat(&ov, "y"), "lower x");
    assert_eq!(merged(&ov, ""), ["x", "y"]);
    env.assert_work_clean();
}

/// A dir whose content is in a lower layer moves with a redirect: no data
/// is copied, the old name is whited out, and the move survives a remount.
#[test]
fn rename_dir_with_lower_content_moves_by_redirect() {
    let env = Env::new(1);
    put(&env.l(0, "d/f"), "F");
    put(&env.l(0, "d/sub/g"), "G");
    let ov = env.mount();
    let d = must(&ov, "d");
    let ino = d.ino;
    mv(&ov, "d", "e", 0).expect("rename a lower dir");
    assert!(walk(&ov, "d").is_err(), "old name gone");
    assert_eq!(cat(&ov, "e/f"), "F");
    assert_eq!(cat(&ov, "e/sub/g"), "G");
    assert_eq!(ino_of(&ov, "e"), ino, "st_ino kept");
    assert!(is_whiteout(&env.u("d")), "whiteout left at the old name");
    assert!(
        disk_names(&env.u("e")).is_empty(),
        "no data copied: {:?}",
        disk_names(&env.u("e"))
    );
    assert_eq!(
        get_xattr(&env.u("e"), "trusted.overlay.redirect").as_deref(),
        Some(&b"/d"[..])
    );
    mkdir(&ov, "d").unwrap();
    assert!(
        merged(&ov, "d").is_empty(),
        "a new dir at the old name shows no lower entries"
    );
    // Moving it again keeps pointing at the lower dir.
    mv(&ov, "e", "d/deeper", 0).expect("second rename");
    assert_eq!(cat(&ov, "d/deeper/sub/g"), "G");
    drop(ov);
    let ov = env.mount();
    assert_eq!(cat(&ov, "d/deeper/f"), "F", "after remount");
    assert_eq!(ino_of(&ov, "d/deeper"), ino, "st_ino kept across remount");
    assert!(walk(&ov, "e").is_err());
    // An upper-only dir moves without a redirect.
    mkdir(&ov, "u").unwrap();
    create_file(&ov, "u/inner", "i");
    mv(&ov, "u", "v", 0).expect("rename upper-only dir");
    assert_eq!(cat(&ov, "v/inner"), "i");
    assert_eq!(get_xattr(&env.u("v"), "trusted.overlay.redirect"), None);
}

/// Kernel overlayfs keeps reading the old file through an fd opened before
/// the name was replaced (an open file is the object, not the name).
#[test]
fn open_fd_of_a_replaced_lower_file_keeps_its_data() {
    let env = Env::new(1);
    put(&env.l(0, "a"), "A");
    put(&env.l(0, "b"), "B");
    let ov = env.mount();
    let _a = must(&ov, "a");
    let fh_b = ov.open(&must(&ov, "b"), libc::O_RDONLY).unwrap().fh;
    mv(&ov, "a", "b", 0).unwrap();
    assert_eq!(read_fh(&ov, fh_b), "B", "read before a new lookup of b");
    assert_eq!(cat(&ov, "b"), "A", "b now names the old a");
    assert_eq!(read_fh(&ov, fh_b), "B", "read after a new lookup of b");
    ov.release(fh_b);
}

/// Kernel overlayfs (checked with `mount -t overlay` on these ext4 layers)
/// keeps a copied-up file's st_ino across rename and exchange.
#[test]
fn rename_keeps_st_ino() {
    let env = Env::new(1);
    for name in ["a", "b", "x"] {
        put(&env.l(0, name), name);
    }
    let ov = env.mount();
    create_file(&ov, "y", "Y");
    let _b = must(&ov, "b");
    let (a, x, y) = (ino_of(&ov, "a"), ino_of(&ov, "x"), ino_of(&ov, "y"));
    mv(&ov, "a", "c", 0).unwrap();
    assert_eq!(ino_of(&ov, "c"), a, "lower a renamed to new name c");
    mv(&ov, "x", "y", RENAME_EXCHANGE).unwrap();
    assert_eq!(ino_of(&ov, "x"), y, "upper y after exchange");
    assert_eq!(ino_of(&ov, "y"), x, "lower x after exchange");
    mv(&ov, "c", "b", 0).unwrap();
    assert_eq!(ino_of(&ov, "b"), a, "a after rename over lower b");
}

#[test]
fn concurrent_copy_up_copies_once() {
    let env = Env::new(1);
    let data: String = (0..200_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    put(&env.l(0, "dir/big"), &data);
    let ov = env.mount();
    let inode = must(&ov, "dir/big");
    let barrier = Barrier::new(8);
    let copy = || {
        barrier.wait();
        ov.copy_up(&inode).expect("copy_up").real_ino
    };
    let inos: Vec<u64> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8).map(|_| s.spawn(copy)).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let up = env.u("dir/big");
    let up_ino = fs::metadata(&up).expect("upper copy").ino();
    let all_same = inos.iter().all(|&i| i == up_ino);
    assert!(all_same, "copies: {inos:?} vs upper {up_ino}");
    assert_eq!(env.upper_names(), ["dir"]);
    assert_eq!(disk_names(&env.u("dir")), ["big"]);
    assert!(text(&up) == data, "copied data differs");
    env.assert_work_clean();
}

#[test]
fn whiteout_names_cannot_be_created() {
    let env = Env::new(1);
    put(&env.l(0, "f"), "");
    let ov = env.mount();
    let r = root(&ov);
    let _f = must(&ov, "f");
    let target = os("f");
    let kinds = [file().kind, NewKind::Dir, NewKind::Symlink { target }];
    for kind in kinds {
        let res = ov.create(&r, os(".wh.x"), obj(kind));
        assert_eq!(res.err(), Some(Errno::INVAL), "create .wh.x");
    }
    let res = ov.create(&r, os(".wh.f"), file());
    assert_eq!(res.err(), Some(Errno::INVAL), "create .wh.f");
    let res = mv(&ov, "f", ".wh.f", 0);
    assert_eq!(res, Err(Errno::INVAL), "rename to .wh.f");
    let names = env.upper_names();
    assert!(names.is_empty(), "upper: {names:?}");
    assert_eq!(merged(&ov, ""), ["f"], "f must stay visible");
}

#[test]
fn read_only_overlay_refuses_changes() {
    let env = Env::new(2);
    put(&env.l(0, "f"), "top");
    put(&env.l(1, "f"), "bottom");
    put(&env.l(1, "d/g"), "");
    let ov = env.mount_ro();
    assert!(ov.is_read_only());
    let r = root(&ov);
    let f = must(&ov, "f");
    assert_eq!(cat(&ov, "f"), "top");
    let create = ov.create(&r, os("n"), file());
    assert_eq!(create.err(), Some(Errno::ROFS), "create");
    assert_eq!(mkdir(&ov, "n"), Err(Errno::ROFS), "mkdir");
    let chmod = chmod(0o600);
    let setattr = ov.setattr(&f, &chmod, None);
    assert_eq!(setattr.err(), Some(Errno::ROFS), "setattr");
    assert_eq!(rm(&ov, "f", false), Err(Errno::ROFS), "unlink");
    assert_eq!(mv(&ov, "f", "g", 0), Err(Errno::ROFS), "rename");
    let xattr = ov.setxattr(&f, os("user.k"), b"v", cowfs::sys::XattrFlags::empty());
    assert_eq!(xattr, Err(Errno::ROFS), "setxattr");
    let open = ov.open(&f, libc::O_WRONLY);
    assert_eq!(open.err(), Some(Errno::ROFS), "open for writing");
    assert_eq!(ov.copy_up(&f).err(), Some(Errno::ROFS), "copy_up");
    assert_eq!(text(&env.l(0, "f")), "top");
    assert_eq!(merged(&ov, ""), ["d", "f"]);
}
