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
use crate::inode::{Inode, Layers, Location, NamesGuard, RealRef};
use crate::layer::UPPER;
use crate::lookup::{Presence, Resolved};
use crate::overlay::{Attr, Overlay};
use crate::sys::{self, Errno, FileType, OFlags, RenameFlags};

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
        let acl_inherited = self.has_default_acl(&parent_upper)?;
        let mode = if acl_inherited {
            mode
        } else {
            mode & !new.umask
        };

        let _names = parent.lock_names();
        if self.resolve(parent, name)?.is_some() {
            return Err(Errno::EXIST);
        }
        let over = self.upper_entry(parent, name)?;
        if let Presence::Object(_) = over {
            return Err(Errno::EXIST);
        }
        let whited_out = !matches!(over, Presence::Absent);
        // Build in the work dir when a whiteout must be swapped out
        // atomically; otherwise the new object can be made in place.
        let temp = work.temp_name();
        let (dir, made_name): (BorrowedFd<'_>, &OsStr) = if whited_out {
            (work.fd(), &temp)
        } else {
            (parent_fd.as_fd(), name)
        };
        let made = (|| -> OpResult<Option<OwnedFd>> {
            let opened = match &new.kind {
                NewKind::File { flags } => {
                    let fd = sys::create_file(dir, made_name, *flags, mode)?;
                    give_owner(fd.as_fd(), uid, gid)?;
                    Some(fd)
                }
                NewKind::Dir => {
                    sys::mkdir(dir, made_name, mode)?;
                    None
                }
                NewKind::Symlink { target } => {
                    sys::symlink(target, dir, made_name)?;
                    None
                }
                NewKind::Node { mode_type, rdev } => {
                    sys::mknod(dir, made_name, mode_type | mode, *rdev)?;
                    None
                }
                NewKind::Link { .. } => {
                    let source = source_upper.as_ref().ok_or(Errno::STALE)?;
                    let source_fd = self.real_fd(source)?;
                    sys::link_fd(source_fd.as_fd(), dir, made_name)?;
                    None
                }
            };
            if !matches!(new.kind, NewKind::File { .. } | NewKind::Link { .. }) {
                let fd = sys::open_path(dir, made_name)?;
                give_owner(fd.as_fd(), uid, gid)?;
                if matches!(new.kind, NewKind::Dir) {
                    // mkdir drops set-id bits; with an inherited default ACL
                    // the mode it made is already the right one.
                    if !acl_inherited {
                        sys::chmod(fd.as_fd(), mode)?;
                    }
                    if whited_out {
                        self.mark_opaque(dir, made_name)?;
                    }
                }
            }
            Ok(opened)
        })();
        let opened = match made {
            Ok(opened) => opened,
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
            self.inodes.add_lookup(&source);
            let attr = self.attr_of(&source)?;
            return Ok((source, attr, None));
        }
        // What a lookup would find, known without one: a new upper object
        // with no origin, metacopy or lower layers (the name was free, or
        // whited out, which hides what lies below).
        let stat = match &opened {
            Some(fd) => sys::fstat(fd.as_fd())?,
            None => sys::stat_at(parent_fd.as_fd(), name)?.ok_or(Errno::NOENT)?,
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
        });
        Ok((inode, attr, opened))
    }

    /// Whether an upper dir has a default ACL (which new entries inherit).
    fn has_default_acl(&self, dir: &crate::inode::RealRef) -> OpResult<bool> {
        let fd = self.real_fd(dir)?;
        match sys::get_xattr(fd.as_fd(), OsStr::new("system.posix_acl_default")) {
            Ok(found) => Ok(found.is_some()),
            Err(Errno::NOTSUP) => Ok(false),
            Err(e) => Err(e),
        }
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
    fn mark_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> OpResult<()> {
        let fd = sys::open_path(dir, name)?;
        match self.xattr_ns() {
            Some(ns) => sys::set_xattr(
                fd.as_fd(),
                ns.opaque(),
                format::OPAQUE_YES,
                sys::XattrFlags::empty(),
            ),
            None => {
                let marker = OsStr::new(format::OCI_OPAQUE_MARKER);
                drop(sys::create_file(fd.as_fd(), marker, OFlags::WRONLY, 0o600)?);
                Ok(())
            }
        }
    }

    /// Hides `name` in the upper dir `dir` from the lowers.
    fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> OpResult<()> {
        if self.caps.chardev_whiteouts {
            sys::mknod_whiteout(dir, name)
        } else {
            let oci = format::oci_whiteout_name(name);
            drop(sys::create_file(dir, &oci, OFlags::WRONLY, 0o600)?);
            Ok(())
        }
    }

    /// unlink(2) (`is_dir` false) and rmdir(2) (`is_dir` true).
    pub fn remove(&self, parent: &Arc<Inode>, name: &OsStr, is_dir: bool) -> OpResult<()> {
        let work = self.writable()?;
        let victim = self.resolve(parent, name)?.ok_or(Errno::NOENT)?;
        let victim_is_dir = victim.kind == FileType::Directory;
        if is_dir && !victim_is_dir {
            return Err(Errno::NOTDIR);
        }
        if !is_dir && victim_is_dir {
            return Err(Errno::ISDIR);
        }
        let parent_upper = self.copy_up(parent)?;
        let parent_fd = self.real_fd(&parent_upper)?;

        let _names = parent.lock_names();
        let victim = self.resolve(parent, name)?.ok_or(Errno::NOENT)?;
        if is_dir {
            let probe = Arc::new(Inode::new(victim.ino, victim.kind, victim.layers.clone()));
            if !self.dir_is_empty(&probe)? {
                return Err(Errno::NOTEMPTY);
            }
        }
        let lower_below = self.lower_has(parent, name)?;
        let victim_inode = self.inodes.get(victim.ino).unwrap_or_else(|| {
            Arc::new(Inode::new(victim.ino, victim.kind, victim.layers.clone()))
        });
        if !is_dir {
            // Before the name goes: the count lives on the shared copy.
            self.adjust_indexed_nlink(&victim_inode, -1)?;
        }
        let last_name = is_dir || victim.stat.st_nlink <= 1;
        let unlinking = last_name.then(|| victim_inode.start_unlink());
        match self.upper_entry(parent, name)? {
            Presence::Object(st) => {
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
                    self.fds.remove(crate::layer::UPPER, st.st_ino);
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
        if self.caps.rename_whiteout {
            sys::rename(dir, name, work.fd(), &temp, RenameFlags::WHITEOUT)?;
        } else {
            sys::rename(dir, name, work.fd(), &temp, RenameFlags::empty())?;
            self.make_whiteout(dir, name)?;
        }
        work.remove(&temp);
        Ok(())
    }

    /// rename(2), with RENAME_NOREPLACE and RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        new_parent: &Arc<Inode>,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> OpResult<()> {
        let work = self.writable()?;
        // RENAME_WHITEOUT is the overlay's own; NOREPLACE and EXCHANGE exclude
        // each other.
        if !(RenameFlags::NOREPLACE | RenameFlags::EXCHANGE).contains(flags)
            || flags.contains(RenameFlags::NOREPLACE | RenameFlags::EXCHANGE)
        {
            return Err(Errno::INVAL);
        }
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        check_new_name(new_name)?;
        let source = self.resolve(parent, name)?.ok_or(Errno::NOENT)?;
        let target = self.resolve(new_parent, new_name)?;
        if exchange && target.is_none() {
            return Err(Errno::NOENT);
        }
        if flags.contains(RenameFlags::NOREPLACE) && target.is_some() {
            return Err(Errno::EXIST);
        }
        let source_is_dir = source.kind == FileType::Directory;
        // A dir with lower content moves with a redirect to its lower dirs;
        // without xattrs to record one, it can't move (as in the kernel).
        let source_redirect = source_is_dir && !source.layers.lowers.is_empty();
        let target_redirect = exchange
            && target
                .as_ref()
                .is_some_and(|t| t.kind == FileType::Directory && !t.layers.lowers.is_empty());
        if (source_redirect || target_redirect) && self.xattr_ns().is_none() {
            return Err(Errno::XDEV);
        }
        if let Some(target) = &target {
            if target.ino == source.ino && Arc::ptr_eq(parent, new_parent) && name == new_name {
                return Ok(());
            }
            let target_is_dir = target.kind == FileType::Directory;
            if exchange {
                // Any two objects can swap.
            } else if target_is_dir != source_is_dir {
                return Err(if target_is_dir {
                    Errno::ISDIR
                } else {
                    Errno::NOTDIR
                });
            } else if target_is_dir {
                let probe = Arc::new(Inode::new(target.ino, target.kind, target.layers.clone()));
                if !self.dir_is_empty(&probe)? {
                    return Err(Errno::NOTEMPTY);
                }
            }
        }
        if source_is_dir && self.is_ancestor(new_parent, source.ino) {
            return Err(Errno::INVAL);
        }
        let source_inode = self.inodes.get(source.ino).ok_or(Errno::STALE)?;
        let target_inode = target.as_ref().and_then(|t| self.inodes.get(t.ino));
        self.copy_up(&source_inode)?;
        if exchange {
            self.copy_up(target_inode.as_ref().ok_or(Errno::STALE)?)?;
        }
        let parent_fd = self.real_fd(&self.copy_up(parent)?)?;
        let new_parent_fd = self.real_fd(&self.copy_up(new_parent)?)?;

        let _names = lock_two(parent, new_parent);
        if self.resolve(parent, name)?.map(|r| r.ino) != Some(source.ino)
            || self.resolve(new_parent, new_name)?.map(|r| r.ino) != target.as_ref().map(|t| t.ino)
        {
            // Something changed between the checks and the lock.
            return Err(Errno::STALE);
        }
        let (pfd, npfd) = (parent_fd.as_fd(), new_parent_fd.as_fd());
        if source_is_dir
            || target
                .as_ref()
                .is_some_and(|t| t.kind == FileType::Directory)
        {
            parent.forget_nlink();
            new_parent.forget_nlink();
        }
        if !Arc::ptr_eq(parent, new_parent) {
            // Objects moved in may carry an origin their new dir must know of.
            self.mark_impure(npfd)?;
            if exchange {
                self.mark_impure(pfd)?;
            }
        }
        if let (Presence::Absent, Some(shared)) =
            (self.upper_entry(parent, name)?, source_inode.upper())
        {
            // An indexed file reached through the index: give it this name
            // in the upper dir first, so there is something to move.
            sys::link_fd(self.real_fd(&shared)?.as_fd(), pfd, name)?;
        }
        let source_lower = self.lower_has(parent, name)?;
        let target_lower = self.lower_has(new_parent, new_name)?;
        let target_upper = self.upper_entry(new_parent, new_name)?;
        if !exchange && let Some(t) = target_inode.as_ref().filter(|t| !t.is_dir()) {
            self.adjust_indexed_nlink(t, -1)?;
        }

        if source_redirect {
            self.set_redirect(&source_inode)?;
        }
        if exchange {
            if let Some(t) = target_inode.as_ref().filter(|_| target_redirect) {
                self.set_redirect(t)?;
            }
            sys::rename(pfd, name, npfd, new_name, RenameFlags::EXCHANGE)?;
            // A dir of upper content only, now at a name lower layers also
            // have, must not merge with them.
            if source_is_dir && !source_redirect && target_lower {
                self.mark_opaque(npfd, new_name)?;
            }
            let target_is_dir = target
                .as_ref()
                .is_some_and(|t| t.kind == FileType::Directory);
            if target_is_dir && !target_redirect && source_lower {
                self.mark_opaque(pfd, name)?;
            }
            if let Some(t) = &target_inode {
                t.move_upper(parent.clone(), Arc::from(name));
            }
            source_inode.move_upper(new_parent.clone(), Arc::from(new_name));
            return Ok(());
        }

        let unlinking = target_inode
            .as_ref()
            .filter(|t| {
                t.kind == FileType::Directory
                    || target.as_ref().is_some_and(|t| t.stat.st_nlink <= 1)
            })
            .map(|t| t.start_unlink());
        if source_is_dir && !source_redirect && target_lower {
            // The lower dir of the new name must not merge into this one.
            self.mark_opaque(pfd, name)?;
        }
        match target_upper {
            Presence::Whiteout => {
                // Swap with the whiteout: it ends up at the old name, which is
                // where one is needed if a lower shows that name.
                sys::rename(pfd, name, npfd, new_name, RenameFlags::EXCHANGE)?;
                if !source_lower {
                    sys::unlink(pfd, name)?;
                }
            }
            Presence::Object(st) if sys::file_type(&st) == FileType::Directory => {
                // The target's upper part may hold whiteouts, which rename(2)
                // would refuse to replace: swap, then clear out the old dir.
                sys::rename(pfd, name, npfd, new_name, RenameFlags::EXCHANGE)?;
                let temp = work.temp_name();
                sys::rename(pfd, name, work.fd(), &temp, RenameFlags::empty())?;
                work.remove(&temp);
                if source_lower {
                    self.make_whiteout(pfd, name)?;
                }
            }
            Presence::Object(_) | Presence::Absent | Presence::OciWhiteout => {
                if let Presence::Object(st) = &target_upper
                    && st.st_nlink <= 1
                {
                    self.fds.remove(crate::layer::UPPER, st.st_ino);
                }
                if source_lower && self.caps.rename_whiteout {
                    sys::rename(pfd, name, npfd, new_name, RenameFlags::WHITEOUT)?;
                } else {
                    sys::rename(pfd, name, npfd, new_name, RenameFlags::empty())?;
                    if source_lower {
                        self.make_whiteout(pfd, name)?;
                    }
                }
                if matches!(target_upper, Presence::OciWhiteout) {
                    let _ = sys::unlink(npfd, &format::oci_whiteout_name(new_name));
                }
            }
        }
        match (unlinking, &target_inode) {
            (Some(unlinking), _) => unlinking.done(),
            (None, Some(t)) => self.reattach_to_index(t)?,
            (None, None) => {}
        }
        source_inode.move_upper(new_parent.clone(), Arc::from(new_name));
        Ok(())
    }

    /// Whether the inode numbered `ino` is `dir` or one of its ancestors.
    fn is_ancestor(&self, dir: &Arc<Inode>, ino: u64) -> bool {
        let mut current = Some(dir.clone());
        while let Some(inode) = current {
            if inode.ino == ino {
                return true;
            }
            current = inode.top().and_then(|r| r.parent().cloned());
        }
        false
    }
}

fn check_new_name(name: &OsStr) -> OpResult<()> {
    if name.len() > format::NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    if format::is_reserved_name(name) {
        // `.wh.` names are whiteouts in the layer format.
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// Takes the name locks of two dirs, in a fixed order so two renames going
/// opposite ways can't deadlock.
fn lock_two<'a>(a: &'a Arc<Inode>, b: &'a Arc<Inode>) -> (NamesGuard<'a>, Option<NamesGuard<'a>>) {
    if Arc::ptr_eq(a, b) {
        return (a.lock_names(), None);
    }
    // Two incarnations of one number are two dirs: the generation orders them.
    let (first, second) = if (a.ino, a.generation) < (b.ino, b.generation) {
        (a, b)
    } else {
        (b, a)
    };
    let first_guard = first.lock_names();
    (first_guard, Some(second.lock_names()))
}
