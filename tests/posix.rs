//! POSIX semantics a userspace overlay usually lacks (issue 5), part 1: directory rename,
//! hard links inside lower layers, inode numbers. Kernel overlayfs (redirect_dir=on, metacopy=on,
//! index=on) is the reference wherever it has an answer. Copy-up, ACLs, locks, mmap, O_APPEND,
//! O_DIRECT and dir nlink are in tests/posix_copyup.rs.

use crate::common::*;
use crate::posix_support::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

/// rename(2) through `mnt`, logged as "from->to: errno".
fn ren(mnt: &Path, from: &str, to: &str, flags: u32, log: &mut Vec<String>) {
    let e = rename_errno(&mnt.join(from), &mnt.join(to), flags);
    log.push(format!("rename({from}, {to}, {flags}) = {e}"));
}

/// Same ops on cowfs (`l.mnt`) and a kernel twin; asserts equal logs and equal merged trees.
fn compare_with_kernel(l: &Layers, tag: &str, ops: impl Fn(&Path) -> Vec<String>) -> Vec<String> {
    let k = kernel_twin(l, tag);
    let m = l.mount();
    let got = ops(&l.mnt);
    let want = ops(&k.mnt);
    assert_eq!(got, want, "op results: cowfs (left) vs kernel (right)");
    assert_trees_eq(
        &tree_snapshot(&l.mnt),
        &tree_snapshot(&k.mnt),
        "cowfs",
        "kernel",
    );
    m.unmount();
    k.unmount();
    got
}

// ---------------------------------------------------------------------------
// 1. directory rename
// ---------------------------------------------------------------------------

fn rename_fixture(l: &Layers) {
    let (l0, l1) = (l.lower(0), l.lower(1));
    write_file(&l1.join("top/a/b/c/d/f1"), "F1");
    write_file(&l1.join("top/a/b/c/d/f2"), "F2");
    write_file(&l1.join("top/a/b/c/d/sub/g"), "G");
    write_file(&l0.join("top/a/b/c/d/f3"), "F3");
    write_file(&l0.join("top/a/b/c/cfile"), "C");
    write_file(&l1.join("x/x1"), "X1");
    write_file(&l1.join("x/xs/x2"), "X2");
    write_file(&l1.join("p/q/q1"), "Q1");
    write_file(&l1.join("m/m1"), "M1");
    write_file(&l0.join("m/m0"), "M0");
    symlink("../x1", &l1.join("x/xs/link"));
}

#[test]
fn dir_rename_lower_and_partial_dirs_at_any_depth() {
    let l = Layers::new(2);
    rename_fixture(&l);
    let m = l.mount();
    let mnt = &l.mnt;
    let before: Vec<u64> = [
        "x",
        "x/xs/x2",
        "top/a/b/c/d",
        "top/a/b/c/d/f2",
        "p/q",
        "m/m0",
    ]
    .iter()
    .map(|p| ino(&mnt.join(p)))
    .collect();
    m.unmount();
    let log = compare_with_kernel(&l, "k", |mnt| {
        let mut log = Vec::new();
        ren(mnt, "x", "y", 0, &mut log); // wholly lower, top level
        append(&mnt.join("top/a/b/c/d/f1"), "+"); // d is now partly in the upper
        fs::write(mnt.join("top/a/b/c/d/new"), "N").unwrap();
        ren(mnt, "top/a/b/c/d", "top/d2", 0, &mut log); // partial, depth 4 -> 1
        ren(mnt, "p/q", "top/a/b/q2", 0, &mut log); // lower, depth 1 -> 3
        ren(mnt, "m", "top/a/m2", 0, &mut log); // merged from two lowers
        ren(mnt, "y", "top/a/b/c/y2", 0, &mut log); // renamed again, deeper
        ren(mnt, "top", "T", 0, &mut log); // ancestor of redirected dirs
        append(&mnt.join("T/d2/sub/g"), "+");
        log.push(format!("ls T/d2 {:?}", list_names(&mnt.join("T/d2"))));
        log
    });
    assert!(
        log.iter()
            .filter(|s| s.starts_with("rename"))
            .all(|s| s.ends_with("= 0")),
        "every dir rename must succeed (no EXDEV): {log:?}"
    );
    let m = l.mount();
    let mnt = &l.mnt;
    for (p, want) in [
        ("T/a/b/c/y2/x1", "X1"),
        ("T/a/b/c/y2/xs/x2", "X2"),
        ("T/d2/f1", "F1+"),
        ("T/d2/f2", "F2"),
        ("T/d2/f3", "F3"),
        ("T/d2/new", "N"),
        ("T/d2/sub/g", "G+"),
        ("T/a/b/q2/q1", "Q1"),
        ("T/a/m2/m0", "M0"),
        ("T/a/m2/m1", "M1"),
        ("T/a/b/c/cfile", "C"),
    ] {
        assert_eq!(read(&mnt.join(p)), want, "{p}");
    }
    for p in ["x", "y", "top", "p/q", "m", "T/a/b/c/d"] {
        assert_enoent(&mnt.join(p));
    }
    let after: Vec<u64> = [
        "T/a/b/c/y2",
        "T/a/b/c/y2/xs/x2",
        "T/d2",
        "T/d2/f2",
        "T/a/b/q2",
        "T/a/m2/m0",
    ]
    .iter()
    .map(|p| ino(&mnt.join(p)))
    .collect();
    assert_eq!(before, after, "st_ino of renamed dirs and their content");
    let (files, _) = regular_file_bytes(&l.upper);
    assert_eq!(files, 3, "upper holds only f1, g and new as regular files");
    m.unmount();
}

