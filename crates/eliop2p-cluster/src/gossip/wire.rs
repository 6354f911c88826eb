//! The gossip messages on the wire (PROTOCOL.md, types 0x20-0x28): JSON payloads,
//! decoded with the per-message limits.

use std::sync::Arc;

use eliop2p_core::ChunkId;
use serde::{Deserialize, Serialize};

use super::{MAX_CHUNKS_PER_MESSAGE, MAX_MEMBERS_PER_MESSAGE, MAX_UPDATES_PER_MESSAGE, NodeInfo, Status};

/// One member's state as gossiped: who it is, which life (`generation`, its start
/// time) and which claim within that life (`incarnation`, raised only by the member
/// itself to refute a suspicion), and what the sender believes of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Shared: a table of thousands of members is cloned from node to node
    /// without copying each member's strings.
    pub node: Arc<NodeInfo>,
    pub generation: u64,
    pub incarnation: u64,
    pub status: Status,
}

impl Digest {
    /// The precedence of claims about one member: a later life, then a higher
    /// incarnation, then the graver status (alive < suspect < dead < left).
    pub fn key(&self) -> (u64, u64, Status) {
        (self.generation, self.incarnation, self.status)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    NodeJoin(Digest),
    NodeLeave(Digest),
    ChunkAnnounce {
        from: String,
        chunks: Vec<ChunkId>,
    },
    ChunkRemove {
        from: String,
        chunks: Vec<ChunkId>,
    },
    /// The full member table: the answer to a join, and the rare push-pull exchange
    /// (`reply: true` asks for the receiver's table back).
    StateSync {
        from: String,
        members: Vec<Digest>,
        reply: bool,
    },
    /// A probe: the receiver answers `Ack` with the same `seq`. `members` is how
    /// many live members the sender knows (itself not counted): a receiver that
    /// keeps knowing fewer asks for the sender's table.
    Ping {
        from: Digest,
        seq: u64,
        members: u64,
        updates: Vec<Digest>,
    },
    /// Asks the receiver to probe `target` and to relay its `Ack` (with `seq`).
    PingReq {
        from: Digest,
        seq: u64,
        target: NodeInfo,
        updates: Vec<Digest>,
    },
    /// A probe's answer, from the target or from a member that probed it for the
    /// asker.
    Ack {
        from: Digest,
        seq: u64,
        members: u64,
        updates: Vec<Digest>,
    },
    /// Membership changes only, sent to a few members while there are fresh ones.
    Updates { from: Digest, updates: Vec<Digest> },
}

#[derive(Serialize, Deserialize)]
struct ChunksWire {
    from: String,
    chunks: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct SyncWire {
    from: String,
    members: Vec<Digest>,
    reply: bool,
}

#[derive(Serialize, Deserialize)]
struct ProbeWire {
    from: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<NodeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    members: Option<u64>,
    #[serde(default)]
    updates: Vec<Digest>,
}

impl Message {
    /// The frame message type (PROTOCOL.md): 0x20-0x28.
    pub fn message_type(&self) -> u32 {
        match self {
            Message::NodeJoin(_) => 0x20,
            Message::NodeLeave(_) => 0x21,
            Message::ChunkAnnounce { .. } => 0x22,
            Message::ChunkRemove { .. } => 0x23,
            Message::StateSync { .. } => 0x24,
            Message::Ping { .. } => 0x25,
            Message::PingReq { .. } => 0x26,
            Message::Ack { .. } => 0x27,
            Message::Updates { .. } => 0x28,
        }
    }

    /// The node the message speaks for: its sender, on an authenticated link.
    pub fn subject(&self) -> &str {
        match self {
            Message::NodeJoin(d) | Message::NodeLeave(d) => &d.node.id,
            Message::ChunkAnnounce { from, .. }
            | Message::ChunkRemove { from, .. }
            | Message::StateSync { from, .. } => from,
            Message::Ping { from, .. }
            | Message::PingReq { from, .. }
            | Message::Ack { from, .. }
            | Message::Updates { from, .. } => &from.node.id,
        }
    }

