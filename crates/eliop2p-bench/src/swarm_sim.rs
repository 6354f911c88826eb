//! `eliop2p-bench swarm-sim`: the swarm at sizes no machine here hosts, in virtual
//! time (`eliop2p_p2p::sim`, driving the real piece scheduler and serving rules).
//!
//! Its flags: `USAGE` (`eliop2p-bench swarm-sim --help`).
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
use eliop2p_p2p::sim::{EVENT_KINDS, Progress, Sim, SimConfig, SimReport};

use crate::flags::{self, Flags};

const USAGE: &str = "
eliop2p-bench swarm-sim [--nodes=1000,5000] [--sizes-gib=1,16] [--rate-mbit=200] [--origin-mbit=200]
    [--latency-us=200] [--window=5] [--piece-kib=256] [--poll] [--seed=7]
    [--slots=N] [--slot-wait-ms=N] [--slot-release-kib=N] [--node-pieces=N] [--origin-fill-pieces=N]
    [--seed-copies=N] [--fill-reserve=N] [--per-peer=N] [--total=N] [--batch=N] [--busy-pause-ms=N] [--defer-ms=N]
    [--slow=COUNT:MBIT] [--slow-not-owners] [--checkpoint=FILE [--checkpoint-min=10]]

The defaults run 1,000 and 5,000 nodes x 1 and 16 GiB: many hours of one core.
The flags given as N default to what the nodes run (the run's header prints
them); set, they model another rule.
--slots: the nodes' p2p.upload_slots.
--slot-release-kib: an upload slot is freed when this much of its piece is left
to cross. The default is what a node does: it frees the slot once the piece is
in the socket, with up to 128 KiB unsent (TCP_NOTSENT_LOWAT). 0: at the last
byte, the model of the results before 2026-12-05 (it ranked 8 upload slots over
4, the bed the other way).
--slow=COUNT:MBIT: COUNT nodes have a NIC of MBIT each way (degraded links);
chunk owners are drawn at random, so some of them may own chunks. The row's
times are then the other nodes'; a line after it gives the slow nodes' own.
--slow-not-owners: the slow nodes own no chunk (node.owner = false).
--fill-reserve: upload slots a node reading the origin keeps for what it seeds
(default: the nodes' rule, a quarter of --slots).
--checkpoint=FILE: one run (one --nodes, one --sizes-gib) saved to FILE every
--checkpoint-min minutes of wall time and when it ends; if FILE exists, the run
goes on from it (saved with the same flags, by a build with the same rules), and
its wall time counts every process's. A run of more hours than a process
lives is then run by several. A finished run's FILE prints its row again.
SIM_TIMELINE=1 prints refusals by reason, events by kind, delivery per 500 ms,
the slowest nodes, and the most bytes a node held that no other node held yet.
SIM_PROGRESS=N prints a line to stderr every N events (virtual time, nodes done,
what the origin sent, the fewest bytes a node holds and its lag behind the
origin, wall time): for runs of hours.";

const VALUES: &[&str] = &[
    "nodes", "sizes-gib", "rate-mbit", "origin-mbit", "latency-us", "window", "slots", "slot-wait-ms", "slot-release-kib",
    "node-pieces", "origin-fill-pieces", "seed-copies", "fill-reserve", "piece-kib", "seed", "per-peer", "total", "batch",
    "busy-pause-ms", "defer-ms", "slow", "checkpoint", "checkpoint-min",
];

/// The nodes' scheduler settings, with the knobs given on the command line.
fn sched_config(f: &Flags, piece: u64, poll: bool) -> anyhow::Result<SchedConfig> {
    let mut c = SchedConfig::new(piece, Duration::from_secs(5));
    c.watch = !poll;
    let ms = Duration::from_millis;
    if let Some(v) = f.opt("per-peer")? {
        c.per_peer = v;
    }
    if let Some(v) = f.opt("total")? {
        c.total = v;
    }
    if let Some(v) = f.opt("batch")? {
        c.batch = v;
    }
    if let Some(v) = f.opt("busy-pause-ms")? {
        c.busy_pause = ms(v);
    }
    if let Some(v) = f.opt("defer-ms")? {
        c.defer = ms(v);
    }
    Ok(c)
}

pub fn run() -> anyhow::Result<()> {
    let f = flags::parse(2, USAGE, VALUES, &["poll", "slow-not-owners"])?;
    let nodes: Vec<usize> = f.list_min("nodes", &[1000, 5000], 1)?;
    let sizes: Vec<f64> = f.list_min("sizes-gib", &[1.0, 16.0], 1.0 / 1024.0)?;
    let rate = f.get_min("rate-mbit", 200.0, 0.001)? * 1e6 / 8.0;
    let origin = f.get_min("origin-mbit", 200.0, 0.001)? * 1e6 / 8.0;
    let latency = Duration::from_micros(f.get("latency-us", 200)?);
    // At most 64 pieces a 16 MiB chunk (one 64-bit bitmap, as on the wire).
    let piece: u64 = f.get_min("piece-kib", 256, 256)? * 1024;
    let poll = f.switch("poll");
    let window: usize = f.get_min("window", 5, 1)?;
    // The nodes' own values are the defaults.
    let node = eliop2p_p2p::P2pConfig::new("sim");
    let slots: usize = f.get_min("slots", node.max_uploads, 1)?;
    let slot_wait_ms: f64 = f.get("slot-wait-ms", eliop2p_p2p::SLOT_WAIT.as_secs_f64() * 1e3)?;
    let slot_release_kib: u64 = f.get("slot-release-kib", eliop2p_p2p::NOTSENT_LOWAT / 1024)?;
    let node_pieces: usize = f.get("node-pieces", node.max_download_pieces)?;
    let origin_fill_pieces: usize = f.get("origin-fill-pieces", node.max_download_pieces_while_filling)?;
    let seed_copies: u32 = f.get("seed-copies", eliop2p_p2p::SEED_COPIES)?;
    let fill_reserved_slots: usize = f.get("fill-reserve", eliop2p_p2p::fill_reserved_slots(slots))?;
    let seed: u64 = f.get("seed", 7)?;
    let (slow_nodes, slow_rate) = f.count_at_mbit("slow")?.map_or((0, 0.0), |(k, mbit)| (k, mbit * 1e6 / 8.0));
    if f.switch("slow-not-owners") && slow_nodes == 0 {
        anyhow::bail!("--slow-not-owners: which nodes? give --slow=COUNT:MBIT too");
    }
    let sched = sched_config(&f, piece, poll)?;
    let checkpoint = match f.text("checkpoint") {
        Some(path) if nodes.len() == 1 && sizes.len() == 1 => {
            Some(Checkpoint { path: path.into(), every: Duration::from_secs_f64(f.get_min("checkpoint-min", 10.0, 0.0)? * 60.0) })
        }
        Some(_) => anyhow::bail!("--checkpoint saves one run: give one --nodes and one --sizes-gib"),
        None => None,
    };
    let progress_every = match std::env::var("SIM_PROGRESS") {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("SIM_PROGRESS={v}: not a count of events"))?,
        Err(_) => u64::MAX,
    };
    println!(
        "## swarm simulator: every node reads one cold object at once; NIC {} Mbit/s each way, origin {} Mbit/s, one-way latency {} us, 16 MiB chunks, {} KiB pieces, readahead {} chunks, {slots} upload slots (a request waits {slot_wait_ms} ms for one; freed {}), {node_pieces} pieces in flight a node ({origin_fill_pieces} while it reads the origin), {} a peer, a seed sends a piece to {seed_copies} peers a window, swarm bitmaps {}",
        rate * 8.0 / 1e6,
        origin * 8.0 / 1e6,
        latency.as_micros(),
        piece / 1024,
        window - 1,
        if slot_release_kib == 0 { "at a piece's last byte".to_owned() } else { format!("with {slot_release_kib} KiB of its piece left") },
        sched.per_peer,
        if poll { "polled" } else { "watched" }
    );
    println!();
    println!("| nodes | object | p50 / ideal | p99 / ideal | max / ideal | origin bytes / object | busiest uploader / object | mean upload / object | requests refused | events | wall time |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &nodes {
        for &gib in &sizes {
            let cfg = SimConfig {
                nodes: n,
                object_bytes: (gib * (1u64 << 30) as f64) as u64,
                chunk_bytes: 16 << 20,
                piece_bytes: piece,
                node_rate: rate,
                slow_nodes,
                slow_rate,
                slow_not_owners: f.switch("slow-not-owners"),
                origin_rate: origin,
                latency,
                window,
                upload_slots: slots,
                fill_reserved_slots,
                slot_wait: Duration::from_micros((slot_wait_ms * 1000.0) as u64),
                slot_release_bytes: slot_release_kib * 1024,
                node_pieces,
                origin_fill_pieces,
                seed_copies,
                seed_window: eliop2p_p2p::SEED_WINDOW,
                sched: sched.clone(),
                seed,
            };
            if let Err(e) = cfg.check() {
                anyhow::bail!("swarm-sim: {e}");
            }
            let ideal = cfg.object_bytes as f64 / rate.min(origin);
            let (r, wall) = drive(&cfg, progress_every, checkpoint.as_ref(), &mut |p, wall| {
                eprintln!(
                    "progress: {n} nodes x {gib} GiB: {} events, virtual {:.1} s ({:.2}x ideal), {} of {n} nodes done, origin sent {} MiB, slowest node holds {} MiB ({:.2} s behind the origin at the node rate), wall {wall:.0} s",
                    p.events,
                    p.secs,
                    p.secs / ideal,
                    p.nodes_done,
                    p.origin_bytes >> 20,
                    p.slowest_bytes >> 20,
                    p.origin_bytes.saturating_sub(p.slowest_bytes) as f64 / rate,
                )
            })?;
            if std::env::var_os("SIM_TIMELINE").is_some() {
                let cap = rate * 0.5 * n as f64;
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
                // What a node's death would cost the origin again, at worst.
                let (i, most) = r.alone_max.iter().enumerate().max_by_key(|(_, b)| **b).map(|(i, b)| (i, *b)).unwrap_or((0, 0));
                eprintln!("held alone: at most {:.1} MiB on one node (node {i}, owns {} chunks)", most as f64 / (1 << 20) as f64, r.owned.get(i).copied().unwrap_or(0));
            }
            // With slow nodes, the row is the others' (nodes `slow_nodes..`).
            let fast = if slow_nodes < n { &r.finish[slow_nodes..] } else { &r.finish[..] };
            let pct = |t: &[f64], p: f64, ideal: f64| eliop2p_testkit::fanout::percentile(&mut t.to_vec(), p).unwrap_or(0.0) / ideal;
            let obj = cfg.object_bytes as f64;
            let max_up = r.uploaded.iter().max().copied().unwrap_or(0) as f64;
            let mean_up = r.uploaded.iter().sum::<u64>() as f64 / r.uploaded.len() as f64;
            println!(
                "| {n} | {gib} GiB | {:.2}x | {:.2}x | {:.2}x | {:.3}x | {:.2}x | {:.2}x | {:.0}% | {} | {wall:.1} s |",
                pct(fast, 50.0, r.ideal),
                pct(fast, 99.0, r.ideal),
                pct(fast, 100.0, r.ideal),
                r.origin_bytes as f64 / obj,
                max_up / obj,
                mean_up / obj,
                100.0 * r.refused as f64 / r.requests.max(1) as f64,
                r.events
            );
            if slow_nodes > 0 {
                let slow = &r.finish[..slow_nodes];
                let own_ideal = cfg.object_bytes as f64 / slow_rate.min(origin);
                println!(
                    "slow nodes: {slow_nodes} at {} Mbit/s, owning {} of {} chunks; their p50 / p99 / max over their own ideal: {:.2}x / {:.2}x / {:.2}x",
                    slow_rate * 8.0 / 1e6,
                    r.owned[..slow_nodes].iter().sum::<u32>(),
                    r.owned.iter().sum::<u32>(),
                    pct(slow, 50.0, own_ideal),
                    pct(slow, 99.0, own_ideal),
                    pct(slow, 100.0, own_ideal)
                );
            }
        }
    }
    println!();
    println!("ideal = object size / min(node NIC, origin NIC); wall time = real time the simulation took.");
    Ok(())
}

