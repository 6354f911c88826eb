//! The control plane service (`eliop2p control-plane`): node registry with
//! heartbeats and liveness, chunk locations from nodes' reports, demand counting
//! and replication commands, over a token-authenticated JSON API under `/api/v1`
//! (axum). State is soft and kept in an embedded store so a restart answers at
//! once, or shared by any number of replicas through Redis (`redis.rs`).

mod auth;
mod locations;
mod log;
mod metrics;
mod plan;
mod preheat;
mod redis;
mod state;
mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use eliop2p_cluster::api::{self, ErrorBody};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use auth::{CertifiedFor, auth};
use state::{Op, State, StateError};
pub use redis::{RedisConfig, check_redis_config, check_redis_url, node_ttl};
pub use state::{ReplicationConfig, Timing};

#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Bearer token every `/api/v1` request must carry; `None` = no authentication.
    pub token: Option<String>,
    /// Where the store lives; `None` = memory only (state is lost on restart).
    pub data_dir: Option<PathBuf>,
    /// Replicas sharing their state through Redis (`data_dir` is then unused).
    pub redis: Option<RedisConfig>,
    pub timing: Timing,
    pub replication: ReplicationConfig,
    /// Time between replication passes.
    pub replication_interval: Duration,
    /// https on the listener (`control_plane.tls_cert`, `tls_key`, and
    /// `client_ca` for client certificates instead of the token); `None` = http.
    pub tls: Option<tls::TlsFiles>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            token: None,
            data_dir: None,
            redis: None,
            timing: Timing {
                heartbeat_interval: Duration::from_secs(2),
                suspect_after: Duration::from_secs(6),
                dead_after: Duration::from_secs(15),
            },
            replication: ReplicationConfig {
                min_replicas: 2,
                hot_threshold: 4,
                max_replicas: 0,
                max_pending_per_node: 16,
            },
            replication_interval: Duration::from_secs(5),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Redis(String),
    #[error("config key {0}")]
    Tls(String),
}

/// Where changes go.
enum Backend {
    Memory,
    Embedded(mpsc::UnboundedSender<Vec<Op>>),
    Redis(Arc<redis::Link>, mpsc::UnboundedSender<redis::Write>),
}

struct Shared {
    cfg: ControlConfig,
    state: Mutex<State>,
    backend: Backend,
    follow: redis::FollowStats,
    requests: Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    /// Samples for the dashboard's charts.
    history: Mutex<std::collections::VecDeque<api::Sample>>,
    /// https on the listener, when configured.
    tls: Option<Arc<tls::ServerTls>>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state with `f` and keeps its changes: queued for the embedded
    /// store, or written to Redis before the request is answered (503 when Redis
    /// does not take them). The changes are queued under the state's lock, so the
    /// store and the replicas' log see them in the order they were made.
    async fn change<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, Vec<Op>), StateError>,
    ) -> Result<T, Response> {
        let (v, took) = {
            let mut st = self.state();
            let (v, ops) = f(&mut st).map_err(IntoResponse::into_response)?;
            (v, self.queue(ops, true))
        };
        if let Some(took) = took
            && took.await != Ok(true)
        {
            return Err(store_unavailable());
        }
        Ok(v)
    }

    /// Changes made by the service itself (planning, demand batches): kept, with
    /// nobody to tell if Redis refuses them.
    fn change_later(&self, f: impl FnOnce(&mut State) -> Vec<Op>) {
        let mut st = self.state();
        let ops = f(&mut st);
        self.queue(ops, false);
    }

    /// Queues changes for the store; call with the state locked. With `answer`
    /// and Redis, the receiver says whether Redis took them.
    fn queue(&self, ops: Vec<Op>, answer: bool) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        if ops.is_empty() {
            return None;
        }
        match &self.backend {
            Backend::Memory => None,
            Backend::Embedded(tx) => {
                let _ = tx.send(ops);
                None
            }
            Backend::Redis(_, tx) => {
                let (done, took) = tokio::sync::oneshot::channel();
                let _ = tx.send((ops, answer.then_some(done)));
                answer.then_some(took)
            }
        }
    }

    fn available(&self) -> bool {
        match &self.backend {
            Backend::Redis(link, _) => link.available(),
            _ => true,
        }
    }

    /// Whether this replica runs the replication passes: always, unless replicas
    /// share a store, where the holder of the planning lease does.
    fn plans(&self) -> bool {
        match &self.backend {
            Backend::Redis(link, _) => link.available() && link.leader(),
            _ => true,
        }
    }

    /// Replaces the state with one loaded from the shared store, keeping this
    /// replica's counters.
    fn replace_state(&self, loaded: store::Loaded, tag: u64) {
        let mut fresh = State::new(self.cfg.timing.clone(), self.cfg.replication.clone());
        fresh.shared = true;
        fresh.set_id_tag(tag);
        fresh.restore(loaded, Instant::now());
        let mut st = self.state();
        fresh.commands_issued = st.commands_issued;
        fresh.commands_acked_ok = st.commands_acked_ok;
        fresh.commands_acked_failed = st.commands_acked_failed;
        fresh.location_queries = st.location_queries;
        *st = fresh;
    }
}