    /// The frame payload (JSON).
    pub fn payload(&self) -> Vec<u8> {
        let chunks = |from: &str, c: &[ChunkId]| ChunksWire {
            from: from.to_owned(),
            chunks: c.iter().map(ChunkId::to_hex).collect(),
        };
        let probe = |from: &Digest, seq: Option<u64>, target: Option<&NodeInfo>, members: Option<u64>, updates: &[Digest]| {
            serde_json::to_vec(&ProbeWire {
                from: from.clone(),
                seq,
                target: target.cloned(),
                members,
                updates: updates.to_vec(),
            })
        };
        let r = match self {
            Message::NodeJoin(d) | Message::NodeLeave(d) => serde_json::to_vec(d),
            Message::ChunkAnnounce { from, chunks: c }
            | Message::ChunkRemove { from, chunks: c } => serde_json::to_vec(&chunks(from, c)),
            Message::StateSync {
                from,
                members,
                reply,
            } => serde_json::to_vec(&SyncWire {
                from: from.clone(),
                members: members.clone(),
                reply: *reply,
            }),
            Message::Ping {
                from,
                seq,
                members,
                updates,
            }
            | Message::Ack {
                from,
                seq,
                members,
                updates,
            } => probe(from, Some(*seq), None, Some(*members), updates),
            Message::PingReq {
                from,
                seq,
                target,
                updates,
            } => probe(from, Some(*seq), Some(target), None, updates),
            Message::Updates { from, updates } => probe(from, None, None, None, updates),
        };
        r.expect("gossip messages serialize")
    }

    pub fn decode(message_type: u32, payload: &[u8]) -> Result<Message, String> {
        let bad = |e: serde_json::Error| format!("bad gossip payload: {e}");
        let chunks = |p: &[u8]| -> Result<(String, Vec<ChunkId>), String> {
            let w: ChunksWire = serde_json::from_slice(p).map_err(bad)?;
            if w.chunks.len() > MAX_CHUNKS_PER_MESSAGE {
                return Err(format!("more than {MAX_CHUNKS_PER_MESSAGE} chunk ids"));
            }
            let ids = w
                .chunks
                .iter()
                .map(|h| ChunkId::from_hex(h).ok_or_else(|| format!("bad chunk id {h:?}")))
                .collect::<Result<_, _>>()?;
            Ok((w.from, ids))
        };
        type Probe = (Digest, u64, Option<NodeInfo>, u64, Vec<Digest>);
        let probe = |p: &[u8], need_target: bool| -> Result<Probe, String> {
            let w: ProbeWire = serde_json::from_slice(p).map_err(bad)?;
            if w.updates.len() > MAX_UPDATES_PER_MESSAGE {
                return Err(format!("more than {MAX_UPDATES_PER_MESSAGE} updates"));
            }
            if need_target && w.target.is_none() {
                return Err("a PingReq without a target".into());
            }
            let seq = match (message_type, w.seq) {
                (0x28, _) => 0,
                (_, Some(s)) => s,
                (_, None) => return Err("a probe without a seq".into()),
            };
            Ok((w.from, seq, w.target, w.members.unwrap_or(0), w.updates))
        };
        Ok(match message_type {
            0x20 => Message::NodeJoin(serde_json::from_slice(payload).map_err(bad)?),
            0x21 => Message::NodeLeave(serde_json::from_slice(payload).map_err(bad)?),
            0x22 => {
                let (from, chunks) = chunks(payload)?;
                Message::ChunkAnnounce { from, chunks }
            }
            0x23 => {
                let (from, chunks) = chunks(payload)?;
                Message::ChunkRemove { from, chunks }
            }
            0x24 => {
                let w: SyncWire = serde_json::from_slice(payload).map_err(bad)?;
                if w.members.len() > MAX_MEMBERS_PER_MESSAGE {
                    return Err(format!("more than {MAX_MEMBERS_PER_MESSAGE} members"));
                }
                Message::StateSync {
                    from: w.from,
                    members: w.members,
                    reply: w.reply,
                }
            }
            0x25 => {
                let (from, seq, _, members, updates) = probe(payload, false)?;
                Message::Ping {
                    from,
                    seq,
                    members,
                    updates,
                }
            }
            0x26 => {
                let (from, seq, target, _, updates) = probe(payload, true)?;
                Message::PingReq {
                    from,
                    seq,
                    target: target.expect("checked"),
                    updates,
                }
            }
            0x27 => {
                let (from, seq, _, members, updates) = probe(payload, false)?;
                Message::Ack {
                    from,
                    seq,
                    members,
                    updates,
                }
            }
            0x28 => {
                let (from, _, _, _, updates) = probe(payload, false)?;
                Message::Updates { from, updates }
            }
            t => return Err(format!("message type {t:#x} is not a gossip message")),
        })
    }
}
