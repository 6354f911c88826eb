//! The proxy's accept loop and request routing.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use eliop2p_cache::ChunkCache;
use eliop2p_core::ObjectKey;
use eliop2p_origin::OriginClient;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::forward::{self, is_signature_param};
use crate::get::{self, Outcome};
use crate::meta::MetaCache;
use crate::metrics::Metrics;
use crate::node::ProxyConfig;
use crate::request::{S3Target, parse_target};

/// Upper bound on the request head the node accepts (S3 allows 8 KiB of user
/// metadata; this leaves room for signatures and long keys).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// hyper's read buffer per connection: a request head beyond it is refused (431).
const READ_BUFFER: usize = MAX_HEADER_BYTES + 16 * 1024;

/// An origin other than the default one, for some buckets.
pub(crate) struct Route {
    pub buckets: std::collections::HashSet<String>,
    pub client: OriginClient,
    pub auth: crate::node::AuthMode,
}

pub(crate) struct ProxyState {
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
    next_request_id: AtomicU64,
    /// The proxy listener's port (absolute-form requests naming it are for this
    /// node, not forward-proxy requests); 0 until known.
    pub proxy_port: AtomicU64,
    pub auth_cache: crate::passthrough::AuthCache,
    /// Bounds this node's concurrent origin requests for chunk fills.
    pub origin_slots: Arc<tokio::sync::Semaphore>,
}

impl ProxyState {
    pub fn new(
        cfg: ProxyConfig,
        origin: OriginClient,
        routes: Vec<Route>,
        cache: ChunkCache,
        metrics: Arc<Metrics>,
        p2p: Option<eliop2p_p2p::P2pHandle>,
    ) -> Self {
        let meta = MetaCache::new(cfg.metadata_ttl, cfg.metadata_max_entries, cfg.stale_if_error);
        // Virtual-host requests under the origin's own name (forward-proxy clients
        // address `bucket.s3.<region>.amazonaws.com`) name their bucket too.
        let mut cfg = cfg;
        let auth_cache_ttl = cfg.auth_cache_ttl;
        let origin_host = origin.authority().host().to_ascii_lowercase();
        if origin_host.parse::<std::net::IpAddr>().is_err()
            && !cfg.virtual_host_domains.contains(&origin_host)
        {
            cfg.virtual_host_domains.push(origin_host);
        }
        let origin_slots = Arc::new(tokio::sync::Semaphore::new(cfg.origin_max_concurrent.max(1)));
        Self {
            origin_slots,
            cfg,
            origin,
            routes,
            cache,
            meta,
            metrics,
            p2p,
            fills: TaskTracker::new(),
            next_request_id: AtomicU64::new(1),
            proxy_port: AtomicU64::new(0),
            auth_cache: crate::passthrough::AuthCache::new(auth_cache_ttl),
        }
    }

    fn route_for(&self, bucket: Option<&str>) -> Option<&Route> {
        let b = bucket?;
        self.routes.iter().find(|r| r.buckets.contains(b))
    }

    /// The origin that serves a bucket.
    pub fn origin_for(&self, bucket: Option<&str>) -> &OriginClient {
        self.route_for(bucket).map_or(&self.origin, |r| &r.client)
    }

    /// The auth mode for a bucket.
    pub fn auth_for(&self, bucket: Option<&str>) -> crate::node::AuthMode {
        self.route_for(bucket).map_or(self.cfg.auth, |r| r.auth)
    }

    /// Prometheus text of everything this node measures.
    pub fn render_metrics(&self) -> String {
        let mut text = self.metrics.render(&self.cache);
        if let Some(p) = &self.p2p {
            text.push_str(&p.render_metrics());
        }
        text
    }

    /// The P2P layer, when it has peers to ask.
    pub fn peers(&self) -> Option<&eliop2p_p2p::P2pHandle> {
        self.p2p.as_ref().filter(|p| p.has_peers())
    }

    /// An S3 XML error response about an object.
    pub fn error(
        &self,
        status: StatusCode,
        code: &str,
        message: &str,
        key: &ObjectKey,
    ) -> Response<ProxyBody> {
        self.error_at(
            status,
            code,
            message,
            &format!("/{}/{}", key.bucket, key.key),
        )
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
    /// version) before and after a write through the node.
    pub fn invalidate_target(&self, target: &S3Target) {
        let (Some(bucket), Some(key)) = (&target.bucket, &target.key) else {
            return;
        };
        let key = ObjectKey::new(bucket.clone(), key.clone());
        if let Some(meta) = self.meta.invalidate(&key) {
            for id in get::all_chunk_ids(self, &key, &meta) {
                if self.cache.is_cached(&id).is_some() {
                    self.cache.remove(&id);
                }
            }
        }
    }

    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let method = req.method().clone();
        let resp = self.route(req).await;
        self.metrics.record_request(&method, resp.status().as_u16());
        resp
    }

