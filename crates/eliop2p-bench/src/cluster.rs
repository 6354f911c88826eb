//! Cluster scenario: N nodes (separate `eliop2p node` processes when the binary
//! sits next to this one, in-process otherwise) all read the same cold object at
//! once through their own node, with the origin limited to 200 MB/s as one S3 stream
//! is; against N clients reading the origin directly.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use eliop2p_origin::OriginClient;
use eliop2p_testkit::{ACCESS_KEY, Discovery, SECRET_KEY, TestCluster, TestOrigin};

use crate::MIB;

const ORIGIN_RATE: u64 = 200_000_000;

struct Node {
    proxy: SocketAddr,
    admin: SocketAddr,
}

/// Node processes, stopped (SIGTERM, then waited for) when dropped, also when the
/// bench fails half-way.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

enum Running {
    Processes(Children),
    InProcess(TestCluster),
}

fn parse_line(line: &str, marker: &str) -> anyhow::Result<SocketAddr> {
    line.split(marker)
        .nth(1)
        .and_then(|s| s.split([',', '\n']).next())
        .map(|s| s.trim().trim_start_matches("http://"))
        .with_context(|| format!("no {marker:?} in {line:?}"))?
        .parse()
        .context("address")
}

fn spawn_process(
    bin: &std::path::Path,
    origin: &TestOrigin,
    size: usize,
    id: usize,
    seed: Option<SocketAddr>,
) -> anyhow::Result<(Child, Node, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "node",
        "--proxy-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--p2p-listen",
        "127.0.0.1:0",
    ])
    .env("ELIOP2P_ORIGIN_ENDPOINT", &origin.endpoint)
    .env("ELIOP2P_ORIGIN_ACCESS_KEY", ACCESS_KEY)
    .env("ELIOP2P_ORIGIN_SECRET_KEY", SECRET_KEY)
    .env("ELIOP2P_CACHE_MEMORY_SIZE", (2 * size).to_string())
    .env("ELIOP2P_P2P_CLUSTER_SECRET", "bench-secret")
    .env("ELIOP2P_NODE_ID", format!("bench-{id}"))
    .env("ELIOP2P_DISCOVERY_MODE", "gossip")
    .env("ELIOP2P_DISCOVERY_GOSSIP_INTERVAL", "200ms")
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(s) = seed {
        cmd.env("ELIOP2P_DISCOVERY_SEEDS", s.to_string());
    }
    let mut child = cmd.spawn().context("spawning eliop2p node")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("piped")),
        &mut line,
    )?;
    let node = Node {
        proxy: parse_line(&line, "proxy on ")?,
        admin: parse_line(&line, "admin on ")?,
    };
    let p2p = parse_line(&line, "p2p on ")?;
    Ok((child, node, p2p))
}

async fn metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let r = eliop2p_testkit::TestClient::new()
        .get(&format!("http://{admin}/metrics"), &[])
        .await?;
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// GET through a node, hashing the body.
async fn get_hashed(addr: SocketAddr, path: &str) -> anyhow::Result<(String, u64)> {
    let mut send = crate::connect(addr).await?;
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("GET {path}: {}", resp.status());
    }
    eliop2p_testkit::fanout::hash_body(resp.into_body(), None).await
}

pub async fn run(origin: &TestOrigin, size: usize, counts: &[usize]) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("eliop2p");
    let processes = bin.exists();
    println!();
    println!(
        "## cluster: N nodes read one cold {} MiB object at once, origin limited to {} MB/s ({})",
        size / MIB,
        ORIGIN_RATE / 1_000_000,
        if processes {
            "nodes are separate processes"
        } else {
            "nodes in this process; build the eliop2p binary next to this one for processes"
        }
    );
    println!();
    println!(
        "| N | direct: all done | direct origin bytes | eliop2p: all done | origin bytes | peer bytes | speedup |"
    );
    println!("|---|---|---|---|---|---|---|");
    let direct = OriginClient::new(origin.origin_config())?;
    for &n in counts {
        let key = format!("cluster/cold-{n}.bin");
        let data = eliop2p_testkit::test_data(size, 40 + n as u64);
        origin.put("bench", &key, data.clone()).await?;
        let expected = eliop2p_testkit::sha256_hex(&data);
        drop(data);
        origin.set_rate_limit(ORIGIN_RATE);

        // Baseline: N clients straight at the origin.
        let before = origin.bytes_sent();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (c, k) = (direct.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                crate::direct_get(&c, "bench", &k).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        let direct_secs = t0.elapsed().as_secs_f64();
        let direct_bytes = origin.bytes_sent() - before;

        // eliop2p: N nodes, each client through its own node.
        let (running, nodes) = if processes {
            let mut children = Children(Vec::new());
            let mut nodes = Vec::new();
            let mut seed = None;
            for i in 0..n {
                let (c, node, p2p) = spawn_process(&bin, origin, size, i, seed)?;
                seed.get_or_insert(p2p);
                children.0.push(c);
                nodes.push(node);
            }
            (Running::Processes(children), nodes)
        } else {
            let cap = 2 * size as u64;
            let c = TestCluster::start_with(
                origin,
                n,
                Discovery::Gossip,
                |_, cfg| cfg.cache.memory_capacity = cap,
                |_| {},
            )
            .await?;
            let nodes = c
                .nodes
                .iter()
                .flatten()
                .map(|h| Node {
                    proxy: h.proxy_addr,
                    admin: h.admin_addr,
                })
                .collect();
            (Running::InProcess(c), nodes)
        };
        // Wait for the membership to converge.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for node in &nodes {
                let m = metrics(node.admin).await.unwrap_or_default();
                if series(&m, "eliop2p_cluster_members{status=\"alive\"}") < n as u64 - 1 {
                    ok = false;
                }
            }
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("cluster of {n} did not converge");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = origin.bytes_sent();
        let t0 = Instant::now();
        let path = format!("/bench/{key}");
        let mut tasks = Vec::new();
        for node in &nodes {
            let (addr, path) = (node.proxy, path.clone());
            tasks.push(tokio::spawn(async move { get_hashed(addr, &path).await }));
        }
        for t in tasks {
            let (sha, len) = t.await??;
            if sha != expected || len != size as u64 {
                bail!("a node returned wrong bytes ({len} bytes, sha256 {sha})");
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let origin_bytes = origin.bytes_sent() - before;
        let mut peer_bytes = 0;
        for node in &nodes {
            peer_bytes += series(
                &metrics(node.admin).await?,
                "eliop2p_p2p_received_bytes_total",
            );
        }
        origin.set_rate_limit(0);
        match running {
            Running::Processes(children) => drop(children),
            Running::InProcess(c) => c.shutdown().await,
        }
        let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
        println!(
            "| {n} | {direct_secs:.2} s | {} | {secs:.2} s | {} ({:.2}x object) | {} | {:.2}x |",
            gib(direct_bytes),
            gib(origin_bytes),
            origin_bytes as f64 / size as f64,
            gib(peer_bytes),
            direct_secs / secs
        );
    }
    println!();
    println!(
        "all done = time until every one of the N clients has the whole object, verified by SHA-256."
    );
    Ok(())
}
