//! The probes of an attacker and a careless operator, against a real node on
//! loopback: each test reproduces one hole found by the adversarial probe (issue
//! 15) and checks that it stays closed. Counts are printed for the record.

use eliop2p_origin::{OriginConfig, OriginKind};
use eliop2p_testkit::oss::TestOssOrigin;
use eliop2p_testkit::raw_p2p::{frame_bytes, p2p_node, read_frame};
use eliop2p_testkit::{raw_http, rss_bytes, test_data};

async fn member(addr: std::net::SocketAddr) -> anyhow::Result<(tokio::net::TcpStream, bytes::BytesMut)> {
    eliop2p_testkit::raw_p2p::member(addr, None).await
}

async fn node_for(cfg: OriginConfig) -> eliop2p_proxy::NodeHandle {
    eliop2p_testkit::start_node_for(cfg, |_| {}).await.unwrap()
}

/// `origin.endpoint = http://host/public/`: no path a client sends reaches a file
/// outside `/public/`, however it spells `..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_paths_never_leave_the_endpoint_path() -> anyhow::Result<()> {
    let web = TestOssOrigin::start_plain_http(true).await?;
    let public = test_data(1000, 1);
    let secret = b"the private file".to_vec();
    web.put("public", "a.txt", public.clone());
    web.put("private", "secret.txt", secret.clone().into());
    let mut cfg = OriginConfig::for_endpoint(&format!("{}/public/", web.endpoint), "", "");
    cfg.kind = OriginKind::Http;
    let node = node_for(cfg).await;
    let (status, body) = raw_http(node.proxy_addr, "GET /a.txt HTTP/1.1\r\nHost: n").await?;
    assert_eq!((status, &body[..]), (200, &public[..]), "the prefix itself is served");
    let probes = [
        "/../private/secret.txt",
        "/%2e%2e/private/secret.txt",
        "/%2E%2E/private/secret.txt",
        "/x/../../private/secret.txt",
        "/./../private/secret.txt",
        "/..%2fprivate/secret.txt",
        "/..%5cprivate%5csecret.txt",
    ];
    for p in probes {
        let (status, body) = raw_http(node.proxy_addr, &format!("GET {p} HTTP/1.1\r\nHost: n")).await?;
        assert_eq!(status, 400, "{p}: {}", String::from_utf8_lossy(&body));
        assert!(!body.windows(secret.len()).any(|w| w == secret), "{p} leaked the file");
    }
    println!("plain HTTP traversal: {} probes refused", probes.len());
    node.shutdown().await;
    Ok(())
}

