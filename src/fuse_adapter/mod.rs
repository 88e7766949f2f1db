//! The FUSE edge: decodes kernel requests, calls the overlay, and replies.
//! Errors become errnos here. A panic in one request is caught, logged and
//! answered with EIO; the mount stays up.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::attr::{Caller, SetAttr};
use crate::error::OpResult;
use crate::handles::Opened;
use crate::inode::Inode;
use crate::listing::{DirEntry, DirListing};
use crate::namespace::{NewKind, NewObject};
use crate::overlay::{Attr, Overlay};
use crate::stats::Op;

mod convert;
mod dev;
mod dispatch;
mod passthrough;
mod poll;
mod reply;
mod session;
mod uring;
mod wire;

use convert::{file_attr, kind_of};
use passthrough::{Backings, OpenMode};
pub use poll::PollWindow;
use reply::{Answer, XattrValue, answer_lookup};
pub use session::{FusermountUnmounter, IoUring, Session, Transport, fusermount, serve};
use wire::ReadSource;
use wire::abi::init;
use wire::reply::{
    OpenIo, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};

/// The handle number of a file the kernel opened without asking
/// (`open=kernel`): cowfs hands out handles from 1 up, so 0 names none.
const KERNELS_OPEN_FILE: u64 = 0;

/// The open file a request names: the inode, and the handle cowfs gave
/// the open (or `KERNELS_OPEN_FILE`).
#[derive(Clone, Copy)]
pub(crate) struct OpenFile {
    pub ino: u64,
    pub fh: u64,
}

impl OpenFile {
    /// The inode to do the I/O on, where the kernel opened the file itself;
    /// `None` where the daemon holds the open file.
    fn kernels(self) -> Option<u64> {
        (self.fh == KERNELS_OPEN_FILE).then_some(self.ino)
    }
}

/// What a write request says besides its data.
#[derive(Clone, Copy)]
pub(crate) struct Writing {
    /// The flags the file was opened with (O_SYNC, O_DSYNC).
    pub open_flags: i32,
    /// The writer lacks CAP_FSETID: set-id bits go (FUSE_HANDLE_KILLPRIV_V2).
    pub kill_suidgid: bool,
}

pub struct CowFs {
    overlay: Arc<Overlay>,
    ttl: Duration,
    backings: Backings,
    /// The device fd passthrough backing files are registered on.
    dev: OnceLock<Arc<OwnedFd>>,
    /// Fault injection for tests (built with the `test-hooks` feature
    /// only): a lookup of this name panics (`COWFS_TEST_PANIC_ON_LOOKUP`), to
    /// show a panic costs one request.
    #[cfg(feature = "test-hooks")]
    panic_on_lookup: Option<std::ffi::OsString>,
}

impl CowFs {
    pub fn new(overlay: Arc<Overlay>) -> CowFs {
        let ttl = overlay.options.cache_ttl;
        CowFs {
            overlay,
            ttl,
            backings: Backings::default(),
            dev: OnceLock::new(),
            #[cfg(feature = "test-hooks")]
            panic_on_lookup: std::env::var_os("COWFS_TEST_PANIC_ON_LOOKUP"),
        }
    }
}

impl CowFs {
    /// Runs one request: counts and times it as `op` for `cowfs stats`, and
    /// turns a panic into a logged EIO (the reply, dropped unanswered during
    /// the unwind, sends EIO itself).
    fn guarded(&self, op: Op, body: impl FnOnce()) {
        let _timed = self.overlay.stats().request(op);
        if catch_unwind(AssertUnwindSafe(body)).is_err() {
            tracing::error!(op = op.name(), "request panicked; answered EIO");
        }
    }

    /// The inode the kernel names by `ino`.
    fn inode(&self, ino: u64) -> OpResult<Arc<Inode>> {
        self.overlay.inode(ino)
    }

    /// Runs an overlay call on the inode the kernel names.
    fn on_inode<T>(&self, ino: u64, op: impl FnOnce(&Arc<Inode>) -> OpResult<T>) -> OpResult<T> {
        op(&self.inode(ino)?)
    }

    /// A copy-up for an attribute change is answered before its data is on
    /// disk (behind a metacopy mark); the wait for the data comes after
    /// the answer, while the caller goes on.
    fn settle_after_answer(&self, ino: u64) {
        self.overlay.settle_copy_of(ino);
    }

