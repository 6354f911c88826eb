//! Piece scheduling for one chunk download (pure: no I/O, time passed in), shared
//! by the socket downloader (`download`) and the swarm simulator
//! (`tests/swarm_sim.rs`), so the code measured at 5,000 simulated nodes is the
//! code that runs.
//!
//! The download knows a set of peers, each a *seed* (the whole chunk, or filling
//! it from the origin: every piece will come, a piece not there yet is awaited by
//! the seed) or a *swarm* peer (downloading the chunk too: it has exactly the
//! pieces of its last bitmap and never awaits the rest). The rules:
//! - **Rarest first, swarm first.** A peer with room gets the wanted pieces it has
//!   that nobody is fetching, rarest first (ties at random, so downloaders spread
//!   over different pieces); a seed still filling from the origin is asked first
//!   for what its bitmap shows filled, the same way, then in its fill order, so
//!   what it awaits for us is what comes next. A seed is
//!   asked only for pieces no swarm peer has, so a seed's uplink carries few
//!   copies of each piece (see the seeding rule, `SEED_COPIES`: three per window) and
//!   the swarm the rest.
//! - **Congestion is not failure.** A piece's deadline scales with what the peer
//!   already has queued for us and the rate it has delivered at; an overdue piece
//!   is asked of a second peer that has it once nothing new is left to ask for (the
//!   first request stands). A peer is
//!   dropped only when nothing at all has come from it for `stall` while we wait
//!   on it, and is asked again after a back-off.
//! - **Busy is back-pressure.** A peer out of upload slots answers busy; its
//!   pieces go elsewhere and it is left alone for a short, jittered pause.
//! - What swarm peers and filling seeds have is followed while the download runs:
//!   with `watch` (the default) each has one standing query, answered by the peer as
//!   soon as it has a piece beyond what we know (a have-announcement, one round
//!   trip after the piece arrived); without it bitmaps are polled (often when the
//!   peer has nothing for us, rarely otherwise).
//! - When some wanted piece has no source at all (no seed, no swarm peer that has
//!   it), the caller asks the tracker again; the origin is the caller's last
//!   resort, after `stall` without any progress.

use std::time::Duration;

mod bits;
mod counts;
mod peer;
mod request;
mod wake;
use bits::Bits;
use peer::{PeerState, Table};
use counts::{Copies, count_changes, count_pieces};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SchedConfig {
    pub piece_size: u64,
    /// Pieces in flight per peer.
    pub per_peer: usize,
    /// Pieces in flight for the whole download.
    pub total: usize,
    /// Pieces asked in one request.
    pub batch: usize,
    /// Nothing at all from a peer we wait on for this long: the peer is dropped.
    pub stall: Duration,
    /// The least time a piece may take before it is duplicated elsewhere.
    pub min_deadline: Duration,
    /// Swarm peers are watched: one standing query each, answered by the peer when
    /// it has more (`refresh` is then unused).
    pub watch: bool,
    /// Without `watch`: swarm bitmaps are polled this often when the peer has
    /// nothing for us, and every `refresh * 2` otherwise.
    pub refresh: Duration,
    /// Pause after a busy answer (jittered up to twice this).
    pub busy_pause: Duration,
    /// A piece a seed deferred is not asked of it again for this long.
    pub defer: Duration,
}