/// `proxy.auth_cache_ttl` reuses an origin's yes for the same signature, but never
/// past the signature's own expiry: a presigned URL with `X-Amz-Expires=2` is
/// refused at t = 3 s, as the origin would refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_authorization_ends_with_the_presigned_url() -> anyhow::Result<()> {
    use eliop2p_origin::{OriginClient, OriginRequest};
    use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestClient, TestOrigin, sha256_hex, start_node};
    let (origin, data) = TestOrigin::with_object("exp", "obj", 1 << 20, 5).await?;
    let node = start_node(&origin, |c| {
        c.proxy.auth = eliop2p_proxy::AuthMode::Passthrough;
        c.proxy.auth_cache_ttl = std::time::Duration::from_secs(60);
    })
    .await?;
    let signer = OriginClient::new(OriginConfig::for_endpoint(&format!("http://{}", node.proxy_addr), ACCESS_KEY, SECRET_KEY))?;
    let url = signer
        .presign(&OriginRequest::new(http::Method::GET, "exp", Some("obj")), std::time::Duration::from_secs(2))
        .await?
        .to_string();
    let c = TestClient::new();
    for _ in 0..3 {
        let r = c.get(&url, &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    assert!(node.render_metrics().contains("eliop2p_passthrough_auth_cache_hits_total 1"), "the cache answered while the URL was valid");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = c.get(&url, &[]).await?;
    assert_eq!(r.status, 403, "expired: {}", String::from_utf8_lossy(&r.body));
    assert!(!r.body.windows(64).any(|w| data.windows(64).next() == Some(w)));
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// A relayed listing whose query spells spaces as `+` (polars, obstore): S3 reads
/// a space, so the node signs a space; before, it signed a literal `+` and the
/// origin answered 403 SignatureDoesNotMatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plus_in_a_relayed_query_is_a_space() -> anyhow::Result<()> {
    use eliop2p_testkit::{TestOrigin, start_node};
    let origin = TestOrigin::start().await?;
    origin.create_bucket("lst").await?;
    origin.put("lst", "dir with space/x", test_data(10, 1)).await?;
    origin.put("lst", "other/y", test_data(10, 2)).await?;
    let node = start_node(&origin, |_| {}).await?;
    let (status, body) = raw_http(
        node.proxy_addr,
        "GET /lst?list-type=2&prefix=dir+with+space%2F HTTP/1.1\r\nHost: n",
    )
    .await?;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Key>dir with space/x</Key>"), "{body}");
    assert!(!body.contains("other/y"), "{body}");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// With `proxy.client_keys_file`, forward-proxy (`GET http://origin/...`) and
/// `CONNECT` requests prove a key too (`Proxy-Authorization: Basic`), or get 407;
/// before, both were served unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_cover_forward_proxy_and_connect() -> anyhow::Result<()> {
    use base64::Engine;
    use eliop2p_testkit::{TestOrigin, start_node};
    let origin = TestOrigin::start().await?;
    origin.create_bucket("fwd").await?;
    origin.put("fwd", "x", test_data(100, 3)).await?;
    // An allowed origin that is not the node's own: a plain TCP echo of a greeting.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let other_addr = other.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = other.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").await;
            });
        }
    });
    let node = start_node(&origin, |c| {
        c.proxy.client_keys = eliop2p_proxy::sigv4::ClientKeys::parse(&["APPKEY:appsecret".into()]).unwrap();
        c.proxy.allowed_origins = vec![other_addr.to_string()];
    })
    .await?;
    let good = format!(
        "Proxy-Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("APPKEY:appsecret")
    );
    let bad = format!(
        "Proxy-Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("APPKEY:wrong")
    );
    let get = format!("GET http://{other_addr}/y HTTP/1.1\r\nHost: {other_addr}");
    let connect = format!("CONNECT {other_addr} HTTP/1.1\r\nHost: {other_addr}");
    let mut refused = 0;
    for (req, auth) in [(&get, ""), (&get, bad.as_str()), (&connect, ""), (&connect, bad.as_str())] {
        let (status, body) = raw_http(node.proxy_addr, &format!("{req}\r\n{auth}")).await?;
        assert_eq!(status, 407, "{req} {auth}: {}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("<Code>AccessDenied</Code>"));
        refused += 1;
    }
    let (status, body) = raw_http(node.proxy_addr, &format!("{get}\r\n{good}")).await?;
    assert_eq!((status, &body[..]), (200, &b"hi"[..]), "a proven key is relayed");
    {
        // The tunnel stays open: read its answer's head only, then speak through it.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(node.proxy_addr).await?;
        s.write_all(format!("{connect}\r\n{good}\r\n\r\n").as_bytes()).await?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "tunnel closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "a proven key gets its tunnel: {}", String::from_utf8_lossy(&got));
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(rest.ends_with(b"hi"), "{}", String::from_utf8_lossy(&rest));
    }
    println!("forward proxy / CONNECT without a client key: {refused} refused");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// Before the handshake a frame is tiny: 1,600 connections (from 25 loopback
/// addresses) each sending the header of a Hello that claims 1 MiB and 60 KiB of
/// it are each closed at once, and the node's memory does not grow with them
/// (before: 1 MiB reserved per connection, 1.6 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_handshake_frames_are_tiny_and_floods_cost_no_memory() -> anyhow::Result<()> {
    use eliop2p_p2p::codec::MessageType;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, node) = p2p_node().await?;
    let p2p = node.p2p_addr.unwrap();
    let mut hello = frame_bytes(MessageType::Hello, &[], vec![7u8; 1 << 20].into());
    hello.truncate(60 * 1024);
    let hello = hello.freeze();
    let before = rss_bytes();
    let mut conns = Vec::new();
    for i in 0..1600u32 {
        let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i / 64) as u8);
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind((src, 0).into())?;
        let mut s = sock.connect(p2p).await?;
        let _ = s.write_all(&hello).await;
        conns.push(s);
    }
    let peak = rss_bytes();
    let mut closed = 0;
    for s in &mut conns {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    println!(
        "pre-handshake flood: 1600 connections, {closed} closed by the node, RSS {} MB -> {} MB",
        before >> 20,
        peak >> 20
    );
    assert_eq!(closed, 1600, "every oversized Hello closes its connection");
    assert!(peak < before + (150 << 20), "RSS grew from {} MB to {} MB", before >> 20, peak >> 20);
    drop(conns);
    // The node still serves a real peer's handshake afterwards (its own listener).
    assert!(node.render_metrics().contains("eliop2p_p2p_handshake_failures_total"));
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// One address holds at most 64 connections to the P2P port; the rest are closed
/// at accept and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_a_bounded_number_of_p2p_connections() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let (origin, node) = p2p_node().await?;
    let p2p = node.p2p_addr.unwrap();
    let mut conns = Vec::new();
    for _ in 0..100 {
        conns.push(tokio::net::TcpStream::connect(p2p).await?);
    }
    // Well within the 5 s handshake timeout, which closes idle ones too.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in &mut conns {
        let mut buf = [0u8; 8];
        if let Ok(Ok(0)) = tokio::time::timeout(std::time::Duration::from_millis(10), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    println!("100 idle connections from one address: {closed} closed at accept");
    assert_eq!(closed, 36);
    let m = node.render_metrics();
    assert!(m.contains("eliop2p_p2p_connections_refused_total 36"), "{m}");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// An authenticated member's `Cancel` frames name pieces it never asked: nothing
/// is kept for them (before: a set grown to 510 MB by 1,500 frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_of_pieces_never_asked_keep_nothing() -> anyhow::Result<()> {
    use eliop2p_p2p::codec::MessageType;
    use tokio::io::AsyncWriteExt;
    let (origin, node) = p2p_node().await?;
    let (mut s, mut buf) = member(node.p2p_addr.unwrap()).await?;
    let before = rss_bytes();
    let pieces: Vec<u32> = (0..4096).collect();
    let payload = eliop2p_p2p::proto::encode_pieces(&pieces);
    for i in 0..1500u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        s.write_all(&frame_bytes(MessageType::Cancel, &id, payload.clone())).await?;
    }
    // The connection still answers (a HaveQuery of a chunk nobody holds).
    s.write_all(&frame_bytes(MessageType::HaveQuery, &[1u8; 32], bytes::Bytes::new())).await?;
    let f = tokio::time::timeout(std::time::Duration::from_secs(30), read_frame(&mut s, &mut buf)).await??;
    assert_eq!(f.message_type, MessageType::Error);
    let after = rss_bytes();
    println!("1500 Cancel frames of 4096 pieces: RSS {} MB -> {} MB", before >> 20, after >> 20);
    assert!(after < before + (100 << 20), "RSS grew from {} MB to {} MB", before >> 20, after >> 20);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// A member that asks for pieces and never reads the answers holds a bounded
/// amount of the node: at most 256 queued pieces and 32 requests in progress per
/// connection, then the node stops reading it (the probe saw 400 unread requests
/// hold 456 MB). 400 requests for all 16 pieces of a cached chunk (6.4 GB if all
/// were framed) leave RSS flat, and another member is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piece_requests_never_read_hold_bounded_memory() -> anyhow::Result<()> {
    use eliop2p_p2p::codec::MessageType;
    use tokio::io::AsyncWriteExt;
    let (origin, node) = p2p_node().await?;
    let data = test_data(16 << 20, 21);
    let id = eliop2p_testkit::raw_p2p::cached_chunk(&origin, &node, "unread", data.clone()).await?;
    let (mut s, _buf) = member(node.p2p_addr.unwrap()).await?;
    const PIECE: usize = eliop2p_cache::PIECE_SIZE as usize;
    let all: Vec<u32> = (0..((16 << 20) / PIECE) as u32).collect();
    let request = frame_bytes(MessageType::PieceRequest, id.as_bytes(), eliop2p_p2p::proto::encode_pieces(&all)).freeze();
    let before = rss_bytes();
    // The node stops reading once its bounds are reached: the writes then block.
    let writer = tokio::spawn(async move {
        for _ in 0..400 {
            if s.write_all(&request).await.is_err() {
                break;
            }
        }
        s
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = rss_bytes();
    println!("400 unread requests of a whole chunk: RSS {} MB -> {} MB", before >> 20, after >> 20);
    assert!(after < before + (150 << 20), "RSS grew from {} MB to {} MB", before >> 20, after >> 20);
    // Another member is served meanwhile, byte-exact.
    let (mut other, mut obuf) = member(node.p2p_addr.unwrap()).await?;
    other
        .write_all(&frame_bytes(MessageType::PieceRequest, id.as_bytes(), eliop2p_p2p::proto::encode_pieces(&[3])))
        .await?;
    let f = tokio::time::timeout(std::time::Duration::from_secs(10), read_frame(&mut other, &mut obuf)).await??;
    assert_eq!(f.message_type, MessageType::PieceData, "{:?}", eliop2p_p2p::proto::parse_error(&f.data));
    assert_eq!(&f.data[..], &data[3 * PIECE..4 * PIECE]);
    writer.abort();
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// 1,000 connections each sending 400 KB of a request head that never ends: each
/// is answered 431 once its head passes the read buffer, and memory stays flat
/// (before: hyper's default buffer, RSS +400 MB). A cap on connections holds too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_heads_cost_bounded_memory() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = eliop2p_testkit::TestOrigin::start().await?;
    let node = eliop2p_testkit::start_node(&origin, |c| c.proxy.max_connections = 1200).await?;
    let mut head = b"GET /b/k HTTP/1.1\r\nHost: n\r\nX-Pad: ".to_vec();
    head.resize(400 * 1000, b'a');
    let head = bytes::Bytes::from(head);
    let before = rss_bytes();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (addr, head) = (node.proxy_addr, head.clone());
        tasks.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let _ = s.write_all(&head).await; // the node stops reading: a write error is fine
            let mut resp = Vec::new();
            let r = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut resp)).await;
            // 431, or a reset: the node closes while the client still writes,
            // which can discard its answer. Neither may hang (a timeout here).
            anyhow::ensure!(r.is_ok(), "connection left hanging");
            anyhow::Ok((resp.starts_with(b"HTTP/1.1 431"), resp.is_empty(), s))
        });
    }
    let (mut refused, mut reset) = (0, 0);
    let mut held = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (is_431, empty, s) = r??;
        refused += usize::from(is_431);
        reset += usize::from(empty);
        held.push(s);
    }
    let peak = rss_bytes();
    println!("1000 unfinished 400 KB heads: {refused} answered 431, {reset} reset, RSS {} MB -> {} MB", before >> 20, peak >> 20);
    assert_eq!(refused + reset, 1000, "every connection refused");
    assert!(refused > 0);
    assert!(peak < before + (150 << 20), "RSS grew from {} MB to {} MB", before >> 20, peak >> 20);
    drop(held);
    // The connection cap: 1,200 open at once, one more closed at accept.
    let mut open = Vec::new();
    for _ in 0..1200 {
        open.push(tokio::net::TcpStream::connect(node.proxy_addr).await?);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(node.proxy_addr).await?;
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut b)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "connection 1,201 is closed: {n:?}");
    drop(open);
    let (status, _) = raw_http(node.proxy_addr, "GET /healthz HTTP/1.1\r\nHost: n").await?;
    assert_ne!(status, 0);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// A member's fetch-through request with a false object size (1 MiB for a 20 MiB
