//! What the bed prints to explain a run (with `FANOUT_TIMELINE` or
//! `FANOUT_TCPSTATS` set): the origin's and the clients' progress, the queues
//! and round trips while the clients read, and the kernel's TCP counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::percentile;
use crate::netbed::NetBed;

/// Watches the origin's bytes sent (`origin_sent`, `before` at the start) until
/// they reach `size`; returns the seconds since `start` that took (`None` after
/// 900 s). With `FANOUT_TIMELINE`, prints the origin's rate and the clients'
/// in-order bytes (`progress`) every 500 ms, and when the origin's first byte
/// and the clients' first bytes went out (the run's start-up).
pub(super) fn watch_origin(
    origin_sent: Arc<AtomicU64>,
    before: u64,
    size: u64,
    start: Instant,
    progress: Vec<Arc<AtomicU64>>,
) -> tokio::task::JoinHandle<Option<f64>> {
    let timeline = std::env::var_os("FANOUT_TIMELINE").is_some();
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut origin_first = false;
        let mut client_first: Vec<Option<f64>> = vec![None; progress.len()];
        while origin_sent.load(Relaxed) - before < size {
            if start.elapsed() > Duration::from_secs(900) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if timeline {
                first_bytes(&origin_sent, before, &progress, &mut origin_first, &mut client_first, start);
            }
            if timeline && last.0.elapsed() >= Duration::from_millis(500) {
                let sent = origin_sent.load(Relaxed) - before;
                let got: Vec<u64> = progress.iter().map(|p| p.load(Relaxed)).collect();
                eprintln!(
                    "t={:.1}s origin {:.1} MB/s ({} MiB sent); clients' in-order bytes: min {} MiB, mean {} MiB, max {} MiB",
                    start.elapsed().as_secs_f64(),
                    (sent - last.1) as f64 / last.0.elapsed().as_secs_f64() / 1e6,
                    sent >> 20,
                    got.iter().min().unwrap_or(&0) >> 20,
                    (got.iter().sum::<u64>() / got.len().max(1) as u64) >> 20,
                    got.iter().max().unwrap_or(&0) >> 20
                );
                last = (Instant::now(), sent);
            }
        }
        Some(start.elapsed().as_secs_f64())
    })
}

/// Prints when the origin sent its first byte, and once every client has bytes,
/// when the first and the last got their first (to 5 ms, the watcher's tick).
fn first_bytes(
    origin_sent: &AtomicU64,
    before: u64,
    progress: &[Arc<AtomicU64>],
    origin_first: &mut bool,
    client_first: &mut [Option<f64>],
    start: Instant,
) {
    let t = start.elapsed().as_secs_f64() * 1e3;
    if !*origin_first && origin_sent.load(Relaxed) > before {
        *origin_first = true;
        eprintln!("t={t:.0}ms the origin's first body byte");
    }
    if client_first.iter().all(Option::is_some) {
        return;
    }
    for (f, p) in client_first.iter_mut().zip(progress) {
        if f.is_none() && p.load(Relaxed) > 0 {
            *f = Some(t);
        }
    }
    if client_first.iter().all(Option::is_some) {
        let times: Vec<f64> = client_first.iter().flatten().copied().collect();
        let (lo, hi) = times.iter().fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        eprintln!("clients' first body bytes: the first at {lo:.0} ms, the last at {hi:.0} ms");
    }
}

