//! Changes to names: create, mkdir, mknod, symlink, link, unlink, rmdir and
//! rename, with the whiteouts and opaque dirs that keep lower entries hidden.
//!
//! Copy-ups a change needs happen first, with no name lock held; then the
//! parent dir's name lock is taken and the names are checked again, so two
//! changes to one dir never interleave.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::copyup::give_owner;
use crate::error::OpResult;
use crate::format;
use crate::inode::{Inode, Layers, Location, RealRef};
use crate::layer::UPPER;
use crate::lookup::{Presence, Resolved};
use crate::overlay::{Attr, Overlay};
use crate::sys::{self, Errno, FileType, OFlags, RenameFlags};

/// The xattr of a dir's default ACL, which new entries inherit.
const ACL_DEFAULT: &str = "system.posix_acl_default";

/// Gives a new object its owner, by a chown only where the filesystem did
/// not already make it so: the common case is an object made for the
/// daemon's own ids, root's for root. Set-id bits a chown clears are put
/// back, as a create under the caller's ids keeps them (the kernel's
/// overlayfs creates so). Returns the object's stat when no change
/// followed it.
fn own_new(fd: BorrowedFd<'_>, uid: u32, gid: u32, mode: u32) -> OpResult<Option<sys::Stat>> {
    if (uid, gid) == sys::daemon_ids() {
        let st = sys::fstat(fd)?;
        if (st.st_uid, st.st_gid) == (uid, gid) {
            return Ok(Some(st));
        }
    }
    give_owner(fd, uid, gid)?;
    if mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        let st = sys::fstat(fd)?;
        // A dir's mode is its maker's to set; a symlink has none.
        if sys::file_type(&st) == FileType::RegularFile && st.st_mode & 0o7777 != mode {
            sys::chmod(fd, mode)?;
        }
    }
    Ok(None)
}

/// What to create, and for whom.
pub struct NewObject<'a> {
    pub kind: NewKind<'a>,
    /// Permission bits asked for.
    pub mode: u32,
    /// The caller's umask: applied unless the parent dir has a default ACL,
    /// which then decides (as POSIX says).
    pub umask: u32,
    pub uid: u32,
    pub gid: u32,
}

pub enum NewKind<'a> {
    File {
        flags: OFlags,
    },
    Dir,
    Symlink {
        target: &'a OsStr,
    },
    /// A fifo, socket or device; `mode_type` holds the S_IFMT bits.
    Node {
        mode_type: u32,
        rdev: u64,
    },
    Link {
        source: Arc<Inode>,
    },
}

