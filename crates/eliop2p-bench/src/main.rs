//! eliop2p-bench: starts an origin (in-process s3s-fs, SigV4-checking) and a node on
//! loopback and prints tables of direct-origin vs node MISS vs node HIT, with ratios
//! against the direct origin measured in the same run, plus nginx serving the same
//! bytes from the page cache when nginx is installed.
//!
//! `cargo build --release && target/release/eliop2p-bench [--quick] [--disk-only |
//! --p2p-only | --tls-only | --cluster-only]` (the cluster scenario runs nodes as processes when
//! the `eliop2p` binary is next to this one). Other modes: `fanout`, `swarm-sim`,
//! `control-plane`; `--help` after any of them lists its flags.

mod control;
mod cluster;
mod fanout;
mod flags;
mod swarm_sim;
mod p2p;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use eliop2p_origin::{OriginClient, OriginRequest};
use eliop2p_proxy::NodeHandle;
use eliop2p_testkit::{TestOrigin, sha256_hex, start_node, test_data};
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const USAGE: &str = "
eliop2p-bench [--quick] [--disk-only | --p2p-only | --cluster-only | --tls-only] [--nodes=1,4,8]
eliop2p-bench fanout | swarm-sim | control-plane [--help]

--nodes: the cluster sizes of the cluster scenario.";

const MIB: usize = 1 << 20;

struct Opts {
    large: usize,
    small_count: usize,
    small_size: usize,
    conns: usize,
    secs: f64,
    runs: usize,
}

/// One measured transfer.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    ttfb: f64,
    bytes: u64,
}

impl Sample {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.mbps().total_cmp(&b.mbps()));
    v[v.len() / 2]
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A fresh HTTP/1 connection (no Nagle) for bodiless requests.
async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// GET over a fresh HTTP/1 connection, reading and discarding the body.
async fn plain_get(addr: SocketAddr, path: &str) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let mut send = connect(addr).await?;
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("GET {path}: {}", resp.status());
    }
    drain(resp.into_body(), t0).await
}

async fn drain(mut body: hyper::body::Incoming, t0: Instant) -> anyhow::Result<Sample> {
    let mut ttfb = None;
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            ttfb.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            bytes += d.len() as u64;
        }
    }
    Ok(Sample {
        secs: t0.elapsed().as_secs_f64(),
        ttfb: ttfb.unwrap_or(0.0),
        bytes,
    })
}

/// Signed GET straight at the origin.
async fn direct_get(client: &OriginClient, bucket: &str, key: &str) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let resp = client
        .send(OriginRequest::new(Method::GET, bucket, Some(key)))
        .await?;
    if !resp.status().is_success() {
        bail!("direct GET: {}", resp.status());
    }
    drain(resp.into_body(), t0).await
}

/// One request of a closed loop: path and optional Range header; the loop checks
/// the status (200, or 206 with the exact length for a range).
type MakeRequest = Arc<dyn Fn(usize) -> (String, Option<(u64, u64)>) + Send + Sync>;

/// Closed-loop load: `conns` keep-alive connections issue GETs for `secs`; returns
/// requests/s and the p50/p99 latency in ms.
async fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    secs: f64,
    make: MakeRequest,
) -> anyhow::Result<(f64, f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (stop, make) = (stop.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = connect(addr).await?;
            let mut lat = Vec::new();
            let mut i = c * 7919;
            let host = addr.to_string();
            while !stop.load(Ordering::Relaxed) {
                let (path, range) = make(i);
                i += 1;
                let t = Instant::now();
                send.ready().await?;
                let mut req = http::Request::get(path.as_str()).header("host", host.as_str());
                if let Some((a, b)) = range {
                    req = req.header("range", format!("bytes={a}-{b}"));
                }
                let resp = send.send_request(req.body(Empty::<Bytes>::new())?).await?;
                let want = if range.is_some() { 206 } else { 200 };
                if resp.status() != want {
                    bail!("GET {path}: {}", resp.status());
                }
                let body = resp.into_body().collect().await?.to_bytes();
                if let Some((a, b)) = range {
                    anyhow::ensure!(body.len() as u64 == b - a + 1, "short range");
                }
                lat.push(t.elapsed().as_secs_f64());
            }
            anyhow::Ok(lat)
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let n = lat.len();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
            * 1e3
    };
    Ok((n as f64 / t0.elapsed().as_secs_f64(), pct(0.5), pct(0.99)))
}

