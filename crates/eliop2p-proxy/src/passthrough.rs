//! Authentication passthrough (`proxy.auth = "passthrough"`) and forward-proxy
//! requests: the client's request goes to the origin exactly as received (method,
//! raw path and query, `Host`, every signed header), so the origin checks the
//! client's own signature or presigned URL.
//!
//! A cached object is never served on the cache's word alone: every request is
//! first sent to the origin, with an added (unsigned) `If-None-Match` carrying the
//! cached ETag. A 304, or a 2xx for the same ETag (origins that ignore the condition;
//! the body is dropped unread), authorizes serving the cached bytes; anything else
//! (403, 404, a new version) is relayed as the origin sent it. A miss streams the
//! origin's own response and caches the whole chunks it covers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use eliop2p_cache::{FillWriter, Lookup};
use eliop2p_core::range::RangeRequest;
use eliop2p_core::{ChunkLayout, ETag, ObjectKey};
use eliop2p_origin::ObjectMeta;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{BoxError, ProxyBody};
use crate::get::{self, Outcome};
use crate::metrics::Source;
use crate::state::ProxyState;

/// Where a forward-proxy request goes (the scheme and host the client named).
pub(crate) type Destination = Option<(http::uri::Scheme, http::uri::Authority)>;

/// Request headers that belong to the hop to the node, not to the origin.
fn is_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

fn is_conditional(h: &HeaderMap) -> bool {
    [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|n| h.contains_key(n))
}

/// The cached metadata of an object when every chunk the request needs is held
/// locally, so the only origin round trip is the authorization.
fn local_hit(state: &ProxyState, key: &ObjectKey, headers: &HeaderMap) -> Option<Arc<ObjectMeta>> {
    let meta = state.reader.meta.peek(key)?;
    let range = match headers.get(header::RANGE) {
        None => eliop2p_core::ByteRange::new(0, meta.size),
        Some(v) => match RangeRequest::parse(v.to_str().ok()?) {
            Ok(RangeRequest::Single(spec)) => spec.resolve(meta.size).ok()?,
            Ok(RangeRequest::Multiple) => eliop2p_core::ByteRange::new(0, meta.size),
            Err(_) => return None,
        },
    };
    let layout = ChunkLayout::new(state.cfg.chunk_size, meta.size);
    layout
        .slices(range)
        .all(|sl| {
            state
                .reader
                .cache
                .is_cached(&state.reader.chunk_id(key, &meta, sl.index))
                .is_some()
        })
        .then_some(meta)
}

