//! Real parts for tests, the demo and the benchmarks: an in-process S3-compatible
//! origin (`s3s-fs`, which checks SigV4 signatures) on a loopback port, with a log
//! of every request it receives; a node wired to it; a small HTTP client; and
//! deterministic test data.

mod cluster;
pub mod creds;
pub use creds::{CredentialServer, TestIssuer};
pub use cluster::{CONTROL_TOKEN, Discovery, TestCluster, test_gossip_config};
mod fastfs;
pub mod fanout;
mod raw;
pub mod raw_p2p;
mod redis;
pub use redis::TestRedis;
mod tls;
pub use tls::{NodeCert, TestCa};
pub use raw::{raw_http, rss_bytes, slow_get};
pub mod netbed;
pub mod oss;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use eliop2p_cache::CacheConfig;
use eliop2p_origin::{OriginClient, OriginConfig, OriginRequest, encode_key, full_body};
use eliop2p_proxy::{AdminConfig, NodeConfig, NodeHandle, ProxyConfig, spawn_node};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const ACCESS_KEY: &str = "eliop2p-test-access";
pub const SECRET_KEY: &str = "eliop2p-test-secret-key-0123456789";

/// The origin's keys: the static test key, and any temporary key of a trusted
/// issuer.
struct TestAuth {
    issuer: Arc<Mutex<Option<TestIssuer>>>,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for TestAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        if access_key == ACCESS_KEY {
            return Ok(SECRET_KEY.into());
        }
        let issuer = self.issuer.lock().unwrap().clone();
        match issuer.and_then(|i| i.secret_of(access_key)) {
            Some(secret) => Ok(secret.into()),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Why a request's session token is refused, if it is: the static rule
/// ([`TestOrigin::require_session_token`]) or a trusted issuer's.
fn token_refusal<B>(
    req: &http::Request<B>,
    required: &Mutex<Option<String>>,
    issuer: &Mutex<Option<TestIssuer>>,
) -> Option<(StatusCode, &'static str, &'static str)> {
    const INVALID: (StatusCode, &str, &str) = (
        StatusCode::FORBIDDEN,
        "InvalidToken",
        "The provided token is malformed or otherwise invalid.",
    );
    let header = req.headers().get("x-amz-security-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("X-Amz-Security-Token="))
    });
    let token = header.or_else(|| query.map(|q| percent_encoding::percent_decode_str(q).decode_utf8_lossy().into_owned()));
    let issuer = issuer.lock().unwrap().clone();
    if let Some(issuer) = issuer
        && let Some(key) = creds::signing_access_key(req.headers(), req.uri().query())
    {
        match issuer.check(&key, token.as_deref()) {
            Ok(()) => return None,
            Err(creds::Refusal::NotIssued) => {}
            Err(creds::Refusal::Expired) => {
                return Some((StatusCode::BAD_REQUEST, "ExpiredToken", "The provided token has expired."));
            }
            Err(creds::Refusal::InvalidToken | creds::Refusal::Revoked) => return Some(INVALID),
        }
    }
    let want = required.lock().unwrap().clone()?;
    (token.as_deref() != Some(want.as_str())).then_some(INVALID)
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: Method,
    /// Raw path as received (percent-encoded).
    pub path: String,
    pub query: Option<String>,
    pub range: Option<String>,
}

/// An S3-compatible server on `127.0.0.1:0`, backed by a directory.
pub struct TestOrigin {
    pub addr: SocketAddr,
    pub endpoint: String,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    /// Response body bytes sent, and the optional rate limit (bytes/s) shared by
    /// every response, as one S3 connection would have.
    bytes_sent: Arc<std::sync::atomic::AtomicU64>,
    limiter: Arc<Throttle>,
    /// Requests still to be answered with an injected 503 before serving normally.
    fail_next: Arc<std::sync::atomic::AtomicUsize>,
    /// The object store's behaviour per request: first-byte latency and the rate of
    /// one response stream.
    model: Arc<StoreModel>,
    /// Ranged GETs starting at or after this offset still to be refused with 503
    /// SlowDown and `Retry-After: 1` (offset, count).
    slow_down_from: Arc<Mutex<(u64, usize)>>,
    store: fastfs::FastFs,
    client: OriginClient,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _root: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The CA an https origin's certificate comes from.
    ca_file: Option<PathBuf>,
    /// A session token every request must carry (temporary credentials).
    required_token: Arc<Mutex<Option<String>>>,
    /// Temporary credentials the origin accepts besides its static key.
    issuer: Arc<Mutex<Option<TestIssuer>>>,
}

impl TestOrigin {
    /// Starts an origin over a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut o = Self::start_on(listener, &root).await?;
        o._root = Some(dir);
        Ok(o)
    }

