//! Copy-up: giving a lower object a copy in the upper dir before it changes.
//!
//! The copy is built whole in the work dir (data, then xattrs, owner, mode,
//! capabilities and times), its data is on disk before it is renamed into
//! place, so the upper dir never shows a half-made copy, even after a crash
//! or a power cut; a failed copy leaves no temp behind. Missing parent dirs
//! are copied up first. A per-inode lock makes concurrent writers share one copy-up, and
//! no lock other than the parent's name lock (for the final rename) is held,
//! so a long copy stalls nothing else.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::OpResult;
use crate::format;
use crate::inode::{Inode, Location, RealRef};
use crate::layer::UPPER;
use crate::overlay::Overlay;
use crate::sys::{self, Errno, FileType, OFlags, Stat, Timespec, Timestamps};
use crate::unsettled::UnsettledCopy;
use crate::workdir::WorkDir;

/// How much of a lower file a copy-up must bring along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyUp {
    /// Data and metadata: the file is about to be written.
    Data,
    /// Metadata only (with `metacopy=on`): only attributes change; reads
    /// keep going to the lower file until the first write.
    MetaOnly,
    /// No data: the file is about to be truncated to zero.
    Truncate,
    /// Chosen by copy-up itself for a `MetaOnly` change when metacopy is
    /// off: data and metadata, placed at once under the kernel's metacopy
    /// mark (the data is the lower file's, which is true and on disk), the
    /// mark taken off once the copy's own data is on disk
    /// ([`Overlay::settle_copy`]). Never asked for by a caller.
    DataBehindMark,
}

impl Overlay {
    /// The upper object of `inode`, copying it up first if it has none.
    pub fn copy_up(&self, inode: &Arc<Inode>) -> OpResult<RealRef> {
        self.copy_up_with(inode, CopyUp::Data)
    }

    /// Copy-up that brings only as much as `want` needs.
    pub fn copy_up_with(&self, inode: &Arc<Inode>, want: CopyUp) -> OpResult<RealRef> {
        self.copy_up_telling(inode, want, true)
    }

    /// `copy_up_with` for a request whose answer carries the inode's new
    /// attributes (SETATTR): the kernel takes them from the answer, so it
    /// is not also told that the ones it holds are stale (an inode
    /// invalidation written to /dev/fuse a copy-up). The inode's parents,
    /// copied up on the way, are told as always.
    pub fn copy_up_for_answer(&self, inode: &Arc<Inode>, want: CopyUp) -> OpResult<RealRef> {
        self.copy_up_telling(inode, want, false)
    }

