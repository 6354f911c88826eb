//! Where chunks are: each chunk's holders (`HolderSet`), and the answer to a
//! location query. A chunk a whole cluster has read has a holder on every node,
//! so an answer with a limit draws its holders by index instead of scanning
//! them: at 5,000 holders, a scan held the state's lock for 400 us a query.

use std::collections::{BTreeMap, HashMap};

use eliop2p_cluster::api::{self, Holder, NodeStatus};
use eliop2p_core::ChunkId;
use tokio::time::Instant;

use crate::state::{NodeEntry, State, StateError, parse_id};

/// Holders from which a set keeps an index of positions (below it, a lookup
/// scans the list, as short as most chunks' lists are).
const INDEXED_FROM: usize = 32;

/// The nodes holding one chunk: a list (indexable, for sampling) and, once it
/// is long, each node's position in it.
#[derive(Clone, Debug, Default)]
pub(crate) struct HolderSet {
    list: Vec<String>,
    pos: Option<HashMap<String, usize>>,
}

impl HolderSet {
    fn position(&self, node: &str) -> Option<usize> {
        match &self.pos {
            Some(p) => p.get(node).copied(),
            None => self.list.iter().position(|n| n == node),
        }
    }

    pub(crate) fn contains(&self, node: &str) -> bool {
        self.position(node).is_some()
    }

    /// Adds a holder; false when it was one.
    pub(crate) fn insert(&mut self, node: String) -> bool {
        if self.contains(&node) {
            return false;
        }
        if let Some(p) = &mut self.pos {
            p.insert(node.clone(), self.list.len());
        }
        self.list.push(node);
        if self.pos.is_none() && self.list.len() >= INDEXED_FROM {
            self.pos = Some(self.list.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect());
        }
        true
    }

    /// Removes a holder; false when it was none.
    pub(crate) fn remove(&mut self, node: &str) -> bool {
        let Some(i) = self.position(node) else { return false };
        self.list.swap_remove(i);
        if let Some(p) = &mut self.pos {
            p.remove(node);
            if let Some(moved) = self.list.get(i) {
                p.insert(moved.clone(), i);
            }
            if self.list.len() < INDEXED_FROM / 2 {
                self.pos = None;
            }
        }
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, String> {
        self.list.iter()
    }
}

impl<'a> IntoIterator for &'a HolderSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// A node's zone label ("" without one).
fn zone_of(n: &NodeEntry) -> &str {
    n.reg.labels.get("zone").map_or("", String::as_str)
}

/// An xorshift generator seeded from `salt` and the process's random hash keys.
fn rng(salt: u64) -> impl FnMut() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    let mut x = h.finish() | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

impl State {
    /// Online holders of each chunk: the asker's zone first, then least loaded;
    /// with a limit, a random sample ordered so. Counts demand.
    pub fn locations(
        &mut self,
        q: &api::LocationQuery,
        now: Instant,
    ) -> Result<BTreeMap<String, Vec<Holder>>, StateError> {
        let ids: Vec<ChunkId> = q.chunks.iter().map(|c| parse_id(c)).collect::<Result<_, _>>()?;
        self.location_queries += 1;
        let asker_zone = q
            .node_id
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .map(|n| zone_of(n).to_owned())
            .unwrap_or_default();
        let demand = if self.shared { &mut self.pending_demand } else { &mut self.demand };
        for id in &ids {
            *demand.entry(*id).or_default() += 1;
        }
        let mut rand = rng(self.location_queries);
        let mut out = BTreeMap::new();
        for (hex, id) in q.chunks.iter().zip(ids) {
            let empty = HolderSet::default();
            let set = self.holders.get(&id).unwrap_or(&empty);
            let eligible = |n: &String| {
                Some(n.as_str()) != q.node_id.as_deref()
                    && self.nodes.get(n).is_some_and(|e| self.status(e, now) == NodeStatus::Online)
            };
            let entry = |n: &String| {
                let e = &self.nodes[n];
                (zone_of(e) != asker_zone, e.heartbeat.load, e)
            };
            let mut hs: Vec<(bool, u64, &NodeEntry)> = match q.limit.map(|l| l as usize) {
                Some(limit) if set.len() > 4 * limit => {
                    // Twice the limit drawn at random, the asker's zone first; the
                    // least loaded of those are answered. Loads are as of the last
                    // heartbeat, so a plain "least loaded" would name the same few
                    // to every asker until the next one. Equal loads stay in
                    // random order (stable sort): by id, the same ids would win
                    // every tie.
                    let mut picked = draw(set, 2 * limit, &mut rand, |n| eligible(n) && !entry(n).0);
                    if picked.len() < limit {
                        // Few holders in the asker's zone: all of them, then others.
                        picked = set.iter().filter(|n| eligible(n) && !entry(n).0).collect();
                        shuffle(&mut picked, &mut rand);
                        picked.truncate(2 * limit);
                        let more = draw(set, 2 * limit - picked.len(), &mut rand, |n| eligible(n) && entry(n).0);
                        picked.extend(more);
                    }
                    let mut hs: Vec<_> = picked.into_iter().map(entry).collect();
                    hs.sort_by_key(|h| (h.0, h.1));
                    hs.truncate(limit);
                    hs
                }
                limit => {
                    let mut hs: Vec<_> = set.iter().filter(|n| eligible(n)).map(entry).collect();
                    if let Some(limit) = limit {
                        shuffle(&mut hs, &mut rand);
                        hs.sort_by_key(|h| (h.0, h.1));
                        hs.truncate(limit);
                    } else {
                        hs.sort_by(|a, b| (a.0, a.1, &a.2.reg.node_id).cmp(&(b.0, b.1, &b.2.reg.node_id)));
                    }
                    hs
                }
            };
            let answer = hs
                .drain(..)
                .map(|(_, _, n)| Holder { node_id: n.reg.node_id.clone(), p2p_addr: n.reg.p2p_addr, zone: zone_of(n).to_owned() })
                .collect();
            out.insert(hex.clone(), answer);
        }
        Ok(out)
    }
}

/// Up to `k` distinct holders of `set` that `ok` accepts, drawn at random
/// indexes (at most 8k + 8 draws; fewer found when most are refused).
fn draw<'a>(set: &'a HolderSet, k: usize, rand: &mut impl FnMut() -> u64, ok: impl Fn(&String) -> bool) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::with_capacity(k);
    if set.is_empty() {
        return out;
    }
    for _ in 0..8 * k + 8 {
        if out.len() == k {
            break;
        }
        let n = &set.list[(rand() % set.len() as u64) as usize];
        if !out.contains(&n) && ok(n) {
            out.push(n);
        }
    }
    out
}

