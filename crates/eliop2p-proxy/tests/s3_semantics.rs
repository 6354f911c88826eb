//! S3 semantics through the node against the real s3s-fs origin: conditional
//! requests, forwarded operations and cache invalidation, origin errors kept
//! intact, bad input, virtual-host addressing, metrics and graceful shutdown.

use std::time::Duration;

use bytes::Bytes;
use eliop2p_testkit::{TestClient, TestOrigin, sha256_hex, start_node, test_data};
use http::Method;

fn base(node: &eliop2p_proxy::NodeHandle) -> String {
    format!("http://{}", node.proxy_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_behave_as_s3() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("cond").await?;
    let etag = origin
        .put("cond", "k", Bytes::from_static(b"0123456789"))
        .await?;
    let node = start_node(&origin, |_| {}).await?;
    let c = TestClient::new();
    let u = format!("{}/cond/k", base(&node));
    let past = "Mon, 01 Jan 2001 00:00:00 GMT";
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("if-none-match", etag.as_str())], 304),
        (vec![("if-none-match", "\"other\"")], 200),
        (vec![("if-none-match", "*")], 304),
        (vec![("if-match", etag.as_str())], 200),
        (vec![("if-match", "\"other\"")], 412),
        (vec![("if-modified-since", future)], 304),
        (vec![("if-modified-since", past)], 200),
        (vec![("if-unmodified-since", past)], 412),
        (vec![("if-unmodified-since", future)], 200),
        // If-Match true wins over If-Unmodified-Since false (RFC 9110 order, as S3).
        (
            vec![("if-match", etag.as_str()), ("if-unmodified-since", past)],
            200,
        ),
        // If-None-Match false decides; If-Modified-Since is not consulted.
        (
            vec![
                ("if-none-match", "\"other\""),
                ("if-modified-since", future),
            ],
            200,
        ),
        (
            vec![("if-none-match", etag.as_str()), ("range", "bytes=0-1")],
            304,
        ),
    ];
    for (headers, want) in cases {
        let r = c.get(&u, &headers).await?;
        assert_eq!(r.status.as_u16(), want, "{headers:?}");
        match want {
            304 => {
                assert!(r.body.is_empty());
                assert_eq!(r.header("etag"), Some(etag.as_str()));
            }
            412 => assert!(
                String::from_utf8_lossy(&r.body).contains("<Code>PreconditionFailed</Code>")
            ),
            _ => assert_eq!(&r.body[..], b"0123456789"),
        }
    }
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_node_are_forwarded_and_invalidate() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("wrt").await?;
    // A long TTL: only the invalidation can make the new bytes visible.
    let node = start_node(&origin, |c| {
        c.proxy.metadata_ttl = Duration::from_secs(3600)
    })
    .await?;
    let c = TestClient::new();
    let b = base(&node);
    let v1 = test_data(300_000, 1);
    let put = c
        .request(
            Method::PUT,
            &format!("{b}/wrt/dir/obj"),
            &[("content-type", "application/x-test")],
            v1.clone(),
        )
        .await?;
    assert_eq!(put.status, 200, "{:?}", String::from_utf8_lossy(&put.body));
    let r = c.get(&format!("{b}/wrt/dir/obj"), &[]).await?;
    assert_eq!(r.body, v1);
    assert_eq!(r.header("content-type"), Some("application/x-test"));
    assert_eq!(
        c.get(&format!("{b}/wrt/dir/obj"), &[])
            .await?
            .header("x-cache"),
        Some("HIT")
    );
    let v2 = test_data(200_000, 2);
    assert_eq!(
        c.request(Method::PUT, &format!("{b}/wrt/dir/obj"), &[], v2.clone())
            .await?
            .status,
        200
    );
    let r = c.get(&format!("{b}/wrt/dir/obj"), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&v2));
    assert_eq!(r.header("x-cache"), Some("MISS"));
    // ListObjectsV2 is forwarded and answered by the origin.
    let list = c
        .get(&format!("{b}/wrt?list-type=2&prefix=dir%2F"), &[])
        .await?;
    assert_eq!(list.status, 200);
    let text = String::from_utf8_lossy(&list.body);
    assert!(text.contains("<Key>dir/obj</Key>"), "{text}");
    // DELETE then GET: the origin's own 404 with its XML body.
    assert_eq!(
        c.request(
            Method::DELETE,
            &format!("{b}/wrt/dir/obj"),
            &[],
            Bytes::new()
        )
        .await?
        .status,
        204
    );
    let gone = c.get(&format!("{b}/wrt/dir/obj"), &[]).await?;
    assert_eq!(gone.status, 404);
    assert!(String::from_utf8_lossy(&gone.body).contains("NoSuchKey"));
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_key_bytes_reach_the_origin_unchanged() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("odd").await?;
    let node = start_node(&origin, |_| {}).await?;
    let c = TestClient::new();
    let keys = [
        "with space",
        "plus+sign",
        "ünïcödé/日本",
        "a//b",
        "semi;colon=eq&amp",
        "tilde~star*",
        "pct%25literal",
    ];
    for (i, key) in keys.iter().enumerate() {
        let data = test_data(1000 + i, i as u64);
        origin.put("odd", key, data.clone()).await?;
        let u = format!("{}/odd/{}", base(&node), eliop2p_origin::encode_key(key));
        let r = c.get(&u, &[]).await?;
        assert_eq!(r.status, 200, "{key}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, data, "{key}");
    }
    // The origin received exactly these key bytes from the node (its log holds raw
    // paths). s3s-fs stores keys as file paths, so it folds "a//b" into "a/b" itself;
    // the node's requests still carried "a//b".
    for key in keys {
        let gets = origin.gets_of("odd", key);
        assert_eq!(gets.len(), 1, "{key}: one GET with the exact key path");
    }
    let list = c
        .get(&format!("{}/odd?list-type=2", base(&node)), &[])
        .await?;
    let text = String::from_utf8_lossy(&list.body);
    for key in keys.iter().filter(|k| !k.contains("//")) {
        let escaped = key.replace('&', "&amp;");
        assert!(
            text.contains(&format!("<Key>{escaped}</Key>")),
            "{key} missing from {text}"
        );
    }
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("bad").await?;
    origin
        .put("bad", "x", Bytes::from_static(b"secret-x"))
        .await?;
    let node = start_node(&origin, |_| {}).await?;
    let c = TestClient::new();
    let b = base(&node);
    // Unknown bucket and key: the origin's exact status and XML body.
    let r = c.get(&format!("{b}/no-such-bucket/k"), &[]).await?;
    assert_eq!(r.status, 404);
    // s3s-fs answers NoSuchKey here where AWS says NoSuchBucket: what matters is that
    // the node relays the origin's own code and body.
    assert!(
        String::from_utf8_lossy(&r.body).contains("<Code>NoSuch"),
        "{:?}",
        r.body
    );
    let r = c.get(&format!("{b}/bad/missing"), &[]).await?;
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("NoSuchKey"));
    // Dot segments are key bytes, never a way out of the bucket: the origin decides,
    // and the object "x" is not served for them.
    // ("./x" is not listed: s3s-fs stores keys as paths and itself resolves it to "x";
    // the node sends the key "./x" unchanged, checked below.)
    for path in [
        "/bad/../x",
        "/bad/%2e%2e/x",
        "/bad/%2E%2E/%2E%2E/etc/passwd",
    ] {
        let r = c.get(&format!("{b}{path}"), &[]).await?;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
        assert_ne!(&r.body[..], b"secret-x", "{path}");
    }
    c.get(&format!("{b}/bad/./x"), &[]).await?;
    assert!(
        origin.requests().iter().any(|r| r.path == "/bad/./x"),
        "dot segment kept"
    );
    assert!(
        origin.requests().iter().any(|r| r.path == "/bad/../x"),
        "dot-dot segment kept"
    );
    // Not UTF-8 after decoding.
    let r = c.get(&format!("{b}/bad/%FF%FE"), &[]).await?;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>InvalidURI</Code>"));
    // Oversized headers.
    let huge = "v".repeat(300 * 1024);
    let r = c
        .get(&format!("{b}/bad/x"), &[("x-amz-meta-big", &huge)])
        .await;
    match r {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => panic!("expected 431, got a connection error: {e:#}"),
    }
    // The node is still healthy and correct after all of that.
    assert_eq!(
        &c.get(&format!("{b}/bad/x"), &[]).await?.body[..],
        b"secret-x"
    );
    // Unreachable origin: 502 with an S3 XML error.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead_addr = dead.local_addr()?;
    drop(dead);
    let orphan = start_node(&origin, |c| {
        c.origin.endpoint = format!("http://{dead_addr}");
        c.origin.max_retries = 1;
    })
    .await?;
    let r = c
        .get(&format!("http://{}/bad/x", orphan.proxy_addr), &[])
        .await?;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>BadGateway</Code>"));
    let r = c
        .get(
            &format!("http://{}/bad?list-type=2", orphan.proxy_addr),
            &[],
        )
        .await?;
    assert_eq!(r.status, 502);
    orphan.shutdown().await;
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_requests_and_admin_endpoints() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("vhost").await?;
    origin
        .put("vhost", "a/b.txt", Bytes::from_static(b"virtual"))
        .await?;
    let node = start_node(&origin, |_| {}).await?;
    let c = TestClient::new();
    let host = format!("vhost.localhost:{}", node.proxy_addr.port());
    let r = c
        .get(&format!("{}/a/b.txt", base(&node)), &[("host", &host)])
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"virtual");
    let m = c
        .get(&format!("http://{}/metrics", node.admin_addr), &[])
        .await?;
    let text = String::from_utf8_lossy(&m.body);
    for family in [
        "eliop2p_proxy_requests_total{method=\"GET\",status=\"200\"} 1",
        "eliop2p_proxy_served_bytes_total{source=\"origin\"} 7",
        "eliop2p_origin_requests_total{kind=\"get\"} 1",
        "eliop2p_origin_requests_total{kind=\"head\"} 0",
        "eliop2p_cache_entries{tier=\"memory\"} 1",
        "eliop2p_cache_lookups_total{result=\"join\",tier=\"none\"} 1",
    ] {
        assert!(text.contains(family), "missing {family} in\n{text}");
    }
    let h = c
        .get(&format!("http://{}/healthz", node.admin_addr), &[])
        .await?;
    assert_eq!(h.status, 200);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// A write the origin refuses leaves what the node holds alone. Before, node mode
