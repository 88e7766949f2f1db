//! Differential tests: the same layers and the same operations through cowfs and through kernel
//! overlayfs must give the same merged tree and the same upper dir; and each implementation must
//! read the upper dir the other one wrote.

use crate::common::*;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Every lower entry gets this mtime; explicit test times are all < 1.5e9.
const FIXED: (i64, i64) = (1_234_567_890, 123);

fn set_all_times(root: &Path) {
    let mut paths = vec![".".to_string()];
    paths.extend(all_paths(root));
    for p in paths {
        set_times(&root.join(p), (FIXED.0 - 1000, 0), FIXED).unwrap();
    }
}

/// Three lowers with files, dirs, symlinks, 0/0 whiteouts and trusted.overlay.opaque dirs.
fn build_layers(l: &Layers) {
    let (l0, l1, l2) = (l.lower(0), l.lower(1), l.lower(2));
    // bottom layer
    write_file(&l2.join("a.txt"), "a from l2");
    write_file_mode(&l2.join("b.txt"), "b from l2", 0o640);
    lchown(&l2.join("b.txt"), 100, 100);
    set_xattr(&l2.join("b.txt"), "user.b", b"bee");
    write_file(&l2.join("dir/x"), "x2");
    write_file(&l2.join("dir/y"), "y2");
    write_file(&l2.join("dir/sub/z"), "z2");
    write_file(&l2.join("deep/1/2/3/f"), "deep");
    write_file(&l2.join("opq/old1"), "old");
    write_file(&l2.join("wd/gone1"), "gone");
    write_file(&l2.join("wd/stay"), "stay");
    write_file(&l2.join("rmme/f1"), "1");
    write_file(&l2.join("rmme/f2"), "2");
    write_file(&l2.join("big.bin"), pattern(65536, 9));
    write_file(&l2.join("attr.txt"), "attrs");
    set_xattr(&l2.join("attr.txt"), "user.rm", b"remove me");
    set_xattr(&l2.join("attr.txt"), "user.keep", b"keep me");
    mkdir_mode(&l2.join("empty"), 0o750);
    mkdir_mode(&l2.join("dir"), 0o755);
    write_file(&l2.join("e1/x"), "e1x");
    write_file(&l2.join("e2/y"), "e2y");
    mkdir(&l2.join("empty2"));
    symlink("a.txt", &l2.join("sym"));
    symlink("dir", &l2.join("sym_dir"));
    // middle layer
    write_file(&l1.join("a.txt"), "a from l1");
    write_file(&l1.join("dir/x"), "x1");
    whiteout(&l1.join("wd/gone1"));
    write_file(&l1.join("opq/new1"), "new1");
    set_xattr(&l1.join("opq"), "trusted.overlay.opaque", b"y");
    whiteout(&l1.join("hidden_top"));
    write_file(&l2.join("hidden_top"), "hidden");
    // top layer
    write_file(&l0.join("c.txt"), "c from l0");
    write_file(&l0.join("dir/w"), "w0");
    whiteout(&l0.join("dir/y"));
    chmod(&l0.join("dir"), 0o755);
    for lw in &l.lowers {
        set_all_times(lw);
    }
}

fn rec(log: &mut Vec<String>, name: &str, r: io::Result<()>) {
    log.push(match r {
        Ok(()) => format!("{name}: ok"),
        Err(e) => format!("{name}: errno {}", e.raw_os_error().unwrap_or(-1)),
    });
}

fn write_at(p: &Path, data: &str, append: bool) -> io::Result<()> {
    let mut f = if append {
        OpenOptions::new().append(true).open(p)?
    } else {
        OpenOptions::new().write(true).truncate(true).open(p)?
    };
    f.write_all(data.as_bytes())
}

