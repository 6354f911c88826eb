//! The P2P server: authenticates peers and serves bitmaps and pieces of chunks held
//! in memory, on disk, or still filling (a piece not there yet is awaited).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use eliop2p_cache::disk::PIECE_SIZE;
use eliop2p_cache::{FillReader, Held};
use eliop2p_core::ChunkId;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{FLAG_FINAL, Frame, MessageType, Parts};
use crate::conn::{FLAG_PIECE, FLAG_WATCHED, FrameReader, HANDSHAKE_TIMEOUT, Rd, Wr, accept_handshake, split_tcp, split_tls};
use crate::proto::{self, Bitmap, Reason};
use crate::{P2pError, P2pShared, sockopt};

pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<P2pShared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.cfg.max_connections.max(1)));
    let per_ip: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "p2p accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // Connection caps hold before any byte is read: the listener's total
        // (`p2p.max_connections`) and per source address.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.stats.connections_refused.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "p2p connection refused: p2p.max_connections reached");
            continue;
        };
        let ip = peer.ip();
        {
            let mut m = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(ip).or_default();
            if *n >= MAX_CONNECTIONS_PER_ADDRESS {
                drop(m);
                shared.stats.connections_refused.fetch_add(1, Relaxed);
                tracing::debug!(%peer, "p2p connection refused: too many from this address");
                continue;
            }
            *n += 1;
        }
        let per_ip = per_ip.clone();
        let shared = shared.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let _count = ConnCount { per_ip, ip };
            tokio::select! {
                r = serve_conn(stream, shared.clone()) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "p2p connection ended");
                    }
                }
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Pieces one connection may have asked and not yet been answered.
const MAX_QUEUED_PIECES: usize = 256;
/// Piece requests of one connection served at once.
const MAX_REQUESTS_IN_PROGRESS: usize = 32;

/// A connection's asked-and-unanswered pieces.
#[derive(Default)]
struct PieceQueue {
    queued: usize,
    /// Asked pieces (a piece asked twice counts twice).
    pending: HashMap<(ChunkId, u32), u32>,
    /// Pending pieces the peer withdrew.
    cancelled: std::collections::HashSet<(ChunkId, u32)>,
}

impl PieceQueue {
    /// Whether the piece was withdrawn (the withdrawal is used up).
    fn take(&mut self, id: ChunkId, p: u32) -> bool {
        self.cancelled.remove(&(id, p))
    }

    /// The piece was answered (or withdrawn).
    fn done(&mut self, id: ChunkId, p: u32) {
        self.queued = self.queued.saturating_sub(1);
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.pending.entry((id, p)) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
                self.cancelled.remove(&(id, p));
            }
        }
    }
}

/// Connections one source address may hold open to the P2P listener: a peer needs
/// one or two; more is a flood.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// A connection's place in the per-address count, given back when it closes.
struct ConnCount {
    per_ip: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// TLS first (when the node has certificates): the peer's certificate is of the
/// cluster CA and valid, and the identities it names. During a rollout a peer
/// whose first byte is not a TLS record speaks the plain protocol.
async fn accept_tls(stream: TcpStream, shared: &P2pShared) -> Result<(Rd, Wr, Option<Vec<String>>), P2pError> {
    let Some(tls) = &shared.tls else {
        let (rd, wr) = split_tcp(stream);
        return Ok((rd, wr, None));
    };
    if tls.rollout() {
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first))
            .await
            .map_err(|_| P2pError::Timeout)??;
        // 0x16: a TLS handshake record; frames start with the magic "CHKP".
        if n == 1 && first[0] != 0x16 {
            let (rd, wr) = split_tcp(stream);
            return Ok((rd, wr, None));
        }
    }
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(crate::conn::tls_transport(stream))).await;
    let s = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = crate::tls::reason(&e);
            tls.failed(reason);
            tracing::warn!(reason, error = %e, "refused a peer's TLS handshake");
            return Err(P2pError::Tls(format!("{reason}: {e}")));
        }
        Err(_) => {
            tls.failed("timeout");
            return Err(P2pError::Timeout);
        }
    };
    let ids = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(eliop2p_core::identity::node_ids)
        .unwrap_or_default();
    let (rd, wr) = split_tls(s);
    Ok((rd, wr, Some(ids)))
}

