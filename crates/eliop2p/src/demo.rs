//! `eliop2p demo`: a local cluster in one process — an S3-compatible origin
//! (s3s-fs, SigV4-checking) on loopback with sample objects, a control plane and
//! three nodes in hybrid discovery — then a scripted read (cold read, hit, peer
//! read, ranged read) with a table of sources, bytes and speeds, and
//! ready-to-paste client commands.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use eliop2p_testkit::{
    ACCESS_KEY, CONTROL_TOKEN, Discovery, SECRET_KEY, TestClient, TestCluster, TestOrigin,
    sha256_hex, test_data,
};

use eliop2p::config::Effective;

const NODES: usize = 3;

/// Bytes served to clients by source, summed over the nodes.
fn by_source(cluster: &TestCluster) -> [u64; 4] {
    let mut t = [0u64; 4];
    for n in cluster.nodes.iter().flatten() {
        let m = &n.metrics;
        t[0] += m.bytes_origin.load(Relaxed);
        t[1] += m.bytes_peer.load(Relaxed);
        t[2] += m.bytes_memory.load(Relaxed);
        t[3] += m.bytes_disk.load(Relaxed);
    }
    t
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub async fn run(
    eff: Effective,
    once: bool,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let origin = TestOrigin::start()
        .await
        .context("starting the demo origin")?;
    origin.create_bucket("demo").await?;
    origin
        .put("demo", "hello.txt", "hello from eliop2p\n".into())
        .await?;
    let sample = test_data(64 << 20, 42);
    origin
        .put("demo", "data/sample-64MiB.bin", sample.clone())
        .await?;
    for i in 0..4 {
        origin
            .put(
                "demo",
                &format!("train/shard-{i}.bin"),
                test_data(8 << 20, 100 + i),
            )
            .await?;
    }

    // Node 0 takes the configured proxy and admin listeners; the others port 0.
    let proxy = crate::bind(eff.addr("proxy.listen"), "proxy").await?;
    let admin = crate::bind(eff.addr("admin.listen"), "admin").await?;
    let cluster = TestCluster::start_full(
        &origin,
        NODES,
        Discovery::Hybrid,
        |_, _| {},
        |_| {},
        Some((proxy, admin)),
    )
    .await
    .context("starting the demo cluster")?;
    let cp = cluster
        .control_addr
        .expect("hybrid mode has a control plane");
    let p = cluster.node(0).proxy_addr;

    println!("eliop2p demo: a control plane and {NODES} nodes in front of one origin");
    println!(
        "  origin (in-process s3s-fs, checks SigV4): {}",
        origin.endpoint
    );
    println!("  control plane:                            http://{cp}");
    for i in 0..NODES {
        let n = cluster.node(i);
        println!(
            "  node {i}: S3 proxy http://{}  admin http://{}  p2p {}",
            n.proxy_addr,
            n.admin_addr,
            n.p2p_addr.map_or("-".into(), |a| a.to_string())
        );
    }
    println!();

    println!(
        "scripted reads of demo/data/sample-64MiB.bin (MiB by source: what the origin sent, and what the serving node took from peers and from its memory):"
    );
    println!(
        "  {:<6} {:>4} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:<6}",
        "step", "node", "x-cache", "header", "MiB", "origin", "peer", "memory", "MiB/s", "sha256"
    );
    let client = TestClient::new();
    let gets_before = origin.gets_of("demo", "data/sample-64MiB.bin").len();
    let sources_before = by_source(&cluster);
    let origin_before = origin.bytes_sent();
    // cold and hit on node 0; the peer read on whichever other node holds fewer
    // chunks after the cold read (owners keep the chunks they read for others).
    // (Decided when the peer step comes, not before the cold read.)
    let held = |i: usize| cluster.node(i).cache.held().len();
    let mut others: Option<(usize, usize)> = None;
    let steps = [
        ("cold", Some(0), None),
        ("hit", Some(0), None),
        ("peer", None, None),
        ("range", None, Some((20_000_000u64, 20_999_999u64))),
    ];
    for (label, node, range) in steps {
        let node = node.unwrap_or_else(|| {
            let (peer, range) = *others.get_or_insert_with(|| if held(1) <= held(2) { (1, 2) } else { (2, 1) });
            if label == "peer" { peer } else { range }
        });
        let url = cluster.url(node, "demo", "data/sample-64MiB.bin");
        let range_header = range.map(|(a, b)| format!("bytes={a}-{b}"));
        let headers: Vec<(&str, &str)> = range_header
            .as_deref()
            .map(|r| vec![("range", r)])
            .unwrap_or_default();
        let want: Bytes = match range {
            Some((a, b)) => sample.slice(a as usize..=b as usize),
            None => sample.clone(),
        };
        let (o0, m0) = (origin.bytes_sent(), &cluster.node(node).metrics);
        let (p0, mem0) = (m0.bytes_peer.load(Relaxed), m0.bytes_memory.load(Relaxed));
        let t = Instant::now();
        let r = client.get(&url, &headers).await?;
        let secs = t.elapsed().as_secs_f64().max(1e-6);
        let ok = sha256_hex(&r.body) == sha256_hex(&want);
        println!(
            "  {:<6} {:>4} {:>7} {:>8} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.0} {:<6}",
            label,
            node,
            r.header("x-cache").unwrap_or("-"),
            r.header("x-cache-source").unwrap_or("-"),
            mib(r.body.len() as u64),
            mib(origin.bytes_sent() - o0),
            mib(m0.bytes_peer.load(Relaxed) - p0),
            mib(m0.bytes_memory.load(Relaxed) - mem0),
            mib(r.body.len() as u64) / secs,
            if ok { "ok" } else { "MISMATCH" }
        );
        anyhow::ensure!(ok, "demo read {label} returned wrong bytes");
    }
    let after = by_source(&cluster);
    let origin_gets = origin.gets_of("demo", "data/sample-64MiB.bin").len() - gets_before;
    println!();
    println!("bytes served to clients, by source (all nodes):");
    println!("  {:<7} {:>9} {:>7}", "source", "MiB", "share");
    let total: u64 = (0..4).map(|i| after[i] - sources_before[i]).sum();
    for (i, name) in ["origin", "peer", "memory", "disk"].iter().enumerate() {
        let b = after[i] - sources_before[i];
        println!(
            "  {:<7} {:>9.1} {:>6.0}%",
            name,
            mib(b),
            if total == 0 {
                0.0
            } else {
                100.0 * b as f64 / total as f64
            }
        );
    }
    println!(
        "the origin sent {:.1} MiB in {origin_gets} GET requests for a {:.0} MiB object ({} chunks of 16 MiB)",
        mib(origin.bytes_sent() - origin_before),
        mib(sample.len() as u64),
        sample.len() >> 24
    );
    println!();
    println!("dashboard: http://{cp}/dashboard#token={CONTROL_TOKEN}");
    println!(
        "node 0 dashboard: http://{}/dashboard",
        cluster.node(0).admin_addr
    );
    println!();
    println!(
        "try it (credentials are the demo origin's; the nodes sign their own origin requests):"
    );
    println!("  curl -i http://{p}/demo/hello.txt");
    println!("  curl -s -r 0-99 http://{p}/demo/data/sample-64MiB.bin | wc -c");
    println!(
        "  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} aws --endpoint-url http://{p} s3 ls s3://demo/ --recursive"
    );
    println!(
        "  python3 -c \"import boto3; s3 = boto3.client('s3', endpoint_url='http://{p}', aws_access_key_id='{ACCESS_KEY}', aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1'); print(s3.get_object(Bucket='demo', Key='hello.txt')['Body'].read())\""
    );
    println!("  eliop2p get --node http://{p} s3://demo/train/ --recursive -o /tmp/train");
    println!(
        "  eliop2p preheat --control-plane-endpoint http://{cp} --control-plane-token {CONTROL_TOKEN} s3://demo/train/ --wait"
    );
    println!(
        "  eliop2p status --control-plane-endpoint http://{cp} --control-plane-token {CONTROL_TOKEN}"
    );
    if !once {
        println!("ctrl-c to stop");
        stop.await;
    }
    cluster.shutdown().await;
    origin.stop().await;
    Ok(())
}
