//! The P2P layer's cluster side: gossip on the P2P port (the pure state machine of
//! `eliop2p-cluster` driven by a timer and the sockets), chunk announcements from
//! the cache's events, `Locate` queries to a chunk's owner, and fetch-through: the
//! owner reads a chunk nobody holds from the origin once for the whole cluster.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eliop2p_cache::{ChunkEvent, Held};
use eliop2p_cluster::{Gossip, GossipConfig, Message, NodeInfo, Out};
use eliop2p_core::ChunkId;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::codec::{Frame, MessageType};
use crate::{P2pError, P2pShared};

/// How this node takes part in the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Gossip membership on the P2P port (modes `gossip` and `hybrid`); without it
    /// members come from [`crate::P2pHandle::observe_members`] (mode `control-plane`).
    pub gossip: bool,
    pub seeds: Vec<SocketAddr>,
    pub gossip_cfg: GossipConfig,
    /// The P2P address peers reach this node at (default: the listener's).
    pub advertise: Option<SocketAddr>,
    pub proxy_addr: Option<SocketAddr>,
    pub zone: String,
    /// Whether this node may own chunks (`node.owner`; `NodeInfo::owner`).
    pub owner: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            gossip: true,
            seeds: Vec::new(),
            gossip_cfg: GossipConfig::default(),
            advertise: None,
            proxy_addr: None,
            zone: String::new(),
            owner: true,
        }
    }
}

/// What the owner needs to read a chunk from the origin for the cluster. The owner
/// derives the chunk id from it with its own origin configuration and refuses a
/// mismatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub object_size: u64,
    pub chunk_size: u64,
    pub index: u64,
}

/// Starts origin fills on behalf of peers (implemented by the node).
pub trait Fetcher: Send + Sync + 'static {
    /// Starts filling the chunk from the origin unless it is held or filling.
    fn fetch(&self, id: ChunkId, req: &FetchRequest) -> Result<(), FetchRefused>;
}

/// Why an owner does not read a chunk from the origin for a peer (the asker's
/// request is wrong for this node, or the node cannot); sent to the asker in the
/// `Locations` answer's `error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchRefused {
    #[error("chunk size {asked} differs from this node's {ours}")]
    ChunkSize { asked: u64, ours: u64 },
    #[error("chunk id does not match this node's origin")]
    WrongChunk,
    #[error("node shutting down")]
    ShuttingDown,
    #[error("this node does not fetch for peers")]
    NotOffered,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A chunk directory outside the P2P layer (the control plane).
pub trait Directory: Send + Sync + 'static {
    /// Holders of a chunk; `None` when the directory cannot answer now.
    fn locate(&self, id: ChunkId) -> BoxFuture<Option<Vec<NodeInfo>>>;
}

#[derive(Serialize, Deserialize)]
struct LocateWire {
    #[serde(default)]
    fetch: Option<FetchRequest>,
    /// The asker is downloading the chunk: the tracker registers it in the swarm.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    downloading: bool,
}

/// How long a downloader's registration with a chunk's tracker lasts; downloaders
/// ask again well before it ends.
const SWARM_TTL_MS: u64 = 20_000;
/// Complete holders and swarm members in one answer, at most.
pub(crate) const ANSWER_HOLDERS: usize = 8;
pub(crate) const ANSWER_SWARM: usize = 12;

/// A random subset of `v` of at most `k` (partial Fisher-Yates).
pub(crate) fn sample<T>(mut v: Vec<T>, k: usize) -> Vec<T> {
    let mut x = u64::from_le_bytes(crate::conn::random_nonce()[..8].try_into().expect("8 bytes")) | 1;
    let k = k.min(v.len());
    for i in 0..k {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = i + (x % (v.len() - i) as u64) as usize;
        v.swap(i, j);
    }
    v.truncate(k);
    v
}

#[derive(Serialize, Deserialize)]
struct LocationsWire {
    holders: Vec<NodeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(crate) struct Cluster {
    pub cfg: ClusterConfig,
    pub gossip: Mutex<Gossip>,
    pub fetcher: Option<Arc<dyn Fetcher>>,
    pub directory: Option<Arc<dyn Directory>>,
    started: Instant,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig, me: NodeInfo, node: crate::NodeServices) -> Self {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let gossip = Gossip::new(me, generation, cfg.seeds.clone(), cfg.gossip_cfg.clone());
        Self {
            cfg,
            gossip: Mutex::new(gossip),
            fetcher: node.fetcher,
            directory: node.directory,
            started: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn gossip(&self) -> std::sync::MutexGuard<'_, Gossip> {
        self.gossip.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn frame_of(msg: &Message) -> Frame {
    let t = MessageType::from_u32(msg.message_type()).expect("gossip types are frame types");
    Frame::new(t, &[], Bytes::from(msg.payload()), 0, 0)
}

/// Sends gossip messages, each on its own task so a dead peer stalls nothing.
pub(crate) fn send_all(shared: &Arc<P2pShared>, outs: Vec<Out>) {
    if outs.is_empty() {
        return;
    }
    let gossiping = shared.cluster.as_ref().is_some_and(|c| c.cfg.gossip);
    if !gossiping {
        return;
    }
    for o in outs {
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = async {
                let conn = shared.conn(o.to).await?;
                conn.notify(frame_of(&o.msg)).await
            }
            .await;
            if let Err(e) = r {
                tracing::debug!(peer = %o.to, error = %e, "gossip send failed");
            }
        });
    }
}

/// A gossip frame received by the server.
pub(crate) fn on_gossip(shared: &Arc<P2pShared>, f: &Frame, sender: &str) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    let msg = match Message::decode(f.message_type as u32, &f.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "bad gossip message");
            return;
        }
    };
    let outs = {
        let now = cluster.now_ms();
        cluster.gossip().handle_from(now, Some(sender), msg)
    };
    send_all(shared, outs);
}

