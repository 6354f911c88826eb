//! trace-replay: byte hit ratio of eliop2p's eviction policy against plain LRU and
//! W-TinyLFU (moka) at equal capacity, on synthetic chunk traces.
//!
//! `cargo run --release -p eliop2p-bench --bin trace-replay`
//!
//! Traces (chunk sizes: 85% full 16 MiB chunks, 15% short last chunks of 1-16 MiB;
//! the working set is 10x the cache):
//! - zipf-0.8, zipf-1.0: independent Zipf draws;
//! - zipf+scans: Zipf 0.8 with a one-pass scan of never-repeated chunks (2x the cache)
//!   every 50,000 requests;
//! - shifting: Zipf 1.0 whose hot set moves to other chunks every 100,000 requests.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use eliop2p_cache::policy::{Policy, PolicyConfig};
use eliop2p_core::ChunkId;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 16 * MIB;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Zipf {
    cdf: Vec<f64>,
}
impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

fn size_of(key: u64) -> u64 {
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if h % 100 < 85 {
        CHUNK
    } else {
        MIB + (h >> 8) % (15 * MIB)
    }
}

/// A trace: (key, size) requests.
fn trace(name: &str, keys: usize, requests: usize, capacity: u64) -> Vec<(u64, u64)> {
    let mut rng = Rng(0x5EED ^ name.len() as u64);
    let mut out = Vec::with_capacity(requests);
    let mut next_scan_key = 1u64 << 40;
    match name {
        "zipf-0.8" | "zipf-1.0" => {
            let z = Zipf::new(keys, if name == "zipf-0.8" { 0.8 } else { 1.0 });
            for _ in 0..requests {
                let k = z.sample(&mut rng) as u64;
                out.push((k, size_of(k)));
            }
        }
        "zipf+scans" => {
            let z = Zipf::new(keys, 0.8);
            while out.len() < requests {
                for _ in 0..50_000 {
                    let k = z.sample(&mut rng) as u64;
                    out.push((k, size_of(k)));
                }
                let mut scanned = 0;
                while scanned < 2 * capacity {
                    next_scan_key += 1;
                    let s = size_of(next_scan_key);
                    out.push((next_scan_key, s));
                    scanned += s;
                }
            }
            out.truncate(requests);
        }
        "shifting" => {
            let z = Zipf::new(keys, 1.0);
            for i in 0..requests {
                let phase = (i / 100_000) as u64;
                let k = (z.sample(&mut rng) as u64 + phase * (keys as u64 / 3)) % (keys as u64 * 4);
                out.push((k, size_of(k)));
            }
        }
        other => unreachable!("unknown trace {other}"),
    }
    out
}

fn chunk_id(key: u64) -> ChunkId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&key.to_be_bytes());
    b[8..16].copy_from_slice(&key.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    ChunkId::from_bytes(b)
}

/// Byte hit ratio of plain byte-weighted LRU.
fn run_lru(t: &[(u64, u64)], capacity: u64) -> f64 {
    let mut tick = 0u64;
    let mut order: BTreeMap<u64, u64> = BTreeMap::new();
    let mut map: HashMap<u64, (u64, u64)> = HashMap::new();
    let (mut used, mut hit, mut total) = (0u64, 0u64, 0u64);
    for &(k, s) in t {
        total += s;
        tick += 1;
        if let Some((old_tick, size)) = map.get(&k).copied() {
            hit += s;
            order.remove(&old_tick);
            order.insert(tick, k);
            map.insert(k, (tick, size));
            continue;
        }
        if s > capacity {
            continue;
        }
        while used + s > capacity {
            let (_, victim) = order.pop_first().expect("non-empty while over capacity");
            used -= map.remove(&victim).expect("indexed").1;
        }
        order.insert(tick, k);
        map.insert(k, (tick, s));
        used += s;
    }
    hit as f64 / total as f64
}

/// Byte hit ratio of moka (W-TinyLFU), weights in KiB.
fn run_moka(t: &[(u64, u64)], capacity: u64) -> f64 {
    let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::builder()
        .max_capacity(capacity / 1024)
        .weigher(|k: &u64, _| (size_of(*k) / 1024) as u32)
        .build();
    let (mut hit, mut total) = (0u64, 0u64);
    for (i, &(k, s)) in t.iter().enumerate() {
        total += s;
        if cache.get(&k).is_some() {
            hit += s;
        } else {
            cache.insert(k, ());
        }
        if i % 32 == 0 {
            cache.run_pending_tasks();
        }
    }
    hit as f64 / total as f64
}

/// Byte hit ratio of eliop2p's policy, driven as the memory tier drives it
/// (admission, evict until it fits), with a synthetic 1 ms per request clock.
fn run_ours(t: &[(u64, u64)], capacity: u64) -> f64 {
    let mut p = Policy::new(PolicyConfig::new(CHUNK, capacity));
    let (mut hit, mut total) = (0u64, 0u64);
    for (i, &(k, s)) in t.iter().enumerate() {
        let now = Duration::from_millis(i as u64);
        let id = chunk_id(k);
        total += s;
        let resident = p.contains(&id);
        p.record_access(&id, now);
        if resident {
            hit += s;
            continue;
        }
        if !p.admit(&id, s, capacity) {
            continue;
        }
        while p.bytes() + s > capacity {
            if p.evict_one(now).is_none() {
                break;
            }
        }
        p.insert(id, s, 1, now);
    }
    hit as f64 / total as f64
}

fn main() {
    let keys = 10_000usize;
    let avg = (0..keys as u64).map(size_of).sum::<u64>() / keys as u64;
    let capacity = keys as u64 * avg / 10;
    let requests = 400_000;
    println!(
        "trace-replay: {keys} chunks in the working set (avg {:.1} MiB), cache {:.1} GiB (1/10 of it), {requests} requests per trace",
        avg as f64 / MIB as f64,
        capacity as f64 / (1u64 << 30) as f64
    );
    println!();
    println!(
        "| {:<11} | {:>8} | {:>16} | {:>8} | {:>13} |",
        "trace", "LRU", "W-TinyLFU (moka)", "eliop2p", "ours vs best"
    );
    println!(
        "|{:-<13}|{:->10}|{:->18}|{:->10}|{:->15}|",
        "", "", "", "", ""
    );
    for name in ["zipf-0.8", "zipf-1.0", "zipf+scans", "shifting"] {
        let t = trace(name, keys, requests, capacity);
        let lru = run_lru(&t, capacity);
        let moka = run_moka(&t, capacity);
        let ours = run_ours(&t, capacity);
        let best = lru.max(moka);
        println!(
            "| {:<11} | {:>7.2}% | {:>15.2}% | {:>7.2}% | {:>+12.2}pp |",
            name,
            lru * 100.0,
            moka * 100.0,
            ours * 100.0,
            (ours - best) * 100.0
        );
    }
    println!();
    println!("byte hit ratio = bytes served from cache / bytes requested; pp = percentage points.");
}
