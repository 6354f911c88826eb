//! A node in front of an OSS origin (the testkit's OSS stand-in, which checks V1
//! signatures independently of the node's signer): byte-exact reads, chunked
//! caching, ranges, OSS errors relayed, presigned OSS URLs.

use std::time::Duration;

use eliop2p_origin::{OriginClient, OriginConfig, OriginKind, OriginRequest, OssSignature};
use eliop2p_testkit::oss::TestOssOrigin;
use eliop2p_testkit::{TestClient, sha256_hex, test_data};
use http::{Method, StatusCode};

const AK: &str = "LTAI-test-access";
const SK: &str = "oss-test-secret-0123456789";

async fn node_for(cfg: OriginConfig) -> eliop2p_proxy::NodeHandle {
    eliop2p_testkit::start_node_for(cfg, |_| {}).await.unwrap()
}

fn oss_config(endpoint: &str, secret: &str) -> OriginConfig {
    let mut c = OriginConfig::for_endpoint(endpoint, AK, secret);
    c.kind = OriginKind::Oss(OssSignature::V1);
    c.region = "cn-hangzhou".into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reads_an_oss_origin_with_v1_signatures() {
    let oss = TestOssOrigin::start(AK, SK).await.unwrap();
    let data = test_data(40 << 20, 17);
    oss.put("ossbucket", "models/weights.bin", data.clone());
    let origin_cfg = oss_config(&oss.endpoint, SK);
    let node = node_for(origin_cfg.clone()).await;
    let url = format!("http://{}/ossbucket/models/weights.bin", node.proxy_addr);
    let c = TestClient::new();
    let r = c.get(&url, &[]).await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let cold = oss.gets();
    assert_eq!(cold, 3, "40 MiB = 3 chunks, one signed GET each");
    let r = c.get(&url, &[]).await.unwrap();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let r = c
        .get(&url, &[("range", "bytes=17000000-17999999")])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &data[17_000_000..18_000_000]);
    assert_eq!(oss.gets(), cold, "served from cache");
    // OSS errors come through with their status and XML.
    let r = c
        .get(
            &format!("http://{}/ossbucket/missing", node.proxy_addr),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&r.body).contains("NoSuchKey"));
    node.shutdown().await;

    // A node with the wrong secret gets the origin's refusal, relayed.
    let bad = node_for(oss_config(&oss.endpoint, "wrong-secret")).await;
    let r = c
        .get(
            &format!("http://{}/ossbucket/models/weights.bin", bad.proxy_addr),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&r.body).contains("SignatureDoesNotMatch"));
    bad.shutdown().await;

    // Presigned OSS URLs (OSSAccessKeyId, Expires, Signature).
    let client = OriginClient::new(origin_cfg).unwrap();
    let presigned = client
        .presign(
            &OriginRequest::new(Method::GET, "ossbucket", Some("models/weights.bin")),
            Duration::from_secs(300),
        )
        .await
        .unwrap()
        .to_string();
    assert!(presigned.contains("OSSAccessKeyId="), "{presigned}");
    let r = c.get(&presigned, &[("range", "bytes=0-99")]).await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::PARTIAL_CONTENT,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(&r.body[..], &data[..100]);
    let tampered = presigned.replace("weights.bin", "weights.bim");
    let r = c.get(&tampered, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_origins_with_and_without_etags() {
    for etag in [true, false] {
        let web = TestOssOrigin::start_plain_http(etag).await.unwrap();
        let data = test_data(20 << 20, 18);
        web.put("models", "llama/weights 1.bin", data.clone());
        let mut cfg = OriginConfig::for_endpoint(&web.endpoint, "", "");
        cfg.kind = OriginKind::Http;
        let node = node_for(cfg).await;
        let url = format!("http://{}/models/llama/weights%201.bin", node.proxy_addr);
        let c = TestClient::new();
        let r = c.get(&url, &[]).await.unwrap();
        assert_eq!(
            r.status,
            StatusCode::OK,
            "etag {etag}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "etag {etag}");
        let cold = web.gets();
        assert_eq!(cold, 2, "etag {etag}: two chunks, one GET each");
        let r = c.get(&url, &[("range", "bytes=-1000")]).await.unwrap();
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(&r.body[..], &data[data.len() - 1000..]);
        assert_eq!(r.header("x-cache"), Some("HIT"), "etag {etag}");
        assert!(r.header("etag").is_some(), "a validator is always sent");
        assert_eq!(web.gets(), cold);
        // A query is part of a plain HTTP resource: relayed, not cached.
        let r = c.get(&format!("{url}?revision=main"), &[]).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(web.gets(), cold + 1);
        let r = c
            .get(&format!("http://{}/models/nope", node.proxy_addr), &[])
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reads_an_oss_origin_with_v4_signatures() {
    let oss = TestOssOrigin::start(AK, SK).await.unwrap();
    let data = test_data(20 << 20, 19);
    oss.put("v4bucket", "a/b c.bin", data.clone());
    for (secret, ok) in [(SK, true), ("wrong-secret", false)] {
        let mut cfg = oss_config(&oss.endpoint, secret);
        cfg.kind = OriginKind::Oss(OssSignature::V4);
        let node = node_for(cfg).await;
        let url = format!("http://{}/v4bucket/a/b%20c.bin", node.proxy_addr);
        let r = TestClient::new().get(&url, &[]).await.unwrap();
        if ok {
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{:?}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN);
            assert!(String::from_utf8_lossy(&r.body).contains("SignatureDoesNotMatch"));
        }
        node.shutdown().await;
    }
}

/// A write to an OSS origin with non-ASCII metadata, which the OSS signer cannot
/// sign, is the client's 400 with a message saying how to encode it, and the node
/// goes on serving (the signer would panic on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_metadata_to_oss_is_a_clear_400() {
    let oss = TestOssOrigin::start(AK, SK).await.unwrap();
    let data = test_data(1000, 19);
    oss.put("ossbucket", "k", data.clone());
    let node = node_for(oss_config(&oss.endpoint, SK)).await;
    let c = TestClient::new();
    let url = format!("http://{}/ossbucket/new", node.proxy_addr);
    let r = c
        .request(Method::PUT, &url, &[("x-oss-meta-m", "Hello Worldé")], bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("InvalidArgument") && body.contains("RFC 2047"), "{body}");
    let r = c.get(&format!("http://{}/ossbucket/k", node.proxy_addr), &[]).await.unwrap();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    node.shutdown().await;
}

/// An OSS origin read with an ECS RAM role's STS credentials (issue 18, item 2):
/// the node takes them from the instance metadata stand-in (token first), signs
/// their security token into V1 and V4 requests, and refreshes them before they
/// expire; the OSS stand-in accepts a temporary key only with its token and
/// until its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reads_an_oss_origin_with_ecs_ram_role_credentials() {
    use eliop2p_origin::{CredentialSettings, CredentialSource};
    let oss = TestOssOrigin::start(AK, SK).await.unwrap();
    let issuer = eliop2p_testkit::TestIssuer::new(Duration::from_secs(3));
    oss.trust(&issuer);
    let server = eliop2p_testkit::CredentialServer::start(&issuer).await.unwrap();
    let objects: Vec<_> = (0..4).map(|i| test_data(2 << 20, 400 + i)).collect();
    for (i, d) in objects.iter().enumerate() {
        oss.put("ram", &format!("o{i}"), d.clone());
    }
    for version in [OssSignature::V1, OssSignature::V4] {
        let mut cfg = oss_config(&oss.endpoint, "");
        cfg.access_key.clear();
        cfg.kind = OriginKind::Oss(version);
        cfg.credentials = CredentialSettings {
            source: CredentialSource::EcsRamRole,
            metadata_endpoint: Some(server.endpoint.clone()),
            ..Default::default()
        };
        let node = node_for(cfg).await;
        let before = issuer.issued_count();
        // Four reads 1.2 s apart: past the first credential's 3 s life.
        for (i, d) in objects.iter().enumerate() {
            let url = format!("http://{}/ram/o{i}", node.proxy_addr);
            let r = TestClient::new().get(&url, &[]).await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{version:?} o{i}: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(sha256_hex(&r.body), sha256_hex(d), "{version:?} o{i}");
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        assert!(issuer.issued_count() >= before + 2, "{version:?}: {} credentials", issuer.issued_count() - before);
        node.shutdown().await;
    }
    assert!(server.served("ecs-token") >= 1 && server.served("ecs-ram-role") >= 2);
    assert_eq!(server.refused(), 0);
    server.stop().await;
}
