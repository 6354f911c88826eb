//! GetObject and HeadObject through the chunk cache.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use bytes::Bytes;
use eliop2p_cache::{Chunk, DiskChunk, Fill, FillError, FillReader, FillWriter, Lookup, Reservation};
use eliop2p_core::range::{RangeError, RangeRequest};
use eliop2p_core::{ByteRange, ChunkLayout, ChunkSlice, ObjectKey};
use eliop2p_origin::{ObjectMeta, OriginRequest};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::body::{BoxError, ProxyBody};
use crate::meta::{MetaCache, MetaError, MetaLookup};
use crate::metrics::Source;
use crate::origin_fill::OriginAccess;
use crate::state::{ProxyState, chunk_id};

/// How a GET or HEAD ends when it is not served from cache.
pub(crate) enum Outcome {
    Response(Response<ProxyBody>),
    /// Relay the client's request to the origin (its exact status and body).
    Forward,
}

/// Serves a GET or HEAD from the cache. `known` is metadata the caller already
/// established (passthrough: the origin just authorized this client for this
/// version); otherwise it comes from the metadata cache or the origin.
pub(crate) async fn serve<B>(
    state: &Arc<ProxyState>,
    req: &Request<B>,
    key: ObjectKey,
    known: Option<Arc<ObjectMeta>>,
    access: OriginAccess,
) -> Outcome {
    // One retry: a fill that fails before the first byte (typically because the object
    // changed at the origin) refreshes the metadata and starts over.
    let attempts = if known.is_some() { 1 } else { 2 };
    for attempt in 0..attempts {
        let (meta, stale) = match &known {
            Some(m) => (m.clone(), None),
            None => match lookup_meta_or_stale(state, &key).await {
                Ok(m) => m,
                Err(o) => return o,
            },
        };
        if let Some(resp) = preconditions(&meta, req.headers()) {
            return Outcome::Response(resp);
        }
        let wants_checksums = req
            .headers()
            .get(eliop2p_origin::CHECKSUM_MODE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"));
        // (Node mode only: in passthrough the node has no credentials of its own.)
        let meta = if wants_checksums && meta.checksums.is_none() && stale.is_none() && known.is_none() {
            checksummed_meta(state, &key, meta).await
        } else {
            meta
        };
        let (status, range) = match requested_range(state, req.headers(), &meta, &key) {
            Ok(r) => r,
            Err(resp) => return Outcome::Response(*resp),
        };
        let layout = ChunkLayout::new(state.cfg.chunk_size, meta.size);
        let slices: VecDeque<ChunkSlice> = layout.slices(range).collect();
        let (source, first_tier) = cached_tiers(state, &key, &meta, &slices);
        // Stale metadata (the origin is down) answers only from a complete cache:
        // a fill would need the origin.
        if let Some(age) = stale
            && source.is_none()
        {
            return Outcome::Response(state.bad_gateway(
                &format!("origin unreachable, and the object is not wholly cached (metadata {}s old)", age.as_secs()),
                &crate::state::resource(&key),
            ));
        }
        let mut resp = Response::builder().status(status);
        let headers = resp.headers_mut().expect("builder without errors so far");
        object_headers(headers, &meta);
        // As S3 does: the whole object's checksums on a whole-object answer, when
        // asked (clients such as botocore then validate the body against them).
        if wants_checksums
            && status == StatusCode::OK
            && let Some(sums) = &meta.checksums
        {
            for (n, v) in sums {
                headers.insert(n.clone(), v.clone());
            }
        }
        if let Some(age) = stale {
            // RFC 9111's stale answer: the cached version, not revalidated.
            headers.insert("x-cache-stale", HeaderValue::from(age.as_secs()));
            headers.insert(header::WARNING, HeaderValue::from_static("110 eliop2p \"Response is Stale\""));
            state.metrics.stale_served.fetch_add(1, Relaxed);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len()));
        if status == StatusCode::PARTIAL_CONTENT
            && let Ok(v) = HeaderValue::from_str(&range.content_range(meta.size))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        headers.insert(
            "x-cache",
            HeaderValue::from_static(if source.is_some() { "HIT" } else { "MISS" }),
        );
        headers.insert(
            "x-cache-source",
            HeaderValue::from_static(source.or(first_tier).unwrap_or("origin")),
        );
        if req.method() == Method::HEAD || range.is_empty() {
            return Outcome::Response(resp.body(ProxyBody::Empty).expect("valid response parts"));
        }
        let mut stream = ChunkStream::new(state, &key, &meta, slices, access.clone());
        // Wait for the first bytes before committing to a status: an early failure
        // still gets a clean error response instead of a cut body.
        let first = match stream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                tracing::warn!(object = %key, error = %e, culprit = ?e.culprit(), attempt, "fill failed before the first byte");
                // Typically the object changed: fresh metadata, and one more try
                // unless the origin refused this authority (that stands).
                state.meta.invalidate(&key);
                if attempt + 1 < attempts && !matches!(e, FillError::Refused { .. }) {
                    continue;
                }
                return Outcome::Response(state.fill_failed(&e, &key));
            }
            None => Bytes::new(),
        };
        if source.is_none() && stream.first_from_peer {
            resp.headers_mut()
                .expect("builder without errors so far")
                .insert("x-cache-source", HeaderValue::from_static("peer"));
        }
        let total = range.len();
        let body = futures_util::stream::unfold(
            (Some(first), stream),
            |(first, mut stream)| async move {
                if let Some(b) = first {
                    return Some((Ok(b), (None, stream)));
                }
                match stream.next().await? {
                    Ok(b) => Some((Ok(b), (None, stream))),
                    Err(e) => {
                        stream.state.metrics.aborted_responses.fetch_add(1, Relaxed);
                        tracing::warn!(object = %stream.key, error = %e, "aborting response after a failed fill");
                        Some((Err(Box::new(e) as BoxError), (None, stream)))
                    }
                }
            },
        );
        return Outcome::Response(
            resp.body(ProxyBody::Stream {
                stream: Box::pin(body),
                len: total,
            })
            .expect("valid response parts"),
        );
    }
    unreachable!("the loop returns on its last attempt")
}

