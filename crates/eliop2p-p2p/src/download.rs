//! Downloading one chunk from the swarm: peers from the chunk's tracker (its
//! owner) and the control plane, their bitmaps (refreshed while the download
//! runs), pieces requested by the pure scheduler (`sched`: rarest first, swarm
//! before seeds, deadlines from each peer's measured rate, duplicates of overdue
//! pieces, back-off from busy peers), per-piece verification, and verified pieces
//! put into the fill in any order, where other peers can fetch them at once.
//! The origin is the caller's business, and only when no peer has or is getting
//! a piece this node needs (`Incomplete`), except after a takeover: when this
//! node becomes the chunk's owner mid-download (the owner died), it reads only
//! the pieces nobody has or is getting from the origin (`PieceOrigin`) and keeps
//! taking the others from the swarm.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eliop2p_cache::FillWriter;
use eliop2p_cache::disk::PIECE_SIZE;
use eliop2p_core::ChunkId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cluster::FetchRequest;
use crate::codec::MessageType;
use crate::conn::{FLAG_WATCHED, PeerConn};
use crate::proto::{self, Bitmap, Reason};
use crate::sched::{Failure, SchedConfig, Scheduler, Source};
use crate::{P2pError, P2pShared};

/// How often a running download asks the tracker again (new swarm members): often
/// while it knows few peers (the first downloaders of a chunk learn of the later
/// ones this way), rarely once it knows enough.
const RELOCATE_FEW: Duration = Duration::from_millis(150);
const RELOCATE_EVERY: Duration = Duration::from_millis(1000);
const ENOUGH_PEERS: usize = 6;

/// Whether a download that knows `peers` peers knows few: it then re-locates
/// often and takes introductions (`introduce`). The simulator asks this too.
pub(crate) fn knows_few(peers: usize) -> bool {
    peers < ENOUGH_PEERS
}

/// How long after its last re-locate a download that knows `peers` peers asks
/// the tracker again (every piece sourced). The simulator asks this too.
pub(crate) fn relocate_interval(peers: usize) -> Duration {
    if knows_few(peers) { RELOCATE_FEW } else { RELOCATE_EVERY }
}
/// With a piece nobody has, the tracker is asked again at most this often;
/// and a download looks at its state at least this often (the simulator too).
pub(crate) const RELOCATE_MIN: Duration = Duration::from_millis(150);
/// A re-locate asks the control plane too (besides the tracker) at most this
/// often, unless pieces lack a source or, without gossip (where the control
/// plane is the only list of complete holders), the download knows few peers.
/// At every re-locate, a 5,000-node cluster asked it some 25,000 times a second.
const DIRECTORY_EVERY: Duration = Duration::from_secs(5);
/// A standing bitmap query is answered by then even without news.
const WATCH_WAIT: Duration = Duration::from_secs(1);
/// A peer that does not hold standing queries is asked again this often.
const POLL_FALLBACK: Duration = Duration::from_millis(25);
/// New peers probed per answer of the tracker or the control plane, at most. A
/// tracker names at most 21 (the owner, 8 complete holders, 12 of the swarm) and
/// the control plane 8 more, but an owner's own index, or a control plane asked
/// without a limit, names every holder: thousands in a large cluster, each a
/// connection and a bitmap, again at every re-locate.
pub(crate) const MAX_NEW_PROBES: usize = 32;
/// No verified piece at all for this long: the download gives up (the origin
/// fill it waits on is dead, or the cluster is).
const IDLE_LIMIT: Duration = Duration::from_secs(120);

/// How a peer download ended without the whole chunk.
#[derive(Debug)]
pub struct Incomplete {
    /// Bytes already handed to the writer (a multiple of the piece size): the caller
    /// fetches the rest from the origin.
    pub delivered: u64,
}

enum Event {
    Bitmap(SocketAddr, Result<Bitmap, P2pError>),
    Piece {
        peer: SocketAddr,
        piece: u32,
        result: Result<(Bytes, [u8; 32]), P2pError>,
    },
    /// Peers the tracker named, and whether this node is now the one to read the
    /// origin (the owner died and this node took over).
    Located(Vec<SocketAddr>, bool),
    /// A piece read from the origin after a takeover, or why the read failed.
    Origin(OriginPiece),
    /// A member that queried this node's bitmap of the chunk (`introduce`).
    Introduced(SocketAddr),
}

