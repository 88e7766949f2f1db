//! Redirects: how a dir whose content comes from lower layers is renamed
//! without copying that content. The upper dir moves, and its
//! `overlay.redirect` xattr records where its lower dirs are (the kernel's
//! redirect_dir format), so the merge follows it after the move and across
//! remounts.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::OpResult;
use crate::format::{self, Redirect, XattrNameList};
use crate::inode::{Inode, Location, RealRef};
use crate::overlay::Overlay;
use crate::sys::{self, Errno, FileType};

/// What one lower layer holds at a path.
enum AtPath {
    Absent,
    /// A whiteout or a non-dir: no layer below is merged.
    Stop,
    Dir(u64),
}

impl Overlay {
    /// The redirect an upper dir carries, if any. An invalid value is
    /// ignored (and logged), as a missing one.
    pub(crate) fn redirect_of(
        &self,
        fd: BorrowedFd<'_>,
        marks: &XattrNameList,
    ) -> OpResult<Option<Redirect>> {
        for ns in format::READ_NAMESPACES {
            if !marks.contains(ns.redirect()) {
                continue;
            }
            match sys::get_xattr(fd, ns.redirect()) {
                Ok(Some(value)) => {
                    let redirect = Redirect::decode(&value);
                    if redirect.is_none() {
                        tracing::warn!(?value, "invalid redirect ignored");
                    }
                    return Ok(redirect);
                }
                Ok(None) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The lower dirs merged at `path` (from the overlay root), top first.
    pub(crate) fn lowers_at_path(&self, path: &[OsString]) -> OpResult<Vec<RealRef>> {
        let shared: Arc<[OsString]> = Arc::from(path);
        let mut found = Vec::new();
        for layer in self.layer_stack().lowers() {
            match self.walk_layer(layer.id, path)? {
                AtPath::Absent => continue,
                AtPath::Stop => break,
                AtPath::Dir(real_ino) => {
                    let lower = RealRef {
                        layer: layer.id,
                        real_ino,
                        loc: Location::Path(shared.clone()),
                    };
                    let opaque = self.is_opaque(&lower)?;
                    found.push(lower);
                    if opaque {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    fn walk_layer(&self, layer: crate::layer::LayerId, path: &[OsString]) -> OpResult<AtPath> {
        let root = self.real_fd(&RealRef {
            layer,
            real_ino: 0,
            loc: Location::Root,
        })?;
        let mut current: Option<OwnedFd> = None;
        for (i, component) in path.iter().enumerate() {
            let dir = current.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
            let Some(st) = sys::stat_at(dir, component)? else {
                let oci = format::oci_whiteout_name(component);
                return Ok(match sys::stat_at(dir, &oci)? {
                    Some(_) => AtPath::Stop,
                    None => AtPath::Absent,
                });
            };
            if format::is_chardev_whiteout(&st) || sys::file_type(&st) != FileType::Directory {
                return Ok(AtPath::Stop);
            }
            if i + 1 == path.len() {
                return Ok(AtPath::Dir(st.st_ino));
            }
            current = Some(sys::open_path(dir, component)?);
        }
        Ok(AtPath::Absent)
    }

    /// The path (from the overlay root) where a dir's lower dirs are.
    pub(crate) fn lower_path(&self, inode: &Inode) -> OpResult<Vec<OsString>> {
        let mut reversed: Vec<OsString> = Vec::new();
        let mut current = inode.layers().lowers.first().cloned().ok_or(Errno::INVAL)?;
        loop {
            match &current.loc {
                Location::Root => break,
                Location::Path(path) => {
                    reversed.extend(path.iter().rev().cloned());
                    break;
                }
                Location::Child { parent, name } => {
                    reversed.push(name.as_ref().to_os_string());
                    current = parent.in_layer(current.layer).ok_or(Errno::STALE)?;
                }
                // Lower objects are never index entries, nor kept.
                Location::Index(_) | Location::Kept(_) => return Err(Errno::STALE),
            }
        }
        reversed.reverse();
        Ok(reversed)
    }

    /// Records in a merged dir's upper copy where its lower dirs are, before
    /// the dir is moved.
    pub(crate) fn set_redirect(&self, dir: &Inode) -> OpResult<()> {
        let ns = self.xattr_ns().ok_or(Errno::XDEV)?;
        let upper = dir.upper().ok_or(Errno::STALE)?;
        let path = self.lower_path(dir)?;
        let fd = self.real_fd(&upper)?;
        sys::set_xattr(
            fd.as_fd(),
            ns.redirect(),
            &Redirect::Absolute(path).encode(),
            sys::XattrFlags::empty(),
        )
    }
}
