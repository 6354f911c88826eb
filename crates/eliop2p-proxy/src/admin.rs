//! The admin listener: `/metrics` (Prometheus text), `/stats` (JSON), `/healthz`,
//! and the single-node dashboard (`/dashboard`, data at `/api/v1/dashboard`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eliop2p_cluster::api;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::state::ProxyState;

type History = Arc<Mutex<VecDeque<api::Sample>>>;

/// The node as one row of the dashboard.
fn view(state: &ProxyState, admin: SocketAddr, history: &History) -> api::NodeView {
    let me = state.reader.p2p.as_ref().and_then(|p| p.me());
    let hb = crate::cluster::heartbeat_of(state);
    api::NodeView {
        node_id: me
            .as_ref()
            .map_or_else(|| "this node".into(), |m| m.id.clone()),
        p2p_addr: me
            .as_ref()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |m| m.p2p),
        proxy_addr: me.as_ref().and_then(|m| m.proxy),
        admin_addr: Some(admin),
        capacity: api::Capacity {
            memory_bytes: state.reader.cache.memory_capacity(),
            disk_bytes: state.reader.cache.disk_capacity(),
        },
        labels: me
            .as_ref()
            .filter(|m| !m.zone.is_empty())
            .map(|m| [("zone".to_owned(), m.zone.clone())].into())
            .unwrap_or_default(),
        status: api::NodeStatus::Online,
        last_seen_ms: 0,
        chunks_reported: hb.chunks,
        heartbeat: hb,
        rates: rates(history),
    }
}

/// Rates between the last two samples.
fn rates(history: &History) -> api::Rates {
    let h = history.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(b), Some(a)) = (h.back(), h.iter().rev().nth(1)) else {
        return api::Rates::default();
    };
    let dt = (b.t_ms.saturating_sub(a.t_ms)) as f64 / 1000.0;
    if dt <= 0.0 {
        return api::Rates::default();
    }
    let r = |new: u64, old: u64| new.saturating_sub(old) as f64 / dt;
    api::Rates {
        served: r(
            b.origin + b.peer + b.memory + b.disk,
            a.origin + a.peer + a.memory + a.disk,
        ),
        from_origin: r(b.origin, a.origin),
        from_peers: r(b.peer, a.peer),
        to_peers: r(b.to_peers, a.to_peers),
    }
}

fn dashboard(state: &ProxyState, admin: SocketAddr, history: &History) -> String {
    let d = api::Dashboard {
        scope: "node".into(),
        nodes: vec![view(state, admin, history)],
        history: history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect(),
        hot_chunks: state
            .reader
            .cache
            .hot_chunks_with_heat(20)
            .into_iter()
            .map(|(id, heat)| api::HotChunk {
                chunk: id.to_hex(),
                score: heat,
                replicas: None,
            })
            .collect(),
        jobs: Vec::new(),
    };
    serde_json::to_string(&d).expect("serializes")
}

fn answer(
    state: &ProxyState,
    req: &Request<Incoming>,
    admin: SocketAddr,
    history: &History,
) -> Response<ProxyBody> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.render_metrics(),
        ),
        "/stats" => (
            StatusCode::OK,
            "application/json",
            state.metrics.stats_json(&state.reader.cache).to_string(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/dashboard" | "/" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            api::DASHBOARD_HTML.to_owned(),
        ),
        "/api/v1/dashboard" => (
            StatusCode::OK,
            "application/json",
            dashboard(state, admin, history),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /stats, /healthz or /dashboard\n".to_owned(),
        ),
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

pub(crate) async fn run(
    listener: TcpListener,
    state: Arc<ProxyState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let Ok(admin) = listener.local_addr() else {
        return;
    };
    let history: History = Arc::default();
    // One sample a second for the dashboard's chart.
    {
        let (state, history, cancel) = (state.clone(), history.clone(), cancel.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        let mut s = api::Sample { t_ms: api::unix_ms(), ..Default::default() };
                        s.add(&crate::cluster::heartbeat_of(&state));
                        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                        if h.len() >= api::HISTORY_LEN {
                            h.pop_front();
                        }
                        h.push_back(s);
                    }
                }
            }
        });
    }
    crate::listen::serve(listener, cancel, tracker.clone(), 256, std::time::Duration::from_secs(60), move |req| {
        let resp = answer(&state, &req, admin, &history);
        async move { resp }
    })
    .await
}