/// Relays a request as-is; for a cacheable GET/HEAD of `key`, answers from the
/// cache when the origin authorizes it, and caches what a miss brings.
pub(crate) async fn handle(
    state: &Arc<ProxyState>,
    req: Request<Incoming>,
    key: Option<ObjectKey>,
    bucket: Option<String>,
    dest: Destination,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let resource = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut headers = end_to_end(&parts.headers);
    let read = matches!(parts.method, Method::GET | Method::HEAD);
    let mutates = matches!(parts.method, Method::PUT | Method::POST | Method::DELETE);
    // Only the configured origin's objects are cached.
    let key = key.filter(|_| dest.is_none() && read);
    let hit = key
        .as_ref()
        .filter(|_| !is_conditional(&parts.headers))
        .and_then(|k| local_hit(state, k, &parts.headers));
    let proof = credential_proof(&parts.headers, parts.uri.query());
    if let (Some(meta), Some(key)) = (&hit, &key)
        && recently_authorized(state, proof.as_ref(), key, &parts, meta)
    {
        state.metrics.passthrough_authorized.fetch_add(1, Relaxed);
        state
            .metrics
            .passthrough_auth_cache_hits
            .fetch_add(1, Relaxed);
        return serve_authorized(state, parts, key, meta).await;
    }
    let cluster = key.as_ref().filter(|k| through_cluster(state, k, &parts));
    let hit = if cluster.is_some() { None } else { hit };
    let known = cluster.and_then(|k| state.reader.meta.peek(k));
    // The headers as the client sent them, should the probe not tell.
    let as_sent = cluster.is_some().then(|| headers.clone());
    if cluster.is_some() {
        headers.remove(header::RANGE);
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
    }
    if let Some(meta) = hit.as_ref().or(known.as_ref())
        && let Ok(v) = HeaderValue::from_str(meta.etag.as_str())
    {
        headers.insert(header::IF_NONE_MATCH, v);
    }
    let body = declared_body(&parts.headers, body);
    let target = crate::request::S3Target {
        bucket: key.as_ref().map(|k| k.bucket.clone()),
        key: key.as_ref().map(|k| k.key.clone()),
    };
    if mutates {
        state.invalidate_target(&target);
    }
    state.metrics.origin_forward.fetch_add(1, Relaxed);
    let dest_ref = dest.as_ref().map(|(s, a)| (s, a));
    let sent = state
        .origin_for(bucket.as_deref())
        .send_as_is(
            parts.method.clone(),
            &path_and_query,
            headers,
            body,
            dest_ref,
        )
        .await;
    let sent = match (cluster.zip(as_sent), sent) {
        (Some((key, as_sent)), Ok(probe)) => match authorized_version(state, key, known.as_ref(), probe, &parts.headers).await {
            Probe::Authorized(meta) => {
                authorized(state, proof.as_ref(), key, &parts.method, &meta);
                let key = key.clone();
                return serve_authorized(state, parts, &key, &meta).await;
            }
            Probe::Answer(r) => Ok(r),
            // The origin ignored the range or the object is empty: the request
            // as the client sent it.
            Probe::AsSent => {
                state.metrics.origin_forward.fetch_add(1, Relaxed);
                state
                    .origin_for(bucket.as_deref())
                    .send_as_is(parts.method.clone(), &path_and_query, as_sent, eliop2p_origin::empty_body(), None)
                    .await
            }
        },
        (_, sent) => sent,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            state.metrics.origin_errors.fetch_add(1, Relaxed);
            return state.bad_gateway(&format!("origin request failed: {e}"), &resource);
        }
    };
    if mutates {
        state.invalidate_target(&target);
    }
    if let (Some(meta), Some(key)) = (&hit, &key)
        && confirms(&resp, meta)
    {
        // Authorized for this version: the cached bytes answer. An unread body
        // is dropped with its connection.
        drop(resp);
        authorized(state, proof.as_ref(), key, &parts.method, meta);
        return serve_authorized(state, parts, key, meta).await;
    }
    relay(state, &parts, key.as_ref(), resp)
}

/// An authorization the origin gave this exact credential proof (signature) for
/// this object version and method within `proxy.auth_cache_ttl`: no round trip.
/// Only while the signature itself is still valid: the origin would refuse an
/// expired presigned URL, so the node does too, cached authorization or not.
fn recently_authorized(
    state: &ProxyState,
    proof: Option<&[u8; 32]>,
    key: &ObjectKey,
    parts: &http::request::Parts,
    meta: &ObjectMeta,
) -> bool {
    let fresh = signature_valid_until(&parts.headers, parts.uri.query())
        .is_some_and(|t| std::time::SystemTime::now() < t);
    fresh && proof.is_some_and(|p| state.auth_cache.allowed(p, key, &parts.method, &meta.etag))
}

/// The origin authorized this client for `meta`'s version: counted, and the
/// client's credential proof remembered for `proxy.auth_cache_ttl`.
fn authorized(state: &ProxyState, proof: Option<&[u8; 32]>, key: &ObjectKey, method: &Method, meta: &ObjectMeta) {
    state.metrics.passthrough_authorized.fetch_add(1, Relaxed);
    if let Some(proof) = proof {
        state.auth_cache.record(proof, key, method, &meta.etag);
    }
}

/// The request's end-to-end headers (hop-by-hop ones dropped).
fn end_to_end(h: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (n, v) in h {
        if !is_hop_header(n) {
            headers.append(n.clone(), v.clone());
        }
    }
    headers
}

/// A plain GET the origin can authorize without sending the object (a one-byte
/// probe of the client's own request): the bytes then come from this node, its
/// peers, or the client's own ranged requests.
fn through_cluster(state: &ProxyState, key: &ObjectKey, parts: &http::request::Parts) -> bool {
    parts.method == Method::GET
        && !is_conditional(&parts.headers)
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
        && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && !signs_range(&parts.headers, parts.uri.query())
        && (state.peers().is_some() || state.reader.meta.peek(key).is_some())
}

