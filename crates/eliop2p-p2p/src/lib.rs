//! The P2P transfer layer on TCP port 9000: the seed's frame format (`codec`),
//! message payloads and the HMAC handshake (`proto`), the server that serves chunk
//! pieces from memory, disk and fills in progress (`server`), and the downloader that
//! fetches a chunk's pieces from several peers at once (`download`), with peer scoring
//! (`score`) and bandwidth limits (`limit`). The wire format is in PROTOCOL.md.

pub mod cluster;
pub mod codec;
mod conn;
mod download;
mod introduce;
pub mod sched;
pub mod sim;
pub mod limit;
mod pace;
pub mod proto;
pub mod score;
mod server;
pub mod sockopt;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eliop2p_cache::{ChunkCache, FillWriter};
use eliop2p_core::ChunkId;
use eliop2p_core::prom::{self, Kind};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cluster::{ClusterConfig, Directory, FetchRefused, FetchRequest, Fetcher};
pub use download::{Incomplete, OriginPiece, PieceOrigin};
pub use server::SLOT_WAIT;
pub use sockopt::NOTSENT_LOWAT;
pub use eliop2p_cluster::{NodeInfo, Status};

#[derive(Clone, Debug)]
pub struct P2pConfig {
    pub node_id: String,
    /// Shared secret of the cluster; `None` = no secret (loopback only, or with
    /// `allow_unauthenticated`).
    pub cluster_secret: Option<Vec<u8>>,
    pub allow_unauthenticated: bool,
    pub static_peers: Vec<SocketAddr>,
    /// Peers chosen per chunk (1-10).
    pub selection_k: usize,
    /// Bytes per second, 0 = unlimited; shared by all connections.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// Upload slots: pieces being sent at once (a piece holds its slot until it is
    /// on the socket); a request beyond them is answered busy. 4: on the network
    /// bed (16 nodes × 64 MiB at 200 Mbit/s) p99 was 1.30x with 4 against 1.35x
    /// with 8 (median of 28 runs each), and the simulator, once it freed a slot
    /// as a node does (`NOTSENT_LOWAT` before the piece's last byte), agreed at
    /// 16, 100 and 1,000 nodes (1,000 × 1 GiB: 1.07x against 1.10x).
    pub max_uploads: usize,
    /// Pieces this node asks of peers at once, over all its downloads: enough to
    /// fill the NIC, few enough that a download from the origin on the same link
    /// still gets its share (every piece in flight is 256 KiB queued on the downlink).
    pub max_download_pieces: usize,
    /// The same budget while this node reads a chunk from the origin: the origin
    /// fill is the cluster's critical path (every other node waits on it), and
    /// each piece asked of a peer is one more flow sharing the downlink with it;
    /// but the owner needs the rest of the object as much as anyone, and too small
    /// a budget makes the owners the last to finish (the p99). Shared out over
    /// the fills while it reads several (`download_budget`). 0 = no change.
    pub max_download_pieces_while_filling: usize,
    /// Connections the P2P listener holds open at once.
    pub max_connections: usize,
    /// TCP congestion control of every peer connection (`p2p.tcp_congestion`);
    /// `None` = the host's default (`net.ipv4.tcp_congestion_control`).
    pub tcp_congestion: Option<String>,
    /// A piece not received (or not filled, when serving) within this is given up.
    pub piece_timeout: Duration,
    /// Cluster membership and chunk locations; `None` = static peers only.
    pub cluster: Option<ClusterConfig>,
    /// Mutual TLS on the P2P port (`p2p.tls_*`); `None` = the cluster secret's
    /// handshake over plain TCP.
    pub tls: Option<Arc<tls::P2pTls>>,
}

