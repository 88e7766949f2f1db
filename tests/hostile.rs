//! Hostile layers: symlinks to `/`, `..`, absolute paths and a canary dir beside the layers,
//! loops, dangling links, symlinked dirs, hostile redirect xattrs, 255-byte, non-UTF-8 and
//! newline names, a tree deeper than PATH_MAX, fifos and device nodes; and layers changed behind
//! the mount's back (a dir or file swapped for a symlink to the canary after cowfs looked it up).
//!
//! Every scenario operates through the mount (read, stat, readlink, copy-up by chmod/lchown/
//! setxattr/write, rename, unlink) under a deadline, then compares a full snapshot of the canary
//! (content, mode, owner, xattrs, mtime) and of the lowers with the one taken before.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::reliability_support::*;

const DEADLINE: Duration = Duration::from_secs(120);

/// The canary: a dir beside the layers that hostile links point into.
fn make_canary(root: &Path) -> PathBuf {
    let c = root.join("canary");
    write_file_mode(&c.join("a.txt"), b"canary a\n", 0o640);
    write_file_mode(&c.join("f"), b"canary f\n", 0o600);
    write_file_mode(&c.join("sub/deep"), b"deep\n", 0o644);
    set_xattr(&c.join("a.txt"), "user.canary", b"1");
    set_xattr(&c.join("sub"), "user.canary", b"dir");
    symlink("a.txt", &c.join("link"));
    mkfifo(&c.join("fifo"), 0o600).unwrap();
    for p in ["a.txt", "f", "sub/deep", "sub", "fifo", "."] {
        set_times(&c.join(p), (1_000_000, 5), (1_000_000, 7)).unwrap();
    }
    c
}

fn snap(p: &Path) -> Tree {
    tree_snapshot_with(
        p,
        SnapOpts {
            mtime: true,
            opaque: true,
        },
    )
}

/// Snapshots of everything a mount must not change: canary and lowers (and the names beside
/// them, minus the harness's logs).
struct Untouchable {
    canary: PathBuf,
    lowers: Vec<PathBuf>,
    root: PathBuf,
    before: Vec<Tree>,
    beside: Vec<String>,
}

fn beside_names(root: &Path) -> Vec<String> {
    list_names(root)
        .into_iter()
        .filter(|n| !n.starts_with("cowfs-"))
        .collect()
}

impl Untouchable {
    fn take(layers: &Layers, canary: &Path) -> Untouchable {
        let mut before = vec![snap(canary)];
        before.extend(layers.lowers.iter().map(|l| snap(l)));
        Untouchable {
            canary: canary.to_path_buf(),
            lowers: layers.lowers.clone(),
            root: layers.root.clone(),
            before,
            beside: beside_names(&layers.root),
        }
    }

    /// Only the canary (for trees whose paths are too long for a path-based snapshot).
    fn take_canary_only(layers: &Layers, canary: &Path) -> Untouchable {
        Untouchable {
            canary: canary.to_path_buf(),
            lowers: Vec::new(),
            root: layers.root.clone(),
            before: vec![snap(canary)],
            beside: beside_names(&layers.root),
        }
    }

    #[track_caller]
    fn check(&self, what: &str) {
        let mut after = vec![snap(&self.canary)];
        after.extend(self.lowers.iter().map(|l| snap(l)));
        assert_trees_eq(
            &self.before[0],
            &after[0],
            "canary before",
            &format!("after {what}"),
        );
        for (i, (b, a)) in self.before[1..].iter().zip(&after[1..]).enumerate() {
            assert_trees_eq(b, a, &format!("lower{i} before"), &format!("after {what}"));
        }
        assert_eq!(
            beside_names(&self.root),
            self.beside,
            "names beside the layers"
        );
    }
}

/// `op` may fail; it must not hang (the caller's deadline) and must not touch the canary.
fn attempt<T>(what: &str, r: io::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("  {what}: {e}");
            None
        }
    }
}

fn lchown_r(p: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(0), Some(0))
}

fn open_rw(p: &Path) -> io::Result<fs::File> {
    OpenOptions::new().write(true).open(p)
}

