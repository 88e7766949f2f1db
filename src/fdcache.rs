//! A bounded cache of `O_PATH` fds to real objects in the layers.
//!
//! cowfs does not hold an fd per inode: a tree of a million files would need
//! a million fds. Objects are reached through their parent's fd and their
//! name, and the fds in use most are kept here, in shards so that threads
//! rarely wait on one another. The key is the real object (layer and real
//! inode number), so every overlay inode that shows it shares the fd.

use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::layer::{LayerId, RealKey};

const SHARDS: usize = 16;

type Shard = Mutex<LruCache<RealKey, Arc<OwnedFd>>>;

pub struct FdCache {
    shards: Vec<Shard>,
}

impl FdCache {
    pub fn new(capacity: usize) -> FdCache {
        let per_shard = NonZeroUsize::new((capacity / SHARDS).max(4)).unwrap_or(NonZeroUsize::MIN);
        FdCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    fn shard(&self, key: &RealKey) -> &Shard {
        let mix = key.real_ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(key.layer);
        &self.shards[(mix >> 59) as usize % SHARDS]
    }

    pub fn get(&self, layer: LayerId, real_ino: u64) -> Option<Arc<OwnedFd>> {
        let key = RealKey { layer, real_ino };
        self.shard(&key).lock().get(&key).cloned()
    }

    pub fn insert(&self, layer: LayerId, real_ino: u64, fd: Arc<OwnedFd>) {
        let key = RealKey { layer, real_ino };
        self.shard(&key).lock().put(key, fd);
    }

    /// Forgets an object that was removed, so a new object that reuses its
    /// number is never answered with the old one's fd.
    pub fn remove(&self, layer: LayerId, real_ino: u64) {
        let key = RealKey { layer, real_ino };
        self.shard(&key).lock().pop(&key);
    }

    /// Closes every cached fd (they are reopened on demand).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = FdCache::new(64);
        for ino in 0..1000u64 {
            let fd = std::fs::File::open("/dev/null").map(OwnedFd::from);
            if let Ok(fd) = fd {
                cache.insert(1, ino, Arc::new(fd));
            }
        }
        assert!(cache.len() <= 64, "len {}", cache.len());
        assert!(cache.get(1, 999).is_some(), "recent entries stay");
        cache.remove(1, 999);
        assert!(cache.get(1, 999).is_none());
    }
}
