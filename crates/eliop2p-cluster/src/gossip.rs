//! Gossip membership, failure detection and chunk announcements as a state machine:
//! [`Gossip::tick`] and [`Gossip::handle`] take the time and return the messages to
//! send, so the same code runs on sockets (the P2P layer) and in the simulator.
//!
//! Membership is SWIM (Das, Gupta and Motivala, 2002) with the refinements
//! HashiCorp's memberlist runs at 10,000+ nodes, so a node's steady-state traffic
//! does not grow with the cluster:
//! - **Probes.** Every round a node pings one member, taken in a shuffled
//!   round-robin order (every member is probed within a cycle). Without an `Ack` by
//!   the next round it pings again and asks `indirect` other members to probe the
//!   target for it (`PingReq`); with no ack, direct or relayed, for
//!   `suspect_after`, the member becomes suspect.
//! - **Suspicion with incarnations.** A suspect member that does not refute is
//!   declared dead `dead_after - suspect_after` later (at least one round). A member
//!   that hears it is suspected raises its incarnation and spreads that it is
//!   alive; a claim with a higher `(generation, incarnation, status)` wins.
//! - **Dissemination.** A change (join, suspicion, refutation, death, leave) is
//!   piggybacked on probes and acks, and sent to `fanout` members a round while
//!   fresh, each a bounded number of times (`retransmit_mult * log10(n + 1)`).
//! - **Push-pull.** The full table (`StateSync`) is exchanged on a join, a few times
//!   while a node is young, and then once every `max(push_pull_rounds, n / 4)`
//!   rounds, so that exchange costs each node the same per second at any size.
//!
//! The location index is partitioned by rendezvous hashing: a chunk's owner (and
//! `backups` next ones) learn its holders from `ChunkAnnounce` / `ChunkRemove`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::index::LocationIndex;
use crate::rendezvous;

mod config;
mod locations;
mod probe;
mod queue;
mod table;
mod wire;
use probe::{Probe, Relay};
use queue::BroadcastQueue;
use table::Id;
pub use config::GossipConfig;
pub use wire::{Digest, Message};

/// Chunk ids per announce/remove message.
pub const MAX_CHUNKS_PER_MESSAGE: usize = 4096;
/// Members per `StateSync`.
pub const MAX_MEMBERS_PER_MESSAGE: usize = 8192;
/// A table goes out in `StateSync` pages of at most this many bytes of JSON
/// (bounded from above, strings fully escaped): half a frame (1 MiB), so tables
/// of `MAX_MEMBERS` members with long ids still fit the wire.
pub const TABLE_PAGE_BYTES: usize = 512 << 10;
/// Membership changes piggybacked on one probe message.
pub const MAX_UPDATES_PER_MESSAGE: usize = 16;
/// Rounds a node may know fewer live members than the members it probes before
/// it asks one of them for its table.
pub const BEHIND_ROUNDS: u64 = 10;
/// Members a leaving node tells itself; they spread the leave.
pub const LEAVE_TOLD: usize = 32;
/// Changes waiting to be piggybacked, at most (about what a few rounds carry).
pub const MAX_QUEUED_UPDATES: usize = 128;
/// Chunks one member may have in this node's part of the index: 4 TiB of 16 MiB
/// chunks, more than a node's disk holds. Announcements beyond it are dropped, so
/// one member announcing ids without end costs the owner at most ~30 MB.
pub const MAX_INDEXED_PER_MEMBER: usize = 1 << 18;
/// Members this node keeps at most (live, suspect, dead and left together).
pub const MAX_MEMBERS: usize = 16_384;
/// Members not known before that one unsolicited message may add (a StateSync or
/// updates about others). The table answering this node's own join or push-pull
/// may add up to `MAX_MEMBERS`.
pub const MAX_NEW_MEMBERS_PER_MESSAGE: usize = 64;
/// No member refutes this often (one per suspicion: millennia), so a claim above
/// it is a lie meant to outbid its subject for good: it is dropped.
pub const MAX_INCARNATION: u64 = 1 << 32;
/// A claim from a third party that raises a known member's incarnation by more
/// than this is dropped: only the member raises it, by one per refutation.
pub const MAX_INCARNATION_STEP: u64 = 1024;
/// Generations are wall-clock milliseconds at start: far below this.
pub const MAX_GENERATION: u64 = 1 << 60;

