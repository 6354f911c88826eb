//! What the HTTP side of the proxy shares: the configuration, the read path
//! (`read::ObjectReader`), metrics, the authorization cache, and the one way
//! errors are answered (S3 XML).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use eliop2p_cache::{Culprit, FillError};
use eliop2p_core::ObjectKey;
use eliop2p_origin::OriginClient;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::read::ObjectReader;
use crate::request::S3Target;

pub(crate) struct ProxyState {
    pub cfg: ProxyConfig,
    /// The read path: origins and routes, the caches, peers, fills.
    pub reader: Arc<ObjectReader>,
    pub metrics: Arc<Metrics>,
    next_request_id: AtomicU64,
    /// The proxy listener's port (absolute-form requests naming it are for this
    /// node, not forward-proxy requests); 0 until known.
    pub proxy_port: AtomicU64,
    pub auth_cache: crate::auth_cache::AuthCache,
}

impl ProxyState {
    pub fn new(cfg: ProxyConfig, reader: Arc<ObjectReader>) -> Self {
        // Virtual-host requests under the origin's own name (forward-proxy clients
        // address `bucket.s3.<region>.amazonaws.com`) name their bucket too.
        let mut cfg = cfg;
        let auth_cache_ttl = cfg.auth_cache_ttl;
        let origin_host = reader.origin.authority().host().to_ascii_lowercase();
        if origin_host.parse::<std::net::IpAddr>().is_err()
            && !cfg.virtual_host_domains.contains(&origin_host)
        {
            cfg.virtual_host_domains.push(origin_host);
        }
        Self {
            cfg,
            metrics: reader.metrics.clone(),
            reader,
            next_request_id: AtomicU64::new(1),
            proxy_port: AtomicU64::new(0),
            auth_cache: crate::auth_cache::AuthCache::new(auth_cache_ttl),
        }
    }

    /// The origin that serves a bucket.
    pub fn origin_for(&self, bucket: Option<&str>) -> &OriginClient {
        self.reader.origin_for(bucket)
    }

    /// The auth mode for a bucket.
    pub fn auth_for(&self, bucket: Option<&str>) -> crate::config::AuthMode {
        self.reader.route_for(bucket).map_or(self.cfg.auth, |r| r.auth)
    }

    /// Prometheus text of everything this node measures.
    pub fn render_metrics(&self) -> String {
        let mut text = self.metrics.render(&self.reader.cache);
        if let Some(p) = &self.reader.p2p {
            text.push_str(&p.render_metrics());
        }
        text
    }

    /// The P2P layer, when it has peers to ask.
    pub fn peers(&self) -> Option<&eliop2p_p2p::P2pHandle> {
        self.reader.peers()
    }

    /// An S3 XML error response about an object.
    pub fn error(
        &self,
        status: StatusCode,
        code: &str,
        message: &str,
        key: &ObjectKey,
    ) -> Response<ProxyBody> {
        self.error_at(status, code, message, &resource(key))
    }

    /// The one 502 answer: something upstream of this node (the origin, a tunnel's
    /// target, the peers) failed. Every handler answers upstream failures through
    /// this, or through `fill_failed`, which calls it.
    pub fn bad_gateway(&self, message: &str, resource: &str) -> Response<ProxyBody> {
        self.error_at(StatusCode::BAD_GATEWAY, "BadGateway", message, resource)
    }

    /// The answer to a read whose fill failed before its first byte
    /// (`fill_failure_answer`).
    pub fn fill_failed(&self, e: &FillError, key: &ObjectKey) -> Response<ProxyBody> {
        let resource = resource(key);
        match fill_failure_answer(e) {
            (StatusCode::BAD_GATEWAY, _, message) => self.bad_gateway(&message, &resource),
            (status, code, message) => self.error_at(status, code, &message, &resource),
        }
    }

    pub fn error_at(
        &self,
        status: StatusCode,
        code: &str,
        message: &str,
        resource: &str,
    ) -> Response<ProxyBody> {
        let id = format!("{:016X}", self.next_request_id.fetch_add(1, Relaxed));
        let body = eliop2p_core::s3xml::error_body(code, message, resource, &id);
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("x-amz-request-id", v);
        }
        resp
    }

    /// Drops what is cached about an object (metadata and the chunks of the cached
    /// version) after a write through the node that the origin may have applied.
    pub fn invalidate_target(&self, target: &S3Target) {
        let (Some(bucket), Some(key)) = (&target.bucket, &target.key) else {
            return;
        };
        let key = ObjectKey::new(bucket.clone(), key.clone());
        let reader = &self.reader;
        if let Some(meta) = reader.meta.invalidate(&key) {
            for id in reader.all_chunk_ids(&key, &meta) {
                if reader.cache.is_cached(&id).is_some() {
                    reader.cache.remove(&id);
                }
            }
        }
    }
}

/// An object's resource path in S3 error bodies.
pub(crate) fn resource(key: &ObjectKey) -> String {
    format!("/{}/{}", key.bucket, key.key)
}

/// How a read whose fill failed before its first byte is answered, by who failed
/// (status, S3 code, message): the client's own authority refused by the origin
/// (passthrough) gets the origin's 4xx as S3 names it; a node that stops the read
/// (shutting down) answers 503, which clients retry; a failure upstream (the
/// origin, its refusal of the node's credentials, the peers) is a 502.
pub(crate) fn fill_failure_answer(e: &FillError) -> (StatusCode, &'static str, String) {
    match (e.culprit(), e) {
        (Culprit::Client, FillError::Refused { status, .. }) if (400..500).contains(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN);
            let code = match status {
                StatusCode::FORBIDDEN => "AccessDenied",
                StatusCode::NOT_FOUND => "NoSuchKey",
                StatusCode::RANGE_NOT_SATISFIABLE => "InvalidRange",
                _ => "InvalidRequest",
            };
            (status, code, e.to_string())
        }
        (Culprit::Internal, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the node stopped the read (it is shutting down); retry".to_owned(),
        ),
        _ => (StatusCode::BAD_GATEWAY, "BadGateway", format!("origin fetch failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_is_answered_by_who_failed() {
        let refused = |status, client| FillError::Refused { status, client };
        let cases = [
            (refused(403, true), 403, "AccessDenied"),
            (refused(404, true), 404, "NoSuchKey"),
            (refused(400, true), 400, "InvalidRequest"),
            // The node's own credentials refused, or a redirect: the gateway's fault.
            (refused(403, false), 502, "BadGateway"),
            (refused(301, true), 502, "BadGateway"),
            (FillError::Changed, 502, "BadGateway"),
            (FillError::Unavailable("503 SlowDown past retries".into()), 502, "BadGateway"),
            (FillError::NoPeer, 502, "BadGateway"),
            (FillError::LengthMismatch { expected: 2, got: 1 }, 502, "BadGateway"),
            (FillError::Cancelled, 503, "ServiceUnavailable"),
        ];
        for (e, status, code) in cases {
            let (s, c, msg) = fill_failure_answer(&e);
            assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
            assert!(!msg.is_empty());
        }
        assert!(!refused(403, true).another_source_may_help());
        assert!(!FillError::Changed.another_source_may_help());
        assert!(FillError::Unavailable("x".into()).another_source_may_help());
        assert!(FillError::NoPeer.another_source_may_help());
    }
}
