//! The eviction policy: a pure, clock-injected data structure (no I/O, no async),
//! shared by both tiers.
//!
//! Each chunk gets a priority combining four factors with configurable weights:
//!
//! ```text
//! priority = w_recency * L + frequency^w_frequency * replica_cost / size_in_chunks^w_size
//! replica_cost = 1 / (1 + w_replicas * (replicas - 1))
//! ```
//!
//! `L` is the priority of the last evicted chunk (GreedyDual inflation): chunks not
//! touched for a while fall behind chunks touched since, which is how recency
//! enters. `frequency` comes from a count-min sketch over every chunk seen, cached
//! or not, aged by halving (TinyLFU), so a chunk that keeps coming back is known
//! even after it was evicted. A chunk with many replicas elsewhere in the cluster is
//! cheaper to lose. The lowest priority is evicted first, in O(log n).
//!
//! Admission (TinyLFU): a new chunk that would need evictions is only admitted if
//! its frequency is at least that of the chunk it would displace, which keeps a
//! one-pass scan from flushing the working set. Heat (accesses per sliding window,
//! exponentially decayed) classifies chunks Hot/Warm/Cold and chunks accessed within
//! the protection window are never evicted.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use eliop2p_core::ChunkId;

/// Weights of the four factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvictionWeights {
    pub recency: f64,
    pub frequency: f64,
    pub replicas: f64,
    pub size: f64,
}

impl Default for EvictionWeights {
    fn default() -> Self {
        Self {
            recency: 1.0,
            frequency: 1.0,
            replicas: 0.5,
            size: 1.0,
        }
    }
}

impl std::str::FromStr for EvictionWeights {
    type Err = String;
    /// `"recency=1,frequency=1,replicas=0.5,size=1"`; unnamed factors keep defaults.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut w = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("expected name=value, got {part:?}"))?;
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("weight {name:?} is not a number: {value:?}"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!(
                    "weight {name:?} must be between 0 and 100, got {v}"
                ));
            }
            match name.trim() {
                "recency" => w.recency = v,
                "frequency" => w.frequency = v,
                "replicas" => w.replicas = v,
                "size" => w.size = v,
                other => {
                    return Err(format!(
                        "unknown weight {other:?} (recency, frequency, replicas, size)"
                    ));
                }
            }
        }
        Ok(w)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Heat {
    Cold,
    Warm,
    Hot,
}

impl Heat {
    pub fn as_str(self) -> &'static str {
        match self {
            Heat::Cold => "cold",
            Heat::Warm => "warm",
            Heat::Hot => "hot",
        }
    }
}

#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub weights: EvictionWeights,
    /// Size unit for the size factor (the chunk size).
    pub unit_bytes: u64,
    /// Heat is accesses per this window, decayed exponentially.
    pub heat_window: Duration,
    pub hot_threshold: f64,
    pub warm_threshold: f64,
    /// Chunks accessed more recently than this are never evicted.
    pub protect_recent: Duration,
    /// Expected number of entries (sizes the frequency sketch).
    pub expected_entries: usize,
}

impl PolicyConfig {
    pub fn new(unit_bytes: u64, capacity_bytes: u64) -> Self {
        Self {
            weights: EvictionWeights::default(),
            unit_bytes: unit_bytes.max(1),
            heat_window: Duration::from_secs(60),
            hot_threshold: 8.0,
            warm_threshold: 2.0,
            protect_recent: Duration::ZERO,
            expected_entries: (capacity_bytes / unit_bytes.max(1)).max(16) as usize,
        }
    }
}