    /// The copy-up itself; `tell_kernel`: whether the kernel is told of
    /// the inode's changed attributes.
    fn copy_up_telling(
        &self,
        inode: &Arc<Inode>,
        want: CopyUp,
        tell_kernel: bool,
    ) -> OpResult<RealRef> {
        if let Some(upper) = inode.upper() {
            if want != CopyUp::MetaOnly && inode.is_metacopy() {
                self.finish_metacopy(inode, want)?;
            }
            return Ok(upper);
        }
        let work = self.writable()?;
        let started = std::time::Instant::now();
        let one_at_a_time = inode.lock_copy_up();
        if let Some(upper) = inode.upper() {
            drop(one_at_a_time);
            if want != CopyUp::MetaOnly && inode.is_metacopy() {
                self.finish_metacopy(inode, want)?;
            }
            return Ok(upper);
        }
        let source = inode.top().ok_or(Errno::STALE)?;
        if inode.is_unlinked() && inode.kind == FileType::RegularFile {
            return self.copy_up_unlinked(work, inode, &source, started, tell_kernel);
        }
        // The copy goes where the object shows: the dir it was found in.
        let (parent, name) = match &source.loc {
            Location::Child { parent, name } => (parent.clone(), name.clone()),
            _ => return Err(Errno::STALE),
        };
        let parent_upper = self.copy_up(&parent)?;
        let parent_fd = self.real_fd(&parent_upper)?;
        let source_fd = self.real_fd(&source)?;
        let st = sys::fstat(source_fd.as_fd())?;

        let mode = match want {
            CopyUp::MetaOnly if self.can_metacopy(&st) => CopyUp::MetaOnly,
            CopyUp::MetaOnly if self.can_place_behind_mark(&st) => CopyUp::DataBehindMark,
            CopyUp::MetaOnly | CopyUp::DataBehindMark => CopyUp::Data,
            CopyUp::Truncate if sys::file_type(&st) != FileType::RegularFile => CopyUp::Data,
            other => other,
        };
        // A lower file with several names gets one shared copy in the index,
        // linked in at each name as it is copied up.
        let index_key = match sys::file_type(&st) {
            FileType::RegularFile if st.st_nlink > 1 => {
                self.index_key(source_fd.as_fd(), source.layer)
            }
            _ => None,
        };
        let mode = if index_key.is_some() {
            CopyUp::Data
        } else {
            mode
        };
        let mut temp = work.temp();
        let writing_back = match &index_key {
            Some(key) => {
                self.ensure_indexed(work, key, source_fd.as_fd(), source.layer, &st)?;
                None
            }
            None => self.build_copy(
                work,
                temp.name(),
                source_fd.as_fd(),
                source.layer,
                &st,
                mode,
                false,
            )?,
        };
        // The copy's O_PATH fd, taken before it moves: it stays valid after
        // the rename, so nothing that follows it can fail to find the copy.
        let copy = match &index_key {
            Some(key) => self.indexed_fd(key)?,
            None => sys::open_path(work.fd(), temp.name())?,
        };
        let copy_st = sys::fstat(copy.as_fd())?;
        if !parent.known_impure() {
            // Before the copy shows, as the kernel marks it: a listing of the
            // dir must look up the origins of its entries from then on.
            self.mark_impure(parent_fd.as_fd())?;
            parent.set_known_impure();
        }
        // The data of a copy behind a metacopy mark is waited for after
        // the answer; any other copy's is, last before the rename and outside
        // the dir's lock.
        let unsettled_data = match writing_back {
            Some(fd) if mode == CopyUp::DataBehindMark => Some(fd),
            Some(fd) => {
                self.finish_durable(fd.as_fd())?;
                None
            }
            None => None,
        };

        let restored_times = {
            let _names = parent.lock_names_unchanged();
            if inode.is_unlinked() {
                return Err(Errno::NOENT);
            }
            // A copy-up is no change the user made: the parent keeps its
            // times, as the kernel keeps them.
            let parent_before = sys::fstat(parent_fd.as_fd())?;
            sys::fault::check("copyup-rename")?;
            let renamed = match &index_key {
                Some(key) => self.link_from_index(key, parent_fd.as_fd(), &name),
                None => sys::rename(
                    work.fd(),
                    temp.name(),
                    parent_fd.as_fd(),
                    &name,
                    sys::RenameFlags::NOREPLACE,
                ),
            };
            match renamed {
                Ok(()) => {
                    temp.placed();
                    Some(sys::fault::check("copyup-parent-times").and_then(|()| {
                        sys::set_times(parent_fd.as_fd(), &times_of(&parent_before))
                    }))
                }
                // The dir was made in upper meanwhile (e.g. by a twin
                // inode); it is the copy we wanted.
                Err(Errno::EXIST) if inode.is_dir() => None,
                Err(e) => return Err(e),
            }
        };
        let Some(restored_times) = restored_times else {
            drop(temp);
            return self.adopt_twin_dir(inode, &parent, &parent_fd, &name, tell_kernel);
        };
        // Read from the lower data: a metadata-only copy, or one whose own
        // data is still on its way behind the mark.
        let behind_mark = mode == CopyUp::MetaOnly || unsettled_data.is_some();
        let upper = self.record_upper(
            inode,
            &parent,
            &name,
            (copy, &copy_st),
            behind_mark,
            tell_kernel,
        );
        if let Some(written) = unsettled_data {
            self.unsettled().insert(UnsettledCopy {
                inode: inode.clone(),
                written,
            });
        }
        if index_key.is_some() {
            inode.set_origin_nlink(sys::nlink(&st));
        }
        tracing::debug!(ino = inode.ino, ?name, ?mode, "copied up");
        self.stats().copied_up(started);
        // The copy is in place and recorded: a failure now fails the
        // operation, and a retry finds the copy instead of tripping on it.
        restored_times?;
        Ok(upper)
    }

