//! Verification of clients' AWS Signature V4 (header `Authorization` or presigned
//! query) against the access keys configured for the node (`proxy.client_keys`), for
//! node auth mode: the node answers only clients that prove a configured key.
//!
//! The canonical request is rebuilt from the request exactly as received: the raw
//! path with its percent-encoding normalised (never `.`/`..`-resolved), the query
//! sorted, the signed headers trimmed. Header signatures must be within 15 minutes
//! of the node's clock; presigned URLs until `X-Amz-Date + X-Amz-Expires`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

/// Configured client keys: access key id -> secret.
#[derive(Clone, Debug, Default)]
pub struct ClientKeys(HashMap<String, String>);

impl ClientKeys {
    /// From `ACCESS:SECRET` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut m = HashMap::new();
        for e in entries {
            let (a, s) = e
                .split_once(':')
                .filter(|(a, s)| !a.is_empty() && !s.is_empty())
                .ok_or_else(|| "entries must be ACCESS_KEY:SECRET_KEY".to_owned())?;
            m.insert(a.to_owned(), s.to_owned());
        }
        Ok(Self(m))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a `Proxy-Authorization` value proves a configured key: `Basic`
    /// with `ACCESS_KEY:SECRET` (what HTTP proxy clients send for
    /// `http://ACCESS_KEY:SECRET@node:8080`). Forward-proxy and CONNECT requests
    /// carry the origin's signature, not ours, so this is how they prove a key.
    pub fn check_proxy_authorization(&self, value: &str) -> bool {
        use base64::Engine;
        let Some(b64) = value.trim().strip_prefix("Basic ").or_else(|| value.trim().strip_prefix("basic ")) else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Some((access, secret)) = std::str::from_utf8(&raw).ok().and_then(|s| s.split_once(':')) else {
            return false;
        };
        self.0.get(access).is_some_and(|want| same_secret(want, secret))
    }
}

/// Why a request was refused, with the S3 error code the origin would use.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    UnknownKey,
    BadSignature,
    Expired,
    Malformed(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "AccessDenied",
            AuthError::UnknownKey => "InvalidAccessKeyId",
            AuthError::BadSignature => "SignatureDoesNotMatch",
            AuthError::Expired => "AccessDenied",
            AuthError::Malformed(_) => "AuthorizationQueryParametersError",
        }
    }

    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "Anonymous access is not allowed: sign the request".into(),
            AuthError::UnknownKey => "The access key id is not configured on this node".into(),
            AuthError::BadSignature => "The request signature does not match".into(),
            AuthError::Expired => "Request has expired".into(),
            AuthError::Malformed(m) => m.clone(),
        }
    }
}

use eliop2p_origin::sigv4::{canonical_query, canonical_request, query_pairs, signature};
pub(crate) use eliop2p_origin::sigv4::parse_amz_date;

struct Parsed {
    access: String,
    scope: String,
    date: String,
    signed_headers: Vec<String>,
    signature: String,
    presigned: bool,
    expires: Option<u64>,
}

fn parse_header_auth(v: &str) -> Result<Parsed, AuthError> {
    let rest = v.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(|| {
        AuthError::Malformed("only AWS4-HMAC-SHA256 signatures are accepted".into())
    })?;
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(c) = part.strip_prefix("Credential=") {
            cred = Some(c);
        } else if let Some(s) = part.strip_prefix("SignedHeaders=") {
            signed = Some(s);
        } else if let Some(s) = part.strip_prefix("Signature=") {
            sig = Some(s);
        }
    }
    let (cred, signed, sig) = match (cred, signed, sig) {
        (Some(c), Some(h), Some(s)) => (c, h, s),
        _ => {
            return Err(AuthError::Malformed(
                "Authorization header lacks Credential, SignedHeaders or Signature".into(),
            ));
        }
    };
    let (access, scope) = cred
        .split_once('/')
        .ok_or_else(|| AuthError::Malformed("bad Credential".into()))?;
    Ok(Parsed {
        access: access.to_owned(),
        scope: scope.to_owned(),
        date: String::new(),
        signed_headers: signed.split(';').map(str::to_owned).collect(),
        signature: sig.to_owned(),
        presigned: false,
        expires: None,
    })
}

