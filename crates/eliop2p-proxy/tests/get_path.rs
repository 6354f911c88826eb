//! A node in front of a real SigV4-checking S3 server (s3s-fs) on loopback: byte-exact
//! reads of every size and range shape, MISS then HIT, single-flight, overwrite.

use std::time::{Duration, Instant};

use bytes::Bytes;
use eliop2p_testkit::{TestClient, TestOrigin, sha256_hex, start_node, test_data};

const MIB: usize = 1 << 20;

fn url(node: &eliop2p_proxy::NodeHandle, bucket: &str, key: &str) -> String {
    format!(
        "http://{}/{}/{}",
        node.proxy_addr,
        bucket,
        eliop2p_origin::encode_key(key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_is_byte_exact_miss_then_hit() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("data").await?;
    let node = start_node(&origin, |_| {}).await?;
    let client = TestClient::new();
    let chunk = 16 * MIB;
    for (i, size) in [0, 1, chunk - 1, chunk, chunk + 1, 100 * MIB]
        .into_iter()
        .enumerate()
    {
        let data = test_data(size, i as u64);
        let key = format!("obj-{size}");
        origin.put("data", &key, data.clone()).await?;
        let first = client.get(&url(&node, "data", &key), &[]).await?;
        assert_eq!(first.status, 200, "size {size}");
        assert_eq!(first.body.len(), size);
        assert_eq!(
            sha256_hex(&first.body),
            sha256_hex(&data),
            "size {size} MISS"
        );
        assert_eq!(
            first.header("content-length"),
            Some(size.to_string().as_str())
        );
        assert_eq!(first.header("accept-ranges"), Some("bytes"));
        assert!(first.header("etag").is_some() && first.header("last-modified").is_some());
        if size > 0 {
            assert_eq!(first.header("x-cache"), Some("MISS"), "size {size}");
            assert_eq!(first.header("x-cache-source"), Some("origin"));
        }
        let second = client.get(&url(&node, "data", &key), &[]).await?;
        assert_eq!(
            sha256_hex(&second.body),
            sha256_hex(&data),
            "size {size} HIT"
        );
        assert_eq!(second.header("x-cache"), Some("HIT"), "size {size}");
        assert_eq!(second.header("x-cache-source"), Some("memory"));
        // Each chunk was fetched from the origin exactly once, by range; the first
        // one doubled as the metadata lookup (an empty object: one probe, then HEAD).
        let gets = origin.gets_of("data", &key);
        assert_eq!(
            gets.len(),
            size.div_ceil(chunk).max(1),
            "size {size}: {gets:?}"
        );
        assert!(gets.iter().all(|g| g.range.is_some()));
    }
    let metrics = node.render_metrics();
    assert!(metrics.contains("eliop2p_proxy_served_bytes_total{source=\"memory\"}"));
    assert!(
        metrics.contains("eliop2p_proxy_requests_total{method=\"GET\",status=\"200\"} 12"),
        "{metrics}"
    );
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_shape_across_chunk_boundaries() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("rng").await?;
    let node = start_node(&origin, |c| c.proxy.chunk_size = MIB as u64).await?;
    let client = TestClient::new();
    let size = 3 * MIB + MIB / 2;
    let data = test_data(size, 7);
    origin.put("rng", "obj", data.clone()).await?;
    let u = url(&node, "rng", "obj");
    let m = MIB;
    let cases: Vec<(String, usize, usize)> = vec![
        (format!("bytes=0-{}", size - 1), 0, size),
        ("bytes=0-0".into(), 0, 1),
        (format!("bytes={}-{}", m - 1, m), m - 1, m + 1),
        (
            format!("bytes={}-{}", m - 10, 3 * m + 10),
            m - 10,
            3 * m + 11,
        ),
        (format!("bytes={}-", 2 * m + 5), 2 * m + 5, size),
        ("bytes=-1".into(), size - 1, size),
        (format!("bytes=-{}", m + 3), size - m - 3, size),
        (format!("bytes=-{}", size * 2), 0, size),
        (format!("bytes=10-{}", size * 5), 10, size),
        (
            format!("bytes={}-{}", 3 * m, 3 * m + 99),
            3 * m,
            3 * m + 100,
        ),
    ];
    // Twice: the first pass fills chunks (MISS), the second is served from memory.
    for pass in 0..2 {
        for (range, start, end) in &cases {
            let r = client.get(&u, &[("range", range)]).await?;
            assert_eq!(r.status, 206, "{range} pass {pass}");
            assert_eq!(r.body, data.slice(*start..*end), "{range} pass {pass}");
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {}-{}/{}", start, end - 1, size).as_str())
            );
            assert_eq!(
                r.header("content-length"),
                Some((end - start).to_string().as_str())
            );
        }
    }
    // Not satisfiable.
    let r = client
        .get(&u, &[("range", &format!("bytes={size}-"))])
        .await?;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>InvalidRange</Code>"));
    // Malformed: a clear 400 with an S3 error body.
    for bad in ["bytes=abc", "bytes=5-2", "items=0-1", "bytes="] {
        let r = client.get(&u, &[("range", bad)]).await?;
        assert_eq!(r.status, 400, "{bad}");
        assert!(String::from_utf8_lossy(&r.body).contains("<Code>InvalidArgument</Code>"));
    }
    // Multi-range: S3 serves the whole object.
    let r = client.get(&u, &[("range", "bytes=0-1,5-6")]).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    // HEAD with and without a range.
    let h = client
        .request(http::Method::HEAD, &u, &[], Bytes::new())
        .await?;
    assert_eq!(
        (h.status.as_u16(), h.header("content-length")),
        (200, Some(size.to_string().as_str()))
    );
    let h = client
        .request(
            http::Method::HEAD,
            &u,
            &[("range", "bytes=0-9")],
            Bytes::new(),
        )
        .await?;
    assert_eq!(
        (h.status.as_u16(), h.header("content-length")),
        (206, Some("10"))
    );
    assert!(h.body.is_empty());
    // Four chunks, each fetched once.
    assert_eq!(origin.gets_of("rng", "obj").len(), 4);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_reads_fetch_each_chunk_once() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("hot").await?;
    let node = start_node(&origin, |c| c.proxy.chunk_size = 4 * MIB as u64).await?;
    let data = test_data(18 * MIB, 3);
    origin.put("hot", "model.bin", data.clone()).await?;
    let client = TestClient::new();
    let u = url(&node, "hot", "model.bin");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, u) = (client.clone(), u.clone());
        tasks.push(tokio::spawn(async move { client.get(&u, &[]).await }));
    }
    let want = sha256_hex(&data);
    for t in tasks {
        let r = t.await??;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), want);
    }
    let gets = origin.gets_of("hot", "model.bin");
    let mut ranges: Vec<_> = gets
        .iter()
        .map(|g| g.range.clone().unwrap_or_default())
        .collect();
    ranges.sort();
    ranges.dedup();
    assert_eq!(gets.len(), 5, "one origin GET per chunk: {gets:?}");
    assert_eq!(ranges.len(), 5);
    let heads = origin
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::HEAD)
        .count();
    assert_eq!(heads, 0, "metadata came with the first chunk, once");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_at_origin_is_seen_after_ttl() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("bkt").await?;
    let node = start_node(&origin, |c| {
        c.proxy.chunk_size = MIB as u64;
        c.proxy.metadata_ttl = Duration::from_millis(300);
    })
    .await?;
    let client = TestClient::new();
    let u = url(&node, "bkt", "cfg.json");
    let v1 = test_data(2 * MIB + 5, 1);
    origin.put("bkt", "cfg.json", v1.clone()).await?;
    assert_eq!(client.get(&u, &[]).await?.body, v1);
    let v2 = test_data(2 * MIB + 5, 2);
    origin.put("bkt", "cfg.json", v2.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.get(&u, &[]).await?;
        assert_eq!(r.status, 200);
        // Never a mix: either all old bytes (within the TTL) or all new ones.
        if r.body == v2 {
            break;
        }
        assert_eq!(r.body, v1, "a response mixed old and new bytes");
        assert!(Instant::now() < deadline, "new version never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_neither_cancels_nor_corrupts_the_fill() -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let origin = TestOrigin::start().await?;
    origin.create_bucket("bkt").await?;
    let node = start_node(&origin, |c| c.proxy.chunk_size = 8 * MIB as u64).await?;
    let data = test_data(16 * MIB, 9);
    origin.put("bkt", "big", data.clone()).await?;
    let u = url(&node, "bkt", "big");
    // A raw connection that reads a little and hangs up.
    {
        let stream = tokio::net::TcpStream::connect(node.proxy_addr).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let conn_task = tokio::spawn(conn);
        let req = http::Request::get(&u)
            .header("host", node.proxy_addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame")?;
        assert!(first.is_data());
        drop(body);
        drop(send);
        conn_task.abort();
    }
    // The fills finish for the cache: the next read is a full HIT, byte-exact, and the
    // origin saw one GET per chunk.
    let client = TestClient::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(&u, &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        if r.header("x-cache") == Some("HIT") {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.gets_of("bkt", "big").len(), 2);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// Response headers are out after the first chunk; then S3 answers the later
/// chunks' GETs with 503 SlowDown (more times than one request's retries) and a
/// `Retry-After`. The node waits, asks again from the last received byte, and the
/// client gets every byte: a slow origin never costs a truncated body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_after_the_headers_is_waited_out_not_a_cut_body() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("slow", "obj", 3 * 16 * MIB, 9).await?;
    let node = start_node(&origin, |_| {}).await?;
    // Chunks 1 and 2: 8 refusals in all, beyond the client's own retries.
    origin.slow_down_ranges_from(16 * MIB as u64, 8);
    let t0 = Instant::now();
    let r = TestClient::new().get(&url(&node, "slow", "obj"), &[]).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len(), "no truncated body");
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact");
    assert!(t0.elapsed() >= Duration::from_secs(1), "Retry-After was honoured");
    let m = node.render_metrics();
    let retries: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("eliop2p_origin_retries_total").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0);
    assert!(retries >= 1, "the fill asked the origin again");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_origin_streams_read_each_byte_once_and_retry_alone() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("par").await?;
    // Chunk 0 comes with the metadata GET; chunks 1..3 are read in 4 ranges each,
    // the last chunk short (a short last piece in its last range).
    let data = test_data(3 * 16 * MIB + 5 * MIB + 123, 21);
    origin.put("par", "obj", data.clone()).await?;
    let node = start_node(&origin, |c| c.proxy.origin_streams = 4).await?;
    let before = origin.bytes_sent();
    // Ranged GETs of chunk 2 and later are refused with SlowDown, 30 times in all
    // (more than the origin client's own retries absorb): each range retries alone.
    origin.slow_down_ranges_from(32 * MIB as u64, 30);
    let r = TestClient::new().get(&url(&node, "par", "obj"), &[]).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len(), "no truncated body");
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact");
    let gets = origin.gets_of("par", "obj");
    let mut ranges: Vec<(u64, u64)> = gets
        .iter()
        .filter_map(|g| g.range.as_deref()?.strip_prefix("bytes=")?.split_once('-').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())))
        .collect();
    ranges.sort();
    ranges.dedup();
    // Disjoint ranges covering the object (the refused ones asked again as is).
    let mut at = 0;
    for (a, b) in &ranges {
        assert_eq!(*a, at, "ranges {ranges:?}");
        at = b + 1;
    }
    assert_eq!(at, data.len() as u64);
    // Chunk 0: the metadata GET; chunks 1 and 2: 4 ranges of 4 MiB; the last
    // chunk (5 MiB + 123 bytes, 21 pieces of 256 KiB): 4 ranges, the last short.
    assert_eq!(eliop2p_cache::PIECE_SIZE, 256 << 10, "the ranges below assume 256 KiB pieces");
    assert_eq!(ranges.len(), 1 + 4 + 4 + 4, "{ranges:?}");
    // Each byte left the origin once (headers and refusals aside).
    let sent = origin.bytes_sent() - before;
    assert!(sent < data.len() as u64 + 64 * 1024, "origin sent {sent} for {}", data.len());
    let m = node.render_metrics();
    assert!(
        m.lines().any(|l| l.strip_prefix("eliop2p_origin_retries_total ").is_some_and(|v| v.trim() != "0")),
        "the refused ranges were asked again"
    );
    let again = TestClient::new().get(&url(&node, "par", "obj"), &[]).await?;
    assert_eq!(sha256_hex(&again.body), sha256_hex(&data));
    assert_eq!(again.header("x-cache"), Some("HIT"));
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// The pieces later ranges of a parallel origin fill read (`origin.streams_per_chunk`,
/// and a takeover's reads of the holes) go into the piece pool's buffers, memory
/// the node prefaulted, like the pieces of the first range: before, each was a new
/// allocation (or a slice of the response's buffer the pool could not take back),
/// and a node with `cache.memory_prefault` faulted fresh pages in mid-fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_origin_ranges_fill_prefaulted_buffers() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("pool").await?;
    let data = test_data(3 * 16 * MIB, 23);
    origin.put("pool", "obj", data.clone()).await?;
    let node = start_node(&origin, |c| {
        c.proxy.origin_streams = 4;
        c.cache.memory_capacity = 96 << 20;
        c.cache.memory_prefault = true;
    })
    .await?;
    let metric = |name: &str| -> u64 {
        let m = node.render_metrics();
        m.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric("eliop2p_cache_piece_pool_bytes") < 96 << 20 {
        assert!(Instant::now() < deadline, "the pool was not prefaulted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = TestClient::new().get(&url(&node, "pool", "obj"), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact");
    // 3 chunks of 64 pieces; chunks 1 and 2 each read in 4 ranges, 3 of them by
    // the range reader (96 pieces that went into new memory before).
    let pieces = (data.len() / (256 << 10)) as u64;
    let pooled = metric("eliop2p_cache_piece_buffers_reused_total");
    assert!(pooled >= pieces, "{pooled} of {pieces} pieces went into the pool's buffers");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// Origin down past `metadata_ttl`: a fully cached object is still served,
/// byte-exact and marked stale, within `stale_if_error`; a partly cached one, or
/// any object with stale-if-error off, answers 502 (before: 502 always).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_object_survives_its_origin_going_down() -> anyhow::Result<()> {
    for stale_if_error in [Duration::from_secs(3600), Duration::ZERO] {
        let origin = TestOrigin::start().await?;
        origin.create_bucket("down").await?;
        let whole = test_data(3 * MIB, 31);
        let part = test_data(20 * MIB, 32);
        origin.put("down", "whole", whole.clone()).await?;
        origin.put("down", "part", part.clone()).await?;
        let node = start_node(&origin, |c| {
            c.proxy.metadata_ttl = Duration::from_millis(300);
            c.proxy.stale_if_error = stale_if_error;
        })
        .await?;
        let c = TestClient::new();
        let r = c.get(&url(&node, "down", "whole"), &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&whole));
        // Only the first chunk of the other object.
        let r = c.get(&url(&node, "down", "part"), &[("range", "bytes=0-99")]).await?;
        assert_eq!(&r.body[..], &part[..100]);
        origin.stop().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = c.get(&url(&node, "down", "whole"), &[]).await?;
        if stale_if_error.is_zero() {
            assert_eq!(r.status, 502, "stale-if-error off");
        } else {
            assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
            assert_eq!(sha256_hex(&r.body), sha256_hex(&whole), "byte-exact");
            assert!(r.header("x-cache-stale").is_some(), "marked stale");
            assert_eq!(r.header("x-cache"), Some("HIT"));
            // Again: still served (the expired metadata is kept).
            let r = c.get(&url(&node, "down", "whole"), &[("range", "bytes=5-9")]).await?;
            assert_eq!((r.status.as_u16(), &r.body[..]), (206, &whole[5..10]));
            assert!(node.render_metrics().contains("eliop2p_stale_served_total 2"));
        }
        let r = c.get(&url(&node, "down", "part"), &[]).await?;
        assert_eq!(r.status, 502, "a partly cached object needs the origin");
        node.shutdown().await;
    }
    Ok(())
}

