//! The part of the cluster's location map a node owns: for chunks it owns (or backs
//! up) by rendezvous hashing, which nodes hold them, and which are downloading them
//! (the swarm: the owner is the chunk's tracker). Holders announce and withdraw
//! chunks; downloaders register when they ask the owner and expire unless they ask
//! again; a node that dies or leaves is dropped with all its entries.

use std::collections::{HashMap, HashSet};

use eliop2p_core::ChunkId;

/// Downloaders tracked per chunk, at most (the oldest registration gives way).
pub const MAX_SWARM: usize = 256;

#[derive(Default)]
pub struct LocationIndex {
    holders: HashMap<ChunkId, Vec<String>>,
    by_node: HashMap<String, HashSet<ChunkId>>,
    /// Nodes downloading a chunk, with when their registration expires (ms).
    swarm: HashMap<ChunkId, Vec<(String, u64)>>,
}

impl LocationIndex {
    /// Registers `node` as downloading `chunk` until `expires_ms`.
    pub fn add_downloader(&mut self, node: &str, chunk: ChunkId, now_ms: u64, expires_ms: u64) {
        if self.holds(node, &chunk) {
            return;
        }
        let s = self.swarm.entry(chunk).or_default();
        s.retain(|(_, t)| *t > now_ms);
        match s.iter_mut().find(|(n, _)| n == node) {
            Some(e) => e.1 = expires_ms,
            None => {
                if s.len() >= MAX_SWARM {
                    s.remove(0);
                }
                s.push((node.to_owned(), expires_ms));
            }
        }
    }

    /// Nodes downloading `chunk` now (registrations not expired).
    pub fn downloaders(&self, chunk: &ChunkId, now_ms: u64) -> Vec<&str> {
        self.swarm
            .get(chunk)
            .map(|s| {
                s.iter()
                    .filter(|(_, t)| *t > now_ms)
                    .map(|(n, _)| n.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets expired registrations.
    pub fn expire_downloaders(&mut self, now_ms: u64) {
        self.swarm.retain(|_, s| {
            s.retain(|(_, t)| *t > now_ms);
            !s.is_empty()
        });
    }

    /// Whether `node` is indexed as a holder of `chunk` (by the node's own set:
    /// a chunk's list of holders runs to thousands, and is scanned for nothing).
    pub fn holds(&self, node: &str, chunk: &ChunkId) -> bool {
        self.by_node.get(node).is_some_and(|s| s.contains(chunk))
    }

    /// Chunks indexed for `node`.
    pub fn held_by(&self, node: &str) -> usize {
        self.by_node.get(node).map_or(0, HashSet::len)
    }

    pub fn add(&mut self, node: &str, chunk: ChunkId) {
        // A holder is no longer a downloader of the chunk.
        if let Some(s) = self.swarm.get_mut(&chunk) {
            s.retain(|(n, _)| n != node);
        }
        if !self.holds(node, &chunk) {
            self.holders.entry(chunk).or_default().push(node.to_owned());
            self.by_node
                .entry(node.to_owned())
                .or_default()
                .insert(chunk);
        }
    }

    pub fn remove(&mut self, node: &str, chunk: &ChunkId) {
        if let Some(h) = self.holders.get_mut(chunk) {
            h.retain(|n| n != node);
            if h.is_empty() {
                self.holders.remove(chunk);
            }
        }
        if let Some(s) = self.by_node.get_mut(node) {
            s.remove(chunk);
            if s.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    /// Drops every entry of a node (it died or left).
    pub fn drop_node(&mut self, node: &str) {
        for s in self.swarm.values_mut() {
            s.retain(|(n, _)| n != node);
        }
        for chunk in self.by_node.remove(node).unwrap_or_default() {
            if let Some(h) = self.holders.get_mut(&chunk) {
                h.retain(|n| n != node);
                if h.is_empty() {
                    self.holders.remove(&chunk);
                }
            }
        }
    }

    /// Keeps only the chunks `keep` says this node still owns or backs up.
    pub fn retain(&mut self, mut keep: impl FnMut(&ChunkId) -> bool) {
        self.swarm.retain(|c, _| keep(c));
        let dropped: Vec<ChunkId> = self.holders.keys().filter(|c| !keep(c)).copied().collect();
        for c in dropped {
            for n in self.holders.remove(&c).unwrap_or_default() {
                if let Some(s) = self.by_node.get_mut(&n) {
                    s.remove(&c);
                    if s.is_empty() {
                        self.by_node.remove(&n);
                    }
                }
            }
        }
    }

    pub fn holders(&self, chunk: &ChunkId) -> &[String] {
        self.holders.get(chunk).map_or(&[], Vec::as_slice)
    }

    pub fn chunks(&self) -> impl Iterator<Item = &ChunkId> {
        self.holders.keys()
    }

    /// Chunks indexed.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_drop() {
        let c = |i: u8| ChunkId::from_bytes([i; 32]);
        let mut ix = LocationIndex::default();
        ix.add("a", c(1));
        ix.add("a", c(1));
        ix.add("b", c(1));
        ix.add("a", c(2));
        assert_eq!(ix.holders(&c(1)), ["a", "b"]);
        ix.remove("b", &c(1));
        assert_eq!(ix.holders(&c(1)), ["a"]);
        ix.drop_node("a");
        assert!(ix.is_empty());
        ix.add("a", c(1));
        ix.add("a", c(2));
        ix.retain(|id| *id == c(2));
        assert_eq!(ix.len(), 1);
        assert!(ix.holders(&c(1)).is_empty());
    }

    #[test]
    fn downloaders_expire_and_become_holders() {
        let c = ChunkId::from_bytes([9; 32]);
        let mut ix = LocationIndex::default();
        ix.add_downloader("a", c, 0, 100);
        ix.add_downloader("b", c, 0, 50);
        ix.add_downloader("a", c, 10, 200);
        assert_eq!(ix.downloaders(&c, 20), ["a", "b"]);
        assert_eq!(ix.downloaders(&c, 60), ["a"]);
        ix.add("a", c);
        assert!(ix.downloaders(&c, 60).is_empty(), "a holder is not a downloader");
        ix.add_downloader("a", c, 60, 300);
        assert!(ix.downloaders(&c, 60).is_empty());
        ix.add_downloader("b", c, 60, 300);
        ix.drop_node("b");
        assert!(ix.downloaders(&c, 60).is_empty());
    }
}
