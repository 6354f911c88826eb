//! A swarm simulator (pure: no I/O, virtual time), for cluster sizes no machine
//! here can host: thousands of nodes with per-node upload and download rates and
//! a one-way latency, one origin, every node reading the same object at once. It
//! drives the real piece scheduler (`sched::Scheduler`) and the real serving
//! rules: the tracker's answer (the owner, a few complete holders, a random subset
//! of the swarm), introductions (a downloader probes whoever queries it), swarm
//! fills that offer only what they have, upload slots with
//! busy answers, seeds that send each piece to at most `SEED_COPIES` peers per
//! window and defer the rest to the swarm, and the owner as the one origin
//! reader.
//!
//! Its downloads poll as a node's do at their own pieces, refusals and timers
//! (at least every `RELOCATE_MIN`), and when another download of the node
//! frees part of the node's budget (`pieces_freed`). A node also polls at each
//! have-announcement of a watched peer; here an announcement (`Ev::Seen`, one
//! latency after the piece arrived) polls only the watchers that could ask
//! that peer for the piece now (`Scheduler::could_ask`), and the others read
//! it at their next poll that may ask for anything (`Scheduler::may_ask`):
//! the scheduler is told then what each peer that announced had announced by
//! that time. A bitmap a peer sends shows what it had announced when it sent
//! it, one latency before it arrives. A poll of any other watcher would ask for
//! nothing: its budget is full, the piece is here or being fetched, or the
//! peer is paused or has no room, and each of those ends with an event that
//! polls it. Polling every watcher was some 80 events a piece delivered;
//! this is some 25, with the same figures over seeds.
//!
//! Its parts: this file holds the configuration, the report, the events and the
//! tracker; `swarm` the nodes' state and what each event does to it; `links` the
//! bandwidth (every piece a flow, links shared max-min fair); `queue` the order
//! of events. A run is deterministic: the same configuration and seed give the
//! same report.

use std::collections::HashMap;
use std::time::Duration;

use crate::cluster::{ANSWER_HOLDERS, ANSWER_SWARM};
use crate::sched::{Failure, SchedConfig, Scheduler};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub object_bytes: u64,
    pub chunk_bytes: u64,
    pub piece_bytes: u64,
    /// Bytes per second of each node's NIC, each direction.
    pub node_rate: f64,
    /// Nodes `0..slow_nodes` have a NIC of `slow_rate` instead (degraded links,
    /// older hosts): a chunk's owner among them reads the origin at its rate.
    /// Chunk owners are drawn at random, independent of the index.
    pub slow_nodes: usize,
    pub slow_rate: f64,
    /// The slow nodes own no chunk (`node.owner = false`) while others may.
    pub slow_not_owners: bool,
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
    /// An upload slot is freed when this many bytes of its piece are left to
    /// cross; 0: when the last byte has crossed. A node frees it once the
    /// piece's frame is in the socket, with up to `TCP_NOTSENT_LOWAT` (128 KiB)
    /// unsent and what TCP has in flight still to go.
    pub slot_release_bytes: u64,
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

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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
    pub kinds: [u64; 11],
    /// Chunks each node owns (reads from the origin for the cluster).
    pub owned: Vec<u32>,
    /// Per node, the most bytes it held at once that no other node held yet
    /// (pieces its origin fills read and it had not sent on: what its death
    /// would cost the origin again).
    pub alone_max: Vec<u64>,
    /// Downloads started: one per node and chunk it does not own, when every
    /// tracker answer finds its download (a late one once started the chunk
    /// again at a node that had finished it).
    pub downloads: u64,
}

/// The kinds of events the simulator runs, in `SimReport::kinds` order.
pub const EVENT_KINDS: [&str; 11] =
    ["poll", "flow end", "request", "refusal", "bitmap", "tracker", "origin read", "slot wait over", "slot freed", "piece seen", "budget freed"];

mod links;
mod queue;
mod swarm;
use queue::Time;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Ev {
    Poll(usize, usize, Time),
    /// A flow's last byte crossed (a timer: `Ev::timer`).
    FlowDone(usize),
    Request { from: usize, to: usize, chunk: usize, piece: u32 },
    Reply { to: usize, from: usize, chunk: usize, piece: u32, why: Failure },
    Bitmap { to: usize, from: usize, chunk: usize },
    Located { to: usize, chunk: usize, peers: Vec<usize> },
    OriginNext(usize),
    /// A request queued for an upload slot at `at` waited `slot_wait`.
    SlotWaitOver { at: usize, asker: usize, chunk: usize, piece: u32 },
    /// A flow is down to `slot_release_bytes`: its uploader's slot is free (a
    /// timer).
    SlotFree(usize),
    /// A piece that reached `node` one latency ago: its have-announcement
    /// reaches the nodes watching it now.
    Seen { node: usize, chunk: usize, piece: u32 },
    /// A download of the node has fewer pieces in flight, and the download
    /// itself has polled: those its budget held back look for room.
    Budget(usize),
}