    /// Whether an open of a real file may pass through: it can't be
    /// swapped for a copy-up while open (an upper file, any file of a
    /// read-only mount), or `passthrough=all` lets lower files open for
    /// reading pass through too, at the price that they go on reading the
    /// lower file after a copy-up and hold write opens off until closed.
    /// Only lower files of `LOWER_PASSTHROUGH_FROM` bytes up: a smaller one
    /// is read in a request or two, cheaper than registering a backing file.
    fn may_pass_through(&self, opened: &Opened, writes: bool) -> bool {
        const LOWER_PASSTHROUGH_FROM: i64 = 1 << 20;
        opened.source.layer == crate::layer::UPPER
            || self.overlay.is_read_only()
            || (self.overlay.options.passthrough_lower
                && !writes
                && crate::sys::fstat(opened.fd.as_fd())
                    .is_ok_and(|st| st.st_size >= LOWER_PASSTHROUGH_FROM))
    }

    /// How the kernel is to do I/O on a new open of `inode`: through the
    /// real file (passthrough) or through this daemon and the page cache.
    fn open_mode(&self, inode: &Inode, opened: &Opened, writes: bool) -> OpenMode {
        let stays = self.may_pass_through(opened, writes);
        let backing = || match self.dev.get() {
            Some(dev) => crate::sys::Backing::open(dev, opened.fd.as_fd()),
            None => Err(std::io::Error::from(crate::sys::Errno::NOTCONN)),
        };
        let mode = self.backings.for_open(
            inode.ino,
            opened.source,
            (stays, writes),
            opened.fh,
            backing,
        );
        if let OpenMode::Passthrough(_) = mode {
            self.overlay.stats().passthrough_opened();
        }
        mode
    }

    /// `open_mode`, for an open that may find the file busy: the kernel
    /// sends RELEASE after close(2) has returned, in the background and
    /// maybe through another queue, so the last reader's release may still
    /// be on its way when a writer opens; it is given a moment to arrive
    /// before the open is refused.
    fn open_mode_waiting_for_releases(
        &self,
        inode: &Inode,
        opened: &Opened,
        writes: bool,
    ) -> OpenMode {
        const RELEASE_WAIT: Duration = Duration::from_millis(50);
        let start = std::time::Instant::now();
        loop {
            match self.open_mode(inode, opened, writes) {
                OpenMode::Busy if start.elapsed() < RELEASE_WAIT => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                mode => return mode,
            }
        }
    }

    fn make(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        kind: NewKind<'_>,
        (mode, umask): (u32, u32),
        reply: ReplyEntry,
    ) {
        let new = NewObject {
            kind,
            mode: mode & 0o7777,
            umask,
            uid: caller.uid,
            gid: caller.gid,
        };
        let made = self.on_inode(parent, |parent| self.overlay.create(parent, name, new));
        let made = made.map(|(inode, attr, opened)| {
            if let Some(fd) = opened {
                self.overlay.keep_made_file(&inode, fd);
            }
            (inode, attr)
        });
        reply.answer(&self.ttl, made);
    }

    /// Serves a read of dir `ino` from `offset` (readdir and readdirplus):
    /// hands each entry after it to `add` until `add` says the reply is full.
    /// A listing read to its end need not be kept for the stream.
    fn serve_listing(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(&DirListing, u64, &DirEntry) -> bool,
    ) -> OpResult<()> {
        let listing = self.on_inode(ino, |dir| self.overlay.readdir(dir, offset))?;
        for (next, entry) in listing.entries_after(offset) {
            if !add(&listing, next, entry) {
                return Ok(());
            }
        }
        self.overlay.readdir_done(&listing);
        Ok(())
    }

    /// What readdirplus tells the kernel of a listed entry: `Some` with its
    /// attributes and generation when the kernel takes a reference on it;
    /// `None` (node id 0) for "." and "..", which the kernel skips, and for
    /// an object the kernel already holds, whose cached attributes (and
    /// ACLs) it then keeps instead of dropping them for a refresh; `Err`
    /// when it is gone since the listing was taken.
    fn listed_entry(
        &self,
        listing: &DirListing,
        entry: &DirEntry,
    ) -> OpResult<Option<(Attr, u64)>> {
        if entry.name == "." || entry.name == ".." {
            return Ok(None);
        }
        if let Some(inode) = self.overlay.known_inode(entry.ino)
            && inode.kind == entry.kind
            && !inode.is_unlinked()
            && inode.lookup_count() > 0
        {
            return Ok(None);
        }
        let (inode, attr) = self.overlay.lookup_listed(&listing.dir, entry)?;
        Ok(Some((attr, inode.generation)))
    }
}

