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
//!   over different pieces); a seed still filling from the origin is asked in its
//!   fill order instead, so what it awaits for us is what comes next. A seed is
//!   asked only for pieces no swarm peer has, so a seed's uplink carries few
//!   copies of each piece (see the seeding rule in `server`: two per window) and
//!   the swarm the rest.
//! - **Congestion is not failure.** A piece's deadline scales with what the peer
//!   already has queued for us and the rate it has delivered at; an overdue piece
//!   is asked of a second peer that has it once nothing new is left to ask for (the
//!   first request stands). A peer is
//!   dropped only when nothing at all has come from it for `stall` while we wait
//!   on it, and is asked again after a back-off.
//! - **Busy is back-pressure.** A peer out of upload slots answers busy; its
//!   pieces go elsewhere and it is left alone for a short, jittered pause.
//! - What swarm peers have is followed while the download runs: with `watch`
//!   (the default) each swarm peer has one standing query, answered by the peer as
//!   soon as it has a piece beyond what we know (a have-announcement, one round
//!   trip after the piece arrived); without it bitmaps are polled (often when the
//!   peer has nothing for us, rarely otherwise).
//! - When some wanted piece has no source at all (no seed, no swarm peer that has
//!   it), the caller asks the tracker again; the origin is the caller's last
//!   resort, after `stall` without any progress.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
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
            per_peer: 3,
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

/// With nothing due, a watching download still looks at its state this often.
const IDLE_WAKE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Has every piece now (a complete holder).
    Complete,
    /// Filling from the origin: every piece will come; it awaits the missing ones.
    Origin,
    /// Downloading from peers: has what its bitmap says, awaits nothing.
    Swarm,
}

/// Why a piece request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug)]
struct PeerState {
    source: Source,
    /// For swarm peers; seeds have everything.
    have: Vec<bool>,
    /// Pieces asked of this peer, with when they were asked, in the order the
    /// peer serves them.
    inflight: Vec<(u32, Duration)>,
    /// Bytes/s this peer delivered to us, moving average (0 = not measured).
    rate: f64,
    last_arrival: Option<Duration>,
    last_bitmap: Duration,
    /// A standing query (`watch`) is out to this peer.
    watching: bool,
    /// Not asked before this time (busy or failed).
    paused_until: Duration,
    failures: u32,
    /// Pieces this seed deferred, and until when they are not asked of it.
    deferred: Vec<(u32, Duration)>,
    /// The time of the last `poll`, for the deferrals.
    now: Duration,
}

impl PeerState {
    fn has(&self, piece: u32) -> bool {
        if self.source == Source::Swarm {
            return self.have.get(piece as usize).copied().unwrap_or(false);
        }
        !self.deferred.iter().any(|(p, until)| *p == piece && *until > self.now)
    }
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

/// Copies of each piece in flight (one per peer asked for it), and their sum,
/// which every poll (and the node-wide budget) reads.
struct Copies {
    per_piece: Vec<u8>,
    total: usize,
}

impl Copies {
    fn of(&self, piece: u32) -> u8 {
        self.per_piece[piece as usize]
    }

    fn asked(&mut self, piece: u32) {
        self.per_piece[piece as usize] += 1;
        self.total += 1;
    }

    /// A copy answered, refused or withdrawn.
    fn ended(&mut self, piece: u32) {
        let c = &mut self.per_piece[piece as usize];
        if *c > 0 {
            *c -= 1;
            self.total -= 1;
        }
    }
}

pub struct Scheduler<P> {
    cfg: SchedConfig,
    chunk_len: u64,
    have: Vec<bool>,
    num_have: usize,
    /// Copies of each piece in flight.
    copies: Copies,
    peers: BTreeMap<P, PeerState>,
    rng: u64,
    last_progress: Duration,
}

impl<P: Copy + Ord + std::fmt::Debug> Scheduler<P> {
    pub fn new(chunk_len: u64, cfg: SchedConfig, seed: u64, now: Duration) -> Self {
        let n = chunk_len.div_ceil(cfg.piece_size.max(1)) as usize;
        Self {
            cfg,
            chunk_len,
            have: vec![false; n],
            num_have: 0,
            copies: Copies { per_piece: vec![0; n], total: 0 },
            peers: BTreeMap::new(),
            rng: seed | 1,
            last_progress: now,
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

    /// A piece this node already has (a fill resumed from earlier pieces).
    pub fn mark_have(&mut self, piece: u32) {
        if let Some(h) = self.have.get_mut(piece as usize)
            && !*h
        {
            *h = true;
            self.num_have += 1;
        }
    }

    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    /// Bytes/s peer `p` has delivered to this download (0 = not measured).
    pub fn rate(&self, p: &P) -> f64 {
        self.peers.get(p).map_or(0.0, |s| s.rate)
    }

    pub fn knows(&self, p: &P) -> bool {
        self.peers.contains_key(p)
    }

    /// How many pieces we believe peer `p` has (what a standing query tells the
    /// peer, which answers once it has more).
    pub fn known(&self, p: &P) -> u32 {
        self.peers
            .get(p)
            .map_or(0, |s| s.have.iter().filter(|h| **h).count() as u32)
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
        let n = self.have.len();
        let have: Vec<bool> = (0..n).map(|i| have.get(i).copied().unwrap_or(false)).collect();
        match self.peers.get_mut(&p) {
            Some(s) => {
                s.source = source;
                s.have = have;
                s.last_bitmap = now;
                s.watching = false;
            }
            None => {
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
                        now,
                    },
                );
            }
        }
    }

