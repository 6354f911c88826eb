//! Real parts for tests, the demo and the benchmarks: an in-process S3-compatible
//! origin (`s3s-fs`, which checks SigV4 signatures) on a loopback port, with a log
//! of every request it receives; a node wired to it; a small HTTP client; and
//! deterministic test data.

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
    /// Requests still to be answered with an injected 503 before serving normally.
    fail_next: Arc<std::sync::atomic::AtomicUsize>,
    client: OriginClient,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _root: Option<tempfile::TempDir>,
    root: PathBuf,
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

    /// Starts an origin over `root` (kept after stop) on a given listener.
    pub async fn start_on(listener: TcpListener, root: &Path) -> anyhow::Result<Self> {
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let addr = listener.local_addr()?;
        let endpoint = format!("http://{addr}");
        let log = Arc::new(Mutex::new(Vec::new()));
        let fail_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        {
            let log = log.clone();
            let fail_next = fail_next.clone();
            let cancel = cancel.clone();
            let conns = tracker.clone();
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
                    let cancel = cancel.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            log.lock().unwrap().push(LoggedRequest {
                                method: req.method().clone(),
                                path: req.uri().path().to_owned(),
                                query: req.uri().query().map(str::to_owned),
                                range: req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned),
                            });
                            let inject = fail_next
                                .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
                                .is_ok();
                            let fut = (!inject).then(|| Service::call(&service, req));
                            async move {
                                match fut {
                                    Some(f) => f.await,
                                    None => {
                                        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>injected by the test</Message></Error>";
                                        let mut resp = http::Response::new(s3s::Body::from(body.to_owned()));
                                        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                        Ok(resp)
                                    }
                                }
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            _ = conn => {}
                            _ = cancel.cancelled() => {}
                        }
                    });
                }
            });
        }
        let client = OriginClient::new(OriginConfig::for_endpoint(
            &endpoint, ACCESS_KEY, SECRET_KEY,
        ))?;
        Ok(Self {
            addr,
            endpoint,
            log,
            fail_next,
            client,
            cancel,
            tracker,
            _root: None,
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn origin_config(&self) -> OriginConfig {
        OriginConfig::for_endpoint(&self.endpoint, ACCESS_KEY, SECRET_KEY)
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

    /// The next `n` requests (of any kind) get `503 SlowDown` instead of an answer.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap().clone()
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

/// A node config for tests: loopback, small chunks optional, short TTL.
pub fn node_config(origin: OriginConfig) -> NodeConfig {
    NodeConfig {
        proxy: ProxyConfig::default(),
        admin: AdminConfig::default(),
        origin,
        cache: CacheConfig::memory_only(1 << 30, 16 << 20),
        shutdown_grace: Duration::from_secs(5),
        p2p: None,
    }
}

/// Starts a node on loopback port 0 in front of `origin`.
pub async fn start_node(
    origin: &TestOrigin,
    tweak: impl FnOnce(&mut NodeConfig),
) -> anyhow::Result<NodeHandle> {
    let mut cfg = node_config(origin.origin_config());
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
