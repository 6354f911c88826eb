//! Gossip membership, failure detection and chunk announcements as a state machine:
//! [`Gossip::tick`] and [`Gossip::handle`] take the time and return the messages to
//! send, so the same code runs on sockets (the P2P layer) and in the simulator.
//!
//! Membership is heartbeat gossip with push-pull anti-entropy: every node bumps its
//! own heartbeat each round and sends its member table (`StateSync`) to `fanout`
//! random live members, which merge it and answer with theirs. A member whose
//! heartbeat has not advanced for `suspect_after` is suspect, for `dead_after` dead;
//! a restarted node comes back with a higher generation. `NodeLeave` marks a member
//! gone at once. The location index is partitioned by rendezvous hashing: a chunk's
//! owner (and `backups` next ones) learn its holders from `ChunkAnnounce` /
//! `ChunkRemove`.

use std::collections::HashMap;
use std::net::SocketAddr;

use eliop2p_core::ChunkId;
use serde::{Deserialize, Serialize};

use crate::index::LocationIndex;
use crate::rendezvous;

mod wire;
pub use wire::{Digest, Message};

/// Chunk ids per announce/remove message.
pub const MAX_CHUNKS_PER_MESSAGE: usize = 4096;
/// Members per `StateSync`.
pub const MAX_MEMBERS_PER_MESSAGE: usize = 8192;
/// Chunks one member may have in this node's part of the index: 4 TiB of 16 MiB
/// chunks, more than a node's disk holds. Announcements beyond it are dropped, so
/// one member announcing ids without end costs the owner at most ~30 MB.
pub const MAX_INDEXED_PER_MEMBER: usize = 1 << 18;
/// Members this node keeps at most (live, suspect, dead and left together).
pub const MAX_MEMBERS: usize = 16_384;
/// Members not known before that one message may add (a StateSync about others).
pub const MAX_NEW_MEMBERS_PER_MESSAGE: usize = 64;
/// No real heartbeat gets near this (one per round: millennia), so a digest above
/// it is a lie meant to outbid its node for good: it is dropped.
pub const MAX_HEARTBEAT: u64 = 1 << 48;
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Alive,
    Suspect,
    Dead,
    Left,
}

#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Milliseconds between rounds.
    pub interval_ms: u64,
    /// Members sent our table per round.
    pub fanout: usize,
    pub suspect_after_ms: u64,
    pub dead_after_ms: u64,
    /// Dead and left members stop being gossiped after this (kept as tombstones).
    pub forget_after_ms: u64,
    /// Rounds between join attempts to seeds that are not live members.
    pub rejoin_every: u64,
    /// Owners after the first that also index a chunk's holders.
    pub backups: usize,
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
        }
    }
}

