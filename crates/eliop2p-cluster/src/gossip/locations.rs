//! The location side of [`Gossip`]: rendezvous owners of a chunk among the live
//! members, and this node's part of the location index (holders and swarm).

use std::collections::HashMap;
use std::net::SocketAddr;

use eliop2p_core::ChunkId;

use super::{Gossip, MAX_CHUNKS_PER_MESSAGE, Message, NodeInfo, Out};
use crate::rendezvous;

impl Gossip {
/// The first `k` live nodes (this one included) in rendezvous order for a
    /// chunk: its owner first. Nodes that may not own chunks (`NodeInfo::owner`
    /// false) come after every node that may, so they own a chunk only when no
    /// live node may.
    pub fn owners(&self, chunk: &ChunkId, k: usize) -> Vec<NodeInfo> {
        let mut best: Vec<((bool, u64), &NodeInfo)> = Vec::with_capacity(k + 1);
        let mut push = |w: (bool, u64), n| {
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
            push((self.me.owner, rendezvous::weight(chunk, self.my_hash)), &self.me);
        }
        for e in self.members.values() {
            if self.is_live(e) {
                push((e.node.owner, rendezvous::weight(chunk, e.hash)), &e.node);
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

    /// Up to `k` live holders of a chunk at random (this node included when it
    /// is one), none of them in `skip`: a tracker's answer. A chunk the whole
    /// cluster has read has thousands of holders; they are drawn by index, and
    /// only those drawn are cloned (cloning every holder at every `Locate` made
    /// the tracker's cost grow with the cluster).
    pub fn sample_holders(&mut self, chunk: &ChunkId, k: usize, skip: &[&str]) -> Vec<NodeInfo> {
        let draws = self.draws(k);
        let ids = self.index.holders(chunk);
        let picked = self.pick_live(ids, &draws, k, skip, true);
        self.infos(&picked)
    }

    /// Up to `k` live members downloading a chunk at random, as far as this
    /// node tracks it, none of them in `skip`.
    pub fn sample_downloaders(&mut self, now: u64, chunk: &ChunkId, k: usize, skip: &[&str]) -> Vec<NodeInfo> {
        let draws = self.draws(k);
        let ids = self.index.downloaders(chunk, now);
        let picked = self.pick_live(&ids, &draws, k, skip, false);
        self.infos(&picked)
    }

    /// Random numbers enough for `pick_live` to draw `k`.
    fn draws(&mut self, k: usize) -> Vec<u64> {
        (0..8 * k + 8).map(|_| self.next_random()).collect()
    }

    /// Up to `k` distinct ids of `ids` that are live members (or this node, with
    /// `me_too`) and not in `skip`: drawn at the indexes `draws` give, then, when
    /// that found too few (a short list, or many dead), from a scan starting at a
    /// random place.
    fn pick_live<'a, S: AsRef<str>>(&self, ids: &'a [S], draws: &[u64], k: usize, skip: &[&str], me_too: bool) -> Vec<&'a str> {
        let ok = |id: &str| {
            !skip.contains(&id)
                && if id == self.me.id {
                    me_too
                } else {
                    self.members.get(id).is_some_and(|e| self.is_live(e))
                }
        };
        let mut out: Vec<&str> = Vec::with_capacity(k);
        if ids.is_empty() || k == 0 {
            return out;
        }
        for d in draws {
            if out.len() == k {
                return out;
            }
            let id = ids[(d % ids.len() as u64) as usize].as_ref();
            if !out.contains(&id) && ok(id) {
                out.push(id);
            }
        }
        let start = (draws[0] % ids.len() as u64) as usize;
        for i in 0..ids.len() {
            if out.len() == k {
                break;
            }
            let id = ids[(start + i) % ids.len()].as_ref();
            if !out.contains(&id) && ok(id) {
                out.push(id);
            }
        }
        out
    }

    fn infos(&self, ids: &[&str]) -> Vec<NodeInfo> {
        ids.iter()
            .filter_map(|id| {
                if *id == self.me.id {
                    Some(NodeInfo::clone(&self.me))
                } else {
                    self.members.get(*id).map(|e| NodeInfo::clone(&e.node))
                }
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
