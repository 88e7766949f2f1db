//! Whole-tree snapshots ([`tree_snapshot`]) and their comparison ([`assert_trees_eq`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::sys::{lgetxattr, llistxattr, mtime_of};

// ---------------------------------------------------------------------------
// tree snapshots
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    pub len: u64,
    pub hash: u64,
    /// first bytes, for messages only (not compared beyond hash/len)
    pub head: Vec<u8>,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len as usize == self.head.len() {
            write!(f, "{:?}", String::from_utf8_lossy(&self.head))
        } else {
            write!(
                f,
                "<{} bytes, fnv {:016x}, starts {:?}>",
                self.len,
                self.hash,
                String::from_utf8_lossy(&self.head)
            )
        }
    }
}

pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: Kind,
    /// permission bits (0o7777)
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// regular files only
    pub size: Option<u64>,
    pub content: Option<Content>,
    pub target: Option<String>,
    /// devices only
    pub rdev: Option<u64>,
    /// non-directories only
    pub nlink: Option<u64>,
    /// sorted, excluding trusted.overlay.* / user.overlay.*
    pub xattrs: Vec<(String, String)>,
    /// only when requested
    pub mtime: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SnapOpts {
    pub mtime: bool,
    /// also record trusted.overlay.opaque as a pseudo xattr `<opaque>` (for upper dirs)
    pub opaque: bool,
}

pub type Tree = BTreeMap<String, EntryInfo>;

fn is_overlay_xattr(n: &str) -> bool {
    n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.")
}

fn entry_info(p: &Path, opts: SnapOpts) -> EntryInfo {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let (size, content) = if kind == Kind::File {
        let data = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        assert_eq!(
            data.len() as u64,
            m.len(),
            "st_size of {} disagrees with bytes read",
            p.display()
        );
        (
            Some(m.len()),
            Some(Content {
                len: data.len() as u64,
                hash: fnv1a(&data),
                head: data[..data.len().min(48)].to_vec(),
            }),
        )
    } else {
        (None, None)
    };
    let target = if kind == Kind::Symlink {
        Some(
            fs::read_link(p)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()))
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    let rdev = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| m.rdev());
    let mut xattrs = Vec::new();
    let list = llistxattr(p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
    for n in list {
        if opts.opaque && n == "trusted.overlay.opaque" {
            let v = lgetxattr(p, &n).unwrap_or_default();
            xattrs.push(("<opaque>".into(), String::from_utf8_lossy(&v).into_owned()));
        }
        if is_overlay_xattr(&n) {
            continue;
        }
        let v = lgetxattr(p, &n).unwrap_or_else(|e| panic!("getxattr {n} {}: {e}", p.display()));
        xattrs.push((n, String::from_utf8_lossy(&v).into_owned()));
    }
    xattrs.sort();
    EntryInfo {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size,
        content,
        target,
        rdev,
        nlink: (kind != Kind::Dir).then(|| m.nlink()),
        xattrs,
        mtime: opts.mtime.then(|| mtime_of(&m)),
    }
}

/// Snapshot of the tree under `root` (key "." is the root itself), never following symlinks.
pub fn tree_snapshot(root: &Path) -> Tree {
    tree_snapshot_with(root, SnapOpts::default())
}

pub fn tree_snapshot_with(root: &Path, opts: SnapOpts) -> Tree {
    let mut out = BTreeMap::new();
    out.insert(".".to_string(), entry_info(root, opts));
    walk(root, "", opts, &mut out);
    out
}

fn walk(dir: &Path, rel: &str, opts: SnapOpts, out: &mut Tree) {
    let mut entries: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
                .file_name()
        })
        .collect();
    entries.sort();
    for name in entries {
        let p = dir.join(&name);
        let r = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let info = entry_info(&p, opts);
        let is_dir = info.kind == Kind::Dir;
        assert!(
            out.insert(r.clone(), info).is_none(),
            "duplicate entry {r} in readdir of {}",
            dir.display()
        );
        if is_dir {
            walk(&p, &r, opts, out);
        }
    }
}

/// Human readable differences between two trees (empty if equal).
pub fn diff_trees(a: &Tree, b: &Tree, name_a: &str, name_b: &str) -> Vec<String> {
    let mut d = Vec::new();
    for (k, va) in a {
        match b.get(k) {
            None => d.push(format!("  only in {name_a}: {k}  {va:?}")),
            Some(vb) if vb != va => {
                let mut fields = Vec::new();
                macro_rules! cmp {
                    ($f:ident) => {
                        if va.$f != vb.$f {
                            fields.push(format!(
                                "{}: {name_a}={:?} {name_b}={:?}",
                                stringify!($f),
                                va.$f,
                                vb.$f
                            ));
                        }
                    };
                }
                cmp!(kind);
                if va.mode != vb.mode {
                    fields.push(format!(
                        "mode: {name_a}={:o} {name_b}={:o}",
                        va.mode, vb.mode
                    ));
                }
                cmp!(uid);
                cmp!(gid);
                cmp!(size);
                cmp!(content);
                cmp!(target);
                cmp!(rdev);
                cmp!(nlink);
                cmp!(xattrs);
                cmp!(mtime);
                d.push(format!("  differs: {k}\n      {}", fields.join("\n      ")));
            }
            _ => {}
        }
    }
    for (k, vb) in b {
        if !a.contains_key(k) {
            d.push(format!("  only in {name_b}: {k}  {vb:?}"));
        }
    }
    d
}

#[track_caller]
pub fn assert_trees_eq(a: &Tree, b: &Tree, name_a: &str, name_b: &str) {
    let d = diff_trees(a, b, name_a, name_b);
    assert!(
        d.is_empty(),
        "trees differ ({name_a} vs {name_b}), {} difference(s):\n{}",
        d.len(),
        d.join("\n")
    );
}

/// Relative paths of every entry under `root` (excluding the root), sorted.
pub fn all_paths(root: &Path) -> Vec<String> {
    tree_snapshot(root)
        .into_keys()
        .filter(|k| k != ".")
        .collect()
}

/// Asserts that nothing under `upper` looks like a cowfs/OCI artifact.
#[track_caller]
pub fn assert_no_artifacts(upper: &Path) {
    for p in all_paths(upper) {
        let base = p.rsplit('/').next().unwrap();
        assert!(
            !base.starts_with(".wh."),
            "OCI whiteout {p} written into upper {}",
            upper.display()
        );
        assert!(
            !base.to_ascii_lowercase().contains("cowfs"),
            "cowfs artifact {p} in upper {}",
            upper.display()
        );
    }
}
