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
use crate::dirstream::DirListing;
use crate::error::Errno;
use crate::inode::Inode;
use crate::namespace::{NewKind, NewObject};
use crate::overlay::{Attr, Overlay};

mod convert;
mod passthrough;
mod session;

use convert::{absent_entry_attr, caller_of, file_attr, kind_of, reply_xattr, set_time};
use passthrough::{Backings, OpenMode};
pub use session::{serve, serve_through_fusermount};

pub struct CowFs {
    overlay: Arc<Overlay>,
    ttl: Duration,
    backings: Backings,
    /// Fault injection for tests: a lookup of this name panics
    /// (`COWFS_TEST_PANIC_ON_LOOKUP`), to show a panic costs one request.
    panic_on_lookup: Option<std::ffi::OsString>,
}

impl CowFs {
    pub fn new(overlay: Arc<Overlay>) -> CowFs {
        let ttl = overlay.options.cache_ttl;
        CowFs {
            overlay,
            ttl,
            backings: Backings::default(),
            panic_on_lookup: std::env::var_os("COWFS_TEST_PANIC_ON_LOOKUP"),
        }
    }
}

fn reply_unit(reply: ReplyEmpty, result: Result<(), FuseErrno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn errno(e: Errno) -> FuseErrno {
    FuseErrno::from_i32(e.raw_os_error())
}

/// Runs one request, turning a panic into a logged EIO (the reply, dropped
/// unanswered during the unwind, sends EIO itself).
fn guarded(op: &'static str, body: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(body)).is_err() {
        tracing::error!(op, "request panicked; answered EIO");
    }
}

impl CowFs {
    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, FuseErrno> {
        self.overlay.inode(ino.0).map_err(errno)
    }

    fn listing(&self, ino: INodeNo, offset: u64) -> Result<Arc<DirListing>, FuseErrno> {
        self.on_inode(ino, |dir| self.overlay.readdir(dir, offset))
    }

    /// Runs an overlay call on the inode the kernel names.
    fn on_inode<T>(
        &self,
        ino: INodeNo,
        op: impl FnOnce(&Arc<Inode>) -> Result<T, Errno>,
    ) -> Result<T, FuseErrno> {
        let inode = self.inode(ino)?;
        op(&inode).map_err(errno)
    }

    /// Whether an open real file can't be swapped for a copy-up while open.
    fn stays(&self, key: (crate::layer::LayerId, u64)) -> bool {
        key.0 == crate::layer::UPPER || self.overlay.is_read_only()
    }

