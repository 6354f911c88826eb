//! The memory tier: byte-weighted LRU of complete chunks plus the table of fills in
//! progress (the single-flight point).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use eliop2p_core::ChunkId;

use crate::fill::{Fill, FillError, FillWriter};

/// A complete, verified chunk. Immutable once built.
#[derive(Debug)]
pub struct Chunk {
    pub data: Bytes,
    /// SHA-256 of `data`, computed while the chunk was filled.
    pub sha256: [u8; 32],
}

#[derive(Clone, Debug)]
pub struct MemoryCacheConfig {
    /// Capacity in bytes of chunk data held in memory.
    pub capacity: u64,
}

/// Counters exported as metrics.
#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Lookups that joined a fill another request had started.
    pub joins: AtomicU64,
    pub fills_completed: AtomicU64,
    pub fills_failed: AtomicU64,
    pub evictions: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
}

/// Result of [`ChunkCache::lookup`].
pub enum Lookup {
    Hit(Arc<Chunk>),
    /// Another request is filling this chunk: read from the fill.
    Joined(Arc<Fill>),
    /// Nobody has it: the caller must fill it through the writer.
    Leader(FillWriter),
}

enum Slot {
    Ready { chunk: Arc<Chunk>, tick: u64 },
    Filling(Arc<Fill>),
}

struct Inner {
    slots: HashMap<ChunkId, Slot>,
    /// Recency order of ready chunks: tick -> id, oldest first.
    lru: BTreeMap<u64, ChunkId>,
    next_tick: u64,
    bytes: u64,
}

pub(crate) struct CacheShared {
    inner: Mutex<Inner>,
    capacity: u64,
    stats: CacheStats,
}

/// The L1 chunk cache. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ChunkCache {
    shared: Arc<CacheShared>,
}

