//! GetObject and HeadObject: HTTP in front of the read path (`read`): headers,
//! conditionals, ranges, and the read's errors as S3 answers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use bytes::Bytes;
use eliop2p_cache::FillError;
use eliop2p_core::range::{RangeError, RangeRequest};
use eliop2p_core::{ByteRange, ChunkLayout, ChunkSlice, ObjectKey};
use eliop2p_origin::ObjectMeta;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::body::{BoxError, ProxyBody};
use crate::read::OriginAccess;
use crate::read::{ChunkStream, MetaFailure};
use crate::state::ProxyState;

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
            None => match state.reader.lookup_meta_or_stale(&key).await {
                Ok(m) => m,
                Err(MetaFailure::NotCacheable) => return Outcome::Forward,
                Err(MetaFailure::Origin(e)) => {
                    let msg = format!("origin request failed: {e}");
                    return Outcome::Response(state.bad_gateway(&msg, &crate::state::resource(&key)));
                }
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
            state.reader.checksummed_meta(&key, meta).await
        } else {
            meta
        };
        let (status, range) = match requested_range(state, req.headers(), &meta, &key) {
            Ok(r) => r,
            Err(resp) => return Outcome::Response(*resp),
        };
        let layout = ChunkLayout::new(state.cfg.chunk_size, meta.size);
        let slices: VecDeque<ChunkSlice> = layout.slices(range).collect();
        let (source, first_tier) = state.reader.cached_tiers(&key, &meta, &slices);
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
        let head = Head { status, range, stale, source, first_tier, checksums: wants_checksums };
        if stale.is_some() {
            state.reader.metrics.stale_served.fetch_add(1, Relaxed);
        }
        let mut resp = response_head(&head, &meta);
        if req.method() == Method::HEAD || range.is_empty() {
            return Outcome::Response(resp.body(ProxyBody::Empty).expect("valid response parts"));
        }
        let mut stream = ChunkStream::new(&state.reader, &key, &meta, slices, access.clone());
        // Wait for the first bytes before committing to a status: an early failure
        // still gets a clean error response instead of a cut body.
        let first = match stream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                tracing::warn!(object = %key, error = %e, culprit = ?e.culprit(), attempt, "fill failed before the first byte");
                // Typically the object changed: fresh metadata, and one more try
                // unless the origin refused this authority (that stands).
                state.reader.meta.invalidate(&key);
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
        return Outcome::Response(resp.body(stream_body(first, stream, range.len())).expect("valid response parts"));
    }
    unreachable!("the loop returns on its last attempt")
}

/// What a cached answer's head says besides the object's own headers.
struct Head {
    status: StatusCode,
    range: ByteRange,
    /// Served on expired metadata (the origin down) this old.
    stale: Option<std::time::Duration>,
    /// Every chunk cached (the slowest tier), and the first chunk's tier.
    source: Option<&'static str>,
    first_tier: Option<&'static str>,
    /// The client asked for the object's checksums.
    checksums: bool,
}

/// The status and headers of a cached answer: the object's headers, checksums
/// when asked for a whole object, the stale warning, length and range, and where
/// the bytes come from (`x-cache`, `x-cache-source`).
fn response_head(h: &Head, meta: &ObjectMeta) -> http::response::Builder {
    let mut resp = Response::builder().status(h.status);
    let headers = resp.headers_mut().expect("builder without errors so far");
    object_headers(headers, meta);
    // As S3 does: the whole object's checksums on a whole-object answer, when
    // asked (clients such as botocore then validate the body against them).
    if h.checksums
        && h.status == StatusCode::OK
        && let Some(sums) = &meta.checksums
    {
        for (n, v) in sums {
            headers.insert(n.clone(), v.clone());
        }
    }
    if let Some(age) = h.stale {
        // RFC 9111's stale answer: the cached version, not revalidated.
        headers.insert("x-cache-stale", HeaderValue::from(age.as_secs()));
        headers.insert(header::WARNING, HeaderValue::from_static("110 eliop2p \"Response is Stale\""));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(h.range.len()));
    if h.status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&h.range.content_range(meta.size))
    {
        headers.insert(header::CONTENT_RANGE, v);
    }
    headers.insert(
        "x-cache",
        HeaderValue::from_static(if h.source.is_some() { "HIT" } else { "MISS" }),
    );
    headers.insert(
        "x-cache-source",
        HeaderValue::from_static(h.source.or(h.first_tier).unwrap_or("origin")),
    );
    resp
}

/// The body of an answer whose first bytes are in hand: the rest of the stream,
/// cut with an error (the client sees a short body, never wrong bytes) if a fill
/// fails after the head was sent.
fn stream_body(first: Bytes, stream: ChunkStream, len: u64) -> ProxyBody {
    let body = futures_util::stream::unfold((Some(first), stream), |(first, mut stream)| async move {
        if let Some(b) = first {
            return Some((Ok(b), (None, stream)));
        }
        match stream.next().await? {
            Ok(b) => Some((Ok(b), (None, stream))),
            Err(e) => {
                stream.reader.metrics.aborted_responses.fetch_add(1, Relaxed);
                tracing::warn!(object = %stream.key, error = %e, "aborting response after a failed fill");
                Some((Err(Box::new(e) as BoxError), (None, stream)))
            }
        }
    });
    ProxyBody::stream(Box::pin(body), len)
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

