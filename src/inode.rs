//! The inode table: what the kernel knows as a FUSE inode, the real objects
//! in the layers behind it, and the lookup counts that decide its lifetime.
//!
//! An inode's number is the number the mount reports as `st_ino` (derived
//! from its lowest-layer origin, see `layer::LayerStack::map_ino`), so it does
//! not change when the object is copied up, and two names of one lower
//! object are one inode. The table is a sharded map (dashmap); there is no
//! lock around a request as a whole.
//!
//! The kernel names an inode by its FUSE node id and generation. The node
//! id cowfs hands out is the inode's `st_ino`, so the number alone cannot name
//! one object for as long as the kernel holds it: the upper filesystem hands
//! a freed inode number to the next object made at once, while the kernel
//! may still hold the removed one (an open file, a cwd, a dentry not yet
//! forgotten). So every object that reuses the number of a removed one is a
//! new incarnation with a generation never handed out before; the kernel
//! then drops its old inode instead of taking the new object for it. The
//! kernel forgets by node id alone, so a slot's lookup count covers every
//! incarnation the kernel may still hold.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::{Mutex, RwLock};

use crate::layer::{LayerId, RealKey, UPPER};
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
    /// No name any more: an upper file unlinked (or renamed over) while the
    /// kernel may still have it open, on a mount where the kernel opens
    /// files without telling cowfs (`open=kernel`); reached through an
    /// `O_PATH` fd kept for it until the inode goes.
    Kept(Arc<std::os::fd::OwnedFd>),
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
    pub fn key(&self) -> RealKey {
        RealKey {
            layer: self.layer,
            real_ino: self.real_ino,
        }
    }

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
    /// With `ino` (the FUSE node id), what the kernel names this object by:
    /// no other object the kernel may hold has both.
    pub generation: u64,
    pub kind: FileType,
    lookups: AtomicU64,
    layers: RwLock<Layers>,
    /// Serialises copy-up of this inode, so concurrent writers copy once.
    copy_up_lock: Mutex<()>,
    /// Serialises changes to the names inside this dir (like i_rwsem).
    dir_lock: Mutex<()>,
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
    /// For a dir: whether its upper dir has a default ACL, once read (low
    /// two bits: 0 not known, 1 none, 2 one), above them a count of the
    /// changes to its xattrs, so that a read racing a change is not kept.
    default_acl: AtomicU64,
}

impl Inode {
    pub fn new(ino: u64, kind: FileType, layers: Layers) -> Inode {
        Inode::incarnation(ino, 0, kind, layers)
    }

    fn incarnation(ino: u64, generation: u64, kind: FileType, layers: Layers) -> Inode {
        Inode {
            ino,
            generation,
            kind,
            lookups: AtomicU64::new(0),
            layers: RwLock::new(layers),
            copy_up_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            unlinked: AtomicBool::new(false),
            known_impure: AtomicBool::new(false),
            names_version: AtomicU64::new(0),
            merged_nlink: AtomicU32::new(0),
            default_acl: AtomicU64::new(0),
        }
    }