    /// The copy-up of a file whose last name is gone (written or changed
    /// through an open that outlived its name): the copy gets no name
    /// either, as the kernel's overlayfs copies such a file to a tmpfile.
    /// It is built in the work dir like any copy, kept by its fd, and its
    /// temp name removed; it goes when the inode goes. No sync: nothing
    /// can find it after a crash.
    fn copy_up_unlinked(
        &self,
        work: &WorkDir,
        inode: &Arc<Inode>,
        source: &RealRef,
        started: std::time::Instant,
        tell_kernel: bool,
    ) -> OpResult<RealRef> {
        let source_fd = self.real_fd(source)?;
        let st = sys::fstat(source_fd.as_fd())?;
        let temp = work.temp();
        self.build_copy(
            work,
            temp.name(),
            source_fd.as_fd(),
            source.layer,
            &st,
            CopyUp::Data,
            false,
        )?;
        let copy = sys::open_path(work.fd(), temp.name())?;
        let copy_st = sys::fstat(copy.as_fd())?;
        drop(temp);
        let upper = RealRef {
            layer: UPPER,
            real_ino: copy_st.st_ino,
            loc: Location::Kept(Arc::new(copy)),
        };
        inode.set_upper(upper.clone(), false);
        if tell_kernel {
            self.attrs_changed(inode.ino);
        }
        tracing::debug!(ino = inode.ino, "copied up a file with no name left");
        self.stats().copied_up(started);
        Ok(upper)
    }

    /// A dir another inode copied up under the same name first: that dir
    /// becomes this inode's upper.
    fn adopt_twin_dir(
        &self,
        inode: &Arc<Inode>,
        parent: &Arc<Inode>,
        parent_fd: &OwnedFd,
        name: &Arc<OsStr>,
        tell_kernel: bool,
    ) -> OpResult<RealRef> {
        let placed = sys::open_path(parent_fd.as_fd(), name)?;
        let placed_st = sys::fstat(placed.as_fd())?;
        Ok(self.record_upper(
            inode,
            parent,
            name,
            (placed, &placed_st),
            false,
            tell_kernel,
        ))
    }

    /// Makes the copy `fd` (stat `st`), now at `name` in `parent`'s upper
    /// dir, the inode's upper.
    fn record_upper(
        &self,
        inode: &Arc<Inode>,
        parent: &Arc<Inode>,
        name: &Arc<OsStr>,
        (fd, st): (OwnedFd, &Stat),
        metacopy: bool,
        tell_kernel: bool,
    ) -> RealRef {
        // Its O_PATH fd goes into the cache: the caller's next step (chmod,
        // write, a create inside) reaches the copy through it.
        self.cache_real_fd(UPPER, st.st_ino, fd);
        let upper = RealRef {
            layer: UPPER,
            real_ino: st.st_ino,
            loc: Location::Child {
                parent: parent.clone(),
                name: name.clone(),
            },
        };
        inode.set_upper(upper.clone(), metacopy);
        // Its attributes now come from the copy (a new ctime, a dir's size
        // and blocks); the request at hand may be about another inode.
        if tell_kernel {
            self.attrs_changed(inode.ino);
        }
        upper
    }

    /// Whether a file may be copied up without its data: metacopy is on,
    /// overlay xattrs can be written, and it is a plain file with one name.
    fn can_metacopy(&self, st: &Stat) -> bool {
        self.options.metacopy && self.could_be_metacopy(st)
    }

    fn could_be_metacopy(&self, st: &Stat) -> bool {
        self.xattr_ns().is_some() && sys::file_type(st) == FileType::RegularFile && st.st_nlink == 1
    }

    /// Whether a copy for an attribute change may be answered before its
    /// data is on disk, behind a metacopy mark: there is data whose
    /// writeback would be waited for, and the mark is in the `trusted`
    /// namespace (the kernel reads `user.overlay` marks only with
    /// `userxattr`, which has no metacopy, so a crash would leave files
    /// it cannot read).
    fn can_place_behind_mark(&self, st: &Stat) -> bool {
        self.could_be_metacopy(st)
            && self.xattr_ns() == Some(crate::format::XattrNamespace::Trusted)
            && st.st_size > 0
            && self.data_ordering() != sys::DataOrdering::Nothing
    }

    /// Takes the metacopy mark off a copy that was placed behind one, once
    /// its own data is on disk: after the answer to the request that made
    /// it (the device works while the caller goes on). Nothing to do for
    /// any other inode. A failure leaves a valid metacopy file, whose data
    /// the next write copies again.
    pub fn settle_copy(&self, inode: &Inode) {
        if !self.unsettled().contains(inode.ino) {
            return;
        }
        let _one_at_a_time = inode.lock_copy_up();
        if let Some(copy) = self.unsettled().take(inode.ino) {
            self.settle_taken(copy);
        }
    }

