//! Real parts for tests, the demo and the benchmarks: an in-process S3-compatible
//! origin (`s3s-fs`, which checks SigV4 signatures) on a loopback port, with a log
//! of every request it receives; a node wired to it; a small HTTP client; and
//! deterministic test data.

mod cluster;
pub mod creds;
pub use creds::{CredentialServer, TestIssuer};
pub use cluster::{CONTROL_TOKEN, Discovery, TestCluster, test_gossip_config};
mod fastfs;
mod origin_serve;
use origin_serve::Knobs;
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
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use eliop2p_cache::CacheConfig;
use eliop2p_origin::{OriginClient, OriginConfig, OriginRequest, encode_key, full_body};
use eliop2p_proxy::{AdminConfig, NodeConfig, NodeHandle, ProxyConfig, spawn_node};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const ACCESS_KEY: &str = "eliop2p-test-access";
pub const SECRET_KEY: &str = "eliop2p-test-secret-key-0123456789";

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
    /// What tests turn on the running origin (faults, models, rate limits).
    knobs: Knobs,
    store: fastfs::FastFs,
    client: OriginClient,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _root: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The CA an https origin's certificate comes from.
    ca_file: Option<PathBuf>,
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
        let knobs = Knobs::default();
        let mut builder = s3s::service::S3ServiceBuilder::new(store.clone());
        builder.set_auth(origin_serve::TestAuth { issuer: knobs.issuer.clone() });
        let service = builder.build();
        let addr = listener.local_addr()?;
        let endpoint = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let ca_file = tls.as_ref().map(|(_, ca)| ca.clone());
        let acceptor = tls.map(|(a, _)| a);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(origin_serve::accept_loop(listener, service, knobs.clone(), acceptor, cancel.clone(), tracker.clone()));
        let mut cfg = OriginConfig::for_endpoint(&endpoint, ACCESS_KEY, SECRET_KEY);
        cfg.tls.ca_file = ca_file.clone();
        let client = OriginClient::new(cfg)?;
        Ok(Self { addr, endpoint, knobs, store, client, cancel, tracker, _root: None, root: root.to_owned(), ca_file })
    }

    /// From now on the origin also accepts the temporary credentials `issuer`
    /// hands out, each only with its session token and until its expiry or
    /// revocation (400 ExpiredToken, 403 InvalidToken otherwise).
    pub fn trust(&self, issuer: &TestIssuer) {
        *self.knobs.issuer.lock().unwrap() = Some(issuer.clone());
    }

    /// From now on every request must carry this session token (header or
    /// presigned query), or gets 403 InvalidToken; `None` lifts the rule.
    pub fn require_session_token(&self, token: Option<&str>) {
        *self.knobs.required_token.lock().unwrap() = token.map(str::to_owned);
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
        *self.knobs.slow_down_from.lock().unwrap() = (offset, n);
    }

    /// The next `n` requests (of any kind) get `503 SlowDown` instead of an answer.
    pub fn fail_next(&self, n: usize) {
        self.knobs.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.knobs.log.lock().unwrap().clone()
    }

    /// Object bytes the origin has sent in response bodies.
    pub fn bytes_sent(&self) -> u64 {
        self.knobs.bytes_sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The counter behind [`Self::bytes_sent`], for samplers on other tasks.
    pub fn bytes_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.knobs.bytes_sent.clone()
    }

    /// Limits the rate of all response bodies together (bytes/s, 0 = unlimited).
    pub fn set_rate_limit(&self, bytes_per_sec: u64) {
        self.knobs.limiter
            .rate
            .store(bytes_per_sec, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the origin behave like an object store under load: every request
    /// waits `first_byte` before it is answered, and each response body streams at
    /// most `stream_rate` bytes/s (0 = unlimited), on top of the shared limit.
    pub fn set_store_model(&self, first_byte: Duration, stream_rate: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.knobs.model.first_byte_us.store(first_byte.as_micros() as u64, Relaxed);
        self.knobs.model.stream_rate.store(stream_rate, Relaxed);
    }

    pub fn clear_log(&self) {
        self.knobs.log.lock().unwrap().clear();
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
