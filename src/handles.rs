//! Open files, by the handle number the kernel holds.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::inode::Inode;
use crate::layer::LayerId;

pub struct FileHandle {
    pub inode: Arc<Inode>,
    /// The real open file. A read-only open of a lower file is switched to
    /// the upper copy once one exists, so it sees what writers wrote.
    pub fd: RwLock<Arc<OwnedFd>>,
    pub on_upper: AtomicBool,
    pub writable: bool,
    /// The real object opened (layer, real inode number), so that all opens
    /// of one inode on one real file can share a passthrough backing.
    pub source: (LayerId, u64),
}

impl FileHandle {
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().clone()
    }
}

#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    files: DashMap<u64, Arc<FileHandle>>,
}

impl Handles {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add_file(&self, handle: FileHandle) -> u64 {
        let id = self.next_id();
        self.files.insert(id, Arc::new(handle));
        id
    }

    pub fn file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files.get(&id).map(|h| h.clone())
    }

    /// A file open on `inode`, if any (a scan: only for inodes that have
    /// lost their names, which only open files still reach).
    pub fn open_on(&self, inode: &Arc<Inode>) -> Option<Arc<FileHandle>> {
        self.files
            .iter()
            .find(|h| Arc::ptr_eq(&h.inode, inode))
            .map(|h| h.clone())
    }

    pub fn remove_file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files.remove(&id).map(|(_, h)| h)
    }
}