fn store_unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "StoreUnavailable",
        "this control plane cannot reach its shared store (redis); try another replica",
    )
}

/// A replica's follower: loads the snapshot, then applies the log as it grows;
/// after an outage or a gap in the log, loads afresh. Marks the replica available
/// only while it follows.
async fn follow(shared: Arc<Shared>, link: Arc<redis::Link>, cancel: CancellationToken) {
    let mut cursor: Option<redis::Cursor> = None;
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        let Some(cur) = cursor.as_mut() else {
            match link.reload().await {
                Ok((loaded, cur)) => {
                    loaded.log("redis");
                    shared.replace_state(loaded, link.tag());
                    shared.follow.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    cursor = Some(cur);
                    failures = 0;
                    link.set_available(true);
                }
                Err(e) => {
                    link.set_available(false);
                    if failures == 0 {
                        tracing::warn!(error = %e, "cannot load the control-plane state from redis; retrying");
                    }
                    failures += 1;
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
            continue;
        };
        let read = tokio::select! {
            _ = cancel.cancelled() => break,
            r = link.read(cur) => r,
        };
        match read {
            Ok(Some(ops)) => {
                if !link.available() {
                    // A write failed while the log still reads: load afresh.
                    cursor = None;
                    continue;
                }
                let n = ops.len() as u64;
                let now = Instant::now();
                let mut st = shared.state();
                for op in ops {
                    st.apply(op, now);
                }
                drop(st);
                shared.follow.applied.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(None) => cursor = None,
            Err(e) => {
                tracing::warn!(error = %e, "control-plane log: redis did not answer");
                link.set_available(false);
                cursor = None;
            }
        }
    }
}

pub struct ControlHandle {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// The follower and the lease (shared store only).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControlHandle {
    /// Stops serving, gives up the planning lease, and waits until every change is
    /// in the store.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(w) = self.writer {
            let _ = w.await;
        }
    }
}

