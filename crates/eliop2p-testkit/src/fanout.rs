//! The fan-out scenario on a [`NetBed`]: one origin host and N node hosts, each
//! NIC capped; every node is a real `eliop2p node` process in its own namespace;
//! all N clients read one cold object through their own node at the same moment
//! (the job start of a training cluster), and, as the baseline, straight from the
//! origin. Shared by the `eliop2p-bench fanout` program and the CI test of the bed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::Sha256;

use crate::{ACCESS_KEY, SECRET_KEY, TestOrigin};
use crate::netbed::{Link, NetBed};

mod diag;
mod nodes;
mod repeats;

pub use repeats::{REPEATS_HEADER, repeats_row};
pub use nodes::series;

const BUCKET: &str = "fanout";
const PROXY_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9091;
const P2P_PORT: u16 = 9000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Gossip,
    /// A control plane (on the origin's host) and gossip.
    Hybrid,
}

#[derive(Clone, Debug)]
pub struct Spec {
    /// The `eliop2p` binary.
    pub bin: PathBuf,
    pub nodes: usize,
    pub node_link: Link,
    pub origin_link: Link,
    pub object_size: usize,
    pub mode: Mode,
    /// The object store's first-byte latency and per-stream rate (0 = unlimited).
    pub first_byte: Duration,
    pub stream_rate: u64,
    /// SIGKILL the node that read the most from the origin once every node has
    /// received this share of the object (e.g. 0.3); `None` = nobody is killed.
    pub kill_owner_at: Option<f64>,
    /// Also measure every client reading the origin directly (needs `curl`).
    pub direct: bool,
    /// Extra environment for every node.
    pub node_env: Vec<(String, String)>,
    /// The first `count` nodes have NICs of `rate_bps` instead (degraded links,
    /// older hosts): `(count, rate_bps)`. Which nodes own chunks is up to the
    /// cluster, so a run may or may not make a slow node an owner; the report's
    /// finish times are then the other nodes', and `slow_finish` theirs.
    pub slow: Option<(usize, u64)>,
    /// The slow nodes run with `node.owner = false`: they own no chunk while a
    /// node at the node rate is live.
    pub slow_not_owners: bool,
    /// How clients check the bodies they read against the object.
    pub check: BodyCheck,
}

/// How a client checks a body. The bed runs 16 nodes and their clients on 2
/// cores: SHA-256 in every client costs about a tenth of all CPU in a
/// CPU-bound run (the direct baseline's curl clients check only the length), so
/// the bench checks with CRC32C (hardware, ~10x cheaper), the test with SHA-256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyCheck {
    #[default]
    Sha256,
    Crc32c,
}

impl BodyCheck {
    pub fn name(self) -> &'static str {
        match self {
            BodyCheck::Sha256 => "SHA-256",
            BodyCheck::Crc32c => "CRC32C",
        }
    }

    fn digest(self, data: &[u8]) -> String {
        let mut h = BodyDigest::new(self);
        h.update(data);
        h.finish()
    }
}

/// A body's running check value.
enum BodyDigest {
    Sha256(Sha256),
    Crc32c(u32),
}

impl BodyDigest {
    fn new(check: BodyCheck) -> Self {
        match check {
            BodyCheck::Sha256 => BodyDigest::Sha256(<Sha256 as sha2::Digest>::new()),
            BodyCheck::Crc32c => BodyDigest::Crc32c(0),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            BodyDigest::Sha256(h) => sha2::Digest::update(h, data),
            BodyDigest::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
        }
    }

