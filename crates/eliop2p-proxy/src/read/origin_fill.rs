//! Chunk fills from the origin: one or more ranged GETs per chunk, each retried
//! from its last received byte, streamed or put piece by piece into the fill.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use eliop2p_cache::{FillError, FillWriter};
use eliop2p_core::{ByteRange, ObjectKey};
use eliop2p_origin::{ObjectMeta, OriginRequest};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::read::ObjectReader;

/// Whose authority a fill reads the origin with.
#[derive(Clone)]
pub(crate) enum OriginAccess {
    /// The node's own credentials (node mode).
    Node,
    /// A client's own request (passthrough: the node has no credentials), which the
    /// origin has just authorized; re-sent as the client signed it, with an added
    /// unsigned `Range` (and `If-Match`) for the bytes a fill needs.
    Client(Arc<ClientRequest>),
}

pub(crate) struct ClientRequest {
    /// Raw path and query as the client sent them (a presigned URL's signature
    /// is in the query).
    pub path_and_query: String,
    /// The client's headers without hop-by-hop ones, `Range` and conditionals.
    pub headers: http::HeaderMap,
}

impl ClientRequest {
    /// The client's GET for `range` of the object.
    async fn send(
        &self,
        reader: &ObjectReader,
        bucket: &str,
        range: &str,
        if_match: Option<HeaderValue>,
    ) -> Result<hyper::Response<Incoming>, eliop2p_origin::OriginError> {
        let mut headers = self.headers.clone();
        headers.insert(header::RANGE, HeaderValue::from_str(range).expect("ascii"));
        if let Some(v) = if_match {
            headers.insert(header::IF_MATCH, v);
        }
        reader
            .origin_for(Some(bucket))
            .send_as_is(Method::GET, &self.path_and_query, headers, eliop2p_origin::empty_body(), None)
            .await
    }
}

/// How one origin request for a range ended.
enum Attempt {
    Done,
    /// Worth asking again from the last received byte (after this long, when the
    /// origin said so).
    Retry(String, Option<std::time::Duration>),
    /// The object changed, the origin refused, or the node shuts down: the fill
    /// fails now.
    Fatal(FillError),
}

/// What a range reader hands the fill.
enum Part {
    /// The next bytes of the chunk, in order (the first range).
    Bytes(Bytes),
    /// One whole piece of a later range, with the SHA-256 its reader computed.
    Piece(u32, Bytes, [u8; 32]),
    /// The range could not be read (after retries, or at once for a refusal).
    Failed(FillError),
}

/// Reads a chunk from the origin from the writer's last received byte to its end,
/// in up to `origin_streams` ranged GETs at once (one range per stream, whole
/// pieces; S3 serves each stream at a fraction of a NIC, and a link shared with
/// peers gives each flow its share). The first range streams its bytes into the
/// fill as they come; later ranges are hashed a piece at a time and put in the
/// fill, where peers can fetch them before the chunk is done.
///
/// Each range is retried on its own: a failed request, a 5xx or 429 (honouring
/// `Retry-After`, as S3's 503 SlowDown asks), a body cut short or stalled is asked
/// again from that range's last received byte, with exponential backoff, until
/// `fill_deadline`. A changed object or a refusal (4xx) fails the fill at once.
/// `body` is a response already open for the chunk from its first byte (the first
/// GET of a cold object): the first range reads it. At most
/// `origin_max_concurrent` requests of this node are at the origin at once.
pub(crate) async fn fill_from_origin(
    reader: Arc<ObjectReader>,
    mut writer: FillWriter,
    key: ObjectKey,
    meta: Arc<ObjectMeta>,
    chunk: ByteRange,
    body: Option<Incoming>,
    access: OriginAccess,
) {
    // While this runs, this node's peer downloads leave its downlink to the origin.
    let _running = reader.peers().map(|p| p.origin_fill_running());
    let expected = writer.fill().expected_len();
    let from = writer.received();
    // A response already open for the chunk is read to its end: one range.
    let streams = if body.is_some() { 1 } else { reader.cfg.origin_streams.max(1) as u64 };
    // Pieces peers delivered ahead of the verified prefix (a download from
    // peers that ended early) are kept: only the others are read.
    let have = if body.is_some() { Vec::new() } else { writer.fill().have_pieces() };
    let ranges = plan_ranges(from, expected, &have, streams);
    if ranges.len() > 1 && !have.is_empty() {
        tracing::debug!(object = %key, ranges = ranges.len(), held = have.iter().filter(|h| **h).count(), "reading the pieces no peer delivered");
    }
    let (_readers, mut rx) = read_ranges(&reader, &key, &meta, chunk.start, expected, &ranges, true, body, &access);
    while let Some(part) = rx.recv().await {
        let put = match part {
            Part::Bytes(b) => writer.push(&b),
            Part::Piece(i, b, h) => writer.put_piece(i, b, h),
            Part::Failed(e) => return writer.fail(e),
        };
        // An error here already failed the fill (too many bytes).
        if put.is_err() || writer.join_stash().is_err() {
            return;
        }
        if writer.received() == expected {
            if let Err(e) = writer.finish() {
                tracing::warn!(object = %key, error = %e, "chunk fill incomplete");
            }
            return;
        }
    }
    // Every reader ended without the whole chunk and without an error: their tasks
    // were cancelled.
    writer.fail(FillError::Cancelled);
}