/// Prints the kernel's TCP counters summed over every host namespace (hosts
/// 0..`hosts`), and the packets the shapers dropped: diagnosis of loss on the
/// bed.
pub(super) fn print_tcp_counters(bed: &NetBed, hosts: usize) {
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    let wanted = ["TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes", "TcpOutSegs", "TcpExtTCPSpuriousRTOs", "TcpExtTCPFastRetrans"];
    for i in 0..hosts {
        let out = bed.command(i, std::path::Path::new("nstat")).args(["-az"]).output();
        if let Ok(out) = out {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                let mut f = l.split_whitespace();
                if let (Some(k), Some(v)) = (f.next(), f.next())
                    && wanted.contains(&k)
                {
                    *sums.entry(k.to_owned()).or_default() += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    eprintln!("tcp counters over all hosts: {sums:?}");
    // Uplinks (hosts' NICs) and downlinks (the switch's ports).
    let (up, down) = bed.qdisc_drops();
    eprintln!("shaper drops: uplinks {up}, downlinks {down}");
}

/// Samples the bed's queues and a few hosts' TCP round trips every 250 ms until
/// told to stop, then sums them up: a swarm's own traffic queues at every
/// bottleneck, and each piece's round trips (have-announcement, request, data)
/// pay that queue.
pub(super) fn queue_sampler(probe: crate::netbed::BedProbe, hosts: Vec<usize>) -> Sampler {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let (mut up, mut down, mut rtt) = (Vec::new(), Vec::new(), Vec::new());
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let (u, d) = probe.backlogs();
            // Host 0 is the origin; its uplink is not the swarm's.
            up.extend(u.iter().skip(1).map(|b| *b as f64 / 1024.0));
            down.extend(d.iter().map(|b| *b as f64 / 1024.0));
            for h in &hosts {
                rtt.extend(probe.tcp_rtts(*h));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let line = |name: &str, v: &mut Vec<f64>, unit: &str| {
            let mut p = |q| percentile(v, q).unwrap_or(0.0);
            let (p50, p90, max) = (p(50.0), p(90.0), p(100.0));
            format!("{name} p50 {p50:.0} {unit}, p90 {p90:.0} {unit}, max {max:.0} {unit} ({} samples)", v.len())
        };
        format!(
            "while the clients read: {}; {}; {}",
            line("node uplink queues", &mut up, "KiB"),
            line("switch port queues", &mut down, "KiB"),
            line("TCP smoothed RTT of nodes' connections", &mut rtt, "ms")
        )
    });
    Sampler { stop, thread: Some(thread) }
}

/// The sampler thread; it stops when dropped, also when a run fails midway.
pub(super) struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<String>>,
}

impl Sampler {
    /// Stops the thread and returns its summary.
    pub(super) fn finish(mut self) -> Option<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// With `FANOUT_TIMELINE`: the origin's requests during the read, by method and
/// range length, and in hybrid mode what the control plane sent the nodes
/// (its uplink's bytes since `control_before`, its requests by status).
pub(super) fn print_requests(
    bed: &NetBed,
    origin: &crate::TestOrigin,
    control: Option<(std::net::SocketAddr, usize)>,
    control_before: Option<u64>,
    start: Instant,
) {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for r in origin.requests() {
        let len = r.range.as_deref().and_then(|x| {
            let (a, b) = x.strip_prefix("bytes=")?.split_once('-')?;
            Some((b.parse::<u64>().ok()? + 1).saturating_sub(a.parse().ok()?))
        });
        *by.entry(format!("{} {}", r.method, len.map_or("whole".to_owned(), |l| format!("{} KiB", l >> 10)))).or_default() += 1;
    }
    let list: Vec<String> = by.iter().map(|(k, n)| format!("{n} x {k}")).collect();
    eprintln!("origin requests during the read: {}", list.join(", "));
    let Some((addr, host)) = control else { return };
    let sent = bed.probe().uplink_sent(host).saturating_sub(control_before.unwrap_or(0));
    let out = bed.command(host, std::path::Path::new("curl")).args(["-s", &format!("http://{addr}/metrics")]).output();
    let metrics = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let requests: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("eliop2p_control_requests_total"))
        .collect();
    eprintln!(
        "control plane: sent {} KiB in {:.1} s; requests since it started {}",
        sent >> 10,
        start.elapsed().as_secs_f64(),
        requests.join(" ")
    );
}

/// With `FANOUT_TIMELINE`: when each client's in-order bytes (`progress`)
/// passed a quarter, a half, three quarters and all of `size`, as seconds since
/// `start` (to 5 ms). The line it returns (once every client is done, or `stop`
/// is set: a killed node's client never is) shows how much a client still had
/// to read once its node held the object: a client reads in order, and a node
/// gets its pieces in any order.
pub(super) fn watch_clients(
    progress: Vec<Arc<AtomicU64>>,
    size: u64,
    start: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        const MARKS: [u64; 4] = [1, 2, 3, 4];
        let mut at: Vec<[Option<f64>; 4]> = vec![[None; 4]; progress.len()];
        while at.iter().any(|m| m[3].is_none()) && !stop.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let t = start.elapsed().as_secs_f64();
            for (m, p) in at.iter_mut().zip(&progress) {
                let got = p.load(Relaxed);
                for (k, q) in MARKS.iter().enumerate() {
                    if m[k].is_none() && got >= size * q / 4 {
                        m[k] = Some(t);
                    }
                }
            }
        }
        let cols: Vec<String> = MARKS
            .iter()
            .enumerate()
            .map(|(k, q)| {
                let v: Vec<f64> = at.iter().filter_map(|m| m[k]).collect();
                let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
                let (lo, hi) = v.iter().fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                format!("{}%: mean {mean:.2} s (first {lo:.2}, last {hi:.2})", q * 25)
            })
            .collect();
        format!("clients' in-order bytes reached {}", cols.join("; "))
    })
}
