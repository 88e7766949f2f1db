//! The overlay filesystem as a whole: the layers, the inode table, the fd
//! cache and the work dir, and how an inode's real objects are reached.
//!
//! The operations live in their own modules (`lookup`, `dirmerge`, `copyup`,
//! `namespace`, `attr`, `fileio`), each an `impl Overlay` block.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::absent::AbsentBelow;
use crate::error::OpResult;
use crate::fdcache::FdCache;
use crate::format::XattrNamespace;
use crate::handles::Handles;
use crate::idmap::{OverrideStat, Ownership};
use crate::inode::{Inode, InodeTable, Layers, Location, ROOT_INO, RealRef};
use crate::inodeio::InodeFiles;
use crate::layer::{LayerId, LayerStack, UPPER};
use crate::listing::DirOrder;
use crate::stats::{Snapshot, Stats, TableFigures};
use crate::sys::{self, Errno, Stat};
use crate::unsettled::UnsettledCopies;
use crate::workdir::{Capabilities, WorkDir};

/// Settings of a mount that the filesystem itself needs.
#[derive(Clone, Debug)]
pub struct OverlayOptions {
    /// How many `O_PATH` fds to keep open for reuse.
    pub fd_cache_capacity: usize,
    /// How long the kernel may cache names and attributes. Long: every
    /// change goes through this mount, and the kernel updates its caches for
    /// the changes it makes (layers changed behind a mount's back are
    /// undefined, as for kernel overlayfs).
    pub cache_ttl: Duration,
    /// Skip fsync (the `volatile` / `fsync=0` options).
    pub no_sync: bool,
    /// How owners are shown and stored.
    pub ownership: Ownership,
    /// Copy up metadata only for attribute changes (the kernel's metacopy=on).
    pub metacopy: bool,
    /// Let the kernel do I/O on open files directly (FUSE passthrough).
    pub passthrough: bool,
    /// Lower files open for reading pass through too (`passthrough=all`).
    pub passthrough_lower: bool,
    /// The kernel opens and closes files without a request (`open=kernel`):
    /// reads and writes name an inode, not an open file of the daemon's.
    pub kernel_opens: bool,
    /// Report 1 as the link count of every dir instead of counting.
    pub static_nlink: bool,
    /// The `noatime` mount option: reads never change access times.
    pub noatime: bool,
    /// How a dir with lower content is renamed (`redirect_dir=`).
    pub redirect_dir: RedirectDir,
    /// Overlay metadata in `user.overlay.*` only (`userxattr`).
    pub userxattr: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            fd_cache_capacity: 4096,
            cache_ttl: Duration::from_secs(24 * 3600),
            no_sync: false,
            ownership: Ownership::default(),
            metacopy: false,
            passthrough: true,
            passthrough_lower: false,
            kernel_opens: false,
            static_nlink: false,
            noatime: false,
            redirect_dir: RedirectDir::Auto,
            userxattr: false,
        }
    }
}

/// How a dir with lower content is renamed (`redirect_dir=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedirectDir {
    /// The upper dir moves and an `overlay.redirect` xattr records where its
    /// lower dirs are (the kernel's redirect_dir=on format).
    On,
    /// No redirect is written: the dir is copied up as a whole (opaque, every
    /// entry below it with its own upper copy), then moved. What a kernel
    /// mount that never follows redirects (`userxattr`, redirect_dir=off or
    /// nofollow) reads the same. `follow` and `nofollow` mean this too: cowfs
    /// reads the redirects it finds either way.
    Off,
    /// On where the kernel follows redirects (`trusted.overlay.*`), off
    /// where it never does (`user.overlay.*`, a rootless mount).
    #[default]
    Auto,
}

