//! Name resolution: finding what a name in a merged dir refers to, top
//! layer first, stopping at whiteouts, opaque dirs and non-dirs.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::dirmerge::LowerHint;
use crate::error::OpResult;
use crate::format::{self, Opacity, Redirect};
use crate::inode::{Inode, Layers, Location, RealRef};
use crate::layer::{LayerId, UPPER};
use crate::origin::OriginInfo;
use crate::overlay::{Attr, Overlay};
use crate::sys::{self, Errno, FileType, Stat};

/// What a name resolved to.
pub struct Resolved {
    pub ino: u64,
    pub kind: FileType,
    /// Stat of the object that answers reads.
    pub stat: Stat,
    pub layers: Layers,
}

/// What one layer holds under a name.
enum Presence {
    Absent,
    WhitedOut,
    Object(Stat),
}

impl Overlay {
    /// Looks up `name` in `parent` and takes a kernel reference on the result.
    pub fn lookup(&self, parent: &Arc<Inode>, name: &OsStr) -> OpResult<(Arc<Inode>, Attr)> {
        let found = self.resolve(parent, name)?.ok_or(Errno::NOENT)?;
        Ok(self.adopt(found))
    }

    /// Takes a kernel reference on a resolved object, making its inode if
    /// the table has none.
    pub(crate) fn adopt(&self, found: Resolved) -> (Arc<Inode>, Attr) {
        if found.kind != FileType::Directory {
            let attr = self.attr_parts(found.ino, None, found.stat, &found.layers);
            let inode = self.inodes.lookup(found.ino, found.kind, found.layers);
            return (inode, attr);
        }
        // A merged dir's link count is kept on its inode: make that first.
        let layers = found.layers.clone();
        let inode = self.inodes.lookup(found.ino, found.kind, found.layers);
        let attr = self.attr_from(&inode, found.stat, &layers);
        (inode, attr)
    }

    /// Looks up an entry a listing just showed: an inode already known by
    /// the entry's number is that entry (the number names the object), so
    /// only its attributes are read; anything else takes a full lookup.
    pub fn lookup_listed(
        &self,
        dir: &Arc<Inode>,
        entry: &crate::dirmerge::DirEntry,
    ) -> OpResult<(Arc<Inode>, Attr)> {
        if let Some(inode) = self.inodes.get(entry.ino)
            && inode.kind == entry.kind
            && !inode.is_unlinked()
            && let Ok(attr) = self.attr_of(&inode)
        {
            self.inodes.add_lookup(&inode);
            return Ok((inode, attr));
        }
        let found = self
            .resolve_hinted(dir, &entry.name, &entry.lowers)?
            .ok_or(Errno::NOENT)?;
        Ok(self.adopt(found))
    }

    /// Resolves `name` in `parent` without touching the inode table.
    /// `Ok(None)`: the merged view has no such name.
    pub fn resolve(&self, parent: &Arc<Inode>, name: &OsStr) -> OpResult<Option<Resolved>> {
        self.resolve_hinted(parent, name, &LowerHint::default())
    }

