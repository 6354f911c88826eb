//! The pooled, signing, retrying HTTP client for the origin.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqsign_core::Context;
use thiserror::Error;

use crate::encode_key;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of a request to the origin: empty, in memory, or a client's upload streamed through.
pub type OriginBody = BoxBody<Bytes, BoxError>;

pub fn empty_body() -> OriginBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full_body(bytes: Bytes) -> OriginBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Path-style `http://host/bucket/key` or virtual-host style `http://bucket.host/key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    Path,
    Virtual,
}

impl std::str::FromStr for Addressing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "path" => Ok(Addressing::Path),
            "virtual" => Ok(Addressing::Virtual),
            other => Err(format!("expected \"path\" or \"virtual\", got {other:?}")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct OriginConfig {
    /// `http://host:port` or `https://host`.
    pub endpoint: String,
    /// S3-compatible (SigV4) or Alibaba Cloud OSS.
    pub kind: OriginKind,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// The session token of temporary credentials (STS), signed into every
    /// request (`X-Amz-Security-Token`, presigned URLs too; OSS's security token).
    pub session_token: Option<String>,
    pub addressing: Addressing,
    pub connect_timeout: Duration,
    /// Time allowed until the response head arrives.
    pub request_timeout: Duration,
    /// Retries (after the first try) on 5xx and connection errors, for requests without a body.
    pub max_retries: u32,
    /// Roots and verification for an https endpoint.
    pub tls: crate::TlsConfig,
    /// Where the keys come from: the static ones above, or a loader (the AWS
    /// chain, IMDS, web identity, ...) that keeps temporary ones fresh.
    pub credentials: crate::CredentialSettings,
}

impl OriginConfig {
    /// A config for tests and the demo: path style, short timeouts, two retries.
    pub fn for_endpoint(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            kind: OriginKind::S3,
            region: "us-east-1".to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            session_token: None,
            addressing: Addressing::Path,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retries: 2,
            tls: Default::default(),
            credentials: Default::default(),
        }
    }
}

/// The storage service and how requests to it are signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OriginKind {
    /// S3-compatible, AWS Signature V4.
    #[default]
    S3,
    /// Alibaba Cloud OSS, signature V1 (HMAC-SHA1) or V4 (OSS4-HMAC-SHA256; needs
    /// `region`, e.g. `cn-hangzhou`).
    Oss(OssSignature),
    /// A plain HTTP(S) URL space (model hubs, artifact servers): the request path is
    /// appended to the endpoint's path, nothing is signed.
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OssSignature {
    V1,
    V4,
}

/// The OSS signer for one bucket (OSS signs the bucket into the canonical resource).
pub fn oss_signer(
    bucket: &str,
    region: &str,
    version: OssSignature,
) -> reqsign_aliyun_oss::RequestSigner {
    let v = match version {
        OssSignature::V1 => reqsign_aliyun_oss::SigningVersion::V1,
        OssSignature::V4 => reqsign_aliyun_oss::SigningVersion::V4,
    };
    reqsign_aliyun_oss::RequestSigner::new(bucket)
        .with_region(region)
        .with_signing_version(v)
}

#[derive(Debug, Error)]
pub enum OriginError {
    /// Connection refused, reset, DNS or TLS failure: retrying elsewhere or later may help.
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be built (bad endpoint, unencodable header): not retryable.
    #[error("invalid origin request: {0}")]
    InvalidRequest(String),
    #[error("signing the origin request failed: {0}")]
    Signing(String),
}

/// One request to the origin, described in S3 terms; the client turns it into a URI
/// according to the addressing style and signs it.
pub struct OriginRequest {
    pub method: Method,
    pub bucket: Option<String>,
    /// Object key (decoded); `None` for bucket-level requests.
    pub key: Option<String>,
    /// Raw query string without `?`, forwarded unchanged.
    pub query: Option<String>,
    /// Extra headers; all of them are signed.
    pub headers: HeaderMap,
    /// `None` means no body, which also makes the request safe to retry.
    pub body: Option<OriginBody>,
}