pub struct Overlay {
    layers: LayerStack,
    inodes: InodeTable,
    fds: FdCache,
    work: Option<WorkDir>,
    caps: Capabilities,
    handles: Handles,
    /// Real files open for I/O by inode (`open=kernel`).
    inode_files: InodeFiles,
    dir_order: DirOrder,
    /// The upper fs has said it cannot clone files (FICLONE).
    clone_unsupported: std::sync::atomic::AtomicBool,
    /// What copied data needs before the copy is renamed into place.
    data_ordering: sys::DataOrdering,
    /// Copies placed behind a metacopy mark whose data is still being
    /// written back.
    unsettled: UnsettledCopies,
    /// Tells the kernel that an inode's attributes changed without a request
    /// about it (set by the FUSE edge; none without a mount).
    attrs_changed_hook: std::sync::OnceLock<AttrsChangedHook>,
    pub options: OverlayOptions,
    /// Table size after the last memory trim, or the largest seen since.
    trim_mark: std::sync::atomic::AtomicUsize,
    /// What `cowfs stats` shows.
    stats: Stats,
    /// Numbers kept for upper objects that no lookup would give them (see
    /// `treecopy`): by upper inode number, with the origin that proves it is
    /// still the same object.
    kept_numbers: DashMap<u64, KeptNumber>,
    /// Names lookups just found in no lower dir, for the creates after them.
    absent_below: AbsentBelow,
}

/// The number a copied-up object keeps for the rest of a mount after its
/// lower object can no longer be found from it.
pub(crate) struct KeptNumber {
    pub origin: Vec<u8>,
    pub ino: u64,
}

/// Called with an inode number whose cached attributes are out of date.
pub type AttrsChangedHook = Box<dyn Fn(u64) + Send + Sync>;

/// Attributes as the mount reports them.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub stat: Stat,
}

impl Overlay {
    pub fn new(
        layers: LayerStack,
        work: Option<WorkDir>,
        options: OverlayOptions,
    ) -> OpResult<Overlay> {
        let caps = match &work {
            Some(work) => work.probe(options.userxattr),
            None => Capabilities {
                chardev_whiteouts: false,
                rename_whiteout: false,
                xattr_namespace: None,
            },
        };
        let data_ordering = match &work {
            Some(work) if !options.no_sync => sys::data_ordering_of(work.fd()),
            _ => sys::DataOrdering::Nothing,
        };
        tracing::info!(?caps, ?data_ordering, "upper filesystem capabilities");
        let overlay = Overlay {
            layers,
            inodes: InodeTable::new(),
            fds: FdCache::new(options.fd_cache_capacity),
            work,
            caps,
            handles: Handles::default(),
            inode_files: InodeFiles::new(options.fd_cache_capacity),
            absent_below: AbsentBelow::default(),
            dir_order: DirOrder::default(),
            clone_unsupported: std::sync::atomic::AtomicBool::new(false),
            data_ordering,
            unsettled: UnsettledCopies::default(),
            attrs_changed_hook: std::sync::OnceLock::new(),
            options,
            trim_mark: std::sync::atomic::AtomicUsize::new(0),
            stats: Stats::default(),
            kept_numbers: DashMap::new(),
        };
        let root = overlay.make_root()?;
        overlay.inodes.insert_root(root);
        Ok(overlay)
    }

    /// Sets how the kernel hears of attribute changes it did not ask for.
    pub fn on_attrs_changed(&self, hook: AttrsChangedHook) {
        let _ = self.attrs_changed_hook.set(hook);
    }

    /// A change the kernel did not ask for (a copy-up as a side effect of
    /// an operation on another inode) made its cached attributes of `ino`
    /// stale.
    pub(crate) fn attrs_changed(&self, ino: u64) {
        if let Some(hook) = self.attrs_changed_hook.get() {
            hook(ino);
        }
    }

    fn make_root(&self) -> OpResult<Arc<Inode>> {
        let root_ref = |layer: LayerId| -> OpResult<RealRef> {
            let st = sys::fstat(self.layers.get(layer).root())?;
            Ok(RealRef {
                layer,
                real_ino: st.st_ino,
                loc: Location::Root,
            })
        };
        let upper = match self.layers.upper() {
            Some(_) => Some(root_ref(UPPER)?),
            None => None,
        };
        let mut lowers = Vec::new();
        for layer in self.layers.lowers() {
            lowers.push(root_ref(layer.id)?);
        }
        Ok(Arc::new(Inode::new(
            ROOT_INO,
            sys::FileType::Directory,
            Layers {
                upper,
                lowers,
                metacopy: false,
                origin_nlink: 0,
            },
        )))
    }