async fn serve_conn(stream: TcpStream, shared: Arc<P2pShared>) -> Result<(), P2pError> {
    stream.set_nodelay(true)?;
    sockopt::bound_unsent(&stream);
    sockopt::set_congestion(&stream, shared.cfg.tcp_congestion.as_deref());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (mut reader, wr, peer_id) = accept_peer(stream, &shared).await?;
    let (tx, ctl_rx, data_rx) = Out::new();
    // The socket stays open while `wr` lives, and `Writer` drops `paced` first.
    let paced = shared.pacer.as_ref().map(|p| p.register(fd));
    let writer = tokio::spawn(write_frames(Writer { paced, wr }, ctl_rx, data_rx));
    let conn = Conn::new(shared, tx, peer_id);
    while let Some(f) = reader.next().await? {
        if matches!(
            f.message_type,
            MessageType::NodeJoin
                | MessageType::NodeLeave
                | MessageType::ChunkAnnounce
                | MessageType::ChunkRemove
                | MessageType::StateSync
                | MessageType::Ping
                | MessageType::PingReq
                | MessageType::Ack
                | MessageType::Updates
        ) {
            crate::cluster::on_gossip(&conn.shared, &f, &conn.peer_id);
            continue;
        }
        let Ok(raw): Result<[u8; 32], _> = f.chunk_id[..].try_into() else {
            let payload = proto::error_payload(Reason::BadRequest, "chunk id must be 32 bytes");
            send(&conn.tx, Frame::new(MessageType::Error, &f.chunk_id, payload, f.sequence_number, 0)).await;
            continue;
        };
        let id = ChunkId::from_bytes(raw);
        match f.message_type {
            MessageType::HaveQuery => conn.on_have_query(&f, id).await,
            MessageType::PieceRequest => {
                if !conn.on_piece_request(&f, id).await {
                    break;
                }
            }
            MessageType::Locate => {
                let mut reply = crate::cluster::on_locate(&conn.shared, &id, &f.data, &conn.peer_id);
                reply.sequence_number = f.sequence_number;
                reply.flags = FLAG_FINAL;
                send(&conn.tx, reply).await;
            }
            MessageType::Cancel => conn.on_cancel(&f, id),
            other => {
                tracing::debug!(message_type = ?other, "unexpected message on a p2p data connection");
            }
        }
    }
    drop(conn);
    let _ = writer.await;
    Ok(())
}

/// TLS (when configured) and the handshake; a failure of either is counted.
async fn accept_peer(stream: TcpStream, shared: &P2pShared) -> Result<(FrameReader, Wr, Arc<String>), P2pError> {
    let (rd, mut wr, cert_ids) = match accept_tls(stream, shared).await {
        Ok(x) => x,
        Err(e) => {
            shared.stats.handshake_failures.fetch_add(1, Relaxed);
            return Err(e);
        }
    };
    let mut reader = FrameReader::new(rd, shared.limits);
    match accept_handshake(&mut reader, &mut wr, &shared.secret, cert_ids.as_deref()).await {
        Ok(id) => Ok((reader, wr, Arc::new(id))),
        Err(e) => {
            shared.stats.handshake_failures.fetch_add(1, Relaxed);
            if let (P2pError::WrongIdentity { .. }, Some(tls)) = (&e, &shared.tls) {
                tls.failed("wrong_identity");
                tracing::warn!(error = %e, "refused a peer");
            }
            Err(e)
        }
    }
}

/// The connection's one writer; requests are served concurrently and their
/// frames interleave on the connection (pipelining). A piece's upload slot
/// travels with its frame and is released only once the frame is on the socket,
/// so the slots bound the bytes this node is sending. Two lanes: a frame without
/// a piece (a bitmap answering a standing query, a refusal, a locate answer) goes
/// out before the pieces queued on the connection, between two pieces. Behind
/// them it waited up to six pieces at the connection's share of the uplink
/// (hundreds of ms on a busy swarm), and each hop of a piece through the swarm
/// pays a have-announcement's delay.
async fn write_frames(mut w: Writer, mut ctl_rx: mpsc::Receiver<Parts>, mut data_rx: mpsc::Receiver<(Parts, UploadSlot)>) {
    loop {
        let (mut frame, slot): (Parts, Option<UploadSlot>) = tokio::select! {
            biased;
            Some(f) = ctl_rx.recv() => (f, None),
            Some((f, slot)) = data_rx.recv() => (f, Some(slot)),
            else => break,
        };
        // A piece's frame takes its share of the upload rate (`pace`).
        let paced = w.paced.as_ref().filter(|_| slot.is_some());
        if let Some(p) = paced {
            p.starting();
        }
        // Vectored writes of the frame's buffers (header, piece, trailer).
        // Flushed: TLS keeps records in its buffer until then (a no-op on TCP).
        let failed = w.wr.write_all_buf(&mut frame).await.is_err() || w.wr.flush().await.is_err();
        if let Some(p) = paced {
            p.written();
        }
        if failed {
            break;
        }
    }
}