impl Overlay {
    /// Creates `name` in `parent`. For a file, also returns it opened.
    pub fn create(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        new: NewObject<'_>,
    ) -> OpResult<(Arc<Inode>, Attr, Option<OwnedFd>)> {
        let work = self.writable()?;
        check_new_name(name)?;
        let parent_upper = self.copy_up(parent)?;
        let source_upper = match &new.kind {
            NewKind::Link { source } => {
                if source.is_dir() {
                    return Err(Errno::PERM);
                }
                Some(self.copy_up(source)?)
            }
            _ => None,
        };
        let parent_fd = self.real_fd(&parent_upper)?;
        let (uid, gid, mode) = self.inherit_owner(&parent_upper, &new)?;
        let acl_inherited = self.has_default_acl(parent, &parent_upper)?;
        let mode = if acl_inherited {
            mode
        } else {
            mode & !new.umask
        };

        let _names = parent.lock_names();
        // The name is free if the upper dir whites it out, or holds nothing
        // of it and no lower dir shows it: what a lookup would find, without
        // reading the upper dir twice.
        let over = self.upper_entry(parent, name)?;
        let whited_out = match over {
            Presence::Object(_) => return Err(Errno::EXIST),
            Presence::Absent
                if !self.absent_below().known_absent(parent, name)
                    && self.lower_has(parent, name)? =>
            {
                return Err(Errno::EXIST);
            }
            Presence::Absent => false,
            Presence::Whiteout | Presence::OciWhiteout => true,
        };
        // Build in the work dir when a whiteout must be swapped out
        // atomically; otherwise the new object can be made in place.
        let temp = work.temp_name();
        let (dir, made_name): (BorrowedFd<'_>, &OsStr) = if whited_out {
            (work.fd(), &temp)
        } else {
            (parent_fd.as_fd(), name)
        };
        // The new object, opened for a file, and its stat when nothing
        // changed it after that was taken.
        let made = (|| -> OpResult<(Option<OwnedFd>, Option<sys::Stat>)> {
            let (opened, handle) = match &new.kind {
                NewKind::File { flags } => {
                    let fd = sys::create_file(dir, made_name, *flags, mode)?;
                    (Some(fd), None)
                }
                NewKind::Dir => {
                    sys::mkdir(dir, made_name, mode)?;
                    (None, Some(sys::open_path(dir, made_name)?))
                }
                NewKind::Symlink { target } => {
                    sys::symlink(target, dir, made_name)?;
                    (None, Some(sys::open_path(dir, made_name)?))
                }
                NewKind::Node { mode_type, rdev } => {
                    sys::mknod(dir, made_name, mode_type | mode, *rdev)?;
                    (None, Some(sys::open_path(dir, made_name)?))
                }
                NewKind::Link { .. } => {
                    let source = source_upper.as_ref().ok_or(Errno::STALE)?;
                    let source_fd = self.real_fd(source)?;
                    sys::link_fd(source_fd.as_fd(), dir, made_name)?;
                    return Ok((None, None));
                }
            };
            let fd = opened.as_ref().or(handle.as_ref()).ok_or(Errno::STALE)?;
            let fd = fd.as_fd();
            let mut stat = own_new(fd, uid, gid, mode)?;
            if matches!(new.kind, NewKind::Dir) {
                // mkdir drops set-id bits; with an inherited default ACL
                // the mode it made is already the right one.
                if !acl_inherited && stat.is_none_or(|st| st.st_mode & 0o7777 != mode) {
                    sys::chmod(fd, mode)?;
                    stat = None;
                }
                if whited_out {
                    self.mark_opaque(dir, made_name)?;
                }
            }
            Ok((opened, stat))
        })();
        let (opened, made_stat) = match made {
            Ok(made) => made,
            Err(e) => {
                if whited_out {
                    work.remove(&temp);
                } else if !matches!(e, Errno::EXIST) {
                    let _ = sys::remove_tree(parent_fd.as_fd(), name);
                }
                return Err(e);
            }
        };
        if whited_out && let Err(e) = self.replace_whiteout(parent_fd.as_fd(), name, &temp, &over) {
            work.remove(&temp);
            return Err(e);
        }
        if let Some(xattr) = self.options.ownership.override_xattr
            && !matches!(new.kind, NewKind::Link { .. } | NewKind::Symlink { .. })
        {
            let fd = sys::open_path(parent_fd.as_fd(), name)?;
            let recorded = crate::idmap::OverrideStat { uid, gid, mode };
            sys::set_xattr(
                fd.as_fd(),
                xattr.name(),
                &recorded.encode(),
                sys::XattrFlags::empty(),
            )?;
        }
        if matches!(new.kind, NewKind::Dir) {
            parent.adjust_nlink(1);
        }
        if let NewKind::Link { source } = new.kind {
            self.adjust_indexed_nlink(&source, 1)?;
            // The new name is one more name of the same inode.
            self.add_reference(&source);
            let attr = self.attr_of(&source)?;
            return Ok((source, attr, None));
        }
        // What a lookup would find, known without one: a new upper object
        // with no origin, metacopy or lower layers (the name was free, or
        // whited out, which hides what lies below).
        // A rename out of the work dir or an xattr may have changed its
        // ctime since it was made.
        let unchanged = !whited_out && self.options.ownership.override_xattr.is_none();
        let stat = match (made_stat, &opened) {
            (Some(st), _) if unchanged => st,
            (_, Some(fd)) => sys::fstat(fd.as_fd())?,
            (_, None) => sys::stat_at(parent_fd.as_fd(), name)?.ok_or(Errno::NOENT)?,
        };
        let layers = Layers {
            upper: Some(RealRef {
                layer: UPPER,
                real_ino: stat.st_ino,
                loc: Location::Child {
                    parent: parent.clone(),
                    name: Arc::from(name),
                },
            }),
            ..Layers::default()
        };
        let (inode, attr) = self.adopt(Resolved {
            ino: self.ino_for(&layers),
            kind: sys::file_type(&stat),
            stat,
            layers,
            upper_here: Some(stat),
            lowers_show: None,
        });
        Ok((inode, attr, opened))
    }

