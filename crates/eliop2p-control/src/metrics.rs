//! `/metrics` of the control plane (Prometheus text format).

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use eliop2p_core::prom::{self, Kind};
use tokio::time::Instant;

use crate::{Backend, Shared};

pub(crate) async fn metrics(AxState(s): AxState<Arc<Shared>>) -> Response {
    let mut out = String::new();
    {
        let st = s.state();
        let now = Instant::now();
        let mut by_status = [0u64; 3];
        for n in st.nodes.values() {
            by_status[st.status(n, now) as usize] += 1;
        }
        prom::family(
            &mut out,
            "eliop2p_control_nodes",
            Kind::Gauge,
            "Registered nodes by status.",
            [
                ("status=\"online\"", by_status[0]),
                ("status=\"suspect\"", by_status[1]),
                ("status=\"dead\"", by_status[2]),
            ],
        );
        prom::family(
            &mut out,
            "eliop2p_control_chunks",
            Kind::Gauge,
            "Chunks with at least one reported holder.",
            [("", st.chunk_count() as u64)],
        );
        prom::family(
            &mut out,
            "eliop2p_control_location_queries_total",
            Kind::Counter,
            "Location queries answered.",
            [("", st.location_queries)],
        );
        prom::family(
            &mut out,
            "eliop2p_control_commands_total",
            Kind::Counter,
            "Replication commands issued and acknowledged.",
            [
                ("state=\"issued\"", st.commands_issued),
                ("state=\"ok\"", st.commands_acked_ok),
                ("state=\"failed\"", st.commands_acked_failed),
            ],
        );
        let mut jobs = [0u64; 3];
        for j in st.jobs_view(now) {
            jobs[j.state as usize] += 1;
        }
        prom::family(
            &mut out,
            "eliop2p_control_preheat_jobs",
            Kind::Gauge,
            "Preheat jobs kept, by state.",
            [
                ("state=\"running\"", jobs[0]),
                ("state=\"succeeded\"", jobs[1]),
                ("state=\"failed\"", jobs[2]),
            ],
        );
    }
    if let Backend::Redis(..) = &s.backend {
        use std::sync::atomic::Ordering::Relaxed;
        prom::family(
            &mut out,
            "eliop2p_control_store_available",
            Kind::Gauge,
            "1 while this replica reaches its shared store (redis) and follows its log.",
            [("", s.available() as u64)],
        );
        prom::family(
            &mut out,
            "eliop2p_control_planning",
            Kind::Gauge,
            "1 while this replica holds the planning lease.",
            [("", s.plans() as u64)],
        );
        prom::family(
            &mut out,
            "eliop2p_control_store_loads_total",
            Kind::Counter,
            "Snapshots loaded from the shared store (at start and after each outage).",
            [("", s.follow.reloads.load(Relaxed))],
        );
        prom::family(
            &mut out,
            "eliop2p_control_log_changes_total",
            Kind::Counter,
            "Changes applied from the replicas' log.",
            [("", s.follow.applied.load(Relaxed))],
        );
    }
    if let Some(tls) = &s.tls {
        let failures = tls.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        prom::family(
            &mut out,
            "eliop2p_control_tls_handshake_failures_total",
            Kind::Counter,
            "TLS handshakes on the control plane's listener that failed, by reason.",
            crate::tls::REASONS.map(|r| (format!("reason=\"{r}\""), failures.get(r).copied().unwrap_or(0))),
        );
        prom::family(
            &mut out,
            "eliop2p_control_tls_reloads_total",
            Kind::Counter,
            "Times the control plane's TLS files were read again after a change or SIGHUP.",
            [("", tls.reloads.load(std::sync::atomic::Ordering::Relaxed))],
        );
    }
    let rows: Vec<(String, u64)> = s
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|((m, st), v)| (format!("method=\"{m}\",status=\"{st}\""), *v))
        .collect();
    prom::family(
        &mut out,
        "eliop2p_control_requests_total",
        Kind::Counter,
        "API requests by method and status.",
        rows,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
