//! The node's side of the cluster: reading chunks from the origin for peers when
//! this node is a chunk's owner (fetch-through), and the control-plane client
//! (registration, heartbeats, chunk reports, locations, replication commands).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eliop2p_cache::{ChunkEvent, Lookup};
use eliop2p_cluster::api;
use eliop2p_core::{ByteRange, ChunkId, ETag, ObjectKey};
use eliop2p_origin::ObjectMeta;
use eliop2p_p2p::cluster::BoxFuture;
use eliop2p_p2p::{Directory, FetchRefused, FetchRequest, Fetcher, NodeInfo};
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::read::ObjectReader;
use crate::state::ProxyState;

/// Starts origin fills asked for by peers. The chunk id must be the one this node
/// derives from the request with its own origin and chunk size, so a peer can only
/// ask for chunks of the origin this node serves; and the object's size and ETag
/// are this node's own (its metadata cache, else a HEAD it makes), never the
/// asker's: a chunk is filled only with the length its id implies.
pub(crate) struct NodeFetcher(pub Weak<ObjectReader>);

impl Fetcher for NodeFetcher {
    fn fetch(&self, id: ChunkId, req: &FetchRequest) -> Result<(), FetchRefused> {
        let reader = self.0.upgrade().ok_or(FetchRefused::ShuttingDown)?;
        let chunk_size = reader.cfg.chunk_size;
        if req.chunk_size != chunk_size {
            return Err(FetchRefused::ChunkSize {
                asked: req.chunk_size,
                ours: chunk_size,
            });
        }
        let key = ObjectKey::new(req.bucket.clone(), req.key.clone());
        let asked = ObjectMeta {
            etag: ETag::new(&req.etag),
            size: req.object_size,
            last_modified: None,
            headers: Vec::new(),
            checksums: None,
        };
        if reader.chunk_id(&key, &asked, req.index) != id {
            return Err(FetchRefused::WrongChunk);
        }
        let index = req.index;
        let st = reader.clone();
        reader.fills.spawn(async move {
            let Ok(meta) = st.lookup_meta(&key).await else {
                tracing::debug!(object = %key, "fetch-through: no metadata from the origin");
                return;
            };
            if meta.etag.opaque() != asked.etag.opaque() || meta.size != asked.size {
                st.metrics.fetch_through_refused.fetch_add(1, Relaxed);
                tracing::warn!(
                    object = %key,
                    asked_size = asked.size,
                    size = meta.size,
                    "fetch-through refused: the asker's size or ETag is not the origin's"
                );
                return;
            }
            let start = index.saturating_mul(chunk_size);
            if start >= meta.size || st.chunk_id(&key, &meta, index) != id {
                return;
            }
            let range = ByteRange::new(start, (start + chunk_size).min(meta.size));
            if let Lookup::Leader(writer) = st.cache.lookup(id, range.len()) {
                st.clone().run_fill(writer, key, meta, range, true, crate::read::OriginAccess::Node).await;
            }
        });
        Ok(())
    }
}

/// How a node talks to the control plane.
#[derive(Clone, Debug)]
pub struct ControlPlaneClientConfig {
    /// `http://host:port` of each control-plane replica, in the order they are
    /// tried: the node talks to one at a time and moves to the next when it
    /// stops answering (re-registering there with a full chunk report).
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    /// Registered with the node (`zone`, `rack`, ...).
    pub labels: BTreeMap<String, String>,
    pub heartbeat_interval: Duration,
    /// Bytes per second replication commands may fetch on average (0 = unlimited).
    pub replication_max_rate: u64,
    /// CA bundle trusted for `https://` endpoints besides the system's roots
    /// (`control_plane.ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate for a control plane with `control_plane.client_ca`.
    pub identity: Option<eliop2p_origin::ClientIdentity>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

#[derive(Debug, thiserror::Error)]
enum CpError {
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    #[error("control plane answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("control plane sent bad JSON: {0}")]
    BadJson(String),
}

/// What a control plane answered (a 2xx, or 304 to a conditional request).
struct Reply {
    status: StatusCode,
    body: Bytes,
    etag: Option<String>,
}

/// A small JSON client for the control plane API, over one or several replicas.
#[derive(Clone)]
pub(crate) struct CpClient {
    http: HttpClient,
    bases: Arc<Vec<String>>,
    /// The replica in use (an index into `bases`): it stays in use while it
    /// answers, so a node's registration, reports and heartbeats go to one place.
    active: Arc<std::sync::atomic::AtomicUsize>,
    token: Option<String>,
    node_id: String,
    /// Until when every replica counts as down (location queries skip them).
    down_until: Arc<Mutex<Option<Instant>>>,
}

impl CpClient {
    pub(crate) fn new(cfg: &ControlPlaneClientConfig, node_id: &str) -> Result<Self, String> {
        let connector =
            eliop2p_origin::https_connector(cfg.ca_file.as_deref(), cfg.identity.as_ref(), Duration::from_secs(1), "control_plane.ca_file")?;
        Ok(Self {
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
            bases: Arc::new(cfg.endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect()),
            active: Arc::default(),
            token: cfg.token.clone(),
            node_id: node_id.to_owned(),
            down_until: Arc::default(),
        })
    }

    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    fn mark(&self, up: bool) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            (!up).then(|| Instant::now() + Duration::from_secs(2));
    }

