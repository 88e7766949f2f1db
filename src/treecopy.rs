//! Renaming a dir with lower content without a redirect: the dir is copied
//! up as a whole first (`redirect_dir=off`, and `auto` where the kernel never
//! follows redirects: `user.overlay.*`, a rootless mount, whose `userxattr`
//! kernel mount refuses them with EPERM).
//!
//! Kernel overlayfs returns EXDEV here and leaves the copy to mv(1), which
//! copies file by file in view of everyone and changes every inode number.
//! cowfs copies up in place instead, one ordinary copy-up per entry (data
//! with holes kept, xattrs, owner, times, origin; hard links through the
//! index), so:
//! - the merged view does not change while the copy runs: each copy-up puts
//!   a copy under a name the view already shows; a failure (ENOSPC, EIO)
//!   leaves the dir as it looked, some entries copied up, no temp behind;
//! - writers in the tree meanwhile share the copy-ups (the per-inode lock)
//!   instead of writing to an object the copy already left behind, and
//!   upper objects stay the same inodes (open files, hard links);
//! - once every lower entry has its copy, each dir of the tree is marked
//!   opaque (nothing below is merged any more, which changes nothing shown)
//!   and its whiteouts and redirects, now pointless, go; dirs holding copies
//!   are impure, as every copy-up marks its parent.
//!
//! The caller then moves the dir as one of upper content only: one rename,
//! and a whiteout at the old name where a lower layer still has it.
//!
//! Numbers: the copied dirs no longer merge a lower dir, so a lookup would
//! number them from the upper layer (what kernel overlayfs shows for such a
//! dir after a remount). For the rest of the mount they keep the numbers
//! the kernel holds them by ([`Overlay::kept_number_of`]); so do files whose
//! origin can't be decoded here (no CAP_DAC_READ_SEARCH: rootless).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::copyup::times_of;
use crate::error::OpResult;
use crate::format::{self, XattrNamespace};
use crate::inode::{Inode, RealRef};
use crate::layer::UPPER;
use crate::lookup::{Presence, Resolved};
use crate::origin::OriginInfo;
use crate::overlay::{Overlay, RedirectDir};
use crate::sys::{self, Errno, FileType};

/// The inodes of the tree being copied, each with a reference taken for
/// the length of the copy (so a lookup meanwhile finds the same inode),
/// given back on drop.
struct Held<'a> {
    overlay: &'a Overlay,
    inodes: Vec<Arc<Inode>>,
}

impl Held<'_> {
    fn take(&mut self, found: Resolved) -> Arc<Inode> {
        let inode = self
            .overlay
            .take_reference(found.ino, found.kind, found.layers);
        self.inodes.push(inode.clone());
        inode
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for inode in &self.inodes {
            self.overlay.forget(inode.ino, 1);
        }
    }
}

impl Overlay {
    /// Whether a dir with lower content is renamed with a redirect (else it
    /// is copied up whole first, see [`Overlay::copy_up_tree`]).
    pub(crate) fn writes_redirects(&self) -> bool {
        match self.options.redirect_dir {
            RedirectDir::On => self.xattr_ns().is_some(),
            RedirectDir::Off => false,
            RedirectDir::Auto => self.xattr_ns() == Some(XattrNamespace::Trusted),
        }
    }

    /// Copies up everything below the merged dir `root` (and `root`), marks
    /// every dir of the tree opaque, and keeps the numbers a lookup would no
    /// longer give. Afterwards `root` merges no lower dir and can move as a
    /// dir of upper content only. No name lock may be held by the caller.
    pub(crate) fn copy_up_tree(&self, root: &Arc<Inode>) -> OpResult<()> {
        let mut held = Held {
            overlay: self,
            inodes: Vec::new(),
        };
        // Iterative, so a deep tree cannot exhaust the stack.
        let mut pending = vec![root.clone()];
        let mut dirs = Vec::new();
        while let Some(dir) = pending.pop() {
            self.copy_up(&dir)?;
            for entry in self.list_dir(&dir)? {
                sys::fault::check("treecopy-entry")?;
                // Gone meanwhile: nothing to copy.
                let Some(found) = self.resolve(&dir, &entry.name)? else {
                    continue;
                };
                let child = held.take(found);
                if child.is_dir() {
                    pending.push(child);
                } else {
                    // Data too: a metacopy file's data is found by its
                    // lower name, which the move leaves behind.
                    self.copy_up(&child)?;
                    self.link_shared_copy(&dir, &entry.name, &child)?;
                }
            }
            dirs.push(dir);
        }
        for dir in &dirs {
            self.seal_dir(dir)?;
        }
        for inode in dirs.iter().chain(held.inodes.iter()) {
            self.keep_number_of(inode)?;
        }
        tracing::debug!(ino = root.ino, dirs = dirs.len(), "dir copied up whole");
        Ok(())
    }

