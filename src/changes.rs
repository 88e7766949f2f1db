//! The change walk shared by `cowfs diff` and `cowfs export`: every path at
//! which the merged view of an upper dir over its lowers differs from the
//! lowers alone, read from the layers at rest (no mount).
//!
//! The walk goes through the upper dir only, so its time follows the size
//! of the upper, not of the lowers: in a dir the upper merges with lower
//! dirs, only the upper's entries (objects and whiteouts) are looked at,
//! each against what the lowers show under its name. Where the upper
//! replaces what the lowers show at a path (a new dir, an opaque dir, a
//! dir moved by a redirect, a dir over a lower non-dir), everything the
//! merged view shows below it is visited, lower entries included, since a
//! layer must carry all of it. Hard links of lower files are completed by
//! `linkgroups` (which may list a lower layer's dirs, see there).
//!
//! The result is a list of changes (`A`/`C`/`D` with what changed) for
//! diff, and a list of layer items (objects, whiteouts, opaque markers,
//! hard links) in archive order for export. Nothing is written.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::changeset::{Change, ChangeKind, Changeset, Item, Object, Place};
use crate::compare::{self, Side, What};
use crate::error::{SetupError, SetupResult};
use crate::format::Redirect;
use crate::layer::{LayerId, LayerStack, UPPER};
use crate::layerview::{self, DirContents, Found, LayerDir, OriginTarget, StackEntry};
use crate::linkgroups::{self, Index, LinkGroups, LinkKey};
use crate::sys::{self, Errno, FileType, Stat};

mod complete;

/// Walks the upper dir of `stack` over its lowers. `index` is the work
/// dir's index, if there is one. An error names the path on disk.
pub fn collect(stack: &LayerStack, index: Option<BorrowedFd<'_>>) -> SetupResult<Changeset> {
    let upper = stack
        .upper()
        .ok_or_else(|| SetupError::Invalid("no upper dir given".into()))?;
    let index_read = match index {
        Some(fd) => Index::read(stack, fd)
            .map_err(|e| SetupError::io("reading index dir of", &upper.path, e))?
            .map_err(|foreign| {
                SetupError::Invalid(format!(
                    "index entry {:?} of the work dir of {}: {}",
                    foreign.0,
                    upper.path.display(),
                    FOREIGN
                ))
            })?,
        None => Index::default(),
    };
    let mut walk = Walk {
        stack,
        index: index_read,
        index_fd: index,
        changes: Vec::new(),
        pending: Vec::new(),
        links: LinkGroups::default(),
    };
    walk.root()?;
    walk.complete_links()?;
    walk.give_parents()?;
    Ok(walk.finish())
}

const FOREIGN: &str =
    "its origin is not in the lower dirs given (was the upper written over other lowers?)";

/// A dir of the merged view, as the walk goes through it.
struct Dir {
    path: Vec<OsString>,
    upper: Option<LayerDir>,
    /// The lower dirs merged into it.
    merged: Vec<LayerDir>,
    /// The lower dirs the lowers alone show at its path.
    view: Vec<LayerDir>,
    /// Every entry below is given: the upper replaces what the lowers show.
    full: bool,
}

/// Which link group an object is in: its key, how many names the group
/// shows (when known), and the lower file whose untouched names are in it.
type Membership = (LinkKey, Option<u64>, Option<(u64, u64)>);

/// What the merged view shows at a name.
struct Shown {
    place: Place,
    stat: Stat,
    fd: OwnedFd,
    /// A metacopy file's data: the lower file.
    data: Option<(Place, OwnedFd, Stat)>,
    nlink: u64,
    link: Option<Membership>,
    /// For a dir: its upper dir, its lower dirs, and whether those are not
    /// the lowers' dirs of its path (opaque, or moved here by a redirect).
    upper_dir: Option<LayerDir>,
    merged: Vec<LayerDir>,
    hides_lowers: bool,
}

impl Shown {
    fn is_dir(&self) -> bool {
        sys::file_type(&self.stat) == FileType::Directory
    }

    fn object(&self) -> Object {
        Object {
            meta: self.place.clone(),
            data: self
                .data
                .as_ref()
                .map_or_else(|| self.place.clone(), |(p, _, _)| p.clone()),
            stat: self.stat,
        }
    }
}

struct Pending {
    item: Item,
    link: Option<LinkKey>,
    /// Given whatever its link group does.
    needed: bool,
}

struct Walk<'a> {
    stack: &'a LayerStack,
    index: Index,
    index_fd: Option<BorrowedFd<'a>>,
    changes: Vec<Change>,
    pending: Vec<Pending>,
    links: LinkGroups,
}

