//! `eliop2p-bench fanout`: the swarm on a capped network. Hosts in network
//! namespaces (`eliop2p_testkit::netbed`), each NIC capped with `tc` in both
//! directions, one `eliop2p node` process per host, every client reading one cold
//! object at once; the same clients reading the origin directly as the baseline.
//! Needs root and iproute2.
//!
//! Its flags: `USAGE` (`eliop2p-bench fanout --help`).
//!
//! Clients check bodies with CRC32C (`--sha256`: SHA-256, as the CI test does).

use std::time::Duration;

use eliop2p_testkit::fanout::{self, Mode, Spec};
use eliop2p_testkit::netbed::Link;

use crate::flags;

const USAGE: &str = "
eliop2p-bench fanout [--nodes=16] [--sizes=64,512] [--rate=200] [--origin-rates=200,50]
    [--modes=gossip,hybrid] [--kill] [--first-byte-ms=30] [--stream-mbps=0] [--sha256]
    [--mtu=9000] [--switch-buffer-kib=1024] [--host-cc=NAME] [--origin-cc=NAME] [--no-direct] [--per-node] [--node-env=KEY=VALUE;KEY=VALUE]
    [--repeat=1] [--slow=COUNT:MBIT] [--slow-not-owners]

Sizes in MiB, rates in Mbit/s. --repeat=N runs every row N times, in rounds (each
row once, then again), and ends with a table of each row's p99 over its runs;
the direct baseline runs in the first round only.
--slow=COUNT:MBIT gives COUNT nodes a NIC of MBIT (degraded links): the row's
times are then the other nodes', and a line after the table gives the slow
nodes' own and which of them read the origin (owned chunks). --slow-not-owners
runs the slow nodes with node.owner = false. --host-cc and --origin-cc set
the default TCP congestion control (cubic, bbr, reno) of the nodes' (and the
control plane's) hosts and of the origin's; unset, a host has this machine's
(net.ipv4.tcp_congestion_control), which new namespaces inherit.
Needs root and iproute2, and the eliop2p binary next to this one.";

const VALUES: &[&str] = &[
    "nodes", "sizes", "rate", "origin-rates", "modes", "first-byte-ms", "stream-mbps", "mtu", "switch-buffer-kib", "host-cc", "origin-cc", "node-env", "repeat", "slow",
];

