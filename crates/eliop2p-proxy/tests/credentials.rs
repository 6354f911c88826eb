//! Temporary origin credentials (issue 18, item 1): a node gets its keys from the
//! instance metadata service (IMDSv2), the container credentials endpoint, STS
//! with a web identity token, or the default chain, through reqsign's loaders,
//! against stand-ins of those services on loopback whose credentials the test
//! origin accepts only with their session token and only until they expire.

use std::path::Path;
use std::time::{Duration, Instant};

use eliop2p_origin::{CredentialSettings, CredentialSource, OriginConfig};
use eliop2p_testkit::{
    CredentialServer, TestClient, TestIssuer, TestOrigin, sha256_hex, start_node_for, test_data,
};

const MIB: usize = 1 << 20;

/// An origin config with no static keys, taking them from `source` at `server`.
fn with_source(
    origin: &TestOrigin,
    server: &CredentialServer,
    dir: &Path,
    source: CredentialSource,
) -> OriginConfig {
    let mut cfg = origin.origin_config();
    cfg.access_key.clear();
    cfg.secret_key.clear();
    let token_file = dir.join("web-identity-token");
    std::fs::write(&token_file, &server.web_identity_token).unwrap();
    let container_token = dir.join("container-token");
    std::fs::write(&container_token, &server.container_token).unwrap();
    cfg.credentials = CredentialSettings {
        source,
        role_arn: Some(server.role_arn.clone()),
        web_identity_token_file: Some(token_file),
        sts_endpoint: Some(server.endpoint.clone()),
        metadata_endpoint: Some(server.endpoint.clone()),
        container_uri: Some(server.container_uri.clone()),
        container_token_file: Some(container_token),
        ..Default::default()
    };
    cfg
}

/// Each source yields keys the origin accepts; every read is byte-exact, every
/// origin request of the node carries the session token (the origin refuses
/// those without), and the stand-in that should have answered did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_byte_exact_with_credentials_from_each_source() {
    let (origin, data) = TestOrigin::with_object("creds", "obj", 20 * MIB, 181).await.unwrap();
    let issuer = TestIssuer::new(Duration::from_secs(3600));
    origin.trust(&issuer);
    let server = CredentialServer::start(&issuer).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = TestClient::new();
    for (source, stand_in) in [
        (CredentialSource::Imds, "imds"),
        (CredentialSource::Container, "container"),
        (CredentialSource::WebIdentity, "sts"),
        // The chain finds web identity (the role and token file are set) before
        // the container endpoint and IMDS.
        (CredentialSource::Default, "sts"),
    ] {
        let before = (server.served(stand_in), issuer.issued_count());
        let cfg = with_source(&origin, &server, dir.path(), source);
        let node = start_node_for(cfg, |_| {}).await.unwrap();
        let r = client.get(&format!("http://{}/creds/obj", node.proxy_addr), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{source:?}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "{source:?}");
        assert!(server.served(stand_in) > before.0, "{source:?}: {stand_in} was not asked");
        assert_eq!(issuer.issued_count(), before.1 + 1, "{source:?}: one credential for the whole read");
        node.shutdown().await;
    }
    // IMDSv2: a session token was fetched before any metadata read, and no
    // request of the node's was refused.
    assert!(server.served("imds-token") >= 1);
    assert_eq!(server.refused(), 0);
    server.stop().await;
    origin.stop().await;
}

