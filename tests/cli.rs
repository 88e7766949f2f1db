//! Bad-input tests for the `cowfs` command line.
//!
//! Every case runs the real binary and checks that it:
//! - finishes within a deadline (a child that hangs is killed, never waited on forever),
//! - exits non-zero with `cowfs: error: ...` on stderr (clap usage errors: exit 2 and a usage text),
//! - does not panic (`panicked` never appears on stderr),
//! - changes nothing on disk: the whole fixture tree is snapshotted before and after (inode, mode,
//!   owner, size, mtime, ctime, rdev, link target of every entry), so a work dir created and removed
//!   again still shows up as a changed parent directory,
//! - mounts nothing: the set of mounts under the fixture is the same before and after.
//!
//! The fixture unmounts anything still mounted under it when dropped (tmpfs made by a test, or a
//! FUSE mount left by a binary that wrongly accepted its input), so a failing case leaves no mount.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cowfs");
/// Validation is instant; this only has to survive a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    rdev: u64,
    link: Option<PathBuf>,
}

type Snapshot = BTreeMap<PathBuf, Entry>;

fn entry_of(path: &Path, md: &fs::Metadata) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    Entry {
        kind,
        ino: md.ino(),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_dir() { 0 } else { md.size() },
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
        rdev: md.rdev(),
        link: if ft.is_symlink() {
            fs::read_link(path).ok()
        } else {
            None
        },
    }
}

/// Every entry under `root` (root included), not descending into (or even stat-ing) `skip`:
/// a mount the binary wrongly made may be served by a broken daemon.
fn snapshot(root: &Path, skip: &BTreeSet<PathBuf>) -> Snapshot {
    fn walk(path: &Path, skip: &BTreeSet<PathBuf>, out: &mut Snapshot) {
        if skip.contains(path) {
            return;
        }
        let Ok(md) = fs::symlink_metadata(path) else {
            return;
        };
        out.insert(path.to_path_buf(), entry_of(path, &md));
        if md.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            for child in names {
                walk(&child, skip, out);
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, skip, &mut out);
    out
}

fn diff_snapshots(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut changes = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => changes.push(format!("removed {}", path.display())),
            Some(new) if new != old => changes.push(format!(
                "changed {}:\n      before {old:?}\n      after  {new:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, new) in after {
        if !before.contains_key(path) {
            changes.push(format!("created {} ({})", path.display(), new.kind));
        }
    }
    changes
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mount point, fstype) of every mount at or under `root`.
fn mounts_under(root: &Path) -> BTreeSet<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mp), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if mp.starts_with(root) {
            out.insert((mp, fstype.to_string()));
        }
    }
    out
}

fn lazy_unmount(path: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

struct Fixture {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Deepest first; a FUSE mount lazily detached makes its daemon exit.
        let mut mounts: Vec<PathBuf> = mounts_under(&self.root)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for mp in mounts {
            lazy_unmount(&mp);
        }
    }
}

