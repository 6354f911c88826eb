//! The operator commands' client for the control plane (`status`, `preheat`).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use eliop2p::config::Effective;
use crate::get::{EXIT_DENIED, EXIT_NODE, EXIT_NOT_FOUND, EXIT_USAGE, ExitError};

pub struct Cp {
    /// The control-plane replicas, tried in order.
    endpoints: Vec<String>,
    token: String,
    http: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

fn fail(code: u8, message: String) -> anyhow::Error {
    ExitError { code, message }.into()
}

impl Cp {
    pub fn new(eff: &Effective) -> anyhow::Result<Self> {
        let endpoints = eff.get_list("control_plane.endpoint");
        if endpoints.is_empty() {
            return Err(fail(
                EXIT_USAGE,
                "config key control_plane.endpoint is required (the control plane to ask)".into(),
            ));
        }
        let ca = eff.control_plane_ca().map_err(|e| fail(EXIT_USAGE, format!("{e:#}")))?;
        let identity = eff.control_plane_identity().map_err(|e| fail(EXIT_USAGE, format!("{e:#}")))?;
        let connector = eliop2p_origin::https_connector(ca.as_deref(), identity.as_ref(), Duration::from_secs(5), "control_plane.ca_file")
            .map_err(|e| fail(EXIT_USAGE, format!("config key {e}")))?;
        Ok(Self {
            endpoints: endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect(),
            token: eff.get_str("control_plane.token"),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        })
    }

    /// Sends a JSON request to the first replica that answers: one unreachable,
    /// silent for 10 s or answering 5xx passes the request to the next. A
    /// non-success answer becomes an [`ExitError`] with the control plane's
    /// message (the last replica's, when none answered).
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let mut last = None;
        for endpoint in &self.endpoints {
            match self.call_one(endpoint, method.clone(), path, body.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let next = e.downcast_ref::<ExitError>().is_some_and(|x| x.code == EXIT_NODE);
                    last = Some(e);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(last.expect("at least one endpoint (checked in new)"))
    }

    async fn call_one<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let url = format!("{endpoint}{path}");
        let mut req = http::Request::builder().method(method).uri(&url);
        if !self.token.is_empty() {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| {
                fail(
                    EXIT_USAGE,
                    format!("config key control_plane.endpoint: {url:?}: {e}"),
                )
            })?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|_| {
                fail(
                    EXIT_NODE,
                    format!(
                        "control plane at {endpoint} did not answer within 10 s"
                    ),
                )
            })?
            .map_err(|e| {
                let mut why = eliop2p_origin::error_chain(&e);
                if why.contains("certificate") || why.contains("UnknownIssuer") {
                    why.push_str(" (its TLS certificate is not trusted: control_plane.ca_file adds a CA bundle to the system's roots)");
                }
                fail(EXIT_NODE, format!("control plane at {endpoint} unreachable: {why}"))
            })?;
        let code = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !code.is_success() {
            let exit = match code {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => EXIT_DENIED,
                StatusCode::NOT_FOUND => EXIT_NOT_FOUND,
                c if c.is_server_error() => EXIT_NODE,
                _ => EXIT_USAGE,
            };
            return Err(fail(
                exit,
                format!(
                    "control plane answered {code}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            fail(
                EXIT_NODE,
                format!("control plane sent an unexpected answer: {e}"),
            )
        })
    }
}
