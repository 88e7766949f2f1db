//! FUSE passthrough (Linux 6.9+, root): the kernel reads and writes an open
//! file's real file directly, with no round trip through the daemon.
//!
//! The kernel holds an inode in one I/O mode at a time: while one open of
//! it passes through to a backing file, every open must pass through to
//! that same file, and while one open uses the page cache, none may pass
//! through. A lower file in a writable mount can be copied up while open,
//! which would need a second backing file, so only files that stay where
//! they are pass through: upper files, and any file of a read-only mount.
//! All other opens of such an inode use the page cache until it is closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::layer::RealKey;
use crate::sys::Backing as BackingId;

/// The I/O mode an inode is in while it has open files.
enum InodeMode {
    /// Opens without passthrough, counted.
    Cached(u32),
    Passthrough(RealKey, Weak<BackingId>),
}

#[derive(Default)]
pub(super) struct Backings {
    enabled: AtomicBool,
    by_inode: DashMap<u64, InodeMode>,
    /// The backing each open file holds (`None`: a cached open).
    by_handle: DashMap<u64, Option<Arc<BackingId>>>,
}

/// How an open should be answered.
pub(super) enum OpenMode {
    Passthrough(Arc<BackingId>),
    Cached,
    /// Refused (ETXTBSY): a write open of a file whose lower data open
    /// files still pass through to (`passthrough=all`); the kernel holds one
    /// backing file an inode.
    Busy,
}

impl Backings {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Decides how handle `fh` of inode `ino`, open on real object `key`,
    /// is answered. `stays` says the real object may pass through (it can't
    /// be replaced by a copy-up while open, or `passthrough=all` takes that
    /// risk for lower files open for reading); `writes`, that the open may
    /// change the data; `open_backing` registers its fd with the kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn for_open(
        &self,
        ino: u64,
        key: RealKey,
        (stays, writes): (bool, bool),
        fh: u64,
        open_backing: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> OpenMode {
        let mode = match self.by_inode.entry(ino) {
            Entry::Occupied(mut slot) => match slot.get_mut() {
                InodeMode::Cached(count) => {
                    *count += 1;
                    OpenMode::Cached
                }
                InodeMode::Passthrough(held, weak) => match weak.upgrade() {
                    Some(id) if *held == key => OpenMode::Passthrough(id),
                    // Opens still read the lower file a copy-up replaced
                    // (`passthrough=all`). The kernel keeps one backing
                    // file an inode: a reader shares theirs, which holds
                    // the same data, since no write open is let in while
                    // they last; a writer is refused.
                    Some(id) if !writes => OpenMode::Passthrough(id),
                    Some(_) => return OpenMode::Busy,
                    None => {
                        let mode = self.start(key, stays, open_backing);
                        slot.insert(Self::inode_mode(key, &mode));
                        mode
                    }
                },
            },
            Entry::Vacant(slot) => {
                let mode = self.start(key, stays, open_backing);
                slot.insert(Self::inode_mode(key, &mode));
                mode
            }
        };
        let held = match &mode {
            OpenMode::Passthrough(id) => Some(id.clone()),
            OpenMode::Cached | OpenMode::Busy => None,
        };
        self.by_handle.insert(fh, held);
        mode
    }

    fn start(
        &self,
        key: RealKey,
        stays: bool,
        open_backing: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> OpenMode {
        if !self.is_enabled() || !stays {
            return OpenMode::Cached;
        }
        match open_backing() {
            Ok(id) => OpenMode::Passthrough(Arc::new(id)),
            Err(e) => {
                tracing::warn!(%e, ?key, "passthrough unavailable for this file");
                OpenMode::Cached
            }
        }
    }

    fn inode_mode(key: RealKey, mode: &OpenMode) -> InodeMode {
        match mode {
            OpenMode::Passthrough(id) => InodeMode::Passthrough(key, Arc::downgrade(id)),
            OpenMode::Cached | OpenMode::Busy => InodeMode::Cached(1),
        }
    }

    /// The kernel closed handle `fh` of inode `ino`. Says whether the
    /// handle passed through.
    pub fn release(&self, ino: u64, fh: u64) -> bool {
        let Some((_, held)) = self.by_handle.remove(&fh) else {
            return false;
        };
        let passed_through = held.is_some();
        drop(held);
        self.by_inode.remove_if_mut(&ino, |_, mode| match mode {
            InodeMode::Cached(count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            InodeMode::Passthrough(_, weak) => weak.strong_count() == 0,
        });
        passed_through
    }
}