impl SchedConfig {
    pub fn new(piece_size: u64, stall: Duration) -> Self {
        Self {
            piece_size,
            per_peer: 4,
            total: 8,
            batch: 2,
            stall,
            min_deadline: Duration::from_millis(300),
            watch: true,
            refresh: Duration::from_millis(25),
            busy_pause: Duration::from_millis(25),
            defer: Duration::from_millis(150),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// Has every piece now (a complete holder).
    Complete,
    /// Filling from the origin: every piece will come; it awaits the missing ones.
    Origin,
    /// Downloading from peers: has what its bitmap says, awaits nothing.
    Swarm,
}

/// Why a piece request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Failure {
    /// The peer does not have the piece (a stale bitmap, or its fill ended).
    Missing,
    /// The peer is out of upload slots.
    Busy,
    /// A seed has just sent this piece to others: fetch it from the swarm, and
    /// ask the seed for anything again only after `defer`.
    Deferred,
    /// The connection broke or sent a bad frame.
    Broken,
}

/// What the caller should do now.
#[derive(Debug, PartialEq, Eq)]
pub struct Actions<P> {
    /// Ask each peer for these pieces (one request each).
    pub requests: Vec<(P, Vec<u32>)>,
    /// Withdraw these pieces from these peers (dropped peers).
    pub cancels: Vec<(P, Vec<u32>)>,
    /// Ask these peers for a fresh bitmap.
    pub refresh: Vec<P>,
}

/// Serializable for the simulator's checkpoints (`sim::Sim::save`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound(deserialize = "P: serde::Deserialize<'de> + Eq + std::hash::Hash"))]
pub struct Scheduler<P> {
    cfg: SchedConfig,
    chunk_len: u64,
    have: Vec<bool>,
    num_have: usize,
    /// Copies of each piece in flight.
    copies: Copies,
    /// How many swarm peers have each piece (their last bitmaps and the pieces
    /// they sent us since), kept current as those change: a poll reads this
    /// instead of every peer's bitmap, which at hundreds of nodes was most of
    /// its cost.
    swarm_avail: Vec<u32>,
    peers: Table<P>,
    /// Peers (indexes in `peers`) by what a poll looks at, so that a poll costs
    /// what is in flight, not how many peers the download has met (dozens at
    /// hundreds of nodes): peers with pieces asked of them;
    asked: Vec<usize>,
    /// peers that may be paused (a superset, pruned at each poll), with their
    /// `paused_until` (read here, a poll touches no paused peer's state);
    paused: Vec<(usize, Duration)>,
    /// seeds (complete, or filling from the origin);
    seeds: Vec<usize>,
    /// peers whose standing query (`watch`) may need asking (a superset).
    unwatched: Vec<usize>,
    rng: u64,
    last_progress: Duration,
    /// The time of the last `poll`.
    last_poll: Duration,
    /// No asked peer can have stalled before this time, and no piece asked be
    /// overdue (lower bounds: a poll before them skips its scan of the asked
    /// peers, which was a tenth of a 1,000-node simulation). `ask` lowers them;
    /// a piece or a failure only moves the true times later.
    stall_scan_at: Duration,
    overdue_scan_at: Duration,
    /// What `next_wake` read of the asked peers, kept until a piece is asked,
    /// answered, refused or withdrawn (most polls follow a have-announcement,
    /// which changes none of it): their deadlines in order, and the earliest
    /// time one of them can stall.
    wakes: Option<(Vec<Duration>, Duration)>,
}

impl<P: Copy + Ord + std::hash::Hash + std::fmt::Debug> Scheduler<P> {
    pub fn new(chunk_len: u64, cfg: SchedConfig, seed: u64, now: Duration) -> Self {
        let n = chunk_len.div_ceil(cfg.piece_size.max(1)) as usize;
        Self {
            cfg,
            chunk_len,
            have: vec![false; n],
            num_have: 0,
            copies: Copies { per_piece: vec![0; n], total: 0 },
            swarm_avail: vec![0; n],
            peers: Table::new(),
            asked: Vec::new(),
            paused: Vec::new(),
            seeds: Vec::new(),
            unwatched: Vec::new(),
            rng: seed | 1,
            last_progress: now,
            last_poll: now,
            stall_scan_at: Duration::ZERO,
            // Nothing asked, nothing can be overdue (`ask` lowers it).
            overdue_scan_at: Duration::MAX,
            wakes: None,
        }
    }

    pub fn num_pieces(&self) -> usize {
        self.have.len()
    }

    pub fn piece_len(&self, piece: u32) -> u64 {
        (self.chunk_len - u64::from(piece) * self.cfg.piece_size).min(self.cfg.piece_size)
    }

    pub fn done(&self) -> bool {
        self.num_have == self.have.len()
    }

    pub fn has(&self, piece: u32) -> bool {
        self.have[piece as usize]
    }

    /// Whether a poll now could ask peer `p` for `piece` (news that `p` has
    /// it is of use): the piece is lacked and nobody is fetching it, there is
    /// room for a request, and `p` is known, not paused and has room.
    pub fn could_ask(&self, p: &P, piece: u32, now: Duration) -> bool {
        !self.has(piece)
            && self.copies.of(piece) == 0
            && self.inflight() < self.cfg.total
            && self.peers.find(p).is_some_and(|i| {
                let s = &self.peers[i];
                s.paused_until <= now && s.inflight.len() < self.cfg.per_peer
            })
    }