impl P2pConfig {
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            cluster_secret: None,
            allow_unauthenticated: false,
            static_peers: Vec::new(),
            selection_k: 5,
            max_upload_rate: 0,
            max_download_rate: 0,
            max_uploads: 4,
            max_download_pieces: 12,
            max_download_pieces_while_filling: 6,
            max_connections: 4096,
            tcp_congestion: None,
            piece_timeout: Duration::from_secs(5),
            cluster: None,
            tls: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum P2pError {
    #[error("peer i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("peer authentication failed")]
    AuthFailed,
    #[error("peer refused: {0}")]
    Refused(String),
    #[error("peer timed out")]
    Timeout,
    #[error("peer connection closed")]
    Closed,
    #[error("p2p config: {0}")]
    Config(String),
    #[error("peer TLS: {0}")]
    Tls(String),
    #[error("peer announced node {announced:?}, but its certificate names {certified:?}")]
    WrongIdentity { announced: String, certified: Vec<String> },
}

/// Transfer counters, exported as metrics.
#[derive(Default)]
pub struct P2pStats {
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub pieces_up: AtomicU64,
    pub pieces_down: AtomicU64,
    pub active_downloads: AtomicU64,
    pub handshake_failures: AtomicU64,
    /// Connections closed at accept: `max_connections` or the per-address cap.
    pub connections_refused: AtomicU64,
    pub verification_failures: AtomicU64,
    /// Origin fills started because a peer asked this node (the chunk's owner).
    pub fetches_for_peers: AtomicU64,
    /// Bitmaps sent to peers: answers to queries at once, and to standing queries
    /// once there was news (`watched`).
    pub bitmaps_sent: AtomicU64,
    pub bitmaps_watched: AtomicU64,
    /// Peers a download here probed because they queried this node's bitmap of
    /// the chunk (`introduce`), not named by a tracker yet.
    pub peers_introduced: AtomicU64,
    piece_failures: Mutex<HashMap<&'static str, u64>>,
    /// Bytes by (peer, direction): peers are named by their node id when sending
    /// to them and by their P2P address when receiving from them.
    peer_bytes: Mutex<HashMap<(String, &'static str), u64>>,
}

impl P2pStats {
    fn record_piece_failure(&self, reason: &'static str) {
        *self
            .piece_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn add_peer_bytes(&self, peer: &str, direction: &'static str, n: u64) {
        let mut m = self.peer_bytes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.get_mut(&(peer.to_owned(), direction)) {
            *v += n;
        } else if m.len() < 4096 {
            m.insert((peer.to_owned(), direction), n);
        }
    }

    pub fn piece_failures(&self, reason: &str) -> u64 {
        self.piece_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }
}

/// See [`P2p::origin_fill_running`].
pub struct OriginFillGuard(Arc<P2pShared>);

impl Drop for OriginFillGuard {
    fn drop(&mut self) {
        if self.0.origin_fills.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
            // Downloads held to the smaller budget may take the whole one again.
            self.0.pieces_freed.notify_waiters();
        }
    }
}

pub(crate) struct P2pShared {
    cfg: P2pConfig,
    secret: Vec<u8>,
    /// Mutual TLS with the cluster CA's certificates, when configured.
    tls: Option<Arc<tls::P2pTls>>,
    limits: codec::Limits,
    cache: ChunkCache,
    stats: Arc<P2pStats>,
    upload_limit: limit::RateLimiter,
    /// Kernel pacing of the upload connections, with `max_upload_rate` set.
    pacer: Option<Arc<pace::Pacer>>,
    download_limit: limit::RateLimiter,
    upload_slots: Arc<tokio::sync::Semaphore>,
    /// Pieces asked of peers and not yet answered, over all downloads (bounded by
    /// `cfg.max_download_pieces`), and a wake-up for downloads held back by it.
    pieces_in_flight: std::sync::atomic::AtomicUsize,
    pieces_freed: tokio::sync::Notify,
    /// Chunk fills from the origin running on this node (see
    /// `max_download_pieces_while_filling`).
    origin_fills: std::sync::atomic::AtomicUsize,
    conns: tokio::sync::Mutex<HashMap<SocketAddr, Arc<conn::PeerConn>>>,
    peer_stats: Mutex<HashMap<SocketAddr, score::PeerStats>>,
    self_addr: SocketAddr,
    cluster: Option<cluster::Cluster>,
    /// Stop without leaving the cluster (a crash, as far as peers can tell).
    silent: std::sync::atomic::AtomicBool,
    /// Seeding: copies of each piece this node sent as a seed lately.
    seed_copies: Mutex<HashMap<(ChunkId, u32), (u32, std::time::Instant)>>,
    /// The downloads running here, told of the peers that query this node.
    introductions: introduce::Introductions,
}

/// A seed (a complete holder, or a fill from the origin) sends each piece to at
/// most this many peers per window (200 ms: about one piece time plus a bitmap refresh, so the copies
/// have reached the swarm by its end); later askers are told to take it from the
/// swarm, which got those copies. So a seed's uplink carries about three copies
/// of each piece however many nodes download it, and the swarm the rest. Three
/// rather than two since 2026-12-06: a fresh piece reaches the swarm a hop
/// sooner; in the simulator p99 1.17x -> 1.15x at 16 nodes, 1.26x -> 1.23x at
/// 200, 1.30x -> 1.27x at 1,000 (64 MiB, with `per_peer` 4).
pub const SEED_COPIES: u32 = 3;
pub const SEED_WINDOW: Duration = Duration::from_millis(200);

/// Upload slots a node keeps, while it reads chunks from the origin, for the
/// pieces it seeds (its fills' and its complete chunks'): a request for a piece
/// of a chunk it is itself getting from peers is answered busy once no more
/// than these are free, and the asker takes the piece from another holder. What
/// an owner read and has not sent on dies with it (the origin is read again for
/// it), so its fresh pieces go out first. A quarter of the slots (1 of the 4
/// by default, 2 of 8). In
/// the simulator, 8 nodes × 64 MiB at 50 Mbit/s (8 seeds): the most an owner
/// held alone fell from 3.7 to 2.9 MiB on average, p99 from 1.19x to 1.18x; 16
/// nodes at 200 Mbit/s: p99 no worse.
pub fn fill_reserved_slots(max_uploads: usize) -> usize {
    max_uploads / 4
}

/// Whether a node answers busy to a request for a piece of a chunk it is getting
/// from peers: while it reads the origin (`fills_running`) and no more than
/// `reserved` of its upload slots are free (`fill_reserved_slots`). The server
/// and the simulator both ask this.
pub fn keeps_slots_for_fills(fills_running: bool, free_slots: usize, reserved: usize) -> bool {
    fills_running && reserved > 0 && free_slots <= reserved
}

/// The pieces a node may ask of peers at once, over all its downloads, while
/// it reads `fills` chunks from the origin (`max_download_pieces`, and
/// `max_download_pieces_while_filling` while it reads any). Each origin stream
/// needs its share of the downlink, and every piece asked of a peer is one more
/// flow sharing it: a node that owns two of the chunks being read at once (a
/// third of the runs of 4 chunks over 16 nodes) read them at half the pace of
/// the other owners' and held the whole cluster back at the end (the bed: p99
/// 1.34x against 1.23x at 16 x 100 Mbit/s). So the budget while filling is
/// shared out over the fills: each fill then sees the peer flows a single one
/// does. The node's downloads and the simulator both ask this.
pub fn download_budget(max_pieces: usize, while_filling: usize, fills: usize) -> usize {
    match while_filling {
        n if n > 0 && fills > 0 => (n / fills).clamp(1, max_pieces.max(1)),
        _ => max_pieces,
    }
}

impl P2pShared {
    fn peers(&self) -> Vec<SocketAddr> {
        self.cfg
            .static_peers
            .iter()
            .copied()
            .filter(|a| *a != self.self_addr)
            .collect()
    }

