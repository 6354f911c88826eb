//! Authentication passthrough against the SigV4-checking origin: the node holds no
//! credentials; clients sign (headers or presigned URLs) for the node's address,
//! and the origin decides every request, cached or not. A client with wrong, unknown
//! or no credentials, or an expired or tampered URL, gets the origin's 403 and not
//! one byte of the object, also after a good client cached it.

use std::time::Duration;

use eliop2p_origin::{OriginClient, OriginConfig, OriginRequest};
use eliop2p_proxy::AuthMode;
use eliop2p_core::{ChunkId, ETag, ObjectKey};
use eliop2p_testkit::{
    ACCESS_KEY, Discovery, SECRET_KEY, TestClient, TestCluster, TestOrigin, sha256_hex, start_node, test_data,
};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

const MIB: usize = 1 << 20;

/// A client that signs for the node's address with the given keys.
fn signer(node: &str, access: &str, secret: &str) -> OriginClient {
    let mut cfg = OriginConfig::for_endpoint(node, access, secret);
    cfg.max_retries = 0;
    OriginClient::new(cfg).unwrap()
}

async fn get(
    c: &OriginClient,
    bucket: &str,
    key: &str,
    range: Option<&str>,
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let mut req = OriginRequest::new(Method::GET, bucket, Some(key));
    if let Some(r) = range {
        req.headers.insert(http::header::RANGE, r.parse().unwrap());
    }
    let resp = c.send(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn assert_denied(status: StatusCode, body: &[u8], data: &[u8], who: &str) {
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{who}: {:?}",
        String::from_utf8_lossy(body)
    );
    assert!(body.len() < 4096, "{who}: error body only");
    assert!(
        !data
            .windows(64)
            .take(1)
            .any(|w| body.windows(64).any(|b| b == w)),
        "{who}: object bytes leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_authorizes_every_read_and_caches_for_good_clients() {
    let (origin, data) = TestOrigin::with_object("ptb", "obj", 20 * MIB, 9).await.unwrap();
    // The node has no credentials at all.
    let node = start_node(&origin, |c| {
        c.proxy.auth = AuthMode::Passthrough;
        c.origin.access_key.clear();
        c.origin.secret_key.clear();
    })
    .await
    .unwrap();
    let url = format!("http://{}", node.proxy_addr);
    let good = signer(&url, ACCESS_KEY, SECRET_KEY);

    // Miss: the origin's response streams through and is cached.
    let (st, h, body) = get(&good, "ptb", "obj", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert_eq!(h["x-cache"], "MISS");

    // Hit: authorized by the origin, bytes from the cache.
    let before = origin.bytes_sent();
    let (st, h, body) = get(&good, "ptb", "obj", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert_eq!(h["x-cache"], "HIT");
    let (st, h, body) = get(&good, "ptb", "obj", Some("bytes=1000-2999999")).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], &data[1000..3_000_000]);
    assert_eq!(h["x-cache"], "HIT");
    let sent = origin.bytes_sent() - before;
    assert!(
        sent < data.len() as u64 / 2,
        "authorizations dropped their bodies, yet the origin sent {sent} bytes"
    );
    assert!(
        node.render_metrics()
            .contains("eliop2p_passthrough_authorizations_total{result=\"authorized\"} 2")
    );

    // Denied clients, with the object cached: the origin's 403, no object bytes.
    let wrong_secret = signer(&url, ACCESS_KEY, "not-the-secret-key-0123456789abcd");
    let (st, _, body) = get(&wrong_secret, "ptb", "obj", None).await;
    assert_denied(st, &body, &data, "wrong secret");
    let unknown = signer(&url, "AKIDUNKNOWN", SECRET_KEY);
    let (st, _, body) = get(&unknown, "ptb", "obj", None).await;
    assert_denied(st, &body, &data, "unknown key");
    let r = TestClient::new()
        .get(&format!("{url}/ptb/obj"), &[])
        .await
        .unwrap();
    assert_denied(r.status, &r.body, &data, "anonymous");
    let r = TestClient::new()
        .get(&format!("{url}/ptb/obj"), &[("range", "bytes=0-99")])
        .await
        .unwrap();
    assert_denied(r.status, &r.body, &data, "anonymous range");

    // Presigned URLs: good, tampered, expired.
    let presigned = good
        .presign(
            &OriginRequest::new(Method::GET, "ptb", Some("obj")),
            Duration::from_secs(600),
        )
        .await
        .unwrap()
        .to_string();
    let r = TestClient::new().get(&presigned, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(
        r.header("x-cache"),
        Some("HIT"),
        "signature params are not part of the cache key"
    );
    let tampered = {
        let (head, sig) = presigned.rsplit_once("X-Amz-Signature=").unwrap();
        let flipped: String = sig
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    if c == 'a' { 'b' } else { 'a' }
                } else {
                    c
                }
            })
            .collect();
        format!("{head}X-Amz-Signature={flipped}")
    };
    let r = TestClient::new().get(&tampered, &[]).await.unwrap();
    assert_denied(r.status, &r.body, &data, "tampered presigned URL");
    let short = good
        .presign(
            &OriginRequest::new(Method::GET, "ptb", Some("obj")),
            Duration::from_secs(1),
        )
        .await
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = TestClient::new().get(&short, &[]).await.unwrap();
    assert_denied(r.status, &r.body, &data, "expired presigned URL");
    assert!(
        node.render_metrics()
            .contains("eliop2p_passthrough_authorizations_total{result=\"denied\"}")
    );

    // A new version at the origin: served fresh, then cached again.
    let v2 = test_data(3 * MIB, 10);
    origin.put("ptb", "obj", v2.clone()).await.unwrap();
    let (st, _, body) = get(&good, "ptb", "obj", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&v2));
    let (_, h, body) = get(&good, "ptb", "obj", None).await;
    assert_eq!(sha256_hex(&body), sha256_hex(&v2));
    assert_eq!(h["x-cache"], "HIT");
    node.shutdown().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_keeps_signatures_of_odd_keys_valid() {
    let origin = TestOrigin::start().await.unwrap();
    origin.create_bucket("odd").await.unwrap();
    let node = start_node(&origin, |c| c.proxy.auth = AuthMode::Passthrough)
        .await
        .unwrap();
    let good = signer(
        &format!("http://{}", node.proxy_addr),
        ACCESS_KEY,
        SECRET_KEY,
    );
    for (i, key) in [
        "a/./b",
        "a//b",
        "./lead",
        "with space",
        "lit%2Fslash",
        "ünïcödé/ключ",
        "x+y=z&w",
    ]
    .iter()
    .enumerate()
    {
        let data = test_data(5000 + i, 70 + i as u64);
        origin.put("odd", key, data.clone()).await.unwrap();
        for round in 0..2 {
            let (st, _, body) = get(&good, "odd", key, None).await;
            assert_eq!(
                st,
                StatusCode::OK,
                "{key:?} round {round}: {:?}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(sha256_hex(&body), sha256_hex(&data), "{key:?}");
        }
    }
    node.shutdown().await;
    origin.stop().await;
}

/// Sends a raw request line to the node (absolute-form, CONNECT).
async fn raw(node: std::net::SocketAddr, text: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(node).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_proxy_reaches_only_allowed_origins() {
    let origin = TestOrigin::start().await.unwrap();
    origin.create_bucket("fwd").await.unwrap();
    origin.put("fwd", "k", "forwarded\n".into()).await.unwrap();
    // A host that is not allowed, counting connections.
    let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forbidden_addr = forbidden.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while forbidden.accept().await.is_ok() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    // An allowed second origin that only sees a CONNECT tunnel.
    let tunnel_end = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tunnel_addr = tunnel_end.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Ok((mut s, _)) = tunnel_end.accept().await {
            let mut b = [0u8; 5];
            if s.read_exact(&mut b).await.is_ok() {
                let _ = s.write_all(b"pong!").await;
            }
        }
    });
    let node = start_node(&origin, |c| {
        c.proxy.auth = AuthMode::Passthrough;
        c.proxy.allowed_origins = vec![tunnel_addr.to_string()];
    })
    .await
    .unwrap();

    for req in [
        format!("GET http://{forbidden_addr}/fwd/k HTTP/1.1\r\nHost: {forbidden_addr}\r\n\r\n"),
        format!("CONNECT {forbidden_addr} HTTP/1.1\r\nHost: {forbidden_addr}\r\n\r\n"),
    ] {
        let resp = raw(node.proxy_addr, &req).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("AccessDenied"), "{resp}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection to a host not allowed"
    );

    // CONNECT to an allowed origin is a byte tunnel.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(node.proxy_addr)
            .await
            .unwrap();
        s.write_all(
            format!("CONNECT {tunnel_addr} HTTP/1.1\r\nHost: {tunnel_addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = vec![0u8; 1024];
        let n = s.read(&mut head).await.unwrap();
        assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
        s.write_all(b"ping!").await.unwrap();
        let mut pong = [0u8; 5];
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong!");
    }

    // Absolute-form to the configured origin: relayed as-is; unsigned is refused by
    // the origin itself.
    let o = origin.addr;
    let resp = raw(
        node.proxy_addr,
        &format!("GET http://{o}/fwd/k HTTP/1.1\r\nHost: {o}\r\n\r\n"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(!resp.contains("forwarded"), "{resp}");
    node.shutdown().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mode_answers_only_configured_client_keys() {
    let (origin, data) = TestOrigin::with_object("nodeauth", "obj", 6 * MIB, 21).await.unwrap();
    let node = start_node(&origin, |c| {
        c.proxy.client_keys = eliop2p_proxy::sigv4::ClientKeys::parse(&[
            "client-a:client-secret-a-0123456789".to_owned(),
        ])
        .unwrap();
    })
    .await
    .unwrap();
    let url = format!("http://{}", node.proxy_addr);
    let good = signer(&url, "client-a", "client-secret-a-0123456789");
    for expected_cache in ["MISS", "HIT"] {
        let (st, h, body) = get(&good, "nodeauth", "obj", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(sha256_hex(&body), sha256_hex(&data));
        assert_eq!(h["x-cache"], expected_cache);
    }
    // The object is cached; none of these get a byte of it.
    let (st, _, body) = get(
        &signer(&url, "client-a", "wrong-secret-0123456789"),
        "nodeauth",
        "obj",
        None,
    )
    .await;
    assert_denied(st, &body, &data, "wrong secret");
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    let (st, _, body) = get(
        &signer(&url, ACCESS_KEY, SECRET_KEY),
        "nodeauth",
        "obj",
        None,
    )
    .await;
    assert_denied(
        st,
        &body,
        &data,
        "a key the node does not know (the origin's own)",
    );
    assert!(String::from_utf8_lossy(&body).contains("InvalidAccessKeyId"));
    let r = TestClient::new()
        .get(&format!("{url}/nodeauth/obj"), &[])
        .await
        .unwrap();
    assert_denied(r.status, &r.body, &data, "anonymous");
    let presigned = good
        .presign(
            &OriginRequest::new(Method::GET, "nodeauth", Some("obj")),
            Duration::from_secs(600),
        )
        .await
        .unwrap()
        .to_string();
    let r = TestClient::new().get(&presigned, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let tampered = presigned.replace("nodeauth/obj", "nodeauth/obj2");
    let r = TestClient::new().get(&tampered, &[]).await.unwrap();
    assert_denied(r.status, &r.body, &data, "tampered presigned URL");
    let short = good
        .presign(
            &OriginRequest::new(Method::GET, "nodeauth", Some("obj")),
            Duration::from_secs(1),
        )
        .await
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = TestClient::new().get(&short, &[]).await.unwrap();
    assert_denied(r.status, &r.body, &data, "expired presigned URL");
    // Odd keys keep their signatures valid through the node's verifier too.
    for key in ["a/./b", "a//b", "with space", "lit%2Fslash", "ünï"] {
        origin
            .put("nodeauth", key, data.slice(..1000))
            .await
            .unwrap();
        let (st, _, body) = get(&good, "nodeauth", key, None).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "{key:?}: {:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(&body[..], &data[..1000]);
    }
    assert!(
        node.render_metrics()
            .contains("eliop2p_proxy_client_auth_failures_total 5")
    );
    node.shutdown().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_cache_reuses_only_the_same_signature() {
    let (origin, data) = TestOrigin::with_object("authc", "obj", 3 * MIB, 23).await.unwrap();
    let node = start_node(&origin, |c| {
        c.proxy.auth = AuthMode::Passthrough;
        c.proxy.auth_cache_ttl = Duration::from_secs(60);
    })
    .await
    .unwrap();
    let url = format!("http://{}", node.proxy_addr);
    let good = signer(&url, ACCESS_KEY, SECRET_KEY);
    let presigned = good
        .presign(
            &OriginRequest::new(Method::GET, "authc", Some("obj")),
            Duration::from_secs(600),
        )
        .await
        .unwrap()
        .to_string();
    let c = TestClient::new();
    // Miss, then an origin-authorized hit (recorded), then hits on the cached
    // authorization: the origin sees no more requests.
    for _ in 0..2 {
        let r = c.get(&presigned, &[]).await.unwrap();
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    let asked = origin.gets_of("authc", "obj").len();
    for _ in 0..3 {
        let r = c.get(&presigned, &[]).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        assert_eq!(r.header("x-cache"), Some("HIT"));
    }
    assert_eq!(
        origin.gets_of("authc", "obj").len(),
        asked,
        "cached authorization"
    );
    assert!(
        node.render_metrics()
            .contains("eliop2p_passthrough_auth_cache_hits_total 3")
    );
    // Any other signature is still the origin's call.
    let last = presigned.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &presigned[..presigned.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let r = c.get(&tampered, &[]).await.unwrap();
    assert_denied(r.status, &r.body, &data, "another signature");
    let (st, _, body) = get(
        &signer(&url, ACCESS_KEY, "wrong-secret-0123456789abcdef"),
        "authc",
        "obj",
        None,
    )
    .await;
    assert_denied(st, &body, &data, "wrong secret");
    node.shutdown().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_route_to_their_own_origins_and_auth_modes() {
    // Origin A (default, node-signed) and origin B for bucket "bbb", passthrough.
    let a = TestOrigin::start().await.unwrap();
    a.create_bucket("aaa").await.unwrap();
    let da = test_data(2 * MIB, 31);
    a.put("aaa", "obj", da.clone()).await.unwrap();
    let b = TestOrigin::start().await.unwrap();
    b.create_bucket("bbb").await.unwrap();
    let db = test_data(2 * MIB, 32);
    b.put("bbb", "obj", db.clone()).await.unwrap();
    let b_cfg = b.origin_config();
    let node = start_node(&a, |c| {
        c.extra_origins = vec![eliop2p_proxy::ExtraOrigin {
            origin: b_cfg.clone(),
            buckets: vec!["bbb".into()],
            auth: Some(AuthMode::Passthrough),
        }];
    })
    .await
    .unwrap();
    let url = format!("http://{}", node.proxy_addr);
    let c = TestClient::new();
    // Bucket aaa: node auth, anyone on the node's network reads it.
    let r = c.get(&format!("{url}/aaa/obj"), &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&da));
    assert_eq!(b.gets_of("aaa", "obj").len(), 0);
    // Bucket bbb: origin B decides; anonymous is refused, signed clients read.
    let r = c.get(&format!("{url}/bbb/obj"), &[]).await.unwrap();
    assert_denied(
        r.status,
        &r.body,
        &db,
        "anonymous on the passthrough origin",
    );
    let good = signer(&url, ACCESS_KEY, SECRET_KEY);
    for _ in 0..2 {
        let (st, _, body) = get(&good, "bbb", "obj", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(sha256_hex(&body), sha256_hex(&db));
    }
    assert!(!b.gets_of("bbb", "obj").is_empty());
    assert_eq!(
        a.gets_of("bbb", "obj").len(),
        0,
        "origin A never asked for bucket bbb"
    );
    node.shutdown().await;
    a.stop().await;
    b.stop().await;
}

fn passthrough(c: &mut eliop2p_proxy::NodeConfig) {
    c.proxy.auth = AuthMode::Passthrough;
    c.origin.access_key.clear();
    c.origin.secret_key.clear();
}

/// The chunk ids of an object version on the test origin (16 MiB chunks).
fn chunk_ids(origin: &TestOrigin, bucket: &str, key: &str, etag: &str, size: usize) -> Vec<ChunkId> {
    (0..size.div_ceil(16 * MIB) as u64)
        .map(|i| {
            ChunkId::derive(&origin.endpoint, &ObjectKey::new(bucket, key), &ETag::new(etag), 16 << 20, i)
        })
        .collect()
}

/// Passthrough nodes use the cluster: once the origin has authorized a client's
/// own request (a one-byte probe), the bytes come from peers, and a client the
/// origin refuses gets its 403 and nothing else, whatever the peers hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_nodes_read_from_peers_after_the_origin_authorizes() {
    let (origin, data) = TestOrigin::with_object("ptc", "obj", 40 * MIB, 21).await.unwrap();
    let cluster = TestCluster::start_with(&origin, 3, Discovery::Gossip, |_, c| passthrough(c), |_| {})
        .await
        .unwrap();
    let url = |i: usize| format!("http://{}", cluster.node(i).proxy_addr);
    let (st, h, body) = get(&signer(&url(0), ACCESS_KEY, SECRET_KEY), "ptc", "obj", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    let etag = h.get("etag").unwrap().to_str().unwrap().to_owned();
    let ids = chunk_ids(&origin, "ptc", "obj", &etag, data.len());
    let holder = cluster.node(0).p2p_addr.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for i in 1..3 {
        let p2p = cluster.node(i).p2p.as_ref().unwrap();
        loop {
            let mut n = 0;
            for id in &ids {
                n += usize::from(p2p.locate(*id).await.contains(&holder));
            }
            if n == ids.len() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {i} never learned node 0's chunks");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let before = origin.bytes_sent();
    origin.clear_log();

    // Refused clients first, while the peers hold every chunk.
    let (st, _, body) = get(&signer(&url(1), ACCESS_KEY, "wrong-secret"), "ptc", "obj", None).await;
    assert_denied(st, &body, &data, "wrong secret on node 1");
    let r = TestClient::new().get(&format!("{}/ptc/obj", url(2)), &[]).await.unwrap();
    assert_denied(r.status, &r.body, &data, "unsigned on node 2");
    let (st, _, body) = get(&signer(&url(2), "unknown-key", SECRET_KEY), "ptc", "obj", Some("bytes=0-99")).await;
    assert_denied(st, &body, &data, "unknown key, ranged, on node 2");

    // Good clients on nodes 1 and 2: exact bytes, none of them from the origin.
    for i in 1..3 {
        let good = signer(&url(i), ACCESS_KEY, SECRET_KEY);
        let (st, h, body) = get(&good, "ptc", "obj", None).await;
        assert_eq!(st, StatusCode::OK, "node {i}");
        assert_eq!(sha256_hex(&body), sha256_hex(&data), "node {i}");
        assert_eq!(h.get("x-cache-source").unwrap(), "peer", "node {i}");
        // A presigned URL with a Range header it does not sign.
        let presigned = good
            .presign(&OriginRequest::new(Method::GET, "ptc", Some("obj")), Duration::from_secs(600))
            .await
            .unwrap()
            .to_string();
        let r = TestClient::new().get(&presigned, &[("range", "bytes=20000000-30000000")]).await.unwrap();
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "node {i}");
        assert_eq!(&r.body[..], &data[20_000_000..=30_000_000], "node {i}");
        assert_eq!(r.header("content-range").unwrap(), "bytes 20000000-30000000/41943040");
        assert_eq!(cluster.node(i).metrics.bytes_origin.load(std::sync::atomic::Ordering::Relaxed), 0, "node {i}");
    }
    // The origin sent only error bodies and one-byte probes.
    let origin_bytes = origin.bytes_sent() - before;
    assert!(origin_bytes < 16 * 1024, "origin sent {origin_bytes} body bytes: {:?}", origin.requests().iter().map(|r| (&r.method, &r.path, &r.range)).collect::<Vec<_>>());
    cluster.shutdown().await;
    origin.stop().await;
}

/// A passthrough node missing one chunk of an object reads that chunk alone
/// from the origin, with the client's own request and an added range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_partial_hit_reads_only_the_missing_chunk() {
    let (origin, data) = TestOrigin::with_object("ptp", "obj", 40 * MIB, 22).await.unwrap();
    let node = start_node(&origin, passthrough).await.unwrap();
    let url = format!("http://{}", node.proxy_addr);
    let good = signer(&url, ACCESS_KEY, SECRET_KEY);
    let (st, h, body) = get(&good, "ptp", "obj", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    let etag = h.get("etag").unwrap().to_str().unwrap().to_owned();
    let ids = chunk_ids(&origin, "ptp", "obj", &etag, data.len());
    node.cache.remove(&ids[1]);
    let before = origin.bytes_sent();
    let (st, _, body) = get(&good, "ptp", "obj", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    let origin_bytes = origin.bytes_sent() - before;
    assert!(
        (16 * MIB as u64..16 * MIB as u64 + 4096).contains(&origin_bytes),
        "the origin sent {origin_bytes} bytes for one missing 16 MiB chunk"
    );
    // Cached again: the next read costs the probe only.
    let before = origin.bytes_sent();
    let (_, h, body) = get(&good, "ptp", "obj", None).await;
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert_eq!(h.get("x-cache").unwrap(), "HIT");
    assert!(origin.bytes_sent() - before < 4096);
    // A client the origin refuses gets nothing of the cached object.
    let (st, _, body) = get(&signer(&url, ACCESS_KEY, "nope"), "ptp", "obj", None).await;
    assert_denied(st, &body, &data, "wrong secret");
}