/// Answers a `Locate` as the chunk's tracker: this node first when it holds the
/// chunk or fills it from the origin, a random few of the complete holders it
/// knows, and a random subset of the swarm (nodes downloading the chunk, this one
/// included when it is one), so upload load spreads over every node instead of
/// landing on the holders. A downloading asker joins the swarm. With a fetch
/// request and no complete holder or origin fill anywhere it knows, starts the
/// origin fill here and answers with itself: the cluster's one origin read.
pub(crate) fn on_locate(shared: &Arc<P2pShared>, id: &ChunkId, data: &[u8], asker: &str) -> Frame {
    let answer = |holders: Vec<NodeInfo>, error: Option<String>| {
        serde_json::to_vec(&LocationsWire { holders, error }).expect("serializes")
    };
    let Some(cluster) = &shared.cluster else {
        return Frame::new(
            MessageType::Locations,
            id.as_bytes(),
            answer(Vec::new(), Some("no cluster".into())).into(),
            0,
            0,
        );
    };
    let req: LocateWire = match serde_json::from_slice(data) {
        Ok(r) => r,
        Err(e) => {
            return Frame::new(
                MessageType::Locations,
                id.as_bytes(),
                answer(Vec::new(), Some(format!("bad locate: {e}"))).into(),
                0,
                0,
            );
        }
    };
    let now = cluster.now_ms();
    let (me, complete, swarm) = {
        let mut g = cluster.gossip();
        if req.downloading && g.indexes(id) {
            g.add_downloader(now, asker, *id, SWARM_TTL_MS);
        }
        let me = g.me().clone();
        let skip = [me.id.as_str(), asker];
        let complete = g.sample_holders(id, ANSWER_HOLDERS, &skip);
        let swarm = g.sample_downloaders(now, id, ANSWER_SWARM, &skip);
        (me, complete, swarm)
    };
    let here = shared.cache.peek(id);
    let seed_here = match &here {
        Some(Held::Memory(_) | Held::Disk(_)) => true,
        Some(Held::Filling(f)) => !f.from_peer(),
        None => false,
    };
    let mut error = None;
    let mut holders = Vec::new();
    if seed_here {
        holders.push(me.clone());
    } else if complete.is_empty()
        && let Some(fetch) = req.fetch
    {
        match &cluster.fetcher {
            Some(f) => match f.fetch(*id, &fetch) {
                Ok(()) => {
                    shared.stats.fetches_for_peers.fetch_add(1, Relaxed);
                    holders.push(me.clone());
                }
                Err(e) => error = Some(e.to_string()),
            },
            None => error = Some(FetchRefused::NotOffered.to_string()),
        }
    } else if matches!(here, Some(Held::Filling(_))) {
        // This node is in the chunk's swarm too.
        holders.push(me.clone());
    }
    holders.extend(complete);
    holders.extend(swarm);
    Frame::new(
        MessageType::Locations,
        id.as_bytes(),
        answer(holders, error).into(),
        0,
        0,
    )
}

/// Asks a peer who holds a chunk (and, with `fetch`, to read it from the origin if
/// nobody does).
pub(crate) async fn locate_remote(
    shared: &Arc<P2pShared>,
    addr: SocketAddr,
    id: &ChunkId,
    fetch: Option<&FetchRequest>,
    downloading: bool,
) -> Result<Vec<NodeInfo>, P2pError> {
    let payload = serde_json::to_vec(&LocateWire {
        fetch: fetch.cloned(),
        downloading,
    })
    .expect("serializes");
    let conn = shared.conn(addr).await?;
    let f = tokio::time::timeout(shared.cfg.piece_timeout, conn.locate(id, payload.into()))
        .await
        .map_err(|_| P2pError::Timeout)??;
    let w: LocationsWire = serde_json::from_slice(&f.data)
        .map_err(|e| P2pError::Protocol(format!("bad locations: {e}")))?;
    if let Some(e) = w.error
        && w.holders.is_empty()
    {
        return Err(P2pError::Refused(e));
    }
    Ok(w.holders)
}

