//! The inode table: what the kernel knows as a FUSE inode, the real objects
//! in the layers behind it, and the lookup counts that decide its lifetime.
//!
//! An inode's number is the number the mount reports as `st_ino` (derived
//! from its lowest-layer origin, see `layer::LayerStack::map_ino`), so it does
//! not change when the object is copied up, and two names of one lower
//! object are one inode. The table is a sharded map (dashmap); there is no
//! lock around a request as a whole.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::{Mutex, RwLock};

use crate::layer::{LayerId, UPPER};
use crate::sys::FileType;

/// The FUSE root inode number.
pub const ROOT_INO: u64 = 1;

/// Where a real object sits in its layer, so it can be opened again.
#[derive(Clone)]
pub enum Location {
    /// The layer's root dir.
    Root,
    /// `name` inside the dir that `parent` has in the same layer.
    Child {
        parent: Arc<Inode>,
        name: Arc<OsStr>,
    },
    /// A path from the layer root: the lower dirs of a renamed
    /// (redirected) dir, which no overlay inode leads to.
    Path(Arc<[OsString]>),
    /// An entry of the work dir's index (upper layer only): the shared
    /// upper copy of a lower file with several names.
    Index(Arc<OsStr>),
}

/// One real object behind an overlay inode. `real_ino` lets a reopen check
/// that it found the same object.
#[derive(Clone)]
pub struct RealRef {
    pub layer: LayerId,
    pub real_ino: u64,
    pub loc: Location,
}

impl RealRef {
    pub fn is_upper(&self) -> bool {
        self.layer == UPPER
    }

    /// The overlay dir this object was found in, if it was found by name.
    pub fn parent(&self) -> Option<&Arc<Inode>> {
        match &self.loc {
            Location::Child { parent, .. } => Some(parent),
            _ => None,
        }
    }