    /// `host:port` with the scheme's default port filled in.
    fn host_port(scheme: &http::uri::Scheme, a: &http::uri::Authority) -> String {
        let port = a
            .port_u16()
            .unwrap_or(if *scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
        format!("{}:{port}", a.host().to_ascii_lowercase())
    }

    /// Whether a forward-proxy request for `a` is for the configured origin (or a
    /// virtual-host name under it), or for another allowed origin.
    fn classify(&self, scheme: &http::uri::Scheme, a: &http::uri::Authority) -> Option<bool> {
        let origin = self.origin.authority();
        let mine = Self::host_port(self.origin.scheme(), origin);
        let asked = Self::host_port(scheme, a);
        let origin_host = origin.host().to_ascii_lowercase();
        let same_port = a
            .port_u16()
            .map(|p| Some(p) == origin.port_u16())
            .unwrap_or(true);
        let under_origin = a
            .host()
            .to_ascii_lowercase()
            .ends_with(&format!(".{origin_host}"));
        if asked == mine || same_port && under_origin {
            return Some(true);
        }
        let allowed = self.cfg.allowed_origins.iter().any(|o| {
            let o = o.to_ascii_lowercase();
            o == asked || (!o.contains(':') && asked.split(':').next() == Some(o.as_str()))
        });
        allowed.then_some(false)
    }

    /// `CONNECT host:port`: an allowed origin gets a byte tunnel (TLS end to end,
    /// so nothing is cached); anything else is refused before any connection.
    async fn connect(self: &Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(auth) = req.uri().authority().cloned() else {
            return self.error_at(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "CONNECT needs host:port",
                "",
            );
        };
        if self.classify(&http::uri::Scheme::HTTPS, &auth).is_none() {
            return self.error_at(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                &format!("{auth} is not an allowed origin (proxy.allowed_origins)"),
                auth.as_str(),
            );
        }
        let target = Self::host_port(&http::uri::Scheme::HTTPS, &auth);
        let upstream = match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect(&target),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return self.error_at(
                    StatusCode::BAD_GATEWAY,
                    "BadGateway",
                    &format!("connecting to {target}: {e}"),
                    auth.as_str(),
                );
            }
            Err(_) => {
                return self.error_at(
                    StatusCode::GATEWAY_TIMEOUT,
                    "GatewayTimeout",
                    &format!("connecting to {target} timed out"),
                    auth.as_str(),
                );
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(up) => {
                    let mut client = TokioIo::new(up);
                    let mut upstream = upstream;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        Response::new(ProxyBody::Empty)
    }

    /// With client keys configured, a forward-proxy or CONNECT request proves a key
    /// in `Proxy-Authorization` (its `Authorization` is for the origin): 407 if not.
    fn proxy_auth_refused(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        if self.cfg.client_keys.is_empty() {
            return None;
        }
        let ok = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| self.cfg.client_keys.check_proxy_authorization(v));
        if ok {
            return None;
        }
        self.metrics.client_auth_failures.fetch_add(1, Relaxed);
        let mut r = self.error_at(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "AccessDenied",
            "forward-proxy and CONNECT requests need Proxy-Authorization: Basic with a key of proxy.client_keys_file",
            req.uri().path(),
        );
        r.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"eliop2p\""),
        );
        Some(r)
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            if let Some(r) = self.proxy_auth_refused(&req) {
                return r;
            }
            return self.connect(req).await;
        }
        // Forward-proxy (absolute-form) requests: only allowed origins. An
        // absolute-form request naming this node's own port is an ordinary request.
        let mut dest = None;
        let own_port = self.proxy_port.load(Relaxed);
        if let Some(auth) = req
            .uri()
            .authority()
            .filter(|a| own_port == 0 || a.port_u16() != Some(own_port as u16))
            .cloned()
        {
            let scheme = req
                .uri()
                .scheme()
                .cloned()
                .unwrap_or(http::uri::Scheme::HTTP);
            match self.classify(&scheme, &auth) {
                None => {
                    return self.error_at(
                        StatusCode::FORBIDDEN,
                        "AccessDenied",
                        &format!("{auth} is not an allowed origin (proxy.allowed_origins)"),
                        req.uri().path(),
                    );
                }
                Some(true) => {}
                Some(false) => {
                    if let Some(r) = self.proxy_auth_refused(&req) {
                        return r;
                    }
                    dest = Some((scheme, auth))
                }
            }
        }
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return self.error_at(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestHeaderSectionTooLarge",
                &format!("request headers total {header_bytes} bytes, more than the {MAX_HEADER_BYTES} allowed"),
                req.uri().path(),
            );
        }
        let plain_http = self.origin.is_plain_http();
        let target = if plain_http {
            // A plain HTTP origin: the whole path is the resource.
            let path = req.uri().path().trim_start_matches('/');
            let key = percent_encoding::percent_decode_str(path).decode_utf8();
            match key {
                Ok(k) if eliop2p_origin::has_dot_segment(&k) => {
                    return self.error_at(
                        StatusCode::BAD_REQUEST,
                        "InvalidURI",
                        "the path has a '.' or '..' segment, which would leave origin.endpoint's path",
                        req.uri().path(),
                    );
                }
                Ok(k) if !k.is_empty() => S3Target {
                    bucket: Some(String::new()),
                    key: Some(k.into_owned()),
                },
                Ok(_) => S3Target {
                    bucket: None,
                    key: None,
                },
                Err(_) => {
                    return self.error_at(
                        StatusCode::BAD_REQUEST,
                        "InvalidURI",
                        "path is not UTF-8",
                        req.uri().path(),
                    );
                }
            }
        } else {
            match parse_target(
                req.uri().path(),
                req.headers(),
                &self.cfg.virtual_host_domains,
            ) {
                Ok(t) => t,
                Err(e) => {
                    return self.error_at(
                        StatusCode::BAD_REQUEST,
                        "InvalidURI",
                        e.0,
                        req.uri().path(),
                    );
                }
            }
        };
        // For plain HTTP origins a query is part of the resource: not cached.
        let cacheable = matches!(*req.method(), Method::GET | Method::HEAD)
            && target.key.is_some()
            && if plain_http {
                req.uri().query().is_none()
            } else {
                req.uri().query().is_none_or(query_is_cacheable)
            };
        let auth = self.auth_for(target.bucket.as_deref());
        if auth == crate::node::AuthMode::Node
            && dest.is_none()
            && !self.cfg.client_keys.is_empty()
            && let Err(e) = crate::sigv4::verify(
                &self.cfg.client_keys,
                req.method(),
                req.uri(),
                req.headers(),
                std::time::SystemTime::now(),
            )
        {
            self.metrics.client_auth_failures.fetch_add(1, Relaxed);
            return self.error_at(
                StatusCode::FORBIDDEN,
                e.code(),
                &e.message(),
                req.uri().path(),
            );
        }
        if auth == crate::node::AuthMode::Passthrough || dest.is_some() {
            let key = match (&target.bucket, &target.key) {
                (Some(b), Some(k)) if cacheable => Some(ObjectKey::new(b.clone(), k.clone())),
                _ => None,
            };
            return crate::passthrough::handle(self, req, key, target.bucket.clone(), dest).await;
        }
        if cacheable && let (Some(bucket), Some(key)) = (&target.bucket, &target.key) {
            let key = ObjectKey::new(bucket.clone(), key.clone());
            match get::serve(self, &req, key, None, crate::origin_fill::OriginAccess::Node).await {
                Outcome::Response(r) => return r,
                Outcome::Forward => {}
            }
        }
        forward::forward(self, req, target).await
    }
}