impl Ev {
    /// The timer ids of a flow's two timed events.
    fn flow_done_timer(flow: usize) -> usize {
        2 * flow
    }

    fn slot_free_timer(flow: usize) -> usize {
        2 * flow + 1
    }

    /// The event a timer id stands for.
    fn timer(id: usize) -> Ev {
        if id.is_multiple_of(2) { Ev::FlowDone(id / 2) } else { Ev::SlotFree(id / 2) }
    }

    /// Its index in `EVENT_KINDS`.
    fn kind(&self) -> usize {
        match self {
            Ev::Poll(..) => 0,
            Ev::FlowDone(..) => 1,
            Ev::Request { .. } => 2,
            Ev::Reply { .. } => 3,
            Ev::Bitmap { .. } => 4,
            Ev::Located { .. } => 5,
            Ev::OriginNext(..) => 6,
            Ev::SlotWaitOver { .. } => 7,
            Ev::SlotFree(..) => 8,
            Ev::Seen { .. } => 9,
            Ev::Budget(..) => 10,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
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
    /// The peers it holds a standing query with (`sched.watch`).
    watching: Ids,
    /// Watched peers whose announcements arrived since its scheduler was last
    /// told (possibly repeated).
    news: Vec<usize>,
    /// Its last poll gave it less than its own cap (`sched.total`): the node's
    /// other downloads held the rest of its budget. It polls again when one of
    /// them frees some (as a node's downloads wake on `pieces_freed`).
    held_back: bool,
}

/// A set of node indexes, hashed by a multiply: the simulator's own ids, no
/// input to guard against, and a lookup at every refresh of a watched peer.
type Ids = std::collections::HashSet<usize, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A node's downloads by chunk: a few (its readahead window), so a list
/// searched in order, which costs less than hashing the chunk at every event.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Downloads(Vec<(usize, Download)>);

impl Downloads {
    fn position(&self, chunk: &usize) -> Option<usize> {
        self.0.iter().position(|(c, _)| c == chunk)
    }

    fn get(&self, chunk: &usize) -> Option<&Download> {
        self.position(chunk).map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, chunk: &usize) -> Option<&mut Download> {
        self.position(chunk).map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, chunk: &usize) -> bool {
        self.get(chunk).is_some()
    }

    fn insert(&mut self, chunk: usize, d: Download) {
        debug_assert!(!self.contains_key(&chunk));
        self.0.push((chunk, d));
    }

    fn remove(&mut self, chunk: &usize) {
        if let Some(i) = self.position(chunk) {
            self.0.swap_remove(i);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&usize, &Download)> {
        self.0.iter().map(|(c, d)| (c, d))
    }
}

impl std::ops::Index<&usize> for Downloads {
    type Output = Download;
    fn index(&self, chunk: &usize) -> &Download {
        self.get(chunk).expect("a download of the chunk")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ChunkState {
    owner: usize,
    /// Pieces each node has of this chunk (bit per piece; chunk <= 64 pieces).
    have: Vec<u64>,
    /// Pieces of each node whose have-announcements have reached its watchers
    /// (those that reached it at least one latency ago): what a bitmap it
    /// sends shows on arrival (with `sched.watch`).
    seen: Vec<u64>,
    /// Origin fill at the owner: next piece to read, and whether it started.
    origin_next: u32,
    /// Pieces held by more than one node.
    spread: u64,
    origin_started: bool,
    downloaders: Vec<usize>,
    complete: Vec<usize>,
    /// Copies of each piece the seeds sent, per window: (count, window start).
    #[serde(with = "pairs")]
    seed_sent: HashMap<(usize, u32), (u32, Time)>,
    /// Requests awaiting a piece the owner's origin fill has not reached.
    waiting: Vec<(usize, u32)>,
    /// Standing bitmap queries (`sched.watch`): per node, the nodes it
    /// announces its new pieces of this chunk to (some may have finished the
    /// chunk since: dropped when next met).
    watchers: HashMap<usize, Vec<usize>>,
}

impl ChunkState {
    fn new(nodes: usize) -> Self {
        Self {
            owner: 0,
            have: vec![0; nodes],
            seen: vec![0; nodes],
            origin_next: 0,
            spread: 0,
            origin_started: false,
            downloaders: Vec::new(),
            complete: Vec::new(),
            seed_sent: HashMap::new(),
            waiting: Vec::new(),
            watchers: HashMap::new(),
        }
    }
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
        if self.slow_nodes > self.nodes || self.slow_nodes > 0 && (self.slow_rate.is_nan() || self.slow_rate <= 0.0) {
            return Err(format!("slow_nodes {} must be at most nodes {}, with slow_rate above 0", self.slow_nodes, self.nodes));
        }
        Ok(())
    }
}

/// Where a run is, for a caller that reports on runs of hours.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub events: u64,
    /// Virtual seconds since every node started.
    pub secs: f64,
    /// Nodes that hold the whole object.
    pub nodes_done: usize,
    /// Bytes the origin has sent, and the fewest bytes of the object any node
    /// holds: a run whose slowest node stays a short way behind the origin all
    /// along ends near the origin's own time, before the run is over.
    pub origin_bytes: u64,
    pub slowest_bytes: u64,
}

/// Runs the swarm; `cfg` must pass `SimConfig::check` (a panic otherwise).
pub fn simulate(cfg: &SimConfig) -> SimReport {
    simulate_with_progress(cfg, u64::MAX, &mut |_| {})
}

/// [`simulate`], calling `on` after every `every` events.
pub fn simulate_with_progress(cfg: &SimConfig, every: u64, on: &mut dyn FnMut(&Progress)) -> SimReport {
    let mut sim = Sim::new(cfg);
    while !sim.run(every.max(1)) {
        on(&sim.progress());
    }
    sim.report()
}

/// A run that its caller drives some events at a time, and can save and load
/// mid-way: a run of hours outlives no process, so a caller saves it now and
/// then and a later process goes on from the last save. A loaded run goes on
/// exactly as the saved one would have (the same report, event for event).
pub struct Sim<'a>(swarm::Swarm<'a>);

/// What a saved run's file holds: the format, the configuration it ran with
/// (as `Debug` prints it: a run is only loaded under the same one), what the
/// caller kept with it, and the swarm.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved<S> {
    format: u32,
    config: String,
    note: String,
    swarm: S,
}

/// Bumped when what a saved run holds changes.
const SAVE_FORMAT: u32 = 1;

impl<'a> Sim<'a> {
    /// Every node about to start; `cfg` must pass `SimConfig::check` (a panic
    /// otherwise).
    pub fn new(cfg: &'a SimConfig) -> Self {
        if let Err(e) = cfg.check() {
            panic!("simulate: {e}");
        }
        Self(swarm::Swarm::new(cfg))
    }

