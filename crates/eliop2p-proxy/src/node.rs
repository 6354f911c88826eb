//! One node: its configuration, and `spawn_node`, which wires the origin client, the
//! cache and the listeners together and returns a handle that shuts them down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eliop2p_cache::{CacheConfig, ChunkCache};
use eliop2p_origin::{OriginClient, OriginConfig, OriginError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
pub use crate::config::{AuthMode, ProxyConfig};
use crate::read::{ObjectReader, Route};
use crate::state::ProxyState;


#[derive(Clone, Debug, Default)]
pub struct AdminConfig {}

/// Another origin served by the same node, chosen by bucket name (`[[origins]]`).
#[derive(Clone, Debug)]
pub struct ExtraOrigin {
    pub origin: OriginConfig,
    pub buckets: Vec<String>,
    /// `None`: the node's `proxy.auth`.
    pub auth: Option<AuthMode>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub origin: OriginConfig,
    /// Origins for other buckets; the rest go to `origin`.
    pub extra_origins: Vec<ExtraOrigin>,
    pub cache: CacheConfig,
    /// How long shutdown waits for in-flight responses.
    pub shutdown_grace: Duration,
    /// The P2P layer; `None` runs a standalone node.
    pub p2p: Option<eliop2p_p2p::P2pConfig>,
    /// The control plane (modes `control-plane` and `hybrid`); needs `p2p` with a
    /// cluster.
    pub control_plane: Option<crate::cluster::ControlPlaneClientConfig>,
}

pub struct NodeHandle {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub p2p_addr: Option<SocketAddr>,
    pub p2p: Option<eliop2p_p2p::P2pHandle>,
    pub metrics: Arc<Metrics>,
    pub cache: ChunkCache,
    cancel: CancellationToken,
    tracker: TaskTracker,
    state: Arc<ProxyState>,
    grace: Duration,
}

impl NodeHandle {
    /// Prometheus text of the node's metrics.
    pub fn render_metrics(&self) -> String {
        self.state.render_metrics()
    }

    /// Stops at once without leaving the cluster or deregistering, as a crash would
    /// look to peers (listeners close; nothing is awaited).
    pub fn kill(self) {
        if let Some(p) = &self.p2p {
            p.set_silent();
        }
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Stops accepting, lets in-flight responses finish within the grace period, and
    /// returns whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        self.state.reader.fills.close();
        let done = async {
            self.tracker.wait().await;
            self.state.reader.fills.wait().await;
        };
        tokio::time::timeout(self.grace, done).await.is_ok()
    }
}

/// Starts a node on the given listeners (bound by the caller, so tests use port 0).
/// Opening the disk tier (index rebuild from chunk headers) happens here.
pub async fn spawn_node(
    cfg: NodeConfig,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
) -> Result<NodeHandle, NodeError> {
    spawn_node_with_p2p(cfg, proxy_listener, admin_listener, None).await
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    P2p(#[from] eliop2p_p2p::P2pError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("p2p is configured but no p2p listener was given")]
    MissingP2pListener,
    #[error("config key {0}")]
    Config(String),
}

/// Starts a node with its P2P listener (port 9000 by default) when `cfg.p2p` is set.
pub async fn spawn_node_with_p2p(
    cfg: NodeConfig,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    p2p_listener: Option<TcpListener>,
) -> Result<NodeHandle, NodeError> {
    let origin = OriginClient::new(cfg.origin.clone())?;
    let mut routes = Vec::new();
    for extra in &cfg.extra_origins {
        routes.push(Route {
            buckets: extra.buckets.iter().cloned().collect(),
            client: OriginClient::new(extra.origin.clone())?,
            auth: extra.auth.unwrap_or(cfg.proxy.auth),
        });
    }
    let cache = ChunkCache::open(cfg.cache.clone()).await;
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let proxy_addr = proxy_listener.local_addr()?;
    let p2p_cfg = cfg.p2p.clone().map(|mut pc| {
        if let Some(cc) = pc.cluster.as_mut() {
            cc.proxy_addr.get_or_insert(proxy_addr);
        }
        pc
    });
    if p2p_cfg.is_some() && p2p_listener.is_none() {
        return Err(NodeError::MissingP2pListener);
    }
    // The control-plane client is the P2P layer's chunk directory; the node's read
    // path (through a weak reference to the reader being built) is its fetcher.
    let cp_client = match (&p2p_cfg, &cfg.control_plane) {
        (Some(pc), Some(cp)) => Some(crate::cluster::CpClient::new(cp, &pc.node_id).map_err(NodeError::Config)?),
        _ => None,
    };
    let mut p2p_error = None;
    let reader = Arc::new_cyclic(|weak| {
        let p2p = match (p2p_cfg, p2p_listener) {
            (Some(pc), Some(l)) => {
                let services = eliop2p_p2p::NodeServices {
                    fetcher: Some(Arc::new(crate::cluster::NodeFetcher(weak.clone()))),
                    directory: cp_client
                        .clone()
                        .map(|c| Arc::new(c) as Arc<dyn eliop2p_p2p::Directory>),
                };
                eliop2p_p2p::spawn_p2p(pc, l, cache.clone(), cancel.clone(), &tracker, services)
                    .map_err(|e| p2p_error = Some(e))
                    .ok()
            }
            _ => None,
        };
        ObjectReader::new(cfg.proxy.clone(), origin, routes, cache, metrics.clone(), p2p)
    });
    if let Some(e) = p2p_error {
        return Err(e.into());
    }
    let state = Arc::new(ProxyState::new(cfg.proxy.clone(), reader));
    let p2p = state.reader.p2p.clone();
    let p2p_addr = p2p.as_ref().map(|p| p.local_addr);
    state.proxy_port.store(
        u64::from(proxy_addr.port()),
        std::sync::atomic::Ordering::Relaxed,
    );
    let admin_addr = admin_listener.local_addr()?;
    if let (Some(p2p), Some(cp), Some(client)) = (&p2p, cfg.control_plane.clone(), cp_client) {
        crate::cluster::start_control_plane_client(
            state.clone(),
            p2p.clone(),
            client,
            cp,
            admin_addr,
            cancel.clone(),
            &tracker,
        );
    }
    tracker.spawn(crate::server::run(
        proxy_listener,
        state.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    tracker.spawn(crate::admin::run(
        admin_listener,
        state.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    tracing::info!(%proxy_addr, %admin_addr, p2p_addr = ?p2p_addr, origin = %cfg.origin.endpoint, "node started");
    Ok(NodeHandle {
        proxy_addr,
        admin_addr,
        p2p_addr,
        p2p,
        metrics,
        cache: state.reader.cache.clone(),
        cancel,
        tracker,
        state,
        grace: cfg.shutdown_grace,
    })
}
