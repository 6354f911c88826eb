//! Clusters of in-process nodes on loopback with a real control plane and the real
//! S3 origin: discovery in every mode, reads served by peers without the origin,
//! failure detection, the control plane going away and coming back, cluster-wide
//! single flight under a thundering herd, and replication commands.

use std::time::Duration;

use eliop2p_core::{ChunkId, ETag, ObjectKey};
use eliop2p_testkit::{Discovery, TestClient, TestCluster, TestOrigin, sha256_hex, test_data};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use http::StatusCode;

const MIB: usize = 1 << 20;

async fn get_ok(client: &TestClient, url: &str, expected: &[u8]) -> eliop2p_testkit::TestResponse {
    let r = client.get(url, &[]).await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{url}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        sha256_hex(&r.body),
        sha256_hex(expected),
        "{url}: wrong bytes"
    );
    r
}

/// Waits until `cond` holds, polling.
async fn eventually(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_in_every_mode_read_from_each_other() {
    for mode in [
        Discovery::Gossip,
        Discovery::ControlPlane,
        Discovery::Hybrid,
    ] {
        let (origin, data) = TestOrigin::with_object("bkt", "data/obj.bin", 40 * MIB, 1).await.unwrap();
        let cluster = TestCluster::start(&origin, 5, mode).await.unwrap();
        let client = TestClient::new();
        // A cold read through node 0: one origin GET per chunk, whoever owns it.
        get_ok(&client, &cluster.url(0, "bkt", "data/obj.bin"), &data).await;
        let cold_gets = origin.gets_of("bkt", "data/obj.bin").len();
        assert_eq!(cold_gets, 3, "{mode:?}: 40 MiB = 3 chunks, each read once");
        // Announcements and reports land within a round or two.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Every other node reads it from peers: the origin sees nothing more.
        for i in 1..5 {
            let r = get_ok(&client, &cluster.url(i, "bkt", "data/obj.bin"), &data).await;
            let src = r.header("x-cache-source").unwrap_or_default();
            assert_ne!(src, "disk", "{mode:?}: node {i}");
            let from_origin = cluster.node(i).metrics.bytes_origin.load(Relaxed);
            assert_eq!(from_origin, 0, "{mode:?}: node {i} served origin bytes");
        }
        assert_eq!(
            origin.gets_of("bkt", "data/obj.bin").len(),
            cold_gets,
            "{mode:?}: the origin was asked again"
        );
        cluster.shutdown().await;
        origin.stop().await;
    }
}

fn chunk_ids(
    origin: &TestOrigin,
    bucket: &str,
    key: &str,
    etag: &str,
    size: usize,
) -> Vec<ChunkId> {
    let chunk = 16 * MIB;
    (0..size.div_ceil(chunk) as u64)
        .map(|i| {
            ChunkId::derive(
                &origin.endpoint,
                &ObjectKey::new(bucket, key),
                &ETag::new(etag),
                chunk as u64,
                i,
            )
        })
        .collect()
}

/// How many of `ids` node `i` is told `holder` holds.
async fn offers(cluster: &TestCluster, i: usize, ids: &[ChunkId], holder: SocketAddr) -> usize {
    let p2p = cluster.node(i).p2p.as_ref().unwrap();
    let mut n = 0;
    for id in ids {
        n += usize::from(p2p.locate(*id).await.contains(&holder));
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_stops_being_offered_and_a_leaving_node_at_once() {
    let (origin, data) = TestOrigin::with_object("bkt", "k", 40 * MIB, 2).await.unwrap();
    let mut cluster = TestCluster::start(&origin, 5, Discovery::Gossip)
        .await
        .unwrap();
    let client = TestClient::new();
    let r = get_ok(&client, &cluster.url(1, "bkt", "k"), &data).await;
    let ids = chunk_ids(&origin, "bkt", "k", r.header("etag").unwrap(), data.len());
    let victim = cluster.node(1).p2p_addr.unwrap();
    // Node 1 is offered as a holder of every chunk.
    eventually("node 1 offered", Duration::from_secs(3), async || {
        offers(&cluster, 0, &ids, victim).await == ids.len()
    })
    .await;

    // Crash: no goodbye. Within the detection bound nobody offers it.
    cluster.kill(1);
    let killed = tokio::time::Instant::now();
    let bound = Duration::from_millis(eliop2p_testkit::test_gossip_config().detection_bound_ms(5));
    eventually(
        "the dead node withdrawn",
        bound + Duration::from_secs(2),
        async || {
            for i in [0, 2, 3, 4] {
                if offers(&cluster, i, &ids, victim).await > 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let took = killed.elapsed();
    println!("killed node withdrawn after {took:?} (bound {bound:?})");
    assert!(
        took <= bound + Duration::from_millis(500),
        "took {took:?}, bound {bound:?}"
    );
    // Reads keep working, byte-exact.
    get_ok(&client, &cluster.url(3, "bkt", "k"), &data).await;

    // A graceful leave is seen within a round or two.
    let leaver = cluster.nodes[4].take().unwrap();
    let leaver_id = leaver.p2p.as_ref().unwrap().me().unwrap().id;
    assert!(leaver.shutdown().await);
    eventually("the leave seen", Duration::from_millis(300), async || {
        [0, 2, 3].iter().all(|i| {
            cluster
                .node(*i)
                .p2p
                .as_ref()
                .unwrap()
                .members()
                .iter()
                .all(|(m, s)| m.id != leaver_id || *s == eliop2p_p2p::Status::Left)
        })
    })
    .await;
    cluster.shutdown().await;
    origin.stop().await;
}

async fn cp_call(
    cluster: &TestCluster,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    cp_call_at(cluster.control_addr.unwrap(), method, path, body).await
}

async fn cp_call_at(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let url = format!("http://{addr}{path}");
    let auth = format!("Bearer {}", eliop2p_testkit::CONTROL_TOKEN);
    let r = TestClient::new()
        .request(
            method,
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.map(|b| b.to_string()).unwrap_or_default().into(),
        )
        .await
        .ok()?;
    serde_json::from_slice(&r.body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_survives_the_control_plane_and_resyncs_when_it_returns() {
    let origin = TestOrigin::start().await.unwrap();
    origin.create_bucket("bkt").await.unwrap();
    let a = test_data(20 * MIB, 3);
    let b = test_data(20 * MIB, 4);
    origin.put("bkt", "a", a.clone()).await.unwrap();
    origin.put("bkt", "b", b.clone()).await.unwrap();
    let mut cluster = TestCluster::start(&origin, 4, Discovery::Hybrid)
        .await
        .unwrap();
    let client = TestClient::new();
    let r = get_ok(&client, &cluster.url(0, "bkt", "a"), &a).await;
    let ids = chunk_ids(&origin, "bkt", "a", r.header("etag").unwrap(), a.len());
    let gets_a = origin.gets_of("bkt", "a").len();
    // The reports reach the control plane (within a flush interval) before it stops.
    let q = serde_json::json!({"chunks": [ids[0].to_hex()]});
    eventually("chunk 0 reported", Duration::from_secs(3), async || {
        cp_call(
            &cluster,
            http::Method::POST,
            "/api/v1/chunks/locations",
            Some(q.clone()),
        )
        .await
        .is_some_and(|l| {
            !l["locations"][ids[0].to_hex()]
                .as_array()
                .unwrap()
                .is_empty()
        })
    })
    .await;

    cluster.stop_control_plane().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Reads keep succeeding: cached objects from peers, new ones from the origin.
    get_ok(&client, &cluster.url(2, "bkt", "a"), &a).await;
    assert_eq!(origin.gets_of("bkt", "a").len(), gets_a, "peers served a");
    assert_eq!(cluster.node(2).metrics.bytes_origin.load(Relaxed), 0);
    get_ok(&client, &cluster.url(3, "bkt", "b"), &b).await;
    get_ok(&client, &cluster.url(1, "bkt", "b"), &b).await;
    assert_eq!(origin.gets_of("bkt", "b").len(), 2, "b: one read per chunk");

    // Back: state from the store at once, then fresh reports from every node.
    cluster.restart_control_plane().await.unwrap();
    let nodes = cp_call(&cluster, http::Method::GET, "/api/v1/nodes", None)
        .await
        .unwrap();
    assert_eq!(
        nodes["nodes"].as_array().unwrap().len(),
        4,
        "registrations restored"
    );
    let restored = cp_call(
        &cluster,
        http::Method::POST,
        "/api/v1/chunks/locations",
        Some(q.clone()),
    )
    .await
    .unwrap();
    assert!(
        !restored["locations"][ids[0].to_hex()]
            .as_array()
            .unwrap()
            .is_empty(),
        "holdings restored from the store: {restored}"
    );
    eventually("fresh reports", Duration::from_secs(5), async || {
        let nodes = cp_call(&cluster, http::Method::GET, "/api/v1/nodes", None).await;
        let Some(nodes) = nodes else { return false };
        let online = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "online")
            .count();
        let l = cp_call(
            &cluster,
            http::Method::POST,
            "/api/v1/chunks/locations",
            Some(q.clone()),
        )
        .await;
        // a's chunk 0 is now held by node 0, its owner and node 2.
        online == 4
            && l.is_some_and(|l| l["locations"][ids[0].to_hex()].as_array().unwrap().len() >= 2)
    })
    .await;
    cluster.shutdown().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_chunks_are_replicated_by_command() {
    let (origin, data) = TestOrigin::with_object("bkt", "hot", 8 * MIB, 5).await.unwrap();
    let cluster = TestCluster::start_with(
        &origin,
        3,
        Discovery::ControlPlane,
        |_, _| {},
        |c| {
            c.replication.min_replicas = 3;
            c.replication.hot_threshold = 1;
        },
    )
    .await
    .unwrap();
    let client = TestClient::new();
    let r = get_ok(&client, &cluster.url(0, "bkt", "hot"), &data).await;
    let id = chunk_ids(&origin, "bkt", "hot", r.header("etag").unwrap(), data.len())[0];
    // Read often, the chunk turns Hot on node 0, whose heartbeats report it. The
    // control plane sees the demand and too few replicas: the others are told to
    // fetch it from peers.
    for _ in 0..10 {
        get_ok(&client, &cluster.url(0, "bkt", "hot"), &data).await;
    }
    eventually("three replicas", Duration::from_secs(10), async || {
        (0..3).all(|i| cluster.node(i).cache.is_cached(&id).is_some())
    })
    .await;
    let commands: u64 = (0..3)
        .map(|i| cluster.node(i).metrics.replication_commands.load(Relaxed))
        .sum();
    assert!(commands >= 1, "replicas came from commands");
    assert_eq!(
        origin.gets_of("bkt", "hot").len(),
        1,
        "replicas came from peers"
    );
    cluster.shutdown().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thundering_herd_costs_the_origin_one_read() {
    let size = 256 * MIB;
    let (origin, data) = TestOrigin::with_object("bkt", "herd.bin", size, 6).await.unwrap();
    let cluster = TestCluster::start(&origin, 8, Discovery::Gossip)
        .await
        .unwrap();
    let before = origin.bytes_sent();
    let client = TestClient::new();
    let reads = (0..8).map(|i| {
        let (client, url) = (client.clone(), cluster.url(i, "bkt", "herd.bin"));
        tokio::spawn(async move { client.get(&url, &[]).await.unwrap() })
    });
    let expected = sha256_hex(&data);
    for (i, r) in reads.enumerate() {
        let r = r.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "node {i}");
        assert_eq!(sha256_hex(&r.body), expected, "node {i}: wrong bytes");
    }
    let origin_bytes = origin.bytes_sent() - before;
    println!(
        "8 nodes x {} MiB at once: origin sent {:.3}x the object",
        size / MIB,
        origin_bytes as f64 / size as f64
    );
    assert!(
        origin_bytes as f64 <= 1.05 * size as f64,
        "origin sent {origin_bytes} bytes for a {size}-byte object"
    );
    cluster.shutdown().await;
    origin.stop().await;
}

/// The control plane's count of location queries, from its metrics.
async fn location_queries(cluster: &TestCluster) -> u64 {
    control_metric(cluster, "eliop2p_control_location_queries_total ").await.expect("a location query count")
}

/// A series of the control plane's metrics (`name` with its labels), 0 if absent.
async fn control_metric(cluster: &TestCluster, series: &str) -> Option<u64> {
    let url = format!("http://{}/metrics", cluster.control_addr.unwrap());
    let auth = format!("Bearer {}", eliop2p_testkit::CONTROL_TOKEN);
    let r = TestClient::new()
        .get(&url, &[("authorization", &auth)])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&r.body);
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// Nodes refresh their members at every heartbeat with the tag of the last
/// list: the control plane answers a bodiless 304 while nobody joins, leaves or
/// changes status, and the members stay live all the same (in control-plane
/// mode a member the control plane stops confirming is taken for dead). Before,
/// every refresh got the whole list (no 304 at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refresh_members_by_tag_and_keep_them_on_304() {
    let (origin, data) = TestOrigin::with_object("bkt", "m", 4 * MIB, 12).await.unwrap();
    let cluster = TestCluster::start(&origin, 3, Discovery::ControlPlane).await.unwrap();
    let client = TestClient::new();
    get_ok(&client, &cluster.url(0, "bkt", "m"), &data).await;
    // Heartbeats every 100 ms; members not confirmed for 1.2 s are dead.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let not_modified = control_metric(&cluster, "eliop2p_control_requests_total{method=\"GET\",status=\"304\"} ").await.unwrap_or(0);
    assert!(not_modified >= 30, "{not_modified} node lists answered 304 in 3 s of 3 nodes' heartbeats");
    for i in [1, 2] {
        get_ok(&client, &cluster.url(i, "bkt", "m"), &data).await;
        assert_eq!(cluster.node(i).metrics.bytes_origin.load(Relaxed), 0, "node {i} read the origin: its members were lost");
    }
    cluster.shutdown().await;
    origin.stop().await;
}

/// In hybrid mode a download's routine re-locates (every 150 ms while it knows
/// few peers, every second after) ask the chunk's tracker, not the control plane:
/// at every re-locate of every download, 5,000 nodes asked the control plane some
/// 25,000 times a second. It is asked when the download starts, when pieces lack a
/// source, and every 5 s at most otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_download_asks_the_control_plane_once_not_at_every_relocate() {
    let (origin, data) = TestOrigin::with_object("bkt", "slow", 16 * MIB, 9).await.unwrap();
    let cluster = TestCluster::start_with(
        &origin,
        3,
        Discovery::Hybrid,
        |_, cfg| cfg.p2p.as_mut().unwrap().max_upload_rate = 4 * MIB as u64,
        |_| {},
    )
    .await
    .unwrap();
    let client = TestClient::new();
    let r = get_ok(&client, &cluster.url(0, "bkt", "slow"), &data).await;
    let id = chunk_ids(&origin, "bkt", "slow", r.header("etag").unwrap(), data.len())[0];
    // The node that holds nothing yet: node 0 and the chunk's owner hold it.
    let q = serde_json::json!({"chunks": [id.to_hex()]});
    let mut holders: Vec<String> = Vec::new();
    eventually("the chunk reported", Duration::from_secs(5), async || {
        let l = cp_call(&cluster, http::Method::POST, "/api/v1/chunks/locations", Some(q.clone())).await;
        holders = l.map_or_else(Vec::new, |l| {
            l["locations"][id.to_hex()]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["node_id"].as_str().unwrap().to_owned())
                .collect()
        });
        holders.len() == 2 || holders.len() == 1 && holders[0] != "node-0"
    })
    .await;
    let reader = (1..3)
        .find(|i| !holders.contains(&format!("node-{i}")))
        .unwrap();
    let before = location_queries(&cluster).await;
    let t = std::time::Instant::now();
    get_ok(&client, &cluster.url(reader, "bkt", "slow"), &data).await;
    let took = t.elapsed();
    let asked = location_queries(&cluster).await - before;
    println!("node {reader}: {:.1} s from peers at 4 MiB/s each, {asked} location queries", took.as_secs_f64());
    assert_eq!(cluster.node(reader).metrics.bytes_origin.load(Relaxed), 0);
    assert!(took >= Duration::from_millis(1500), "the download took {took:?}: too fast to re-locate");
    let allowed = 3 + took.as_secs() / 5;
    assert!(
        asked <= allowed,
        "{asked} location queries in {took:?} (at most {allowed}): the control plane was asked at every re-locate"
    );
    cluster.shutdown().await;
    origin.stop().await;
}

/// Nodes told of two control-plane replicas (`control_plane.endpoint` lists both;
/// here each has its own store, a standby) use the first; when it stops, every
/// node moves to the other, registers there with a full chunk report, and reads
/// keep being served by peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_move_to_the_next_control_plane_replica_when_theirs_stops() {
    let (origin, a) = TestOrigin::with_object("bkt", "a", 20 * MIB, 6).await.unwrap();
    let standby_dir = tempfile::tempdir().unwrap();
    let standby = TestCluster::spawn_control_plane(standby_dir.path()).await.unwrap();
    let standby_url = format!("http://{}", standby.addr);
    let mut cluster = TestCluster::start_with(
        &origin,
        3,
        Discovery::Hybrid,
        |_, cfg| {
            let cp = cfg.control_plane.as_mut().expect("hybrid nodes have a control plane");
            cp.endpoints.push(standby_url.clone());
        },
        |_| {},
    )
    .await
    .unwrap();
    let listed = async |addr| {
        let nodes = cp_call_at(addr, http::Method::GET, "/api/v1/nodes", None).await;
        nodes.map_or(0, |n| {
            n["nodes"].as_array().unwrap().iter().filter(|n| n["status"] == "online").count()
        })
    };
    assert_eq!(listed(cluster.control_addr.unwrap()).await, 3, "the first replica is used");
    assert_eq!(listed(standby.addr).await, 0, "the second is not, while the first answers");
    let client = TestClient::new();
    let r = get_ok(&client, &cluster.url(0, "bkt", "a"), &a).await;
    let ids = chunk_ids(&origin, "bkt", "a", r.header("etag").unwrap(), a.len());

    cluster.stop_control_plane().await;
    let q = serde_json::json!({"chunks": [ids[0].to_hex()]});
    eventually("every node at the standby, chunk 0 reported", Duration::from_secs(10), async || {
        let l = cp_call_at(standby.addr, http::Method::POST, "/api/v1/chunks/locations", Some(q.clone())).await;
        listed(standby.addr).await == 3
            && l.is_some_and(|l| !l["locations"][ids[0].to_hex()].as_array().unwrap().is_empty())
    })
    .await;
    // Peers serve the object through the standby's locations: no origin read.
    let gets = origin.gets_of("bkt", "a").len();
    get_ok(&client, &cluster.url(2, "bkt", "a"), &a).await;
    assert_eq!(origin.gets_of("bkt", "a").len(), gets, "peers served a");
    assert_eq!(cluster.node(2).metrics.bytes_origin.load(Relaxed), 0);
    cluster.shutdown().await;
    standby.shutdown().await;
    origin.stop().await;
}

/// Two gossip nodes over IPv6 loopback (P2P, proxy and admin on `[::1]`): the
/// second reads from the first with no origin byte (issue 18, item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_ipv6_loopback_read_from_each_other() {
    let (origin, a) = TestOrigin::with_object("bkt", "v6", 20 * MIB, 61).await.unwrap();
    let cluster = TestCluster::start_ipv6(&origin, 2).await.unwrap();
    for i in 0..2 {
        assert!(cluster.node(i).proxy_addr.is_ipv6());
        let p2p = cluster.node(i).p2p.as_ref().unwrap().me().unwrap().p2p;
        assert!(p2p.is_ipv6(), "{p2p}");
    }
    let client = TestClient::new();
    let url = |i: usize| format!("http://{}/bkt/v6", cluster.node(i).proxy_addr);
    get_ok(&client, &url(0), &a).await;
    let gets = origin.gets_of("bkt", "v6").len();
    eventually("node 1 knows node 0's chunks", Duration::from_secs(10), async || {
        cluster.node(1).p2p.as_ref().unwrap().members().iter().any(|(_, s)| *s == eliop2p_p2p::Status::Alive)
    })
    .await;
    get_ok(&client, &url(1), &a).await;
    assert_eq!(origin.gets_of("bkt", "v6").len(), gets, "node 1 read from node 0");
    assert_eq!(cluster.node(1).metrics.bytes_origin.load(Relaxed), 0);
    cluster.shutdown().await;
    origin.stop().await;
}



/// One object of `len` bytes in one chunk, and 3 gossip nodes that declare a
/// crashed member dead only after 30 s (so that waiting for it would show), with
/// their ranks for the chunk (owner, backup, third) and each rank's upload cap
/// (0: none).
async fn crash_bed(len: usize, seed: u64, caps: [u64; 3]) -> (TestOrigin, bytes::Bytes, ChunkId, TestCluster, [usize; 3]) {
    let origin = TestOrigin::start().await.unwrap();
    origin.create_bucket("bkt").await.unwrap();
    let data = test_data(len, seed);
    let etag = origin.put("bkt", "obj", data.clone()).await.unwrap();
    let id = chunk_ids(&origin, "bkt", "obj", &etag, data.len())[0];
    let hashes: Vec<u64> = (0..3).map(|i| eliop2p_cluster::rendezvous::node_hash(&format!("node-{i}"))).collect();
    let rank = eliop2p_cluster::rendezvous::rank(&id, &hashes);
    let ranks = [rank[0], rank[1], rank[2]];
    let cluster = TestCluster::start_with(
        &origin,
        3,
        Discovery::Gossip,
        move |i, c| {
            let p = c.p2p.as_mut().unwrap();
            let g = &mut p.cluster.as_mut().unwrap().gossip_cfg;
            g.suspect_after_ms = 15_000;
            g.dead_after_ms = 30_000;
            let r = ranks.iter().position(|&n| n == i).unwrap();
            if caps[r] > 0 {
                p.max_upload_rate = caps[r];
            }
        },
        |_| {},
    )
    .await
    .unwrap();
    cluster.wait_converged(Duration::from_secs(10)).await.unwrap();
    (origin, data, id, cluster, ranks)
}

/// The owner of a chunk crashes once it holds the whole chunk but before its
/// readers do. The crashed owner stays "live" in the others' view until it is
/// declared dead (30 s here, so that waiting would show), and it is listed as a
/// complete holder; its backup must still take the chunk over (read the rest
/// from the origin) as soon as the owner does not answer it, and the third node
/// then reads from the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_takes_over_a_chunk_whose_crashed_owner_held_it_whole() {
    // The owner's upload is slow enough that the readers are mid-chunk when it crashes.
    let (origin, data, _id, mut cluster, [owner, backup, third]) = crash_bed(16 * MIB, 11, [4 * MIB as u64, 0, 0]).await;
    let client = TestClient::new();
    get_ok(&client, &cluster.url(owner, "bkt", "obj"), &data).await;
    let gets = origin.gets_of("bkt", "obj").len();
    let sent = origin.bytes_sent();
    // The holders' index learns of the owner's copy within a gossip round.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let reads: Vec<_> = [backup, third]
        .into_iter()
        .map(|i| {
            let (client, url) = (client.clone(), cluster.url(i, "bkt", "obj"));
            tokio::spawn(async move { client.get(&url, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(owner);
    for r in reads {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact after the owner crashed");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "the reads took {took:?}: they waited for the crashed owner to be declared dead");
    // The backup reads the pieces nobody delivered, one ranged GET per run of
    // them (at most 32 in a chunk of 64 pieces), and at most one more GET.
    let more = origin.gets_of("bkt", "obj").len() - gets;
    assert!(more <= 33, "{more} origin GETs after the crash");
    let more_bytes = origin.bytes_sent() - sent;
    assert!(more_bytes <= 16 * MIB as u64, "{more_bytes} origin bytes after the crash: more than the chunk");
    cluster.shutdown().await;
    origin.stop().await;
}

/// The pieces of the first chunk that the `Range` of an origin GET covers.
fn pieces_of_range(range: &str) -> std::ops::RangeInclusive<u64> {
    use eliop2p_cache::disk::PIECE_SIZE;
    let (a, b) = range.trim_start_matches("bytes=").split_once('-').expect("a closed range");
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    a / PIECE_SIZE..=b / PIECE_SIZE
}

/// The same crash, while two nodes are mid-chunk and one of them (its upload
/// slow) holds pieces the other, the backup, lacks. Taking the chunk over, the
/// backup reads from the origin only pieces neither holds, and takes the third
/// node's from it: before, it read every piece it lacked from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_a_chunk_over_the_backup_reads_from_the_origin_only_what_no_peer_has() {
    // 32 pieces: each run of missing ones is read on its own, so no read
    // spans a held piece. The third node keeps most of what it gets
    // from the owner to itself (its upload is slow).
    let (origin, data, id, mut cluster, [owner, backup, third]) =
        crash_bed(8 * MIB, 12, [2 * MIB as u64, 0, MIB as u64 / 2]).await;
    let client = TestClient::new();
    get_ok(&client, &cluster.url(owner, "bkt", "obj"), &data).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = |i: usize| {
        let (client, url) = (client.clone(), cluster.url(i, "bkt", "obj"));
        tokio::spawn(async move { client.get(&url, &[]).await })
    };
    let held = |i: usize| match cluster.node(i).cache.peek(&id) {
        Some(eliop2p_cache::Held::Filling(f)) => f.have_pieces(),
        other => panic!("node {i} is not mid-chunk: {:?}", other.is_some()),
    };
    // The third node starts a second ahead, so it holds pieces the backup lacks
    // when the backup starts; the backup knows of them by the crash, half a
    // second later (the third's announcements queue behind its slow uploads).
    let mut reads = vec![read(third)];
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let at_third = held(third);
    reads.push(read(backup));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_backup = held(backup);
    let gets = origin.gets_of("bkt", "obj").len();
    cluster.kill(owner);
    for r in reads {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "byte-exact after the owner crashed");
    }
    let only_third: Vec<u64> = (0..at_third.len() as u64).filter(|&p| at_third[p as usize] && !at_backup[p as usize]).collect();
    let read: Vec<String> = origin.gets_of("bkt", "obj")[gets..].iter().filter_map(|g| g.range.clone()).collect();
    eprintln!("third held {only_third:?} that the backup lacked; origin ranges after the crash: {read:?}");
    assert!(!only_third.is_empty(), "the test needs pieces only the third node held");
    for r in &read {
        let covered = pieces_of_range(r);
        assert!(
            !only_third.iter().any(|p| covered.contains(p)),
            "origin GET {r} after the crash covers pieces {only_third:?}, which the third node held"
        );
    }
    cluster.shutdown().await;
    origin.stop().await;
}
