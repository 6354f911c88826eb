//! Listing a prefix (ListObjectsV2, every page).

use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::client::{OriginClient, OriginError, OriginKind, OriginRequest};

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// A non-200 answer, with its body (an S3 XML error, usually).
    #[error("listing answered {status}")]
    Status { status: StatusCode, body: String },
    #[error("reading the listing: {0}")]
    Body(String),
    #[error("more than {0} objects under the prefix")]
    TooMany(usize),
}

impl OriginClient {
    /// Every object key under `prefix`, following continuation tokens; folder
    /// markers (keys ending in `/`) are left out; more than `max` keys is an error.
    /// A plain-HTTP client lists at its endpoint's own path (an endpoint that ends
    /// in the bucket, e.g. an unsigned client of a node).
    pub async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<String>, ListError> {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = format!("list-type=2&prefix={}", enc(prefix));
            if let Some(t) = &token {
                q.push_str("&continuation-token=");
                q.push_str(&enc(t));
            }
            let mut req = OriginRequest::new(Method::GET, bucket, None);
            if self.kind() == OriginKind::Http {
                req.bucket = None;
                req.key = Some(String::new());
            }
            req.query = Some(q);
            let resp = self.send(req).await?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ListError::Body(e.to_string()))?
                .to_bytes();
            let text = String::from_utf8_lossy(&body);
            if status != StatusCode::OK {
                return Err(ListError::Status {
                    status,
                    body: text.into_owned(),
                });
            }
            let (page, next) = eliop2p_core::s3xml::parse_list_v2(&text);
            keys.extend(page.into_iter().filter(|k| !k.ends_with('/')));
            if keys.len() > max {
                return Err(ListError::TooMany(max));
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
    }
}
