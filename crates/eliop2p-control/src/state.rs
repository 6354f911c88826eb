//! The control plane's soft state: nodes and their liveness, which node holds which
//! chunk, demand per chunk, and replication commands. Every method takes the time,
//! so liveness and replication are tested on a paused clock. Changes that must
//! survive a restart are returned as [`Op`]s for the store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use eliop2p_cluster::api::{
    self, Command, CommandKind, Heartbeat, NodeStatus, NodeView, Register,
};
use eliop2p_core::ChunkId;
use tokio::time::Instant;

use crate::locations::HolderSet;

/// A change: what the embedded store keeps, and (with a shared store) what the
/// replicas' log carries. Applying one twice leaves the state as applying it once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    PutNode(Register),
    DeleteNode(String),
    AddChunks(String, Vec<(ChunkId, u64)>),
    RemoveChunks(String, Vec<ChunkId>),
    ClearChunks(String),
    PutCommand(String, Command),
    DeleteCommand(u64),
    PutJob(api::PreheatJob),
    DeleteJob(u64),
    /// A node's heartbeat (shared store only: liveness, rates and hot chunks for
    /// every replica).
    Heartbeat(String, Heartbeat),
    /// Location queries per chunk since the last batch (shared store only).
    Demand(Vec<(ChunkId, u64)>),
}

#[derive(Clone, Debug)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    pub suspect_after: Duration,
    pub dead_after: Duration,
}

#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Hot chunks with fewer online holders get replicate commands (0 = off).
    pub min_replicas: usize,
    /// Demand (location queries and hot reports, decaying by half per pass) that
    /// makes a chunk hot.
    pub hot_threshold: u64,
    /// Cold chunks (no demand) with more online holders get evict commands for the
    /// surplus (0 = no limit).
    pub max_replicas: usize,
    /// Commands waiting per node at most.
    pub max_pending_per_node: usize,
}

pub struct NodeEntry {
    pub reg: Register,
    pub last_seen: Instant,
    pub heartbeat: Heartbeat,
    pub chunks: HashSet<ChunkId>,
    /// When the last heartbeat arrived, and the rates since the one before.
    pub last_heartbeat: Option<Instant>,
    pub rates: api::Rates,
}

pub struct State {
    pub timing: Timing,
    pub replication: ReplicationConfig,
    pub nodes: HashMap<String, NodeEntry>,
    /// Holders per chunk, and chunk lengths (for replicate commands).
    pub(crate) holders: HashMap<ChunkId, HolderSet>,
    pub(crate) lens: HashMap<ChunkId, u64>,
    pub(crate) demand: HashMap<ChunkId, u64>,
    pub(crate) commands: HashMap<String, VecDeque<Command>>,
    pub(crate) next_command: u64,
    /// Preheat jobs by id.
    pub jobs: BTreeMap<u64, api::PreheatJob>,
    pub next_job: u64,
    pub commands_issued: u64,
    pub commands_acked_ok: u64,
    pub commands_acked_failed: u64,
    pub location_queries: u64,
    /// Replicas on a shared store: heartbeats and demand are applied from the log
    /// (by every replica, this one too), not where they arrive; demand waits in
    /// `pending_demand` for the next batch.
    pub(crate) shared: bool,
    pub(crate) pending_demand: HashMap<ChunkId, u64>,
}

/// Command and job ids are `tag << ID_TAG_SHIFT | n`: each replica on a shared store
/// numbers in its own range (tag 0 for a single control plane), and the ids stay
/// below 2^53 so JSON readers keep them exact.
pub const ID_TAG_SHIFT: u32 = 40;
pub const MAX_ID_TAG: u64 = (1 << 12) - 1;