struct Run {
    argv: Vec<OsString>,
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
    changes: Vec<String>,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn report(&self, problems: &[String]) -> String {
        let argv: Vec<_> = self.argv.iter().map(|a| a.to_string_lossy()).collect();
        format!(
            "\n{}\ncommand: {}\nstatus: {}\nelapsed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- disk / mount changes ---\n{}\n",
            problems
                .iter()
                .map(|p| format!("PROBLEM: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
            argv.join(" "),
            match self.status {
                None => "TIMED OUT (killed)".to_string(),
                Some(s) => s.to_string(),
            },
            self.elapsed,
            self.stdout,
            self.stderr,
            if self.changes.is_empty() {
                "(none)".to_string()
            } else {
                self.changes.join("\n")
            },
        )
    }

    /// Problems every rejected invocation must be free of.
    fn basic_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self.status {
            None => p.push(format!("did not exit within {DEADLINE:?}")),
            Some(s) if s.code().is_none() => p.push(format!("killed by a signal: {s}")),
            Some(s) if s.success() => p.push("exited 0 on bad input".to_string()),
            Some(_) => {}
        }
        if self.stderr.contains("panicked") {
            p.push("stderr contains panic text".to_string());
        }
        if !self.changes.is_empty() {
            p.push("the fixture changed on disk or in the mount table".to_string());
        }
        p
    }

    fn has_cowfs_error_line(&self) -> bool {
        self.stderr.lines().any(|l| l.starts_with("cowfs: error:"))
    }

    fn is_usage_error(&self) -> bool {
        self.code() == Some(2) && self.stderr.to_lowercase().contains("usage")
    }

    fn fail_if(&self, problems: Vec<String>) {
        if !problems.is_empty() {
            panic!("{}", self.report(&problems));
        }
    }

    /// A validation failure: non-zero exit, `cowfs: error:` on stderr naming one of `mentions`
    /// (case-insensitive; empty = no requirement), nothing changed.
    fn expect_cowfs_error(&self, mentions: &[&str]) {
        let mut p = self.basic_problems();
        if !self.has_cowfs_error_line() {
            p.push("no stderr line starts with `cowfs: error:`".to_string());
        }
        let err = self.stderr.to_lowercase();
        if !mentions.is_empty() && !mentions.iter().any(|m| err.contains(&m.to_lowercase())) {
            p.push(format!("stderr mentions none of {mentions:?}"));
        }
        self.fail_if(p);
    }

    /// A clap usage error: exit 2 and a usage text on stderr, nothing changed.
    fn expect_usage_error(&self) {
        let mut p = self.basic_problems();
        if !self.is_usage_error() {
            p.push("expected exit status 2 and a usage message (`Usage:`) on stderr".to_string());
        }
        self.fail_if(p);
    }

    /// Either a clap usage/value error (exit 2, `error:` on stderr) or a `cowfs: error:` line.
    fn expect_rejected(&self) {
        let mut p = self.basic_problems();
        let clap_style = self.code() == Some(2) && self.stderr.contains("error:");
        if !clap_style && !self.has_cowfs_error_line() {
            p.push(
                "expected a clap error (exit 2) or a `cowfs: error:` line on stderr".to_string(),
            );
        }
        self.fail_if(p);
    }

    /// Exit 0, no panic; returns stdout.
    fn expect_success(&self) -> &str {
        let mut p = Vec::new();
        if self.code() != Some(0) {
            p.push("expected exit status 0".to_string());
        }
        if self.stderr.contains("panicked") {
            p.push("stderr contains panic text".to_string());
        }
        if !self.changes.is_empty() {
            p.push("the fixture changed on disk or in the mount table".to_string());
        }
        self.fail_if(p);
        &self.stdout
    }
}

impl Fixture {
    /// Empty fixture directory (canonical path, so it matches /proc/self/mountinfo).
    fn empty() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cowfs-cli-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().canonicalize().expect("canonicalize tempdir");
        Fixture { root, _dir: dir }
    }

    /// `lower-top/` (file `top.txt`), `lower-base/` (files `base.txt`, `sub/deep.txt`),
    /// `upper-dir/` (empty), `mnt-dir/` (empty).
    fn standard() -> Self {
        let fx = Self::empty();
        fx.file("lower-top/top.txt");
        fx.file("lower-base/base.txt");
        fx.file("lower-base/sub/deep.txt");
        fx.dir("upper-dir");
        fx.dir("mnt-dir");
        fx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Absolute path as a string (fixture paths are ASCII).
    fn s(&self, rel: &str) -> String {
        self.path(rel).to_str().expect("utf-8 path").to_string()
    }

    /// `lower-top:lower-base`
    fn lowers(&self) -> String {
        format!("{}:{}", self.s("lower-top"), self.s("lower-base"))
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).expect("mkdir");
        p
    }

