//! The work dir: where copy-ups, whiteouts and new objects are built before
//! an atomic rename puts them in place. Its `work` subdir is the kernel's
//! name for the same thing, emptied at every mount, so whatever a crash left
//! behind never becomes visible.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::SetupError;
use crate::format::XattrNamespace;
use crate::sys::{self, Errno};

/// The entries a work dir may hold: what cowfs and kernel overlayfs create.
pub const OWN_ENTRIES: [&str; 2] = ["work", "index"];
const WORK_SUBDIR: &str = "work";
const INDEX_SUBDIR: &str = "index";

/// How this upper filesystem lets us record whiteouts and opaque dirs,
/// found by trying at mount time.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// 0/0 char devices can be made (else `.wh.NAME` files are written).
    pub chardev_whiteouts: bool,
    /// `renameat2(RENAME_WHITEOUT)` works.
    pub rename_whiteout: bool,
    /// Where overlay xattrs go; `None` when neither namespace can be set.
    pub xattr_namespace: Option<XattrNamespace>,
}

/// How long a mount waits for the work dir's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct WorkDir {
    path: PathBuf,
    work: OwnedFd,
    /// `index`: one hard link per copied-up lower file that has several
    /// names, named after its origin, as the kernel's index=on keeps them.
    index: OwnedFd,
    /// Held open for the flock that keeps a second mount off this work dir.
    _lock: OwnedFd,
    next_temp: AtomicU64,
    /// The device copies are made on.
    pub dev: u64,
    /// Part of every temp name: the pid that prepared the work dir (the
    /// lock and the counter already make names unique; this tells mounts
    /// apart in a crashed work dir).
    temp_tag: u32,
}

impl WorkDir {
    /// Creates `<workdir>/work` if needed, takes the work dir's lock, and
    /// empties `work` of what an earlier mount left.
    pub fn prepare(workdir: &Path) -> Result<WorkDir, SetupError> {
        let root = sys::open_root(workdir).map_err(|e| SetupError::io("work dir", workdir, e))?;
        Self::prepare_at(workdir, root)
    }