/// A whole piece read from the origin with its SHA-256, or why the read failed.
pub type OriginPiece = Result<(u32, Bytes, [u8; 32]), String>;

/// Reads pieces of one chunk from the origin (implemented by the node, per fill),
/// for a download whose node took the chunk over: the owner died and this node,
/// its backup, is the one to read the origin for the cluster now.
pub trait PieceOrigin: Send + Sync + 'static {
    /// Reads `pieces` (ascending), sending each whole piece as it is read (others
    /// between them may come too), or one `Err` when the read failed for good
    /// (after the node's retries).
    fn read(&self, pieces: Vec<u32>, tx: mpsc::UnboundedSender<OriginPiece>) -> crate::cluster::BoxFuture<()>;
}

/// The peers of an answer worth probing (`skip` says which are known, being
/// probed or this node), at most `MAX_NEW_PROBES`: a random sample when the
/// answer names more, so that a thousand askers do not all pick the same ones.
fn to_probe(found: Vec<SocketAddr>, skip: impl Fn(&SocketAddr) -> bool) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    let v: Vec<SocketAddr> = found.into_iter().filter(|a| !skip(a) && seen.insert(*a)).collect();
    crate::cluster::sample(v, MAX_NEW_PROBES)
}

pub(crate) async fn download(
    shared: &Arc<P2pShared>,
    id: ChunkId,
    len: u64,
    writer: &mut FillWriter,
    fetch: Option<&FetchRequest>,
    origin: Option<&Arc<dyn PieceOrigin>>,
) -> Result<usize, Incomplete> {
    let mut d = Download::start(shared, id, len, writer, fetch, origin).await?;
    let outcome = loop {
        let (wake, held_back) = match d.act() {
            ControlFlow::Continue(next) => next,
            ControlFlow::Break(outcome) => break outcome,
        };
        let ev = tokio::select! {
            ev = d.rx.recv() => ev,
            Some(peer) = d.introduced.recv() => Some(Event::Introduced(peer)),
            _ = tokio::time::sleep_until((d.t0 + wake).into()) => continue,
            _ = d.shared.pieces_freed.notified(), if held_back => continue,
        };
        let Some(ev) = ev else { break Err(()) };
        if let ControlFlow::Break(outcome) = d.on_event(ev) {
            break outcome;
        }
    };
    d.finish(outcome)
}

/// How a download ends: the whole chunk verified in the fill, or not.
type Outcome = Result<(), ()>;

/// One chunk's download from the swarm: the scheduler and what the download
/// knows of its peers, and the tasks that talk to them (each reports back as an
/// `Event` on `rx`).
struct Download<'a> {
    shared: &'a Arc<P2pShared>,
    id: ChunkId,
    len: u64,
    writer: &'a mut FillWriter,
    fetch: Option<&'a FetchRequest>,
    origin: Option<&'a Arc<dyn PieceOrigin>>,
    t0: Instant,
    sched: Scheduler<SocketAddr>,
    /// The verified pieces' hashes, for the chunk's root once all are in.
    hashes: Vec<Option<[u8; 32]>>,
    /// The chunk's SHA-256, as a complete holder's bitmap gave it.
    expected_sha: Option<[u8; 32]>,
    complete_peers: HashSet<SocketAddr>,
    /// Complete holders not asked for pieces (K were enough), probed again only
    /// when the complete peers in use drop below K.
    declined: HashSet<SocketAddr>,
    /// Peers whose bitmap is on its way (a probe or a standing query).
    probing: HashSet<SocketAddr>,
    tasks: JoinSet<()>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Members that queried this node's bitmap of the chunk while it runs.
    introduced: mpsc::UnboundedReceiver<SocketAddr>,
    _listening: crate::introduce::Listening<'a>,
    /// Pieces asked at once by this download alone (`SchedConfig::total`).
    per_download: usize,
    watching: bool,
    gossiping: bool,
    relocating: bool,
    last_locate: Duration,
    last_directory: Duration,
    unsourced_since: Option<Duration>,
    /// This node took the chunk over (its fill is an origin fill now), and the
    /// pieces it is reading from the origin.
    took_over: bool,
    from_origin: HashSet<u32>,
    budget: Budget<'a>,
}