    fn file(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir parent");
        }
        fs::write(&p, format!("content of {rel}\n")).expect("write file");
        p
    }

    /// Mount a small tmpfs at `rel` (created); None (test skipped) if mounting is not possible.
    fn tmpfs(&self, rel: &str) -> Option<PathBuf> {
        let p = self.dir(rel);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(&p)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(p),
            other => {
                eprintln!(
                    "SKIP: cannot mount tmpfs at {} ({other:?}); needs root",
                    p.display()
                );
                None
            }
        }
    }

    /// `cowfs mount lower-top:lower-base upper-dir mnt-dir --workdir <root>/<rel>`
    fn run_with_workdir(&self, rel: &str) -> Run {
        let (lowers, upper, mnt, work) = (
            self.lowers(),
            self.s("upper-dir"),
            self.s("mnt-dir"),
            self.s(rel),
        );
        self.run(["mount", &lowers, &upper, &mnt, "--workdir", &work])
    }

    fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_program(BIN, args, DEADLINE)
    }

    /// Run `prog` with cwd = fixture root (so stray relative creations are seen), stdin closed,
    /// stdout/stderr into anonymous files (a daemon holding them open cannot block us).
    fn run_program<I, S>(&self, prog: &str, args: I, deadline: Duration) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let mounts_before = mounts_under(&self.root);
        let before = snapshot(&self.root, &BTreeSet::new());

        let mut out = tempfile::tempfile().expect("tempfile");
        let mut err = tempfile::tempfile().expect("tempfile");
        let start = Instant::now();
        let mut child = Command::new(prog)
            .args(&args)
            .current_dir(&self.root)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            sleep(Duration::from_millis(10));
        };
        let elapsed = start.elapsed();

        let mounts_after = mounts_under(&self.root);
        let mut changes = Vec::new();
        let mut skip = BTreeSet::new();
        for (mp, fstype) in mounts_after.difference(&mounts_before) {
            changes.push(format!("new mount at {} (fstype {fstype})", mp.display()));
            skip.insert(mp.clone());
        }
        for (mp, fstype) in mounts_before.difference(&mounts_after) {
            changes.push(format!("mount gone at {} (fstype {fstype})", mp.display()));
        }
        let after = snapshot(&self.root, &skip);
        let before: Snapshot = before
            .into_iter()
            .filter(|(p, _)| !skip.contains(p))
            .collect();
        changes.extend(diff_snapshots(&before, &after));

        let read_all = |f: &mut File| {
            let mut buf = Vec::new();
            let _ = f.seek(SeekFrom::Start(0));
            let _ = f.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        };
        Run {
            argv: std::iter::once(OsString::from(prog)).chain(args).collect(),
            status,
            elapsed,
            stdout: read_all(&mut out),
            stderr: read_all(&mut err),
            changes,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness itself: it must see changes and must not hang.
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_detects_created_and_removed_entries() {
    let fx = Fixture::standard();
    let run = fx.run_program(
        "sh",
        ["-c", "mkdir upper-dir/x && rmdir upper-dir/x"],
        DEADLINE,
    );
    assert_eq!(run.code(), Some(0), "{}", run.report(&[]));
    assert!(
        run.changes.iter().any(|c| c.contains("upper-dir")),
        "create+remove must show as a changed parent dir: {:?}",
        run.changes
    );
    let run = fx.run_program("mkdir", [".upper-dir.cowfs-work"], DEADLINE);
    assert!(
        run.changes.iter().any(|c| c.starts_with("created")),
        "{:?}",
        run.changes
    );
}

#[test]
fn harness_kills_a_hanging_child() {
    let fx = Fixture::empty();
    let run = fx.run_program("sleep", ["60"], Duration::from_millis(300));
    assert!(run.status.is_none());
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

/// The harness against the real binary: a valid mount shows as a new `fuse.cowfs` mount plus the
/// default work dir beside UPPER (nothing inside UPPER), and `cowfs umount` takes it away again.
/// The fixture would unmount it anyway if an assertion failed.
#[test]
fn harness_sees_a_valid_mount_and_its_umount() {
    let fx = Fixture::standard();
    let run = fx.run(["mount", &fx.lowers(), &fx.s("upper-dir"), &fx.s("mnt-dir")]);
    let mut p = Vec::new();
    if run.code() != Some(0) {
        p.push("valid mount did not exit 0".to_string());
    }
    let mounted = format!("new mount at {} (fstype fuse.cowfs)", fx.s("mnt-dir"));
    if !run.changes.contains(&mounted) {
        p.push(format!("expected `{mounted}` in the changes"));
    }
    let work = format!("created {} (dir)", fx.s(".upper-dir.cowfs-work"));
    if !run.changes.contains(&work) {
        p.push(format!("expected `{work}` in the changes"));
    }
    let upper = fx.s("upper-dir");
    if let Some(c) = run
        .changes
        .iter()
        .find(|c| c.contains(&format!("{upper}/")))
    {
        p.push(format!("something changed inside UPPER: {c}"));
    }
    run.fail_if(p);

    let run = fx.run(["umount", &fx.s("mnt-dir")]);
    let gone = format!("mount gone at {} (fstype fuse.cowfs)", fx.s("mnt-dir"));
    let mut p = Vec::new();
    if run.code() != Some(0) {
        p.push("cowfs umount of a live cowfs mount did not exit 0".to_string());
    }
    if !run.changes.contains(&gone) {
        p.push(format!("expected `{gone}` in the changes"));
    }
    run.fail_if(p);
}

/// The counterpart of the foreign-file cases: `work` and `index` (what cowfs and kernel
/// overlayfs leave in a work dir) are accepted.
#[test]
fn workdir_with_only_work_and_index_is_accepted() {
    let fx = Fixture::standard();
    fx.dir("work-dir/work");
    fx.dir("work-dir/index");
    let run = fx.run_with_workdir("work-dir");
    let mounted = format!("new mount at {} (fstype fuse.cowfs)", fx.s("mnt-dir"));
    if run.code() != Some(0) || !run.changes.contains(&mounted) {
        run.fail_if(vec![format!("expected exit 0 and `{mounted}`")]);
    }
    let run = fx.run(["umount", &fx.s("mnt-dir")]);
    if run.code() != Some(0) {
        run.fail_if(vec!["cowfs umount did not exit 0".to_string()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Missing paths and files where directories are needed
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_lower() {
    let fx = Fixture::standard();
    let lowers = format!("{}:{}", fx.s("no-such-lower"), fx.s("lower-base"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn missing_bottom_lower() {
    let fx = Fixture::standard();
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("no-such-lower"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn missing_lower_read_only() {
    let fx = Fixture::standard();
    fx.run(["mount", &fx.s("no-such-lower"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn missing_upper() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("no-such-upper"),
        &fx.s("mnt-dir"),
    ])
    .expect_cowfs_error(&["no-such-upper"]);
}

#[test]
fn missing_mountpoint() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("no-such-mnt"),
    ])
    .expect_cowfs_error(&["no-such-mnt"]);
}

#[test]
fn missing_mountpoint_read_only() {
    let fx = Fixture::standard();
    fx.run(["mount", &fx.lowers(), &fx.s("no-such-mnt")])
        .expect_cowfs_error(&["no-such-mnt"]);
}

#[test]
fn lower_is_a_file() {
    let fx = Fixture::standard();
    fx.file("lower-file");
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("lower-file"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lower-file"]);
}

#[test]
fn upper_is_a_file() {
    let fx = Fixture::standard();
    fx.file("upper-file");
    fx.run(["mount", &fx.lowers(), &fx.s("upper-file"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["upper-file"]);
}

#[test]
fn mountpoint_is_a_file() {
    let fx = Fixture::standard();
    fx.file("mnt-file");
    fx.run(["mount", &fx.lowers(), &fx.s("upper-dir"), &fx.s("mnt-file")])
        .expect_cowfs_error(&["mnt-file"]);
}

#[test]
fn workdir_is_a_file() {
    let fx = Fixture::standard();
    fx.file("work-file");
    fx.run_with_workdir("work-file")
        .expect_cowfs_error(&["work-file"]);
}

#[test]
fn lower_name_component_longer_than_255_bytes() {
    let fx = Fixture::standard();
    let long = "a".repeat(256);
    let lowers = format!("{}:{}", fx.s(&long), fx.s("lower-base"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["too long", "255", "aaaaaaaaaaaaaaaa"]);
}

// ---------------------------------------------------------------------------------------------
// Empty lowers in the list
// ---------------------------------------------------------------------------------------------

fn empty_lower_case(lowers: impl Fn(&Fixture) -> String) {
    let fx = Fixture::standard();
    fx.run(["mount", &lowers(&fx), &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&[]);
}

#[test]
fn empty_lower_in_the_middle() {
    empty_lower_case(|fx| format!("{}::{}", fx.s("lower-top"), fx.s("lower-base")));
}

#[test]
fn empty_lower_leading() {
    empty_lower_case(|fx| format!(":{}", fx.s("lower-top")));
}

#[test]
fn empty_lower_trailing() {
    empty_lower_case(|fx| format!("{}:", fx.s("lower-top")));
}

#[test]
fn empty_lower_list() {
    empty_lower_case(|_| String::new());
}

// ---------------------------------------------------------------------------------------------
// Overlapping layers, mountpoint and work dir
// ---------------------------------------------------------------------------------------------

#[test]
fn upper_inside_a_lower() {
    let fx = Fixture::standard();
    fx.dir("lower-top/upper-in-lower");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("lower-top/upper-in-lower"),
        &fx.s("mnt-dir"),
    ])
    .expect_cowfs_error(&["upper-in-lower", "lower-top"]);
}

#[test]
fn upper_is_a_lower() {
    let fx = Fixture::standard();
    fx.run(["mount", &fx.lowers(), &fx.s("lower-base"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lower-base"]);
}

#[test]
fn lower_inside_upper() {
    let fx = Fixture::standard();
    fx.file("upper-dir/lower-in-upper/f.txt");
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("upper-dir/lower-in-upper"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lower-in-upper", "upper-dir"]);
}

#[test]
fn upper_equals_mountpoint() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("upper-dir"),
    ])
    .expect_cowfs_error(&["upper-dir"]);
}

#[test]
fn mountpoint_inside_upper() {
    let fx = Fixture::standard();
    fx.dir("upper-dir/mnt-in-upper");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("upper-dir/mnt-in-upper"),
    ])
    .expect_cowfs_error(&["mnt-in-upper", "upper-dir"]);
}

#[test]
fn mountpoint_inside_a_lower() {
    let fx = Fixture::standard();
    fx.dir("lower-base/mnt-in-lower");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("lower-base/mnt-in-lower"),
    ])
    .expect_cowfs_error(&["mnt-in-lower", "lower-base"]);
}

#[test]
fn mountpoint_inside_a_lower_read_only() {
    let fx = Fixture::standard();
    fx.dir("lower-top/mnt-in-lower");
    fx.run(["mount", &fx.lowers(), &fx.s("lower-top/mnt-in-lower")])
        .expect_cowfs_error(&["mnt-in-lower", "lower-top"]);
}

#[test]
fn mountpoint_is_a_lower() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("lower-top"),
    ])
    .expect_cowfs_error(&["lower-top"]);
}

#[test]
fn workdir_inside_upper() {
    let fx = Fixture::standard();
    fx.run_with_workdir("upper-dir/work-in-upper")
        .expect_cowfs_error(&["work-in-upper", "upper-dir"]);
}

#[test]
fn existing_workdir_inside_upper() {
    let fx = Fixture::standard();
    fx.dir("upper-dir/work-in-upper");
    fx.run_with_workdir("upper-dir/work-in-upper")
        .expect_cowfs_error(&["work-in-upper", "upper-dir"]);
}

#[test]
fn upper_inside_workdir() {
    let fx = Fixture::standard();
    fx.dir("work-dir/upper-in-work");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("work-dir/upper-in-work"),
        &fx.s("mnt-dir"),
        "--workdir",
        &fx.s("work-dir"),
    ])
    .expect_cowfs_error(&["upper-in-work", "work-dir"]);
}

#[test]
fn workdir_on_another_filesystem() {
    let fx = Fixture::standard();
    let Some(_tmpfs) = fx.tmpfs("tmpfs-mnt") else {
        return;
    };
    fx.dir("tmpfs-mnt/work-on-tmpfs");
    fx.run_with_workdir("tmpfs-mnt/work-on-tmpfs")
        .expect_cowfs_error(&["work-on-tmpfs", "filesystem", "device"]);
}

#[test]
fn missing_workdir_on_another_filesystem() {
    let fx = Fixture::standard();
    let Some(_tmpfs) = fx.tmpfs("tmpfs-mnt") else {
        return;
    };
    fx.run_with_workdir("tmpfs-mnt/work-on-tmpfs")
        .expect_cowfs_error(&["work-on-tmpfs", "filesystem", "device"]);
}

#[test]
fn workdir_with_a_foreign_file() {
    let fx = Fixture::standard();
    fx.file("work-dir/foreign.txt");
    fx.run_with_workdir("work-dir")
        .expect_cowfs_error(&["foreign.txt", "work-dir"]);
}

#[test]
fn default_workdir_with_a_foreign_file() {
    let fx = Fixture::standard();
    fx.file(".upper-dir.cowfs-work/foreign.txt");
    fx.run(["mount", &fx.lowers(), &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["foreign.txt", "cowfs-work"]);
}

// ---------------------------------------------------------------------------------------------
// The fuse-overlayfs compatible `-o` form
// ---------------------------------------------------------------------------------------------

#[test]
fn o_form_without_lowerdir() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    let opts = format!(
        "upperdir={},workdir={}",
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lowerdir"]);
}

#[test]
fn mount_o_form_without_lowerdir() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    let opts = format!(
        "upperdir={},workdir={}",
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["mount", "-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lowerdir"]);
}

#[test]
fn o_form_missing_lower() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        fx.s("lower-top"),
        fx.s("no-such-lower"),
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn o_form_upper_inside_a_lower() {
    let fx = Fixture::standard();
    fx.dir("lower-base/upper-in-lower");
    fx.dir("lower-base/work-in-lower");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        fx.lowers(),
        fx.s("lower-base/upper-in-lower"),
        fx.s("lower-base/work-in-lower")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["upper-in-lower", "work-in-lower", "lower-base"]);
}

#[test]
fn o_form_workdir_with_a_foreign_file() {
    let fx = Fixture::standard();
    fx.file("work-dir/foreign.txt");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        fx.lowers(),
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["foreign.txt", "work-dir"]);
}

// ---------------------------------------------------------------------------------------------
// Flags and subcommands
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_subcommand() {
    let fx = Fixture::standard();
    fx.run(["frobnicate"]).expect_usage_error();
}

#[test]
fn unknown_flag_on_mount() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--frobnicate",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_usage_error();
}

#[test]
fn unknown_top_level_flag() {
    let fx = Fixture::standard();
    fx.run(["--frobnicate"]).expect_usage_error();
}

#[test]
fn too_many_mount_arguments() {
    let fx = Fixture::standard();
    fx.dir("extra-dir");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
        &fx.s("extra-dir"),
    ])
    .expect_usage_error();
}