/// The body the request declares, whatever its method: relaying the header
/// without it would leave the origin waiting for bytes that never come.
fn declared_body(h: &HeaderMap, body: Incoming) -> eliop2p_origin::OriginBody {
    let has_body = h.get(header::CONTENT_LENGTH).is_some_and(|v| v != "0")
        || h.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        body.map_err(Into::into).boxed()
    } else {
        eliop2p_origin::empty_body()
    }
}

/// Whether the origin's answer authorizes the client for the cached version: a
/// 304, or a 2xx naming its ETag.
fn confirms<B>(resp: &http::Response<B>, meta: &ObjectMeta) -> bool {
    let status = resp.status();
    status == StatusCode::NOT_MODIFIED
        || status.is_success()
            && resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|e| ETag::new(e).opaque() == meta.etag.opaque())
}

/// The origin's answer to a request sent as received, relayed as it came; what a
/// GET brings is cached (the whole chunks it covers).
fn relay(
    state: &Arc<ProxyState>,
    parts: &http::request::Parts,
    key: Option<&ObjectKey>,
    resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let status = resp.status();
    if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
        state.metrics.passthrough_denied.fetch_add(1, Relaxed);
    }
    // The node's reading of a virtual-host request may not be the origin's (a
    // path-style origin reads the path's first segment as the bucket; S3 reads an
    // unknown Host as a CNAME bucket): its answers never evict or replace what the
    // node holds, only fill what it does not.
    let certain = !crate::request::is_virtual_host(&parts.headers, &state.cfg.virtual_host_domains);
    if let Some(key) = key
        && status == StatusCode::NOT_FOUND
        && certain
    {
        state.invalidate_target(&crate::request::S3Target {
            bucket: Some(key.bucket.clone()),
            key: Some(key.key.clone()),
        });
    }
    let (rparts, rbody) = resp.into_parts();
    let mut out = Response::new(ProxyBody::Empty);
    *out.status_mut() = rparts.status;
    for (name, value) in &rparts.headers {
        if !crate::forward::is_hop_by_hop_response_header(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    let h = out.headers_mut();
    h.insert("x-cache", HeaderValue::from_static("MISS"));
    h.insert("x-cache-source", HeaderValue::from_static("origin"));
    // What a GET brings is cached: the whole chunks it covers.
    let learned = match (key, parts.method == Method::GET, status) {
        (Some(key), true, StatusCode::OK) => {
            ObjectMeta::from_headers(&rparts.headers).map(|m| (key, m, 0u64))
        }
        (Some(key), true, StatusCode::PARTIAL_CONTENT) => {
            ObjectMeta::from_partial_response(&rparts.headers).and_then(|m| {
                let start = content_range_start(&rparts.headers)?;
                Some((key, m, start))
            })
        }
        _ => None,
    };
    let len = rparts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match (learned, len) {
        (Some((key, meta, start)), Some(len))
            if parts.method == Method::GET
                && (certain || state.reader.meta.peek(key).is_none_or(|old| old.etag.opaque() == meta.etag.opaque())) =>
        {
            let meta = Arc::new(meta);
            if let Some(old) = state.reader.meta.peek(key)
                && old.etag.opaque() != meta.etag.opaque()
            {
                state.invalidate_target(&crate::request::S3Target {
                    bucket: Some(key.bucket.clone()),
                    key: Some(key.key.clone()),
                });
            }
            state.reader.meta.put(key, meta.clone());
            let tee = Tee {
                state: state.clone(),
                key: key.clone(),
                meta,
                pos: start,
                end: start + len,
                writer: None,
            };
            *out.body_mut() = ProxyBody::stream(Box::pin(tee.stream(rbody)), len);
        }
        _ => *out.body_mut() = ProxyBody::Origin(rbody),
    }
    out
}

/// The exact proof a request carries: its `Authorization` header, or the
/// signature parameter of a presigned URL (S3 V4/V2, OSS). Hashed; never a key id
/// alone, so a cached authorization only serves the very same signature again.
fn credential_proof(headers: &HeaderMap, query: Option<&str>) -> Option<[u8; 32]> {
    use sha2::Digest;
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        return Some(sha2::Sha256::digest(a.as_bytes()).into());
    }
    let q = query?;
    q.split('&')
        .find(|p| {
            let name = p.split_once('=').map_or(*p, |(n, _)| n);
            name.eq_ignore_ascii_case("X-Amz-Signature") || name == "Signature"
        })
        .map(|p| sha2::Sha256::digest(p.as_bytes()).into())
}

