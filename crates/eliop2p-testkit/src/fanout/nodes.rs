//! The bed's nodes: one `eliop2p node` process per host namespace, started,
//! awaited until ready, read through their metrics, and one of them killed.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::BodyExt;

use super::{ADMIN_PORT, P2P_PORT, PROXY_PORT, Report, Spec};
use crate::netbed::NetBed;
use crate::{ACCESS_KEY, CONTROL_TOKEN, SECRET_KEY};

/// The nodes' heartbeat to the control plane (hybrid mode).
pub(super) const HEARTBEAT: Duration = Duration::from_millis(500);

/// Node processes, killed and reaped when dropped (also when a run fails).
pub(super) struct Nodes(pub(super) Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Nodes {
    /// CPU seconds (user + system, every thread) each running node process
    /// has used so far, from `/proc/PID/stat`, by process id.
    pub(super) fn cpu_seconds(&self) -> std::collections::HashMap<u32, f64> {
        // SAFETY: sysconf reads a constant of the system.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks = |pid: u32| -> Option<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command's closing parenthesis: state is field 3,
            // utime 14 and stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        };
        self.0.iter().flatten().filter_map(|c| Some((c.id(), ticks(c.id())? as f64 / tick))).collect()
    }
}

/// Starts a node on each node host (1..=n), in gossip mode or, with a control
/// plane at `control`, hybrid; node 0 is every other node's gossip seed.
pub(super) fn spawn_nodes(bed: &NetBed, spec: &Spec, origin_endpoint: &str, control: Option<SocketAddr>) -> anyhow::Result<Nodes> {
    let mut nodes = Nodes(Vec::new());
    let seed = SocketAddr::from((bed.addr(1), P2P_PORT));
    for i in 0..spec.nodes {
        let addr = bed.addr(i + 1);
        let mut cmd = bed.command(i + 1, &spec.bin);
        cmd.args(["node"])
            .env("ELIOP2P_PROXY_LISTEN", format!("{addr}:{PROXY_PORT}"))
            // The bed's network holds only the bed's own clients.
            .env("ELIOP2P_PROXY_ALLOW_ANONYMOUS_NETWORK", "true")
            .env("ELIOP2P_ADMIN_LISTEN", format!("{addr}:{ADMIN_PORT}"))
            .env("ELIOP2P_P2P_LISTEN", format!("{addr}:{P2P_PORT}"))
            .env("ELIOP2P_ORIGIN_ENDPOINT", origin_endpoint)
            .env("ELIOP2P_ORIGIN_ACCESS_KEY", ACCESS_KEY)
            .env("ELIOP2P_ORIGIN_SECRET_KEY", SECRET_KEY)
            .env("ELIOP2P_ORIGIN_ADDRESSING", "path")
            .env("ELIOP2P_CACHE_MEMORY_SIZE", memory_size(spec).to_string())
            // Resident before the clients start (see `memory_size`).
            .env("ELIOP2P_CACHE_MEMORY_PREFAULT", "true")
            .env("ELIOP2P_CACHE_DISK_SIZE", "0")
            // Uploads at most the NIC's rate, as deployment.md advises: the node
            // then paces its upload connections to it (`p2p` crate, `pace`), and
            // its NIC's queue stays short (`--node-env` may set it otherwise).
            .env("ELIOP2P_P2P_MAX_UPLOAD_RATE", (spec.node_link_of(i).rate_bps / 8).to_string())
            .env("ELIOP2P_P2P_CLUSTER_SECRET", "fanout-secret")
            .env("ELIOP2P_NODE_ID", format!("fanout-{i}"))
            .env("ELIOP2P_DISCOVERY_GOSSIP_INTERVAL", "200ms")
            .env("RUST_LOG", std::env::var("FANOUT_LOG").unwrap_or("warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if spec.slow_not_owners && spec.slow.is_some_and(|(k, _)| i < k) {
            cmd.env("ELIOP2P_NODE_OWNER", "false");
        }
        if i > 0 {
            cmd.env("ELIOP2P_DISCOVERY_SEEDS", seed.to_string());
        }
        match control {
            None => {
                cmd.env("ELIOP2P_DISCOVERY_MODE", "gossip");
            }
            Some(cp) => {
                cmd.env("ELIOP2P_DISCOVERY_MODE", "hybrid")
                    .env("ELIOP2P_CONTROL_PLANE_ENDPOINT", format!("http://{cp}"))
                    .env("ELIOP2P_CONTROL_PLANE_TOKEN", CONTROL_TOKEN)
                    .env("ELIOP2P_CONTROL_PLANE_HEARTBEAT_INTERVAL", format!("{}ms", HEARTBEAT.as_millis()));
            }
        }
        for (k, v) in &spec.node_env {
            cmd.env(k, v);
        }
        nodes.0.push(Some(cmd.spawn().context("spawning eliop2p node in its namespace")?));
    }
    Ok(nodes)
}

/// Waits until every node is up with every membership complete, and (unless
/// the run turned the prefault off) with its memory tier faulted in: a cold run
/// must not time this machine's page faults (see `memory_size`).
pub(super) async fn wait_ready(bed: &NetBed, nodes: &mut Nodes, spec: &Spec) -> anyhow::Result<()> {
    let n = spec.nodes;
    let members = |m: &str| series(m, "eliop2p_cluster_members{status=\"alive\"}") as usize >= n - 1;
    until_every_node(bed, nodes, "had every member alive", Duration::from_secs(60), members).await?;
    if !spec.node_env.iter().any(|(k, v)| k == "ELIOP2P_CACHE_MEMORY_PREFAULT" && v == "false") {
        let want = memory_size(spec) - eliop2p_cache::PIECE_SIZE as usize;
        let resident = |m: &str| series(m, "eliop2p_cache_piece_pool_bytes") as usize >= want;
        until_every_node(bed, nodes, "had its memory tier resident", Duration::from_secs(180), resident).await?;
    }
    Ok(())
}

/// SIGKILLs the node that has read the most from the origin (the owner of the
/// most chunks) and records it in `report`: its index, and at the kill the
/// origin's bytes sent (`origin_sent`), what all nodes had received from it,
/// and the killed node's share.
pub(super) async fn kill_top_filler(bed: &NetBed, nodes: &mut Nodes, origin_sent: u64, report: &mut Report) {
    let (mut best, mut received) = ((0, 0), 0);
    for i in 0..nodes.0.len() {
        let m = metrics(bed, i + 1).await.unwrap_or_default();
        let fills = series(&m, "eliop2p_origin_bytes_total");
        received += fills;
        if fills > best.1 {
            best = (i, fills);
        }
    }
    if let Some(mut c) = nodes.0[best.0].take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    report.killed = Some(best.0);
    report.at_kill = Some((origin_sent, received, best.1));
}

/// Reads every surviving node's counters into `report`: piece failures by
/// reason, bitmaps, bytes uploaded since `uploads_before`, bytes filled from the
/// origin, pieces written into pooled buffers.
pub(super) async fn read_counters(bed: &NetBed, uploads_before: &[u64], report: &mut Report) {
    for (i, before) in uploads_before.iter().enumerate() {
        if Some(i) == report.killed {
            continue;
        }
        let m = metrics(bed, i + 1).await.unwrap_or_default();
        for l in m.lines() {
            if let Some(rest) = l.strip_prefix("eliop2p_p2p_piece_failures_total{reason=\"")
                && let Some((reason, v)) = rest.split_once("\"}")
            {
                let v = v.trim().parse::<f64>().unwrap_or(0.0) as u64;
                match report.piece_failures.iter_mut().find(|(r, _)| r == reason) {
                    Some(e) => e.1 += v,
                    None => report.piece_failures.push((reason.to_owned(), v)),
                }
            }
        }
        report.bitmaps.0 += series(&m, "eliop2p_p2p_bitmaps_sent_total");
        report.bitmaps.1 += series(&m, "eliop2p_p2p_bitmaps_watched_total");
        report.uploaded.push(series(&m, "eliop2p_p2p_sent_bytes_total").saturating_sub(*before));
        report.filled.push(series(&m, "eliop2p_origin_bytes_total"));
        report.pooled_pieces.push(series(&m, "eliop2p_cache_piece_buffers_reused_total"));
    }
}

/// A node's memory tier: the object and a readahead's margin, nothing evicted
/// during the run. Prefaulted, and the bed waits for it: every node of the bed
/// shares this machine's two cores, and 16 nodes touching fresh memory for a
/// 512 MiB object (8 GiB of page faults and zeroing, more in a VM whose host
/// backs pages on first touch) took most of the machine's CPU in the kernel
/// mid-run (`clear_page_erms` at the top of a profile) and ran the row 1.7-2.0x
/// ideal instead of 1.15-1.19x. A real node faults its own memory on its own
/// cores, once.
pub(super) fn memory_size(spec: &Spec) -> usize {
    spec.object_size + (64 << 20)
}

/// Waits until `ready` holds for the metrics of every node (hosts 1..=n); an
/// error when a node exits or `limit` passes first.
pub(super) async fn until_every_node(
    bed: &NetBed,
    nodes: &mut Nodes,
    what: &str,
    limit: Duration,
    ready: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let (n, deadline) = (nodes.0.len(), Instant::now() + limit);
    loop {
        let mut done = 0;
        for i in 0..n {
            if let Ok(m) = metrics(bed, i + 1).await
                && ready(&m)
            {
                done += 1;
            }
        }
        if done == n {
            return Ok(());
        }
        for (i, c) in nodes.0.iter_mut().enumerate() {
            if let Some(c) = c
                && let Some(status) = c.try_wait()?
            {
                bail!("node {i} exited at start: {status}");
            }
        }
        if Instant::now() > deadline {
            bail!("{done} of {n} nodes {what} after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn metrics(bed: &NetBed, host: usize) -> anyhow::Result<String> {
    let stream = bed.connect(host, SocketAddr::from((bed.addr(host), ADMIN_PORT)))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), super::http_get(stream, "/metrics")).await??;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}
