//! Reading a merged dir by offset, in a way the kernel can cache.
//!
//! The offset of an entry is a keyed hash of its name, and a listing is
//! handed out in offset order. So an offset means the same place in every
//! listing of the dir, taken before or after any change: a stream resumed
//! from another listing, or the kernel's readdir cache filled from several
//! streams at once, never repeats a name or skips one that stayed put. That
//! is what lets cowfs leave opendir to the kernel (no opendir/releasedir
//! round trips) and have the kernel cache listings (`FOPEN_CACHE_DIR`), which
//! a listing indexed by position could not allow: positions shift when a name
//! is added or removed.

use std::ffi::OsString;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::dirmerge::DirEntry;
use crate::error::OpResult;
use crate::inode::{Inode, ROOT_INO};
use crate::overlay::Overlay;
use crate::sys::{Errno, FileType};

/// Offsets of `.` and `..`; names get offsets above these.
const DOT_OFFSET: u64 = 1;
const DOTDOT_OFFSET: u64 = 2;
const FIRST_NAME_OFFSET: u64 = 3;
/// Name offsets stay below this, so that resolving a rare hash collision by
/// moving an entry up never leaves the positive range of the kernel's
/// `loff_t`.
const NAME_OFFSET_LIMIT: u64 = (i64::MAX as u64) - (1 << 32);

/// How many entries the listings kept for streams in progress (and for
/// the readdir that usually follows a lookup) may hold together. Past it the
/// kept ones are dropped; a stream that finds none builds a new listing,
/// which its offsets still fit.
const KEPT_ENTRIES: usize = 16 * 1024;

/// The order of a mount's listings and the listings kept for reuse.
pub struct DirOrder {
    /// The per-mount key of the name hash: an attacker who can name files
    /// must not be able to produce colliding offsets at will.
    key: std::hash::RandomState,
    kept: DashMap<u64, Arc<DirListing>>,
    kept_entries: AtomicUsize,
}

impl Default for DirOrder {
    fn default() -> Self {
        DirOrder {
            key: std::hash::RandomState::new(),
            kept: DashMap::new(),
            kept_entries: AtomicUsize::new(0),
        }
    }
}

impl DirOrder {
    fn keep(&self, listing: Arc<DirListing>) {
        let size = listing.len() + 1;
        if self.kept_entries.fetch_add(size, Ordering::Relaxed) + size > KEPT_ENTRIES {
            self.kept.clear();
            self.kept_entries.store(size, Ordering::Relaxed);
        }
        if let Some(old) = self.kept.insert(listing.dir.ino, listing) {
            self.uncount(&old);
        }
    }

    fn drop_kept(&self, listing: &Arc<DirListing>) {
        if self
            .kept
            .remove_if(&listing.dir.ino, |_, kept| Arc::ptr_eq(kept, listing))
            .is_some()
        {
            self.uncount(listing);
        }
    }

    /// Takes a listing no longer kept off the count (never below zero: a
    /// clear may have reset it meanwhile).
    fn uncount(&self, listing: &DirListing) {
        let _ = self
            .kept_entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(listing.len() + 1))
            });
    }

    fn offset_of(&self, name: &OsString) -> u64 {
        FIRST_NAME_OFFSET + self.key.hash_one(name) % (NAME_OFFSET_LIMIT - FIRST_NAME_OFFSET)
    }

    /// Puts `entries` in offset order and gives each its offset. Two names
    /// with one hash (about 1 in 2^62 per pair) are ordered by name and the
    /// later one moved just past the earlier.
    fn order(&self, entries: Vec<DirEntry>) -> Vec<(u64, DirEntry)> {
        let mut ordered: Vec<(u64, DirEntry)> = entries
            .into_iter()
            .map(|entry| (self.offset_of(&entry.name), entry))
            .collect();
        sort_by_offset(&mut ordered);
        ordered
    }
}

fn sort_by_offset(ordered: &mut [(u64, DirEntry)]) {
    ordered.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    for i in 1..ordered.len() {
        if ordered[i].0 <= ordered[i - 1].0 {
            ordered[i].0 = ordered[i - 1].0 + 1;
        }
    }
}

/// A merged listing of one dir, `.` and `..` first, in offset order.
pub struct DirListing {
    pub dir: Arc<Inode>,
    /// The dir's names version when the listing was begun.
    version: u64,
    dots: [(u64, DirEntry); 2],
    names: Vec<(u64, DirEntry)>,
}

