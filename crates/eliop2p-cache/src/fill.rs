//! In-progress chunk fills shared between one writer and any number of readers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::{Bytes, BytesMut};
use eliop2p_core::ChunkId;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::watch;

use crate::memory::{CacheShared, Chunk};
use crate::pool::PiecePool;
use crate::{ChunkData, PIECE_SIZE, chunk_root};

/// Why a fill did not produce a chunk. Cloned to every reader of the fill. Each
/// case says who failed (`culprit`) and whether another source or a later try can
/// help (`another_source_may_help`), so callers decide without parsing messages.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FillError {
    /// The origin refused the read with this 4xx status. `client`: it was read
    /// with the client's own authority (passthrough), so the client is refused;
    /// otherwise the node's credentials are.
    #[error("origin answered {status} to a chunk GET{}", if *client { " made with the client's authority" } else { "" })]
    Refused { status: u16, client: bool },
    /// The object is no longer the version being filled (its ETag differs, or the
    /// origin answered 412 to `If-Match`).
    #[error("object changed at the origin while it was read")]
    Changed,
    /// The origin could not be read within the fill's deadline (connection
    /// errors, stalls, 5xx and 503 SlowDown past their retries).
    #[error("origin failed: {0}")]
    Unavailable(Arc<str>),
    /// A fill from peers only (replication, passthrough peers): no peer supplied
    /// the chunk.
    #[error("no peer supplied the chunk")]
    NoPeer,
    /// The source sent more or fewer bytes than the chunk has.
    #[error("chunk length mismatch: expected {expected} bytes, got {got}")]
    LengthMismatch { expected: u64, got: u64 },
    /// The fill was cancelled: its writer went away unfinished (the node shuts
    /// down, or the task running it ended).
    #[error("fill cancelled")]
    Cancelled,
}

/// Who a failed fill's error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Culprit {
    /// The client's own authority was refused (passthrough).
    Client,
    /// The peers asked (none supplied the chunk).
    Peer,
    /// The origin (unreachable, failing, refusing the node, or the object changed).
    Origin,
    /// This node (the fill was cancelled).
    Internal,
}

impl FillError {
    pub fn culprit(&self) -> Culprit {
        match self {
            FillError::Refused { client: true, .. } => Culprit::Client,
            FillError::Refused { .. } | FillError::Changed | FillError::Unavailable(_) | FillError::LengthMismatch { .. } => {
                Culprit::Origin
            }
            FillError::NoPeer => Culprit::Peer,
            FillError::Cancelled => Culprit::Internal,
        }
    }

    /// Whether reading again (from another source, or later) can succeed for the
    /// same version with the same authority. A refusal stands, and a changed
    /// object needs fresh metadata first.
    pub fn another_source_may_help(&self) -> bool {
        !matches!(self, FillError::Refused { .. } | FillError::Changed)
    }
}

/// Bytes are published to readers in segments of at least this size (except the first
/// and the last), which bounds per-segment overhead without delaying the first byte.
const PUBLISH_BYTES: usize = 64 * 1024;

struct FillState {
    segments: Vec<Bytes>,
    published: u64,
    /// SHA-256 of every complete piece so far, for serving peers without
    /// hashing again.
    piece_hashes: Vec<[u8; 32]>,
    /// Verified pieces from peers that arrived ahead of the published prefix (with
    /// their SHA-256): served to other peers at once, published when the gap
    /// before them closes.
    stash: BTreeMap<u32, (Bytes, [u8; 32])>,
    outcome: Option<Result<Arc<Chunk>, FillError>>,
}

/// A chunk being filled. Readers hold an `Arc<Fill>`; the cache holds one too until
/// the fill ends.
pub struct Fill {
    id: ChunkId,
    /// Where the leader gets the bytes from (0 = origin, 1 = peer), for reporting.
    from_peer: std::sync::atomic::AtomicBool,
    expected_len: u64,
    state: Mutex<FillState>,
    changed_tx: watch::Sender<()>,
}

