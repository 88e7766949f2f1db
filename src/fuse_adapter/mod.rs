//! The FUSE edge: decodes kernel requests, calls the overlay, and replies.
//! Errors become errnos here. A panic in one request is caught, logged and
//! answered with EIO; the mount stays up.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno as FuseErrno, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::attr::SetAttr;
use crate::error::OpResult;
use crate::handles::Opened;
use crate::inode::Inode;
use crate::layer::RealKey;
use crate::listing::{DirEntry, DirListing};
use crate::namespace::{NewKind, NewObject};
use crate::overlay::{Attr, Overlay};
use crate::stats::Op;

mod convert;
mod passthrough;
mod reply;
mod session;

use convert::{caller_of, file_attr, kind_of, set_time};
use passthrough::{Backings, OpenMode};
use reply::{Answer, XattrValue, answer_lookup, errno};
pub use session::{FusermountUnmounter, Session, serve, serve_through_fusermount};

pub struct CowFs {
    overlay: Arc<Overlay>,
    ttl: Duration,
    backings: Backings,
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
    fn inode(&self, ino: INodeNo) -> OpResult<Arc<Inode>> {
        self.overlay.inode(ino.0)
    }

    /// Runs an overlay call on the inode the kernel names.
    fn on_inode<T>(
        &self,
        ino: INodeNo,
        op: impl FnOnce(&Arc<Inode>) -> OpResult<T>,
    ) -> OpResult<T> {
        op(&self.inode(ino)?)
    }

    /// A copy-up for an attribute change is answered before its data is on
    /// disk (behind a metacopy mark); the wait for the data comes after
    /// the answer, while the caller goes on.
    fn settle_after_answer(&self, ino: INodeNo) {
        self.overlay.settle_copy_of(ino.0);
    }

    /// Whether an open real file can't be swapped for a copy-up while open.
    fn stays(&self, key: RealKey) -> bool {
        key.layer == crate::layer::UPPER || self.overlay.is_read_only()
    }

    /// How the kernel is to do I/O on a new open of `inode`: through the
    /// real file (passthrough) or through this daemon and the page cache.
    fn open_mode(
        &self,
        inode: &Inode,
        opened: &Opened,
        stays: bool,
        open_backing: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> std::io::Result<fuser::BackingId>,
    ) -> OpenMode {
        let backing = || open_backing(opened.fd.as_fd());
        let mode = self
            .backings
            .for_open(inode.ino, opened.source, stays, opened.fh, backing);
        if let OpenMode::Passthrough(_) = mode {
            self.overlay.stats().passthrough_opened();
        }
        mode
    }

    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: NewKind<'_>,
        (mode, umask): (u32, u32),
        reply: ReplyEntry,
    ) {
        let new = NewObject {
            kind,
            mode: mode & 0o7777,
            umask,
            uid: req.uid(),
            gid: req.gid(),
        };
        let made = self.on_inode(parent, |parent| self.overlay.create(parent, name, new));
        reply.answer(&self.ttl, made.map(|(inode, attr, _)| (inode, attr)));
    }

    /// Serves a read of dir `ino` from `offset` (readdir and readdirplus):
    /// hands each entry after it to `add` until `add` says the reply is full.
    /// A listing read to its end need not be kept for the stream.
    fn serve_listing(
        &self,
        ino: INodeNo,
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

    /// The attributes of a listed entry for readdirplus, its generation, and
    /// whether the kernel takes a reference on it (not on "." and "..");
    /// `None` if it is gone since the listing was taken.
    fn listed_entry(&self, listing: &DirListing, entry: &DirEntry) -> Option<(Attr, u64, bool)> {
        if entry.name == "." || entry.name == ".." {
            let mut attr = self
                .overlay
                .inode(entry.ino)
                .and_then(|dir| self.overlay.getattr(&dir))
                .ok()?;
            attr.ino = entry.ino;
            return Some((attr, 0, false));
        }
        let (inode, attr) = self.overlay.lookup_listed(&listing.dir, entry).ok()?;
        Some((attr, inode.generation, true))
    }
}

