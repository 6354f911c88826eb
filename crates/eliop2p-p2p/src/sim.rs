//! A swarm simulator (pure: no I/O, virtual time), for cluster sizes no machine
//! here can host: thousands of nodes with per-node upload and download rates and
//! a one-way latency, one origin, every node reading the same object at once. It
//! drives the real piece scheduler (`sched::Scheduler`) and the real serving
//! rules: the tracker's answer (the owner, a few complete holders, a random subset
//! of the swarm), swarm fills that offer only what they have, upload slots with
//! busy answers, seeds that send each piece to at most `SEED_COPIES` peers per
//! window and defer the rest to the swarm, and the owner as the one origin
//! reader. Bandwidth is shared max-min fair, as TCP flows sharing bottlenecks
//! roughly settle: when a transfer starts or ends, the transfers on its
//! uploader's uplink and its downloader's downlink are given max-min rates
//! (progressive filling) over what the other transfers leave of every link they
//! cross; the other transfers keep their rates until a change reaches one of
//! their own links. That is local, so a link freed far away is refilled one
//! event later than TCP would; no link ever carries more than its rate.

use std::collections::HashMap;
use std::time::Duration;

use crate::cluster::{ANSWER_HOLDERS, ANSWER_SWARM};
use crate::sched::{Failure, SchedConfig, Scheduler, Source};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub object_bytes: u64,
    pub chunk_bytes: u64,
    pub piece_bytes: u64,
    /// Bytes per second of each node's NIC, each direction.
    pub node_rate: f64,
    pub origin_rate: f64,
    pub latency: Duration,
    /// Chunks a node downloads at once (its readahead).
    pub window: usize,
    pub upload_slots: usize,
    /// Slots a node keeps for its seeding while it reads the origin
    /// (`fill_reserved_slots`).
    pub fill_reserved_slots: usize,
    /// How long a piece request waits for a free upload slot before it is
    /// answered busy (the server's `SLOT_WAIT`; zero: busy at once).
    pub slot_wait: Duration,
    /// Pieces in flight over all downloads of a node (`p2p.download_pieces`); 0 =
    /// each download its `sched.total`.
    pub node_pieces: usize,
    /// The node-wide budget while the node fills a chunk from the origin (its
    /// downlink is then the cluster's critical path); 0 = no change.
    pub origin_fill_pieces: usize,
    pub seed_copies: u32,
    pub seed_window: Duration,
    pub sched: SchedConfig,
    pub seed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Seconds each node took for the whole object.
    pub finish: Vec<f64>,
    pub origin_bytes: u64,
    pub uploaded: Vec<u64>,
    pub ideal: f64,
    pub events: u64,
    /// Piece requests sent, and those answered busy, deferred or missing.
    pub requests: u64,
    pub refused: u64,
    /// Refusals by reason: missing, busy, deferred.
    pub refused_by: [u64; 3],
    /// Bytes delivered per 500 ms: to nodes by peers, and by the origin.
    pub timeline: Vec<(u64, u64)>,
    /// Events run, by kind (`EVENT_KINDS`).
    pub kinds: [u64; 8],
    /// Chunks each node owns (reads from the origin for the cluster).
    pub owned: Vec<u32>,
    /// Per node, the most bytes it held at once that no other node held yet
    /// (pieces its origin fills read and it had not sent on: what its death
    /// would cost the origin again).
    pub alone_max: Vec<u64>,
}

/// The kinds of events the simulator runs, in `SimReport::kinds` order.
pub const EVENT_KINDS: [&str; 8] = ["poll", "flow end (some superseded)", "request", "refusal", "bitmap", "tracker", "origin read", "slot wait over"];

mod queue;
use queue::{Queue, Time};