/// A GET whose query only carries signature parameters or SDK hints reads the
/// current object; anything else (versionId, partNumber, response-* overrides,
/// sub-resources like ?acl) goes to the origin.
fn query_is_cacheable(query: &str) -> bool {
    query.split('&').filter(|p| !p.is_empty()).all(|p| {
        let name = p.split_once('=').map_or(p, |(n, _)| n);
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        name == "x-id" || is_signature_param(&name)
    })
}

/// Accepts connections until `cancel` and serves each with `handler`; each
/// connection finishes its in-flight request after cancellation (graceful
/// shutdown) and is tracked by `tracker`. Shared by the proxy and admin listeners.
///
/// At most `max_connections` connections are open at once (one more is closed at
/// accept), and each buffers at most `READ_BUFFER` of an unfinished request head:
/// abusive connections cost bounded memory, given back when they close.
pub(crate) async fn serve<H, Fut>(
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
    max_connections: usize,
    send_timeout: std::time::Duration,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("connection closed at accept: the listener's connection cap is reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .max_buf_size(READ_BUFFER)
                .serve_connection(TokioIo::new(crate::stall::StallTimeout::new(stream, send_timeout)), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// The S3 proxy listener.
pub(crate) async fn run(
    listener: TcpListener,
    state: Arc<ProxyState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let max = state.cfg.max_connections;
    let send_timeout = state.cfg.send_timeout;
    serve(listener, cancel, tracker.clone(), max, send_timeout, move |req| {
        let state = state.clone();
        async move { state.handle(req).await }
    })
    .await
}