/// An https origin whose certificate comes from a private CA (issue 18, item 3):
/// a node given that CA (`origin.ca_file`) reads byte-exact; a node given another
/// CA, or only the system's roots, answers with an error that names
/// `origin.ca_file`, at once, not after a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_origin_with_a_private_ca() {
    let ca = eliop2p_testkit::TestCa::new().unwrap();
    let origin = TestOrigin::start_tls(&ca).await.unwrap();
    assert!(origin.endpoint.starts_with("https://"));
    origin.create_bucket("tls").await.unwrap();
    let data = test_data(20 << 20, 71);
    origin.put("tls", "obj", data.clone()).await.unwrap();
    let client = TestClient::new();
    let node = eliop2p_testkit::start_node(&origin, |_| {}).await.unwrap();
    let r = client.get(&format!("http://{}/tls/obj", node.proxy_addr), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    node.shutdown().await;
    // No verification at all (what tests may ask for): reads too.
    let mut cfg = origin.origin_config();
    cfg.tls = eliop2p_origin::TlsConfig { ca_file: None, insecure_skip_verify: true };
    let node = eliop2p_testkit::start_node_for(cfg, |_| {}).await.unwrap();
    let r = client.get(&format!("http://{}/tls/obj", node.proxy_addr), &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), sha256_hex(&r.body)), (200, sha256_hex(&data)));
    node.shutdown().await;
    let other = eliop2p_testkit::TestCa::new().unwrap();
    for ca_file in [Some(other.ca_pem.clone()), None] {
        let mut cfg = origin.origin_config();
        cfg.tls.ca_file = ca_file.clone();
        cfg.max_retries = 0;
        let node = eliop2p_testkit::start_node_for(cfg, |_| {}).await.unwrap();
        let started = std::time::Instant::now();
        let r = client.get(&format!("http://{}/tls/obj", node.proxy_addr), &[]).await.unwrap();
        let body = String::from_utf8_lossy(&r.body);
        assert!(r.status.is_server_error(), "{ca_file:?}: {} {body}", r.status);
        assert!(body.contains("origin.ca_file"), "{ca_file:?}: {body}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        node.shutdown().await;
    }
    origin.stop().await;
}

