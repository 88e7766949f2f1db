//! Serving readdir: which listing of a merged dir a read gets (a kept one,
//! or a fresh one in offset order; see `listing`).

use std::sync::Arc;

use crate::error::OpResult;
use crate::inode::{Inode, ROOT_INO};
use crate::listing::DirListing;
use crate::overlay::Overlay;
use crate::sys::Errno;

impl Overlay {
    /// The listing of `dir` to serve a read from `offset`. A read from 0
    /// (an open or a rewind) needs a listing no older than the dir's last
    /// change; later reads take whatever listing is kept.
    pub fn readdir(&self, dir: &Arc<Inode>, offset: u64) -> OpResult<Arc<DirListing>> {
        if !dir.is_dir() {
            return Err(Errno::NOTDIR);
        }
        if let Some(kept) = self.dir_order().kept(dir)
            && (offset != 0 || kept.is_current(dir.names_version()))
        {
            if offset != 0 && offset >= kept.last_offset() {
                // The read that finds the stream at its end (the kernel
                // makes one after the last entries): nothing after it, and
                // the listing is no longer needed.
                self.dir_order().drop_kept(&kept);
            }
            return Ok(kept);
        }
        let listing = Arc::new(self.ordered_listing(dir)?);
        if offset < listing.last_offset() {
            self.dir_order().keep(listing.clone());
        }
        Ok(listing)
    }

    /// Tells that a stream has been handed the last entries of `listing`.
    /// It stays kept for the read at its end that follows, which would
    /// otherwise merge the layers again to find nothing after the offset;
    /// that read lets go of it (see `readdir`).
    pub fn readdir_done(&self, _listing: &Arc<DirListing>) {}

    /// Lists `dir` for its link count and keeps the listing for the readdir
    /// that usually comes next (a lookup, then an open of the dir).
    pub(crate) fn count_subdirs_and_keep(&self, dir: &Arc<Inode>) -> OpResult<usize> {
        let listing = self.ordered_listing(dir)?;
        let subdirs = listing.subdirs();
        self.dir_order().keep(Arc::new(listing));
        Ok(subdirs)
    }

    /// The whole merged listing of `dir` in offset order.
    pub fn ordered_listing(&self, dir: &Arc<Inode>) -> OpResult<DirListing> {
        let version = dir.names_version();
        let names = if dir.is_unlinked() {
            // Read through an fd that outlived an rmdir: empty, as on any fs.
            Vec::new()
        } else {
            match self.list_dir(dir) {
                Ok(entries) => self.dir_order().order(entries),
                Err(e) if e == Errno::NOENT || e == Errno::STALE => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        let parent_ino = if dir.ino == ROOT_INO {
            ROOT_INO
        } else {
            dir.top()
                .and_then(|r| r.parent().map(|p| p.ino))
                .unwrap_or(ROOT_INO)
        };
        Ok(DirListing::new(
            dir.clone(),
            version,
            (dir.ino, parent_ino),
            names,
        ))
    }
}