impl ChunkCache {
    pub fn new(cfg: MemoryCacheConfig) -> Self {
        Self {
            shared: Arc::new(CacheShared {
                inner: Mutex::new(Inner {
                    slots: HashMap::new(),
                    lru: BTreeMap::new(),
                    next_tick: 0,
                    bytes: 0,
                }),
                capacity: cfg.capacity,
                stats: CacheStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.shared.stats
    }

    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// Finds a chunk, joins its fill, or makes the caller the leader of a new fill of
    /// `expected_len` bytes.
    pub fn lookup(&self, id: ChunkId, expected_len: u64) -> Lookup {
        let s = &self.shared;
        let mut inner = s.lock();
        let inner = &mut *inner;
        match inner.slots.get_mut(&id) {
            Some(Slot::Ready { chunk, tick }) => {
                let chunk = chunk.clone();
                inner.lru.remove(tick);
                *tick = inner.next_tick;
                inner.lru.insert(inner.next_tick, id);
                inner.next_tick += 1;
                s.stats.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(chunk)
            }
            Some(Slot::Filling(fill)) => {
                s.stats.joins.fetch_add(1, Ordering::Relaxed);
                Lookup::Joined(fill.clone())
            }
            None => {
                s.stats.misses.fetch_add(1, Ordering::Relaxed);
                let fill = Fill::new(id, expected_len);
                inner.slots.insert(id, Slot::Filling(fill.clone()));
                Lookup::Leader(FillWriter::new(fill, Arc::downgrade(&self.shared)))
            }
        }
    }

    /// A ready chunk, without starting a fill.
    pub fn get(&self, id: &ChunkId) -> Option<Arc<Chunk>> {
        match self.shared.lock().slots.get(id) {
            Some(Slot::Ready { chunk, .. }) => Some(chunk.clone()),
            _ => None,
        }
    }

    /// Drops a chunk (ready or not); a fill in progress completes for its readers
    /// but is not inserted.
    pub fn remove(&self, id: &ChunkId) -> bool {
        let s = &self.shared;
        let mut inner = s.lock();
        match inner.slots.remove(id) {
            Some(Slot::Ready { chunk, tick }) => {
                inner.lru.remove(&tick);
                inner.bytes -= chunk.data.len() as u64;
                s.publish_size(&inner);
                true
            }
            Some(Slot::Filling(_)) => true,
            None => false,
        }
    }
}

impl CacheShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent before it can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_size(&self, inner: &Inner) {
        self.stats.bytes.store(inner.bytes, Ordering::Relaxed);
        self.stats
            .entries
            .store(inner.lru.len() as u64, Ordering::Relaxed);
    }

    /// Called by the writer when its fill ends.
    pub(crate) fn complete(&self, fill: &Arc<Fill>, outcome: Result<Arc<Chunk>, FillError>) {
        let mut inner = self.lock();
        let id = fill.id();
        // Only the fill that is still registered may replace its slot: a removal
        // (invalidation) in the meantime must win.
        let registered = matches!(inner.slots.get(&id), Some(Slot::Filling(f)) if Arc::ptr_eq(f, fill));
        if !registered {
            return;
        }
        inner.slots.remove(&id);
        match outcome {
            Err(_) => {
                self.stats.fills_failed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(chunk) => {
                self.stats.fills_completed.fetch_add(1, Ordering::Relaxed);
                let size = chunk.data.len() as u64;
                if size > self.capacity {
                    return;
                }
                while inner.bytes + size > self.capacity {
                    let Some((_, victim)) = inner.lru.pop_first() else { break };
                    if let Some(Slot::Ready { chunk, .. }) = inner.slots.remove(&victim) {
                        inner.bytes -= chunk.data.len() as u64;
                        self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let tick = inner.next_tick;
                inner.next_tick += 1;
                inner.lru.insert(tick, id);
                inner.slots.insert(id, Slot::Ready { chunk, tick });
                inner.bytes += size;
            }
        }
        self.publish_size(&inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FillReader;

    fn id(n: u8) -> ChunkId {
        ChunkId::from_bytes([n; 32])
    }

    fn leader(cache: &ChunkCache, n: u8, len: u64) -> FillWriter {
        match cache.lookup(id(n), len) {
            Lookup::Leader(w) => w,
            _ => panic!("expected to lead the fill"),
        }
    }

    #[tokio::test]
    async fn single_flight_and_streaming_readers() {
        let cache = ChunkCache::new(MemoryCacheConfig { capacity: 1 << 20 });
        let mut w = leader(&cache, 1, 6);
        let fill = match cache.lookup(id(1), 6) {
            Lookup::Joined(f) => f,
            _ => panic!("second lookup must join"),
        };
        let mut reader = FillReader::new(fill.clone(), 1, 5);
        w.push(b"abc").unwrap();
        // The first bytes are readable before the chunk is complete.
        assert_eq!(reader.next().await.unwrap().unwrap(), Bytes::from_static(b"bc"));
        let late = FillReader::new(fill, 0, 6);
        w.push(b"def").unwrap();
        let chunk = w.finish().unwrap();
        assert_eq!(&chunk.data[..], b"abcdef");
        let expect: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(b"abcdef")).into();
        assert_eq!(chunk.sha256, expect);
        assert_eq!(reader.next().await.unwrap().unwrap(), Bytes::from_static(b"de"));
        assert!(reader.next().await.is_none());
        let mut late = late;
        let mut all = Vec::new();
        while let Some(b) = late.next().await {
            all.extend_from_slice(&b.unwrap());
        }
        assert_eq!(all, b"abcdef");
        assert!(matches!(cache.lookup(id(1), 6), Lookup::Hit(_)));
        assert_eq!(cache.stats().joins.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn abandoned_or_short_fill_leaves_nothing() {
        let cache = ChunkCache::new(MemoryCacheConfig { capacity: 1 << 20 });
        let mut w = leader(&cache, 2, 10);
        let fill = w.fill().clone();
        w.push(b"12345").unwrap();
        drop(w);
        assert_eq!(fill.wait().await.unwrap_err(), FillError::Abandoned);
        let w = leader(&cache, 2, 10);
        assert!(matches!(w.finish(), Err(FillError::LengthMismatch { expected: 10, got: 0 })));
        let mut w = leader(&cache, 2, 2);
        assert!(w.push(b"123").is_err());
        drop(w);
        assert!(cache.get(&id(2)).is_none());
        assert_eq!(cache.stats().bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn byte_weighted_lru_eviction() {
        let cache = ChunkCache::new(MemoryCacheConfig { capacity: 10 });
        for n in 0..3 {
            let mut w = leader(&cache, n, 4);
            w.push(b"xxxx").unwrap();
            w.finish().unwrap();
        }
        // 12 bytes > 10: the oldest went.
        assert!(cache.get(&id(0)).is_none());
        // Touch 1, insert 3: 2 is now the oldest.
        assert!(matches!(cache.lookup(id(1), 4), Lookup::Hit(_)));
        let mut w = leader(&cache, 3, 4);
        w.push(b"yyyy").unwrap();
        w.finish().unwrap();
        assert!(cache.get(&id(2)).is_none());
        assert!(cache.get(&id(1)).is_some());
        assert_eq!(cache.stats().bytes.load(Ordering::Relaxed), 8);
        // Larger than the whole cache: served to readers but not kept.
        let mut w = leader(&cache, 9, 11);
        w.push(&[0u8; 11]).unwrap();
        assert_eq!(w.finish().unwrap().data.len(), 11);
        assert!(cache.get(&id(9)).is_none());
    }

    #[tokio::test]
    async fn removal_during_fill_wins() {
        let cache = ChunkCache::new(MemoryCacheConfig { capacity: 100 });
        let mut w = leader(&cache, 4, 1);
        assert!(cache.remove(&id(4)));
        w.push(b"z").unwrap();
        w.finish().unwrap();
        assert!(cache.get(&id(4)).is_none());
    }
}