pub async fn run() -> anyhow::Result<()> {
    let f = flags::parse(2, USAGE, VALUES, &["kill", "sha256", "no-direct", "per-node", "slow-not-owners"])?;
    if let Err(e) = eliop2p_testkit::netbed::available() {
        anyhow::bail!("fanout: {e}");
    }
    let bin = std::env::current_exe()?.with_file_name("eliop2p");
    if !bin.exists() {
        anyhow::bail!("fanout: build the eliop2p binary next to this one (cargo build --release --workspace)");
    }
    let nodes: Vec<usize> = f.list_min("nodes", &[16], 1)?;
    let sizes: Vec<usize> = f.list_min("sizes", &[64, 512], 1)?;
    let rate: u64 = f.get_min("rate", 200, 1)?;
    // Jumbo frames, as in most data centres; `--mtu=1500` for plain Ethernet
    // (the bed then costs the machine more per byte: see `netbed::Link::mtu`).
    let mtu: u32 = f.get_min("mtu", 9000, 576)?;
    // Hosts' default congestion control: what new namespaces inherit unless set.
    let cc = |key: &str| -> anyhow::Result<Option<&'static str>> {
        Ok(match f.text(key) {
            None => None,
            Some("cubic") => Some("cubic"),
            Some("bbr") => Some("bbr"),
            Some("reno") => Some("reno"),
            Some(other) => anyhow::bail!("--{key}: {other:?} is none of cubic, bbr, reno"),
        })
    };
    let (host_cc, origin_cc) = (cc("host-cc")?, cc("origin-cc")?);
    let machine_cc = eliop2p_p2p::sockopt::host_congestion();
    let switch_buffer: u64 = f.get_min::<u64>("switch-buffer-kib", 1024, 1)? * 1024;
    let origin_rates: Vec<u64> = f.list_min("origin-rates", &[200, 50], 1)?;
    let modes = f
        .text("modes")
        .unwrap_or("gossip")
        .split(',')
        .map(|m| match m {
            "gossip" => Ok(Mode::Gossip),
            "hybrid" => Ok(Mode::Hybrid),
            _ => anyhow::bail!("--modes: {m:?} is neither gossip nor hybrid"),
        })
        .collect::<anyhow::Result<Vec<Mode>>>()?;
    let kill = f.switch("kill");
    let first_byte = Duration::from_millis(f.get("first-byte-ms", 30)?);
    let stream_rate = f.get::<u64>("stream-mbps", 0)? * 1_000_000 / 8;
    let direct = !f.switch("no-direct");
    // Clients check bodies with CRC32C unless told otherwise (see `BodyCheck`).
    let check = if f.switch("sha256") {
        fanout::BodyCheck::Sha256
    } else {
        fanout::BodyCheck::Crc32c
    };
    // `--node-env=KEY=VALUE;KEY=VALUE` for every node.
    let node_env = f
        .text("node-env")
        .unwrap_or_default()
        .split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => anyhow::bail!("--node-env: {kv:?} is not KEY=VALUE"),
        })
        .collect::<anyhow::Result<Vec<(String, String)>>>()?;
    println!(
        "## fanout: N hosts in network namespaces, NICs capped by tc tbf both ways, MTU {mtu}, {} KiB of switch buffer a port; origin = testkit S3 (O(bytes) per request, {} ms first byte{}); every client reads one cold object at once; nodes' p2p.max_upload_rate = their NIC's rate unless --node-env sets it; TCP: nodes' hosts {}, origin's {}",
        switch_buffer / 1024,
        first_byte.as_millis(),
        if stream_rate > 0 { format!(", {} Mbit/s per stream", stream_rate * 8 / 1_000_000) } else { String::new() },
        host_cc.unwrap_or(&machine_cc),
        origin_cc.unwrap_or(&machine_cc),
    );
    let repeat: usize = f.get_min("repeat", 1, 1)?;
    let slow = f.count_at_mbit("slow")?.map(|(k, mbit)| (k, (mbit * 1e6) as u64));
    if f.switch("slow-not-owners") && slow.is_none() {
        anyhow::bail!("--slow-not-owners: which nodes? give --slow=COUNT:MBIT too");
    }
    println!();
    println!("{}", fanout::SUMMARY_HEADER);
    let mut notes = Vec::new();
    let mut specs = Vec::new();
    for &n in &nodes {
        for &size in &sizes {
            for &orate in &origin_rates {
                for &mode in &modes {
                    specs.push(Spec {
                        bin: bin.clone(),
                        nodes: n,
                        node_link: Link::mbit(rate).with_mtu(mtu).with_switch_buffer(switch_buffer).with_congestion(host_cc),
                        origin_link: Link::mbit(orate).with_mtu(mtu).with_switch_buffer(switch_buffer).with_congestion(origin_cc),
                        object_size: size << 20,
                        mode,
                        first_byte,
                        stream_rate,
                        kill_owner_at: kill.then_some(0.3),
                        direct,
                        node_env: node_env.clone(),
                        slow,
                        slow_not_owners: f.switch("slow-not-owners"),
                        check,
                    });
                }
            }
        }
    }
    // Rounds of every row rather than a row's runs back to back, so that a
    // change in the machine's load over the run falls on every row alike.
    let mut runs: Vec<Vec<fanout::Report>> = specs.iter().map(|_| Vec::new()).collect();
    for round in 0..repeat {
        for (spec, runs) in specs.iter().zip(&mut runs) {
            // The direct baseline (16x ideal for 16 clients, and the same every
            // time: 16.12-16.14x in three rounds) runs in the first round only.
            let spec = &Spec { direct: spec.direct && round == 0, ..spec.clone() };
            let cpu0 = fanout::children_cpu_seconds();
            let r = fanout::run(spec).await?;
            let cpu = fanout::children_cpu_seconds() - cpu0;
            println!("{}", fanout::summary(spec, &r));
            if let Some(n) = slow_note(spec, &r) {
                notes.push(n);
            }
            if f.switch("per-node") {
                notes.extend(per_node_notes(spec, &r, cpu));
            }
            for e in r.errors.iter().take(3) {
                notes.push(format!("{} nodes, {} MiB: {e}", spec.nodes, spec.object_size >> 20));
            }
            runs.push(r);
        }
    }
    if repeat > 1 {
        println!();
        println!("{}", fanout::REPEATS_HEADER);
        for (spec, runs) in specs.iter().zip(&runs) {
            println!("{}", fanout::repeats_row(spec, runs));
        }
    }
    println!();
    println!("ideal = object size / min(node NIC, origin NIC); busiest uploader = piece bytes sent by the node that sent the most; bad bodies = clients whose body was short or wrong ({} checked; --sha256 for SHA-256); machine CPU busy = the share of this machine's CPU time in use while the clients read (every host of the bed runs here: near 100%, the times measure the machine, not the modelled network).", check.name());
    for n in notes {
        println!("- {n}");
    }
    Ok(())
}