    /// The mount's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The mount's figures now: its counters and the sizes of its tables.
    pub fn stats_snapshot(&self) -> Snapshot {
        let (fd_cache_hits, fd_cache_misses) = self.fds.hits_and_misses();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.stats.snapshot(TableFigures {
            inodes: count(self.inodes.len()),
            open_handles: count(self.handles.open_count()),
            fd_cache_fds: count(self.fds.len()),
            fd_cache_hits,
            fd_cache_misses,
            kept_listings: count(self.dir_order.kept_count()),
        })
    }

    /// Counts the data of a copy (`bytes` of a file) by how it got there.
    pub(crate) fn count_data_copy(&self, copied: sys::Copied, bytes: i64) {
        let how = match copied {
            sys::Copied::Written => crate::stats::DataCopy::Copied,
            sys::Copied::Shared => crate::stats::DataCopy::Cloned,
            sys::Copied::Nothing => return,
        };
        self.stats
            .copied_data(how, u64::try_from(bytes).unwrap_or(0));
    }

    pub(crate) fn layer_stack(&self) -> &LayerStack {
        &self.layers
    }

    pub(crate) fn caps(&self) -> &Capabilities {
        &self.caps
    }

    pub(crate) fn handles(&self) -> &Handles {
        &self.handles
    }

    pub(crate) fn absent_below(&self) -> &AbsentBelow {
        &self.absent_below
    }

    pub(crate) fn inode_files(&self) -> &InodeFiles {
        &self.inode_files
    }

    pub(crate) fn dir_order(&self) -> &DirOrder {
        &self.dir_order
    }

    /// Set once the upper fs has said it cannot clone files (FICLONE).
    pub(crate) fn clone_unsupported(&self) -> &std::sync::atomic::AtomicBool {
        &self.clone_unsupported
    }

    /// What copied data needs before the copy is renamed into place.
    pub(crate) fn data_ordering(&self) -> sys::DataOrdering {
        self.data_ordering
    }

    /// Copies answered before their data was on disk (see `unsettled`).
    pub(crate) fn unsettled(&self) -> &UnsettledCopies {
        &self.unsettled
    }

    /// The live inode of the object numbered `ino`, whether or not the
    /// kernel holds it.
    pub(crate) fn known_inode(&self, ino: u64) -> Option<Arc<Inode>> {
        self.inodes.get(ino)
    }

    /// One more kernel reference to the object a lookup found (its inode
    /// made if the table has none, a new incarnation if its number was
    /// reused).
    pub(crate) fn take_reference(
        &self,
        ino: u64,
        kind: sys::FileType,
        found: Layers,
    ) -> Arc<Inode> {
        self.inodes.lookup(ino, kind, found)
    }

    /// One more kernel reference to an inode the table has (a link, an
    /// entry a listing showed).
    pub(crate) fn add_reference(&self, inode: &Arc<Inode>) {
        self.inodes.add_lookup(inode);
    }

    /// Keeps `fd` of the real object `layer`/`real_ino` for reuse.
    pub(crate) fn cache_real_fd(&self, layer: LayerId, real_ino: u64, fd: OwnedFd) {
        self.fds.insert(layer, real_ino, Arc::new(fd));
    }

    /// Forgets a removed real object's fd, so a new object that reuses its
    /// number is never answered with the old one's.
    pub(crate) fn forget_real_fd(&self, layer: LayerId, real_ino: u64) {
        self.fds.remove(layer, real_ino);
        self.inode_files.forget(layer, real_ino);
        if layer == UPPER && !self.kept_numbers.is_empty() {
            self.kept_numbers.remove(&real_ino);
        }
    }

    /// From now on, the upper object `upper_ino` (whose origin xattr holds
    /// `origin`) is numbered `ino` in this mount.
    pub(crate) fn keep_number(&self, upper_ino: u64, origin: Vec<u8>, ino: u64) {
        self.kept_numbers
            .insert(upper_ino, KeptNumber { origin, ino });
    }

    /// The number kept for the upper object `upper_ino`, if any; the caller
    /// checks the origin.
    pub(crate) fn kept_number(&self, upper_ino: u64) -> Option<(Vec<u8>, u64)> {
        if self.kept_numbers.is_empty() {
            return None;
        }
        self.kept_numbers
            .get(&upper_ino)
            .map(|k| (k.origin.clone(), k.ino))
    }