/// The operation sequence; returns one line per operation with its result.
fn ops(m: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let p = |s: &str| m.join(s);
    let l = &mut log;
    rec(l, "create new.txt", fs::write(p("new.txt"), "hello"));
    rec(l, "overwrite a.txt", write_at(&p("a.txt"), "A!", false));
    rec(l, "append dir/x", write_at(&p("dir/x"), "+x", true));
    rec(l, "truncate big.bin", truncate_path(&p("big.bin"), 1000));
    rec(l, "truncate b.txt 0", truncate_path(&p("b.txt"), 0));
    rec(l, "rename c.txt", fs::rename(p("c.txt"), p("dir/c_moved")));
    rec(l, "rename dir/w", fs::rename(p("dir/w"), p("w_top")));
    rec(l, "rename over", fs::rename(p("new.txt"), p("b.txt")));
    rec(l, "link dir/x", fs::hard_link(p("dir/x"), p("x_link")));
    rec(l, "unlink dir/sub/z", fs::remove_file(p("dir/sub/z")));
    rec(l, "rmdir dir/sub", fs::remove_dir(p("dir/sub")));
    rec(l, "mkdir newdir", fs::create_dir(p("newdir")));
    rec(l, "create newdir/f", fs::write(p("newdir/f"), "nf"));
    rec(l, "rm -rf rmme", fs::remove_dir_all(p("rmme")));
    rec(l, "mkdir rmme", fs::create_dir(p("rmme")));
    rec(l, "create rmme/again", fs::write(p("rmme/again"), "again"));
    rec(
        l,
        "chmod dir/x",
        fs::set_permissions(p("dir/x"), perm(0o600)),
    );
    rec(l, "chmod dir", fs::set_permissions(p("dir"), perm(0o700)));
    rec(
        l,
        "setxattr a.txt",
        lsetxattr(&p("a.txt"), "user.k", b"v", 0),
    );
    rec(l, "setxattr dir", lsetxattr(&p("dir"), "user.d", b"dv", 0));
    rec(l, "removexattr", lremovexattr(&p("attr.txt"), "user.rm"));
    rec(
        l,
        "symlink",
        std::os::unix::fs::symlink("dir/x", p("newlink")),
    );
    rec(l, "rmdir empty", fs::remove_dir(p("empty")));
    rec(l, "rmdir dir", fs::remove_dir(p("dir")));
    rec(l, "unlink deep f", fs::remove_file(p("deep/1/2/3/f")));
    rec(l, "create deep/1/newf", fs::write(p("deep/1/newf"), "n"));
    rec(
        l,
        "lchown a.txt",
        std::os::unix::fs::lchown(p("a.txt"), Some(1), Some(2)),
    );
    rec(l, "rename sym", fs::rename(p("sym"), p("sym2")));
    rec(l, "unlink missing", fs::remove_file(p("missing")));
    rec(l, "rename in opq", fs::rename(p("opq/new1"), p("opq/new2")));
    rec(
        l,
        "open opq/old1",
        fs::File::open(p("opq/old1")).map(|_| ()),
    );
    rec(
        l,
        "noreplace",
        renameat2(&p("x_link"), &p("a.txt"), libc::RENAME_NOREPLACE),
    );
    rec(l, "mkfifo", mkfifo(&p("fifo1"), 0o640));
    rec(
        l,
        "utimes attr.txt",
        set_times(&p("attr.txt"), (5, 0), (6, 7)),
    );
    rec(l, "unlink hidden_top", fs::remove_file(p("hidden_top")));
    rec(l, "create wd/gone1", fs::write(p("wd/gone1"), "back"));
    rec(l, "rmdir wd", fs::remove_dir(p("wd")));
    rec(
        l,
        "write via sym_dir",
        fs::write(p("sym_dir/via_link"), "v"),
    );
    // directory renames onto existing targets, names over whiteouts
    rec(l, "mkdir newd", fs::create_dir(p("newd")));
    rec(l, "create newd/n", fs::write(p("newd/n"), "n"));
    rec(l, "unlink e1/x", fs::remove_file(p("e1/x")));
    rec(
        l,
        "dir over emptied merged dir",
        fs::rename(p("newd"), p("e1")),
    );
    rec(l, "file over dir", fs::rename(p("a.txt"), p("e2")));
    rec(l, "mkdir nd2", fs::create_dir(p("nd2")));
    rec(l, "dir over non-empty dir", fs::rename(p("nd2"), p("e2")));
    rec(l, "mkdir nd3", fs::create_dir(p("nd3")));
    rec(
        l,
        "dir over empty lower dir",
        fs::rename(p("nd3"), p("empty2")),
    );
    rec(
        l,
        "link over whiteout",
        fs::hard_link(p("attr.txt"), p("hidden_top")),
    );
    rec(l, "unlink dir/c_moved", fs::remove_file(p("dir/c_moved")));
    rec(
        l,
        "symlink over whiteout",
        std::os::unix::fs::symlink("../a.txt", p("dir/c_moved")),
    );
    rec(
        l,
        "mv into opaque dir",
        fs::rename(p("x_link"), p("opq/x_link")),
    );
    rec(
        l,
        "utimes lower dir",
        set_times(&p("e2"), (7, 0), (946_684_800, 0)),
    );
    log
}