#[test]
fn dir_rename_5000_file_lower_dir_is_fast_and_metadata_only() {
    let l = Layers::new(1);
    let data = pattern(2048, 7);
    for i in 0..5000 {
        write_file(&l.lower(0).join(format!("big/f{i:04}")), &data);
    }
    write_file(&l.lower(0).join("big/sub/s"), "S");
    let m = l.mount();
    let mnt = &l.mnt;
    let big_ino = ino(&mnt.join("big"));
    let t = Instant::now();
    let r = fs::rename(mnt.join("big"), mnt.join("big2"));
    let took = t.elapsed();
    println!("rename of a 5000-file lower dir took {took:?} (goal < 1 s)");
    r.expect("rename big -> big2");
    assert!(took.as_secs_f64() < 5.0, "rename took {took:?}");
    let (files, bytes) = regular_file_bytes(&l.upper);
    println!(
        "upper after rename: {} entries, {files} regular files, {bytes} bytes allocated",
        all_paths(&l.upper).len()
    );
    assert_eq!((files, bytes), (0, 0), "rename copied file data into upper");
    assert_enoent(&mnt.join("big"));
    assert_eq!(ino(&mnt.join("big2")), big_ino);
    assert_eq!(list_names(&mnt.join("big2")).len(), 5001);
    for i in [0, 1234, 4999] {
        assert_eq!(fs::read(mnt.join(format!("big2/f{i:04}"))).unwrap(), data);
    }
    assert_eq!(read(&mnt.join("big2/sub/s")), "S");
    m.unmount();
}

