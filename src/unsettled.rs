//! Copy-ups answered before their data is on disk.
//!
//! A chmod, chown, utimes or xattr change of a lower file copies it up,
//! and the copy's data must be on disk before a name that a power cut could
//! leave behind shows it. Waiting for the device on every such change made
//! a `chmod -R` of lower files wait once per file. Such a copy holds exactly
//! its lower file's data, so it can be put in place at once under the
//! kernel's metacopy mark, which says "the data is the lower file's": true
//! and durable from the first moment. Its own data goes on disk behind the
//! request's back, and only then is the mark taken off (see
//! `Overlay::settle_copy`). A crash or a power cut in between leaves a valid
//! metacopy file that reads its lower data.
//!
//! This table holds those copies until they are settled: the inode and the
//! fd their data was written through (writeback is waited for on it).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::inode::Inode;

/// One copy placed under a metacopy mark whose own data is still on its
/// way to the disk.
pub struct UnsettledCopy {
    pub inode: Arc<Inode>,
    /// The fd the copy's data was written through.
    pub written: OwnedFd,
}

#[derive(Default)]
pub struct UnsettledCopies {
    by_ino: DashMap<u64, UnsettledCopy>,
    /// How many there are: the hot path asks before every lookup.
    count: AtomicUsize,
}

impl UnsettledCopies {
    pub fn insert(&self, copy: UnsettledCopy) {
        if self.by_ino.insert(copy.inode.ino, copy).is_none() {
            self.count.fetch_add(1, Ordering::Release);
        }
    }

    /// Takes the copy of inode `ino` out, for the one caller that settles it.
    pub fn take(&self, ino: u64) -> Option<UnsettledCopy> {
        if self.is_empty() {
            return None;
        }
        let (_, copy) = self.by_ino.remove(&ino)?;
        self.count.fetch_sub(1, Ordering::Release);
        Some(copy)
    }

    pub fn contains(&self, ino: u64) -> bool {
        !self.is_empty() && self.by_ino.contains_key(&ino)
    }

    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The inode of the copy of `ino`, if it is not settled yet.
    pub fn inode(&self, ino: u64) -> Option<Arc<Inode>> {
        if self.is_empty() {
            return None;
        }
        self.by_ino.get(&ino).map(|copy| copy.inode.clone())
    }

    /// The inode numbers of all copies not yet settled.
    pub fn inos(&self) -> Vec<u64> {
        self.by_ino.iter().map(|entry| *entry.key()).collect()
    }
}