/// object) makes the owner fill nothing: it checks size and ETag against its own
/// metadata. Before, it filled chunk 0 as 1 MiB and served its own clients a
/// 20 MiB Content-Length with bytes from the wrong offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_trusts_its_own_metadata_not_the_askers() -> anyhow::Result<()> {
    use eliop2p_p2p::codec::MessageType;
    use eliop2p_testkit::{Discovery, TestClient, TestCluster, TestOrigin, sha256_hex};
    use tokio::io::AsyncWriteExt;
    let (origin, data) = TestOrigin::with_object("own", "obj", 20 << 20, 8).await?;
    let cluster = TestCluster::start(&origin, 2, Discovery::Gossip).await?;
    let nodes: Vec<_> = cluster.nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    // Both nodes must know each other (the owner is one of them).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The object's real ETag, from the origin.
    let oc = eliop2p_origin::OriginClient::new(origin.origin_config())?;
    let head = oc.send(eliop2p_origin::OriginRequest::new(http::Method::HEAD, "own", Some("obj"))).await?;
    let etag = head.headers()["etag"].to_str()?.to_owned();
    let id = eliop2p_core::ChunkId::derive(
        oc.origin_id(),
        &eliop2p_core::ObjectKey::new("own", "obj"),
        &eliop2p_core::ETag::new(&etag),
        16 << 20,
        0,
    );
    let locate = serde_json::json!({"fetch": {"bucket": "own", "key": "obj", "etag": etag, "object_size": 1 << 20, "chunk_size": 16 << 20, "index": 0}});
    for node in &nodes {
        let (mut s, mut buf) = member(node.p2p_addr.unwrap()).await?;
        s.write_all(&frame_bytes(MessageType::Locate, id.as_bytes(), serde_json::to_vec(&locate)?.into())).await?;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read_frame(&mut s, &mut buf)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut refused = 0;
    for node in &nodes {
        let r = TestClient::new().get(&format!("http://{}/own/obj", node.proxy_addr), &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), data.len(), "whole body");
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact");
        let m = node.render_metrics();
        refused += u32::from(m.contains("eliop2p_fetch_through_refused_total 1"));
    }
    assert!(refused >= 1, "the owner refused the false size");
    Ok(())
}

