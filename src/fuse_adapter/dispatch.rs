//! The one request dispatch: decodes each request's arguments and calls the
//! operation of `CowFs` that serves it, whichever transport brought it.

use std::sync::Arc;

use super::convert::set_time;
use super::wire::abi::{self, ArgReader, GETATTR_FH, fattr, opcode};
use super::wire::reply::{
    Reply, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};
use super::wire::{Dispatch, InHeader, ReplyChannel};
use super::{CowFs, OpenFile, Writing};
use crate::attr::{Caller, SetAttr};
use crate::error::Errno;
use crate::stats::Op;

impl Dispatch for CowFs {
    fn found_polling(&self) {
        self.overlay.stats().request_found_polling();
    }

    fn dispatch(
        &self,
        header: &InHeader,
        op_in: &[u8],
        payload: &[u8],
        channel: Arc<dyn ReplyChannel>,
    ) {
        let reply = Reply::new(header.unique, channel);
        match header.opcode {
            opcode::FORGET => {
                if let Some(nlookup) = ArgReader::new(op_in).u64() {
                    self.forget(header.nodeid, nlookup);
                }
                // A forget has no answer.
                std::mem::forget(reply);
            }
            opcode::BATCH_FORGET => {
                let count = ArgReader::new(op_in).u32().unwrap_or(0);
                let mut forgets = ArgReader::new(payload);
                for _ in 0..count {
                    let (Some(nodeid), Some(nlookup)) = (forgets.u64(), forgets.u64()) else {
                        break;
                    };
                    self.forget(nodeid, nlookup);
                }
                std::mem::forget(reply);
            }
            _ => {
                if self.serve(header, op_in, payload, reply).is_none() {
                    tracing::error!(opcode = header.opcode, "malformed FUSE request");
                }
            }
        }
    }
}

/// Who sent a request, for the checks the kernel leaves to the server.
fn caller_of(header: &InHeader) -> Caller {
    Caller {
        uid: header.uid,
        gid: header.gid,
        pid: header.pid,
    }
}

