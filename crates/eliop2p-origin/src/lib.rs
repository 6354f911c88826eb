//! Client for the object storage behind the cache: S3-compatible storage and
//! Alibaba Cloud OSS.
//!
//! Owns everything about talking to the origin: addressing (path or virtual-host
//! style), signing with the node's credentials (AWS SigV4 by [`sigv4`], over the
//! bytes sent; OSS V1 HMAC-SHA1 or OSS V4 by `reqsign`), presigned URLs, pooled http/https
//! connections, timeouts, and retries with backoff on 5xx and connection errors.
//! It never normalises object keys: the key bytes the client named are the key bytes
//! the origin sees.

mod client;
mod credentials;
pub use credentials::{CredentialSettings, CredentialSource, Credentials, Keys};
mod list;
mod meta;
pub mod sigv4;
mod tls;
pub use tls::{ClientIdentity, TlsConfig, https_connector, load_ca_file};

pub use client::{
    Addressing, OriginBody, OriginClient, OriginConfig, OriginError, OriginKind, OriginRequest,
    OssSignature, empty_body, error_chain, full_body, oss_signer,
};
pub use list::ListError;
pub use meta::{CHECKSUM_MODE, ObjectMeta};

/// Percent-encodes an object key for a URI path the way S3 canonicalises it: every
/// byte but unreserved characters and `/` is escaped, so that the signature the origin
/// recomputes matches and the key bytes arrive unchanged.
pub fn encode_key(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, &KEY_ENCODE_SET).to_string()
}

/// Whether a key has a `.` or `..` path segment (`/` or `\\` separated). S3 keeps
/// such keys as bytes; a plain HTTP server resolves them, outside the endpoint's
/// path, so they are never sent to one.
pub fn has_dot_segment(key: &str) -> bool {
    key.split(['/', '\\']).any(|s| s == "." || s == "..")
}

const KEY_ENCODE_SET: percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

#[cfg(test)]
mod tests {
    #[test]
    fn key_encoding_keeps_bytes() {
        assert_eq!(super::encode_key("a b+c/ü/./x"), "a%20b%2Bc/%C3%BC/./x");
        assert_eq!(super::encode_key("a//b"), "a//b");
    }

    #[test]
    fn dot_segments() {
        for k in ["..", "../x", "a/../b", "a/..", "./a", "a/./b", "a\\..\\b"] {
            assert!(super::has_dot_segment(k), "{k}");
        }
        for k in ["a..b", "...", "a/.b/c", ".hidden", "a/b.."] {
            assert!(!super::has_dot_segment(k), "{k}");
        }
    }
}
