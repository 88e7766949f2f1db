//! Hard links in a change walk: which names of the merged view are one
//! object, so an export gives them as one file and tar hard links.
//!
//! Upper files with several names are linked in the upper dir itself. A
//! lower file with several names is one object in the merged view too, and
//! once one name is copied up the copy sits in the work dir's index (see
//! `index`), shared by every name: those the upper holds (links to the
//! index entry) and those it does not (a lookup finds the copy through the
//! index). The names of the second kind appear nowhere in the upper, so
//! when a group is short of the names its link count says it has, the
//! lower layer holding the file is scanned for them: a listing of every dir
//! of that layer, matching entries by inode number, with no stat of the
//! entries (the one cost of a walk that does not grow with the upper).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::format::{self, NlinkValue};
use crate::layer::{LayerId, LayerStack, UPPER};
use crate::layerview::{self, LayerDir, OriginTarget};
use crate::sys::{self, FileType, Stat, SysResult};

/// One entry of the index: the shared upper copy of a lower file.
pub struct IndexEntry {
    pub name: OsString,
    pub stat: Stat,
    /// The lower file it is the copy of: device, inode, link count.
    pub lower: Option<(u64, u64, u64)>,
    /// The link count the merged view shows.
    pub merged_nlink: Option<u64>,
    /// A metadata-only copy (the kernel links lower files so with
    /// metacopy=on): its data is the lower file.
    pub metacopy: bool,
}

/// The index of a work dir, by the upper inode of each entry and by the
/// lower file it copies.
#[derive(Default)]
pub struct Index {
    by_upper_ino: HashMap<u64, IndexEntry>,
    by_lower: HashMap<(u64, u64), u64>,
}

/// An index entry whose origin names nothing in the lowers given.
pub struct ForeignIndexEntry(pub OsString);

impl Index {
    /// Reads `<workdir>/index`: each regular file whose name decodes to an
    /// origin that resolves on the lowers.
    pub fn read(
        stack: &LayerStack,
        dir: BorrowedFd<'_>,
    ) -> SysResult<Result<Index, ForeignIndexEntry>> {
        let mut index = Index::default();
        let contents = layerview::read_dir(dir)?;
        for name in contents.objects {
            let Some(st) = sys::stat_at(dir, &name)? else {
                continue;
            };
            if sys::file_type(&st) != FileType::RegularFile {
                continue;
            }
            let lower = match format::origin_of_index_name(&name) {
                Some(origin) => match layerview::resolve_origin(stack, &origin)? {
                    OriginTarget::Found { dev, ino, nlink } => Some((dev, ino, nlink)),
                    OriginTarget::Foreign => return Ok(Err(ForeignIndexEntry(name))),
                    OriginTarget::None | OriginTarget::Unchecked => None,
                },
                None => None,
            };
            let entry_fd = sys::open_path(dir, &name)?;
            let merged_nlink = nlink_of(entry_fd.as_fd(), &st, lower.map(|l| l.2))?;
            let metacopy = layerview::is_metacopy(entry_fd.as_fd())?;
            if let Some((dev, ino, _)) = lower {
                index.by_lower.insert((dev, ino), st.st_ino);
            }
            index.by_upper_ino.insert(
                st.st_ino,
                IndexEntry {
                    name,
                    stat: st,
                    lower,
                    merged_nlink,
                    metacopy,
                },
            );
        }
        Ok(Ok(index))
    }

    pub fn by_upper_ino(&self, ino: u64) -> Option<&IndexEntry> {
        self.by_upper_ino.get(&ino)
    }

    /// The index entry that is the copy of a lower file, if one was made.
    pub fn by_lower(&self, st: &Stat) -> Option<&IndexEntry> {
        let ino = self.by_lower.get(&(st.st_dev, st.st_ino))?;
        self.by_upper_ino.get(ino)
    }
}

/// The link count the merged view shows for an upper non-dir: from its
/// `overlay.nlink` when it has one, else its own.
pub fn nlink_of(fd: BorrowedFd<'_>, st: &Stat, lower_nlink: Option<u64>) -> SysResult<Option<u64>> {
    let recorded =
        layerview::overlay_xattr(fd, |ns| ns.nlink())?.and_then(|value| NlinkValue::decode(&value));
    Ok(match recorded {
        Some(value @ NlinkValue::LowerRelative(_)) => {
            lower_nlink.and_then(|lower| value.count(lower, sys::nlink(st)))
        }
        Some(value) => value.count(0, sys::nlink(st)),
        None => Some(sys::nlink(st)),
    })
}

/// Which object a name of the merged view is, for grouping hard links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKey {
    /// An upper inode (an index entry's copy included).
    Upper(u64),
    /// A lower file no name of which was copied up: device and inode.
    Lower(u64, u64),
}

/// The names of one object the walk found.
#[derive(Default)]
struct Group {
    /// How many names the merged view shows, when known.
    expected: Option<u64>,
    found: BTreeSet<Vec<OsString>>,
    /// For groups whose other names are lower names: the lower file.
    lower: Option<(u64, u64)>,
}

/// The hard-link groups of a walk.
#[derive(Default)]
pub struct LinkGroups {
    groups: HashMap<LinkKey, Group>,
}

impl LinkGroups {
    /// Records that merged path `path` is a name of `key`, which shows
    /// `expected` names in all; `lower` is the lower file whose untouched
    /// names are names of it too.
    pub fn add(
        &mut self,
        key: LinkKey,
        path: Vec<OsString>,
        expected: Option<u64>,
        lower: Option<(u64, u64)>,
    ) {
        let group = self.groups.entry(key).or_default();
        group.found.insert(path);
        if group.expected.is_none() {
            group.expected = expected;
        }
        if group.lower.is_none() {
            group.lower = lower;
        }
    }