#[test]
fn rename_exchange_and_noreplace_on_lower_dirs() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("A/a1"), "A1");
    write_file(&l.lower(0).join("A/sub/a2"), "A2");
    write_file(&l.lower(0).join("B/b1"), "B1");
    write_file(&l.lower(0).join("B/bsub/b2"), "B2");
    write_file(&l.lower(0).join("C/c1"), "C1");
    let (nr, ex) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    let log = compare_with_kernel(&l, "k", |mnt| {
        let mut log = Vec::new();
        append(&mnt.join("C/c1"), "+"); // C partly in the upper
        ren(mnt, "A", "B", nr, &mut log);
        ren(mnt, "A", "N", nr, &mut log);
        ren(mnt, "N", "B", ex, &mut log); // lower <-> lower
        ren(mnt, "B", "C", ex, &mut log); // lower <-> partial
        ren(mnt, "B", "C", nr, &mut log);
        ren(mnt, "C", "Z", ex, &mut log);
        ren(mnt, "C/sub", "B/sub2", ex, &mut log); // ENOENT: B/sub2 missing
        fs::create_dir(mnt.join("B/sub2")).unwrap();
        ren(mnt, "C/sub", "B/sub2", ex, &mut log); // lower subdir <-> new upper dir
        log
    });
    let e = |n: i32| n.to_string();
    let expect = [
        ("A, B", e(libc::EEXIST)),
        ("A, N", e(0)),
        ("N, B", e(0)),
        ("B, C", e(0)),
        ("B, C", e(libc::EEXIST)),
        ("C, Z", e(libc::ENOENT)),
        ("C/sub, B/sub2", e(libc::ENOENT)),
        ("C/sub, B/sub2", e(0)),
    ];
    for (got, (args, errno)) in log.iter().zip(expect.iter()) {
        assert!(
            got.contains(args) && got.ends_with(&format!("= {errno}")),
            "{got}"
        );
    }
    let m = l.mount();
    let mnt = &l.mnt;
    assert_eq!(list_names(mnt), names(&["B", "C", "N"]));
    for (p, want) in [
        ("N/b1", "B1"),
        ("N/bsub/b2", "B2"),
        ("B/c1", "C1+"),
        ("B/sub2/a2", "A2"),
        ("C/a1", "A1"),
    ] {
        assert_eq!(read(&mnt.join(p)), want, "{p} after remount");
    }
    assert_eq!(list_names(&mnt.join("C/sub")), Vec::<String>::new());
    m.unmount();
}

#[test]
fn new_dir_at_old_name_shows_no_lower_entries() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("d/x"), "X");
    write_file(&l.lower(0).join("d/y"), "Y");
    write_file(&l.lower(1).join("d/s/z"), "Z");
    let ops = |mnt: &Path| {
        let mut log = Vec::new();
        ren(mnt, "d", "e", 0, &mut log);
        fs::create_dir(mnt.join("d")).unwrap();
        log.push(format!("d: {:?}", list_names(&mnt.join("d"))));
        fs::create_dir(mnt.join("d/s")).unwrap();
        fs::write(mnt.join("d/new"), "N").unwrap();
        log.push(format!("d/s: {:?}", list_names(&mnt.join("d/s"))));
        log.push(format!("e: {:?}", list_names(&mnt.join("e"))));
        log.push(format!("e/s: {:?}", list_names(&mnt.join("e/s"))));
        log
    };
    let log = compare_with_kernel(&l, "k", ops);
    assert_eq!(log[1], "d: []", "{log:?}");
    assert_eq!(log[2], "d/s: []", "{log:?}");
    let m = l.mount();
    let mnt = &l.mnt;
    assert_eq!(list_names(&mnt.join("d")), names(&["new", "s"]));
    assert_eq!(list_names(&mnt.join("d/s")), Vec::<String>::new());
    assert_eq!(list_names(&mnt.join("e")), names(&["s", "x", "y"]));
    assert_eq!(read(&mnt.join("e/s/z")), "Z");
    m.unmount();
}

#[test]
fn dir_renames_survive_remount_and_kernel_reads_the_upper() {
    let l = Layers::new(2);
    rename_fixture(&l);
    let m = l.mount();
    let mnt = &l.mnt;
    fs::rename(mnt.join("x"), mnt.join("top/a/x")).unwrap();
    append(&mnt.join("top/a/b/c/d/f2"), "+");
    fs::rename(mnt.join("top/a/b/c/d"), mnt.join("d")).unwrap();
    fs::rename(mnt.join("m"), mnt.join("p/m")).unwrap();
    fs::rename(mnt.join("p"), mnt.join("P")).unwrap();
    fs::create_dir(mnt.join("x")).unwrap();
    fs::write(mnt.join("x/fresh"), "fresh").unwrap();
    fs::rename(mnt.join("top/a/x/xs"), mnt.join("xs")).unwrap();
    let snap = tree_snapshot(mnt);
    let inos = ino_map(mnt);
    assert!(
        snap.contains_key("P/m/m0") && snap.contains_key("d/sub/g") && snap.contains_key("xs/x2")
    );
    m.unmount();
    let m = l.mount();
    assert_trees_eq(
        &snap,
        &tree_snapshot(&l.mnt),
        "before remount",
        "after remount",
    );
    let after = ino_map(&l.mnt);
    let changed: Vec<_> = inos
        .iter()
        .filter(|(p, i)| after.get(*p) != Some(i))
        .map(|(p, i)| format!("{p}: {i} -> {:?}", after.get(p)))
        .collect();
    assert!(changed.is_empty(), "st_ino changed by remount: {changed:?}");
    m.unmount();
    let work = l.fresh_dir("kwork");
    let kmnt = l.fresh_dir("kmnt");
    let k = KernelOverlay::try_mount(&l.lowers, &l.upper, &work, &kmnt, "redirect_dir=on")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_trees_eq(
        &snap,
        &tree_snapshot(&kmnt),
        "cowfs",
        "kernel on cowfs's upper",
    );
    k.unmount();
}

