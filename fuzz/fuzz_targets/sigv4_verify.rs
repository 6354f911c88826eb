//! The SigV4 verifier of client requests (`eliop2p_proxy::sigv4::verify`), through
//! its canonical request: any Authorization header, date, path and query, header
//! signed or presigned, is refused without a panic; nothing verifies without the
//! secret.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use eliop2p_proxy::sigv4::{ClientKeys, verify};
use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Fields separated by newlines: authorization, x-amz-date, path and query, extra header.
    let mut parts = text.splitn(4, '\n');
    let auth = parts.next().unwrap_or_default();
    let date = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let extra = parts.next().unwrap_or_default();
    let keys = ClientKeys::parse(&["AKIDFUZZ:secret-the-fuzzer-never-sees".into()]).expect("a valid key line");
    let Ok(uri) = format!("/{}", target.trim_start_matches('/')).parse::<Uri>() else { return };
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("node.local"));
    for (name, value) in [("authorization", auth), ("x-amz-date", date)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    if let Some((n, v)) = extra.split_once(':')
        && let (Ok(n), Ok(v)) = (http::HeaderName::try_from(n.trim()), HeaderValue::from_str(v.trim()))
    {
        headers.insert(n, v);
    }
    // 2013-05-24T00:00:10Z, the date of AWS's own SigV4 examples.
    let now = UNIX_EPOCH + Duration::from_secs(1_369_353_610);
    assert!(verify(&keys, &Method::GET, &uri, &headers, now).is_err());
});
