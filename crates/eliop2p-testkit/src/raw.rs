//! Raw HTTP/1.1 exchanges for probes no client library would send, and process
//! probes (RSS) for the tests that bound memory.

use std::net::SocketAddr;
use std::time::Duration;

/// One raw HTTP/1.1 exchange: `head` is sent as is (request line and headers, with
/// `Connection: close` added), so paths no client library would send (`/../x`)
/// reach the server. Returns the status and the body (de-chunked if need be).
pub async fn raw_http(addr: SocketAddr, head: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = head.trim_end_matches("\r\n");
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no response head in {:?}", String::from_utf8_lossy(&buf)))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {head}"))?;
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 2 + n + 2..];
        }
        body = out;
    }
    Ok((status, body))
}

/// A client that reads a GET's response at most `bytes_per_sec` fast (a slow
/// reader): returns the status, the body length and the body's SHA-256 (hex). The
/// body is hashed as it arrives, never held.
pub async fn slow_get(addr: SocketAddr, path: &str, bytes_per_sec: u64) -> anyhow::Result<(u16, u64, String)> {
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut hasher = sha2::Sha256::new();
    let mut body = 0u64;
    let t0 = tokio::time::Instant::now();
    let mut status = None;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await??;
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        if status.is_none() {
            head.extend_from_slice(data);
            let Some(split) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&head[..split]).to_string();
            status = Some(text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0));
            let rest = head.split_off(split + 4);
            hasher.update(&rest);
            body += rest.len() as u64;
            data = &[];
        }
        hasher.update(data);
        body += data.len() as u64;
        // Sleep until the bytes so far fit the rate.
        let due = t0 + Duration::from_secs_f64(body as f64 / bytes_per_sec as f64);
        tokio::time::sleep_until(due).await;
    }
    let status = status.ok_or_else(|| anyhow::anyhow!("no response head"))?;
    Ok((status, body, hex::encode(hasher.finalize())))
}

/// The resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}
