//! Peer scoring and selection (pure): measured throughput and latency as moving
//! averages, current load, failures, and how many of the wanted pieces a peer has.

/// What the downloader knows about one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStats {
    /// Bytes per second, exponentially weighted (0 until measured).
    pub throughput: f64,
    /// Seconds to first byte of a piece, exponentially weighted.
    pub latency: f64,
    pub inflight: usize,
    /// Recent failures (timeouts, bad pieces, dropped connections), decayed on success.
    pub failures: f64,
}

impl Default for PeerStats {
    fn default() -> Self {
        Self {
            throughput: 0.0,
            latency: 0.0,
            inflight: 0,
            failures: 0.0,
        }
    }
}

const ALPHA: f64 = 0.3;
/// Throughput assumed for an unmeasured peer (optimistic, so new peers get tried).
const DEFAULT_THROUGHPUT: f64 = 500e6;

impl PeerStats {
    pub fn record_success(&mut self, bytes: u64, secs: f64, first_byte_secs: f64) {
        let tp = bytes as f64 / secs.max(1e-6);
        self.throughput = if self.throughput == 0.0 {
            tp
        } else {
            ALPHA * tp + (1.0 - ALPHA) * self.throughput
        };
        self.latency = if self.latency == 0.0 {
            first_byte_secs
        } else {
            ALPHA * first_byte_secs + (1.0 - ALPHA) * self.latency
        };
        self.failures *= 0.5;
    }

    pub fn record_failure(&mut self) {
        self.failures += 1.0;
    }
}

/// Higher is better: expected rate, divided among current requests, penalised by
/// latency and failures, scaled by the share of wanted pieces the peer has.
pub fn score(s: &PeerStats, pieces_had: usize, pieces_wanted: usize) -> f64 {
    if pieces_had == 0 || pieces_wanted == 0 {
        return 0.0;
    }
    let tp = if s.throughput > 0.0 {
        s.throughput
    } else {
        DEFAULT_THROUGHPUT
    };
    let coverage = pieces_had as f64 / pieces_wanted as f64;
    tp / (1.0 + s.inflight as f64) / (1.0 + 10.0 * s.latency) / (1.0 + s.failures).powi(2)
        * coverage
}

/// Indexes of the best `k` candidates by score (ties keep input order), skipping
/// peers with nothing to offer.
pub fn select(candidates: &[(PeerStats, usize)], pieces_wanted: usize, k: usize) -> Vec<usize> {
    let mut scored: Vec<(usize, f64)> = candidates
        .iter()
        .enumerate()
        .map(|(i, (s, had))| (i, score(s, *had, pieces_wanted)))
        .filter(|(_, sc)| *sc > 0.0)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(k).map(|(i, _)| i).collect()
}

/// Order in which to request the missing pieces: rarest first among the selected
/// peers, then by index (so the stream to the client advances).
pub fn piece_order(missing: &[u32], availability: impl Fn(u32) -> usize) -> Vec<u32> {
    let mut v: Vec<(usize, u32)> = missing
        .iter()
        .map(|p| (availability(*p), *p))
        .filter(|(a, _)| *a > 0)
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faster_less_loaded_healthier_peers_win() {
        let fast = PeerStats {
            throughput: 1e9,
            ..Default::default()
        };
        let slow = PeerStats {
            throughput: 1e8,
            ..Default::default()
        };
        assert!(score(&fast, 16, 16) > score(&slow, 16, 16));
        let busy = PeerStats {
            throughput: 1e9,
            inflight: 9,
            ..Default::default()
        };
        assert!(score(&slow, 16, 16) > score(&busy, 16, 16) * 0.99);
        let flaky = PeerStats {
            throughput: 1e9,
            failures: 3.0,
            ..Default::default()
        };
        assert!(score(&fast, 16, 16) > score(&flaky, 16, 16) * 4.0);
        assert!(score(&fast, 16, 16) > score(&fast, 4, 16));
        assert_eq!(score(&fast, 0, 16), 0.0);
    }

    #[test]
    fn select_k_and_skip_empty() {
        let c = vec![
            (
                PeerStats {
                    throughput: 1e8,
                    ..Default::default()
                },
                16,
            ),
            (PeerStats::default(), 0),
            (
                PeerStats {
                    throughput: 1e9,
                    ..Default::default()
                },
                16,
            ),
            (
                PeerStats {
                    throughput: 5e8,
                    ..Default::default()
                },
                16,
            ),
        ];
        assert_eq!(select(&c, 16, 2), vec![2, 3]);
        assert_eq!(select(&c, 16, 10), vec![2, 3, 0]);
    }

    #[test]
    fn failures_decay_on_success() {
        let mut s = PeerStats::default();
        s.record_failure();
        s.record_failure();
        s.record_success(1 << 20, 0.01, 0.001);
        assert_eq!(s.failures, 1.0);
        assert!(s.throughput > 1e8);
    }

    #[test]
    fn rarest_first() {
        let avail = |p: u32| match p {
            0 => 3,
            1 => 1,
            2 => 0,
            _ => 2,
        };
        assert_eq!(piece_order(&[0, 1, 2, 3, 4], avail), vec![1, 3, 4, 0]);
    }
}