// ---------------------------------------------------------------------------
// 2. hard links inside a lower layer
// ---------------------------------------------------------------------------

fn link_state(mnt: &Path) -> Vec<String> {
    let paths = ["h1", "h2", "dir/h3"];
    let md: Vec<fs::Metadata> = paths
        .iter()
        .map(|p| fs::symlink_metadata(mnt.join(p)).unwrap())
        .collect();
    let mut out: Vec<String> = paths
        .iter()
        .zip(&md)
        .map(|(p, m)| {
            format!(
                "{p}: nlink {} mode {:o} {:?}",
                m.nlink(),
                m.mode(),
                read(&mnt.join(p))
            )
        })
        .collect();
    out.push(format!(
        "same st_ino: {}",
        md.iter().all(|m| m.ino() == md[0].ino())
    ));
    out.push(format!(
        "solo nlink {}",
        fs::metadata(mnt.join("solo")).unwrap().nlink()
    ));
    out
}

#[test]
fn lower_hard_links_stay_one_inode_through_copy_up_and_remount() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("h1"), "H");
    fs::create_dir(l.lower(0).join("dir")).unwrap();
    fs::hard_link(l.lower(0).join("h1"), l.lower(0).join("h2")).unwrap();
    fs::hard_link(l.lower(0).join("h1"), l.lower(0).join("dir/h3")).unwrap();
    write_file(&l.lower(0).join("solo"), "S");
    let k = kernel_twin(&l, "k");
    let m = l.mount();
    let mut logs = Vec::new();
    for mnt in [&l.mnt, &k.mnt] {
        let mut log = link_state(mnt);
        let ino0 = ino(&mnt.join("h2"));
        append(&mnt.join("h1"), "+w1");
        log.extend(link_state(mnt));
        chmod(&mnt.join("dir/h3"), 0o600);
        append(&mnt.join("h2"), "+w2");
        log.extend(link_state(mnt));
        log.push(format!("st_ino kept: {}", ino(&mnt.join("dir/h3")) == ino0));
        logs.push((log, ino0));
    }
    assert_eq!(
        logs[0].0, logs[1].0,
        "cowfs (left) vs kernel index=on (right)"
    );
    let last = link_state(&l.mnt);
    assert_eq!(last[0], "h1: nlink 3 mode 100600 \"H+w1+w2\"");
    assert_eq!(last[3], "same st_ino: true");
    m.unmount();
    let k = kernel_remount(&l.lowers, k);
    let m = l.mount();
    let (kl, cl) = (link_state(&k.mnt), link_state(&l.mnt));
    assert_eq!(cl, last, "cowfs after remount");
    assert_eq!(cl, kl, "cowfs (left) vs kernel (right) after remount");
    assert_eq!(ino(&l.mnt.join("h1")), logs[0].1, "st_ino after remount");
    assert_eq!(read(&l.lower(0).join("h2")), "H", "lower untouched");
    m.unmount();
    k.unmount();
}

// ---------------------------------------------------------------------------
// 3. inode numbers
// ---------------------------------------------------------------------------