/// How a node is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// P2P address (port 9000 by default).
    pub p2p: SocketAddr,
    /// HTTP proxy address, for operators and tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Whether the node may own chunks (`node.owner`): read them from the origin
    /// for the cluster and track their swarms. A node with a slower NIC than the
    /// rest sets it false, or every node would wait on its origin reads. Left
    /// out of the JSON when true, so nodes without the field read as owners.
    #[serde(default = "owner_default", skip_serializing_if = "is_owner")]
    pub owner: bool,
}

fn owner_default() -> bool {
    true
}

fn is_owner(owner: &bool) -> bool {
    *owner
}

/// A member's state; the order is a claim's precedence at equal incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl Status {
    /// Alive or suspect: still a member for ownership and peer choice.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Alive | Status::Suspect)
    }
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct Out {
    pub to: SocketAddr,
    pub msg: Message,
}

struct Entry {
    node: Arc<NodeInfo>,
    hash: u64,
    generation: u64,
    incarnation: u64,
    state: Status,
    /// Local time of the last status change.
    changed_at: u64,
    /// When a suspect member is declared dead.
    suspect_until: u64,
    /// Reported live by the control plane (mode `control-plane`) rather than
    /// probed: live while reported, suspect and dead by the age of `seen_at`.
    observed: bool,
    seen_at: u64,
}

impl Entry {
    /// Gossiped (not reported by the control plane) and live: probed, asked to
    /// probe, told news.
    fn probeable(&self) -> bool {
        !self.observed && self.state.is_live()
    }

    fn digest(&self) -> Digest {
        Digest {
            node: self.node.clone(),
            generation: self.generation,
            incarnation: self.incarnation,
            status: self.state,
        }
    }
}

/// Where a claim about a member comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The member itself, on its own authenticated link.
    Itself,
    /// Piggybacked news: spread further when it changes something.
    Rumour,
    /// A full table: merged, not spread (every member gets tables of its own).
    Table { solicited: bool },
}

pub struct Gossip {
    me: Arc<NodeInfo>,
    my_hash: u64,
    generation: u64,
    incarnation: u64,
    leaving: bool,
    members: HashMap<Id, Entry>,
    seeds: Vec<SocketAddr>,
    next_seed: usize,
    cfg: GossipConfig,
    rng: u64,
    now: u64,
    rounds: u64,
    index: LocationIndex,
    changed: bool,
    /// Members added by the message being handled (bounded per message).
    new_this_message: usize,
    /// Messages and claims dropped: spoken for a node other than their sender, or
    /// beyond the bounds.
    refused: u64,
    /// Probes that failed (the member became suspect here), and suspicions that
    /// ran out here (the member declared dead by this node).
    suspicions: u64,
    deaths: u64,
    seq: u64,
    probes: HashMap<u64, Probe>,
    relays: HashMap<u64, Relay>,
    probe_order: Vec<Id>,
    probe_pos: usize,
    broadcasts: BroadcastQueue,
    next_push_pull: u64,
    /// Addresses whose table this node asked for (join, push-pull), until when.
    awaiting: HashMap<SocketAddr, u64>,
    /// Members now suspect (their timers run out here).
    suspects: HashSet<String>,
    /// Whether any member came from the control plane (`observe`).
    any_observed: bool,
    last_push_pull: u64,
    /// Live gossiped (not observed) members, kept as states change.
    live_gossiped: usize,
    /// Since when (round) probes have told this node that others know more live
    /// members than it does.
    behind_since: Option<u64>,
}