impl Fill {
    pub(crate) fn new(id: ChunkId, expected_len: u64) -> Arc<Self> {
        Arc::new(Self {
            id,
            from_peer: std::sync::atomic::AtomicBool::new(false),
            expected_len,
            state: Mutex::new(FillState {
                segments: Vec::new(),
                published: 0,
                piece_hashes: Vec::new(),
                stash: BTreeMap::new(),
                outcome: None,
            }),
            changed_tx: watch::channel(()).0,
        })
    }

    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// Marks the fill as fed by peers (default: the origin).
    pub fn set_from_peer(&self, yes: bool) {
        self.from_peer
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn from_peer(&self) -> bool {
        self.from_peer.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn expected_len(&self) -> u64 {
        self.expected_len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FillState> {
        // A poisoned lock means a panic while pushing a segment; the state itself
        // (a list of immutable segments) is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the fill ends and returns its outcome.
    pub async fn wait(self: &Arc<Self>) -> Result<Arc<Chunk>, FillError> {
        let mut rx = self.changed_tx.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(outcome) = self.lock().outcome.clone() {
                return outcome;
            }
            if rx.changed().await.is_err() {
                return Err(FillError::Cancelled);
            }
        }
    }

    /// The SHA-256 of piece `index` once the writer has all of it.
    pub fn piece_hash(&self, index: u32) -> Option<[u8; 32]> {
        self.lock().piece_hashes.get(index as usize).copied()
    }

    /// Bytes published so far (a fill in progress can already serve these).
    pub fn published(&self) -> u64 {
        self.lock().published
    }

    /// A receiver told of every change to the fill (bytes published, a piece
    /// stashed, the end): for waiting on news without polling.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changed_tx.subscribe()
    }

    /// How many whole pieces this fill can serve now.
    pub fn piece_count(&self) -> u32 {
        self.have_pieces().iter().filter(|h| **h).count() as u32
    }

    /// Which whole pieces this fill can serve now: the published prefix and the
    /// pieces stashed ahead of it.
    pub fn have_pieces(&self) -> Vec<bool> {
        let st = self.lock();
        let n = self.expected_len.div_ceil(PIECE_SIZE) as usize;
        (0..n)
            .map(|i| {
                let end = ((i as u64 + 1) * PIECE_SIZE).min(self.expected_len);
                end <= st.published || st.stash.contains_key(&(i as u32))
            })
            .collect()
    }

    /// Piece `index` with its SHA-256 if this fill has all of it now (never waits).
    pub fn piece_now(&self, index: u32) -> Option<(Vec<Bytes>, [u8; 32])> {
        let st = self.lock();
        let start = u64::from(index) * PIECE_SIZE;
        let end = (start + PIECE_SIZE).min(self.expected_len);
        // A fill that ended handed its segments to the chunk (or dropped them):
        // a server that looked the fill up just before that answers from the
        // chunk, never with the empty segment list.
        match &st.outcome {
            Some(Ok(chunk)) if start < end => {
                let hash = *chunk.piece_hashes.get(index as usize)?;
                return Some((chunk.data.slices(start, end).collect(), hash));
            }
            Some(_) => return None,
            None => {}
        }
        if let Some((b, h)) = st.stash.get(&index) {
            return Some((vec![b.clone()], *h));
        }
        if start >= end || end > st.published {
            return None;
        }
        let hash = *st.piece_hashes.get(index as usize)?;
        let mut out = Vec::new();
        let mut seg_start = 0u64;
        for seg in &st.segments {
            let seg_end = seg_start + seg.len() as u64;
            if seg_end > start && seg_start < end {
                let from = start.max(seg_start) - seg_start;
                let to = end.min(seg_end) - seg_start;
                out.push(seg.slice(from as usize..to as usize));
            }
            if seg_end >= end {
                break;
            }
            seg_start = seg_end;
        }
        Some((out, hash))
    }
}

/// The leader's handle: push bytes, then `finish`. Dropping it unfinished fails the
/// fill with [`FillError::Cancelled`].
pub struct FillWriter {
    fill: Arc<Fill>,
    cache: Weak<CacheShared>,
    /// Where piece buffers come from.
    pool: Arc<PiecePool>,
    pending: BytesMut,
    /// Hash of the piece being received, and the hashes of the pieces before it.
    piece_hasher: Sha256,
    piece_hashes: Vec<[u8; 32]>,
    received: u64,
    done: bool,
}

impl FillWriter {
    pub(crate) fn new(fill: Arc<Fill>, cache: Weak<CacheShared>, pool: Arc<PiecePool>) -> Self {
        Self {
            fill,
            cache,
            pool,
            pending: BytesMut::new(),
            piece_hasher: Sha256::new(),
            piece_hashes: Vec::new(),
            received: 0,
            done: false,
        }
    }

    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    fn check_len(&mut self, add: usize) -> Result<(), FillError> {
        self.received += add as u64;
        if self.received > self.fill.expected_len {
            let err = FillError::LengthMismatch {
                expected: self.fill.expected_len,
                got: self.received,
            };
            self.fail(err.clone());
            return Err(err);
        }
        Ok(())
    }

    /// Appends bytes, hashing them piece by piece. Fails (and fails the fill) if
    /// more bytes arrive than expected. Bytes are copied into one buffer per piece,
    /// sized to the piece, so the finished chunk owns exactly its length.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FillError> {
        let before = self.received;
        self.check_len(data.len())?;
        let mut rest = data;
        let mut pos = before;
        while !rest.is_empty() {
            let room = (PIECE_SIZE - pos % PIECE_SIZE) as usize;
            let (now, later) = rest.split_at(room.min(rest.len()));
            if pos.is_multiple_of(PIECE_SIZE) {
                let piece_len = PIECE_SIZE.min(self.fill.expected_len - pos) as usize;
                self.pending = self.pool.buffer(piece_len);
            }
            self.piece_hasher.update(now);
            self.pending.extend_from_slice(now);
            pos += now.len() as u64;
            let piece_done = pos.is_multiple_of(PIECE_SIZE) || pos == self.fill.expected_len;
            if piece_done {
                let h: [u8; 32] = std::mem::take(&mut self.piece_hasher).finalize().into();
                self.piece_hashes.push(h);
                self.fill.lock().piece_hashes.push(h);
            }
            // Nothing published yet iff every byte so far is pending: publish the
            // first bytes at once (time to first byte), then in segments.
            let first = pos == self.pending.len() as u64;
            if first || piece_done || self.pending.len() >= PUBLISH_BYTES {
                self.publish();
            }
            rest = later;
        }
        Ok(())
    }

    /// Appends one whole piece whose SHA-256 the caller already verified (pieces
    /// from peers): no second hash pass. Pieces must come in order.
    /// The piece's buffer is published to readers, and kept by the chunk, as is.
    pub fn push_piece(&mut self, data: Bytes, sha256: [u8; 32]) -> Result<(), FillError> {
        let aligned = self.received.is_multiple_of(PIECE_SIZE);
        let whole = data.len() as u64 == PIECE_SIZE
            || self.received + data.len() as u64 == self.fill.expected_len;
        if !aligned || !whole {
            return self.push(&data);
        }
        self.check_len(data.len())?;
        self.piece_hashes.push(sha256);
        self.fill.lock().piece_hashes.push(sha256);
        self.publish_segment(data);
        Ok(())
    }

    /// Bytes received so far (the offset a source continues from).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes one verified piece from a peer in any order: the next piece is
    /// published (with any stashed pieces it joins up with), a later one is
    /// stashed, where peers can already fetch it. A piece already held is ignored.
    pub fn put_piece(&mut self, index: u32, data: Bytes, sha256: [u8; 32]) -> Result<(), FillError> {
        let start = u64::from(index) * PIECE_SIZE;
        let want = PIECE_SIZE.min(self.fill.expected_len.saturating_sub(start));
        if want == 0 || data.len() as u64 != want {
            let err = FillError::LengthMismatch {
                expected: want,
                got: data.len() as u64,
            };
            self.fail(err.clone());
            return Err(err);
        }
        if start < self.received {
            return Ok(());
        }
        if start > self.received {
            self.fill.lock().stash.insert(index, (data, sha256));
            self.fill.changed_tx.send_replace(());
            return Ok(());
        }
        self.push_piece(data, sha256)?;
        self.join_stash()
    }

    /// Publishes the stashed pieces that follow on from the bytes received so far
    /// (after in-order bytes reached a piece they join up with).
    pub fn join_stash(&mut self) -> Result<(), FillError> {
        while self.received.is_multiple_of(PIECE_SIZE) {
            let next = (self.received / PIECE_SIZE) as u32;
            let Some((b, h)) = self.fill.lock().stash.remove(&next) else {
                break;
            };
            self.push_piece(b, h)?;
        }
        Ok(())
    }

    fn publish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // The rest of the piece's buffer stays with `pending` for the next bytes.
        let seg = self.pending.split().freeze();
        self.publish_segment(seg);
    }

