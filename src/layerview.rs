//! Reading layers without a mount: what one layer's dir holds, and what a
//! stack of lower dirs shows under a name, by the same rules a lookup and a
//! merged listing follow (0/0 and OCI whiteouts, opaque dirs, a non-dir
//! ending the merge). Used by the change walk of `cowfs diff` and
//! `cowfs export`, which reads an upper dir and its lowers at rest.
//!
//! Every object is reached one name at a time from a dir fd with
//! `O_NOFOLLOW` (through `sys`), so a symlink in a layer is never followed.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::format::{self, Opacity, Origin, Redirect};
use crate::layer::{LayerId, LayerStack};
use crate::sys::{self, Errno, FileType, Stat, SysResult};

/// One layer's dir, held as an `O_PATH` fd, with its path in the layer.
#[derive(Clone)]
pub struct LayerDir {
    pub layer: LayerId,
    pub fd: Arc<OwnedFd>,
    /// Components from the layer's root.
    pub path: Arc<[OsString]>,
}

impl LayerDir {
    /// The root dir of a layer.
    pub fn root(stack: &LayerStack, layer: LayerId) -> LayerDir {
        LayerDir {
            layer,
            fd: stack.get(layer).shared_root(),
            path: Arc::from(Vec::new()),
        }
    }

    /// The subdir `name` of this dir, opened without following a symlink.
    pub fn child(&self, name: &OsStr) -> SysResult<LayerDir> {
        let fd = sys::open_path(self.fd.as_fd(), name)?;
        Ok(LayerDir {
            layer: self.layer,
            fd: Arc::new(fd),
            path: self.child_path(name).into(),
        })
    }

    /// The path in the layer of this dir's entry `name`.
    pub fn child_path(&self, name: &OsStr) -> Vec<OsString> {
        let mut path = self.path.to_vec();
        path.push(name.to_os_string());
        path
    }
}

/// What one layer's dir holds: its objects (not whiteouts, not OCI
/// markers), the names it whites out, and whether it holds the OCI opaque
/// marker.
#[derive(Default)]
pub struct DirContents {
    pub objects: BTreeSet<OsString>,
    pub whiteouts: BTreeSet<OsString>,
    pub opaque_marker: bool,
}

/// Reads one layer's dir.
pub fn read_dir(dir: BorrowedFd<'_>) -> SysResult<DirContents> {
    let listing = sys::open_dir_for_listing(dir)?;
    let mut raw = Vec::new();
    sys::for_each_dir_entry(listing.as_fd(), |name, kind, _| {
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            raw.push((OsStr::from_bytes(bytes).to_os_string(), kind));
        }
    })?;
    let mut out = DirContents::default();
    for (name, kind) in raw {
        if format::is_reserved_name(&name) {
            if let Some(target) = format::oci_whiteout_target(&name) {
                out.whiteouts.insert(target.to_os_string());
            } else if name == format::OCI_OPAQUE_MARKER {
                out.opaque_marker = true;
            }
            continue;
        }
        if kind == FileType::CharacterDevice || kind == FileType::Unknown {
            match sys::stat_at(dir, &name)? {
                Some(st) if format::is_chardev_whiteout(&st) => {
                    out.whiteouts.insert(name);
                    continue;
                }
                Some(_) => {}
                None => continue,
            }
        }
        out.objects.insert(name);
    }
    // A name that is both an object and an OCI whiteout shows the object.
    let shown: Vec<OsString> = out.whiteouts.intersection(&out.objects).cloned().collect();
    for name in shown {
        out.whiteouts.remove(&name);
    }
    Ok(out)
}

/// Whether a dir hides the dirs of its name below it: the overlay `opaque`
/// xattr (either namespace) or the OCI opaque marker.
pub fn is_opaque(dir: BorrowedFd<'_>) -> SysResult<bool> {
    for ns in format::READ_NAMESPACES {
        let byte = sys::xattr_first_byte(dir, ns.opaque())?;
        if format::opacity_from_xattr(byte) == Opacity::Opaque {
            return Ok(true);
        }
    }
    Ok(sys::stat_at(dir, OsStr::new(format::OCI_OPAQUE_MARKER))?.is_some())
}

