//! Downloading one chunk from several peers at once: bitmaps, K-selection, pieces in
//! parallel (rarest first, endgame duplicates of overdue pieces), per-piece
//! verification and 1 MiB
//! checkpoints. Pieces are handed to the fill writer in order as soon as they are
//! contiguous, so the HTTP client streams while the download runs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eliop2p_cache::FillWriter;
use eliop2p_cache::disk::PIECE_SIZE;
use eliop2p_core::ChunkId;
use tokio::task::JoinSet;

use crate::cluster::FetchRequest;
use crate::codec::MessageType;
use crate::conn::PeerConn;
use crate::proto::{self, Bitmap};
use crate::score::{self, PeerStats};
use crate::{P2pError, P2pShared};

/// Pieces in flight per peer.
const PER_PEER_INFLIGHT: usize = 8;
/// Pieces asked for in one request (served back to back on the connection).
const BATCH: usize = 4;
/// Endgame: a piece in flight is asked of a second peer only once it has waited
/// this many times the download's typical piece time (and at least the floor), so
/// healthy peers are not sent duplicate work.
const ENDGAME_FACTOR: u32 = 4;
const ENDGAME_FLOOR: Duration = Duration::from_millis(20);

/// How a peer download ended without the whole chunk.
#[derive(Debug)]
pub struct Incomplete {
    /// Bytes already handed to the writer (a multiple of the piece size): the caller
    /// fetches the rest from the origin.
    pub delivered: u64,
}

struct PieceResult {
    piece: u32,
    peer: SocketAddr,
    result: Result<(Bytes, [u8; 32]), P2pError>,
    secs: f64,
}