#[derive(Debug)]
enum Ev {
    Poll(usize, usize, Time),
    FlowDone(usize, u32),
    Request { from: usize, to: usize, chunk: usize, piece: u32 },
    Reply { to: usize, from: usize, chunk: usize, piece: u32, why: Failure },
    Bitmap { to: usize, from: usize, chunk: usize },
    Located { to: usize, chunk: usize, peers: Vec<usize> },
    OriginNext(usize),
    /// A request queued for an upload slot at `at` waited `slot_wait`.
    SlotWaitOver { at: usize, asker: usize, chunk: usize, piece: u32 },
}

struct Flow {
    from: usize,
    to: usize,
    chunk: usize,
    piece: u32,
    remaining: f64,
    rate: f64,
    since: Time,
    version: u32,
    live: bool,
}

struct Download {
    sched: Scheduler<usize>,
    last_locate: Time,
    /// When the download polls next.
    poll_at: Option<Time>,
    /// Times of its `Poll` events in the queue (most are superseded: each event
    /// for the download polls it at once, before its timer).
    pending: Vec<Time>,
    /// A timer not queued because an earlier `Poll` was (a superseded one pops
    /// first and queues it): its time and its sequence number, so it keeps the
    /// place it would have had. A timer queued at every poll kept millions of
    /// superseded events in the heap at 1,000 nodes.
    owed: Option<(Time, u64)>,
}

struct ChunkState {
    owner: usize,
    /// Pieces each node has of this chunk (bit per piece; chunk <= 64 pieces).
    have: Vec<u64>,
    /// Origin fill at the owner: next piece to read, and whether it started.
    origin_next: u32,
    /// Pieces held by more than one node.
    spread: u64,
    origin_started: bool,
    downloaders: Vec<usize>,
    complete: Vec<usize>,
    /// Copies of each piece the seeds sent, per window: (count, window start).
    seed_sent: HashMap<(usize, u32), (u32, Time)>,
    /// Requests awaiting a piece the owner's origin fill has not reached.
    waiting: Vec<(usize, u32)>,
    /// Standing bitmap queries (`sched.watch`): per node, the nodes waiting to hear
    /// of its next piece of this chunk.
    watchers: HashMap<usize, Vec<usize>>,
}

/// The tracker's answer to `asker`, as `cluster::on_locate` gives it: the owner,
/// then at most `ANSWER_HOLDERS` complete holders and `ANSWER_SWARM` swarm
/// members, each a uniform random sample (drawn by index: the lists hold
/// thousands at 5,000 nodes). A re-locate once took the first complete holders,
/// so the earliest finishers of a chunk were named to every re-locating node.
fn tracker_answer(ch: &ChunkState, asker: usize, rand: &mut impl FnMut() -> u64) -> Vec<usize> {
    let mut ans = vec![ch.owner];
    for (from, k) in [(&ch.complete, ANSWER_HOLDERS), (&ch.downloaders, ANSWER_SWARM)] {
        let start = ans.len();
        let eligible = |x: &usize| *x != asker && *x != ch.owner;
        if from.len() <= 2 * k {
            // Few: a partial shuffle of those eligible.
            let mut v: Vec<usize> = from.iter().copied().filter(eligible).collect();
            let k = k.min(v.len());
            for i in 0..k {
                let j = i + (rand() % (v.len() - i) as u64) as usize;
                v.swap(i, j);
            }
            ans.extend(&v[..k]);
        } else {
            // Many (at least 2k, so at most two excluded): draw until k distinct.
            while ans.len() - start < k {
                let x = from[(rand() % from.len() as u64) as usize];
                if eligible(&x) && !ans[start..].contains(&x) {
                    ans.push(x);
                }
            }
        }
    }
    ans
}

