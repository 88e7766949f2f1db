//! The layers' roots, opened beneath private clones of their mounts that
//! carry the access-time mode of this mount, as kernel overlayfs mounts its
//! layers: lower layers never have access times changed (the kernel makes
//! their private mounts noatime), the upper by the overlay mount's mode
//! (it clears the upper mount's atime flags and touches the upper file per
//! its own). This is what makes the mode hold for reads the kernel makes
//! itself on the real files (passthrough read, mmap, exec), which O_NOATIME
//! on the daemon's fds cannot reach: the kernel opens its backing files with
//! the caller's flags, on the path of the daemon's fd.
//!
//! Making a clone needs CAP_SYS_ADMIN; without it (or when a layer's path
//! does not lead to the same dir inside the clone) the path is opened as is.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::layer::{LayerId, UPPER};
use crate::sys::{self, AtimeMode, SysResult};

/// Roots opened ahead, taken one by one as the layer stack and the work dir
/// are set up.
pub struct LayerRoots {
    upper: Option<OwnedFd>,
    work: Option<OwnedFd>,
    lowers: Vec<Option<OwnedFd>>,
}

impl LayerRoots {
    /// The upper and the work dir go beneath one clone, of their closest
    /// common dir: renames between them must stay on one mount.
    pub fn open(
        upper: Option<&Path>,
        work: Option<&Path>,
        lowers: &[PathBuf],
        upper_mode: AtimeMode,
    ) -> LayerRoots {
        let (upper_fd, work_fd) = match (upper, work) {
            (Some(u), Some(w)) => {
                let base = common_dir(u, w);
                match beneath_clone(&base, &[u, w], upper_mode).as_deref_mut() {
                    Some([u, w]) => (u.take(), w.take()),
                    _ => (None, None),
                }
            }
            (Some(u), None) => (single(u, upper_mode), None),
            _ => (None, None),
        };
        LayerRoots {
            upper: upper_fd,
            work: work_fd,
            lowers: lowers
                .iter()
                .map(|l| single(l, AtimeMode::NoAtime))
                .collect(),
        }
    }

    /// The root of layer `id` at `path`.
    pub fn take(&mut self, id: LayerId, path: &Path) -> SysResult<OwnedFd> {
        let ready = if id == UPPER {
            self.upper.take()
        } else {
            let index = usize::from(id) - 1;
            self.lowers.get_mut(index).and_then(Option::take)
        };
        ready.map_or_else(|| sys::open_root(path), Ok)
    }

    /// The root of the work dir at `path`.
    pub fn take_work(&mut self, path: &Path) -> SysResult<OwnedFd> {
        self.work.take().map_or_else(|| sys::open_root(path), Ok)
    }
}

fn single(path: &Path, mode: AtimeMode) -> Option<OwnedFd> {
    beneath_clone(path, &[path], mode)?.pop().flatten()
}

/// The deepest dir both paths are in (the paths are absolute and canonical).
fn common_dir(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// Each of `paths` (all under `base`) opened beneath a clone of the mount
/// `base` is on, with the access-time mode `mode`; `None` if any fails.
fn beneath_clone(base: &Path, paths: &[&Path], mode: AtimeMode) -> Option<Vec<Option<OwnedFd>>> {
    let clone = match sys::clone_mount(base) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(%e, ?base, "no private mount; the layer's own atime mode applies");
            return None;
        }
    };
    sys::set_mount_atime(clone.as_fd(), mode).ok()?;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let rel = path.strip_prefix(base).ok()?;
        let mut fd = clone.try_clone().ok()?;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return None;
            };
            fd = sys::open_path(fd.as_fd(), name).ok()?;
        }
        // A mount below `base` on the way is not in the clone: the walk
        // would end on the dir it covers. Only the same dir will do.
        let direct = sys::fstat(sys::open_root(path).ok()?.as_fd()).ok()?;
        let found = sys::fstat(fd.as_fd()).ok()?;
        if (found.st_dev, found.st_ino) != (direct.st_dev, direct.st_ino) {
            return None;
        }
        out.push(Some(fd));
    }
    Some(out)
}