impl Filesystem for CowFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Readdirplus always (not AUTO): the kernel would otherwise list all
        // but a dir's first chunk plain and then look each name up.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_CACHE_SYMLINKS
            // The kernel enforces ACLs; umask and default ACLs are ours to apply.
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK;
        let offered = config.capabilities() & wanted;
        if let Err(missing) = config.add_capabilities(offered) {
            tracing::debug!(?missing, "kernel lacks some FUSE capabilities");
        }
        // Passthrough needs CAP_SYS_ADMIN to register backing files.
        if self.overlay.options.passthrough
            && crate::sys::euid() == 0
            && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.backings.enable();
        }
        tracing::info!(
            passthrough = self.backings.is_enabled(),
            "FUSE session started"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.guarded(Op::Lookup, || {
            #[cfg(feature = "test-hooks")]
            if self.panic_on_lookup.as_deref() == Some(name) {
                panic!("injected panic on lookup of {name:?}");
            }
            let found = self.on_inode(parent, |parent| self.overlay.lookup(parent, name));
            answer_lookup(reply, &self.ttl, found);
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _timed = self.overlay.stats().request(Op::Forget);
        self.overlay.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.guarded(Op::Getattr, || {
            let fh = fh.map(|fh| fh.0);
            let attr = self.on_inode(ino, |inode| self.overlay.getattr_through(inode, fh));
            reply.answer(&self.ttl, attr);
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.guarded(Op::Setattr, || {
            let change = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: set_time(atime),
                mtime: set_time(mtime),
            };
            let open_fd = fh.and_then(|fh| self.overlay.writable_fd(fh.0));
            let caller = Some(caller_of(req));
            let attr = self.on_inode(ino, |inode| {
                self.overlay
                    .setattr_by(inode, &change, open_fd.as_deref(), caller)
            });
            reply.answer(&self.ttl, attr);
            self.settle_after_answer(ino);
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.guarded(Op::Readlink, || {
            let target = self.on_inode(ino, |inode| self.overlay.readlink(inode));
            reply.answer(&self.ttl, target);
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Mknod, || {
            let mode_type = mode & libc::S_IFMT;
            let kind = if mode_type == libc::S_IFREG || mode_type == 0 {
                NewKind::File {
                    flags: crate::sys::OFlags::WRONLY,
                }
            } else {
                NewKind::Node {
                    mode_type,
                    rdev: u64::from(rdev),
                }
            };
            self.make(req, parent, name, kind, (mode, umask), reply);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Mkdir, || {
            self.make(req, parent, name, NewKind::Dir, (mode, umask), reply);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guarded(Op::Unlink, || {
            let removed = self.on_inode(parent, |parent| self.overlay.remove(parent, name, false));
            reply.answer(&self.ttl, removed);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guarded(Op::Rmdir, || {
            let removed = self.on_inode(parent, |parent| self.overlay.remove(parent, name, true));
            reply.answer(&self.ttl, removed);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Symlink, || {
            let kind = NewKind::Symlink {
                target: target.as_os_str(),
            };
            self.make(req, parent, link_name, kind, (0o777, 0), reply);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Rename, || {
            let renamed = self.inode(parent).and_then(|from| {
                let to = self.inode(newparent)?;
                let flags = crate::sys::RenameFlags::from_bits_retain(flags.bits());
                self.overlay.rename(&from, name, &to, newname, flags)
            });
            reply.answer(&self.ttl, renamed);
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.guarded(Op::Link, || {
            let source = match self.inode(ino) {
                Ok(source) => source,
                Err(e) => return reply.fail(errno(e)),
            };
            self.make(
                req,
                newparent,
                newname,
                NewKind::Link { source },
                (0, 0),
                reply,
            );
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.guarded(Op::Open, || {
            let opened = self.on_inode(ino, |inode| {
                Ok((inode.clone(), self.overlay.open(inode, flags.0)?))
            });
            let (inode, opened) = match opened {
                Ok(opened) => opened,
                Err(e) => return reply.error(errno(e)),
            };
            let stays = self.stays(opened.source);
            let fh = FileHandle(opened.fh);
            match self.open_mode(&inode, &opened, stays, |fd| reply.open_backing(fd)) {
                OpenMode::Passthrough(id) => reply.opened_passthrough(fh, FopenFlags::empty(), &id),
                // Nothing changes a file behind this mount: keep its pages.
                OpenMode::Cached => reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.guarded(Op::Read, || {
            reply.answer(&self.ttl, self.overlay.read(fh.0, offset, size));
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.guarded(Op::Write, || {
            reply.answer(&self.ttl, self.overlay.write(fh.0, offset, data));
        });
    }

    /// Declined for good, so that a close costs no round trip: writes reach
    /// the real file before they are answered, and locks are the kernel's.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _timed = self.overlay.stats().request(Op::Flush);
        reply.error(FuseErrno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timed = self.overlay.stats().request(Op::Release);
        if self.backings.release(ino.0, fh.0) {
            self.overlay.stats().passthrough_closed();
        }
        self.overlay.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Fsync, || {
            reply.answer(&self.ttl, self.overlay.fsync(fh.0, datasync));
        });
    }

    /// Declined for good: the kernel then opens dirs itself (no opendir or
    /// releasedir round trips) and caches their listings, which the stable
    /// offsets of `dirstream` make safe.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timed = self.overlay.stats().request(Op::Opendir);
        reply.error(FuseErrno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.guarded(Op::Readdir, || {
            let served = self.serve_listing(ino, offset, |_, next, entry| {
                !reply.add(INodeNo(entry.ino), next, kind_of(entry.kind), &entry.name)
            });
            match served {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.guarded(Op::Readdirplus, || {
            let served = self.serve_listing(ino, offset, |listing, next, entry| {
                let Some((attr, generation, referenced)) = self.listed_entry(listing, entry) else {
                    return true;
                };
                let full = reply.add(
                    INodeNo(attr.ino),
                    next,
                    &entry.name,
                    &self.ttl,
                    &file_attr(&attr),
                    Generation(generation),
                );
                if full && referenced {
                    // The kernel did not get this entry: undo its lookup.
                    self.overlay.forget(attr.ino, 1);
                }
                !full
            });
            match served {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Fsyncdir, || {
            let synced = self.on_inode(ino, |inode| self.overlay.fsyncdir(inode, datasync));
            reply.answer(&self.ttl, synced);
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.guarded(Op::Statfs, || {
            reply.answer(&self.ttl, self.overlay.statfs())
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Setxattr, || {
            let set = self.on_inode(ino, |inode| {
                let caller = Some(caller_of(req));
                // XATTR_CREATE / XATTR_REPLACE, as the caller gave them.
                let flags = crate::sys::XattrFlags::from_bits_retain(flags as u32);
                self.overlay.setxattr_by(inode, name, value, flags, caller)
            });
            reply.answer(&self.ttl, set);
            self.settle_after_answer(ino);
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.guarded(Op::Getxattr, || {
            let value = self.on_inode(ino, |inode| self.overlay.getxattr(inode, name));
            let value = value.map(|value| XattrValue { asked: size, value });
            reply.answer(&self.ttl, value);
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.guarded(Op::Listxattr, || {
            let list = self.on_inode(ino, |inode| self.overlay.listxattr(inode));
            let list = list.map(|value| XattrValue { asked: size, value });
            reply.answer(&self.ttl, list);
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guarded(Op::Removexattr, || {
            let removed = self.on_inode(ino, |inode| self.overlay.removexattr(inode, name));
            reply.answer(&self.ttl, removed);
            self.settle_after_answer(ino);
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this only
        // answers whether the inode is still there.
        let _timed = self.overlay.stats().request(Op::Access);
        reply.answer(&self.ttl, self.inode(ino).map(drop));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.guarded(Op::Create, || {
            let real_flags = crate::sys::OFlags::from_bits_retain(
                (flags & (libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC)) as _,
            );
            let new = NewObject {
                kind: NewKind::File { flags: real_flags },
                mode: mode & 0o7777,
                umask,
                uid: req.uid(),
                gid: req.gid(),
            };
            let made = self.on_inode(parent, |parent| {
                self.overlay.create_and_open(parent, name, new)
            });
            let (inode, attr, opened) = match made {
                Ok(made) => made,
                Err(e) => return reply.error(errno(e)),
            };
            let (attr, generation) = (file_attr(&attr), Generation(inode.generation));
            let fh = FileHandle(opened.fh);
            match self.open_mode(&inode, &opened, true, |fd| reply.open_backing(fd)) {
                OpenMode::Passthrough(id) => reply.created_passthrough(
                    &self.ttl,
                    &attr,
                    generation,
                    fh,
                    FopenFlags::empty(),
                    &id,
                ),
                OpenMode::Cached => {
                    reply.created(&self.ttl, &attr, generation, fh, FopenFlags::empty())
                }
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.guarded(Op::Fallocate, || {
            // FALLOC_FL_* as the caller gave them.
            let mode = crate::sys::FallocateFlags::from_bits_retain(mode as u32);
            let allocated = self.overlay.fallocate(fh.0, mode, offset, length);
            reply.answer(&self.ttl, allocated);
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.guarded(Op::Lseek, || {
            reply.answer(&self.ttl, self.overlay.lseek(fh.0, offset, whence));
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.guarded(Op::CopyFileRange, || {
            let copied = self
                .overlay
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len);
            reply.answer(&self.ttl, copied);
        });
    }
}
