//! Replication planning: hot chunks short of `min_replicas` online copies get a
//! replicate command, cold chunks with more than `max_replicas` get an evict
//! command. A pass costs about the commands it issues plus the hot chunks it
//! looks at, not hot chunks x nodes: with 100,000 hot chunks on 1,000 nodes the
//! old pass held the state's lock for minutes, and every API request with it.

use std::collections::{HashMap, HashSet, VecDeque};

use eliop2p_cluster::api::{CommandKind, NodeStatus};
use eliop2p_core::ChunkId;
use tokio::time::Instant;

use crate::state::{Op, State};

/// Nodes with a command pending per chunk (hex id).
type Pending = HashMap<String, HashSet<String>>;

impl State {
    /// One replication pass: hot chunks with fewer than `min_replicas` online
    /// holders get a replicate command for a node that lacks them, preferring a zone
    /// that has no copy yet, then the least used cache; cold chunks above
    /// `max_replicas` lose a copy. Demand then decays by half.
    pub fn plan_replication(&mut self, now: Instant) -> Vec<Op> {
        let mut pending: Pending = HashMap::new();
        for (node, q) in &self.commands {
            for cmd in q.iter().filter(|c| !c.chunk.is_empty()) {
                pending.entry(cmd.chunk.clone()).or_default().insert(node.clone());
            }
        }
        let mut ops = Vec::new();
        if self.replication.min_replicas > 0 {
            ops.extend(self.plan_copies(now, &mut pending));
        }
        if self.replication.max_replicas > 0 {
            ops.extend(self.plan_evictions(now, &pending));
        }
        self.decay_demand();
        ops
    }

    /// Room for more commands per online node.
    fn room(&self, now: Instant) -> HashMap<String, usize> {
        let max = self.replication.max_pending_per_node;
        self.nodes
            .values()
            .filter(|n| self.status(n, now) == NodeStatus::Online)
            .map(|n| {
                let id = &n.reg.node_id;
                (id.clone(), max.saturating_sub(self.commands.get(id).map_or(0, VecDeque::len)))
            })
            .filter(|(_, r)| *r > 0)
            .collect()
    }

    fn zone(&self, node: &str) -> String {
        self.nodes
            .get(node)
            .and_then(|n| n.reg.labels.get("zone").cloned())
            .unwrap_or_default()
    }

    fn plan_copies(&mut self, now: Instant, pending: &mut Pending) -> Vec<Op> {
        let min = self.replication.min_replicas;
        let mut hot: Vec<(u64, ChunkId)> = self
            .demand
            .iter()
            .filter(|(_, d)| **d >= self.replication.hot_threshold)
            .map(|(c, d)| (*d, *c))
            .collect();
        hot.sort_by(|a, b| b.cmp(a));
        let mut room = self.room(now);
        // Targets, least used cache first; nodes leave it when their queue fills.
        let mut order: Vec<(u64, String, String)> = room
            .keys()
            .map(|id| {
                let hb = &self.nodes[id].heartbeat;
                (hb.memory_used_bytes + hb.disk_used_bytes, id.clone(), self.zone(id))
            })
            .collect();
        order.sort();
        let all_zones: HashSet<String> = order.iter().map(|(_, _, z)| z.clone()).collect();
        let mut ops = Vec::new();
        for (_, c) in hot {
            if order.is_empty() {
                break; // every queue is full
            }
            let Some(&len) = self.lens.get(&c) else {
                continue; // nobody holds it: the next read fills it
            };
            let have = self.replicas(&c, now);
            if have == 0 {
                continue;
            }
            let hex = c.to_hex();
            let pend = pending.get(&hex);
            if min.saturating_sub(have + pend.map_or(0, HashSet::len)) == 0 {
                continue;
            }
            let holders = self.holders.get(&c);
            let held = |id: &String| holders.is_some_and(|h| h.contains(id)) || pend.is_some_and(|p| p.contains(id));
            let zones: HashSet<String> = holders.into_iter().flatten().map(|h| self.zone(h)).collect();
            let new_zone_left = all_zones.iter().any(|z| !zones.contains(z));
            // A zone without a copy first, else the least used node.
            let mut pick = None;
            for (i, (_, id, zone)) in order.iter().enumerate() {
                if held(id) {
                    continue;
                }
                if !zones.contains(zone) {
                    pick = Some(i);
                    break;
                }
                if pick.is_none() {
                    pick = Some(i);
                    if !new_zone_left {
                        break;
                    }
                }
            }
            let Some(i) = pick else {
                continue;
            };
            let target = order[i].1.clone();
            // One new copy per chunk per pass: new copies then seed the next.
            ops.push(self.issue(target.clone(), CommandKind::Replicate, hex.clone(), len));
            pending.entry(hex).or_default().insert(target.clone());
            let r = room.get_mut(&target).expect("a candidate has room");
            *r -= 1;
            if *r == 0 {
                order.remove(i);
            }
        }
        ops
    }

