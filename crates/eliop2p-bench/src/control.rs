//! `eliop2p-bench control-plane`: location queries a second served by one control
//! plane and by replicas sharing one Redis (issue 17's bench row), and heartbeats
//! a second (`--hot=K` hot chunk ids each): on Redis every heartbeat is a write
//! and a log entry that every replica applies; and chunk reports a second, each
//! adding a chunk of one object the whole cluster reads. The control
//! planes are `eliop2p control-plane` processes (the binary next to this one); the
//! clients run here, each on its own keep-alive connection, asking for 8 random
//! chunks of `--nodes` x `--chunks` reported holdings. On a 2-core machine the
//! clients, the replicas and Redis share the cores: read the ratio, not the rate.
//! Its flags: `USAGE` (`eliop2p-bench control-plane --help`).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use eliop2p_testkit::{TestClient, TestRedis};
use http::Method;

const TOKEN: &str = "bench-token";

const USAGE: &str = "
eliop2p-bench control-plane [--nodes=1000] [--chunks=100] [--conns=32] [--secs=5] [--hot=64] [--with-replication]

Needs redis-server on the PATH and the eliop2p binary next to this one.";

struct Replica {
    url: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(client: &TestClient, url: &str, method: Method, body: String) -> anyhow::Result<(u16, Bytes)> {
    let auth = format!("Bearer {TOKEN}");
    let r = client
        .request(method, url, &[("authorization", &auth), ("content-type", "application/json")], Bytes::from(body))
        .await?;
    Ok((r.status.as_u16(), r.body))
}

/// A control plane process, with `env` over the bench's settings.
async fn start(bin: &std::path::Path, env: &[(&str, String)]) -> anyhow::Result<Replica> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cmd = Command::new(bin);
    cmd.args(["control-plane", "--control-plane-listen", &addr.to_string()])
        .env("ELIOP2P_CONTROL_PLANE_TOKEN", TOKEN)
        // The bench's nodes report once and stay silent: keep them online.
        .env("ELIOP2P_CONTROL_PLANE_SUSPECT_AFTER", "1h")
        .env("ELIOP2P_CONTROL_PLANE_DEAD_AFTER", "2h")
        // Location queries alone: no replication passes competing for the state,
        // unless --with-replication (then every queried chunk turns hot).
        .env("ELIOP2P_REPLICATION_MIN_REPLICAS", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = Replica { url: format!("http://{addr}"), child: cmd.spawn()? };
    let client = TestClient::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(call(&client, &format!("{}/api/v1/nodes", r.url), Method::GET, String::new()).await, Ok((200, _))) {
        if Instant::now() > deadline {
            bail!("control plane {} did not serve within 10 s", r.url);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(r)
}

fn chunk(node: usize, i: usize) -> String {
    format!("{:016x}{:048x}", node, i)
}

/// Registers the nodes and reports their chunks through `url`.
async fn populate(url: &str, nodes: usize, chunks: usize) -> anyhow::Result<()> {
    let client = TestClient::new();
    for n in 0..nodes {
        let reg = format!(
            r#"{{"node_id":"node-{n}","p2p_addr":"10.{}.{}.{}:9000","capacity":{{}},"labels":{{"zone":"z{}"}}}}"#,
            n >> 16 & 255,
            n >> 8 & 255,
            n & 255,
            n % 4
        );
        let (s, b) = call(&client, &format!("{url}/api/v1/nodes"), Method::POST, reg).await?;
        if s != 200 {
            bail!("register: {s} {}", String::from_utf8_lossy(&b));
        }
        let added: Vec<String> = (0..chunks)
            .map(|i| format!(r#"{{"id":"{}","len":16777216}}"#, chunk(n, i)))
            .collect();
        let report = format!(r#"{{"full":true,"added":[{}]}}"#, added.join(","));
        let (s, b) = call(&client, &format!("{url}/api/v1/nodes/node-{n}/chunks"), Method::POST, report).await?;
        if s != 200 {
            bail!("report: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    Ok(())
}

/// Waits until `url` lists every node (a replica that follows the log).
async fn wait_for(url: &str, nodes: usize) -> anyhow::Result<()> {
    let client = TestClient::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = call(&client, &format!("{url}/api/v1/nodes"), Method::GET, String::new()).await?;
        let listed = String::from_utf8_lossy(&b).matches("\"node_id\"").count();
        if listed >= nodes {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} lists {listed} of {nodes} nodes after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the clients send.
#[derive(Clone, Copy)]
enum Work {
    /// Location queries for 8 random chunks.
    Locate,
    /// Heartbeats of random nodes, each listing this many hot chunks (every one a
    /// log entry on Redis, as nodes' heartbeats are).
    Heartbeat { hot: usize },
    /// Chunk reports of random nodes, each adding one of the 64 chunks of one
    /// object (a 1 GiB object the whole cluster reads: each chunk's holders grow
    /// to thousands), as nodes report chunks they finish during a cold read.
    Report,
}

/// `work` for `secs` from `conns` clients spread over `urls`: requests a second,
/// and the machine's CPU busy share meanwhile.
async fn load(urls: &[String], conns: usize, secs: f64, nodes: usize, chunks: usize, work: Work) -> anyhow::Result<(f64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let cpu0 = eliop2p_testkit::fanout::cpu_ticks();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let base = urls[c % urls.len()].clone();
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let client = TestClient::new();
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as usize
            };
            while Instant::now() < end {
                let asker = next() % nodes;
                // The request, and for location queries the holders the answer must name.
                let (url, method, body, holders) = match work {
                    Work::Locate => {
                        let wanted: std::collections::BTreeSet<(usize, usize)> =
                            (0..8).map(|_| (next() % nodes, next() % chunks)).collect();
                        let ids: Vec<String> = wanted.iter().map(|(n, i)| format!("\"{}\"", chunk(*n, *i))).collect();
                        // Each chunk has its one holder, which is not handed to itself.
                        let holders = wanted.iter().filter(|(n, _)| *n != asker).count();
                        (
                            format!("{base}/api/v1/chunks/locations"),
                            Method::POST,
                            format!(r#"{{"chunks":[{}],"node_id":"node-{asker}"}}"#, ids.join(",")),
                            Some(holders),
                        )
                    }
                    Work::Heartbeat { hot } => {
                        let ids: Vec<String> = (0..hot).map(|_| format!("\"{}\"", chunk(next() % nodes, next() % chunks))).collect();
                        (
                            format!("{base}/api/v1/nodes/node-{asker}/heartbeat"),
                            Method::PUT,
                            format!(r#"{{"load":1,"chunks":{chunks},"hot_chunks":[{}]}}"#, ids.join(",")),
                            None,
                        )
                    }
                    Work::Report => (
                        format!("{base}/api/v1/nodes/node-{asker}/chunks"),
                        Method::POST,
                        format!(r#"{{"added":[{{"id":"{}","len":16777216}}]}}"#, chunk(usize::MAX >> 8, next() % 64)),
                        None,
                    ),
                };
                match call(&client, &url, method, body).await {
                    Ok((200, b))
                        if holders.is_none_or(|h| String::from_utf8_lossy(&b).matches("\"node_id\"").count() == h) =>
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failed request: {other:?}");
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let busy = match (cpu0, eliop2p_testkit::fanout::cpu_ticks()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    };
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} requests failed (or location queries answered without their holders)");
    }
    Ok((done.load(Ordering::Relaxed) as f64 / elapsed, busy))
}

pub async fn run() -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("eliop2p");
    if !bin.exists() {
        bail!("build the eliop2p binary next to this one (cargo build --release -p eliop2p -p eliop2p-bench)");
    }
    let f = crate::flags::parse(2, USAGE, &["nodes", "chunks", "conns", "secs", "hot"], &["with-replication"])?;
    let nodes: usize = f.get_min("nodes", 1000, 1)?;
    let chunks: usize = f.get_min("chunks", 100, 1)?;
    let conns: usize = f.get_min("conns", 32, 1)?;
    let secs: f64 = f.get_min("secs", 5.0, 0.1)?;
    let hot: usize = f.get("hot", 64)?;
    let replication = ("ELIOP2P_REPLICATION_MIN_REPLICAS", if f.switch("with-replication") { "2" } else { "0" }.to_owned());
    println!(
        "## control plane: location queries (8 chunks each) from {conns} keep-alive clients for {secs} s; {nodes} nodes x {chunks} chunks reported; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| store | replicas | queries/s | chunks located/s | vs 1 replica on Redis | machine CPU busy |");
    println!("|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let beat = Work::Heartbeat { hot };
    let (embedded, embedded_hb, embedded_rp) = {
        let r = start(&bin, &[("ELIOP2P_CONTROL_PLANE_DATA_DIR", dir.path().display().to_string()), replication.clone()]).await?;
        populate(&r.url, nodes, chunks).await?;
        let q = load(std::slice::from_ref(&r.url), conns, secs, nodes, chunks, Work::Locate).await?;
        let hb = load(std::slice::from_ref(&r.url), conns, secs, nodes, chunks, beat).await?;
        (q, hb, load(std::slice::from_ref(&r.url), conns, secs, nodes, chunks, Work::Report).await?)
    };
    let redis = TestRedis::start().await.context("redis-server for the replicas")?;
    let env = [
        ("ELIOP2P_CONTROL_PLANE_STORE", "redis".to_owned()),
        ("ELIOP2P_CONTROL_PLANE_REDIS_URL", redis.url()),
        replication,
    ];
    let a = start(&bin, &env).await?;
    populate(&a.url, nodes, chunks).await?;
    let one = load(std::slice::from_ref(&a.url), conns, secs, nodes, chunks, Work::Locate).await?;
    let one_hb = load(std::slice::from_ref(&a.url), conns, secs, nodes, chunks, beat).await?;
    let one_rp = load(std::slice::from_ref(&a.url), conns, secs, nodes, chunks, Work::Report).await?;
    let b = start(&bin, &env).await?;
    wait_for(&b.url, nodes).await?;
    let both = [a.url.clone(), b.url.clone()];
    let two = load(&both, conns, secs, nodes, chunks, Work::Locate).await?;
    let two_hb = load(&both, conns, secs, nodes, chunks, beat).await?;
    let two_rp = load(&both, conns, secs, nodes, chunks, Work::Report).await?;
    for (store, n, (qps, busy)) in [("embedded", 1, embedded), ("redis", 1, one), ("redis", 2, two)] {
        println!(
            "| {store} | {n} | {qps:.0} | {:.0} | {:.2}x | {:.0}% |",
            qps * 8.0,
            qps / one.0,
            busy * 100.0
        );
    }
    // Heartbeats: on Redis each is a write (MULTI) and a log entry every replica
    // applies. A cluster of N nodes sends N / heartbeat_interval a second.
    println!();
    println!("## heartbeats, each listing {hot} hot chunks, from {conns} clients for {secs} s");
    println!();
    println!("| store | replicas | heartbeats/s | nodes at 2 s heartbeats | vs 1 replica on Redis | machine CPU busy |");
    println!("|---|---|---|---|---|---|");
    for (store, n, (hps, busy)) in [("embedded", 1, embedded_hb), ("redis", 1, one_hb), ("redis", 2, two_hb)] {
        println!(
            "| {store} | {n} | {hps:.0} | {:.0} | {:.2}x | {:.0}% |",
            hps * 2.0,
            hps / one_hb.0,
            busy * 100.0
        );
    }
    // Chunk reports: a node reports the chunks it finishes (batched per 100 ms),
    // so a cold read of a 1 GiB object (64 chunks) at 200 Mbit/s, about 43 s,
    // costs each node about 1.5 reports a second; each is a write on Redis.
    println!();
    println!("## chunk reports, each adding one of 64 chunks every node reads, from {conns} clients for {secs} s");
    println!();
    println!("| store | replicas | reports/s | nodes in a cold read of 1 GiB at 200 Mbit/s | vs 1 replica on Redis | machine CPU busy |");
    println!("|---|---|---|---|---|---|");
    let per_node = 64.0 / ((1u64 << 30) as f64 * 8.0 / 200e6);
    for (store, n, (rps, busy)) in [("embedded", 1, embedded_rp), ("redis", 1, one_rp), ("redis", 2, two_rp)] {
        println!(
            "| {store} | {n} | {rps:.0} | {:.0} | {:.2}x | {:.0}% |",
            rps / per_node,
            rps / one_rp.0,
            busy * 100.0
        );
    }
    Ok(())
}