/// Until when a request's signature is valid by its own dates: a presigned URL's
/// date plus its expiry (SigV4 `X-Amz-Date` and `X-Amz-Expires`, OSS V4
/// `x-oss-date` and `x-oss-expires`, SigV2 and OSS V1 `Expires`), a signed
/// header's request date (`x-amz-date`, `x-oss-date`, `Date`) plus the allowed
/// clock skew. `None`: no date to go by.
fn signature_valid_until(headers: &HeaderMap, query: Option<&str>) -> Option<std::time::SystemTime> {
    use std::time::{Duration, SystemTime};
    let pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| {
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    let q = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let secs = |v: &str| v.trim().parse::<u64>().ok().map(Duration::from_secs);
    for (date, expires) in [("x-amz-date", "x-amz-expires"), ("x-oss-date", "x-oss-expires")] {
        if let (Some(d), Some(e)) = (q(date), q(expires)) {
            return Some(crate::sigv4::parse_amz_date(d)? + secs(e)?);
        }
    }
    if let Some(e) = q("expires") {
        return Some(SystemTime::UNIX_EPOCH + secs(e)?);
    }
    if headers.contains_key(header::AUTHORIZATION) {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let at = match (h("x-amz-date").or(h("x-oss-date")), h("date")) {
            (Some(d), _) => crate::sigv4::parse_amz_date(d).or_else(|| httpdate::parse_http_date(d).ok())?,
            (None, Some(d)) => httpdate::parse_http_date(d).ok()?,
            (None, None) => return None,
        };
        return Some(at + crate::sigv4::MAX_SKEW);
    }
    None
}

/// What the origin said to a client's GET sent as a one-byte probe.
enum Probe {
    /// This version is the client's to read.
    Authorized(Arc<ObjectMeta>),
    /// The origin's answer, to relay as it is (a refusal, a redirect, ...).
    Answer(Response<Incoming>),
    /// The probe cannot tell: send the request as the client sent it.
    AsSent,
}

async fn authorized_version(
    state: &Arc<ProxyState>,
    key: &ObjectKey,
    known: Option<&Arc<ObjectMeta>>,
    probe: Response<Incoming>,
    request: &HeaderMap,
) -> Probe {
    match probe.status() {
        StatusCode::NOT_MODIFIED => match known {
            Some(m) => Probe::Authorized(m.clone()),
            None => Probe::AsSent,
        },
        StatusCode::PARTIAL_CONTENT => {
            let Some(meta) = ObjectMeta::from_partial_response(probe.headers()) else {
                return Probe::AsSent;
            };
            let meta = match known {
                Some(old) if old.etag.opaque() == meta.etag.opaque() && old.size == meta.size => old.clone(),
                // The origin may read a virtual-host request as another object
                // than the node does: its answer never replaces what the node
                // holds (the request goes as sent, as in `handle`).
                Some(_) if crate::request::is_virtual_host(request, &state.cfg.virtual_host_domains) => {
                    return Probe::AsSent;
                }
                _ => {
                    if known.is_some() {
                        state.invalidate_target(&crate::request::S3Target {
                            bucket: Some(key.bucket.clone()),
                            key: Some(key.key.clone()),
                        });
                    }
                    let meta = Arc::new(meta);
                    state.reader.meta.put(key, meta.clone());
                    meta
                }
            };
            // One byte: read it, so the connection goes back to the pool.
            let small = probe
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "1");
            if small {
                let _ = tokio::time::timeout(state.cfg.fill_idle_timeout, probe.into_body().collect()).await;
            }
            Probe::Authorized(meta)
        }
        s if s.is_success() || s == StatusCode::RANGE_NOT_SATISFIABLE => Probe::AsSent,
        _ => Probe::Answer(probe),
    }
}

