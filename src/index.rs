//! The index: hard links of lower files stay one inode.
//!
//! A lower file with several names is copied up once, into the work dir's
//! `index` dir under the hex of its origin handle (the kernel's index=on
//! layout), and each name that is copied up is a hard link to that copy.
//! Names not yet copied up find the copy through the index, so a write
//! through one name shows through all of them, before and after a remount.
//! The count of names is kept as the kernel keeps it, in `overlay.nlink`
//! relative to the lower file's count ("L+N").

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::copyup::CopyUp;
use crate::error::OpResult;
use crate::format;
use crate::inode::{Inode, Layers, Location, RealRef};
use crate::layer::{LayerId, UPPER};
use crate::overlay::Overlay;
use crate::sys::{self, Errno, Stat};
use crate::workdir::WorkDir;

/// The index entry of one lower file: its name and its origin value.
pub(crate) struct IndexKey {
    name: OsString,
}

fn hex(bytes: &[u8]) -> OsString {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    OsString::from(out)
}

/// Parses an `overlay.nlink` value, "L+N" or "L-N"; other forms are not ours.
fn parse_lower_relative(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    text.strip_prefix('L')?.parse().ok()
}

impl Overlay {
    /// The index key of a lower file, when the index can hold it: a
    /// writable mount with overlay xattrs and a lower fs that makes handles.
    pub(crate) fn index_key(&self, lower: BorrowedFd<'_>, layer: LayerId) -> Option<IndexKey> {
        self.writable().ok()?;
        self.xattr_ns()?;
        let origin = self.origin_value(lower, layer);
        if origin.is_empty() {
            return None;
        }
        Some(IndexKey { name: hex(&origin) })
    }

    /// The shared upper copy of a lower file, if one was made.
    pub(crate) fn indexed_upper(&self, key: &IndexKey) -> OpResult<Option<(RealRef, Stat)>> {
        let index = self.writable()?.index_fd();
        Ok(sys::stat_at(index, &key.name)?.map(|st| {
            let upper = RealRef {
                layer: UPPER,
                real_ino: st.st_ino,
                loc: Location::Index(Arc::from(key.name.as_os_str())),
            };
            (upper, st)
        }))
    }

    /// Makes the shared copy in the index unless it is there already.
    pub(crate) fn ensure_indexed(
        &self,
        work: &WorkDir,
        key: &IndexKey,
        source: BorrowedFd<'_>,
        layer: LayerId,
        st: &Stat,
    ) -> OpResult<()> {
        if self.indexed_upper(key)?.is_some() {
            return Ok(());
        }
        let mut temp = work.temp();
        let writing_back =
            self.build_copy(work, temp.name(), source, layer, st, CopyUp::Data, true)?;
        let copy = sys::open_path(work.fd(), temp.name())?;
        if let Some(ns) = self.xattr_ns() {
            // Every lower name shows the copy: the count is the lower one.
            sys::set_xattr(copy.as_fd(), ns.nlink(), b"L+0", sys::XattrFlags::empty())?;
        }
        if let Some(fd) = writing_back {
            self.finish_durable(fd.as_fd())?;
        }
        match sys::rename(
            work.fd(),
            temp.name(),
            work.index_fd(),
            &key.name,
            sys::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                temp.placed();
                Ok(())
            }
            // Another name's copy-up won the race: use that one.
            Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An `O_PATH` fd of the shared copy.
    pub(crate) fn indexed_fd(&self, key: &IndexKey) -> OpResult<std::os::fd::OwnedFd> {
        sys::open_path(self.writable()?.index_fd(), &key.name)
    }

    /// Gives the shared copy the name `name` in the upper dir `dir`.
    pub(crate) fn link_from_index(
        &self,
        key: &IndexKey,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> OpResult<()> {
        let index = self.writable()?.index_fd();
        let entry = sys::open_path(index, &key.name)?;
        sys::link_fd(entry.as_fd(), dir, name)
    }

    /// For a lower file found without an upper copy at its name: the shared
    /// copy another of its names made, if any.
    pub(crate) fn find_indexed(
        &self,
        layers: &Layers,
        st: &Stat,
    ) -> OpResult<Option<(RealRef, Stat)>> {
        if self.is_read_only()
            || st.st_nlink <= 1
            || sys::file_type(st) != sys::FileType::RegularFile
        {
            return Ok(None);
        }
        let Some(lower) = layers.lowers.first() else {
            return Ok(None);
        };
        let fd = self.real_fd(lower)?;
        match self.index_key(fd.as_fd(), lower.layer) {
            Some(key) => self.indexed_upper(&key),
            None => Ok(None),
        }
    }

    /// The link count of an indexed file, from the lower file's count and
    /// the recorded difference; `None` for files that are not indexed.
    pub(crate) fn indexed_nlink(&self, layers: &Layers) -> Option<u64> {
        let upper = layers.upper.as_ref()?;
        let upper_fd = self.real_fd(upper).ok()?;
        let delta = format::READ_NAMESPACES.iter().find_map(|ns| {
            sys::get_xattr(upper_fd.as_fd(), ns.nlink())
                .ok()
                .flatten()
                .and_then(|v| parse_lower_relative(&v))
        })?;
        u64::try_from(layers.origin_nlink as i64 + delta).ok()
    }

    /// A name of an indexed file was added (`+1`) or removed (`-1`).
    pub(crate) fn adjust_indexed_nlink(&self, inode: &Inode, change: i64) -> OpResult<()> {
        let (Some(ns), Some(upper)) = (self.xattr_ns(), inode.upper()) else {
            return Ok(());
        };
        let fd = self.real_fd(&upper)?;
        let Some(delta) =
            sys::get_xattr(fd.as_fd(), ns.nlink())?.and_then(|v| parse_lower_relative(&v))
        else {
            return Ok(());
        };
        let value = format!("L{:+}", delta + change);
        sys::set_xattr(
            fd.as_fd(),
            ns.nlink(),
            value.as_bytes(),
            sys::XattrFlags::empty(),
        )
    }

    /// After the name an indexed inode's upper copy was reached by is gone,
    /// reach it through the index instead.
    pub(crate) fn reattach_to_index(&self, inode: &Inode) -> OpResult<()> {
        let layers = inode.layers();
        let (Some(upper), Some(lower)) = (layers.upper.as_ref(), layers.lowers.first()) else {
            return Ok(());
        };
        let lower_fd = self.real_fd(lower)?;
        let Some(key) = self.index_key(lower_fd.as_fd(), lower.layer) else {
            return Ok(());
        };
        if let Some((indexed, _)) = self.indexed_upper(&key)?
            && indexed.real_ino == upper.real_ino
        {
            inode.set_upper(indexed, false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_the_hex_of_the_origin() {
        assert_eq!(hex(&[0x00, 0xfb, 0x1d, 0xab]), OsString::from("00fb1dab"));
    }

    #[test]
    fn nlink_values_are_lower_relative() {
        assert_eq!(parse_lower_relative(b"L+0"), Some(0));
        assert_eq!(parse_lower_relative(b"L-2"), Some(-2));
        assert_eq!(parse_lower_relative(b"L+11"), Some(11));
        assert_eq!(parse_lower_relative(b"U+1"), None);
        assert_eq!(parse_lower_relative(b""), None);
        assert_eq!(format!("L{:+}", -1), "L-1");
    }
}