    /// Whether a poll now may ask for anything: room for a request, or a
    /// piece perhaps overdue (false: what the peers have cannot change what a
    /// poll does).
    pub fn may_ask(&self, now: Duration) -> bool {
        self.inflight() < self.cfg.total || now >= self.overdue_scan_at
    }

    /// A piece this node already has (a fill resumed from earlier pieces).
    pub fn mark_have(&mut self, piece: u32) {
        if let Some(h) = self.have.get_mut(piece as usize)
            && !*h
        {
            *h = true;
            self.num_have += 1;
        }
    }

    /// A verified piece from elsewhere than a peer (the origin) arrived. Returns
    /// whether it was new.
    pub fn on_other_piece(&mut self, piece: u32, now: Duration) -> bool {
        if self.have.get(piece as usize).is_none_or(|h| *h) {
            return false;
        }
        self.mark_have(piece);
        self.last_progress = now;
        true
    }

    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    /// Bytes/s peer `p` has delivered to this download (0 = not measured).
    pub fn rate(&self, p: &P) -> f64 {
        self.peers.find(p).map_or(0.0, |i| self.peers[i].rate)
    }

    pub fn knows(&self, p: &P) -> bool {
        self.peers.find(p).is_some()
    }

    /// How many pieces we believe peer `p` has (what a standing query tells the
    /// peer, which answers once it has more).
    pub fn known(&self, p: &P) -> u32 {
        self.peers.find(p).map_or(0, |i| self.peers[i].have.count() as u32)
    }

    /// What would be news from peer `p` (a standing query's news set): the
    /// pieces this download lacks that `p` is not known to have. A piece `p`
    /// gains that we have is of no use to us, so it need not be announced.
    pub fn news_from(&self, p: &P) -> Vec<bool> {
        let known = self.peers.find(p).map(|i| &self.peers[i].have);
        (0..self.have.len()).map(|i| !self.have[i] && !known.is_some_and(|k| k.get(i))).collect()
    }

    /// Time since the last verified piece arrived.
    pub fn idle_for(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_progress)
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Adds a peer or updates what it has. `have` is read for swarm peers only.
    pub fn set_peer(&mut self, p: P, source: Source, have: &[bool], now: Duration) {
        let have = Bits::from_bools(self.have.len(), have);
        self.set_peer_bits(p, source, have, now);
    }

    /// `set_peer` with the bitmap as words: bit `i % 64` of word `i / 64` is
    /// piece `i` (the simulator's form; it saves a conversion per bitmap).
    pub fn set_peer_words(&mut self, p: P, source: Source, have: &[u64], now: Duration) {
        let have = Bits::from_words(self.have.len(), have);
        self.set_peer_bits(p, source, have, now);
    }

    fn set_peer_bits(&mut self, p: P, source: Source, have: Bits, now: Duration) {
        // Whether the peer was a seed, so in `seeds` (not searched otherwise).
        let mut was_seed = false;
        let i = match self.peers.find(&p) {
            Some(i) => {
                let s = &mut self.peers[i];
                was_seed = s.source != Source::Swarm;
                // Only the pieces that changed move the counts (a watched peer's
                // fresh bitmap differs from its last by a piece or two).
                match (s.source == Source::Swarm, source == Source::Swarm) {
                    (true, true) => count_changes(&mut self.swarm_avail, &s.have, &have),
                    (true, false) => count_pieces(&mut self.swarm_avail, &s.have, false),
                    (false, true) => count_pieces(&mut self.swarm_avail, &have, true),
                    (false, false) => {}
                }
                s.source = source;
                s.have = have;
                s.last_bitmap = now;
                s.watching = false;
                i
            }
            None => {
                if source == Source::Swarm {
                    count_pieces(&mut self.swarm_avail, &have, true);
                }
                self.peers.insert(
                    p,
                    PeerState {
                        source,
                        have,
                        inflight: Vec::new(),
                        rate: 0.0,
                        last_arrival: None,
                        last_bitmap: now,
                        watching: false,
                        paused_until: Duration::ZERO,
                        failures: 0,
                        deferred: Vec::new(),
                    },
                )
            }
        };
        if source == Source::Swarm {
            if was_seed {
                self.seeds.retain(|q| *q != i);
            }
        } else if !was_seed {
            self.seeds.push(i);
        }
        self.unwatched.push(i);
    }