/// Drives one path of the merged view every way that does not follow a final symlink, and the
/// ways that do only where the object is not a symlink.
fn poke(p: &Path) {
    let what = p.display().to_string();
    let Some(md) = attempt(&what, fs::symlink_metadata(p)) else {
        return;
    };
    let _ = fs::read_link(p);
    let _ = llistxattr(p);
    if md.file_type().is_symlink() {
        attempt(&format!("lchown {what}"), lchown_r(p));
        attempt(
            &format!("trusted xattr {what}"),
            lsetxattr(p, "trusted.test", b"x", 0),
        );
        attempt(
            &format!("utimes nofollow {what}"),
            set_times(p, (5, 0), (5, 0)),
        );
    } else if md.is_file() {
        let _ = fs::read(p);
        attempt(
            &format!("chmod {what}"),
            fs::set_permissions(p, md.permissions()),
        );
        if let Some(mut f) = attempt(&format!("open {what}"), open_rw(p)) {
            let _ = f.write_all(b"x");
        }
    } else if md.is_dir() {
        let _ = fs::read_dir(p).map(|rd| rd.count());
        attempt(
            &format!("chmod {what}"),
            fs::set_permissions(p, md.permissions()),
        );
        attempt(&format!("setxattr {what}"), lsetxattr(p, "user.t", b"1", 0));
    } else {
        attempt(&format!("lchown {what}"), lchown_r(p));
    }
}