/// Raises `next` past `id` when `id` is in `next`'s range.
pub(crate) fn bump_id(next: &mut u64, id: u64) {
    if id >> ID_TAG_SHIFT == *next >> ID_TAG_SHIFT {
        *next = (*next).max(id + 1);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    UnknownNode(String),
    UnknownCommand(u64),
    BadChunkId(String),
    Invalid(String),
}

/// A node's labels within `api::MAX_LABELS`, `MAX_LABEL_KEY` and `MAX_LABEL_VALUE`.
fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), StateError> {
    if labels.len() > api::MAX_LABELS {
        return Err(StateError::Invalid(format!(
            "{} labels; at most {}",
            labels.len(),
            api::MAX_LABELS
        )));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > api::MAX_LABEL_KEY {
            return Err(StateError::Invalid(format!(
                "label keys must be 1-{} bytes",
                api::MAX_LABEL_KEY
            )));
        }
        if v.len() > api::MAX_LABEL_VALUE {
            return Err(StateError::Invalid(format!(
                "label {k:?}: values must be at most {} bytes",
                api::MAX_LABEL_VALUE
            )));
        }
    }
    Ok(())
}

pub(crate) fn parse_id(s: &str) -> Result<ChunkId, StateError> {
    ChunkId::from_hex(s).ok_or_else(|| StateError::BadChunkId(s.to_owned()))
}

impl State {
    pub fn new(timing: Timing, replication: ReplicationConfig) -> Self {
        Self {
            timing,
            replication,
            nodes: HashMap::new(),
            holders: HashMap::new(),
            lens: HashMap::new(),
            demand: HashMap::new(),
            commands: HashMap::new(),
            next_command: 1,
            jobs: BTreeMap::new(),
            next_job: 1,
            commands_issued: 0,
            commands_acked_ok: 0,
            commands_acked_failed: 0,
            location_queries: 0,
            shared: false,
            pending_demand: HashMap::new(),
        }
    }

    /// Numbers this replica's commands and jobs in range `tag` (see [`ID_TAG_SHIFT`]).
    pub fn set_id_tag(&mut self, tag: u64) {
        let base = (tag & MAX_ID_TAG) << ID_TAG_SHIFT;
        self.next_command = base + 1;
        self.next_job = base + 1;
    }

    pub fn status(&self, n: &NodeEntry, now: Instant) -> NodeStatus {
        let age = now.saturating_duration_since(n.last_seen);
        if age >= self.timing.dead_after {
            NodeStatus::Dead
        } else if age >= self.timing.suspect_after {
            NodeStatus::Suspect
        } else {
            NodeStatus::Online
        }
    }

    pub(crate) fn online(&self, id: &str, now: Instant) -> bool {
        self.nodes
            .get(id)
            .is_some_and(|n| self.status(n, now) == NodeStatus::Online)
    }

