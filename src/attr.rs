//! Attributes and xattrs: getattr, setattr, readlink, and the xattr calls.
//! Any change copies the object up first; overlay's own xattrs are never
//! shown to or settable by users.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::copyup::CopyUp;
use crate::error::OpResult;
use crate::format;
use crate::idmap::OverrideStat;
use crate::inode::Inode;
use crate::overlay::{Attr, Overlay};
use crate::sys::{self, Errno, FileType, OFlags, Timespec, Timestamps};

const ACL_ACCESS: &str = "system.posix_acl_access";

/// Who asks for a change, as the kernel names them in a request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread, for what a request does not carry: its
    /// supplementary groups and capabilities.
    pub pid: u32,
}

impl Caller {
    /// Whether the kernel would let this caller keep a file's set-group-id
    /// bit: in the file's group, or CAP_FSETID (`in_group_or_capable`).
    /// Root is taken as capable. What the caller's /proc entry says is
    /// read only when the answer is not plain, and if it is gone (the
    /// caller exited) the bit goes, as for a caller without privilege.
    fn may_keep_setgid(&self, file_gid: u32) -> bool {
        if self.uid == 0 || self.gid == file_gid {
            return true;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::trim)
        };
        let in_group = field("Groups:").is_some_and(|groups| {
            groups
                .split_whitespace()
                .any(|g| g.parse::<u32>() == Ok(file_gid))
        });
        const CAP_FSETID: u32 = 4;
        let capable = field("CapEff:")
            .and_then(|caps| u64::from_str_radix(caps, 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0);
        in_group || capable
    }
}

/// A time to set: a given instant, or now.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Now,
    At { secs: i64, nanos: u32 },
}