/// Where a run is saved, and how often.
struct Checkpoint {
    path: std::path::PathBuf,
    every: Duration,
}

/// Runs `cfg` to its end, calling `on` (with the wall time so far) after every
/// `progress_every` events; with a checkpoint, goes on from its file if there
/// is one and saves to it every `every` and at the end. Returns the report and
/// the wall time of the whole run (over every process that ran part of it).
fn drive(
    cfg: &SimConfig,
    progress_every: u64,
    checkpoint: Option<&Checkpoint>,
    on: &mut dyn FnMut(&Progress, f64),
) -> anyhow::Result<(SimReport, f64)> {
    let t0 = Instant::now();
    let (mut sim, wall_before) = match checkpoint {
        Some(c) if c.path.exists() => {
            let bytes = std::fs::read(&c.path).map_err(|e| anyhow::anyhow!("--checkpoint={}: {e}", c.path.display()))?;
            let (sim, note) = Sim::load(cfg, &bytes).map_err(|e| anyhow::anyhow!("--checkpoint={}: {e}", c.path.display()))?;
            let wall: f64 = note.parse().map_err(|_| anyhow::anyhow!("--checkpoint={}: no wall time in its note {note:?}", c.path.display()))?;
            eprintln!("resuming {} at {} events, wall {wall:.0} s so far", c.path.display(), sim.progress().events);
            (sim, wall)
        }
        _ => (Sim::new(cfg), 0.0),
    };
    let wall = |t0: Instant| wall_before + t0.elapsed().as_secs_f64();
    let save = |sim: &Sim, c: &Checkpoint, wall: f64| -> anyhow::Result<()> {
        // A whole new file, then renamed over the old: a process killed while
        // saving leaves the last save whole.
        let tmp = c.path.with_extension("saving");
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        sim.save(&format!("{wall}"), &mut w).map_err(|e| anyhow::anyhow!("--checkpoint={}: {e}", c.path.display()))?;
        std::io::Write::flush(&mut w)?;
        std::fs::rename(&tmp, &c.path)?;
        Ok(())
    };
    // Progress lines every `progress_every` events; a look at the clock every
    // million (a few seconds) for the checkpoint.
    let mut events = sim.progress().events;
    let mut next_progress = (events / progress_every).saturating_add(1).saturating_mul(progress_every);
    let mut last_save = Instant::now();
    loop {
        let block = (next_progress - events).min(1 << 20);
        let done = sim.run(block);
        events += block;
        if done {
            break;
        }
        if events >= next_progress {
            on(&sim.progress(), wall(t0));
            next_progress = next_progress.saturating_add(progress_every);
        }
        if let Some(c) = checkpoint
            && last_save.elapsed() >= c.every
        {
            save(&sim, c, wall(t0))?;
            last_save = Instant::now();
        }
    }
    let total = wall(t0);
    if let Some(c) = checkpoint {
        save(&sim, c, total)?;
    }
    Ok((sim.report(), total))
}