    /// [`Overlay::settle_copy`] by inode number; the common case, nothing to
    /// settle, costs one atomic load.
    pub fn settle_copy_of(&self, ino: u64) {
        if let Some(inode) = self.unsettled().inode(ino) {
            self.settle_copy(&inode);
        }
    }

    /// Settles every copy still behind a mark (the mount is going away).
    pub fn settle_all_copies(&self) {
        let inos = self.unsettled().inos();
        if inos.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        for &ino in &inos {
            self.settle_copy_of(ino);
        }
        tracing::info!(copies = inos.len(), took = ?started.elapsed(), "settled at exit");
    }

    fn settle_taken(&self, copy: UnsettledCopy) {
        let settled = (|| -> OpResult<()> {
            sys::fault::check("copyup-settle")?;
            self.finish_durable(copy.written.as_fd())?;
            let ns = self.xattr_ns().ok_or(Errno::STALE)?;
            match sys::remove_xattr_of_open_file(copy.written.as_fd(), ns.metacopy()) {
                Ok(()) | Err(Errno::NODATA) => Ok(()),
                Err(e) => Err(e),
            }
        })();
        match settled {
            Ok(()) => copy.inode.clear_metacopy(),
            Err(e) => {
                tracing::warn!(ino = copy.inode.ino, %e, "copy stays a metacopy file");
            }
        }
    }

    /// Brings the data of a metacopy file up (or, before a truncate to
    /// zero, drops the need for it). The metacopy mark goes last, so a
    /// crash leaves a file that still reads from the lower one.
    fn finish_metacopy(&self, inode: &Arc<Inode>, want: CopyUp) -> OpResult<()> {
        let _one_at_a_time = inode.lock_copy_up();
        if let Some(copy) = self.unsettled().take(inode.ino) {
            // Its data is there already: waiting for it is all it needs.
            self.settle_taken(copy);
        }
        let layers = inode.layers();
        if !layers.metacopy {
            return Ok(());
        }
        let upper = layers.upper.as_ref().ok_or(Errno::STALE)?;
        let upper_fd = self.real_fd(upper)?;
        let before = sys::fstat(upper_fd.as_fd())?;
        let writable = sys::reopen(upper_fd.as_fd(), OFlags::WRONLY)?;
        if want == CopyUp::Truncate {
            sys::ftruncate(writable.as_fd(), 0)?;
        } else {
            let source = layers.lowers.first().ok_or(Errno::IO)?;
            let from = sys::reopen(self.real_fd(source)?.as_fd(), OFlags::RDONLY)?;
            let lower_st = sys::fstat(from.as_fd())?;
            let copied = sys::copy_file_data(
                from.as_fd(),
                writable.as_fd(),
                &lower_st,
                before.st_dev,
                self.clone_unsupported(),
                false,
                self.writes_behind(),
            )?;
            self.count_data_copy(copied, lower_st.st_size);
            // The mark goes only once the data is on disk: without it the
            // file reads from the upper copy.
            self.make_durable(writable.as_fd(), copied)?;
        }
        sys::set_times(upper_fd.as_fd(), &times_of(&before))?;
        for ns in format::READ_NAMESPACES {
            match sys::remove_xattr(upper_fd.as_fd(), ns.metacopy()) {
                Ok(()) | Err(Errno::NODATA) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(e),
            }
        }
        inode.clear_metacopy();
        tracing::debug!(ino = inode.ino, ?want, "metacopy completed");
        Ok(())
    }

