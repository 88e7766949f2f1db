//! `redirect_dir=on|off|auto`: how a dir with lower content is renamed.
//!
//! With off (and auto where overlay xattrs are `user.overlay.*`, as rootless or with
//! `userxattr`) the dir is copied up whole and moved, never EXDEV: the merged view after the
//! rename (and after a remount) is the view before it with the dir under its new name, as a
//! plain rename on a copy of the merged tree gives; the upper holds no redirect, and kernel
//! overlayfs over the same layers (`userxattr`, or trusted with redirect_dir=off) shows the same
//! tree, with no EPERM and no "refusing to follow redirect". A copy that runs out of space
//! fails with ENOSPC and leaves the dir as it was, nothing in the work dir. With on a redirect
//! is written, which the kernel's userxattr mount refuses.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// A dir name of this test process, so the kernel log lines it looks for are its own.
fn unique(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// The tree to rename, `top` in the merged root, over two lowers: files with xattrs and odd
/// modes and owners, a symlink, a fifo, a hard-linked pair in two dirs, a sparse file, a deep
/// subtree, a whiteout in the top lower hiding an entry of the bottom one, an OCI opaque dir.
fn lay_out(l: &Layers, top: &str) {
    let (l0, l1) = (l.lower(0).join(top), l.lower(1).join(top));
    write_file(&l1.join("base"), "from the bottom layer");
    write_file(&l1.join("sub/hidden"), "whited out by the top layer");
    write_file(&l1.join("opq/under"), "hidden by an opaque dir");
    write_file_mode(&l0.join("a"), "a\n", 0o640);
    lchown(&l0.join("a"), 1234, 5678);
    set_xattr(&l0.join("a"), "user.k", b"v");
    symlink("a", &l0.join("link"));
    mkfifo(&l0.join("fifo"), 0o600).unwrap();
    write_file(&l0.join("h1"), "linked");
    mkdir(&l0.join("sub"));
    fs::hard_link(l0.join("h1"), l0.join("sub/h2")).unwrap();
    let sparse = fs::File::create(l0.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 4 << 20).unwrap();
    drop(sparse);
    write_file(&l0.join("sub/deep/f"), "deep\n");
    write_file(&l0.join("sub/deep/more/g"), "g");
    whiteout(&l0.join("sub/hidden"));
    write_file(&l0.join("opq/over"), "o");
    opaque_xattr(&l0.join("opq"));
    write_file(&l0.join("rm-me"), "r");
    write_file(&l0.join("emptied/x"), "x");
    mkdir_mode(&l0.join("dir750"), 0o750);
    set_xattr(&l0.join("dir750"), "user.d", b"dirattr");
    write_file(&l.lower(0).join("outside"), "not in the tree");
}

/// Changes through the mount before the rename: a partly copied-up subtree, an upper whiteout,
/// an upper-only dir, a chmod'd dir.
fn touch_up(mnt: &Path, top: &str) {
    let t = mnt.join(top);
    append(&t.join("sub/deep/f"), "changed\n");
    fs::remove_file(t.join("rm-me")).unwrap();
    // A dir left with nothing but a whiteout: opaque once copied, and not impure, so the
    // kernel would list a whiteout left in it as it is.
    fs::remove_file(t.join("emptied/x")).unwrap();
    fs::create_dir(t.join("newdir")).unwrap();
    write_file(&t.join("newdir/n"), "new");
    fs::set_permissions(
        t.join("sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
}

/// `tree` with every path under `from` moved to `to` (what a rename of `from` means for a copy
/// of the merged tree).
fn renamed(tree: &Tree, from: &str, to: &str) -> Tree {
    tree.iter()
        .map(|(k, v)| {
            let k = if k == from {
                to.to_string()
            } else if let Some(rest) = k.strip_prefix(&format!("{from}/")) {
                format!("{to}/{rest}")
            } else {
                k.clone()
            };
            (k, v.clone())
        })
        .collect()
}

/// The tree without the link counts of the hard-linked pair: a kernel mount without an index
/// counts the name cowfs's index keeps (3 instead of 2).
fn without_pair_nlink(tree: &Tree, top: &str) -> Tree {
    let mut t = tree.clone();
    for name in ["h1", "sub/h2"] {
        if let Some(e) = t.get_mut(&format!("{top}/{name}")) {
            e.nlink = None;
        }
    }
    t
}

#[track_caller]
fn assert_same(got: &Tree, want: &Tree, what: &str) {
    let d = diff_trees(want, got, "expected", what);
    assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
}

/// Every path of the upper dir that carries an overlay redirect xattr.
fn redirects_in(upper: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for rel in all_paths(upper) {
        let p = upper.join(&rel);
        for name in llistxattr(&p).unwrap_or_default() {
            if name.ends_with("overlay.redirect") {
                found.push(format!("{rel}: {name}"));
            }
        }
    }
    found
}

fn kernel_log() -> String {
    let out = Command::new("dmesg").output().expect("run dmesg");
    assert!(out.status.success(), "dmesg: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of the kernel log since `before` (a snapshot of it) that name `name`.
fn new_log_lines(before: &str, name: &str) -> Vec<String> {
    let now = kernel_log();
    let fresh = now.strip_prefix(before).unwrap_or(&now);
    fresh
        .lines()
        .filter(|line| line.contains(name))
        .map(str::to_string)
        .collect()
}

/// The rename through a mount with `opts`, where xattrs are in namespace `ns` ("user" or
/// "trusted"), then the checks on the merged view, the upper, a remount and the kernel's view
/// with `kernel_opts`.
fn rename_copies_whole(opts: &str, ns: &str, kernel_opts: &str) {
    let l = Layers::new(2).with_deadline(std::time::Duration::from_secs(120));
    let (from, to, again) = (unique("tree"), unique("moved"), unique("again"));
    lay_out(&l, &from);
    let m = l.mount_with(&["-o", opts]);
    touch_up(&l.mnt, &from);
    let before = tree_snapshot(&l.mnt);
    let ino = |rel: &str| fs::symlink_metadata(l.mnt.join(rel)).unwrap().ino();
    let (dir_ino, file_ino, deep_ino) = (
        ino(&from),
        ino(&format!("{from}/a")),
        ino(&format!("{from}/sub/deep")),
    );

    fs::rename(l.mnt.join(&from), l.mnt.join(&to)).expect("rename of a lower dir");
    let want = renamed(&before, &from, &to);
    assert_same(&tree_snapshot(&l.mnt), &want, "cowfs after the rename");
    assert_enoent(&l.mnt.join(&from));
    // The numbers the kernel knows the objects by stay, and they can move again.
    assert_eq!(ino(&to), dir_ino, "st_ino of the renamed dir");
    assert_eq!(ino(&format!("{to}/a")), file_ino, "st_ino of a file in it");
    assert_eq!(
        ino(&format!("{to}/sub/deep")),
        deep_ino,
        "st_ino of a subdir"
    );
    let (h1, h2) = (
        fs::metadata(l.mnt.join(format!("{to}/h1"))).unwrap(),
        fs::metadata(l.mnt.join(format!("{to}/sub/h2"))).unwrap(),
    );
    assert_eq!((h1.ino(), h1.nlink()), (h2.ino(), 2), "hard-linked pair");
    // The upper: no redirect, the dir opaque and impure, a whiteout at the old name, every
    // lower entry copied, the sparse file sparse, nothing left in the work dir.
    let up = l.upper.join(&to);
    assert_eq!(redirects_in(&l.upper), Vec::<String>::new(), "redirects");
    assert_eq!(
        lgetxattr(&up, &format!("{ns}.overlay.opaque")).unwrap(),
        b"y"
    );
    assert_eq!(
        lgetxattr(&up, &format!("{ns}.overlay.impure")).unwrap(),
        b"y"
    );
    assert_whiteout(&l.upper.join(&from));
    let whiteouts: Vec<String> = all_paths(&up)
        .into_iter()
        .filter(|rel| {
            let p = up.join(rel);
            lstat_opt(&p).is_some_and(|m| is_whiteout(&m))
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        })
        .collect();
    assert_eq!(
        whiteouts,
        Vec::<String>::new(),
        "whiteouts left in the opaque copy"
    );
    for rel in [
        "base",
        "a",
        "link",
        "fifo",
        "h1",
        "sub/h2",
        "sub/deep/more/g",
        "opq/over",
    ] {
        assert!(lstat_opt(&up.join(rel)).is_some(), "{rel} not copied up");
    }
    let sparse = fs::metadata(up.join("sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file copied with {} blocks",
        sparse.blocks()
    );
    assert_eq!(list_names(&l.work.join("work")), Vec::<String>::new());

    // Again, the dir and a file out of it: no EXDEV, no ESTALE.
    fs::rename(l.mnt.join(&to), l.mnt.join(&again)).expect("second rename");
    fs::rename(
        l.mnt.join(format!("{again}/a")),
        l.mnt.join(format!("{again}/sub/a")),
    )
    .expect("rename of a file in the moved dir");
    fs::rename(
        l.mnt.join(format!("{again}/sub/a")),
        l.mnt.join(format!("{again}/a")),
    )
    .expect("and back");
    let want = renamed(&before, &from, &again);
    assert_same(&tree_snapshot(&l.mnt), &want, "cowfs after two renames");
    m.unmount();

    let m = l.mount_with(&["-o", opts]);
    assert_same(&tree_snapshot(&l.mnt), &want, "cowfs after a remount");
    m.unmount();

    // The kernel over the same lowers and upper.
    let log_before = kernel_log();
    let kwork = l.fresh_dir("kernel-work");
    let kmnt = l.fresh_dir("kernel-mnt");
    let k = KernelOverlay::mount_with(&l.lowers, &l.upper, &kwork, &kmnt, kernel_opts);
    assert_same(
        &without_pair_nlink(&tree_snapshot(&kmnt), &again),
        &without_pair_nlink(&want, &again),
        &format!("kernel overlayfs ({kernel_opts})"),
    );
    k.unmount();
    let refused: Vec<String> = new_log_lines(&log_before, &again)
        .into_iter()
        .chain(new_log_lines(&log_before, &from))
        .collect();
    assert!(refused.is_empty(), "kernel log: {refused:?}");
}

#[test]
fn userxattr_rename_copies_the_dir_whole_and_the_kernel_userxattr_mount_reads_it() {
    // auto: off, since the xattrs are user.overlay.*
    rename_copies_whole("userxattr", "user", "userxattr");
}

#[test]
fn redirect_dir_off_as_root_copies_the_dir_whole_and_the_kernel_reads_it() {
    rename_copies_whole("redirect_dir=off", "trusted", "redirect_dir=off,index=off");
}

/// redirect_dir=on (and auto with trusted xattrs) still write a redirect; the kernel's userxattr
/// mount refuses one (the reason for off).
#[test]
fn redirect_dir_on_and_auto_as_root_write_a_redirect() {
    for (opts, ns) in [
        ("userxattr,redirect_dir=on", "user"),
        ("redirect_dir=auto", "trusted"),
    ] {
        let l = Layers::new(1);
        let (from, to) = (unique("src"), unique("dst"));
        write_file(&l.lower(0).join(format!("{from}/sub/f")), "f");
        let m = l.mount_with(&["-o", opts]);
        fs::rename(l.mnt.join(&from), l.mnt.join(&to)).unwrap();
        assert_eq!(read(&l.mnt.join(format!("{to}/sub/f"))), "f");
        m.unmount();
        let redirect = lgetxattr(&l.upper.join(&to), &format!("{ns}.overlay.redirect"));
        assert_eq!(
            redirect.as_deref().ok(),
            Some(format!("/{from}").as_bytes()),
            "{opts}"
        );
        assert!(
            lstat_opt(&l.upper.join(format!("{to}/sub"))).is_none(),
            "{opts}: copied"
        );
        if ns == "user" {
            let kwork = l.fresh_dir("kernel-work");
            let kmnt = l.fresh_dir("kernel-mnt");
            let k = KernelOverlay::mount_with(&l.lowers, &l.upper, &kwork, &kmnt, "userxattr");
            assert_errno(
                fs::read_dir(kmnt.join(&to)),
                libc::EPERM,
                "kernel userxattr mount: a redirected dir",
            );
            k.unmount();
        }
    }
}

/// A copy that runs out of space: ENOSPC, the dir as it was, no temp left, nothing at the new
/// name; with room again the same rename works.
#[test]
fn a_tree_copy_out_of_space_leaves_the_dir_as_it_was() {
    let mut l = Layers::new(2).with_deadline(std::time::Duration::from_secs(120));
    let (from, to) = (unique("tree"), unique("moved"));
    lay_out(&l, &from);
    // Bigger than the room left: the copy fails part way.
    write_file(
        &l.lower(0).join(format!("{from}/sub/zz-big")),
        pattern(2 << 20, 3),
    );
    let img = l.root.join("small.img");
    make_ext4_image(&img, 16);
    let mut upperfs = LoopFs::mount(&img, &l.root.join("upperfs"), "");
    l.upper_on(&upperfs);
    let m = l.mount_with(&["-o", "redirect_dir=off"]);
    touch_up(&l.mnt, &from);
    let before = tree_snapshot(&l.mnt);
    // Room for the small entries, not for the big one.
    let filler = fill_leaving(&upperfs.dir, 512 << 10);

    assert_errno(
        fs::rename(l.mnt.join(&from), l.mnt.join(&to)),
        libc::ENOSPC,
        "rename with a full upper",
    );
    assert_same(
        &tree_snapshot(&l.mnt),
        &before,
        "cowfs after the failed rename",
    );
    assert_enoent(&l.mnt.join(&to));
    assert_eq!(
        list_names(&l.work.join("work")),
        Vec::<String>::new(),
        "temps left"
    );
    assert!(
        lstat_opt(&l.upper.join(&to)).is_none(),
        "something at the new name"
    );
    assert!(
        lgetxattr(&l.upper.join(&from), "trusted.overlay.opaque").is_err(),
        "the dir was marked opaque before it was all copied"
    );
    assert_eq!(redirects_in(&l.upper), Vec::<String>::new(), "redirects");

    fs::remove_file(&filler).unwrap();
    let dir = fs::File::open(&upperfs.dir).unwrap();
    // SAFETY: syncfs takes an fd that stays open for the call.
    assert_eq!(
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) },
        0
    );
    drop(dir);
    fs::rename(l.mnt.join(&from), l.mnt.join(&to)).expect("rename with room");
    assert_same(
        &tree_snapshot(&l.mnt),
        &renamed(&before, &from, &to),
        "cowfs after the retry",
    );
    m.unmount();
    upperfs.unmount().unwrap();
}

/// RENAME_EXCHANGE of two dirs with lower content, with redirect_dir=off: both are copied up
/// whole, then swap.
#[test]
fn exchange_of_two_lower_dirs_without_redirects() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("x/inner/f"), "x");
    write_file(&l.lower(0).join("y/g"), "y");
    let m = l.mount_with(&["-o", "redirect_dir=off"]);
    let before = tree_snapshot(&l.mnt);
    renameat2(&l.mnt.join("x"), &l.mnt.join("y"), libc::RENAME_EXCHANGE).expect("exchange");
    let mut want: Tree = BTreeMap::new();
    for (k, v) in &before {
        let k = if let Some(rest) = k.strip_prefix('x') {
            format!("y{rest}")
        } else if let Some(rest) = k.strip_prefix('y') {
            format!("x{rest}")
        } else {
            k.clone()
        };
        want.insert(k, v.clone());
    }
    assert_same(&tree_snapshot(&l.mnt), &want, "after the exchange");
    m.unmount();
    let m = l.mount_with(&["-o", "redirect_dir=off"]);
    assert_same(&tree_snapshot(&l.mnt), &want, "after a remount");
    m.unmount();
    assert_eq!(redirects_in(&l.upper), Vec::<String>::new());
    let kwork = l.fresh_dir("kernel-work");
    let kmnt = l.fresh_dir("kernel-mnt");
    let k = KernelOverlay::mount_with(&l.lowers, &l.upper, &kwork, &kmnt, "redirect_dir=off");
    assert_same(&tree_snapshot(&kmnt), &want, "kernel overlayfs");
    k.unmount();
}

/// Files open across the rename stay the files at the new names: a writer's copy is the one
/// the moved dir holds, and a reader of a file not copied up yet reads on.
#[test]
fn open_files_follow_the_dir_copied_up_whole() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("d/w"), "w");
    write_file(&l.lower(0).join("d/sub/r"), "read me");
    let m = l.mount_with(&["-o", "redirect_dir=off"]);
    let mut writer = fs::OpenOptions::new()
        .append(true)
        .open(l.mnt.join("d/w"))
        .unwrap();
    let reader = fs::File::open(l.mnt.join("d/sub/r")).unwrap();
    fs::rename(l.mnt.join("d"), l.mnt.join("e")).unwrap();
    writer.write_all(b"+after").unwrap();
    drop(writer);
    assert_eq!(read(&l.mnt.join("e/w")), "w+after");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut &reader, &mut got).unwrap();
    assert_eq!(got, "read me");
    drop(reader);
    append(&l.mnt.join("e/sub/r"), "!");
    assert_eq!(read(&l.mnt.join("e/sub/r")), "read me!");
    m.unmount();
    assert_eq!(read(&l.upper.join("e/w")), "w+after");
    assert_eq!(read(&l.upper.join("e/sub/r")), "read me!");
}