#[test]
fn st_ino_never_changes_across_copy_up_rename_and_remount() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("f"), "F");
    write_file(&l.lower(1).join("g"), "G");
    write_file(&l.lower(0).join("d/h"), "H");
    write_file(&l.lower(1).join("deep/x/y/z"), "Z");
    symlink("f", &l.lower(0).join("sym"));
    mkfifo(&l.lower(1).join("fifo"), 0o644).unwrap();
    let m = l.mount();
    let mnt = &l.mnt;
    let orig: BTreeMap<&str, u64> = ["f", "g", "d", "d/h", "deep/x", "deep/x/y/z", "sym", "fifo"]
        .iter()
        .map(|p| (*p, ino(&mnt.join(p))))
        .collect();
    let check = |moves: &[(&str, &str)], when: &str| {
        for (from, to) in moves {
            assert_eq!(
                ino(&mnt.join(to)),
                orig[from],
                "st_ino of {from} (now {to}) {when}"
            );
        }
    };
    chmod(&mnt.join("f"), 0o600);
    append(&mnt.join("g"), "+");
    lchown(&mnt.join("sym"), 3, 3);
    chmod(&mnt.join("fifo"), 0o600);
    append(&mnt.join("deep/x/y/z"), "+");
    check(
        &[
            ("f", "f"),
            ("g", "g"),
            ("sym", "sym"),
            ("fifo", "fifo"),
            ("deep/x/y/z", "deep/x/y/z"),
        ],
        "after copy-up",
    );
    fs::rename(mnt.join("g"), mnt.join("d/g2")).unwrap();
    fs::rename(mnt.join("d"), mnt.join("d2")).unwrap();
    fs::rename(mnt.join("deep/x"), mnt.join("x2")).unwrap();
    fs::rename(mnt.join("f"), mnt.join("x2/f")).unwrap();
    let moves = [
        ("f", "x2/f"),
        ("g", "d2/g2"),
        ("d", "d2"),
        ("d/h", "d2/h"),
        ("deep/x", "x2"),
        ("deep/x/y/z", "x2/y/z"),
        ("sym", "sym"),
        ("fifo", "fifo"),
    ];
    check(&moves, "after rename");
    m.unmount();
    let m = l.mount();
    check(&moves, "after remount");
    m.unmount();
}

/// Every entry's st_ino is unique (no hard links in the tree), st_dev is the mount's, and
/// readdir's d_ino equals st_ino everywhere.
fn check_inode_space(mnt: &Path) -> BTreeMap<String, u64> {
    let dev = fs::metadata(mnt).unwrap().dev();
    let inos = ino_map(mnt);
    let mut seen: BTreeMap<u64, &String> = BTreeMap::new();
    for (p, i) in &inos {
        if let Some(other) = seen.insert(*i, p) {
            panic!("st_ino {i} shared by {other} and {p}");
        }
        let md = fs::symlink_metadata(mnt.join(p)).unwrap();
        assert_eq!(md.dev(), dev, "st_dev of {p}");
        if md.is_dir() {
            check_dirents(&mnt.join(p));
        }
    }
    inos
}

#[test]
fn inode_numbers_unique_across_layers_on_different_filesystems() {
    let l = Layers::new(2);
    let _t0 = Tmpfs::mount(l.lower(0));
    let _t1 = Tmpfs::mount(l.lower(1));
    for (i, lw) in l.lowers.iter().enumerate() {
        for j in 0..20 {
            write_file(&lw.join(format!("own{i}/f{j}")), format!("{i}.{j}"));
            write_file(&lw.join(format!("shared/l{i}-{j}")), format!("{i}.{j}"));
        }
        symlink("shared", &lw.join(format!("sym{i}")));
    }
    for j in 0..20 {
        write_file(&l.upper.join(format!("up/u{j}")), format!("u{j}"));
    }
    let mut raw: BTreeMap<u64, usize> = BTreeMap::new();
    for root in [l.lower(0), l.lower(1)] {
        for (p, i) in ino_map(root) {
            if p != "." {
                *raw.entry(i).or_default() += 1;
            }
        }
    }
    assert!(
        raw.values().any(|n| *n > 1),
        "fixture: the two tmpfs lowers should reuse inode numbers"
    );
    let m = l.mount();
    let mnt = &l.mnt;
    chmod(&mnt.join("own1/f3"), 0o600);
    append(&mnt.join("shared/l1-5"), "+");
    fs::write(mnt.join("shared/new"), "N").unwrap();
    fs::rename(mnt.join("own0"), mnt.join("own0-moved")).unwrap();
    let inos = check_inode_space(mnt);
    assert_eq!(inos.len(), 1 + 3 + 40 + 40 + 1 + 2 + 20 + 1);
    m.unmount();
    let m = l.mount();
    assert_eq!(
        check_inode_space(&l.mnt),
        inos,
        "inode numbers after remount"
    );
    m.unmount();
}

