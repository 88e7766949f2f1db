//! One way to answer each kind of request: a result of the overlay's goes
//! back to the kernel as the reply it needs, an error as its errno.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Errno, OpResult};
use crate::inode::Inode;
use crate::overlay::Attr;
use crate::sys::StatVfs;

use super::convert::{absent_entry_attr, file_attr};
use super::wire::reply::{
    ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyStatfs, ReplyWrite, ReplyXattr,
    Statfs,
};

/// A reply to one kind of request.
pub(super) trait Answer: Sized {
    /// What the overlay gives for this kind of request.
    type Value;

    fn ok(self, ttl: &Duration, value: Self::Value);

    fn fail(self, e: Errno);

    fn answer(self, ttl: &Duration, result: OpResult<Self::Value>) {
        match result {
            Ok(value) => self.ok(ttl, value),
            Err(e) => self.fail(e),
        }
    }
}

impl Answer for ReplyEmpty {
    type Value = ();

    fn ok(self, _ttl: &Duration, (): ()) {
        ReplyEmpty::ok(self);
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl Answer for ReplyAttr {
    type Value = Attr;

    fn ok(self, ttl: &Duration, attr: Attr) {
        self.attr(ttl, &file_attr(&attr));
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

/// A name found or made: the kernel takes a reference on the inode, named by
/// its number and generation.
impl Answer for ReplyEntry {
    type Value = (Arc<Inode>, Attr);

    fn ok(self, ttl: &Duration, (inode, attr): (Arc<Inode>, Attr)) {
        self.entry(ttl, &file_attr(&attr), inode.generation);
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

/// The answer to a lookup: a missing name is cached by the kernel as a
/// negative dentry (node id 0) for the entry timeout; every create of the
/// name goes through the kernel, which drops it then.
pub(super) fn answer_lookup(
    reply: ReplyEntry,
    ttl: &Duration,
    result: OpResult<(Arc<Inode>, Attr)>,
) {
    match result {
        Err(Errno::NOENT) => reply.entry(ttl, &absent_entry_attr(), 0),
        result => reply.answer(ttl, result),
    }
}

impl Answer for ReplyData {
    type Value = Vec<u8>;

    fn ok(self, _ttl: &Duration, data: Vec<u8>) {
        self.data(&data);
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl Answer for ReplyWrite {
    type Value = usize;

    fn ok(self, _ttl: &Duration, written: usize) {
        // A single request moves at most max_write bytes, far below 4 GiB.
        self.written(u32::try_from(written).unwrap_or(u32::MAX));
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl Answer for ReplyLseek {
    type Value = i64;

    fn ok(self, _ttl: &Duration, offset: i64) {
        self.offset(offset);
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

impl Answer for ReplyStatfs {
    type Value = StatVfs;

    fn ok(self, _ttl: &Duration, st: StatVfs) {
        self.statfs(&Statfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
        });
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}

/// An xattr value or list, and the buffer size the caller gave (0: it asks
/// for the size only).
pub(super) struct XattrValue {
    pub asked: u32,
    pub value: Vec<u8>,
}

impl Answer for ReplyXattr {
    type Value = XattrValue;

    fn ok(self, _ttl: &Duration, XattrValue { asked, value }: XattrValue) {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        if asked == 0 {
            self.size(len);
        } else if len > asked {
            self.error(Errno::RANGE);
        } else {
            self.data(&value);
        }
    }

    fn fail(self, e: Errno) {
        self.error(e);
    }
}
