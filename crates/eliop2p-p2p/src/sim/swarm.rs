//! The swarm's state and what each event does to it: the nodes' downloads
//! (each driven by the real `sched::Scheduler`), the serving rules of a node's
//! upload slots, the owners' origin fills, and the tracker. The bandwidth is
//! `links::Links`; the order of events is `queue::Queue`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::links::Links;
use super::queue::{Queue, Time};
use super::{ChunkState, Download, Downloads, Ev, Ids, SimConfig, SimReport, tracker_answer};
use crate::sched::{Failure, Scheduler, Source};

/// The sizes of the object's chunks and pieces.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Shape {
    object: u64,
    chunk: u64,
    piece: u64,
}

impl Shape {
    fn chunk_len(self, c: usize) -> u64 {
        (self.object - c as u64 * self.chunk).min(self.chunk)
    }

    fn pieces_of(self, c: usize) -> u32 {
        self.chunk_len(c).div_ceil(self.piece) as u32
    }

    fn piece_len(self, c: usize, p: u32) -> u64 {
        (self.chunk_len(c) - u64::from(p) * self.piece).min(self.piece)
    }

    /// The bitmap of a whole chunk.
    fn full(self, c: usize) -> u64 {
        if self.pieces_of(c) == 64 { u64::MAX } else { (1u64 << self.pieces_of(c)) - 1 }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Swarm<'a> {
    /// Always set: by `new`, and by `load` (a configuration is not saved).
    #[serde(skip)]
    cfg: Option<&'a SimConfig>,
    shape: Shape,
    num_chunks: usize,
    /// The origin's index in the flow model (one past the last node).
    origin: usize,
    lat: Time,
    slot_wait: Time,
    rng: u64,
    q: Queue<Ev>,
    links: Links,
    chunks: Vec<ChunkState>,
    downloads: Vec<Downloads>,
    next_chunk: Vec<usize>,
    /// Origin fills each node runs (as a chunk's owner).
    origin_fills: Vec<usize>,
    done_chunks: Vec<usize>,
    remaining_nodes: usize,
    slots_used: Vec<usize>,
    /// Requests waiting for an upload slot, per uploader, oldest first:
    /// (asker, chunk, piece, until when it waits).
    queued: Vec<VecDeque<(usize, usize, u32, Time)>>,
    /// Per node, the bytes it holds that no other node holds yet.
    alone: Vec<u64>,
    report: SimReport,
}

impl<'a> Swarm<'a> {
    /// Every chunk with a random owner, every node about to start its first
    /// `window` chunks at once.
    pub(super) fn new(cfg: &'a SimConfig) -> Self {
        let n = cfg.nodes;
        let shape = Shape { object: cfg.object_bytes, chunk: cfg.chunk_bytes, piece: cfg.piece_bytes };
        let num_chunks = cfg.object_bytes.div_ceil(cfg.chunk_bytes) as usize;
        let lat = cfg.latency.as_micros() as Time;
        let slot_wait = cfg.slot_wait.as_micros() as Time;
        let mut s = Self {
            cfg: Some(cfg),
            shape,
            num_chunks,
            origin: n,
            lat,
            slot_wait,
            // Distinct seeds give distinct runs (`seed | 1` made 2 and 3 the same).
            rng: (cfg.seed << 1) | 1,
            q: Queue::new(&[0, lat, 2 * lat, 3 * lat, slot_wait], Ev::timer),
            links: Links::new(
                (0..n)
                    .map(|i| if i < cfg.slow_nodes { cfg.slow_rate } else { cfg.node_rate })
                    .chain([cfg.origin_rate])
                    .collect(),
            ),
            chunks: (0..num_chunks).map(|_| ChunkState::new(n)).collect(),
            downloads: (0..n).map(|_| Downloads::default()).collect(),
            next_chunk: vec![0; n],
            origin_fills: vec![0; n],
            done_chunks: vec![0; n],
            remaining_nodes: n,
            slots_used: vec![0; n + 1],
            queued: vec![VecDeque::new(); n + 1],
            alone: vec![0; n],
            report: SimReport {
                finish: vec![0.0; n],
                uploaded: vec![0; n + 1],
                ideal: cfg.object_bytes as f64 / cfg.node_rate.min(cfg.origin_rate),
                alone_max: vec![0; n],
                ..SimReport::default()
            },
        };
        for c in 0..num_chunks {
            // Nodes that may not own chunks (`slow_not_owners`) are passed
            // over, as the cluster's ranking puts them after every other.
            let skip = if cfg.slow_not_owners && cfg.slow_nodes < n { cfg.slow_nodes } else { 0 };
            s.chunks[c].owner = skip + (s.rand() % (n - skip) as u64) as usize;
        }
        for node in 0..n {
            for _ in 0..cfg.window.min(num_chunks) {
                let c = s.next_chunk[node];
                s.next_chunk[node] += 1;
                s.q.push(0, Ev::Located { to: node, chunk: c, peers: Vec::new() });
            }
        }
        s
    }