fn child_path(path: &[OsString], name: &OsStr) -> Vec<OsString> {
    let mut out = path.to_vec();
    out.push(name.to_os_string());
    out
}

impl<'a> Walk<'a> {
    /// The path on disk of `path` in `layer`.
    fn on_disk(&self, layer: LayerId, path: &[OsString]) -> PathBuf {
        let mut out = self.stack.get(layer).path.clone();
        out.extend(path);
        out
    }

    fn io(&self, layer: LayerId, path: &[OsString]) -> impl Fn(Errno) -> SetupError + use<> {
        let on_disk = self.on_disk(layer, path);
        move |e| SetupError::io("reading", on_disk.clone(), e)
    }

    fn foreign(&self, path: &[OsString]) -> SetupError {
        SetupError::Invalid(format!(
            "{}: {FOREIGN}",
            self.on_disk(UPPER, path).display()
        ))
    }

    /// The layer a stack lookup's errors are reported in.
    fn stack_layer(stack: &[LayerDir]) -> LayerId {
        stack.first().map_or(UPPER, |d| d.layer)
    }

    fn lookup(&self, stack: &[LayerDir], path: &[OsString]) -> SetupResult<StackEntry> {
        let name = path.last().map_or(OsStr::new(""), |n| n.as_os_str());
        layerview::lookup(stack, name).map_err(self.io(Self::stack_layer(stack), path))
    }

    fn list(&self, stack: &[LayerDir], path: &[OsString]) -> SetupResult<BTreeSet<OsString>> {
        layerview::list(stack).map_err(self.io(Self::stack_layer(stack), path))
    }

    fn root(&mut self) -> SetupResult<()> {
        let root_err = self.io(UPPER, &[]);
        let upper = LayerDir::root(self.stack, UPPER);
        let lowers: Vec<LayerDir> = self
            .stack
            .lowers()
            .iter()
            .map(|l| LayerDir::root(self.stack, l.id))
            .collect();
        let opaque = layerview::is_opaque(upper.fd.as_fd()).map_err(&root_err)?;
        let upper_st = sys::fstat(upper.fd.as_fd()).map_err(&root_err)?;
        if let Some(top) = lowers.first() {
            let lower_err = self.io(top.layer, &[]);
            let lower_st = sys::fstat(top.fd.as_fd()).map_err(&lower_err)?;
            self.check_dir_origin(upper.fd.as_fd(), Some(&lower_st), &[])?;
            let what = compare::compare(
                &Side {
                    fd: upper.fd.as_fd(),
                    stat: &upper_st,
                    nlink: 0,
                },
                None,
                &Side {
                    fd: top.fd.as_fd(),
                    stat: &lower_st,
                    nlink: 0,
                },
            )
            .map_err(&root_err)?;
            if what.any() {
                self.change(Vec::new(), ChangeKind::Changed, what);
                self.pending.push(Pending {
                    item: Item::Object {
                        path: Vec::new(),
                        object: Object {
                            meta: upper_place(&[]),
                            data: upper_place(&[]),
                            stat: upper_st,
                        },
                    },
                    link: None,
                    needed: true,
                });
            }
        }
        if opaque && !lowers.is_empty() {
            self.need(Item::Opaque(Vec::new()));
        }
        let root = Dir {
            path: Vec::new(),
            upper: Some(upper),
            merged: if opaque { Vec::new() } else { lowers.clone() },
            view: lowers,
            full: opaque,
        };
        self.walk_dir(&root)?;
        Ok(())
    }

    fn change(&mut self, path: Vec<OsString>, kind: ChangeKind, what: What) {
        self.changes.push(Change { path, kind, what });
    }

    fn need(&mut self, item: Item) {
        self.pending.push(Pending {
            item,
            link: None,
            needed: true,
        });
    }

    /// Visits a dir's entries; says whether any was given.
    fn walk_dir(&mut self, dir: &Dir) -> SetupResult<bool> {
        let contents = match &dir.upper {
            Some(upper) => {
                layerview::read_dir(upper.fd.as_fd()).map_err(self.io(UPPER, &dir.path))?
            }
            None => DirContents::default(),
        };
        let mut names: BTreeSet<OsString> = contents.objects.clone();
        names.extend(contents.whiteouts.iter().cloned());
        if dir.full {
            names.extend(self.list(&dir.merged, &dir.path)?);
            names.extend(self.list(&dir.view, &dir.path)?);
        }
        let mut given = false;
        for name in names {
            given |= self.visit(dir, &name, &contents)?;
        }
        Ok(given)
    }