/// Where a response's chunks are cached: `Some(tier)` when every chunk is (the
/// slowest tier involved, "memory" or "disk"), `None` otherwise; and the first
/// chunk's tier.
fn cached_tiers(
    state: &ProxyState,
    key: &ObjectKey,
    meta: &ObjectMeta,
    slices: &VecDeque<ChunkSlice>,
) -> (Option<&'static str>, Option<&'static str>) {
    let mut source = Some("memory");
    let mut first_tier = None;
    for (i, sl) in slices.iter().enumerate() {
        let tier = state.cache.is_cached(&chunk_id(state, key, meta, sl.index));
        if i == 0 {
            first_tier = tier;
        }
        match tier {
            Some("memory") => {}
            Some(tier) => source = source.map(|_| tier),
            None => return (None, first_tier),
        }
    }
    (source, first_tier)
}

/// The status and byte range a GET asks for (a multi-range request gets the whole
/// object, as S3 answers it), or the error answer.
fn requested_range(
    state: &ProxyState,
    headers: &HeaderMap,
    meta: &ObjectMeta,
    key: &ObjectKey,
) -> Result<(StatusCode, ByteRange), Box<Response<ProxyBody>>> {
    match headers
        .get(header::RANGE)
        .map(|v| v.to_str().map(RangeRequest::parse))
    {
        None | Some(Ok(Ok(RangeRequest::Multiple))) => Ok((StatusCode::OK, ByteRange::new(0, meta.size))),
        Some(Ok(Ok(RangeRequest::Single(spec)))) => match spec.resolve(meta.size) {
            Ok(r) => Ok((StatusCode::PARTIAL_CONTENT, r)),
            Err(_) => {
                let mut resp = state.error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    key,
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", meta.size)) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                Err(Box::new(resp))
            }
        },
        Some(Err(_) | Ok(Err(RangeError::Malformed | RangeError::Unsatisfiable))) => Err(Box::new(state.error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid Range header: expected bytes=first-last, bytes=first- or bytes=-suffix",
            key,
        ))),
    }
}