/// Closed-loop whole-object GETs over `paths`.
async fn load(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    conns: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64, f64)> {
    closed_loop(
        addr,
        conns,
        secs,
        Arc::new(move |i| (paths[i % paths.len()].clone(), None)),
    )
    .await
}

/// Reads every path exactly once over `conns` keep-alive connections; requests/s.
async fn read_all_once(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    conns: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (paths, next) = (paths.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = connect(addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(path) = paths.get(i) else { break };
                send.ready().await?;
                let req = http::Request::get(path.as_str())
                    .header("host", addr.to_string())
                    .body(Empty::<Bytes>::new())?;
                let resp = send.send_request(req).await?;
                if !resp.status().is_success() {
                    bail!("GET {path}: {}", resp.status());
                }
                resp.into_body().collect().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(paths.len() as f64 / t0.elapsed().as_secs_f64())
}

/// Small objects read through the origin client (each request signed), concurrently.
async fn direct_small(
    client: &OriginClient,
    keys: &[String],
    conns: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (client, keys, stop, done) = (client.clone(), keys.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .send(OriginRequest::new(
                        Method::GET,
                        "bench",
                        Some(&keys[i % keys.len()]),
                    ))
                    .await?;
                i += 1;
                resp.into_body().collect().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
}

struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master so that it stops its workers too.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// nginx serving `files` statically (page cache), if nginx is installed.
async fn start_nginx(files: &[(&str, &Bytes)]) -> anyhow::Result<Option<Nginx>> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else { return Ok(None) };
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("www");
    for (name, data) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, data)?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n\
             client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; root {r}; }} }}\n",
            d = dir.path().display(),
            r = root.display()
        ),
    )?;
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(Nginx {
        child,
        addr,
        _dir: dir,
    }))
}

/// Header of the transfer tables (the rows are printed by `row`).
fn transfer_header() {
    println!(
        "| {:<28} | {:>9} | {:>9} | {:>11} | {:>12} |",
        "path", "MB/s", "TTFB ms", "vs direct", "TTFB Δ ms"
    );
    println!(
        "|{:-<30}|{:->11}|{:->11}|{:->13}|{:->14}|",
        "", "", "", "", ""
    );
}