    pub fn name(&self) -> Option<&Arc<OsStr>> {
        match &self.loc {
            Location::Child { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// The real objects behind an inode. For a dir, `lowers` are all the lower
/// dirs merged into it (top first); for anything else at most one.
#[derive(Clone, Default)]
pub struct Layers {
    pub upper: Option<RealRef>,
    pub lowers: Vec<RealRef>,
    /// The upper copy holds metadata only; the data is still in `lowers[0]`.
    pub metacopy: bool,
    /// For a copy-up of a lower file with several names (indexed): how
    /// many names the lower file has; 0 otherwise.
    pub origin_nlink: u64,
}

impl Layers {
    /// The object that answers for metadata: the upper copy if there is one.
    pub fn top(&self) -> Option<&RealRef> {
        self.upper.as_ref().or_else(|| self.lowers.first())
    }

    /// The object that holds the data.
    pub fn data(&self) -> Option<&RealRef> {
        if self.metacopy {
            self.lowers.first()
        } else {
            self.top()
        }
    }

    pub fn in_layer(&self, layer: LayerId) -> Option<&RealRef> {
        if layer == UPPER {
            self.upper.as_ref()
        } else {
            self.lowers.iter().find(|r| r.layer == layer)
        }
    }
}

pub struct Inode {
    pub ino: u64,
    pub kind: FileType,
    lookups: AtomicU64,
    layers: RwLock<Layers>,
    /// Serialises copy-up of this inode, so concurrent writers copy once.
    pub copy_up_lock: Mutex<()>,
    /// Serialises changes to the names inside this dir (like i_rwsem).
    pub dir_lock: Mutex<()>,
    /// Set once the last name of the inode is gone.
    unlinked: AtomicBool,
    /// For a dir: bumped after every change to its names, so a listing
    /// taken at one version is known to be current while it stays.
    names_version: AtomicU64,
    /// For a dir: its upper dir is known to be marked impure (a mark is
    /// never taken away, so this is never reset).
    known_impure: AtomicBool,
    /// For a merged dir: its link count, once counted (0: not yet). Every
    /// change to its subdirs goes through this mount, which resets it.
    merged_nlink: AtomicU32,
}

impl Inode {
    pub fn new(ino: u64, kind: FileType, layers: Layers) -> Inode {
        Inode {
            ino,
            kind,
            lookups: AtomicU64::new(0),
            layers: RwLock::new(layers),
            copy_up_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            unlinked: AtomicBool::new(false),
            known_impure: AtomicBool::new(false),
            names_version: AtomicU64::new(0),
            merged_nlink: AtomicU32::new(0),
        }
    }

    /// Takes the name lock of this dir for a change to its names.
    pub fn lock_names(&self) -> NamesGuard<'_> {
        NamesGuard {
            _lock: self.dir_lock.lock(),
            version: &self.names_version,
        }
    }

    pub fn names_version(&self) -> u64 {
        self.names_version.load(Ordering::Acquire)
    }

    pub fn known_impure(&self) -> bool {
        self.known_impure.load(Ordering::Relaxed)
    }

    pub fn set_known_impure(&self) {
        self.known_impure.store(true, Ordering::Relaxed);
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn layers(&self) -> Layers {
        self.layers.read().clone()
    }

    pub fn upper(&self) -> Option<RealRef> {
        self.layers.read().upper.clone()
    }

    pub fn top(&self) -> Option<RealRef> {
        self.layers.read().top().cloned()
    }

    pub fn in_layer(&self, layer: LayerId) -> Option<RealRef> {
        self.layers.read().in_layer(layer).cloned()
    }

    pub fn has_upper(&self) -> bool {
        self.layers.read().upper.is_some()
    }

    pub fn set_upper(&self, upper: RealRef, metacopy: bool) {
        let mut layers = self.layers.write();
        layers.upper = Some(upper);
        layers.metacopy = metacopy;
    }

    pub fn set_origin_nlink(&self, nlink: u64) {
        self.layers.write().origin_nlink = nlink;
    }

    pub fn is_metacopy(&self) -> bool {
        self.layers.read().metacopy
    }

    /// The data copy-up of a metacopy file is done.
    pub fn clear_metacopy(&self) {
        self.layers.write().metacopy = false;
    }

    pub fn data(&self) -> Option<RealRef> {
        self.layers.read().data().cloned()
    }

    /// After a rename: the upper object now sits elsewhere.
    pub fn move_upper(&self, parent: Arc<Inode>, name: Arc<OsStr>) {
        if let Some(upper) = self.layers.write().upper.as_mut() {
            upper.loc = Location::Child { parent, name };
        }
    }

    /// Brings the inode up to date with a fresh lookup of one of its names.
    /// A lookup that found no upper copy never undoes a copy-up that happened
    /// through another name of the same lower object.
    fn refresh(&self, found: Layers) {
        let mut layers = self.layers.write();
        if found.upper.is_some() || layers.upper.is_none() {
            *layers = found;
        }
        self.unlinked.store(false, Ordering::Relaxed);
    }

    pub fn cached_nlink(&self) -> Option<u32> {
        match self.merged_nlink.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    pub fn cache_nlink(&self, nlink: u32) {
        self.merged_nlink.store(nlink, Ordering::Relaxed);
    }

    /// Its subdirs changed in a way too tangled to follow: count again.
    pub fn forget_nlink(&self) {
        self.merged_nlink.store(0, Ordering::Relaxed);
    }

    /// One subdir more (`+1`) or fewer (`-1`), if the count is known.
    pub fn adjust_nlink(&self, delta: i32) {
        let _ = self
            .merged_nlink
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n != 0).then(|| n.saturating_add_signed(delta).max(2))
            });
    }

    pub fn mark_unlinked(&self) {
        self.unlinked.store(true, Ordering::Relaxed);
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(Ordering::Relaxed)
    }

    pub fn lookup_count(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

/// A table slot. Once the kernel forgets an inode the table keeps only a
/// weak reference: children and open handles may still hold the inode, and
/// a new lookup must find that same object rather than a twin.
enum Slot {
    Known(Arc<Inode>),
    Forgotten(Weak<Inode>),
}

/// The name lock of a dir, held for a change to its names; the names
/// version moves on when it is let go, after the change.
pub struct NamesGuard<'a> {
    _lock: parking_lot::MutexGuard<'a, ()>,
    version: &'a AtomicU64,
}

impl Drop for NamesGuard<'_> {
    fn drop(&mut self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

pub struct InodeTable {
    map: DashMap<u64, Slot>,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> InodeTable {
        InodeTable {
            map: DashMap::with_shard_amount(64),
        }
    }

    /// The root is looked up once and never forgotten.
    pub fn insert_root(&self, root: Arc<Inode>) {
        root.lookups.store(1, Ordering::Relaxed);
        self.map.insert(ROOT_INO, Slot::Known(root));
    }

    /// An inode the kernel knows.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        match self.map.get(&ino)?.value() {
            Slot::Known(inode) => Some(inode.clone()),
            Slot::Forgotten(weak) => weak.upgrade(),
        }
    }

    /// Records one more kernel reference to the object a lookup found, and
    /// returns the table's inode for it.
    pub fn lookup(&self, ino: u64, kind: FileType, found: Layers) -> Arc<Inode> {
        let inode = match self.map.entry(ino) {
            Entry::Occupied(mut slot) => {
                let existing = match slot.get() {
                    Slot::Known(inode) => Some(inode.clone()),
                    Slot::Forgotten(weak) => weak.upgrade(),
                };
                match existing {
                    Some(inode) if inode.kind == kind => {
                        inode.refresh(found);
                        slot.insert(Slot::Known(inode.clone()));
                        inode
                    }
                    other => {
                        // A new object reusing the number of one that is gone.
                        let fresh = Arc::new(Inode::new(ino, kind, found));
                        if let Some(old) = other {
                            fresh.lookups.store(old.lookup_count(), Ordering::Relaxed);
                        }
                        slot.insert(Slot::Known(fresh.clone()));
                        fresh
                    }
                }
            }
            Entry::Vacant(slot) => {
                let fresh = Arc::new(Inode::new(ino, kind, found));
                slot.insert(Slot::Known(fresh.clone()));
                fresh
            }
        };
        inode.lookups.fetch_add(1, Ordering::Relaxed);
        inode
    }

    /// One more kernel reference to an inode already in the table (link).
    pub fn add_lookup(&self, inode: &Arc<Inode>) {
        match self.map.entry(inode.ino) {
            Entry::Occupied(mut slot) => {
                slot.insert(Slot::Known(inode.clone()));
            }
            Entry::Vacant(slot) => {
                slot.insert(Slot::Known(inode.clone()));
            }
        }
        inode.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// The kernel dropped `count` references.
    pub fn forget(&self, ino: u64, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Entry::Occupied(mut slot) = self.map.entry(ino) {
            let Slot::Known(inode) = slot.get() else {
                return;
            };
            let before = inode
                .lookups
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(count))
                })
                .unwrap_or(0);
            if before > count {
                return;
            }
            if Arc::strong_count(inode) == 1 {
                slot.remove();
            } else {
                let weak = Arc::downgrade(inode);
                slot.insert(Slot::Forgotten(weak));
            }
        }
    }