    /// Whether the upper dir of `dir` has a default ACL (which new entries
    /// inherit). Read once: only this mount's xattr changes change it, and
    /// they make it be read again.
    fn has_default_acl(&self, dir: &Inode, upper: &crate::inode::RealRef) -> OpResult<bool> {
        let stamp = match dir.known_default_acl() {
            Ok(known) => return Ok(known),
            Err(stamp) => stamp,
        };
        let fd = self.real_fd(upper)?;
        let has = match sys::get_xattr(fd.as_fd(), OsStr::new(ACL_DEFAULT)) {
            Ok(found) => found.is_some(),
            Err(Errno::NOTSUP) => false,
            Err(e) => return Err(e),
        };
        dir.note_default_acl(stamp, has);
        Ok(has)
    }

    /// Owner, group and mode of a new object: the caller's, except that a
    /// set-group-id parent passes its group (and, to dirs, the bit) on.
    fn inherit_owner(
        &self,
        parent_upper: &crate::inode::RealRef,
        new: &NewObject<'_>,
    ) -> OpResult<(u32, u32, u32)> {
        let parent_st = self.stat_ref(parent_upper)?;
        let own = &self.options.ownership;
        let uid = own
            .uids
            .stored(new.uid)
            .unwrap_or(crate::idmap::OVERFLOW_ID);
        let mut gid = own
            .gids
            .stored(new.gid)
            .unwrap_or(crate::idmap::OVERFLOW_ID);
        let mut mode = new.mode & 0o7777;
        if parent_st.st_mode & libc::S_ISGID != 0 {
            gid = parent_st.st_gid;
            if matches!(new.kind, NewKind::Dir) {
                mode |= libc::S_ISGID;
            }
        }
        Ok((uid, gid, mode))
    }

    /// Puts the object `temp` (in the work dir) where a whiteout was.
    fn replace_whiteout(
        &self,
        parent_fd: BorrowedFd<'_>,
        name: &OsStr,
        temp: &OsStr,
        over: &Presence,
    ) -> OpResult<()> {
        let work = self.writable()?;
        match over {
            Presence::Whiteout => {
                sys::rename(work.fd(), temp, parent_fd, name, RenameFlags::EXCHANGE)?;
                work.remove(temp);
            }
            _ => {
                sys::rename(work.fd(), temp, parent_fd, name, RenameFlags::NOREPLACE)?;
                let _ = sys::unlink(parent_fd, &format::oci_whiteout_name(name));
            }
        }
        Ok(())
    }

    /// Marks a new upper dir opaque, so the lower dirs of its name stay hidden.
    pub(crate) fn mark_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> OpResult<()> {
        let fd = sys::open_path(dir, name)?;
        self.mark_opaque_fd(fd.as_fd())
    }

    /// Marks the upper dir `fd` opaque: the overlay xattr, or the OCI
    /// marker file where no overlay xattr can be written.
    pub(crate) fn mark_opaque_fd(&self, fd: BorrowedFd<'_>) -> OpResult<()> {
        match self.xattr_ns() {
            Some(ns) => sys::set_xattr(
                fd.as_fd(),
                ns.opaque(),
                format::OPAQUE_YES,
                sys::XattrFlags::empty(),
            )?,
            None => {
                let marker = OsStr::new(format::OCI_OPAQUE_MARKER);
                drop(sys::create_file(fd.as_fd(), marker, OFlags::WRONLY, 0o600)?);
            }
        }
        self.stats().made_opaque();
        Ok(())
    }

    /// Hides `name` in the upper dir `dir` from the lowers.
    pub(crate) fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> OpResult<()> {
        if self.caps().chardev_whiteouts {
            sys::mknod_whiteout(dir, name)?;
        } else {
            let oci = format::oci_whiteout_name(name);
            drop(sys::create_file(dir, &oci, OFlags::WRONLY, 0o600)?);
        }
        self.stats().made_whiteout();
        Ok(())
    }

