//! rename(2) in the merged view, with RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! In steps: what may move where (checked on the merged view, as the kernel
//! checks), the copy-ups the move needs (no name lock held), then under both
//! dirs' name locks the names checked again, the marks the move needs on
//! disk (impure, redirect, opaque), the move itself (a swap, or a move that
//! leaves a whiteout where a lower layer still shows the old name), and what
//! the inodes learn from it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::error::OpResult;
use crate::format;
use crate::inode::{Inode, NamesGuard};
use crate::lookup::{Presence, Resolved};
use crate::namespace::check_new_name;
use crate::overlay::Overlay;
use crate::sys::{self, Errno, FileType, RenameFlags};

/// A rename that passed the checks: what is moved, and what it replaces or
/// swaps with.
struct Move {
    source: Resolved,
    target: Option<Resolved>,
    exchange: bool,
    /// The source is a dir with lower content: it moves with a redirect.
    source_redirect: bool,
    /// Exchanged with a dir with lower content, which needs one too.
    target_redirect: bool,
    /// A dir with lower content where no redirect is written: it is copied
    /// up whole first (see `treecopy`), then moves as an upper dir.
    source_whole: bool,
    target_whole: bool,
}

impl Move {
    fn source_is_dir(&self) -> bool {
        self.source.kind == FileType::Directory
    }

    fn target_is_dir(&self) -> bool {
        self.target
            .as_ref()
            .is_some_and(|t| t.kind == FileType::Directory)
    }
}

/// Whether a lower layer shows the old name (so it needs a whiteout once
/// the object is gone from it) and the new one.
#[derive(Clone, Copy)]
struct LowerNames {
    source: bool,
    target: bool,
}

/// The two ends of a move, with their upper dirs open.
struct Ends<'a> {
    parent: &'a Arc<Inode>,
    name: &'a OsStr,
    new_parent: &'a Arc<Inode>,
    new_name: &'a OsStr,
    from: BorrowedFd<'a>,
    to: BorrowedFd<'a>,
}

impl Overlay {
    /// rename(2), with RENAME_NOREPLACE and RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        new_parent: &Arc<Inode>,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> OpResult<()> {
        self.writable()?;
        let Some(planned) = self.plan_move(parent, name, new_parent, new_name, flags)? else {
            // Renaming a name to itself.
            return Ok(());
        };
        let source_inode = self.known_inode(planned.source.ino).ok_or(Errno::STALE)?;
        let target_inode = planned
            .target
            .as_ref()
            .and_then(|t| self.known_inode(t.ino));
        self.copy_up(&source_inode)?;
        if planned.source_whole {
            self.copy_up_tree(&source_inode)?;
        }
        if planned.exchange {
            let target = target_inode.as_ref().ok_or(Errno::STALE)?;
            self.copy_up(target)?;
            if planned.target_whole {
                self.copy_up_tree(target)?;
            }
        }
        let parent_fd = self.real_fd(&self.copy_up(parent)?)?;
        let new_parent_fd = self.real_fd(&self.copy_up(new_parent)?)?;