impl CowFs {
    /// Decodes and serves one request that has an answer; `None` when its
    /// arguments are malformed (the reply, dropped unsent, answers EIO).
    fn serve(&self, h: &InHeader, op_in: &[u8], payload: &[u8], reply: Reply) -> Option<()> {
        let mut args = ArgReader::new(op_in);
        let mut rest = ArgReader::new(payload);
        let ino = h.nodeid;
        match h.opcode {
            opcode::LOOKUP => self.lookup(ino, rest.name()?, ReplyEntry::new(reply)),
            opcode::GETATTR => {
                let flags = args.u32()?;
                let _dummy = args.u32()?;
                let fh = args.u64()?;
                let fh = (flags & GETATTR_FH != 0).then_some(fh);
                self.getattr(ino, fh, ReplyAttr::new(reply));
            }
            opcode::SETATTR => {
                let (change, fh, kill_suidgid) = setattr_args(&mut args)?;
                let reply = ReplyAttr::new(reply);
                self.setattr(caller_of(h), ino, (change, kill_suidgid), fh, reply);
            }
            opcode::READLINK => self.readlink(ino, ReplyData::new(reply)),
            opcode::SYMLINK => {
                let name = rest.name()?;
                let target = rest.name()?;
                self.symlink(caller_of(h), ino, name, target, ReplyEntry::new(reply));
            }
            opcode::MKNOD => {
                let (mode, rdev, umask) = (args.u32()?, args.u32()?, args.u32()?);
                let name = rest.name()?;
                let reply = ReplyEntry::new(reply);
                self.mknod(caller_of(h), ino, name, (mode, umask), rdev, reply);
            }
            opcode::MKDIR => {
                let (mode, umask) = (args.u32()?, args.u32()?);
                let name = rest.name()?;
                self.mkdir(
                    caller_of(h),
                    ino,
                    name,
                    (mode, umask),
                    ReplyEntry::new(reply),
                );
            }
            opcode::UNLINK => self.unlink(ino, rest.name()?, ReplyEmpty::new(reply)),
            opcode::RMDIR => self.rmdir(ino, rest.name()?, ReplyEmpty::new(reply)),
            opcode::RENAME | opcode::RENAME2 => {
                let newdir = args.u64()?;
                let flags = if h.opcode == opcode::RENAME2 {
                    args.u32()?
                } else {
                    0
                };
                let (name, newname) = (rest.name()?, rest.name()?);
                self.rename(ino, name, newdir, newname, flags, ReplyEmpty::new(reply));
            }
            opcode::LINK => {
                let source = args.u64()?;
                let name = rest.name()?;
                self.link(caller_of(h), source, ino, name, ReplyEntry::new(reply));
            }
            opcode::OPEN => self.open(ino, args.i32()?, ReplyOpen::new(reply)),
            opcode::READ => {
                let (fh, offset, size) = (args.u64()?, args.u64()?, args.u32()?);
                self.read(OpenFile { ino, fh }, offset, size, ReplyData::new(reply));
            }
            opcode::WRITE => {
                let (fh, offset, size) = (args.u64()?, args.u64()?, args.u32()?);
                // write_flags, lock_owner, then the flags the file was opened with.
                let (write_flags, _lock_owner) = (args.u32()?, args.u64()?);
                let open_flags = args.i32()?;
                let data = payload.get(..size as usize)?;
                let file = OpenFile { ino, fh };
                let how = Writing {
                    open_flags,
                    kill_suidgid: write_flags & abi::WRITE_KILL_SUIDGID != 0,
                };
                self.write(file, offset, data, how, ReplyWrite::new(reply));
            }
            opcode::STATFS => self.statfs(ReplyStatfs::new(reply)),
            opcode::RELEASE => self.release(ino, args.u64()?, ReplyEmpty::new(reply)),
            opcode::FSYNC => {
                let (fh, flags) = (args.u64()?, args.u32()?);
                let datasync = flags & abi::FSYNC_FDATASYNC != 0;
                self.fsync(OpenFile { ino, fh }, datasync, ReplyEmpty::new(reply));
            }
            opcode::FSYNCDIR => {
                let (_fh, flags) = (args.u64()?, args.u32()?);
                let datasync = flags & abi::FSYNC_FDATASYNC != 0;
                self.fsyncdir(ino, datasync, ReplyEmpty::new(reply));
            }
            opcode::SETXATTR => {
                let (size, flags) = (args.u32()?, args.u32()?);
                let name = rest.name()?;
                let value = rest.rest().get(..size as usize)?;
                let reply = ReplyEmpty::new(reply);
                self.setxattr(caller_of(h), ino, name, value, flags, reply);
            }
            opcode::GETXATTR => {
                let size = args.u32()?;
                self.getxattr(ino, rest.name()?, size, ReplyXattr::new(reply));
            }
            opcode::LISTXATTR => self.listxattr(ino, args.u32()?, ReplyXattr::new(reply)),
            opcode::REMOVEXATTR => self.removexattr(ino, rest.name()?, ReplyEmpty::new(reply)),
            opcode::READDIR | opcode::READDIRPLUS => {
                let (_fh, offset, size) = (args.u64()?, args.u64()?, args.u32()?);
                let reply = ReplyDirectory::new(reply, size as usize);
                if h.opcode == opcode::READDIR {
                    self.readdir(ino, offset, reply);
                } else {
                    self.readdirplus(ino, offset, reply);
                }
            }
            opcode::ACCESS => self.access(ino, ReplyEmpty::new(reply)),
            opcode::CREATE => {
                let (flags, mode, umask) = (args.i32()?, args.u32()?, args.u32()?);
                let name = rest.name()?;
                let reply = ReplyCreate::new(reply);
                self.create(caller_of(h), ino, name, (mode, umask), flags, reply);
            }
            opcode::FALLOCATE => {
                let (fh, offset, length, mode) =
                    (args.u64()?, args.u64()?, args.u64()?, args.u32()?);
                let file = OpenFile { ino, fh };
                self.fallocate(file, offset, length, mode, ReplyEmpty::new(reply));
            }
            opcode::LSEEK => {
                let (fh, offset, whence) = (args.u64()?, args.i64()?, args.u32()?);
                let file = OpenFile { ino, fh };
                self.lseek(file, offset, whence as i32, ReplyLseek::new(reply));
            }
            opcode::COPY_FILE_RANGE => {
                let (fh_in, off_in, ino_out) = (args.u64()?, args.u64()?, args.u64()?);
                let (fh_out, off_out, len) = (args.u64()?, args.u64()?, args.u64()?);
                let reply = ReplyWrite::new(reply);
                let (from, to) = (
                    OpenFile { ino, fh: fh_in },
                    OpenFile {
                        ino: ino_out,
                        fh: fh_out,
                    },
                );
                self.copy_file_range((from, off_in), (to, off_out), len, reply);
            }
            opcode::DESTROY => self.answer_ok(Op::Destroy, reply),
            opcode::RELEASEDIR => self.answer_ok(Op::Releasedir, reply),
            // Declined for good, so that a close costs no round trip:
            // writes reach the real file before they are answered, and
            // locks are the kernel's.
            opcode::FLUSH => self.decline(Op::Flush, reply),
            // Declined for good: the kernel then opens dirs itself (no
            // opendir or releasedir round trips) and caches their listings,
            // which the stable offsets of `dirstream` make safe.
            opcode::OPENDIR => self.decline(Op::Opendir, reply),
            // Requests are not abandoned half way: ENOSYS tells the kernel
            // to send no more interrupts.
            opcode::INTERRUPT => self.decline(Op::Interrupt, reply),
            opcode::INIT => {
                let _timed = self.overlay.stats().request(Op::Init);
                reply.error(Errno::IO);
            }
            // Locks (the kernel's own), ioctls, statx, and what a newer
            // kernel may send: ENOSYS, which the kernel remembers for most.
            _ => self.decline(Op::Unsupported, reply),
        }
        Some(())
    }