/// The pieces of one chunk a download reads from the origin after its node took
/// the chunk over (`eliop2p_p2p::PieceOrigin`), with this fill's authority.
pub(crate) struct TakeoverOrigin {
    pub reader: Arc<ObjectReader>,
    pub key: ObjectKey,
    pub meta: Arc<ObjectMeta>,
    /// The chunk's first byte in the object, and its length.
    pub chunk: ByteRange,
    pub access: OriginAccess,
}

impl eliop2p_p2p::PieceOrigin for TakeoverOrigin {
    fn read(
        &self,
        pieces: Vec<u32>,
        tx: tokio::sync::mpsc::UnboundedSender<eliop2p_p2p::OriginPiece>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let (reader, key, meta, access) = (self.reader.clone(), self.key.clone(), self.meta.clone(), self.access.clone());
        let chunk = self.chunk;
        Box::pin(read_pieces(reader, key, meta, chunk, access, pieces, tx))
    }
}

/// Reads `pieces` of a chunk (whole pieces, hashed) in ranged GETs planned as an
/// origin fill plans its holes, each retried the same way.
async fn read_pieces(
    reader: Arc<ObjectReader>,
    key: ObjectKey,
    meta: Arc<ObjectMeta>,
    chunk: ByteRange,
    access: OriginAccess,
    pieces: Vec<u32>,
    tx: tokio::sync::mpsc::UnboundedSender<eliop2p_p2p::OriginPiece>,
) {
    use eliop2p_cache::disk::PIECE_SIZE;
    let len = chunk.len();
    let Some(&first) = pieces.first() else {
        return;
    };
    let mut have = vec![true; len.div_ceil(PIECE_SIZE) as usize];
    for &p in &pieces {
        if let Some(h) = have.get_mut(p as usize) {
            *h = false;
        }
    }
    let ranges = plan_ranges(u64::from(first) * PIECE_SIZE, len, &have, reader.cfg.origin_streams.max(1) as u64);
    let (_readers, mut parts) = read_ranges(&reader, &key, &meta, chunk.start, len, &ranges, false, None, &access);
    while let Some(part) = parts.recv().await {
        let sent = match part {
            Part::Piece(i, b, h) => tx.send(Ok((i, b, h))),
            Part::Failed(e) => tx.send(Err(e.to_string())),
            // Only a fill's first range streams bytes; these ranges put pieces.
            Part::Bytes(_) => tx.send(Err("an origin range sent bytes outside a piece".to_owned())),
        };
        if sent.is_err() {
            return; // the download ended
        }
    }
}