/// Starts the control plane on `listener` (bound by the caller). With a data dir,
/// state is loaded from the store first.
pub async fn spawn_control_plane(
    cfg: ControlConfig,
    listener: TcpListener,
) -> Result<ControlHandle, ControlError> {
    let addr = listener.local_addr()?;
    let mut state = State::new(cfg.timing.clone(), cfg.replication.clone());
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let (backend, writer) = match (&cfg.redis, &cfg.data_dir) {
        (Some(r), _) => {
            let link = Arc::new(
                redis::Link::new(r.clone(), cfg.timing.dead_after).map_err(ControlError::Redis)?,
            );
            state.shared = true;
            let (tx, rx) = mpsc::unbounded_channel();
            let w = tokio::spawn(redis::writer(link.clone(), rx));
            tasks.push(tokio::spawn(redis::hold_lease(link.clone(), cancel.clone())));
            (Backend::Redis(link, tx), Some(w))
        }
        (None, Some(dir)) => {
            let dir = dir.clone();
            let (store, loaded) = tokio::task::spawn_blocking(move || store::Store::open(&dir))
                .await
                .map_err(|e| store::StoreError::Db(e.to_string()))??;
            loaded.log("the embedded store");
            state.restore(loaded, Instant::now());
            let (tx, rx) = mpsc::unbounded_channel();
            (Backend::Embedded(tx), Some(tokio::spawn(store::writer(store, rx))))
        }
        (None, None) => (Backend::Memory, None),
    };
    let tls = cfg.tls.clone().map(tls::ServerTls::load).transpose().map_err(ControlError::Tls)?;
    let shared = Arc::new(Shared {
        tls,
        cfg: cfg.clone(),
        state: Mutex::new(state),
        backend,
        follow: redis::FollowStats::default(),
        requests: Mutex::default(),
        history: Mutex::default(),
    });
    if let Backend::Redis(link, _) = &shared.backend {
        tasks.push(tokio::spawn(follow(shared.clone(), link.clone(), cancel.clone())));
        // Demand batches for the log, so that whoever plans sees every replica's.
        let s = shared.clone();
        every(&cancel, cfg.replication_interval.clamp(Duration::from_millis(50), Duration::from_secs(1)), move || {
            s.change_later(|st| st.take_demand().into_iter().collect());
        });
    }
    // Replication passes (the first one interval after the start).
    let s = shared.clone();
    every(&cancel, cfg.replication_interval.max(Duration::from_millis(10)), move || {
        if s.plans() {
            s.change_later(|st| st.plan_replication(Instant::now()));
        } else {
            s.state().decay_demand();
        }
    });
    // Dashboard history.
    let s = shared.clone();
    let period = cfg.timing.heartbeat_interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
    every(&cancel, period, move || {
        let sample = s.state().sample(api::unix_ms());
        let mut h = s.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() >= api::HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(sample);
    });
    let app = router(shared.clone());
    let c = cancel.clone();
    let tls = shared.tls.clone();
    if let Some(t) = &tls {
        tasks.push(tokio::spawn(t.clone().watch(cancel.clone())));
    }
    let server = tokio::spawn(async move {
        let stop = async move { c.cancelled().await };
        let r = match tls {
            Some(tls) => match tls::TlsListener::new(listener, tls) {
                Ok(l) => {
                    let app = app.into_make_service_with_connect_info::<tls::ClientCert>();
                    axum::serve(l, app).with_graceful_shutdown(stop).await
                }
                Err(e) => Err(e),
            },
            None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "control plane server failed");
        }
        // Dropping the last sender lets the writer finish.
        drop(shared);
    });
    tracing::info!(%addr, https = cfg.tls.is_some(), "control plane started");
    Ok(ControlHandle {
        addr,
        cancel,
        server,
        writer,
        tasks,
    })
}

/// Runs `f` every `period` (the first time one period after the start) until
/// `cancel`.
fn every(cancel: &CancellationToken, period: Duration, mut f: impl FnMut() + Send + 'static) {
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => f(),
            }
        }
    });
}

/// The OpenAPI document of `/api/v1`.
pub const OPENAPI: &str = include_str!("openapi.json");

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/nodes", post(register).get(list_nodes))
        .route("/nodes/{id}", get(get_node).delete(deregister))
        .route("/nodes/{id}/heartbeat", put(heartbeat))
        .route("/nodes/{id}/chunks", post(report))
        .route("/nodes/{id}/commands", get(commands))
        .route("/nodes/{id}/commands/{cmd}/ack", post(ack))
        .route("/nodes/{id}/commands/{cmd}/progress", post(progress))
        .route("/preheat", post(create_preheat).get(list_preheat))
        .route("/preheat/{job}", get(get_preheat))
        .route("/dashboard", get(dashboard_data))
        .route("/chunks/locations", post(locations))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/dashboard", get(dashboard_page))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/dashboard") }),
        )
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint") })
        .layer(DefaultBodyLimit::max(8 << 20))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
        }),
    )
        .into_response()
}

