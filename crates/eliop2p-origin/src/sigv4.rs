//! AWS Signature V4 over bytes: the canonical request, the signing key and the
//! signature, shared by the node's signer (origin requests, presigned URLs) and the
//! proxy's verifier of client signatures, so both read a request the same way.
//!
//! Header values are signed as the bytes sent (trimmed, runs of spaces folded), not
//! as text: user metadata such as `x-amz-meta-m: Hello Worldé` is UTF-8 on the wire
//! and S3 signs those bytes. The path keeps its slashes and is never `.`/`..`
//! resolved (S3 semantics); a literal `+` in a query is a space, as S3 reads it.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

/// The payload hash a request states when its body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_encoded(out: &mut String, b: u8) {
    if is_unreserved(b) {
        out.push(b as char);
    } else {
        out.push_str(&format!("%{b:02X}"));
    }
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes `s` byte by byte (a `+` stays a `+`), telling escaped bytes
/// from literal ones.
fn decode_marked(s: &str) -> Vec<(u8, bool)> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|x| hex_val(*x)),
                b.get(i + 2).and_then(|x| hex_val(*x)),
            )
        {
            out.push((h << 4 | l, true));
            i += 3;
        } else {
            out.push((b[i], false));
            i += 1;
        }
    }
    out
}

/// The canonical URI: the raw path, each byte percent-encoded per SigV4 (slashes
/// kept), existing escapes normalised; no dot-segment resolution (S3 semantics). An
/// escaped `/` (`%2F`) stays data, not a separator.
pub fn canonical_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 8);
    for (b, escaped) in decode_marked(raw) {
        if b == b'/' && !escaped {
            out.push('/');
        } else {
            push_encoded(&mut out, b);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Every byte but unreserved characters percent-encoded (query names and values).
pub fn encode_all(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for b in bytes {
        push_encoded(&mut s, *b);
    }
    s
}

/// Query pairs, decoded as S3 decodes them: a literal `+` is a space.
pub fn query_pairs(q: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let decode_q = |s: &str| -> Vec<u8> {
        decode_marked(s)
            .into_iter()
            .map(|(b, escaped)| if b == b'+' && !escaped { b' ' } else { b })
            .collect()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_q(n), decode_q(v))
        })
        .collect()
}

