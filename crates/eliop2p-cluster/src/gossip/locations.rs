//! The location side of [`Gossip`]: rendezvous owners of a chunk among the live
//! members, and this node's part of the location index (holders and swarm).

use std::collections::HashMap;
use std::net::SocketAddr;

use eliop2p_core::ChunkId;

use super::{Gossip, MAX_CHUNKS_PER_MESSAGE, Message, NodeInfo, Out};
use crate::rendezvous;

impl Gossip {
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
                    return Some(NodeInfo::clone(&self.me));
                }
                let e = self.members.get(id)?;
                self.is_live(e).then(|| NodeInfo::clone(&e.node))
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
                self.is_live(e).then(|| NodeInfo::clone(&e.node))
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
}