pub(crate) async fn download(
    shared: &Arc<P2pShared>,
    id: ChunkId,
    len: u64,
    writer: &mut FillWriter,
    fetch: Option<&FetchRequest>,
) -> Result<usize, Incomplete> {
    let n = Bitmap::num_pieces(len, PIECE_SIZE as u32);
    // 1. Who has what: static peers, then the cluster's locations (the owner may
    // start reading the chunk from the origin for everyone).
    let mut candidates = shared.peers();
    for a in crate::cluster::find_holders(shared, &id, fetch).await {
        if !candidates.contains(&a) && a != shared.self_addr {
            candidates.push(a);
        }
    }
    if candidates.is_empty() {
        return Err(Incomplete { delivered: 0 });
    }
    writer.fill().set_from_peer(true);
    let mut probes = JoinSet::new();
    for addr in candidates {
        let shared = shared.clone();
        probes.spawn(async move {
            let r = async {
                let conn = shared.conn(addr).await?;
                let f = tokio::time::timeout(shared.cfg.piece_timeout, conn.bitmap(&id))
                    .await
                    .map_err(|_| P2pError::Timeout)??;
                if f.message_type != MessageType::Bitmap {
                    return Err(P2pError::Refused(proto::parse_error(&f.data).1));
                }
                Bitmap::decode(&f.data, 1 << 16)
                    .ok_or_else(|| P2pError::Protocol("bad bitmap".into()))
            }
            .await;
            (addr, r)
        });
    }
    let mut holders: Vec<(SocketAddr, Bitmap)> = Vec::new();
    while let Some(Ok((addr, r))) = probes.join_next().await {
        // A holder still filling from the origin will have every piece (they are
        // awaited), so it counts as holding them all.
        if let Ok(mut bm) = r
            && bm.chunk_len == len
            && bm.piece_size as u64 == PIECE_SIZE
        {
            if !bm.complete {
                bm.have.iter_mut().for_each(|h| *h = true);
            }
            holders.push((addr, bm));
        }
    }
    if holders.is_empty() {
        return Err(Incomplete { delivered: 0 });
    }
    // 2. K-selection.
    let candidates: Vec<(PeerStats, usize)> = holders
        .iter()
        .map(|(a, bm)| (shared.peer_stats(a), bm.have.iter().filter(|h| **h).count()))
        .collect();
    let chosen = score::select(&candidates, n, shared.cfg.selection_k);
    let peers: Vec<(SocketAddr, Bitmap)> = chosen.into_iter().map(|i| holders[i].clone()).collect();
    let expected_sha = peers
        .iter()
        .find(|(_, bm)| bm.complete)
        .map(|(_, bm)| bm.sha256);
    let availability = |p: u32| {
        peers
            .iter()
            .filter(|(_, bm)| bm.have.get(p as usize).copied().unwrap_or(false))
            .count()
    };
    let all: Vec<u32> = (0..n as u32).collect();
    let mut queue: VecDeque<u32> = score::piece_order(&all, availability).into();
    if queue.len() < n {
        // Some piece nobody selected has: the origin supplies the chunk from there.
        let first_missing = (0..n as u32).find(|p| availability(*p) == 0).unwrap_or(0);
        queue.retain(|p| *p < first_missing);
        if queue.is_empty() {
            return Err(Incomplete { delivered: 0 });
        }
    }
    let wanted: HashSet<u32> = queue.iter().copied().collect();
    let mut active: Vec<SocketAddr> = peers.iter().map(|(a, _)| *a).collect();
    let mut inflight: HashMap<SocketAddr, usize> = HashMap::new();
    let mut requested: HashMap<u32, Vec<SocketAddr>> = HashMap::new();
    // When each piece was first asked for, and the typical time a piece takes.
    let mut requested_at: HashMap<u32, Instant> = HashMap::new();
    let mut typical: Option<Duration> = None;
    let mut received: BTreeMap<u32, (Bytes, [u8; 32])> = BTreeMap::new();
    let mut piece_hashes: Vec<[u8; 32]> = Vec::with_capacity(n);
    let mut next_push = 0u32;
    let mut tasks: JoinSet<()> = JoinSet::new();
    let (results_tx, mut results_rx) = tokio::sync::mpsc::unbounded_channel::<PieceResult>();
    shared.stats.active_downloads.fetch_add(1, Relaxed);
    let outcome = loop {
        // 3. Keep every active peer busy with pieces it has, one piece per peer per
        // round so the pieces spread over the selected peers.
        let mut assigned = true;
        while assigned {
            assigned = false;
            for addr in active.clone() {
                if inflight.get(&addr).copied().unwrap_or(0) >= PER_PEER_INFLIGHT {
                    continue;
                }
                let bm = &peers
                    .iter()
                    .find(|(a, _)| *a == addr)
                    .expect("active peers are selected peers")
                    .1;
                let pick = queue.iter().position(|p| bm.have[*p as usize]);
                let piece = match pick {
                    Some(i) => queue.remove(i).expect("index from position"),
                    None => {
                        // Endgame: duplicate an overdue piece in flight elsewhere, once.
                        let overdue = endgame_after(typical);
                        let dup = requested
                            .iter()
                            .find(|(p, who)| {
                                who.len() == 1
                                    && !who.contains(&addr)
                                    && !received.contains_key(p)
                                    && bm.have[**p as usize]
                                    && requested_at.get(p).is_some_and(|t| t.elapsed() >= overdue)
                            })
                            .map(|(p, _)| *p);
                        match dup {
                            Some(p) => p,
                            None => continue,
                        }
                    }
                };
                assigned = true;
                // More pieces this peer has, into the same request.
                let mut batch = vec![piece];
                let room = PER_PEER_INFLIGHT - inflight.get(&addr).copied().unwrap_or(0);
                while batch.len() < BATCH.min(room) {
                    match queue.iter().position(|p| bm.have[*p as usize]) {
                        Some(i) => batch.push(queue.remove(i).expect("index from position")),
                        None => break,
                    }
                }
                for p in &batch {
                    requested.entry(*p).or_default().push(addr);
                    requested_at.entry(*p).or_insert_with(Instant::now);
                }
                *inflight.entry(addr).or_default() += batch.len();
                tasks.spawn(fetch_batch(
                    shared.clone(),
                    addr,
                    id,
                    len,
                    batch,
                    results_tx.clone(),
                ));
            }
        }
        if inflight.values().sum::<usize>() == 0 {
            break Err(());
        }
        // Wait for a result; with pieces only in flight (nothing left to assign),
        // wake up when the oldest becomes overdue to consider an endgame duplicate.
        // Only pieces another active peer could take count (no spinning on a
        // single peer's pieces).
        let wake = if queue.is_empty() {
            requested
                .iter()
                .filter(|(p, who)| {
                    who.len() == 1
                        && !received.contains_key(*p)
                        && peers.iter().any(|(a, bm)| {
                            active.contains(a)
                                && !who.contains(a)
                                && inflight.get(a).copied().unwrap_or(0) < PER_PEER_INFLIGHT
                                && bm.have.get(**p as usize).copied().unwrap_or(false)
                        })
                })
                .filter_map(|(p, _)| requested_at.get(p))
                .min()
                .map(|t| *t + endgame_after(typical))
        } else {
            None
        };
        let r = match wake {
            Some(at) => tokio::select! {
                r = results_rx.recv() => r,
                _ = tokio::time::sleep_until(at.into()) => continue,
            },
            None => results_rx.recv().await,
        };
        let Some(r) = r else {
            break Err(());
        };
        *inflight.entry(r.peer).or_default() -= 1;
        let expected_len = (len - u64::from(r.piece) * PIECE_SIZE).min(PIECE_SIZE);
        match r.result {
            Ok((data, hash)) if data.len() as u64 == expected_len => {
                shared
                    .stats
                    .bytes_down
                    .fetch_add(data.len() as u64, Relaxed);
                shared.stats.pieces_down.fetch_add(1, Relaxed);
                if let Some(t) = requested_at.get(&r.piece) {
                    let took = t.elapsed();
                    typical = Some(typical.map_or(took, |m| (m * 7 + took) / 8));
                }
                shared.with_peer_stats(r.peer, |s| {
                    s.record_success(data.len() as u64, r.secs, r.secs)
                });
                received.entry(r.piece).or_insert((data, hash));
            }
            other => {
                let reason = match &other {
                    Ok(_) => "bad_length",
                    Err(P2pError::Timeout) => "timeout",
                    Err(P2pError::Codec(_)) => "corrupt",
                    Err(P2pError::Refused(_)) => "refused",
                    Err(_) => "connection",
                };
                shared.stats.record_piece_failure(reason);
                tracing::debug!(peer = %r.peer, piece = r.piece, reason, "piece failed, rescheduling");
                shared.with_peer_stats(r.peer, |s| s.record_failure());
                // A failing peer is dropped from this download; its pieces go elsewhere.
                active.retain(|a| *a != r.peer);
                if !received.contains_key(&r.piece) && wanted.contains(&r.piece) {
                    queue.push_front(r.piece);
                }
                if let Some(who) = requested.get_mut(&r.piece) {
                    who.retain(|a| *a != r.peer);
                }
            }
        }
        // 4. Hand contiguous verified pieces to the writer (the 1 MiB checkpoints).
        while let Some((data, hash)) = received.remove(&next_push) {
            piece_hashes.push(hash);
            let last = u64::from(next_push + 1) * PIECE_SIZE >= len;
            if last && let Some(want) = expected_sha {
                // The chunk hash follows from the verified piece hashes.
                if eliop2p_cache::chunk_root(&piece_hashes) != want {
                    shared.stats.verification_failures.fetch_add(1, Relaxed);
                    tracing::warn!(chunk_id = %id, "chunk from peers does not match its SHA-256; discarding");
                    break;
                }
            }
            if writer.push_piece(data, hash).is_err() {
                break;
            }
            next_push += 1;
        }
        if u64::from(next_push) * PIECE_SIZE >= len {
            break Ok(());
        }
        if active.is_empty() || (queue.is_empty() && inflight.values().sum::<usize>() == 0) {
            break Err(());
        }
    };
    shared.stats.active_downloads.fetch_sub(1, Relaxed);
    tasks.abort_all();
    match outcome {
        Ok(()) => Ok(holders.len()),
        Err(()) => Err(Incomplete {
            delivered: u64::from(next_push) * PIECE_SIZE,
        }),
    }
}