    fn publish_segment(&mut self, seg: Bytes) {
        {
            let mut st = self.fill.lock();
            st.published += seg.len() as u64;
            st.segments.push(seg);
        }
        self.fill.changed_tx.send_replace(());
    }

    /// Completes the fill: checks the length, makes the chunk (the published
    /// buffers, with its SHA-256), inserts it into the cache and wakes every reader.
    pub fn finish(mut self) -> Result<Arc<Chunk>, FillError> {
        self.publish();
        if self.received != self.fill.expected_len {
            let err = FillError::LengthMismatch {
                expected: self.fill.expected_len,
                got: self.received,
            };
            self.fail(err.clone());
            return Err(err);
        }
        let piece_hashes = std::mem::take(&mut self.piece_hashes);
        let sha256 = chunk_root(&piece_hashes);
        // The published segments are the chunk: no copy.
        let data = ChunkData::from_segments(self.fill.lock().segments.iter().cloned());
        let chunk = Arc::new(Chunk {
            data,
            sha256,
            piece_hashes,
        });
        self.done = true;
        if let Some(cache) = self.cache.upgrade() {
            cache.complete(&self.fill, Ok(chunk.clone()));
        }
        self.end(Ok(chunk.clone()));
        Ok(chunk)
    }

    /// Fails the fill; readers get `err`, nothing is cached.
    pub fn fail(&mut self, err: FillError) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(cache) = self.cache.upgrade() {
            cache.complete(&self.fill, Err(err.clone()));
        }
        self.end(Err(err));
    }

    fn end(&self, outcome: Result<Arc<Chunk>, FillError>) {
        {
            let mut st = self.fill.lock();
            st.outcome = Some(outcome);
            // Readers switch to the chunk; drop the segment list.
            st.segments = Vec::new();
            st.stash = BTreeMap::new();
        }
        self.fill.changed_tx.send_replace(());
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        if !self.done {
            self.fail(FillError::Cancelled);
        }
    }
}