#[test]
fn readdir_d_ino_equals_st_ino_in_merged_renamed_and_copied_dirs() {
    let l = Layers::new(2);
    rename_fixture(&l);
    whiteout(&l.lower(0).join("x/x1"));
    write_file(&l.upper.join("m/um"), "UM");
    let m = l.mount();
    let mnt = &l.mnt;
    append(&mnt.join("m/m1"), "+");
    fs::rename(mnt.join("top/a/b"), mnt.join("b")).unwrap();
    fs::hard_link(mnt.join("b/c/d/f1"), mnt.join("m/f1-link")).unwrap();
    let dev = fs::metadata(mnt).unwrap().dev();
    for (p, _) in ino_map(mnt) {
        let md = fs::symlink_metadata(mnt.join(&p)).unwrap();
        assert_eq!(md.dev(), dev, "st_dev of {p}");
        if md.is_dir() {
            check_dirents(&mnt.join(&p));
        }
    }
    m.unmount();
    let m = l.mount();
    for (p, _) in ino_map(&l.mnt) {
        if fs::symlink_metadata(l.mnt.join(&p)).unwrap().is_dir() {
            check_dirents(&l.mnt.join(&p));
        }
    }
    m.unmount();
}

// ---------------------------------------------------------------------------
// the whole format, read back by the kernel
// ---------------------------------------------------------------------------

/// Everything cowfs writes for this issue at once — a renamed lower dir
/// (redirect), metadata-only copy-ups (metacopy), lower hard links written
/// through (index), whiteouts — then kernel overlayfs with
/// redirect_dir=on,metacopy=on,index=on mounts the same upper and work dir and
/// shows the same tree, with the same st_ino for the hard links.
#[test]
fn kernel_with_redirect_metacopy_index_reads_what_cowfs_wrote() {
    let l = Layers::new(2);
    write_file(&l.lower(1).join("tree/a/f"), "F");
    write_file(&l.lower(1).join("tree/b/g"), "G");
    write_file(&l.lower(0).join("big"), "x".repeat(1 << 20));
    write_file(&l.lower(0).join("h1"), "H");
    fs::hard_link(l.lower(0).join("h1"), l.lower(0).join("h2")).unwrap();
    write_file(&l.lower(0).join("gone"), "gone");

    let m = l.mount_with(&["-o", "metacopy=on"]);
    let mnt = &l.mnt;
    fs::rename(mnt.join("tree"), mnt.join("moved")).expect("rename lower dir");
    chmod(&mnt.join("big"), 0o600);
    append(&mnt.join("h1"), "+w");
    fs::remove_file(mnt.join("gone")).unwrap();
    assert_eq!(
        read(&mnt.join("h2")),
        "H+w",
        "the other name sees the write"
    );
    let snap = tree_snapshot(mnt);
    let inos = ino_map(mnt);
    let big_blocks = fs::metadata(l.upper.join("big")).unwrap().blocks();
    m.unmount();
    assert!(big_blocks < 64, "chmod copied data: {big_blocks} blocks");

    let kmnt = l.fresh_dir("kmnt");
    let k = KernelOverlay::try_mount(&l.lowers, &l.upper, &l.work, &kmnt, KERNEL_FULL_OPTS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_trees_eq(
        &snap,
        &tree_snapshot(&kmnt),
        "cowfs",
        "kernel on cowfs's upper and work dir",
    );
    let k_inos = ino_map(&kmnt);
    for name in ["h1", "h2"] {
        assert_eq!(
            k_inos.get(name),
            inos.get(name),
            "{name}: st_ino under the kernel"
        );
    }
    let nlink = fs::metadata(kmnt.join("h1")).unwrap().nlink();
    assert_eq!(nlink, 2, "hard link count under the kernel");
    k.unmount();
}