fn row(name: &str, s: Sample, base: Sample) {
    println!(
        "| {:<28} | {:>9.0} | {:>9.2} | {:>10.2}x | {:>+12.2} |",
        name,
        s.mbps(),
        s.ttfb * 1e3,
        s.mbps() / base.mbps(),
        (s.ttfb - base.ttfb) * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eliop2p_cache::tune_allocator();
    match std::env::args().nth(1).as_deref() {
        Some("fanout") => return fanout::run().await,
        Some("control-plane") => return control::run().await,
        Some("swarm-sim") => return swarm_sim::run(),
        _ => {}
    }
    let f = flags::parse(1, USAGE, &["nodes"], &["quick", "disk-only", "p2p-only", "cluster-only", "tls-only"])?;
    let quick = f.switch("quick");
    let only_disk = f.switch("disk-only");
    let only_p2p = f.switch("p2p-only");
    let only_cluster = f.switch("cluster-only");
    let only_tls = f.switch("tls-only");
    let cluster_sizes: Vec<usize> = f.list_min("nodes", &[1, 4, 8], 1)?;
    let o = if quick {
        Opts {
            large: 128 * MIB,
            small_count: 200,
            small_size: 4096,
            conns: 64,
            secs: 1.0,
            runs: 1,
        }
    } else {
        Opts {
            large: 1024 * MIB,
            small_count: 1000,
            small_size: 4096,
            conns: 64,
            secs: 3.0,
            runs: 3,
        }
    };
    let (origin, large) = TestOrigin::with_object("bench", "large.bin", o.large, 1).await?;
    let mut small_keys = Vec::new();
    let small = test_data(o.small_size, 2);
    for i in 0..o.small_count {
        let k = format!("small/{i:05}");
        origin.put("bench", &k, small.clone()).await?;
        small_keys.push(k);
    }
    if only_cluster {
        cluster::run(&origin, o.large, &cluster_sizes).await?;
        origin.stop().await;
        return Ok(());
    }
    let direct = OriginClient::new(origin.origin_config())?;
    let fresh_node = || start_node(&origin, |c| c.cache.memory_capacity = (o.large as u64) * 2);
    let nginx = start_nginx(&[("bench/large.bin", &large), ("small.bin", &small)]).await?;

    // The host's TCP default: bbr paces loopback, so nodes and the test origin
    // give their local connections reno then (sockopt::unpace_local); nginx keeps it.
    let cc = eliop2p_p2p::sockopt::host_congestion();
    println!(
        "eliop2p bench: loopback, {} cores, origin = in-process testkit S3 (s3s, SigV4 checked, O(bytes) per request), release build, host TCP {cc}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cc == "bbr" { " (reno between two ends on this host, nginx excepted)" } else { "" }
    );
    println!();
    println!(
        "## large object: {} MiB, chunk 16 MiB, median of {} runs",
        o.large / MIB,
        o.runs
    );
    println!();
    transfer_header();
    let mut d = Vec::new();
    for _ in 0..o.runs {
        d.push(direct_get(&direct, "bench", "large.bin").await?);
    }
    let base = median(d);
    if only_tls {
        row("direct origin", base, base);
        p2p::tls_vs_plain(&origin, &o, base).await?;
        origin.stop().await;
        return Ok(());
    }
    if only_p2p {
        row("direct origin", base, base);
        p2p::run(&origin, &o, &large, base).await?;
        p2p::tls_vs_plain(&origin, &o, base).await?;
        origin.stop().await;
        return Ok(());
    }
    if only_disk {
        row("direct origin", base, base);
        disk_tier(&origin, &o, &large, base, nginx.as_ref()).await?;
        p2p::run(&origin, &o, &large, base).await?;
        origin.stop().await;
        return Ok(());
    }
    row("direct origin", base, base);
    let mut miss = Vec::new();
    let mut hit = Vec::new();
    for run in 0..o.runs {
        let node = fresh_node().await?;
        miss.push(plain_get(node.proxy_addr, "/bench/large.bin").await?);
        for _ in 0..(if run == 0 { o.runs } else { 0 }) {
            hit.push(plain_get(node.proxy_addr, "/bench/large.bin").await?);
        }
        if run == 0 {
            verify(&node, &large).await?;
        }
        node.shutdown().await;
    }
    row("node MISS", median(miss), base);
    row("node HIT (memory)", median(hit), base);
    if let Some(ng) = &nginx {
        let mut v = Vec::new();
        for _ in 0..o.runs {
            v.push(plain_get(ng.addr, "/bench/large.bin").await?);
        }
        row("nginx static (pagecache)", median(v), base);
    }

    disk_tier(&origin, &o, &large, base, nginx.as_ref()).await?;
    p2p::run(&origin, &o, &large, base).await?;
    p2p::tls_vs_plain(&origin, &o, base).await?;

    println!();
    println!(
        "## small objects: {} x {} B, {} connections, {} s each",
        o.small_count, o.small_size, o.conns, o.secs
    );
    println!();
    println!(
        "| {:<22} | {:>10} | {:>8} | {:>8} | {:>11} |",
        "path", "req/s", "p50 ms", "p99 ms", "vs direct"
    );
    println!(
        "|{:-<24}|{:->12}|{:->10}|{:->10}|{:->13}|",
        "", "", "", "", ""
    );
    let direct_rps = direct_small(&direct, &small_keys, o.conns, o.secs).await?;
    println!(
        "| {:<22} | {:>10.0} | {:>8} | {:>8} | {:>10.2}x |",
        "direct origin", direct_rps, "-", "-", 1.0
    );
    let node = fresh_node().await?;
    let paths: Arc<Vec<String>> =
        Arc::new(small_keys.iter().map(|k| format!("/bench/{k}")).collect());
    // MISS: every object read once, cold, over keep-alive connections.
    let miss_rps = read_all_once(node.proxy_addr, paths.clone(), o.conns).await?;
    println!(
        "| {:<22} | {:>10.0} | {:>8} | {:>8} | {:>10.2}x |",
        "node MISS (cold)",
        miss_rps,
        "-",
        "-",
        miss_rps / direct_rps
    );
    let (rps, p50, p99) = load(node.proxy_addr, paths.clone(), o.conns, o.secs).await?;
    println!(
        "| {:<22} | {:>10.0} | {:>8.2} | {:>8.2} | {:>10.2}x |",
        "node HIT (memory)",
        rps,
        p50,
        p99,
        rps / direct_rps
    );
    node.shutdown().await;
    if let Some(ng) = &nginx {
        let (rps, p50, p99) = load(
            ng.addr,
            Arc::new(vec!["/small.bin".to_owned()]),
            o.conns,
            o.secs,
        )
        .await?;
        println!(
            "| {:<22} | {:>10.0} | {:>8.2} | {:>8.2} | {:>10.2}x |",
            "nginx static (4 KiB)",
            rps,
            p50,
            p99,
            rps / direct_rps
        );
    }
    println!();
    println!(
        "load generator runs in the same process and on the same cores as the node and origin."
    );
    cluster::run(&origin, o.large, &cluster_sizes).await?;
    origin.stop().await;
    Ok(())
}

/// Drops the kernel page cache where allowed (root, not in a restricted container).
fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn metric(node: &NodeHandle, series: &str) -> u64 {
    node.render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// L2 (disk tier) HITs: the large object and random 4 KiB ranges, against nginx
/// serving the same bytes from a file; and the index rebuild time for 10,000 chunks.
async fn disk_tier(
    origin: &TestOrigin,
    o: &Opts,
    large: &Bytes,
    base: Sample,
    nginx: Option<&Nginx>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(
        std::env::var("ELIOP2P_BENCH_DISK")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )?;
    let path = dir.path().to_owned();
    let node = start_node(origin, move |c| {
        c.cache.memory_capacity = 64 * MIB as u64;
        c.cache.hot_threshold = 1e9; // measure the disk tier, not promotion to memory
        c.cache.disk = Some(eliop2p_cache::DiskTierConfig {
            path,
            capacity: 4 << 30,
            verify_on_start: eliop2p_cache::VerifyOnStart::No,
            write_queue: 1024,
        });
    })
    .await?;
    let chunks = (o.large as u64).div_ceil(16 * MIB as u64);
    plain_get(node.proxy_addr, "/bench/large.bin").await?;
    while metric(&node, "eliop2p_cache_disk_writes_total") < chunks {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    verify(&node, large).await?;
    println!();
    println!(
        "## disk tier (L2): {} MiB object, memory tier 64 MiB",
        o.large / MIB
    );
    println!();
    transfer_header();
    let dropped = drop_page_cache();
    let cold = plain_get(node.proxy_addr, "/bench/large.bin").await?;
    let cold_label = if dropped {
        "node L2 HIT (cache dropped)"
    } else {
        "node L2 HIT (first read)"
    };
    row(cold_label, cold, base);
    let mut warm = Vec::new();
    for _ in 0..o.runs {
        warm.push(plain_get(node.proxy_addr, "/bench/large.bin").await?);
    }
    let warm = median(warm);
    row("node L2 HIT (page cache)", warm, base);
    if let Some(ng) = nginx {
        if drop_page_cache() {
            row(
                "nginx static (cache dropped)",
                plain_get(ng.addr, "/bench/large.bin").await?,
                base,
            );
        }
        let mut v = Vec::new();
        for _ in 0..o.runs {
            v.push(plain_get(ng.addr, "/bench/large.bin").await?);
        }
        let ng_warm = median(v);
        row("nginx static (page cache)", ng_warm, base);
        println!(
            "\nL2 HIT / nginx (page cache): {:.2}x",
            warm.mbps() / ng_warm.mbps()
        );
    }
    // Random 4 KiB ranges of the large object.
    let ranges: Arc<Vec<String>> = Arc::new(
        (0..4096u64)
            .map(|i| {
                let off = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (o.large as u64 - 4096)) & !4095;
                format!("{off}")
            })
            .collect(),
    );
    println!();
    println!(
        "| {:<26} | {:>10} | {:>8} | {:>8} |",
        "4 KiB random ranges", "req/s", "p50 ms", "p99 ms"
    );
    println!("|{:-<28}|{:->12}|{:->10}|{:->10}|", "", "", "", "");
    let (rps, p50, p99) = load_ranges(
        node.proxy_addr,
        "/bench/large.bin",
        ranges.clone(),
        o.conns,
        o.secs,
    )
    .await?;
    println!(
        "| {:<26} | {:>10.0} | {:>8.2} | {:>8.2} |",
        "node L2 HIT", rps, p50, p99
    );
    if let Some(ng) = nginx {
        let (rps, p50, p99) =
            load_ranges(ng.addr, "/bench/large.bin", ranges, o.conns, o.secs).await?;
        println!(
            "| {:<26} | {:>10.0} | {:>8.2} | {:>8.2} |",
            "nginx static", rps, p50, p99
        );
    }
    node.shutdown().await;

    // Restart: rebuilding the index of 10,000 chunks from their headers.
    let dir = tempfile::tempdir()?;
    let n = 10_000u32;
    let t = Instant::now();
    let written = {
        let (store, _) = eliop2p_cache::disk::DiskStore::open(dir.path())?;
        let data = vec![7u8; 64 * 1024];
        let (pieces, _) = eliop2p_cache::hash_pieces(&data);
        for i in 0..n {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            store.write(&eliop2p_core::ChunkId::from_bytes(b), &[&data], &pieces)?;
        }
        t.elapsed()
    };
    drop_page_cache();
    let t = Instant::now();
    let (_, report) = eliop2p_cache::disk::DiskStore::open(dir.path())?;
    println!();
    println!(
        "restart: index of {} chunks rebuilt from headers in {:.2} s (page cache dropped: {}); writing them took {:.1} s (fsync each)",
        report.chunks,
        t.elapsed().as_secs_f64(),
        drop_page_cache(),
        written.as_secs_f64()
    );
    Ok(())
}

/// Closed-loop 4 KiB ranged GETs of one object (`starts` holds the offsets).
async fn load_ranges(
    addr: SocketAddr,
    path: &str,
    starts: Arc<Vec<String>>,
    conns: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64, f64)> {
    let path = path.to_owned();
    closed_loop(
        addr,
        conns,
        secs,
        Arc::new(move |i| {
            let a: u64 = starts[i % starts.len()]
                .parse()
                .expect("offsets are numbers");
            (path.clone(), Some((a, a + 4095)))
        }),
    )
    .await
}

/// One untimed read checked against the source's SHA-256.
async fn verify(node: &NodeHandle, data: &Bytes) -> anyhow::Result<()> {
    let c = eliop2p_testkit::TestClient::new();
    let r = c
        .get(&format!("http://{}/bench/large.bin", node.proxy_addr), &[])
        .await?;
    anyhow::ensure!(
        sha256_hex(&r.body) == sha256_hex(data),
        "node returned wrong bytes"
    );
    Ok(())
}