/// A connection's write half and its socket's pacing. Fields drop in order:
/// the socket leaves the pacer before the half that keeps it open goes.
struct Writer {
    paced: Option<crate::pace::Paced>,
    wr: Wr,
}

/// What one peer connection shares between its reader and the tasks that answer
/// its requests (each task holds a clone).
#[derive(Clone)]
struct Conn {
    shared: Arc<P2pShared>,
    tx: Out,
    peer_id: Arc<String>,
    /// Pieces asked on this connection and not yet answered (at most
    /// MAX_QUEUED_PIECES; beyond, a piece is answered busy at once), and those of
    /// them the peer withdrew: a Cancel names only queued pieces, so neither
    /// grows with what a peer sends.
    queue: Arc<std::sync::Mutex<PieceQueue>>,
    requests: Arc<tokio::sync::Semaphore>,
    /// One connection holds at most three quarters of the upload slots: a peer
    /// that stops reading keeps the slots of the frames it does not take, and
    /// without this bound one such peer starved every other one ("upload slots
    /// full" for all, found by `piece_requests_never_read_hold_bounded_memory`).
    conn_slots: Arc<tokio::sync::Semaphore>,
    watches: Arc<tokio::sync::Semaphore>,
}

impl Conn {
    fn new(shared: Arc<P2pShared>, tx: Out, peer_id: Arc<String>) -> Self {
        let slots = shared.cfg.max_uploads.max(1);
        Self {
            shared,
            tx,
            peer_id,
            queue: Arc::default(),
            requests: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_PROGRESS)),
            conn_slots: Arc::new(tokio::sync::Semaphore::new((slots - slots / 4).max(1))),
            watches: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES_PER_CONN)),
        }
    }

    /// A bitmap query: answered now, or (a standing query) once this node has
    /// news for the asker (a piece of its news set).
    async fn on_have_query(&self, f: &Frame, id: ChunkId) {
        crate::introduce::on_query(&self.shared, &id, &self.peer_id);
        match proto::decode_watch(&f.data, proto::MAX_PIECES) {
            // A standing query waits on a task of its own (bounded per
            // connection); past the bound it is answered at once, without
            // `FLAG_WATCHED`, and the asker polls.
            Some(Some(watch)) => match self.watches.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (shared, tx, seq) = (self.shared.clone(), self.tx.clone(), f.sequence_number);
                    tokio::spawn(async move {
                        let _permit = permit;
                        let reply = watched_bitmap(&shared, &id, &watch, seq).await;
                        send(&tx, reply).await;
                    });
                }
                Err(_) => {
                    send(&self.tx, have_reply(&self.shared, &id, f.sequence_number, 0)).await;
                }
            },
            Some(None) => {
                send(&self.tx, have_reply(&self.shared, &id, f.sequence_number, 0)).await;
            }
            None => {
                let msg = "have query data must be empty or known u32 | wait_ms u32 [| news bits]";
                let payload = proto::error_payload(Reason::BadRequest, msg);
                let reply = Frame::new(MessageType::Error, id.as_bytes(), payload, f.sequence_number, FLAG_FINAL);
                send(&self.tx, reply).await;
            }
        }
    }

    /// A piece request: its pieces are queued (past the bound, answered busy) and
    /// served in order by a task of their own. False when the connection is done.
    async fn on_piece_request(&self, f: &Frame, id: ChunkId) -> bool {
        let Some(pieces) = proto::decode_pieces(&f.data, 4096) else {
            let payload = proto::error_payload(Reason::BadRequest, "bad piece list");
            send(&self.tx, Frame::new(MessageType::Error, id.as_bytes(), payload, 0, FLAG_PIECE)).await;
            return true;
        };
        let accepted: Vec<bool> = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            pieces
                .iter()
                .map(|&p| {
                    let room = q.queued < MAX_QUEUED_PIECES;
                    if room {
                        q.queued += 1;
                        *q.pending.entry((id, p)).or_default() += 1;
                    }
                    room
                })
                .collect()
        };
        // Requests in progress are bounded too: past the bound this loop stops
        // reading, and TCP pushes back on the peer.
        let Ok(in_progress) = self.requests.clone().acquire_owned().await else {
            return false;
        };
        let conn = self.clone();
        tokio::spawn(async move {
            let _in_progress = in_progress;
            conn.serve_pieces(id, pieces, accepted).await;
        });
        true
    }

    /// The peer withdraws pieces it asked on this connection and are still queued.
    fn on_cancel(&self, f: &Frame, id: ChunkId) {
        if let Some(pieces) = proto::decode_pieces(&f.data, 4096) {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            for p in pieces {
                if q.pending.contains_key(&(id, p)) {
                    q.cancelled.insert((id, p));
                }
            }
        }
    }
}

