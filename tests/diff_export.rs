//! `cowfs diff` and `cowfs export`: a scripted set of changes goes through a real mount (every
//! kind the on-disk format has: new objects of each type, data, chmod/chown/utimes/setxattr and
//! setcap on lower files, deletes, an opaque dir, a redirected dir, hard links of lower files, type
//! changes), then, with the mount gone:
//! * `export`, applied to a copy of the lowers by the OCI layer applier of this test (written from
//!   the image spec, with the `tar` crate as the reader, none of cowfs's code), gives the tree the
//!   mount showed: content, kinds, modes, owners, times, xattrs and which names are one file;
//! * `diff` lists exactly the paths a walk comparing the lowers' tree with the mount's finds, and
//!   `--json` says what changed as that walk does;
//! * the compressed exports hold the same archive, whose sha256 is the diff_id printed.
//!
//! The OCI applier and a small JSON reader are in tests/diff_export/.
//!
//! Bad input (no work dir, a merged view given as upper, a missing lower, an upper written over
//! other lowers) fails with one line naming the path and writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

mod json;
mod oci_applier;

use json::Json;
use oci_applier::apply_oci_layer;

fn cowfs(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(cowfs_bin())
        .args(args)
        .output()
        .expect("run cowfs")
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `cowfs diff LOWERS UPPER --workdir WORK [extra]`, which must succeed.
fn diff_of(l: &Layers, extra: &[&str]) -> String {
    let lowers = l.lowerdir_arg();
    let mut args = vec![
        os("diff"),
        os(&lowers),
        l.upper.as_os_str(),
        os("--workdir"),
        l.work.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    let out = cowfs(&args);
    assert!(
        out.status.success(),
        "cowfs diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 diff")
}

/// `cowfs export LOWERS UPPER --workdir WORK -o FILE [--compress C]`: the diff_id it printed.
fn export_to(l: &Layers, file: &Path, compress: &str) -> String {
    let lowers = l.lowerdir_arg();
    let out = cowfs(&[
        os("export"),
        os(&lowers),
        l.upper.as_os_str(),
        os("--workdir"),
        l.work.as_os_str(),
        os("-o"),
        file.as_os_str(),
        os("--compress"),
        os(compress),
    ]);
    assert!(
        out.status.success(),
        "cowfs export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "export -o wrote to stdout");
    let diff_id = String::from_utf8(out.stderr).expect("utf-8 stderr");
    diff_id.trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// the scenario
// ---------------------------------------------------------------------------------------------

/// The lower tree: something of every kind for the changes to touch.
fn build_lower(lower: &Path) {
    for name in ["a", "b", "mode", "owner", "times", "xattr", "cap", "keep"] {
        write_file(&lower.join("etc").join(name), format!("lower {name}\n"));
    }
    set_xattr(&lower.join("etc/xattr"), "user.orig", b"1");
    set_xattr(&lower.join("etc/keep"), "user.kept", b"yes");
    symlink("a", &lower.join("etc/link"));
    symlink("b", &lower.join("etc/relink"));
    mkfifo(&lower.join("etc/fifo"), 0o640).unwrap();
    mkdir(&lower.join("dev"));
    mknod(&lower.join("dev/null0"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    // Hard links: one written through, one given a new name, one inside a dir that moves.
    write_file(&lower.join("etc/linked1"), "linked\n");
    write_file(&lower.join("usr/lib/placeholder"), "p\n");
    fs::hard_link(lower.join("etc/linked1"), lower.join("usr/lib/linked2")).unwrap();
    write_file(&lower.join("usr/share/twin1"), "twin\n");
    fs::hard_link(lower.join("usr/share/twin1"), lower.join("usr/share/twin2")).unwrap();
    write_file(&lower.join("moved/m1"), "m1\n");
    write_file(&lower.join("moved/deep/m2"), "m2\n");
    write_file(&lower.join("usr/hl-outside"), "outside\n");
    fs::hard_link(lower.join("usr/hl-outside"), lower.join("moved/hl")).unwrap();
    write_file(&lower.join("gone"), "gone\n");
    write_file(&lower.join("gonedir/x"), "x\n");
    write_file(&lower.join("gonedir/sub/y"), "y\n");
    write_file(&lower.join("recreate/old1"), "old1\n");
    write_file(&lower.join("recreate/same"), "same before\n");
    write_file(&lower.join("recreate/sub/z"), "z\n");
    write_file(&lower.join("file2dir"), "a file\n");
    write_file(&lower.join("dir2file/c"), "c\n");
    write_file(&lower.join("renamed-file"), "renamed\n");
    write_file(&lower.join("untouched/u"), "u\n");
    set_times(&lower.join("etc/times"), (1_000_000, 0), (1_000_000, 0)).unwrap();
}

fn append_to(p: &Path, data: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(data.as_bytes()).unwrap();
}

fn setcap(p: &Path) {
    let out = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(p)
        .output()
        .expect("setcap (package libcap2-bin)");
    assert!(out.status.success(), "setcap {}: {out:?}", p.display());
}

/// The scripted changes, through the mount at `m`.
fn make_changes(m: &Path) {
    // New objects of every kind, and new hard links.
    write_file(&m.join("new/file"), "new file\n");
    write_file(&m.join("new/sub/f2"), "f2\n");
    symlink("file", &m.join("new/sl"));
    mkfifo(&m.join("new/fifo"), 0o600).unwrap();
    mknod(&m.join("new/chr"), libc::S_IFCHR | 0o620, 1, 5).unwrap();
    fs::hard_link(m.join("new/file"), m.join("new/h2")).unwrap();
    write_file(&m.join("etc/added"), "added\n");
    // Names and a symlink target longer than the ustar fields hold (PAX path and linkpath).
    let long = format!("new/{}/{}", "d".repeat(160), "f".repeat(200));
    write_file(&m.join(long), "long name\n");
    symlink(&"t/".repeat(90), &m.join("new/long-target"));
    // Data of lower files.
    append_to(&m.join("etc/a"), "more\n");
    fs::write(m.join("etc/b"), "rewritten\n").unwrap();
    // Metadata of lower files (metadata-only copy-ups with metacopy=on).
    chmod(&m.join("etc/mode"), 0o600);
    lchown(&m.join("etc/owner"), 1234, 5678);
    set_times(&m.join("etc/times"), (2_000_000, 5), (3_000_000, 7)).unwrap();
    set_xattr(&m.join("etc/xattr"), "user.added", b"new");
    set_xattr(&m.join("etc/xattr"), "user.orig", b"2");
    setcap(&m.join("etc/cap"));
    chmod(&m.join("usr/share"), 0o750);
    // Deletes.
    fs::remove_file(m.join("gone")).unwrap();
    fs::remove_dir_all(m.join("gonedir")).unwrap();
    fs::remove_file(m.join("etc/fifo")).unwrap();
    // rm -rf and make again: an opaque dir.
    fs::remove_dir_all(m.join("recreate")).unwrap();
    write_file(&m.join("recreate/same"), "same after\n");
    write_file(&m.join("recreate/new1"), "new1\n");
    // A lower dir renamed: a redirect (D at the old path, A with its content at the new).
    fs::rename(m.join("moved"), m.join("etc/moved-here")).unwrap();
    // Hard links of lower files: written through one name; given one more name.
    append_to(&m.join("etc/linked1"), "through the mount\n");
    fs::hard_link(m.join("usr/share/twin1"), m.join("usr/share/twin3")).unwrap();
    // A symlink replaced; kinds changed; a file renamed.
    fs::remove_file(m.join("etc/relink")).unwrap();
    symlink("elsewhere", &m.join("etc/relink"));
    fs::remove_file(m.join("file2dir")).unwrap();
    write_file(&m.join("file2dir/in"), "in\n");
    fs::remove_dir_all(m.join("dir2file")).unwrap();
    fs::write(m.join("dir2file"), "now a file\n").unwrap();
    fs::rename(m.join("renamed-file"), m.join("etc/renamed-here")).unwrap();
}

/// Which names are one file: for each object with several names, its names (sorted).
fn link_groups(root: &Path) -> BTreeSet<Vec<String>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for path in all_paths(root) {
        let meta = fs::symlink_metadata(root.join(&path)).unwrap();
        if !meta.is_dir() && meta.nlink() > 1 {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(path);
        }
    }
    by_inode
        .into_values()
        .map(|mut names| {
            names.sort();
            names
        })
        .collect()
}

const SNAP: SnapOpts = SnapOpts {
    mtime: true,
    opaque: false,
};

/// The lowers as a read-only mount shows them.
fn lowers_view(l: &Layers) -> Tree {
    let ro = l.mount_ro();
    let tree = tree_snapshot_with(&l.mnt, SNAP);
    ro.unmount();
    tree
}

/// A copy of the tree at `from`, by `cp -a` (hard links, owners, modes, times, xattrs kept).
fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .expect("cp");
    assert!(out.status.success(), "cp -a: {out:?}");
}

/// Runs the scenario over one lower, mounted with `opts`; returns the fixture and the trees the
/// lowers and the mount showed, and the mount's link groups.
fn run_scenario(opts: &[&str]) -> (Layers, Tree, Tree, BTreeSet<Vec<String>>) {
    let l = Layers::new(1).with_deadline(std::time::Duration::from_secs(120));
    build_lower(l.lower(0));
    let before = lowers_view(&l);
    let m = l.mount_with(opts);
    make_changes(&l.mnt);
    let after = tree_snapshot_with(&l.mnt, SNAP);
    let groups = link_groups(&l.mnt);
    m.unmount();
    (l, before, after, groups)
}

/// The sha256 of a file, by coreutils' sha256sum (not the crate cowfs uses).
fn sha256_hex(file: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

fn check_export_and_diff(l: &Layers, before: &Tree, after: &Tree, groups: &BTreeSet<Vec<String>>) {
    let layer = l.path("layer.tar");
    let diff_id = export_to(l, &layer, "none");
    let bytes = fs::read(&layer).unwrap();
    assert_eq!(diff_id, format!("sha256:{}", sha256_hex(&layer)));

    let base = l.fresh_dir("base");
    copy_tree(l.lower(0), &base);
    apply_oci_layer(&base, &bytes);
    assert_trees_eq(
        after,
        &tree_snapshot_with(&base, SNAP),
        "mount",
        "lowers + layer",
    );
    assert_eq!(
        &link_groups(&base),
        groups,
        "hard links after applying the layer"
    );

    check_diff(l, before, after);
}

#[test]
fn changes_through_a_mount_export_and_diff_exactly() {
    let (l, before, after, groups) = run_scenario(&[]);
    check_export_and_diff(&l, &before, &after, &groups);
    // The hard links of lower files went through the index, and the moved dir kept its lower
    // content through a redirect: the cases the layer must complete from the lowers.
    assert!(fs::read_dir(l.work.join("index")).unwrap().next().is_some());
    assert!(lgetxattr(&l.upper.join("etc/moved-here"), "trusted.overlay.redirect").is_ok());
    assert!(lgetxattr(&l.upper.join("recreate"), "trusted.overlay.opaque").is_ok());
}

#[test]
fn metacopy_changes_export_and_diff_exactly() {
    let (l, before, after, groups) = run_scenario(&["-o", "metacopy=on"]);
    for name in ["mode", "owner", "times", "xattr"] {
        let p = l.upper.join("etc").join(name);
        assert!(
            lgetxattr(&p, "trusted.overlay.metacopy").is_ok(),
            "{} is not a metacopy file: the scenario does not test metacopy",
            p.display()
        );
    }
    check_export_and_diff(&l, &before, &after, &groups);
}

#[test]
fn an_upper_written_by_kernel_overlayfs_exports_and_diffs_exactly() {
    let l = Layers::new(1).with_deadline(std::time::Duration::from_secs(120));
    build_lower(l.lower(0));
    let before = lowers_view(&l);
    let kernel = KernelOverlay::mount_with(&l.lowers, &l.upper, &l.work, &l.mnt, KERNEL_FULL_OPTS);
    make_changes(&l.mnt);
    let after = tree_snapshot_with(&l.mnt, SNAP);
    let groups = link_groups(&l.mnt);
    kernel.unmount();
    // The kernel's own forms: metacopy files (a renamed one with a redirect to its data), a
    // redirected dir, the index of hard links.
    assert!(lgetxattr(&l.upper.join("etc/mode"), "trusted.overlay.metacopy").is_ok());
    assert!(
        lgetxattr(
            &l.upper.join("etc/renamed-here"),
            "trusted.overlay.redirect"
        )
        .is_ok()
    );
    assert!(lgetxattr(&l.upper.join("etc/moved-here"), "trusted.overlay.redirect").is_ok());
    assert!(fs::read_dir(l.work.join("index")).unwrap().next().is_some());
    check_export_and_diff(&l, &before, &after, &groups);
}

#[test]
fn compressed_exports_hold_the_same_layer() {
    let l = Layers::new(1).with_deadline(std::time::Duration::from_secs(60));
    build_lower(l.lower(0));
    let m = l.mount();
    make_changes(&l.mnt);
    m.unmount();
    let plain = l.path("layer.tar");
    let plain_id = export_to(&l, &plain, "none");
    let plain_bytes = fs::read(&plain).unwrap();
    for (compress, file) in [("gzip", "layer.tar.gz"), ("zstd", "layer.tar.zst")] {
        let path = l.path(file);
        let id = export_to(&l, &path, compress);
        assert_eq!(
            id, plain_id,
            "{compress}: the diff_id is the uncompressed archive's"
        );
        let packed = fs::read(&path).unwrap();
        assert_ne!(packed, plain_bytes, "{compress}: not compressed");
        let mut unpacked = Vec::new();
        match compress {
            "gzip" => flate2::read::GzDecoder::new(&packed[..])
                .read_to_end(&mut unpacked)
                .unwrap(),
            _ => zstd::stream::read::Decoder::new(&packed[..])
                .unwrap()
                .read_to_end(&mut unpacked)
                .unwrap(),
        };
        assert!(
            unpacked == plain_bytes,
            "{compress}: decompresses to another archive"
        );
    }
    // To stdout without -o: the same archive.
    let lowers = l.lowerdir_arg();
    let out = cowfs(&[
        os("export"),
        os(&lowers),
        l.upper.as_os_str(),
        os("--workdir"),
        l.work.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout == plain_bytes, "stdout holds another archive");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), plain_id);
}

#[test]
fn oci_whiteout_lowers_read_correctly() {
    let l = Layers::new(2).with_deadline(std::time::Duration::from_secs(60));
    let (top, bottom) = (l.lower(0).to_path_buf(), l.lower(1).to_path_buf());
    write_file(&bottom.join("hidden-by-oci"), "hidden\n");
    write_file(&bottom.join("opq/old"), "old\n");
    write_file(&bottom.join("keep/k"), "k\n");
    write_file(&bottom.join("keep/gone-below"), "g\n");
    write_file(&bottom.join("data"), "bottom data\n");
    oci_whiteout(&top, "hidden-by-oci");
    write_file(&top.join("opq/new"), "new\n");
    opaque_oci(&top.join("opq"));
    oci_whiteout(&top.join("keep"), "gone-below");
    write_file(&top.join("keep/top"), "top\n");

    let before = lowers_view(&l);
    assert!(!before.contains_key("hidden-by-oci") && !before.contains_key("opq/old"));
    // An upper with no changes: nothing to list (the lowers' own whiteouts are no change).
    assert_eq!(
        diff_of(&l, &[]),
        "C /\n".repeat(usize::from(before["."] != root_of(&l)))
    );

    let base = l.fresh_dir("base");
    let ro = l.mount_ro();
    copy_tree(&l.mnt, &base);
    ro.unmount();

    let m = l.mount();
    append_to(&l.mnt.join("data"), "changed\n");
    fs::remove_file(l.mnt.join("opq/new")).unwrap();
    write_file(&l.mnt.join("opq/another"), "another\n");
    fs::remove_file(l.mnt.join("keep/k")).unwrap();
    write_file(&l.mnt.join("hidden-by-oci"), "made again\n");
    let after = tree_snapshot_with(&l.mnt, SNAP);
    m.unmount();

    let layer = l.path("layer.tar");
    export_to(&l, &layer, "none");
    apply_oci_layer(&base, &fs::read(&layer).unwrap());
    assert_trees_eq(
        &after,
        &tree_snapshot_with(&base, SNAP),
        "mount",
        "lowers + layer",
    );
    check_diff(&l, &before, &after);
    let listed = diff_of(&l, &[]);
    for line in [
        "A /hidden-by-oci",
        "D /opq/new",
        "A /opq/another",
        "D /keep/k",
        "C /data",
    ] {
        assert!(
            listed.lines().any(|l| l == line),
            "{line} not in:\n{listed}"
        );
    }
}

/// The upper root's entry in a snapshot: what the merged root shows.
fn root_of(l: &Layers) -> EntryInfo {
    tree_snapshot_with(&l.upper, SNAP)["."].clone()
}

// ---------------------------------------------------------------------------------------------
// diff against a walk of both trees
// ---------------------------------------------------------------------------------------------

/// What differs between two entries, by the names `cowfs diff --json` uses.
fn changed_parts(a: &EntryInfo, b: &EntryInfo) -> Vec<&'static str> {
    if a.kind != b.kind {
        return vec!["kind"];
    }
    let mut parts = Vec::new();
    if a.content != b.content || a.size != b.size || a.target != b.target || a.rdev != b.rdev {
        parts.push("data");
    }
    if a.mode != b.mode {
        parts.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        parts.push("owner");
    }
    if a.mtime != b.mtime {
        parts.push("times");
    }
    if a.xattrs != b.xattrs {
        parts.push("xattrs");
    }
    if a.nlink != b.nlink {
        parts.push("links");
    }
    parts
}

fn shown(key: &str) -> String {
    if key == "." {
        "/".into()
    } else {
        format!("/{key}")
    }
}

fn parent_key(key: &str) -> &str {
    key.rsplit_once('/').map_or(".", |(parent, _)| parent)
}

/// The changes a walk of both trees finds: added (with everything below), changed, and deleted
/// where the parent is still there. Keyed by the path as diff shows it.
fn expected_changes(before: &Tree, after: &Tree) -> BTreeMap<String, (char, Vec<&'static str>)> {
    let mut out = BTreeMap::new();
    for (key, now) in after {
        match before.get(key) {
            None => {
                out.insert(shown(key), ('A', Vec::new()));
            }
            Some(was) => {
                let parts = changed_parts(was, now);
                if !parts.is_empty() {
                    out.insert(shown(key), ('C', parts));
                }
            }
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) && after.contains_key(parent_key(key)) {
            out.insert(shown(key), ('D', Vec::new()));
        }
    }
    out
}

fn check_diff(l: &Layers, before: &Tree, after: &Tree) {
    let expected = expected_changes(before, after);
    let want: Vec<String> = expected
        .iter()
        .map(|(path, (kind, _))| format!("{kind} {path}"))
        .collect();
    let listed = diff_of(l, &[]);
    let got: Vec<&str> = listed.lines().collect();
    assert_eq!(got, want, "cowfs diff against the walk of both trees");

    let json = Json::parse(&diff_of(l, &["--json"]));
    let Json::Array(objects) = json else {
        panic!("not a JSON array: {json:?}")
    };
    assert_eq!(objects.len(), expected.len());
    for object in &objects {
        let path = object.field("path").and_then(Json::text).expect("path");
        let kind = object.field("kind").and_then(Json::text).expect("kind");
        let (want_kind, want_parts) = &expected[path];
        assert_eq!(kind, want_kind.to_string(), "{path}");
        match object.field("changed") {
            Some(Json::Array(parts)) if kind == "C" => {
                let parts: Vec<&str> = parts.iter().map(|p| p.text().unwrap()).collect();
                assert_eq!(&parts, want_parts, "what changed at {path}");
            }
            None if kind != "C" => {}
            other => panic!("{path} ({kind}): changed is {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bad input
// ---------------------------------------------------------------------------------------------

/// Both commands fail with exit 1 and one line naming `names`; diff prints nothing; export -o
/// leaves no file (nor a temp) behind, and export to stdout writes nothing.
fn assert_refused(args: &[&std::ffi::OsStr], names: &str, out_dir: &Path) {
    let before: BTreeSet<OsString> = fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut diff_args = vec![os("diff")];
    diff_args.extend_from_slice(args);
    let out_file = out_dir.join("refused.tar");
    let mut file_args = vec![os("export")];
    file_args.extend_from_slice(args);
    file_args.extend_from_slice(&[os("-o"), out_file.as_os_str()]);
    let mut stdout_args = vec![os("export")];
    stdout_args.extend_from_slice(args);
    for run in [diff_args, file_args, stdout_args] {
        let out = cowfs(&run);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{run:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{run:?} wrote to stdout");
        assert_eq!(stderr.lines().count(), 1, "{run:?}: not one line: {stderr}");
        assert!(stderr.starts_with("cowfs: error: "), "{run:?}: {stderr}");
        assert!(
            stderr.contains(names),
            "{run:?}: {names} not named in: {stderr}"
        );
    }
    let after: BTreeSet<OsString> = fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "something was left in {}", out_dir.display());
}

#[test]
fn bad_input_fails_naming_the_path_and_writes_nothing() {
    let l = Layers::new(1).with_deadline(std::time::Duration::from_secs(60));
    write_file(&l.lower(0).join("dir/file"), "lower\n");
    let m = l.mount();
    append_to(&l.mnt.join("dir/file"), "changed\n");
    write_file(&l.mnt.join("dir/new"), "new\n");
    let out_dir = l.fresh_dir("out");
    let lowers = l.lowerdir_arg();
    let work = ["--workdir", l.work.to_str().unwrap()].map(os);

    // The merged view given as the upper.
    let mnt = l.mnt.to_str().unwrap();
    assert_refused(&[os(&lowers), os(mnt), work[0], work[1]], mnt, &out_dir);
    m.unmount();

    // A plain dir with no work dir: not an overlay's upper.
    let plain = l.fresh_dir("plain");
    write_file(&plain.join("f"), "f\n");
    assert_refused(
        &[os(&lowers), plain.as_os_str()],
        plain.to_str().unwrap(),
        &out_dir,
    );
    // A work dir that holds something no overlay puts there.
    let odd_work = l.fresh_dir("odd-work");
    write_file(&odd_work.join("stray"), "s\n");
    let odd = ["--workdir", odd_work.to_str().unwrap()].map(os);
    assert_refused(
        &[os(&lowers), l.upper.as_os_str(), odd[0], odd[1]],
        odd_work.to_str().unwrap(),
        &out_dir,
    );

    // A missing lower.
    let missing = l.path("no-such-lower");
    let with_missing = format!("{}:{}", missing.display(), lowers);
    assert_refused(
        &[os(&with_missing), l.upper.as_os_str(), work[0], work[1]],
        missing.to_str().unwrap(),
        &out_dir,
    );

    // The upper written over other lowers: a copy of the lower is not the lower its origins
    // name.
    let other = l.fresh_dir("other-lower");
    copy_tree(l.lower(0), &other);
    let copied_up = l.upper.join("dir");
    assert_refused(
        &[other.as_os_str(), l.upper.as_os_str(), work[0], work[1]],
        copied_up.to_str().unwrap(),
        &out_dir,
    );

    // And the same upper over its own lowers is fine.
    assert_eq!(
        diff_of(&l, &[])
            .lines()
            .filter(|l| l.ends_with("/dir/new"))
            .count(),
        1
    );
}