        let _names = lock_two(parent, new_parent);
        let ends = Ends {
            parent,
            name,
            new_parent,
            new_name,
            from: parent_fd.as_fd(),
            to: new_parent_fd.as_fd(),
        };
        if self.resolve(parent, name)?.map(|r| r.ino) != Some(planned.source.ino)
            || self.resolve(new_parent, new_name)?.map(|r| r.ino)
                != planned.target.as_ref().map(|t| t.ino)
        {
            // Something changed between the checks and the lock.
            return Err(Errno::STALE);
        }
        let lowers = self.prepare_ends(&ends, &planned, &source_inode)?;
        if planned.exchange {
            self.swap_names(&ends, &planned, lowers, target_inode.as_ref())?;
        } else {
            self.move_name(&ends, &planned, lowers, target_inode.as_ref())?;
        }
        if planned.exchange
            && let Some(t) = &target_inode
        {
            t.move_upper(parent.clone(), Arc::from(name));
        }
        source_inode.move_upper(new_parent.clone(), Arc::from(new_name));
        Ok(())
    }

    /// The checks rename(2) makes on the merged view; `None` for a rename
    /// of a name to itself (nothing to do).
    fn plan_move(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        new_parent: &Arc<Inode>,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> OpResult<Option<Move>> {
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
        // A dir with lower content moves with a redirect to its lower dirs,
        // or, where none is written (none can be, or the kernel would not
        // follow it), copied up whole: never EXDEV.
        let source_merged = source.kind == FileType::Directory && !source.layers.lowers.is_empty();
        let target_merged = exchange
            && target
                .as_ref()
                .is_some_and(|t| t.kind == FileType::Directory && !t.layers.lowers.is_empty());
        let redirects = self.writes_redirects();
        let planned = Move {
            source_redirect: source_merged && redirects,
            target_redirect: target_merged && redirects,
            source_whole: source_merged && !redirects,
            target_whole: target_merged && !redirects,
            source,
            target,
            exchange,
        };
        if let Some(target) = &planned.target {
            if target.ino == planned.source.ino
                && Arc::ptr_eq(parent, new_parent)
                && name == new_name
            {
                return Ok(None);
            }
            let target_is_dir = planned.target_is_dir();
            if exchange {
                // Any two objects can swap.
            } else if target_is_dir != planned.source_is_dir() {
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
        if planned.source_is_dir() && self.is_ancestor(new_parent, planned.source.ino) {
            return Err(Errno::INVAL);
        }
        Ok(Some(planned))
    }

    /// What the dirs need before anything moves: their link counts counted
    /// again, impure marks for objects with origins moving in, a name in the
    /// upper dir for an indexed file reached through the index, and the
    /// redirect of a merged dir that moves. Returns whether a lower layer
    /// shows the old name and the new one.
    fn prepare_ends(
        &self,
        ends: &Ends<'_>,
        planned: &Move,
        source: &Arc<Inode>,
    ) -> OpResult<LowerNames> {
        if planned.source_is_dir() || planned.target_is_dir() {
            ends.parent.forget_nlink();
            ends.new_parent.forget_nlink();
        }
        if !Arc::ptr_eq(ends.parent, ends.new_parent) {
            // Objects moved in may carry an origin their new dir must know of.
            self.mark_impure(ends.to)?;
            if planned.exchange {
                self.mark_impure(ends.from)?;
            }
        }
        if let (Presence::Absent, Some(shared)) =
            (self.upper_entry(ends.parent, ends.name)?, source.upper())
        {
            // An indexed file reached through the index: give it this name
            // in the upper dir first, so there is something to move.
            sys::link_fd(self.real_fd(&shared)?.as_fd(), ends.from, ends.name)?;
        }
        let lowers = LowerNames {
            source: self.lower_has(ends.parent, ends.name)?,
            target: self.lower_has(ends.new_parent, ends.new_name)?,
        };
        if planned.source_redirect {
            self.set_redirect(source)?;
        }
        Ok(lowers)
    }

    /// RENAME_EXCHANGE: the two upper objects swap names.
    fn swap_names(
        &self,
        ends: &Ends<'_>,
        planned: &Move,
        lowers: LowerNames,
        target: Option<&Arc<Inode>>,
    ) -> OpResult<()> {
        if let Some(t) = target.filter(|_| planned.target_redirect) {
            self.set_redirect(t)?;
        }
        sys::rename(
            ends.from,
            ends.name,
            ends.to,
            ends.new_name,
            RenameFlags::EXCHANGE,
        )?;
        // A dir of upper content only, now at a name lower layers also
        // have, must not merge with them.
        if planned.source_is_dir() && !planned.source_redirect && lowers.target {
            self.mark_opaque(ends.to, ends.new_name)?;
        }
        if planned.target_is_dir() && !planned.target_redirect && lowers.source {
            self.mark_opaque(ends.from, ends.name)?;
        }
        Ok(())
    }

    /// A plain rename: the source takes the new name, whatever the upper dir
    /// holds there (a whiteout, a dir holding whiteouts, a file, nothing),
    /// and a whiteout takes the old name where a lower layer still shows it.
    fn move_name(
        &self,
        ends: &Ends<'_>,
        planned: &Move,
        lowers: LowerNames,
        target: Option<&Arc<Inode>>,
    ) -> OpResult<()> {
        let work = self.writable()?;
        let (from, name, to, new_name) = (ends.from, ends.name, ends.to, ends.new_name);
        let (source_lower, target_lower) = (lowers.source, lowers.target);
        let target_upper = self.upper_entry(ends.new_parent, new_name)?;
        if let Some(t) = target.filter(|t| !t.is_dir()) {
            self.adjust_indexed_nlink(t, -1)?;
        }
        let last_name = planned.target_is_dir()
            || planned
                .target
                .as_ref()
                .is_some_and(|t| t.stat.st_nlink <= 1);
        let unlinking = target.filter(|_| last_name).map(|t| t.start_unlink());
        if planned.source_is_dir() && !planned.source_redirect && target_lower {
            // The lower dir of the new name must not merge into this one.
            self.mark_opaque(from, name)?;
        }
        match target_upper {
            Presence::Whiteout => {
                // Swap with the whiteout: it ends up at the old name, which is
                // where one is needed if a lower shows that name.
                sys::rename(from, name, to, new_name, RenameFlags::EXCHANGE)?;
                if !source_lower {
                    sys::unlink(from, name)?;
                }
            }
            Presence::Object(st) if sys::file_type(&st) == FileType::Directory => {
                // The target's upper part may hold whiteouts, which rename(2)
                // would refuse to replace: swap, then clear out the old dir.
                sys::rename(from, name, to, new_name, RenameFlags::EXCHANGE)?;
                let temp = work.temp_name();
                sys::rename(from, name, work.fd(), &temp, RenameFlags::empty())?;
                work.remove(&temp);
                if source_lower {
                    self.make_whiteout(from, name)?;
                }
            }
            Presence::Object(_) | Presence::Absent | Presence::OciWhiteout => {
                if let Presence::Object(st) = &target_upper
                    && st.st_nlink <= 1
                {
                    if let Some(t) = target.filter(|_| last_name) {
                        self.keep_if_open_possible(t);
                    }
                    self.forget_real_fd(crate::layer::UPPER, st.st_ino);
                }
                if source_lower && self.caps().rename_whiteout {
                    sys::rename(from, name, to, new_name, RenameFlags::WHITEOUT)?;
                    self.stats().made_whiteout();
                } else {
                    sys::rename(from, name, to, new_name, RenameFlags::empty())?;
                    if source_lower {
                        self.make_whiteout(from, name)?;
                    }
                }
                if matches!(target_upper, Presence::OciWhiteout) {
                    let _ = sys::unlink(to, &format::oci_whiteout_name(new_name));
                }
            }
        }
        match (unlinking, target) {
            (Some(unlinking), _) => unlinking.done(),
            (None, Some(t)) => self.reattach_to_index(t)?,
            (None, None) => {}
        }
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