/// Why an object could not be read without a client (`warm`).
pub(crate) enum WarmError {
    /// The origin refused the metadata request, or its answer was unusable: the
    /// node would relay a client's request as it is.
    NotCacheable,
    /// The metadata request failed (the S3 error answer a client would get).
    Meta(StatusCode),
    /// A chunk fill failed.
    Fill(FillError),
}

/// Reads a whole object through the cache with the node's own credentials and no
/// client, so its chunks land in the cache as a client read would put them there
/// (cluster single flight, peers and read-ahead included). Returns its size.
pub(crate) async fn warm(state: &Arc<ProxyState>, key: &ObjectKey) -> Result<u64, WarmError> {
    // As `serve`: a fill that fails before the first byte (typically the object
    // changed) refreshes the metadata and starts over, once.
    let mut retried = false;
    loop {
        let meta = match lookup_meta(state, key).await {
            Ok(m) => m,
            Err(Outcome::Forward) => return Err(WarmError::NotCacheable),
            Err(Outcome::Response(r)) => return Err(WarmError::Meta(r.status())),
        };
        let layout = ChunkLayout::new(state.cfg.chunk_size, meta.size);
        let slices = layout.slices(ByteRange::new(0, meta.size)).collect();
        let mut stream = ChunkStream::new(state, key, &meta, slices, OriginAccess::Node);
        let mut n = 0u64;
        let failed = loop {
            match stream.next().await {
                None => return Ok(n),
                Some(Ok(b)) => n += b.len() as u64,
                Some(Err(e)) => break e,
            }
        };
        if n > 0 || retried {
            return Err(WarmError::Fill(failed));
        }
        state.meta.invalidate(key);
        retried = true;
    }
}

pub(crate) async fn lookup_meta(state: &Arc<ProxyState>, key: &ObjectKey) -> Result<Arc<ObjectMeta>, Outcome> {
    lookup_meta_or_stale(state, key).await.map(|(m, _)| m)
}

/// Metadata, or expired metadata with its age while the origin cannot be asked
/// (stale-if-error: the caller serves it only from a complete cache).
async fn lookup_meta_or_stale(
    state: &Arc<ProxyState>,
    key: &ObjectKey,
) -> Result<(Arc<ObjectMeta>, Option<std::time::Duration>), Outcome> {
    let m = &state.metrics;
    let fetch = |refresh: bool| async move {
        // With peers, chunk 0 may come from them: learn the metadata by HEAD.
        if refresh || state.peers().is_some() {
            m.origin_head.fetch_add(1, Relaxed);
            MetaCache::head(state.origin_for(Some(&key.bucket)), key).await
        } else {
            first_chunk_meta(state, key).await
        }
    };
    match state.meta.get(key, fetch).await {
        MetaLookup::Cached(meta) => {
            m.metadata_hits.fetch_add(1, Relaxed);
            Ok((meta, None))
        }
        MetaLookup::Fetched(Ok(meta)) => {
            m.metadata_misses.fetch_add(1, Relaxed);
            Ok((meta, None))
        }
        MetaLookup::Stale(meta, age) => {
            m.origin_errors.fetch_add(1, Relaxed);
            Ok((meta, Some(age)))
        }
        MetaLookup::Fetched(Err(MetaError::Status(status))) => {
            tracing::debug!(object = %key, %status, "origin refused the metadata request; relaying the request itself");
            Err(Outcome::Forward)
        }
        MetaLookup::Fetched(Err(MetaError::Unusable)) => Err(Outcome::Forward),
        MetaLookup::Fetched(Err(MetaError::Origin(e))) => {
            m.origin_errors.fetch_add(1, Relaxed);
            Err(Outcome::Response(state.bad_gateway(
                &format!("origin request failed: {e}"),
                &crate::state::resource(key),
            )))
        }
    }
}