    /// A peer is gone (refused us, left the cluster): its pieces go elsewhere.
    pub fn remove_peer(&mut self, p: &P) {
        self.wakes = None;
        if let Some(i) = self.peers.find(p) {
            let (s, moved) = self.peers.remove(i);
            if s.source == Source::Swarm {
                count_pieces(&mut self.swarm_avail, &s.have, false);
            }
            for (piece, _) in s.inflight {
                self.copies.ended(piece);
            }
            self.paused.retain(|q| q.0 != i);
            if let Some(from) = moved {
                self.paused.iter_mut().filter(|q| q.0 == from).for_each(|q| q.0 = i);
            }
            for list in [&mut self.asked, &mut self.seeds, &mut self.unwatched] {
                list.retain(|q| *q != i);
                // The peer that took its index.
                if let Some(from) = moved {
                    list.iter_mut().filter(|q| **q == from).for_each(|q| *q = i);
                }
            }
        }
    }

    /// A verified piece arrived. Returns whether it was new (duplicates are dropped).
    pub fn on_piece(&mut self, p: P, piece: u32, now: Duration) -> bool {
        // Its peer's rate, last arrival and queue change.
        self.wakes = None;
        let len = self.piece_len(piece) as f64;
        if let Some(pi) = self.peers.find(&p) {
            let s = &mut self.peers[pi];
            if let Some(i) = s.inflight.iter().position(|(x, _)| *x == piece) {
                let (_, asked) = s.inflight.remove(i);
                self.copies.ended(piece);
                if s.inflight.is_empty() {
                    self.asked.retain(|q| *q != pi);
                }
                // The rate this peer delivers to us: bytes over the time since the
                // later of its previous piece and this request.
                let since = s.last_arrival.map_or(asked, |t| t.max(asked));
                let secs = now.saturating_sub(since).as_secs_f64().max(1e-4);
                let r = len / secs;
                s.rate = if s.rate == 0.0 { r } else { 0.7 * s.rate + 0.3 * r };
            }
            s.last_arrival = Some(now);
            s.failures = 0;
            if s.source == Source::Swarm && !s.have.get(piece as usize) {
                s.have.set(piece as usize);
                self.swarm_avail[piece as usize] += 1;
            }
        }
        if self.have[piece as usize] {
            return false;
        }
        self.have[piece as usize] = true;
        self.num_have += 1;
        self.last_progress = now;
        true
    }

    pub fn on_failure(&mut self, p: P, piece: u32, why: Failure, now: Duration) {
        let pause = match why {
            Failure::Busy => {
                let j = self.random() % 1000;
                self.cfg.busy_pause + self.cfg.busy_pause * j as u32 / 1000
            }
            Failure::Missing | Failure::Deferred => Duration::ZERO,
            Failure::Broken => self.cfg.min_deadline * 2,
        };
        let defer = self.cfg.defer;
        self.wakes = None;
        let Some(pi) = self.peers.find(&p) else {
            return;
        };
        let s = &mut self.peers[pi];
        // A piece no longer awaited from this peer (withdrawn after a stall) is
        // not a second failure.
        let Some(i) = s.inflight.iter().position(|(x, _)| *x == piece) else {
            return;
        };
        s.inflight.remove(i);
        self.copies.ended(piece);
        if s.inflight.is_empty() {
            self.asked.retain(|q| *q != pi);
        }
        match why {
            Failure::Missing => {
                if s.source == Source::Swarm {
                    if s.have.get(piece as usize) {
                        s.have.clear(piece as usize);
                        self.swarm_avail[piece as usize] -= 1;
                    }
                } else {
                    // A seed that lost the chunk (its fill failed) is a swarm peer
                    // with nothing until a fresh bitmap says otherwise (a seed's
                    // pieces were never in `swarm_avail`).
                    s.source = Source::Swarm;
                    s.have.clear_all();
                    self.seeds.retain(|q| *q != pi);
                    self.unwatched.push(pi);
                }
            }
            Failure::Busy => s.paused_until = s.paused_until.max(now + pause),
            Failure::Deferred => {
                s.deferred.retain(|(_, until)| *until > now);
                s.deferred.push((piece, now + defer));
                // The seed defers what it has just sent to others, most likely
                // every fresh piece the swarm lacks: it is left alone for `defer`
                // (asking piece by piece would cost a refused round trip each).
                s.paused_until = s.paused_until.max(now + defer);
            }
            Failure::Broken => {
                s.failures += 1;
                s.paused_until = now + pause * s.failures.min(8);
            }
        }
        if why != Failure::Missing {
            self.note_paused(pi);
        }
    }