    fn finish(self) -> String {
        match self {
            BodyDigest::Sha256(h) => hex::encode(sha2::Digest::finalize(h)),
            BodyDigest::Crc32c(c) => format!("{c:08x}"),
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Seconds each client took for the whole object (`None`: its body was wrong,
    /// short, or failed); killed nodes are left out.
    pub finish: Vec<Option<f64>>,
    pub bad_bodies: usize,
    pub origin_bytes: u64,
    /// Piece bytes each surviving node sent to peers.
    pub uploaded: Vec<u64>,
    /// Bytes each surviving node read from the origin (the chunks it owns).
    pub filled: Vec<u64>,
    /// Pieces each surviving node wrote into a buffer of its piece pool (the
    /// memory it prefaulted before the clients started) rather than new memory.
    pub pooled_pieces: Vec<u64>,
    /// Ideal seconds: object size over the slower of the node NIC and the origin NIC.
    pub ideal: f64,
    /// With `Spec::slow`: the slow nodes' finish times (left out of `finish`),
    /// and their own ideal.
    pub slow_finish: Vec<Option<f64>>,
    pub slow_ideal: f64,
    pub killed: Option<usize>,
    /// At the kill: bytes the origin had sent, bytes all nodes had received
    /// from it (their `eliop2p_origin_bytes_total`), and the killed node's share.
    pub at_kill: Option<(u64, u64, u64)>,
    /// Direct baseline: seconds per client, origin bytes.
    pub direct: Option<(Vec<f64>, u64)>,
    /// Why clients failed (first few).
    pub errors: Vec<String>,
    /// Seconds until the origin had sent as many bytes as the object has.
    pub origin_done: Option<f64>,
    /// Piece failures over all surviving nodes, by reason.
    pub piece_failures: Vec<(String, u64)>,
    /// Bitmaps the surviving nodes sent, and how many of them answered standing
    /// queries.
    pub bitmaps: (u64, u64),
    /// Share of the machine's CPU time that was busy while the clients read: the
    /// bed runs every host on one machine, and near 1.0 its finish times measure
    /// the machine, not the network it models.
    pub cpu_busy: Option<f64>,
    /// CPU seconds the node processes alive throughout used while the clients
    /// read (every host shares the machine's cores, so this over their number
    /// is a floor under the last finish time).
    pub nodes_cpu: f64,
}

/// The machine's CPU time so far from `/proc/stat`: (busy, total), in ticks.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU seconds (user + system) of this process's reaped children, once a run has
/// ended: the bed's node processes (and the direct baseline's curl clients; the
/// nodes' clients run in this process).
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

impl Report {
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut t: Vec<f64> = self.finish.iter().flatten().copied().collect();
        percentile(&mut t, p)
    }
}

pub fn percentile(t: &mut [f64], p: f64) -> Option<f64> {
    if t.is_empty() {
        return None;
    }
    t.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * t.len() as f64).ceil() as usize;
    Some(t[i.clamp(1, t.len()) - 1])
}

impl Spec {
    /// Node `i`'s NIC (`slow`: the first few have a slower one).
    pub fn node_link_of(&self, i: usize) -> Link {
        match self.slow {
            Some((count, rate_bps)) if i < count => Link { rate_bps, ..self.node_link },
            _ => self.node_link,
        }
    }

