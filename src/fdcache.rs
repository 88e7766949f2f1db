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

/// One LRU shard, with how often a look-up found its fd there or not
/// (counted under the shard's lock, which a look-up takes anyway).
struct ShardState {
    fds: LruCache<RealKey, Arc<OwnedFd>>,
    hits: u64,
    misses: u64,
}

type Shard = Mutex<ShardState>;

pub struct FdCache {
    shards: Vec<Shard>,
}

impl FdCache {
    pub fn new(capacity: usize) -> FdCache {
        let per_shard = NonZeroUsize::new((capacity / SHARDS).max(4)).unwrap_or(NonZeroUsize::MIN);
        FdCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(ShardState {
                        fds: LruCache::new(per_shard),
                        hits: 0,
                        misses: 0,
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, key: &RealKey) -> &Shard {
        let mix = key.real_ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(key.layer);
        &self.shards[(mix >> 59) as usize % SHARDS]
    }

    pub fn get(&self, layer: LayerId, real_ino: u64) -> Option<Arc<OwnedFd>> {
        let key = RealKey { layer, real_ino };
        let mut shard = self.shard(&key).lock();
        let found = shard.fds.get(&key).cloned();
        match found {
            Some(_) => shard.hits += 1,
            None => shard.misses += 1,
        }
        found
    }

    pub fn insert(&self, layer: LayerId, real_ino: u64, fd: Arc<OwnedFd>) {
        let key = RealKey { layer, real_ino };
        self.shard(&key).lock().fds.put(key, fd);
    }

    /// Forgets an object that was removed, so a new object that reuses its
    /// number is never answered with the old one's fd.
    pub fn remove(&self, layer: LayerId, real_ino: u64) {
        let key = RealKey { layer, real_ino };
        self.shard(&key).lock().fds.pop(&key);
    }

    /// Closes every cached fd (they are reopened on demand).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().fds.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().fds.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many look-ups found their fd here, and how many did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(hits, misses), shard| {
            let shard = shard.lock();
            (hits + shard.hits, misses + shard.misses)
        })
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