impl IntoResponse for StateError {
    fn into_response(self) -> Response {
        match self {
            StateError::UnknownNode(id) => error(
                StatusCode::NOT_FOUND,
                "UnknownNode",
                &format!("node {id:?} is not registered"),
            ),
            StateError::UnknownCommand(id) => error(
                StatusCode::NOT_FOUND,
                "UnknownCommand",
                &format!("command {id} is not pending for this node"),
            ),
            StateError::BadChunkId(s) => error(
                StatusCode::BAD_REQUEST,
                "BadChunkId",
                &format!("{s:?} is not a 64-character hex chunk id"),
            ),
            StateError::Invalid(m) => error(StatusCode::BAD_REQUEST, "BadRequest", &m),
        }
    }
}

/// `Json` whose rejections are JSON errors too.
struct ApiJson<T>(T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = rej.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "BodyTooLarge"
                } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    "UnsupportedMediaType"
                } else {
                    "BadJson"
                };
                let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
                    StatusCode::BAD_REQUEST
                } else {
                    status
                };
                Err(error(status, code, &rej.body_text()))
            }
        }
    }
}

async fn count(AxState(s): AxState<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => "other",
    };
    let resp = next.run(req).await;
    *s.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((method, resp.status().as_u16()))
        .or_default() += 1;
    resp
}

/// The 413 answer to a batch over the limit.
fn check_batch(n: usize) -> Option<Response> {
    (n > api::MAX_BATCH).then(|| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BatchTooLarge",
            &format!("{n} chunk ids in one request; at most {}", api::MAX_BATCH),
        )
    })
}

async fn register(
    AxState(s): AxState<Arc<Shared>>,
    certified: Option<axum::Extension<CertifiedFor>>,
    ApiJson(reg): ApiJson<api::Register>,
) -> Response {
    if let Some(refused) = certified.and_then(|c| c.refuses(&reg.node_id)) {
        return refused;
    }
    let id = reg.node_id.clone();
    let r = s.change(|st| st.register(reg, Instant::now()).map(|ops| ((), ops))).await;
    match r {
        Ok(()) => {
            tracing::info!(node = %id, "node registered");
            Json(api::Registered {
                node_id: id,
                heartbeat_interval_ms: s.cfg.timing.heartbeat_interval.as_millis() as u64,
            })
            .into_response()
        }
        Err(e) => e,
    }
}

async fn heartbeat(
    AxState(s): AxState<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(hb): ApiJson<api::Heartbeat>,
) -> Response {
    if let Some(r) = check_batch(hb.hot_chunks.len()) {
        return r;
    }
    let r = s.change(|st| st.heartbeat(&id, hb, Instant::now())).await;
    match r {
        Ok(pending_commands) => {
            Json(api::HeartbeatAck { pending_commands }).into_response()
        }
        Err(e) => e,
    }
}

/// The node list, with a weak ETag over what makes membership (`members_tag`):
/// a node refreshing its members at every heartbeat sends it back in
/// `If-None-Match` and gets 304 with no body until a node joins, leaves,
/// changes status or address. The full list was about 600 bytes a node to each
/// node at each heartbeat: O(n²) bytes, 18 MB in 15 s from the control plane of
/// a 32-node bed, and 7.5 GB/s at 5,000 nodes on 2 s heartbeats.
async fn list_nodes(AxState(s): AxState<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    let st = s.state();
    let now = Instant::now();
    let etag = format!("W/\"{}\"", st.members_tag(now));
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag);
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::ETAG, etag)], Json(api::NodeList { nodes: st.list(now) })).into_response()
}