/// Metadata learned from a partial answer has no checksums: a client that asks
/// for them gets them from one HEAD, kept with the metadata (same version only).
async fn checksummed_meta(state: &Arc<ProxyState>, key: &ObjectKey, meta: Arc<ObjectMeta>) -> Arc<ObjectMeta> {
    state.metrics.origin_head.fetch_add(1, Relaxed);
    match MetaCache::head(state.origin_for(Some(&key.bucket)), key).await {
        Ok(fresh) if fresh.etag.opaque() == meta.etag.opaque() && fresh.size == meta.size => {
            let mut m = (*meta).clone();
            m.checksums = fresh.checksums.clone();
            let m = Arc::new(m);
            state.meta.put(key, m.clone());
            m
        }
        _ => meta,
    }
}

/// Learns an object's metadata for the first time with a GET of its first chunk
/// instead of a HEAD: one origin round trip instead of two for a cold read (which
/// halves origin requests for small objects), and the body becomes chunk 0's fill.
async fn first_chunk_meta(
    state: &Arc<ProxyState>,
    key: &ObjectKey,
) -> Result<Arc<ObjectMeta>, MetaError> {
    let chunk_size = state.cfg.chunk_size;
    state.metrics.origin_get.fetch_add(1, Relaxed);
    let mut req = OriginRequest::new(Method::GET, &key.bucket, Some(&key.key));
    let range = format!("bytes=0-{}", chunk_size - 1);
    req.headers
        .insert(header::RANGE, HeaderValue::from_str(&range).expect("ascii"));
    // An object within one chunk comes whole: with its checksums.
    req.headers
        .insert(eliop2p_origin::CHECKSUM_MODE, HeaderValue::from_static("ENABLED"));
    let resp = state
        .origin_for(Some(&key.bucket))
        .send(req)
        .await
        .map_err(|e| MetaError::from(&e))?;
    let status = resp.status();
    let meta = match status {
        StatusCode::PARTIAL_CONTENT => ObjectMeta::from_partial_response(resp.headers()),
        StatusCode::OK => ObjectMeta::from_headers(resp.headers()),
        // An empty object has no byte 0: ask for its metadata alone.
        StatusCode::RANGE_NOT_SATISFIABLE => {
            state.metrics.origin_head.fetch_add(1, Relaxed);
            return MetaCache::head(state.origin_for(Some(&key.bucket)), key).await;
        }
        other => return Err(MetaError::Status(other)),
    };
    let meta = meta.map(Arc::new).ok_or(MetaError::Unusable)?;
    let first = ChunkLayout::new(chunk_size, meta.size).chunk_range(0);
    // A 200 carries the whole object: it is chunk 0 only if the object fits in one.
    let body_is_chunk0 =
        !first.is_empty() && (status == StatusCode::PARTIAL_CONTENT || meta.size == first.len());
    if !body_is_chunk0 {
        return Ok(meta);
    }
    // The fill holds chunk 0's share of the in-flight budget while it runs.
    let hold = state.cache.budget().reserve(first.len()).await;
    if let Lookup::Leader(writer) = state
        .cache
        .lookup(chunk_id(state, key, &meta, 0), first.len())
    {
        let fill = crate::origin_fill::fill_from_origin(
            state.clone(),
            writer,
            key.clone(),
            meta.clone(),
            first,
            Some(resp.into_body()),
            crate::origin_fill::OriginAccess::Node,
        );
        state.fills.spawn(async move {
            fill.await;
            drop(hold);
        });
    }
    Ok(meta)
}