    /// A peer is gone (refused us, left the cluster): its pieces go elsewhere.
    pub fn remove_peer(&mut self, p: &P) {
        if let Some(s) = self.peers.remove(p) {
            for (piece, _) in s.inflight {
                self.copies.ended(piece);
            }
        }
    }

    /// A verified piece arrived. Returns whether it was new (duplicates are dropped).
    pub fn on_piece(&mut self, p: P, piece: u32, now: Duration) -> bool {
        let len = self.piece_len(piece) as f64;
        if let Some(s) = self.peers.get_mut(&p) {
            if let Some(i) = s.inflight.iter().position(|(x, _)| *x == piece) {
                let (_, asked) = s.inflight.remove(i);
                self.copies.ended(piece);
                // The rate this peer delivers to us: bytes over the time since the
                // later of its previous piece and this request.
                let since = s.last_arrival.map_or(asked, |t| t.max(asked));
                let secs = now.saturating_sub(since).as_secs_f64().max(1e-4);
                let r = len / secs;
                s.rate = if s.rate == 0.0 { r } else { 0.7 * s.rate + 0.3 * r };
            }
            s.last_arrival = Some(now);
            s.failures = 0;
            if s.source == Source::Swarm {
                s.have[piece as usize] = true;
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
        let Some(s) = self.peers.get_mut(&p) else {
            return;
        };
        // A piece no longer awaited from this peer (withdrawn after a stall) is
        // not a second failure.
        let Some(i) = s.inflight.iter().position(|(x, _)| *x == piece) else {
            return;
        };
        s.inflight.remove(i);
        self.copies.ended(piece);
        match why {
            Failure::Missing => {
                if s.source == Source::Swarm {
                    s.have[piece as usize] = false;
                } else {
                    // A seed that lost the chunk (its fill failed) is a swarm peer
                    // with nothing until a fresh bitmap says otherwise.
                    s.source = Source::Swarm;
                    s.have.iter_mut().for_each(|h| *h = false);
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
    }

    /// When a piece asked of this peer should have arrived: the peer's queue
    /// ahead of it at the peer's measured rate, four times over, at least
    /// `min_deadline`.
    fn deadline(&self, s: &PeerState, pos: usize, asked: Duration) -> Duration {
        let rate = if s.rate > 0.0 { s.rate } else { 12.5e6 };
        let queued = (pos + 1) as f64 * self.cfg.piece_size as f64 / rate;
        asked + self.cfg.min_deadline.max(Duration::from_secs_f64(4.0 * queued))
    }

    /// How many peers could serve each wanted piece (seeds count once each).
    fn availability(&self) -> Vec<u32> {
        let mut a = vec![0u32; self.have.len()];
        for s in self.peers.values() {
            for (i, c) in a.iter_mut().enumerate() {
                if s.has(i as u32) {
                    *c += 1;
                }
            }
        }
        a
    }

    /// Pieces this node still needs that no known peer has or will have.
    pub fn unsourced(&self) -> usize {
        let a = self.availability();
        (0..self.have.len()).filter(|&i| !self.have[i] && a[i] == 0).count()
    }

    pub fn poll(&mut self, now: Duration) -> Actions<P> {
        let mut out = Actions {
            requests: Vec::new(),
            cancels: Vec::new(),
            refresh: Vec::new(),
        };
        for s in self.peers.values_mut() {
            s.now = now;
        }
        // 1. Stalled peers are dropped from this round; their pieces go elsewhere.
        let stall = self.cfg.stall;
        let stalled: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                !s.inflight.is_empty() && {
                    let oldest = s.inflight.iter().map(|(_, t)| *t).min().unwrap_or(now);
                    let heard = s.last_arrival.map_or(oldest, |t| t.max(oldest));
                    now.saturating_sub(heard) >= stall
                }
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stalled {
            let s = self.peers.get_mut(&p).expect("listed above");
            let pieces: Vec<u32> = s.inflight.drain(..).map(|(x, _)| x).collect();
            s.failures += 1;
            s.paused_until = now + stall;
            for x in &pieces {
                self.copies.ended(*x);
            }
            out.cancels.push((p, pieces));
        }
        // 2-3. Requests: only when there is room for one, or a piece is overdue
        // (ranking the pieces is most of a poll's cost, and most polls follow an
        // answer that freed no room).
        if self.inflight() < self.cfg.total || self.any_overdue(now) {
            self.request_pieces(now, &mut out);
        }
        // 4. Bitmap refreshes of swarm peers: a standing query to each one not
        // watched yet, or polls.
        for (p, s) in &mut self.peers {
            if s.source != Source::Swarm {
                continue;
            }
            if self.cfg.watch {
                if !s.watching {
                    s.watching = true;
                    out.refresh.push(*p);
                }
                continue;
            }
            let useful = (0..self.have.len() as u32)
                .any(|i| !self.have[i as usize] && s.has(i) && self.copies.of(i) == 0);
            let every = if useful { self.cfg.refresh * 2 } else { self.cfg.refresh };
            if now.saturating_sub(s.last_bitmap) >= every {
                s.last_bitmap = now;
                out.refresh.push(*p);
            }
        }
        out
    }

    /// Whether a piece asked of some peer is past its deadline.
    fn any_overdue(&self, now: Duration) -> bool {
        self.peers.values().any(|s| {
            s.inflight
                .iter()
                .enumerate()
                .any(|(pos, (_, asked))| self.deadline(s, pos, *asked) <= now)
        })
    }

    /// New requests, rarest first, and second copies of overdue pieces in the
    /// endgame.
    fn request_pieces(&mut self, now: Duration, out: &mut Actions<P>) {
        // How many peers have each piece, and whether an unpaused swarm peer does
        // (one pass over the peers).
        let mut avail = vec![0u32; self.have.len()];
        let mut swarm_has = vec![false; self.have.len()];
        // (Branch-free per kind of peer: at hundreds of nodes a download knows
        // dozens of peers, and this loop was most of the simulator's time.)
        for s in self.peers.values() {
            match s.source {
                Source::Swarm => {
                    let unpaused = s.paused_until <= now;
                    for ((a, sw), &h) in avail.iter_mut().zip(swarm_has.iter_mut()).zip(&s.have) {
                        *a += u32::from(h);
                        *sw |= h & unpaused;
                    }
                }
                _ => {
                    for (i, a) in avail.iter_mut().enumerate() {
                        *a += u32::from(s.has(i as u32));
                    }
                }
            }
        }
        // In piece order: the order a seed filling from the origin receives them.
        let wanted: Vec<u32> = (0..self.have.len() as u32)
            .filter(|&i| !self.have[i as usize])
            .collect();
        let mut order: Vec<(u32, u64, u32)> = wanted
            .iter()
            .map(|&i| (avail[i as usize], self.random(), i))
            .collect();
        order.sort_unstable();
        let order: Vec<u32> = order.into_iter().map(|(_, _, i)| i).collect();
        let mut total = self.inflight();
        // Swarm peers first, then seeds; within each, the least loaded first.
        let mut peers: Vec<(bool, usize, u64, P)> = self
            .peers
            .iter()
            .filter(|(_, s)| s.paused_until <= now)
            .map(|(p, s)| (s.source != Source::Swarm, s.inflight.len(), 0, *p))
            .collect();
        for e in &mut peers {
            e.2 = self.random();
        }
        peers.sort_unstable();
        // Wanted pieces some peer has and nobody is fetching: none left, no peer
        // is looked at (the usual case once a download's budget is out).
        let mut askable = order
            .iter()
            .filter(|&&i| self.copies.of(i) == 0 && avail[i as usize] > 0)
            .count();
        let mut progress = true;
        while progress && total < self.cfg.total && askable > 0 {
            progress = false;
            for &(seed, _, _, p) in &peers {
                if total >= self.cfg.total || askable == 0 {
                    break;
                }
                let s = &self.peers[&p];
                let room = self.cfg.per_peer.saturating_sub(s.inflight.len());
                if room == 0 {
                    continue;
                }
                let take = room.min(self.cfg.batch).min(self.cfg.total - total);
                // A seed still filling from the origin is asked in its fill order:
                // the pieces it has, then the next to come. A random rare piece
                // far beyond its fill would hold a request slot (and the seed's
                // awaiting) for seconds while other peers could serve now.
                let candidates = if s.source == Source::Origin { &wanted } else { &order };
                let picked: Vec<u32> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| {
                        self.copies.of(i) == 0
                            && s.has(i)
                            && !(seed && swarm_has[i as usize])
                    })
                    .take(take)
                    .collect();
                if picked.is_empty() {
                    continue;
                }
                let s = self.peers.get_mut(&p).expect("listed above");
                for &i in &picked {
                    s.inflight.push((i, now));
                    self.copies.asked(i);
                }
                total += picked.len();
                askable -= picked.len();
                progress = true;
                match out.requests.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, v)) => v.extend(picked),
                    None => out.requests.push((p, picked)),
                }
            }
        }
        // 3. Overdue pieces: a second copy from another peer that has the piece,
        // once nothing new is left to ask for (the endgame): before that, a second
        // copy would take an uplink slot a piece nobody has asked for needs more.
        let endgame = askable == 0;
        let overdue: Vec<u32> = if !endgame { Vec::new() } else { self
            .peers
            .values()
            .flat_map(|s| {
                s.inflight
                    .iter()
                    .enumerate()
                    .filter(|(pos, (_, asked))| self.deadline(s, *pos, *asked) <= now)
                    .map(|(_, (x, _))| *x)
                    .collect::<Vec<_>>()
            })
            .filter(|x| self.copies.of(*x) == 1 && !self.have[*x as usize])
            .collect() };
        for x in overdue {
            let target = self
                .peers
                .iter()
                .filter(|(_, s)| {
                    s.paused_until <= now
                        && s.has(x)
                        && s.inflight.len() < self.cfg.per_peer
                        && !s.inflight.iter().any(|(y, _)| *y == x)
                })
                .min_by_key(|(_, s)| (s.source != Source::Swarm, s.inflight.len()))
                .map(|(p, _)| *p);
            if let Some(p) = target {
                self.peers.get_mut(&p).expect("found").inflight.push((x, now));
                self.copies.asked(x);
                match out.requests.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, v)) => v.push(x),
                    None => out.requests.push((p, vec![x])),
                }
            }
        }
    }

    /// Pieces asked and not yet answered (every request is one copy in flight).
    pub fn inflight(&self) -> usize {
        let n = self.copies.total;
        debug_assert_eq!(n, self.peers.values().map(|s| s.inflight.len()).sum::<usize>());
        n
    }

    /// Changes the cap on pieces in flight (the node's budget left for this
    /// download); pieces already asked stay asked.
    pub fn set_total(&mut self, total: usize) {
        self.cfg.total = total;
    }

    /// The next time `poll` may have something new to do without any event.
    pub fn next_wake(&self, now: Duration) -> Duration {
        // Watched peers wake us by answering; polls need the timer.
        let mut at = now + if self.cfg.watch { IDLE_WAKE } else { self.cfg.refresh };
        for s in self.peers.values() {
            if s.paused_until > now {
                at = at.min(s.paused_until);
            }
            // Deadlines already past were acted on by the last poll (a second copy
            // asked, or none possible): only future ones can wake us.
            for (pos, (_, asked)) in s.inflight.iter().enumerate() {
                let d = self.deadline(s, pos, *asked);
                if d > now {
                    at = at.min(d);
                }
            }
            if let Some(oldest) = s.inflight.iter().map(|(_, t)| *t).min() {
                let heard = s.last_arrival.map_or(oldest, |t| t.max(oldest));
                at = at.min(heard + self.cfg.stall);
            }
        }
        at.max(now + Duration::from_millis(1))
    }

    /// The contiguous verified prefix, in pieces.
    pub fn prefix(&self) -> u32 {
        self.have.iter().take_while(|h| **h).count() as u32
    }
}

#[cfg(test)]
mod tests;