impl OriginRequest {
    pub fn new(method: Method, bucket: &str, key: Option<&str>) -> Self {
        Self {
            method,
            bucket: Some(bucket.to_owned()),
            key: key.map(str::to_owned),
            query: None,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

#[derive(Clone)]
pub struct OriginClient {
    client: Client<HttpsConnector<HttpConnector>, OriginBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    creds: crate::Credentials,
    ctx: Context,
    cfg: OriginConfig,
    /// Stable identity of this origin, part of every chunk id.
    origin_id: String,
    /// Path of the endpoint URL without a trailing slash (plain HTTP origins).
    base_path: String,
}

impl OriginClient {
    pub fn new(cfg: OriginConfig) -> Result<Self, OriginError> {
        let uri: Uri = cfg.endpoint.parse().map_err(|e| {
            OriginError::InvalidRequest(format!("endpoint {:?}: {e}", cfg.endpoint))
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            OriginError::InvalidRequest(format!("endpoint {:?} has no scheme", cfg.endpoint))
        })?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(OriginError::InvalidRequest(format!(
                "endpoint scheme {scheme} is not http or https"
            )));
        }
        let authority = uri.authority().cloned().ok_or_else(|| {
            OriginError::InvalidRequest(format!("endpoint {:?} has no host", cfg.endpoint))
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if cfg.tls.is_default() {
            builder
                .with_native_roots()
                .map_err(|e| OriginError::InvalidRequest(format!("loading TLS roots: {e}")))?
        } else {
            let tls = crate::tls::client_config(&cfg.tls)
                .map_err(|e| OriginError::InvalidRequest(format!("origin TLS (origin.ca_file): {e}")))?;
            builder.with_tls_config(tls)
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        let fixed = crate::Keys {
            access_key: cfg.access_key.clone(),
            secret_key: cfg.secret_key.clone(),
            session_token: cfg.session_token.clone(),
            expires: None,
        };
        let creds = if cfg.kind == OriginKind::Http {
            crate::Credentials::fixed(fixed)
        } else {
            crate::Credentials::new(&cfg.credentials, cfg.kind, fixed, client.clone())?
        };
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let origin_id = if cfg.kind == OriginKind::Http {
            format!("{}://{}{}", scheme, authority, base_path)
        } else {
            format!("{}://{}", scheme, authority)
        };
        Ok(Self {
            base_path,
            creds,
            client,
            scheme,
            authority,
            ctx: Context::new(),
            cfg,
            origin_id,
        })
    }

    /// The node's credentials for this origin.
    pub fn credentials(&self) -> &crate::Credentials {
        &self.creds
    }

    pub fn origin_id(&self) -> &str {
        &self.origin_id
    }

    pub fn kind(&self) -> OriginKind {
        self.cfg.kind
    }

    /// Whether this is a plain HTTP origin (no buckets, no signatures).
    pub fn is_plain_http(&self) -> bool {
        self.cfg.kind == OriginKind::Http
    }

    fn build_uri(&self, req: &OriginRequest) -> Result<(Uri, HeaderValue), OriginError> {
        let mut path = String::from("/");
        let mut authority = self.authority.to_string();
        if self.cfg.kind == OriginKind::Http {
            // The endpoint's own path is a prefix; the key is the rest of the path,
            // and never leaves it.
            if req.key.as_deref().is_some_and(crate::has_dot_segment) {
                return Err(OriginError::InvalidRequest(
                    "a key with a '.' or '..' path segment would leave the plain HTTP origin's path".into(),
                ));
            }
            path = self.base_path.clone();
            path.push('/');
        } else if let Some(bucket) = &req.bucket {
            match self.cfg.addressing {
                Addressing::Path => {
                    path.push_str(&encode_key(bucket));
                    if req.key.is_some() {
                        path.push('/');
                    }
                }
                Addressing::Virtual => authority = format!("{bucket}.{authority}"),
            }
        }
        if let Some(key) = &req.key {
            path.push_str(&encode_key(key));
        }
        if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
            path.push('?');
            path.push_str(q);
        }
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| OriginError::InvalidRequest(e.to_string()))?;
        let host = HeaderValue::from_str(&authority)
            .map_err(|e| OriginError::InvalidRequest(e.to_string()))?;
        Ok((uri, host))
    }

    async fn signed(
        &self,
        req: &OriginRequest,
        body: OriginBody,
    ) -> Result<Request<OriginBody>, OriginError> {
        let (uri, host) = self.build_uri(req)?;
        let mut builder = Request::builder().method(req.method.clone()).uri(uri);
        if let Some(h) = builder.headers_mut() {
            h.clone_from(&req.headers);
            h.insert(HOST, host);
        }
        let request = builder
            .body(())
            .map_err(|e| OriginError::InvalidRequest(e.to_string()))?;
        let (mut parts, ()) = request.into_parts();
        self.sign(&mut parts, req.bucket.as_deref(), None).await?;
        Ok(Request::from_parts(parts, body))
    }

    /// Signs in place for this origin's kind (`expires` = presigned query).
    async fn sign(
        &self,
        parts: &mut http::request::Parts,
        bucket: Option<&str>,
        expires: Option<Duration>,
    ) -> Result<(), OriginError> {
        if self.cfg.kind == OriginKind::Http {
            if expires.is_some() {
                return Err(OriginError::InvalidRequest(
                    "plain HTTP origins have no presigned URLs".into(),
                ));
            }
            return Ok(());
        }
        let keys = self.creds.keys().await?;
        let r = match self.cfg.kind {
            OriginKind::S3 => {
                let signer = crate::sigv4::Signer {
                    access_key: &keys.access_key,
                    secret_key: &keys.secret_key,
                    session_token: keys.session_token.as_deref(),
                    region: &self.cfg.region,
                    service: "s3",
                };
                let now = std::time::SystemTime::now();
                return match expires {
                    Some(e) => signer.presign(parts, now, e),
                    None => signer.sign_headers(parts, now),
                }
                .map_err(OriginError::Signing);
            }
            OriginKind::Http => Ok(()),
            OriginKind::Oss(version) => {
                use reqsign_core::SignRequest;
                // The OSS signer reads header values as text (and panics on
                // others): a non-ASCII value is the client's to encode.
                if let Some((n, _)) = parts.headers.iter().find(|(_, v)| v.to_str().is_err()) {
                    return Err(OriginError::InvalidRequest(format!(
                        "header {n} is not ASCII: OSS origins need non-ASCII metadata RFC 2047-encoded (=?UTF-8?B?...?=)"
                    )));
                }
                let credential = reqsign_aliyun_oss::Credential {
                    access_key_id: keys.access_key.clone(),
                    access_key_secret: keys.secret_key.clone(),
                    security_token: keys.session_token.clone(),
                    expires_in: None,
                };
                oss_signer(bucket.unwrap_or(""), &self.cfg.region, version)
                    .sign_request(&self.ctx, parts, Some(&credential), expires)
                    .await
            }
        };
        r.map_err(|e| OriginError::Signing(e.to_string()))
    }

    /// A presigned URL (SigV4 query authentication) for a request, valid for
    /// `expires`.
    pub async fn presign(
        &self,
        req: &OriginRequest,
        expires: Duration,
    ) -> Result<Uri, OriginError> {
        let (uri, host) = self.build_uri(req)?;
        let mut builder = Request::builder().method(req.method.clone()).uri(uri);
        if let Some(h) = builder.headers_mut() {
            h.insert(HOST, host);
        }
        let (mut parts, ()) = builder
            .body(())
            .map_err(|e| OriginError::InvalidRequest(e.to_string()))?
            .into_parts();
        self.sign(&mut parts, req.bucket.as_deref(), Some(expires))
            .await?;
        Ok(parts.uri)
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }

    /// The origin's `host[:port]`.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Sends a client's request as received (authentication passthrough): method,
    /// raw path and query, every header including `Host` and the client's own
    /// signature; nothing is signed, normalised or retried. `target` overrides where
    /// the connection goes (forward-proxy mode: the scheme and host the client named).
    pub async fn send_as_is(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: OriginBody,
        target: Option<(&http::uri::Scheme, &http::uri::Authority)>,
    ) -> Result<Response<Incoming>, OriginError> {
        let (scheme, authority) = target.unwrap_or((&self.scheme, &self.authority));
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| OriginError::InvalidRequest(e.to_string()))?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
            if !h.contains_key(HOST) {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|e| OriginError::InvalidRequest(e.to_string()))?;
                h.insert(HOST, host);
            }
        }
        let request = builder
            .body(body)
            .map_err(|e| OriginError::InvalidRequest(e.to_string()))?;
        self.send_once(request).await
    }

