//! Node metrics, rendered in the Prometheus text format on the admin listener.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use eliop2p_cache::ChunkCache;
use eliop2p_core::prom::{self, Kind};
use http::Method;

/// Where the bytes of a response came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Memory,
    Disk,
    Peer,
    Origin,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Disk => "disk",
            Source::Peer => "peer",
            Source::Origin => "origin",
        }
    }
}

/// A counter family: name, help, and (labels, value) series.
type Family<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(Method, u16), u64>>,
    pub bytes_memory: AtomicU64,
    pub bytes_disk: AtomicU64,
    pub bytes_peer: AtomicU64,
    pub bytes_origin: AtomicU64,
    /// Requests sent to the origin, by kind.
    pub origin_head: AtomicU64,
    pub origin_get: AtomicU64,
    pub origin_forward: AtomicU64,
    pub origin_errors: AtomicU64,
    /// Chunk reads asked again after a failed or cut origin request.
    pub origin_retries: AtomicU64,
    /// Responses served from cache on stale metadata while the origin was down.
    pub stale_served: AtomicU64,
    /// Fetch-through requests whose object size or ETag was not the origin's.
    pub fetch_through_refused: AtomicU64,
    /// Bytes received from the origin for chunk fills.
    pub origin_fill_bytes: AtomicU64,
    pub metadata_hits: AtomicU64,
    pub metadata_misses: AtomicU64,
    /// Responses whose body stream was cut because a fill failed after headers went out.
    pub aborted_responses: AtomicU64,
    /// Passthrough: cached answers the origin authorized, and client requests it
    /// denied.
    pub passthrough_authorized: AtomicU64,
    pub passthrough_auth_cache_hits: AtomicU64,
    /// Node mode with client keys: requests refused for a missing or bad signature.
    pub client_auth_failures: AtomicU64,
    pub passthrough_denied: AtomicU64,
    /// Replication commands executed, and the bytes they fetched.
    pub replication_commands: AtomicU64,
    pub replicated_bytes: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, method: &Method, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        // Cloning a standard method does not allocate.
        *map.entry((method.clone(), status)).or_insert(0) += 1;
    }

    pub fn add_bytes(&self, source: Source, n: u64) {
        match source {
            Source::Memory => self.bytes_memory.fetch_add(n, Relaxed),
            Source::Disk => self.bytes_disk.fetch_add(n, Relaxed),
            Source::Peer => self.bytes_peer.fetch_add(n, Relaxed),
            Source::Origin => self.bytes_origin.fetch_add(n, Relaxed),
        };
    }

    /// Prometheus text of the proxy's and the cache's metrics.
    pub fn render(&self, cache: &ChunkCache) -> String {
        let c = cache.stats();
        let (m, d) = (&c.memory, &c.disk);
        let heat = cache.heat_counts();
        let mut out = String::with_capacity(8192);
        {
            // Sorted, so the exposition is stable between scrapes.
            let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            let mut rows: Vec<(String, u64)> = map
                .iter()
                .map(|((m, st), n)| {
                    (
                        format!(
                            "method=\"{}\",status=\"{st}\"",
                            prom::label_value(m.as_str())
                        ),
                        *n,
                    )
                })
                .collect();
            rows.sort();
            prom::family(
                &mut out,
                "eliop2p_proxy_requests_total",
                Kind::Counter,
                "HTTP requests answered by the proxy, by method and status.",
                rows,
            );
        }
        let v = |a: &AtomicU64| a.load(Relaxed);
        let counters: [Family<'_>; 28] = [
            (
                "eliop2p_proxy_served_bytes_total",
                "Body bytes of GET responses, by the tier they came from.",
                &[
                    ("source=\"memory\"", v(&self.bytes_memory)),
                    ("source=\"disk\"", v(&self.bytes_disk)),
                    ("source=\"peer\"", v(&self.bytes_peer)),
                    ("source=\"origin\"", v(&self.bytes_origin)),
                ],
            ),
            (
                "eliop2p_origin_requests_total",
                "Requests the node sent to the origin, by kind.",
                &[
                    ("kind=\"head\"", v(&self.origin_head)),
                    ("kind=\"get\"", v(&self.origin_get)),
                    ("kind=\"forward\"", v(&self.origin_forward)),
                ],
            ),
            (
                "eliop2p_origin_errors_total",
                "Origin requests that failed without an HTTP answer.",
                &[("", v(&self.origin_errors))],
            ),
            (
                "eliop2p_stale_served_total",
                "Responses served from a complete cache on expired metadata while the origin was unreachable or answered 5xx (cache.stale_if_error).",
                &[("", v(&self.stale_served))],
            ),
            (
                "eliop2p_fetch_through_refused_total",
                "Fetch-through requests from peers refused: their object size or ETag was not the origin's.",
                &[("", v(&self.fetch_through_refused))],
            ),
            (
                "eliop2p_origin_retries_total",
                "Chunk reads asked of the origin again, from the last received byte.",
                &[("", v(&self.origin_retries))],
            ),
            (
                "eliop2p_origin_bytes_total",
                "Chunk bytes received from the origin.",
                &[("", v(&self.origin_fill_bytes))],
            ),
            (
                "eliop2p_metadata_lookups_total",
                "Object metadata lookups, by result.",
                &[
                    ("result=\"hit\"", v(&self.metadata_hits)),
                    ("result=\"miss\"", v(&self.metadata_misses)),
                ],
            ),
            (
                "eliop2p_cache_lookups_total",
                "Chunk lookups, by result (join = single-flight join of a fill in progress).",
                &[
                    ("result=\"hit\",tier=\"memory\"", v(&m.hits)),
                    ("result=\"hit\",tier=\"disk\"", v(&d.hits)),
                    ("result=\"miss\",tier=\"none\"", v(&c.misses)),
                    ("result=\"join\",tier=\"none\"", v(&c.joins)),
                ],
            ),
            (
                "eliop2p_cache_fills_total",
                "Chunk fills, by outcome.",
                &[
                    ("outcome=\"ok\"", v(&c.fills_completed)),
                    ("outcome=\"failed\"", v(&c.fills_failed)),
                ],
            ),
            (
                "eliop2p_cache_evictions_total",
                "Chunks evicted, by tier and reason.",
                &[
                    (
                        "tier=\"memory\",reason=\"capacity\"",
                        v(&m.evictions_capacity),
                    ),
                    (
                        "tier=\"memory\",reason=\"watermark\"",
                        v(&m.evictions_watermark),
                    ),
                    (
                        "tier=\"memory\",reason=\"invalidated\"",
                        v(&m.removals_invalidated),
                    ),
                    (
                        "tier=\"disk\",reason=\"capacity\"",
                        v(&d.evictions_capacity),
                    ),
                    (
                        "tier=\"disk\",reason=\"watermark\"",
                        v(&d.evictions_watermark),
                    ),
                    (
                        "tier=\"disk\",reason=\"invalidated\"",
                        v(&d.removals_invalidated),
                    ),
                    (
                        "tier=\"disk\",reason=\"disk_full\"",
                        v(&d.evictions_full),
                    ),
                ],
            ),
            (
                "eliop2p_cache_piece_buffers_reused_total",
                "Pieces written into a buffer of an evicted (or prefaulted) chunk instead of new memory.",
                &[("", cache.pool().reused())],
            ),
            (
                "eliop2p_inflight_waits_total",
                "Responses that waited for the in-flight budget (cache.inflight_size) before their next chunk.",
                &[("", cache.budget().waits())],
            ),
            (
                "eliop2p_readahead_skipped_total",
                "Read-ahead chunks not started because the in-flight budget was spent.",
                &[("", cache.budget().skipped())],
            ),
            (
                "eliop2p_cache_not_admitted_total",
                "Chunks the policy declined to keep (TinyLFU admission).",
                &[("", v(&c.not_admitted))],
            ),
            (
                "eliop2p_cache_demotions_total",
                "Chunks written to disk when evicted from memory.",
                &[("", v(&c.demotions))],
            ),
            (
                "eliop2p_cache_promotions_total",
                "Hot disk chunks read back into memory.",
                &[("", v(&c.promotions))],
            ),
            (
                "eliop2p_cache_disk_writes_total",
                "Chunks written to the disk tier.",
                &[("", v(&c.disk_writes))],
            ),
            (
                "eliop2p_cache_disk_write_errors_total",
                "Failed disk tier writes (disk full, unwritable path).",
                &[("", v(&c.disk_write_errors))],
            ),
            (
                "eliop2p_cache_disk_writes_skipped_total",
                "Write-behinds skipped because the write queue was full.",
                &[("", v(&c.disk_write_skipped))],
            ),
            (
                "eliop2p_cache_corrupt_chunks_total",
                "Chunks found corrupt on disk (deleted and refetched).",
                &[("", v(&c.corrupt_chunks))],
            ),
            (
                "eliop2p_cache_disk_open_errors_total",
                "Disk tier paths that could not be opened (tier disabled).",
                &[("", v(&c.disk_open_errors))],
            ),
            (
                "eliop2p_proxy_aborted_responses_total",
                "Responses cut short because a fill failed after the headers were sent.",
                &[("", v(&self.aborted_responses))],
            ),
            (
                "eliop2p_passthrough_authorizations_total",
                "Passthrough requests answered from cache after the origin authorized the client, and requests the origin denied.",
                &[
                    ("result=\"authorized\"", v(&self.passthrough_authorized)),
                    ("result=\"denied\"", v(&self.passthrough_denied)),
                ],
            ),
            (
                "eliop2p_passthrough_auth_cache_hits_total",
                "Passthrough requests served on a cached origin authorization of the same signature (proxy.auth_cache_ttl).",
                &[("", v(&self.passthrough_auth_cache_hits))],
            ),
            (
                "eliop2p_proxy_client_auth_failures_total",
                "Requests refused because their signature did not prove a configured client key.",
                &[("", v(&self.client_auth_failures))],
            ),
            (
                "eliop2p_replication_commands_total",
                "Replication commands from the control plane executed.",
                &[("", v(&self.replication_commands))],
            ),
            (
                "eliop2p_replication_bytes_total",
                "Chunk bytes fetched from peers by replicate commands.",
                &[("", v(&self.replicated_bytes))],
            ),
        ];
        for (name, help, series) in counters {
            prom::family(&mut out, name, Kind::Counter, help, series.iter().copied());
        }
        let gauges: [Family<'_>; 7] = [
            (
                "eliop2p_cache_bytes",
                "Bytes of chunk data held, by tier.",
                &[
                    ("tier=\"memory\"", v(&m.bytes)),
                    ("tier=\"disk\"", v(&d.bytes)),
                ],
            ),
            (
                "eliop2p_cache_entries",
                "Chunks held, by tier.",
                &[
                    ("tier=\"memory\"", v(&m.entries)),
                    ("tier=\"disk\"", v(&d.entries)),
                ],
            ),
            (
                "eliop2p_cache_capacity_bytes",
                "Configured capacity, by tier.",
                &[
                    ("tier=\"memory\"", cache.memory_capacity()),
                    ("tier=\"disk\"", cache.disk_capacity()),
                ],
            ),
            (
                "eliop2p_cache_chunks_by_heat",
                "Chunks held, by tier and heat level.",
                &[
                    ("tier=\"memory\",heat=\"cold\"", heat[0][0]),
                    ("tier=\"memory\",heat=\"warm\"", heat[0][1]),
                    ("tier=\"memory\",heat=\"hot\"", heat[0][2]),
                    ("tier=\"disk\",heat=\"cold\"", heat[1][0]),
                    ("tier=\"disk\",heat=\"warm\"", heat[1][1]),
                    ("tier=\"disk\",heat=\"hot\"", heat[1][2]),
                ],
            ),
            (
                "eliop2p_cache_piece_pool_bytes",
                "Bytes of piece buffers kept for reuse (with the memory tier, within its capacity).",
                &[("", cache.pool().pooled_bytes())],
            ),
            (
                "eliop2p_inflight_bytes",
                "Bytes of chunks responses hold against the in-flight budget, and its capacity (0 = unlimited).",
                &[
                    ("kind=\"used\"", cache.budget().used()),
                    ("kind=\"capacity\"", cache.budget().capacity()),
                ],
            ),
            (
                "eliop2p_cache_disk_write_queue_depth",
                "Chunks waiting to be written to disk.",
                &[("", v(&c.disk_queue_depth))],
            ),
        ];
        for (name, help, series) in gauges {
            prom::family(&mut out, name, Kind::Gauge, help, series.iter().copied());
        }
        out
    }

    /// The same numbers as JSON, for `/stats`.
    pub fn stats_json(&self, cache: &ChunkCache) -> serde_json::Value {
        let c = cache.stats();
        let v = |a: &AtomicU64| a.load(Relaxed);
        let heat = cache.heat_counts();
        let tier = |t: &eliop2p_cache::TierStats, capacity: u64, h: [u64; 3]| {
            serde_json::json!({
                "bytes": v(&t.bytes), "entries": v(&t.entries), "capacity_bytes": capacity, "hits": v(&t.hits),
                "evictions": {"capacity": v(&t.evictions_capacity), "watermark": v(&t.evictions_watermark), "invalidated": v(&t.removals_invalidated)},
                "heat": {"cold": h[0], "warm": h[1], "hot": h[2]},
            })
        };
        serde_json::json!({
            "memory": tier(&c.memory, cache.memory_capacity(), heat[0]),
            "disk": tier(&c.disk, cache.disk_capacity(), heat[1]),
            "misses": v(&c.misses), "joins": v(&c.joins),
            "fills": {"ok": v(&c.fills_completed), "failed": v(&c.fills_failed)},
            "not_admitted": v(&c.not_admitted), "demotions": v(&c.demotions), "promotions": v(&c.promotions),
            "disk_writes": v(&c.disk_writes), "disk_write_errors": v(&c.disk_write_errors), "disk_writes_skipped": v(&c.disk_write_skipped),
            "disk_write_queue_depth": v(&c.disk_queue_depth), "corrupt_chunks": v(&c.corrupt_chunks),
            "verified_on_start": v(&c.verified_on_start),
            "bytes_served": {"memory": v(&self.bytes_memory), "disk": v(&self.bytes_disk), "peer": v(&self.bytes_peer), "origin": v(&self.bytes_origin)},
            "origin_requests": {"head": v(&self.origin_head), "get": v(&self.origin_get), "forward": v(&self.origin_forward)},
        })
    }
}