    /// `resolve`, skipping the lower dirs a listing saw without the name.
    pub fn resolve_hinted(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        hint: &LowerHint,
    ) -> OpResult<Option<Resolved>> {
        if !parent.is_dir() {
            return Err(Errno::NOTDIR);
        }
        // Every operation on a name looks it up first (rename and unlink
        // too), so this is where a name no layer can hold is refused, as
        // the kernel does, instead of reading as absent.
        if name.len() > format::NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        if format::is_reserved_name(name) || name.is_empty() || name == "." || name == ".." {
            return Ok(None);
        }
        let dir = parent.layers();
        let name: Arc<OsStr> = Arc::from(name);
        let make_ref = |layer: LayerId, st: &Stat, name: &Arc<OsStr>| RealRef {
            layer,
            real_ino: st.st_ino,
            loc: Location::Child {
                parent: parent.clone(),
                name: name.clone(),
            },
        };
        // The name the lower layers know the object by (a renamed dir's
        // relative redirect changes it).
        let mut lower_name = name.clone();

        let mut layers = Layers::default();
        let mut top: Option<Stat> = None;
        let mut search_lowers = true;
        // Only for finding the inode number of a copied-up non-dir.
        let mut upper_origin_only = false;
        let mut origin_ino = None;

        // Dirs that lack the name since the last layer that had it: an OCI
        // `.wh.NAME` in one of them hides what lies below. Looked for only
        // once something below is found, so a miss costs one stat a layer.
        // Each with its lower index (None: the upper dir).
        let mut absent_in: Vec<(Option<usize>, &RealRef)> = Vec::new();
        if let Some(upper_dir) = &dir.upper {
            match self.quick_presence(upper_dir, &name)? {
                Presence::WhitedOut => return Ok(None),
                Presence::Absent => absent_in.push((None, upper_dir)),
                Presence::Object(st) => {
                    let upper = make_ref(UPPER, &st, &name);
                    if sys::file_type(&st) == FileType::Directory {
                        search_lowers = !self.is_opaque(&upper)?;
                        if search_lowers {
                            match self.redirect_of(&upper)? {
                                Some(Redirect::Absolute(path)) => {
                                    layers.lowers = self.lowers_at_path(&path)?;
                                    search_lowers = false;
                                }
                                Some(Redirect::Relative(renamed)) => {
                                    lower_name = Arc::from(renamed.as_os_str())
                                }
                                None => {}
                            }
                        }
                    } else {
                        let fd = self.real_fd(&upper)?;
                        match self.origin_info(fd.as_fd())? {
                            OriginInfo::Ino { ino, lower_nlink } => {
                                origin_ino = Some(ino);
                                layers.origin_nlink = lower_nlink;
                            }
                            // Fall back to the lower object of the same name.
                            OriginInfo::Unknown => upper_origin_only = true,
                            OriginInfo::None => {}
                        }
                        if sys::file_type(&st) == FileType::RegularFile
                            && self.is_metacopy_file(fd.as_fd())?
                        {
                            // Its data is the lower file of the same name.
                            layers.metacopy = true;
                            upper_origin_only = true;
                        }
                        search_lowers = upper_origin_only;
                    }
                    layers.upper = Some(upper);
                    top = Some(st);
                }
            }
        }

        // The hint is about `name`; a redirect sends the lowers elsewhere.
        let no_hint = LowerHint::default();
        let hint = if lower_name == name { hint } else { &no_hint };
        let lower_dirs = dir.lowers.len();
        if search_lowers {
            for (i, lower_dir) in dir.lowers.iter().enumerate() {
                let presence = if hint.may_have(i, lower_dirs) {
                    self.quick_presence(lower_dir, &lower_name)?
                } else {
                    Presence::Absent
                };
                match presence {
                    Presence::Absent => {
                        absent_in.push((Some(i), lower_dir));
                        continue;
                    }
                    Presence::WhitedOut => break,
                    Presence::Object(_)
                        if self.oci_whiteout_in(&absent_in, &lower_name, hint, lower_dirs)? =>
                    {
                        break;
                    }
                    Presence::Object(st) => {
                        absent_in.clear();
                        let is_dir = sys::file_type(&st) == FileType::Directory;
                        let lower = make_ref(lower_dir.layer, &st, &lower_name);
                        if upper_origin_only {
                            if top.is_some_and(|t| sys::file_type(&t) == sys::file_type(&st)) {
                                layers.lowers.push(lower);
                            }
                            break;
                        }
                        match top {
                            None => top = Some(st),
                            Some(t) if sys::file_type(&t) == FileType::Directory && is_dir => {}
                            // A non-dir below a dir ends the merge.
                            Some(_) => break,
                        }
                        // Opacity only matters if a dir below may have the name.
                        let opaque = is_dir
                            && i + 1 < lower_dirs
                            && hint.may_have_below(i, lower_dirs)
                            && self.is_opaque(&lower)?;
                        layers.lowers.push(lower);
                        if !is_dir || opaque {
                            break;
                        }
                    }
                }
            }
        }

        let Some(mut stat) = top else {
            return Ok(None);
        };
        if layers.upper.is_none()
            && let Some((shared, shared_stat)) = self.find_indexed(&layers, &stat)?
        {
            // Another name of this lower file was copied up: that copy is
            // this name's too.
            layers.upper = Some(shared);
            layers.origin_nlink = sys::nlink(&stat);
            stat = shared_stat;
        }
        let kind = sys::file_type(&stat);
        let ino = origin_ino.unwrap_or_else(|| self.ino_for(&layers));
        Ok(Some(Resolved {
            ino,
            kind,
            stat,
            layers,
        }))
    }

    /// The number an object is known by: that of the lower object it came
    /// from, if any, so that copy-up does not change it.
    pub(crate) fn ino_for(&self, layers: &Layers) -> u64 {
        match (layers.lowers.first(), &layers.upper) {
            (Some(origin), _) => self.layers.map_ino(origin.layer, origin.real_ino),
            (None, Some(upper)) => self.layers.map_ino(UPPER, upper.real_ino),
            (None, None) => 0,
        }
    }

