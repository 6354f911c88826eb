//! The gossip messages on the wire (PROTOCOL.md, types 0x20-0x24): JSON payloads,
//! decoded with the per-message limits.

use eliop2p_core::ChunkId;
use serde::{Deserialize, Serialize};

use super::{MAX_CHUNKS_PER_MESSAGE, MAX_MEMBERS_PER_MESSAGE, NodeInfo};

/// One member's state as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub node: NodeInfo,
    pub generation: u64,
    pub heartbeat: u64,
    #[serde(default)]
    pub left: bool,
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
    StateSync {
        from: String,
        members: Vec<Digest>,
        reply: bool,
    },
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

impl Message {
    /// The frame message type (PROTOCOL.md): 0x20-0x24.
    pub fn message_type(&self) -> u32 {
        match self {
            Message::NodeJoin(_) => 0x20,
            Message::NodeLeave(_) => 0x21,
            Message::ChunkAnnounce { .. } => 0x22,
            Message::ChunkRemove { .. } => 0x23,
            Message::StateSync { .. } => 0x24,
        }
    }

    /// The frame payload (JSON).
    pub fn payload(&self) -> Vec<u8> {
        let chunks = |from: &str, c: &[ChunkId]| ChunksWire {
            from: from.to_owned(),
            chunks: c.iter().map(ChunkId::to_hex).collect(),
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
            t => return Err(format!("message type {t:#x} is not a gossip message")),
        })
    }
}
