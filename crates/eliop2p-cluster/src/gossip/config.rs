//! Gossip timings and SWIM parameters.

#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Milliseconds between rounds (one probe each).
    pub interval_ms: u64,
    /// Members sent fresh membership changes per round.
    pub fanout: usize,
    /// A probed member that answers neither directly nor through the indirect
    /// probes for this long is suspect.
    pub suspect_after_ms: u64,
    /// A suspect member that has not refuted this long after its probe began is
    /// dead.
    pub dead_after_ms: u64,
    /// Dead and left members stop being gossiped after this (kept as tombstones).
    pub forget_after_ms: u64,
    /// Rounds between join attempts to seeds that are not live members.
    pub rejoin_every: u64,
    /// Owners after the first that also index a chunk's holders.
    pub backups: usize,
    /// Members asked to probe a member that did not answer (`PingReq`).
    pub indirect: usize,
    /// Times a change is piggybacked: this times `ceil(log10(n + 1))`.
    pub retransmit_mult: u32,
    /// Rounds between full push-pull exchanges at least; the period grows as
    /// `n / 4` rounds above that.
    pub push_pull_rounds: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1000,
            fanout: 3,
            suspect_after_ms: 5000,
            dead_after_ms: 10_000,
            forget_after_ms: 60_000,
            rejoin_every: 10,
            backups: 1,
            indirect: 3,
            retransmit_mult: 4,
            push_pull_rounds: 30,
        }
    }
}

impl GossipConfig {
    /// How long a member stays suspect before it is declared dead.
    pub(super) fn suspicion_ms(&self) -> u64 {
        self.dead_after_ms
            .saturating_sub(self.suspect_after_ms)
            .max(self.interval_ms)
    }

    /// How long a probe waits for an ack: past the indirect probes of the next round.
    pub(super) fn probe_timeout_ms(&self) -> u64 {
        self.suspect_after_ms.max(2 * self.interval_ms)
    }

    /// Times a change is sent in a cluster of `n`.
    pub(super) fn retransmits(&self, n: usize) -> u32 {
        let mut digits = 1;
        let mut x = n + 1;
        while x > 10 {
            x = x.div_ceil(10);
            digits += 1;
        }
        self.retransmit_mult.max(1) * digits
    }

    /// Rounds between push-pull exchanges in a cluster of `n`.
    pub fn push_pull_every(&self, n: usize) -> u64 {
        self.push_pull_rounds.max(1).max(n as u64 / 4)
    }

    /// Upper bound on how long a crashed member of a cluster of `n` keeps being
    /// treated as live somewhere: some member probes it within a few rounds (each
    /// round every member probes one, so it goes unprobed for `r` rounds with
    /// probability ~e^-r), the probe fails and the suspicion runs out `dead_after`
    /// after that probe began, and the death reaches everyone in O(log n) rounds
    /// (piggybacked and sent to `fanout` members a round, while every member that
    /// heard the suspicion also runs its own timer).
    pub fn detection_bound_ms(&self, n: usize) -> u64 {
        let log = (n.max(2) as f64).ln() / ((self.fanout.max(1) + 2) as f64).ln();
        self.dead_after_ms + self.interval_ms * (6 + 2 * log.ceil() as u64)
    }
}