/// `--slow`: the slow nodes' times over their own ideal, and the origin bytes
/// each read (an owner among them reads the origin for the cluster at its rate).
fn slow_note(spec: &Spec, r: &fanout::Report) -> Option<String> {
    let (count, rate) = spec.slow?;
    let mut t: Vec<f64> = r.slow_finish.iter().flatten().map(|t| t / r.slow_ideal).collect();
    let p = |t: &mut [f64], q: f64| fanout::percentile(t, q).map_or("-".into(), |x| format!("{x:.2}x"));
    // `filled` leaves a killed node out.
    let listed = count - usize::from(r.killed.is_some_and(|k| k < count));
    let filled: Vec<String> = r.filled.iter().take(listed).map(|b| format!("{} MiB", b >> 20)).collect();
    Some(format!(
        "{} nodes, {} MiB, {:?}: the {count} nodes at {} Mbit/s finished at p50 {} / max {} of their own ideal ({} of {} clients); origin bytes each read: {}",
        spec.nodes,
        spec.object_size >> 20,
        spec.mode,
        rate as f64 / 1e6,
        p(&mut t, 50.0),
        p(&mut t, 100.0),
        t.len(),
        count,
        filled.join(", ")
    ))
}

/// `--per-node`: each node's finish time (and origin bytes, for owners), where
/// the origin's bytes went around a kill, and the run's counters.
fn per_node_notes(spec: &Spec, r: &fanout::Report, cpu: f64) -> Vec<String> {
    let (n, size, orate, mode) = (spec.nodes, spec.object_size >> 20, spec.origin_link.rate_bps / 1_000_000, spec.mode);
    let mut notes = Vec::new();
    let t: Vec<String> = r
        .finish
        .iter()
        .zip(&r.filled)
        .map(|(t, f)| {
            let t = t.map_or("fail".into(), |t| format!("{:.2}", t / r.ideal));
            // The node's origin bytes: which nodes own chunks.
            if *f > 0 { format!("{t} (origin {} MiB)", f >> 20) } else { t }
        })
        .collect();
    let od = r.origin_done.map_or("-".into(), |t| format!("{:.2}", t / r.ideal));
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    if let Some((sent, received, killed)) = r.at_kill {
        // Where a kill's extra origin bytes went: in flight to the nodes when it
        // struck, or read again after it.
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        notes.push(format!(
            "{n} nodes, {size} MiB, {mode:?}: at the kill the origin had sent {:.1} MiB and the nodes had received {:.1} MiB of it ({:.1} MiB by the killed node); after it the origin sent {:.1} MiB",
            mib(sent), mib(received), mib(killed), mib(r.origin_bytes - sent)
        ));
    }
    notes.push(format!("{n} nodes, {size} MiB, origin {orate} Mbit/s, {mode:?}: origin done at {od} x ideal; all uploads {:.2}x object; piece failures {:?}; bitmaps sent {} ({} answering standing queries); node processes' CPU {cpu:.1} s, {:.1} s of it while the clients read (over the machine's {cores} cores: a floor of {:.2} x ideal under the last finish); per-node finish / ideal: {}", r.uploaded.iter().sum::<u64>() as f64 / spec.object_size as f64, r.piece_failures, r.bitmaps.0, r.bitmaps.1, r.nodes_cpu, r.nodes_cpu / cores as f64 / r.ideal, t.join(" ")));
    notes
}