async fn get_node(AxState(s): AxState<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let st = s.state();
    match st.nodes.get(&id) {
        Some(n) => Json(st.view(n, Instant::now())).into_response(),
        None => StateError::UnknownNode(id).into_response(),
    }
}

async fn deregister(AxState(s): AxState<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let r = s.change(|st| st.deregister(&id).map(|ops| ((), ops))).await;
    match r {
        Ok(()) => {
            tracing::info!(node = %id, "node left");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e,
    }
}

async fn report(
    AxState(s): AxState<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(r): ApiJson<api::ChunkReport>,
) -> Response {
    if let Some(resp) = check_batch(r.added.len() + r.removed.len()) {
        return resp;
    }
    let res = s.change(|st| st.report(&id, r)).await;
    match res {
        Ok(chunks) => {
            Json(api::ReportAck { chunks }).into_response()
        }
        Err(e) => e,
    }
}

async fn locations(
    AxState(s): AxState<Arc<Shared>>,
    ApiJson(q): ApiJson<api::LocationQuery>,
) -> Response {
    if let Some(r) = check_batch(q.chunks.len()) {
        return r;
    }
    let r = s.state().locations(&q, Instant::now());
    match r {
        Ok(locations) => Json(api::Locations { locations }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn commands(AxState(s): AxState<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match s.state().commands(&id) {
        Ok(commands) => Json(api::Commands { commands }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ack(
    AxState(s): AxState<Arc<Shared>>,
    Path((id, cmd)): Path<(String, u64)>,
    ApiJson(a): ApiJson<api::CommandAck>,
) -> Response {
    if let Some(e) = &a.error {
        tracing::warn!(node = %id, command = cmd, error = %e, "replication command failed");
    }
    let r = s.change(|st| st.ack(&id, cmd, &a).map(|ops| ((), ops))).await;
    match r {
        Ok(()) => {
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e,
    }
}

async fn progress(
    AxState(s): AxState<Arc<Shared>>,
    Path((id, cmd)): Path<(String, u64)>,
    ApiJson(p): ApiJson<api::PreheatProgress>,
) -> Response {
    let r = s.change(|st| st.preheat_progress(&id, cmd, p).map(|ops| ((), ops))).await;
    match r {
        Ok(()) => {
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e,
    }
}

async fn create_preheat(
    AxState(s): AxState<Arc<Shared>>,
    ApiJson(req): ApiJson<api::PreheatRequest>,
) -> Response {
    let r = s.change(|st| st.create_preheat(req, Instant::now())).await;
    match r {
        Ok(job) => {
            tracing::info!(
                job = job.id,
                targets = job.targets.len(),
                "preheat job created"
            );
            (StatusCode::CREATED, Json(job)).into_response()
        }
        Err(e) => e,
    }
}

async fn list_preheat(AxState(s): AxState<Arc<Shared>>) -> Response {
    let jobs = s.state().jobs_view(Instant::now());
    Json(api::PreheatJobs { jobs }).into_response()
}

async fn get_preheat(AxState(s): AxState<Arc<Shared>>, Path(job): Path<u64>) -> Response {
    let st = s.state();
    match st.jobs.get(&job) {
        Some(j) => Json(st.job_view(j, Instant::now())).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "UnknownJob",
            &format!("no preheat job {job}"),
        ),
    }
}

async fn dashboard_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        api::DASHBOARD_HTML,
    )
        .into_response()
}

async fn dashboard_data(AxState(s): AxState<Arc<Shared>>) -> Response {
    let history: Vec<api::Sample> = s
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let st = s.state();
    let now = Instant::now();
    Json(api::Dashboard {
        scope: "cluster".into(),
        nodes: st.list(now),
        history,
        hot_chunks: st.hot(20, now),
        jobs: st.jobs_view(now).into_iter().take(20).collect(),
    })
    .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