    /// Sends a request, retrying bodiless requests on connection errors and 5xx with
    /// exponential backoff. A final 5xx is returned as a response (the caller relays it).
    pub async fn send(&self, mut req: OriginRequest) -> Result<Response<Incoming>, OriginError> {
        let body = req.body.take();
        let retryable = body.is_none();
        if let Some(body) = body {
            let request = self.signed(&req, body).await?;
            return self.send_once(request).await;
        }
        let mut attempt = 0;
        loop {
            let request = self.signed(&req, empty_body()).await?;
            let result = self.send_once(request).await;
            let retry = match &result {
                Ok(resp) => {
                    resp.status().is_server_error() && resp.status() != StatusCode::NOT_IMPLEMENTED
                }
                Err(OriginError::Unreachable(_) | OriginError::Timeout(_)) => true,
                Err(_) => false,
            };
            if !retry || !retryable || attempt >= self.cfg.max_retries {
                return result;
            }
            let backoff = Duration::from_millis(50u64 << attempt.min(6));
            tracing::debug!(attempt, ?backoff, method = %req.method, "retrying origin request");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        request: Request<OriginBody>,
    ) -> Result<Response<Incoming>, OriginError> {
        match tokio::time::timeout(self.cfg.request_timeout, self.client.request(request)).await {
            Err(_) => Err(OriginError::Timeout(self.cfg.request_timeout)),
            Ok(Err(e)) => {
                let mut why = error_chain(&e);
                if why.contains("certificate") || why.contains("UnknownIssuer") {
                    why.push_str(" (the origin's TLS certificate is not trusted: origin.ca_file adds a CA bundle to the system's roots)");
                }
                Err(OriginError::Unreachable(why))
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// An error and its sources, `: `-separated (TLS errors say what they are only
/// in their sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