    /// Peer `p`'s `paused_until` was set: its entry in `paused` follows.
    fn note_paused(&mut self, p: usize) {
        let until = self.peers[p].paused_until;
        match self.paused.iter_mut().find(|q| q.0 == p) {
            Some(q) => q.1 = until,
            None => self.paused.push((p, until)),
        }
    }

    /// How many peers could serve each wanted piece (seeds count once each), and
    /// whether a swarm peer not paused at `now` has it.
    fn availability(&self, now: Duration) -> (Vec<u32>, Vec<bool>) {
        let mut avail = self.swarm_avail.clone();
        let mut paused = vec![0u32; avail.len()];
        for &p in &self.seeds {
            let s = &self.peers[p];
            if s.source == Source::Swarm {
                for (i, a) in avail.iter_mut().enumerate() {
                    *a += u32::from(s.has(i as u32, now));
                }
                continue;
            }
            // A seed has every piece but those it deferred (`PeerState::has`):
            // one count each, then one off for each piece deferred now.
            for a in avail.iter_mut() {
                *a += 1;
            }
            for (k, &(piece, until)) in s.deferred.iter().enumerate() {
                let again = s.deferred[..k].iter().any(|&(q, u)| q == piece && u > now);
                if until > now && !again && let Some(a) = avail.get_mut(piece as usize) {
                    *a -= 1;
                }
            }
        }
        for &(p, until) in &self.paused {
            let s = &self.peers[p];
            if until > now && s.source == Source::Swarm {
                count_pieces(&mut paused, &s.have, true);
            }
        }
        let swarm_has = self.swarm_avail.iter().zip(&paused).map(|(a, p)| a > p).collect();
        (avail, swarm_has)
    }

    /// Pieces this node still needs that no known peer has or will have.
    pub fn unsourced(&self) -> usize {
        self.unsourced_pieces().len()
    }

    /// [`Self::unsourced`], the pieces themselves, in order.
    pub fn unsourced_pieces(&self) -> Vec<u32> {
        let (a, _) = self.availability(self.last_poll);
        (0..self.have.len()).filter(|&i| !self.have[i] && a[i] == 0).map(|i| i as u32).collect()
    }