impl Gossip {
    /// `generation` must grow across restarts of the same node id (wall-clock
    /// milliseconds at start do).
    pub fn new(me: NodeInfo, generation: u64, seeds: Vec<SocketAddr>, cfg: GossipConfig) -> Self {
        let my_hash = rendezvous::node_hash(&me.id);
        let mut broadcasts = BroadcastQueue::default();
        broadcasts.push(&me.id);
        Self {
            rng: my_hash ^ generation.rotate_left(17) | 1,
            me: Arc::new(me),
            my_hash,
            generation,
            incarnation: 0,
            leaving: false,
            new_this_message: 0,
            refused: 0,
            members: HashMap::new(),
            seeds,
            next_seed: 0,
            cfg,
            now: 0,
            rounds: 0,
            index: LocationIndex::default(),
            changed: false,
            suspicions: 0,
            deaths: 0,
            seq: 0,
            probes: HashMap::new(),
            relays: HashMap::new(),
            probe_order: Vec::new(),
            probe_pos: 0,
            broadcasts,
            next_push_pull: 2,
            awaiting: HashMap::new(),
            suspects: HashSet::new(),
            any_observed: false,
            last_push_pull: 0,
            live_gossiped: 0,
            behind_since: None,
        }
    }

    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    /// Adds seed addresses (e.g. P2P addresses learned from the control plane).
    pub fn add_seeds(&mut self, seeds: impl IntoIterator<Item = SocketAddr>) {
        for s in seeds {
            if s != self.me.p2p && !self.seeds.contains(&s) {
                self.seeds.push(s);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn status_of(&self, e: &Entry) -> Status {
        if e.observed && e.state == Status::Alive {
            let age = self.now.saturating_sub(e.seen_at);
            if age >= self.cfg.dead_after_ms {
                return Status::Dead;
            } else if age >= self.cfg.suspect_after_ms {
                return Status::Suspect;
            }
        }
        e.state
    }

    fn is_live(&self, e: &Entry) -> bool {
        self.status_of(e).is_live()
    }

    /// Every known member but this node, with its status.
    pub fn members(&self) -> Vec<(NodeInfo, Status)> {
        let mut v: Vec<(NodeInfo, Status)> = self
            .members
            .values()
            .map(|e| (NodeInfo::clone(&e.node), self.status_of(e)))
            .collect();
        v.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        v
    }

    /// Whether any other member is live (no allocation: asked per chunk fill).
    pub fn has_live_members(&self) -> bool {
        self.members.values().any(|e| self.is_live(e))
    }

    /// Live members (alive or suspect), this node excluded.
    pub fn live_members(&self) -> Vec<NodeInfo> {
        self.members
            .values()
            .filter(|e| self.is_live(e))
            .map(|e| NodeInfo::clone(&e.node))
            .collect()
    }

    /// Live members, counted without allocating.
    pub fn live_count(&self) -> usize {
        self.members.values().filter(|e| self.is_live(e)).count()
    }

    /// The P2P address of a live member (alive or suspect), by its id.
    pub fn live_p2p_addr(&self, id: &str) -> Option<SocketAddr> {
        self.members.get(id).filter(|e| self.is_live(e)).map(|e| e.node.p2p)
    }

    pub fn status(&self, id: &str) -> Option<Status> {
        self.members.get(id).map(|e| self.status_of(e))
    }

    /// This node's own claim.
    fn digest(&self) -> Digest {
        Digest {
            node: self.me.clone(),
            generation: self.generation,
            incarnation: self.incarnation,
            status: if self.leaving { Status::Left } else { Status::Alive },
        }
    }

    /// The current claim about `id` (this node included).
    fn claim(&self, id: &str) -> Option<Digest> {
        if id == self.me.id {
            return Some(self.digest());
        }
        self.members.get(id).map(Entry::digest)
    }

    /// Records a member reported live by another source (the control plane, in
    /// control-plane mode): live while reported, dead `dead_after` after the last
    /// report. Such members are not probed.
    pub fn observe(&mut self, now: u64, node: NodeInfo) {
        self.now = now.max(self.now);
        if node.id == self.me.id {
            return;
        }
        if self.members.len() >= MAX_MEMBERS && !self.members.contains_key(&node.id) {
            return;
        }
        let node = Arc::new(node);
        let e = self.members.entry(Id(node.clone())).or_insert_with(|| Entry {
            hash: rendezvous::node_hash(&node.id),
            node: node.clone(),
            generation: 0,
            incarnation: 0,
            state: Status::Dead,
            changed_at: now,
            suspect_until: 0,
            observed: true,
            seen_at: now,
        });
        if e.probeable() {
            self.live_gossiped -= 1;
        }
        e.observed = true;
        e.seen_at = now;
        self.any_observed = true;
        e.node = node;
        if e.state != Status::Alive {
            e.state = Status::Alive;
            e.changed_at = now;
            self.changed = true;
        }
    }

    /// Messages and claims dropped: spoken for a node other than their sender, or
    /// beyond the bounds.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Members in the table (live or not).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// This node's incarnation (raised on every refuted suspicion).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Members this node suspected after a failed probe, and members it declared
    /// dead when their suspicion ran out, since it started.
    pub fn detections(&self) -> (u64, u64) {
        (self.suspicions, self.deaths)
    }

    /// Membership changes waiting to be piggybacked.
    pub fn pending_updates(&self) -> usize {
        self.broadcasts.len()
    }

    /// Whether membership changed (a member joined, died or left) since the last
    /// call: the caller re-announces its chunks, whose owners may have moved.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// A claim about this node from someone else: a suspicion, death or leave in
    /// this life at or above the current incarnation is refuted by raising it.
    fn refute(&mut self, d: &Digest) {
        if !self.leaving
            && d.generation == self.generation
            && d.status != Status::Alive
            && d.incarnation >= self.incarnation
        {
            self.incarnation = d.incarnation + 1;
            let me = self.me.id.clone();
            self.spread(&me);
        }
    }

    /// Merges a claim about a member.
    fn apply(&mut self, d: &Digest, src: Source) {
        if d.incarnation > MAX_INCARNATION || d.generation > MAX_GENERATION {
            self.refused += 1;
            return;
        }
        if d.node.id == self.me.id {
            self.refute(d);
            return;
        }
        let now = self.now;
        let spread = !matches!(src, Source::Table { .. });
        let Some(e) = self.members.get_mut(&d.node.id) else {
            // Tombstones of members never known say nothing here.
            let bounded = !matches!(src, Source::Itself | Source::Table { solicited: true });
            if !d.status.is_live()
                || self.members.len() >= MAX_MEMBERS
                || (bounded && self.new_this_message >= MAX_NEW_MEMBERS_PER_MESSAGE)
            {
                return;
            }
            self.new_this_message += 1;
            self.live_gossiped += 1;
            self.members.insert(
                Id(d.node.clone()),
                Entry {
                    hash: rendezvous::node_hash(&d.node.id),
                    node: d.node.clone(),
                    generation: d.generation,
                    incarnation: d.incarnation,
                    state: d.status,
                    changed_at: now,
                    suspect_until: now + self.cfg.suspicion_ms(),
                    observed: false,
                    seen_at: now,
                },
            );
            // Probed within this cycle, at a random place among those left.
            self.probe_order.push(Id(d.node.clone()));
            let left = (self.probe_order.len() - self.probe_pos) as u64;
            let j = self.probe_pos + (self.next_random() % left) as usize;
            let last = self.probe_order.len() - 1;
            self.probe_order.swap(j, last);
            if d.status == Status::Suspect {
                self.suspects.insert(d.node.id.clone());
            }
            self.changed = true;
            if spread {
                self.spread(&d.node.id);
            }
            return;
        };
        if e.observed {
            return;
        }
        if src != Source::Itself
            && d.generation == e.generation
            && d.incarnation > e.incarnation.saturating_add(MAX_INCARNATION_STEP)
        {
            self.refused += 1;
            return;
        }
        let before = (e.generation, e.incarnation, e.state);
        if d.key() <= before {
            return;
        }
        let was_live = e.state.is_live();
        e.generation = d.generation;
        e.incarnation = d.incarnation;
        e.node = d.node.clone();
        if e.state != d.status || before.0 != d.generation {
            e.changed_at = now;
            if d.status == Status::Suspect {
                e.suspect_until = now + self.cfg.suspicion_ms();
            }
        }
        e.state = d.status;
        let id = d.node.id.clone();
        if d.status == Status::Suspect {
            self.suspects.insert(id.clone());
        } else {
            self.suspects.remove(&id);
        }
        match (was_live, d.status.is_live()) {
            (true, false) => {
                self.live_gossiped -= 1;
                self.index.drop_node(&id);
                self.changed = true;
            }
            (false, true) => {
                self.live_gossiped += 1;
                self.changed = true;
            }
            _ => {}
        }
        if spread {
            self.spread(&id);
        }
    }

    /// Queues a change to piggyback. A full queue drops its most-sent change:
    /// when more changed at once than piggybacking carries (a crowd joining),
    /// tables spread the rest (young nodes' push-pulls, and members that keep
    /// knowing fewer live members than their probes report).
    fn spread(&mut self, id: &str) {
        self.broadcasts.push(id);
        if self.broadcasts.len() > MAX_QUEUED_UPDATES {
            self.broadcasts.pop_most_sent(&self.me.id);
        }
    }

    /// Handles a message received at local time `now` from a trusted source (the
    /// simulator, tests).
    pub fn handle(&mut self, now: u64, msg: Message) -> Vec<Out> {
        self.handle_from(now, None, msg)
    }

    /// Handles a message received at local time `now` on a connection whose peer
    /// authenticated as `sender`: a node speaks for itself. A message whose subject
    /// (`from`, or the digest of a join or leave) is another node is dropped; what a
    /// message says about others is gossip, taken within bounds (at most
    /// `MAX_NEW_MEMBERS_PER_MESSAGE` new members unless this node asked for the
    /// table, `MAX_MEMBERS` in all, no incarnation above `MAX_INCARNATION` or raised
    /// by more than `MAX_INCARNATION_STEP`), and a claim about this node is refuted.
    pub fn handle_from(&mut self, now: u64, sender: Option<&str>, msg: Message) -> Vec<Out> {
        self.now = now.max(self.now);
        if self.leaving {
            return Vec::new();
        }
        if let Some(sender) = sender
            && msg.subject() != sender
        {
            self.refused += 1;
            return Vec::new();
        }
        self.new_this_message = 0;
        match msg {
            Message::NodeJoin(d) => {
                let to = d.node.p2p;
                let d = Digest {
                    status: Status::Alive,
                    ..d
                };
                self.apply(&d, Source::Itself);
                self.table_to(to, false)
            }
            Message::NodeLeave(d) => {
                let d = Digest {
                    status: Status::Left,
                    ..d
                };
                self.apply(&d, Source::Itself);
                Vec::new()
            }
            Message::StateSync { from, members, reply } => self.on_state_sync(&from, &members, reply),
            Message::Ping { from, seq, members, updates } => self.on_ping(&from, seq, members, &updates),
            Message::PingReq { from, seq, target, updates } => self.on_ping_req(&from, seq, &target, &updates),
            Message::Ack { from, seq, members, updates } => self.on_ack(&from, seq, members, &updates),
            Message::Updates { from, updates } => {
                self.take_news(&from, &updates);
                Vec::new()
            }
            Message::ChunkAnnounce { from, chunks } => {
                self.on_chunk_announce(&from, chunks);
                Vec::new()
            }
            Message::ChunkRemove { from, chunks } => {
                for c in chunks {
                    self.index.remove(&from, &c);
                }
                Vec::new()
            }
        }
    }

    /// A member's table (a page of it): its own entry is its claim, the rest
    /// gossip; answered with this node's table when asked to.
    fn on_state_sync(&mut self, from: &str, members: &[Digest], reply: bool) -> Vec<Out> {
        let sender = members.iter().find(|d| d.node.id == from).map(|d| d.node.p2p);
        // Every page of a table this node asked for, until the wait for it runs
        // out.
        let solicited = sender.is_some_and(|a| self.awaiting.get(&a).is_some_and(|until| *until > self.now));
        for d in members {
            let src = if d.node.id == from { Source::Itself } else { Source::Table { solicited } };
            self.apply(d, src);
        }
        match (reply, sender) {
            (true, Some(to)) => self.table_to(to, false),
            _ => Vec::new(),
        }
    }

    /// A probe of this node: acknowledged, with news for the asker.
    fn on_ping(&mut self, from: &Digest, seq: u64, members: u64, updates: &[Digest]) -> Vec<Out> {
        let to = from.node.p2p;
        self.take_news(from, updates);
        let updates = self.updates_for(Some(&from.node.id));
        let mut out = vec![Out {
            to,
            msg: Message::Ack { from: self.digest(), seq, members: self.live_gossiped as u64, updates },
        }];
        out.extend(self.compare_counts(members, to));
        out
    }

    /// A member asks this node to probe `target` for it (an indirect probe).
    fn on_ping_req(&mut self, from: &Digest, seq: u64, target: &NodeInfo, updates: &[Digest]) -> Vec<Out> {
        let asker = from.node.p2p;
        self.take_news(from, updates);
        // Only a member this node knows, at the address it knows: a PingReq
        // does not make this node contact arbitrary addresses.
        let known = self.members.get(&target.id).is_some_and(|e| e.node.p2p == target.p2p && !e.observed);
        if !known || self.relays.len() >= MAX_MEMBERS {
            return Vec::new();
        }
        self.seq += 1;
        let relay = Relay { to: asker, seq, until: self.now + self.cfg.probe_timeout_ms() };
        self.relays.insert(self.seq, relay);
        vec![Out { to: target.p2p, msg: self.ping(self.seq, &target.id) }]
    }

    /// An answer to a probe of this node's, or to one it relays (passed on to
    /// the member that asked).
    fn on_ack(&mut self, from: &Digest, seq: u64, members: u64, updates: &[Digest]) -> Vec<Out> {
        let id = &from.node.id;
        self.take_news(from, updates);
        if let Some(p) = self.probes.get(&seq)
            && (p.target == *id || p.helpers.contains(id))
        {
            self.probes.remove(&seq);
            return self.compare_counts(members, from.node.p2p);
        }
        if let Some(r) = self.relays.remove(&seq) {
            let updates = self.updates_for(None);
            let msg = Message::Ack { from: self.digest(), seq: r.seq, members: self.live_gossiped as u64, updates };
            return vec![Out { to: r.to, msg }];
        }
        Vec::new()
    }

    /// Chunks a live member (or this node) holds, up to
    /// `MAX_INDEXED_PER_MEMBER` a member.
    fn on_chunk_announce(&mut self, from: &str, chunks: Vec<eliop2p_core::ChunkId>) {
        if self.members.get(from).is_some_and(|e| self.is_live(e)) || from == self.me.id {
            for c in chunks {
                if self.index.held_by(from) >= MAX_INDEXED_PER_MEMBER {
                    self.refused += 1;
                    break;
                }
                self.index.add(from, c);
            }
        }
    }

    /// The sender's own claim, then the news it piggybacked.
    fn take_news(&mut self, from: &Digest, updates: &[Digest]) {
        self.apply(from, Source::Itself);
        for d in updates.iter().take(MAX_UPDATES_PER_MESSAGE) {
            if d.node.id != from.node.id {
                self.apply(d, Source::Rumour);
            }
        }
    }

    /// Leaves the cluster: returns `NodeLeave` for up to `LEAVE_TOLD` random live
    /// members (all of them in a smaller cluster), which spread it as any change;
    /// afterwards the node sends and answers nothing. A node of a large cluster
    /// does not open thousands of connections while it shuts down.
    pub fn leave(&mut self) -> Vec<Out> {
        let told = self.random_members(LEAVE_TOLD, &[]);
        self.incarnation += 1;
        self.leaving = true;
        let d = self.digest();
        told.into_iter()
            .map(|(_, to)| Out {
                to,
                msg: Message::NodeLeave(d.clone()),
            })
            .collect()
    }
}
