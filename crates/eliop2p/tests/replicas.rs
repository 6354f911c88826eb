//! Two `eliop2p control-plane` processes on one `redis-server` in front of four
//! hybrid nodes (issue 17): registrations and locations through either replica;
//! the planning replica killed (SIGKILL): the other plans within the lease and the
//! nodes move to it with no failed read; Redis killed and restarted: reads go on
//! through gossip, and a preheat job started before the outage finishes after it.
//! Also the process's own wiring of `rediss://` (CA and client certificate files)
//! and of Redis Sentinel.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eliop2p_testkit::{CONTROL_TOKEN, Discovery, TestClient, TestCluster, TestOrigin, TestRedis, sha256_hex, test_data};

const BIN: &str = env!("CARGO_BIN_EXE_eliop2p");

/// A control-plane process on the shared store, with the test cluster's timings.
struct Replica {
    addr: SocketAddr,
    child: Child,
}

impl Replica {
    async fn start(redis: &TestRedis) -> Self {
        Self::start_with(&[("ELIOP2P_CONTROL_PLANE_REDIS_URL", redis.url())]).await
    }

    /// A replica with these settings of its store (the URL among them).
    async fn start_with(store: &[(&str, String)]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new(BIN)
            .args(["control-plane", "--control-plane-listen", &addr.to_string()])
            .env("ELIOP2P_CONTROL_PLANE_STORE", "redis")
            .envs(store.iter().map(|(k, v)| (k, v)))
            .env("ELIOP2P_CONTROL_PLANE_TOKEN", CONTROL_TOKEN)
            .env("ELIOP2P_CONTROL_PLANE_HEARTBEAT_INTERVAL", "100ms")
            .env("ELIOP2P_CONTROL_PLANE_SUSPECT_AFTER", "600ms")
            .env("ELIOP2P_CONTROL_PLANE_DEAD_AFTER", "1200ms")
            .env("ELIOP2P_CONTROL_PLANE_PLANNING_LEASE", "1s")
            .env("ELIOP2P_REPLICATION_INTERVAL", "200ms")
            .env("ELIOP2P_REPLICATION_HOT_THRESHOLD", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let r = Self { addr, child };
        eventually("the replica serves", Duration::from_secs(10), async || {
            r.call(http::Method::GET, "/api/v1/nodes", None).await.is_some()
        })
        .await;
        r
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A JSON answer with status 2xx, else `None`.
    async fn call(&self, method: http::Method, path: &str, body: Option<serde_json::Value>) -> Option<serde_json::Value> {
        let auth = format!("Bearer {CONTROL_TOKEN}");
        let r = TestClient::new()
            .request(
                method,
                &format!("{}{path}", self.url()),
                &[("authorization", auth.as_str()), ("content-type", "application/json")],
                bytes::Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()),
            )
            .await
            .ok()?;
        (r.status.is_success()).then(|| serde_json::from_slice(&r.body).ok())?
    }

    async fn metric(&self, name: &str) -> Option<u64> {
        let r = TestClient::new().get(&format!("{}/metrics", self.url()), &[]).await.ok()?;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    async fn online(&self) -> usize {
        self.call(http::Method::GET, "/api/v1/nodes", None).await.map_or(0, |n| {
            n["nodes"].as_array().unwrap().iter().filter(|n| n["status"] == "online").count()
        })
    }

    async fn holders(&self, chunk: &str) -> usize {
        let q = serde_json::json!({"chunks": [chunk]});
        self.call(http::Method::POST, "/api/v1/chunks/locations", Some(q))
            .await
            .map_or(0, |l| l["locations"][chunk].as_array().unwrap().len())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn eventually(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn preheat(args: &[&str], endpoints: &str) -> (bool, String) {
    let mut v: Vec<String> = ["preheat"].iter().chain(args).map(|s| s.to_string()).collect();
    v.extend(["--control-plane-endpoint".into(), endpoints.into(), "--control-plane-token".into(), CONTROL_TOKEN.into()]);
    tokio::task::spawn_blocking(move || {
        // A hung CLI fails the test with its output instead of hanging it.
        let o = Command::new("timeout").arg("60").arg(BIN).args(&v).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    })
    .await
    .unwrap()
}

/// Reads `key` through every running node, byte-exact, each within 30 s.
async fn read_everywhere(cluster: &TestCluster, key: &str, data: &[u8]) {
    let client = TestClient::new();
    for i in 0..cluster.nodes.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), client.get(&cluster.url(i, "bkt", key), &[]))
            .await
            .unwrap_or_else(|_| panic!("node {i} {key}: no answer within 30 s"))
            .unwrap();
        assert_eq!(r.status, 200, "node {i} {key}: {:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(sha256_hex(&r.body), sha256_hex(data), "node {i} {key}: wrong bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_killed_planner_and_a_redis_outage() {
    let mut redis = TestRedis::start().await.unwrap();
    let mut a = Replica::start(&redis).await;
    eventually("the first replica plans", Duration::from_secs(5), async || {
        a.metric("eliop2p_control_planning").await == Some(1)
    })
    .await;
    let b = Replica::start(&redis).await;
    assert_eq!(b.metric("eliop2p_control_planning").await, Some(0));

    let (origin, obj) = TestOrigin::with_object("bkt", "obj", 20 << 20, 1).await.unwrap();
    let hot = test_data(3 << 20, 2);
    origin.put("bkt", "hot", hot.clone()).await.unwrap();
    for i in 0..2 {
        origin.put("bkt", &format!("pre/{i}"), test_data(12 << 20, 10 + i)).await.unwrap();
        origin.put("bkt", &format!("slow/{i}"), test_data(12 << 20, 20 + i)).await.unwrap();
    }
    let endpoints = vec![a.url(), b.url()];
    let mut cluster = TestCluster::start_with(
        &origin,
        4,
        Discovery::Hybrid,
        |_, cfg| cfg.control_plane.as_mut().expect("hybrid").endpoints = endpoints.clone(),
        |_| {},
    )
    .await
    .unwrap();
    // The cluster's own control plane is not used.
    cluster.stop_control_plane().await;
    eventually("four nodes online, seen through the second replica", Duration::from_secs(10), async || {
        b.online().await == 4
    })
    .await;
    let client = TestClient::new();
    let r = client.get(&cluster.url(0, "bkt", "obj"), &[]).await.unwrap();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&obj));
    let etag = r.header("etag").unwrap().to_owned();
    let c0 = eliop2p_core::ChunkId::derive(&origin.endpoint, &eliop2p_core::ObjectKey::new("bkt", "obj"), &eliop2p_core::ETag::new(&etag), 16 << 20, 0).to_hex();
    eventually("node 0's chunk located through the second replica", Duration::from_secs(5), async || {
        b.holders(&c0).await >= 1
    })
    .await;

    // SIGKILL the planner: reads go on, the nodes move, b plans within the lease.
    a.kill();
    read_everywhere(&cluster, "obj", &obj).await;
    eventually("the second replica plans within the 1 s lease", Duration::from_secs(3), async || {
        b.metric("eliop2p_control_planning").await == Some(1)
    })
    .await;
    eventually("every node registered at the second replica", Duration::from_secs(10), async || {
        b.online().await == 4
    })
    .await;
    read_everywhere(&cluster, "obj", &obj).await;
    // Replication: node 0 reads `hot` again and again; b has a second copy made.
    let r = client.get(&cluster.url(0, "bkt", "hot"), &[]).await.unwrap();
    let hot_etag = r.header("etag").unwrap().to_owned();
    let h0 = eliop2p_core::ChunkId::derive(&origin.endpoint, &eliop2p_core::ObjectKey::new("bkt", "hot"), &eliop2p_core::ETag::new(&hot_etag), 16 << 20, 0).to_hex();
    eventually("a hot chunk replicated by the surviving replica", Duration::from_secs(15), async || {
        let r = client.get(&cluster.url(0, "bkt", "hot"), &[]).await.unwrap();
        assert_eq!(sha256_hex(&r.body), sha256_hex(&hot));
        b.holders(&h0).await >= 2
    })
    .await;
    // Preheat through the endpoint list, the dead replica first.
    let list = format!("{}, {}", endpoints[0], endpoints[1]);
    let (ok, out) = preheat(&["s3://bkt/pre/", "--wait"], &list).await;
    assert!(ok && out.contains("succeeded: 4/4 nodes done, 8/8 objects"), "{out}");

    // A slow preheat job, then Redis down: reads keep succeeding (gossip); the
    // job finishes after Redis returns.
    origin.set_rate_limit(8 << 20);
    let (ok, out) = preheat(&["s3://bkt/slow/"], &list).await;
    assert!(ok, "{out}");
    let id: u64 = out
        .split("preheat job ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("job id printed: {out}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    eventually("the replica answers 503 without redis", Duration::from_secs(5), async || {
        b.metric("eliop2p_control_store_available").await == Some(0)
    })
    .await;
    origin.set_rate_limit(0);
    for _ in 0..3 {
        read_everywhere(&cluster, "obj", &obj).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    redis.restart(true).await.unwrap();
    eventually("the replica serves again", Duration::from_secs(10), async || {
        b.metric("eliop2p_control_store_available").await == Some(1)
    })
    .await;
    let (ok, out) = preheat(&["status", &id.to_string(), "--wait"], &list).await;
    assert!(ok && out.contains("succeeded: 4/4 nodes done, 8/8 objects"), "{out}");
    eventually("all four nodes back online at the replica", Duration::from_secs(10), async || {
        b.online().await == 4
    })
    .await;
    read_everywhere(&cluster, "obj", &obj).await;
    cluster.shutdown().await;
    origin.stop().await;
}

/// The `control-plane` process reads its Redis TLS files and its sentinels from
/// the configuration: a replica on a TLS-only Redis that requires client
/// certificates, and a replica that finds its master through a sentinel (the
/// first one listed is down), each serve and share what the other wrote through
/// its own path to the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_processes_reach_redis_over_tls_and_through_sentinels() {
    let ca = eliop2p_testkit::TestCa::new().unwrap();
    let tls = TestRedis::start_tls(&ca).await.unwrap();
    let client = ca.node_cert("control-plane", false).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let on_tls = Replica::start_with(&[
        ("ELIOP2P_CONTROL_PLANE_REDIS_URL", tls.url()),
        ("ELIOP2P_CONTROL_PLANE_REDIS_CA_FILE", path(&ca.ca_pem)),
        ("ELIOP2P_CONTROL_PLANE_REDIS_TLS_CERT", path(&client.cert)),
        ("ELIOP2P_CONTROL_PLANE_REDIS_TLS_KEY", path(&client.key)),
    ])
    .await;
    let reg = serde_json::json!({"node_id": "n1", "p2p_addr": "10.0.0.1:9000", "capacity": {}, "labels": {}});
    assert!(on_tls.call(http::Method::POST, "/api/v1/nodes", Some(reg.clone())).await.is_some());
    assert_eq!(on_tls.online().await, 1);

    let master = TestRedis::start().await.unwrap();
    let sentinel = TestRedis::start_sentinel("cp", &master, Duration::from_secs(5)).await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let a = Replica::start_with(&[
        ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "redis://cp/0".into()),
        ("ELIOP2P_CONTROL_PLANE_REDIS_SENTINELS", format!("{dead},{}", sentinel.addr())),
    ])
    .await;
    let b = Replica::start(&master).await;
    assert!(a.call(http::Method::POST, "/api/v1/nodes", Some(reg)).await.is_some());
    eventually("n1, registered through the sentinel's master, listed by a replica on the master's address", Duration::from_secs(5), async || {
        b.online().await == 1
    })
    .await;
}
