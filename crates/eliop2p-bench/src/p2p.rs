//! Node-to-node scenario: nodes given each other as static peers; a node with an
//! empty cache reads a cached object through its HTTP path from one peer and from
//! three, and the transfer engine alone downloads an object's chunks into fresh
//! memory and into a full memory tier. Each is measured on a node whose memory
//! the process never touched and on one started with `cache.memory_prefault`.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use eliop2p_proxy::NodeHandle;
use eliop2p_testkit::{TestOrigin, sha256_hex, test_data};

use crate::{MIB, Opts, Sample, metric, plain_get, row, transfer_header};

/// Node-to-node transfer: a node with an empty cache reads the large object from
/// one peer, then another from three peers at once (pieces verified on arrival).
pub(crate) async fn run(
    origin: &TestOrigin,
    o: &Opts,
    large: &Bytes,
    base: Sample,
) -> anyhow::Result<()> {
    let listeners = eliop2p_testkit::p2p_listeners(11).await?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect();
    let big = o.large as u64;
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        // Holders: 0, 2, 3. Downloaders: 1 (from node 0 only), 4 (from 0, 2, 3)
        // through HTTP; 5 (from 0) and 6 (from 0, 2, 3) through the engine alone.
        // 7 to 10 are 1, 4, 5 and 6 again with a prefaulted memory tier.
        let peers = match i {
            1 | 5 | 7 | 9 => vec![addrs[0]],
            4 | 6 | 8 | 10 => vec![addrs[0], addrs[2], addrs[3]],
            _ => vec![],
        };
        // Downloaders get a memory tier of one object, so a second object evicts
        // the first and reuses its memory; holders keep both.
        let holder = matches!(i, 0 | 2 | 3);
        let cap = if holder { big * 3 } else { big + big / 8 };
        nodes.push(
            eliop2p_testkit::start_p2p_node(origin, l, peers, |c| {
                c.cache.memory_capacity = cap;
                c.cache.memory_prefault = i >= 7;
            })
            .await?,
        );
    }
    for h in [0, 2, 3] {
        plain_get(nodes[h].proxy_addr, "/bench/large.bin").await?;
    }
    for n in &nodes[7..] {
        let want = n.cache.memory_capacity() - eliop2p_cache::PIECE_SIZE;
        let t0 = Instant::now();
        while n.cache.pool().pooled_bytes() < want {
            anyhow::ensure!(t0.elapsed().as_secs() < 120, "prefault did not finish");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    println!();
    println!(
        "## node to node (P2P, loopback, SHA-256 per 256 KiB piece): {} MiB object",
        o.large / MIB
    );
    println!();
    transfer_header();
    for (name, i) in [
        ("node MISS from 1 peer", 1),
        ("node MISS from 3 peers", 4),
        ("node MISS from 1, prefaulted", 7),
        ("node MISS from 3, prefaulted", 8),
    ] {
        row(
            name,
            plain_get(nodes[i].proxy_addr, "/bench/large.bin").await?,
            base,
        );
    }
    // The transfer engine alone: every chunk of an object into node 5 / 6's
    // cache, 4 chunks at a time, pieces verified, no HTTP client. First into
    // memory the process never used (every page is a first touch, which costs a
    // host fault in this VM), then a second object into the full tier, whose
    // evicted chunks' memory the allocator hands out again (a node's steady state).
    let first: Vec<_> = nodes[0].cache.held();
    let second_data = test_data(o.large, 2);
    origin.put("bench", "large2.bin", second_data).await?;
    for h in [0, 2, 3] {
        plain_get(nodes[h].proxy_addr, "/bench/large2.bin").await?;
    }
    let second: Vec<_> = nodes[0]
        .cache
        .held()
        .into_iter()
        .filter(|c| !first.contains(c))
        .collect();
    for (name, i, chunks) in [
        ("engine 1 peer, fresh memory", 5, &first),
        ("engine 3 peers, fresh memory", 6, &first),
        ("engine 1 peer, prefaulted", 9, &first),
        ("engine 3 peers, prefaulted", 10, &first),
        ("engine 1 peer, tier full", 5, &second),
        ("engine 3 peers, tier full", 6, &second),
    ] {
        row(name, engine_download(&nodes[i], chunks).await?, base);
    }
    for i in [5, 6] {
        anyhow::ensure!(
            nodes[i].cache.pool().reused() > 0,
            "node {i} wrote no piece into an evicted chunk's buffer"
        );
        let held = nodes[i].cache.held();
        let complete = second.iter().filter(|c| held.contains(c)).count();
        anyhow::ensure!(
            complete * 10 >= second.len() * 8,
            "node {i} kept {complete} of {} chunks of the second object",
            second.len()
        );
    }
    for i in [1, 4, 7, 8] {
        let c = eliop2p_testkit::TestClient::new();
        let r = c
            .get(
                &format!("http://{}/bench/large.bin", nodes[i].proxy_addr),
                &[],
            )
            .await?;
        anyhow::ensure!(
            sha256_hex(&r.body) == sha256_hex(large),
            "p2p node returned wrong bytes"
        );
        let origin_bytes = metric(&nodes[i], "eliop2p_origin_bytes_total");
        anyhow::ensure!(
            origin_bytes == 0,
            "node {i} read {origin_bytes} bytes from the origin"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// Downloads `chunks` into `node`'s cache through its P2P layer alone, four
/// chunks in flight.
async fn engine_download(
    node: &NodeHandle,
    chunks: &[(eliop2p_core::ChunkId, u64)],
) -> anyhow::Result<Sample> {
    let p2p = node.p2p.clone().expect("p2p node");
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut bytes = 0;
    for (i, (id, len)) in chunks.iter().copied().enumerate() {
        if i >= 4 {
            set.join_next().await.expect("a task")??;
        }
        let (p2p, cache) = (p2p.clone(), node.cache.clone());
        bytes += len;
        set.spawn(async move {
            match cache.lookup(id, len) {
                eliop2p_cache::Lookup::Leader(mut w) => {
                    p2p.download(id, len, &mut w, None, None)
                        .await
                        .map_err(|_| anyhow::anyhow!("chunk {id}: peers did not supply it"))?;
                    w.finish()?;
                    Ok(())
                }
                _ => anyhow::bail!("chunk {id} already present"),
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(Sample {
        secs,
        ttfb: 0.0,
        bytes,
    })
}

/// Node to node with mutual TLS on the P2P port against plain TCP (issue 19):
/// each round, a fresh plain pair and a fresh TLS pair (certificates of a test
/// CA) of holder and downloader; the holder reads a new object from the origin,
/// then the downloader reads it from the holder through HTTP, pieces verified;
/// the modes alternate, at least five rounds.
pub(crate) async fn tls_vs_plain(origin: &TestOrigin, o: &Opts, base: Sample) -> anyhow::Result<()> {
    let ca = eliop2p_testkit::TestCa::new()?;
    let big = o.large as u64;
    let start = |l: tokio::net::TcpListener, peers: Vec<SocketAddr>, tls: bool| {
        let cert = if tls {
            let id = format!("node-{}", l.local_addr().expect("bound").port());
            Some(ca.node_cert(&id, false).and_then(|c| c.p2p_tls(false)))
        } else {
            None
        };
        async move {
            let tls = cert.transpose()?;
            eliop2p_testkit::start_p2p_node(origin, l, peers, |c| {
                c.cache.memory_capacity = big + big / 8;
                if let Some(t) = tls {
                    let p = c.p2p.as_mut().expect("p2p");
                    p.tls = Some(t);
                    p.cluster_secret = None;
                }
            })
            .await
        }
    };
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    // Origin bytes a downloader read (a chunk whose pieces were too slow): a
    // round with any is reported, as its figure is not node to node only.
    let mut from_origin: Vec<(usize, &str, u64)> = Vec::new();
    // Five rounds at least: one pair of runs moves by 20% on this shared machine.
    let rounds = o.runs.max(5);
    for round in 0..rounds {
        let key = format!("tls-round-{round}.bin");
        let data = test_data(o.large, 100 + round as u64);
        origin.put("bench", &key, data.clone()).await?;
        let path = format!("/bench/{key}");
        // Fresh holders too: a holder whose tier is full of an older, hotter
        // object evicts chunks of the new one, which the downloader then waits for.
        let mut holders = Vec::new();
        for (l, tls) in eliop2p_testkit::p2p_listeners(2).await?.into_iter().zip([false, true]) {
            let h = start(l, vec![], tls).await?;
            plain_get(h.proxy_addr, &path).await?;
            holders.push(h);
        }
        for (i, l) in eliop2p_testkit::p2p_listeners(2).await?.into_iter().enumerate() {
            let holder = holders[i].p2p_addr.expect("p2p");
            let d = start(l, vec![holder], i == 1).await?;
            let s = plain_get(d.proxy_addr, &path).await?;
            let r = eliop2p_testkit::TestClient::new()
                .get(&format!("http://{}{path}", d.proxy_addr), &[])
                .await?;
            let mode = if i == 0 { "plain" } else { "TLS" };
            anyhow::ensure!(sha256_hex(&r.body) == sha256_hex(&data), "{mode}: wrong bytes");
            let failures = metric(&d, "eliop2p_p2p_handshake_failures_total");
            anyhow::ensure!(failures == 0, "{mode}: {failures} handshake failures");
            let bytes = metric(&d, "eliop2p_origin_bytes_total");
            if bytes > 0 {
                from_origin.push((round, mode, bytes));
            }
            if i == 0 { plain.push(s) } else { tls.push(s) }
            d.shutdown().await;
        }
        for h in holders {
            h.shutdown().await;
        }
    }
    println!();
    println!(
        "## node to node over mutual TLS (P2P, loopback, 1 peer, SHA-256 per piece): {} MiB object, median of {} runs, modes alternating",
        o.large / MIB,
        rounds
    );
    println!();
    transfer_header();
    let each = |v: &[Sample]| v.iter().map(|s| format!("{:.0}", s.mbps())).collect::<Vec<_>>().join(", ");
    let (plain_each, tls_each) = (each(&plain), each(&tls));
    let (p, t) = (crate::median(plain), crate::median(tls));
    row("node MISS from 1 peer, plain TCP", p, base);
    row("node MISS from 1 peer, mutual TLS", t, base);
    println!();
    println!("TLS / plain throughput: {:.2}x", t.mbps() / p.mbps());
    println!("each round, MB/s: plain {plain_each}; TLS {tls_each}");
    for (round, mode, bytes) in from_origin {
        println!("round {round}, {mode}: {} MiB of the object came from the origin (pieces too slow), not the peer", bytes >> 20);
    }
    Ok(())
}