    /// [`Self::start`] with one bucket holding one object of `len` bytes of
    /// [`test_data`] (`seed`), which it returns.
    pub async fn with_object(bucket: &str, key: &str, len: usize, seed: u64) -> anyhow::Result<(Self, Bytes)> {
        let origin = Self::start().await?;
        origin.create_bucket(bucket).await?;
        let data = test_data(len, seed);
        origin.put(bucket, key, data.clone()).await?;
        Ok((origin, data))
    }

    /// Starts an https origin over a fresh temporary directory, with `ca`'s
    /// certificate for 127.0.0.1; its `origin_config` trusts `ca`.
    pub async fn start_tls(ca: &TestCa) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut o = Self::start_full(listener, &root, Some((ca.acceptor()?, ca.ca_pem.clone()))).await?;
        o._root = Some(dir);
        Ok(o)
    }

    /// Starts an origin over `root` (kept after stop) on a given listener.
    pub async fn start_on(listener: TcpListener, root: &Path) -> anyhow::Result<Self> {
        Self::start_full(listener, root, None).await
    }

    async fn start_full(
        listener: TcpListener,
        root: &Path,
        tls: Option<(tokio_rustls::TlsAcceptor, PathBuf)>,
    ) -> anyhow::Result<Self> {
        let store = fastfs::FastFs::new(root)?;
        let mut builder = s3s::service::S3ServiceBuilder::new(store.clone());
        let issuer: Arc<Mutex<Option<TestIssuer>>> = Arc::default();
        builder.set_auth(TestAuth { issuer: issuer.clone() });
        let service = builder.build();
        let addr = listener.local_addr()?;
        let endpoint = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let ca_file = tls.as_ref().map(|(_, ca)| ca.clone());
        let acceptor = tls.map(|(a, _)| a);
        let log = Arc::new(Mutex::new(Vec::new()));
        let bytes_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let limiter = Arc::new(Throttle::default());
        let fail_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let model = Arc::new(StoreModel::default());
        let slow_down_from = Arc::new(Mutex::new((0u64, 0usize)));
        let required_token: Arc<Mutex<Option<String>>> = Arc::default();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        {
            let issuer = issuer.clone();
            let log = log.clone();
            let fail_next = fail_next.clone();
            let model = model.clone();
            let slow_down_from = slow_down_from.clone();
            let required_token = required_token.clone();
            let cancel = cancel.clone();
            let conns = tracker.clone();
            let (bytes_sent, limiter) = (bytes_sent.clone(), limiter.clone());
            tracker.spawn(async move {
                loop {
                    let stream = tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    let log = log.clone();
                    let fail_next = fail_next.clone();
                    let model = model.clone();
                    let slow_down_from = slow_down_from.clone();
                    let required_token = required_token.clone();
                    let issuer = issuer.clone();
                    let cancel = cancel.clone();
                    let (bytes_sent, limiter) = (bytes_sent.clone(), limiter.clone());
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            log.lock().unwrap().push(LoggedRequest {
                                method: req.method().clone(),
                                path: req.uri().path().to_owned(),
                                query: req.uri().query().map(str::to_owned),
                                range: req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned),
                            });
                            let range_start = req
                                .headers()
                                .get(http::header::RANGE)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("bytes="))
                                .and_then(|v| v.split('-').next())
                                .and_then(|v| v.parse::<u64>().ok());
                            let slow_down = {
                                let mut s = slow_down_from.lock().unwrap();
                                let hit = s.1 > 0 && range_start.is_some_and(|r| r >= s.0);
                                if hit {
                                    s.1 -= 1;
                                }
                                hit
                            };
                            let inject = slow_down
                                || fail_next
                                    .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
                                    .is_ok();
                            // Temporary credentials: the session token must match.
                            let token_refused = token_refusal(&req, &required_token, &issuer);
                            let first_byte = model.first_byte();
                            let stream = Arc::new(Throttle::with_rate(model.stream_rate()));
                            let fut = (!inject && token_refused.is_none()).then(|| Service::call(&service, req));
                            let (bytes_sent, limiter) = (bytes_sent.clone(), limiter.clone());
                            async move {
                                if !first_byte.is_zero() {
                                    tokio::time::sleep(first_byte).await;
                                }
                                match fut {
                                    Some(f) => f.await.map(|resp| {
                                        resp.map(|b| {
                                            s3s::Body::http_body_unsync(Throttled {
                                                inner: b,
                                                sleep: None,
                                                pending: None,
                                                counter: bytes_sent,
                                                limiters: [limiter, stream],
                                            })
                                        })
                                    }),
                                    None if let Some((status, code, message)) = token_refused => {
                                        let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>");
                                        let mut resp = http::Response::new(s3s::Body::from(body));
                                        *resp.status_mut() = status;
                                        Ok(resp)
                                    }
                                    None => {
                                        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>injected by the test</Message></Error>";
                                        let mut resp = http::Response::new(s3s::Body::from(body.to_owned()));
                                        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                        if slow_down {
                                            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                                        }
                                        Ok(resp)
                                    }
                                }
                            }
                        });
                        let http1 = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(acceptor) => {
                                let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                                    return; // a client that does not trust the certificate
                                };
                                tokio::select! {
                                    _ = http1.serve_connection(TokioIo::new(stream), svc) => {}
                                    _ = cancel.cancelled() => {}
                                }
                            }
                            None => {
                                tokio::select! {
                                    _ = http1.serve_connection(TokioIo::new(stream), svc) => {}
                                    _ = cancel.cancelled() => {}
                                }
                            }
                        }
                    });
                }
            });
        }
        let mut cfg = OriginConfig::for_endpoint(&endpoint, ACCESS_KEY, SECRET_KEY);
        cfg.tls.ca_file = ca_file.clone();
        let client = OriginClient::new(cfg)?;
        Ok(Self {
            addr,
            endpoint,
            log,
            bytes_sent,
            limiter,
            fail_next,
            model,
            slow_down_from,
            store,
            client,
            cancel,
            tracker,
            _root: None,
            root: root.to_owned(),
            ca_file,
            required_token,
            issuer,
        })
    }

    /// From now on the origin also accepts the temporary credentials `issuer`
    /// hands out, each only with its session token and until its expiry or
    /// revocation (400 ExpiredToken, 403 InvalidToken otherwise).
    pub fn trust(&self, issuer: &TestIssuer) {
        *self.issuer.lock().unwrap() = Some(issuer.clone());
    }

    /// From now on every request must carry this session token (header or
    /// presigned query), or gets 403 InvalidToken; `None` lifts the rule.
    pub fn require_session_token(&self, token: Option<&str>) {
        *self.required_token.lock().unwrap() = token.map(str::to_owned);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn origin_config(&self) -> OriginConfig {
        let mut c = OriginConfig::for_endpoint(&self.endpoint, ACCESS_KEY, SECRET_KEY);
        c.tls.ca_file = self.ca_file.clone();
        c
    }

    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let resp = self
            .client
            .send(OriginRequest::new(Method::PUT, bucket, None))
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.into_body().collect().await?.to_bytes();
            bail!(
                "create bucket {bucket}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// PUTs an object through S3 (so the origin records its ETag) and returns the ETag.
    pub async fn put(&self, bucket: &str, key: &str, data: Bytes) -> anyhow::Result<String> {
        let mut req = OriginRequest::new(Method::PUT, bucket, Some(key));
        req.headers
            .insert(http::header::CONTENT_LENGTH, data.len().into());
        req.body = Some(full_body(data));
        let resp = self.client.send(req).await?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "put {bucket}/{key}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(etag)
    }

    /// Writes an object straight into the origin's directory (for origins no client
    /// of this process can reach, such as one inside a network namespace) and
    /// learns its ETag now.
    pub async fn put_file(&self, bucket: &str, key: &str, data: &[u8]) -> anyhow::Result<()> {
        let path = self.root.join(bucket).join(key);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(&path, data).await?;
        self.store.prime(bucket, key).await
    }

    /// The next `n` ranged GETs that start at or after `offset` are answered 503
    /// SlowDown with `Retry-After: 1`, as S3 under load answers.
    pub fn slow_down_ranges_from(&self, offset: u64, n: usize) {
        *self.slow_down_from.lock().unwrap() = (offset, n);
    }

    /// The next `n` requests (of any kind) get `503 SlowDown` instead of an answer.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap().clone()
    }

    /// Object bytes the origin has sent in response bodies.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The counter behind [`Self::bytes_sent`], for samplers on other tasks.
    pub fn bytes_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.bytes_sent.clone()
    }

    /// Limits the rate of all response bodies together (bytes/s, 0 = unlimited).
    pub fn set_rate_limit(&self, bytes_per_sec: u64) {
        self.limiter
            .rate
            .store(bytes_per_sec, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the origin behave like an object store under load: every request
    /// waits `first_byte` before it is answered, and each response body streams at
    /// most `stream_rate` bytes/s (0 = unlimited), on top of the shared limit.
    pub fn set_store_model(&self, first_byte: Duration, stream_rate: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.model.first_byte_us.store(first_byte.as_micros() as u64, Relaxed);
        self.model.stream_rate.store(stream_rate, Relaxed);
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// GET requests the origin received for one object.
    pub fn gets_of(&self, bucket: &str, key: &str) -> Vec<LoggedRequest> {
        let path = format!("/{}/{}", encode_key(bucket), encode_key(key));
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::GET && r.path == path)
            .collect()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

/// A shared rate limit: each frame reserves its transmission time after the
/// previous reservation.
#[derive(Default)]
struct Throttle {
    rate: std::sync::atomic::AtomicU64,
    next_free: Mutex<Option<tokio::time::Instant>>,
}

/// Per-request behaviour of the test object store (see `set_store_model`).
#[derive(Default)]
struct StoreModel {
    first_byte_us: std::sync::atomic::AtomicU64,
    stream_rate: std::sync::atomic::AtomicU64,
}

impl StoreModel {
    fn first_byte(&self) -> Duration {
        Duration::from_micros(self.first_byte_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn stream_rate(&self) -> u64 {
        self.stream_rate.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Throttle {
    fn with_rate(rate: u64) -> Self {
        Self {
            rate: rate.into(),
            next_free: Mutex::new(None),
        }
    }

    /// When a frame of `n` bytes may go out: frames are scheduled back to back at
    /// the rate, with up to 10 ms of unused time credited (so small frames do not
    /// each pay a timer's granularity); `None` = now.
    fn reserve(&self, n: u64) -> Option<tokio::time::Instant> {
        let rate = self.rate.load(std::sync::atomic::Ordering::Relaxed);
        if rate == 0 {
            return None;
        }
        let now = tokio::time::Instant::now();
        let credit = Duration::from_millis(10);
        let mut next = self.next_free.lock().unwrap();
        let start = match *next {
            Some(t) if t + credit > now => t,
            _ => now - credit,
        };
        *next = Some(start + Duration::from_secs_f64(n as f64 / rate as f64));
        (start > now + Duration::from_millis(1)).then_some(start)
    }
}

struct Throttled {
    inner: s3s::Body,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pending: Option<hyper::body::Frame<Bytes>>,
    counter: Arc<std::sync::atomic::AtomicU64>,
    /// The origin's shared limit and this stream's own.
    limiters: [Arc<Throttle>; 2],
}

impl hyper::body::Body for Throttled {
    type Data = Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
            return Poll::Ready(this.pending.take().map(Ok));
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.counter
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                let at = this.limiters.iter().filter_map(|l| l.reserve(n)).max();
                match at {
                    None => Poll::Ready(Some(Ok(frame))),
                    Some(at) => {
                        let mut sleep = Box::pin(tokio::time::sleep_until(at));
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        this.sleep = Some(sleep);
                        this.pending = Some(frame);
                        Poll::Pending
                    }
                }
            }
            other => other,
        }
    }
}

/// A node config for tests: loopback, small chunks optional, short TTL.
pub fn node_config(origin: OriginConfig) -> NodeConfig {
    NodeConfig {
        proxy: ProxyConfig::default(),
        admin: AdminConfig::default(),
        origin,
        extra_origins: Vec::new(),
        cache: CacheConfig::memory_only(1 << 30, 16 << 20),
        shutdown_grace: Duration::from_secs(5),
        p2p: None,
        control_plane: None,
    }
}

/// Starts a node on loopback port 0 in front of `origin`.
pub async fn start_node(
    origin: &TestOrigin,
    tweak: impl FnOnce(&mut NodeConfig),
) -> anyhow::Result<NodeHandle> {
    start_node_for(origin.origin_config(), tweak).await
}

/// Starts a node on loopback port 0 in front of any origin (OSS, plain HTTP).
pub async fn start_node_for(
    origin: OriginConfig,
    tweak: impl FnOnce(&mut NodeConfig),
) -> anyhow::Result<NodeHandle> {
    let mut cfg = node_config(origin);
    tweak(&mut cfg);
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    Ok(spawn_node(cfg, proxy, admin).await?)
}

/// Binds loopback port-0 listeners for a cluster of `n` nodes' P2P layers, so each
/// node can be given the others' addresses before any of them starts.
pub async fn p2p_listeners(n: usize) -> anyhow::Result<Vec<TcpListener>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    Ok(v)
}

/// Starts a node with a P2P layer on `p2p` whose static peers are `peers`.
pub async fn start_p2p_node(
    origin: &TestOrigin,
    p2p: TcpListener,
    peers: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> anyhow::Result<NodeHandle> {
    let mut cfg = node_config(origin.origin_config());
    let mut pc = eliop2p_p2p::P2pConfig::new(&format!("node-{}", p2p.local_addr()?.port()));
    pc.cluster_secret = Some(b"test-cluster-secret".to_vec());
    pc.static_peers = peers;
    cfg.p2p = Some(pc);
    tweak(&mut cfg);
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    Ok(eliop2p_proxy::spawn_node_with_p2p(cfg, proxy, admin, Some(p2p)).await?)
}

/// A plain HTTP/1 client for tests.
#[derive(Clone)]
pub struct TestClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

/// A whole response.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> Self {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self { client }
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<TestResponse> {
        let mut b = http::Request::builder().method(method).uri(url);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body))?)
            .await
            .context("request")?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.context("response body")?.to_bytes();
        Ok(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<TestResponse> {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for 1 GiB.
pub fn test_data(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