impl DirListing {
    /// The entries after `offset`, each with its own offset: the one to
    /// resume from to get the entries after it.
    pub fn entries_after(&self, offset: u64) -> impl Iterator<Item = (u64, &DirEntry)> {
        let first_name = self.names.partition_point(|(at, _)| *at <= offset);
        self.dots
            .iter()
            .filter(move |(at, _)| *at > offset)
            .chain(self.names[first_name..].iter())
            .map(|(at, entry)| (*at, entry))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many of the entries are dirs.
    pub fn subdirs(&self) -> usize {
        self.names
            .iter()
            .filter(|(_, e)| e.kind == FileType::Directory)
            .count()
    }

    fn last_offset(&self) -> u64 {
        self.names.last().map_or(DOTDOT_OFFSET, |(at, _)| *at)
    }
}

impl Overlay {
    /// The listing of `dir` to serve a read from `offset`. A read from 0
    /// (an open or a rewind) needs a listing no older than the dir's last
    /// change; later reads take whatever listing is kept.
    pub fn readdir(&self, dir: &Arc<Inode>, offset: u64) -> OpResult<Arc<DirListing>> {
        if !dir.is_dir() {
            return Err(Errno::NOTDIR);
        }
        if let Some(kept) = self.dir_order.kept.get(&dir.ino)
            && (offset != 0 || kept.version == dir.names_version())
        {
            return Ok(kept.clone());
        }
        let listing = Arc::new(self.ordered_listing(dir)?);
        if offset < listing.last_offset() {
            self.dir_order.keep(listing.clone());
        }
        Ok(listing)
    }

    /// Tells that a stream has read `listing` to its end, so it need not be
    /// kept for it.
    pub fn readdir_done(&self, listing: &Arc<DirListing>) {
        self.dir_order.drop_kept(listing);
    }

    /// Lists `dir` for its link count and keeps the listing for the readdir
    /// that usually comes next (a lookup, then an open of the dir).
    pub(crate) fn count_subdirs_and_keep(&self, dir: &Arc<Inode>) -> OpResult<usize> {
        let listing = self.ordered_listing(dir)?;
        let subdirs = listing.subdirs();
        self.dir_order.keep(Arc::new(listing));
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
                Ok(entries) => self.dir_order.order(entries),
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
        let dot = |name: &str, ino: u64| DirEntry {
            name: OsString::from(name),
            kind: FileType::Directory,
            ino,
            lowers: Default::default(),
        };
        Ok(DirListing {
            dir: dir.clone(),
            version,
            dots: [
                (DOT_OFFSET, dot(".", dir.ino)),
                (DOTDOT_OFFSET, dot("..", parent_ino)),
            ],
            names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: OsString::from(name),
            kind: FileType::RegularFile,
            ino: 1,
            lowers: Default::default(),
        }
    }

    fn names_after(order: &DirOrder, names: &[&str], offset: u64) -> Vec<(u64, String)> {
        let listed = order.order(names.iter().map(|n| entry(n)).collect());
        listed
            .into_iter()
            .filter(|(at, _)| *at > offset)
            .map(|(at, e)| (at, e.name.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn an_offset_means_the_same_place_in_every_listing() {
        let order = DirOrder::default();
        let before: Vec<String> = (0..500).map(|i| format!("f{i}")).collect();
        let before: Vec<&str> = before.iter().map(String::as_str).collect();
        let first = names_after(&order, &before, 0);
        let (resume_at, _) = first[first.len() / 2];

        // Remove some names and add others, then resume from the middle.
        let mut after: Vec<String> = (0..500)
            .filter(|i| i % 7 != 0)
            .map(|i| format!("f{i}"))
            .collect();
        after.extend((0..100).map(|i| format!("new{i}")));
        let after: Vec<&str> = after.iter().map(String::as_str).collect();
        let rest = names_after(&order, &after, resume_at);

        let mut seen: Vec<String> = first
            .iter()
            .filter(|(at, _)| *at <= resume_at)
            .map(|(_, n)| n.clone())
            .collect();
        seen.extend(rest.iter().map(|(_, n)| n.clone()));
        let unique: std::collections::HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a name came twice");
        for name in after.iter().filter(|n| before.contains(n)) {
            assert!(
                seen.iter().any(|s| s == name),
                "{name} stayed but was skipped"
            );
        }
        assert!(rest.iter().all(|(at, _)| *at > resume_at));
    }

    #[test]
    fn offsets_are_increasing_and_leave_room_for_the_dots() {
        let order = DirOrder::default();
        let names: Vec<String> = (0..2000).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let listed = names_after(&order, &names, 0);
        assert_eq!(listed.len(), 2000);
        assert!(listed[0].0 >= FIRST_NAME_OFFSET);
        assert!(listed.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(listed.iter().all(|(at, _)| *at < i64::MAX as u64));
    }

    #[test]
    fn colliding_hashes_still_get_distinct_offsets() {
        let mut ordered = vec![
            (10, entry("b")),
            (10, entry("a")),
            (11, entry("c")),
            (40, entry("d")),
        ];
        sort_by_offset(&mut ordered);
        let offsets: Vec<u64> = ordered.iter().map(|(at, _)| *at).collect();
        assert_eq!(offsets, vec![10, 11, 12, 40]);
        let names: Vec<&OsString> = ordered.iter().map(|(_, e)| &e.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
