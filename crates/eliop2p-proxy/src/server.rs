//! The S3 proxy listener: request routing (CONNECT, forward-proxy, auth modes,
//! reads through the cache, everything else to the origin).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use eliop2p_core::ObjectKey;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::config::AuthMode;
use crate::forward::{self, is_signature_param};
use crate::get::{self, Outcome};
use crate::listen::{MAX_HEADER_BYTES, serve};
use crate::request::{S3Target, parse_target};
use crate::state::ProxyState;

impl ProxyState {
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
        let origin = self.reader.origin.authority();
        let mine = Self::host_port(self.reader.origin.scheme(), origin);
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
                return self.bad_gateway(&format!("connecting to {target}: {e}"), auth.as_str());
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

    /// What a request names: for a plain HTTP origin the whole path (no dot
    /// segments), otherwise the bucket and key of a path-style or virtual-host
    /// request.
    fn target_of(&self, req: &Request<Incoming>, plain_http: bool) -> Result<S3Target, Box<Response<ProxyBody>>> {
        if plain_http {
            // A plain HTTP origin: the whole path is the resource.
            let path = req.uri().path().trim_start_matches('/');
            let key = percent_encoding::percent_decode_str(path).decode_utf8();
            match key {
                Ok(k) if eliop2p_origin::has_dot_segment(&k) => Err(Box::new(self.error_at(
                    StatusCode::BAD_REQUEST,
                    "InvalidURI",
                    "the path has a '.' or '..' segment, which would leave origin.endpoint's path",
                    req.uri().path(),
                ))),
                Ok(k) if !k.is_empty() => Ok(S3Target {
                    bucket: Some(String::new()),
                    key: Some(k.into_owned()),
                }),
                Ok(_) => Ok(S3Target {
                    bucket: None,
                    key: None,
                }),
                Err(_) => Err(Box::new(self.error_at(
                    StatusCode::BAD_REQUEST,
                    "InvalidURI",
                    "path is not UTF-8",
                    req.uri().path(),
                ))),
            }
        } else {
            match parse_target(
                req.uri().path(),
                req.headers(),
                &self.cfg.virtual_host_domains,
            ) {
                Ok(t) => Ok(t),
                Err(e) => Err(Box::new(self.error_at(
                    StatusCode::BAD_REQUEST,
                    "InvalidURI",
                    e.0,
                    req.uri().path(),
                ))),
            }
        }
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
        let plain_http = self.reader.origin.is_plain_http();
        let target = match self.target_of(&req, plain_http) {
            Ok(t) => t,
            Err(resp) => return *resp,
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
        if auth == AuthMode::Node
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
        if auth == AuthMode::Passthrough || dest.is_some() {
            let key = match (&target.bucket, &target.key) {
                (Some(b), Some(k)) if cacheable => Some(ObjectKey::new(b.clone(), k.clone())),
                _ => None,
            };
            return crate::passthrough::handle(self, req, key, target.bucket.clone(), dest).await;
        }
        if cacheable && let (Some(bucket), Some(key)) = (&target.bucket, &target.key) {
            let key = ObjectKey::new(bucket.clone(), key.clone());
            match get::serve(self, &req, key, None, crate::read::OriginAccess::Node).await {
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