    /// The configuration it runs.
    pub(super) fn cfg(&self) -> &'a SimConfig {
        self.cfg.expect("a swarm's configuration is set when it is made or loaded")
    }

    fn rand(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    /// Runs up to `events` more events; true once every node holds the whole
    /// object (then it runs none).
    pub(super) fn step(&mut self, events: u64) -> bool {
        for _ in 0..events {
            if self.remaining_nodes == 0 {
                return true;
            }
            let Some((now, ev)) = self.q.pop() else { return true };
            self.report.events += 1;
            self.report.kinds[ev.kind()] += 1;
            match ev {
                Ev::OriginNext(c) => self.origin_next(now, c),
                Ev::Located { to, chunk, peers } => self.located(now, to, chunk, peers),
                Ev::Bitmap { to, from, chunk } => {
                    let (source, have) = self.peer_view(from, chunk);
                    if let Some(d) = self.downloads[to].get_mut(&chunk) {
                        d.sched.set_peer_words(from, source, &[have], dur(now));
                        self.schedule_poll(now, to, chunk);
                    }
                }
                Ev::Seen { node, chunk, piece } => self.piece_seen(now, node, chunk, piece),
                Ev::Budget(node) => self.budget_room(now, node),
                Ev::Poll(node, chunk, at) => self.poll(now, node, chunk, at),
                Ev::Request { from, to, chunk, piece } => self.request(now, from, to, chunk, piece),
                Ev::SlotWaitOver { at, asker, chunk, piece } => {
                    // Still waiting (not served by a freed slot): busy.
                    if let Some(i) = self.queued[at].iter().position(|q| *q == (asker, chunk, piece, now)) {
                        self.queued[at].remove(i);
                        let e = Ev::Reply { to: asker, from: at, chunk, piece, why: Failure::Busy };
                        self.q.push(now + self.lat, e);
                    }
                }
                Ev::Reply { to, from, chunk, piece, why } => {
                    match why {
                        Failure::Missing => self.report.refused_by[0] += 1,
                        Failure::Busy => self.report.refused_by[1] += 1,
                        Failure::Deferred => self.report.refused_by[2] += 1,
                        Failure::Broken => {}
                    }
                    if let Some(d) = self.downloads[to].get_mut(&chunk) {
                        d.sched.on_failure(from, piece, why, dur(now));
                        self.schedule_poll(now, to, chunk);
                        self.budget_freed(now, to, chunk);
                    }
                }
                Ev::SlotFree(fi) => {
                    let node = self.links.free_slot(fi);
                    self.free_slot(now, node);
                }
                Ev::FlowDone(fi) => {
                    if self.flow_done(now, fi) {
                        return true;
                    }
                }
            }
        }
        self.remaining_nodes == 0
    }

    /// Where the run is (a pass over every chunk's bitmaps: for progress lines,
    /// millions of events apart).
    pub(super) fn progress(&self) -> super::Progress {
        super::Progress {
            events: self.report.events,
            secs: self.q.now() as f64 / 1e6,
            nodes_done: self.cfg().nodes - self.remaining_nodes,
            origin_bytes: self.report.origin_bytes,
            slowest_bytes: self.slowest_bytes(),
        }
    }

    /// The report of a run `step` has finished.
    pub(super) fn report(self) -> SimReport {
        let nodes = self.cfg().nodes;
        let mut r = self.report;
        r.uploaded.truncate(nodes);
        r.requests = r.kinds[2];
        r.refused = r.kinds[3];
        r.owned = (0..nodes).map(|i| self.chunks.iter().filter(|c| c.owner == i).count() as u32).collect();
        r
    }

    /// A swarm saved by `serde` (its configuration is not saved): `cfg` is the
    /// one it ran with, which the caller checks.
    pub(super) fn loaded(mut self, cfg: &'a SimConfig) -> Self {
        self.cfg = Some(cfg);
        self.q.set_timer_event(Ev::timer);
        self
    }

    /// The fewest bytes of the object a node holds.
    fn slowest_bytes(&self) -> u64 {
        (0..self.cfg().nodes)
            .map(|node| {
                (0..self.num_chunks)
                    .map(|c| {
                        let have = self.chunks[c].have[node];
                        (0..self.shape.pieces_of(c)).filter(|p| have >> p & 1 == 1).map(|p| self.shape.piece_len(c, p)).sum::<u64>()
                    })
                    .sum::<u64>()
            })
            .min()
            .unwrap_or(0)
    }

    /// What a peer's bitmap says about a chunk (a bit per piece; a complete
    /// holder's is not read).
    fn peer_view(&self, peer: usize, c: usize) -> (Source, u64) {
        let ch = &self.chunks[c];
        // What the peer had one way ago (when it answered), with watched
        // bitmaps; a polled one is applied as of now.
        let h = if self.cfg().sched.watch { ch.seen[peer] } else { ch.have[peer] };
        view(ch, self.shape.full(c), peer, h)
    }

    fn start_flow(&mut self, now: Time, from: usize, to: usize, chunk: usize, piece: u32) {
        let bytes = self.shape.piece_len(chunk, piece);
        // The origin has no upload slots.
        let release = if from == self.origin { 0 } else { self.cfg().slot_release_bytes };
        self.links.start(&mut self.q, now, from, to, chunk, piece, bytes, release);
    }

    /// An upload slot of `node` is free: the oldest request waiting for one
    /// takes it at once.
    fn free_slot(&mut self, now: Time, node: usize) {
        self.slots_used[node] -= 1;
        if let Some((asker, c, p, _)) = self.queued[node].pop_front() {
            self.slots_used[node] += 1;
            self.start_flow(now, node, asker, c, p);
        }
    }

    /// A request that finds every upload slot taken waits `slot_wait` for one
    /// (as the server does), then is answered busy.
    fn wait_for_slot(&mut self, now: Time, at: usize, asker: usize, chunk: usize, piece: u32) {
        if self.slot_wait > 0 {
            self.queued[at].push_back((asker, chunk, piece, now + self.slot_wait));
            self.q.push(now + self.slot_wait, Ev::SlotWaitOver { at, asker, chunk, piece });
        } else {
            let e = Ev::Reply { to: asker, from: at, chunk, piece, why: Failure::Busy };
            self.q.push(now + self.lat, e);
        }
    }

    /// The download polls now, unless a poll is already due by now.
    fn schedule_poll(&mut self, now: Time, node: usize, chunk: usize) {
        if let Some(d) = self.downloads[node].get_mut(&chunk)
            && d.poll_at.is_none_or(|t| t > now)
        {
            d.poll_at = Some(now);
            d.owed = None;
            d.pending.push(now);
            self.q.push(now, Ev::Poll(node, chunk, now));
        }
    }

    /// The owner's origin fill reads its next piece.
    fn origin_next(&mut self, now: Time, c: usize) {
        let ch = &self.chunks[c];
        if ch.origin_next < self.shape.pieces_of(c) {
            let (owner, p) = (ch.owner, ch.origin_next);
            self.start_flow(now, self.origin, owner, c, p);
        }
    }

    /// A node starts a chunk (no peers yet), or the tracker's answer arrives.
    fn located(&mut self, now: Time, to: usize, chunk: usize, peers: Vec<usize>) {
        let lat = self.lat;
        if !self.downloads[to].contains_key(&chunk) {
            if !peers.is_empty() {
                // A tracker answer (it always names the owner) to a re-locate of
                // a chunk that finished while it travelled.
                return;
            }
            // A new download: the owner reads the origin; others ask the tracker.
            let ch = &mut self.chunks[chunk];
            if !ch.origin_started {
                ch.origin_started = true;
                self.origin_fills[ch.owner] += 1;
                let at = now + if ch.owner == to { 0 } else { 2 * lat };
                self.q.push(at, Ev::OriginNext(chunk));
            }
            if ch.owner == to {
                // The owner's own copy is the origin fill; if that already
                // ended, this window slot moves on to the next chunk.
                if ch.have[to] == self.shape.full(chunk) && self.next_chunk[to] < self.num_chunks {
                    let c = self.next_chunk[to];
                    self.next_chunk[to] += 1;
                    self.q.push(now, Ev::Located { to, chunk: c, peers: Vec::new() });
                }
                return;
            }
            let seed = self.rand();
            let sched = Scheduler::new(self.shape.chunk_len(chunk), self.cfg().sched.clone(), seed, dur(now));
            self.report.downloads += 1;
            let d = Download {
                sched,
                last_locate: now,
                poll_at: None,
                pending: Vec::new(),
                owed: None,
                watching: Ids::default(),
                news: Vec::new(),
                held_back: false,
            };
            self.downloads[to].insert(chunk, d);
            // Ask the tracker (the answer comes after a round trip).
            let ans = self.tracker(chunk, to);
            self.chunks[chunk].downloaders.push(to);
            self.q.push(now + 2 * lat, Ev::Located { to, chunk, peers: ans });
            return;
        }
        for p in peers {
            if p != to && !self.downloads[to][&chunk].sched.knows(&p) {
                self.q.push(now + 2 * lat, Ev::Bitmap { to, from: p, chunk });
                self.introduce(now, to, p, chunk);
            }
        }
    }

    /// `asker` queries `peer`'s bitmap of `chunk`: a peer downloading the chunk
    /// that does not know the asker, and knows few peers (`download::knows_few`),
    /// probes it back (as a node's server tells its
    /// download of whoever queries it), so the first downloaders of a chunk, whom
    /// the tracker named no swarm, learn of the later ones at their first query.
    /// Decided when the query is sent (a node decides when it arrives, one way
    /// later), which saves an event per query; and again at each query until
    /// the probe's answer arrives (a node tells its download once per member).
    fn introduce(&mut self, now: Time, asker: usize, peer: usize, chunk: usize) {
        if let Some(d) = self.downloads[peer].get(&chunk)
            && !d.sched.knows(&asker)
            && crate::download::knows_few(d.sched.num_peers())
        {
            self.q.push(now + 3 * self.lat, Ev::Bitmap { to: peer, from: asker, chunk });
        }
    }

    fn tracker(&mut self, chunk: usize, asker: usize) -> Vec<usize> {
        let rng = &mut self.rng;
        tracker_answer(&self.chunks[chunk], asker, &mut || xorshift(rng))
    }

    /// A download's poll: its requests go out, its swarm peers are watched, the
    /// tracker is asked again when it is due, and its next timer is set.
    fn poll(&mut self, now: Time, node: usize, chunk: usize, at: Time) {
        let (cfg, lat) = (self.cfg(), self.lat);
        let Some(d) = self.downloads[node].get_mut(&chunk) else { return };
        if let Some(i) = d.pending.iter().position(|t| *t == at) {
            d.pending.swap_remove(i);
        }
        if d.poll_at != Some(at) {
            // Superseded by an earlier poll; a timer deferred behind this event
            // is queued now, unless another event comes first.
            if let Some((w, seq)) = d.owed
                && d.poll_at == Some(w)
                && !d.pending.iter().any(|t| *t <= w)
            {
                d.owed = None;
                d.pending.push(w);
                self.q.push_seq(w, seq, Ev::Poll(node, chunk, w));
            }
            return;
        }
        d.poll_at = None;
        d.owed = None;
        let total = self.download_total(node, chunk);
        let d = self.downloads[node].get_mut(&chunk).expect("polled");
        d.sched.set_total(total);
        if d.sched.may_ask(dur(now)) {
            self.pull_seen(now, node, chunk);
        }
        let d = self.downloads[node].get_mut(&chunk).expect("polled");
        d.held_back = total < cfg.sched.total;
        let before = d.sched.inflight();
        let acts = d.sched.poll(dur(now));
        if d.sched.inflight() < before {
            // Pieces of stalled peers withdrawn.
            self.budget_freed(now, node, chunk);
        }
        for (peer, pieces) in acts.requests {
            for piece in pieces {
                self.q.push(now + lat, Ev::Request { from: node, to: peer, chunk, piece });
            }
        }
        for peer in acts.refresh {
            if !cfg.sched.watch {
                self.introduce(now, node, peer, chunk);
                // A polled bitmap is a round trip away, well inside the refresh
                // interval: it is applied at once (as of now), which saves an
                // event per refresh at thousands of nodes.
                let (source, have) = self.peer_view(peer, chunk);
                let d = self.downloads[node].get_mut(&chunk).expect("polled");
                d.sched.set_peer_words(peer, source, &[have], dur(now));
                continue;
            }
            // A standing query, held until the download ends: the peer's
            // announcements (`Ev::Seen`) are read at our next poll. The
            // scheduler asks again after each answer (a node sends a new
            // query); the one held stands for those. (A query can introduce us
            // only while the peer has not heard of us; its first one does, if
            // any: a download's peers only grow in number.)
            let d = self.downloads[node].get_mut(&chunk).expect("polled");
            if d.watching.insert(peer) {
                // What it announced since its bitmap was read.
                d.news.push(peer);
                self.chunks[chunk].watchers.entry(peer).or_default().push(node);
                self.introduce(now, node, peer, chunk);
            }
        }
        let d = self.downloads[node].get_mut(&chunk).expect("polled");
        let every = crate::download::relocate_interval(d.sched.num_peers()).as_micros() as Time;
        if now - d.last_locate >= every {
            d.last_locate = now;
            let ans = self.tracker(chunk, node);
            self.q.push(now + 2 * lat, Ev::Located { to: node, chunk, peers: ans });
        }
        let d = self.downloads[node].get_mut(&chunk).expect("polled");
        // Polls come at pieces, refusals, timers, room in the node's budget and
        // news a poll could use (`piece_seen`), and, as a node's, at least
        // every `RELOCATE_MIN`; the next re-locate is a timer of its own.
        let act_every = crate::download::RELOCATE_MIN.as_micros() as Time;
        let wake = (d.sched.next_wake(dur(now)).as_micros() as Time).min(now + act_every).min(d.last_locate + every);
        d.poll_at = Some(wake);
        let seq = self.q.next_seq();
        if d.pending.iter().any(|t| *t <= wake) {
            d.owed = Some((wake, seq));
        } else {
            d.pending.push(wake);
            self.q.push_seq(wake, seq, Ev::Poll(node, chunk, wake));
        }
    }

    /// A piece request reaches `to`: served, queued for a slot, awaited from the
    /// owner's origin fill, or refused.
    fn request(&mut self, now: Time, from: usize, to: usize, chunk: usize, piece: u32) {
        let (cfg, lat, full) = (self.cfg(), self.lat, self.shape.full(chunk));
        let ch = &mut self.chunks[chunk];
        let has = ch.have[to] >> piece & 1 == 1;
        let is_seed = ch.have[to] == full || to == ch.owner;
        let reply = |why| Ev::Reply { to: from, from: to, chunk, piece, why };
        if !has && to != ch.owner {
            self.q.push(now + lat, reply(Failure::Missing));
            return;
        }
        // A node reading the origin keeps slots for what it seeds.
        let free = cfg.upload_slots.saturating_sub(self.slots_used[to]);
        if !is_seed && crate::keeps_slots_for_fills(self.origin_fills[to] > 0, free, cfg.fill_reserved_slots) {
            self.q.push(now + lat, reply(Failure::Busy));
            return;
        }
        if is_seed {
            let e = ch.seed_sent.entry((to, piece)).or_insert((0, now));
            if now - e.1 >= cfg.seed_window.as_micros() as Time {
                *e = (0, now);
            }
            if e.0 >= cfg.seed_copies {
                self.q.push(now + lat, reply(Failure::Deferred));
                return;
            }
            e.0 += 1;
            if !has {
                // The owner awaits its origin fill.
                ch.waiting.push((from, piece));
                return;
            }
        }
        if self.slots_used[to] >= cfg.upload_slots {
            self.wait_for_slot(now, to, from, chunk, piece);
            return;
        }
        self.slots_used[to] += 1;
        self.start_flow(now, to, from, chunk, piece);
    }

    /// A piece has crossed; returns whether that was the last node's last piece.
    fn flow_done(&mut self, now: Time, fi: usize) -> bool {
        let f = self.links.finish(&mut self.q, now, fi);
        let (from, to, chunk, piece, released) = (f.from, f.to, f.chunk, f.piece, f.released);
        let len = self.shape.piece_len(chunk, piece);
        self.report.uploaded[from] += len;
        let bucket = (now / 500_000) as usize;
        let timeline = &mut self.report.timeline;
        if timeline.len() <= bucket {
            timeline.resize(bucket + 1, (0, 0));
        }
        if from == self.origin {
            timeline[bucket].1 += len;
            self.origin_piece_arrived(now, to, chunk, piece, len);
        } else {
            timeline[bucket].0 += len;
            if !released {
                self.free_slot(now, from);
            }
            if !self.peer_piece_arrived(now, from, to, chunk, piece, len) {
                return false;
            }
        }
        // A chunk complete at `to`.
        if self.chunks[chunk].have[to] != self.shape.full(chunk) || !(from == self.origin || self.downloads[to].contains_key(&chunk)) {
            return false;
        }
        self.downloads[to].remove(&chunk);
        // Its budget is free now; for an owner whose origin fill just ended,
        // the node's budget is back to `node_pieces` as well.
        self.budget_freed(now, to, chunk);
        let nodes = self.cfg().nodes;
        let ch = &mut self.chunks[chunk];
        ch.downloaders.retain(|x| *x != to);
        if !ch.complete.contains(&to) {
            ch.complete.push(to);
        }
        if ch.complete.len() == nodes {
            // Every node holds the chunk (the owner joined `complete` when its
            // origin fill ended): nothing asks for it again.
            ch.seed_sent = HashMap::new();
            ch.watchers = HashMap::new();
        }
        self.done_chunks[to] += 1;
        if self.done_chunks[to] == self.num_chunks {
            self.report.finish[to] = (now + self.lat) as f64 / 1e6;
            self.remaining_nodes -= 1;
            if self.remaining_nodes == 0 {
                return true;
            }
        }
        if self.next_chunk[to] < self.num_chunks {
            let c = self.next_chunk[to];
            self.next_chunk[to] += 1;
            self.q.push(now, Ev::Located { to, chunk: c, peers: Vec::new() });
        }
        false
    }

    /// The owner `to` read a piece from the origin: its watchers hear of it, the
    /// requests awaiting it are served, and the fill reads on.
    fn origin_piece_arrived(&mut self, now: Time, to: usize, chunk: usize, piece: u32, len: u64) {
        self.report.origin_bytes += len;
        self.alone[to] += len;
        self.report.alone_max[to] = self.report.alone_max[to].max(self.alone[to]);
        let ch = &mut self.chunks[chunk];
        ch.have[to] |= 1 << piece;
        self.announce(now, to, chunk, piece);
        let ch = &mut self.chunks[chunk];
        ch.origin_next += 1;
        if ch.origin_next == self.shape.pieces_of(chunk) {
            self.origin_fills[to] -= 1;
        }
        // Requests waiting for this piece are served now.
        let (ready, rest): (Vec<_>, Vec<_>) = ch.waiting.drain(..).partition(|(_, p)| *p == piece);
        ch.waiting = rest;
        for (asker, p) in ready {
            if self.slots_used[to] >= self.cfg().upload_slots {
                self.wait_for_slot(now, to, asker, chunk, p);
            } else {
                self.slots_used[to] += 1;
                self.start_flow(now, to, asker, chunk, p);
            }
        }
        self.q.push(now, Ev::OriginNext(chunk));
    }

    /// A peer's piece reached `to`: a fresh piece is announced to `to`'s
    /// watchers. False when `to` no longer downloads the chunk.
    fn peer_piece_arrived(&mut self, now: Time, from: usize, to: usize, chunk: usize, piece: u32, len: u64) -> bool {
        let Some(d) = self.downloads[to].get_mut(&chunk) else { return false };
        let fresh = d.sched.on_piece(from, piece, dur(now + self.lat));
        // The download polls first (a node's download acts on its own piece
        // at once; those it wakes run after).
        self.schedule_poll(now, to, chunk);
        self.budget_freed(now, to, chunk);
        if fresh {
            let ch = &mut self.chunks[chunk];
            if ch.spread >> piece & 1 == 0 {
                ch.spread |= 1 << piece;
                self.alone[from] -= len;
            }
            ch.have[to] |= 1 << piece;
            self.announce(now, to, chunk, piece);
        }
        true
    }
}

impl Swarm<'_> {
    /// The pieces a download may have in flight: its node's budget
    /// (`node_pieces`, or `origin_fill_pieces` while the node reads the origin)
    /// less what its other downloads have asked, at least 1.
    fn download_total(&self, node: usize, chunk: usize) -> usize {
        let cfg = self.cfg();
        if cfg.node_pieces == 0 {
            return cfg.sched.total;
        }
        let budget = crate::download_budget(cfg.node_pieces, cfg.origin_fill_pieces, self.origin_fills[node]);
        let others: usize = self.downloads[node].iter().filter(|(c, _)| **c != chunk).map(|(_, d)| d.sched.inflight()).sum();
        budget.saturating_sub(others).clamp(1, cfg.sched.total)
    }

