//! What a download knows of one peer, and which pieces it would ask of it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use super::Source;
use super::bits::Bits;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct PeerState {
    pub(super) source: Source,
    /// For swarm peers (seeds have everything), and what a filling seed's
    /// bitmap shows filled.
    pub(super) have: Bits,
    /// Pieces asked of this peer, with when they were asked, in the order the
    /// peer serves them.
    pub(super) inflight: Vec<(u32, Duration)>,
    /// Bytes/s this peer delivered to us, moving average (0 = not measured).
    pub(super) rate: f64,
    pub(super) last_arrival: Option<Duration>,
    pub(super) last_bitmap: Duration,
    /// A standing query (`watch`) is out to this peer.
    pub(super) watching: bool,
    /// Not asked before this time (busy or failed).
    pub(super) paused_until: Duration,
    pub(super) failures: u32,
    /// Pieces this seed deferred, and until when they are not asked of it.
    pub(super) deferred: Vec<(u32, Duration)>,
}

impl PeerState {
    /// Whether the peer can serve `piece` at `now`.
    pub(super) fn has(&self, piece: u32, now: Duration) -> bool {
        if self.source == Source::Swarm {
            return self.have.get(piece as usize);
        }
        !self.deferred.iter().any(|(p, until)| *p == piece && *until > now)
    }

    /// Up to `take` pieces to ask of this peer, from `order` (the askable pieces,
    /// rarest first) and `wanted` (the same, in piece order). A seed is asked
    /// only for pieces no swarm peer has (`swarm_has`), so its uplink carries few
    /// copies of each. A seed still filling from the origin is asked for what its
    /// bitmap shows filled (rarest first, so askers spread over all of it: in
    /// fill order they all asked for the same next pieces and left the rest at
    /// one copy), then in fill order for what comes next. A random piece far
    /// beyond its fill would hold a request slot (and the seed's awaiting) for
    /// seconds.
    pub(super) fn pick(&self, take: usize, order: &[u32], wanted: &[u32], swarm_has: &[bool], now: Duration) -> Vec<u32> {
        let seed = self.source != Source::Swarm;
        let filling = self.source == Source::Origin;
        let filled = |i: &u32| self.have.get(*i as usize);
        let candidates = (order.iter().copied())
            .filter(|i| !filling || filled(i))
            .chain(wanted.iter().copied().filter(|i| filling && !filled(i)));
        candidates
            .filter(|&i| self.has(i, now) && !(seed && swarm_has[i as usize]))
            .take(take)
            .collect()
    }
}

/// The peers a download knows. Their states sit in a vector, and the lists a
/// poll walks (`Scheduler::asked`, `paused`, ...) hold indexes into it, so a
/// poll reads a peer's state without a map lookup: with the states in the map's
/// nodes, the B-tree walks (a cache miss a level) were half of a 1,000-node
/// simulation. A hash map from peer to index serves the calls that name a peer
/// (a probe where the B-tree walked two or three nodes), and `sorted` walks the
/// peers in their order where that order decides something.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound(deserialize = "P: serde::Deserialize<'de> + Eq + Hash"))]
pub(super) struct Table<P> {
    index: HashMap<P, usize>,
    ids: Vec<P>,
    states: Vec<PeerState>,
    /// The indexes, in the peers' order.
    sorted: Vec<usize>,
}

impl<P: Copy + Ord + Hash> Table<P> {
    pub(super) fn new() -> Self {
        Self { index: HashMap::new(), ids: Vec::new(), states: Vec::new(), sorted: Vec::new() }
    }

    pub(super) fn find(&self, p: &P) -> Option<usize> {
        self.index.get(p).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.states.len()
    }

    /// The peer at index `i`.
    pub(super) fn id(&self, i: usize) -> P {
        self.ids[i]
    }

    /// Adds a peer not in the table; returns its index.
    pub(super) fn insert(&mut self, p: P, s: PeerState) -> usize {
        let i = self.states.len();
        self.ids.push(p);
        self.states.push(s);
        self.index.insert(p, i);
        let at = self.sorted.partition_point(|&j| self.ids[j] < p);
        self.sorted.insert(at, i);
        i
    }

    /// Removes the peer at `i`: the last peer moves to `i`, and its old index
    /// is returned with the state, for the caller's lists to follow it.
    pub(super) fn remove(&mut self, i: usize) -> (PeerState, Option<usize>) {
        let last = self.states.len() - 1;
        self.index.remove(&self.ids[i]);
        self.sorted.retain(|&j| j != i);
        self.ids.swap_remove(i);
        let s = self.states.swap_remove(i);
        if i == last {
            return (s, None);
        }
        self.index.insert(self.ids[i], i);
        self.sorted.iter_mut().filter(|j| **j == last).for_each(|j| *j = i);
        (s, Some(last))
    }

    /// The indexes, in the peers' order.
    pub(super) fn in_order(&self) -> impl Iterator<Item = usize> + '_ {
        self.sorted.iter().copied()
    }

    /// The `i`th index in the peers' order.
    pub(super) fn nth_in_order(&self, i: usize) -> usize {
        self.sorted[i]
    }

    /// Every state, in index order.
    pub(super) fn states(&self) -> impl Iterator<Item = &PeerState> {
        self.states.iter()
    }
}

impl<P> std::ops::Index<usize> for Table<P> {
    type Output = PeerState;
    fn index(&self, i: usize) -> &PeerState {
        &self.states[i]
    }
}

impl<P> std::ops::IndexMut<usize> for Table<P> {
    fn index_mut(&mut self, i: usize) -> &mut PeerState {
        &mut self.states[i]
    }
}