/// Temporary credentials (issue 18, item 1, the static part): with
/// `origin.session_token` the node signs the token into every origin request and
/// into presigned URLs, and reads byte-exact from an origin that wants it; when
/// the origin stops accepting it (revoked, expired) or the node has none, the
/// client gets the origin's 403 at once, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_are_signed_into_origin_requests() {
    let origin = TestOrigin::start().await.unwrap();
    origin.create_bucket("sts").await.unwrap();
    let (a, b) = (test_data(20 << 20, 81), test_data(3 << 20, 82));
    origin.put("sts", "a", a.clone()).await.unwrap();
    origin.put("sts", "b", b.clone()).await.unwrap();
    origin.require_session_token(Some("token-1"));
    let mut cfg = origin.origin_config();
    cfg.session_token = Some("token-1".into());
    cfg.max_retries = 0;
    // Presigned: the token is in the signed query.
    let presigned = eliop2p_origin::OriginClient::new(cfg.clone())
        .unwrap()
        .presign(&eliop2p_origin::OriginRequest::new(http::Method::GET, "sts", Some("b")), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(presigned.to_string().contains("X-Amz-Security-Token=token-1"), "{presigned}");
    let client = TestClient::new();
    let r = client.get(&presigned.to_string(), &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), sha256_hex(&r.body)), (200, sha256_hex(&b)));
    let node = eliop2p_testkit::start_node_for(cfg.clone(), |_| {}).await.unwrap();
    let r = client.get(&format!("http://{}/sts/a", node.proxy_addr), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&a));
    // The token is revoked: the next origin read is refused with the origin's 403.
    origin.require_session_token(Some("token-2"));
    let started = Instant::now();
    let r = client.get(&format!("http://{}/sts/b", node.proxy_addr), &[]).await.unwrap();
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("InvalidToken"));
    assert!(started.elapsed() < Duration::from_secs(10));
    node.shutdown().await;
    // No token at all: refused the same way.
    cfg.session_token = None;
    let node = eliop2p_testkit::start_node_for(cfg, |_| {}).await.unwrap();
    let r = client.get(&format!("http://{}/sts/a", node.proxy_addr), &[]).await.unwrap();
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    node.shutdown().await;
    origin.stop().await;
}

