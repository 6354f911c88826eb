//! The read path under HTTP: an `ObjectReader` owns what reading an object needs
//! (origins and routes, the chunk cache, the metadata cache, the P2P handle, the
//! fills tracker, the read settings) and offers what every caller uses: metadata
//! (`lookup_meta`), a stream of any byte range (`ChunkStream`), a chunk fill
//! (`run_fill`: peers, then the origin), and warming a whole object (`warm`, for
//! preheat). HTTP handlers (`get`, `passthrough`, `forward`, `admin`) translate
//! requests into these calls and errors back into S3 answers; preheat,
//! fetch-through and replication call the reader directly. Nothing here knows HTTP
//! requests or responses to clients.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use eliop2p_cache::{Chunk, ChunkCache, DiskChunk, Fill, FillError, FillReader, FillWriter, Lookup, Reservation};
use eliop2p_core::{ByteRange, ChunkId, ChunkLayout, ChunkSlice, ObjectKey};
use eliop2p_origin::{ObjectMeta, OriginClient, OriginRequest};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use tokio_util::task::TaskTracker;

use crate::config::{AuthMode, ProxyConfig};
use crate::meta::{MetaCache, MetaError, MetaLookup};
use crate::metrics::{Metrics, Source};

pub(crate) mod origin_fill;
pub(crate) use origin_fill::{ClientRequest, OriginAccess};

/// An origin other than the default one, for some buckets.
pub(crate) struct Route {
    pub buckets: HashSet<String>,
    pub client: OriginClient,
    pub auth: AuthMode,
}

pub(crate) struct ObjectReader {
    /// The proxy's settings; the read path uses the chunk size, read-ahead and the
    /// origin fill bounds.
    pub cfg: ProxyConfig,
    /// The default origin (every bucket no route names).
    pub origin: OriginClient,
    pub routes: Vec<Route>,
    pub cache: ChunkCache,
    pub meta: MetaCache,
    pub metrics: Arc<Metrics>,
    pub p2p: Option<eliop2p_p2p::P2pHandle>,
    /// Chunk fills run here, detached from the requests that started them.
    pub fills: TaskTracker,
    /// Bounds this node's concurrent origin requests for chunk fills.
    pub origin_slots: Arc<tokio::sync::Semaphore>,
}

impl ObjectReader {
    pub fn new(
        cfg: ProxyConfig,
        origin: OriginClient,
        routes: Vec<Route>,
        cache: ChunkCache,
        metrics: Arc<Metrics>,
        p2p: Option<eliop2p_p2p::P2pHandle>,
    ) -> Self {
        let meta = MetaCache::new(cfg.metadata_ttl, cfg.metadata_max_entries, cfg.stale_if_error);
        let origin_slots = Arc::new(tokio::sync::Semaphore::new(cfg.origin_max_concurrent.max(1)));
        Self {
            cfg,
            origin,
            routes,
            cache,
            meta,
            metrics,
            p2p,
            fills: TaskTracker::new(),
            origin_slots,
        }
    }

    pub fn route_for(&self, bucket: Option<&str>) -> Option<&Route> {
        let b = bucket?;
        self.routes.iter().find(|r| r.buckets.contains(b))
    }

    /// The origin that serves a bucket.
    pub fn origin_for(&self, bucket: Option<&str>) -> &OriginClient {
        self.route_for(bucket).map_or(&self.origin, |r| &r.client)
    }

    /// The P2P layer, when it has peers to ask.
    pub fn peers(&self) -> Option<&eliop2p_p2p::P2pHandle> {
        self.p2p.as_ref().filter(|p| p.has_peers())
    }

    /// The id of chunk `index` of an object version: its origin, key, ETag and the
    /// chunk size.
    pub fn chunk_id(&self, key: &ObjectKey, meta: &ObjectMeta, index: u64) -> ChunkId {
        ChunkId::derive(
            self.origin_for(Some(&key.bucket)).origin_id(),
            key,
            &meta.etag,
            self.cfg.chunk_size,
            index,
        )
    }