/// The changes of one setattr call; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl Overlay {
    /// Attributes of an inode. One whose name is gone (unlinked, or
    /// replaced by a rename) is reached through a file still open on it, as
    /// `fstat` of such a file reaches it on any filesystem; it has no names.
    pub fn getattr(&self, inode: &Arc<Inode>) -> OpResult<Attr> {
        if !inode.is_unlinked() {
            return self.attr_of(inode);
        }
        let Some(open) = self.handles().open_on(inode) else {
            // Opened by the kernel alone (`open=kernel`), or not open.
            let mut attr = self.attr_of(inode)?;
            if inode.kind != FileType::Directory {
                attr.stat.st_nlink = 0;
            }
            return Ok(attr);
        };
        let mut stat = sys::fstat(open.fd().as_fd())?;
        if inode.kind != FileType::Directory {
            stat.st_nlink = 0;
        }
        Ok(self.attr_from(inode, stat, &inode.layers()))
    }

    /// Clears the set-user-id bit, and the set-group-id bit where the group
    /// may execute, as a write, a truncate or a chown by a caller without
    /// CAP_FSETID does on any filesystem: with FUSE_HANDLE_KILLPRIV_V2 the
    /// kernel leaves it to cowfs, whose own calls (as root) would keep the
    /// bits. `now` are its attributes where the caller has them at hand
    /// (they are read otherwise). Answers the new attributes where a bit
    /// was cleared.
    pub fn kill_suidgid(&self, inode: &Arc<Inode>, now: Option<&Attr>) -> OpResult<Option<Attr>> {
        if inode.kind != FileType::RegularFile {
            return Ok(None);
        }
        let mode = match now {
            Some(attr) => attr.stat.st_mode,
            None => self.getattr(inode)?.stat.st_mode,
        } & 0o7777;
        let mut kept = mode & !libc::S_ISUID;
        let group_exec = libc::S_ISGID | libc::S_IXGRP;
        if mode & group_exec == group_exec {
            kept &= !libc::S_ISGID;
        }
        if kept == mode {
            return Ok(None);
        }
        let change = SetAttr {
            mode: Some(kept),
            ..SetAttr::default()
        };
        let attr = self.setattr_by(inode, &change, None, None)?;
        // A write's answer carries no attributes: the kernel's are stale.
        self.attrs_changed(inode.ino);
        Ok(Some(attr))
    }

    pub fn setattr(
        &self,
        inode: &Arc<Inode>,
        change: &SetAttr,
        open_fd: Option<&std::os::fd::OwnedFd>,
    ) -> OpResult<Attr> {
        self.setattr_by(inode, change, open_fd, None)
    }

    /// setattr on behalf of `caller` (`None`: a caller allowed all).
    pub fn setattr_by(
        &self,
        inode: &Arc<Inode>,
        change: &SetAttr,
        open_fd: Option<&std::os::fd::OwnedFd>,
        caller: Option<Caller>,
    ) -> OpResult<Attr> {
        self.writable()?;
        let want = match change.size {
            Some(0) => CopyUp::Truncate,
            Some(_) => CopyUp::Data,
            None => CopyUp::MetaOnly,
        };
        // The answer carries the attributes a copy-up changes; where no
        // answer with them comes (a failure below), the kernel is told.
        let untold = inode.upper().is_none().then_some(AttrsUntold {
            overlay: self,
            ino: inode.ino,
        });
        let upper = self.copy_up_for_answer(inode, want)?;
        // A file open for writing is its upper file: its open file takes
        // these calls as an `O_PATH` fd would, and is at hand (a file just
        // made, as by an untar, has no `O_PATH` fd yet).
        let writer = self.open_writer_of(inode);
        let fd = match &writer {
            Some(open) => open.clone(),
            None => self.real_fd(&upper)?,
        };
        let own = &self.options.ownership;
        let uid = change
            .uid
            .map(|u| own.uids.stored(u).ok_or(Errno::INVAL))
            .transpose()?;
        let gid = change
            .gid
            .map(|g| own.gids.stored(g).ok_or(Errno::INVAL))
            .transpose()?;
        if let Some(xattr) = own.override_xattr {
            // Ownership lives in the override xattr, not in the real inode.
            if uid.is_some() || gid.is_some() || change.mode.is_some() {
                let st = sys::fstat(fd.as_fd())?;
                let current = sys::get_xattr(fd.as_fd(), xattr.name())?
                    .and_then(|v| OverrideStat::parse(&v))
                    .unwrap_or(OverrideStat {
                        uid: st.st_uid,
                        gid: st.st_gid,
                        mode: st.st_mode & 0o7777,
                    });
                let updated = OverrideStat {
                    uid: uid.unwrap_or(current.uid),
                    gid: gid.unwrap_or(current.gid),
                    mode: change.mode.map_or(current.mode, |m| m & 0o7777),
                };
                sys::set_xattr(
                    fd.as_fd(),
                    xattr.name(),
                    &updated.encode(),
                    sys::XattrFlags::empty(),
                )?;
            }
        } else {
            let mut mode = change.mode;
            if (uid.is_some() || gid.is_some())
                && let Some(caller) = caller
                && caller.uid != 0
                && matches!(inode.kind, FileType::RegularFile)
            {
                // chown by a caller outside the file's group drops its
                // set-group-id bit even without group exec (the kernel's
                // setattr_should_drop_sgid); FUSE leaves that case to us, and
                // the real chown, made as the daemon, keeps it.
                let st = sys::fstat(fd.as_fd())?;
                let after = mode.unwrap_or(st.st_mode) & 0o7777;
                if after & libc::S_ISGID != 0 && !caller.may_keep_setgid(st.st_gid) {
                    mode = Some(after & !libc::S_ISGID);
                }
            }
            if uid.is_some() || gid.is_some() {
                sys::chown(fd.as_fd(), uid, gid)?;
            }
            if let Some(mode) = mode
                && inode.kind != FileType::Symlink
            {
                sys::chmod(fd.as_fd(), mode & 0o7777)?;
            }
        }
        if let Some(size) = change.size {
            if inode.kind != FileType::RegularFile {
                return Err(if inode.is_dir() {
                    Errno::ISDIR
                } else {
                    Errno::INVAL
                });
            }
            match open_fd.or(writer.as_deref()) {
                Some(open) => sys::ftruncate(open.as_fd(), size)?,
                None => {
                    let writable = sys::reopen(fd.as_fd(), OFlags::WRONLY)?;
                    sys::ftruncate(writable.as_fd(), size)?;
                }
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let omit = Timespec {
                tv_sec: 0,
                tv_nsec: sys::UTIME_OMIT as _,
            };
            let to_spec = |t: Option<SetTime>| match t {
                None => omit,
                Some(SetTime::Now) => Timespec {
                    tv_sec: 0,
                    tv_nsec: sys::UTIME_NOW as _,
                },
                Some(SetTime::At { secs, nanos }) => Timespec {
                    tv_sec: secs as _,
                    tv_nsec: nanos as _,
                },
            };
            let times = Timestamps {
                last_access: to_spec(change.atime),
                last_modification: to_spec(change.mtime),
            };
            sys::set_times(fd.as_fd(), &times)?;
        }
        let attr = self.attr_of(inode)?;
        if let Some(untold) = untold {
            untold.answered();
        }
        Ok(attr)
    }

    pub fn readlink(&self, inode: &Inode) -> OpResult<Vec<u8>> {
        if inode.kind != FileType::Symlink {
            return Err(Errno::INVAL);
        }
        let top = inode.top().ok_or(Errno::STALE)?;
        let fd = self.real_fd(&top)?;
        sys::readlink(fd.as_fd())
    }

    pub fn getxattr(&self, inode: &Inode, name: &OsStr) -> OpResult<Vec<u8>> {
        if format::is_hidden_xattr(name) {
            return Err(Errno::NODATA);
        }
        if let Some(open) = self.open_writer_of(inode) {
            // A file open for writing is its upper file (the kernel asks for
            // security.capability at each write): read through that file.
            return sys::get_xattr_of_open_file(open.as_fd(), name)?.ok_or(Errno::NODATA);
        }
        let top = inode.top().ok_or(Errno::STALE)?;
        self.xattr_of_ref(&top, name)?.ok_or(Errno::NODATA)
    }

    pub fn listxattr(&self, inode: &Inode) -> OpResult<Vec<u8>> {
        let top = inode.top().ok_or(Errno::STALE)?;
        let fd = self.real_fd(&top)?;
        let list = match sys::list_xattr(fd.as_fd()) {
            Ok(list) => list,
            Err(Errno::NOTSUP) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(format::filter_xattr_list(&list))
    }

    pub fn setxattr(
        &self,
        inode: &Arc<Inode>,
        name: &OsStr,
        value: &[u8],
        flags: sys::XattrFlags,
    ) -> OpResult<()> {
        self.setxattr_by(inode, name, value, flags, None)
    }

    /// setxattr(2) on behalf of `caller` (`None`: a caller allowed all).
    pub fn setxattr_by(
        &self,
        inode: &Arc<Inode>,
        name: &OsStr,
        value: &[u8],
        flags: sys::XattrFlags,
        caller: Option<Caller>,
    ) -> OpResult<()> {
        self.writable()?;
        if format::is_protected_xattr(name) {
            return Err(Errno::PERM);
        }
        let upper = self.copy_up_with(inode, CopyUp::MetaOnly)?;
        let fd = self.real_fd(&upper)?;
        let set = sys::set_xattr(fd.as_fd(), name, value, flags);
        // A dir's default ACL may be what changed (even on failure, for
        // all that is known).
        inode.forget_default_acl();
        set?;
        if name == ACL_ACCESS
            && let Some(caller) = caller
            && self.options.ownership.override_xattr.is_none()
        {
            // The real filesystem updates the mode from the ACL as the
            // daemon, which may keep set-group-id; the kernel clears it
            // when the caller is neither in the file's group nor holds
            // CAP_FSETID (posix_acl_update_mode), as chmod does.
            let st = sys::fstat(fd.as_fd())?;
            if st.st_mode & libc::S_ISGID != 0 && !caller.may_keep_setgid(st.st_gid) {
                sys::chmod(fd.as_fd(), st.st_mode & 0o7777 & !libc::S_ISGID)?;
            }
        }
        Ok(())
    }

    pub fn removexattr(&self, inode: &Arc<Inode>, name: &OsStr) -> OpResult<()> {
        self.writable()?;
        if format::is_hidden_xattr(name) {
            return Err(Errno::NODATA);
        }
        // Nothing to copy up for an xattr the object does not have.
        let top = inode.top().ok_or(Errno::STALE)?;
        if sys::get_xattr(self.real_fd(&top)?.as_fd(), name)?.is_none() {
            return Err(Errno::NODATA);
        }
        let upper = self.copy_up_with(inode, CopyUp::MetaOnly)?;
        let fd = self.real_fd(&upper)?;
        let removed = sys::remove_xattr(fd.as_fd(), name);
        inode.forget_default_acl();
        removed
    }
}

/// An inode copied up for a request whose answer was to carry its new
/// attributes: dropped before that answer was made (an error), it tells
/// the kernel that the attributes it holds are stale.
struct AttrsUntold<'a> {
    overlay: &'a Overlay,
    ino: u64,
}

impl AttrsUntold<'_> {
    /// The answer has them: nothing to tell.
    fn answered(self) {
        std::mem::forget(self);
    }
}

impl Drop for AttrsUntold<'_> {
    fn drop(&mut self) {
        self.overlay.attrs_changed(self.ino);
    }
}