fn perm(mode: u32) -> fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(mode)
}

/// mtimes set by the fixture or by the ops are kept; "now"-ish mtimes become a marker, so that
/// an implementation must change exactly the mtimes the kernel changes.
fn normalize_mtimes(t: &mut Tree) {
    for e in t.values_mut() {
        if let Some(m) = e.mtime
            && m.0 > 1_500_000_000
        {
            e.mtime = Some((-1, -1));
        }
    }
}

/// Whiteouts: only type and rdev matter (kernel shares one whiteout inode, mode 0).
fn normalize_whiteouts(t: &mut Tree) {
    for e in t.values_mut() {
        if e.kind == Kind::CharDev && e.rdev == Some(0) {
            e.mode = 0;
            e.nlink = None;
        }
    }
}

fn assert_logs_eq(a: &[String], b: &[String]) {
    let diffs: Vec<String> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("  cowfs: {x}\n  kernel: {y}"))
        .collect();
    assert!(
        diffs.is_empty() && a.len() == b.len(),
        "operation results differ:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn cowfs_matches_kernel_overlayfs() {
    let c = Layers::new(3);
    let k = Layers::new(3);
    build_layers(&c);
    build_layers(&k);
    let lower_snap = tree_snapshot(c.lower(2));
    let mtime = SnapOpts {
        mtime: true,
        ..Default::default()
    };

    // identical views before any operation
    let cm = c.mount();
    let km = KernelOverlay::mount(&k.lowers, &k.upper, &k.work, &k.mnt);
    let mut cv0 = tree_snapshot_with(&c.mnt, mtime);
    let mut kv0 = tree_snapshot_with(&k.mnt, mtime);
    normalize_mtimes(&mut cv0);
    normalize_mtimes(&mut kv0);
    assert!(kv0.contains_key("dir/x") && !kv0.contains_key("dir/y"));
    assert_trees_eq(&cv0, &kv0, "cowfs", "kernel");

    let clog = ops(&c.mnt);
    let klog = ops(&k.mnt);
    assert_logs_eq(&clog, &klog);
    assert!(
        klog.iter().filter(|s| s.ends_with(": ok")).count() >= 30,
        "{klog:?}"
    );

    let cview = tree_snapshot_with(&c.mnt, mtime);
    let kview = tree_snapshot_with(&k.mnt, mtime);
    let (mut cn, mut kn) = (cview.clone(), kview.clone());
    normalize_mtimes(&mut cn);
    normalize_mtimes(&mut kn);
    assert_trees_eq(&cn, &kn, "cowfs", "kernel");
    cm.unmount();
    km.unmount();

    // the upper dirs have the same structure
    let snap_upper = |p: &Path| {
        let mut t = tree_snapshot_with(
            p,
            SnapOpts {
                opaque: true,
                ..Default::default()
            },
        );
        normalize_whiteouts(&mut t);
        t
    };
    let (cu, ku) = (snap_upper(&c.upper), snap_upper(&k.upper));
    assert!(ku.contains_key("rmme") && ku["rmme"].xattrs.iter().any(|x| x.0 == "<opaque>"));
    assert_trees_eq(&cu, &ku, "cowfs upper", "kernel upper");
    assert_no_artifacts(&c.upper);
    assert_eq!(tree_snapshot(c.lower(2)), lower_snap, "lower changed");

    // kernel overlayfs reads the upper cowfs wrote exactly as cowfs showed it
    let kc = c.kernel_mount("kx");
    assert_trees_eq(
        &tree_snapshot_with(&kc.mnt, mtime),
        &cview,
        "kernel on cowfs upper",
        "cowfs view",
    );
    kc.unmount();

    // and cowfs reads the upper the kernel wrote exactly as the kernel showed it
    let work2 = k.fresh_dir("cowfs-work2");
    let args: Vec<std::ffi::OsString> = vec![
        "mount".into(),
        k.lowerdir_arg().into(),
        k.upper.clone().into(),
        k.mnt.clone().into(),
        "--workdir".into(),
        work2.into(),
        "--foreground".into(),
    ];
    let ck = CowfsMount::foreground(&args, &k.mnt, &k.root);
    assert_trees_eq(
        &tree_snapshot_with(&k.mnt, mtime),
        &kview,
        "cowfs on kernel upper",
        "kernel view",
    );
    ck.unmount();
}

