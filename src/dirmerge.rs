//! Merged directory listings: the union of a dir's layers, top first, each
//! name once, without whiteouts, OCI markers, or what an opaque dir hides.

use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::error::OpResult;
use crate::format;
use crate::inode::{Inode, RealRef};
use crate::listing::{DirEntry, LowerHint};
use crate::overlay::Overlay;
use crate::sys::{self, FileType};

/// Names a layer dir hides: by 0/0 whiteouts and by OCI `.wh.` files.
#[derive(Default)]
struct Whiteouts {
    chardev: Vec<OsString>,
    oci: Vec<OsString>,
}

/// One entry as read from one layer.
struct LayerEntry {
    name: OsString,
    kind: FileType,
    real_ino: u64,
}

impl Overlay {
    /// The merged entries of `dir`, `.` and `..` not included, in a stable
    /// order: upper entries first, then each lower's new names.
    pub fn list_dir(&self, dir: &Arc<Inode>) -> OpResult<Vec<DirEntry>> {
        self.merge_dir(dir, true)
    }

    /// The merged entries; `exact_ino: false` skips the lookups that only
    /// the inode numbers of some entries need.
    fn merge_dir(&self, dir: &Arc<Inode>, exact_ino: bool) -> OpResult<Vec<DirEntry>> {
        let layers = dir.layers();
        let mut out: Vec<DirEntry> = Vec::new();
        let mut position: HashMap<OsString, usize> = HashMap::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        // Names present in more than one layer need a full lookup for their
        // inode number (it depends on where the object came from).
        let mut overlapping: HashSet<usize> = HashSet::new();
        let mut upper_names: HashSet<usize> = HashSet::new();

        // Hints only fit in the bits there are.
        let hinted_lowers = u8::try_from(layers.lowers.len())
            .ok()
            .filter(|n| *n <= 64)
            .unwrap_or(0);
        let blank_hint = LowerHint {
            lower_dirs: hinted_lowers,
            ..LowerHint::default()
        };
        let upper = layers.upper.iter().map(|dir| (None, dir));
        let lowers = layers
            .lowers
            .iter()
            .enumerate()
            .map(|(i, dir)| (Some(i), dir));
        for (lower_index, source) in upper.chain(lowers) {
            let bit = lower_index.filter(|i| *i < 64).map_or(0, |i| 1u64 << i);
            let (entries, whiteouts) = self.read_layer_dir(source)?;
            for entry in entries {
                if hidden.contains(&entry.name) {
                    continue;
                }
                if let Some(&at) = position.get(&entry.name) {
                    if upper_names.contains(&at) {
                        overlapping.insert(at);
                    }
                    out[at].lowers.present |= bit;
                    continue;
                }
                position.insert(entry.name.clone(), out.len());
                if source.is_upper() {
                    upper_names.insert(out.len());
                }
                let mut lowers = blank_hint;
                lowers.present |= bit;
                out.push(DirEntry {
                    ino: self.layer_stack().map_ino(source.layer, entry.real_ino),
                    name: entry.name,
                    kind: entry.kind,
                    lowers,
                });
            }
            for name in &whiteouts.chardev {
                if let Some(&at) = position.get(name) {
                    out[at].lowers.present |= bit;
                }
            }
            for name in &whiteouts.oci {
                if let Some(&at) = position.get(name) {
                    out[at].lowers.oci_whiteout |= bit;
                }
            }
            // A layer's whiteouts hide names of the layers below it only.
            hidden.extend(whiteouts.chardev);
            hidden.extend(whiteouts.oci);
        }

        if !exact_ino {
            return Ok(out);
        }
        // In an impure upper dir, copied-up or moved entries keep the inode
        // number of their origin, which only a lookup finds.
        if let Some(upper) = &layers.upper {
            let fd = self.real_fd(upper)?;
            if self.is_impure(fd.as_fd())? {
                overlapping.extend(upper_names.iter().copied());
            }
        }
        for at in overlapping {
            if let Some(found) = self.resolve_hinted(dir, &out[at].name, &out[at].lowers)? {
                out[at].ino = found.ino;
            }
        }
        Ok(out)
    }

    /// Whether the merged dir has no entries at all.
    pub fn dir_is_empty(&self, dir: &Arc<Inode>) -> OpResult<bool> {
        Ok(self.merge_dir(dir, false)?.is_empty())
    }

    /// The link count of a merged dir: 2 plus one per subdir it shows.
    pub fn merged_nlink(&self, dir: &Arc<Inode>) -> OpResult<u32> {
        if let Some(known) = dir.cached_nlink() {
            return Ok(known);
        }
        let subdirs = if dir.has_upper() {
            self.merge_dir(dir, false)?
                .iter()
                .filter(|e| e.kind == FileType::Directory)
                .count()
        } else {
            // Without an upper dir the exact listing costs no more (no
            // copied-up entries whose numbers need a lookup), and an open of
            // the dir usually follows its lookup: list once for both.
            self.count_subdirs_and_keep(dir)?
        };
        let nlink = u32::try_from(subdirs + 2).unwrap_or(u32::MAX);
        dir.cache_nlink(nlink);
        Ok(nlink)
    }

    /// Reads one layer's dir: its visible entries and the names it whites out.
    fn read_layer_dir(&self, dir: &RealRef) -> OpResult<(Vec<LayerEntry>, Whiteouts)> {
        let path_fd = self.real_fd(dir)?;
        let listing = sys::open_dir_for_listing(path_fd.as_fd())?;
        let mut raw = Vec::new();
        sys::for_each_dir_entry(listing.as_fd(), |name, kind, ino| {
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                raw.push((OsStr::from_bytes(bytes).to_os_string(), kind, ino));
            }
        })?;

        let mut entries = Vec::with_capacity(raw.len());
        let mut whiteouts = Whiteouts::default();
        for (name, mut kind, real_ino) in raw {
            if format::is_reserved_name(&name) {
                if let Some(target) = format::oci_whiteout_target(&name) {
                    whiteouts.oci.push(target.to_os_string());
                }
                continue;
            }
            if kind == FileType::CharacterDevice || kind == FileType::Unknown {
                match sys::stat_at(path_fd.as_fd(), &name)? {
                    Some(st) if format::is_chardev_whiteout(&st) => {
                        whiteouts.chardev.push(name);
                        continue;
                    }
                    Some(st) => kind = sys::file_type(&st),
                    None => continue, // gone meanwhile
                }
            }
            entries.push(LayerEntry {
                name,
                kind,
                real_ino,
            });
        }
        Ok((entries, whiteouts))
    }
}