/// Many slow clients reading different cold objects at once (before: every
/// response held its chunk and 4 read ahead, whatever the memory tier's size, so RSS
/// grew with the number of clients; the probe saw 1.28 GB at memory_size 256 MiB).
/// Now responses reserve chunks against `cache.inflight_size`: peak RSS stays within
/// the memory tier plus that budget plus a fixed overhead, and every body is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_cold_readers_stay_within_the_memory_budget() -> anyhow::Result<()> {
    const MIB: u64 = 1 << 20;
    const OBJECTS: usize = 24;
    let origin = eliop2p_testkit::TestOrigin::start().await?;
    origin.create_bucket("bkt").await?;
    let data = test_data(48 << 20, 15);
    let want = eliop2p_testkit::sha256_hex(&data);
    for i in 0..OBJECTS {
        origin.put("bkt", &format!("obj-{i}"), data.clone()).await?;
    }
    drop(data);
    let (memory, inflight) = (64 * MIB, 128 * MIB);
    let node = eliop2p_testkit::start_node(&origin, |c| {
        c.cache.memory_capacity = memory;
        c.cache.inflight_capacity = inflight;
    })
    .await?;
    let before = rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let t0 = std::time::Instant::now();
    let readers: Vec<_> = (0..OBJECTS)
        .map(|i| {
            let addr = node.proxy_addr;
            tokio::spawn(async move { eliop2p_testkit::slow_get(addr, &format!("/bkt/obj-{i}"), 40 << 20).await })
        })
        .collect();
    for r in readers {
        let (status, len, sha) = r.await??;
        assert_eq!((status, len), (200, 48 * MIB));
        assert_eq!(sha, want, "a slow reader's body differs from the object");
    }
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // And back down once the responses are done: what stays is the memory tier
    // (before, glibc kept what the burst freed: 225 MB stayed).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = rss_bytes();
    let metrics = node.render_metrics();
    let waits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("eliop2p_inflight_waits_total "))
        .unwrap_or("?")
        .to_owned();
    println!(
        "{OBJECTS} slow readers of cold 48 MiB objects in {:.1} s: RSS {} MB -> peak {} MB -> {} MB 3 s after (memory tier {} MB, in-flight budget {} MB), {waits} waits",
        t0.elapsed().as_secs_f64(),
        before >> 20,
        peak >> 20,
        after >> 20,
        memory >> 20,
        inflight >> 20
    );
    assert!(
        peak < before + memory + inflight + 160 * MIB,
        "RSS grew from {} MB to {} MB",
        before >> 20,
        peak >> 20
    );
    assert!(
        after < before + memory + 96 * MIB,
        "RSS stayed at {} MB after the responses (from {} MB)",
        after >> 20,
        before >> 20
    );
    assert!(
        metrics.contains("eliop2p_inflight_bytes{kind=\"used\"} 0"),
        "every reservation is released once the responses are sent"
    );
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// A client that stops reading mid-body is closed after `proxy.send_timeout`, and
/// the chunks it held go back to the in-flight budget (else a handful of stalled
/// clients could hold the whole budget and make every other cold read wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_frees_its_budget() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = eliop2p_testkit::TestOrigin::start().await?;
    origin.create_bucket("bkt").await?;
    origin.put("bkt", "big", test_data(64 << 20, 16)).await?;
    let node = eliop2p_testkit::start_node(&origin, |c| {
        c.proxy.send_timeout = std::time::Duration::from_secs(1);
    })
    .await?;
    let mut s = tokio::net::TcpStream::connect(node.proxy_addr).await?;
    s.write_all(b"GET /bkt/big HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = vec![0u8; 4096];
    s.read_exact(&mut buf).await?;
    let held = |m: String| {
        m.lines()
            .find_map(|l| l.strip_prefix("eliop2p_inflight_bytes{kind=\"used\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(held(node.render_metrics()) > 0, "the stalled response holds chunks");
    // Stop reading well past the timeout; the node gives up on the connection.
    let t0 = std::time::Instant::now();
    loop {
        if held(node.render_metrics()) == 0 {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the stalled response still holds its chunks");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await?;
    assert!(
        (rest.len() as u64) < (64 << 20),
        "the stalled connection was closed before its body was complete ({} bytes)",
        rest.len()
    );
    println!("stalled client: closed after {:.1} s, {} more bytes buffered in sockets", t0.elapsed().as_secs_f64() + 0.5, rest.len());
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// A passthrough GET that carries a body (`Content-Length: 5`) reaches the origin
/// with that body, as sent: before, the node relayed the header but no body, and
/// an origin that reads it (nginx does) waited for five bytes that never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_get_with_a_body_is_relayed_whole() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An origin that reads the declared body (for two seconds at most) and answers
    // with what it got.
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let web_addr = web.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = web.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                let split = loop {
                    let Ok(n) = s.read(&mut b).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
                let want: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                let mut body = buf[split..].to_vec();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                    while body.len() < want {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&b[..n]),
                        }
                    }
                })
                .await;
                let text = format!("got {} of {want}: {}", body.len(), String::from_utf8_lossy(&body));
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len()).as_bytes())
                    .await;
            });
        }
    });
    let mut cfg = OriginConfig::for_endpoint(&format!("http://{web_addr}"), "", "");
    cfg.kind = OriginKind::Http;
    let node = eliop2p_testkit::start_node_for(cfg, |c| c.proxy.auth = eliop2p_proxy::AuthMode::Passthrough).await?;
    let mut s = tokio::net::TcpStream::connect(node.proxy_addr).await?;
    s.write_all(b"GET /obj HTTP/1.1\r\nHost: n\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("got 5 of 5: hello"), "{text}");
    node.shutdown().await;
    Ok(())
}

