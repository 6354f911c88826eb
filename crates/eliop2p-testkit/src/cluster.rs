//! In-process clusters for tests: a control plane and nodes on loopback in front
//! of one origin, with fast heartbeats and failure detection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use eliop2p_origin::encode_key;
use eliop2p_proxy::{NodeConfig, NodeHandle};
use tokio::net::TcpListener;

use crate::{TestOrigin, node_config};

/// How a [`TestCluster`]'s nodes find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    ControlPlane,
    Gossip,
    Hybrid,
}

/// Fast cluster timings for tests: 100 ms gossip rounds, dead after 1.2 s.
pub fn test_gossip_config() -> eliop2p_cluster::GossipConfig {
    eliop2p_cluster::GossipConfig {
        interval_ms: 100,
        fanout: 3,
        suspect_after_ms: 600,
        dead_after_ms: 1200,
        forget_after_ms: 10_000,
        rejoin_every: 5,
        backups: 1,
        ..Default::default()
    }
}

pub const CONTROL_TOKEN: &str = "test-control-token";

/// A control plane and `n` in-process nodes on loopback in front of one origin,
/// with fast heartbeats and failure detection.
pub struct TestCluster {
    pub mode: Discovery,
    pub nodes: Vec<Option<NodeHandle>>,
    pub control: Option<eliop2p_control::ControlHandle>,
    pub control_addr: Option<SocketAddr>,
    control_dir: tempfile::TempDir,
    control_tweak: fn(&mut eliop2p_control::ControlConfig),
}

impl TestCluster {
    pub fn control_config(dir: &Path) -> eliop2p_control::ControlConfig {
        let mut c = eliop2p_control::ControlConfig {
            token: Some(CONTROL_TOKEN.to_owned()),
            data_dir: Some(dir.to_owned()),
            ..Default::default()
        };
        c.timing.heartbeat_interval = Duration::from_millis(100);
        c.timing.suspect_after = Duration::from_millis(600);
        c.timing.dead_after = Duration::from_millis(1200);
        c.replication_interval = Duration::from_millis(200);
        c
    }