/// Reads the ranges of a chunk of `chunk_len` bytes, in order, with at most
/// `MAX_READERS` GETs at once; their parts come on the returned channel, and
/// dropping the set cancels them. With `head`, the first range streams its bytes
/// in order (reading `body` if given, a response already open for the chunk);
/// every other range puts whole, hashed pieces.
#[allow(clippy::too_many_arguments)]
fn read_ranges(
    reader: &Arc<ObjectReader>,
    key: &ObjectKey,
    meta: &Arc<ObjectMeta>,
    chunk_start: u64,
    chunk_len: u64,
    ranges: &[(u64, u64)],
    head: bool,
    body: Option<Incoming>,
    access: &OriginAccess,
) -> (tokio::task::JoinSet<()>, tokio::sync::mpsc::Receiver<Part>) {
    let workers = ranges.len().clamp(1, MAX_READERS);
    let (tx, rx) = tokio::sync::mpsc::channel::<Part>(2 * workers);
    // The ranges left, in order, and the open body that belongs to the first.
    let queue = Arc::new(std::sync::Mutex::new((ranges.iter().copied().enumerate().collect::<std::collections::VecDeque<_>>(), body)));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (reader, key, meta, access, tx, queue) =
            (reader.clone(), key.clone(), meta.clone(), access.clone(), tx.clone(), queue.clone());
        readers.spawn(async move {
            loop {
                let (i, (start, end), body) = {
                    let mut q = queue.lock().expect("range queue");
                    let Some((i, r)) = q.0.pop_front() else { return };
                    (i, r, if i == 0 { q.1.take() } else { None })
                };
                if tx.is_closed() {
                    return; // the fill is gone (failed or cancelled)
                }
                let sink = RangeSink {
                    head: head && i == 0,
                    chunk_len,
                    start,
                    len: end - start,
                    got: 0,
                    buf: bytes::BytesMut::new(),
                    pool: reader.cache.pool().clone(),
                    tx: tx.clone(),
                };
                read_range(reader.clone(), key.clone(), meta.clone(), chunk_start, sink, body, access.clone()).await;
            }
        });
    }
    (readers, rx)
}

/// At most this many GETs of one chunk fill are at the origin at once (within
/// the node's `origin_max_concurrent`); more ranges wait for a free reader.
const MAX_READERS: usize = 16;

