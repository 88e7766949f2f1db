//! The layer stack: one optional writable upper dir over read-only lowers,
//! each held open by an `O_PATH` fd to its root, and the mapping from a
//! layer's own inode numbers to the inode numbers the mount reports.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::error::SetupError;
use crate::sys;

/// Index of a layer: 0 is the upper dir, 1.. the lowers from the top down.
pub type LayerId = u16;
pub const UPPER: LayerId = 0;

/// A real object, by its layer and its inode number there: the key of
/// everything kept per real object (cached fds, passthrough backings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RealKey {
    pub layer: LayerId,
    pub real_ino: u64,
}

pub struct Layer {
    pub id: LayerId,
    pub path: PathBuf,
    /// Shared with the lookups that start from it, for as long as the stack
    /// lives (not in the evictable fd cache).
    root: Arc<OwnedFd>,
    pub dev: u64,
    /// Which filesystem among the layers' distinct ones (0 = the first seen).
    fsid: u64,
    /// The filesystem's UUID, recorded in origin xattrs.
    pub uuid: Option<[u8; 16]>,
    /// A plain (not `O_PATH`) fd of the root: open_by_handle_at needs one.
    handle_root: Option<OwnedFd>,
}

impl Layer {
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The root fd, to hold beside fds of objects below it.
    pub fn shared_root(&self) -> Arc<OwnedFd> {
        self.root.clone()
    }

    /// The fd file handles on this layer's filesystem are opened through.
    pub fn handle_root(&self) -> Option<BorrowedFd<'_>> {
        self.handle_root.as_ref().map(|fd| fd.as_fd())
    }
}

pub struct LayerStack {
    upper: Option<Layer>,
    lowers: Vec<Layer>,
    inos: InoMapper,
}

impl LayerStack {
    /// Opens the layer roots. `lowers` are given top first. An error names
    /// the layer and its path.
    pub fn open(upper: Option<&Path>, lowers: &[PathBuf]) -> Result<LayerStack, SetupError> {
        Self::open_with(upper, lowers, |_, path| sys::open_root(path))
    }

    /// As `open`, with the root of each layer opened by `root_of`.
    pub fn open_with(
        upper: Option<&Path>,
        lowers: &[PathBuf],
        mut root_of: impl FnMut(LayerId, &Path) -> sys::SysResult<OwnedFd>,
    ) -> Result<LayerStack, SetupError> {
        let mut devs: Vec<u64> = Vec::new();
        let mut open_layer = |id: LayerId, path: &Path| -> Result<Layer, SetupError> {
            let what = if id == UPPER {
                "opening upper layer"
            } else {
                "opening lower layer"
            };
            let root = root_of(id, path).map_err(|e| SetupError::io(what, path, e))?;
            let st = sys::fstat(root.as_fd()).map_err(|e| SetupError::io(what, path, e))?;
            if sys::file_type(&st) != sys::FileType::Directory {
                let what = if id == UPPER {
                    "upper layer"
                } else {
                    "lower layer"
                };
                return Err(SetupError::NotADirectory {
                    what,
                    path: path.to_path_buf(),
                });
            }
            let fsid = match devs.iter().position(|&d| d == st.st_dev) {
                Some(i) => i,
                None => {
                    devs.push(st.st_dev);
                    devs.len() - 1
                }
            } as u64;
            let uuid = sys::filesystem_uuid(root.as_fd());
            let handle_root = sys::open_dir_for_listing(root.as_fd()).ok();
            Ok(Layer {
                id,
                path: path.to_path_buf(),
                root: Arc::new(root),
                dev: st.st_dev,
                fsid,
                uuid,
                handle_root,
            })
        };
        let upper = match upper {
            Some(path) => Some(open_layer(UPPER, path)?),
            None => None,
        };
        let mut opened = Vec::with_capacity(lowers.len());
        for (i, path) in lowers.iter().enumerate() {
            let id = LayerId::try_from(i + 1).map_err(|_| {
                SetupError::Invalid(format!("too many lower layers ({})", lowers.len()))
            })?;
            opened.push(open_layer(id, path)?);
        }
        let inos = InoMapper::new(devs.len());
        Ok(LayerStack {
            upper,
            lowers: opened,
            inos,
        })
    }