/// dropped the cached object before forwarding any PUT, POST or DELETE, so any
/// client of a node, with read-only keys say, could make it forget an object with
/// one refused request (and cost the origin a refill for the next reader). Here
/// the refusals are a copy from a missing source (PUT), and an abort and a
/// completion of an upload that does not exist (DELETE, POST). A write the origin
/// applies still invalidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_do_not_evict() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("wrtest", "k", 3 << 20, 21).await?;
    let node = start_node(&origin, |_| {}).await?;
    let url = format!("{}/wrtest/k", base(&node));
    let c = TestClient::new();
    let read = async || -> anyhow::Result<String> {
        let r = c.get(&url, &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        Ok(r.header("x-cache").unwrap_or("").to_owned())
    };
    read().await?;
    assert_eq!(read().await?, "HIT");
    type Write = (Method, &'static str, &'static [(&'static str, &'static str)]);
    let refusals: [Write; 3] = [
        (Method::PUT, "", &[("x-amz-copy-source", "/wrtest/no-such-key")]),
        (Method::DELETE, "?uploadId=no-such-upload", &[]),
        (Method::POST, "?uploadId=no-such-upload", &[("content-type", "application/xml")]),
    ];
    for (method, query, headers) in refusals {
        let body = if method == Method::POST {
            bytes::Bytes::from_static(b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>")
        } else {
            bytes::Bytes::new()
        };
        let r = c.request(method.clone(), &format!("{url}{query}"), headers, body).await?;
        assert!(r.status.is_client_error(), "{method}{query}: {} {:?}", r.status, String::from_utf8_lossy(&r.body));
        println!("refused {method}{query}: {}", r.status);
        assert_eq!(read().await?, "HIT", "a refused {method}{query} evicted the object");
    }
    // An applied write still invalidates: the next read sees the new bytes.
    let new = test_data(1000, 22);
    let r = c.request(Method::PUT, &url, &[], new.clone()).await?;
    assert_eq!(r.status, 200);
    let r = c.get(&url, &[]).await?;
    assert_eq!(r.body, new);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_responses() -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let (origin, data) = TestOrigin::with_object("sdn", "big", 40 << 20, 5).await?;
    let node = start_node(&origin, |_| {}).await?;
    let addr = node.proxy_addr;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/sdn/big"))
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    assert_eq!(resp.status(), 200);
    let shutdown = tokio::spawn(node.shutdown());
    let body = resp.into_body().collect().await?.to_bytes();
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert!(shutdown.await?, "shutdown finished within its grace period");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_5xx_is_retried_then_relayed() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("flaky", "obj", 70_000, 8).await?;
    let node = start_node(&origin, |c| c.origin.max_retries = 2).await?;
    let c = TestClient::new();
    let u = format!("{}/flaky/obj", base(&node));
    // Two injected 503s (the first GET, then its first retry): the second retry succeeds.
    origin.clear_log();
    origin.fail_next(2);
    let r = c.get(&u, &[]).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(
        origin.gets_of("flaky", "obj").len(),
        3,
        "one GET and two retries"
    );
    // More failures than retries on a forwarded request: the origin's 503 and body.
    origin.fail_next(3);
    let r = c
        .get(&format!("{}/flaky?list-type=2", base(&node)), &[])
        .await?;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>SlowDown</Code>"));
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

/// User metadata in UTF-8 (`x-amz-meta-m: Hello Worldé`), which S3 accepts and
/// signs as bytes: before, signing the relayed PUT failed ("invalid signed header
/// value") and the client got a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_user_metadata_is_relayed_and_kept() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("meta").await?;
    let node = start_node(&origin, |_| {}).await?;
    let c = TestClient::new();
    let u = format!("{}/meta/obj", base(&node));
    let data = test_data(1000, 3);
    let put = c
        .request(Method::PUT, &u, &[("x-amz-meta-m", "Hello Worldé"), ("x-amz-meta-k", "ключ 値")], data.clone())
        .await?;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    for round in ["MISS", "HIT"] {
        let r = c.get(&u, &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        assert_eq!(r.header("x-cache"), Some(round));
        // As S3 does, the origin answers non-ASCII metadata RFC 2047-encoded
        // (`=?UTF-8?B?...?=`); the node relays what the origin sent.
        let m = r.headers.get("x-amz-meta-m").expect("metadata kept").to_str()?;
        let b64 = m.strip_prefix("=?UTF-8?B?").and_then(|m| m.strip_suffix("?=")).unwrap_or(m);
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64)?;
        assert_eq!(decoded, "Hello Worldé".as_bytes(), "{round}: {m}");
    }
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