    /// What `run` needs of a spec, as a message naming the field (a bed of no
    /// node panicked inside `NetBed`; a rate of 0 failed in `tc` naming no flag).
    pub fn check(&self) -> Result<(), String> {
        if self.nodes == 0 || self.object_size == 0 {
            return Err(format!("nodes ({}) and object size ({}) must be at least 1", self.nodes, self.object_size));
        }
        for (name, link) in [("node link", self.node_link), ("origin link", self.origin_link)] {
            if link.rate_bps == 0 || link.switch_buffer == 0 {
                return Err(format!("{name}: rate ({} bit/s) and switch buffer ({} bytes) must be above 0", link.rate_bps, link.switch_buffer));
            }
            // IPv4's minimum, and a veth's maximum.
            if !(576..=65535).contains(&link.mtu) {
                return Err(format!("{name}: MTU {} is not within 576-65535", link.mtu));
            }
        }
        if let Some((count, rate)) = self.slow
            && (count >= self.nodes || rate == 0)
        {
            return Err(format!("slow nodes: {count} of {} at {rate} bit/s; at least one node must be left at the node rate, and the rate above 0", self.nodes));
        }
        if self.kill_owner_at.is_some_and(|s| !(0.0..1.0).contains(&s)) {
            return Err(format!("kill_owner_at {:?} is not a share below 1", self.kill_owner_at));
        }
        Ok(())
    }
}

pub async fn run(spec: &Spec) -> anyhow::Result<Report> {
    if let Err(e) = spec.check() {
        bail!("fanout: {e}");
    }
    let n = spec.nodes;
    let mut links = vec![spec.origin_link];
    links.extend((0..n).map(|i| spec.node_link_of(i)));
    // The control plane has a host of its own, with a node's NIC, as in a
    // deployment: on the origin's host its answers to the nodes shared the
    // origin's uplink with the chunk reads (32 nodes at 50 Mbit/s: location
    // answers took a third or more of it, and the origin finished at 1.24x its
    // ideal against 0.97x in gossip mode).
    let control_host = (spec.mode == Mode::Hybrid).then(|| {
        links.push(spec.node_link);
        n + 1
    });
    let bed = NetBed::create(&links)?;
    let host = |i: usize| i + 1; // host 0 is the origin

    let root = tempfile::tempdir()?;
    let origin = TestOrigin::start_on(bed.listen(0, 0)?, root.path()).await?;
    origin.set_store_model(spec.first_byte, spec.stream_rate);
    let key = format!("cold-{}.bin", spec.object_size);
    let data = crate::test_data(spec.object_size, 77);
    let expected = spec.check.digest(&data);
    origin.put_file(BUCKET, &key, &data).await?;
    drop(data);

    let mut report = Report {
        ideal: spec.object_size as f64 * 8.0
            / spec.node_link.rate_bps.min(spec.origin_link.rate_bps) as f64,
        slow_ideal: spec.object_size as f64 * 8.0 / spec.node_link_of(0).rate_bps.min(spec.origin_link.rate_bps) as f64,
        ..Default::default()
    };

    if spec.direct {
        report.direct = Some(direct(&bed, &origin, spec, &key).await?);
    }

    let control = match control_host {
        None => None,
        Some(h) => {
            let dir = tempfile::tempdir()?;
            let mut cfg = crate::TestCluster::control_config(dir.path());
            // The nodes' heartbeat here (`nodes::HEARTBEAT`), and the defaults'
            // ratios to it (3x suspect, 7.5x dead): with the tests' 600 ms, a
            // heartbeat late by 100 ms on the busy bed made its node suspect, and
            // every node fetched the changed list again (a third of the
            // refreshes of a 32-node run).
            cfg.timing.heartbeat_interval = nodes::HEARTBEAT;
            cfg.timing.suspect_after = nodes::HEARTBEAT * 3;
            cfg.timing.dead_after = nodes::HEARTBEAT * 15 / 2;
            let cp = eliop2p_control::spawn_control_plane(cfg, bed.listen(h, 0)?).await?;
            Some((cp, dir))
        }
    };
    let mut nodes = nodes::spawn_nodes(&bed, spec, &origin.endpoint, control.as_ref().map(|(cp, _)| cp.addr))?;
    nodes::wait_ready(&bed, &mut nodes, spec).await?;

    let before = origin.bytes_sent();
    origin.clear_log();
    let mut uploads_before = Vec::new();
    for i in 0..n {
        uploads_before.push(series(&nodes::metrics(&bed, host(i)).await?, "eliop2p_p2p_sent_bytes_total"));
    }
    let control_sent_before = control_host.map(|h| bed.probe().uplink_sent(h));
    let progress: Vec<Arc<AtomicU64>> = (0..n).map(|_| Default::default()).collect();
    let start = Instant::now();
    let cpu_start = cpu_ticks();
    let nodes_cpu_start = nodes.cpu_seconds();
    let origin_done = diag::watch_origin(origin.bytes_counter(), before, spec.object_size as u64, start, progress.clone());
    let clients_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let milestones = std::env::var_os("FANOUT_TIMELINE")
        .is_some()
        .then(|| diag::watch_clients(progress.clone(), spec.object_size as u64, start, clients_done.clone()));
    let tcpstats = std::env::var_os("FANOUT_TCPSTATS").is_some();
    let sampler = tcpstats.then(|| diag::queue_sampler(bed.probe(), (1..=n.min(3)).collect()));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..n {
        let stream = bed.connect(host(i), SocketAddr::from((bed.addr(host(i)), PROXY_PORT)))?;
        let path = format!("/{BUCKET}/{key}");
        let progress = progress[i].clone();
        let check = spec.check;
        clients.spawn(async move { (i, get_hashed(stream, &path, progress, check).await) });
    }
    if let Some(share) = spec.kill_owner_at {
        let want = (share * spec.object_size as f64) as u64;
        while progress.iter().map(|p| p.load(Relaxed)).min().unwrap_or(0) < want {
            if start.elapsed() > Duration::from_secs(600) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        nodes::kill_top_filler(&bed, &mut nodes, origin.bytes_sent() - before, &mut report).await;
    }
    collect_clients(&bed, spec, &mut clients, &expected, start, &mut report).await?;
    // The nodes alive at both ends (a killed node's share is left out).
    let nodes_cpu_end = nodes.cpu_seconds();
    report.nodes_cpu = nodes_cpu_end.iter().filter_map(|(pid, t)| Some(t - nodes_cpu_start.get(pid)?)).sum();
    if let (Some((b0, t0)), Some((b1, t1))) = (cpu_start, cpu_ticks())
        && t1 > t0
    {
        report.cpu_busy = Some((b1 - b0) as f64 / (t1 - t0) as f64);
    }
    // The slow nodes' times apart (`Spec::slow`), then the killed node's left out.
    let slow = spec.slow.map_or(0, |(k, _)| k);
    let fast = report.finish.split_off(slow);
    report.slow_finish = std::mem::replace(&mut report.finish, fast);
    if let Some(k) = report.killed {
        match k.checked_sub(slow) {
            Some(j) => report.finish.remove(j),
            None => report.slow_finish.remove(k),
        };
    }
    report.origin_bytes = origin.bytes_sent() - before;
    if std::env::var_os("FANOUT_TIMELINE").is_some() {
        diag::print_requests(&bed, &origin, control.as_ref().map(|(cp, _)| cp.addr).zip(control_host), control_sent_before, start);
    }
    origin_done.abort();
    report.origin_done = origin_done.await.ok().flatten();
    clients_done.store(true, Relaxed);
    if let Some(m) = milestones
        && let Ok(line) = m.await
    {
        eprintln!("{line}");
    }
    nodes::read_counters(&bed, &uploads_before, &mut report).await;
    if let Some(s) = sampler.and_then(diag::Sampler::finish) {
        eprintln!("{s}");
    }
    if tcpstats {
        diag::print_tcp_counters(&bed, n + 1);
    }
    drop(nodes);
    if let Some((cp, _dir)) = control {
        cp.shutdown().await;
    }
    origin.stop().await;
    drop(bed);
    Ok(report)
}


/// A client's body: its check value, length and seconds.
type ClientResult = anyhow::Result<(String, u64, f64)>;

/// Each client's outcome into `report` as it ends: its finish time when its
/// body matches `expected`, else a bad body and why. With `FANOUT_TIMELINE`,
/// prints every 500 ms what the nodes received from peers.
async fn collect_clients(
    bed: &NetBed,
    spec: &Spec,
    clients: &mut tokio::task::JoinSet<(usize, ClientResult)>,
    expected: &str,
    start: Instant,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = spec.nodes;
    report.finish = vec![None; n];
    let timeline = std::env::var_os("FANOUT_TIMELINE").is_some();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_received = 0u64;
    loop {
        let r = tokio::select! {
            r = clients.join_next() => r,
            _ = tick.tick(), if timeline => {
                // What the nodes received from peers, in any order (the clients'
                // bytes above are in order).
                let mut received = 0;
                for i in 0..n {
                    if Some(i) != report.killed {
                        let m = nodes::metrics(bed, i + 1).await.unwrap_or_default();
                        received += series(&m, "eliop2p_p2p_received_bytes_total");
                    }
                }
                let cap = n as f64 * spec.node_link.rate_bps as f64 / 8.0 * 0.5;
                eprintln!(
                    "t={:.1}s nodes received {} MiB from peers in all, {:.0}% of their downlinks this interval",
                    start.elapsed().as_secs_f64(),
                    received >> 20,
                    100.0 * received.saturating_sub(last_received) as f64 / cap
                );
                last_received = received;
                continue;
            }
        };
        let Some(r) = r else { break };
        let (i, r) = r?;
        if Some(i) == report.killed {
            continue;
        }
        match r {
            Ok((sha, len, secs)) if sha == expected && len == spec.object_size as u64 => {
                report.finish[i] = Some(secs)
            }
            Ok((_, len, _)) => {
                report.bad_bodies += 1;
                report.errors.push(format!("node {i}: {len} bytes, wrong {}", spec.check.name()));
            }
            Err(e) => {
                report.bad_bodies += 1;
                report.errors.push(format!("node {i}: {e:#}"));
            }
        }
    }
    Ok(())
}

/// Every client reads the object straight from the origin (curl signing SigV4).
async fn direct(
    bed: &NetBed,
    origin: &TestOrigin,
    spec: &Spec,
    key: &str,
) -> anyhow::Result<(Vec<f64>, u64)> {
    let before = origin.bytes_sent();
    let url = format!("{}/{BUCKET}/{key}", origin.endpoint);
    let mut procs = Vec::new();
    for i in 0..spec.nodes {
        let mut c = bed.command(i + 1, std::path::Path::new("curl"));
        c.args(["-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--fail"])
            .arg(&url)
            .env_remove("SSL_CERT_FILE")
            .env_remove("CURL_CA_BUNDLE")
            .stdout(Stdio::piped());
        procs.push(c.spawn().context("curl (Debian package curl)")?);
    }
    let mut secs = Vec::new();
    for p in procs {
        let out = tokio::task::spawn_blocking(move || p.wait_with_output()).await??;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let t: f64 = it.next().and_then(|v| v.parse().ok()).context("curl time")?;
        let len: u64 = it.next().and_then(|v| v.parse().ok()).context("curl size")?;
        if len != spec.object_size as u64 {
            bail!("direct read got {len} bytes");
        }
        secs.push(t);
    }
    Ok((secs, origin.bytes_sent() - before))
}

async fn http_get(stream: tokio::net::TcpStream, path: &str) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "node")
        .body(http_body_util::Empty::<Bytes>::new())?;
    Ok(send.send_request(req).await?)
}