/// The byte ranges of a chunk of `len` bytes an origin fill reads, from `from`
/// (the fill's verified prefix) to the end, in order. Whole pieces in `have`
/// beyond the prefix (delivered by peers out of order) are left out: each run of
/// missing pieces is one range, so no byte a peer delivered is read again (a
/// chunk half delivered in rarest-first order has 16-20 such runs; merging runs
/// to save GETs re-read the pieces between them). The first range streams into
/// the prefix, so it ends where the held pieces begin. A single run is cut into
/// `streams` ranges of whole pieces.
fn plan_ranges(from: u64, len: u64, have: &[bool], streams: u64) -> Vec<(u64, u64)> {
    use eliop2p_cache::disk::PIECE_SIZE;
    if from >= len {
        return Vec::new();
    }
    let pieces = len.div_ceil(PIECE_SIZE);
    let first = from / PIECE_SIZE;
    // The piece `from` is in is never whole: it starts the first run.
    let missing = |p: u64| p == first || !have.get(p as usize).copied().unwrap_or(false);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for p in first..pieces {
        if !missing(p) {
            continue;
        }
        let (start, end) = ((p * PIECE_SIZE).max(from), ((p + 1) * PIECE_SIZE).min(len));
        match runs.last_mut() {
            Some(r) if r.1 == start => r.1 = end,
            _ => runs.push((start, end)),
        }
    }
    if runs.len() > 1 {
        return runs;
    }
    // One run: cut into `streams` ranges, the others on piece boundaries, each of
    // at least one piece.
    let pieces_left = pieces - first;
    let streams = streams.max(1).min(pieces_left.max(1));
    let per = pieces_left.div_ceil(streams).max(1);
    let mut bounds = vec![from];
    for i in 1..streams {
        let b = (first + i * per) * PIECE_SIZE;
        if b > *bounds.last().expect("non-empty") && b < len {
            bounds.push(b);
        }
    }
    bounds.push(len);
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Where one range reader puts what it reads: in order into the fill (the first
/// range), or as whole hashed pieces.
struct RangeSink {
    head: bool,
    chunk_len: u64,
    /// The range within the chunk.
    start: u64,
    len: u64,
    /// Bytes of the range read so far (the offset a retry continues from).
    got: u64,
    /// The piece being read (later ranges), in a buffer of the cache's piece pool.
    buf: bytes::BytesMut,
    pool: Arc<eliop2p_cache::PiecePool>,
    tx: tokio::sync::mpsc::Sender<Part>,
}

impl RangeSink {
    /// Takes bytes of the range (those past its end are dropped). Err: the fill is
    /// gone (cancelled), nobody wants the rest.
    async fn take(&mut self, mut data: Bytes) -> Result<(), ()> {
        use eliop2p_cache::disk::PIECE_SIZE;
        data.truncate((self.len - self.got).min(data.len() as u64) as usize);
        self.got += data.len() as u64;
        if self.head {
            return self.tx.send(Part::Bytes(data)).await.map_err(|_| ());
        }
        let mut rest = data;
        while !rest.is_empty() {
            let at = self.start + self.got - rest.len() as u64;
            let piece_start = at - self.buf.len() as u64;
            let piece_len = PIECE_SIZE.min(self.chunk_len - piece_start);
            let room = (piece_len - self.buf.len() as u64) as usize;
            let now = rest.split_to(room.min(rest.len()));
            // Copied even when a frame holds the whole piece: the pool's buffer is
            // memory the node already touched, and goes back to the pool when the
            // tier drops the chunk (a slice of the response's buffer could not).
            if self.buf.is_empty() {
                self.buf = self.pool.buffer(piece_len as usize);
            }
            self.buf.extend_from_slice(&now);
            if self.buf.len() as u64 == piece_len {
                let piece = self.buf.split().freeze();
                let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&piece).into();
                let index = (piece_start / PIECE_SIZE) as u32;
                self.tx.send(Part::Piece(index, piece, hash)).await.map_err(|_| ())?;
            }
        }
        Ok(())
    }
}

/// Reads one range of a chunk from the origin into its sink, retrying from the
/// last received byte (see `fill_from_origin`).
async fn read_range(
    reader: Arc<ObjectReader>,
    key: ObjectKey,
    meta: Arc<ObjectMeta>,
    chunk_start: u64,
    mut sink: RangeSink,
    mut body: Option<Incoming>,
    access: OriginAccess,
) {
    let deadline = std::time::Instant::now() + reader.cfg.fill_deadline;
    let mut attempt = 0u32;
    loop {
        let before = sink.got;
        let outcome = match body.take() {
            Some(b) => pump(&reader, &mut sink, b).await,
            None => origin_attempt(&reader, &key, &meta, chunk_start, &mut sink, &access).await,
        };
        let (msg, after) = match outcome {
            Attempt::Done => return,
            Attempt::Fatal(e) => {
                reader.metrics.origin_errors.fetch_add(1, Relaxed);
                tracing::warn!(object = %key, offset = chunk_start + sink.start, error = %e, "chunk fill failed");
                let _ = sink.tx.send(Part::Failed(e)).await;
                return;
            }
            Attempt::Retry(msg, after) => (msg, after),
        };
        if sink.got > before {
            attempt = 0; // progress: the next failure starts the backoff over
        }
        let backoff = std::time::Duration::from_millis(100u64 << attempt.min(6));
        let wait = after.unwrap_or(backoff).min(std::time::Duration::from_secs(20));
        if std::time::Instant::now() + wait >= deadline {
            reader.metrics.origin_errors.fetch_add(1, Relaxed);
            tracing::warn!(object = %key, offset = chunk_start + sink.start, error = %msg, "chunk fill failed after retries");
            let _ = sink.tx.send(Part::Failed(FillError::Unavailable(msg.into()))).await;
            return;
        }
        reader.metrics.origin_retries.fetch_add(1, Relaxed);
        tracing::info!(object = %key, offset = chunk_start + sink.start, error = %msg, received = sink.got, ?wait, "origin read failed, resuming from the last received byte");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// One ranged GET for the rest of a range, streamed into its sink.
async fn origin_attempt(
    reader: &Arc<ObjectReader>,
    key: &ObjectKey,
    meta: &ObjectMeta,
    chunk_start: u64,
    sink: &mut RangeSink,
    access: &OriginAccess,
) -> Attempt {
    if sink.got >= sink.len {
        return Attempt::Done;
    }
    let from = chunk_start + sink.start + sink.got;
    let end = chunk_start + sink.start + sink.len;
    let Ok(_slot) = reader.origin_slots.clone().acquire_owned().await else {
        return Attempt::Fatal(FillError::Cancelled);
    };
    reader.metrics.origin_get.fetch_add(1, Relaxed);
    let range_value = format!("bytes={}-{}", from, end - 1);
    let if_match = HeaderValue::from_str(meta.etag.as_str())
        .ok()
        .filter(|_| !meta.etag.is_synthetic());
    let sent = match access {
        OriginAccess::Node => {
            let mut req = OriginRequest::new(Method::GET, &key.bucket, Some(&key.key));
            req.headers.insert(
                header::RANGE,
                HeaderValue::from_str(&range_value).expect("ascii"),
            );
            if let Some(v) = if_match {
                req.headers.insert(header::IF_MATCH, v);
            }
            reader.origin_for(Some(&key.bucket)).send(req).await
        }
        OriginAccess::Client(c) => c.send(reader, &key.bucket, &range_value, if_match).await,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(e.to_string(), None),
    };
    let status = resp.status();
    let whole = from == 0 && end == meta.size;
    if !(status == StatusCode::PARTIAL_CONTENT || status == StatusCode::OK && whole) {
        if status == StatusCode::PRECONDITION_FAILED {
            reader.meta.invalidate(key);
            return Attempt::Fatal(FillError::Changed);
        }
        let msg = format!("origin answered {status} to a chunk GET");
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            return Attempt::Retry(msg, after);
        }
        return Attempt::Fatal(FillError::Refused {
            status: status.as_u16(),
            client: matches!(access, OriginAccess::Client(_)),
        });
    }
    let same_etag = ObjectMeta::validator(resp.headers(), meta.size)
        .is_some_and(|v| v.opaque() == meta.etag.opaque());
    if !same_etag {
        reader.meta.invalidate(key);
        return Attempt::Fatal(FillError::Changed);
    }
    pump(reader, sink, resp.into_body()).await
}

/// Streams an origin body into a range's sink, with an idle timeout per frame;
/// done once the range is whole (the rest of a longer body is not read).
async fn pump(reader: &Arc<ObjectReader>, sink: &mut RangeSink, mut body: Incoming) -> Attempt {
    let idle = reader.cfg.fill_idle_timeout;
    loop {
        if sink.got == sink.len {
            return Attempt::Done;
        }
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Attempt::Retry(format!("origin body stalled for {idle:?}"), None),
            Ok(None) => return Attempt::Retry("origin body ended early".into(), None),
            Ok(Some(Err(e))) => return Attempt::Retry(format!("origin body: {e}"), None),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let n = data.len().min((sink.len - sink.got) as usize);
                    reader.metrics.origin_fill_bytes.fetch_add(n as u64, Relaxed);
                    if sink.take(data).await.is_err() {
                        return Attempt::Done; // the fill is gone: nothing to read for
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eliop2p_cache::disk::PIECE_SIZE as P;

    #[test]
    fn a_fresh_chunk_is_cut_into_streams_of_whole_pieces() {
        assert_eq!(plan_ranges(0, 10 * P, &[], 1), vec![(0, 10 * P)]);
        assert_eq!(plan_ranges(0, 10 * P + 5, &[false; 11], 3), vec![(0, 4 * P), (4 * P, 8 * P), (8 * P, 10 * P + 5)]);
        // From the middle of a piece: the first range starts there.
        assert_eq!(plan_ranges(2 * P + 7, 6 * P, &[], 2), vec![(2 * P + 7, 4 * P), (4 * P, 6 * P)]);
        assert_eq!(plan_ranges(6 * P, 6 * P, &[], 2), vec![]);
    }

    #[test]
    fn pieces_held_beyond_the_prefix_are_not_read_again() {
        // Pieces 0-1 are the prefix; 3, 4 and 7 came from peers out of order.
        let mut have = vec![false; 10];
        for p in [0, 1, 3, 4, 7] {
            have[p] = true;
        }
        let r = plan_ranges(2 * P, 10 * P - 9, &have, 4);
        assert_eq!(r, vec![(2 * P, 3 * P), (5 * P, 7 * P), (8 * P, 10 * P - 9)]);
        let read: u64 = r.iter().map(|(a, b)| b - a).sum();
        assert_eq!(read, 10 * P - 9 - 5 * P, "exactly the pieces not held");
    }

    #[test]
    fn many_holes_are_each_read_once() {
        // Every other piece held: 32 holes, 32 ranges (read by at most
        // MAX_READERS GETs at once), and no held piece in any of them.
        let have: Vec<bool> = (0..64).map(|p| p % 2 == 1).collect();
        let r = plan_ranges(0, 64 * P, &have, 1);
        assert_eq!(r.len(), 32);
        for (p, (a, b)) in (0..64u64).filter(|p| p % 2 == 0).zip(&r) {
            assert_eq!((*a, *b), (p * P, (p + 1) * P), "piece {p}: {r:?}");
        }
    }
}