    fn visit(&mut self, dir: &Dir, name: &OsStr, contents: &DirContents) -> SetupResult<bool> {
        let path = child_path(&dir.path, name);
        let view = self.lookup(&dir.view, &path)?;
        let shown = if contents.objects.contains(name) {
            self.upper_shown(dir, &path, &view)?
        } else if contents.whiteouts.contains(name) || !dir.full {
            None
        } else {
            let entry = self.lookup(&dir.merged, &path)?;
            self.lower_shown(entry)?
        };
        let Some(shown) = shown else {
            if view.top.is_none() {
                return Ok(false);
            }
            self.change(path.clone(), ChangeKind::Deleted, What::default());
            if dir.full {
                return Ok(false);
            }
            self.need(Item::Whiteout(path));
            return Ok(true);
        };
        self.visit_shown(dir, path, shown, view)
    }

    fn visit_shown(
        &mut self,
        dir: &Dir,
        path: Vec<OsString>,
        shown: Shown,
        view: StackEntry,
    ) -> SetupResult<bool> {
        let label = match &view.top {
            None => Some((ChangeKind::Added, What::default())),
            Some(lower) => {
                let what = self.compare_with(&shown, lower, &path)?;
                what.any().then_some((ChangeKind::Changed, what))
            }
        };
        if let Some((kind, what)) = label {
            self.change(path.clone(), kind, what);
        }
        if shown.is_dir() {
            let starts_full = !dir.full && (shown.hides_lowers || !view.is_dir());
            let view_is_dir = view.is_dir();
            let object = shown.object();
            let child = Dir {
                path: path.clone(),
                upper: shown.upper_dir,
                merged: shown.merged,
                view: if view_is_dir { view.dirs } else { Vec::new() },
                full: dir.full || starts_full,
            };
            let below = self.walk_dir(&child)?;
            if starts_full && view_is_dir {
                self.need(Item::Opaque(path.clone()));
            }
            let needed = dir.full || label.is_some() || below || starts_full;
            if needed {
                self.need(Item::Object { path, object });
            }
            return Ok(needed);
        }
        if view.is_dir() {
            // A dir became a non-dir: what it held is gone.
            for name in self.list(&view.dirs, &path)? {
                self.change(
                    child_path(&path, &name),
                    ChangeKind::Deleted,
                    What::default(),
                );
            }
        }
        let needed = dir.full || label.is_some();
        let link = shown.link.map(|(key, expected, lower)| {
            self.links.add(key, path.clone(), expected, lower);
            key
        });
        self.pending.push(Pending {
            item: Item::Object {
                path,
                object: shown.object(),
            },
            link,
            needed,
        });
        Ok(needed)
    }

    fn compare_with(&self, shown: &Shown, lower: &Found, path: &[OsString]) -> SetupResult<What> {
        let lower_err = self.io(lower.layer, &lower.path);
        let lower_fd = lower.open().map_err(&lower_err)?;
        let data = shown.data.as_ref().map(|(_, fd, st)| Side {
            fd: fd.as_fd(),
            stat: st,
            nlink: 0,
        });
        compare::compare(
            &Side {
                fd: shown.fd.as_fd(),
                stat: &shown.stat,
                nlink: shown.nlink,
            },
            data.as_ref(),
            &Side {
                fd: lower_fd.as_fd(),
                stat: &lower.stat,
                nlink: sys::nlink(&lower.stat),
            },
        )
        .map_err(self.io(UPPER, path))
    }