    /// One request to the replica in use; one that is unreachable, times out or
    /// answers 5xx (a replica without its store answers 503) hands the request
    /// to the next replica, and the first that answers otherwise stays in use.
    /// A replica that does not know this node answers 404 to its heartbeat, and
    /// the node registers there afresh with a full report.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Option<T>, CpError> {
        let r = self.exchange(method, path, body, None, timeout).await?;
        if r.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        serde_json::from_slice(&r.body)
            .map(Some)
            .map_err(|e| CpError::BadJson(e.to_string()))
    }

    /// One request, to the replica in use and then the others while it is
    /// unreachable or failing. A 2xx or a 304 (answering `if_none_match`) is
    /// returned; any other status is an error.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        if_none_match: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, CpError> {
        let n = self.bases.len().max(1);
        let first = self.active.load(Relaxed) % n;
        let mut last = Err(CpError::Unreachable("no control-plane endpoint".into()));
        for k in 0..n {
            let i = (first + k) % n;
            last = self.call_one(&self.bases[i], method.clone(), path, body.clone(), if_none_match, timeout).await;
            let failed_over = matches!(&last, Err(CpError::Unreachable(_)))
                || matches!(&last, Err(CpError::Status(s, _)) if s.is_server_error());
            if !failed_over {
                if i != first {
                    tracing::info!(endpoint = %self.bases[i], "control plane: moved to another replica");
                }
                self.active.store(i, Relaxed);
                break;
            }
        }
        self.mark(!matches!(last, Err(CpError::Unreachable(_))));
        last
    }

    async fn call_one(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        if_none_match: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, CpError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(tag) = if_none_match {
            b = b.header(header::IF_NONE_MATCH, tag);
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CpError::Unreachable(e.to_string()))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                let mut why = eliop2p_origin::error_chain(&e);
                if why.contains("certificate") || why.contains("UnknownIssuer") {
                    why.push_str(" (the control plane's TLS certificate is not trusted: control_plane.ca_file adds a CA bundle to the system's roots)");
                }
                CpError::Unreachable(why)
            })?;
            let status = resp.status();
            let etag = resp.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CpError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, CpError>(Reply { status, body, etag })
        };
        let r = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(CpError::Unreachable("timed out".into())))?;
        if !r.status.is_success() && r.status != StatusCode::NOT_MODIFIED {
            return Err(CpError::Status(
                r.status,
                String::from_utf8_lossy(&r.body).into_owned(),
            ));
        }
        Ok(r)
    }
}

/// Holders a node asks the control plane for per chunk: as many complete
/// holders as a tracker names. A chunk the whole cluster read has thousands of
/// holders; the whole list, at every re-locate of every download, was megabytes
/// a second of JSON per node and a probe of every holder.
const DIRECTORY_HOLDERS: u32 = 8;

impl Directory for CpClient {
    fn locate(&self, id: ChunkId) -> BoxFuture<Option<Vec<NodeInfo>>> {
        let c = self.clone();
        Box::pin(async move {
            if c.is_down() {
                return None;
            }
            let q = api::LocationQuery {
                chunks: vec![id.to_hex()],
                node_id: Some(c.node_id.clone()),
                limit: Some(DIRECTORY_HOLDERS),
            };
            let body = serde_json::to_vec(&q).expect("serializes");
            let r: api::Locations = c
                .call(
                    Method::POST,
                    "/api/v1/chunks/locations",
                    Some(body),
                    Duration::from_secs(1),
                )
                .await
                .ok()??;
            Some(
                r.locations
                    .into_values()
                    .flatten()
                    .map(|h| NodeInfo {
                        id: h.node_id,
                        p2p: h.p2p_addr,
                        proxy: None,
                        zone: h.zone,
                        // Holders, not candidates for ownership.
                        owner: true,
                    })
                    .collect(),
            )
        })
    }
}