impl Conn {
    /// Each piece in turn, as a piece frame with its upload slot or a refusal;
    /// a piece the peer withdrew meanwhile is skipped.
    async fn serve_pieces(&self, id: ChunkId, pieces: Vec<u32>, accepted: Vec<bool>) {
        let shared = &self.shared;
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            let flags = if i + 1 == n { FLAG_FINAL } else { 0 };
            if accepted[i] {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.take(id, p) {
                    q.done(id, p);
                    continue; // withdrawn by the peer
                }
            }
            let served = if !accepted[i] {
                Err((Reason::Busy, "busy: too many pieces queued on this connection".to_owned()))
            } else {
                serve_piece(shared, &self.conn_slots, &id, p).await
            };
            let (frame, slot) = match served {
                Ok((data, hash, slot)) => {
                    let len: usize = data.iter().map(Bytes::len).sum();
                    shared.upload_limit.acquire(len as u64).await;
                    shared.stats.bytes_up.fetch_add(len as u64, Relaxed);
                    shared.stats.add_peer_bytes(&self.peer_id, "sent", len as u64);
                    shared.stats.pieces_up.fetch_add(1, Relaxed);
                    let hash = hash.unwrap_or_else(|| {
                        let mut h = Sha256::new();
                        data.iter().for_each(|d| h.update(d));
                        h.finalize().into()
                    });
                    (Parts::frame(MessageType::PieceData, id.as_bytes(), data, hash, p, flags), Some(slot))
                }
                Err((reason, msg)) => {
                    let payload = proto::error_payload(reason, &msg);
                    (Frame::new(MessageType::Error, id.as_bytes(), payload, p, flags | FLAG_PIECE).to_parts(), None)
                }
            };
            let sent = self.tx.send_parts(frame, slot).await;
            if accepted[i] {
                self.queue.lock().unwrap_or_else(|e| e.into_inner()).done(id, p);
            }
            if !sent {
                break;
            }
        }
    }
}

/// The two lanes of a connection's writer: frames without a piece, and pieces
/// with their upload slots.
#[derive(Clone)]
struct Out {
    ctl: mpsc::Sender<Parts>,
    data: mpsc::Sender<(Parts, UploadSlot)>,
}

type Lanes = (Out, mpsc::Receiver<Parts>, mpsc::Receiver<(Parts, UploadSlot)>);

impl Out {
    fn new() -> Lanes {
        let (ctl, ctl_rx) = mpsc::channel(32);
        let (data, data_rx) = mpsc::channel(32);
        (Out { ctl, data }, ctl_rx, data_rx)
    }

    /// Queues a frame, in the piece lane when it carries a piece (`slot`).
    async fn send_parts(&self, frame: Parts, slot: Option<UploadSlot>) -> bool {
        match slot {
            Some(slot) => self.data.send((frame, slot)).await.is_ok(),
            None => self.ctl.send(frame).await.is_ok(),
        }
    }
}

async fn send(tx: &Out, f: Frame) -> bool {
    tx.send_parts(f.to_parts(), None).await
}

/// Standing have queries one connection may hold at once (a downloader holds one
/// per chunk it downloads from this node).
const MAX_WATCHES_PER_CONN: usize = 256;

/// The answer to a have query: the bitmap, or not found.
fn have_reply(shared: &P2pShared, id: &ChunkId, seq: u32, flags: u8) -> Frame {
    shared.stats.bitmaps_sent.fetch_add(1, Relaxed);
    match bitmap(shared, id) {
        Some(bm) => Frame::new(MessageType::Bitmap, id.as_bytes(), bm.encode(), seq, FLAG_FINAL | flags),
        None => Frame::new(
            MessageType::Error,
            id.as_bytes(),
            proto::error_payload(Reason::NotFound, "chunk not held"),
            seq,
            FLAG_FINAL,
        ),
    }
}