/// How far a request's date may be from the node's clock (S3's own limit).
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Verifies a request's SigV4 signature; returns the access key that signed it.
///
/// The steps, each its own function: read the signature's fields (header or
/// presigned query), look up the key, check the date (`check_time`) and the
/// scope and signed headers (`check_scope`), then rebuild the canonical request
/// and compare signatures in constant time.
pub fn verify(
    keys: &ClientKeys,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<String, AuthError> {
    let pairs = query_pairs(uri.query().unwrap_or(""));
    let mut p = if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        let mut p = parse_header_auth(
            auth.to_str()
                .map_err(|_| AuthError::Malformed("bad Authorization header".into()))?,
        )?;
        p.date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| AuthError::Malformed("x-amz-date is required".into()))?;
        p
    } else {
        parse_presigned(&pairs)?.ok_or(AuthError::Missing)?
    };
    let secret = keys.0.get(&p.access).ok_or(AuthError::UnknownKey)?;
    check_time(&p, now)?;
    check_scope(&mut p)?;
    let payload = if p.presigned {
        eliop2p_origin::sigv4::UNSIGNED_PAYLOAD.to_owned()
    } else {
        headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| hex::encode(Sha256::digest(b"")))
    };
    let canonical = canonical_request(
        method.as_str(),
        uri.path(),
        &canonical_query(&pairs, p.presigned),
        headers,
        &p.signed_headers,
        &payload,
    )
    .map_err(|h| AuthError::Malformed(format!("signed header {h} is missing")))?;
    let expected = signature(secret, &p.date, &p.scope, &canonical);
    if same_secret(&expected, &p.signature.to_ascii_lowercase()) {
        Ok(p.access)
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Whether two secrets (or signatures) are equal, in a time that does not
/// depend on where they first differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fields of a presigned URL's query; `None` when it is not presigned.
fn parse_presigned(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Parsed>, AuthError> {
    let q = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let Some(alg) = q("X-Amz-Algorithm") else { return Ok(None) };
    if alg != "AWS4-HMAC-SHA256" {
        return Err(AuthError::Malformed(
            "only AWS4-HMAC-SHA256 presigned URLs are accepted".into(),
        ));
    }
    let cred = q("X-Amz-Credential")
        .ok_or_else(|| AuthError::Malformed("X-Amz-Credential missing".into()))?;
    let (access, scope) = cred
        .split_once('/')
        .ok_or_else(|| AuthError::Malformed("bad X-Amz-Credential".into()))?;
    Ok(Some(Parsed {
        access: access.to_owned(),
        scope: scope.to_owned(),
        date: q("X-Amz-Date").ok_or_else(|| AuthError::Malformed("X-Amz-Date missing".into()))?,
        signed_headers: q("X-Amz-SignedHeaders")
            .ok_or_else(|| AuthError::Malformed("X-Amz-SignedHeaders missing".into()))?
            .split(';')
            .map(str::to_owned)
            .collect(),
        signature: q("X-Amz-Signature")
            .ok_or_else(|| AuthError::Malformed("X-Amz-Signature missing".into()))?,
        presigned: true,
        expires: Some(
            q("X-Amz-Expires")
                .and_then(|e| e.parse().ok())
                .filter(|e| (1..=7 * 24 * 3600).contains(e))
                .ok_or_else(|| AuthError::Malformed("X-Amz-Expires must be 1-604800".into()))?,
        ),
    }))
}

/// A header signature within `MAX_SKEW` of `now`; a presigned URL not expired
/// and not dated beyond the skew into the future.
fn check_time(p: &Parsed, now: SystemTime) -> Result<(), AuthError> {
    let signed_at =
        parse_amz_date(&p.date).ok_or_else(|| AuthError::Malformed("bad X-Amz-Date".into()))?;
    match p.expires {
        Some(e) => {
            if now > signed_at + Duration::from_secs(e) {
                return Err(AuthError::Expired);
            }
            // Dated in the future (beyond clock skew): the 7-day cap would mean
            // nothing. S3 answers such URLs AccessDenied as well.
            if signed_at > now + MAX_SKEW {
                return Err(AuthError::Malformed("X-Amz-Date is in the future".into()));
            }
        }
        None => {
            let skew = now
                .duration_since(signed_at)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap_or_default();
            if skew > MAX_SKEW {
                return Err(AuthError::Expired);
            }
        }
    }
    Ok(())
}

/// The scope is `DATE/REGION/SERVICE/aws4_request` with the request's date,
/// and `host` is signed; the signed header names are lowercased.
fn check_scope(p: &mut Parsed) -> Result<(), AuthError> {
    let scope_parts: Vec<&str> = p.scope.split('/').collect();
    if scope_parts.len() != 4
        || scope_parts[3] != "aws4_request"
        || !p.date.starts_with(scope_parts[0])
    {
        return Err(AuthError::Malformed("bad credential scope".into()));
    }
    p.signed_headers
        .iter_mut()
        .for_each(|h| h.make_ascii_lowercase());
    // SigV4 requires `host` among the signed headers: without it a signature is
    // not bound to the endpoint it was made for.
    if !p.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Malformed("SignedHeaders must include host".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_documented_get_object_example() {
        // The GetObject example of the AWS SigV4 documentation ("Signature Calculations
        // for the Authorization Header"): examplebucket, test.txt, Range bytes=0-9.
        let keys = ClientKeys::parse(&[
            "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        ])
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        h.insert("range", "bytes=0-9".parse().unwrap());
        h.insert(
            "x-amz-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap(),
        );
        h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41".parse().unwrap());
        let uri: Uri = "/test.txt".parse().unwrap();
        let at = parse_amz_date("20130524T000100Z").unwrap();
        assert_eq!(
            verify(&keys, &Method::GET, &uri, &h, at),
            Ok("AKIAIOSFODNN7EXAMPLE".into())
        );
        // Any change breaks it.
        h.insert("range", "bytes=0-10".parse().unwrap());
        assert_eq!(
            verify(&keys, &Method::GET, &uri, &h, at),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn aws_documented_presigned_example() {
        // The presigned GET example of the AWS documentation ("Authenticating Requests:
        // Using Query Parameters"), valid 86400 s from 20130524T000000Z.
        let keys = ClientKeys::parse(&[
            "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        ])
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        let uri: Uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404".parse().unwrap();
        let during = parse_amz_date("20130524T120000Z").unwrap();
        assert_eq!(
            verify(&keys, &Method::GET, &uri, &h, during),
            Ok("AKIAIOSFODNN7EXAMPLE".into())
        );
        let after = parse_amz_date("20130525T000001Z").unwrap();
        assert_eq!(
            verify(&keys, &Method::GET, &uri, &h, after),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn future_dated_zero_expiry_and_hostless_signatures_are_refused() {
        let keys = ClientKeys::parse(&["AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        let url = |expires: &str, signed: &str| -> Uri {
            format!("/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders={signed}&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404").parse().unwrap()
        };
        // The documented URL, a year before its date: not valid yet.
        let before = parse_amz_date("20120524T000000Z").unwrap();
        assert!(matches!(
            verify(&keys, &Method::GET, &url("86400", "host"), &h, before),
            Err(AuthError::Malformed(m)) if m.contains("future")
        ));
        let during = parse_amz_date("20130524T000001Z").unwrap();
        assert!(matches!(
            verify(&keys, &Method::GET, &url("0", "host"), &h, during),
            Err(AuthError::Malformed(m)) if m.contains("X-Amz-Expires")
        ));
        h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        assert!(matches!(
            verify(&keys, &Method::GET, &url("86400", "x-amz-date"), &h, during),
            Err(AuthError::Malformed(m)) if m.contains("host")
        ));
        let mut hh = HeaderMap::new();
        hh.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        hh.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=x-amz-date,Signature=00".parse().unwrap());
        assert!(matches!(
            verify(&keys, &Method::GET, &"/b/k".parse().unwrap(), &hh, during),
            Err(AuthError::Malformed(m)) if m.contains("host")
        ));
    }

    #[test]
    fn refusals() {
        let keys = ClientKeys::parse(&["AK:SECRET".into()]).unwrap();
        let uri: Uri = "/b/k".parse().unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            verify(&keys, &Method::GET, &uri, &h, SystemTime::now()),
            Err(AuthError::Missing)
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=OTHER/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=00".parse().unwrap());
        h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        assert_eq!(
            verify(&keys, &Method::GET, &uri, &h, SystemTime::now()),
            Err(AuthError::UnknownKey)
        );
        assert!(ClientKeys::parse(&["nocolon".into()]).is_err());
        // Found by fuzz_sigv4_verify: a 16-byte date with multi-byte characters.
        assert_eq!(parse_amz_date("\u{1e7e4}8\u{113d7}D*=:\u{b95}"), None);
    }
}

/// Fuzzing (proptest; bounded cases, run in CI): whatever a client sends as
/// Authorization, date, path and query, the verifier answers a refusal (never a
/// panic, never a yes without the secret).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]
        #[test]
        fn fuzz_sigv4_verify(
            auth in "AWS4-HMAC-SHA256( Credential=AK(/[0-9]{0,8}(/[a-z0-9-]{0,10}){0,4})?)?(, ?SignedHeaders=[a-z;-]{0,30})?(, ?Signature=[0-9a-f]{0,64})?|\\PC{0,80}",
            date in "[0-9]{8}T[0-9]{6}Z|\\PC{0,20}",
            path in "/[a-zA-Z0-9%./+ -]{0,40}",
            query in "([A-Za-z-]{1,16}(=[A-Za-z0-9%+/=-]{0,30})?&?){0,6}",
            presigned in any::<bool>(),
        ) {
            let keys = ClientKeys::parse(&["AK:SECRET".into()]).unwrap();
            let mut h = HeaderMap::new();
            h.insert("host", "n".parse().unwrap());
            let query = if presigned {
                format!("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00&{query}")
            } else {
                if let Ok(v) = http::HeaderValue::from_str(&auth) { h.insert("authorization", v); }
                if let Ok(v) = http::HeaderValue::from_str(&date) { h.insert("x-amz-date", v); }
                query
            };
            let Ok(uri) = format!("{path}?{query}").parse::<Uri>() else { return Ok(()) };
            let now = parse_amz_date("20130524T000010Z").unwrap();
            prop_assert!(verify(&keys, &Method::GET, &uri, &h, now).is_err());
        }
    }
}