    /// What the merged view shows for an upper entry.
    fn upper_shown(
        &self,
        dir: &Dir,
        path: &[OsString],
        view: &StackEntry,
    ) -> SetupResult<Option<Shown>> {
        let err = self.io(UPPER, path);
        let Some(parent) = dir.upper.as_ref() else {
            return Ok(None);
        };
        let name = path.last().map_or(OsStr::new(""), |n| n.as_os_str());
        let Some(st) = sys::stat_at(parent.fd.as_fd(), name).map_err(&err)? else {
            return Ok(None);
        };
        let fd = sys::open_path(parent.fd.as_fd(), name).map_err(&err)?;
        let mut shown = Shown {
            place: upper_place(path),
            stat: st,
            fd,
            data: None,
            nlink: sys::nlink(&st),
            link: None,
            upper_dir: None,
            merged: Vec::new(),
            hides_lowers: false,
        };
        if shown.is_dir() {
            let child = parent.child(name).map_err(&err)?;
            self.upper_dir_lowers(dir, path, view, &child, &mut shown)?;
            shown.upper_dir = Some(child);
            return Ok(Some(shown));
        }
        let lower_nlink = match layerview::origin_of(self.stack, shown.fd.as_fd()).map_err(&err)? {
            OriginTarget::Foreign => return Err(self.foreign(path)),
            OriginTarget::Found { dev, ino, nlink } => Some((dev, ino, nlink)),
            OriginTarget::None | OriginTarget::Unchecked => None,
        };
        if sys::file_type(&st) == FileType::RegularFile
            && layerview::is_metacopy(shown.fd.as_fd()).map_err(&err)?
        {
            shown.data = Some(self.metacopy_data(dir, path, view, &shown, lower_nlink)?);
        }
        shown.nlink = linkgroups::nlink_of(shown.fd.as_fd(), &st, lower_nlink.map(|l| l.2))
            .map_err(&err)?
            .unwrap_or(shown.nlink);
        if let Some(entry) = self.index.by_upper_ino(st.st_ino) {
            let lower = entry.lower.map(|(dev, ino, _)| (dev, ino));
            shown.link = Some((LinkKey::Upper(st.st_ino), entry.merged_nlink, lower));
        } else if sys::nlink(&st) > 1 {
            shown.link = Some((LinkKey::Upper(st.st_ino), Some(sys::nlink(&st)), None));
        }
        Ok(Some(shown))
    }

    /// The lower dirs of an upper dir: none when opaque, those a redirect
    /// names, else the lowers' dirs of its name.
    fn upper_dir_lowers(
        &self,
        dir: &Dir,
        path: &[OsString],
        view: &StackEntry,
        child: &LayerDir,
        shown: &mut Shown,
    ) -> SetupResult<()> {
        let err = self.io(UPPER, path);
        let name = path.last().map_or(OsStr::new(""), |n| n.as_os_str());
        if layerview::is_opaque(child.fd.as_fd()).map_err(&err)? {
            shown.hides_lowers = true;
            return Ok(());
        }
        let redirect = match layerview::redirect_of(child.fd.as_fd()).map_err(&err)? {
            Some(Redirect::Absolute(to)) if to.as_slice() != path => Some(Redirect::Absolute(to)),
            Some(Redirect::Relative(to)) if to != name => Some(Redirect::Relative(to)),
            _ => None,
        };
        shown.merged = match &redirect {
            Some(Redirect::Absolute(to)) => {
                layerview::dirs_at_path(self.stack, to).map_err(self.io(UPPER, to))?
            }
            Some(Redirect::Relative(to)) => {
                let entry = self.lookup(&dir.merged, &child_path(&dir.path, to))?;
                if entry.is_dir() {
                    entry.dirs
                } else {
                    Vec::new()
                }
            }
            None if !dir.full => {
                if view.is_dir() {
                    view.dirs.clone()
                } else {
                    Vec::new()
                }
            }
            None => {
                let entry = self.lookup(&dir.merged, path)?;
                if entry.is_dir() {
                    entry.dirs
                } else {
                    Vec::new()
                }
            }
        };
        shown.hides_lowers = redirect.is_some();
        let top = match shown.merged.first() {
            Some(d) => Some(sys::fstat(d.fd.as_fd()).map_err(self.io(d.layer, &d.path))?),
            None => None,
        };
        self.check_dir_origin(child.fd.as_fd(), top.as_ref(), path)
    }

    /// A copied-up dir's origin must be the top lower dir merged into it.
    fn check_dir_origin(
        &self,
        upper: BorrowedFd<'_>,
        top: Option<&Stat>,
        path: &[OsString],
    ) -> SetupResult<()> {
        let origin = layerview::origin_of(self.stack, upper).map_err(self.io(UPPER, path))?;
        match (origin, top) {
            (OriginTarget::Foreign, _) | (OriginTarget::Found { .. }, None) => {
                Err(self.foreign(path))
            }
            (OriginTarget::Found { dev, ino, .. }, Some(st))
                if (dev, ino) != (st.st_dev, st.st_ino) =>
            {
                Err(self.foreign(path))
            }
            _ => Ok(()),
        }
    }

