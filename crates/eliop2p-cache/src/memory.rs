//! The two-tier chunk cache: the memory tier (L1) of complete chunks, the fills in
//! progress (the single-flight point), and the disk tier (L2) behind a bounded
//! write-behind queue.
//!
//! Flow: a completed fill is admitted to L1 by the policy and queued for L2 (write
//! behind; when the queue is full the write is skipped and counted, L1 keeps
//! serving). A chunk evicted from L1 that is not on disk is queued for L2
//! (demotion). An L2 hit is served from disk by range; when the chunk turns Hot it is
//! read back, verified, and promoted to L1. Each tier holds a chunk at most once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eliop2p_core::ChunkId;
use tokio::sync::{broadcast, mpsc};

use crate::disk::{DiskError, DiskStore};
use crate::fill::{Fill, FillError, FillWriter};
use crate::policy::{EvictionWeights, Heat, Policy, PolicyConfig, Watermarks};
use crate::pool::PiecePool;

/// A complete, verified chunk. Immutable once built.
#[derive(Debug)]
pub struct Chunk {
    /// The bytes, in the buffers they arrived in (see [`crate::ChunkData`]).
    pub data: crate::ChunkData,
    /// The chunk's hash ([`crate::chunk_root`] of its piece hashes).
    pub sha256: [u8; 32],
    /// SHA-256 of each piece, computed while the chunk was filled.
    pub piece_hashes: Vec<[u8; 32]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOnStart {
    /// Trust headers; pieces are still verified on their first read.
    No,
    /// Fully verify about 1% of the chunks (at least 16) in the background.
    Sample,
    /// Fully verify every chunk in the background.
    Full,
}

impl std::str::FromStr for VerifyOnStart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "false" => Ok(Self::No),
            "sample" => Ok(Self::Sample),
            "full" => Ok(Self::Full),
            other => Err(format!("expected false, sample or full, got {other:?}")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DiskTierConfig {
    pub path: PathBuf,
    pub capacity: u64,
    pub verify_on_start: VerifyOnStart,
    /// Chunks waiting to be written; beyond this, writes are skipped.
    pub write_queue: usize,
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub memory_capacity: u64,
    pub chunk_size: u64,
    pub disk: Option<DiskTierConfig>,
    pub weights: EvictionWeights,
    pub heat_window: Duration,
    pub hot_threshold: f64,
    pub warm_threshold: f64,
    pub protect_recent: Duration,
    pub watermarks: Watermarks,
    /// Touch the memory tier's buffers at start (see [`crate::PiecePool`]).
    pub memory_prefault: bool,
    /// Bytes of chunks that responses may hold outside the memory tier's
    /// accounting (see [`crate::Budget`]); 0 = unlimited.
    pub inflight_capacity: u64,
}

impl CacheConfig {
    /// Memory only, default policy.
    pub fn memory_only(memory_capacity: u64, chunk_size: u64) -> Self {
        Self {
            memory_capacity,
            chunk_size,
            disk: None,
            weights: EvictionWeights::default(),
            heat_window: Duration::from_secs(60),
            hot_threshold: 8.0,
            warm_threshold: 2.0,
            protect_recent: Duration::ZERO,
            watermarks: Watermarks {
                high: 0.9,
                low: 0.8,
            },
            memory_prefault: false,
            inflight_capacity: 1 << 30,
        }
    }

    fn policy(&self, capacity: u64) -> PolicyConfig {
        let mut p = PolicyConfig::new(self.chunk_size, capacity);
        p.weights = self.weights;
        p.heat_window = self.heat_window;
        p.hot_threshold = self.hot_threshold;
        p.warm_threshold = self.warm_threshold;
        p.protect_recent = self.protect_recent;
        p
    }
}

/// Counters of one tier, exported as metrics.
#[derive(Default, Debug)]
pub struct TierStats {
    pub hits: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
    /// Evictions to make room for a new chunk.
    pub evictions_capacity: AtomicU64,
    /// Evictions to bring usage from the high to the low watermark.
    pub evictions_watermark: AtomicU64,
    /// Chunks dropped because their object was overwritten or deleted.
    pub removals_invalidated: AtomicU64,
    /// Disk chunks evicted because the filesystem was full (ENOSPC) below the
    /// tier's capacity.
    pub evictions_full: AtomicU64,
}

#[derive(Default, Debug)]
pub struct CacheStats {
    pub memory: TierStats,
    pub disk: TierStats,
    pub misses: AtomicU64,
    /// Lookups that joined a fill another request had started.
    pub joins: AtomicU64,
    pub fills_completed: AtomicU64,
    pub fills_failed: AtomicU64,
    pub not_admitted: AtomicU64,
    pub demotions: AtomicU64,
    pub promotions: AtomicU64,
    pub disk_writes: AtomicU64,
    pub disk_write_errors: AtomicU64,
    /// Write-behind skipped because the queue was full.
    pub disk_write_skipped: AtomicU64,
    pub disk_queue_depth: AtomicU64,
    pub corrupt_chunks: AtomicU64,
    pub disk_open_errors: AtomicU64,
    pub verified_on_start: AtomicU64,
}

/// A change to what the cache holds, for announcing to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkEvent {
    /// A complete, verified chunk of this many bytes is now held.
    Added(ChunkId, u64),
    /// The chunk is gone from every tier (evicted, corrupt, invalidated).
    Removed(ChunkId),
}

/// What [`ChunkCache::peek`] finds.
pub enum Held {
    Memory(Arc<Chunk>),
    Disk(DiskChunk),
    Filling(Arc<Fill>),
}

/// Result of [`ChunkCache::lookup`].
pub enum Lookup {
    Hit(Arc<Chunk>),
    /// On the disk tier: read it by range.
    Disk(DiskChunk),
    /// Another request is filling this chunk: read from the fill.
    Joined(Arc<Fill>),
    /// Nobody has it: the caller must fill it through the writer.
    Leader(FillWriter),
}

enum Slot {
    Ready(Arc<Chunk>),
    Filling(Arc<Fill>),
}

struct Memory {
    slots: HashMap<ChunkId, Slot>,
    policy: Policy,
}

struct DiskTier {
    store: Arc<DiskStore>,
    policy: Mutex<Policy>,
    capacity: u64,
    write_tx: mpsc::Sender<(ChunkId, Arc<Chunk>)>,
    /// Queued or being written, to avoid duplicate writes.
    pending: Mutex<HashSet<ChunkId>>,
    promoting: Mutex<HashSet<ChunkId>>,
}

pub(crate) struct CacheShared {
    memory: Mutex<Memory>,
    disk: Option<DiskTier>,
    cfg: CacheConfig,
    stats: CacheStats,
    epoch: Instant,
    events_tx: broadcast::Sender<ChunkEvent>,
    last_disk_error_log: Mutex<Option<Instant>>,
    pool: Arc<PiecePool>,
    budget: Arc<crate::Budget>,
}

/// The chunk cache. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ChunkCache {
    shared: Arc<CacheShared>,
}