    /// The chunk ids of an object version, for invalidation.
    pub fn all_chunk_ids(&self, key: &ObjectKey, meta: &ObjectMeta) -> Vec<ChunkId> {
        let n = ChunkLayout::new(self.cfg.chunk_size, meta.size).num_chunks();
        (0..n).map(|i| self.chunk_id(key, meta, i)).collect()
    }
}

/// Why an object could not be read without a client (`warm`).
pub(crate) enum WarmError {
    /// The origin refused the metadata request, or its answer was unusable: the
    /// node would relay a client's request as it is.
    NotCacheable,
    /// The metadata request failed.
    Meta(String),
    /// A chunk fill failed.
    Fill(FillError),
}

/// Why an object's metadata could not be had.
pub(crate) enum MetaFailure {
    /// The origin refused the metadata request, or its answer was unusable: the
    /// node relays a client's request as it is.
    NotCacheable,
    /// The origin could not be asked.
    Origin(String),
}

/// What the read path offers its callers (HTTP handlers, preheat, fetch-through,
/// replication).
impl ObjectReader {
    /// Where a response's chunks are cached: `Some(tier)` when every chunk is (the
    /// slowest tier involved, "memory" or "disk"), `None` otherwise; and the first
    /// chunk's tier.
    pub fn cached_tiers(
        &self,
        key: &ObjectKey,
        meta: &ObjectMeta,
        slices: &VecDeque<ChunkSlice>,
    ) -> (Option<&'static str>, Option<&'static str>) {
        let mut source = Some("memory");
        let mut first_tier = None;
        for (i, sl) in slices.iter().enumerate() {
            let tier = self.cache.is_cached(&self.chunk_id(key, meta, sl.index));
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

    /// Reads a whole object through the cache with the node's own credentials and no
    /// client, so its chunks land in the cache as a client read would put them there
    /// (cluster single flight, peers and read-ahead included). Returns its size.
    pub async fn warm(self: &Arc<Self>, key: &ObjectKey) -> Result<u64, WarmError> {
        // As `serve`: a fill that fails before the first byte (typically the object
        // changed) refreshes the metadata and starts over, once.
        let mut retried = false;
        loop {
            let meta = match self.lookup_meta(key).await {
                Ok(m) => m,
                Err(MetaFailure::NotCacheable) => return Err(WarmError::NotCacheable),
                Err(MetaFailure::Origin(e)) => return Err(WarmError::Meta(e)),
            };
            let layout = ChunkLayout::new(self.cfg.chunk_size, meta.size);
            let slices = layout.slices(ByteRange::new(0, meta.size)).collect();
            let mut stream = ChunkStream::new(self, key, &meta, slices, OriginAccess::Node);
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
            self.meta.invalidate(key);
            retried = true;
        }
    }

    pub async fn lookup_meta(self: &Arc<Self>, key: &ObjectKey) -> Result<Arc<ObjectMeta>, MetaFailure> {
        self.lookup_meta_or_stale(key).await.map(|(m, _)| m)
    }

    /// Metadata, or expired metadata with its age while the origin cannot be asked
    /// (stale-if-error: the caller serves it only from a complete cache).
    pub async fn lookup_meta_or_stale(
        self: &Arc<Self>,
        key: &ObjectKey,
    ) -> Result<(Arc<ObjectMeta>, Option<std::time::Duration>), MetaFailure> {
        let m = &self.metrics;
        let fetch = |refresh: bool| async move {
            // With peers, chunk 0 may come from them: learn the metadata by HEAD.
            if refresh || self.peers().is_some() {
                m.origin_head.fetch_add(1, Relaxed);
                MetaCache::head(self.origin_for(Some(&key.bucket)), key).await
            } else {
                self.first_chunk_meta(key).await
            }
        };
        match self.meta.get(key, fetch).await {
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
                Err(MetaFailure::NotCacheable)
            }
            MetaLookup::Fetched(Err(MetaError::Unusable)) => Err(MetaFailure::NotCacheable),
            MetaLookup::Fetched(Err(MetaError::Origin(e))) => {
                m.origin_errors.fetch_add(1, Relaxed);
                Err(MetaFailure::Origin(e.to_string()))
            }
        }
    }

    /// Metadata learned from a partial answer has no checksums: a client that asks
    /// for them gets them from one HEAD, kept with the metadata (same version only).
    pub async fn checksummed_meta(self: &Arc<Self>, key: &ObjectKey, meta: Arc<ObjectMeta>) -> Arc<ObjectMeta> {
        self.metrics.origin_head.fetch_add(1, Relaxed);
        match MetaCache::head(self.origin_for(Some(&key.bucket)), key).await {
            Ok(fresh) if fresh.etag.opaque() == meta.etag.opaque() && fresh.size == meta.size => {
                let mut m = (*meta).clone();
                m.checksums = fresh.checksums.clone();
                let m = Arc::new(m);
                self.meta.put(key, m.clone());
                m
            }
            _ => meta,
        }
    }

    /// Learns an object's metadata for the first time with a GET of its first chunk
    /// instead of a HEAD: one origin round trip instead of two for a cold read (which
    /// halves origin requests for small objects), and the body becomes chunk 0's fill.
    async fn first_chunk_meta(
        self: &Arc<Self>,
        key: &ObjectKey,
    ) -> Result<Arc<ObjectMeta>, MetaError> {
        let chunk_size = self.cfg.chunk_size;
        self.metrics.origin_get.fetch_add(1, Relaxed);
        let mut req = OriginRequest::new(Method::GET, &key.bucket, Some(&key.key));
        let range = format!("bytes=0-{}", chunk_size - 1);
        req.headers
            .insert(header::RANGE, HeaderValue::from_str(&range).expect("ascii"));
        // An object within one chunk comes whole: with its checksums.
        req.headers
            .insert(eliop2p_origin::CHECKSUM_MODE, HeaderValue::from_static("ENABLED"));
        let resp = self
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
                self.metrics.origin_head.fetch_add(1, Relaxed);
                return MetaCache::head(self.origin_for(Some(&key.bucket)), key).await;
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
        let hold = self.cache.budget().reserve(first.len()).await;
        if let Lookup::Leader(writer) = self
            .cache
            .lookup(self.chunk_id(key, &meta, 0), first.len())
        {
            let fill = origin_fill::fill_from_origin(
                self.clone(),
                writer,
                key.clone(),
                meta.clone(),
                first,
                Some(resp.into_body()),
                OriginAccess::Node,
            );
            self.fills.spawn(async move {
                fill.await;
                drop(hold);
            });
        }
        Ok(meta)
    }

    /// Fills one chunk: from peers when the cluster has it (or its owner reads it
    /// from the origin for everyone), otherwise, or for the rest after a peer failure,
    /// from the origin. `origin_only` fills (this node is the owner, asked by a peer)
    /// go straight to the origin.
    pub async fn run_fill(
        self: Arc<Self>,
        mut writer: FillWriter,
        key: ObjectKey,
        meta: Arc<ObjectMeta>,
        range: ByteRange,
        origin_only: bool,
        access: OriginAccess,
    ) {
        let chunk_start = range.start;
        let mut range = range;
        if let Some(p2p) = self.peers().filter(|_| !origin_only) {
            let id = writer.fill().id();
            let chunk_size = self.cfg.chunk_size;
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
            // Should this node take the chunk over mid-download (its owner died),
            // it reads from the origin only what no peer has.
            let origin: Arc<dyn eliop2p_p2p::PieceOrigin> = Arc::new(origin_fill::TakeoverOrigin {
                reader: self.clone(),
                key: key.clone(),
                meta: meta.clone(),
                chunk: range,
                access: access.clone(),
            });
            match p2p
                .download(id, range.len(), &mut writer, fetch, Some(&origin))
                .await
            {
                Ok(other_holders) => {
                    match writer.finish() {
                        Ok(_) => self.cache.set_replicas(&id, other_holders as u32 + 1),
                        Err(e) => {
                            tracing::warn!(object = %key, error = %e, "chunk from peers incomplete")
                        }
                    }
                    return;
                }
                Err(incomplete) => {
                    // The pieces no peer delivered come from the origin (those
                    // delivered out of order stay): the fill is an origin fill
                    // again, which peers may await.
                    writer.fill().set_from_peer(false);
                    range = ByteRange::new(range.start + incomplete.delivered, range.end);
                    tracing::debug!(object = %key, delivered = incomplete.delivered, "continuing from the origin");
                }
            }
        }
        origin_fill::fill_from_origin(self.clone(), writer, key, meta, ByteRange::new(chunk_start, range.end), None, access).await;
    }
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

/// Disk reads are issued in blocks of this size (a multiple of the piece size).
const DISK_READ_BLOCK: u64 = 4 << 20;

/// Streams the chunk slices of one response, with read-ahead fills for the next
/// chunks of the same range.
pub(crate) struct ChunkStream {
    pub(crate) reader: Arc<ObjectReader>,
    pub(crate) key: ObjectKey,
    meta: Arc<ObjectMeta>,
    unprepared: VecDeque<ChunkSlice>,
    /// Each with its share of the in-flight budget (`None`: in memory or on disk).
    prepared: VecDeque<(ChunkSlice, Prepared, Option<Arc<Reservation>>)>,
    current: Option<(Current, Source)>,
    /// The budget share of the chunk being sent, released when it is sent.
    current_hold: Option<Arc<Reservation>>,
    current_index: u64,
    /// The first bytes of the response came from peers.
    pub(crate) first_from_peer: bool,
    /// Whose authority the fills this response starts read the origin with.
    access: OriginAccess,
}

impl ChunkStream {
    pub(crate) fn new(
        reader: &Arc<ObjectReader>,
        key: &ObjectKey,
        meta: &Arc<ObjectMeta>,
        slices: VecDeque<ChunkSlice>,
        access: OriginAccess,
    ) -> Self {
        Self {
            reader: reader.clone(),
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
        let layout = ChunkLayout::new(self.reader.cfg.chunk_size, self.meta.size);
        let chunk_range = layout.chunk_range(index);
        let id = self.reader.chunk_id(&self.key, &self.meta, index);
        match self.reader.cache.lookup(id, chunk_range.len()) {
            Lookup::Hit(chunk) => (Prepared::Ready(chunk), None),
            Lookup::Disk(chunk) => (Prepared::Disk(chunk), None),
            Lookup::Joined(fill) => (Prepared::Fill(fill), hold.map(Arc::new)),
            Lookup::Leader(writer) => {
                // Marked as fed by peers only once peers are found to hold it
                // (`download`): until then it is an origin fill that the cluster may
                // be offered, so this node's owner role never leaves a gap.
                let fill = writer.fill().clone();
                let access = self.access.clone();
                let reader = self.reader.clone();
                let key = self.key.clone();
                let meta = self.meta.clone();
                let hold = hold.map(Arc::new);
                let fill_hold = hold.clone();
                // The fill runs on its own task: a client that goes away neither
                // cancels it for others nor leaves a partial chunk. The task keeps
                // the chunk's budget share until the fill ends.
                self.reader.fills.spawn(async move {
                    reader.run_fill(writer, key, meta, chunk_range, false, access).await;
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
        let window = 1 + self.reader.cfg.readahead_chunks;
        let layout = ChunkLayout::new(self.reader.cfg.chunk_size, self.meta.size);
        let budget = self.reader.cache.budget().clone();
        while self.prepared.len() < window {
            let Some(slice) = self.unprepared.pop_front() else {
                break;
            };
            let id = self.reader.chunk_id(&self.key, &self.meta, slice.index);
            let len = layout.chunk_range(slice.index).len();
            let hold = if self.reader.cache.is_cached(&id).is_some() {
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

    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, FillError>> {
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
                                let budget = self.reader.cache.budget().try_reserve(len);
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
                        self.reader.metrics.add_bytes(*source, b.len() as u64);
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