fn object_headers(headers: &mut HeaderMap, meta: &ObjectMeta) {
    for (n, v) in &meta.headers {
        headers.insert(n.clone(), v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(meta.etag.as_str()) {
        headers.insert(header::ETAG, v);
    }
    if let Some(lm) = meta.last_modified
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(lm))
    {
        headers.insert(header::LAST_MODIFIED, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// Conditional request evaluation in the order of RFC 9110 section 13.2.2, which is
/// what S3 implements: a 412 or 304 response, or `None` to serve the object.
fn preconditions(meta: &ObjectMeta, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
    let failed = if let Some(im) = headers.get(header::IF_MATCH) {
        !im.to_str().is_ok_and(|v| meta.etag.matches_header_list(v))
    } else if let (Some(since), Some(lm)) = (
        header_date(headers, header::IF_UNMODIFIED_SINCE),
        meta.last_modified,
    ) {
        lm > since
    } else {
        false
    };
    if failed {
        let body = eliop2p_core::s3xml::error_body(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            "",
            "",
        );
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = StatusCode::PRECONDITION_FAILED;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        return Some(resp);
    }
    let not_modified = if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        inm.to_str().is_ok_and(|v| meta.etag.matches_header_list(v))
    } else if let (Some(since), Some(lm)) = (
        header_date(headers, header::IF_MODIFIED_SINCE),
        meta.last_modified,
    ) {
        lm <= since
    } else {
        false
    };
    if not_modified {
        let mut resp = Response::new(ProxyBody::Empty);
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        object_headers(resp.headers_mut(), meta);
        return Some(resp);
    }
    None
}

/// Where the bytes of one chunk slice will come from.
enum Prepared {
    Ready(Arc<Chunk>),
    Disk(DiskChunk),
    Fill(Arc<Fill>),
}

enum Current {
    /// A memory chunk's range, one buffer at a time.
    Bytes(std::vec::IntoIter<Bytes>),
    /// Reading `[pos, end)` of a disk chunk in blocks, the next block already in
    /// flight while the current one is sent.
    Disk {
        chunk: DiskChunk,
        pos: u64,
        end: u64,
        next: Option<tokio::task::JoinHandle<Result<Bytes, eliop2p_cache::disk::DiskError>>>,
    },
    Fill(FillReader),
}

/// Disk reads are issued in blocks of this size (a multiple of the 1 MiB piece).
const DISK_READ_BLOCK: u64 = 4 << 20;

/// Streams the chunk slices of one response, with read-ahead fills for the next
/// chunks of the same range.
struct ChunkStream {
    state: Arc<ProxyState>,
    key: ObjectKey,
    meta: Arc<ObjectMeta>,
    unprepared: VecDeque<ChunkSlice>,
    /// Each with its share of the in-flight budget (`None`: in memory or on disk).
    prepared: VecDeque<(ChunkSlice, Prepared, Option<Arc<Reservation>>)>,
    current: Option<(Current, Source)>,
    /// The budget share of the chunk being sent, released when it is sent.
    current_hold: Option<Arc<Reservation>>,
    current_index: u64,
    /// The first bytes of the response came from peers.
    first_from_peer: bool,
    /// Whose authority the fills this response starts read the origin with.
    access: OriginAccess,
}

impl ChunkStream {
    fn new(
        state: &Arc<ProxyState>,
        key: &ObjectKey,
        meta: &Arc<ObjectMeta>,
        slices: VecDeque<ChunkSlice>,
        access: OriginAccess,
    ) -> Self {
        Self {
            state: state.clone(),
            key: key.clone(),
            meta: meta.clone(),
            unprepared: slices,
            prepared: VecDeque::new(),
            current: None,
            current_hold: None,
            current_index: 0,
            first_from_peer: false,
            access,
        }
    }

    /// Looks a chunk up, starting its fill from the origin if nobody has it. `hold`
    /// is the chunk's share of the in-flight budget: kept with a fill (and by the
    /// fill's task while it runs), dropped for a chunk in memory or on disk.
    fn prepare(&self, index: u64, hold: Option<Reservation>) -> (Prepared, Option<Arc<Reservation>>) {
        let layout = ChunkLayout::new(self.state.cfg.chunk_size, self.meta.size);
        let chunk_range = layout.chunk_range(index);
        let id = chunk_id(&self.state, &self.key, &self.meta, index);
        match self.state.cache.lookup(id, chunk_range.len()) {
            Lookup::Hit(chunk) => (Prepared::Ready(chunk), None),
            Lookup::Disk(chunk) => (Prepared::Disk(chunk), None),
            Lookup::Joined(fill) => (Prepared::Fill(fill), hold.map(Arc::new)),
            Lookup::Leader(writer) => {
                // Marked as fed by peers only once peers are found to hold it
                // (`download`): until then it is an origin fill that the cluster may
                // be offered, so this node's owner role never leaves a gap.
                let fill = writer.fill().clone();
                let access = self.access.clone();
                let state = self.state.clone();
                let key = self.key.clone();
                let meta = self.meta.clone();
                let hold = hold.map(Arc::new);
                let fill_hold = hold.clone();
                // The fill runs on its own task: a client that goes away neither
                // cancels it for others nor leaves a partial chunk. The task keeps
                // the chunk's budget share until the fill ends.
                self.state.fills.spawn(async move {
                    run_fill(state, writer, key, meta, chunk_range, false, access).await;
                    drop(fill_hold);
                });
                (Prepared::Fill(fill), hold)
            }
        }
    }

    /// Prepares the chunks of the read-ahead window. The next chunk to send waits
    /// for its budget share; chunks after it are read ahead only while the budget
    /// has room (a waiting response holds no share, so waits always end).
    async fn prepare_ahead(&mut self) {
        let window = 1 + self.state.cfg.readahead_chunks;
        let layout = ChunkLayout::new(self.state.cfg.chunk_size, self.meta.size);
        let budget = self.state.cache.budget().clone();
        while self.prepared.len() < window {
            let Some(slice) = self.unprepared.pop_front() else {
                break;
            };
            let id = chunk_id(&self.state, &self.key, &self.meta, slice.index);
            let len = layout.chunk_range(slice.index).len();
            let hold = if self.state.cache.is_cached(&id).is_some() {
                None
            } else if self.prepared.is_empty() {
                Some(budget.reserve(len).await)
            } else if let Some(r) = budget.try_reserve(len) {
                Some(r)
            } else {
                self.unprepared.push_front(slice);
                break;
            };
            let (prepared, hold) = self.prepare(slice.index, hold);
            if let Prepared::Disk(chunk) = &prepared
                && slice.len > DISK_READ_BLOCK
            {
                chunk.prefetch(slice.offset, slice.offset + slice.len);
            }
            self.prepared.push_back((slice, prepared, hold));
        }
    }

    fn start(prepared: Prepared, start: u64, end: u64) -> (Current, Source) {
        match prepared {
            Prepared::Ready(chunk) => (
                Current::Bytes(
                    chunk
                        .data
                        .slices(start, end)
                        .collect::<Vec<_>>()
                        .into_iter(),
                ),
                Source::Memory,
            ),
            Prepared::Disk(chunk) => (
                Current::Disk {
                    chunk,
                    pos: start,
                    end,
                    next: None,
                },
                Source::Disk,
            ),
            Prepared::Fill(fill) => {
                let source = if fill.from_peer() {
                    Source::Peer
                } else {
                    Source::Origin
                };
                (Current::Fill(FillReader::new(fill, start, end)), source)
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Bytes, FillError>> {
        loop {
            if let Some((cur, source)) = &mut self.current {
                let item = match cur {
                    Current::Bytes(b) => b.next().map(Ok),
                    Current::Fill(reader) => {
                        let next = reader.next().await;
                        // Who feeds the fill is known once its bytes flow.
                        *source = if reader.fill().from_peer() {
                            Source::Peer
                        } else {
                            Source::Origin
                        };
                        next
                    }
                    Current::Disk {
                        chunk,
                        pos,
                        end,
                        next,
                    } if *pos < *end => {
                        let block_end = ((*pos / DISK_READ_BLOCK + 1) * DISK_READ_BLOCK).min(*end);
                        let read = match next.take() {
                            Some(handle) => handle.await.unwrap_or_else(|e| {
                                Err(eliop2p_cache::disk::DiskError::Io(std::io::Error::other(e)))
                            }),
                            None => chunk.read_range(*pos, block_end).await,
                        };
                        match read {
                            Ok(b) => {
                                *pos = block_end;
                                if *pos < *end {
                                    let (c, a, z) = (
                                        chunk.clone(),
                                        *pos,
                                        ((*pos / DISK_READ_BLOCK + 1) * DISK_READ_BLOCK).min(*end),
                                    );
                                    *next =
                                        Some(tokio::spawn(async move { c.read_range(a, z).await }));
                                }
                                Some(Ok(b))
                            }
                            Err(e) => {
                                // The chunk was corrupt (now deleted) or vanished:
                                // refetch the rest of this slice, seamlessly.
                                tracing::warn!(object = %self.key, chunk_id = %chunk.id, error = %e, "disk read failed, refetching");
                                let (index, from, to, len) = (self.current_index, *pos, *end, chunk.len);
                                let budget = self.state.cache.budget().try_reserve(len);
                                let (prepared, hold) = self.prepare(index, budget);
                                self.current = Some(Self::start(prepared, from, to));
                                self.current_hold = hold;
                                continue;
                            }
                        }
                    }
                    Current::Disk { .. } => None,
                };
                match item {
                    Some(Ok(b)) => {
                        if *source == Source::Peer {
                            self.first_from_peer = true;
                        }
                        self.state.metrics.add_bytes(*source, b.len() as u64);
                        return Some(Ok(b));
                    }
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        self.current = None;
                        self.current_hold = None;
                    }
                }
            }
            self.prepare_ahead().await;
            let (slice, prepared, hold) = self.prepared.pop_front()?;
            self.current_index = slice.index;
            self.current_hold = hold;
            self.current = Some(Self::start(
                prepared,
                slice.offset,
                slice.offset + slice.len,
            ));
        }
    }
}

/// Fills one chunk: from peers when the cluster has it (or its owner reads it
/// from the origin for everyone), otherwise, or for the rest after a peer failure,
/// from the origin. `origin_only` fills (this node is the owner, asked by a peer)
/// go straight to the origin.
pub(crate) async fn run_fill(
    state: Arc<ProxyState>,
    mut writer: FillWriter,
    key: ObjectKey,
    meta: Arc<ObjectMeta>,
    range: ByteRange,
    origin_only: bool,
    access: OriginAccess,
) {
    let chunk_start = range.start;
    let mut range = range;
    if let Some(p2p) = state.peers().filter(|_| !origin_only) {
        let id = writer.fill().id();
        let chunk_size = state.cfg.chunk_size;
        let fetch = eliop2p_p2p::FetchRequest {
            bucket: key.bucket.clone(),
            key: key.key.clone(),
            etag: meta.etag.as_str().to_owned(),
            object_size: meta.size,
            chunk_size,
            index: range.start / chunk_size,
        };
        // A client's own authority cannot be lent to the chunk's owner: in
        // passthrough, peers only serve what they hold, and this node reads the
        // origin itself for the rest.
        let fetch = matches!(access, OriginAccess::Node).then_some(&fetch);
        match p2p
            .download(id, range.len(), &mut writer, fetch)
            .await
        {
            Ok(other_holders) => {
                match writer.finish() {
                    Ok(_) => state.cache.set_replicas(&id, other_holders as u32 + 1),
                    Err(e) => {
                        tracing::warn!(object = %key, error = %e, "chunk from peers incomplete")
                    }
                }
                return;
            }
            Err(incomplete) => {
                // The rest of the chunk comes from the origin, from the last
                // checkpoint: the fill is an origin fill again, which peers may await.
                writer.fill().set_from_peer(false);
                range = ByteRange::new(range.start + incomplete.delivered, range.end);
                tracing::debug!(object = %key, delivered = incomplete.delivered, "continuing from the origin");
            }
        }
    }
    crate::origin_fill::fill_from_origin(state, writer, key, meta, ByteRange::new(chunk_start, range.end), None, access).await;
}