    /// Cold chunks held by more than `max_replicas` online nodes: the fullest
    /// holders are told to drop their copy (one per chunk per pass).
    fn plan_evictions(&mut self, now: Instant, pending: &Pending) -> Vec<Op> {
        let max = self.replication.max_replicas;
        let mut room = self.room(now);
        let surplus: Vec<(ChunkId, Vec<String>)> = self
            .holders
            .iter()
            .filter(|(c, _)| !self.demand.contains_key(*c) && !pending.contains_key(&c.to_hex()))
            .map(|(c, h)| (*c, h.iter().filter(|n| self.online(n, now)).cloned().collect::<Vec<_>>()))
            .filter(|(_, online)| online.len() > max)
            .collect();
        let mut ops = Vec::new();
        for (c, online) in surplus {
            let Some(victim) = online
                .iter()
                .filter(|n| room.get(*n).is_some_and(|r| *r > 0))
                .max_by_key(|n| {
                    let hb = &self.nodes[*n].heartbeat;
                    (hb.memory_used_bytes + hb.disk_used_bytes, (*n).clone())
                })
                .cloned()
            else {
                continue;
            };
            if let Some(r) = room.get_mut(&victim) {
                *r -= 1;
            }
            let len = self.lens.get(&c).copied().unwrap_or(0);
            ops.push(self.issue(victim, CommandKind::Evict, c.to_hex(), len));
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use eliop2p_cluster::api;
    use eliop2p_core::ChunkId;
    use tokio::time::Instant;

    use crate::state::Op;
    use crate::state::tests::{reg, test_state};

    /// 100,000 hot chunks on 1,000 nodes: one pass fills every queue and ends in
    /// well under a second (it took minutes when each chunk scanned every node and
    /// every pending command).
    #[tokio::test(start_paused = true)]
    async fn a_pass_over_many_hot_chunks_and_nodes_is_cheap() {
        let mut s = test_state(2, 1, 0);
        let now = Instant::now();
        for n in 0..1000u32 {
            let mut r = reg(&format!("n{n}"));
            r.labels.insert("zone".into(), format!("z{}", n % 3));
            s.register(r, now).unwrap();
            let added = (0..100u32)
                .map(|i| {
                    let mut b = [0u8; 32];
                    b[..4].copy_from_slice(&n.to_be_bytes());
                    b[4..8].copy_from_slice(&i.to_be_bytes());
                    api::ReportedChunk { id: ChunkId::from_bytes(b).to_hex(), len: 1 }
                })
                .collect();
            s.report(&format!("n{n}"), api::ChunkReport { full: true, added, removed: vec![] })
                .unwrap();
        }
        let ids: Vec<ChunkId> = s.holders.keys().copied().collect();
        for c in &ids {
            s.demand.insert(*c, 10);
        }
        let t = std::time::Instant::now();
        let ops = s.plan_replication(now);
        let took = t.elapsed();
        // Every node's queue (4 in the test state) is full and no node got a chunk
        // it holds.
        assert_eq!(ops.len(), 4 * 1000);
        for op in &ops {
            let Op::PutCommand(node, cmd) = op else { panic!("{op:?}") };
            let c = ChunkId::from_hex(&cmd.chunk).unwrap();
            assert!(!s.holders[&c].contains(node));
        }
        assert!(took < Duration::from_secs(2), "a pass took {took:?}");
        // A second pass has no room left: nothing, quickly.
        assert!(s.plan_replication(now).is_empty());
    }

    /// The choice the pass made when it scanned every node for every chunk: a
    /// node that is online, lacks the chunk, has no command for it and has room,
    /// by (its zone holds a copy, cache used, id).
    fn reference_target(s: &crate::state::State, c: &ChunkId, now: Instant) -> Option<String> {
        let hex = c.to_hex();
        let holders = s.holders.get(c).cloned().unwrap_or_default();
        let zone = |id: &str| s.nodes[id].reg.labels.get("zone").cloned().unwrap_or_default();
        let zones: std::collections::HashSet<String> = holders.iter().map(|h| zone(h)).collect();
        s.nodes
            .values()
            .filter(|n| {
                let id = &n.reg.node_id;
                let q = s.commands.get(id);
                !holders.contains(id)
                    && !q.is_some_and(|q| q.iter().any(|cmd| cmd.chunk == hex))
                    && s.status(n, now) == api::NodeStatus::Online
                    && q.map_or(0, |q| q.len()) < s.replication.max_pending_per_node
            })
            .min_by_key(|n| {
                let hb = &n.heartbeat;
                (zones.contains(&zone(&n.reg.node_id)), hb.memory_used_bytes + hb.disk_used_bytes, n.reg.node_id.clone())
            })
            .map(|n| n.reg.node_id.clone())
    }

    /// Chunk by chunk, the pass picks what the scan over every node picked.
    #[tokio::test(start_paused = true)]
    async fn targets_are_those_the_full_scan_picks() {
        let mut s = test_state(3, 1, 0);
        let now = Instant::now();
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in 0..30u32 {
            let mut r = reg(&format!("n{n}"));
            r.labels.insert("zone".into(), format!("z{}", n % 3));
            s.register(r, now).unwrap();
            let hb = api::Heartbeat { memory_used_bytes: next() % 5, ..Default::default() };
            s.heartbeat(&format!("n{n}"), hb, now).unwrap();
        }
        for i in 0..120u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            let c = ChunkId::from_bytes(b);
            for _ in 0..1 + next() % 2 {
                let node = format!("n{}", next() % 30);
                let added = vec![api::ReportedChunk { id: c.to_hex(), len: 1 }];
                s.report(&node, api::ChunkReport { full: false, added, removed: vec![] }).unwrap();
            }
            s.demand.insert(c, 1 + next() % 5);
        }
        let mut hot: Vec<(u64, ChunkId)> = s.demand.iter().map(|(c, d)| (*d, *c)).collect();
        hot.sort_by(|a, b| b.cmp(a));
        let ops = s.plan_replication(now);
        let issued: Vec<(String, String)> = ops
            .iter()
            .map(|op| match op {
                Op::PutCommand(n, c) => (c.chunk.clone(), n.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(!issued.is_empty());
        // Undo the pass's commands, then walk the hot chunks in the pass's order
        // with the reference.
        s.commands.clear();
        let mut want = Vec::new();
        for (_, c) in hot {
            let have = s.replicas(&c, now);
            let pend = s.commands.values().filter(|q| q.iter().any(|cmd| cmd.chunk == c.to_hex())).count();
            if have == 0 || have + pend >= 3 {
                continue;
            }
            if let Some(t) = reference_target(&s, &c, now) {
                want.push((c.to_hex(), t.clone()));
                s.issue(t, api::CommandKind::Replicate, c.to_hex(), 1);
            }
        }
        assert_eq!(issued, want);
    }
}