/// Starts the control-plane side of a node: registration, heartbeats, chunk reports
/// (a full list after every (re)registration, deltas after), membership for the
/// P2P layer, replication commands, and deregistration on shutdown.
pub(crate) fn start_control_plane_client(
    state: Arc<ProxyState>,
    p2p: eliop2p_p2p::P2pHandle,
    client: CpClient,
    cfg: ControlPlaneClientConfig,
    admin_addr: std::net::SocketAddr,
    cancel: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let Some(me) = p2p.me() else { return };
    let commands_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tracker.spawn(async move {
        let register = api::Register {
            node_id: me.id.clone(),
            p2p_addr: me.p2p,
            proxy_addr: me.proxy,
            admin_addr: Some(admin_addr),
            capacity: api::Capacity {
                memory_bytes: state.reader.cache.memory_capacity(),
                disk_bytes: state.reader.cache.disk_capacity(),
            },
            labels: cfg.labels.clone(),
        };
        let register_body = serde_json::to_vec(&register).expect("serializes");
        let mut events = state.reader.cache.subscribe_events();
        let mut registered = false;
        let mut members = Members::default();
        let (mut added, mut removed): (Vec<api::ReportedChunk>, Vec<String>) = (Vec::new(), Vec::new());
        let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval.max(Duration::from_millis(50)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = heartbeat.tick() => {
                    if !registered {
                        registered = register_and_resync(&client, &state, &register_body).await;
                        if registered {
                            added.clear();
                            removed.clear();
                        }
                    }
                    if registered {
                        match send_heartbeat(&client, &state).await {
                            Ok(pending) => {
                                if pending > 0 && !commands_running.swap(true, Relaxed) {
                                    let (c, s, p, flag, rate) = (client.clone(), state.clone(), p2p.clone(), commands_running.clone(), cfg.replication_max_rate);
                                    tokio::spawn(async move {
                                        run_commands(&c, &s, &p, rate).await;
                                        flag.store(false, Relaxed);
                                    });
                                }
                            }
                            Err(CpError::Status(StatusCode::NOT_FOUND, _)) => registered = false,
                            Err(e) => {
                                tracing::debug!(error = %e, "heartbeat failed");
                                // Reports made while it was away may be lost: resync on return.
                                registered = false;
                            }
                        }
                        refresh_members(&client, &p2p, &me.id, &mut members).await;
                    }
                }
                _ = flush.tick() => {
                    if registered
                        && !send_deltas(&client, &me.id, &mut added, &mut removed).await
                    {
                        registered = false;
                    }
                }
                ev = events.recv() => match ev {
                    Ok(ChunkEvent::Added(id, len)) => {
                        if added.len() + removed.len() >= api::MAX_BATCH {
                            registered = false; // too much to send as deltas: resync
                            added.clear();
                            removed.clear();
                        } else {
                            added.push(api::ReportedChunk { id: id.to_hex(), len });
                        }
                    }
                    Ok(ChunkEvent::Removed(id)) => {
                        let hex = id.to_hex();
                        added.retain(|c| c.id != hex);
                        removed.push(hex);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => registered = false,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                },
            }
        }
        if p2p.is_silent() {
            return; // crash simulation: no goodbye
        }
        // Graceful leave.
        let path = format!("/api/v1/nodes/{}", me.id);
        if let Err(e) = client.call::<()>(Method::DELETE, &path, None, Duration::from_secs(1)).await {
            tracing::debug!(error = %e, "deregistration failed");
        }
    });
}

/// The control plane's online nodes become the P2P layer's members. The list
/// is asked for with the tag of the last one (`If-None-Match`): while nobody
/// joined, left or changed status the control plane answers 304 with no body,
/// and the members last received are confirmed again (in `control-plane` mode
/// a member not confirmed for a while is taken for dead).
async fn refresh_members(client: &CpClient, p2p: &eliop2p_p2p::P2pHandle, me: &str, last: &mut Members) {
    let Ok(r) = client
        .exchange(Method::GET, "/api/v1/nodes", None, last.tag.as_deref(), Duration::from_secs(2))
        .await
    else {
        return;
    };
    if r.status != StatusCode::NOT_MODIFIED {
        let Ok(list) = serde_json::from_slice::<api::NodeList>(&r.body) else {
            return;
        };
        last.online = list
            .nodes
            .into_iter()
            .filter(|n| n.status == api::NodeStatus::Online && n.node_id != me)
            .map(|n| NodeInfo {
                id: n.node_id,
                p2p: n.p2p_addr,
                proxy: n.proxy_addr,
                zone: n.labels.get("zone").cloned().unwrap_or_default(),
                owner: n.labels.get("owner").is_none_or(|v| v != "false"),
            })
            .collect();
        last.tag = r.etag;
    }
    p2p.observe_members(last.online.clone());
}