/// In passthrough the node cannot know how the origin reads a virtual-host
/// request: `GET /other/k` with `Host: vict.localhost` is object `other/k` of bucket
/// `vict` to the node, object `k` of bucket `other` to a path-style origin (and to
/// S3 a bucket named by CNAME). Such answers never evict or replace what the node
/// holds: before, a good client's 200 for `other/k` replaced the cached `vict/other/k`
/// and a 404 for bucket `nob` dropped `vict/nob/k`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_origin_may_read_differently_do_not_evict() -> anyhow::Result<()> {
    use eliop2p_origin::{OriginClient, OriginRequest};
    use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestClient, TestOrigin, sha256_hex, start_node};
    let origin = TestOrigin::start().await?;
    origin.create_bucket("vict").await?;
    origin.create_bucket("other").await?;
    let data = test_data(3 << 20, 11);
    origin.put("vict", "other/k", data.clone()).await?;
    origin.put("vict", "nob/k", data.clone()).await?;
    origin.put("other", "k", test_data(1000, 12)).await?;
    let node = start_node(&origin, |c| {
        c.proxy.auth = eliop2p_proxy::AuthMode::Passthrough;
        c.proxy.virtual_host_domains = vec!["localhost".into()];
    })
    .await?;
    let port = node.proxy_addr.port();
    let good = OriginClient::new(OriginConfig::for_endpoint(&format!("http://{}", node.proxy_addr), ACCESS_KEY, SECRET_KEY))?;
    let c = TestClient::new();
    let read = async |key: &str| -> anyhow::Result<String> {
        let url = good
            .presign(&OriginRequest::new(http::Method::GET, "vict", Some(key)), std::time::Duration::from_secs(60))
            .await?
            .to_string();
        let r = c.get(&url, &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        Ok(r.header("x-cache").unwrap_or("").to_owned())
    };
    let vhost = OriginClient::new(OriginConfig::for_endpoint(&format!("http://vict.localhost:{port}"), ACCESS_KEY, SECRET_KEY))?;
    for (bucket, expect) in [("other", 200), ("nob", 404)] {
        read(&format!("{bucket}/k")).await?;
        assert_eq!(read(&format!("{bucket}/k")).await?, "HIT");
        let url = vhost
            .presign(&OriginRequest::new(http::Method::GET, bucket, Some("k")), std::time::Duration::from_secs(60))
            .await?;
        let pq = url.path_and_query().map_or("/", |p| p.as_str());
        let (status, _) = raw_http(node.proxy_addr, &format!("GET {pq} HTTP/1.1\r\nHost: vict.localhost:{port}")).await?;
        assert_eq!(status, expect, "the origin read bucket {bucket}");
        assert_eq!(read(&format!("{bucket}/k")).await?, "HIT", "vict/{bucket}/k was evicted");
    }
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// Heads the node refuses before any handler runs (hyper used to answer these
/// itself, with an empty body) get an S3 XML error, and never inside a body: a
/// malformed head pipelined behind a good GET is answered after that GET's
/// whole, byte-exact response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_request_heads_get_s3_xml_errors_after_complete_responses() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = eliop2p_testkit::TestOrigin::start().await?;
    origin.create_bucket("heads").await?;
    let data = test_data(3 << 20, 9);
    origin.put("heads", "k", data.clone()).await?;
    let node = eliop2p_testkit::start_node(&origin, |_| {}).await?;
    async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(bytes).await?;
        let mut out = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out)).await??;
        Ok(out)
    }
    let good = b"GET /heads/k HTTP/1.1\r\nHost: n\r\n\r\n";
    let probes: [(&[u8], &str); 4] = [
        (b"GET /heads/k HTTP/1.1\r\nno colon here\r\n\r\n", "400 "),
        (b"GET /heads/k HTTP/1.1\r\nHost: n\r\nContent-Length: 12x\r\n\r\n", "400 "),
        (b"GET /heads/k HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "400 "),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "400 "),
    ];
    for (bad, status) in probes {
        let out = exchange(node.proxy_addr, &[&good[..], bad].concat()).await?;
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains(&format!("content-length: {}", data.len())), "{head}");
        assert_eq!(&out[split..split + data.len()], &data[..], "the good response is whole and exact");
        let rest = String::from_utf8_lossy(&out[split + data.len()..]).into_owned();
        assert!(rest.starts_with(&format!("HTTP/1.1 {status}")), "{:?}: {rest}", String::from_utf8_lossy(bad));
        assert!(rest.contains("<Code>BadRequest</Code>"), "{rest}");
    }
    // A head over the 64 KiB limit: 431; a request line over it: 414.
    let long_head = format!("GET /heads/k HTTP/1.1\r\nHost: n\r\nx-amz-meta-a: {}\r\n\r\n", "v".repeat(70_000));
    let long_line = format!("GET /heads/{} HTTP/1.1\r\nHost: n\r\n\r\n", "k".repeat(70_000));
    let mut seen = Vec::new();
    for (req, status, code) in [
        (long_head, "431", "RequestHeaderSectionTooLarge"),
        (long_line, "414", "KeyTooLongError"),
    ] {
        let out = String::from_utf8_lossy(&exchange(node.proxy_addr, req.as_bytes()).await?).into_owned();
        assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
        assert!(out.contains("content-type: application/xml"), "{out}");
        assert!(out.contains(&format!("<Code>{code}</Code>")), "{out}");
        seen.push(status);
    }
    println!("refused heads: 4 malformed after a good GET answered 400 in XML, {seen:?} in XML");
    // The node still serves.
    let (status, body) = eliop2p_testkit::raw_http(node.proxy_addr, "GET /heads/k HTTP/1.1\r\nHost: n").await?;
    assert_eq!((status, body == data), (200, true));
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