/// The operations, one a request kind; `dispatch` decodes their arguments.
impl CowFs {
    /// The INIT flags cowfs asks for, given what the kernel offers.
    fn init_flags(&self, offered: u64) -> dev::InitAnswer {
        // Readdirplus where lookups follow (AUTO): for a dir's first chunk,
        // and for the next ones once names of it were looked up or used
        // since. A plain listing costs the daemon no stat of each name,
        // which in a cold dir is most of a listing's price (10k names:
        // ~165 ms with attributes, ~30 ms without); a program that stats
        // every name after listing them all (ls -l) pays one LOOKUP each
        // past the first chunk instead.
        let mut flags = init::DO_READDIRPLUS
            | init::READDIRPLUS_AUTO
            | init::PARALLEL_DIROPS
            | init::CACHE_SYMLINKS
            // The kernel enforces ACLs; umask and default ACLs are ours to apply.
            | init::POSIX_ACL
            | init::DONT_MASK;
        // O_TRUNC done by OPEN, where there are opens to do it; without
        // them the kernel truncates by SETATTR.
        if !self.overlay.options.kernel_opens {
            flags |= init::ATOMIC_O_TRUNC;
        }
        // Set-id bits cleared by cowfs on writes, truncates and chowns (the
        // kernel says which callers lack CAP_FSETID), where every write
        // reaches cowfs: without passthrough, which the kernel's opens
        // exclude. The kernel then stops asking for security.capability
        // before every write (SB_NOSEC) and refreshing attributes before a
        // chown; the upper filesystem drops capabilities on cowfs's own
        // writes, truncates and chowns.
        if self.overlay.options.kernel_opens {
            flags |= init::HANDLE_KILLPRIV_V2;
        }
        // Passthrough needs CAP_SYS_ADMIN to register backing files, and an
        // open to name the backing file in.
        if self.overlay.options.passthrough
            && !self.overlay.options.kernel_opens
            && crate::sys::euid() == 0
            && offered & init::PASSTHROUGH != 0
        {
            flags |= init::PASSTHROUGH;
            self.backings.enable();
        }
        dev::InitAnswer {
            flags,
            max_stack_depth: 2,
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr, reply: ReplyEntry) {
        self.guarded(Op::Lookup, || {
            #[cfg(feature = "test-hooks")]
            if self.panic_on_lookup.as_deref() == Some(name) {
                panic!("injected panic on lookup of {name:?}");
            }
            let found = self.on_inode(parent, |parent| self.overlay.lookup(parent, name));
            answer_lookup(reply, &self.ttl, found);
        });
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        let _timed = self.overlay.stats().request(Op::Forget);
        self.overlay.forget(ino, nlookup);
    }

    fn getattr(&self, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        self.guarded(Op::Getattr, || {
            let attr = self.on_inode(ino, |inode| self.overlay.getattr_through(inode, fh));
            reply.answer(&self.ttl, attr);
        });
    }

    fn setattr(
        &self,
        caller: Caller,
        ino: u64,
        (change, kill_suidgid): (SetAttr, bool),
        fh: Option<u64>,
        reply: ReplyAttr,
    ) {
        self.guarded(Op::Setattr, || {
            let open_fd = fh.and_then(|fh| self.overlay.writable_fd(fh));
            // A chown clears set-id bits whoever makes it; with
            // FUSE_HANDLE_KILLPRIV_V2 (asked for where the kernel opens files)
            // the kernel leaves that to cowfs, as it does a truncate's.
            let kill_suidgid = kill_suidgid
                || (self.overlay.options.kernel_opens
                    && (change.uid.is_some() || change.gid.is_some()));
            let attr = self.on_inode(ino, |inode| {
                let attr =
                    self.overlay
                        .setattr_by(inode, &change, open_fd.as_deref(), Some(caller))?;
                match kill_suidgid {
                    true => Ok(self
                        .overlay
                        .kill_suidgid(inode, Some(&attr))?
                        .unwrap_or(attr)),
                    false => Ok(attr),
                }
            });
            reply.answer(&self.ttl, attr);
            self.settle_after_answer(ino);
        });
    }

    fn readlink(&self, ino: u64, reply: ReplyData) {
        self.guarded(Op::Readlink, || {
            let target = self.on_inode(ino, |inode| self.overlay.readlink(inode));
            reply.answer(&self.ttl, target);
        });
    }

    fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        (mode, umask): (u32, u32),
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Mknod, || {
            let mode_type = mode & libc::S_IFMT;
            let kind = if mode_type == libc::S_IFREG || mode_type == 0 {
                // Read and write: with open=kernel the file made is kept
                // for the writes that follow (see `keep_made_file`).
                NewKind::File {
                    flags: crate::sys::OFlags::RDWR,
                }
            } else {
                NewKind::Node {
                    mode_type,
                    rdev: u64::from(rdev),
                }
            };
            self.make(caller, parent, name, kind, (mode, umask), reply);
        });
    }

    fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: (u32, u32),
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Mkdir, || {
            self.make(caller, parent, name, NewKind::Dir, mode, reply);
        });
    }

    fn unlink(&self, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.guarded(Op::Unlink, || {
            let removed = self.on_inode(parent, |parent| self.overlay.remove(parent, name, false));
            reply.answer(&self.ttl, removed);
        });
    }

    fn rmdir(&self, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.guarded(Op::Rmdir, || {
            let removed = self.on_inode(parent, |parent| self.overlay.remove(parent, name, true));
            reply.answer(&self.ttl, removed);
        });
    }

    fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        link_name: &OsStr,
        target: &OsStr,
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Symlink, || {
            let kind = NewKind::Symlink { target };
            self.make(caller, parent, link_name, kind, (0o777, 0), reply);
        });
    }

    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Rename, || {
            let renamed = self.inode(parent).and_then(|from| {
                let to = self.inode(newparent)?;
                let flags = crate::sys::RenameFlags::from_bits_retain(flags);
                self.overlay.rename(&from, name, &to, newname, flags)
            });
            reply.answer(&self.ttl, renamed);
        });
    }

    fn link(&self, caller: Caller, ino: u64, newparent: u64, newname: &OsStr, reply: ReplyEntry) {
        self.guarded(Op::Link, || {
            let source = match self.inode(ino) {
                Ok(source) => source,
                Err(e) => return reply.fail(e),
            };
            let kind = NewKind::Link { source };
            self.make(caller, newparent, newname, kind, (0, 0), reply);
        });
    }

    fn open(&self, ino: u64, flags: i32, reply: ReplyOpen) {
        if self.overlay.options.kernel_opens {
            // ENOSYS: from now on the kernel opens and closes files itself,
            // without OPEN or RELEASE requests, and keeps their pages
            // (FOPEN_KEEP_CACHE is what it takes then).
            let _timed = self.overlay.stats().request(Op::Open);
            return reply.error(crate::sys::Errno::NOSYS);
        }
        self.guarded(Op::Open, || {
            let opened = self.on_inode(ino, |inode| {
                Ok((inode.clone(), self.overlay.open(inode, flags)?))
            });
            let (inode, opened) = match opened {
                Ok(opened) => opened,
                Err(e) => return reply.error(e),
            };
            let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
            let io = match self.open_mode_waiting_for_releases(&inode, &opened, writes) {
                OpenMode::Passthrough(id) => OpenIo::Passthrough(id.id()),
                // Nothing changes a file behind this mount: keep its pages.
                OpenMode::Cached => OpenIo::Cached { keep_cache: true },
                OpenMode::Busy => {
                    self.overlay.release(opened.fh);
                    return reply.error(crate::sys::Errno::TXTBSY);
                }
            };
            reply.opened(opened.fh, io);
        });
    }

    fn read(&self, file: OpenFile, offset: u64, size: u32, reply: ReplyData) {
        self.guarded(Op::Read, || {
            // The transport reads the data into the buffer the answer goes
            // from (over io_uring when it commits the answer, so the read's
            // time in `cowfs stats` leaves that read out there).
            let file_to_read = match file.kernels() {
                Some(ino) => self.on_inode(ino, |inode| self.overlay.file_to_read(inode)),
                None => self.overlay.file_to_read_of(file.fh),
            };
            match file_to_read {
                Ok(file) => reply.read_from(ReadSource {
                    file,
                    offset,
                    size: size as usize,
                }),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(&self, file: OpenFile, offset: u64, data: &[u8], how: Writing, reply: ReplyWrite) {
        self.guarded(Op::Write, || {
            let written = match file.kernels() {
                Some(ino) => self.on_inode(ino, |inode| {
                    let written = self
                        .overlay
                        .write_inode(inode, offset, data, how.open_flags)?;
                    if how.kill_suidgid {
                        self.overlay.kill_suidgid(inode, None)?;
                    }
                    Ok(written)
                }),
                None => self.overlay.write(file.fh, offset, data),
            };
            reply.answer(&self.ttl, written);
        });
    }

    fn release(&self, ino: u64, fh: u64, reply: ReplyEmpty) {
        let _timed = self.overlay.stats().request(Op::Release);
        if self.backings.release(ino, fh) {
            self.overlay.stats().passthrough_closed();
        }
        self.overlay.release(fh);
        reply.ok();
    }

    fn fsync(&self, file: OpenFile, datasync: bool, reply: ReplyEmpty) {
        self.guarded(Op::Fsync, || {
            let synced = match file.kernels() {
                Some(ino) => self.on_inode(ino, |inode| self.overlay.fsync_inode(inode, datasync)),
                None => self.overlay.fsync(file.fh, datasync),
            };
            reply.answer(&self.ttl, synced);
        });
    }

    fn readdir(&self, ino: u64, offset: u64, mut reply: ReplyDirectory) {
        self.guarded(Op::Readdir, || {
            let served = self.serve_listing(ino, offset, |_, next, entry| {
                !reply.add(entry.ino, next, kind_of(entry.kind), entry.name.as_bytes())
            });
            match served {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdirplus(&self, ino: u64, offset: u64, mut reply: ReplyDirectory) {
        self.guarded(Op::Readdirplus, || {
            let served = self.serve_listing(ino, offset, |listing, next, entry| {
                let Ok(found) = self.listed_entry(listing, entry) else {
                    return true;
                };
                let name = entry.name.as_bytes();
                let dirent = (entry.ino, kind_of(entry.kind));
                let full = match &found {
                    Some((attr, generation)) => {
                        let attr = file_attr(attr);
                        reply.add_plus(next, name, dirent, Some((&self.ttl, &attr, *generation)))
                    }
                    None => reply.add_plus(next, name, dirent, None),
                };
                if full && let Some((attr, _)) = found {
                    // The kernel did not get this entry: undo its lookup.
                    self.overlay.forget(attr.ino, 1);
                }
                !full
            });
            match served {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fsyncdir(&self, ino: u64, datasync: bool, reply: ReplyEmpty) {
        self.guarded(Op::Fsyncdir, || {
            let synced = self.on_inode(ino, |inode| self.overlay.fsyncdir(inode, datasync));
            reply.answer(&self.ttl, synced);
        });
    }

    fn statfs(&self, reply: ReplyStatfs) {
        self.guarded(Op::Statfs, || {
            reply.answer(&self.ttl, self.overlay.statfs())
        });
    }

    fn setxattr(
        &self,
        caller: Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Setxattr, || {
            let set = self.on_inode(ino, |inode| {
                // XATTR_CREATE / XATTR_REPLACE, as the caller gave them.
                let flags = crate::sys::XattrFlags::from_bits_retain(flags);
                self.overlay
                    .setxattr_by(inode, name, value, flags, Some(caller))
            });
            reply.answer(&self.ttl, set);
            self.settle_after_answer(ino);
        });
    }

    fn getxattr(&self, ino: u64, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.guarded(Op::Getxattr, || {
            let value = self.on_inode(ino, |inode| self.overlay.getxattr(inode, name));
            let value = value.map(|value| XattrValue { asked: size, value });
            reply.answer(&self.ttl, value);
        });
    }

    fn listxattr(&self, ino: u64, size: u32, reply: ReplyXattr) {
        self.guarded(Op::Listxattr, || {
            let list = self.on_inode(ino, |inode| self.overlay.listxattr(inode));
            let list = list.map(|value| XattrValue { asked: size, value });
            reply.answer(&self.ttl, list);
        });
    }

    fn removexattr(&self, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        self.guarded(Op::Removexattr, || {
            let removed = self.on_inode(ino, |inode| self.overlay.removexattr(inode, name));
            reply.answer(&self.ttl, removed);
            self.settle_after_answer(ino);
        });
    }

    fn access(&self, ino: u64, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this only
        // answers whether the inode is still there.
        let _timed = self.overlay.stats().request(Op::Access);
        reply.answer(&self.ttl, self.inode(ino).map(drop));
    }

    fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        (mode, umask): (u32, u32),
        flags: i32,
        reply: ReplyCreate,
    ) {
        if self.overlay.options.kernel_opens {
            // ENOSYS: from now on the kernel creates files by MKNOD and opens
            // them itself, as it opens every file here (a CREATE would open
            // the new file for the daemon, and its close would be a RELEASE
            // until the first open of the mount has told the kernel there
            // are no opens).
            let _timed = self.overlay.stats().request(Op::Create);
            return reply.error(crate::sys::Errno::NOSYS);
        }
        self.guarded(Op::Create, || {
            let real_flags = crate::sys::OFlags::from_bits_retain(
                (flags & (libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC)) as _,
            );
            let new = NewObject {
                kind: NewKind::File { flags: real_flags },
                mode: mode & 0o7777,
                umask,
                uid: caller.uid,
                gid: caller.gid,
            };
            let made = self.on_inode(parent, |parent| {
                self.overlay.create_and_open(parent, name, new)
            });
            let (inode, attr, opened) = match made {
                Ok(made) => made,
                Err(e) => return reply.error(e),
            };
            let io = match self.open_mode(&inode, &opened, true) {
                OpenMode::Passthrough(id) => OpenIo::Passthrough(id.id()),
                // A new file: no open of it can pass through elsewhere.
                OpenMode::Cached | OpenMode::Busy => OpenIo::Cached { keep_cache: false },
            };
            let attr = file_attr(&attr);
            reply.created(&self.ttl, &attr, inode.generation, opened.fh, io);
        });
    }

    fn fallocate(&self, file: OpenFile, offset: u64, length: u64, mode: u32, reply: ReplyEmpty) {
        self.guarded(Op::Fallocate, || {
            // FALLOC_FL_* as the caller gave them.
            let mode = crate::sys::FallocateFlags::from_bits_retain(mode);
            let allocated = match file.kernels() {
                Some(ino) => self.on_inode(ino, |inode| {
                    self.overlay.fallocate_inode(inode, mode, offset, length)
                }),
                None => self.overlay.fallocate(file.fh, mode, offset, length),
            };
            reply.answer(&self.ttl, allocated);
        });
    }

    fn lseek(&self, file: OpenFile, offset: i64, whence: i32, reply: ReplyLseek) {
        self.guarded(Op::Lseek, || {
            let pos = match file.kernels() {
                Some(ino) => {
                    self.on_inode(ino, |inode| self.overlay.lseek_inode(inode, offset, whence))
                }
                None => self.overlay.lseek(file.fh, offset, whence),
            };
            reply.answer(&self.ttl, pos);
        });
    }

    fn copy_file_range(
        &self,
        (from, offset_in): (OpenFile, u64),
        (to, offset_out): (OpenFile, u64),
        len: u64,
        reply: ReplyWrite,
    ) {
        self.guarded(Op::CopyFileRange, || {
            let copied = match (from.kernels(), to.kernels()) {
                (Some(from), Some(to)) => self.on_inode(from, |from| {
                    let to = self.inode(to)?;
                    self.overlay
                        .copy_file_range_inode((from, offset_in), (&to, offset_out), len)
                }),
                (None, None) => self
                    .overlay
                    .copy_file_range(from.fh, offset_in, to.fh, offset_out, len),
                // Files opened before and after the kernel stopped sending
                // opens (only the first open of a mount is asked): let the
                // kernel copy through reads and writes.
                _ => Err(crate::sys::Errno::XDEV),
            };
            reply.answer(&self.ttl, copied);
        });
    }
}
