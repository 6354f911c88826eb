//! Authentication of `/api/v1`: the bearer token, or a client certificate of
//! `control_plane.client_ca` that may change the state of the nodes it names only.

use std::sync::Arc;

use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::{Shared, error, store_unavailable, tls};

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The nodes a request's client certificate names, when the certificate (not
/// the token) authenticated it: a request that changes a node's state must come
/// from a certificate naming that node.
#[derive(Clone, Debug)]
pub(crate) struct CertifiedFor(Arc<[String]>);

impl CertifiedFor {
    /// `None` when the certificate names `node`, else the 403 to answer.
    pub(crate) fn refuses(&self, node: &str) -> Option<Response> {
        (!self.0.iter().any(|n| n == node)).then(|| {
            error(
                StatusCode::FORBIDDEN,
                "CertificateNotForNode",
                &format!(
                    "the client certificate names {:?}, not node {node:?} (a DNS SAN or URI SAN eliop2p://node/<id> must name it; or use control_plane.token)",
                    self.0
                ),
            )
        })
    }
}

pub(crate) async fn auth(
    AxState(s): AxState<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    // A client certificate of control_plane.client_ca stands in for the token.
    let certified: Option<Arc<[String]>> = req
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::ClientCert>>()
        .and_then(|c| c.0.0.clone());
    let (mut parts, body) = req.into_parts();
    if let Some(names) = &certified {
        // A change to a node's state, by its path, from a certificate of another.
        let certified_for = CertifiedFor(names.clone());
        if parts.method != axum::http::Method::GET
            && let Ok(params) = <axum::extract::RawPathParams as axum::extract::FromRequestParts<_>>::from_request_parts(&mut parts, &s).await
            && let Some((_, node)) = params.iter().find(|(k, _)| *k == "id")
            && let Some(refused) = certified_for.refuses(node)
        {
            return refused;
        }
        parts.extensions.insert(certified_for);
    }
    let req = Request::from_parts(parts, body);
    if let Some(token) = s.cfg.token.as_ref().filter(|_| certified.is_none()) {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {}
            Some(_) => return error(StatusCode::UNAUTHORIZED, "BadToken", "wrong token"),
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "MissingToken",
                    "send Authorization: Bearer <control_plane.token>",
                );
            }
        }
    }
    if !s.available() {
        return store_unavailable();
    }
    next.run(req).await
}