/// A chunk on the disk tier, read by range off the async workers.
#[derive(Clone)]
pub struct DiskChunk {
    pub id: ChunkId,
    pub len: u64,
    pub sha256: [u8; 32],
    shared: Arc<CacheShared>,
}

impl DiskChunk {
    /// Starts kernel read-ahead of `[start, end)` without waiting for it.
    pub fn prefetch(&self, start: u64, end: u64) {
        let Some(tier) = &self.shared.disk else {
            return;
        };
        let store = tier.store.clone();
        let id = self.id;
        drop(tokio::task::spawn_blocking(move || {
            store.prefetch(&id, start, end)
        }));
    }

    /// The SHA-256 of piece `index` (from the chunk's header, which every read of
    /// the piece is checked against).
    pub fn piece_hash(&self, index: u32) -> Option<[u8; 32]> {
        let tier = self.shared.disk.as_ref()?;
        tier.store.piece_hash(&self.id, index as usize)
    }

    /// Bytes `[start, end)`, verified per piece. A corrupt chunk is deleted from the
    /// tier and counted; the caller refetches it.
    pub async fn read_range(&self, start: u64, end: u64) -> Result<Bytes, DiskError> {
        let Some(tier) = &self.shared.disk else {
            return Err(DiskError::NotFound);
        };
        let store = tier.store.clone();
        let id = self.id;
        let r = tokio::task::spawn_blocking(move || store.read_range(&id, start, end))
            .await
            .unwrap_or_else(|e| Err(DiskError::Io(std::io::Error::other(e))));
        if let Err(DiskError::Corrupt(_) | DiskError::NotFound) = &r {
            self.shared.forget_disk(&id, true);
        }
        r
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves its state consistent before it can panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChunkCache {
    /// Opens the cache; with a disk tier, rebuilds its index from chunk headers
    /// (blocking work runs off the async workers). An unusable disk path disables the
    /// disk tier with an error log; the memory tier keeps working.
    pub async fn open(cfg: CacheConfig) -> Self {
        let (events_tx, _) = broadcast::channel(8192);
        let stats = CacheStats::default();
        let mut disk_parts = None;
        if let Some(dcfg) = cfg.disk.clone().filter(|d| d.capacity > 0) {
            let path = dcfg.path.clone();
            match tokio::task::spawn_blocking(move || DiskStore::open(&path)).await {
                Ok(Ok((store, report))) => {
                    tracing::info!(path = %dcfg.path.display(), chunks = report.chunks, bytes = report.bytes, temp_files_removed = report.temp_files_removed, bad_files_removed = report.bad_files_removed, "disk tier opened");
                    stats
                        .corrupt_chunks
                        .fetch_add(report.bad_files_removed, Relaxed);
                    disk_parts = Some((dcfg, Arc::new(store)));
                }
                Ok(Err(e)) => {
                    stats.disk_open_errors.fetch_add(1, Relaxed);
                    tracing::error!(path = %dcfg.path.display(), error = %e, "disk tier unusable, serving from memory and origin only");
                }
                Err(e) => tracing::error!(error = %e, "disk tier open task failed"),
            }
        }
        let (write_tx, write_rx) =
            mpsc::channel(disk_parts.as_ref().map_or(1, |(d, _)| d.write_queue.max(1)));
        let disk = disk_parts.as_ref().map(|(dcfg, store)| {
            let mut policy = Policy::new(cfg.policy(dcfg.capacity));
            for (id, len) in store.ids() {
                policy.insert(id, len, 1, Duration::ZERO);
            }
            DiskTier {
                store: store.clone(),
                policy: Mutex::new(policy),
                capacity: dcfg.capacity,
                write_tx,
                pending: Mutex::new(HashSet::new()),
                promoting: Mutex::new(HashSet::new()),
            }
        });
        let pool = Arc::new(PiecePool::new(cfg.memory_capacity));
        let budget = crate::Budget::new(cfg.inflight_capacity);
        let shared = Arc::new(CacheShared {
            memory: Mutex::new(Memory {
                slots: HashMap::new(),
                policy: Policy::new(cfg.policy(cfg.memory_capacity)),
            }),
            disk,
            cfg,
            stats,
            epoch: Instant::now(),
            events_tx,
            last_disk_error_log: Mutex::new(None),
            pool,
            budget,
        });
        shared.publish_sizes();
        if shared.cfg.memory_prefault {
            let pool = shared.pool.clone();
            let spawned = std::thread::Builder::new()
                .name("eliop2p-prefault".into())
                .spawn(move || {
                    let t0 = Instant::now();
                    pool.prefault();
                    tracing::info!(
                        bytes = pool.pooled_bytes(),
                        secs = t0.elapsed().as_secs_f64(),
                        "memory tier prefaulted"
                    );
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "memory prefault thread did not start");
            }
        }
        tokio::spawn(crate::trim::return_freed_memory(Arc::downgrade(&shared.budget)));
        if let Some((dcfg, _)) = disk_parts {
            tokio::spawn(write_behind(Arc::downgrade(&shared), write_rx));
            if dcfg.verify_on_start != VerifyOnStart::No {
                tokio::spawn(verify_on_start(shared.clone(), dcfg.verify_on_start));
            }
        }
        Self { shared }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.shared.stats
    }

    pub fn memory_capacity(&self) -> u64 {
        self.shared.cfg.memory_capacity
    }

    /// Buffers for whole pieces, reused from evicted chunks.
    /// The in-flight budget responses reserve chunks against.
    pub fn budget(&self) -> &Arc<crate::Budget> {
        &self.shared.budget
    }

    pub fn pool(&self) -> &Arc<PiecePool> {
        &self.shared.pool
    }

    pub fn disk_capacity(&self) -> u64 {
        self.shared.disk.as_ref().map_or(0, |d| d.capacity)
    }

    /// Resident chunks per heat level `[cold, warm, hot]`, per tier `[memory, disk]`.
    pub fn heat_counts(&self) -> [[u64; 3]; 2] {
        let now = self.shared.now();
        let mem = lock(&self.shared.memory).policy.heat_counts(now);
        let disk = self
            .shared
            .disk
            .as_ref()
            .map_or([0; 3], |d| lock(&d.policy).heat_counts(now));
        [mem, disk]
    }

    /// Up to `limit` Hot chunks (memory and disk), hottest first: what the control
    /// plane should consider replicating.
    pub fn hot_chunks(&self, limit: usize) -> Vec<ChunkId> {
        self.hot_chunks_with_heat(limit)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// [`Self::hot_chunks`] with each chunk's decayed heat.
    pub fn hot_chunks_with_heat(&self, limit: usize) -> Vec<(ChunkId, f64)> {
        let now = self.shared.now();
        let mut v = lock(&self.shared.memory)
            .policy
            .hottest(now, Heat::Hot, limit);
        if let Some(tier) = &self.shared.disk {
            for (id, h) in lock(&tier.policy).hottest(now, Heat::Hot, limit) {
                if v.len() >= limit {
                    break;
                }
                if !v.iter().any(|(c, _)| *c == id) {
                    v.push((id, h));
                }
            }
        }
        v
    }

    /// Chunks added to and removed from the cache, for announcing to the cluster.
    /// A lagging receiver loses the oldest events (and should resync from
    /// [`ChunkCache::held`]).
    pub fn subscribe_events(&self) -> broadcast::Receiver<ChunkEvent> {
        self.shared.events_tx.subscribe()
    }

    /// Every complete chunk held in memory or on disk, with its length.
    pub fn held(&self) -> Vec<(ChunkId, u64)> {
        let s = &self.shared;
        let mut out: Vec<(ChunkId, u64)> = lock(&s.memory)
            .slots
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Ready(c) => Some((*id, c.data.len())),
                Slot::Filling(_) => None,
            })
            .collect();
        if let Some(tier) = &s.disk {
            let mem: HashSet<ChunkId> = out.iter().map(|(id, _)| *id).collect();
            out.extend(
                tier.store
                    .ids()
                    .into_iter()
                    .filter(|(id, _)| !mem.contains(id)),
            );
        }
        out
    }

    /// The number of cluster nodes holding a chunk (this one included), which
    /// eviction weighs: a chunk with many replicas is cheaper to drop.
    pub fn set_replicas(&self, id: &ChunkId, replicas: u32) {
        let s = &self.shared;
        lock(&s.memory).policy.set_replicas(id, replicas);
        if let Some(tier) = &s.disk {
            lock(&tier.policy).set_replicas(id, replicas);
        }
    }

    /// Finds a chunk in memory or on disk, joins its fill, or makes the caller the
    /// leader of a new fill of `expected_len` bytes.
    pub fn lookup(&self, id: ChunkId, expected_len: u64) -> Lookup {
        let s = &self.shared;
        let now = s.now();
        {
            let mut mem = lock(&s.memory);
            let mem = &mut *mem;
            mem.policy.record_access(&id, now);
            match mem.slots.get(&id) {
                Some(Slot::Ready(chunk)) => {
                    s.stats.memory.hits.fetch_add(1, Relaxed);
                    return Lookup::Hit(chunk.clone());
                }
                Some(Slot::Filling(fill)) => {
                    s.stats.joins.fetch_add(1, Relaxed);
                    return Lookup::Joined(fill.clone());
                }
                None => {}
            }
            if let Some(tier) = &s.disk
                && let Some(entry) = tier.store.entry(&id)
            {
                s.stats.disk.hits.fetch_add(1, Relaxed);
                let heat = lock(&tier.policy).record_access(&id, now);
                if heat == Some(Heat::Hot) {
                    s.clone().promote(id);
                }
                return Lookup::Disk(DiskChunk {
                    id,
                    len: entry.len,
                    sha256: entry.sha256,
                    shared: s.clone(),
                });
            }
            s.stats.misses.fetch_add(1, Relaxed);
            let fill = Fill::new(id, expected_len);
            mem.slots.insert(id, Slot::Filling(fill.clone()));
            Lookup::Leader(FillWriter::new(fill, Arc::downgrade(s), s.pool.clone()))
        }
    }

    /// What this node holds of a chunk, without counting an access or starting a
    /// fill: for serving peers.
    pub fn peek(&self, id: &ChunkId) -> Option<Held> {
        let s = &self.shared;
        match lock(&s.memory).slots.get(id) {
            Some(Slot::Ready(c)) => return Some(Held::Memory(c.clone())),
            Some(Slot::Filling(f)) => return Some(Held::Filling(f.clone())),
            None => {}
        }
        let tier = s.disk.as_ref()?;
        let entry = tier.store.entry(id)?;
        Some(Held::Disk(DiskChunk {
            id: *id,
            len: entry.len,
            sha256: entry.sha256,
            shared: s.clone(),
        }))
    }

    /// Whether a chunk is in memory or on disk now (no fill is started).
    pub fn is_cached(&self, id: &ChunkId) -> Option<&'static str> {
        if matches!(
            lock(&self.shared.memory).slots.get(id),
            Some(Slot::Ready(_))
        ) {
            return Some("memory");
        }
        self.shared
            .disk
            .as_ref()
            .filter(|d| d.store.contains(id))
            .map(|_| "disk")
    }