    /// The lower files some of whose names the walk did not find, and that
    /// `wanted` says matter, by device and inode, with their group.
    pub fn incomplete(&self, wanted: impl Fn(&LinkKey) -> bool) -> HashMap<(u64, u64), LinkKey> {
        let mut out = HashMap::new();
        for (key, group) in &self.groups {
            let Some(lower) = group.lower else {
                continue;
            };
            let short = group
                .expected
                .is_none_or(|n| (group.found.len() as u64) < n);
            if short && wanted(key) {
                out.insert(lower, *key);
            }
        }
        out
    }

    pub fn has(&self, key: &LinkKey, path: &[OsString]) -> bool {
        self.groups.get(key).is_some_and(|g| g.found.contains(path))
    }
}

/// Every name in the lower layers on device `dev`s of the inodes `wanted`:
/// (layer, path in the layer, inode).
pub fn scan_lowers(
    stack: &LayerStack,
    wanted: &HashMap<(u64, u64), LinkKey>,
) -> SysResult<Vec<(LayerId, Vec<OsString>, u64)>> {
    let mut found = Vec::new();
    for layer in stack.lowers() {
        let inos: HashSet<u64> = wanted
            .keys()
            .filter(|(dev, _)| *dev == layer.dev)
            .map(|(_, ino)| *ino)
            .collect();
        if inos.is_empty() {
            continue;
        }
        let root = LayerDir::root(stack, layer.id);
        scan_dir(root.fd.as_fd(), &mut Vec::new(), &inos, &mut |path, ino| {
            found.push((layer.id, path.to_vec(), ino))
        })?;
    }
    Ok(found)
}

fn scan_dir(
    dir: BorrowedFd<'_>,
    path: &mut Vec<OsString>,
    inos: &HashSet<u64>,
    hit: &mut dyn FnMut(&[OsString], u64),
) -> SysResult<()> {
    let listing = sys::open_dir_for_listing(dir)?;
    let mut subdirs = Vec::new();
    sys::for_each_dir_entry(listing.as_fd(), |name, kind, ino| {
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            return;
        }
        let name = OsStr::from_bytes(bytes).to_os_string();
        match kind {
            FileType::Directory => subdirs.push(name),
            FileType::Unknown => subdirs.push(name),
            _ if inos.contains(&ino) => {
                path.push(name);
                hit(path, ino);
                path.pop();
            }
            _ => {}
        }
    })?;
    for name in subdirs {
        // Entries of unknown type are stat'ed (filesystems without d_type).
        let Some(st) = sys::stat_at(dir, &name)? else {
            continue;
        };
        if sys::file_type(&st) != FileType::Directory {
            if inos.contains(&st.st_ino) {
                path.push(name);
                hit(path, st.st_ino);
                path.pop();
            }
            continue;
        }
        let child: OwnedFd = sys::open_path(dir, &name)?;
        path.push(name);
        scan_dir(child.as_fd(), path, inos, hit)?;
        path.pop();
    }
    Ok(())
}

/// Whether the merged view shows the lower object at `path` of `layer`
/// under the same path, untouched: no upper entry on the way or at the
/// name, no whiteout, opaque dir or redirect on the way, and the lowers'
/// lookup reaching that very object. Returns the object when it does.
pub fn shown_untouched(
    stack: &LayerStack,
    layer: LayerId,
    path: &[OsString],
    ino: u64,
) -> SysResult<Option<layerview::Found>> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(None);
    };
    let mut upper = stack.upper().map(|_| LayerDir::root(stack, UPPER));
    let mut lowers: Vec<LayerDir> = stack
        .lowers()
        .iter()
        .map(|l| LayerDir::root(stack, l.id))
        .collect();
    for component in parents {
        if let Some(dir) = &upper {
            upper = match upper_child(dir, component)? {
                UpperChild::Absent => None,
                UpperChild::Merging(child) => Some(child),
                UpperChild::Hides => return Ok(None),
            };
        }
        let entry = layerview::lookup(&lowers, component)?;
        if !entry.is_dir() {
            return Ok(None);
        }
        lowers = entry.dirs;
    }
    if let Some(dir) = &upper
        && !matches!(upper_child(dir, last)?, UpperChild::Absent)
    {
        return Ok(None);
    }
    let entry = layerview::lookup(&lowers, last)?;
    Ok(entry
        .top
        .filter(|top| top.layer == layer && top.stat.st_ino == ino))
}

enum UpperChild {
    Absent,
    /// A dir whose lowers are the lowers' dirs of the same name.
    Merging(LayerDir),
    /// A whiteout, a non-dir, an opaque dir, or a dir whose lowers are
    /// elsewhere.
    Hides,
}

fn upper_child(dir: &LayerDir, name: &OsStr) -> SysResult<UpperChild> {
    let Some(st) = sys::stat_at(dir.fd.as_fd(), name)? else {
        let oci = format::oci_whiteout_name(name);
        return Ok(match sys::stat_at(dir.fd.as_fd(), &oci)? {
            Some(_) => UpperChild::Hides,
            None => UpperChild::Absent,
        });
    };
    if sys::file_type(&st) != FileType::Directory {
        return Ok(UpperChild::Hides);
    }
    let child = dir.child(name)?;
    if layerview::is_opaque(child.fd.as_fd())? {
        return Ok(UpperChild::Hides);
    }
    Ok(match layerview::redirect_of(child.fd.as_fd())? {
        None => UpperChild::Merging(child),
        Some(format::Redirect::Relative(to)) if to == name => UpperChild::Merging(child),
        Some(_) => UpperChild::Hides,
    })
}
