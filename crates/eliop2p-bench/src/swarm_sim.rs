//! `eliop2p-bench swarm-sim`: the swarm at sizes no machine here hosts, in virtual
//! time (`eliop2p_p2p::sim`, driving the real piece scheduler and serving rules).
//!
//!     eliop2p-bench swarm-sim [--nodes=1000,5000] [--sizes-gib=1,16] [--rate-mbit=200] [--origin-mbit=200]
//!         [--latency-us=200] [--window=5] [--slots=8] [--slot-wait-ms=20] [--node-pieces=12]
//!         [--origin-fill-pieces=6] [--seed-copies=2] [--piece-kib=256] [--poll] [--seed=7]
//!         [--per-peer=N] [--total=N] [--batch=N] [--busy-pause-ms=N] [--defer-ms=N]
//!
//! The scheduler knobs (`--per-peer` .. `--defer-ms`) override `SchedConfig::new`
//! for experiments; their defaults are what nodes run.
//!
//! `--poll`: swarm bitmaps are polled every 25-50 ms instead of watched (standing
//! queries answered on each new piece), the rule before have-announcements.
//! `SIM_TIMELINE=1` prints refusals by reason, events by kind, delivery per
//! 500 ms and the slowest nodes with the chunks they own.

use std::time::{Duration, Instant};

use eliop2p_p2p::sched::SchedConfig;
use eliop2p_p2p::sim::{EVENT_KINDS, SimConfig, simulate};

fn list(name: &str, default: &str) -> Vec<f64> {
    std::env::args()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
        .unwrap_or_else(|| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// The nodes' scheduler settings, with the knobs given on the command line.
fn sched_config(piece: u64, poll: bool) -> SchedConfig {
    let mut c = SchedConfig::new(piece, Duration::from_secs(5));
    c.watch = !poll;
    let given = |name: &str| list(name, "").first().copied();
    let ms = |v: f64| Duration::from_millis(v as u64);
    if let Some(v) = given("per-peer") {
        c.per_peer = v as usize;
    }
    if let Some(v) = given("total") {
        c.total = v as usize;
    }
    if let Some(v) = given("batch") {
        c.batch = v as usize;
    }
    if let Some(v) = given("busy-pause-ms") {
        c.busy_pause = ms(v);
    }
    if let Some(v) = given("defer-ms") {
        c.defer = ms(v);
    }
    c
}

pub fn run() {
    let nodes = list("nodes", "1000,5000");
    let sizes = list("sizes-gib", "1,16");
    let rate = list("rate-mbit", "200")[0] * 1e6 / 8.0;
    let origin = list("origin-mbit", "200")[0] * 1e6 / 8.0;
    let latency = Duration::from_micros(list("latency-us", "200")[0] as u64);
    let piece = list("piece-kib", "256")[0] as u64 * 1024;
    let poll = std::env::args().any(|a| a == "--poll");
    println!(
        "## swarm simulator: every node reads one cold object at once; NIC {} Mbit/s each way, origin {} Mbit/s, one-way latency {} us, 16 MiB chunks, {} KiB pieces, readahead {} chunks, {} upload slots (a request waits {} ms for one), {} pieces in flight a node ({} while it reads the origin), swarm bitmaps {}",
        rate * 8.0 / 1e6,
        origin * 8.0 / 1e6,
        latency.as_micros(),
        piece / 1024,
        list("window", "5")[0] - 1.0,
        list("slots", "8")[0],
        list("slot-wait-ms", &eliop2p_p2p::SLOT_WAIT.as_millis().to_string())[0],
        list("node-pieces", "12")[0],
        list("origin-fill-pieces", "6")[0],
        if poll { "polled" } else { "watched" }
    );
    println!();
    println!("| nodes | object | p50 / ideal | p99 / ideal | max / ideal | origin bytes / object | busiest uploader / object | mean upload / object | requests refused | events | wall time |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &nodes {
        for &gib in &sizes {
            let cfg = SimConfig {
                nodes: n as usize,
                object_bytes: (gib * (1u64 << 30) as f64) as u64,
                chunk_bytes: 16 << 20,
                piece_bytes: piece,
                node_rate: rate,
                origin_rate: origin,
                latency,
                window: list("window", "5")[0] as usize,
                upload_slots: list("slots", "8")[0] as usize,
                slot_wait: Duration::from_micros((list("slot-wait-ms", &eliop2p_p2p::SLOT_WAIT.as_millis().to_string())[0] * 1000.0) as u64),
                node_pieces: list("node-pieces", "12")[0] as usize,
                origin_fill_pieces: list("origin-fill-pieces", "6")[0] as usize,
                seed_copies: list("seed-copies", "2")[0] as u32,
                seed_window: Duration::from_millis(200),
                sched: sched_config(piece, poll),
                seed: list("seed", "7")[0] as u64,
            };
            let t0 = Instant::now();
            let r = simulate(&cfg);
            let wall = t0.elapsed().as_secs_f64();
            if std::env::var_os("SIM_TIMELINE").is_some() {
                let cap = rate * 0.5 * n;
                eprintln!("refused: missing {} busy {} deferred {} of {} requests", r.refused_by[0], r.refused_by[1], r.refused_by[2], r.requests);
                let kinds: Vec<String> = EVENT_KINDS.iter().zip(r.kinds).map(|(k, n)| format!("{k} {n}")).collect();
                eprintln!("events: {}", kinds.join(", "));
                for (i, (peers, from_origin)) in r.timeline.iter().enumerate() {
                    eprintln!("t={:5.1}s peers {:5.1}% of node downlinks, origin {:5.1}% of its link", i as f64 * 0.5, 100.0 * *peers as f64 / cap, 100.0 * *from_origin as f64 / (origin * 0.5));
                }
                // The slowest nodes, with the chunks each owns (an owner reads the
                // origin for the cluster while it downloads the rest).
                let mut by: Vec<(f64, u32, u64)> = (0..r.finish.len()).map(|i| (r.finish[i] / r.ideal, r.owned[i], r.uploaded[i])).collect();
                by.sort_by(|a, b| b.0.total_cmp(&a.0));
                let last: Vec<String> = by.iter().take(8).map(|(t, o, u)| format!("{t:.2}x (owns {o}, sent {:.2})", *u as f64 / cfg.object_bytes as f64)).collect();
                eprintln!("slowest nodes / ideal: {}", last.join(", "));
            }
            let mut t = r.finish.clone();
            t.sort_by(f64::total_cmp);
            let pct = |p: f64| t[((p / 100.0 * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1] / r.ideal;
            let obj = cfg.object_bytes as f64;
            let max_up = r.uploaded.iter().max().copied().unwrap_or(0) as f64;
            let mean_up = r.uploaded.iter().sum::<u64>() as f64 / r.uploaded.len() as f64;
            println!(
                "| {n} | {gib} GiB | {:.2}x | {:.2}x | {:.2}x | {:.3}x | {:.2}x | {:.2}x | {:.0}% | {} | {wall:.1} s |",
                pct(50.0),
                pct(99.0),
                pct(100.0),
                r.origin_bytes as f64 / obj,
                max_up / obj,
                mean_up / obj,
                100.0 * r.refused as f64 / r.requests.max(1) as f64,
                r.events
            );
        }
    }
    println!();
    println!("ideal = object size / min(node NIC, origin NIC); wall time = real time the simulation took.");
}