    pub fn upper(&self) -> Option<&Layer> {
        self.upper.as_ref()
    }

    pub fn lowers(&self) -> &[Layer] {
        &self.lowers
    }

    pub fn get(&self, id: LayerId) -> &Layer {
        if id == UPPER
            && let Some(upper) = &self.upper
        {
            return upper;
        }
        let index = usize::from(id).saturating_sub(1);
        &self.lowers[index.min(self.lowers.len() - 1)]
    }

    /// The inode number for inode `real_ino` of the layer filesystem `dev`;
    /// `None` if no layer is on that filesystem.
    pub fn map_ino_on_dev(&self, dev: u64, real_ino: u64) -> Option<u64> {
        let layer = self
            .upper
            .iter()
            .chain(self.lowers.iter())
            .find(|l| l.dev == dev)?;
        Some(self.inos.map(layer.fsid, real_ino))
    }

    /// The inode number the mount reports for inode `real_ino` of `layer`.
    pub fn map_ino(&self, layer: LayerId, real_ino: u64) -> u64 {
        self.inos.map(self.get(layer).fsid, real_ino)
    }
}

/// Makes inode numbers unique across layers on different filesystems, the
/// way the kernel's xino does: the filesystem's index goes into the high
/// bits. Numbers stay the same across remounts as long as the layers do.
struct InoMapper {
    fsid_shift: u32,
    single_fs: bool,
    overflow: DashMap<(u64, u64), u64>,
    next_overflow: AtomicU64,
}

/// Set on numbers handed out for inodes whose real number uses the high
/// bits; such numbers are not stable across remounts.
const OVERFLOW_BIT: u64 = 1 << 63;

impl InoMapper {
    fn new(distinct_filesystems: usize) -> InoMapper {
        let fsid_bits = usize::BITS - distinct_filesystems.saturating_sub(1).leading_zeros();
        InoMapper {
            // One bit is kept for overflow numbers.
            fsid_shift: 63 - fsid_bits,
            single_fs: distinct_filesystems <= 1,
            overflow: DashMap::new(),
            next_overflow: AtomicU64::new(2),
        }
    }

    fn map(&self, fsid: u64, real_ino: u64) -> u64 {
        // Number 1 is the FUSE root; 0 is invalid.
        let fits = real_ino > 1 && real_ino >> self.fsid_shift == 0;
        if fits {
            return if self.single_fs {
                real_ino
            } else {
                real_ino | (fsid << self.fsid_shift)
            };
        }
        *self
            .overflow
            .entry((fsid, real_ino))
            .or_insert_with(|| OVERFLOW_BIT | self.next_overflow.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_filesystem_keeps_real_numbers() {
        let m = InoMapper::new(1);
        assert_eq!(m.map(0, 12345), 12345);
        assert_ne!(m.map(0, 1), 1, "the FUSE root number is never reused");
    }

    #[test]
    fn several_filesystems_get_distinct_high_bits() {
        let m = InoMapper::new(3);
        let a = m.map(0, 77);
        let b = m.map(1, 77);
        let c = m.map(2, 77);
        assert!(a != b && b != c && a != c);
        assert_eq!(m.map(1, 77), b, "stable");
        assert_eq!(a & OVERFLOW_BIT, 0);
    }

    #[test]
    fn huge_real_numbers_get_stable_overflow_numbers() {
        let m = InoMapper::new(2);
        let big = u64::MAX - 5;
        let x = m.map(1, big);
        assert_eq!(x & OVERFLOW_BIT, OVERFLOW_BIT);
        assert_eq!(m.map(1, big), x);
        assert_ne!(m.map(0, big), x);
    }
}