    /// As `prepare`, with the work dir already open as `root`.
    pub fn prepare_at(workdir: &Path, root: OwnedFd) -> Result<WorkDir, SetupError> {
        let lock = sys::reopen(root.as_fd(), sys::OFlags::RDONLY | sys::OFlags::DIRECTORY)
            .map_err(|e| SetupError::io("work dir", workdir, e))?;
        // A mount unmounted a moment ago may still be shutting down and
        // hold the lock: give it a little time before calling it in use.
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        while sys::try_lock_exclusive(lock.as_fd()).is_err() {
            if std::time::Instant::now() >= give_up {
                return Err(SetupError::WorkDirInUse {
                    path: workdir.to_path_buf(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let work_path = workdir.join(WORK_SUBDIR);
        match sys::mkdir(root.as_fd(), OsStr::new(WORK_SUBDIR), 0o700) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(SetupError::io("work dir", &work_path, e)),
        }
        let work = sys::open_path(root.as_fd(), OsStr::new(WORK_SUBDIR))
            .map_err(|e| SetupError::io("work dir", &work_path, e))?;
        let st = sys::fstat(work.as_fd()).map_err(|e| SetupError::io("work dir", &work_path, e))?;
        if sys::file_type(&st) != sys::FileType::Directory {
            return Err(SetupError::NotADirectory {
                what: "work dir",
                path: work_path,
            });
        }
        match sys::mkdir(root.as_fd(), OsStr::new(INDEX_SUBDIR), 0o700) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(SetupError::io("work dir", workdir.join(INDEX_SUBDIR), e)),
        }
        let index = sys::open_path(root.as_fd(), OsStr::new(INDEX_SUBDIR))
            .map_err(|e| SetupError::io("work dir", workdir.join(INDEX_SUBDIR), e))?;
        let dir = WorkDir {
            path: work_path,
            work,
            index,
            _lock: lock,
            next_temp: AtomicU64::new(1),
            dev: st.st_dev,
            temp_tag: std::process::id(),
        };
        dir.clean()
            .map_err(|e| SetupError::io("cleaning work dir", &dir.path, e))?;
        Ok(dir)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    pub fn index_fd(&self) -> BorrowedFd<'_> {
        self.index.as_fd()
    }

    /// A fresh name for a temporary object in the work dir.
    pub fn temp_name(&self) -> OsString {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#cowfs-{}-{n:x}", self.temp_tag))
    }

    /// Removes a temporary object (and, for a dir, what it holds).
    pub fn remove(&self, name: &OsStr) {
        if let Err(e) = sys::remove_tree(self.fd(), name) {
            tracing::warn!(?name, %e, "could not remove work dir leftover");
        }
    }

    /// A fresh temp name that is removed again unless [`TempName::placed`]
    /// says it was moved into place.
    pub fn temp(&self) -> TempName<'_> {
        TempName {
            work: self,
            name: self.temp_name(),
            placed: false,
        }
    }

    fn clean(&self) -> Result<(), Errno> {
        let listing = sys::open_dir_for_listing(self.fd())?;
        let mut leftovers = Vec::new();
        sys::for_each_dir_entry(listing.as_fd(), |name, _, _| {
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                leftovers.push(OsStr::from_bytes(bytes).to_os_string());
            }
        })?;
        for name in leftovers {
            tracing::info!(?name, "removing leftover from an earlier mount");
            sys::remove_tree(self.fd(), &name)?;
        }
        Ok(())
    }

    /// Tries what the upper filesystem supports, in the work dir. With
    /// `user_xattrs_only` (the `userxattr` option) overlay xattrs go to
    /// `user.overlay.*` even where `trusted.overlay.*` could be written.
    pub fn probe(&self, user_xattrs_only: bool) -> Capabilities {
        let name = self.temp_name();
        let chardev_whiteouts = sys::mknod_whiteout(self.fd(), &name).is_ok();
        let _ = sys::unlink(self.fd(), &name);

        let rename_whiteout = (|| -> Result<bool, Errno> {
            let from = self.temp_name();
            let to = self.temp_name();
            drop(sys::create_file(
                self.fd(),
                &from,
                sys::OFlags::WRONLY,
                0o600,
            )?);
            let ok =
                sys::rename(self.fd(), &from, self.fd(), &to, sys::RenameFlags::WHITEOUT).is_ok();
            let _ = sys::unlink(self.fd(), &from);
            let _ = sys::unlink(self.fd(), &to);
            Ok(ok)
        })()
        .unwrap_or(false);

        let xattr_namespace = (|| -> Result<Option<XattrNamespace>, Errno> {
            let dir = self.temp_name();
            sys::mkdir(self.fd(), &dir, 0o700)?;
            let fd = sys::open_path(self.fd(), &dir)?;
            let mut found = None;
            let candidates: &[XattrNamespace] = if user_xattrs_only {
                &[XattrNamespace::User]
            } else {
                &[XattrNamespace::Trusted, XattrNamespace::User]
            };
            for &ns in candidates {
                if sys::set_xattr(fd.as_fd(), ns.opaque(), b"0", sys::XattrFlags::empty()).is_ok() {
                    found = Some(ns);
                    break;
                }
            }
            drop(fd);
            let _ = sys::rmdir(self.fd(), &dir);
            Ok(found)
        })()
        .unwrap_or(None);

        Capabilities {
            chardev_whiteouts,
            rename_whiteout: rename_whiteout && chardev_whiteouts,
            xattr_namespace,
        }
    }
}

/// A temp object in the work dir that must not outlive a failed step: on
/// drop it is removed, unless it was placed (renamed away).
pub struct TempName<'a> {
    work: &'a WorkDir,
    name: OsString,
    placed: bool,
}

impl TempName<'_> {
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The object is no longer in the work dir under this name.
    pub fn placed(&mut self) {
        self.placed = true;
    }
}

impl Drop for TempName<'_> {
    fn drop(&mut self) {
        if !self.placed {
            match sys::stat_at(self.work.fd(), &self.name) {
                // Never made (the first step failed): nothing to remove.
                Ok(None) => {}
                _ => self.work.remove(&self.name),
            }
        }
    }
}
