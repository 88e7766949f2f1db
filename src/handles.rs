//! Open files, by the handle number the kernel holds.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::inode::Inode;
use crate::layer::RealKey;

pub struct FileHandle {
    pub inode: Arc<Inode>,
    /// The real open file. A read-only open of a lower file is switched to
    /// the upper copy once one exists, so it sees what writers wrote.
    pub fd: RwLock<Arc<OwnedFd>>,
    pub on_upper: AtomicBool,
    pub writable: bool,
    /// The real object opened, so that all opens of one inode on one real
    /// file can share a passthrough backing.
    pub source: RealKey,
}

/// What an open gives the FUSE edge: the handle number, the real file and
/// which real object it is.
pub struct Opened {
    pub fh: u64,
    pub fd: Arc<OwnedFd>,
    pub source: RealKey,
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
    /// Open writable handles per inode number; the count of all of them
    /// lets the common case (no writer at all) skip the map.
    writers: DashMap<u64, Vec<Arc<FileHandle>>>,
    writer_count: AtomicU64,
}

impl Handles {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add_file(&self, handle: FileHandle) -> Opened {
        let fh = self.next_id();
        let opened = Opened {
            fh,
            fd: handle.fd(),
            source: handle.source,
        };
        let handle = Arc::new(handle);
        if handle.writable {
            self.writers
                .entry(handle.inode.ino)
                .or_default()
                .push(handle.clone());
            self.writer_count.fetch_add(1, Ordering::Relaxed);
        }
        self.files.insert(fh, handle);
        opened
    }

    /// Whether inode `ino` has a handle open for writing.
    pub fn has_writers(&self, ino: u64) -> bool {
        self.writer_count.load(Ordering::Relaxed) != 0 && self.writers.contains_key(&ino)
    }

    /// The real file of a handle open for writing on `inode`, if any: its
    /// upper file, open for I/O, which calls that do not take an `O_PATH` fd
    /// can use directly.
    pub fn writer_fd(&self, inode: &Inode) -> Option<Arc<OwnedFd>> {
        if self.writer_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let writers = self.writers.get(&inode.ino)?;
        writers
            .iter()
            .find(|h| std::ptr::eq(Arc::as_ptr(&h.inode), inode))
            .map(|h| h.fd())
    }

    /// How many files are open.
    pub fn open_count(&self) -> usize {
        self.files.len()
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
        let (_, handle) = self.files.remove(&id)?;
        if handle.writable {
            self.writers.remove_if_mut(&handle.inode.ino, |_, open| {
                open.retain(|h| !Arc::ptr_eq(h, &handle));
                open.is_empty()
            });
            self.writer_count.fetch_sub(1, Ordering::Relaxed);
        }
        Some(handle)
    }
}
