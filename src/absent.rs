//! Names a lookup has just found in none of a dir's lower dirs, kept for
//! the create that follows.
//!
//! The kernel looks every new name up before it makes it (LOOKUP, then
//! MKNOD, MKDIR, SYMLINK…), and a create must know whether a lower dir
//! shows the name (then its upper dir needs a whiteout swapped out). The
//! lower layers never change under the mount, so what the lookup found
//! holds for as long as the dir's lowers are the same; a kept name is
//! trusted only while the dir's names version is the one read before the
//! lookup began (no name of the dir changed since), and only for that
//! incarnation of the dir. A small fixed table, one slot per dir number
//! modulo its size: a name pushed out by another dir's is looked up again,
//! never wrongly taken as absent.

use std::ffi::OsStr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::inode::Inode;

const SLOTS: usize = 64;

/// The names last found absent below, a slot per dir number.
pub struct AbsentBelow {
    slots: Vec<Mutex<Option<Kept>>>,
}

struct Kept {
    dir: u64,
    generation: u64,
    names_version: u64,
    name: Arc<OsStr>,
}

impl Default for AbsentBelow {
    fn default() -> Self {
        AbsentBelow {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl AbsentBelow {
    fn slot(&self, dir: &Inode) -> &Mutex<Option<Kept>> {
        &self.slots[(dir.ino % SLOTS as u64) as usize]
    }

    /// Keeps that no lower dir of `dir` shows `name`, as found by a lookup
    /// that began at `names_version`.
    pub fn note(&self, dir: &Inode, names_version: u64, name: &Arc<OsStr>) {
        *self.slot(dir).lock() = Some(Kept {
            dir: dir.ino,
            generation: dir.generation,
            names_version,
            name: name.clone(),
        });
    }

    /// Whether `name` is known to be in no lower dir of `dir`: kept by a
    /// lookup since which no name of `dir` changed. For a caller holding
    /// the dir's name lock (the version cannot move under it).
    pub fn known_absent(&self, dir: &Inode, name: &OsStr) -> bool {
        let now = dir.names_version();
        self.slot(dir).lock().as_ref().is_some_and(|kept| {
            kept.dir == dir.ino
                && kept.generation == dir.generation
                && kept.names_version == now
                && &*kept.name == name
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::Layers;
    use crate::sys::FileType;

    #[test]
    fn a_name_is_trusted_only_until_a_name_of_its_dir_changes() {
        let dir = Inode::new(5, FileType::Directory, Layers::default());
        let other = Inode::new(5 + SLOTS as u64, FileType::Directory, Layers::default());
        let absent = AbsentBelow::default();
        let name: Arc<OsStr> = Arc::from(OsStr::new("new"));
        absent.note(&dir, dir.names_version(), &name);
        assert!(absent.known_absent(&dir, OsStr::new("new")));
        assert!(!absent.known_absent(&dir, OsStr::new("other")));
        assert!(!absent.known_absent(&other, OsStr::new("new")));
        drop(dir.lock_names());
        assert!(!absent.known_absent(&dir, OsStr::new("new")));
        // A lookup that began before the change does not count after it.
        absent.note(&dir, dir.names_version() - 1, &name);
        assert!(!absent.known_absent(&dir, OsStr::new("new")));
        // Another dir sharing the slot pushes the name out.
        absent.note(&dir, dir.names_version(), &name);
        absent.note(&other, other.names_version(), &name);
        assert!(!absent.known_absent(&dir, OsStr::new("new")));
    }
}