/// Shuffles `v` in place (Fisher-Yates).
fn shuffle<T>(v: &mut [T], rand: &mut impl FnMut() -> u64) {
    for i in (1..v.len()).rev() {
        v.swap(i, (rand() % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{reg, report_one, test_state};

    /// With a limit, an answer is a few holders in the asker's zone, a different
    /// few for each asker; without one, every online holder. Before, every
    /// query got every holder, in the same order until the loads changed.
    #[test]
    fn a_limited_answer_samples_the_holders_in_the_askers_zone() {
        let mut s = test_state(0, 1000, 0);
        let now = Instant::now();
        let id = ChunkId::from_bytes([9; 32]);
        for i in 0..100 {
            let mut r = reg(&format!("n{i}"));
            r.labels.insert("zone".into(), if i < 60 { "a" } else { "b" }.into());
            s.register(r, now).unwrap();
            report_one(&mut s, &format!("n{i}"), id, 10);
        }
        let mut asker = reg("asker");
        asker.labels.insert("zone".into(), "a".into());
        s.register(asker, now).unwrap();
        let q = |limit| api::LocationQuery { chunks: vec![id.to_hex()], node_id: Some("asker".into()), limit };
        assert_eq!(s.locations(&q(None), now).unwrap()[&id.to_hex()].len(), 100);
        let mut named = std::collections::HashSet::new();
        for _ in 0..50 {
            let hs = s.locations(&q(Some(8)), now).unwrap().remove(&id.to_hex()).unwrap();
            assert_eq!(hs.len(), 8);
            assert!(hs.iter().all(|h| h.zone == "a"), "the asker's zone first");
            named.extend(hs.into_iter().map(|h| h.node_id));
        }
        assert!(named.len() > 40, "askers are given different holders: {} named", named.len());
        // What a limited answer costs with 5,000 holders (a scan of them, no copies).
        for i in 100..5000 {
            let mut r = reg(&format!("n{i}"));
            r.labels.insert("zone".into(), "a".into());
            s.register(r, now).unwrap();
            report_one(&mut s, &format!("n{i}"), id, 10);
        }
        let cost = |s: &mut State, q: &api::LocationQuery, runs: u32| {
            let t = Instant::now();
            for _ in 0..runs {
                let hs = s.locations(q, now).unwrap().remove(&id.to_hex()).unwrap();
                assert_eq!(hs.len(), q.limit.map_or(5000, |l| l as usize));
                assert!(q.limit.is_none() || hs.iter().all(|h| h.zone == asker_zone(s)));
            }
            t.elapsed() / runs
        };
        let limited = cost(&mut s, &q(Some(8)), 200);
        let all = cost(&mut s, &q(None), 20);
        // An asker in the zone of 40 holders of the 5,000 (scanned for them).
        s.nodes.get_mut("asker").unwrap().reg.labels.insert("zone".into(), "b".into());
        let rare = cost(&mut s, &q(Some(8)), 200);
        println!("5,000 holders: a limited answer {limited:?} (an asker in a zone of 40 of them: {rare:?}), every holder {all:?}");
    }

    fn asker_zone(s: &State) -> String {
        zone_of(&s.nodes["asker"]).to_owned()
    }

    /// The set keeps its positions right across growth, removal and shrinking.
    #[test]
    fn a_holder_set_indexes_a_long_list() {
        let mut h = HolderSet::default();
        for i in 0..100 {
            assert!(h.insert(format!("n{i}")));
        }
        assert!(!h.insert("n5".into()));
        for i in (0..100).step_by(3) {
            assert!(h.remove(&format!("n{i}")));
        }
        assert!(!h.remove("n0"));
        for i in 0..100 {
            assert_eq!(h.contains(&format!("n{i}")), i % 3 != 0, "n{i}");
        }
        while h.len() > 3 {
            let first = h.iter().next().unwrap().clone();
            assert!(h.remove(&first));
            assert!(!h.contains(&first));
            assert!(h.iter().all(|n| h.contains(n)));
        }
    }
}