    /// A ready chunk in memory, without starting a fill.
    pub fn get(&self, id: &ChunkId) -> Option<Arc<Chunk>> {
        match lock(&self.shared.memory).slots.get(id) {
            Some(Slot::Ready(chunk)) => Some(chunk.clone()),
            _ => None,
        }
    }

    /// Drops a chunk from both tiers (its object changed); a fill in progress
    /// completes for its readers but is not inserted.
    pub fn remove(&self, id: &ChunkId) {
        let s = &self.shared;
        {
            let mut mem = lock(&s.memory);
            if let Some(Slot::Ready(_)) = mem.slots.remove(id) {
                mem.policy.remove(id);
                s.stats.memory.removals_invalidated.fetch_add(1, Relaxed);
            }
        }
        if let Some(tier) = &s.disk
            && tier.store.contains(id)
        {
            s.stats.disk.removals_invalidated.fetch_add(1, Relaxed);
            s.forget_disk(id, false);
        }
        let _ = s.events_tx.send(ChunkEvent::Removed(*id));
        s.publish_sizes();
    }
}

impl CacheShared {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn publish_sizes(&self) {
        {
            let mem = lock(&self.memory);
            self.stats.memory.bytes.store(mem.policy.bytes(), Relaxed);
            self.pool.set_tier_bytes(mem.policy.bytes());
            self.stats
                .memory
                .entries
                .store(mem.policy.len() as u64, Relaxed);
        }
        if let Some(tier) = &self.disk {
            let p = lock(&tier.policy);
            self.stats.disk.bytes.store(p.bytes(), Relaxed);
            self.stats.disk.entries.store(p.len() as u64, Relaxed);
        }
    }

