//! Relaying requests the cache does not answer (ListObjectsV2, PutObject,
//! DeleteObject, multipart uploads, ...) to the origin, re-signed with the node's
//! credentials, streaming both bodies.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use eliop2p_origin::OriginRequest;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::request::S3Target;
use crate::state::ProxyState;

/// Headers that belong to one hop or to the client's own signature.
fn is_dropped_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
            | "x-amz-date"
            | "x-amz-security-token"
    )
}

pub(crate) fn is_hop_by_hop_response_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Query parameters of a client's presigned URL: the node signs with its own
/// credentials, so they must not reach the origin, and they never enter a cache key.
pub(crate) fn is_signature_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "x-amz-algorithm"
            | "x-amz-credential"
            | "x-amz-date"
            | "x-amz-expires"
            | "x-amz-signedheaders"
            | "x-amz-signature"
            | "x-amz-security-token"
            | "awsaccesskeyid"
            | "signature"
            | "expires"
            // OSS presigned URLs (V1, and V4's x-oss-* parameters).
            | "ossaccesskeyid"
            | "security-token"
            | "x-oss-signature"
            | "x-oss-signature-version"
            | "x-oss-credential"
            | "x-oss-date"
            | "x-oss-expires"
            | "x-oss-additional-headers"
            | "x-oss-security-token"
    )
}

/// The query without signature parameters (raw, still encoded).
/// The query relayed to an S3 or OSS origin: without the client's signature
/// parameters, and with each `+` spelled `%20`: S3 reads a `+` in a query as a
/// space (form encoding) and signs what it read, so a literal `+` signed by the
/// node would not match.
pub(crate) fn strip_signature_params(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(n, _)| n);
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            !is_signature_param(&name)
        })
        .map(|p| p.replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) async fn forward(
    state: &Arc<ProxyState>,
    req: Request<Incoming>,
    target: S3Target,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let resource = parts.uri.path().to_owned();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !is_dropped_request_header(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(sha) = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        && sha.starts_with("STREAMING-AWS4-HMAC-SHA256")
    {
        // aws-chunked bodies carry per-chunk signatures chained to the client's own
        // signing key; the node cannot re-sign them in node auth mode.
        return state.error_at(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "chunk-signed (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) uploads cannot be re-signed by the node; send a signed or UNSIGNED-PAYLOAD body",
            &resource,
        );
    }
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        && parts.headers[header::CONTENT_LENGTH] != "0"
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let origin = state.origin_for(target.bucket.as_deref());
    let query = if origin.is_plain_http() {
        // Not S3: the query belongs to the resource (signed CDN URLs included).
        parts.uri.query().map(str::to_owned)
    } else {
        parts.uri.query().map(strip_signature_params)
    };
    let origin_req = OriginRequest {
        method: parts.method.clone(),
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        query,
        headers,
        body: has_body.then(|| body.map_err(Into::into).boxed()),
    };
    // What the node holds of the object is dropped once the origin has answered
    // a write, unless it refused it (a 3xx or 4xx changed nothing): dropping it
    // before let any client of a node with read-only keys evict objects with
    // writes the origin refuses. Until the origin answers, readers get the version
    // the write has not replaced yet, as they would from the origin.
    let mutates = matches!(parts.method, Method::PUT | Method::POST | Method::DELETE);
    state.metrics.origin_forward.fetch_add(1, Relaxed);
    let resp = match origin.send(origin_req).await {
        Ok(r) => r,
        // A request the node cannot express to this origin is the client's to fix.
        Err(eliop2p_origin::OriginError::InvalidRequest(m)) => {
            return state.error_at(StatusCode::BAD_REQUEST, "InvalidArgument", &m, &resource);
        }
        Err(e) => {
            state.metrics.origin_errors.fetch_add(1, Relaxed);
            if mutates {
                // The write may have been applied before the failure.
                state.invalidate_target(&target);
            }
            return state.bad_gateway(&format!("origin request failed: {e}"), &resource);
        }
    };
    if mutates && !(resp.status().is_client_error() || resp.status().is_redirection()) {
        state.invalidate_target(&target);
    }
    let (rparts, rbody) = resp.into_parts();
    let mut out = Response::new(ProxyBody::Origin(rbody));
    *out.status_mut() = rparts.status;
    for (name, value) in &rparts.headers {
        if !is_hop_by_hop_response_header(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_presign_params_only() {
        let q = "list-type=2&X-Amz-Signature=abc&prefix=a%2Fb&X-Amz-Credential=x&x-id=GetObject";
        assert_eq!(
            super::strip_signature_params(q),
            "list-type=2&prefix=a%2Fb&x-id=GetObject"
        );
        assert_eq!(super::strip_signature_params(""), "");
        let oss = "OSSAccessKeyId=ak&Expires=1&Signature=s%2B&x-oss-process=image&x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-credential=c&x-oss-date=d&x-oss-expires=60&x-oss-signature=f";
        assert_eq!(super::strip_signature_params(oss), "x-oss-process=image");
    }
}