impl SimConfig {
    /// What `simulate` needs of a configuration, as a message naming the field
    /// (the bench's flags are checked with it rather than by a panic mid-run).
    pub fn check(&self) -> Result<(), String> {
        if self.nodes == 0 || self.window == 0 || self.object_bytes == 0 {
            return Err("nodes, window and object_bytes must be at least 1".into());
        }
        if self.piece_bytes == 0 || self.chunk_bytes < self.piece_bytes {
            return Err(format!("piece_bytes {} must be between 1 and chunk_bytes {}", self.piece_bytes, self.chunk_bytes));
        }
        // A chunk's pieces are one 64-bit bitmap, as on the wire.
        if self.chunk_bytes.div_ceil(self.piece_bytes) > 64 {
            return Err(format!(
                "piece_bytes {}: at most 64 pieces a chunk of {} bytes, so at least {}",
                self.piece_bytes,
                self.chunk_bytes,
                self.chunk_bytes.div_ceil(64)
            ));
        }
        if !(self.node_rate > 0.0 && self.origin_rate > 0.0) {
            return Err("node_rate and origin_rate must be above 0".into());
        }
        Ok(())
    }
}

/// Runs the swarm; `cfg` must pass `SimConfig::check` (a panic otherwise).
pub fn simulate(cfg: &SimConfig) -> SimReport {
    let n = cfg.nodes;
    let origin = n; // the origin is node `n` for the flow model
    let num_chunks = cfg.object_bytes.div_ceil(cfg.chunk_bytes) as usize;
    let chunk_len = |c: usize| (cfg.object_bytes - c as u64 * cfg.chunk_bytes).min(cfg.chunk_bytes);
    let pieces_of = |c: usize| chunk_len(c).div_ceil(cfg.piece_bytes) as u32;
    let piece_len = |c: usize, p: u32| (chunk_len(c) - u64::from(p) * cfg.piece_bytes).min(cfg.piece_bytes);
    if let Err(e) = cfg.check() {
        panic!("simulate: {e}");
    }
    let lat = cfg.latency.as_micros() as Time;
    // Distinct seeds give distinct runs (`seed | 1` made 2 and 3 the same).
    let mut rng = (cfg.seed << 1) | 1;
    let mut rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut chunks: Vec<ChunkState> = (0..num_chunks)
        .map(|_| ChunkState {
            owner: 0,
            have: vec![0; n],
            origin_next: 0,
            spread: 0,
            origin_started: false,
            downloaders: Vec::new(),
            complete: Vec::new(),
            seed_sent: HashMap::new(),
            waiting: Vec::new(),
            watchers: HashMap::new(),
        })
        .collect();
    for c in chunks.iter_mut() {
        c.owner = (rand() % n as u64) as usize;
    }
    let mut downloads: Vec<HashMap<usize, Download>> = (0..n).map(|_| HashMap::new()).collect();
    let mut next_chunk = vec![0usize; n];
    // Origin fills each node runs (as a chunk's owner).
    let mut origin_fills = vec![0usize; n];
    let mut done_chunks = vec![0usize; n];
    let mut finish = vec![0f64; n];
    let mut uploaded = vec![0u64; n + 1];
    let mut up_flows: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut down_flows: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut slots_used = vec![0usize; n + 1];
    // Requests waiting for an upload slot, per uploader, oldest first.
    // (asker, chunk, piece, until when it waits).
    let mut queued: Vec<std::collections::VecDeque<(usize, usize, u32, Time)>> = vec![Default::default(); n + 1];
    let slot_wait = cfg.slot_wait.as_micros() as Time;
    let mut flows: Vec<Flow> = Vec::new();
    let mut free_flows: Vec<usize> = Vec::new();
    let mut q: Queue<Ev> = Queue::new(&[0, lat, 2 * lat, slot_wait]);
    let dur = |t: Time| Duration::from_micros(t);
    let full = |c: usize| if pieces_of(c) == 64 { u64::MAX } else { (1u64 << pieces_of(c)) - 1 };
    // What a peer's bitmap says about a chunk (a bit per piece; a complete
    // holder's is not read).
    let peer_view = |ch: &ChunkState, peer: usize, c: usize| -> (Source, u64) {
        let h = ch.have[peer];
        if h == full(c) {
            (Source::Complete, 0)
        } else if peer == ch.owner {
            (Source::Origin, h)
        } else {
            (Source::Swarm, h)
        }
    };

    // Every node starts its first chunks at once.
    for (node, next) in next_chunk.iter_mut().enumerate() {
        for _ in 0..cfg.window.min(num_chunks) {
            let c = *next;
            *next += 1;
            q.push(0, Ev::Located { to: node, chunk: c, peers: Vec::new() });
        }
    }
    let mut events = 0u64;
    let mut kinds = [0u64; 8];
    let mut origin_bytes = 0u64;
    let mut remaining_nodes = n;
    let mut refused_by = [0u64; 3];
    let mut timeline: Vec<(u64, u64)> = Vec::new();
    let (mut alone, mut alone_max) = (vec![0u64; n], vec![0u64; n]);
    // The rates of the flows on the two links an event changed (the sender's
    // uplink and the receiver's downlink), max-min fair (progressive filling)
    // over those flows, with every other flow's rate held: each of their links
    // offers what the held flows leave of it. TCP flows sharing bottlenecks
    // settle near max-min; an equal split per link (the model before) leaves a
    // link idle whenever its flows are held back at their other ends (the
    // origin's link ran at 70-80% when the owners' downlinks were shared evenly
    // with peer pieces, where the bed's origin ran at its cap).
    let up_cap = |x: usize| if x == origin { cfg.origin_rate } else { cfg.node_rate };
    macro_rules! reshare {
        ($now:expr, $from:expr, $to:expr) => {{
            let (from, to): (usize, usize) = ($from, $to);
            let mut v: Vec<usize> = up_flows[from].iter().chain(down_flows[to].iter()).copied().collect();
            v.sort_unstable();
            v.dedup();
            // Links as (node, downlink?), each with what the held flows leave
            // of it and how many of `v` cross it.
            let mut links: Vec<(usize, bool, f64, usize)> = Vec::new();
            for &fi in &v {
                for l in [(flows[fi].from, false), (flows[fi].to, true)] {
                    match links.iter_mut().find(|x| (x.0, x.1) == l) {
                        Some(x) => x.3 += 1,
                        None => {
                            let (on, cap) = if l.1 { (&down_flows[l.0], cfg.node_rate) } else { (&up_flows[l.0], up_cap(l.0)) };
                            let held: f64 = on.iter().filter(|g| v.binary_search(g).is_err()).map(|g| flows[*g].rate).sum();
                            links.push((l.0, l.1, (cap - held).max(0.0), 1));
                        }
                    }
                }
            }
            let mut rate: Vec<Option<f64>> = vec![None; v.len()];
            loop {
                // The link that offers the least to each of its unset flows sets them.
                let Some(li) = (0..links.len()).filter(|&i| links[i].3 > 0).min_by(|&a, &b| {
                    (links[a].2 / links[a].3 as f64).total_cmp(&(links[b].2 / links[b].3 as f64))
                }) else {
                    break;
                };
                let (node, down) = (links[li].0, links[li].1);
                let share = links[li].2 / links[li].3 as f64;
                for (k, &fi) in v.iter().enumerate() {
                    let f = &flows[fi];
                    if rate[k].is_some() || (if down { f.to } else { f.from }) != node {
                        continue;
                    }
                    rate[k] = Some(share);
                    for l in links.iter_mut() {
                        if (l.0 == f.from && !l.1) || (l.0 == f.to && l.1) {
                            l.2 = (l.2 - share).max(0.0);
                            l.3 -= 1;
                        }
                    }
                }
            }
            for (k, &fi) in v.iter().enumerate() {
                let r = rate[k].expect("every flow crosses a link");
                let f = &mut flows[fi];
                if r == f.rate {
                    // Its pending completion event still holds.
                    continue;
                }
                f.remaining -= f.rate * ($now - f.since) as f64 / 1e6;
                f.since = $now;
                f.rate = r;
                f.version += 1;
                // A flow left nothing by flows held elsewhere waits for the
                // next change at one of its links (which reshares it).
                if r > 0.0 {
                    let left = (f.remaining.max(0.0) / r * 1e6) as Time;
                    let (v, at) = (f.version, $now + left + 1);
                    q.push(at, Ev::FlowDone(fi, v));
                }
            }
            if cfg!(debug_assertions) {
                for &(node, down, ..) in &links {
                    let (on, cap) = if down { (&down_flows[node], cfg.node_rate) } else { (&up_flows[node], up_cap(node)) };
                    let sum: f64 = on.iter().map(|g| flows[*g].rate).sum();
                    assert!(sum <= cap * (1.0 + 1e-9), "link of node {node} (down: {down}) carries {sum} > {cap}");
                }
            }
        }};
    }
    macro_rules! start_flow {
        ($now:expr, $from:expr, $to:expr, $chunk:expr, $piece:expr) => {{
            let f = Flow {
                from: $from,
                to: $to,
                chunk: $chunk,
                piece: $piece,
                remaining: piece_len($chunk, $piece) as f64,
                rate: 0.0,
                since: $now,
                version: 0,
                live: true,
            };
            let fi = match free_flows.pop() {
                Some(i) => {
                    // Versions keep rising across reuse of a slot, so a stale
                    // completion of the slot's previous flow never matches.
                    let version = flows[i].version + 1;
                    flows[i] = Flow { version, ..f };
                    i
                }
                None => {
                    flows.push(f);
                    flows.len() - 1
                }
            };
            up_flows[$from].push(fi);
            down_flows[$to].push(fi);
            reshare!($now, $from, $to);
        }};
    }
    // A request that finds every upload slot taken waits `slot_wait` for one
    // (as the server does), then is answered busy.
    macro_rules! wait_for_slot {
        ($now:expr, $at:expr, $asker:expr, $chunk:expr, $piece:expr) => {{
            if slot_wait > 0 {
                queued[$at].push_back(($asker, $chunk, $piece, $now + slot_wait));
                let e = Ev::SlotWaitOver { at: $at, asker: $asker, chunk: $chunk, piece: $piece };
                q.push($now + slot_wait, e);
            } else {
                let e = Ev::Reply { to: $asker, from: $at, chunk: $chunk, piece: $piece, why: Failure::Busy };
                q.push($now + lat, e);
            }
        }};
    }
    macro_rules! schedule_poll {
        ($now:expr, $node:expr, $chunk:expr) => {{
            if let Some(d) = downloads[$node].get_mut(&$chunk)
                && d.poll_at.is_none_or(|t| t > $now)
            {
                d.poll_at = Some($now);
                d.owed = None;
                d.pending.push($now);
                q.push($now, Ev::Poll($node, $chunk, $now));
            }
        }};
    }

    while let Some((now, ev)) = q.pop() {
        events += 1;
        kinds[match &ev {
            Ev::Poll(..) => 0,
            Ev::FlowDone(..) => 1,
            Ev::Request { .. } => 2,
            Ev::Reply { .. } => 3,
            Ev::Bitmap { .. } => 4,
            Ev::Located { .. } => 5,
            Ev::OriginNext(..) => 6,
            Ev::SlotWaitOver { .. } => 7,
        }] += 1;
        match ev {
            Ev::OriginNext(c) => {
                let ch = &mut chunks[c];
                if ch.origin_next < pieces_of(c) {
                    let (owner, p) = (ch.owner, ch.origin_next);
                    start_flow!(now, origin, owner, c, p);
                }
            }
            Ev::Located { to, chunk, peers } => {
                let known = downloads[to].contains_key(&chunk);
                if !known {
                    // A new download: the owner reads the origin; others ask the tracker.
                    let ch = &mut chunks[chunk];
                    if !ch.origin_started {
                        ch.origin_started = true;
                        origin_fills[ch.owner] += 1;
                        let at = now + if ch.owner == to { 0 } else { 2 * lat };
                        q.push(at, Ev::OriginNext(chunk));
                    }
                    if ch.owner == to {
                        // The owner's own copy is the origin fill; if that already
                        // ended, this window slot moves on to the next chunk.
                        if ch.have[to] == full(chunk) && next_chunk[to] < num_chunks {
                            let c = next_chunk[to];
                            next_chunk[to] += 1;
                            q.push(now, Ev::Located { to, chunk: c, peers: Vec::new() });
                        }
                        continue;
                    }
                    let sched = Scheduler::new(chunk_len(chunk), cfg.sched.clone(), rand(), dur(now));
                    downloads[to].insert(chunk, Download { sched, last_locate: now, poll_at: None, pending: Vec::new(), owed: None });
                    // Ask the tracker (the answer comes after a round trip).
                    let ans = tracker_answer(&chunks[chunk], to, &mut rand);
                    chunks[chunk].downloaders.push(to);
                    q.push(now + 2 * lat, Ev::Located { to, chunk, peers: ans });
                    continue;
                }
                for p in peers {
                    if p != to && !downloads[to][&chunk].sched.knows(&p) {
                        q.push(now + 2 * lat, Ev::Bitmap { to, from: p, chunk });
                    }
                }
            }
            Ev::Bitmap { to, from, chunk } => {
                let (source, have) = peer_view(&chunks[chunk], from, chunk);
                if let Some(d) = downloads[to].get_mut(&chunk) {
                    d.sched.set_peer_words(from, source, &[have], dur(now));
                    schedule_poll!(now, to, chunk);
                }
            }
            Ev::Poll(node, chunk, at) => {
                let Some(d) = downloads[node].get_mut(&chunk) else { continue };
                if let Some(i) = d.pending.iter().position(|t| *t == at) {
                    d.pending.swap_remove(i);
                }
                if d.poll_at != Some(at) {
                    // Superseded by an earlier poll; a timer deferred behind
                    // this event is queued now, unless another event comes first.
                    if let Some((w, seq)) = d.owed
                        && d.poll_at == Some(w)
                        && !d.pending.iter().any(|t| *t <= w)
                    {
                        d.owed = None;
                        d.pending.push(w);
                        q.push_seq(w, seq, Ev::Poll(node, chunk, w));
                    }
                    continue;
                }
                d.poll_at = None;
                d.owed = None;
                if cfg.node_pieces > 0 {
                    let filling = origin_fills[node] > 0;
                    let budget = if filling && cfg.origin_fill_pieces > 0 { cfg.origin_fill_pieces } else { cfg.node_pieces };
                    let others: usize = downloads[node].iter().filter(|(c, _)| **c != chunk).map(|(_, d)| d.sched.inflight()).sum();
                    let d = downloads[node].get_mut(&chunk).expect("polled");
                    d.sched.set_total(budget.saturating_sub(others).clamp(1, cfg.sched.total));
                }
                let d = downloads[node].get_mut(&chunk).expect("polled");
                let acts = d.sched.poll(dur(now));
                for (peer, pieces) in acts.requests {
                    for piece in pieces {
                        q.push(now + lat, Ev::Request { from: node, to: peer, chunk, piece });
                    }
                }
                for peer in acts.refresh {
                    let (source, have) = peer_view(&chunks[chunk], peer, chunk);
                    if !cfg.sched.watch {
                        // A polled bitmap is a round trip away, well inside the
                        // refresh interval: it is applied at once (as of now), which
                        // saves an event per refresh at thousands of nodes.
                        d.sched.set_peer_words(peer, source, &[have], dur(now));
                        continue;
                    }
                    // A standing query: answered at once when the peer already has
                    // more than we know, else when its next piece arrives.
                    let count = have.count_ones();
                    if source == Source::Complete || count > d.sched.known(&peer) {
                        q.push(now + 2 * lat, Ev::Bitmap { to: node, from: peer, chunk });
                    } else {
                        chunks[chunk].watchers.entry(peer).or_default().push(node);
                    }
                }
                let few = d.sched.num_peers() < 6;
                let every: Time = if few { 150_000 } else { 1_000_000 };
                if now - d.last_locate >= every {
                    d.last_locate = now;
                    let ans = tracker_answer(&chunks[chunk], node, &mut rand);
                    q.push(now + 2 * lat, Ev::Located { to: node, chunk, peers: ans });
                }
                let d = downloads[node].get_mut(&chunk).expect("polled");
                let wake = d.sched.next_wake(dur(now)).as_micros() as Time;
                d.poll_at = Some(wake);
                let seq = q.next_seq();
                if d.pending.iter().any(|t| *t <= wake) {
                    d.owed = Some((wake, seq));
                } else {
                    d.pending.push(wake);
                    q.push_seq(wake, seq, Ev::Poll(node, chunk, wake));
                }
            }
            Ev::Request { from, to, chunk, piece } => {
                let ch = &mut chunks[chunk];
                let has = ch.have[to] >> piece & 1 == 1;
                let is_seed = ch.have[to] == full(chunk) || to == ch.owner;
                let reply = |why| Ev::Reply { to: from, from: to, chunk, piece, why };
                if !has && to != ch.owner {
                    q.push(now + lat, reply(Failure::Missing));
                    continue;
                }
                // A node reading the origin keeps slots for what it seeds.
                let free = cfg.upload_slots.saturating_sub(slots_used[to]);
                if !is_seed && crate::keeps_slots_for_fills(origin_fills[to] > 0, free, cfg.fill_reserved_slots) {
                    q.push(now + lat, reply(Failure::Busy));
                    continue;
                }
                if is_seed {
                    let e = ch.seed_sent.entry((to, piece)).or_insert((0, now));
                    if now - e.1 >= cfg.seed_window.as_micros() as Time {
                        *e = (0, now);
                    }
                    if e.0 >= cfg.seed_copies {
                        q.push(now + lat, reply(Failure::Deferred));
                        continue;
                    }
                    if !has {
                        // The owner awaits its origin fill.
                        e.0 += 1;
                        ch.waiting.push((from, piece));
                        continue;
                    }
                    e.0 += 1;
                }
                if slots_used[to] >= cfg.upload_slots {
                    wait_for_slot!(now, to, from, chunk, piece);
                    continue;
                }
                slots_used[to] += 1;
                start_flow!(now, to, from, chunk, piece);
            }
            Ev::SlotWaitOver { at, asker, chunk, piece } => {
                // Still waiting (not served by a freed slot): busy.
                if let Some(i) = queued[at].iter().position(|q| *q == (asker, chunk, piece, now)) {
                    queued[at].remove(i);
                    let e = Ev::Reply { to: asker, from: at, chunk, piece, why: Failure::Busy };
                    q.push(now + lat, e);
                }
            }
            Ev::Reply { to, from, chunk, piece, why } => {
                match why {
                    Failure::Missing => refused_by[0] += 1,
                    Failure::Busy => refused_by[1] += 1,
                    Failure::Deferred => refused_by[2] += 1,
                    Failure::Broken => {}
                }
                if let Some(d) = downloads[to].get_mut(&chunk) {
                    d.sched.on_failure(from, piece, why, dur(now));
                    schedule_poll!(now, to, chunk);
                }
            }
            Ev::FlowDone(fi, version) => {
                if !flows[fi].live || flows[fi].version != version {
                    continue;
                }
                let Flow { from, to, chunk, piece, remaining, rate, since, .. } = flows[fi];
                // The flow moved all its bytes (up to the microsecond rounding of
                // its completion time).
                let left = remaining - rate * (now - since) as f64 / 1e6;
                assert!(left < rate * 2e-6 + 1.0, "flow {fi} ended with {left:.0} bytes left");
                flows[fi].live = false;
                free_flows.push(fi);
                up_flows[from].retain(|x| *x != fi);
                down_flows[to].retain(|x| *x != fi);
                reshare!(now, from, to);
                let len = piece_len(chunk, piece);
                uploaded[from] += len;
                let bucket = (now / 500_000) as usize;
                if timeline.len() <= bucket {
                    timeline.resize(bucket + 1, (0, 0));
                }
                if from == origin {
                    timeline[bucket].1 += len;
                } else {
                    timeline[bucket].0 += len;
                }
                if from == origin {
                    origin_bytes += len;
                    alone[to] += len;
                    alone_max[to] = alone_max[to].max(alone[to]);
                    let ch = &mut chunks[chunk];
                    ch.have[to] |= 1 << piece;
                    for w in ch.watchers.remove(&to).unwrap_or_default() {
                        q.push(now + lat, Ev::Bitmap { to: w, from: to, chunk });
                    }
                    let ch = &mut chunks[chunk];
                    ch.origin_next += 1;
                    if ch.origin_next == pieces_of(chunk) {
                        origin_fills[to] -= 1;
                    }
                    // Requests waiting for this piece are served now.
                    let (ready, rest): (Vec<_>, Vec<_>) = ch.waiting.drain(..).partition(|(_, p)| *p == piece);
                    ch.waiting = rest;
                    for (asker, p) in ready {
                        if slots_used[to] >= cfg.upload_slots {
                            wait_for_slot!(now, to, asker, chunk, p);
                        } else {
                            slots_used[to] += 1;
                            start_flow!(now, to, asker, chunk, p);
                        }
                    }
                    q.push(now, Ev::OriginNext(chunk));
                } else {
                    slots_used[from] -= 1;
                    // The next queued request takes the freed slot at once.
                    if let Some((asker, c, p, _)) = queued[from].pop_front() {
                        slots_used[from] += 1;
                        start_flow!(now, from, asker, c, p);
                    }
                    let Some(d) = downloads[to].get_mut(&chunk) else { continue };
                    let fresh = d.sched.on_piece(from, piece, dur(now + lat));
                    if fresh {
                        if chunks[chunk].spread >> piece & 1 == 0 {
                            chunks[chunk].spread |= 1 << piece;
                            alone[from] -= len;
                        }
                        chunks[chunk].have[to] |= 1 << piece;
                        // Its watchers hear of the piece one way later.
                        for w in chunks[chunk].watchers.remove(&to).unwrap_or_default() {
                            q.push(now + lat, Ev::Bitmap { to: w, from: to, chunk });
                        }
                    }
                    schedule_poll!(now, to, chunk);
                }
                // A chunk complete at `to`.
                if chunks[chunk].have[to] == full(chunk) && (from == origin || downloads[to].contains_key(&chunk)) {
                    downloads[to].remove(&chunk);
                    let ch = &mut chunks[chunk];
                    ch.downloaders.retain(|x| *x != to);
                    if !ch.complete.contains(&to) {
                        ch.complete.push(to);
                    }
                    done_chunks[to] += 1;
                    if done_chunks[to] == num_chunks {
                        finish[to] = (now + lat) as f64 / 1e6;
                        remaining_nodes -= 1;
                        if remaining_nodes == 0 {
                            break;
                        }
                    }
                    if next_chunk[to] < num_chunks {
                        let c = next_chunk[to];
                        next_chunk[to] += 1;
                        q.push(now, Ev::Located { to, chunk: c, peers: Vec::new() });
                    }
                }
            }
        }
    }
    uploaded.truncate(n);
    SimReport {
        finish,
        origin_bytes,
        uploaded,
        ideal: cfg.object_bytes as f64 / cfg.node_rate.min(cfg.origin_rate),
        events,
        requests: kinds[2],
        refused: kinds[3],
        refused_by,
        timeline,
        kinds,
        owned: (0..n).map(|i| chunks.iter().filter(|c| c.owner == i).count() as u32).collect(),
        alone_max,
    }
}

#[cfg(test)]
mod tests;
