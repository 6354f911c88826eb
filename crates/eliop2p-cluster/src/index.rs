//! The part of the cluster's location map a node owns: for chunks it owns (or backs
//! up) by rendezvous hashing, which nodes hold them. Holders announce and withdraw
//! chunks; a node that dies or leaves is dropped with all its entries.

use std::collections::{HashMap, HashSet};

use eliop2p_core::ChunkId;

#[derive(Default)]
pub struct LocationIndex {
    holders: HashMap<ChunkId, Vec<String>>,
    by_node: HashMap<String, HashSet<ChunkId>>,
}

impl LocationIndex {
    pub fn add(&mut self, node: &str, chunk: ChunkId) {
        let h = self.holders.entry(chunk).or_default();
        if !h.iter().any(|n| n == node) {
            h.push(node.to_owned());
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
}