    /// Removes a chunk from the disk tier (file and policy), off the async workers.
    fn forget_disk(&self, id: &ChunkId, corrupt: bool) {
        let Some(tier) = &self.disk else { return };
        if lock(&tier.policy).remove(id).is_some() && corrupt {
            self.stats.corrupt_chunks.fetch_add(1, Relaxed);
            if self.get_memory(id).is_none() {
                let _ = self.events_tx.send(ChunkEvent::Removed(*id));
            }
        }
        let store = tier.store.clone();
        let id = *id;
        let remove = move || {
            if let Err(e) = store.remove(&id) {
                tracing::warn!(chunk_id = %id, error = %e, "removing chunk file failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(remove)),
            Err(_) => remove(),
        }
        self.publish_sizes();
    }

    /// Queues a chunk for the disk tier unless it is there or queued already.
    fn queue_disk_write(&self, id: ChunkId, chunk: &Arc<Chunk>) -> bool {
        let Some(tier) = &self.disk else { return false };
        if tier.store.contains(&id) || !lock(&tier.pending).insert(id) {
            return false;
        }
        match tier.write_tx.try_send((id, chunk.clone())) {
            Ok(()) => {
                self.stats.disk_queue_depth.fetch_add(1, Relaxed);
                true
            }
            Err(_) => {
                lock(&tier.pending).remove(&id);
                self.stats.disk_write_skipped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Inserts a complete chunk into memory, subject to admission; evicts (and
    /// demotes) victims to make room and down to the low watermark.
    fn insert_memory(&self, id: ChunkId, chunk: &Arc<Chunk>) -> bool {
        let size = chunk.data.len();
        let cap = self.cfg.memory_capacity;
        let now = self.now();
        let mut demote = Vec::new();
        let admitted = {
            let mut mem = lock(&self.memory);
            let mem = &mut *mem;
            if !mem.policy.admit(&id, size, cap) {
                false
            } else {
                let mut ok = true;
                while mem.policy.bytes() + size > cap {
                    match mem.policy.evict_one(now) {
                        Some((victim, _)) => {
                            if let Some(Slot::Ready(c)) = mem.slots.remove(&victim) {
                                demote.push((victim, c));
                            }
                            self.stats.memory.evictions_capacity.fetch_add(1, Relaxed);
                        }
                        None => {
                            ok = false; // everything left is protected
                            break;
                        }
                    }
                }
                if ok {
                    mem.policy.insert(id, size, 1, now);
                    mem.slots.insert(id, Slot::Ready(chunk.clone()));
                    let mut excess = self.cfg.watermarks.excess(mem.policy.bytes(), cap);
                    while excess > 0 {
                        let Some((victim, freed)) = mem.policy.evict_one(now) else {
                            break;
                        };
                        if let Some(Slot::Ready(c)) = mem.slots.remove(&victim) {
                            demote.push((victim, c));
                        }
                        self.stats.memory.evictions_watermark.fetch_add(1, Relaxed);
                        excess = excess.saturating_sub(freed);
                    }
                }
                ok
            }
        };
        self.publish_sizes();
        for (victim, c) in demote {
            if self.queue_disk_write(victim, &c) {
                self.stats.demotions.fetch_add(1, Relaxed);
                continue;
            }
            if !self
                .disk
                .as_ref()
                .is_some_and(|d| d.store.contains(&victim))
            {
                // Gone from every tier.
                let _ = self.events_tx.send(ChunkEvent::Removed(victim));
            }
            self.recycle(c);
        }
        if !admitted {
            self.stats.not_admitted.fetch_add(1, Relaxed);
        }
        admitted
    }

    /// Called by the writer when its fill ends.
    pub(crate) fn complete(&self, fill: &Arc<Fill>, outcome: Result<Arc<Chunk>, FillError>) {
        let id = fill.id();
        {
            let mut mem = lock(&self.memory);
            // Only the fill still registered may replace its slot: an invalidation in
            // the meantime must win.
            let registered =
                matches!(mem.slots.get(&id), Some(Slot::Filling(f)) if Arc::ptr_eq(f, fill));
            if !registered {
                return;
            }
            mem.slots.remove(&id);
        }
        match outcome {
            Err(_) => {
                self.stats.fills_failed.fetch_add(1, Relaxed);
            }
            Ok(chunk) => {
                self.stats.fills_completed.fetch_add(1, Relaxed);
                let in_memory = self.insert_memory(id, &chunk);
                let to_disk = self.queue_disk_write(id, &chunk);
                if in_memory || to_disk {
                    let len = chunk.data.len();
                    let _ = self.events_tx.send(ChunkEvent::Added(id, len));
                }
            }
        }
    }

    /// Reads a Hot disk chunk back (fully verified) and inserts it into memory.
    fn promote(self: Arc<Self>, id: ChunkId) {
        let Some(tier) = &self.disk else { return };
        if !lock(&tier.promoting).insert(id) {
            return;
        }
        let store = tier.store.clone();
        tokio::spawn(async move {
            let read = tokio::task::spawn_blocking(move || store.read_verified(&id)).await;
            match read {
                Ok(Ok((data, piece_hashes, sha256))) => {
                    let chunk = Arc::new(Chunk {
                        data: data.into(),
                        sha256,
                        piece_hashes,
                    });
                    if self.insert_memory(id, &chunk) {
                        self.stats.promotions.fetch_add(1, Relaxed);
                    }
                }
                Ok(Err(DiskError::Corrupt(_))) => self.forget_disk(&id, true),
                Ok(Err(e)) => tracing::debug!(chunk_id = %id, error = %e, "promotion read failed"),
                Err(e) => tracing::warn!(error = %e, "promotion task failed"),
            }
            if let Some(tier) = &self.disk {
                lock(&tier.promoting).remove(&id);
            }
        });
    }

    fn log_disk_error(&self, e: &std::io::Error) {
        self.stats.disk_write_errors.fetch_add(1, Relaxed);
        let mut last = lock(&self.last_disk_error_log);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::error!(error = %e, errors_total = self.stats.disk_write_errors.load(Relaxed), "disk tier write failed; serving from memory and origin (logged at most every 10s)");
        }
    }
}

impl CacheShared {
    /// Hands a chunk the memory tier dropped to the piece pool, unless something
    /// still holds it (then its memory goes when that lets go).
    pub(crate) fn recycle(&self, chunk: Arc<Chunk>) {
        if let Ok(c) = Arc::try_unwrap(chunk) {
            self.pool.give_chunk(c.data);
        }
    }

    fn get_memory(&self, id: &ChunkId) -> Option<Arc<Chunk>> {
        match lock(&self.memory).slots.get(id) {
            Some(Slot::Ready(c)) => Some(c.clone()),
            _ => None,
        }
    }
}

mod disk_tasks;
use disk_tasks::{verify_on_start, write_behind};

#[cfg(test)]
mod tests;