    /// Another control plane with the test timings on a free loopback port, its
    /// store in `dir`: a second replica the nodes can be told about.
    pub async fn spawn_control_plane(dir: &Path) -> anyhow::Result<eliop2p_control::ControlHandle> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        Ok(eliop2p_control::spawn_control_plane(Self::control_config(dir), l).await?)
    }

    pub async fn start(origin: &TestOrigin, n: usize, mode: Discovery) -> anyhow::Result<Self> {
        Self::start_with(origin, n, mode, |_, _| {}, |_| {}).await
    }

    /// `tweak(i, cfg)` adjusts node `i`'s config, `control_tweak` the control
    /// plane's (also on restarts).
    pub async fn start_with(
        origin: &TestOrigin,
        n: usize,
        mode: Discovery,
        tweak: impl Fn(usize, &mut NodeConfig),
        control_tweak: fn(&mut eliop2p_control::ControlConfig),
    ) -> anyhow::Result<Self> {
        Self::start_full(origin, n, mode, tweak, control_tweak, None).await
    }

    /// [`Self::start_with`], with node 0's proxy and admin listeners given (the
    /// demo puts node 0 on the configured ports).
    pub async fn start_full(
        origin: &TestOrigin,
        n: usize,
        mode: Discovery,
        tweak: impl Fn(usize, &mut NodeConfig),
        control_tweak: fn(&mut eliop2p_control::ControlConfig),
        first: Option<(TcpListener, TcpListener)>,
    ) -> anyhow::Result<Self> {
        Self::start_on_host(origin, n, mode, tweak, control_tweak, first, "127.0.0.1").await
    }

    /// `n` gossip nodes whose P2P, proxy and admin listeners are on IPv6 loopback.
    pub async fn start_ipv6(origin: &TestOrigin, n: usize) -> anyhow::Result<Self> {
        Self::start_on_host(origin, n, Discovery::Gossip, |_, _| {}, |_| {}, None, "[::1]").await
    }

    async fn start_on_host(
        origin: &TestOrigin,
        n: usize,
        mode: Discovery,
        tweak: impl Fn(usize, &mut NodeConfig),
        control_tweak: fn(&mut eliop2p_control::ControlConfig),
        mut first: Option<(TcpListener, TcpListener)>,
        host: &str,
    ) -> anyhow::Result<Self> {
        let control_dir = tempfile::tempdir()?;
        let (control, control_addr) = if mode == Discovery::Gossip {
            (None, None)
        } else {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let mut cc = Self::control_config(control_dir.path());
            control_tweak(&mut cc);
            let h = eliop2p_control::spawn_control_plane(cc, l).await?;
            let addr = h.addr;
            (Some(h), Some(addr))
        };
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind(format!("{host}:0")).await?);
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?;
        let mut nodes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let mut cfg = node_config(origin.origin_config());
            let mut pc = eliop2p_p2p::P2pConfig::new(&format!("node-{i}"));
            pc.cluster_secret = Some(b"test-cluster-secret".to_vec());
            pc.piece_timeout = Duration::from_secs(3);
            pc.cluster = Some(eliop2p_p2p::ClusterConfig {
                gossip: mode != Discovery::ControlPlane,
                // Everyone joins through node 0 (node 0 through node 1).
                seeds: if mode == Discovery::ControlPlane {
                    Vec::new()
                } else {
                    vec![addrs[if i == 0 { 1 } else { 0 }]]
                },
                gossip_cfg: test_gossip_config(),
                advertise: None,
                proxy_addr: None,
                zone: format!("zone-{}", i % 2),
                owner: true,
            });
            cfg.p2p = Some(pc);
            if let Some(addr) = control_addr {
                cfg.control_plane = Some(eliop2p_proxy::ControlPlaneClientConfig {
                    endpoints: vec![format!("http://{addr}")],
                    token: Some(CONTROL_TOKEN.to_owned()),
                    labels: [("zone".to_owned(), format!("zone-{}", i % 2))].into(),
                    heartbeat_interval: Duration::from_millis(100),
                    replication_max_rate: 0,
                    ca_file: None,
                    identity: None,
                });
            }
            tweak(i, &mut cfg);
            let (proxy, admin) = match first.take() {
                Some(pair) => pair,
                None => (
                    TcpListener::bind(format!("{host}:0")).await?,
                    TcpListener::bind(format!("{host}:0")).await?,
                ),
            };
            nodes.push(Some(
                eliop2p_proxy::spawn_node_with_p2p(cfg, proxy, admin, Some(l)).await?,
            ));
        }
        let c = Self {
            mode,
            nodes,
            control,
            control_addr,
            control_dir,
            control_tweak,
        };
        c.wait_converged(Duration::from_secs(10)).await?;
        Ok(c)
    }

    pub fn node(&self, i: usize) -> &NodeHandle {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Path-style URL of an object through node `i`.
    pub fn url(&self, i: usize, bucket: &str, key: &str) -> String {
        format!(
            "http://{}/{}/{}",
            self.node(i).proxy_addr,
            bucket,
            encode_key(key)
        )
    }

    /// Waits until every running node sees every other running node as live.
    pub async fn wait_converged(&self, within: Duration) -> anyhow::Result<()> {
        let running: Vec<String> = self
            .nodes
            .iter()
            .flatten()
            .filter_map(|n| n.p2p.as_ref()?.me().map(|m| m.id))
            .collect();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ok = self.nodes.iter().flatten().all(|n| {
                let p = n.p2p.as_ref().expect("cluster nodes have p2p");
                let me = p.me().expect("cluster").id;
                let live: std::collections::HashSet<String> = p
                    .members()
                    .into_iter()
                    .filter(|(_, s)| {
                        matches!(s, eliop2p_p2p::Status::Alive | eliop2p_p2p::Status::Suspect)
                    })
                    .map(|(m, _)| m.id)
                    .collect();
                running.iter().all(|id| *id == me || live.contains(id))
            });
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("cluster did not converge within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Crashes node `i` (no leave, no deregistration).
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill();
        }
    }

    /// Stops the control plane (its state stays in the store).
    pub async fn stop_control_plane(&mut self) {
        if let Some(c) = self.control.take() {
            c.shutdown().await;
        }
    }

    /// Restarts the control plane on the same address over the same store.
    pub async fn restart_control_plane(&mut self) -> anyhow::Result<()> {
        let addr = self.control_addr.context("cluster has no control plane")?;
        let l = TcpListener::bind(addr).await?;
        let mut cc = Self::control_config(self.control_dir.path());
        (self.control_tweak)(&mut cc);
        self.control = Some(eliop2p_control::spawn_control_plane(cc, l).await?);
        Ok(())
    }

    pub async fn shutdown(mut self) {
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            n.shutdown().await;
        }
        self.stop_control_plane().await;
    }
}