#[test]
fn mount_without_arguments() {
    let fx = Fixture::standard();
    fx.run(["mount"]).expect_rejected();
}

#[test]
fn no_arguments() {
    let fx = Fixture::standard();
    let run = fx.run(Vec::<&str>::new());
    // Printing help and exiting 2 (clap's arg_required_else_help) or an error are both fine.
    let mut p = run.basic_problems();
    if run.stderr.trim().is_empty() {
        p.push("nothing on stderr".to_string());
    }
    run.fail_if(p);
}

#[test]
fn threads_zero() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--threads",
        "0",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_rejected();
}

#[test]
fn threads_not_a_number() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--threads",
        "many",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_rejected();
}

#[test]
fn bad_log_level() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--log-level",
        "shouting",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_rejected();
}

// ---------------------------------------------------------------------------------------------
// umount
// ---------------------------------------------------------------------------------------------

#[test]
fn umount_of_a_plain_directory() {
    let fx = Fixture::standard();
    fx.run(["umount", &fx.s("mnt-dir")])
        .expect_cowfs_error(&["mnt-dir", "not"]);
}

#[test]
fn umount_of_a_missing_path() {
    let fx = Fixture::standard();
    fx.run(["umount", &fx.s("no-such-mnt")])
        .expect_cowfs_error(&["no-such-mnt"]);
}