    fn answer_ok(&self, op: Op, reply: Reply) {
        let _timed = self.overlay.stats().request(op);
        reply.ok();
    }

    fn decline(&self, op: Op, reply: Reply) {
        let _timed = self.overlay.stats().request(op);
        reply.error(Errno::NOSYS);
    }
}

/// `struct fuse_setattr_in`: the changes asked for, the open file they were
/// asked through, and whether set-id bits are to be cleared with them.
fn setattr_args(args: &mut ArgReader<'_>) -> Option<(SetAttr, Option<u64>, bool)> {
    let valid = args.u32()?;
    let _padding = args.u32()?;
    let fh = args.u64()?;
    let size = args.u64()?;
    let _lock_owner = args.u64()?;
    let (atime, mtime, _ctime) = (args.i64()?, args.i64()?, args.i64()?);
    let (atime_ns, mtime_ns, _ctime_ns) = (args.u32()?, args.u32()?, args.u32()?);
    let mode = args.u32()?;
    let _unused = args.u32()?;
    let (uid, gid) = (args.u32()?, args.u32()?);
    let has = |bit: u32| valid & bit != 0;
    let change = SetAttr {
        mode: has(fattr::MODE).then_some(mode),
        uid: has(fattr::UID).then_some(uid),
        gid: has(fattr::GID).then_some(gid),
        size: has(fattr::SIZE).then_some(size),
        atime: set_time(has(fattr::ATIME), has(fattr::ATIME_NOW), atime, atime_ns),
        mtime: set_time(has(fattr::MTIME), has(fattr::MTIME_NOW), mtime, mtime_ns),
    };
    Some((
        change,
        has(fattr::FH).then_some(fh),
        has(fattr::KILL_SUIDGID),
    ))
}
