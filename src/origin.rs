//! Origins: a copied-up object records the lower object it came from in the
//! kernel's `overlay.origin` xattr (a file handle of the lower object), so
//! it keeps the lower object's inode number through renames and remounts.
//! Dirs holding such objects are marked `overlay.impure`, so a listing knows
//! which entries need their origin read for `d_ino`.

use std::os::fd::{AsFd, BorrowedFd};

use crate::error::OpResult;
use crate::format::{self, Origin, XattrNameList};
use crate::layer::LayerId;
use crate::overlay::Overlay;
use crate::sys::{self, Errno, OFlags};

/// What an upper object's origin xattr says.
pub(crate) enum OriginInfo {
    /// Not a copy-up.
    None,
    /// A copy-up whose lower object can't be found from the xattr (empty
    /// value, foreign format, or no privilege to decode handles).
    Unknown,
    /// A copy-up of the lower object that has this mount inode number and
    /// this many names in its layer.
    Ino { ino: u64, lower_nlink: u64 },
}

impl Overlay {
    /// The origin xattr value for a copy of `source` (in lower `layer`): a
    /// file handle when the lower filesystem can make one, else the empty
    /// "origin unknown" value the kernel also writes.
    pub(crate) fn origin_value(&self, source: BorrowedFd<'_>, layer: LayerId) -> Vec<u8> {
        let Ok(handle) = sys::name_to_handle(source) else {
            return Vec::new();
        };
        let Ok(handle_type) = u8::try_from(handle.handle_type) else {
            return Vec::new();
        };
        if handle.bytes.len() > 200 {
            return Vec::new();
        }
        Origin {
            uuid: self.layer_stack().get(layer).uuid.unwrap_or([0; 16]),
            handle_type,
            handle: handle.bytes,
        }
        .encode()
    }

    /// Reads an upper object's origin and finds the inode number it keeps.
    pub(crate) fn origin_info(&self, upper: BorrowedFd<'_>) -> OpResult<OriginInfo> {
        self.origin_info_of(upper, None)
    }

    /// `origin_info` of an object whose xattr names are known.
    pub(crate) fn origin_info_marked(
        &self,
        upper: BorrowedFd<'_>,
        marks: &XattrNameList,
    ) -> OpResult<OriginInfo> {
        self.origin_info_of(upper, Some(marks))
    }

    fn origin_info_of(
        &self,
        upper: BorrowedFd<'_>,
        marks: Option<&XattrNameList>,
    ) -> OpResult<OriginInfo> {
        for ns in format::READ_NAMESPACES {
            if marks.is_some_and(|m| !m.contains(ns.origin())) {
                continue;
            }
            let value = match sys::get_xattr(upper, ns.origin()) {
                Ok(Some(value)) => value,
                Ok(None) | Err(Errno::NOTSUP) | Err(Errno::PERM) => continue,
                Err(e) => return Err(e),
            };
            let Some(origin) = Origin::decode(&value) else {
                return Ok(OriginInfo::Unknown);
            };
            let handle = sys::FileHandleBytes {
                handle_type: i32::from(origin.handle_type),
                bytes: origin.handle,
            };
            let candidates = self
                .layer_stack()
                .lowers()
                .iter()
                .filter(|l| origin.uuid == [0; 16] || l.uuid == Some(origin.uuid));
            let mut tried_devs = Vec::new();
            for layer in candidates {
                if tried_devs.contains(&layer.dev) {
                    continue;
                }
                tried_devs.push(layer.dev);
                let Some(mount_fd) = layer.handle_root() else {
                    continue;
                };
                if let Ok(found) = sys::open_by_handle(mount_fd, &handle, OFlags::PATH) {
                    let st = sys::fstat(found.as_fd())?;
                    if let Some(ino) = self.layer_stack().map_ino_on_dev(st.st_dev, st.st_ino) {
                        return Ok(OriginInfo::Ino {
                            ino,
                            lower_nlink: sys::nlink(&st),
                        });
                    }
                }
            }
            return Ok(OriginInfo::Unknown);
        }
        Ok(OriginInfo::None)
    }

    /// Marks an upper dir as holding copied-up or moved objects.
    pub(crate) fn mark_impure(&self, dir: BorrowedFd<'_>) -> OpResult<()> {
        let Some(ns) = self.xattr_ns() else {
            return Ok(());
        };
        if sys::xattr_first_byte(dir, ns.impure())? == Some(b'y') {
            return Ok(());
        }
        sys::set_xattr(dir, ns.impure(), b"y", sys::XattrFlags::empty())
    }

    pub(crate) fn is_impure(&self, dir: BorrowedFd<'_>) -> OpResult<bool> {
        for ns in format::READ_NAMESPACES {
            if sys::xattr_first_byte(dir, ns.impure())? == Some(b'y') {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