/// Count-min sketch of 4-bit counters with periodic halving (TinyLFU's aging).
struct FrequencySketch {
    rows: [Vec<u8>; 4],
    mask: usize,
    additions: usize,
    sample: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl FrequencySketch {
    fn new(expected: usize) -> Self {
        let width = (expected * 4).next_power_of_two().max(64);
        Self {
            rows: std::array::from_fn(|_| vec![0u8; width]),
            mask: width - 1,
            additions: 0,
            sample: width * 10,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slots(&self, id: &ChunkId) -> [usize; 4] {
        let h = self.hasher.hash_one(id);
        let (a, b) = (h as u32 as usize, (h >> 32) as usize | 1);
        std::array::from_fn(|i| a.wrapping_add(i.wrapping_mul(b)) & self.mask)
    }

    fn increment(&mut self, id: &ChunkId) {
        for (row, slot) in self.slots(id).into_iter().enumerate() {
            let c = &mut self.rows[row][slot];
            *c = (*c + 1).min(15);
        }
        self.additions += 1;
        if self.additions >= self.sample {
            for row in &mut self.rows {
                for c in row.iter_mut() {
                    *c /= 2;
                }
            }
            self.additions /= 2;
        }
    }

    fn estimate(&self, id: &ChunkId) -> u8 {
        self.slots(id)
            .into_iter()
            .enumerate()
            .map(|(row, slot)| self.rows[row][slot])
            .min()
            .unwrap_or(0)
    }
}

/// Total-ordered f64 for the priority queue (priorities are finite by construction).
#[derive(Clone, Copy, Debug)]
struct Priority(f64);
impl PartialEq for Priority {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Priority {}
impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    key: (Priority, u64),
    size: u64,
    replicas: u32,
    last_access: Duration,
    heat: f64,
    heat_at: Duration,
}

/// What the policy knows about one resident chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntryInfo {
    pub size: u64,
    pub heat: Heat,
    pub replicas: u32,
}

/// The per-tier policy state. Time is passed in (`now` since an arbitrary epoch), so
/// tests drive it with a paused or synthetic clock.
pub struct Policy {
    cfg: PolicyConfig,
    entries: HashMap<ChunkId, Entry>,
    queue: BTreeMap<(Priority, u64), ChunkId>,
    sketch: FrequencySketch,
    inflation: f64,
    seq: u64,
    bytes: u64,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Self {
        let sketch = FrequencySketch::new(cfg.expected_entries);
        Self {
            cfg,
            entries: HashMap::new(),
            queue: BTreeMap::new(),
            sketch,
            inflation: 0.0,
            seq: 0,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.entries.contains_key(id)
    }

    fn priority(&self, id: &ChunkId, size: u64, replicas: u32) -> f64 {
        let w = self.cfg.weights;
        let freq = 1.0 + f64::from(self.sketch.estimate(id));
        let replica_cost = 1.0 / (1.0 + w.replicas * f64::from(replicas.saturating_sub(1)));
        let units = (size as f64 / self.cfg.unit_bytes as f64).max(1.0 / 1024.0);
        w.recency * self.inflation + freq.powf(w.frequency) * replica_cost / units.powf(w.size)
    }

    fn decayed_heat(&self, e: &Entry, now: Duration) -> f64 {
        let window = self.cfg.heat_window.as_secs_f64().max(1e-3);
        let dt = now.saturating_sub(e.heat_at).as_secs_f64();
        e.heat * (-dt / window).exp2()
    }

    fn heat_level(&self, heat: f64) -> Heat {
        if heat >= self.cfg.hot_threshold {
            Heat::Hot
        } else if heat >= self.cfg.warm_threshold {
            Heat::Warm
        } else {
            Heat::Cold
        }
    }

    fn requeue(&mut self, id: ChunkId) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let (size, replicas, old) = (e.size, e.replicas, e.key);
        let p = Priority(self.priority(&id, size, replicas));
        self.seq += 1;
        let key = (p, self.seq);
        self.queue.remove(&old);
        self.queue.insert(key, id);
        if let Some(e) = self.entries.get_mut(&id) {
            e.key = key;
        }
    }

    /// Records an access (hit or miss) to a chunk, resident or not; returns the
    /// chunk's heat level if it is resident.
    pub fn record_access(&mut self, id: &ChunkId, now: Duration) -> Option<Heat> {
        self.sketch.increment(id);
        let heat = {
            let e = self.entries.get(id)?;
            self.decayed_heat(e, now) + 1.0
        };
        if let Some(e) = self.entries.get_mut(id) {
            e.heat = heat;
            e.heat_at = now;
            e.last_access = now;
        }
        self.requeue(*id);
        Some(self.heat_level(heat))
    }

    /// Whether a chunk of `size` bytes should be admitted into a tier of `capacity`
    /// bytes: always when it fits, otherwise only if it is at least as frequent as the
    /// chunk it would displace first (TinyLFU admission).
    pub fn admit(&self, id: &ChunkId, size: u64, capacity: u64) -> bool {
        if size > capacity {
            return false;
        }
        if self.bytes + size <= capacity {
            return true;
        }
        match self.queue.first_key_value() {
            Some((_, victim)) => self.sketch.estimate(id) >= self.sketch.estimate(victim),
            None => true,
        }
    }

    /// Adds a resident chunk (after admission). Re-inserting updates size/replicas.
    pub fn insert(&mut self, id: ChunkId, size: u64, replicas: u32, now: Duration) {
        if let Some(old) = self.entries.remove(&id) {
            self.queue.remove(&old.key);
            self.bytes -= old.size;
        }
        let entry = Entry {
            key: (Priority(0.0), 0),
            size,
            replicas: replicas.max(1),
            last_access: now,
            heat: 1.0,
            heat_at: now,
        };
        self.entries.insert(id, entry);
        self.bytes += size;
        self.requeue(id);
    }

    /// Updates the cluster replica count of a resident chunk.
    pub fn set_replicas(&mut self, id: &ChunkId, replicas: u32) {
        if let Some(e) = self.entries.get_mut(id) {
            e.replicas = replicas.max(1);
            self.requeue(*id);
        }
    }

    pub fn remove(&mut self, id: &ChunkId) -> Option<u64> {
        let e = self.entries.remove(id)?;
        self.queue.remove(&e.key);
        self.bytes -= e.size;
        Some(e.size)
    }

    /// Picks the next chunk to evict (lowest priority that is not protected) and
    /// removes it from the policy, raising the inflation value. `None` if every
    /// resident chunk is protected.
    pub fn evict_one(&mut self, now: Duration) -> Option<(ChunkId, u64)> {
        let protect = self.cfg.protect_recent;
        let victim = self
            .queue
            .iter()
            .find(|(_, id)| {
                self.entries.get(id).is_some_and(|e| {
                    now.saturating_sub(e.last_access) >= protect || protect.is_zero()
                })
            })
            .map(|(k, id)| (*k, *id));
        let ((p, _), id) = victim?;
        self.inflation = self.inflation.max(p.0);
        let size = self.remove(&id)?;
        Some((id, size))
    }

    pub fn info(&self, id: &ChunkId, now: Duration) -> Option<EntryInfo> {
        let e = self.entries.get(id)?;
        Some(EntryInfo {
            size: e.size,
            heat: self.heat_level(self.decayed_heat(e, now)),
            replicas: e.replicas,
        })
    }

    /// Number of resident chunks per heat level (cold, warm, hot).
    /// Up to `limit` resident chunks at the given heat level or above, hottest first.
    /// The hottest entries at `min` heat or above, with their decayed heat.
    pub fn hottest(&self, now: Duration, min: Heat, limit: usize) -> Vec<(ChunkId, f64)> {
        let mut v: Vec<(f64, ChunkId)> = self
            .entries
            .iter()
            .map(|(id, e)| (self.decayed_heat(e, now), *id))
            .filter(|(h, _)| self.heat_level(*h) >= min)
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        v.into_iter().take(limit).map(|(h, id)| (id, h)).collect()
    }

    pub fn heat_counts(&self, now: Duration) -> [u64; 3] {
        let mut out = [0u64; 3];
        for e in self.entries.values() {
            out[self.heat_level(self.decayed_heat(e, now)) as usize] += 1;
        }
        out
    }
}

/// High/low watermarks of one tier: eviction starts above `high * capacity` and
/// stops at `low * capacity`.
#[derive(Clone, Copy, Debug)]
pub struct Watermarks {
    pub high: f64,
    pub low: f64,
}

impl Watermarks {
    /// Bytes to free now, given usage and capacity (0 when under the high mark).
    pub fn excess(&self, used: u64, capacity: u64) -> u64 {
        let high = (capacity as f64 * self.high) as u64;
        let low = (capacity as f64 * self.low) as u64;
        if used > high { used - low } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        ChunkId::from_bytes(b)
    }

    fn policy() -> Policy {
        Policy::new(PolicyConfig::new(16, 1600))
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn frequent_chunks_outlive_single_use_ones() {
        let mut p = policy();
        for n in 0..4 {
            p.insert(id(n), 16, 1, T0);
        }
        for _ in 0..5 {
            p.record_access(&id(0), T0);
            p.record_access(&id(2), T0);
        }
        let (a, _) = p.evict_one(T0).unwrap();
        let (b, _) = p.evict_one(T0).unwrap();
        let mut gone = [a, b];
        gone.sort();
        assert_eq!(gone, [id(1), id(3)]);
    }

    #[test]
    fn recency_through_inflation() {
        let mut p = policy();
        p.insert(id(1), 16, 1, T0);
        p.record_access(&id(1), T0);
        // Many evictions raise L; a newcomer then outranks the old frequent chunk.
        for n in 100..140 {
            p.insert(id(n), 16, 1, T0);
            p.record_access(&id(n), T0);
            p.record_access(&id(n), T0);
            p.record_access(&id(n), T0);
            p.evict_one(T0);
        }
        assert!(!p.contains(&id(1)), "a stale chunk is eventually evicted");
    }

    #[test]
    fn replicas_and_size_lower_priority() {
        let mut p = policy();
        p.insert(id(1), 16, 1, T0);
        p.insert(id(2), 16, 5, T0);
        assert_eq!(
            p.evict_one(T0).unwrap().0,
            id(2),
            "many replicas elsewhere: cheaper to lose"
        );
        let mut p = policy();
        p.insert(id(1), 16, 1, T0);
        p.insert(id(2), 64, 1, T0);
        assert_eq!(
            p.evict_one(T0).unwrap().0,
            id(2),
            "bigger chunk: less value per byte"
        );
        p.set_replicas(&id(1), 3);
        assert_eq!(p.info(&id(1), T0).unwrap().replicas, 3);
    }

    #[test]
    fn heat_rises_with_accesses_and_decays_over_time() {
        let mut cfg = PolicyConfig::new(16, 1600);
        cfg.heat_window = Duration::from_secs(10);
        cfg.hot_threshold = 4.0;
        cfg.warm_threshold = 2.0;
        let mut p = Policy::new(cfg);
        p.insert(id(1), 16, 1, T0);
        assert_eq!(p.info(&id(1), T0).unwrap().heat, Heat::Cold);
        assert_eq!(p.record_access(&id(1), T0), Some(Heat::Warm));
        p.record_access(&id(1), T0);
        assert_eq!(p.record_access(&id(1), T0), Some(Heat::Hot));
        assert_eq!(p.heat_counts(T0), [0, 0, 1]);
        // One window later heat has halved: 4 -> 2 (warm); three windows: cold.
        assert_eq!(
            p.info(&id(1), Duration::from_secs(10)).unwrap().heat,
            Heat::Warm
        );
        assert_eq!(
            p.info(&id(1), Duration::from_secs(30)).unwrap().heat,
            Heat::Cold
        );
        assert_eq!(p.record_access(&id(2), T0), None, "not resident");
    }

    #[test]
    fn protection_window() {
        let mut cfg = PolicyConfig::new(16, 1600);
        cfg.protect_recent = Duration::from_secs(5);
        let mut p = Policy::new(cfg);
        p.insert(id(1), 16, 1, T0);
        p.insert(id(2), 16, 1, Duration::from_secs(4));
        assert_eq!(p.evict_one(Duration::from_secs(6)).unwrap().0, id(1));
        assert!(
            p.evict_one(Duration::from_secs(6)).is_none(),
            "id 2 is protected until t=9"
        );
        assert_eq!(p.evict_one(Duration::from_secs(9)).unwrap().0, id(2));
    }

    #[test]
    fn admission_keeps_scans_out() {
        let mut p = policy();
        for n in 0..10 {
            p.insert(id(n), 16, 1, T0);
            for _ in 0..3 {
                p.record_access(&id(n), T0);
            }
        }
        assert!(
            !p.admit(&id(999), 16, 160),
            "a once-seen chunk does not displace a frequent one"
        );
        for _ in 0..6 {
            p.record_access(&id(999), T0);
        }
        assert!(p.admit(&id(999), 16, 160));
        assert!(p.admit(&id(998), 16, 1600), "fits: always admitted");
        assert!(!p.admit(&id(998), 2000, 1600), "larger than the tier");
    }

    #[test]
    fn watermarks() {
        let w = Watermarks {
            high: 0.9,
            low: 0.8,
        };
        assert_eq!(w.excess(85, 100), 0);
        assert_eq!(w.excess(95, 100), 15);
    }

    #[test]
    fn weights_parse_and_errors_name_the_factor() {
        let w: EvictionWeights = "recency=2, size=0".parse().unwrap();
        assert_eq!((w.recency, w.frequency, w.size), (2.0, 1.0, 0.0));
        assert!(
            "heat=1"
                .parse::<EvictionWeights>()
                .unwrap_err()
                .contains("heat")
        );
        assert!("size=x".parse::<EvictionWeights>().is_err());
        assert!("size=-1".parse::<EvictionWeights>().is_err());
    }

    #[test]
    fn byte_accounting() {
        let mut p = policy();
        p.insert(id(1), 10, 1, T0);
        p.insert(id(2), 20, 1, T0);
        p.insert(id(1), 5, 1, T0);
        assert_eq!((p.len(), p.bytes()), (2, 25));
        assert_eq!(p.remove(&id(2)), Some(20));
        assert_eq!(p.bytes(), 5);
    }
}