    pub fn is_read_only(&self) -> bool {
        self.work.is_none()
    }

    pub(crate) fn writable(&self) -> OpResult<&WorkDir> {
        self.work.as_ref().ok_or(Errno::ROFS)
    }

    pub(crate) fn xattr_ns(&self) -> Option<XattrNamespace> {
        self.caps.xattr_namespace
    }

    /// The inode the kernel knows by `ino`.
    pub fn inode(&self, ino: u64) -> OpResult<Arc<Inode>> {
        self.inodes.get(ino).ok_or(Errno::STALE)
    }

    /// An `O_PATH` fd for a real object, from the cache or by opening it by
    /// name from its parent (itself found the same way). Iterative, so a
    /// deep tree cannot exhaust the stack.
    pub fn real_fd(&self, target: &RealRef) -> OpResult<Arc<OwnedFd>> {
        match &target.loc {
            Location::Root => return self.layer_root_fd(target.layer),
            Location::Kept(fd) => return Ok(fd.clone()),
            _ => {}
        }
        if let Some(fd) = self.fds.get(target.layer, target.real_ino) {
            return Ok(fd);
        }
        // Walk up to the nearest ancestor whose fd is at hand.
        let mut chain = vec![target.clone()];
        let mut base = loop {
            let current = chain.last().ok_or(Errno::STALE)?;
            let parent = match &current.loc {
                Location::Root => break self.layer_root_fd(current.layer)?,
                Location::Path(path) => {
                    let fd = self.open_by_path(current.layer, path, current.real_ino)?;
                    chain.pop();
                    break fd;
                }
                Location::Index(name) => {
                    let index = self.writable()?.index_fd();
                    let fd = sys::open_path(index, name)?;
                    let fd = self.remember_fd(current, fd)?;
                    chain.pop();
                    break fd;
                }
                Location::Child { parent, .. } => parent,
                Location::Kept(fd) => {
                    let fd = fd.clone();
                    chain.pop();
                    break fd;
                }
            };
            let parent_ref = parent.in_layer(current.layer).ok_or(Errno::STALE)?;
            if let Location::Root = parent_ref.loc {
                break self.layer_root_fd(parent_ref.layer)?;
            }
            if let Some(fd) = self.fds.get(parent_ref.layer, parent_ref.real_ino) {
                break fd;
            }
            chain.push(parent_ref);
        };
        while let Some(step) = chain.pop() {
            let name = step.name().ok_or(Errno::STALE)?;
            let fd = sys::open_path(base.as_fd(), name)?;
            base = self.remember_fd(&step, fd)?;
        }
        Ok(base)
    }

    /// Opens a real object by its path from the layer root, one component
    /// at a time and never through a symlink.
    fn open_by_path(
        &self,
        layer: LayerId,
        path: &[std::ffi::OsString],
        real_ino: u64,
    ) -> OpResult<Arc<OwnedFd>> {
        let root = self.layer_root_fd(layer)?;
        let mut current: Option<OwnedFd> = None;
        for component in path {
            let dir = current.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
            current = Some(sys::open_path(dir, component)?);
        }
        let Some(fd) = current else {
            return Ok(root);
        };
        let target = RealRef {
            layer,
            real_ino,
            loc: Location::Root,
        };
        self.remember_fd(&target, fd)
    }

    /// Checks a freshly opened fd is the object expected, and caches it.
    fn remember_fd(&self, expected: &RealRef, fd: OwnedFd) -> OpResult<Arc<OwnedFd>> {
        let st = sys::fstat(fd.as_fd())?;
        if st.st_ino != expected.real_ino {
            // The layer changed behind the mount's back.
            return Err(Errno::STALE);
        }
        let fd = Arc::new(fd);
        self.fds
            .insert(expected.layer, expected.real_ino, fd.clone());
        Ok(fd)
    }

    fn layer_root_fd(&self, layer: LayerId) -> OpResult<Arc<OwnedFd>> {
        Ok(self.layers.get(layer).shared_root())
    }