#[test]
fn hostile_symlinks_loops_and_redirects_stay_inside_the_layers() {
    let layers = Layers::new(2);
    let canary = make_canary(&layers.root);
    let (top, bottom) = (layers.lower(0).to_path_buf(), layers.lower(1).to_path_buf());
    let cs = canary.to_str().unwrap().to_string();
    let links: Vec<(&str, String)> = vec![
        ("to_root", "/".into()),
        ("to_dotdot", "..".into()),
        ("to_up3", "../../..".into()),
        ("to_canary_abs", cs.clone()),
        ("to_canary_file", format!("{cs}/a.txt")),
        ("to_canary_rel", "../canary".into()),
        ("to_canary_via_dotdot", "../lower1/../canary/f".into()),
        ("loop_a", "loop_b".into()),
        ("loop_b", "loop_a".into()),
        ("self", "self".into()),
        ("dangling", "/nonexistent/cowfs/x".into()),
        ("dangling_rel", "../nope/../../x".into()),
    ];
    for (n, t) in &links {
        symlink(t, &top.join(n));
        symlink(t, &top.join("sub").join(n));
    }
    // a dir in the bottom layer hidden by a symlink to the canary in the top one
    write_file(&bottom.join("shadow/f"), b"bottom f");
    symlink(&cs, &top.join("shadow"));
    // a symlinked dir and `..` through it
    symlink("sub", &top.join("sublink"));
    symlink(&format!("{cs}/sub"), &top.join("sub/into_canary_sub"));
    write_file(&top.join("sub/real"), b"real");
    // hostile redirects in the upper dir (only upper dirs are followed)
    write_file(&bottom.join("rd1/lowerfile"), b"lower");
    write_file(&bottom.join("rd2/lowerfile"), b"lower");
    write_file(&bottom.join("rd3/lowerfile"), b"lower");
    for (d, v) in [
        ("rd1", "/../canary"),
        ("rd2", "../../canary"),
        ("rd3", "/../../../../../../"),
    ] {
        mkdir(&layers.upper.join(d));
        set_xattr(
            &layers.upper.join(d),
            "trusted.overlay.redirect",
            v.as_bytes(),
        );
    }
    let guard = Untouchable::take(&layers, &canary);
    let m = layers.mount();
    let mnt = layers.mnt.clone();
    let names: Vec<String> = links.iter().map(|(n, _)| n.to_string()).collect();
    let link_targets = links
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect::<Vec<_>>();
    with_deadline("hostile symlinks", DEADLINE, move || {
        for (n, t) in &link_targets {
            for p in [mnt.join(n), mnt.join("sub").join(n)] {
                assert_eq!(fs::read_link(&p).unwrap(), Path::new(t), "{}", p.display());
                assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
            }
        }
        assert!(
            fs::symlink_metadata(mnt.join("shadow"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(mnt.join("sublink/real")).unwrap(), b"real");
        for d in ["rd1", "rd2", "rd3"] {
            let got = list_names(&mnt.join(d));
            assert!(
                !got.iter().any(|n| n == "a.txt" || n == "sub"),
                "{d}: the hostile redirect merged in the canary: {got:?}"
            );
        }
        for n in &names {
            poke(&mnt.join(n));
            poke(&mnt.join("sub").join(n));
        }
        for p in [
            "shadow",
            "sublink",
            "sub/into_canary_sub",
            "sub/real",
            "sub",
        ] {
            poke(&mnt.join(p));
        }
        for d in ["rd1", "rd2", "rd3"] {
            poke(&mnt.join(d));
            let _ = fs::write(mnt.join(d).join("a.txt"), b"overwrite?");
            let _ = fs::remove_file(mnt.join(d).join("f"));
            let _ = fs::remove_file(mnt.join(d).join("lowerfile"));
        }
        // renames and unlinks of the links themselves
        for (i, n) in names.iter().enumerate() {
            let to = mnt.join(format!("renamed{i}"));
            fs::rename(mnt.join(n), &to).unwrap();
            assert!(fs::symlink_metadata(&to).unwrap().file_type().is_symlink());
            fs::remove_file(&to).unwrap();
            fs::remove_file(mnt.join("sub").join(n)).unwrap();
        }
        fs::remove_file(mnt.join("shadow")).unwrap();
        fs::remove_file(mnt.join("sublink")).unwrap();
    });
    guard.check("symlink operations");
    m.unmount();
    guard.check("unmount");
}

fn name_bytes(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

#[test]
fn non_utf8_and_newline_names_fifos_and_devices() {
    odd_names(
        vec![
            "L".repeat(250).into(),
            name_bytes(b"caf\xe9-latin1"),
            name_bytes(b"\xff\xfe\x80"),
            "new\nline".into(),
            "\nleading".into(),
            "tab\tand space ".into(),
            "-dash".into(),
            " ".into(),
        ],
        false,
    );
}

/// Names of 252 to 255 bytes have no room for an OCI whiteout `.wh.NAME`; looking for one
/// must not turn into ENAMETOOLONG for the name itself.
#[test]
fn names_of_252_to_255_bytes() {
    let long2 = format!("{}{}", "é".repeat(100), "x".repeat(55));
    assert_eq!(long2.len(), 255);
    odd_names(
        vec!["L".repeat(255).into(), "M".repeat(252).into(), long2.into()],
        true,
    );
}

fn odd_names(weird: Vec<OsString>, create_255: bool) {
    let layers = Layers::new(1);
    let canary = make_canary(&layers.root);
    let top = layers.lower(0).to_path_buf();
    let long2 = format!("{}{}", "é".repeat(100), "x".repeat(55)); // 255 bytes
    for (i, n) in weird.iter().enumerate() {
        write_file(&top.join(n), format!("content {i}"));
        write_file(&top.join("d").join(n).join("inner"), format!("inner {i}"));
    }
    mkfifo(&top.join("fifo"), 0o644).unwrap();
    mknod(&top.join("null"), libc::S_IFCHR | 0o644, 1, 3).unwrap();
    mknod(&top.join("loopdev"), libc::S_IFBLK | 0o600, 7, 200).unwrap();
    let guard = Untouchable::take(&layers, &canary);
    let m = layers.mount();
    let (mnt, upper) = (layers.mnt.clone(), layers.upper.clone());
    with_deadline("odd names", DEADLINE, move || {
        let listed: Vec<OsString> = fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        for (i, n) in weird.iter().enumerate() {
            assert!(listed.contains(n), "{n:?} not listed");
            assert_eq!(
                fs::read(mnt.join(n)).unwrap(),
                format!("content {i}").as_bytes()
            );
            let inner = mnt.join("d").join(n).join("inner");
            assert_eq!(fs::read(&inner).unwrap(), format!("inner {i}").as_bytes());
            // copy-up (file and dir), rename, unlink (whiteout with that name)
            chmod(&mnt.join(n), 0o600);
            chmod(&inner, 0o600);
            assert!(upper.join(n).is_file(), "{n:?} not copied up");
            let mut renamed = n.clone();
            renamed.push("~");
            if renamed.len() > 255 {
                renamed = name_bytes(&n.as_bytes()[..254]);
                renamed.push("~");
            }
            fs::rename(mnt.join(n), mnt.join(&renamed)).unwrap();
            assert_eq!(
                fs::read(mnt.join(&renamed)).unwrap(),
                format!("content {i}").as_bytes()
            );
            fs::remove_file(mnt.join(&renamed)).unwrap();
            assert_enoent(&mnt.join(n));
            assert_whiteout(&upper.join(n));
            fs::remove_file(&inner).unwrap();
            fs::remove_dir(mnt.join("d").join(n)).unwrap();
            assert_enoent(&mnt.join("d").join(n));
            // and re-create over the whiteout
            fs::write(mnt.join(n), b"again").unwrap();
            assert_eq!(fs::read(mnt.join(n)).unwrap(), b"again");
        }
        // too long: 256 bytes
        let too_long = mnt.join("N".repeat(256));
        assert_errno(
            fs::write(&too_long, b"x"),
            libc::ENAMETOOLONG,
            "create 256-byte name",
        );
        assert_errno(
            fs::rename(mnt.join("fifo"), &too_long),
            libc::ENAMETOOLONG,
            "rename to a 256-byte name",
        );
        if create_255 {
            fs::write(mnt.join(&long2), b"long utf-8").unwrap();
            assert_eq!(fs::read(mnt.join(&long2)).unwrap(), b"long utf-8");
        }
        // fifo and devices: stat, open the fifo, copy-up by chmod, rename, unlink
        let ft = |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap();
        assert!(ft("fifo").file_type().is_fifo());
        assert!(ft("null").file_type().is_char_device());
        assert_eq!(ft("null").rdev(), libc::makedev(1, 3));
        assert!(ft("loopdev").file_type().is_block_device());
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(mnt.join("fifo"))
            .unwrap();
        drop(f);
        for p in ["fifo", "null", "loopdev"] {
            chmod(&mnt.join(p), 0o640);
            let up = fs::symlink_metadata(upper.join(p)).unwrap();
            assert_eq!(up.mode() & 0o7777, 0o640, "{p} copied up");
            assert_eq!(up.rdev(), ft(p).rdev(), "{p} rdev kept");
            fs::rename(mnt.join(p), mnt.join(format!("{p}.moved"))).unwrap();
            fs::remove_file(mnt.join(format!("{p}.moved"))).unwrap();
            assert_whiteout(&upper.join(p));
        }
    });
    guard.check("odd names");
    m.unmount();
    assert_no_artifacts(&layers.upper);
}

// ---------------------------------------------------------------------------
// a tree deeper than PATH_MAX, built and walked with *at() calls
// ---------------------------------------------------------------------------

fn c(name: &[u8]) -> CString {
    CString::new(name).unwrap()
}

fn openat(dir: RawFd, name: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::openat(dir, c(name).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn raw(fd: &OwnedFd) -> RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// Opens the dir at `comps` below `root`, one component at a time.
fn open_deep(root: &Path, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let mut fd = openat(
        libc::AT_FDCWD,
        root.as_os_str().as_bytes(),
        libc::O_DIRECTORY,
    )?;
    for comp in comps {
        fd = openat(raw(&fd), comp, libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
    }
    Ok(fd)
}

fn read_fd(fd: OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    io::Read::read_to_end(&mut fs::File::from(fd), &mut v).unwrap();
    v
}

#[test]
fn tree_deeper_than_path_max() {
    let layers = Layers::new(1);
    let canary = make_canary(&layers.root);
    let comp = |i: usize| format!("{i:03}{}", "d".repeat(197)).into_bytes(); // 200 bytes
    let depth = 26; // 26 * 201 = 5226 bytes of path
    let comps: Vec<Vec<u8>> = (0..depth).map(comp).collect();
    assert!(comps.iter().map(|c| c.len() + 1).sum::<usize>() > libc::PATH_MAX as usize);
    {
        let mut fd = openat(
            libc::AT_FDCWD,
            layers.lower(0).as_os_str().as_bytes(),
            libc::O_DIRECTORY,
        )
        .unwrap();
        for cmp in &comps {
            assert_eq!(
                unsafe { libc::mkdirat(raw(&fd), c(cmp).as_ptr(), 0o755) },
                0
            );
            fd = openat(raw(&fd), cmp, libc::O_DIRECTORY).unwrap();
        }
        let f = openat(raw(&fd), b"leaf", libc::O_WRONLY | libc::O_CREAT).unwrap();
        io::Write::write_all(&mut fs::File::from(f), b"deep leaf").unwrap();
        assert_eq!(
            unsafe { libc::symlinkat(c(b"../../../..").as_ptr(), raw(&fd), c(b"up").as_ptr()) },
            0
        );
    }
    let guard = Untouchable::take_canary_only(&layers, &canary);
    let m = layers.mount();
    let (mnt, upper) = (layers.mnt.clone(), layers.upper.clone());
    with_deadline("deep tree", DEADLINE, move || {
        let full: PathBuf = comps
            .iter()
            .fold(mnt.clone(), |p, c| p.join(OsStr::from_bytes(c)));
        assert_errno(
            fs::metadata(full.join("leaf")),
            libc::ENAMETOOLONG,
            "stat by a path longer than PATH_MAX",
        );
        let dir = open_deep(&mnt, &comps).expect("walk the deep tree through the mount");
        let leaf = openat(raw(&dir), b"leaf", libc::O_RDONLY).unwrap();
        assert_eq!(read_fd(leaf), b"deep leaf");
        // `..` from the bottom goes back up inside the mount
        let up = openat(raw(&dir), b"..", libc::O_DIRECTORY).unwrap();
        let back = openat(raw(&up), &comps[depth - 1], libc::O_DIRECTORY).unwrap();
        let leaf = openat(raw(&back), b"leaf", libc::O_RDONLY).unwrap();
        assert_eq!(read_fd(leaf), b"deep leaf");
        let mut buf = [0u8; 64];
        let n = unsafe {
            libc::readlinkat(
                raw(&dir),
                c(b"up").as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(&buf[..n as usize], b"../../../..");
        // copy-up of the leaf brings all 26 parents up
        assert_eq!(
            unsafe { libc::fchmodat(raw(&dir), c(b"leaf").as_ptr(), 0o600, 0) },
            0,
            "chmod deep leaf: {}",
            io::Error::last_os_error()
        );
        let w = openat(raw(&dir), b"leaf", libc::O_WRONLY | libc::O_APPEND).unwrap();
        io::Write::write_all(&mut fs::File::from(w), b" + more").unwrap();
        let udir = open_deep(&upper, &comps).expect("the copy-up made the deep parents in upper");
        let uleaf = openat(raw(&udir), b"leaf", libc::O_RDONLY).unwrap();
        assert_eq!(read_fd(uleaf), b"deep leaf + more");
        // rename within and unlink at depth
        assert_eq!(
            unsafe {
                libc::renameat(
                    raw(&dir),
                    c(b"leaf").as_ptr(),
                    raw(&up),
                    c(b"moved").as_ptr(),
                )
            },
            0,
            "renameat at depth: {}",
            io::Error::last_os_error()
        );
        assert_eq!(
            unsafe { libc::unlinkat(raw(&up), c(b"moved").as_ptr(), 0) },
            0
        );
        assert_eq!(
            unsafe { libc::unlinkat(raw(&dir), c(b"up").as_ptr(), 0) },
            0
        );
        assert_eq!(
            unsafe { libc::unlinkat(raw(&up), c(&comps[depth - 1]).as_ptr(), libc::AT_REMOVEDIR) },
            0,
            "rmdir at depth: {}",
            io::Error::last_os_error()
        );
        let e = openat(raw(&up), &comps[depth - 1], libc::O_DIRECTORY).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    });
    guard.check("deep tree");
    m.unmount();
    assert!(list_names(&layers.work.join("work")).is_empty());
}

// ---------------------------------------------------------------------------
// layers changed behind the mount's back
// ---------------------------------------------------------------------------

fn swap_for_symlink(p: &Path, target: &Path) {
    let mut aside = p.as_os_str().to_os_string();
    aside.push(".aside");
    fs::rename(p, &aside).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

fn undo_swap(p: &Path) {
    let mut aside = p.as_os_str().to_os_string();
    aside.push(".aside");
    fs::remove_file(p).unwrap();
    fs::rename(aside, p).unwrap();
}

type Attempt = (&'static str, Box<dyn Fn() -> io::Result<()> + Send>);

/// Everything that could write through `dir` (whose real dir was swapped for a symlink to the
/// canary): by path, and through an fd of `dir` opened before the swap.
fn dir_attempts(dir: PathBuf, held: Arc<fs::File>) -> Vec<Attempt> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let at = |held: &Arc<fs::File>, f: &dyn Fn(RawFd) -> i32| -> io::Result<()> {
        if f(held.as_raw_fd()) < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let (d, h) = (dir, held);
    macro_rules! a {
        ($name:expr, |$dd:ident| $body:expr) => {{
            let $dd = d.clone();
            (
                $name,
                Box::new(move || -> io::Result<()> { $body })
                    as Box<dyn Fn() -> io::Result<()> + Send>,
            )
        }};
    }
    macro_rules! h {
        ($name:expr, |$fd:ident| $body:expr) => {{
            let hh = h.clone();
            (
                $name,
                Box::new(move || at(&hh, &|$fd| unsafe { $body }))
                    as Box<dyn Fn() -> io::Result<()> + Send>,
            )
        }};
    }
    vec![
        a!("chmod f", |d| fs::set_permissions(
            d.join("f"),
            fs::Permissions::from_mode(0o777)
        )),
        a!("chown f", |d| std::os::unix::fs::chown(
            d.join("f"),
            Some(1),
            Some(1)
        )),
        a!("setxattr a.txt", |d| lsetxattr(
            &d.join("a.txt"),
            "user.canary",
            b"pwned",
            0
        )),
        a!("truncate f", |d| truncate_path(&d.join("f"), 0)),
        a!("utimes f", |d| set_times(&d.join("f"), (1, 0), (1, 0))),
        a!("open+write a.txt", |d| open_rw(&d.join("a.txt"))?
            .write_all(b"pwned")),
        a!("create new", |d| fs::write(d.join("new"), b"x")),
        a!("mkdir newdir", |d| fs::create_dir(d.join("newdir"))),
        a!("rename a.txt", |d| fs::rename(
            d.join("a.txt"),
            d.join("a2")
        )),
        a!("unlink f", |d| fs::remove_file(d.join("f"))),
        a!("unlink link", |d| fs::remove_file(d.join("link"))),
        a!("rmdir sub", |d| fs::remove_dir(d.join("sub"))),
        a!("chmod dir", |d| fs::set_permissions(
            &d,
            fs::Permissions::from_mode(0o700)
        )),
        h!("fchmodat held a.txt", |fd| libc::fchmodat(
            fd,
            c(b"a.txt").as_ptr(),
            0o777,
            0
        )),
        h!("unlinkat held f", |fd| libc::unlinkat(
            fd,
            c(b"f").as_ptr(),
            0
        )),
        h!("mkdirat held x", |fd| libc::mkdirat(
            fd,
            c(b"x").as_ptr(),
            0o755
        )),
        h!("openat O_TRUNC held a.txt", |fd| {
            let r = libc::openat(fd, c(b"a.txt").as_ptr(), libc::O_WRONLY | libc::O_TRUNC);
            if r >= 0 {
                libc::close(r);
            }
            r
        }),
        h!("fchmod held dir", |fd| libc::fchmod(fd, 0o700)),
    ]
}

/// Ways to change a file that never follow a symlink in the caller: the
/// path-following ones (chmod, truncate, open) would, once cowfs reports the
/// swapped name as the symlink it now is, reach the canary through the
/// caller's own walk, as with any symlink; that is not the daemon's doing. The
/// chmod goes through an fd opened before the swap, so it reaches the daemon
/// with the old inode.
fn file_attempts(f: PathBuf) -> Vec<Attempt> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let g = f.clone();
    let h = f.clone();
    let i = f.clone();
    let j = f.clone();
    // Taken out when used, so the fd is closed before the test unmounts.
    let opened_before =
        std::sync::Mutex::new(Some(fs::File::open(&f).expect("open before the swap")));
    let nofollow_rw = |p: &Path| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
    };
    vec![
        (
            "fchmod of an fd opened before the swap",
            Box::new(move || {
                let file = opened_before.lock().ok().and_then(|mut f| f.take());
                match file {
                    Some(file) => file.set_permissions(fs::Permissions::from_mode(0o777)),
                    None => Ok(()),
                }
            }),
        ),
        (
            "setxattr file",
            Box::new(move || lsetxattr(&g, "user.canary", b"pwned", 0)),
        ),
        (
            "truncate file (O_NOFOLLOW)",
            Box::new(move || nofollow_rw(&h)?.set_len(0)),
        ),
        (
            "open+write file (O_NOFOLLOW)",
            Box::new(move || nofollow_rw(&i)?.write_all(b"pwned")),
        ),
        ("unlink file", Box::new(move || fs::remove_file(&j))),
    ]
}

/// Looks `names` up through the mount (long dentry timeout), swaps `real` for a symlink to
/// `target` behind the mount's back, then runs each attempt and checks the canary after each.
fn swapped(kind: &str, make_upper: bool) {
    let layers = Layers::new(1);
    let canary = make_canary(&layers.root);
    let top = layers.lower(0).to_path_buf();
    write_file(&top.join("ld/f"), b"lower f");
    write_file(&top.join("ld/a.txt"), b"lower a");
    mkdir(&top.join("ld/sub"));
    symlink("f", &top.join("ld/link"));
    write_file(&top.join("lfile"), b"lower file");
    let m = layers.mount_with(&["-o", "timeout=30"]);
    let mnt = layers.mnt.clone();
    for n in ["f", "a.txt", "sub", "link"] {
        fs::symlink_metadata(mnt.join("ld").join(n)).unwrap();
    }
    fs::metadata(mnt.join("lfile")).unwrap();
    if make_upper {
        fs::write(mnt.join("ld/new0"), b"x").unwrap();
    }
    let held = Arc::new(fs::File::open(mnt.join("ld")).unwrap());
    let (real, target, attempts) = match kind {
        "dir" => (
            if make_upper {
                layers.upper.join("ld")
            } else {
                top.join("ld")
            },
            canary.clone(),
            dir_attempts(mnt.join("ld"), held),
        ),
        _ => {
            drop(held);
            (
                top.join("lfile"),
                canary.join("a.txt"),
                file_attempts(mnt.join("lfile")),
            )
        }
    };
    swap_for_symlink(&real, &target);
    let guard = Untouchable::take(&layers, &canary);
    let canary2 = canary.clone();
    let before = snap(&canary);
    let touched = with_deadline("swapped layer", DEADLINE, move || {
        let mut touched = Vec::new();
        for (name, op) in attempts {
            let r = op();
            eprintln!("  {name}: {r:?}");
            if snap(&canary2) != before {
                touched.push(name);
                break;
            }
        }
        touched
    });
    assert!(
        touched.is_empty(),
        "{kind} swapped for a symlink to the canary (in {}): `{}` through the mount changed \
         the canary:\n{}",
        if make_upper { "upper" } else { "lower" },
        touched[0],
        diff_trees(&guard.before[0], &snap(&canary), "canary before", "after").join("\n")
    );
    let _ = fs::read_dir(&mnt).unwrap().count();
    guard.check(&format!("writes through a swapped {kind}"));
    m.unmount();
    undo_swap(&real);
}

#[test]
fn lower_dir_swapped_for_symlink_to_canary_after_lookup() {
    swapped("dir", false);
}

#[test]
fn upper_dir_swapped_for_symlink_to_canary_after_lookup() {
    swapped("dir", true);
}

/// lower/lfile is looked up through the mount (timeout=30), then replaced in the lower by a
/// symlink to canary/a.txt. Changes that reach the daemon with the old inode must not touch
/// the canary. (A path-following `chmod mnt/lfile` does reach it: cowfs answers ESTALE, the
/// kernel walks again, finds the symlink and follows it in the caller, as for any symlink.)
#[test]
fn lower_file_swapped_for_symlink_to_canary_after_lookup() {
    swapped("file", false);
}