/// The node list last received from the control plane, and its tag.
#[derive(Default)]
struct Members {
    tag: Option<String>,
    online: Vec<NodeInfo>,
}

/// Sends the chunks added and removed since the last report (taken from the
/// lists); false when the report failed, so the node registers and resyncs.
async fn send_deltas(
    client: &CpClient,
    me: &str,
    added: &mut Vec<api::ReportedChunk>,
    removed: &mut Vec<String>,
) -> bool {
    if added.is_empty() && removed.is_empty() {
        return true;
    }
    let report = api::ChunkReport {
        full: false,
        added: std::mem::take(added),
        removed: std::mem::take(removed),
    };
    let path = format!("/api/v1/nodes/{me}/chunks");
    let body = serde_json::to_vec(&report).expect("serializes");
    match client.call::<api::ReportAck>(Method::POST, &path, Some(body), Duration::from_secs(5)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "chunk report failed; full resync on reconnect");
            false
        }
    }
}

/// Registers and reports every held chunk (first batch `full`).
async fn register_and_resync(client: &CpClient, state: &ProxyState, body: &[u8]) -> bool {
    if let Err(e) = client
        .call::<api::Registered>(
            Method::POST,
            "/api/v1/nodes",
            Some(body.to_vec()),
            Duration::from_secs(2),
        )
        .await
    {
        tracing::debug!(error = %e, "control plane registration failed");
        return false;
    }
    let held = state.reader.cache.held();
    let path = format!("/api/v1/nodes/{}/chunks", client.node_id);
    let mut first = true;
    for part in held
        .chunks(api::MAX_BATCH)
        .chain((held.is_empty()).then_some(&[][..]))
    {
        let report = api::ChunkReport {
            full: first,
            added: part
                .iter()
                .map(|(id, len)| api::ReportedChunk {
                    id: id.to_hex(),
                    len: *len,
                })
                .collect(),
            removed: Vec::new(),
        };
        first = false;
        let body = serde_json::to_vec(&report).expect("serializes");
        if let Err(e) = client
            .call::<api::ReportAck>(Method::POST, &path, Some(body), Duration::from_secs(10))
            .await
        {
            tracing::debug!(error = %e, "full chunk report failed");
            return false;
        }
    }
    tracing::info!(chunks = held.len(), "registered with the control plane");
    true
}

/// This node's counters as a heartbeat, without hot chunks (also the node
/// dashboard's data).
pub(crate) fn heartbeat_of(state: &ProxyState) -> api::Heartbeat {
    let m = &state.metrics;
    let (mem, disk, peer, origin) = (
        m.bytes_memory.load(Relaxed),
        m.bytes_disk.load(Relaxed),
        m.bytes_peer.load(Relaxed),
        m.bytes_origin.load(Relaxed),
    );
    let served = mem + disk + peer + origin;
    let cs = state.reader.cache.stats();
    let (load, to_peers) = state.reader.p2p.as_ref().map_or((0, 0), |p| {
        let st = p.stats();
        (
            st.active_downloads.load(Relaxed) + p.active_uploads(),
            st.bytes_up.load(Relaxed),
        )
    });
    api::Heartbeat {
        load,
        memory_used_bytes: cs.memory.bytes.load(Relaxed),
        disk_used_bytes: cs.disk.bytes.load(Relaxed),
        chunks: cs.memory.entries.load(Relaxed) + cs.disk.entries.load(Relaxed),
        hit_ratio: if served == 0 {
            0.0
        } else {
            (served - origin) as f64 / served as f64
        },
        bytes_from_origin: origin,
        bytes_from_peers: peer,
        bytes_to_peers: to_peers,
        bytes_served: served,
        bytes_from_memory: mem,
        bytes_from_disk: disk,
        // Only the control plane wants these (they cost a pass over the policy).
        hot_chunks: Vec::new(),
    }
}