/// Credentials that live 3 seconds, during a read that takes several times that,
/// while other clients read small objects every 150 ms (so the node signs new
/// origin requests all along): the node refreshes the credentials in the
/// background before they expire, and no request fails (the origin answers 400
/// ExpiredToken to an expired one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_expiring_during_a_long_read_are_refreshed_with_no_failed_request() {
    let (origin, data) = TestOrigin::with_object("long", "big", 64 * MIB, 190).await.unwrap();
    let small: Vec<_> = (0..48).map(|i| test_data(64 << 10, 300 + i)).collect();
    for (i, d) in small.iter().enumerate() {
        origin.put("long", &format!("s{i}"), d.clone()).await.unwrap();
    }
    let issuer = TestIssuer::new(Duration::from_secs(3));
    origin.trust(&issuer);
    let server = CredentialServer::start(&issuer).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB at 8 MiB/s: about 8 s.
    origin.set_rate_limit(8 << 20);
    let cfg = with_source(&origin, &server, dir.path(), CredentialSource::Imds);
    let node = start_node_for(cfg, |_| {}).await.unwrap();
    let client = TestClient::new();
    let started = Instant::now();
    let big_url = format!("http://{}/long/big", node.proxy_addr);
    let big = tokio::spawn({
        let client = client.clone();
        async move { client.get(&big_url, &[]).await.unwrap() }
    });
    for (i, d) in small.iter().enumerate() {
        let r = client.get(&format!("http://{}/long/s{i}", node.proxy_addr), &[]).await.unwrap();
        assert_eq!(r.status, 200, "s{i} at {:?}: {}", started.elapsed(), String::from_utf8_lossy(&r.body));
        assert_eq!(sha256_hex(&r.body), sha256_hex(d), "s{i}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let r = big.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "cut short or wrong after {elapsed:?}");
    let issued = issuer.issued_count();
    assert!(
        elapsed > Duration::from_secs(6) && issued >= 3,
        "{issued} credentials over {elapsed:?}: the reads did not outlive the credentials"
    );
    // The cache asked IMDS about once per refresh, not once per request.
    let requests = origin.requests().len();
    assert!(
        server.served("imds") <= 2 * issued + 2,
        "{} IMDS reads for {issued} credentials and {requests} origin requests",
        server.served("imds")
    );
    node.shutdown().await;
    server.stop().await;
    origin.stop().await;
}

/// A credential the issuer revokes: the client gets the origin's 403 at once,
/// not a hang; a source that yields no credentials gives an error naming
/// `origin.credentials`, also at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_or_missing_credentials_give_the_client_a_clear_error() {
    let origin = TestOrigin::start().await.unwrap();
    origin.create_bucket("rev").await.unwrap();
    let (a, b) = (test_data(3 * MIB, 201), test_data(3 * MIB, 202));
    origin.put("rev", "a", a.clone()).await.unwrap();
    origin.put("rev", "b", b.clone()).await.unwrap();
    let issuer = TestIssuer::new(Duration::from_secs(3600));
    origin.trust(&issuer);
    let server = CredentialServer::start(&issuer).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = TestClient::new();
    let cfg = with_source(&origin, &server, dir.path(), CredentialSource::Container);
    let node = start_node_for(cfg, |_| {}).await.unwrap();
    let r = client.get(&format!("http://{}/rev/a", node.proxy_addr), &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), sha256_hex(&r.body)), (200, sha256_hex(&a)));
    issuer.revoke_all();
    let started = Instant::now();
    let r = client.get(&format!("http://{}/rev/b", node.proxy_addr), &[]).await.unwrap();
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 403, "{body}");
    assert!(body.contains("InvalidToken"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // The cached object is still served: it was read with a valid credential.
    let r = client.get(&format!("http://{}/rev/a", node.proxy_addr), &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), sha256_hex(&r.body)), (200, sha256_hex(&a)));
    node.shutdown().await;

    // A web identity token STS does not accept, and a container endpoint the
    // node may not read: no credentials, an error at once.
    for source in [CredentialSource::WebIdentity, CredentialSource::Container] {
        let mut cfg = with_source(&origin, &server, dir.path(), source);
        let wrong = dir.path().join("wrong-token");
        std::fs::write(&wrong, "not-the-token").unwrap();
        cfg.credentials.web_identity_token_file = Some(wrong.clone());
        cfg.credentials.container_token_file = Some(wrong);
        let refused_before = server.refused();
        let node = start_node_for(cfg, |_| {}).await.unwrap();
        let started = Instant::now();
        let r = client.get(&format!("http://{}/rev/b", node.proxy_addr), &[]).await.unwrap();
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 502, "{source:?}: {body}");
        assert!(body.contains("origin.credentials"), "{source:?}: {body}");
        assert!(started.elapsed() < Duration::from_secs(10), "{source:?}: {:?}", started.elapsed());
        assert!(server.refused() > refused_before, "{source:?}");
        // A second request within a few seconds does not ask again.
        let refused = server.refused();
        let r = client.get(&format!("http://{}/rev/b", node.proxy_addr), &[]).await.unwrap();
        assert_eq!(r.status, 502);
        assert_eq!(server.refused(), refused, "{source:?}: a failed load is remembered");
        node.shutdown().await;
    }
    server.stop().await;
    origin.stop().await;
}

/// Presigned URLs made with temporary credentials carry their session token, and
/// the origin serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_carry_the_temporary_session_token() {
    let (origin, data) = TestOrigin::with_object("pre", "k", MIB, 211).await.unwrap();
    let issuer = TestIssuer::new(Duration::from_secs(3600));
    origin.trust(&issuer);
    let server = CredentialServer::start(&issuer).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_source(&origin, &server, dir.path(), CredentialSource::Imds);
    let client = eliop2p_origin::OriginClient::new(cfg).unwrap();
    let url = client
        .presign(
            &eliop2p_origin::OriginRequest::new(http::Method::GET, "pre", Some("k")),
            Duration::from_secs(300),
        )
        .await
        .unwrap()
        .to_string();
    assert!(url.contains("X-Amz-Security-Token=session-token-"), "{url}");
    assert!(url.contains("X-Amz-Credential=ASIATEST"), "{url}");
    let r = TestClient::new().get(&url, &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), sha256_hex(&r.body)), (200, sha256_hex(&data)));
    server.stop().await;
    origin.stop().await;
}