    /// Stat of a real object: through its cached fd, else by its name in
    /// its parent's dir, checked by inode number as a reopen would be (one
    /// call instead of an open, its check and the stat; a walk that stats
    /// thousands of files does not push the fds in use out of the cache).
    pub fn stat_ref(&self, r: &RealRef) -> OpResult<Stat> {
        if let Location::Child { parent, name } = &r.loc {
            if let Some(fd) = self.fds.get(r.layer, r.real_ino) {
                return sys::fstat(fd.as_fd());
            }
            let parent_ref = parent.in_layer(r.layer).ok_or(Errno::STALE)?;
            let dir = self.real_fd(&parent_ref)?;
            return match sys::stat_at(dir.as_fd(), name)? {
                Some(st) if st.st_ino == r.real_ino => Ok(st),
                // Replaced behind the mount's back.
                Some(_) => Err(Errno::STALE),
                None => Err(Errno::NOENT),
            };
        }
        let fd = self.real_fd(r)?;
        sys::fstat(fd.as_fd())
    }

    /// A real file opened for I/O with `flags`: where its `O_PATH` fd is not
    /// at hand, by its name in its parent's dir, checked by inode number as
    /// `real_fd` checks (one open and a stat, instead of opening it `O_PATH`,
    /// the check and a reopen through /proc); else by reopening that fd.
    /// O_NOATIME needs the file's owner or CAP_FOWNER, and without them (an
    /// unprivileged daemon) the file is opened without it.
    pub(crate) fn open_real(&self, r: &RealRef, flags: sys::OFlags) -> OpResult<OwnedFd> {
        let without_noatime = |open: &dyn Fn(sys::OFlags) -> OpResult<OwnedFd>| match open(flags) {
            Err(Errno::PERM) if flags.contains(sys::OFlags::NOATIME) => {
                open(flags - sys::OFlags::NOATIME)
            }
            done => done,
        };
        if let Some(path_fd) = self.fds.get(r.layer, r.real_ino) {
            return without_noatime(&|flags| sys::reopen(path_fd.as_fd(), flags));
        }
        if let Location::Child { parent, name } = &r.loc {
            let parent_ref = parent.in_layer(r.layer).ok_or(Errno::STALE)?;
            let dir = self.real_fd(&parent_ref)?;
            let fd = without_noatime(&|flags| sys::open_child(dir.as_fd(), name, flags))?;
            if sys::fstat(fd.as_fd())?.st_ino != r.real_ino {
                // Replaced behind the mount's back.
                return Err(Errno::STALE);
            }
            return Ok(fd);
        }
        let path_fd = self.real_fd(r)?;
        without_noatime(&|flags| sys::reopen(path_fd.as_fd(), flags))
    }

    /// An xattr of a real object. A lower object whose fd is not at hand is
    /// read by its name in its parent's dir, not opened: a lower layer never
    /// changes under the mount, so the name is that object (what `ls -l`
    /// asks of every file costs one call, not an open, its check and the
    /// read). Upper objects are reached through their fd, checked.
    pub(crate) fn xattr_of_ref(&self, r: &RealRef, name: &OsStr) -> OpResult<Option<Vec<u8>>> {
        if !r.is_upper()
            && let Location::Child {
                parent,
                name: child,
            } = &r.loc
        {
            if let Some(fd) = self.fds.get(r.layer, r.real_ino) {
                return sys::get_xattr(fd.as_fd(), name);
            }
            let parent_ref = parent.in_layer(r.layer).ok_or(Errno::STALE)?;
            let dir = self.real_fd(&parent_ref)?;
            return sys::get_xattr_of_child(dir.as_fd(), child, name);
        }
        let fd = self.real_fd(r)?;
        sys::get_xattr(fd.as_fd(), name)
    }

    /// Attributes of an inode, from the object that answers reads.
    pub fn attr_of(&self, inode: &Arc<Inode>) -> OpResult<Attr> {
        let layers = inode.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        let mut stat = match self.handles.writer_fd(inode) {
            // Open for writing: its upper file is at hand.
            Some(open) => sys::fstat(open.as_fd())?,
            None => self.stat_ref(top)?,
        };
        if layers.metacopy
            && let Some(data) = layers.data()
        {
            // The upper copy is sparse; the blocks in use are the lower's.
            stat.st_blocks = self.stat_ref(data)?.st_blocks;
        }
        Ok(self.attr_from(inode, stat, &layers))
    }