    /// Takes the name lock of this dir for a change to its names.
    pub fn lock_names(&self) -> NamesGuard<'_> {
        NamesGuard {
            _lock: self.dir_lock.lock(),
            version: &self.names_version,
        }
    }

    /// Serialises copy-ups of this inode: concurrent writers copy once.
    pub fn lock_copy_up(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.copy_up_lock.lock()
    }

    /// Takes the name lock of this dir for a change that leaves its merged
    /// names as they are: a copy-up putting a copy under a name the merged
    /// view already shows. The names version stays, so kept listings stay
    /// current.
    pub fn lock_names_unchanged(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.dir_lock.lock()
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

    /// Whether the upper dir has a default ACL, if known; else a stamp to
    /// hand `note_default_acl` with what is read now.
    pub fn known_default_acl(&self) -> Result<bool, u64> {
        let v = self.default_acl.load(Ordering::Acquire);
        match v & 3 {
            1 => Ok(false),
            2 => Ok(true),
            _ => Err(v),
        }
    }

    /// Keeps what was read under `stamp`, unless the dir's xattrs changed
    /// since.
    pub fn note_default_acl(&self, stamp: u64, has: bool) {
        let known = stamp | if has { 2 } else { 1 };
        let _ =
            self.default_acl
                .compare_exchange(stamp, known, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// After a change to the dir's xattrs: its default ACL is read again.
    pub fn forget_default_acl(&self) {
        let _ = self
            .default_acl
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(((v >> 2) + 1) << 2)
            });
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

    /// A dir now opaque with every entry copied up: no lower dir is merged
    /// into it any more.
    pub fn drop_lowers(&self) {
        self.layers.write().lowers.clear();
    }

    /// Its upper object loses its last name: from now on it is reached
    /// through `fd`, which keeps it (see `Location::Kept`).
    pub fn keep_upper(&self, fd: Arc<std::os::fd::OwnedFd>) {
        if let Some(upper) = self.layers.write().upper.as_mut() {
            upper.loc = Location::Kept(fd);
        }
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

    /// Its last name is going: an object found under its number from now on
    /// is another one. Marked before the real object goes, since the layer's
    /// filesystem may give its number to an object made the moment after
    /// (in another dir, under another name lock); undone unless `done`.
    pub fn start_unlink(&self) -> Unlinking<'_> {
        self.unlinked.store(true, Ordering::Release);
        Unlinking { inode: Some(self) }
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(Ordering::Acquire)
    }

    pub fn lookup_count(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

/// An inode marked unlinked while its last name is being removed.
pub struct Unlinking<'a> {
    inode: Option<&'a Inode>,
}

impl Unlinking<'_> {
    /// The name is gone for good.
    pub fn done(mut self) {
        self.inode = None;
    }
}

impl Drop for Unlinking<'_> {
    fn drop(&mut self) {
        // The removal failed: the object keeps its name.
        if let Some(inode) = self.inode {
            inode.unlinked.store(false, Ordering::Release);
        }
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
    /// The generation of the next new incarnation (0 is the first of each
    /// number, so any later one differs from every earlier one).
    next_generation: AtomicU64,
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
            next_generation: AtomicU64::new(1),
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
                let (existing, held) = match slot.get() {
                    Slot::Known(inode) => (Some(inode.clone()), true),
                    Slot::Forgotten(weak) => (weak.upgrade(), false),
                };
                match existing {
                    Some(inode) if inode.kind == kind && !inode.is_unlinked() => {
                        inode.refresh(found);
                        slot.insert(Slot::Known(inode.clone()));
                        inode
                    }
                    other => {
                        // A new object under the number of one that is gone:
                        // a new incarnation, which takes over the references
                        // the kernel may still hold to the old ones.
                        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                        let fresh = Arc::new(Inode::incarnation(ino, generation, kind, found));
                        if let Some(old) = other.filter(|_| held) {
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
        assert_ne!(file.generation, dir.generation);
        assert_eq!(dir.lookup_count(), 2);
    }

    #[test]
    fn a_number_reused_after_unlink_is_a_new_incarnation() {
        let table = InodeTable::new();
        let old = table.lookup(8, FileType::Directory, lower_ref(8));
        old.start_unlink().done();
        // The kernel still holds the removed dir; a new one gets its number.
        let new = table.lookup(8, FileType::Directory, lower_ref(8));
        assert!(!Arc::ptr_eq(&old, &new));
        assert_ne!((old.ino, old.generation), (new.ino, new.generation));
        assert!(Arc::ptr_eq(&table.get(8).unwrap(), &new));
        // One count covers both: the kernel forgets by number alone.
        assert_eq!(new.lookup_count(), 2);
        table.forget(8, 1);
        assert!(table.get(8).is_some());
        table.forget(8, 1);
        assert_eq!(table.known_count(), 0);
        // Once forgotten, another object of the number starts afresh.
        new.start_unlink().done();
        let third = table.lookup(8, FileType::Directory, lower_ref(8));
        assert_eq!(third.lookup_count(), 1);
        assert!(third.generation > new.generation);
    }

    #[test]
    fn a_failed_unlink_keeps_the_inode() {
        let table = InodeTable::new();
        let inode = table.lookup(9, FileType::RegularFile, lower_ref(9));
        drop(inode.start_unlink());
        assert!(!inode.is_unlinked());
        let again = table.lookup(9, FileType::RegularFile, lower_ref(9));
        assert!(Arc::ptr_eq(&inode, &again));
    }
}