impl GossipConfig {
    /// Upper bound on how long a crashed node keeps being treated as live: its
    /// last heartbeat reaches everyone within a few rounds (push-pull gossip spreads
    /// in O(log n) rounds; 5 covers clusters of a thousand nodes at fanout 3), and it
    /// is declared dead `dead_after` later.
    pub fn detection_bound_ms(&self) -> u64 {
        self.dead_after_ms + 5 * self.interval_ms
    }
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct Out {
    pub to: SocketAddr,
    pub msg: Message,
}

struct Entry {
    node: NodeInfo,
    hash: u64,
    generation: u64,
    heartbeat: u64,
    left: bool,
    /// Local time the heartbeat last advanced.
    seen_at: u64,
    /// Whether the death was already acted on (index dropped).
    dead_handled: bool,
}

pub struct Gossip {
    me: NodeInfo,
    my_hash: u64,
    generation: u64,
    heartbeat: u64,
    leaving: bool,
    members: HashMap<String, Entry>,
    seeds: Vec<SocketAddr>,
    cfg: GossipConfig,
    rng: u64,
    now: u64,
    rounds: u64,
    index: LocationIndex,
    changed: bool,
    /// Members added by the message being handled (bounded per message).
    new_this_message: usize,
    /// Messages dropped because they spoke for a node other than their sender.
    refused: u64,
}

impl Gossip {
    /// `generation` must grow across restarts of the same node id (wall-clock
    /// milliseconds at start do).
    pub fn new(me: NodeInfo, generation: u64, seeds: Vec<SocketAddr>, cfg: GossipConfig) -> Self {
        let my_hash = rendezvous::node_hash(&me.id);
        Self {
            rng: my_hash ^ generation.rotate_left(17) | 1,
            me,
            my_hash,
            generation,
            heartbeat: 0,
            leaving: false,
            new_this_message: 0,
            refused: 0,
            members: HashMap::new(),
            seeds,
            cfg,
            now: 0,
            rounds: 0,
            index: LocationIndex::default(),
            changed: false,
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
        if e.left {
            return Status::Left;
        }
        let age = self.now.saturating_sub(e.seen_at);
        if age >= self.cfg.dead_after_ms {
            Status::Dead
        } else if age >= self.cfg.suspect_after_ms {
            Status::Suspect
        } else {
            Status::Alive
        }
    }

    fn is_live(&self, e: &Entry) -> bool {
        matches!(self.status_of(e), Status::Alive | Status::Suspect)
    }

    /// Every known member but this node, with its status.
    pub fn members(&self) -> Vec<(NodeInfo, Status)> {
        let mut v: Vec<(NodeInfo, Status)> = self
            .members
            .values()
            .map(|e| (e.node.clone(), self.status_of(e)))
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
            .map(|e| e.node.clone())
            .collect()
    }

    pub fn status(&self, id: &str) -> Option<Status> {
        self.members.get(id).map(|e| self.status_of(e))
    }

    fn digest(&self) -> Digest {
        Digest {
            node: self.me.clone(),
            generation: self.generation,
            heartbeat: self.heartbeat,
            left: self.leaving,
        }
    }

    fn table(&self) -> Vec<Digest> {
        let mut v = vec![self.digest()];
        v.extend(
            self.members
                .values()
                .filter(|e| {
                    self.is_live(e) || self.now.saturating_sub(e.seen_at) < self.cfg.forget_after_ms
                })
                .take(MAX_MEMBERS_PER_MESSAGE - 1)
                .map(|e| Digest {
                    node: e.node.clone(),
                    generation: e.generation,
                    heartbeat: e.heartbeat,
                    left: e.left,
                }),
        );
        v
    }

    /// Records a member reported live by another source (the control plane, in
    /// control-plane mode): as if its heartbeat advanced now.
    pub fn observe(&mut self, now: u64, node: NodeInfo) {
        self.now = now.max(self.now);
        if node.id == self.me.id {
            return;
        }
        let (generation, heartbeat) = self
            .members
            .get(&node.id)
            .map_or((0, 0), |e| (e.generation, e.heartbeat));
        let d = Digest {
            node,
            generation,
            heartbeat: heartbeat.saturating_add(1),
            left: false,
        };
        self.new_this_message = 0;
        self.merge(&d);
    }

    /// Messages dropped because they spoke for a node other than their sender.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Members in the table (live or not).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether membership changed (a member joined, died or left) since the last
    /// call: the caller re-announces its chunks, whose owners may have moved.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn merge(&mut self, d: &Digest) {
        if d.heartbeat > MAX_HEARTBEAT || d.generation > MAX_GENERATION {
            return;
        }
        if d.node.id == self.me.id {
            // Someone thinks this node left or holds an older heartbeat than a
            // rumour: outbid it, unless this node is leaving.
            if !self.leaving
                && d.generation == self.generation
                && d.left
                && d.heartbeat >= self.heartbeat
            {
                self.heartbeat = d.heartbeat.saturating_add(1);
            }
            return;
        }
        let now = self.now;
        let full = self.members.len() >= MAX_MEMBERS
            || self.new_this_message >= MAX_NEW_MEMBERS_PER_MESSAGE;
        match self.members.get_mut(&d.node.id) {
            None if full => {}
            None => {
                self.new_this_message += 1;
                self.members.insert(
                    d.node.id.clone(),
                    Entry {
                        hash: rendezvous::node_hash(&d.node.id),
                        node: d.node.clone(),
                        generation: d.generation,
                        heartbeat: d.heartbeat,
                        left: d.left,
                        seen_at: now,
                        dead_handled: d.left,
                    },
                );
                if !d.left {
                    self.changed = true;
                }
            }
            Some(e) => {
                let newer = (d.generation, d.heartbeat) > (e.generation, e.heartbeat);
                if newer {
                    let was_gone = e.left || e.dead_handled;
                    e.generation = d.generation;
                    e.heartbeat = d.heartbeat;
                    e.node = d.node.clone();
                    e.seen_at = now;
                    e.left = d.left;
                    if was_gone && !d.left {
                        e.dead_handled = false;
                        self.changed = true;
                    }
                } else if d.left
                    && !e.left
                    && (d.generation, d.heartbeat) == (e.generation, e.heartbeat)
                {
                    e.left = true;
                }
                if e.left && !e.dead_handled {
                    e.dead_handled = true;
                    let id = e.node.id.clone();
                    self.index.drop_node(&id);
                    self.changed = true;
                }
            }
        }
    }