/// An overlay xattr from either namespace; `None` when absent or when the
/// namespace cannot be read.
pub fn overlay_xattr(
    fd: BorrowedFd<'_>,
    name_of: impl Fn(format::XattrNamespace) -> &'static OsStr,
) -> SysResult<Option<Vec<u8>>> {
    for ns in format::READ_NAMESPACES {
        match sys::get_xattr(fd, name_of(ns)) {
            Ok(Some(value)) => return Ok(Some(value)),
            Ok(None) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The redirect of an upper dir or metacopy file; an invalid value counts
/// as none, as in a lookup.
pub fn redirect_of(fd: BorrowedFd<'_>) -> SysResult<Option<Redirect>> {
    Ok(overlay_xattr(fd, |ns| ns.redirect())?.and_then(|v| Redirect::decode(&v)))
}

pub fn is_metacopy(fd: BorrowedFd<'_>) -> SysResult<bool> {
    Ok(overlay_xattr(fd, |ns| ns.metacopy())?.is_some())
}

/// What an upper object's origin xattr names.
pub enum OriginTarget {
    /// No origin xattr.
    None,
    /// An origin that cannot be checked: empty ("unknown"), a format this
    /// host does not read, or no privilege to open file handles.
    Unchecked,
    /// The lower object the origin names: its device, inode and link count.
    Found { dev: u64, ino: u64, nlink: u64 },
    /// An origin that names nothing on the lowers' filesystems: the upper
    /// was written over other lower dirs.
    Foreign,
}

/// Resolves an upper object's origin on the lowers' filesystems.
pub fn origin_of(stack: &LayerStack, fd: BorrowedFd<'_>) -> SysResult<OriginTarget> {
    let Some(value) = overlay_xattr(fd, |ns| ns.origin())? else {
        return Ok(OriginTarget::None);
    };
    resolve_origin(stack, &value)
}

/// Resolves an origin value (the xattr, or an index entry's name decoded).
pub fn resolve_origin(stack: &LayerStack, value: &[u8]) -> SysResult<OriginTarget> {
    let Some(origin) = Origin::decode(value) else {
        return Ok(OriginTarget::Unchecked);
    };
    let handle = sys::FileHandleBytes {
        handle_type: i32::from(origin.handle_type),
        bytes: origin.handle,
    };
    let mut tried_devs = Vec::new();
    let mut unchecked = false;
    for layer in stack.lowers() {
        let same_fs = origin.uuid == [0; 16] || layer.uuid.is_none_or(|u| u == origin.uuid);
        if !same_fs || tried_devs.contains(&layer.dev) {
            continue;
        }
        tried_devs.push(layer.dev);
        let Some(mount_fd) = layer.handle_root() else {
            unchecked = true;
            continue;
        };
        match sys::open_by_handle(mount_fd, &handle, sys::OFlags::PATH) {
            Ok(found) => {
                let st = sys::fstat(found.as_fd())?;
                return Ok(OriginTarget::Found {
                    dev: st.st_dev,
                    ino: st.st_ino,
                    nlink: sys::nlink(&st),
                });
            }
            Err(Errno::STALE) | Err(Errno::NOENT) => {}
            // No CAP_DAC_READ_SEARCH, or a filesystem without handles.
            Err(_) => unchecked = true,
        }
    }
    Ok(if unchecked {
        OriginTarget::Unchecked
    } else {
        OriginTarget::Foreign
    })
}

/// An object found in one layer.
#[derive(Clone)]
pub struct Found {
    pub layer: LayerId,
    /// Its path in that layer.
    pub path: Vec<OsString>,
    pub stat: Stat,
    /// The dir it is in, to open it by its name.
    pub parent: Arc<OwnedFd>,
}

impl Found {
    /// An `O_PATH` fd of the object.
    pub fn open(&self) -> SysResult<OwnedFd> {
        match self.path.last() {
            Some(name) => sys::open_path(self.parent.as_fd(), name),
            None => sys::open_path(self.parent.as_fd(), OsStr::new(".")),
        }
    }

    pub fn kind(&self) -> FileType {
        sys::file_type(&self.stat)
    }
}

/// What a stack of lower dirs shows under a name: the object on top and,
/// when that is a dir, every dir merged into it, top first.
#[derive(Default)]
pub struct StackEntry {
    pub top: Option<Found>,
    pub dirs: Vec<LayerDir>,
}

impl StackEntry {
    pub fn is_dir(&self) -> bool {
        self.top
            .as_ref()
            .is_some_and(|f| sys::file_type(&f.stat) == FileType::Directory)
    }
}

/// Looks `name` up in a stack of lower dirs, top first, until a whiteout,
/// a non-dir, an opaque dir or the bottom (as a lookup through a mount).
pub fn lookup(stack: &[LayerDir], name: &OsStr) -> SysResult<StackEntry> {
    let mut out = StackEntry::default();
    for (i, dir) in stack.iter().enumerate() {
        let below = i + 1 < stack.len();
        let Some(st) = sys::stat_at(dir.fd.as_fd(), name)? else {
            // An OCI whiteout where the name is absent hides it below.
            if below && sys::stat_at(dir.fd.as_fd(), &format::oci_whiteout_name(name))?.is_some() {
                break;
            }
            continue;
        };
        if format::is_chardev_whiteout(&st) {
            break;
        }
        let is_dir = sys::file_type(&st) == FileType::Directory;
        match &out.top {
            None => {
                out.top = Some(Found {
                    layer: dir.layer,
                    path: dir.child_path(name),
                    stat: st,
                    parent: dir.fd.clone(),
                })
            }
            Some(top) if sys::file_type(&top.stat) == FileType::Directory && is_dir => {}
            // A non-dir below a dir, or anything below a non-dir, ends it.
            Some(_) => break,
        }
        if !is_dir {
            break;
        }
        let child = dir.child(name)?;
        let opaque = below && is_opaque(child.fd.as_fd())?;
        out.dirs.push(child);
        if opaque {
            break;
        }
    }
    Ok(out)
}

/// The names a stack of lower dirs shows, sorted.
pub fn list(stack: &[LayerDir]) -> SysResult<BTreeSet<OsString>> {
    let mut shown = BTreeSet::new();
    let mut hidden: BTreeSet<OsString> = BTreeSet::new();
    for dir in stack {
        let contents = read_dir(dir.fd.as_fd())?;
        for name in contents.objects {
            if !hidden.contains(&name) {
                shown.insert(name);
            }
        }
        // A layer's whiteouts hide the names of the layers below it only.
        hidden.extend(contents.whiteouts);
    }
    Ok(shown)
}

/// The lower dirs at a path from the root, for an absolute redirect: each
/// layer walked on its own, as a lookup does, top first, until a layer
/// whites the path out or holds a non-dir on it, or an opaque dir.
pub fn dirs_at_path(stack: &LayerStack, path: &[OsString]) -> SysResult<Vec<LayerDir>> {
    let mut found = Vec::new();
    for layer in stack.lowers() {
        let mut dir = LayerDir::root(stack, layer.id);
        let mut stop = false;
        let mut absent = false;
        for component in path {
            let Some(st) = sys::stat_at(dir.fd.as_fd(), component)? else {
                stop =
                    sys::stat_at(dir.fd.as_fd(), &format::oci_whiteout_name(component))?.is_some();
                absent = true;
                break;
            };
            if format::is_chardev_whiteout(&st) || sys::file_type(&st) != FileType::Directory {
                stop = true;
                break;
            }
            dir = dir.child(component)?;
        }
        if stop {
            break;
        }
        if absent {
            continue;
        }
        let opaque = is_opaque(dir.fd.as_fd())?;
        found.push(dir);
        if opaque {
            break;
        }
    }
    Ok(found)
}

/// Opens the object at `path` in a layer, one name at a time from the
/// layer's root, never following a symlink.
pub fn open_in_layer(stack: &LayerStack, layer: LayerId, path: &[OsString]) -> SysResult<OwnedFd> {
    let root = stack.get(layer).root();
    let mut current: Option<OwnedFd> = None;
    for component in path {
        let dir = current.as_ref().map_or(root, |fd| fd.as_fd());
        current = Some(sys::open_path(dir, component)?);
    }
    match current {
        Some(fd) => Ok(fd),
        None => sys::open_path(root, OsStr::new(".")),
    }
}

/// The xattrs a merged view shows of an object: every one but overlay's
/// private ones, sorted by name.
pub fn visible_xattrs(fd: BorrowedFd<'_>) -> SysResult<Vec<(OsString, Vec<u8>)>> {
    let list = match sys::list_xattr(fd) {
        Ok(list) => list,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in format::xattr_names(&list) {
        if format::is_hidden_xattr(name) {
            continue;
        }
        if let Some(value) = sys::get_xattr(fd, name)? {
            out.push((name.to_os_string(), value));
        }
    }
    out.sort();
    Ok(out)
}
