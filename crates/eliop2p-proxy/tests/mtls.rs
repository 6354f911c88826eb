//! Mutual TLS on the P2P port (issue 19, item 1): real nodes on loopback with
//! certificates of a test CA (made by `openssl`), reading from each other; peers
//! with a certificate of another CA, an expired one, none, or one that names
//! another node are refused before any chunk byte; certificates are reloaded
//! when their files change, and new connections use the new ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eliop2p_proxy::NodeHandle;
use eliop2p_testkit::{
    NodeCert, TestCa, TestClient, TestOrigin, p2p_listeners, sha256_hex, start_p2p_node, test_data,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

fn metric(node: &NodeHandle, series: &str) -> u64 {
    node.render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn tls_failures(node: &NodeHandle, reason: &str) -> u64 {
    metric(node, &format!("eliop2p_p2p_tls_handshake_failures_total{{reason=\"{reason}\"}}"))
}

/// `n` nodes that all know each other, node `i` with `certs(i, id)` (or none).
async fn cluster(
    origin: &TestOrigin,
    n: usize,
    certs: impl Fn(usize, &str) -> Option<NodeCert>,
) -> anyhow::Result<Vec<NodeHandle>> {
    let listeners = p2p_listeners(n).await?;
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = format!("node-{}", l.local_addr()?.port());
        let tls = certs(i, &id).map(|c| c.p2p_tls(false)).transpose()?;
        nodes.push(
            start_p2p_node(origin, l, addrs.clone(), |c| {
                let p = c.p2p.as_mut().unwrap();
                p.tls = tls;
                // Certificates authenticate; no cluster secret.
                p.cluster_secret = None;
            })
            .await?,
        );
    }
    Ok(nodes)
}

fn id_of(node: &NodeHandle) -> String {
    format!("node-{}", node.p2p_addr.unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_read_from_each_other_over_mutual_tls() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("mtls", "w.bin", 40 * MIB + 3, 501).await?;
    let ca = TestCa::new()?;
    let nodes = cluster(&origin, 3, |_, id| Some(ca.node_cert(id, false).unwrap())).await?;
    let c = TestClient::new();
    let url = |n: &NodeHandle| format!("http://{}/mtls/w.bin", n.proxy_addr);
    let a = c.get(&url(&nodes[0]), &[]).await?;
    assert_eq!(sha256_hex(&a.body), sha256_hex(&data));
    let origin_gets = origin.gets_of("mtls", "w.bin").len();
    for n in &nodes[1..] {
        let t = Instant::now();
        let r = c.get(&url(n), &[]).await?;
        eprintln!("refused read {:?}", t.elapsed());
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact from a peer over TLS");
        assert_eq!(r.header("x-cache-source"), Some("peer"));
    }
    assert_eq!(origin.gets_of("mtls", "w.bin").len(), origin_gets, "no origin GET after the first node");
    for n in &nodes {
        assert_eq!(metric(n, "eliop2p_p2p_handshake_failures_total"), 0);
    }
    // The bytes on the wire are not the object's: a raw TCP reader of the P2P
    // port sees no frame (the listener wants a TLS ClientHello).
    let mut s = tokio::net::TcpStream::connect(nodes[0].p2p_addr.unwrap()).await?;
    let mut hello = bytes::BytesMut::new();
    eliop2p_p2p::codec::Frame::new(eliop2p_p2p::codec::MessageType::Hello, &[], vec![0u8; 40].into(), 0, 0)
        .encode(&mut hello);
    s.write_all(&hello).await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(!buf.windows(4).any(|w| w == b"CHKP"), "a plain frame from a TLS listener");
    assert!(tls_failures(&nodes[0], "not_tls") >= 1);
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// A TLS client of the test, to poke at a node's P2P port.
fn client_config(ca: &std::path::Path, cert: Option<&NodeCert>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(Arc::new(match cert {
        None => b.with_no_client_auth(),
        Some(c) => {
            let chain = rustls_pki_types::CertificateDer::pem_file_iter(&c.cert)?.collect::<Result<Vec<_>, _>>()?;
            b.with_client_auth_cert(chain, rustls_pki_types::PrivateKeyDer::from_pem_file(&c.key)?)?
        }
    }))
}

/// Connects with TLS and sends a HELLO announcing `announce`; returns what the
/// node answered until it closed (or 5 s), or the TLS error.
async fn hello_over_tls(
    node: &NodeHandle,
    config: Arc<rustls::ClientConfig>,
    announce: &str,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(node.p2p_addr.unwrap()).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let mut s = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let mut data = vec![7u8; 32];
    data.extend_from_slice(announce.as_bytes());
    let mut hello = bytes::BytesMut::new();
    eliop2p_p2p::codec::Frame::new(eliop2p_p2p::codec::MessageType::Hello, &[], data.into(), 0, 0).encode(&mut hello);
    s.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if got.is_empty() => return Err(e.to_string()),
            // Closed, an error after some bytes, or silence: what came is the answer.
            _ => return Ok(got),
        }
    }
}

/// The message type of the first frame in `bytes` (0 when there is none).
fn first_frame_type(bytes: &[u8]) -> u32 {
    if bytes.len() < 12 {
        return 0;
    }
    u32::from_be_bytes(bytes[8..12].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_expired_missing_or_misnamed_certificates_get_no_chunk_byte() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("deny", "obj", 3 * MIB, 502).await?;
    let (ca, other_ca) = (TestCa::new()?, TestCa::new()?);
    // Node 0 is the cluster's; node 1 has a certificate of another CA, node 2 an
    // expired one of the right CA.
    let nodes = cluster(&origin, 3, |i, id| {
        Some(match i {
            0 => ca.node_cert(id, false).unwrap(),
            1 => other_ca.node_cert(id, false).unwrap(),
            _ => ca.node_cert(id, true).unwrap(),
        })
    })
    .await?;
    let c = TestClient::new();
    let url = |n: &NodeHandle| format!("http://{}/deny/obj", n.proxy_addr);
    assert_eq!(sha256_hex(&c.get(&url(&nodes[0]), &[]).await?.body), sha256_hex(&data));
    // Past the expired certificate's last second (node 0's cold read gave its
    // peers a few seconds already).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused: Vec<_> = nodes[1..]
        .iter()
        .map(|n| {
            let (c, url) = (c.clone(), url(n));
            tokio::spawn(async move { c.get(&url, &[]).await.unwrap() })
        })
        .collect();
    for r in refused {
        let r = r.await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        assert_eq!(r.header("x-cache-source"), Some("origin"), "no byte from a peer that refused us");
    }
    assert_eq!(metric(&nodes[0], "eliop2p_p2p_sent_bytes_total"), 0);
    assert!(tls_failures(&nodes[0], "unknown_ca") >= 1, "{}", nodes[0].render_metrics());
    assert!(tls_failures(&nodes[0], "expired") >= 1, "{}", nodes[0].render_metrics());
    // The refused nodes saw why, too: node 0's certificate is of a CA node 1
    // does not trust.
    assert!(tls_failures(&nodes[1], "unknown_ca") >= 1);

    let ca_pem = ca.ca_pem.clone();
    // No client certificate at all.
    let r = hello_over_tls(&nodes[0], client_config(&ca_pem, None)?, &id_of(&nodes[0])).await;
    assert!(r.as_ref().map_or(true, |b| first_frame_type(b) == 0), "{r:?}");
    assert!(tls_failures(&nodes[0], "no_certificate") >= 1);
    // A valid certificate of the cluster CA naming node-x, announcing node-y:
    // refused after the HELLO, with an error frame and no challenge.
    let x = ca.node_cert("node-x", false)?;
    let r = hello_over_tls(&nodes[0], client_config(&ca_pem, Some(&x))?, "node-y").await.unwrap();
    assert_eq!(first_frame_type(&r), eliop2p_p2p::codec::MessageType::Error as u32, "{r:?}");
    assert_eq!(tls_failures(&nodes[0], "wrong_identity"), 1);
    // The same certificate announcing the node it names gets the challenge.
    let r = hello_over_tls(&nodes[0], client_config(&ca_pem, Some(&x))?, "node-x").await.unwrap();
    assert_eq!(first_frame_type(&r), eliop2p_p2p::codec::MessageType::Challenge as u32);
    assert_eq!(metric(&nodes[0], "eliop2p_p2p_sent_bytes_total"), 0);
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// A node whose certificate does not name its own id does not start: peers would
/// refuse every connection it makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_id_is_refused_at_start() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    let ca = TestCa::new()?;
    let l = p2p_listeners(1).await?.pop().unwrap();
    let tls = ca.node_cert("node-a", false)?.p2p_tls(false)?;
    let err = match start_p2p_node(&origin, l, vec![], |c| c.p2p.as_mut().unwrap().tls = Some(tls)).await {
        Ok(_) => panic!("a node started with a certificate for another id"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("p2p.tls_cert") && err.contains("node-a"), "{err}");
    origin.stop().await;
    Ok(())
}

/// Certificate rotation under load: node 0's files are replaced while node 1
/// reads from it; every read is byte-exact, the node reloads, and a new
/// connection is served with the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_used_for_new_connections_without_a_restart() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("rot").await?;
    let objects: Vec<_> = (0..12).map(|i| test_data(2 * MIB, 600 + i)).collect();
    for (i, d) in objects.iter().enumerate() {
        origin.put("rot", &format!("o{i}"), d.clone()).await?;
    }
    let ca = TestCa::new()?;
    let first: std::sync::Mutex<Vec<NodeCert>> = Default::default();
    let nodes = cluster(&origin, 2, |_, id| {
        let c = ca.node_cert(id, false).unwrap();
        first.lock().unwrap().push(c.clone());
        Some(c)
    })
    .await?;
    let node0_files = first.lock().unwrap()[0].clone();
    let c = TestClient::new();
    // Node 0 reads everything from the origin, all at once (each cold read
    // first gives its static peer a few seconds to turn out to be getting it).
    let warm: Vec<_> = (0..objects.len())
        .map(|i| {
            let (c, url) = (c.clone(), format!("http://{}/rot/o{i}", nodes[0].proxy_addr));
            tokio::spawn(async move { c.get(&url, &[]).await.unwrap().status })
        })
        .collect();
    for w in warm {
        assert_eq!(w.await?, 200);
    }
    let reader = {
        let (c, url) = (c.clone(), format!("http://{}/rot", nodes[1].proxy_addr));
        let objects = objects.clone();
        tokio::spawn(async move {
            for (i, d) in objects.iter().enumerate() {
                let r = c.get(&format!("{url}/o{i}"), &[]).await.unwrap();
                assert_eq!(sha256_hex(&r.body), sha256_hex(d), "o{i}");
                assert_eq!(r.header("x-cache-source"), Some("peer"), "o{i}");
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    // First a broken change: a key that does not go with the certificate. The
    // node keeps the certificate it has, and reads go on.
    let stray = ca.node_cert("stray", false)?;
    std::fs::copy(&stray.key, &node0_files.key)?;
    tokio::time::sleep(eliop2p_p2p::tls::RELOAD_CHECK * 2 + Duration::from_millis(300)).await;
    assert_eq!(metric(&nodes[0], "eliop2p_p2p_tls_reloads_total"), 0, "a broken key was loaded");
    // New key and certificate, same names; written over the old files.
    let rotated = ca.node_cert(&id_of(&nodes[0]), false)?;
    std::fs::copy(&rotated.key, &node0_files.key)?;
    std::fs::copy(&rotated.cert, &node0_files.cert)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&nodes[0], "eliop2p_p2p_tls_reloads_total") == 0 {
        assert!(Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.await?;
    assert_eq!(metric(&nodes[0], "eliop2p_p2p_handshake_failures_total"), 0);
    // A new connection is served with the new certificate.
    let id1 = id_of(&nodes[1]);
    let probe = ca.node_cert(&id1, false)?;
    let tcp = tokio::net::TcpStream::connect(nodes[0].p2p_addr.unwrap()).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let s = tokio_rustls::TlsConnector::from(client_config(&ca.ca_pem, Some(&probe))?).connect(name, tcp).await?;
    let served = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    use rustls_pki_types::pem::PemObject;
    let want = rustls_pki_types::CertificateDer::from_pem_file(&rotated.cert)?.to_vec();
    assert_eq!(served, want, "the new certificate");
    drop(s);
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// Moving a running cluster to TLS (`p2p.tls_rollout`): a node with
/// certificates in rollout mode and a node without any (both with the cluster
/// secret) read from each other in both directions; the TLS node took the plain
/// peer's connection and fell back to plain TCP towards it. Without rollout the
/// same pair shares nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_node_serves_and_reads_plain_peers() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("roll").await?;
    let (a, b) = (test_data(3 * MIB, 701), test_data(3 * MIB, 702));
    origin.put("roll", "a", a.clone()).await?;
    origin.put("roll", "b", b.clone()).await?;
    let ca = TestCa::new()?;
    let c = TestClient::new();
    for rollout in [true, false] {
        let listeners = p2p_listeners(2).await?;
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            // Node 0 has certificates; node 1 is not upgraded yet. Both keep
            // the cluster secret (start_p2p_node sets it).
            let tls = if i == 0 {
                let id = format!("node-{}", addrs[0].port());
                Some(ca.node_cert(&id, false)?.p2p_tls(rollout)?)
            } else {
                None
            };
            nodes.push(start_p2p_node(&origin, l, addrs.clone(), |c| c.p2p.as_mut().unwrap().tls = tls).await?);
        }
        let url = |n: &NodeHandle, k: &str| format!("http://{}/roll/{k}", n.proxy_addr);
        // Each node reads one object from the origin, then the other's.
        assert_eq!(sha256_hex(&c.get(&url(&nodes[0], "a"), &[]).await?.body), sha256_hex(&a));
        assert_eq!(sha256_hex(&c.get(&url(&nodes[1], "b"), &[]).await?.body), sha256_hex(&b));
        let from_b = c.get(&url(&nodes[0], "b"), &[]).await?;
        let from_a = c.get(&url(&nodes[1], "a"), &[]).await?;
        assert_eq!(sha256_hex(&from_b.body), sha256_hex(&b));
        assert_eq!(sha256_hex(&from_a.body), sha256_hex(&a));
        let want = if rollout { Some("peer") } else { Some("origin") };
        assert_eq!(from_b.header("x-cache-source"), want, "rollout = {rollout}: TLS node reading the plain one");
        assert_eq!(from_a.header("x-cache-source"), want, "rollout = {rollout}: plain node reading the TLS one");
        for n in nodes {
            n.shutdown().await;
        }
    }
    origin.stop().await;
    Ok(())
}