/// Streams `[start, end)` of a chunk from a fill, as bytes arrive; after the fill
/// completes it serves the rest from the chunk's buffers.
pub struct FillReader {
    fill: Arc<Fill>,
    changed_rx: watch::Receiver<()>,
    /// Next byte (chunk offset) to hand out.
    pos: u64,
    end: u64,
    /// Segment index and the chunk offset at which that segment starts.
    seg_idx: usize,
    seg_start: u64,
}

impl FillReader {
    pub fn new(fill: Arc<Fill>, start: u64, end: u64) -> Self {
        let changed_rx = fill.changed_tx.subscribe();
        Self {
            fill,
            changed_rx,
            pos: start,
            end,
            seg_idx: 0,
            seg_start: 0,
        }
    }

    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// The next piece of the range, `None` at the end of the range.
    pub async fn next(&mut self) -> Option<Result<Bytes, FillError>> {
        if self.pos >= self.end {
            return None;
        }
        loop {
            self.changed_rx.borrow_and_update();
            {
                let st = self.fill.lock();
                match &st.outcome {
                    Some(Ok(chunk)) => {
                        let out = chunk.data.slices(self.pos, self.end).next()?;
                        self.pos += out.len() as u64;
                        return Some(Ok(out));
                    }
                    Some(Err(e)) => return Some(Err(e.clone())),
                    None => {}
                }
                while self.seg_idx < st.segments.len() {
                    let seg = &st.segments[self.seg_idx];
                    let seg_end = self.seg_start + seg.len() as u64;
                    if self.pos < seg_end {
                        let from = (self.pos - self.seg_start) as usize;
                        let to = (self.end.min(seg_end) - self.seg_start) as usize;
                        let out = seg.slice(from..to);
                        self.pos += out.len() as u64;
                        return Some(Ok(out));
                    }
                    self.seg_idx += 1;
                    self.seg_start = seg_end;
                }
            }
            if self.changed_rx.changed().await.is_err() {
                return Some(Err(FillError::Cancelled));
            }
        }
    }
}