/// The canonical query string: pairs encoded and sorted; `X-Amz-Signature` left
/// out when `skip_signature` (a presigned URL's own signature).
pub fn canonical_query(pairs: &[(Vec<u8>, Vec<u8>)], skip_signature: bool) -> String {
    let mut enc: Vec<(String, String)> = pairs
        .iter()
        .filter(|(n, _)| !(skip_signature && n.eq_ignore_ascii_case(b"X-Amz-Signature")))
        .map(|(n, v)| (encode_all(n), encode_all(v)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's canonical value: each value's bytes trimmed with runs of whitespace
/// folded to one space, several values joined by `,`. `None`: not present.
pub fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut any = false;
    for v in headers.get_all(name) {
        if any {
            out.push(b',');
        }
        any = true;
        let mut words = v
            .as_bytes()
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        if let Some(first) = words.next() {
            out.extend_from_slice(first);
            for w in words {
                out.push(b' ');
                out.extend_from_slice(w);
            }
        }
    }
    any.then_some(out)
}

/// The canonical request of SigV4, as bytes. `signed` are lowercase header names
/// in order; `Err` names a signed header the request lacks.
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    canonical_query: &str,
    headers: &HeaderMap,
    signed: &[String],
    payload: &str,
) -> Result<Vec<u8>, String> {
    let mut c = Vec::with_capacity(256);
    for part in [method, "\n", &canonical_path(raw_path), "\n", canonical_query, "\n"] {
        c.extend_from_slice(part.as_bytes());
    }
    for h in signed {
        let v = canonical_header_value(headers, h).ok_or_else(|| h.clone())?;
        c.extend_from_slice(h.as_bytes());
        c.push(b':');
        c.extend_from_slice(&v);
        c.push(b'\n');
    }
    c.push(b'\n');
    c.extend_from_slice(signed.join(";").as_bytes());
    c.push(b'\n');
    c.extend_from_slice(payload.as_bytes());
    Ok(c)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The hex signature of a canonical request made at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`) for `scope` (`date/region/service/aws4_request`).
pub fn signature(secret: &str, amz_date: &str, scope: &str, canonical: &[u8]) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical))
    );
    let mut key = format!("AWS4{secret}").into_bytes().to_vec();
    for part in scope.split('/') {
        key = hmac(&key, part.as_bytes()).to_vec();
    }
    hex::encode(hmac(&key, string_to_sign.as_bytes()))
}

/// `YYYYMMDDTHHMMSSZ` to a time.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    // ASCII first: slicing a multi-byte character would panic (found by fuzzing).
    if s.len() != 16 || !s.is_ascii() || &s[8..9] != "T" || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// A time as `YYYYMMDDTHHMMSSZ` (civil from days, the inverse of the above).
pub fn format_amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Who signs: a key pair (with its session token, for temporary credentials) and
/// the scope's region and service.
pub struct Signer<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

impl Signer<'_> {
    fn scope(&self, amz_date: &str) -> String {
        format!("{}/{}/{}/aws4_request", &amz_date[..8], self.region, self.service)
    }

    /// Signs a request in its headers (`Authorization`), signing every header it
    /// carries; adds `Host` (from the URI), `x-amz-date`, `x-amz-content-sha256`
    /// (`UNSIGNED-PAYLOAD` unless the caller set a hash) and the session token.
    pub fn sign_headers(&self, parts: &mut http::request::Parts, now: SystemTime) -> Result<(), String> {
        self.add_host(parts)?;
        let amz_date = format_amz_date(now);
        let h = &mut parts.headers;
        h.insert("x-amz-date", HeaderValue::from_str(&amz_date).expect("ascii"));
        if !h.contains_key("x-amz-content-sha256") {
            h.insert("x-amz-content-sha256", HeaderValue::from_static(UNSIGNED_PAYLOAD));
        }
        if let Some(token) = self.session_token {
            let mut v = HeaderValue::from_str(token).map_err(|_| "the session token is not a header value".to_owned())?;
            v.set_sensitive(true);
            h.insert("x-amz-security-token", v);
        }
        h.remove(AUTHORIZATION);
        let mut signed: Vec<String> = h.keys().map(|n| n.as_str().to_owned()).collect();
        signed.sort();
        signed.dedup();
        let payload = h
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(UNSIGNED_PAYLOAD)
            .to_owned();
        let query = canonical_query(&query_pairs(parts.uri.query().unwrap_or("")), false);
        let canonical = canonical_request(parts.method.as_str(), parts.uri.path(), &query, h, &signed, &payload)?;
        let scope = self.scope(&amz_date);
        let sig = signature(self.secret_key, &amz_date, &scope, &canonical);
        let mut auth = HeaderValue::from_str(&format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
            self.access_key,
            signed.join(";")
        ))
        .map_err(|_| "the access key is not a header value".to_owned())?;
        auth.set_sensitive(true);
        h.insert(AUTHORIZATION, auth);
        Ok(())
    }

    /// Presigns a request in its query (only `host` signed), valid for `expires`.
    pub fn presign(&self, parts: &mut http::request::Parts, now: SystemTime, expires: Duration) -> Result<(), String> {
        self.add_host(parts)?;
        let amz_date = format_amz_date(now);
        let scope = self.scope(&amz_date);
        let mut auth = vec![
            ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
            ("X-Amz-Credential".to_owned(), format!("{}/{scope}", self.access_key)),
            ("X-Amz-Date".to_owned(), amz_date.clone()),
            ("X-Amz-Expires".to_owned(), expires.as_secs().to_string()),
            ("X-Amz-SignedHeaders".to_owned(), "host".to_owned()),
        ];
        if let Some(token) = self.session_token {
            auth.push(("X-Amz-Security-Token".to_owned(), token.to_owned()));
        }
        let added = auth
            .iter()
            .map(|(n, v)| format!("{}={}", encode_all(n.as_bytes()), encode_all(v.as_bytes())))
            .collect::<Vec<_>>()
            .join("&");
        let query = match parts.uri.query().filter(|q| !q.is_empty()) {
            Some(q) => format!("{q}&{added}"),
            None => added,
        };
        let canonical = canonical_request(
            parts.method.as_str(),
            parts.uri.path(),
            &canonical_query(&query_pairs(&query), false),
            &parts.headers,
            &["host".to_owned()],
            UNSIGNED_PAYLOAD,
        )?;
        let sig = signature(self.secret_key, &amz_date, &scope, &canonical);
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = Some(
            format!("{}?{query}&X-Amz-Signature={sig}", parts.uri.path())
                .parse()
                .map_err(|e| format!("presigned URL: {e}"))?,
        );
        parts.uri = http::Uri::from_parts(uri).map_err(|e| format!("presigned URL: {e}"))?;
        Ok(())
    }

    fn add_host(&self, parts: &mut http::request::Parts) -> Result<(), String> {
        if !parts.headers.contains_key(HOST) {
            let authority = parts.uri.authority().ok_or("the request has no host")?;
            let v = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
            parts.headers.insert(HOST, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn signer() -> Signer<'static> {
        Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: SECRET,
            session_token: None,
            region: "us-east-1",
            service: "s3",
        }
    }

    #[test]
    fn dates_round_trip() {
        for s in ["20130524T000000Z", "20000229T235959Z", "19700101T000000Z", "20261202T061530Z"] {
            assert_eq!(format_amz_date(parse_amz_date(s).unwrap()), s);
        }
    }

    #[test]
    fn aws_documented_get_object_example() {
        // "Signature Calculations for the Authorization Header" of the AWS SigV4
        // documentation: GET test.txt of examplebucket with Range bytes=0-9.
        let (mut parts, ()) = http::Request::get("http://examplebucket.s3.amazonaws.com/test.txt")
            .header("range", "bytes=0-9")
            .header(
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .body(())
            .unwrap()
            .into_parts();
        signer()
            .sign_headers(&mut parts, parse_amz_date("20130524T000000Z").unwrap())
            .unwrap();
        assert_eq!(
            parts.headers[AUTHORIZATION],
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_documented_presigned_example() {
        // "Authenticating Requests: Using Query Parameters": test.txt, 86400 s.
        let (mut parts, ()) = http::Request::get("https://examplebucket.s3.amazonaws.com/test.txt")
            .body(())
            .unwrap()
            .into_parts();
        signer()
            .presign(&mut parts, parse_amz_date("20130524T000000Z").unwrap(), Duration::from_secs(86400))
            .unwrap();
        assert!(
            parts.uri.query().unwrap().ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{}",
            parts.uri
        );
    }

    #[test]
    fn canonical_paths_keep_dots_and_escaped_slashes() {
        assert_eq!(canonical_path("/b/a/./c"), "/b/a/./c");
        assert_eq!(canonical_path("/b/a//c"), "/b/a//c");
        assert_eq!(canonical_path("/b/x%2fy"), "/b/x%2Fy");
        assert_eq!(canonical_path("/b/%41%20z"), "/b/A%20z");
        assert_eq!(canonical_path("/b/ü"), "/b/%C3%BC");
    }

    #[test]
    fn utf8_header_values_are_signed_as_bytes() {
        let value = HeaderValue::from_bytes("Hello Worldé".as_bytes()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-amz-meta-m", value);
        assert_eq!(
            canonical_header_value(&h, "x-amz-meta-m").unwrap(),
            "Hello Worldé".as_bytes()
        );
        h.insert("x-amz-meta-s", HeaderValue::from_static("  a   b  "));
        assert_eq!(canonical_header_value(&h, "x-amz-meta-s").unwrap(), b"a b");
    }
}
