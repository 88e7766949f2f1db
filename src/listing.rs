//! Merged listings as the kernel reads them: the entries of a merged dir,
//! each at an offset that means the same place in every listing of the dir,
//! and the listings kept between the reads of one stream.
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

use crate::inode::Inode;
use crate::sys::FileType;

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
    /// The listing kept for `dir`, if one is.
    pub(crate) fn kept(&self, dir: &Arc<Inode>) -> Option<Arc<DirListing>> {
        let kept = self.kept.get(&dir.ino)?;
        // Another incarnation of the number (a removed dir) is not this dir.
        Arc::ptr_eq(&kept.dir, dir).then(|| kept.clone())
    }

    pub(crate) fn keep(&self, listing: Arc<DirListing>) {
        let size = listing.len() + 1;
        if self.kept_entries.fetch_add(size, Ordering::Relaxed) + size > KEPT_ENTRIES {
            self.kept.clear();
            self.kept_entries.store(size, Ordering::Relaxed);
        }
        if let Some(old) = self.kept.insert(listing.dir.ino, listing) {
            self.uncount(&old);
        }
    }

    pub(crate) fn drop_kept(&self, listing: &Arc<DirListing>) {
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

    /// How many listings are kept.
    pub(crate) fn kept_count(&self) -> usize {
        self.kept.len()
    }

    fn offset_of(&self, name: &OsString) -> u64 {
        FIRST_NAME_OFFSET + self.key.hash_one(name) % (NAME_OFFSET_LIMIT - FIRST_NAME_OFFSET)
    }

    /// Puts `entries` in offset order and gives each its offset. Two names
    /// with one hash (about 1 in 2^62 per pair) are ordered by name and the
    /// later one moved just past the earlier.
    pub(crate) fn order(&self, entries: Vec<DirEntry>) -> Vec<(u64, DirEntry)> {
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
    /// A listing of `dir` taken at its names version `version`: `.` (the
    /// dir, numbered `dir_ino`), `..` (numbered `parent_ino`) and `names` in
    /// offset order.
    pub(crate) fn new(
        dir: Arc<Inode>,
        version: u64,
        (dir_ino, parent_ino): (u64, u64),
        names: Vec<(u64, DirEntry)>,
    ) -> DirListing {
        let dot = |name: &str, ino: u64| DirEntry {
            name: OsString::from(name),
            kind: FileType::Directory,
            ino,
            lowers: Default::default(),
        };
        DirListing {
            dir,
            version,
            dots: [
                (DOT_OFFSET, dot(".", dir_ino)),
                (DOTDOT_OFFSET, dot("..", parent_ino)),
            ],
            names,
        }
    }

    /// Whether the listing is current for a dir at names version `version`.
    pub(crate) fn is_current(&self, version: u64) -> bool {
        self.version == version
    }

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

    pub(crate) fn last_offset(&self) -> u64 {
        self.names.last().map_or(DOTDOT_OFFSET, |(at, _)| *at)
    }
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: OsString,
    pub kind: FileType,
    /// Equal to the `st_ino` a lookup of the entry reports.
    pub ino: u64,
    /// Which lower dirs hold the name, as the listing found them.
    pub lowers: LowerHint,
}

/// What a listing saw of one name in the lower dirs of its merged dir, so
/// that a lookup right after it (readdirplus) need not probe the lowers that
/// lack it. Lower layers never change under a mount, so what was seen there
/// stays true; the upper dir is always probed afresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerHint {
    /// How many lower dirs the listing read (0: no hint).
    pub lower_dirs: u8,
    /// Bit i: lower dir i has an object or a 0/0 whiteout of this name.
    pub present: u64,
    /// Bit i: lower dir i has an OCI whiteout `.wh.NAME`.
    pub oci_whiteout: u64,
}

impl LowerHint {
    /// Whether lower dir `i` of `lower_dirs` may hold the name (`true`
    /// when unknown).
    pub fn may_have(&self, i: usize, lower_dirs: usize) -> bool {
        !self.covers(lower_dirs) || self.present & (1 << i) != 0
    }

    /// Whether lower dir `i` may hold `.wh.NAME`.
    pub fn may_have_oci_whiteout(&self, i: usize, lower_dirs: usize) -> bool {
        !self.covers(lower_dirs) || self.oci_whiteout & (1 << i) != 0
    }

    /// Whether any lower dir after `i` may hold the name.
    pub fn may_have_below(&self, i: usize, lower_dirs: usize) -> bool {
        !self.covers(lower_dirs) || (i + 1 < 64 && self.present >> (i + 1) != 0)
    }

    fn covers(&self, lower_dirs: usize) -> bool {
        self.lower_dirs != 0 && usize::from(self.lower_dirs) == lower_dirs
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