    /// What `dir` holds under `name`, not counting OCI whiteouts.
    fn quick_presence(&self, dir: &RealRef, name: &OsStr) -> OpResult<Presence> {
        let fd = self.real_fd(dir)?;
        Ok(match sys::stat_at(fd.as_fd(), name)? {
            Some(st) if format::is_chardev_whiteout(&st) => Presence::WhitedOut,
            Some(st) => Presence::Object(st),
            None => Presence::Absent,
        })
    }

    /// Whether any of `dirs` has an OCI whiteout `.wh.NAME`.
    fn oci_whiteout_in(
        &self,
        dirs: &[(Option<usize>, &RealRef)],
        name: &OsStr,
        hint: &LowerHint,
        lower_dirs: usize,
    ) -> OpResult<bool> {
        let mut dirs = dirs
            .iter()
            .filter(|(i, _)| i.is_none_or(|i| hint.may_have_oci_whiteout(i, lower_dirs)))
            .peekable();
        if dirs.peek().is_none() {
            return Ok(false);
        }
        let oci = format::oci_whiteout_name(name);
        for (_, dir) in dirs {
            let fd = self.real_fd(dir)?;
            if sys::stat_at(fd.as_fd(), &oci)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn presence(&self, dir: &RealRef, name: &OsStr) -> OpResult<Presence> {
        let fd = self.real_fd(dir)?;
        match sys::stat_at(fd.as_fd(), name)? {
            Some(st) if format::is_chardev_whiteout(&st) => Ok(Presence::WhitedOut),
            Some(st) => Ok(Presence::Object(st)),
            None => {
                let oci = format::oci_whiteout_name(name);
                match sys::stat_at(fd.as_fd(), &oci)? {
                    Some(_) => Ok(Presence::WhitedOut),
                    None => Ok(Presence::Absent),
                }
            }
        }
    }

    /// Whether a dir hides the dirs of the same name below it: by the
    /// overlay `opaque` xattr (either namespace), or an OCI opaque marker.
    pub(crate) fn is_opaque(&self, dir: &RealRef) -> OpResult<bool> {
        let fd = self.real_fd(dir)?;
        for ns in format::READ_NAMESPACES {
            let byte = sys::xattr_first_byte(fd.as_fd(), ns.opaque())?;
            if format::opacity_from_xattr(byte) == Opacity::Opaque {
                return Ok(true);
            }
        }
        Ok(sys::stat_at(fd.as_fd(), OsStr::new(format::OCI_OPAQUE_MARKER))?.is_some())
    }

    fn is_metacopy_file(&self, fd: std::os::fd::BorrowedFd<'_>) -> OpResult<bool> {
        for ns in format::READ_NAMESPACES {
            match sys::get_xattr(fd, ns.metacopy()) {
                Ok(Some(_)) => return Ok(true),
                Ok(None) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Whether any lower layer of `parent` shows `name` (so removing or
    /// moving the upper object must leave a whiteout behind).
    pub(crate) fn lower_has(&self, parent: &Inode, name: &OsStr) -> OpResult<bool> {
        let dir = parent.layers();
        if let Some(upper_dir) = &dir.upper {
            // An opaque upper dir hides every lower entry already.
            if self.is_opaque(upper_dir)? {
                return Ok(false);
            }
        }
        for lower_dir in &dir.lowers {
            match self.presence(lower_dir, name)? {
                Presence::Absent => continue,
                Presence::WhitedOut => return Ok(false),
                Presence::Object(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// What the upper dir of `parent` holds under `name` right now.
    pub(crate) fn upper_entry(&self, parent: &Inode, name: &OsStr) -> OpResult<UpperEntry> {
        let Some(dir) = parent.upper() else {
            return Ok(UpperEntry::Absent);
        };
        let fd = self.real_fd(&dir)?;
        match sys::stat_at(fd.as_fd(), name)? {
            Some(st) if format::is_chardev_whiteout(&st) => Ok(UpperEntry::Whiteout),
            Some(st) => Ok(UpperEntry::Object(st)),
            None => {
                let oci = format::oci_whiteout_name(name);
                Ok(match sys::stat_at(fd.as_fd(), &oci)? {
                    Some(_) => UpperEntry::OciWhiteout,
                    None => UpperEntry::Absent,
                })
            }
        }
    }
}

/// What an upper dir holds under a name.
pub(crate) enum UpperEntry {
    Absent,
    Whiteout,
    OciWhiteout,
    Object(Stat),
}