    /// Runs up to `events` more events; true once every node holds the whole
    /// object (a finished run runs no more).
    pub fn run(&mut self, events: u64) -> bool {
        self.0.step(events)
    }

    pub fn progress(&self) -> Progress {
        self.0.progress()
    }

    /// The report (of a run that `run` finished: before, its figures are those
    /// of the nodes done so far).
    pub fn report(self) -> SimReport {
        self.0.report()
    }

    /// Writes the run's state, with `note` (what the caller wants back on
    /// `load`, e.g. the wall time spent so far).
    pub fn save(&self, note: &str, w: impl std::io::Write) -> Result<(), String> {
        let config = format!("{:?}", self.0.cfg());
        let saved = Saved { format: SAVE_FORMAT, config, note: note.to_owned(), swarm: &self.0 };
        serde_json::to_writer(w, &saved).map_err(|e| format!("saving the simulation: {e}"))
    }

    /// A run saved by `save` under the same configuration, and its note.
    pub fn load(cfg: &'a SimConfig, bytes: &[u8]) -> Result<(Self, String), String> {
        if let Err(e) = cfg.check() {
            return Err(format!("simulate: {e}"));
        }
        // The header first: a mismatch is told without reading the swarm.
        #[derive(serde::Deserialize)]
        struct Header {
            format: u32,
            config: String,
        }
        let h: Header = serde_json::from_slice(bytes).map_err(|e| format!("not a saved simulation: {e}"))?;
        if h.format != SAVE_FORMAT {
            return Err(format!("saved in format {}, this build reads {SAVE_FORMAT}", h.format));
        }
        let now = format!("{cfg:?}");
        if h.config != now {
            // The settings that differ, as `Debug` names them.
            let differ: Vec<String> = (h.config.split(", ").zip(now.split(", ")))
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("{} (now {})", a.trim_end_matches([' ', '}']), b.trim_end_matches([' ', '}'])))
                .collect();
            return Err(format!("saved with another configuration: {}", differ.join(", ")));
        }
        let saved: Saved<swarm::Swarm<'a>> = serde_json::from_slice(bytes).map_err(|e| format!("a damaged saved simulation: {e}"))?;
        Ok((Self(saved.swarm.loaded(cfg)), saved.note))
    }
}

/// A map saved as a list of pairs (JSON keys are strings; these are tuples).
mod pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub(super) fn deserialize<'de, K, V, D>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
