//! The admin listener: `/metrics` (Prometheus text), `/stats` (JSON) and `/healthz`.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::server::ProxyState;

fn answer(state: &ProxyState, req: &Request<Incoming>) -> Response<ProxyBody> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.render_metrics(),
        ),
        "/stats" => (
            StatusCode::OK,
            "application/json",
            state.metrics.stats_json(&state.cache).to_string(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /stats or /healthz\n".to_owned(),
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
    crate::server::serve(listener, cancel, tracker.clone(), move |req| {
        let resp = answer(&state, &req);
        async move { resp }
    })
    .await
}