    /// A lower file with several names whose copy another name made (in the
    /// index) gets that copy at this name too, as copy-up would give it: a
    /// non-dir with an upper copy but none at this name shares another's.
    fn link_shared_copy(&self, dir: &Arc<Inode>, name: &OsStr, file: &Inode) -> OpResult<()> {
        let dir_fd = self.real_fd(&dir.upper().ok_or(Errno::STALE)?)?;
        let _names = dir.lock_names_unchanged();
        if let Presence::Absent = self.upper_entry(dir, name)? {
            let shared = file.upper().ok_or(Errno::STALE)?;
            let before = sys::fstat(dir_fd.as_fd())?;
            match sys::link_fd(self.real_fd(&shared)?.as_fd(), dir_fd.as_fd(), name) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            // A copy-up is no change the user made.
            sys::set_times(dir_fd.as_fd(), &times_of(&before))?;
        }
        Ok(())
    }

    /// Marks a dir whose every lower entry has its upper copy opaque, and
    /// clears what only a merge needed: whiteouts (a dir that merges nothing
    /// is listed by the kernel as it is, whiteouts included) and redirects.
    fn seal_dir(&self, dir: &Arc<Inode>) -> OpResult<()> {
        let upper = dir.upper().ok_or(Errno::STALE)?;
        let fd = self.real_fd(&upper)?;
        let _names = dir.lock_names_unchanged();
        let before = sys::fstat(fd.as_fd())?;
        sys::fault::check("treecopy-seal")?;
        self.mark_opaque_fd(fd.as_fd())?;
        for ns in format::READ_NAMESPACES {
            match sys::remove_xattr(fd.as_fd(), ns.redirect()) {
                Ok(()) | Err(Errno::NODATA) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_whiteouts(fd.as_fd())?;
        sys::set_times(fd.as_fd(), &times_of(&before))?;
        dir.drop_lowers();
        dir.forget_nlink();
        Ok(())
    }

    /// Removes the 0/0 and `.wh.NAME` whiteouts of an opaque upper dir.
    fn remove_whiteouts(&self, dir: BorrowedFd<'_>) -> OpResult<()> {
        let listing = sys::open_dir_for_listing(dir)?;
        let mut candidates = Vec::new();
        sys::for_each_dir_entry(listing.as_fd(), |name, kind, _| {
            let name = OsStr::from_bytes(name.to_bytes());
            let maybe_chardev = matches!(kind, FileType::CharacterDevice | FileType::Unknown);
            if maybe_chardev || format::oci_whiteout_target(name).is_some() {
                candidates.push(name.to_os_string());
            }
        })?;
        for name in candidates {
            let whiteout = match sys::stat_at(dir, &name)? {
                Some(st) => {
                    format::is_chardev_whiteout(&st) || format::oci_whiteout_target(&name).is_some()
                }
                None => false,
            };
            if whiteout {
                match sys::unlink(dir, &name) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Keeps the number of a copied-up object of the tree where a lookup
    /// would now give another: a dir (its lower dir is no longer merged),
    /// or a file whose origin this mount can't decode.
    fn keep_number_of(&self, inode: &Inode) -> OpResult<()> {
        let Some(upper) = inode.upper() else {
            return Ok(());
        };
        if inode.ino == self.layer_stack().map_ino(UPPER, upper.real_ino) {
            return Ok(());
        }
        let fd = self.real_fd(&upper)?;
        if !inode.is_dir()
            && let OriginInfo::Ino { ino, .. } = self.origin_info(fd.as_fd())?
            && ino == inode.ino
        {
            return Ok(());
        }
        let origin = self.origin_bytes(fd.as_fd())?;
        self.keep_number(upper.real_ino, origin, inode.ino);
        Ok(())
    }

    /// The number this mount keeps for `upper` (an object found without a
    /// lower object to take its number from), if it kept one and the object
    /// is still the one it was kept for (same origin).
    pub(crate) fn kept_number_of(&self, upper: &RealRef) -> OpResult<Option<u64>> {
        let Some((origin, ino)) = self.kept_number(upper.real_ino) else {
            return Ok(None);
        };
        let fd = self.real_fd(upper)?;
        Ok((self.origin_bytes(fd.as_fd())? == origin).then_some(ino))
    }

    /// The raw origin xattr of an upper object (empty if it has none).
    fn origin_bytes(&self, fd: BorrowedFd<'_>) -> OpResult<Vec<u8>> {
        for ns in format::READ_NAMESPACES {
            match sys::get_xattr(fd, ns.origin()) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Vec::new())
    }
}