    fn reply_entry(&self, reply: ReplyEntry, result: Result<(Arc<Inode>, Attr), Errno>) {
        match result {
            Ok((_, attr)) => reply.entry(&self.ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
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
        let result = self
            .inode(parent)
            .map_err(|e| Errno::from_raw_os_error(e.code()))
            .and_then(|parent| {
                let new = NewObject {
                    kind,
                    mode: mode & 0o7777,
                    umask,
                    uid: req.uid(),
                    gid: req.gid(),
                };
                self.overlay
                    .create(&parent, name, new)
                    .map(|(inode, attr, _)| (inode, attr))
            });
        self.reply_entry(reply, result);
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
        guarded("lookup", || {
            if self.panic_on_lookup.as_deref() == Some(name) {
                panic!("injected panic on lookup of {name:?}");
            }
            let result = match self.overlay.inode(parent.0) {
                Ok(parent) => self.overlay.lookup(&parent, name),
                Err(e) => Err(e),
            };
            match result {
                // Cached as a negative dentry: every create of the name goes
                // through the kernel, which drops it then.
                Err(Errno::NOENT) => reply.entry(&self.ttl, &absent_entry_attr(), Generation(0)),
                result => self.reply_entry(reply, result),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.overlay.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.inode(ino) {
            Ok(_) if fh.is_some_and(|fh| self.overlay.handles.file(fh.0).is_some()) => {
                let fh = fh.map_or(0, |fh| fh.0);
                match self.overlay.getattr_open(fh) {
                    Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
                    Err(e) => reply.error(errno(e)),
                }
            }
            Ok(inode) => match self.overlay.getattr(&inode) {
                Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
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
        guarded("setattr", || {
            let inode = match self.inode(ino) {
                Ok(inode) => inode,
                Err(e) => return reply.error(e),
            };
            let change = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: set_time(atime),
                mtime: set_time(mtime),
            };
            let open = fh
                .and_then(|fh| self.overlay.handles.file(fh.0))
                .filter(|h| h.writable);
            let open_fd = open.as_ref().map(|h| h.fd());
            let caller = Some(caller_of(req));
            match self
                .overlay
                .setattr_by(&inode, &change, open_fd.as_deref(), caller)
            {
                Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.inode(ino) {
            Ok(inode) => match self.overlay.readlink(&inode) {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
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
        guarded("mknod", || {
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
        guarded("mkdir", || {
            self.make(req, parent, name, NewKind::Dir, (mode, umask), reply);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            reply_unit(
                reply,
                self.on_inode(parent, |parent| self.overlay.remove(parent, name, false)),
            )
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            reply_unit(
                reply,
                self.on_inode(parent, |parent| self.overlay.remove(parent, name, true)),
            )
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
        guarded("symlink", || {
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
        guarded("rename", || {
            let (from, to) = match (self.inode(parent), self.inode(newparent)) {
                (Ok(from), Ok(to)) => (from, to),
                (Err(e), _) | (_, Err(e)) => return reply.error(e),
            };
            match self.overlay.rename(&from, name, &to, newname, flags.bits()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
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
        guarded("link", || {
            let source = match self.inode(ino) {
                Ok(source) => source,
                Err(e) => return reply.error(e),
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
        guarded("open", || match self.inode(ino) {
            Ok(inode) => match self.overlay.open(&inode, flags.0) {
                Ok(fh) => {
                    let Some((fd, key)) = self.overlay.open_file(fh) else {
                        return reply.error(FuseErrno::EIO);
                    };
                    let stays = self.stays(key);
                    let backing = || reply.open_backing(fd.as_fd());
                    match self.backings.for_open(ino.0, key, stays, fh, backing) {
                        OpenMode::Passthrough(id) => {
                            reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
                        }
                        // Nothing changes a file behind this mount: keep its pages.
                        OpenMode::Cached => {
                            reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
                        }
                    }
                }
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
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
        guarded("read", || match self.overlay.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
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
        guarded("write", || match self.overlay.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
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
        self.backings.release(ino.0, fh.0);
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
        guarded("fsync", || match self.overlay.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        });
    }

    /// Declined for good: the kernel then opens dirs itself (no opendir or
    /// releasedir round trips) and caches their listings, which the stable
    /// offsets of `dirstream` make safe.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
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
        guarded("readdir", || match self.listing(ino, offset) {
            Ok(listing) => {
                let mut full = false;
                for (next, entry) in listing.entries_after(offset) {
                    if reply.add(INodeNo(entry.ino), next, kind_of(entry.kind), &entry.name) {
                        full = true;
                        break;
                    }
                }
                if !full {
                    self.overlay.readdir_done(&listing);
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
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
        guarded("readdirplus", || match self.listing(ino, offset) {
            Ok(listing) => {
                let mut full = false;
                for (next, entry) in listing.entries_after(offset) {
                    let is_dot = entry.name == "." || entry.name == "..";
                    let attr = if is_dot {
                        match self
                            .overlay
                            .inode(entry.ino)
                            .and_then(|i| self.overlay.getattr(&i))
                        {
                            Ok(mut attr) => {
                                attr.ino = entry.ino;
                                attr
                            }
                            Err(_) => continue,
                        }
                    } else {
                        match self.overlay.lookup_listed(&listing.dir, entry) {
                            Ok((_, attr)) => attr,
                            // Gone since the listing was taken.
                            Err(_) => continue,
                        }
                    };
                    full = reply.add(
                        INodeNo(attr.ino),
                        next,
                        &entry.name,
                        &self.ttl,
                        &file_attr(&attr),
                        Generation(0),
                    );
                    if full {
                        if !is_dot {
                            // The kernel did not get this entry: undo its lookup.
                            self.overlay.forget(attr.ino, 1);
                        }
                        break;
                    }
                }
                if !full {
                    self.overlay.readdir_done(&listing);
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
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
        guarded("fsyncdir", || {
            reply_unit(
                reply,
                self.on_inode(ino, |inode| self.overlay.fsyncdir(inode, datasync)),
            )
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.overlay.statfs() {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                st.f_namemax as u32,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
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
        guarded("setxattr", || {
            reply_unit(
                reply,
                self.on_inode(ino, |inode| {
                    let caller = Some(caller_of(req));
                    self.overlay.setxattr_by(inode, name, value, flags, caller)
                }),
            )
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || match self.inode(ino) {
            Ok(inode) => reply_xattr(reply, size, self.overlay.getxattr(&inode, name)),
            Err(e) => reply.error(e),
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || match self.inode(ino) {
            Ok(inode) => reply_xattr(reply, size, self.overlay.listxattr(&inode)),
            Err(e) => reply.error(e),
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            reply_unit(
                reply,
                self.on_inode(ino, |inode| self.overlay.removexattr(inode, name)),
            )
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this only
        // answers whether the inode is still there.
        match self.inode(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        guarded("create", || {
            let parent = match self.inode(parent) {
                Ok(parent) => parent,
                Err(e) => return reply.error(e),
            };
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
            match self.overlay.create(&parent, name, new) {
                Ok((inode, attr, Some(fd))) => {
                    let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
                    let real_ino = match crate::sys::fstat(fd.as_fd()) {
                        Ok(st) => st.st_ino,
                        Err(e) => return reply.error(errno(e)),
                    };
                    let ino = inode.ino;
                    let key = (crate::layer::UPPER, real_ino);
                    let fh = self.overlay.register_file(inode, fd, key, writable);
                    let Some((fd, _)) = self.overlay.open_file(fh) else {
                        return reply.error(FuseErrno::EIO);
                    };
                    let attr = file_attr(&attr);
                    let backing = || reply.open_backing(fd.as_fd());
                    match self.backings.for_open(ino, key, true, fh, backing) {
                        OpenMode::Passthrough(id) => reply.created_passthrough(
                            &self.ttl,
                            &attr,
                            Generation(0),
                            FileHandle(fh),
                            FopenFlags::empty(),
                            &id,
                        ),
                        OpenMode::Cached => reply.created(
                            &self.ttl,
                            &attr,
                            Generation(0),
                            FileHandle(fh),
                            FopenFlags::empty(),
                        ),
                    }
                }
                Ok(_) => reply.error(FuseErrno::EIO),
                Err(e) => reply.error(errno(e)),
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
        guarded("fallocate", || {
            match self.overlay.fallocate(fh.0, mode, offset, length) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
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
        guarded("lseek", || match self.overlay.lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply.error(errno(e)),
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
        guarded("copy_file_range", || {
            match self
                .overlay
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
            {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}