/// A client on the node's host is served without BBR's pacing, which over
/// loopback halved what a connection carried (sockopt::unpace_local). The
/// proxy's listener is given bbr, as a host whose default is bbr gives it to
/// every socket; its accepted connections inherit it unless the node undoes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_nodes_host_is_not_paced_by_bbr() -> anyhow::Result<()> {
    use eliop2p_p2p::sockopt;
    if let Err(e) = sockopt::check_congestion("bbr") {
        eprintln!("no bbr here ({e}): nothing to undo");
        return Ok(());
    }
    let origin = TestOrigin::start().await?;
    origin.create_bucket("data").await?;
    let data = test_data(4 * MIB, 9);
    origin.put("data", "k", data.clone()).await?;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    sockopt::set_socket_congestion(&proxy, "bbr")?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let node = eliop2p_proxy::spawn_node(eliop2p_testkit::node_config(origin.origin_config()), proxy, admin).await?;
    // A raw connection, held open while its server side is looked at.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(node.proxy_addr).await?;
    conn.write_all(b"GET /data/k HTTP/1.1\r\nhost: node\r\n\r\n").await?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while got.len() < data.len() {
        let n = conn.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    while got.len() < head_end + data.len() {
        let n = conn.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "body cut");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(sha256_hex(&got[head_end..]), sha256_hex(&data));
    // The node's side of this connection, as the kernel reports it.
    let client_port = conn.local_addr()?.port();
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established", &format!("( dport = :{client_port} )")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!(":{}", node.proxy_addr.port())), "the node's side not found: {text}");
    assert!(!text.contains(" bbr ") && text.contains(" reno "), "the node's side of a local client's connection: {text}");
    Ok(())
}
