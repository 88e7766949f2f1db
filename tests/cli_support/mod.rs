//! Harness for the `cowfs` command-line tests in tests/cli.rs: a [`Fixture`] directory tree (the
//! common [`Layers`], bare), and [`Run`], one invocation of the binary with everything it changed
//! on disk and in the mount table.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::common::{Layers, mounts_under};

const BIN: &str = env!("CARGO_BIN_EXE_cowfs");
/// Validation is instant; this only has to survive a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

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

/// The common [`Layers`] fixture, bare (the tests lay out their own tree). Dropping it detaches
/// every mount under it and kills the daemons naming it.
pub struct Fixture(Layers);

impl std::ops::Deref for Fixture {
    type Target = Layers;
    fn deref(&self) -> &Layers {
        &self.0
    }
}

pub struct Run {
    pub argv: Vec<OsString>,
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    pub changes: Vec<String>,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn report(&self, problems: &[String]) -> String {
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
    pub fn basic_problems(&self) -> Vec<String> {
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

    pub fn has_cowfs_error_line(&self) -> bool {
        self.stderr.lines().any(|l| l.starts_with("cowfs: error:"))
    }

    pub fn is_usage_error(&self) -> bool {
        self.code() == Some(2) && self.stderr.to_lowercase().contains("usage")
    }

    pub fn fail_if(&self, problems: Vec<String>) {
        if !problems.is_empty() {
            panic!("{}", self.report(&problems));
        }
    }

    /// A validation failure: non-zero exit, `cowfs: error:` on stderr naming one of `mentions`
    /// (case-insensitive; empty = no requirement), nothing changed.
    pub fn expect_cowfs_error(&self, mentions: &[&str]) {
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
    pub fn expect_usage_error(&self) {
        let mut p = self.basic_problems();
        if !self.is_usage_error() {
            p.push("expected exit status 2 and a usage message (`Usage:`) on stderr".to_string());
        }
        self.fail_if(p);
    }

    /// Either a clap usage/value error (exit 2, `error:` on stderr) or a `cowfs: error:` line.
    pub fn expect_rejected(&self) {
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
    pub fn expect_success(&self) -> &str {
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
    pub fn empty() -> Self {
        Fixture(Layers::bare("cowfs-cli-", &std::env::temp_dir()))
    }

    /// `lower-top/` (file `top.txt`), `lower-base/` (files `base.txt`, `sub/deep.txt`),
    /// `upper-dir/` (empty), `mnt-dir/` (empty).
    pub fn standard() -> Self {
        let fx = Self::empty();
        fx.file("lower-top/top.txt");
        fx.file("lower-base/base.txt");
        fx.file("lower-base/sub/deep.txt");
        fx.dir("upper-dir");
        fx.dir("mnt-dir");
        fx
    }

    /// `lower-top:lower-base`
    pub fn lowers(&self) -> String {
        format!("{}:{}", self.s("lower-top"), self.s("lower-base"))
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir parent");
        }
        fs::write(&p, format!("content of {rel}\n")).expect("write file");
        p
    }

    /// Mount a small tmpfs at `rel` (created). The tests run as root (scripts/test.sh): a tmpfs
    /// that cannot be mounted is a failure, never a skipped test.
    pub fn tmpfs(&self, rel: &str) -> PathBuf {
        let p = self.dir(rel);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(&p)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => p,
            other => panic!(
                "cannot mount tmpfs at {} ({other:?}); the tests need root",
                p.display()
            ),
        }
    }

    /// `cowfs mount lower-top:lower-base upper-dir mnt-dir --workdir <root>/<rel>`
    pub fn run_with_workdir(&self, rel: &str) -> Run {
        let (lowers, upper, mnt, work) = (
            self.lowers(),
            self.s("upper-dir"),
            self.s("mnt-dir"),
            self.s(rel),
        );
        self.run(["mount", &lowers, &upper, &mnt, "--workdir", &work])
    }

    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_program(BIN, args, DEADLINE)
    }

    /// Run `prog` with cwd = fixture root (so stray relative creations are seen), stdin closed,
    /// stdout/stderr into anonymous files (a daemon holding them open cannot block us).
    pub fn run_program<I, S>(&self, prog: &str, args: I, deadline: Duration) -> Run
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
