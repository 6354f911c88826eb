//! Turning an HTTP request into an S3 target (bucket and key), path-style or
//! virtual-host style, without normalising the key.

use http::HeaderMap;
use http::header::HOST;

/// What an S3 request addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Target {
    /// `None` for service-level requests (ListBuckets).
    pub bucket: Option<String>,
    /// `None` for bucket-level requests (an empty key is a bucket request); the
    /// percent-decoded key otherwise, byte for byte.
    pub key: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadTarget(pub &'static str);

fn decode(s: &str) -> Result<String, BadTarget> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    String::from_utf8(bytes)
        .map_err(|_| BadTarget("the request path is not valid UTF-8 after percent-decoding"))
}

/// The bucket named by the Host header, if the host is `<bucket>.<domain>` for one of
/// the configured virtual-host domains.
fn virtual_bucket<'a>(headers: &'a HeaderMap, domains: &[String]) -> Option<&'a str> {
    let host = headers.get(HOST)?.to_str().ok()?;
    if host.starts_with('[') {
        return None; // IPv6 literal: always path style
    }
    let host = host.rsplit_once(':').map_or(host, |(h, _port)| h);
    domains.iter().find_map(|d| {
        let prefix = host.strip_suffix(d.as_str())?.strip_suffix('.')?;
        (!prefix.is_empty()).then_some(prefix)
    })
}

/// Whether the request names its bucket in the Host header (virtual-host style).
pub fn is_virtual_host(headers: &HeaderMap, domains: &[String]) -> bool {
    virtual_bucket(headers, domains).is_some()
}

/// Parses the target of a request from its raw (still percent-encoded) path and Host.
pub fn parse_target(
    raw_path: &str,
    headers: &HeaderMap,
    domains: &[String],
) -> Result<S3Target, BadTarget> {
    let path = raw_path
        .strip_prefix('/')
        .ok_or(BadTarget("the request path must start with '/'"))?;
    if let Some(bucket) = virtual_bucket(headers, domains) {
        let key = decode(path)?;
        return Ok(S3Target {
            bucket: Some(bucket.to_owned()),
            key: (!key.is_empty()).then_some(key),
        });
    }
    if path.is_empty() {
        return Ok(S3Target {
            bucket: None,
            key: None,
        });
    }
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b, k),
        None => (path, ""),
    };
    let bucket = decode(bucket)?;
    if bucket.is_empty() {
        return Err(BadTarget("empty bucket name"));
    }
    let key = decode(key)?;
    Ok(S3Target {
        bucket: Some(bucket),
        key: (!key.is_empty()).then_some(key),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    fn t(b: Option<&str>, k: Option<&str>) -> S3Target {
        S3Target {
            bucket: b.map(Into::into),
            key: k.map(Into::into),
        }
    }

    #[test]
    fn path_style() {
        let d = vec!["localhost".to_owned()];
        let h = host("127.0.0.1:8080");
        assert_eq!(parse_target("/", &h, &d), Ok(t(None, None)));
        assert_eq!(parse_target("/b", &h, &d), Ok(t(Some("b"), None)));
        assert_eq!(parse_target("/b/", &h, &d), Ok(t(Some("b"), None)));
        assert_eq!(
            parse_target("/b/a//c", &h, &d),
            Ok(t(Some("b"), Some("a//c")))
        );
        assert_eq!(
            parse_target("/b/a/./c", &h, &d),
            Ok(t(Some("b"), Some("a/./c")))
        );
        assert_eq!(
            parse_target("/b/%2e%2e/x", &h, &d),
            Ok(t(Some("b"), Some("../x")))
        );
        assert_eq!(
            parse_target("/b/a+b%20c%C3%BC", &h, &d),
            Ok(t(Some("b"), Some("a+b cü")))
        );
        assert!(parse_target("/b/%FF", &h, &d).is_err());
        assert!(parse_target("//k", &h, &d).is_err());
        assert!(parse_target("*", &h, &d).is_err());
    }

    #[test]
    fn virtual_host_style() {
        let d = vec!["localhost".to_owned(), "s3.example.com".to_owned()];
        assert_eq!(
            parse_target("/k/x", &host("bkt.localhost:8080"), &d),
            Ok(t(Some("bkt"), Some("k/x")))
        );
        assert_eq!(
            parse_target("/", &host("my.bkt.s3.example.com"), &d),
            Ok(t(Some("my.bkt"), None))
        );
        assert_eq!(
            parse_target("/b/k", &host("localhost:8080"), &d),
            Ok(t(Some("b"), Some("k")))
        );
        assert_eq!(
            parse_target("/b/k", &host("other.host"), &d),
            Ok(t(Some("b"), Some("k")))
        );
    }
}