    /// unlink(2) (`is_dir` false) and rmdir(2) (`is_dir` true).
    pub fn remove(&self, parent: &Arc<Inode>, name: &OsStr, is_dir: bool) -> OpResult<()> {
        let work = self.writable()?;
        if !parent.has_upper() {
            // What is refused is refused before the parent is copied up.
            let victim = self.resolve(parent, name)?.ok_or(Errno::NOENT)?;
            check_removal_kind(&victim, is_dir)?;
        }
        let parent_upper = self.copy_up(parent)?;
        let parent_fd = self.real_fd(&parent_upper)?;

        let _names = parent.lock_names();
        let victim = self.resolve(parent, name)?.ok_or(Errno::NOENT)?;
        check_removal_kind(&victim, is_dir)?;
        if is_dir {
            let probe = Arc::new(Inode::new(victim.ino, victim.kind, victim.layers.clone()));
            if !self.dir_is_empty(&probe)? {
                return Err(Errno::NOTEMPTY);
            }
        }
        // What the parent's dirs hold under the name, as far as the lookup
        // just made saw it: an object found without one in the upper dir
        // was found by this name in a lower dir, not hidden.
        let lower_below = match (&victim.upper_here, victim.lowers_show) {
            (None, _) => true,
            (Some(_), Some(shows)) => shows,
            (Some(_), None) => self.lower_has(parent, name)?,
        };
        let in_upper = match victim.upper_here {
            Some(st) => Presence::Object(st),
            None => Presence::Absent,
        };
        let victim_inode = self.known_inode(victim.ino).unwrap_or_else(|| {
            Arc::new(Inode::new(victim.ino, victim.kind, victim.layers.clone()))
        });
        if !is_dir {
            // Before the name goes: the count lives on the shared copy.
            self.adjust_indexed_nlink(&victim_inode, -1)?;
        }
        let last_name = is_dir || victim.stat.st_nlink <= 1;
        let unlinking = last_name.then(|| victim_inode.start_unlink());
        match in_upper {
            Presence::Object(st) => {
                if unlinking.is_some() && !is_dir {
                    self.keep_if_open_possible(&victim_inode);
                }
                if lower_below {
                    self.move_out_leaving_whiteout(parent_fd.as_fd(), name)?;
                } else if is_dir {
                    // Its upper part may still hold whiteouts: move it out whole.
                    let temp = work.temp_name();
                    sys::rename(
                        parent_fd.as_fd(),
                        name,
                        work.fd(),
                        &temp,
                        RenameFlags::empty(),
                    )?;
                    work.remove(&temp);
                } else {
                    sys::unlink(parent_fd.as_fd(), name)?;
                }
                if is_dir || st.st_nlink <= 1 {
                    self.forget_real_fd(crate::layer::UPPER, st.st_ino);
                }
            }
            Presence::Absent if lower_below => self.make_whiteout(parent_fd.as_fd(), name)?,
            _ => return Err(Errno::NOENT),
        }
        match unlinking {
            Some(unlinking) => unlinking.done(),
            None => self.reattach_to_index(&victim_inode)?,
        }
        if is_dir {
            parent.adjust_nlink(-1);
        }
        Ok(())
    }

    /// Moves the upper object `name` out of `dir` into the work dir (and
    /// removes it there), leaving a whiteout in its place in one step.
    fn move_out_leaving_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> OpResult<()> {
        let work = self.writable()?;
        let temp = work.temp_name();
        if self.caps().rename_whiteout {
            sys::rename(dir, name, work.fd(), &temp, RenameFlags::WHITEOUT)?;
            self.stats().made_whiteout();
        } else {
            sys::rename(dir, name, work.fd(), &temp, RenameFlags::empty())?;
            self.make_whiteout(dir, name)?;
        }
        work.remove(&temp);
        Ok(())
    }
}

/// unlink(2) of a dir and rmdir(2) of a non-dir are refused.
fn check_removal_kind(victim: &Resolved, is_dir: bool) -> OpResult<()> {
    let victim_is_dir = victim.kind == FileType::Directory;
    if is_dir && !victim_is_dir {
        return Err(Errno::NOTDIR);
    }
    if !is_dir && victim_is_dir {
        return Err(Errno::ISDIR);
    }
    Ok(())
}

pub(crate) fn check_new_name(name: &OsStr) -> OpResult<()> {
    if name.len() > format::NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    if format::is_reserved_name(name) {
        // `.wh.` names are whiteouts in the layer format.
        return Err(Errno::INVAL);
    }
    Ok(())
}
