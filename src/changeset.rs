//! What a change walk finds: the changed paths (for `cowfs diff`) and the
//! items of a layer (for `cowfs export`), in the order an archive holds
//! them.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::compare::What;
use crate::layer::LayerId;
use crate::sys::Stat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    /// podman diff's letter.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One path that differs. `path` is from the root (empty: the root).
#[derive(Clone, Debug)]
pub struct Change {
    pub path: Vec<OsString>,
    pub kind: ChangeKind,
    /// For `Changed`: what did.
    pub what: What,
}

/// Where an object of the merged view is on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Layer {
        layer: LayerId,
        path: Vec<OsString>,
    },
    /// An entry of the work dir's index (the shared copy of a lower file).
    Index(OsString),
}

/// An object of the merged view, as a layer gives it.
#[derive(Clone, Debug)]
pub struct Object {
    /// Where its metadata (kind, owner, mode, times, xattrs) is.
    pub meta: Place,
    /// Where its data is: the same place, or a metacopy file's lower file.
    pub data: Place,
    pub stat: Stat,
}

/// One entry of a layer, in the order an archive holds them.
#[derive(Clone, Debug)]
pub enum Item {
    /// `DIR/.wh..wh..opq`: the lowers' entries of the dir are hidden.
    Opaque(Vec<OsString>),
    /// `.wh.NAME`: the lowers' entry at the path is deleted.
    Whiteout(Vec<OsString>),
    Object {
        path: Vec<OsString>,
        object: Object,
    },
    /// Another name of an object given earlier.
    Link {
        path: Vec<OsString>,
        target: Vec<OsString>,
    },
}

impl Item {
    /// The archive order: depth first by name, and in a dir its opaque
    /// marker first, then its whiteouts, then its entries.
    pub(crate) fn order_key(&self) -> Vec<(u8, &OsStr)> {
        match self {
            Item::Opaque(dir) => {
                let mut key = order_of(dir, 2);
                key.push((0, OsStr::new("")));
                key
            }
            Item::Whiteout(path) => order_of(path, 1),
            Item::Object { path, .. } | Item::Link { path, .. } => order_of(path, 2),
        }
    }
}

/// Each component of a path ranked 2, the last one `last_rank`.
fn order_of(path: &[OsString], last_rank: u8) -> Vec<(u8, &OsStr)> {
    let mut key: Vec<(u8, &OsStr)> = path.iter().map(|c| (2, c.as_os_str())).collect();
    if let Some(last) = key.last_mut() {
        last.0 = last_rank;
    }
    key
}

pub struct Changeset {
    /// Sorted by path.
    pub changes: Vec<Change>,
    /// In archive order.
    pub items: Vec<Item>,
}

/// A path as shown: `/` and its components joined by `/`.
pub fn display_key(path: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in path {
        out.push(b'/');
        out.extend_from_slice(c.as_bytes());
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}