    /// Marks members dead whose heartbeat stopped, dropping their index entries.
    fn detect(&mut self) {
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|e| !e.dead_handled && self.status_of(e) == Status::Dead)
            .map(|e| e.node.id.clone())
            .collect();
        for id in dead {
            if let Some(e) = self.members.get_mut(&id) {
                e.dead_handled = true;
            }
            self.index.drop_node(&id);
            self.changed = true;
        }
    }

    /// One gossip round at local time `now` (milliseconds).
    pub fn tick(&mut self, now: u64) -> Vec<Out> {
        self.now = now;
        if self.leaving {
            return Vec::new();
        }
        self.index.expire_downloaders(now);
        self.heartbeat = self.heartbeat.saturating_add(1);
        self.rounds += 1;
        self.detect();
        // Dead and left members are gossiped for `forget_after_ms` (tombstones),
        // then removed: the table does not keep every node that ever existed.
        let forget = self.cfg.forget_after_ms.saturating_mul(2);
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|e| !self.is_live(e) && now.saturating_sub(e.seen_at) >= forget)
            .map(|e| e.node.id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
            self.index.drop_node(&id);
        }
        let mut out = Vec::new();
        let live: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|e| self.is_live(e))
            .map(|e| e.node.p2p)
            .collect();
        let rejoin = self.rounds % self.cfg.rejoin_every.max(1) == 1;
        for s in self.seeds.clone() {
            if (live.is_empty() || rejoin) && !live.contains(&s) {
                out.push(Out {
                    to: s,
                    msg: Message::NodeJoin(self.digest()),
                });
            }
        }
        if !live.is_empty() {
            let table = self.table();
            let k = self.cfg.fanout.min(live.len());
            let mut picked: Vec<usize> = Vec::with_capacity(k);
            while picked.len() < k {
                let i = (self.next_random() % live.len() as u64) as usize;
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            for i in picked {
                out.push(Out {
                    to: live[i],
                    msg: Message::StateSync {
                        from: self.me.id.clone(),
                        members: table.clone(),
                        reply: true,
                    },
                });
            }
        }
        out
    }

    /// Handles a message received at local time `now` from a trusted source (the
    /// simulator, tests).
    pub fn handle(&mut self, now: u64, msg: Message) -> Vec<Out> {
        self.handle_from(now, None, msg)
    }

    /// Handles a message received at local time `now` on a connection whose peer
    /// authenticated as `sender`: a node speaks for itself. A NodeJoin, NodeLeave,
    /// chunk announcement or StateSync whose subject or `from` is another node is
    /// dropped; what a StateSync says about others is gossip, taken within bounds
    /// (at most `MAX_NEW_MEMBERS_PER_MESSAGE` new members, `MAX_MEMBERS` in all,
    /// no heartbeat above `MAX_HEARTBEAT`).
    pub fn handle_from(&mut self, now: u64, sender: Option<&str>, msg: Message) -> Vec<Out> {
        self.now = now.max(self.now);
        if self.leaving {
            return Vec::new();
        }
        if let Some(sender) = sender {
            let subject = match &msg {
                Message::NodeJoin(d) | Message::NodeLeave(d) => &d.node.id,
                Message::ChunkAnnounce { from, .. }
                | Message::ChunkRemove { from, .. }
                | Message::StateSync { from, .. } => from,
            };
            if subject != sender {
                self.refused += 1;
                return Vec::new();
            }
        }
        self.new_this_message = 0;
        match msg {
            Message::NodeJoin(d) => {
                let to = d.node.p2p;
                self.merge(&d);
                vec![Out {
                    to,
                    msg: Message::StateSync {
                        from: self.me.id.clone(),
                        members: self.table(),
                        reply: false,
                    },
                }]
            }
            Message::NodeLeave(d) => {
                // Only a leave of the generation this node knows: a stale or
                // future one says nothing about the member now.
                let d = Digest { left: true, ..d };
                self.merge(&d);
                if let Some(e) = self.members.get_mut(&d.node.id)
                    && !e.left
                    && e.generation == d.generation
                {
                    e.left = true;
                    e.dead_handled = true;
                    self.index.drop_node(&d.node.id);
                    self.changed = true;
                }
                Vec::new()
            }
            Message::StateSync {
                from,
                members,
                reply,
            } => {
                let sender = members
                    .iter()
                    .find(|d| d.node.id == from)
                    .map(|d| d.node.p2p);
                for d in &members {
                    self.merge(d);
                }
                match (reply, sender) {
                    (true, Some(to)) => vec![Out {
                        to,
                        msg: Message::StateSync {
                            from: self.me.id.clone(),
                            members: self.table(),
                            reply: false,
                        },
                    }],
                    _ => Vec::new(),
                }
            }
            Message::ChunkAnnounce { from, chunks } => {
                if self.members.get(&from).is_some_and(|e| self.is_live(e)) || from == self.me.id {
                    for c in chunks {
                        if self.index.held_by(&from) >= MAX_INDEXED_PER_MEMBER {
                            self.refused += 1;
                            break;
                        }
                        self.index.add(&from, c);
                    }
                }
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

    /// The first `k` live nodes (this one included) in rendezvous order for a
    /// chunk: its owner first.
    pub fn owners(&self, chunk: &ChunkId, k: usize) -> Vec<NodeInfo> {
        let mut best: Vec<(u64, &NodeInfo)> = Vec::with_capacity(k + 1);
        let mut push = |w: u64, n| {
            let pos = best
                .iter()
                .position(|(bw, _)| w > *bw)
                .unwrap_or(best.len());
            if pos < k {
                best.insert(pos, (w, n));
                best.truncate(k);
            }
        };
        if !self.leaving {
            push(rendezvous::weight(chunk, self.my_hash), &self.me);
        }
        for e in self.members.values() {
            if self.is_live(e) {
                push(rendezvous::weight(chunk, e.hash), &e.node);
            }
        }
        best.into_iter().map(|(_, n)| n.clone()).collect()
    }

    /// Whether this node is among the chunk's owner and backups.
    pub fn indexes(&self, chunk: &ChunkId) -> bool {
        self.owners(chunk, 1 + self.cfg.backups)
            .iter()
            .any(|n| n.id == self.me.id)
    }

    /// Live holders of a chunk known to this node's part of the index.
    pub fn holders(&self, chunk: &ChunkId) -> Vec<NodeInfo> {
        self.index
            .holders(chunk)
            .iter()
            .filter_map(|id| {
                if *id == self.me.id {
                    return Some(self.me.clone());
                }
                let e = self.members.get(id)?;
                self.is_live(e).then(|| e.node.clone())
            })
            .collect()
    }

    /// Registers a member as downloading a chunk this node tracks, for `ttl_ms`.
    pub fn add_downloader(&mut self, now: u64, node: &str, chunk: ChunkId, ttl_ms: u64) {
        self.index.add_downloader(node, chunk, now, now + ttl_ms);
    }

    /// Live members downloading a chunk, as far as this node tracks it.
    pub fn downloaders(&self, now: u64, chunk: &ChunkId) -> Vec<NodeInfo> {
        self.index
            .downloaders(chunk, now)
            .into_iter()
            .filter_map(|id| {
                let e = self.members.get(id)?;
                self.is_live(e).then(|| e.node.clone())
            })
            .collect()
    }

    /// Chunks indexed here.
    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Tells the owners of these chunks that this node now holds (`added`) or no
    /// longer holds (`removed`) them. Chunks this node indexes itself are recorded
    /// directly.
    pub fn announce(&mut self, added: &[ChunkId], removed: &[ChunkId]) -> Vec<Out> {
        let mut batches: HashMap<(SocketAddr, bool), Vec<ChunkId>> = HashMap::new();
        let k = 1 + self.cfg.backups;
        for (list, add) in [(added, true), (removed, false)] {
            for c in list {
                for owner in self.owners(c, k) {
                    if owner.id == self.me.id {
                        let me = self.me.id.clone();
                        if add {
                            self.index.add(&me, *c);
                        } else {
                            self.index.remove(&me, c);
                        }
                    } else {
                        batches.entry((owner.p2p, add)).or_default().push(*c);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for ((to, add), chunks) in batches {
            for part in chunks.chunks(MAX_CHUNKS_PER_MESSAGE) {
                let (from, chunks) = (self.me.id.clone(), part.to_vec());
                out.push(Out {
                    to,
                    msg: if add {
                        Message::ChunkAnnounce { from, chunks }
                    } else {
                        Message::ChunkRemove { from, chunks }
                    },
                });
            }
        }
        out
    }

    /// Drops index entries for chunks this node no longer owns or backs up (after
    /// membership changed); their new owners learn them from re-announcements.
    pub fn prune_index(&mut self) {
        let k = 1 + self.cfg.backups;
        let me = self.me.id.clone();
        let drop: std::collections::HashSet<ChunkId> = self
            .index
            .chunks()
            .filter(|c| !self.owners(c, k).iter().any(|n| n.id == me))
            .copied()
            .collect();
        self.index.retain(|c| !drop.contains(c));
    }

    /// Leaves the cluster: returns `NodeLeave` for every live member; afterwards the
    /// node sends and answers nothing.
    pub fn leave(&mut self) -> Vec<Out> {
        self.heartbeat += 1;
        self.leaving = true;
        let d = self.digest();
        self.members
            .values()
            .filter(|e| self.is_live(e))
            .map(|e| Out {
                to: e.node.p2p,
                msg: Message::NodeLeave(d.clone()),
            })
            .collect()
    }
}