    /// The lower file a metacopy file's data is in: the one its redirect
    /// names, else the lowers' file of its name; it must be its origin.
    fn metacopy_data(
        &self,
        dir: &Dir,
        path: &[OsString],
        view: &StackEntry,
        shown: &Shown,
        origin: Option<(u64, u64, u64)>,
    ) -> SetupResult<(Place, OwnedFd, Stat)> {
        let err = self.io(UPPER, path);
        let found = match layerview::redirect_of(shown.fd.as_fd()).map_err(&err)? {
            Some(Redirect::Absolute(to)) => match to.split_last() {
                Some((_, parents)) => {
                    let dirs = layerview::dirs_at_path(self.stack, parents)
                        .map_err(self.io(UPPER, &to))?;
                    self.lookup(&dirs, &to)?.top
                }
                None => None,
            },
            Some(Redirect::Relative(to)) => {
                self.lookup(&dir.merged, &child_path(&dir.path, &to))?.top
            }
            None if !dir.full => view.top.clone(),
            None => self.lookup(&dir.merged, path)?.top,
        };
        let Some(found) = found.filter(|f| f.kind() == FileType::RegularFile) else {
            return Err(SetupError::Invalid(format!(
                "{}: a metacopy file whose data is in none of the lower dirs given",
                self.on_disk(UPPER, path).display()
            )));
        };
        if let Some((dev, ino, _)) = origin
            && (dev, ino) != (found.stat.st_dev, found.stat.st_ino)
        {
            return Err(self.foreign(path));
        }
        let fd = found.open().map_err(self.io(found.layer, &found.path))?;
        let place = Place::Layer {
            layer: found.layer,
            path: found.path.clone(),
        };
        Ok((place, fd, found.stat))
    }

    /// What the merged view shows for a lower entry of a dir the upper
    /// replaces (below a new, opaque or moved dir): the lower object, or
    /// the index's copy of it.
    fn lower_shown(&self, entry: StackEntry) -> SetupResult<Option<Shown>> {
        let Some(top) = entry.top else {
            return Ok(None);
        };
        let err = self.io(top.layer, &top.path);
        let kind = top.kind();
        let nlink = sys::nlink(&top.stat);
        let indexed = (kind == FileType::RegularFile && nlink > 1)
            .then(|| self.index.by_lower(&top.stat))
            .flatten();
        if let Some(entry) = indexed
            && let Some(shown) = self.index_shown(entry, &top)?
        {
            return Ok(Some(shown));
        }
        let fd = top.open().map_err(&err)?;
        let link = (kind != FileType::Directory && nlink > 1).then(|| {
            let id = (top.stat.st_dev, top.stat.st_ino);
            (LinkKey::Lower(id.0, id.1), Some(nlink), Some(id))
        });
        Ok(Some(Shown {
            place: Place::Layer {
                layer: top.layer,
                path: top.path.clone(),
            },
            stat: top.stat,
            fd,
            data: None,
            nlink,
            link,
            upper_dir: None,
            merged: if kind == FileType::Directory {
                entry.dirs
            } else {
                Vec::new()
            },
            hides_lowers: false,
        }))
    }

    /// What the merged view shows for a lower file the index holds a copy
    /// of: that copy, whose data is the lower file when it is a
    /// metadata-only one.
    fn index_shown(
        &self,
        entry: &linkgroups::IndexEntry,
        lower: &Found,
    ) -> SetupResult<Option<Shown>> {
        let Some(index_fd) = self.index_fd else {
            return Ok(None);
        };
        let err = self.io(lower.layer, &lower.path);
        let fd = sys::open_path(index_fd, &entry.name).map_err(&err)?;
        let data = if entry.metacopy {
            let data_fd = lower.open().map_err(&err)?;
            let place = Place::Layer {
                layer: lower.layer,
                path: lower.path.clone(),
            };
            Some((place, data_fd, lower.stat))
        } else {
            None
        };
        let id = entry.lower.map(|(dev, ino, _)| (dev, ino));
        Ok(Some(Shown {
            place: Place::Index(entry.name.clone()),
            stat: entry.stat,
            fd,
            data,
            nlink: entry.merged_nlink.unwrap_or(sys::nlink(&lower.stat)),
            link: Some((LinkKey::Upper(entry.stat.st_ino), entry.merged_nlink, id)),
            upper_dir: None,
            merged: Vec::new(),
            hides_lowers: false,
        }))
    }
}

fn upper_place(path: &[OsString]) -> Place {
    Place::Layer {
        layer: UPPER,
        path: path.to_vec(),
    }
}

/// Where the index of an upper's work dir is, if it has one.
pub fn open_index(workdir: &std::path::Path) -> SetupResult<Option<OwnedFd>> {
    let root = sys::open_root(workdir).map_err(|e| SetupError::io("work dir", workdir, e))?;
    match sys::open_path(root.as_fd(), OsStr::new("index")) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(SetupError::io("work dir", workdir.join("index"), e)),
    }
}