/// Second differential: OCI-free, operations on a deeper tree repeated over the merged root
/// and a copied-up subtree, including a remount in the middle for cowfs.
#[test]
fn cowfs_matches_kernel_with_remount() {
    let c = Layers::new(2);
    let k = Layers::new(2);
    for l in [&c, &k] {
        for i in 0..20 {
            write_file(
                &l.lower(1).join(format!("t/d{}/f{i}", i % 4)),
                format!("v{i}"),
            );
        }
        whiteout(&l.lower(0).join("t/d1/f1"));
        write_file(&l.lower(0).join("t/d2/f2"), "top f2");
        opaque_xattr(&l.lower(0).join("t/d3"));
        write_file(&l.lower(0).join("t/d3/only"), "only");
        for lw in &l.lowers {
            set_all_times(lw);
        }
    }
    let phase1 = |m: &Path| -> Vec<String> {
        let mut log = Vec::new();
        for i in 0..20 {
            let f = m.join(format!("t/d{}/f{i}", i % 4));
            match i % 5 {
                0 => rec(&mut log, &format!("rm {i}"), fs::remove_file(&f)),
                1 => rec(&mut log, &format!("append {i}"), write_at(&f, "+", true)),
                2 => rec(
                    &mut log,
                    &format!("mv {i}"),
                    fs::rename(&f, m.join(format!("t/mv{i}"))),
                ),
                3 => rec(
                    &mut log,
                    &format!("chmod {i}"),
                    fs::set_permissions(&f, perm(0o604)),
                ),
                _ => rec(&mut log, &format!("trunc {i}"), truncate_path(&f, 1)),
            }
        }
        log
    };
    let phase2 = |m: &Path| -> Vec<String> {
        let mut log = Vec::new();
        for d in 0..4 {
            let dir = m.join(format!("t/d{d}"));
            rec(&mut log, &format!("rm -rf d{d}"), fs::remove_dir_all(&dir));
            rec(&mut log, &format!("mkdir d{d}"), fs::create_dir(&dir));
            rec(
                &mut log,
                &format!("mkfile d{d}"),
                fs::write(dir.join("n"), "n"),
            );
        }
        rec(
            &mut log,
            "link",
            fs::hard_link(m.join("t/mv2"), m.join("t/d0/l")),
        );
        log
    };
    let mtime = SnapOpts {
        mtime: true,
        ..Default::default()
    };
    let km = KernelOverlay::mount(&k.lowers, &k.upper, &k.work, &k.mnt);
    let cm = c.mount();
    assert_logs_eq(&phase1(&c.mnt), &phase1(&k.mnt));
    cm.unmount();
    let cm = c.mount();
    assert_logs_eq(&phase2(&c.mnt), &phase2(&k.mnt));
    let (mut cv, mut kv) = (
        tree_snapshot_with(&c.mnt, mtime),
        tree_snapshot_with(&k.mnt, mtime),
    );
    normalize_mtimes(&mut cv);
    normalize_mtimes(&mut kv);
    assert!(
        kv.contains_key("t/d0/l") && kv.contains_key("t/mv12"),
        "{:?}",
        kv.keys()
    );
    assert_trees_eq(&cv, &kv, "cowfs", "kernel");
    cm.unmount();
    km.unmount();
    let snap_upper = |p: &Path| {
        let mut t = tree_snapshot_with(
            p,
            SnapOpts {
                opaque: true,
                ..Default::default()
            },
        );
        normalize_whiteouts(&mut t);
        t
    };
    assert_trees_eq(
        &snap_upper(&c.upper),
        &snap_upper(&k.upper),
        "cowfs upper",
        "kernel upper",
    );
}