async fn send_heartbeat(client: &CpClient, state: &ProxyState) -> Result<usize, CpError> {
    let hb = api::Heartbeat {
        hot_chunks: state
            .reader
            .cache
            .hot_chunks(256)
            .iter()
            .map(ChunkId::to_hex)
            .collect(),
        ..heartbeat_of(state)
    };
    let path = format!("/api/v1/nodes/{}/heartbeat", client.node_id);
    let body = serde_json::to_vec(&hb).expect("serializes");
    let ack: Option<api::HeartbeatAck> = client
        .call(Method::PUT, &path, Some(body), Duration::from_secs(2))
        .await?;
    Ok(ack.map_or(0, |a| a.pending_commands))
}

/// Executes pending replication commands one at a time, within the byte budget.
async fn run_commands(
    client: &CpClient,
    state: &Arc<ProxyState>,
    p2p: &eliop2p_p2p::P2pHandle,
    max_rate: u64,
) {
    let path = format!("/api/v1/nodes/{}/commands", client.node_id);
    let Ok(Some(list)) = client
        .call::<api::Commands>(Method::GET, &path, None, Duration::from_secs(2))
        .await
    else {
        return;
    };
    for cmd in list.commands {
        let started = Instant::now();
        let ack_path = format!("{path}/{}/ack", cmd.id);
        let (result, progress) = match &cmd.preheat {
            Some(spec) if cmd.kind == api::CommandKind::Preheat => {
                let progress_path = format!("{path}/{}/progress", cmd.id);
                let report = |p: api::PreheatProgress| {
                    let body = serde_json::to_vec(&p).expect("serializes");
                    let progress_path = progress_path.clone();
                    async move {
                        let _ = client
                            .call::<()>(
                                Method::POST,
                                &progress_path,
                                Some(body),
                                Duration::from_secs(2),
                            )
                            .await;
                    }
                };
                tracing::info!(job = spec.job, bucket = %spec.bucket, key = %spec.key, "preheat started");
                match crate::preheat::run(state, spec, report).await {
                    Ok(p) => (Ok(()), Some(p)),
                    Err((e, p)) => (Err(e), Some(p)),
                }
            }
            _ => (execute(state, p2p, &cmd).await, None),
        };
        state.metrics.replication_commands.fetch_add(1, Relaxed);
        let ack = api::CommandAck {
            ok: result.is_ok(),
            error: result.as_ref().err().cloned(),
            progress,
        };
        if let Err(e) = &result {
            tracing::warn!(command = cmd.id, kind = ?cmd.kind, chunk = %cmd.chunk, error = %e, "command failed");
        }
        let body = serde_json::to_vec(&ack).expect("serializes");
        let _ = client
            .call::<()>(Method::POST, &ack_path, Some(body), Duration::from_secs(2))
            .await;
        if max_rate > 0 && cmd.kind == api::CommandKind::Replicate && result.is_ok() {
            let budget = Duration::from_secs_f64(cmd.len as f64 / max_rate as f64);
            if let Some(rest) = budget.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }
}

async fn execute(
    state: &ProxyState,
    p2p: &eliop2p_p2p::P2pHandle,
    cmd: &api::Command,
) -> Result<(), String> {
    let id = ChunkId::from_hex(&cmd.chunk).ok_or("bad chunk id")?;
    match cmd.kind {
        api::CommandKind::Preheat => Err("preheat command without its spec".into()),
        api::CommandKind::Evict => {
            state.reader.cache.remove(&id);
            Ok(())
        }
        api::CommandKind::Replicate => match state.reader.cache.lookup(id, cmd.len) {
            Lookup::Leader(mut writer) => {
                match p2p.download(id, cmd.len, &mut writer, None, None).await {
                    Ok(others) => {
                        writer.finish().map_err(|e| e.to_string())?;
                        state.metrics.replicated_bytes.fetch_add(cmd.len, Relaxed);
                        state.reader.cache.set_replicas(&id, others as u32 + 1);
                        Ok(())
                    }
                    Err(_) => {
                        writer.fail(eliop2p_cache::FillError::NoPeer);
                        Err(eliop2p_cache::FillError::NoPeer.to_string())
                    }
                }
            }
            Lookup::Joined(fill) => fill.wait().await.map(|_| ()).map_err(|e| e.to_string()),
            Lookup::Hit(_) | Lookup::Disk(_) => Ok(()),
        },
    }
}
