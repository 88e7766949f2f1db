//! An OCI layer applier, from the image spec (layer.md, "Applying Changesets"), for the
//! diff_export tests: independent of cowfs's code, with the `tar` crate as the reader.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Applies a layer tar to `root`: `.wh..wh..opq` removes the dir's entries that come from below
/// (not those this layer makes), `.wh.NAME` removes NAME from below, any other entry replaces
/// what is at its path unless both are dirs, hard links link to the layer's earlier entry; owner,
/// mode, xattrs (`SCHILY.xattr.*`) and mtime (the PAX record when given) are set, dirs' times
/// last, deepest first.
pub fn apply_oci_layer(root: &Path, archive: &[u8]) {
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut dir_times: Vec<(PathBuf, (i64, i64))> = Vec::new();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let raw = entry.path_bytes().into_owned();
        let rel = normalise(&raw);
        let target = root.join(&rel);
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = target.parent().unwrap_or(root).to_path_buf();
        if name == b".wh..wh..opq" {
            for child in fs::read_dir(&parent).unwrap() {
                let child = child.unwrap().path();
                if !made.contains(&child) {
                    remove_any(&child);
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let hidden = parent.join(std::ffi::OsStr::from_bytes(hidden));
            assert!(
                !made.contains(&hidden),
                "whiteout of an entry of the same layer"
            );
            remove_any(&hidden);
            continue;
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut mtime = (header.mtime().unwrap() as i64, 0i64);
        if let Some(records) = entry.pax_extensions().unwrap() {
            for record in records {
                let record = record.unwrap();
                let key = record.key().unwrap();
                if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((xattr.to_string(), record.value_bytes().to_vec()));
                } else if key == "mtime" {
                    let (secs, frac) = record.value().unwrap().split_once('.').unwrap();
                    mtime = (
                        secs.parse().unwrap(),
                        format!("{frac:0<9}")[..9].parse().unwrap(),
                    );
                }
            }
        }
        let existing = lstat_opt(&target);
        let both_dirs = kind.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !both_dirs {
            remove_any(&target);
        }
        made.insert(target.clone());
        match kind {
            tar::EntryType::Directory => {
                if !both_dirs {
                    fs::create_dir(&target).unwrap();
                }
            }
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                fs::write(&target, data).unwrap();
            }
            tar::EntryType::Symlink => {
                let link = link.expect("symlink target");
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), &target).unwrap();
            }
            tar::EntryType::Link => {
                let link = link.expect("link target");
                fs::hard_link(root.join(normalise(&link)), &target).unwrap();
                // A hard link is a name; the file's metadata came with its first entry.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let format = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let (major, minor) = if kind == tar::EntryType::Fifo {
                    (0, 0)
                } else {
                    let major = header.device_major().unwrap().expect("device major");
                    (major, header.device_minor().unwrap().expect("device minor"))
                };
                mknod(&target, format | 0o600, major, minor).unwrap();
            }
            other => panic!("unexpected entry type {other:?} at {}", rel.display()),
        }
        let uid = header.uid().unwrap() as u32;
        let gid = header.gid().unwrap() as u32;
        lchown(&target, uid, gid);
        if kind != tar::EntryType::Symlink {
            chmod(&target, header.mode().unwrap());
        }
        if both_dirs {
            // A dir of the layer over one from below: its xattrs are the layer's.
            for name in llistxattr(&target).unwrap() {
                lremovexattr(&target, &name).unwrap();
            }
        }
        for (name, value) in &xattrs {
            lsetxattr(&target, name, value, 0).unwrap();
        }
        if kind.is_dir() {
            dir_times.push((target, mtime));
        } else {
            set_times(&target, mtime, mtime).unwrap();
        }
    }
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dir, mtime) in dir_times {
        set_times(&dir, mtime, mtime).unwrap();
    }
}

/// An archive path as a relative path: no leading `./` or `/`, no trailing `/`.
fn normalise(raw: &[u8]) -> PathBuf {
    let text = std::ffi::OsStr::from_bytes(raw);
    let mut out = PathBuf::new();
    for component in Path::new(text).components() {
        if let std::path::Component::Normal(c) = component {
            out.push(c);
        }
    }
    out
}

fn remove_any(p: &Path) {
    match lstat_opt(p) {
        Some(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
        Some(_) => fs::remove_file(p).unwrap(),
        None => {}
    }
}