/// How long a piece may be in flight before it is duplicated to another peer.
fn endgame_after(typical: Option<Duration>) -> Duration {
    typical.map_or(ENDGAME_FLOOR * 5, |t| {
        (t * ENDGAME_FACTOR).max(ENDGAME_FLOOR)
    })
}

/// Requests `pieces` from one peer in one `PieceRequest` and reports each piece as
/// it arrives (or fails). A stall of `piece_timeout` between pieces cancels the rest.
async fn fetch_batch(
    shared: Arc<P2pShared>,
    addr: SocketAddr,
    id: ChunkId,
    chunk_len: u64,
    pieces: Vec<u32>,
    tx: tokio::sync::mpsc::UnboundedSender<PieceResult>,
) {
    let t = Instant::now();
    let report = |piece: u32, result: Result<(Bytes, [u8; 32]), P2pError>| {
        let _ = tx.send(PieceResult {
            piece,
            peer: addr,
            result,
            secs: t.elapsed().as_secs_f64(),
        });
    };
    let conn: Arc<PeerConn> = match shared.conn(addr).await {
        Ok(c) => c,
        Err(e) => {
            let timeout = matches!(e, P2pError::Timeout);
            for p in pieces {
                report(
                    p,
                    Err(if timeout {
                        P2pError::Timeout
                    } else {
                        P2pError::Closed
                    }),
                );
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
    for (i, rx) in rxs.into_iter().enumerate() {
        let piece = pieces[i];
        let frame = match tokio::time::timeout(shared.cfg.piece_timeout, rx).await {
            Err(_) => {
                conn.cancel(&id, &pieces[i..]).await;
                for p in &pieces[i..] {
                    report(*p, Err(P2pError::Timeout));
                }
                return;
            }
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
                        tracing::warn!(peer = %addr, piece, "piece does not match its SHA-256");
                        Err(P2pError::Codec(e))
                    }
                }
            }
            Ok(f) => Err(P2pError::Refused(proto::parse_error(&f.data).1)),
            Err(e) => Err(e),
        };
        report(piece, result);
    }
}