/// Peers to probe for a chunk: the control plane's complete holders, and the
/// chunk's owner (then its backup) by rendezvous hashing, the chunk's tracker,
/// which answers with holders and swarm members from its part of the index or,
/// given `fetch`, reads the chunk from the origin for everyone (`downloading`
/// registers this node in the swarm). Empty when this node is the owner and nobody
/// holds the chunk: the caller reads the origin.
pub(crate) async fn find_holders(
    shared: &Arc<P2pShared>,
    id: &ChunkId,
    fetch: Option<&FetchRequest>,
    downloading: bool,
) -> Vec<SocketAddr> {
    locate_all(shared, id, fetch, downloading, true).await.0
}

/// [`find_holders`], and whether this node is the one to read the origin: the
/// first owner that answered for the chunk is this node (the owner died and this
/// node is its backup, or ownership moved here) and it knows no complete holder.
/// Without `ask_directory` the directory (the control plane) is asked only when
/// no owner answered.
pub(crate) async fn locate_all(
    shared: &Arc<P2pShared>,
    id: &ChunkId,
    fetch: Option<&FetchRequest>,
    downloading: bool,
    ask_directory: bool,
) -> (Vec<SocketAddr>, bool) {
    let Some(cluster) = &shared.cluster else {
        return (Vec::new(), false);
    };
    let my_id = shared.cfg.node_id.clone();
    let mut found: Vec<SocketAddr> = Vec::new();
    let add = |found: &mut Vec<SocketAddr>, more: Vec<NodeInfo>| {
        for n in more {
            if n.id != my_id && !found.contains(&n.p2p) {
                found.push(n.p2p);
            }
        }
    };
    let directory = async || match &cluster.directory {
        Some(dir) => dir.locate(*id).await.unwrap_or_default(),
        None => Vec::new(),
    };
    if ask_directory {
        add(&mut found, directory().await);
        if !downloading && !found.is_empty() {
            return (found, false);
        }
    }
    let owners = {
        let g = cluster.gossip();
        g.owners(id, 1 + g.config().backups)
    };
    // Owners ahead of this node that did not answer just now.
    let mut unreachable: Vec<String> = Vec::new();
    for owner in owners {
        if owner.id == my_id {
            // This node tracks the chunk: its own index answers, complete holders
            // only (the owner reads the origin rather than wait on a swarm). An
            // owner that did not answer is no holder either: a crashed owner stays
            // "live" until it is declared dead, and counting it would keep this
            // node, its backup, from taking over the chunk until then.
            let h: Vec<NodeInfo> = cluster
                .gossip()
                .holders(id)
                .into_iter()
                .filter(|n| !unreachable.contains(&n.id))
                .collect();
            let read_origin = h.iter().all(|n| n.id == my_id);
            add(&mut found, h);
            return (found, read_origin);
        }
        match locate_remote(shared, owner.p2p, id, fetch, downloading).await {
            Ok(h) => {
                add(&mut found, h);
                return (found, false);
            }
            Err(e) => {
                tracing::debug!(owner = %owner.id, error = %e, "chunk owner did not answer, trying the next");
                shared.with_peer_stats(owner.p2p, |s| s.record_failure());
                unreachable.push(owner.id);
            }
        }
    }
    if !ask_directory {
        add(&mut found, directory().await);
    }
    (found, false)
}

/// The cluster task: gossip rounds, chunk announcements from cache events (batched
/// per round), a full re-announcement when membership changes, and a graceful leave
/// on shutdown.
pub(crate) async fn run(shared: Arc<P2pShared>, cancel: CancellationToken) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let mut events = shared.cache.subscribe_events();
    let mut tick = tokio::time::interval(Duration::from_millis(
        cluster.cfg.gossip_cfg.interval_ms.max(10),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut resync = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let held = if resync || cluster.gossip().take_changed() {
                    resync = false;
                    Some(shared.cache.held())
                } else {
                    None
                };
                let outs = {
                    let now = cluster.now_ms();
                    let mut g = cluster.gossip();
                    let mut outs = g.tick(now);
                    if let Some(held) = held {
                        g.prune_index();
                        let ids: Vec<ChunkId> = held.into_iter().map(|(id, _)| id).collect();
                        outs.extend(g.announce(&ids, &[]));
                    }
                    if !added.is_empty() || !removed.is_empty() {
                        outs.extend(g.announce(&added, &removed));
                        added.clear();
                        removed.clear();
                    }
                    outs
                };
                send_all(&shared, outs);
            }
            ev = events.recv() => match ev {
                Ok(ChunkEvent::Added(id, _)) => added.push(id),
                Ok(ChunkEvent::Removed(id)) => removed.push(id),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => resync = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
        }
    }
    if shared.silent.load(Relaxed) {
        return;
    }
    // Graceful leave: tell every live member, briefly waiting for the sends.
    let outs = cluster.gossip().leave();
    if cluster.cfg.gossip {
        let sends = outs.into_iter().map(|o| {
            let shared = shared.clone();
            async move {
                if let Ok(conn) = shared.conn(o.to).await {
                    let _ = conn.notify(frame_of(&o.msg)).await;
                }
            }
        });
        let all = futures_join_all(sends);
        let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
    }
}

async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(fs: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in fs {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}