/// GET through a node, hashing the body; progress counts the bytes received.
async fn get_hashed(
    stream: tokio::net::TcpStream,
    path: &str,
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    check: BodyCheck,
) -> ClientResult {
    let t0 = Instant::now();
    let resp = http_get(stream, path).await?;
    if !resp.status().is_success() {
        // The S3 error's code and message say which part gave up, and when.
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let field = |tag: &str| text.split(&format!("<{tag}>")).nth(1).and_then(|r| r.split(&format!("</{tag}>")).next()).unwrap_or("").to_owned();
        bail!("GET {path}: {status} after {:.2} s: {} {}", t0.elapsed().as_secs_f64(), field("Code"), field("Message"));
    }
    let (sha, n) = check_body(resp.into_body(), Some(&progress), check).await?;
    Ok((sha, n, t0.elapsed().as_secs_f64()))
}

/// SHA-256 (hex) and length of a response body, read to its end; `progress`
/// follows the bytes received. A body cut short is an error.
pub async fn hash_body(
    body: hyper::body::Incoming,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> anyhow::Result<(String, u64)> {
    check_body(body, progress, BodyCheck::Sha256).await
}

/// A response body's check value (hex) and length, read to its end.
async fn check_body(
    mut body: hyper::body::Incoming,
    progress: Option<&std::sync::atomic::AtomicU64>,
    check: BodyCheck,
) -> anyhow::Result<(String, u64)> {
    let mut h = BodyDigest::new(check);
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.context("body cut")?.into_data() {
            h.update(&d);
            n += d.len() as u64;
            if let Some(p) = progress {
                p.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    Ok((h.finish(), n))
}


/// The table rows of one run, as the bench and the test print them.
pub fn summary(spec: &Spec, r: &Report) -> String {
    let mib = |b: u64| b as f64 / spec.object_size as f64;
    let p = |q: f64| r.percentile(q).map_or("-".into(), |t| format!("{:.2}x", t / r.ideal));
    let max_up = r.uploaded.iter().max().copied().unwrap_or(0);
    let mut line = format!(
        "{} {} | {} | {} | {:.3}x | {:.2}x | {} |",
        row_name(spec, r.killed.is_some()),
        p(50.0),
        p(99.0),
        p(100.0),
        mib(r.origin_bytes),
        mib(max_up),
        r.bad_bodies,
    );
    line.push_str(&r.cpu_busy.map_or(" - |".into(), |b| format!(" {:.0}% |", b * 100.0)));
    if let Some((t, bytes)) = &r.direct {
        let mut t = t.clone();
        let p99 = percentile(&mut t, 99.0).unwrap_or(0.0);
        line.push_str(&format!(" {:.2}x, origin {:.2}x |", p99 / r.ideal, mib(*bytes)));
    } else {
        line.push_str(" - |");
    }
    line
}

/// A row's first five cells: what the bed ran (`| 16 | 64 MiB | 200 Mbit/s |
/// 200 Mbit/s | Hybrid |`).
pub(crate) fn row_name(spec: &Spec, killed: bool) -> String {
    format!(
        "| {} | {} MiB | {} Mbit/s{} | {} Mbit/s | {:?}{} |",
        spec.nodes,
        spec.object_size >> 20,
        spec.node_link.rate_bps / 1_000_000,
        spec.slow.map_or(String::new(), |(k, r)| {
            format!(" ({k} at {} Mbit/s{})", r as f64 / 1e6, if spec.slow_not_owners { ", not owners" } else { "" })
        }),
        spec.origin_link.rate_bps / 1_000_000,
        spec.mode,
        if killed { ", owner killed" } else { "" },
    )
}

pub const SUMMARY_HEADER: &str = "| nodes | object | node NIC | origin NIC | mode | p50 / ideal | p99 / ideal | max / ideal | origin bytes / object | busiest uploader / object | bad bodies | machine CPU busy | direct: p99 / ideal, origin bytes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> Spec {
        Spec {
            bin: "eliop2p".into(),
            nodes: 4,
            node_link: Link::mbit(100),
            origin_link: Link::mbit(100),
            object_size: 32 << 20,
            mode: Mode::Gossip,
            first_byte: Duration::from_millis(20),
            stream_rate: 0,
            kill_owner_at: None,
            direct: false,
            node_env: Vec::new(),
            slow: None,
            slow_not_owners: false,
            check: BodyCheck::Sha256,
        }
    }

    /// `eliop2p-bench fanout --nodes=0` panicked inside the bed (an index out
    /// of bounds), and `--sizes=0` printed `infx` and `NaNx` as results.
    #[test]
    fn a_spec_the_bed_cannot_run_is_an_error_naming_the_field() {
        assert_eq!(spec().check(), Ok(()));
        let bad = |f: fn(&mut Spec), want: &str| {
            let mut s = spec();
            f(&mut s);
            let e = s.check().unwrap_err();
            assert!(e.contains(want), "{e:?} does not name {want:?}");
        };
        bad(|s| s.nodes = 0, "nodes (0)");
        bad(|s| s.object_size = 0, "object size (0)");
        bad(|s| s.node_link = Link::mbit(0), "node link: rate (0 bit/s)");
        bad(|s| s.origin_link = Link::mbit(0), "origin link: rate (0 bit/s)");
        bad(|s| s.node_link = Link::mbit(100).with_switch_buffer(0), "switch buffer (0 bytes)");
        bad(|s| s.origin_link = Link::mbit(100).with_mtu(100), "origin link: MTU 100");
        bad(|s| s.kill_owner_at = Some(1.5), "kill_owner_at");
        bad(|s| s.slow = Some((4, 10_000_000)), "slow nodes: 4 of 4");
        bad(|s| s.slow = Some((1, 0)), "slow nodes: 1 of 4 at 0 bit/s");
    }

    /// `--slow`: the first nodes get the slow rate and keep the rest of the
    /// node link (MTU, switch buffer); the others keep the node link.
    #[test]
    fn slow_nodes_are_the_first_ones_with_only_their_rate_changed() {
        let mut s = spec();
        s.node_link = Link::mbit(200).with_mtu(9000).with_switch_buffer(1 << 20);
        assert_eq!(s.node_link_of(0), s.node_link);
        s.slow = Some((2, 50_000_000));
        assert_eq!(s.check(), Ok(()));
        for i in 0..2 {
            assert_eq!(s.node_link_of(i), Link { rate_bps: 50_000_000, ..s.node_link });
        }
        assert_eq!(s.node_link_of(2), s.node_link);
        assert_eq!(s.node_link_of(3), s.node_link);
    }
}