/// Whether a request's signature covers its `Range` header (SigV4 `SignedHeaders`,
/// OSS V4 `AdditionalHeaders`, in the header or a presigned URL's query): then
/// the node may not change or add one.
fn signs_range(headers: &HeaderMap, query: Option<&str>) -> bool {
    let lists = |s: &str| -> bool {
        s.split(';').any(|h| h.trim().eq_ignore_ascii_case("range"))
    };
    let in_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split([',', ' ']).any(|p| {
                let p = p.trim();
                p.strip_prefix("SignedHeaders=")
                    .or_else(|| p.strip_prefix("AdditionalHeaders="))
                    .is_some_and(lists)
            })
        });
    let in_query = query.unwrap_or("").split('&').any(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        (n.eq_ignore_ascii_case("X-Amz-SignedHeaders") || n.eq_ignore_ascii_case("x-oss-additional-headers"))
            && lists(&percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    });
    in_header || in_query
}

/// The client's request, to re-send for the ranges a fill needs.
fn client_request(parts: &http::request::Parts) -> crate::read::ClientRequest {
    let mut headers = HeaderMap::new();
    for (n, v) in &parts.headers {
        if !is_hop_header(n) && n != header::RANGE {
            headers.append(n.clone(), v.clone());
        }
    }
    crate::read::ClientRequest {
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers,
    }
}

/// Answers a request the origin authorized for this version from the cache, the
/// cluster's peers, and for what nobody holds, the client's own ranged requests.
async fn serve_authorized(
    state: &Arc<ProxyState>,
    parts: http::request::Parts,
    key: &ObjectKey,
    meta: &Arc<ObjectMeta>,
) -> Response<ProxyBody> {
    let access = crate::read::OriginAccess::Client(Arc::new(client_request(&parts)));
    let req = Request::from_parts(parts, ());
    match get::serve(state, &req, key.clone(), Some(meta.clone()), access).await {
        Outcome::Response(r) => r,
        Outcome::Forward => state.bad_gateway(
            "cached object could not be served",
            &crate::state::resource(key),
        ),
    }
}

fn content_range_start(h: &HeaderMap) -> Option<u64> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.strip_prefix("bytes ")?.split('/').next()?;
    range.split('-').next()?.trim().parse().ok()
}

/// Streams an origin body to the client and into fills of the whole chunks it
/// covers. A chunk whose bytes are incomplete (client gone, origin cut) is
/// abandoned and never cached.
struct Tee {
    state: Arc<ProxyState>,
    key: ObjectKey,
    meta: Arc<ObjectMeta>,
    /// Object offset of the next byte.
    pos: u64,
    end: u64,
    writer: Option<(FillWriter, u64)>,
}

impl Tee {
    fn feed(&mut self, data: &[u8]) {
        let cs = self.state.cfg.chunk_size;
        let layout = ChunkLayout::new(cs, self.meta.size);
        let mut off = 0usize;
        while off < data.len() {
            let abs = self.pos + off as u64;
            if self.writer.is_none() && abs.is_multiple_of(cs) && abs < self.meta.size {
                let index = abs / cs;
                let r = layout.chunk_range(index);
                if r.end <= self.end {
                    let id = self.state.reader.chunk_id(&self.key, &self.meta, index);
                    if let Lookup::Leader(w) = self.state.reader.cache.lookup(id, r.len()) {
                        self.writer = Some((w, r.end));
                    }
                }
            }
            let n = match &mut self.writer {
                Some((w, chunk_end)) => {
                    let n = (data.len() - off).min((*chunk_end - abs) as usize);
                    let full = abs + n as u64 == *chunk_end;
                    if w.push(&data[off..off + n]).is_err() {
                        self.writer = None;
                    } else if full && let Some((w, _)) = self.writer.take() {
                        let _ = w.finish();
                    }
                    n
                }
                None => {
                    let next = (abs / cs + 1) * cs;
                    (data.len() - off).min((next - abs) as usize)
                }
            };
            off += n;
        }
        self.pos += data.len() as u64;
    }

    fn stream(
        self,
        body: Incoming,
    ) -> impl futures_util::Stream<Item = Result<Bytes, BoxError>> + Send {
        futures_util::stream::unfold(Some((self, body)), |st| async move {
            let (mut tee, mut body) = st?;
            loop {
                match body.frame().await {
                    None => return None,
                    Some(Err(e)) => return Some((Err(Box::new(e) as BoxError), None)),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            tee.feed(&data);
                            tee.state
                                .metrics
                                .add_bytes(Source::Origin, data.len() as u64);
                            return Some((Ok(data), Some((tee, body))));
                        }
                    }
                }
            }
        })
    }
}