    /// The pooled connection to a peer, connecting (outside the pool's lock, so a
    /// dead peer delays no one else) when there is none.
    async fn conn(&self, addr: SocketAddr) -> Result<Arc<conn::PeerConn>, P2pError> {
        if let Some(c) = self
            .conns
            .lock()
            .await
            .get(&addr)
            .filter(|c| !c.is_closed())
        {
            return Ok(c.clone());
        }
        let c = conn::PeerConn::connect(addr, self).await?;
        let mut conns = self.conns.lock().await;
        match conns.get(&addr).filter(|c| !c.is_closed()) {
            Some(existing) => Ok(existing.clone()),
            None => {
                conns.insert(addr, c.clone());
                Ok(c)
            }
        }
    }

    /// Whether this seed may send `piece` once more now (and counts it).
    fn seed_copy(&self, id: &ChunkId, piece: u32) -> bool {
        let now = std::time::Instant::now();
        let mut m = self.seed_copies.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 65_536 {
            m.retain(|_, (_, t)| now.duration_since(*t) < SEED_WINDOW);
        }
        let e = m.entry((*id, piece)).or_insert((0, now));
        if now.duration_since(e.1) >= SEED_WINDOW {
            *e = (0, now);
        }
        if e.0 >= SEED_COPIES {
            return false;
        }
        e.0 += 1;
        true
    }

    fn peer_stats(&self, addr: &SocketAddr) -> score::PeerStats {
        self.peer_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
            .unwrap_or_default()
    }