    pub(crate) fn attr_from(&self, inode: &Arc<Inode>, stat: Stat, layers: &Layers) -> Attr {
        self.attr_parts(inode.ino, Some(inode), stat, layers)
    }

    /// Attributes from their parts; `dir` is needed only for a merged dir,
    /// whose link count is kept on its inode.
    pub(crate) fn attr_parts(
        &self,
        ino: u64,
        dir: Option<&Arc<Inode>>,
        mut stat: Stat,
        layers: &Layers,
    ) -> Attr {
        let is_dir = sys::file_type(&stat) == sys::FileType::Directory;
        let merged_dir = is_dir
            && !layers.lowers.is_empty()
            && (layers.upper.is_some() || layers.lowers.len() > 1);
        if is_dir && self.options.static_nlink {
            // As fuse-overlayfs: 1 for every dir, merged or not, which tools
            // take as "count unknown" (find stops using it to skip subdirs).
            stat.st_nlink = 1;
        } else if merged_dir {
            // Counted over the merged view (the kernel reports 1 here).
            stat.st_nlink = match dir {
                Some(dir) => self.merged_nlink(dir).unwrap_or(1).into(),
                None => 1,
            };
        }
        if layers.origin_nlink > 1
            && sys::file_type(&stat) == sys::FileType::RegularFile
            && let Some(nlink) = self.indexed_nlink(layers)
        {
            stat.st_nlink = nlink as _;
        }
        if !self.options.ownership.is_plain() {
            self.present_owner(&mut stat, layers);
        }
        if sys::file_type(&stat) == sys::FileType::RegularFile && self.handles.has_writers(ino) {
            // A file open for writing may be written through a shared
            // mapping of its real file (passthrough), which the kernel does
            // not count as a change of this inode: have it not cache these
            // attributes. The invalidation reaches it before this reply,
            // whose attributes it then passes on but does not keep.
            self.attrs_changed(ino);
        }
        Attr { ino, stat }
    }

    /// Applies id mapping, squashing and override xattrs to what is shown.
    fn present_owner(&self, stat: &mut Stat, layers: &Layers) {
        let own = &self.options.ownership;
        if let (Some(name), Some(top)) = (own.override_xattr, layers.top()) {
            let recorded = self
                .real_fd(top)
                .ok()
                .and_then(|fd| sys::get_xattr(fd.as_fd(), name.name()).ok().flatten())
                .and_then(|value| OverrideStat::parse(&value));
            if let Some(recorded) = recorded {
                stat.st_uid = recorded.uid;
                stat.st_gid = recorded.gid;
                stat.st_mode = (stat.st_mode & libc::S_IFMT) | recorded.mode;
            }
        }
        stat.st_uid = own.shown_uid(stat.st_uid);
        stat.st_gid = own.shown_gid(stat.st_gid);
    }

    /// Once the inode table has shrunk to half its size since the last
    /// trim (the kernel forgot many inodes), frees the table's spare room
    /// and hands free heap back to the system.
    pub fn trim_memory(&self) {
        use std::sync::atomic::Ordering;
        let now = self.inodes.len();
        let mark = self.trim_mark.fetch_max(now, Ordering::Relaxed).max(now);
        if now * 2 < mark {
            self.inodes.sweep();
            self.inodes.shrink();
            // Most of the objects behind the cached fds were forgotten too.
            self.fds.clear();
            self.inode_files.clear();
            sys::trim_heap();
            self.trim_mark.store(self.inodes.len(), Ordering::Relaxed);
            tracing::debug!(before = mark, after = now, "trimmed memory");
        }
    }

    /// The kernel dropped references to an inode.
    pub fn forget(&self, ino: u64, count: u64) {
        self.inodes.forget(ino, count);
    }

    pub fn statfs(&self) -> OpResult<sys::StatVfs> {
        let layer = match self.layers.upper() {
            Some(upper) => upper.id,
            None => self.layers.lowers()[0].id,
        };
        sys::fstatvfs(self.layers.get(layer).root())
    }
}
