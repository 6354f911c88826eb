//! Node metrics, rendered in the Prometheus text format on the admin listener.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use eliop2p_cache::CacheStats;

/// Where the bytes of a response came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Memory,
    Origin,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Origin => "origin",
        }
    }
}

/// A counter family: name, help, and (labels, value) series.
type Family<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub bytes_memory: AtomicU64,
    pub bytes_origin: AtomicU64,
    /// Requests sent to the origin, by kind.
    pub origin_head: AtomicU64,
    pub origin_get: AtomicU64,
    pub origin_forward: AtomicU64,
    pub origin_errors: AtomicU64,
    /// Bytes received from the origin for chunk fills.
    pub origin_fill_bytes: AtomicU64,
    pub metadata_hits: AtomicU64,
    pub metadata_misses: AtomicU64,
    /// Responses whose body stream was cut because a fill failed after headers went out.
    pub aborted_responses: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, method: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((method.to_owned(), status)).or_insert(0) += 1;
    }

    pub fn add_bytes(&self, source: Source, n: u64) {
        match source {
            Source::Memory => self.bytes_memory.fetch_add(n, Relaxed),
            Source::Origin => self.bytes_origin.fetch_add(n, Relaxed),
        };
    }

    pub fn render(&self, cache: &CacheStats, cache_capacity: u64) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP eliop2p_proxy_requests_total HTTP requests answered by the proxy, by method and status.\n# TYPE eliop2p_proxy_requests_total counter\n");
        {
            let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((method, status), n) in map.iter() {
                let _ = writeln!(out, "eliop2p_proxy_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}");
            }
        }
        let counters: [Family<'_>; 9] = [
            (
                "eliop2p_proxy_bytes_served_total",
                "Body bytes of GET responses, by the tier they came from.",
                &[("source=\"memory\"", self.bytes_memory.load(Relaxed)), ("source=\"origin\"", self.bytes_origin.load(Relaxed))],
            ),
            (
                "eliop2p_origin_requests_total",
                "Requests the node sent to the origin, by kind.",
                &[
                    ("kind=\"head\"", self.origin_head.load(Relaxed)),
                    ("kind=\"get\"", self.origin_get.load(Relaxed)),
                    ("kind=\"forward\"", self.origin_forward.load(Relaxed)),
                ],
            ),
            ("eliop2p_origin_errors_total", "Origin requests that failed without an HTTP answer.", &[("", self.origin_errors.load(Relaxed))]),
            ("eliop2p_origin_bytes_total", "Chunk bytes received from the origin.", &[("", self.origin_fill_bytes.load(Relaxed))]),
            (
                "eliop2p_metadata_lookups_total",
                "Object metadata lookups, by result.",
                &[("result=\"hit\"", self.metadata_hits.load(Relaxed)), ("result=\"miss\"", self.metadata_misses.load(Relaxed))],
            ),
            (
                "eliop2p_cache_lookups_total",
                "Chunk lookups in the memory tier, by result (join = single-flight join of a fill in progress).",
                &[
                    ("tier=\"memory\",result=\"hit\"", cache.hits.load(Relaxed)),
                    ("tier=\"memory\",result=\"miss\"", cache.misses.load(Relaxed)),
                    ("tier=\"memory\",result=\"join\"", cache.joins.load(Relaxed)),
                ],
            ),
            (
                "eliop2p_cache_fills_total",
                "Chunk fills, by outcome.",
                &[("outcome=\"ok\"", cache.fills_completed.load(Relaxed)), ("outcome=\"failed\"", cache.fills_failed.load(Relaxed))],
            ),
            ("eliop2p_cache_evictions_total", "Chunks evicted from the memory tier.", &[("tier=\"memory\"", cache.evictions.load(Relaxed))]),
            ("eliop2p_proxy_aborted_responses_total", "Responses cut short because a fill failed after the headers were sent.", &[("", self.aborted_responses.load(Relaxed))]),
        ];
        for (name, help, series) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        let gauges: [(&str, &str, u64); 3] = [
            ("eliop2p_cache_bytes", "Bytes of chunk data held in the memory tier.", cache.bytes.load(Relaxed)),
            ("eliop2p_cache_entries", "Chunks held in the memory tier.", cache.entries.load(Relaxed)),
            ("eliop2p_cache_capacity_bytes", "Configured capacity of the memory tier.", cache_capacity),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{tier=\"memory\"}} {v}");
        }
        out
    }
}