    pub fn poll(&mut self, now: Duration) -> Actions<P> {
        let mut out = Actions {
            requests: Vec::new(),
            cancels: Vec::new(),
            refresh: Vec::new(),
        };
        self.last_poll = now;
        self.check_lists();
        // 1. Stalled peers are dropped from this round; their pieces go elsewhere.
        let stall = self.cfg.stall;
        let mut stalled: Vec<usize> = Vec::new();
        if now >= self.stall_scan_at {
            let mut next = Duration::MAX;
            for &p in &self.asked {
                let s = &self.peers[p];
                let oldest = s.inflight.iter().map(|(_, t)| *t).min().unwrap_or(now);
                let heard = s.last_arrival.map_or(oldest, |t| t.max(oldest));
                if now.saturating_sub(heard) >= stall {
                    stalled.push(p);
                } else {
                    next = next.min(heard + stall);
                }
            }
            self.stall_scan_at = next;
        }
        stalled.sort_unstable_by_key(|&p| self.peers.id(p));
        for p in stalled {
            self.wakes = None;
            let s = &mut self.peers[p];
            let pieces: Vec<u32> = s.inflight.drain(..).map(|(x, _)| x).collect();
            s.failures += 1;
            s.paused_until = now + stall;
            for x in &pieces {
                self.copies.ended(*x);
            }
            self.asked.retain(|q| *q != p);
            self.note_paused(p);
            out.cancels.push((self.peers.id(p), pieces));
        }
        self.paused.retain(|q| q.1 > now);
        // 2-3. Requests: only when there is room for one, or a piece is overdue
        // (ranking the pieces is most of a poll's cost, and most polls follow an
        // answer that freed no room).
        if self.inflight() < self.cfg.total || now >= self.overdue_scan_at && self.any_overdue(now) {
            self.request_pieces(now, &mut out);
        }
        // 4. Bitmap refreshes of swarm peers: a standing query to each one not
        // watched yet, or polls.
        if self.cfg.watch {
            let mut unwatched = std::mem::take(&mut self.unwatched);
            unwatched.sort_unstable_by_key(|&p| self.peers.id(p));
            unwatched.dedup();
            for &p in &unwatched {
                let s = &mut self.peers[p];
                if s.source != Source::Complete && !s.watching {
                    s.watching = true;
                    out.refresh.push(self.peers.id(p));
                }
            }
            // The list's room is kept (one allocation a poll otherwise).
            unwatched.clear();
            self.unwatched = unwatched;
            return out;
        }
        let order: Vec<usize> = self.peers.in_order().collect();
        for p in order {
            let s = &mut self.peers[p];
            if s.source != Source::Swarm {
                continue;
            }
            let useful = (0..self.have.len() as u32)
                .any(|i| !self.have[i as usize] && s.has(i, now) && self.copies.of(i) == 0);
            let every = if useful { self.cfg.refresh * 2 } else { self.cfg.refresh };
            if now.saturating_sub(s.last_bitmap) >= every {
                s.last_bitmap = now;
                out.refresh.push(self.peers.id(p));
            }
        }
        out
    }

    /// Whether a piece asked of some peer is past its deadline. When none is,
    /// `overdue_scan_at` becomes the earliest time one can be: a deadline is at
    /// least `min_deadline` after its ask, whatever the peer's rate does.
    fn any_overdue(&mut self, now: Duration) -> bool {
        let mut next = Duration::MAX;
        for s in self.asked.iter().map(|&p| &self.peers[p]) {
            for (pos, (_, asked)) in s.inflight.iter().enumerate() {
                if wake::deadline(&self.cfg, s, pos, *asked) <= now {
                    return true;
                }
                next = next.min(*asked + self.cfg.min_deadline);
            }
        }
        self.overdue_scan_at = next;
        false
    }

    /// Pieces asked and not yet answered (every request is one copy in flight).
    pub fn inflight(&self) -> usize {
        let n = self.copies.total;
        debug_assert_eq!(n, self.peers.states().map(|s| s.inflight.len()).sum::<usize>());
        n
    }

    /// Changes the cap on pieces in flight (the node's budget left for this
    /// download); pieces already asked stay asked.
    pub fn set_total(&mut self, total: usize) {
        self.cfg.total = total;
    }

    /// In debug builds: the peer lists hold what they stand for.
    fn check_lists(&self) {
        if cfg!(debug_assertions) {
            for (p, s) in self.peers.states().enumerate() {
                let id = self.peers.id(p);
                assert_eq!(self.peers.find(&id), Some(p), "index: {id:?}");
                assert_eq!(self.asked.contains(&p), !s.inflight.is_empty(), "asked: {id:?}");
                assert!(s.paused_until <= self.last_poll || self.paused.contains(&(p, s.paused_until)), "paused: {id:?}");
                assert_eq!(self.seeds.contains(&p), s.source != Source::Swarm, "seeds: {id:?}");
                assert!(
                    !self.cfg.watch || s.watching || s.source == Source::Complete || self.unwatched.contains(&p),
                    "unwatched: {id:?}"
                );
            }
            let distinct: std::collections::BTreeSet<_> = self.asked.iter().collect();
            assert_eq!(self.asked.len(), distinct.len());
            let mut avail = vec![0u32; self.have.len()];
            for s in self.peers.states().filter(|s| s.source == Source::Swarm) {
                count_pieces(&mut avail, &s.have, true);
            }
            assert_eq!(self.swarm_avail, avail, "swarm_avail");
        }
    }

    /// The contiguous verified prefix, in pieces.
    pub fn prefix(&self) -> u32 {
        self.have.iter().take_while(|h| **h).count() as u32
    }
}

#[cfg(test)]
mod tests;
