//! Storms: a few workers creating and removing names side by side in shared directories, as
//! parallel builds and package installs do. Each worker works on names of its own, so every
//! operation must succeed, and at the end the merged view and the upper hold exactly what the
//! workers left (computed from the operations they did), before and after a remount.
//!
//! The upper is a fresh ext4 image: ext4 hands a freed inode number out again at once, so an
//! object created right after another was removed often gets its number. A mount that names
//! objects by inode number alone then takes the new object for the old one (mkdir answers
//! EEXIST or ESTALE, names are left behind).
//!
//! CI size: 4 workers x 300 rounds (a few seconds); `COWFS_LONG=1`: 4 x 10,000.

use crate::common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

const WORKERS: usize = 4;

fn rounds() -> usize {
    if std::env::var_os("COWFS_LONG").is_some_and(|v| v == "1") {
        10_000
    } else {
        300
    }
}

// ---------------------------------------------------------------------------
// trees
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Whiteout,
    Other(String),
}

type Tree = BTreeMap<String, Node>;

/// Everything under `root` (not following symlinks), by relative path.
fn walk(root: &Path) -> Tree {
    fn go(root: &Path, rel: &str, out: &mut Tree) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = root.join(&rel);
            let md = fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let node = if ft.is_dir() {
                Node::Dir
            } else if ft.is_file() {
                Node::File(fs::read(&path).unwrap())
            } else if ft.is_char_device() && md.rdev() == 0 {
                Node::Whiteout
            } else {
                Node::Other(format!("{ft:?}"))
            };
            let is_dir = node == Node::Dir;
            out.insert(rel.clone(), node);
            if is_dir {
                go(root, &rel, out);
            }
        }
    }
    let mut out = Tree::new();
    go(root, "", &mut out);
    out
}

fn diff(what: &str, want: &Tree, got: &Tree) -> Vec<String> {
    let show = |n: Option<&Node>| match n {
        None => "absent".to_string(),
        Some(Node::File(data)) => format!("file {:?}", String::from_utf8_lossy(data)),
        Some(n) => format!("{n:?}"),
    };
    let mut out = Vec::new();
    for key in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let (w, g) = (want.get(key), got.get(key));
        if w != g {
            out.push(format!("{what}: {key}: want {}, got {}", show(w), show(g)));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// workers: real operations, each also applied to a model of what it leaves behind
// ---------------------------------------------------------------------------

/// One worker's view: what it has done to the names it owns (`None`: removed) and the errors
/// it met.
struct Worker<'a> {
    mnt: &'a Path,
    lower: &'a Tree,
    model: BTreeMap<String, Option<Node>>,
    errors: Vec<String>,
}

impl<'a> Worker<'a> {
    fn new(mnt: &'a Path, lower: &'a Tree) -> Worker<'a> {
        Worker {
            mnt,
            lower,
            model: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    fn check(&mut self, op: &str, rel: &str, r: io::Result<()>) {
        if let Err(e) = r {
            let errno = e.raw_os_error().map_or(e.to_string(), errno_name);
            self.errors.push(format!("{op} {rel}: {errno}"));
        }
    }

    fn now(&self, rel: &str) -> Option<Node> {
        match self.model.get(rel) {
            Some(node) => node.clone(),
            None => self.lower.get(rel).cloned(),
        }
    }

    /// `mkdir -p`
    fn mkdir_p(&mut self, rel: &str) {
        let r = fs::create_dir_all(self.mnt.join(rel));
        self.check("mkdir -p", rel, r);
        let mut at = String::new();
        for part in rel.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.model.insert(at.clone(), Some(Node::Dir));
        }
    }

    fn mkdir(&mut self, rel: &str) {
        let r = fs::create_dir(self.mnt.join(rel));
        self.check("mkdir", rel, r);
        self.model.insert(rel.into(), Some(Node::Dir));
    }

    /// O_CREAT|O_EXCL, then the data.
    fn create(&mut self, rel: &str, data: &[u8]) {
        let r = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.mnt.join(rel))
            .and_then(|mut f| f.write_all(data));
        self.check("create", rel, r);
        self.model
            .insert(rel.into(), Some(Node::File(data.to_vec())));
    }

    fn unlink(&mut self, rel: &str) {
        let r = fs::remove_file(self.mnt.join(rel));
        self.check("unlink", rel, r);
        self.model.insert(rel.into(), None);
    }

    fn rmdir(&mut self, rel: &str) {
        let r = fs::remove_dir(self.mnt.join(rel));
        self.check("rmdir", rel, r);
        self.model.insert(rel.into(), None);
    }

    /// Renames a file (over whatever file `to` names).
    fn rename(&mut self, from: &str, to: &str) {
        let r = fs::rename(self.mnt.join(from), self.mnt.join(to));
        self.check("rename", &format!("{from} -> {to}"), r);
        let node = self.now(from);
        self.model.insert(to.into(), node);
        self.model.insert(from.into(), None);
    }
}

fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ESTALE => "ESTALE",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EIO => "EIO",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

// ---------------------------------------------------------------------------
// the storm fixture
// ---------------------------------------------------------------------------

/// A lower dir on the test's temp dir and an upper (and work dir) on a fresh ext4 image.
struct Storm {
    layers: Layers,
    _upper_fs: LoopFs,
}

impl Storm {
    fn new(build_lower: impl FnOnce(&Path)) -> Storm {
        let mut layers = Layers::new(1);
        build_lower(layers.lower(0));
        let upper_fs = LoopFs::new(
            &layers.root.join("upper.img"),
            &layers.root.join("upperfs"),
            64,
        );
        layers.upper = upper_fs.dir.join("upper");
        layers.work = upper_fs.dir.join("work");
        fs::create_dir(&layers.upper).unwrap();
        fs::create_dir(&layers.work).unwrap();
        Storm {
            layers,
            _upper_fs: upper_fs,
        }
    }

    /// Runs `WORKERS` workers doing `round(worker, round_no, ops)` `rounds()` times each,
    /// then checks the merged view, the upper, and the merged view after a remount.
    fn run(&self, round: impl Fn(usize, usize, &mut Worker) + Sync) {
        let lower = walk(self.layers.lower(0));
        let mount = self.layers.mount();
        let mnt = &self.layers.mnt;
        let rounds = rounds();
        let workers: Vec<Worker> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let (lower, round) = (&lower, &round);
                    s.spawn(move || {
                        let mut worker = Worker::new(mnt, lower);
                        for r in 0..rounds {
                            round(w, r, &mut worker);
                        }
                        worker
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        let mut errors: Vec<String> = workers.iter().flat_map(|w| w.errors.clone()).collect();
        let ops = errors.len();
        let mut counts = BTreeMap::<String, usize>::new();
        for e in &errors {
            let op = if e.starts_with("mkdir -p") {
                "mkdir -p"
            } else {
                e.split(' ').next().unwrap_or("")
            };
            let kind = format!("{op} {}", e.rsplit(": ").next().unwrap_or(""));
            *counts.entry(kind).or_default() += 1;
        }
        errors.truncate(20);

        let (want_merged, want_upper) = expected(&lower, &workers);
        let mut problems = diff("merged", &want_merged, &walk(mnt));
        mount.unmount();
        problems.extend(diff("upper", &want_upper, &walk(&self.layers.upper)));
        let mount = self.layers.mount();
        problems.extend(diff("merged after remount", &want_merged, &walk(mnt)));
        mount.unmount();

        let left = problems.len();
        problems.truncate(40);
        assert!(
            ops == 0 && left == 0,
            "{}: {WORKERS} workers x {rounds} rounds: {ops} failed operations {counts:?}, \
             {left} differences from the expected trees\nfirst errors:\n{}\nfirst differences:\n{}",
            std::thread::current().name().unwrap_or("storm"),
            errors.join("\n"),
            problems.join("\n")
        );
    }
}

/// The merged view and the upper that the workers' operations leave: the lower with each
/// worker's names as it left them; in the upper, those names (a removed lower name as a
/// whiteout) and the directories above them.
fn expected(lower: &Tree, workers: &[Worker]) -> (Tree, Tree) {
    let mut merged = lower.clone();
    let mut upper = Tree::new();
    for (rel, node) in workers.iter().flat_map(|w| w.model.iter()) {
        // Touching a name copies up the lower dirs above it, for good.
        let mut at = rel.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if lower.contains_key(parent) {
                upper.insert(parent.to_string(), Node::Dir);
            }
            at = parent;
        }
        match node {
            Some(node) => {
                merged.insert(rel.clone(), node.clone());
            }
            None => {
                if merged.remove(rel).is_some() && lower.contains_key(rel) {
                    upper.insert(rel.clone(), Node::Whiteout);
                }
            }
        }
    }
    // Whatever is not the lower's own is in the upper (a lower name removed and made again
    // is no whiteout any more).
    for (rel, node) in &merged {
        if lower.get(rel) != Some(node) {
            upper.insert(rel.clone(), node.clone());
        }
    }
    (merged, upper)
}

fn shared_lower(lower: &Path) {
    write_file(&lower.join("shared/keep"), "from the lower\n");
}

// ---------------------------------------------------------------------------
// the storms
// ---------------------------------------------------------------------------

/// The reported storm: `mkdir -p` of a fresh chain, a file in it, then unlink and `rmdir`s,
/// four workers in one parent. Some rounds leave their chain behind (the next round on that
/// name finds it there).
#[test]
fn mkdir_p_create_unlink_rmdir_in_one_parent() {
    let storm = Storm::new(shared_lower);
    storm.run(|w, r, ops| {
        let d = format!("shared/w{w}-{}", r % 4);
        ops.mkdir_p(&format!("{d}/a/b"));
        let f = format!("{d}/a/b/f");
        if ops.now(&f).is_some() {
            ops.unlink(&f);
        }
        ops.create(&f, format!("{w} {r}\n").as_bytes());
        if (r / 4) % 5 == 4 {
            return;
        }
        ops.unlink(&f);
        ops.rmdir(&format!("{d}/a/b"));
        ops.rmdir(&format!("{d}/a"));
        ops.rmdir(&d);
    });
}

/// Create, unlink and create again of the same names (as a file, then a dir, then a file),
/// rename away and back, beside a dir made and removed: a freed inode number goes from file to
/// dir to file.
#[test]
fn create_unlink_create_and_rename_back() {
    let storm = Storm::new(shared_lower);
    storm.run(|w, r, ops| {
        let f = format!("shared/f{w}-{}", r % 4);
        let away = format!("shared/away{w}");
        let d = format!("shared/d{w}");
        if ops.now(&f).is_some() {
            ops.unlink(&f);
        }
        ops.create(&f, b"first\n");
        ops.unlink(&f);
        // The same name, and likely the same inode number, as a dir.
        ops.mkdir(&f);
        ops.rmdir(&f);
        ops.mkdir(&d);
        ops.rmdir(&d);
        ops.create(&f, format!("{w} {r}\n").as_bytes());
        ops.rename(&f, &away);
        ops.mkdir(&d);
        ops.rename(&away, &f);
        ops.rmdir(&d);
        if r % 3 == 0 {
            ops.unlink(&f);
        }
    });
}

/// Lower files replaced (a new file renamed over them, or unlink and create) and renamed
/// away and back, beside directories made and removed in the same parent.
#[test]
fn lower_files_replaced_beside_churning_dirs() {
    let storm = Storm::new(|lower| {
        shared_lower(lower);
        for w in 0..WORKERS {
            for i in 0..8 {
                write_file(
                    &lower.join(format!("shared/l{w}-{i}")),
                    format!("lower {w} {i}\n"),
                );
            }
        }
    });
    storm.run(|w, r, ops| {
        let l = format!("shared/l{w}-{}", r % 8);
        let c = format!("shared/c{w}");
        let data = format!("{w} {r}\n");
        ops.mkdir_p(&format!("{c}/x"));
        if r % 2 == 0 {
            let tmp = format!("shared/.tmp{w}");
            ops.create(&tmp, data.as_bytes());
            ops.rename(&tmp, &l);
        } else {
            ops.unlink(&l);
            ops.create(&l, data.as_bytes());
        }
        ops.rmdir(&format!("{c}/x"));
        ops.rename(&l, &format!("shared/away{w}"));
        ops.rmdir(&c);
        ops.rename(&format!("shared/away{w}"), &l);
    });
}