#[test]
fn umount_of_a_foreign_mount_leaves_it_mounted() {
    let fx = Fixture::standard();
    let Some(_tmpfs) = fx.tmpfs("tmpfs-mnt") else {
        return;
    };
    // Any unmount shows up as "mount gone" in the run's changes.
    fx.run(["umount", &fx.s("tmpfs-mnt")])
        .expect_cowfs_error(&["tmpfs-mnt", "not"]);
}

// ---------------------------------------------------------------------------------------------
// Help and version
// ---------------------------------------------------------------------------------------------

#[test]
fn help_exits_zero() {
    let fx = Fixture::empty();
    let run = fx.run(["--help"]);
    let out = run.expect_success().to_string();
    for word in ["mount", "umount"] {
        assert!(
            out.contains(word),
            "--help does not mention `{word}`:{}",
            run.report(&[])
        );
    }
}

#[test]
fn mount_help_exits_zero_and_names_the_default_workdir() {
    let fx = Fixture::empty();
    let run = fx.run(["mount", "--help"]);
    let out = run.expect_success().to_string();
    assert!(
        out.contains(".cowfs-work"),
        "`cowfs mount --help` must say where the default work dir goes \
         (<dirname(UPPER)>/.<basename(UPPER)>.cowfs-work):{}",
        run.report(&[])
    );
    for flag in [
        "--workdir",
        "--foreground",
        "--threads",
        "--log-level",
        "--pid-file",
    ] {
        assert!(
            out.contains(flag),
            "`cowfs mount --help` lacks {flag}:{}",
            run.report(&[])
        );
    }
}

#[test]
fn umount_help_exits_zero() {
    let fx = Fixture::empty();
    fx.run(["umount", "--help"]).expect_success();
}

#[test]
fn version_exits_zero() {
    let fx = Fixture::empty();
    let run = fx.run(["--version"]);
    let out = run.expect_success().to_string();
    assert!(
        out.contains(env!("CARGO_PKG_VERSION")),
        "--version does not print {}:{}",
        env!("CARGO_PKG_VERSION"),
        run.report(&[])
    );
}
