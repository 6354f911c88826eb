//! Object metadata as the origin reports it on HEAD.

use std::time::SystemTime;

use eliop2p_core::ETag;
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// What the node needs to answer a GET from cache: identity (ETag), size, dates and
/// the representation headers the origin would have sent itself.
#[derive(Clone, Debug)]
pub struct ObjectMeta {
    pub etag: ETag,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// Content-Type, Cache-Control, x-amz-meta-*, ... copied verbatim to responses.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole object's `x-amz-checksum-*` headers, sent on whole-object answers
    /// to clients that ask for checksums (`x-amz-checksum-mode: ENABLED`);
    /// `None` when learned from a partial answer, which carries none.
    pub checksums: Option<Vec<(HeaderName, HeaderValue)>>,
}

/// Asks an S3 origin for the object's checksums (it sends them only when asked).
pub const CHECKSUM_MODE: &str = "x-amz-checksum-mode";

fn is_checksum(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-amz-checksum-") && name.as_str() != CHECKSUM_MODE
}

/// Representation headers worth replaying on cached responses.
fn is_replayed(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type"
            | "content-encoding"
            | "content-disposition"
            | "content-language"
            | "cache-control"
            | "expires"
            | "x-amz-version-id"
            | "x-amz-storage-class"
            | "x-amz-website-redirect-location"
            | "x-amz-server-side-encryption"
    ) || n.starts_with("x-amz-meta-")
}

impl ObjectMeta {
    /// Builds metadata from a successful HEAD (or GET) response; `None` when the
    /// response lacks an ETag or a length, which the cache cannot work without.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let size = headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        Self::with_size(headers, size, true)
    }

    /// Builds metadata from a 206 answer to a ranged GET: the object size is the
    /// total in `Content-Range: bytes a-b/total`.
    pub fn from_partial_response(headers: &HeaderMap) -> Option<Self> {
        let cr = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
        let (range, total) = cr.strip_prefix("bytes ")?.split_once('/')?;
        let total: u64 = total.parse().ok()?;
        // A range covering every byte is the whole object, checksums included.
        let whole = total > 0 && range == format!("0-{}", total - 1);
        Self::with_size(headers, total, whole)
    }

    /// The version validator of a response: its ETag, or for plain HTTP origins that
    /// send none, one derived from `Last-Modified` and the size
    /// (`W/"lm-<unix seconds>-<size>"`, see [`ETag::is_synthetic`]).
    pub fn validator(headers: &HeaderMap, size: u64) -> Option<ETag> {
        if let Some(v) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
            return Some(ETag::new(v));
        }
        let lm = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())?;
        let secs = lm.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(ETag::new(&format!("W/\"lm-{secs}-{size}\"")))
    }

    fn with_size(headers: &HeaderMap, size: u64, whole: bool) -> Option<Self> {
        let etag = Self::validator(headers, size)?;
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        let checksums = whole.then(|| {
            headers
                .iter()
                .filter(|(n, _)| is_checksum(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect()
        });
        let headers = headers
            .iter()
            .filter(|(n, _)| is_replayed(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Some(Self {
            etag,
            size,
            last_modified,
            headers,
            checksums,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_etag_and_length() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(ObjectMeta::from_headers(&h).is_none());
        h.insert(header::ETAG, HeaderValue::from_static("\"x\""));
        h.insert("x-amz-meta-a", HeaderValue::from_static("1"));
        h.insert(header::SERVER, HeaderValue::from_static("s"));
        let m = ObjectMeta::from_headers(&h).unwrap();
        assert_eq!(m.size, 5);
        assert_eq!(m.headers.len(), 1);
    }

    #[test]
    fn size_from_content_range() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"x\""));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-9/12345"),
        );
        assert_eq!(ObjectMeta::from_partial_response(&h).unwrap().size, 12345);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-9/*"),
        );
        assert!(ObjectMeta::from_partial_response(&h).is_none());
    }
}