    /// A download of `node` has fewer pieces in flight (or ended): once it
    /// has polled (its poll is queued first), the node's downloads held back by
    /// its budget look for room (`Ev::Budget`).
    fn budget_freed(&mut self, now: Time, node: usize, chunk: usize) {
        if self.cfg().node_pieces > 0 && self.downloads[node].iter().any(|(c, d)| *c != chunk && d.held_back) {
            self.q.push(now, Ev::Budget(node));
        }
    }

    /// The downloads of `node` held back by its budget poll if there is room
    /// for one of their pieces now. A node wakes them all (`pieces_freed`);
    /// one without room does nothing in its poll.
    fn budget_room(&mut self, now: Time, node: usize) {
        for i in 0..self.downloads[node].0.len() {
            let (c, d) = &self.downloads[node].0[i];
            let c = *c;
            if d.held_back && d.sched.inflight() < self.download_total(node, c) {
                self.schedule_poll(now, node, c);
            }
        }
    }

    /// A piece reached `node`: its watchers hear of it one way later.
    fn announce(&mut self, now: Time, node: usize, chunk: usize, piece: u32) {
        if self.cfg().sched.watch {
            self.q.push(now + self.lat, Ev::Seen { node, chunk, piece });
        }
    }

    /// `node`'s announcement of `piece` reaches its watchers. Each learns of it
    /// at its next poll (`pull_seen`); a download that could ask the node for
    /// the piece now (it lacks it, nobody is fetching it, its budget has room,
    /// and the node is not paused and has room for a request) polls now. Polling every watcher at every announcement, as a node does, was
    /// some 80 events a piece delivered, most of them polls that could ask for
    /// nothing; what each poll sees is the same. (A node answers a standing
    /// query only with news for the asker, a piece of its news set; here every
    /// watcher hears of every piece, which changes no decision: a download acts
    /// on the pieces it lacks only, and those are its news set.)
    fn piece_seen(&mut self, now: Time, node: usize, chunk: usize, piece: u32) {
        self.chunks[chunk].seen[node] |= 1 << piece;
        let Some(mut watchers) = self.chunks[chunk].watchers.remove(&node) else { return };
        watchers.retain(|w| self.downloads[*w].contains_key(&chunk));
        for &w in &watchers {
            let total = self.download_total(w, chunk);
            let d = self.downloads[w].get_mut(&chunk).expect("retained");
            d.news.push(node);
            d.sched.set_total(total);
            if d.sched.could_ask(&node, piece, dur(now)) {
                self.schedule_poll(now, w, chunk);
            }
        }
        if !watchers.is_empty() {
            self.chunks[chunk].watchers.insert(node, watchers);
        }
    }

    /// Before a poll, the download's scheduler hears what its watched peers
    /// have announced since it was last told.
    fn pull_seen(&mut self, now: Time, node: usize, chunk: usize) {
        let full = self.shape.full(chunk);
        let ch = &self.chunks[chunk];
        let Some(d) = self.downloads[node].get_mut(&chunk) else { return };
        let mut news = std::mem::take(&mut d.news);
        news.sort_unstable();
        news.dedup();
        for &peer in &news {
            let (source, bits) = view(ch, full, peer, ch.seen[peer]);
            d.sched.set_peer_words(peer, source, &[bits], dur(now));
        }
        news.clear();
        d.news = news;
    }
}

/// How a download sees `peer` whose bitmap of the chunk reads `bits`: a
/// complete holder (its bitmap not read), the owner filling from the origin, or
/// a swarm member.
fn view(ch: &ChunkState, full: u64, peer: usize, bits: u64) -> (Source, u64) {
    if bits == full {
        (Source::Complete, 0)
    } else if peer == ch.owner {
        (Source::Origin, bits)
    } else {
        (Source::Swarm, bits)
    }
}

fn xorshift(r: &mut u64) -> u64 {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    *r
}

fn dur(t: Time) -> Duration {
    Duration::from_micros(t)
}