/// A standing have query: answered once this node's fill of the chunk (from
/// peers or from the origin) has news for the asker (`Watch::answered_by`: a
/// piece it lacks and does not know we have), once it is no fill any more
/// (complete, failed, gone), or after the query's wait. It never waits on a
/// peer: the fill it watches moves on its own downloads or origin reads, so no
/// wait cycle forms.
async fn watched_bitmap(shared: &P2pShared, id: &ChunkId, watch: &proto::Watch, seq: u32) -> Frame {
    let until = tokio::time::Instant::now() + watch.wait;
    loop {
        let Some(Held::Filling(fill)) = shared.cache.peek(id) else { break };
        // Subscribed before the pieces are read, so no piece slips in between.
        let mut changes = fill.changes();
        if watch.answered_by(&fill.have_pieces()) {
            break;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    shared.stats.bitmaps_watched.fetch_add(1, Relaxed);
    have_reply(shared, id, seq, FLAG_WATCHED)
}

fn bitmap(shared: &P2pShared, id: &ChunkId) -> Option<Bitmap> {
    let ps = PIECE_SIZE as u32;
    Some(match shared.cache.peek(id)? {
        Held::Memory(c) => Bitmap {
            chunk_len: c.data.len(),
            piece_size: ps,
            complete: true,
            swarm: false,
            sha256: c.sha256,
            have: vec![true; Bitmap::num_pieces(c.data.len(), ps)],
        },
        Held::Disk(d) => Bitmap {
            chunk_len: d.len,
            piece_size: ps,
            complete: true,
            swarm: false,
            sha256: d.sha256,
            have: vec![true; Bitmap::num_pieces(d.len, ps)],
        },
        // Every fill offers the verified pieces it has, in any order: its prefix
        // and the pieces put ahead of it (by peers, or by an origin fill's later
        // ranges, which a node that dies mid-fill so leaves in the swarm). Only a
        // fill from the origin awaits the rest; one fed by peers (`swarm`) awaits
        // none, so two nodes never wait on each other.
        Held::Filling(f) => Bitmap {
            chunk_len: f.expected_len(),
            piece_size: ps,
            complete: false,
            swarm: f.from_peer(),
            sha256: [0; 32],
            have: f.have_pieces(),
        },
    })
}

/// How long a piece request waits for an upload slot before it is answered busy
/// (the simulator waits as long).
pub const SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// A node-wide upload slot and one of its connection's share, held until the
/// piece's frame is on the socket.
struct UploadSlot {
    _node: OwnedSemaphorePermit,
    _conn: OwnedSemaphorePermit,
}

type Refusal = (Reason, String);

/// One piece's bytes from wherever this node holds the chunk, with the upload slot
/// it is sent under. A piece of a fill from the origin that is not there yet is
/// awaited (up to the piece timeout) before a slot is taken; a fill fed by peers
/// answers only with what it has. No slot within `SLOT_WAIT`: `Busy`, so the asker
/// takes the piece from another peer instead of queueing behind this uplink.
async fn serve_piece(
    shared: &P2pShared,
    conn_slots: &Arc<tokio::sync::Semaphore>,
    id: &ChunkId,
    piece: u32,
) -> Result<(Vec<Bytes>, Option<[u8; 32]>, UploadSlot), Refusal> {
    let held = shared
        .cache
        .peek(id)
        .ok_or((Reason::NotFound, "chunk not held".to_owned()))?;
    let (start, end) = admit(shared, id, piece, &held)?;
    let (data, hash, slot) = read_piece(shared, conn_slots, held, piece, start, end).await?;
    // Never a frame whose bytes fall short of the piece: its hash would make
    // the asker count the holder as corrupt, and nothing here is.
    let got: u64 = data.iter().map(|b| b.len() as u64).sum();
    if got != end - start {
        return Err((Reason::Internal, format!("piece {piece}: {got} of {} bytes at hand", end - start)));
    }
    Ok((data, hash, slot))
}

/// Whether this node serves `piece` of `held` now, and its byte range: a piece
/// within the chunk, not refused to keep slots for this node's origin fills, and
/// (when this node seeds the chunk) not deferred to the swarm by the seeding rule.
fn admit(shared: &P2pShared, id: &ChunkId, piece: u32, held: &Held) -> Result<(u64, u64), Refusal> {
    let len = match held {
        Held::Memory(c) => c.data.len(),
        Held::Disk(d) => d.len,
        Held::Filling(f) => f.expected_len(),
    };
    let start = u64::from(piece) * PIECE_SIZE;
    if start >= len {
        return Err((
            Reason::BadRequest,
            format!("piece {piece} beyond the chunk"),
        ));
    }
    let end = (start + PIECE_SIZE).min(len);
    let seeding = !matches!(held, Held::Filling(f) if f.from_peer());
    if !seeding
        && crate::keeps_slots_for_fills(
            shared.origin_fills.load(std::sync::atomic::Ordering::Relaxed) > 0,
            shared.upload_slots.available_permits(),
            crate::fill_reserved_slots(shared.cfg.max_uploads),
        )
    {
        return Err((Reason::Busy, "upload slots kept for this node's origin fills".to_owned()));
    }
    if seeding && !shared.seed_copy(id, piece) {
        return Err((Reason::Busy, "deferred: sent to the swarm already".to_owned()));
    }
    Ok((start, end))
}

/// An upload slot and one of the connection's: one that frees within
/// `SLOT_WAIT` is taken (on a fast link slots turn over in microseconds; a lone
/// downloader is never turned away); beyond that the asker is better served by
/// another peer.
async fn take_slot(shared: &P2pShared, conn_slots: &Arc<tokio::sync::Semaphore>) -> Result<UploadSlot, Refusal> {
    let both = async {
        let conn = conn_slots.clone().acquire_owned().await.ok()?;
        let node = shared.upload_slots.clone().acquire_owned().await.ok()?;
        Some(UploadSlot { _node: node, _conn: conn })
    };
    match tokio::time::timeout(SLOT_WAIT, both).await {
        Ok(Some(s)) => Ok(s),
        _ => Err((Reason::Busy, "upload slots full".to_owned())),
    }
}

/// The bytes of `start..end` (piece `piece`) of `held`, with the piece's hash
/// and the slot taken to send them.
async fn read_piece(
    shared: &P2pShared,
    conn_slots: &Arc<tokio::sync::Semaphore>,
    held: Held,
    piece: u32,
    start: u64,
    end: u64,
) -> Result<(Vec<Bytes>, Option<[u8; 32]>, UploadSlot), Refusal> {
    match held {
        // Memory chunks carry their piece hashes: no hashing to serve them.
        // The piece's bytes as the chunk's buffers hold them, without a copy.
        Held::Memory(c) => {
            let slot = take_slot(shared, conn_slots).await?;
            Ok((
                c.data.slices(start, end).collect(),
                c.piece_hashes.get(piece as usize).copied(),
                slot,
            ))
        }
        // The header's piece hash: the read was checked against it, so the
        // piece is not hashed a second time to frame it.
        Held::Disk(d) => {
            let slot = take_slot(shared, conn_slots).await?;
            d.read_range(start, end)
                .await
                .map(|b| (vec![b], d.piece_hash(piece), slot))
                // A rotten piece (the chunk is deleted) or a failed read: the
                // holder failed, which the asker counts against it.
                .map_err(|e| (Reason::Internal, e.to_string()))
        }
        // A piece the fill has is sent now, whichever way it came; a fill fed by
        // peers awaits no other.
        Held::Filling(f) if let Some((data, hash)) = f.piece_now(piece) => Ok((data, Some(hash), take_slot(shared, conn_slots).await?)),
        Held::Filling(f) if f.from_peer() => Err((Reason::NotFound, "piece not here yet".to_owned())),
        Held::Filling(f) => {
            let mut reader = FillReader::new(f.clone(), start, end);
            let mut out = Vec::new();
            let read = async {
                while let Some(b) = reader.next().await {
                    out.push(b.map_err(|e| (Reason::NotFound, e.to_string()))?);
                }
                Ok::<_, Refusal>(())
            };
            match tokio::time::timeout(shared.cfg.piece_timeout, read).await {
                // The writer hashed the piece as it arrived.
                Ok(r) => {
                    r?;
                    Ok((out, f.piece_hash(piece), take_slot(shared, conn_slots).await?))
                }
                Err(_) => Err((Reason::Timeout, "piece not filled in time".to_owned())),
            }
        }
    }
}