    fn with_peer_stats(&self, addr: SocketAddr, f: impl FnOnce(&mut score::PeerStats)) {
        f(self
            .peer_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_default());
    }
}

/// A running P2P layer: the server task and the downloader.
#[derive(Clone)]
pub struct P2pHandle {
    shared: Arc<P2pShared>,
    pub local_addr: SocketAddr,
}

/// Starts the P2P server on `listener` (bound by the caller). Refuses a listener on
/// a non-loopback address without a cluster secret unless unauthenticated mode is
/// explicitly allowed.
/// What the node gives the P2P layer when it starts it: fetch-through for peers
/// (the owner reading the origin) and a chunk directory asked before the owner
/// (the control plane). Either may be absent: a node without a fetcher answers
/// peers' fetch requests with an error; without a directory only owners are asked.
#[derive(Clone, Default)]
pub struct NodeServices {
    pub fetcher: Option<Arc<dyn Fetcher>>,
    pub directory: Option<Arc<dyn Directory>>,
}

pub fn spawn_p2p(
    cfg: P2pConfig,
    listener: TcpListener,
    cache: ChunkCache,
    cancel: CancellationToken,
    tracker: &TaskTracker,
    node: NodeServices,
) -> Result<P2pHandle, P2pError> {
    let local_addr = listener.local_addr()?;
    if let Some(tls) = &cfg.tls
        && !tls.identities().contains(&cfg.node_id)
    {
        return Err(P2pError::Config(format!(
            "p2p.tls_cert names {:?}, not this node's id {:?}: peers would refuse it",
            tls.identities(),
            cfg.node_id
        )));
    }
    if cfg.cluster_secret.is_none()
        && cfg.tls.is_none()
        && !local_addr.ip().is_loopback()
        && !cfg.allow_unauthenticated
    {
        return Err(P2pError::Config(format!(
            "refusing to listen on {local_addr} without p2p.cluster_secret (set one, or p2p.allow_unauthenticated = true)"
        )));
    }
    let secret = cfg.cluster_secret.clone().unwrap_or_default();
    let cluster = cfg.cluster.clone().map(|cc| {
        let me = NodeInfo {
            id: cfg.node_id.clone(),
            p2p: cc.advertise.unwrap_or(local_addr),
            proxy: cc.proxy_addr,
            zone: cc.zone.clone(),
            owner: cc.owner,
        };
        cluster::Cluster::new(cc, me, node)
    });
    let shared = Arc::new(P2pShared {
        cluster,
        silent: Default::default(),
        seed_copies: Mutex::default(),
        introductions: Default::default(),
        tls: cfg.tls.clone(),
        secret,
        limits: codec::Limits::default(),
        cache,
        stats: Arc::default(),
        upload_limit: limit::RateLimiter::new(cfg.max_upload_rate),
        pacer: pace::Pacer::new(cfg.max_upload_rate),
        download_limit: limit::RateLimiter::new(cfg.max_download_rate),
        upload_slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_uploads.max(1))),
        pieces_in_flight: Default::default(),
        pieces_freed: tokio::sync::Notify::new(),
        origin_fills: Default::default(),
        conns: tokio::sync::Mutex::default(),
        peer_stats: Mutex::default(),
        self_addr: local_addr,
        cfg,
    });
    tracker.spawn(server::run(
        listener,
        shared.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    if let Some(tls) = shared.tls.clone() {
        tracker.spawn(tls::watch(tls, cancel.clone()));
    }
    tracker.spawn(cluster::run(shared.clone(), cancel));
    Ok(P2pHandle { shared, local_addr })
}

impl P2pHandle {
    /// Whether any other node may hold chunks (static peers or live members).
    /// Marks a chunk fill from the origin as running on this node until the guard
    /// drops: peer downloads then keep to `max_download_pieces_while_filling`.
    pub fn origin_fill_running(&self) -> OriginFillGuard {
        self.shared.origin_fills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OriginFillGuard(self.shared.clone())
    }

    pub fn has_peers(&self) -> bool {
        !self.shared.peers().is_empty()
            || self
                .shared
                .cluster
                .as_ref()
                .is_some_and(|c| c.gossip().has_live_members())
    }

    /// Makes shutdown skip the graceful leave, as a crash would (for tests of failure
    /// detection).
    pub fn set_silent(&self) {
        self.shared.silent.store(true, Relaxed);
    }

    pub fn is_silent(&self) -> bool {
        self.shared.silent.load(Relaxed)
    }

    /// Live holders of a chunk as the cluster reports them (control plane, or the
    /// chunk's owner), without starting any fetch.
    pub async fn locate(&self, id: ChunkId) -> Vec<SocketAddr> {
        cluster::find_holders(&self.shared, &id, None, false).await
    }

    /// This node as peers see it (`None` without a cluster).
    pub fn me(&self) -> Option<NodeInfo> {
        self.shared
            .cluster
            .as_ref()
            .map(|c| c.gossip().me().clone())
    }

    /// Members this node knows, with their status.
    pub fn members(&self) -> Vec<(NodeInfo, Status)> {
        self.shared
            .cluster
            .as_ref()
            .map(|c| c.gossip().members())
            .unwrap_or_default()
    }

    /// Members reported online by the control plane: with gossip they are seeds to
    /// join; without gossip they are the membership (refreshed on every call).
    pub fn observe_members(&self, nodes: Vec<NodeInfo>) {
        let Some(c) = &self.shared.cluster else {
            return;
        };
        let now = c.now_ms();
        let mut g = c.gossip();
        if c.cfg.gossip {
            g.add_seeds(nodes.into_iter().map(|n| n.p2p));
        } else {
            for n in nodes {
                g.observe(now, n);
            }
        }
    }

    pub fn stats(&self) -> &P2pStats {
        &self.shared.stats
    }

    /// Pieces being sent to peers now (upload slots in use).
    pub fn active_uploads(&self) -> u64 {
        (self.shared.cfg.max_uploads.max(1) - self.shared.upload_slots.available_permits()) as u64
    }

    /// Fetches a chunk from peers into `writer`. `Ok` when the writer has every
    /// byte (the caller finishes it); otherwise how much was delivered, so the caller
    /// continues from the origin at that offset.
    /// `fetch` lets the chunk's owner read it from the origin for the cluster when
    /// nobody holds it. `origin` reads pieces nobody has from the origin when this
    /// node takes the chunk over mid-download (without it, the download ends and
    /// the caller reads the rest). `Ok` carries the number of other nodes that
    /// held the chunk.
    pub async fn download(
        &self,
        id: ChunkId,
        len: u64,
        writer: &mut FillWriter,
        fetch: Option<&FetchRequest>,
        origin: Option<&Arc<dyn PieceOrigin>>,
    ) -> Result<usize, Incomplete> {
        download::download(&self.shared, id, len, writer, fetch, origin).await
    }

    /// Prometheus text of the transfer metrics.
    pub fn render_metrics(&self) -> String {
        let s = &self.shared.stats;
        let mut out = String::new();
        let counters: [(&str, &str, u64); 12] = [
            (
                "eliop2p_p2p_fetches_for_peers_total",
                "Origin fills this node started as a chunk's owner for peers.",
                s.fetches_for_peers.load(Relaxed),
            ),
            (
                "eliop2p_p2p_bitmaps_sent_total",
                "Bitmaps sent to peers (answers to have queries, standing or not).",
                s.bitmaps_sent.load(Relaxed),
            ),
            (
                "eliop2p_p2p_bitmaps_watched_total",
                "Bitmaps sent to peers as answers to standing queries (have-announcements).",
                s.bitmaps_watched.load(Relaxed),
            ),
            (
                "eliop2p_p2p_peers_introduced_total",
                "Peers a download probed because they queried this node's bitmap of the chunk.",
                s.peers_introduced.load(Relaxed),
            ),
            (
                "eliop2p_p2p_sent_bytes_total",
                "Piece bytes sent to peers.",
                s.bytes_up.load(Relaxed),
            ),
            (
                "eliop2p_p2p_received_bytes_total",
                "Piece bytes received from peers.",
                s.bytes_down.load(Relaxed),
            ),
            (
                "eliop2p_p2p_pieces_sent_total",
                "Pieces sent to peers.",
                s.pieces_up.load(Relaxed),
            ),
            (
                "eliop2p_p2p_pieces_received_total",
                "Pieces received and accepted.",
                s.pieces_down.load(Relaxed),
            ),
            (
                "eliop2p_p2p_handshake_failures_total",
                "Connections that failed the cluster-secret handshake.",
                s.handshake_failures.load(Relaxed),
            ),
            (
                "eliop2p_p2p_connections_refused_total",
                "P2P connections closed at accept (p2p.max_connections or the per-address cap).",
                s.connections_refused.load(Relaxed),
            ),
            (
                "eliop2p_p2p_verification_failures_total",
                "Chunks from peers that failed their SHA-256.",
                s.verification_failures.load(Relaxed),
            ),
            (
                "eliop2p_p2p_throttled_seconds_total",
                "Time transfers waited for the bandwidth limits.",
                (self.shared.upload_limit.throttled_ns.load(Relaxed)
                    + self.shared.download_limit.throttled_ns.load(Relaxed))
                    / 1_000_000_000,
            ),
        ];
        for (name, help, v) in counters {
            prom::family(&mut out, name, Kind::Counter, help, [("", v)]);
        }
        let reasons = [
            "timeout",
            "corrupt",
            "refused",
            "connection",
            "bad_length",
            "busy",
            "missing",
            "deferred",
        ];
        if let Some(tls) = &self.shared.tls {
            let failures = tls.failures();
            prom::family(
                &mut out,
                "eliop2p_p2p_tls_handshake_failures_total",
                Kind::Counter,
                "P2P TLS handshakes that failed, by reason (expired, unknown_ca, no_certificate, wrong_identity, not_tls, refused_by_peer, timeout, other).",
                tls::REASONS.map(|r| (format!("reason=\"{r}\""), failures.get(r).copied().unwrap_or(0))),
            );
            prom::family(
                &mut out,
                "eliop2p_p2p_tls_reloads_total",
                Kind::Counter,
                "Times the P2P certificate files were read again after a change or SIGHUP.",
                [("", tls.reloads())],
            );
        }
        prom::family(
            &mut out,
            "eliop2p_p2p_piece_failures_total",
            Kind::Counter,
            "Pieces that failed, by reason.",
            reasons.map(|r| (format!("reason=\"{r}\""), s.piece_failures(r))),
        );
        let mut rows: Vec<(String, u64)> = {
            let m = s.peer_bytes.lock().unwrap_or_else(|p| p.into_inner());
            m.iter()
                .map(|((peer, dir), v)| {
                    (
                        format!("peer=\"{}\",direction=\"{dir}\"", prom::label_value(peer)),
                        *v,
                    )
                })
                .collect()
        };
        rows.sort();
        prom::family(
            &mut out,
            "eliop2p_p2p_peer_bytes_total",
            Kind::Counter,
            "Piece bytes by peer and direction.",
            rows,
        );
        if let Some(c) = &self.shared.cluster {
            let mut counts = [0u64; 4];
            for (_, st) in c.gossip().members() {
                counts[st as usize] += 1;
            }
            let (index_len, (suspicions, deaths), refused, queued, incarnation) = {
                let g = c.gossip();
                (
                    g.index_len() as u64,
                    g.detections(),
                    g.refused(),
                    g.pending_updates() as u64,
                    g.incarnation(),
                )
            };
            prom::family(
                &mut out,
                "eliop2p_cluster_members",
                Kind::Gauge,
                "Other members this node knows, by status.",
                [
                    ("status=\"alive\"", counts[0]),
                    ("status=\"suspect\"", counts[1]),
                    ("status=\"dead\"", counts[2]),
                    ("status=\"left\"", counts[3]),
                ],
            );
            prom::family(
                &mut out,
                "eliop2p_cluster_indexed_chunks",
                Kind::Gauge,
                "Chunks whose holders this node tracks as their owner or backup.",
                [("", index_len)],
            );
            prom::family(
                &mut out,
                "eliop2p_gossip_detections_total",
                Kind::Counter,
                "Members this node suspected after a failed probe, and members it declared dead when their suspicion ran out.",
                [("event=\"suspected\"", suspicions), ("event=\"declared_dead\"", deaths)],
            );
            prom::family(
                &mut out,
                "eliop2p_gossip_refused_total",
                Kind::Counter,
                "Gossip messages and claims dropped: spoken for another node than their sender, or beyond the bounds.",
                [("", refused)],
            );
            prom::family(
                &mut out,
                "eliop2p_gossip_queued_updates",
                Kind::Gauge,
                "Membership changes waiting to be piggybacked.",
                [("", queued)],
            );
            prom::family(
                &mut out,
                "eliop2p_gossip_incarnation",
                Kind::Gauge,
                "This node's incarnation: how many times it refuted a suspicion or death in this life.",
                [("", incarnation)],
            );
        }
        prom::family(
            &mut out,
            "eliop2p_p2p_active_transfers",
            Kind::Gauge,
            "Pieces being sent and chunks being downloaded.",
            [
                (
                    "direction=\"up\"",
                    // Upload slots in use: pieces being sent.
                    self.active_uploads(),
                ),
                ("direction=\"down\"", s.active_downloads.load(Relaxed)),
            ],
        );
        out
    }
}
