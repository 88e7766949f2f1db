//! What the change walk adds once it has been through the upper: the
//! names of hard-link groups it did not reach (lower names of an indexed
//! file, lower names of a lower file some name of which is given), the
//! dirs holding given entries, and the result in archive order.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::{Pending, Walk, upper_place};
use crate::changeset::{ChangeKind, Changeset, Item, Object, Place, display_key};
use crate::error::{SetupError, SetupResult};
use crate::layer::UPPER;
use crate::layerview::{self, Found, LayerDir};
use crate::linkgroups::{self, LinkKey};
use crate::sys::{self, FileType};

impl Walk<'_> {
    /// The link groups of the pending items that go into the change.
    fn given_links(&self) -> HashSet<LinkKey> {
        self.pending
            .iter()
            .filter(|p| p.needed)
            .filter_map(|p| p.link)
            .collect()
    }

    /// Finds the names of hard-link groups the walk did not reach: lower
    /// names of an indexed file (they show the index's copy), and lower
    /// names of a lower file some name of which is given.
    pub(super) fn complete_links(&mut self) -> SetupResult<()> {
        let given = self.given_links();
        let wanted = self.links.incomplete(|key| match key {
            LinkKey::Upper(_) => true,
            LinkKey::Lower(..) => given.contains(key),
        });
        if wanted.is_empty() {
            return Ok(());
        }
        let scan_err = |e| SetupError::io("scanning lower dirs for hard links", PathBuf::new(), e);
        let hits = linkgroups::scan_lowers(self.stack, &wanted).map_err(scan_err)?;
        for (layer, path, ino) in hits {
            let dev = self.stack.get(layer).dev;
            let Some(&key) = wanted.get(&(dev, ino)) else {
                continue;
            };
            if self.links.has(&key, &path) {
                continue;
            }
            let Some(found) = linkgroups::shown_untouched(self.stack, layer, &path, ino)
                .map_err(self.io(layer, &path))?
            else {
                continue;
            };
            self.add_untouched_name(key, path, found)?;
        }
        Ok(())
    }

    fn add_untouched_name(
        &mut self,
        key: LinkKey,
        path: Vec<OsString>,
        found: Found,
    ) -> SetupResult<()> {
        let lower_place = Place::Layer {
            layer: found.layer,
            path: found.path.clone(),
        };
        let (object, needed) = match key {
            LinkKey::Upper(ino) => {
                let Some(shown) = self
                    .index
                    .by_upper_ino(ino)
                    .map(|entry| self.index_shown(entry, &found))
                    .transpose()?
                    .flatten()
                else {
                    return Ok(());
                };
                let what = self.compare_with(&shown, &found, &path)?;
                if what.any() {
                    self.change(path.clone(), ChangeKind::Changed, what);
                }
                (shown.object(), what.any())
            }
            LinkKey::Lower(..) => (
                Object {
                    meta: lower_place.clone(),
                    data: lower_place,
                    stat: found.stat,
                },
                false,
            ),
        };
        self.links.add(key, path.clone(), None, None);
        self.pending.push(Pending {
            item: Item::Object { path, object },
            link: Some(key),
            needed,
        });
        Ok(())
    }

    /// The pending items that go into the layer: each given one, and each
    /// name of a link group one name of which is given.
    fn kept(&self) -> impl Iterator<Item = &Pending> {
        let given = self.given_links();
        self.pending
            .iter()
            .filter(move |p| p.needed || p.link.is_some_and(|k| given.contains(&k)))
    }

    /// Gives the dirs that hold given entries, where the walk did not (the
    /// untouched dirs of lower hard links): unpacking an entry changes its
    /// dir's times, which the dir's own entry sets back.
    pub(super) fn give_parents(&mut self) -> SetupResult<()> {
        let mut dirs: HashSet<Vec<OsString>> = HashSet::new();
        let mut wanted: BTreeSet<Vec<OsString>> = BTreeSet::new();
        for pending in self.kept() {
            let (path, own) = match &pending.item {
                Item::Opaque(dir) => (dir, true),
                Item::Whiteout(path) => (path, false),
                Item::Link { path, .. } => (path, false),
                Item::Object { path, object } => {
                    if sys::file_type(&object.stat) == FileType::Directory {
                        dirs.insert(path.clone());
                    }
                    (path, false)
                }
            };
            // The dirs above the entry, and an opaque marker's own dir.
            let ends = if own { path.len() + 1 } else { path.len() };
            for end in 0..ends {
                wanted.insert(path[..end].to_vec());
            }
        }
        for path in wanted {
            if dirs.contains(&path) {
                continue;
            }
            let object = self.merged_dir(&path)?;
            self.need(Item::Object { path, object });
        }
        Ok(())
    }

    /// The merged view's dir at a path the walk did not go into: the upper
    /// dir if there is one, else the lowers' dir.
    fn merged_dir(&self, path: &[OsString]) -> SetupResult<Object> {
        if let Ok(fd) = layerview::open_in_layer(self.stack, UPPER, path) {
            let st = sys::fstat(fd.as_fd()).map_err(self.io(UPPER, path))?;
            if sys::file_type(&st) == FileType::Directory {
                return Ok(Object {
                    meta: upper_place(path),
                    data: upper_place(path),
                    stat: st,
                });
            }
        }
        let mut stack: Vec<LayerDir> = self
            .stack
            .lowers()
            .iter()
            .map(|l| LayerDir::root(self.stack, l.id))
            .collect();
        let mut top = None;
        for end in 1..=path.len() {
            let entry = self.lookup(&stack, &path[..end])?;
            top = entry.top;
            stack = entry.dirs;
        }
        let top = match top {
            Some(top) => top,
            None => {
                let root = stack.first().ok_or(()).map_err(|()| self.foreign(path))?;
                let st = sys::fstat(root.fd.as_fd()).map_err(self.io(root.layer, path))?;
                Found {
                    layer: root.layer,
                    path: Vec::new(),
                    stat: st,
                    parent: root.fd.clone(),
                }
            }
        };
        let place = Place::Layer {
            layer: top.layer,
            path: top.path,
        };
        Ok(Object {
            meta: place.clone(),
            data: place,
            stat: top.stat,
        })
    }

    /// The changes sorted by path; the items of every given entry and of
    /// every name of a given object's link group, in archive order, later
    /// names of an object as hard links to its first.
    pub(super) fn finish(mut self) -> Changeset {
        let given = self.given_links();
        let mut kept: Vec<Pending> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|p| p.needed || p.link.is_some_and(|k| given.contains(&k)))
            .collect();
        kept.sort_by(|a, b| a.item.order_key().cmp(&b.item.order_key()));
        let mut first_name: HashMap<LinkKey, Vec<OsString>> = HashMap::new();
        let items = kept
            .into_iter()
            .map(|p| match (p.link, p.item) {
                (Some(key), Item::Object { path, object }) => match first_name.get(&key) {
                    Some(target) => Item::Link {
                        path,
                        target: target.clone(),
                    },
                    None => {
                        first_name.insert(key, path.clone());
                        Item::Object { path, object }
                    }
                },
                (_, item) => item,
            })
            .collect();
        self.changes.sort_by_key(|c| display_key(&c.path));
        Changeset {
            changes: self.changes,
            items,
        }
    }
}