    /// Restores state loaded from the store: every node counts as just seen (it
    /// has `suspect_after` to heartbeat again).
    pub fn restore(&mut self, loaded: crate::store::Loaded, now: Instant) {
        let crate::store::Loaded {
            nodes,
            chunks,
            commands,
            jobs,
        } = loaded;
        for j in jobs {
            bump_id(&mut self.next_job, j.id);
            self.jobs.insert(j.id, j);
        }
        for reg in nodes {
            self.nodes.insert(
                reg.node_id.clone(),
                NodeEntry {
                    reg,
                    last_seen: now,
                    heartbeat: Heartbeat::default(),
                    chunks: HashSet::new(),
                    last_heartbeat: None,
                    rates: api::Rates::default(),
                },
            );
        }
        for (node, id, len) in chunks {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.chunks.insert(id);
                self.holders.entry(id).or_default().insert(node);
                self.lens.insert(id, len);
            }
        }
        for (node, c) in commands {
            bump_id(&mut self.next_command, c.id);
            self.commands.entry(node).or_default().push_back(c);
        }
    }

    pub fn register(&mut self, reg: Register, now: Instant) -> Result<Vec<Op>, StateError> {
        if reg.node_id.is_empty() || reg.node_id.len() > 128 {
            return Err(StateError::Invalid(
                "node_id must be 1-128 characters".into(),
            ));
        }
        check_labels(&reg.labels)?;
        let id = reg.node_id.clone();
        match self.nodes.get_mut(&id) {
            Some(n) => {
                n.reg = reg.clone();
                n.last_seen = now;
            }
            None => {
                self.nodes.insert(
                    id,
                    NodeEntry {
                        reg: reg.clone(),
                        last_seen: now,
                        heartbeat: Heartbeat::default(),
                        chunks: HashSet::new(),
                        last_heartbeat: None,
                        rates: api::Rates::default(),
                    },
                );
            }
        }
        Ok(vec![Op::PutNode(reg)])
    }

    /// A node's heartbeat: the number of commands waiting for it, and (with a
    /// shared store) the change for the log, which records the rest.
    pub fn heartbeat(
        &mut self,
        id: &str,
        hb: Heartbeat,
        now: Instant,
    ) -> Result<(usize, Vec<Op>), StateError> {
        let n = self
            .nodes
            .get_mut(id)
            .ok_or_else(|| StateError::UnknownNode(id.to_owned()))?;
        n.last_seen = now;
        let ops = if self.shared {
            vec![Op::Heartbeat(id.to_owned(), hb)]
        } else {
            self.record_heartbeat(id, hb, now);
            Vec::new()
        };
        Ok((self.commands.get(id).map_or(0, VecDeque::len), ops))
    }

    /// Liveness, rates since the previous heartbeat, hot chunks as demand. The
    /// same heartbeat twice (a replayed log entry) counts once.
    pub(crate) fn record_heartbeat(&mut self, id: &str, hb: Heartbeat, now: Instant) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        n.last_seen = now;
        if n.last_heartbeat.is_some() && n.heartbeat == hb {
            return;
        }
        if let Some(prev) = n.last_heartbeat {
            let dt = now.saturating_duration_since(prev).as_secs_f64();
            if dt > 0.0 {
                // Counters restart from zero with the node: no rate across that.
                let rate = |new: u64, old: u64| new.checked_sub(old).map_or(0.0, |d| d as f64 / dt);
                let old = &n.heartbeat;
                n.rates = api::Rates {
                    served: rate(hb.bytes_served, old.bytes_served),
                    from_origin: rate(hb.bytes_from_origin, old.bytes_from_origin),
                    from_peers: rate(hb.bytes_from_peers, old.bytes_from_peers),
                    to_peers: rate(hb.bytes_to_peers, old.bytes_to_peers),
                };
            }
        }
        n.last_heartbeat = Some(now);
        for h in hb.hot_chunks.iter().take(api::MAX_BATCH) {
            if let Ok(c) = parse_id(h) {
                *self.demand.entry(c).or_default() += 1;
            }
        }
        n.heartbeat = hb;
    }

    /// Demand counted since the last call, as one change for the log.
    pub fn take_demand(&mut self) -> Option<Op> {
        if self.pending_demand.is_empty() {
            return None;
        }
        Some(Op::Demand(self.pending_demand.drain().collect()))
    }

    pub(crate) fn add_demand(&mut self, list: Vec<(ChunkId, u64)>) {
        for (c, d) in list {
            *self.demand.entry(c).or_default() += d;
        }
    }

    /// Halves every chunk's demand (once per replication pass).
    pub fn decay_demand(&mut self) {
        self.demand.retain(|_, d| {
            *d /= 2;
            *d > 0
        });
    }

    pub fn deregister(&mut self, id: &str) -> Result<Vec<Op>, StateError> {
        let n = self
            .nodes
            .remove(id)
            .ok_or_else(|| StateError::UnknownNode(id.to_owned()))?;
        for c in n.chunks {
            self.drop_holder(&c, id);
        }
        let mut ops = vec![Op::DeleteNode(id.to_owned())];
        for c in self.commands.remove(id).unwrap_or_default() {
            ops.push(Op::DeleteCommand(c.id));
        }
        Ok(ops)
    }

    /// Forgets every chunk a node held.
    pub(crate) fn clear_chunks(&mut self, id: &str) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        for c in std::mem::take(&mut n.chunks) {
            self.drop_holder(&c, id);
        }
    }

    pub(crate) fn add_chunks(&mut self, id: &str, added: &[(ChunkId, u64)]) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        n.chunks.extend(added.iter().map(|(c, _)| *c));
        for (c, len) in added {
            self.holders.entry(*c).or_default().insert(id.to_owned());
            self.lens.insert(*c, *len);
        }
    }

    pub(crate) fn remove_chunks(&mut self, id: &str, removed: &[ChunkId]) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        for c in removed {
            n.chunks.remove(c);
        }
        for c in removed {
            self.drop_holder(c, id);
        }
    }

    fn drop_holder(&mut self, c: &ChunkId, node: &str) {
        if let Some(h) = self.holders.get_mut(c) {
            h.remove(node);
            if h.is_empty() {
                self.holders.remove(c);
                self.lens.remove(c);
            }
        }
    }

    pub fn report(&mut self, id: &str, r: api::ChunkReport) -> Result<(u64, Vec<Op>), StateError> {
        if !self.nodes.contains_key(id) {
            return Err(StateError::UnknownNode(id.to_owned()));
        }
        let added: Vec<(ChunkId, u64)> = r
            .added
            .iter()
            .map(|c| parse_id(&c.id).map(|id| (id, c.len)))
            .collect::<Result<_, _>>()?;
        let removed: Vec<ChunkId> = r
            .removed
            .iter()
            .map(|c| parse_id(c))
            .collect::<Result<_, _>>()?;
        let mut ops = Vec::new();
        if r.full {
            self.clear_chunks(id);
            ops.push(Op::ClearChunks(id.to_owned()));
        }
        self.add_chunks(id, &added);
        self.remove_chunks(id, &removed);
        let count = self.nodes[id].chunks.len() as u64;
        if !added.is_empty() {
            ops.push(Op::AddChunks(id.to_owned(), added));
        }
        if !removed.is_empty() {
            ops.push(Op::RemoveChunks(id.to_owned(), removed));
        }
        Ok((count, ops))
    }

    pub fn view(&self, n: &NodeEntry, now: Instant) -> NodeView {
        NodeView {
            node_id: n.reg.node_id.clone(),
            p2p_addr: n.reg.p2p_addr,
            proxy_addr: n.reg.proxy_addr,
            admin_addr: n.reg.admin_addr,
            capacity: n.reg.capacity.clone(),
            labels: n.reg.labels.clone(),
            status: self.status(n, now),
            last_seen_ms: now.saturating_duration_since(n.last_seen).as_millis() as u64,
            chunks_reported: n.chunks.len() as u64,
            heartbeat: n.heartbeat.clone(),
            rates: n.rates.clone(),
        }
    }

    pub fn list(&self, now: Instant) -> Vec<NodeView> {
        let mut v: Vec<NodeView> = self.nodes.values().map(|n| self.view(n, now)).collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    /// A tag of what a node takes from the node list as its members: each
    /// node's id, addresses, labels and status (not its counters, rates or
    /// last-seen age, which change at every heartbeat). Read from the entries
    /// themselves, so a list unchanged since the asker's tag is never built; one
    /// FNV-1a hash per node, summed (the map's order does not matter, and
    /// replicas sharing a store give the same tag).
    pub fn members_tag(&self, now: Instant) -> String {
        let mut sum = 0u64;
        for n in self.nodes.values() {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut eat = |bytes: &[u8]| {
                for b in bytes.iter().chain(&[0xff]) {
                    h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
                }
            };
            let r = &n.reg;
            eat(r.node_id.as_bytes());
            for a in [Some(r.p2p_addr), r.proxy_addr, r.admin_addr] {
                eat(a.map(|a| a.to_string()).unwrap_or_default().as_bytes());
            }
            for (k, v) in &r.labels {
                eat(k.as_bytes());
                eat(v.as_bytes());
            }
            eat(&[self.status(n, now) as u8]);
            sum = sum.wrapping_add(h);
        }
        format!("m{sum:016x}")
    }

    pub fn commands(&self, id: &str) -> Result<Vec<Command>, StateError> {
        if !self.nodes.contains_key(id) {
            return Err(StateError::UnknownNode(id.to_owned()));
        }
        Ok(self
            .commands
            .get(id)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default())
    }

    pub fn ack(&mut self, id: &str, cmd: u64, a: &api::CommandAck) -> Result<Vec<Op>, StateError> {
        let ok = a.ok;
        let q = self
            .commands
            .get_mut(id)
            .ok_or(StateError::UnknownCommand(cmd))?;
        let pos = q
            .iter()
            .position(|c| c.id == cmd)
            .ok_or(StateError::UnknownCommand(cmd))?;
        let done = q.remove(pos).expect("position found");
        if ok {
            self.commands_acked_ok += 1;
        } else {
            self.commands_acked_failed += 1;
        }
        let mut ops = vec![Op::DeleteCommand(cmd)];
        if let Some(spec) = &done.preheat {
            ops.extend(self.finish_target(spec.job, cmd, a));
        }
        Ok(ops)
    }

    /// Online holders of a chunk.
    pub fn replicas(&self, id: &ChunkId, now: Instant) -> usize {
        self.holders
            .get(id)
            .map_or(0, |h| h.iter().filter(|n| self.online(n, now)).count())
    }

    /// Queues a command for a node; returns its durable change.
    pub(crate) fn issue(&mut self, node: String, kind: CommandKind, chunk: String, len: u64) -> Op {
        self.issue_command(
            node,
            Command {
                id: 0,
                kind,
                chunk,
                len,
                preheat: None,
            },
        )
    }

    /// Queues `cmd` (given the next id) for a node; returns its durable change.
    pub(crate) fn issue_command(&mut self, node: String, mut cmd: Command) -> Op {
        cmd.id = self.next_command;
        self.next_command += 1;
        self.commands_issued += 1;
        self.commands
            .entry(node.clone())
            .or_default()
            .push_back(cmd.clone());
        Op::PutCommand(node, cmd)
    }

    /// The most demanded chunks with their online holder counts.
    pub fn hot(&self, limit: usize, now: Instant) -> Vec<api::HotChunk> {
        let mut v: Vec<(u64, ChunkId)> = self.demand.iter().map(|(c, d)| (*d, *c)).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter()
            .take(limit)
            .map(|(demand, c)| api::HotChunk {
                chunk: c.to_hex(),
                score: demand as f64,
                replicas: Some(self.replicas(&c, now) as u64),
            })
            .collect()
    }

    /// Cumulative byte counters summed over the registered nodes.
    pub fn sample(&self, t_ms: u64) -> api::Sample {
        let mut s = api::Sample {
            t_ms,
            ..Default::default()
        };
        for n in self.nodes.values() {
            s.add(&n.heartbeat);
        }
        s
    }

    pub fn chunk_count(&self) -> usize {
        self.holders.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn reg(id: &str) -> Register {
        Register {
            node_id: id.to_owned(),
            p2p_addr: "127.0.0.1:9000".parse().unwrap(),
            proxy_addr: None,
            admin_addr: None,
            capacity: api::Capacity::default(),
            labels: BTreeMap::new(),
        }
    }

    /// Reports one held chunk for a node.
    pub(crate) fn report_one(s: &mut State, node: &str, id: ChunkId, len: u64) {
        let r = api::ChunkReport {
            full: false,
            added: vec![api::ReportedChunk {
                id: id.to_hex(),
                len,
            }],
            removed: vec![],
        };
        s.report(node, r).unwrap();
    }

    /// Heartbeat 2 s, suspect after 6 s, dead after 15 s.
    pub(crate) fn test_state(min_replicas: usize, hot_threshold: u64, max_replicas: usize) -> State {
        State::new(
            Timing {
                heartbeat_interval: Duration::from_secs(2),
                suspect_after: Duration::from_secs(6),
                dead_after: Duration::from_secs(15),
            },
            ReplicationConfig {
                min_replicas,
                hot_threshold,
                max_replicas,
                max_pending_per_node: 4,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn suspect_then_dead_on_a_paused_clock() {
        let mut s = test_state(2, 1, 0);
        s.register(reg("a"), Instant::now()).unwrap();
        s.register(reg("b"), Instant::now()).unwrap();
        let id = ChunkId::from_bytes([1; 32]);
        report_one(&mut s, "a", id, 10);
        let q = api::LocationQuery {
            chunks: vec![id.to_hex()],
            node_id: Some("b".into()),
            limit: None,
        };
        let st = |s: &State, n: &str| s.status(&s.nodes[n], Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        s.heartbeat("b", Heartbeat::default(), Instant::now())
            .unwrap();
        assert_eq!(st(&s, "a"), NodeStatus::Online);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(st(&s, "a"), NodeStatus::Suspect);
        assert_eq!(st(&s, "b"), NodeStatus::Online);
        // A suspect holder is not handed out, nor replicated from.
        assert!(s.locations(&q, Instant::now()).unwrap()[&id.to_hex()].is_empty());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(st(&s, "a"), NodeStatus::Dead);
        assert!(s.plan_replication(Instant::now()).is_empty());
        // Back with a heartbeat.
        s.heartbeat("a", Heartbeat::default(), Instant::now())
            .unwrap();
        s.heartbeat("b", Heartbeat::default(), Instant::now())
            .unwrap();
        assert_eq!(st(&s, "a"), NodeStatus::Online);
        assert_eq!(
            s.locations(&q, Instant::now()).unwrap()[&id.to_hex()].len(),
            1
        );
        let ops = s.plan_replication(Instant::now());
        assert!(matches!(&ops[..], [Op::PutCommand(n, c)] if n == "b" && c.len == 10));
    }

    #[tokio::test(start_paused = true)]
    async fn rates_come_from_consecutive_heartbeats() {
        let mut s = test_state(0, 1, 0);
        s.register(reg("a"), Instant::now()).unwrap();
        let hb = |served, to_peers| Heartbeat {
            bytes_served: served,
            bytes_to_peers: to_peers,
            ..Heartbeat::default()
        };
        s.heartbeat("a", hb(1000, 0), Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        s.heartbeat("a", hb(5000, 800), Instant::now()).unwrap();
        let v = s.view(&s.nodes["a"], Instant::now());
        assert_eq!((v.rates.served, v.rates.to_peers), (2000.0, 400.0));
        // A restarted node's counters start over: no negative rate.
        tokio::time::advance(Duration::from_secs(2)).await;
        s.heartbeat("a", hb(10, 0), Instant::now()).unwrap();
        assert_eq!(s.nodes["a"].rates.served, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn surplus_copies_of_cold_chunks_are_evicted() {
        let mut s = test_state(1, 100, 2);
        let id = ChunkId::from_bytes([2; 32]);
        for (n, used) in [("a", 10), ("b", 30), ("c", 20)] {
            s.register(reg(n), Instant::now()).unwrap();
            let hb = Heartbeat {
                memory_used_bytes: used,
                ..Heartbeat::default()
            };
            s.heartbeat(n, hb, Instant::now()).unwrap();
            report_one(&mut s, n, id, 10);
        }
        let ops = s.plan_replication(Instant::now());
        assert!(
            matches!(&ops[..], [Op::PutCommand(n, c)] if n == "b" && c.kind == CommandKind::Evict),
            "the fullest holder drops its copy: {ops:?}"
        );
        // Pending: not issued twice.
        assert!(s.plan_replication(Instant::now()).is_empty());
    }
}