    /// Drops slots whose inode is gone altogether.
    pub fn sweep(&self) {
        self.map
            .retain(|_, slot| !matches!(slot, Slot::Forgotten(weak) if weak.strong_count() == 0));
    }

    /// Number of slots, including those of forgotten inodes not yet swept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Gives back the room of removed slots.
    pub fn shrink(&self) {
        self.map.shrink_to_fit();
    }

    /// Number of inodes the kernel holds references to.
    pub fn known_count(&self) -> usize {
        self.map
            .iter()
            .filter(|slot| matches!(slot.value(), Slot::Known(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower_ref(ino: u64) -> Layers {
        Layers {
            upper: None,
            lowers: vec![RealRef {
                layer: 1,
                real_ino: ino,
                loc: Location::Root,
            }],
            metacopy: false,
            origin_nlink: 0,
        }
    }

    #[test]
    fn lookups_and_forgets_balance() {
        let table = InodeTable::new();
        let a = table.lookup(10, FileType::RegularFile, lower_ref(10));
        let b = table.lookup(10, FileType::RegularFile, lower_ref(10));
        assert!(Arc::ptr_eq(&a, &b), "one inode per number");
        assert_eq!(a.lookup_count(), 2);
        drop(b);
        table.forget(10, 1);
        assert!(table.get(10).is_some());
        table.forget(10, 1);
        assert_eq!(table.known_count(), 0);
        // Still referenced here, so a new lookup finds the same object.
        let c = table.lookup(10, FileType::RegularFile, lower_ref(10));
        assert!(Arc::ptr_eq(&a, &c));
        drop((a, c));
        table.forget(10, 1);
        table.sweep();
        assert!(table.get(10).is_none());
    }

    #[test]
    fn a_lookup_without_upper_keeps_a_copy_up() {
        let table = InodeTable::new();
        let inode = table.lookup(5, FileType::RegularFile, lower_ref(5));
        inode.set_upper(
            RealRef {
                layer: UPPER,
                real_ino: 99,
                loc: Location::Root,
            },
            false,
        );
        table.lookup(5, FileType::RegularFile, lower_ref(5));
        assert!(inode.has_upper());
    }

    #[test]
    fn a_reused_number_with_another_type_gets_a_new_inode() {
        let table = InodeTable::new();
        let file = table.lookup(7, FileType::RegularFile, lower_ref(7));
        let dir = table.lookup(7, FileType::Directory, lower_ref(7));
        assert!(!Arc::ptr_eq(&file, &dir));
        assert_eq!(dir.lookup_count(), 2);
    }
}
