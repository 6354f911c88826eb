//! The operator commands' client for the control plane (`status`, `preheat`).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use eliop2p::config::Effective;
use crate::get::{EXIT_DENIED, EXIT_NODE, EXIT_NOT_FOUND, EXIT_USAGE, ExitError};

pub struct Cp {
    endpoint: String,
    token: String,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

fn fail(code: u8, message: String) -> anyhow::Error {
    ExitError { code, message }.into()
}

impl Cp {
    pub fn new(eff: &Effective) -> anyhow::Result<Self> {
        let endpoint = eff.get_str("control_plane.endpoint");
        if endpoint.is_empty() {
            return Err(fail(
                EXIT_USAGE,
                "config key control_plane.endpoint is required (the control plane to ask)".into(),
            ));
        }
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token: eff.get_str("control_plane.token"),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        })
    }

    /// Sends a JSON request; a non-success answer becomes an [`ExitError`] with
    /// the control plane's message.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.endpoint);
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
                        "control plane at {} did not answer within 10 s",
                        self.endpoint
                    ),
                )
            })?
            .map_err(|e| {
                fail(
                    EXIT_NODE,
                    format!("control plane at {} unreachable: {e}", self.endpoint),
                )
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