impl<'a> Download<'a> {
    /// The peers to ask first (the node's static peers, then what the tracker and
    /// the control plane name, best scored first), each probed for its bitmap;
    /// `Incomplete` at once when there are none.
    async fn start(
        shared: &'a Arc<P2pShared>,
        id: ChunkId,
        len: u64,
        writer: &'a mut FillWriter,
        fetch: Option<&'a FetchRequest>,
        origin: Option<&'a Arc<dyn PieceOrigin>>,
    ) -> Result<Self, Incomplete> {
        let t0 = Instant::now();
        // Peers that query this node from now on are heard of (the tracker's
        // answer below may take a while, and they may be done querying by then).
        let (listening, introduced) = shared.introductions.listen(id);
        // The chunk's owner reads the origin itself rather than wait on a swarm;
        // any other node's fill is a swarm fill from the start: it offers the
        // pieces it has and awaits none, so no two nodes ever wait on each other.
        let owner_here = shared.cluster.as_ref().is_some_and(|c| {
            c.gossip()
                .owners(&id, 1)
                .first()
                .is_some_and(|o| o.id == shared.cfg.node_id)
        });
        if !owner_here {
            writer.fill().set_from_peer(true);
        }
        let mut candidates = shared.peers();
        let found = crate::cluster::find_holders(shared, &id, fetch, true).await;
        let fresh = to_probe(found, |a| candidates.contains(a) || *a == shared.self_addr);
        candidates.extend(fresh);
        if candidates.is_empty() {
            writer.fill().set_from_peer(false);
            return Err(Incomplete { delivered: 0 });
        }
        writer.fill().set_from_peer(true);
        // The best-scored peers (past throughput, latency, failures) are asked first.
        candidates.sort_by(|a, b| {
            let score = |p: &SocketAddr| crate::score::score(&shared.peer_stats(p), 1, 1);
            score(b).total_cmp(&score(a))
        });

        let seed = u64::from_le_bytes(crate::conn::random_nonce()[..8].try_into().expect("8 bytes"));
        let sched_cfg = SchedConfig::new(PIECE_SIZE, shared.cfg.piece_timeout);
        let (per_download, watching) = (sched_cfg.total, sched_cfg.watch);
        let mut sched: Scheduler<SocketAddr> = Scheduler::new(len, sched_cfg, seed, t0.elapsed());
        let mut hashes: Vec<Option<[u8; 32]>> = vec![None; sched.num_pieces()];
        // Pieces the fill already has (a download resumed after an earlier source).
        for (i, had) in writer.fill().have_pieces().into_iter().enumerate() {
            if had {
                sched.mark_have(i as u32);
                hashes[i] = writer.fill().piece_now(i as u32).map(|(_, h)| h);
            }
        }
        let (tx, rx) = mpsc::unbounded_channel::<Event>();
        let mut tasks = JoinSet::new();
        let mut probing = HashSet::new();
        for a in candidates {
            probing.insert(a);
            tasks.spawn(probe(shared.clone(), a, id, None, tx.clone()));
        }
        let last_locate = t0.elapsed();
        shared.stats.active_downloads.fetch_add(1, Relaxed);
        Ok(Self {
            shared,
            id,
            len,
            writer,
            fetch,
            origin,
            t0,
            sched,
            hashes,
            expected_sha: None,
            complete_peers: HashSet::new(),
            declined: HashSet::new(),
            probing,
            tasks,
            tx,
            rx,
            introduced,
            _listening: listening,
            per_download,
            watching,
            gossiping: shared.cluster.as_ref().is_some_and(|c| c.cfg.gossip),
            relocating: false,
            last_locate,
            last_directory: last_locate,
            unsourced_since: None,
            took_over: false,
            from_origin: HashSet::new(),
            budget: Budget { shared, held: 0 },
        })
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// What the scheduler says now: requests, cancels and standing queries go
    /// out, the tracker is asked again when due. Continues with when to wake
    /// (without an event) and whether the node's budget held this download back;
    /// breaks when no peer has the rest of the chunk.
    fn act(&mut self) -> ControlFlow<Outcome, (Duration, bool)> {
        let (shared, id) = (self.shared, self.id);
        let t = self.now();
        // This download's share of the node's pieces in flight: what the others
        // leave, at least one piece so that every download moves.
        self.budget.sync(self.sched.inflight());
        let (max, filling) = (shared.cfg.max_download_pieces, shared.cfg.max_download_pieces_while_filling);
        let node_budget = crate::download_budget(max, filling, shared.origin_fills.load(Relaxed));
        let room = node_budget.saturating_sub(self.budget.others()).clamp(1, self.per_download);
        self.sched.set_total(room);
        let acts = self.sched.poll(t);
        self.budget.sync(self.sched.inflight());
        let held_back = room < self.per_download;
        for (peer, pieces) in acts.requests {
            self.tasks.spawn(fetch_batch(shared.clone(), peer, id, self.len, pieces, self.tx.clone()));
        }
        for (peer, pieces) in acts.cancels {
            shared.stats.record_piece_failure("timeout");
            shared.with_peer_stats(peer, |s| s.record_failure());
            let shared = shared.clone();
            self.tasks.spawn(async move {
                if let Ok(c) = shared.conn(peer).await {
                    c.cancel(&id, &pieces).await;
                }
            });
        }
        // Standing queries to swarm peers: each answers when it has a piece
        // beyond what we know of it.
        for peer in acts.refresh {
            if self.probing.insert(peer) {
                let watch = self.watching.then(|| proto::Watch {
                    known: self.sched.known(&peer),
                    wait: WATCH_WAIT,
                    news: Some(self.sched.news_from(&peer)),
                });
                self.tasks.spawn(probe(shared.clone(), peer, id, watch, self.tx.clone()));
            }
        }
        // Pieces nobody has or is getting: ask the tracker again (it may start the
        // origin fill, or a new owner may), and give up after the stall time.
        // (Pieces this node reads from the origin after a takeover have a source.)
        let unsourced = self.probing.is_empty()
            && self.sched.unsourced_pieces().iter().any(|p| !self.from_origin.contains(p));
        if unsourced {
            self.unsourced_since.get_or_insert(t);
        } else {
            self.unsourced_since = None;
        }
        self.relocate_if_due(t, unsourced);
        // With static peers only, no tracker can name a new source: once every
        // peer has answered and none has or is getting the chunk, waiting out the
        // stall time only delays the origin read.
        let dead_end = shared.cluster.is_none() && self.probing.is_empty() && self.sched.num_peers() == 0;
        let stall = shared.cfg.piece_timeout;
        if dead_end
            || self.unsourced_since.is_some_and(|s| t.saturating_sub(s) >= stall)
            || self.sched.idle_for(t) >= IDLE_LIMIT
        {
            tracing::debug!(chunk_id = %id, unsourced = self.sched.unsourced(), "no peer has the rest of the chunk");
            return ControlFlow::Break(Err(()));
        }
        ControlFlow::Continue((self.sched.next_wake(t).min(t + RELOCATE_MIN), held_back))
    }

    /// Asks the tracker (and now and then the control plane) for peers again:
    /// often while the download knows few, at once when pieces lack a source.
    fn relocate_if_due(&mut self, t: Duration, unsourced: bool) {
        let since_locate = t.saturating_sub(self.last_locate);
        let few = knows_few(self.sched.num_peers());
        if self.relocating
            || self.shared.cluster.is_none()
            || !(since_locate >= relocate_interval(self.sched.num_peers()) || unsourced && since_locate >= RELOCATE_MIN)
        {
            return;
        }
        self.relocating = true;
        self.last_locate = t;
        let ask_directory = unsourced || t.saturating_sub(self.last_directory) >= DIRECTORY_EVERY || !self.gossiping && few;
        if ask_directory {
            self.last_directory = t;
        }
        let (shared, tx, fetch, id) = (self.shared.clone(), self.tx.clone(), self.fetch.cloned(), self.id);
        self.tasks.spawn(async move {
            let (found, read_origin) = crate::cluster::locate_all(&shared, &id, fetch.as_ref(), true, ask_directory).await;
            let _ = tx.send(Event::Located(found, read_origin));
        });
    }

    fn on_event(&mut self, ev: Event) -> ControlFlow<Outcome> {
        match ev {
            Event::Located(found, read_origin) => self.on_located(found, read_origin),
            Event::Origin(Ok((piece, data, hash))) => {
                self.from_origin.remove(&piece);
                if (piece as usize) < self.hashes.len()
                    && data.len() as u64 == self.sched.piece_len(piece)
                    && self.sched.on_other_piece(piece, self.now())
                {
                    return self.accept(piece, data, hash);
                }
                ControlFlow::Continue(())
            }
            Event::Origin(Err(e)) => {
                tracing::warn!(chunk_id = %self.id, error = %e, "reading the origin after a takeover failed");
                ControlFlow::Break(Err(()))
            }
            Event::Bitmap(peer, r) => {
                self.on_bitmap(peer, r);
                ControlFlow::Continue(())
            }
            Event::Piece { peer, piece, result } => self.on_piece(peer, piece, result),
            Event::Introduced(peer) => {
                // Only while it knows few peers, as the frequent re-locates: every
                // peer known is one more standing query and a bitmap per piece it
                // gains (in the simulator at 300 nodes, introductions without
                // this bound doubled the bitmaps sent; with it, 1.36x).
                if knows_few(self.sched.num_peers())
                    && peer != self.shared.self_addr
                    && !self.sched.knows(&peer)
                    && !self.declined.contains(&peer)
                    && self.probing.insert(peer)
                {
                    self.shared.stats.peers_introduced.fetch_add(1, Relaxed);
                    self.tasks.spawn(probe(self.shared.clone(), peer, self.id, None, self.tx.clone()));
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// The tracker's answer: new peers are probed; when it says this node owns
    /// the chunk now, the pieces nobody has or is getting are read from the
    /// origin.
    fn on_located(&mut self, found: Vec<SocketAddr>, read_origin: bool) -> ControlFlow<Outcome> {
        self.relocating = false;
        let lacking: Vec<u32> = if read_origin {
            self.sched.unsourced_pieces().into_iter().filter(|p| !self.from_origin.contains(p)).collect()
        } else {
            Vec::new()
        };
        if !lacking.is_empty() {
            let Some(origin) = self.origin else {
                tracing::debug!(chunk_id = %self.id, "this node owns the chunk now; reading the rest from the origin");
                return ControlFlow::Break(Err(()));
            };
            // This node reads the origin for the cluster now, only what no peer
            // has or is getting; the rest still comes from the swarm. Peers may
            // await its pieces: every one will come, from swarm peers that hold it
            // or from the origin, neither waiting on anyone.
            tracing::debug!(chunk_id = %self.id, pieces = lacking.len(), "this node owns the chunk now; reading what no peer has from the origin");
            self.writer.fill().set_from_peer(false);
            self.took_over = true;
            self.from_origin.extend(lacking.iter().copied());
            let (otx, mut orx) = mpsc::unbounded_channel();
            let mut asked: HashSet<u32> = lacking.iter().copied().collect();
            let read = origin.read(lacking, otx);
            let tx = self.tx.clone();
            self.tasks.spawn(async move {
                let forward = async {
                    while let Some(r) = orx.recv().await {
                        if let Ok((p, ..)) = &r {
                            asked.remove(p);
                        }
                        let _ = tx.send(Event::Origin(r));
                    }
                };
                tokio::join!(read, forward);
                // A read that ended short of a piece without saying why must not
                // leave it counted as coming.
                if !asked.is_empty() {
                    let _ = tx.send(Event::Origin(Err(format!("the origin read ended without {} pieces", asked.len()))));
                }
            });
        }
        let fresh = to_probe(found, |a| {
            *a == self.shared.self_addr || self.sched.knows(a) || self.probing.contains(a) || self.declined.contains(a)
        });
        for a in fresh {
            self.probing.insert(a);
            self.tasks.spawn(probe(self.shared.clone(), a, self.id, None, self.tx.clone()));
        }
        ControlFlow::Continue(())
    }

    /// A peer's bitmap (or why there is none): the peer is a source of what it
    /// has, or no source at all.
    fn on_bitmap(&mut self, peer: SocketAddr, r: Result<Bitmap, P2pError>) {
        self.probing.remove(&peer);
        match r {
            Ok(bm) if bm.chunk_len == self.len && u64::from(bm.piece_size) == PIECE_SIZE => {
                let k = self.shared.cfg.selection_k.max(1);
                let in_use = self.complete_peers.iter().filter(|p| self.sched.knows(p)).count();
                if bm.complete && !self.complete_peers.contains(&peer) && in_use >= k && !self.sched.knows(&peer) {
                    // K complete holders are enough; the rest stay unasked (a
                    // swarm peer we know that completed stays, as a seed).
                    self.declined.insert(peer);
                    return;
                }
                let source = if bm.complete {
                    self.expected_sha.get_or_insert(bm.sha256);
                    self.complete_peers.insert(peer);
                    Source::Complete
                } else if bm.swarm || self.took_over {
                    // After a takeover this node's fill makes requests wait, so it
                    // waits on no peer: another origin fill counts for the pieces
                    // it has (see PROTOCOL.md, "No wait cycle").
                    Source::Swarm
                } else {
                    Source::Origin
                };
                let now = self.now();
                self.sched.set_peer(peer, source, &bm.have, now);
            }
            _ => self.drop_peer(&peer),
        }
    }

    /// A piece from a peer, or why it did not come.
    fn on_piece(&mut self, peer: SocketAddr, piece: u32, result: Result<(Bytes, [u8; 32]), P2pError>) -> ControlFlow<Outcome> {
        let shared = self.shared;
        match result {
            Ok((data, hash)) if data.len() as u64 == self.sched.piece_len(piece) => {
                let bytes = data.len() as u64;
                let now = self.now();
                if !self.sched.on_piece(peer, piece, now) {
                    return ControlFlow::Continue(());
                }
                shared.stats.bytes_down.fetch_add(bytes, Relaxed);
                shared.stats.pieces_down.fetch_add(1, Relaxed);
                // The peer's score across downloads takes the rate this download
                // measured (a zero duration would read as infinite throughput).
                let rate = self.sched.rate(&peer);
                if rate > 0.0 {
                    let secs = bytes as f64 / rate;
                    shared.with_peer_stats(peer, |s| s.record_success(bytes, secs, 0.0));
                }
                self.accept(piece, data, hash)
            }
            other => {
                let (why, reason) = match &other {
                    Ok(_) => (Failure::Broken, "bad_length"),
                    Err(P2pError::Refused(r)) if r.starts_with("deferred") => (Failure::Deferred, "deferred"),
                    Err(P2pError::Refused(r)) if r.starts_with("busy") => (Failure::Busy, "busy"),
                    Err(P2pError::Refused(r)) if r.starts_with("missing") => (Failure::Missing, "missing"),
                    Err(P2pError::Refused(_)) => (Failure::Broken, "refused"),
                    Err(P2pError::Codec(_)) => (Failure::Broken, "corrupt"),
                    Err(_) => (Failure::Broken, "connection"),
                };
                shared.stats.record_piece_failure(reason);
                if why == Failure::Broken {
                    shared.with_peer_stats(peer, |s| s.record_failure());
                }
                if reason == "connection" {
                    // The peer is gone (it died or closed on us): it is no source
                    // any more; the tracker names it again if it comes back.
                    self.drop_peer(&peer);
                    return ControlFlow::Continue(());
                }
                tracing::trace!(%peer, piece, reason, "piece failed, rescheduling");
                let now = self.now();
                self.sched.on_failure(peer, piece, why, now);
                ControlFlow::Continue(())
            }
        }
    }

    /// A peer is no source any more. A complete peer in use gone: with fewer than
    /// K left, the complete holders declined before are asked again (with static
    /// peers no tracker would name them).
    fn drop_peer(&mut self, peer: &SocketAddr) {
        self.sched.remove_peer(peer);
        let k = self.shared.cfg.selection_k.max(1);
        if self.complete_peers.iter().filter(|p| self.sched.knows(p)).count() < k {
            for a in self.declined.drain() {
                if self.probing.insert(a) {
                    self.tasks.spawn(probe(self.shared.clone(), a, self.id, None, self.tx.clone()));
                }
            }
        }
    }

    /// A new verified piece into the fill; breaks when it was the last (or the
    /// whole chunk does not match its SHA-256, or the fill refused it).
    fn accept(&mut self, piece: u32, data: Bytes, hash: [u8; 32]) -> ControlFlow<Outcome> {
        self.hashes[piece as usize] = Some(hash);
        if self.sched.done()
            && let Some(want) = self.expected_sha
        {
            // The chunk hash follows from the verified piece hashes.
            let all: Vec<[u8; 32]> = self.hashes.iter().map(|h| h.unwrap_or_default()).collect();
            if eliop2p_cache::chunk_root(&all) != want {
                self.shared.stats.verification_failures.fetch_add(1, Relaxed);
                tracing::warn!(chunk_id = %self.id, "chunk from peers does not match its SHA-256; discarding");
                return ControlFlow::Break(Err(()));
            }
        }
        if self.writer.put_piece(piece, data, hash).is_err() {
            return ControlFlow::Break(Err(()));
        }
        if self.sched.done() {
            return ControlFlow::Break(Ok(()));
        }
        ControlFlow::Continue(())
    }

    /// The complete peers used, or how much of the chunk is in the fill.
    fn finish(mut self, outcome: Outcome) -> Result<usize, Incomplete> {
        self.shared.stats.active_downloads.fetch_sub(1, Relaxed);
        self.budget.sync(0);
        self.tasks.abort_all();
        match outcome {
            Ok(()) => Ok(self.complete_peers.len()),
            // The rest comes from elsewhere; the pieces held beyond the verified
            // prefix stay in the fill (served to peers, not read again).
            Err(()) => Err(Incomplete { delivered: self.writer.received() / PIECE_SIZE * PIECE_SIZE }),
        }
    }
}

/// This download's part of the node-wide count of pieces in flight
/// (`P2pShared::pieces_in_flight`), given back when the download ends.
struct Budget<'a> {
    shared: &'a Arc<P2pShared>,
    held: usize,
}

impl Budget<'_> {
    fn sync(&mut self, inflight: usize) {
        if inflight > self.held {
            self.shared.pieces_in_flight.fetch_add(inflight - self.held, Relaxed);
        } else if inflight < self.held {
            self.shared.pieces_in_flight.fetch_sub(self.held - inflight, Relaxed);
            self.shared.pieces_freed.notify_waiters();
        }
        self.held = inflight;
    }

    /// Pieces in flight for the node's other downloads.
    fn others(&self) -> usize {
        self.shared.pieces_in_flight.load(Relaxed).saturating_sub(self.held)
    }
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        self.sync(0);
    }
}

/// A peer's bitmap of the chunk: at once, or (`watch`: what we know of it) once it
/// has more.
async fn probe(
    shared: Arc<P2pShared>,
    addr: SocketAddr,
    id: ChunkId,
    watch: Option<proto::Watch>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let r = async {
        let conn = shared.conn(addr).await?;
        let limit = shared.cfg.piece_timeout + watch.as_ref().map_or(Duration::ZERO, |w| w.wait);
        let f = tokio::time::timeout(limit, conn.bitmap(&id, watch.as_ref()))
            .await
            .map_err(|_| P2pError::Timeout)??;
        if f.message_type != MessageType::Bitmap {
            return Err(P2pError::Refused(proto::parse_error(&f.data).1));
        }
        if watch.is_some() && f.flags & FLAG_WATCHED == 0 {
            // The peer answered at once (a node without standing queries, or its
            // bound on them reached): it is polled at the old pace instead.
            tokio::time::sleep(POLL_FALLBACK).await;
        }
        Bitmap::decode(&f.data, proto::MAX_PIECES).ok_or_else(|| P2pError::Protocol("bad bitmap".into()))
    }
    .await;
    let _ = tx.send(Event::Bitmap(addr, r));
}

/// Requests `pieces` from one peer in one `PieceRequest` and reports each piece as
/// it arrives or fails. Deadlines are the scheduler's; this task only bounds how
/// long it stays around for a peer that went silent.
async fn fetch_batch(
    shared: Arc<P2pShared>,
    addr: SocketAddr,
    id: ChunkId,
    chunk_len: u64,
    pieces: Vec<u32>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let report = |piece: u32, result: Result<(Bytes, [u8; 32]), P2pError>| {
        let _ = tx.send(Event::Piece {
            peer: addr,
            piece,
            result,
        });
    };
    let conn: Arc<PeerConn> = match shared.conn(addr).await {
        Ok(c) => c,
        Err(_) => {
            for p in pieces {
                report(p, Err(P2pError::Closed));
            }
            return;
        }
    };
    let rxs = match conn.pieces(&id, chunk_len, &pieces).await {
        Ok(r) => r,
        Err(_) => {
            for p in pieces {
                report(p, Err(P2pError::Closed));
            }
            return;
        }
    };
    let give_up = shared.cfg.piece_timeout * 4;
    for (i, rx) in rxs.into_iter().enumerate() {
        let piece = pieces[i];
        let frame = match tokio::time::timeout(give_up, rx).await {
            Err(_) => {
                conn.cancel(&id, &pieces[i..]).await;
                for p in &pieces[i..] {
                    report(*p, Err(P2pError::Timeout));
                }
                return;
            }
            // Withdrawn by our own `Cancel` (the scheduler gave the piece up on
            // this peer) while the connection lives: nothing to report.
            Ok(Err(_)) if !conn.is_closed() => continue,
            Ok(Err(_)) => Err(P2pError::Closed),
            Ok(Ok(r)) => r,
        };
        let result = match frame {
            Ok(f) if f.message_type == MessageType::PieceData => {
                // The connection's reader left the checksum to us (so pieces of
                // one connection are hashed on several threads).
                match f.verify() {
                    Ok(()) => {
                        shared.download_limit.acquire(f.data.len() as u64).await;
                        Ok((f.data, f.sha256))
                    }
                    Err(e) => {
                        shared.stats.verification_failures.fetch_add(1, Relaxed);
                        // What a hunt needs: how long, how much of it zeros (a
                        // buffer never written), the claimed hash. (A mismatch
                        // with len=0 on the bed was a finished peer-fed fill
                        // serving its dropped segment list; `Fill::piece_now`.)
                        tracing::warn!(
                            peer = %addr,
                            piece,
                            len = f.data.len(),
                            zero_bytes = f.data.iter().filter(|b| **b == 0).count(),
                            claimed = ?&f.sha256[..8],
                            "piece does not match its SHA-256"
                        );
                        Err(P2pError::Codec(e))
                    }
                }
            }
            Ok(f) => {
                let (reason, msg) = proto::parse_error(&f.data);
                Err(P2pError::Refused(match reason {
                    Reason::Busy if msg.starts_with("deferred") => msg,
                    Reason::Busy | Reason::Timeout => format!("busy: {msg}"),
                    Reason::NotFound => format!("missing: {msg}"),
                    _ => msg,
                }))
            }
            Err(e) => Err(e),
        };
        report(piece, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer naming thousands of holders (an owner's index, a control plane
    /// asked without a limit) is probed at most `MAX_NEW_PROBES` at a time, a
    /// different random few per asker; before, every holder was probed at every
    /// re-locate.
    #[test]
    fn a_long_answer_is_probed_a_random_few_at_a_time() {
        let addr = |i: u32| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000));
        let found: Vec<SocketAddr> = (0..5000).map(addr).collect();
        let known = addr(7);
        let mut named = HashSet::new();
        for _ in 0..50 {
            let p = to_probe(found.clone(), |a| *a == known);
            assert_eq!(p.len(), MAX_NEW_PROBES);
            assert!(!p.contains(&known));
            assert_eq!(p.iter().collect::<HashSet<_>>().len(), p.len(), "no peer twice");
            named.extend(p);
        }
        assert!(named.len() > 1000, "askers pick different holders: {} named", named.len());
        // A short answer is probed whole, duplicates once.
        let short = vec![addr(1), addr(2), addr(1), known];
        let mut p = to_probe(short, |a| *a == known);
        p.sort();
        assert_eq!(p, vec![addr(1), addr(2)]);
    }
}