    /// Makes a copy of the object `source` (stat `st`) named `temp` in the
    /// work dir, with all its metadata. Returns the copy's fd if its data is
    /// still being written back: [`Overlay::finish_durable`] must wait for
    /// it before the copy is placed (the wait comes as late as it can, so
    /// the device works while the other calls run).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build_copy(
        &self,
        work: &WorkDir,
        temp: &OsStr,
        source: BorrowedFd<'_>,
        layer: crate::layer::LayerId,
        st: &Stat,
        mode: CopyUp,
        indexed: bool,
    ) -> OpResult<Option<OwnedFd>> {
        let kind = sys::file_type(st);
        // A file's metadata is set through the fd it was written through;
        // other objects are reached by an O_PATH fd.
        // The source opened for reading, when its data is copied: its
        // xattrs are then read through it too (no walk through /proc).
        let mut opened_source = None;
        // Data written back while the metadata is set, waited for later.
        let mut unsynced = false;
        let copy = match kind {
            FileType::RegularFile => {
                sys::fault::check("copyup-create")?;
                let to = sys::create_file(work.fd(), temp, OFlags::WRONLY, 0o600)?;
                match mode {
                    CopyUp::Data | CopyUp::DataBehindMark => {
                        let from = sys::reopen(source, OFlags::RDONLY)?;
                        sys::fault::check("copyup-data")?;
                        let copied = sys::copy_file_data(
                            from.as_fd(),
                            to.as_fd(),
                            st,
                            work.dev,
                            self.clone_unsupported(),
                            // Behind the mark, the size must be on disk with
                            // the name, whatever the data's writeback does.
                            mode == CopyUp::DataBehindMark,
                            // Behind the mark the writeback waits until
                            // after the answer (see below).
                            mode == CopyUp::Data && self.writes_behind(),
                        )?;
                        self.count_data_copy(copied, st.st_size);
                        // Behind the mark, even starting the writeback
                        // waits until after the answer: on a small file it
                        // is most of the work (block allocation, the I/O).
                        unsynced = if mode == CopyUp::DataBehindMark {
                            self.needs_durable(copied)?
                        } else {
                            self.start_durable(to.as_fd(), copied)?
                        };
                        opened_source = Some(from);
                    }
                    // A sparse file of the right size: no data blocks.
                    CopyUp::MetaOnly => sys::ftruncate(to.as_fd(), st.st_size as u64)?,
                    CopyUp::Truncate => {}
                }
                to
            }
            other => {
                self.make_special_copy(work, temp, source, st, other)?;
                sys::open_path(work.fd(), temp)?
            }
        };
        // Data first: writing data clears security.capability.
        let xattr_source = opened_source.as_ref().map_or(source, |fd| fd.as_fd());
        sys::fault::check("copyup-xattrs")?;
        let capability = self.copy_xattrs_but_capability(xattr_source, copy.as_fd())?;
        let hard_linked = kind != FileType::Directory && st.st_nlink > 1;
        if let Some(ns) = self.xattr_ns()
            && (!hard_linked || indexed)
        {
            // The copy keeps the lower object's inode number through it.
            // Hard-linked files without an index entry are left without, as
            // the kernel does, so the other names keep theirs.
            let origin = self.origin_value(source, layer);
            match sys::set_xattr(copy.as_fd(), ns.origin(), &origin, sys::XattrFlags::empty()) {
                Ok(()) => {}
                // user.* xattrs can't be set on symlinks and special files:
                // such a copy goes without an origin.
                Err(Errno::PERM)
                    if ns == format::XattrNamespace::User
                        && !matches!(kind, FileType::RegularFile | FileType::Directory) => {}
                Err(e) => return Err(e),
            }
        }
        // Behind a mark only while the data is on its way (a clone's
        // shared blocks are on disk already).
        if (mode == CopyUp::MetaOnly || mode == CopyUp::DataBehindMark && unsynced)
            && let Some(ns) = self.xattr_ns()
        {
            sys::set_xattr(copy.as_fd(), ns.metacopy(), b"", sys::XattrFlags::empty())?;
        }
        sys::fault::check("copyup-owner")?;
        give_owner(copy.as_fd(), st.st_uid, st.st_gid)?;
        if kind != FileType::Symlink {
            // After chown, which clears set-id bits.
            sys::fault::check("copyup-mode")?;
            sys::chmod(copy.as_fd(), st.st_mode & 0o7777)?;
        }
        if let Some(value) = capability {
            // After chown too, which clears it (the kernel's copy-up sets
            // the owner without that side effect).
            self.copy_one_xattr(copy.as_fd(), OsStr::new(format::CAPABILITY_XATTR), &value)?;
        }
        sys::fault::check("copyup-times")?;
        sys::set_times(copy.as_fd(), &times_of(st))?;
        Ok(unsynced.then_some(copy))
    }

    /// Puts the data `copied` into `fd` on disk before a name points at it,
    /// as cheaply as the upper filesystem allows (see `sys::DataOrdering`).
    /// Shared blocks (a clone) and empty files need nothing.
    fn make_durable(&self, fd: BorrowedFd<'_>, copied: sys::Copied) -> OpResult<()> {
        if self.start_durable(fd, copied)? {
            self.finish_durable(fd)?;
        }
        Ok(())
    }

    /// The first half of [`Overlay::make_durable`]: starts the writeback
    /// (so the device works while other calls run) and says whether
    /// [`Overlay::finish_durable`] must follow before the copy is placed.
    fn start_durable(&self, fd: BorrowedFd<'_>, copied: sys::Copied) -> OpResult<bool> {
        if !self.needs_durable(copied)? {
            return Ok(false);
        }
        match self.data_ordering() {
            sys::DataOrdering::Nothing => Ok(false),
            sys::DataOrdering::WriteBack => {
                // A test can hold the writeback back (a slow device), so a
                // power cut finds the data still in memory.
                if sys::fault::check("copyup-writeback-start").is_ok() {
                    sys::start_write_back(fd)?;
                }
                Ok(true)
            }
            sys::DataOrdering::Sync => Ok(true),
        }
    }

    /// Whether a copy made durable right after it is written starts its
    /// writeback piece by piece while it is copied (`sys::copy_file_data`).
    fn writes_behind(&self) -> bool {
        // The test that holds the writeback back holds this back too.
        self.data_ordering() != sys::DataOrdering::Nothing
            && sys::fault::check("copyup-writeback-start").is_ok()
    }

    /// Whether data `copied` must be waited for before its copy shows
    /// (see [`Overlay::finish_durable`]).
    fn needs_durable(&self, copied: sys::Copied) -> OpResult<bool> {
        // Here, whatever the upper fs, so a test can fail this step anywhere.
        sys::fault::check("copyup-sync")?;
        Ok(copied == sys::Copied::Written && self.data_ordering() != sys::DataOrdering::Nothing)
    }

    /// The second half: waits until the data started by
    /// [`Overlay::start_durable`] is on disk (or syncs it).
    pub(crate) fn finish_durable(&self, fd: BorrowedFd<'_>) -> OpResult<()> {
        match self.data_ordering() {
            sys::DataOrdering::Nothing => Ok(()),
            sys::DataOrdering::WriteBack => sys::write_back(fd),
            sys::DataOrdering::Sync => sys::fsync(fd, true),
        }
    }

    /// Makes the copy of a dir, symlink or device node named `temp`.
    fn make_special_copy(
        &self,
        work: &WorkDir,
        temp: &OsStr,
        source: BorrowedFd<'_>,
        st: &Stat,
        kind: FileType,
    ) -> OpResult<()> {
        match kind {
            FileType::Directory => sys::mkdir(work.fd(), temp, 0o700)?,
            FileType::Symlink => {
                let target = sys::readlink(source)?;
                sys::symlink(
                    std::os::unix::ffi::OsStrExt::from_bytes(&target[..]),
                    work.fd(),
                    temp,
                )?;
            }
            _ => sys::mknod(
                work.fd(),
                temp,
                (st.st_mode & libc::S_IFMT) | 0o600,
                st.st_rdev,
            )?,
        }
        Ok(())
    }

    /// Copies the user-visible xattrs of `from` to `to`, except
    /// `security.capability`, whose value it returns: changing the owner
    /// clears that one, so it must be set after.
    fn copy_xattrs_but_capability(
        &self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
    ) -> OpResult<Option<Vec<u8>>> {
        let list = match sys::list_xattr(from) {
            Ok(list) => list,
            Err(Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut capability = None;
        for name in format::xattr_names(&list) {
            if format::is_private_xattr(name) {
                continue;
            }
            let Some(value) = sys::get_xattr(from, name)? else {
                continue;
            };
            if name == format::CAPABILITY_XATTR {
                capability = Some(value);
                continue;
            }
            self.copy_one_xattr(to, name, &value)?;
        }
        Ok(capability)
    }

    fn copy_one_xattr(&self, to: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> OpResult<()> {
        match sys::set_xattr(to, name, value, sys::XattrFlags::empty()) {
            Ok(()) => Ok(()),
            // The upper fs or our privileges can't hold this one; the
            // kernel skips such xattrs on copy-up too.
            Err(Errno::NOTSUP) | Err(Errno::PERM) => {
                tracing::debug!(?name, "xattr not copied up");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

pub(crate) fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Sets the owner of a copy or a new object. Without the privilege to give
/// files away (a rootless mount) the object keeps the mounting user's ids,
/// which is the most such a mount can record.
pub(crate) fn give_owner(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> OpResult<()> {
    match sys::chown(fd, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) | Err(Errno::INVAL) => {
            tracing::debug!(uid, gid, "no privilege to set the owner; keeping ours");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
