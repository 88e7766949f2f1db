//! Name resolution: finding what a name in a merged dir refers to, top
//! layer first, stopping at whiteouts, opaque dirs and non-dirs.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::error::OpResult;
use crate::format::{self, Opacity, Redirect, XattrNameList};
use crate::inode::{Inode, Layers, Location, RealRef};
use crate::layer::{LayerId, UPPER};
use crate::listing::LowerHint;
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
    /// The object the parent's upper dir holds under the name itself (not
    /// a copy found through the index).
    pub upper_here: Option<Stat>,
    /// Whether a lower dir of the parent shows the name (what `lower_has`
    /// says), where the walk found that out on its way.
    pub lowers_show: Option<bool>,
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
            let inode = self.take_reference(found.ino, found.kind, found.layers);
            return (inode, attr);
        }
        // A merged dir's link count is kept on its inode: make that first.
        let layers = found.layers.clone();
        let inode = self.take_reference(found.ino, found.kind, found.layers);
        let attr = self.attr_from(&inode, found.stat, &layers);
        (inode, attr)
    }

    /// Looks up an entry a listing just showed: an inode already known by
    /// the entry's number is that entry (the number names the object), so
    /// only its attributes are read; anything else takes a full lookup.
    pub fn lookup_listed(
        &self,
        dir: &Arc<Inode>,
        entry: &crate::listing::DirEntry,
    ) -> OpResult<(Arc<Inode>, Attr)> {
        if let Some(inode) = self.known_inode(entry.ino)
            && inode.kind == entry.kind
            && !inode.is_unlinked()
            && let Ok(attr) = self.attr_of(&inode)
        {
            self.add_reference(&inode);
            return Ok((inode, attr));
        }
        let found = self
            .resolve_hinted(dir, &entry.name, &entry.lowers)?
            .ok_or(Errno::NOENT)?;
        Ok(self.adopt(found))
    }

    /// Resolves `name` in `parent` without touching the inode table.
    /// `Ok(None)`: the merged view has no such name.
    /// A name found in no layer is kept as absent below (`absent`), for
    /// the create that follows.
    pub fn resolve(&self, parent: &Arc<Inode>, name: &OsStr) -> OpResult<Option<Resolved>> {
        self.resolve_walk(parent, name, &LowerHint::default(), true)
    }

    /// `resolve`, skipping the lower dirs a listing saw without the name.
    /// Top down: the upper layer, then the lower layers as far as the upper
    /// object lets the merge go, then the index (another name of a lower
    /// file may have been copied up already).
    pub fn resolve_hinted(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        hint: &LowerHint,
    ) -> OpResult<Option<Resolved>> {
        self.resolve_walk(parent, name, hint, false)
    }

    fn resolve_walk(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        hint: &LowerHint,
        note_absence: bool,
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
        // Read before the walk: a name change in the dir during it makes
        // what it finds about absence not count.
        let names_version = parent.names_version();
        let dir = parent.layers();
        let name: Arc<OsStr> = Arc::from(name);
        let mut walk = Walk {
            parent,
            lower_name: name.clone(),
            layers: Layers::default(),
            top: None,
            below: Below::Merge,
            origin_ino: None,
            absent_in: Vec::new(),
            upper_here: None,
            lowers_show: None,
        };
        if let Some(upper_dir) = &dir.upper
            && !self.walk_upper(&mut walk, upper_dir, &name)?
        {
            return Ok(None);
        }
        if walk.below != Below::Nothing {
            // The hint is about `name`; a redirect sends the lowers elsewhere.
            let no_hint = LowerHint::default();
            let hint = if walk.lower_name == name {
                hint
            } else {
                &no_hint
            };
            self.walk_lowers(&mut walk, &dir, hint)?;
            if walk.lower_name != name {
                walk.lowers_show = None;
            }
        }
        // No upper object (a whiteout ended the walk above) and no lower
        // one: no lower dir shows the name (`lower_has` would say so).
        let nothing_below = walk.upper_here.is_none() && walk.layers.lowers.is_empty();
        let found = self.resolved(walk)?;
        if found.is_none() && nothing_below && note_absence {
            self.absent_below().note(parent, names_version, &name);
        }
        Ok(found)
    }

    /// The upper layer's part of a lookup; `false` if it whites the name out.
    fn walk_upper(
        &self,
        walk: &mut Walk<'_>,
        upper_dir: &RealRef,
        name: &Arc<OsStr>,
    ) -> OpResult<bool> {
        let st = match self.quick_presence(upper_dir, name)? {
            Presence::Whiteout | Presence::OciWhiteout => return Ok(false),
            Presence::Absent => {
                walk.absent_in.push(None);
                return Ok(true);
            }
            Presence::Object(st) => st,
        };
        walk.upper_here = Some(st);
        let upper = walk.child(UPPER, &st, name);
        let fd = self.real_fd(&upper)?;
        // Which overlay xattrs it has, in one call: most upper objects have
        // none, and then none is asked for by name.
        let marks = XattrNameList(sys::xattr_name_list(fd.as_fd())?);
        if sys::file_type(&st) == FileType::Directory {
            if self.is_opaque_marked(fd.as_fd(), &marks)? {
                walk.below = Below::Nothing;
            } else {
                match self.redirect_of(fd.as_fd(), &marks)? {
                    Some(Redirect::Absolute(path)) => {
                        walk.layers.lowers = self.lowers_at_path(&path)?;
                        walk.below = Below::Nothing;
                    }
                    Some(Redirect::Relative(renamed)) => {
                        walk.lower_name = Arc::from(renamed.as_os_str());
                    }
                    None => {}
                }
            }
        } else {
            // A copied-up non-dir: the lower object matters only for its
            // inode number (when the origin does not give it) or its data
            // (metacopy).
            walk.below = Below::Nothing;
            match self.origin_info_marked(fd.as_fd(), &marks)? {
                OriginInfo::Ino { ino, lower_nlink } => {
                    walk.origin_ino = Some(ino);
                    walk.layers.origin_nlink = lower_nlink;
                }
                // Fall back to the lower object of the same name.
                OriginInfo::Unknown => walk.below = Below::OriginOnly,
                OriginInfo::None => {}
            }
            if sys::file_type(&st) == FileType::RegularFile
                && self.is_metacopy_file(fd.as_fd(), &marks)?
            {
                // Its data is the lower file of the same name.
                walk.layers.metacopy = true;
                walk.below = Below::OriginOnly;
            }
        }
        walk.layers.upper = Some(upper);
        walk.top = Some(st);
        Ok(true)
    }

    /// The lower layers' part of a lookup, top down, until a whiteout, a
    /// non-dir, an opaque dir or the bottom.
    fn walk_lowers(&self, walk: &mut Walk<'_>, dir: &Layers, hint: &LowerHint) -> OpResult<()> {
        let lower_dirs = dir.lowers.len();
        // With an object in the upper dir, no OCI whiteout there is looked
        // for, so whether the lowers show the name is what `lower_has` says.
        if walk.upper_here.is_some() {
            walk.lowers_show = Some(false);
        }
        for (i, lower_dir) in dir.lowers.iter().enumerate() {
            let presence = if hint.may_have(i, lower_dirs) {
                self.quick_presence(lower_dir, &walk.lower_name)?
            } else {
                Presence::Absent
            };
            let st = match presence {
                Presence::Absent => {
                    walk.absent_in.push(Some(i));
                    continue;
                }
                Presence::Whiteout | Presence::OciWhiteout => break,
                Presence::Object(st) => st,
            };
            if self.oci_whiteout_in(walk, dir, hint)? {
                break;
            }
            if walk.lowers_show == Some(false) {
                walk.lowers_show = Some(true);
            }
            walk.absent_in.clear();
            let is_dir = sys::file_type(&st) == FileType::Directory;
            let lower = walk.child(lower_dir.layer, &st, &walk.lower_name.clone());
            if walk.below == Below::OriginOnly {
                if walk
                    .top
                    .is_some_and(|t| sys::file_type(&t) == sys::file_type(&st))
                {
                    walk.layers.lowers.push(lower);
                }
                break;
            }
            match walk.top {
                None => walk.top = Some(st),
                Some(t) if sys::file_type(&t) == FileType::Directory && is_dir => {}
                // A non-dir below a dir ends the merge.
                Some(_) => break,
            }
            // Opacity only matters if a dir below may have the name.
            let opaque = is_dir
                && i + 1 < lower_dirs
                && hint.may_have_below(i, lower_dirs)
                && self.is_opaque(&lower)?;
            walk.layers.lowers.push(lower);
            if !is_dir || opaque {
                break;
            }
        }
        Ok(())
    }

    /// What a finished walk found, with the copy another name of a lower
    /// file may have in the index.
    fn resolved(&self, walk: Walk<'_>) -> OpResult<Option<Resolved>> {
        let Walk {
            mut layers,
            top,
            origin_ino,
            upper_here,
            lowers_show,
            ..
        } = walk;
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
        let mut ino = origin_ino.unwrap_or_else(|| self.ino_for(&layers));
        if origin_ino.is_none()
            && layers.lowers.is_empty()
            && let Some(upper) = &layers.upper
            && let Some(kept) = self.kept_number_of(upper)?
        {
            // Copied up with its whole dir and moved (see `treecopy`): it
            // keeps the number the kernel knows it by.
            ino = kept;
        }
        Ok(Some(Resolved {
            ino,
            kind,
            stat,
            layers,
            upper_here,
            lowers_show,
        }))
    }

    /// The number an object is known by: that of the lower object it came
    /// from, if any, so that copy-up does not change it.
    pub(crate) fn ino_for(&self, layers: &Layers) -> u64 {
        match (layers.lowers.first(), &layers.upper) {
            (Some(origin), _) => self.layer_stack().map_ino(origin.layer, origin.real_ino),
            (None, Some(upper)) => self.layer_stack().map_ino(UPPER, upper.real_ino),
            (None, None) => 0,
        }
    }

    /// What `dir` holds under `name`, not counting OCI whiteouts (looked for
    /// only once something below is found; see `oci_whiteout_in`).
    fn quick_presence(&self, dir: &RealRef, name: &OsStr) -> OpResult<Presence> {
        let fd = self.real_fd(dir)?;
        Ok(match sys::stat_at(fd.as_fd(), name)? {
            Some(st) if format::is_chardev_whiteout(&st) => Presence::Whiteout,
            Some(st) => Presence::Object(st),
            None => Presence::Absent,
        })
    }

    /// What `dir` holds under `name`, OCI whiteouts included.
    fn presence(&self, dir: &RealRef, name: &OsStr) -> OpResult<Presence> {
        match self.quick_presence(dir, name)? {
            Presence::Absent => {
                let fd = self.real_fd(dir)?;
                let oci = format::oci_whiteout_name(name);
                Ok(match sys::stat_at(fd.as_fd(), &oci)? {
                    Some(_) => Presence::OciWhiteout,
                    None => Presence::Absent,
                })
            }
            found => Ok(found),
        }
    }

    /// Whether an OCI whiteout `.wh.NAME` in one of the dirs the walk found
    /// without the name since the last that had it hides what lies below.
    fn oci_whiteout_in(&self, walk: &Walk<'_>, dir: &Layers, hint: &LowerHint) -> OpResult<bool> {
        let lower_dirs = dir.lowers.len();
        let mut dirs = walk
            .absent_in
            .iter()
            .filter(|i| i.is_none_or(|i| hint.may_have_oci_whiteout(i, lower_dirs)))
            .filter_map(|i| match i {
                None => dir.upper.as_ref(),
                Some(i) => dir.lowers.get(*i),
            })
            .peekable();
        if dirs.peek().is_none() {
            return Ok(false);
        }
        let oci = format::oci_whiteout_name(&walk.lower_name);
        for dir in dirs {
            let fd = self.real_fd(dir)?;
            if sys::stat_at(fd.as_fd(), &oci)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a dir hides the dirs of the same name below it: by the
    /// overlay `opaque` xattr (either namespace), or an OCI opaque marker.
    pub(crate) fn is_opaque(&self, dir: &RealRef) -> OpResult<bool> {
        let fd = self.real_fd(dir)?;
        let marks = XattrNameList(sys::xattr_name_list(fd.as_fd())?);
        self.is_opaque_marked(fd.as_fd(), &marks)
    }

    /// `is_opaque` of a dir whose xattr names are known.
    fn is_opaque_marked(&self, fd: BorrowedFd<'_>, marks: &XattrNameList) -> OpResult<bool> {
        for ns in format::READ_NAMESPACES {
            if !marks.contains(ns.opaque()) {
                continue;
            }
            let byte = sys::xattr_first_byte(fd, ns.opaque())?;
            if format::opacity_from_xattr(byte) == Opacity::Opaque {
                return Ok(true);
            }
        }
        Ok(sys::stat_at(fd, OsStr::new(format::OCI_OPAQUE_MARKER))?.is_some())
    }

    fn is_metacopy_file(&self, fd: BorrowedFd<'_>, marks: &XattrNameList) -> OpResult<bool> {
        for ns in format::READ_NAMESPACES {
            if !marks.contains(ns.metacopy()) {
                continue;
            }
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
    ///
    /// A dir whose upper dir is opaque merges no lower dir (a lookup stops
    /// there, and what makes a dir opaque drops its lowers), so its lowers
    /// show nothing. OCI whiteouts are looked for, as by a lookup, only once
    /// a lower object of the name is found: in the dirs above it.
    pub(crate) fn lower_has(&self, parent: &Inode, name: &OsStr) -> OpResult<bool> {
        let dir = parent.layers();
        let mut absent_in = Vec::new();
        for lower_dir in &dir.lowers {
            match self.quick_presence(lower_dir, name)? {
                Presence::Absent => absent_in.push(lower_dir),
                Presence::Whiteout | Presence::OciWhiteout => return Ok(false),
                Presence::Object(_) => {
                    let oci = format::oci_whiteout_name(name);
                    for above in absent_in {
                        let fd = self.real_fd(above)?;
                        if sys::stat_at(fd.as_fd(), &oci)?.is_some() {
                            return Ok(false);
                        }
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// What the upper dir of `parent` holds under `name` right now.
    pub(crate) fn upper_entry(&self, parent: &Inode, name: &OsStr) -> OpResult<Presence> {
        match parent.upper() {
            Some(dir) => self.presence(&dir, name),
            None => Ok(Presence::Absent),
        }
    }
}

/// What one layer's dir holds under a name.
pub(crate) enum Presence {
    Absent,
    /// A 0/0 character device.
    Whiteout,
    /// An OCI `.wh.NAME` file beside it.
    OciWhiteout,
    Object(Stat),
}

/// How far below the upper layer a lookup looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Below {
    /// Every lower layer that merges: nothing found yet, or a dir.
    Merge,
    /// The lower object of the same name only: the inode number of a copied
    /// up non-dir whose origin is unknown, or the data of a metacopy file.
    OriginOnly,
    /// Nothing: an opaque dir, a dir redirected by absolute path, a non-dir
    /// whose origin gives its number.
    Nothing,
}

/// What a lookup has found so far, layer by layer.
struct Walk<'a> {
    parent: &'a Arc<Inode>,
    /// The name the lower layers know the object by (a renamed dir's
    /// relative redirect changes it).
    lower_name: Arc<OsStr>,
    layers: Layers,
    /// Stat of the object that answers for metadata.
    top: Option<Stat>,
    below: Below,
    /// The inode number the upper object's origin gives.
    origin_ino: Option<u64>,
    /// The dirs without the name since the last layer that had it, by lower
    /// index (None: the upper dir): an OCI `.wh.NAME` in one of them hides
    /// what lies below.
    absent_in: Vec<Option<usize>>,
    /// The parent's upper dir holds an object of the name.
    upper_here: Option<Stat>,
    /// Whether the lower dirs show the name (see `Resolved`).
    lowers_show: Option<bool>,
}

impl Walk<'_> {
    fn child(&self, layer: LayerId, st: &Stat, name: &Arc<OsStr>) -> RealRef {
        RealRef {
            layer,
            real_ino: st.st_ino,
            loc: Location::Child {
                parent: self.parent.clone(),
                name: name.clone(),
            },
        }
    }
}
