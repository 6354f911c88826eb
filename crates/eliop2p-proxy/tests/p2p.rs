//! Several real nodes on loopback with the real S3 origin: chunks move between
//! nodes over the P2P protocol instead of coming from the origin.

use std::time::{Duration, Instant};

use eliop2p_proxy::NodeHandle;
use eliop2p_testkit::{
    TestClient, TestOrigin, p2p_listeners, sha256_hex, start_p2p_node,
};

const MIB: usize = 1 << 20;

fn metric(node: &NodeHandle, series: &str) -> u64 {
    node.render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` nodes that all know each other.
async fn cluster(
    origin: &TestOrigin,
    n: usize,
    tweak: impl Fn(usize, &mut eliop2p_proxy::NodeConfig),
) -> anyhow::Result<Vec<NodeHandle>> {
    let listeners = p2p_listeners(n).await?;
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(start_p2p_node(origin, l, addrs.clone(), |c| tweak(i, c)).await?);
    }
    Ok(nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_node_reads_from_the_first_not_the_origin() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("p2p", "weights.bin", 40 * MIB + 7, 1).await?;
    let nodes = cluster(&origin, 2, |_, _| {}).await?;
    let c = TestClient::new();
    let a = c
        .get(
            &format!("http://{}/p2p/weights.bin", nodes[0].proxy_addr),
            &[],
        )
        .await?;
    assert_eq!(sha256_hex(&a.body), sha256_hex(&data));
    assert_eq!(a.header("x-cache-source"), Some("origin"));
    let gets_after_a = origin.gets_of("p2p", "weights.bin").len();
    assert_eq!(gets_after_a, 3, "three 16 MiB chunks from the origin");
    let b = c
        .get(
            &format!("http://{}/p2p/weights.bin", nodes[1].proxy_addr),
            &[],
        )
        .await?;
    assert_eq!(b.status, 200);
    assert_eq!(
        sha256_hex(&b.body),
        sha256_hex(&data),
        "byte-exact from the peer"
    );
    assert_eq!(b.header("x-cache"), Some("MISS"));
    assert_eq!(b.header("x-cache-source"), Some("peer"));
    assert_eq!(
        origin.gets_of("p2p", "weights.bin").len(),
        gets_after_a,
        "no origin GET for the second node"
    );
    // 40 MiB + 7 bytes in pieces: the last one 7 bytes.
    let pieces = (data.len() as u64).div_ceil(eliop2p_cache::PIECE_SIZE);
    assert_eq!(metric(&nodes[1], "eliop2p_p2p_pieces_received_total"), pieces);
    assert_eq!(
        metric(&nodes[0], "eliop2p_p2p_sent_bytes_total"),
        data.len() as u64
    );
    // Ranged read on the second node: now from its own memory.
    let r = c
        .get(
            &format!("http://{}/p2p/weights.bin", nodes[1].proxy_addr),
            &[("range", "bytes=100-200")],
        )
        .await?;
    assert_eq!(r.body, data.slice(100..201));
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_still_filling_is_streamed_to_a_peer() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("fill", "obj", 16 * MIB, 2).await?;
    let nodes = cluster(&origin, 2, |_, _| {}).await?;
    let c = TestClient::new();
    let (ca, ua) = (
        c.clone(),
        format!("http://{}/fill/obj", nodes[0].proxy_addr),
    );
    let first = tokio::spawn(async move { ca.get(&ua, &[]).await });
    // Once A has started its fill, B asks: A serves the pieces it has and awaits
    // the rest, so the origin is read once for the whole cluster.
    wait_until("A's fill to start", || {
        metric(&nodes[0], "eliop2p_origin_bytes_total") > 0
    })
    .await;
    let b = c
        .get(&format!("http://{}/fill/obj", nodes[1].proxy_addr), &[])
        .await?;
    assert_eq!(sha256_hex(&b.body), sha256_hex(&data));
    assert_eq!(b.header("x-cache-source"), Some("peer"));
    assert_eq!(sha256_hex(&first.await??.body), sha256_hex(&data));
    assert_eq!(
        origin.gets_of("fill", "obj").len(),
        1,
        "one origin read for both nodes"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_peer_killed_mid_chunk_the_rest_comes_from_another() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("kill", "obj", 16 * MIB, 3).await?;
    // Node 2 downloads slowly (4 MiB/s), so node 0 can be killed in the middle.
    let mut nodes = cluster(&origin, 3, |i, c| {
        if i == 2 {
            c.p2p.as_mut().unwrap().max_download_rate = 4 * MIB as u64;
            c.p2p.as_mut().unwrap().piece_timeout = Duration::from_secs(2);
        }
    })
    .await?;
    let c = TestClient::new();
    for n in &nodes[..2] {
        let r = c
            .get(&format!("http://{}/kill/obj", n.proxy_addr), &[])
            .await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    let origin_gets = origin.gets_of("kill", "obj").len();
    let (cb, ub) = (
        c.clone(),
        format!("http://{}/kill/obj", nodes[2].proxy_addr),
    );
    let reader = tokio::spawn(async move { cb.get(&ub, &[]).await });
    wait_until("some pieces on node 2", || {
        metric(&nodes[2], "eliop2p_p2p_pieces_received_total") >= 3
    })
    .await;
    let killed = nodes.remove(0);
    assert!(killed.shutdown().await);
    let r = reader.await??;
    assert_eq!(r.status, 200);
    assert_eq!(
        sha256_hex(&r.body),
        sha256_hex(&data),
        "completed byte-exact after losing a peer"
    );
    assert_eq!(
        origin.gets_of("kill", "obj").len(),
        origin_gets,
        "completed from the other peer, not the origin"
    );
    let received = metric(&nodes[1], "eliop2p_p2p_pieces_received_total");
    // The chunk's pieces, plus at most what was in flight (8 per peer) to the killed
    // peer and, on a loaded machine, re-requests after a piece timeout or endgame
    // duplicates: only missing pieces are fetched again, never the whole chunk twice.
    let pieces = (16 * MIB as u64) / eliop2p_cache::PIECE_SIZE;
    assert!(
        (pieces..=pieces + 2 * 8).contains(&received),
        "received {received} pieces"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// Cluster tweak: 4 MiB chunks; node 0 with a 1-byte memory tier and a disk tier
/// at `path`, so what it holds is only on disk.
fn disk_only_node0(path: &std::path::Path) -> impl Fn(usize, &mut eliop2p_proxy::NodeConfig) {
    let path = path.to_owned();
    move |i, c| {
        c.proxy.chunk_size = 4 * MIB as u64;
        if i == 0 {
            c.cache.memory_capacity = 1;
            c.cache.disk = Some(eliop2p_cache::DiskTierConfig {
                path: path.clone(),
                capacity: 1 << 30,
                verify_on_start: eliop2p_cache::VerifyOnStart::No,
                write_queue: 16,
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_corrupt_chunk_is_skipped() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("rot", "obj", 4 * MIB, 4).await?;
    let disk = tempfile::tempdir()?;
    // Node 0 keeps the chunk only on disk (tiny memory tier).
    let nodes = cluster(&origin, 3, disk_only_node0(disk.path())).await?;
    let c = TestClient::new();
    c.get(&format!("http://{}/rot/obj", nodes[0].proxy_addr), &[])
        .await?;
    wait_until("chunk on disk", || {
        metric(&nodes[0], "eliop2p_cache_disk_writes_total") == 1
    })
    .await;
    c.get(&format!("http://{}/rot/obj", nodes[1].proxy_addr), &[])
        .await?;
    // Rot a byte in node 0's chunk file, in its third piece. Node 0's memory has a
    // fresh process view: pieces are verified on their first read.
    let chunks = disk.path().join("chunks");
    let shard = std::fs::read_dir(&chunks)?.next().expect("a shard")?.path();
    let file = std::fs::read_dir(&shard)?
        .next()
        .expect("a chunk file")?
        .path();
    let mut bytes = std::fs::read(&file)?;
    let n = bytes.len();
    bytes[n - 2 * MIB + 77] ^= 0xFF;
    std::fs::write(&file, bytes)?;
    drop(nodes);
    // Restart all three on the same ports is not needed: a new cluster where node 0
    // reopens the rotten disk.
    let nodes = cluster(&origin, 3, disk_only_node0(disk.path())).await?;
    // Node 1 reads from node 0, which finds its piece rotten while serving it: node 1
    // gets the rest elsewhere (the origin here); node 2 then reads from both.
    for i in [1, 2] {
        let r = c
            .get(&format!("http://{}/rot/obj", nodes[i].proxy_addr), &[])
            .await?;
        assert_eq!(
            sha256_hex(&r.body),
            sha256_hex(&data),
            "never a wrong byte (node {i})"
        );
    }
    assert_eq!(
        metric(&nodes[0], "eliop2p_cache_corrupt_chunks_total"),
        1,
        "detected by the serving node"
    );
    // Node 0 refuses the rotten piece and drops the chunk; a request that reaches
    // it after the drop is told the chunk is missing. Node 1 stops asking node 0
    // at the first of the two answers (static peers: no other source will turn
    // up), so either may be the one counted.
    let refused: u64 = nodes[1..]
        .iter()
        .map(|n| {
            metric(n, "eliop2p_p2p_piece_failures_total{reason=\"refused\"}")
                + metric(n, "eliop2p_p2p_piece_failures_total{reason=\"missing\"}")
        })
        .sum();
    assert!(
        refused >= 1,
        "the rotten piece was refused and fetched elsewhere"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cluster_secret_gets_no_data() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("sec", "obj", 2 * MIB, 5).await?;
    let nodes = cluster(&origin, 2, |i, c| {
        if i == 1 {
            c.p2p.as_mut().unwrap().cluster_secret = Some(b"not the cluster's secret".to_vec());
        }
    })
    .await?;
    let c = TestClient::new();
    c.get(&format!("http://{}/sec/obj", nodes[0].proxy_addr), &[])
        .await?;
    let r = c
        .get(&format!("http://{}/sec/obj", nodes[1].proxy_addr), &[])
        .await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(
        r.header("x-cache-source"),
        Some("origin"),
        "no bytes from a peer that failed the handshake"
    );
    assert!(metric(&nodes[0], "eliop2p_p2p_handshake_failures_total") >= 1);
    assert_eq!(metric(&nodes[0], "eliop2p_p2p_sent_bytes_total"), 0);
    // A raw outsider with no secret at all: it is refused before any chunk data.
    let mut s = tokio::net::TcpStream::connect(nodes[0].p2p_addr.unwrap()).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hello = bytes::BytesMut::new();
    eliop2p_p2p::codec::Frame::new(
        eliop2p_p2p::codec::MessageType::HaveQuery,
        &[0u8; 32],
        bytes::Bytes::new(),
        1,
        0,
    )
    .encode(&mut hello);
    s.write_all(&hello).await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        buf.is_empty(),
        "no frame for a peer that skipped the handshake"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_bandwidth_limit_is_respected() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("bwl", "obj", 64 * MIB, 6).await?;
    let nodes = cluster(&origin, 2, |i, c| {
        if i == 1 {
            c.p2p.as_mut().unwrap().max_download_rate = 16 * MIB as u64;
        }
    })
    .await?;
    let c = TestClient::new();
    c.get(&format!("http://{}/bwl/obj", nodes[0].proxy_addr), &[])
        .await?;
    let t = Instant::now();
    let r = c
        .get(&format!("http://{}/bwl/obj", nodes[1].proxy_addr), &[])
        .await?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(r.header("x-cache-source"), Some("peer"));
    assert!(
        (3.0..=6.0).contains(&secs),
        "64 MiB at 16 MiB/s took {secs:.2} s"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_peers_are_not_sent_duplicate_pieces() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("p2p", "shards.bin", 64 * MIB, 21).await?;
    let nodes = cluster(&origin, 4, |_, _| {}).await?;
    let c = TestClient::new();
    let url = |i: usize| format!("http://{}/p2p/shards.bin", nodes[i].proxy_addr);
    // Three holders (the first from the origin, the next two from peers).
    for i in 0..3 {
        let r = c.get(&url(i), &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    let r = c.get(&url(3), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(r.header("x-cache-source"), Some("peer"));
    // Pieces spread over the holders, each fetched once: endgame duplicates are
    // only for overdue pieces.
    assert_eq!(
        metric(&nodes[3], "eliop2p_p2p_received_bytes_total"),
        data.len() as u64
    );
    let senders = (0..3)
        .filter(|i| metric(&nodes[*i], "eliop2p_p2p_sent_bytes_total") > 0)
        .count();
    assert!(senders >= 2, "pieces came from {senders} holders");
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_alive_peer_causes_no_origin_read() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("slow", "obj", 16 * MIB, 4).await?;
    // Node 1 uploads at 1 MiB/s: each of its pieces takes longer than node 2's
    // piece timeout once a few are queued, yet it never goes silent.
    let nodes = cluster(&origin, 3, |i, c| {
        let p = c.p2p.as_mut().unwrap();
        if i == 1 {
            p.max_upload_rate = MIB as u64;
        }
        if i == 2 {
            p.piece_timeout = Duration::from_millis(1500);
        }
    })
    .await?;
    let c = TestClient::new();
    for n in &nodes[..2] {
        let r = c
            .get(&format!("http://{}/slow/obj", n.proxy_addr), &[])
            .await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    let origin_gets = origin.gets_of("slow", "obj").len();
    let sent_before = metric(&nodes[1], "eliop2p_p2p_pieces_sent_total");
    let r = c
        .get(&format!("http://{}/slow/obj", nodes[2].proxy_addr), &[])
        .await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact");
    assert_eq!(r.header("x-cache-source"), Some("peer"));
    assert_eq!(
        origin.gets_of("slow", "obj").len(),
        origin_gets,
        "the slow peer's pieces went to the other peer, not the origin"
    );
    assert!(
        metric(&nodes[1], "eliop2p_p2p_pieces_sent_total") > sent_before,
        "the slow peer was used, not written off"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// With static peers there is no tracker to name new sources: once every peer has
/// answered that it neither has nor is getting a chunk, the node reads the origin
/// at once instead of waiting out `p2p.piece_timeout` (set long here, so that
/// waiting it out would show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_with_static_peers_goes_to_the_origin_without_waiting() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("cold", "obj", 40 * MIB + 3, 3).await?;
    let nodes = cluster(&origin, 3, |_, c| {
        c.p2p.as_mut().expect("p2p").piece_timeout = Duration::from_secs(30);
    })
    .await?;
    let c = TestClient::new();
    let t = Instant::now();
    let a = c.get(&format!("http://{}/cold/obj", nodes[0].proxy_addr), &[]).await?;
    let took = t.elapsed();
    assert_eq!(a.status, 200);
    assert_eq!(sha256_hex(&a.body), sha256_hex(&data));
    assert_eq!(a.header("x-cache-source"), Some("origin"));
    assert!(took < Duration::from_secs(15), "a cold read took {took:?}: it waited for peers that had said they had nothing");
    // The next node still reads from the first, not the origin.
    let gets = origin.gets_of("cold", "obj").len();
    let b = c.get(&format!("http://{}/cold/obj", nodes[1].proxy_addr), &[]).await?;
    assert_eq!(sha256_hex(&b.body), sha256_hex(&data));
    assert_eq!(b.header("x-cache-source"), Some("peer"));
    assert_eq!(origin.gets_of("cold", "obj").len(), gets, "no origin GET for the second node");
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// A node needs only K complete holders and declines the others; when the one
/// it reads from dies, it turns to one it declined, not to the origin. (The
/// declined holders were forgotten: with static peers nothing named them again,
/// and the rest of the chunk came from the origin.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_complete_peer_dies_a_node_turns_to_one_it_declined() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("declined", "obj", 16 * MIB, 22).await?;
    let mut nodes = cluster(&origin, 3, |i, c| {
        let p = c.p2p.as_mut().unwrap();
        p.selection_k = 1;
        if i == 2 {
            p.max_download_rate = 4 * MIB as u64;
        }
    })
    .await?;
    let c = TestClient::new();
    for n in &nodes[..2] {
        let r = c.get(&format!("http://{}/declined/obj", n.proxy_addr), &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    let sent = |n: &NodeHandle| metric(n, "eliop2p_p2p_pieces_sent_total");
    let sent_before = [sent(&nodes[0]), sent(&nodes[1])];
    let (cb, ub) = (c.clone(), format!("http://{}/declined/obj", nodes[2].proxy_addr));
    let reader = tokio::spawn(async move { cb.get(&ub, &[]).await });
    wait_until("a quarter of the chunk on node 2", || {
        metric(&nodes[2], "eliop2p_p2p_pieces_received_total") >= 16
    })
    .await;
    let to_node2 = [sent(&nodes[0]) - sent_before[0], sent(&nodes[1]) - sent_before[1]];
    let serving = if to_node2[0] >= to_node2[1] { 0 } else { 1 };
    assert_eq!(to_node2[1 - serving], 0, "K = 1: one complete holder serves, the other is declined ({to_node2:?})");
    let before = origin.bytes_sent();
    let killed = nodes.remove(serving);
    assert!(killed.shutdown().await);
    let r = reader.await??;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact after the peer died");
    assert_eq!(origin.bytes_sent() - before, 0, "the rest came from the declined holder, not the origin");
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// A node whose only peer dies mid-chunk reads the rest from the origin, and
/// only the rest: the pieces it had from the peer, out of order as they come
/// (rarest first, ties at random), are kept, not read again from the origin's
/// first missing byte (which re-read most of them: a takeover cost up to a
/// chunk of extra origin bytes on the network bed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_peer_dies_a_node_reads_from_the_origin_only_what_it_lacks() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("holes", "obj", 16 * MIB, 21).await?;
    let mut nodes = cluster(&origin, 2, |i, c| {
        if i == 1 {
            c.p2p.as_mut().unwrap().max_download_rate = 4 * MIB as u64;
        }
    })
    .await?;
    let c = TestClient::new();
    let r = c.get(&format!("http://{}/holes/obj", nodes[0].proxy_addr), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let (cb, ub) = (c.clone(), format!("http://{}/holes/obj", nodes[1].proxy_addr));
    let reader = tokio::spawn(async move { cb.get(&ub, &[]).await });
    // Near half the chunk: its holes, scattered as rarest-first picks them
    // (ties at random), are then more than 16 runs about half the time.
    wait_until("28 pieces of the chunk on node 1", || {
        metric(&nodes[1], "eliop2p_p2p_pieces_received_total") >= 28
    })
    .await;
    let before = origin.bytes_sent();
    let killed = nodes.remove(0);
    assert!(killed.shutdown().await);
    let r = reader.await??;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact after the peer died");
    let from_peer = metric(&nodes[0], "eliop2p_p2p_pieces_received_total") * eliop2p_cache::PIECE_SIZE;
    let from_origin = origin.bytes_sent() - before;
    assert_eq!(
        from_origin + from_peer,
        16 * MIB as u64,
        "{from_peer} bytes from the peer, {from_origin} from the origin: each byte once"
    );
    for n in nodes {
        n.shutdown().await;
    }
    origin.stop().await;
    Ok(())
}

/// A bitmap goes out before the pieces queued on a connection, between two of
/// them: each hop of a piece through the swarm waits for a have-announcement, and
/// behind up to six queued pieces at the connection's share of a busy uplink it
/// waited hundreds of milliseconds (on the 16 × 200 Mbit/s bed, queues and round
/// trips of 20-45 ms made that the swarm's pace). A member asks for six pieces,
/// reads nothing for a while (its small receive buffer backs the bytes up at the
/// node), then asks for the bitmap: it comes before most of the pieces, and every
/// piece is still byte-exact. Before, all six came first. (The node has 8
/// upload slots, so that one connection may hold six of them; with the default
/// 4 it holds three, and the rest are answered busy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitmap_is_not_queued_behind_the_pieces_on_its_connection() -> anyhow::Result<()> {
    use eliop2p_p2p::codec::MessageType;
    use eliop2p_testkit::raw_p2p::{cached_chunk, frame_bytes, member, read_frame};
    use tokio::io::AsyncWriteExt;
    let origin = eliop2p_testkit::TestOrigin::start().await?;
    let l = eliop2p_testkit::p2p_listeners(1).await?.remove(0);
    let node = eliop2p_testkit::start_p2p_node(&origin, l, vec![], |cfg| {
        cfg.p2p.as_mut().expect("a p2p node").max_uploads = 8;
    })
    .await?;
    let data = eliop2p_testkit::test_data(16 * MIB, 22);
    let id = cached_chunk(&origin, &node, "lanes", data.clone()).await?;
    let (mut s, mut buf) = member(node.p2p_addr.unwrap(), Some(16 * 1024)).await?;
    const PIECE: usize = eliop2p_cache::PIECE_SIZE as usize;
    let asked: Vec<u32> = (0..6).collect();
    let request = frame_bytes(MessageType::PieceRequest, id.as_bytes(), eliop2p_p2p::proto::encode_pieces(&asked));
    s.write_all(&request).await?;
    // The node reads the six pieces and queues them for this connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(&frame_bytes(MessageType::HaveQuery, id.as_bytes(), bytes::Bytes::new())).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut before_bitmap = 0;
    let mut pieces = 0;
    let mut bitmap_seen = false;
    while pieces < asked.len() || !bitmap_seen {
        let f = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, &mut buf)).await??;
        match f.message_type {
            MessageType::PieceData => {
                let i = f.sequence_number as usize;
                assert_eq!(&f.data[..], &data[i * PIECE..(i + 1) * PIECE], "piece {i}");
                pieces += 1;
                if !bitmap_seen {
                    before_bitmap += 1;
                }
            }
            MessageType::Bitmap => bitmap_seen = true,
            other => panic!("unexpected {other:?}: {:?}", eliop2p_p2p::proto::parse_error(&f.data)),
        }
    }
    println!("pieces before the bitmap: {before_bitmap} of {}", asked.len());
    assert!(before_bitmap <= 3, "{before_bitmap} of the 6 queued pieces came before the bitmap");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
