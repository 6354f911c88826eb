//! `eliop2p get`: download objects through a node, chunk by chunk (16 MiB ranges,
//! each pinned to the object's ETag with `If-Match`), with a progress line, the
//! split of bytes by cache source, resume of a partial file, and a size + ETag
//! check at the end.
//!
//! Exit codes (also in the README): 0 done, 2 usage or config error, 3 not found,
//! 4 access denied, 5 verification failed (size, ETag, or the object changed
//! during the download), 6 node unreachable or failing.

use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use md5::Digest;

use eliop2p_origin::{OriginClient, OriginConfig, OriginKind, OriginRequest};

/// An error with the exit code a script can rely on.
#[derive(Debug)]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_DENIED: u8 = 4;
pub const EXIT_VERIFY: u8 = 5;
pub const EXIT_NODE: u8 = 6;

fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    ExitError {
        code,
        message: message.into(),
    }
    .into()
}

/// Ranges asked for per request: one chunk of the default chunk size.
const PIECE: u64 = 16 << 20;

pub struct GetArgs {
    pub source: String,
    pub output: Option<PathBuf>,
    pub node: String,
    pub recursive: bool,
}

/// Where to read from: the node and the object (or prefix).
struct Target {
    node: String,
    bucket: String,
    key: String,
}

fn parse_source(source: &str, node: &str) -> anyhow::Result<Target> {
    let (node, rest) = if let Some(rest) = source.strip_prefix("s3://") {
        (node.trim_end_matches('/').to_owned(), rest)
    } else if let Some(after) = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"))
    {
        let scheme_len = source.len() - after.len();
        let slash = after
            .find('/')
            .ok_or_else(|| fail(EXIT_USAGE, format!("{source:?} has no /bucket/key path")))?;
        (source[..scheme_len + slash].to_owned(), &after[slash + 1..])
    } else {
        return Err(fail(
            EXIT_USAGE,
            format!("{source:?} is neither s3://bucket/key nor http://node/bucket/key"),
        ));
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(fail(EXIT_USAGE, format!("{source:?} names no bucket")));
    }
    let key = percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .map_err(|_| fail(EXIT_USAGE, format!("{source:?}: key is not UTF-8")))?
        .into_owned();
    Ok(Target {
        node,
        bucket: bucket.to_owned(),
        key,
    })
}

/// A client for the node: SigV4-signed with `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY` when they are set (a passthrough node needs them),
/// unsigned otherwise.
fn node_client(node: &str, bucket: &str) -> anyhow::Result<(OriginClient, bool)> {
    let ak = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
    let sk = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    let signed = !ak.is_empty() && !sk.is_empty();
    let mut cfg = if signed {
        OriginConfig::for_endpoint(node, &ak, &sk)
    } else {
        let mut c = OriginConfig::for_endpoint(&format!("{node}/{bucket}"), "", "");
        c.kind = OriginKind::Http;
        c
    };
    if let Ok(r) = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION")) {
        cfg.region = r;
    }
    cfg.request_timeout = Duration::from_secs(120);
    let client = OriginClient::new(cfg).map_err(|e| fail(EXIT_USAGE, format!("--node: {e}")))?;
    Ok((client, signed))
}

struct Node {
    client: OriginClient,
    signed: bool,
    bucket: String,
    node: String,
}

impl Node {
    fn request(&self, method: Method, key: Option<&str>) -> OriginRequest {
        if self.signed {
            OriginRequest::new(method, &self.bucket, key)
        } else {
            // Plain HTTP kind: the endpoint already ends in /bucket.
            let mut r = OriginRequest::new(method, &self.bucket, key);
            r.bucket = None;
            r
        }
    }

    async fn send(
        &self,
        req: OriginRequest,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        self.client
            .send(req)
            .await
            .map_err(|e| fail(EXIT_NODE, format!("node {}: {e}", self.node)))
    }
}

/// Maps a non-success status to an exit code and a sentence.
fn status_error(what: &str, status: StatusCode, text: &str) -> anyhow::Error {
    let code_in_body = text
        .split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("");
    let code = match status {
        StatusCode::NOT_FOUND => EXIT_NOT_FOUND,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => EXIT_DENIED,
        StatusCode::PRECONDITION_FAILED => EXIT_VERIFY,
        s if s.is_server_error() => EXIT_NODE,
        _ => EXIT_USAGE,
    };
    let detail = if code_in_body.is_empty() {
        String::new()
    } else {
        format!(" ({code_in_body})")
    };
    fail(code, format!("{what}: node answered {status}{detail}"))
}

/// [`status_error`] for a response whose body is still to be read.
async fn response_error(what: &str, resp: http::Response<hyper::body::Incoming>) -> anyhow::Error {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    status_error(what, status, &String::from_utf8_lossy(&body))
}

#[derive(Default, Clone)]
struct Sources {
    /// origin, peer, memory, disk.
    bytes: [u64; 4],
}

impl Sources {
    fn add(&mut self, source: &str, n: u64) {
        let i = match source {
            "peer" => 1,
            "memory" => 2,
            "disk" => 3,
            _ => 0,
        };
        self.bytes[i] += n;
    }

    fn describe(&self) -> String {
        let names = ["origin", "peer", "memory", "disk"];
        let parts: Vec<String> = names
            .iter()
            .zip(self.bytes)
            .filter(|(_, b)| *b > 0)
            .map(|(n, b)| format!("{n} {}", crate::human_bytes(b)))
            .collect();
        if parts.is_empty() {
            "nothing transferred".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Progress output: a redrawn line on a terminal, a line every few seconds otherwise.
struct Progress {
    tty: bool,
    label: String,
    total: u64,
    done: u64,
    start_done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(label: String, total: u64, done: u64) -> Self {
        let now = Instant::now();
        Self {
            tty: std::io::stderr().is_terminal(),
            label,
            total,
            done,
            start_done: done,
            started: now,
            last: now - Duration::from_secs(60),
        }
    }

    fn rate(&self) -> f64 {
        (self.done - self.start_done) as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    fn update(&mut self, done: u64, sources: &Sources, force: bool) {
        self.done = done;
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let rate = self.rate();
        let pct = if self.total == 0 {
            100.0
        } else {
            100.0 * done as f64 / self.total as f64
        };
        let eta = if rate > 0.0 {
            format!("{:.0}s", (self.total - done) as f64 / rate)
        } else {
            "-".into()
        };
        let line = format!(
            "{}: {} / {} {:>3.0}% {}/s ETA {eta} [{}]",
            self.label,
            crate::human_bytes(done),
            crate::human_bytes(self.total),
            pct,
            crate::human_bytes(rate as u64),
            sources.describe()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// An ETag that is the MD5 of the content (single-part uploads).
fn md5_etag(etag: &str) -> Option<String> {
    let t = etag.trim_matches('"');
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Downloads one object to `out`; returns bytes and sources. The bytes go to a
/// partial file beside `out`, resumed when a run of the same object version was
/// cut short, and `out` appears only once they are verified.
async fn get_object(node: &Node, key: &str, out: &Path) -> anyhow::Result<(u64, Sources)> {
    let obj = head(node, key).await?;
    let (what, size) = (&obj.what, obj.size);
    let mut part = Part::open(out, size, obj.etag.as_deref())?;
    if part.offset > 0 {
        eprintln!(
            "{what}: resuming at {} of {}",
            crate::human_bytes(part.offset),
            crate::human_bytes(size)
        );
    }
    let mut sources = Sources::default();
    let mut progress = Progress::new(what.clone(), size, part.offset);
    let pos = fetch_ranges(node, &obj, &mut part, &mut sources, &mut progress).await?;
    progress.update(pos, &sources, true);
    progress.finish();
    let check = part.verify(&obj).await?;
    std::fs::rename(&part.path, out)
        .map_err(|e| fail(EXIT_USAGE, format!("renaming to {}: {e}", out.display())))?;
    let _ = std::fs::remove_file(&part.state);
    println!(
        "{what} -> {} ({size} bytes, {}/s; {}; {check})",
        out.display(),
        crate::human_bytes(progress.rate() as u64),
        sources.describe()
    );
    Ok((size, sources))
}

/// One object being downloaded, as its HEAD described it.
struct Object<'a> {
    key: &'a str,
    /// `s3://bucket/key`, for messages.
    what: String,
    size: u64,
    etag: Option<String>,
}

/// The object's size and ETag, from a HEAD through the node.
async fn head<'a>(node: &Node, key: &'a str) -> anyhow::Result<Object<'a>> {
    let what = format!("s3://{}/{key}", node.bucket);
    let resp = node.send(node.request(Method::HEAD, Some(key))).await?;
    if !resp.status().is_success() {
        return Err(response_error(&what, resp).await);
    }
    let size: u64 = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| fail(EXIT_NODE, format!("{what}: HEAD without Content-Length")))?;
    let etag = resp
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Object { key, what, size, etag })
}

/// The partial file of a download (`<out>.eliop2p-part`) and its state file
/// (`<out>.eliop2p-state`: the ETag and size it belongs to).
struct Part {
    path: PathBuf,
    state: PathBuf,
    file: std::fs::File,
    /// Bytes already there, kept from an earlier run of this very version.
    offset: u64,
}

impl Part {
    /// Opens the partial file for `out`, positioned at what an earlier run of the
    /// same version (ETag and size) left; anything else starts from 0.
    fn open(out: &Path, size: u64, etag: Option<&str>) -> anyhow::Result<Part> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(EXIT_USAGE, format!("creating {}: {e}", dir.display())))?;
        }
        let path = sidecar(out, ".eliop2p-part");
        let state = sidecar(out, ".eliop2p-state");
        let fingerprint = format!("{}\n{size}\n", etag.unwrap_or(""));
        // Resume only a partial file of this very version.
        let mut offset = 0;
        if let (Ok(meta), Ok(saved)) = (std::fs::metadata(&path), std::fs::read_to_string(&state))
            && saved == fingerprint
            && meta.len() <= size
            && etag.is_some()
        {
            offset = meta.len();
        }
        if offset == 0 {
            std::fs::write(&state, &fingerprint)
                .map_err(|e| fail(EXIT_USAGE, format!("writing {}: {e}", state.display())))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .open(&path)
            .map_err(|e| fail(EXIT_USAGE, format!("opening {}: {e}", path.display())))?;
        file.set_len(offset)?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok(Part { path, state, file, offset })
    }

    /// Checks the finished file: its size, and its MD5 when the ETag is one.
    /// A file that fails is removed with its state. Returns what was checked.
    async fn verify(&mut self, obj: &Object<'_>) -> anyhow::Result<&'static str> {
        let (what, size) = (&obj.what, obj.size);
        self.file.sync_all()?;
        let written = std::fs::metadata(&self.path)?.len();
        let discard = |why: String| {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(&self.state);
            fail(EXIT_VERIFY, format!("{what}: {why}"))
        };
        if written != size {
            return Err(discard(format!("got {written} bytes, the object has {size}")));
        }
        let Some(want) = obj.etag.as_deref().and_then(md5_etag) else {
            return Ok("size verified (multipart or non-MD5 ETag: content not checked)");
        };
        let p = self.path.clone();
        let got = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut f = std::fs::File::open(p)?;
            let mut h = md5::Md5::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(hex::encode(h.finalize()))
        })
        .await??;
        if got != want {
            return Err(discard(format!("content MD5 {got} does not match ETag {want}")));
        }
        Ok("size and ETag (MD5) verified")
    }
}

/// Reads the object from `part.offset` to its end in ranged GETs that end on
/// chunk boundaries (each maps to one cached chunk), each conditional on the
/// ETag, into the partial file; returns the bytes it then holds.
async fn fetch_ranges(
    node: &Node,
    obj: &Object<'_>,
    part: &mut Part,
    sources: &mut Sources,
    progress: &mut Progress,
) -> anyhow::Result<u64> {
    let (what, size, etag) = (&obj.what, obj.size, obj.etag.as_deref());
    let mut pos = part.offset;
    while pos < size {
        let end = ((pos / PIECE + 1) * PIECE).min(size);
        let mut req = node.request(Method::GET, Some(obj.key));
        let mut h = HeaderMap::new();
        h.insert(
            header::RANGE,
            HeaderValue::from_str(&format!("bytes={pos}-{}", end - 1))?,
        );
        if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            h.insert(header::IF_MATCH, e);
        }
        req.headers = h;
        let resp = node.send(req).await?;
        let status = resp.status();
        if status == StatusCode::PRECONDITION_FAILED {
            return Err(fail(
                EXIT_VERIFY,
                format!(
                    "{what}: the object changed during the download (ETag no longer {}); run again",
                    etag.unwrap_or_default()
                ),
            ));
        }
        if !status.is_success() {
            return Err(response_error(what, resp).await);
        }
        // A 200 is the whole object: only acceptable from the start.
        if status == StatusCode::OK && pos != 0 {
            return Err(fail(
                EXIT_NODE,
                format!("{what}: node ignored the Range header"),
            ));
        }
        let source = resp
            .headers()
            .get("x-cache-source")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("origin")
            .to_owned();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| fail(EXIT_NODE, format!("{what}: body cut short: {e}")))?;
            if let Ok(data) = frame.into_data() {
                part.file
                    .write_all(&data)
                    .map_err(|e| fail(EXIT_USAGE, format!("writing {}: {e}", part.path.display())))?;
                pos += data.len() as u64;
                sources.add(&source, data.len() as u64);
                progress.update(pos, sources, false);
            }
        }
        if status == StatusCode::OK {
            break;
        }
        if pos < end {
            return Err(fail(
                EXIT_NODE,
                format!("{what}: range ended at {pos}, expected {end}; run again to resume"),
            ));
        }
    }
    Ok(pos)
}

/// Every key under `prefix`, through the node.
async fn list_keys(node: &Node, prefix: &str) -> anyhow::Result<Vec<String>> {
    let what = format!("listing s3://{}/{prefix}", node.bucket);
    node.client
        .list_keys(&node.bucket, prefix, usize::MAX)
        .await
        .map_err(|e| match e {
            eliop2p_origin::ListError::Origin(e) => {
                fail(EXIT_NODE, format!("node {}: {e}", node.node))
            }
            eliop2p_origin::ListError::Status { status, body } => {
                status_error(&what, status, &body)
            }
            e => fail(EXIT_NODE, format!("{what}: {e}")),
        })
}

/// Where a listed key goes under `dir`: the key minus the prefix, refusing
/// anything that would leave `dir`.
fn local_path(dir: &Path, prefix: &str, key: &str) -> anyhow::Result<PathBuf> {
    let rel = key
        .strip_prefix(prefix)
        .unwrap_or(key)
        .trim_start_matches('/');
    let rel_path = Path::new(rel);
    if rel.is_empty()
        || rel_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "refusing key {key:?}: it would be written outside {}",
                dir.display()
            ),
        ));
    }
    Ok(dir.join(rel_path))
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let t = parse_source(&args.source, &args.node)?;
    let (client, signed) = node_client(&t.node, &t.bucket)?;
    let node = Node {
        client,
        signed,
        bucket: t.bucket.clone(),
        node: t.node.clone(),
    };
    if !args.recursive {
        if t.key.is_empty() || t.key.ends_with('/') {
            return Err(fail(
                EXIT_USAGE,
                format!("{:?} names a prefix: add --recursive", args.source),
            ));
        }
        let name = t.key.rsplit('/').next().unwrap_or(&t.key);
        let out = args.output.unwrap_or_else(|| PathBuf::from(name));
        get_object(&node, &t.key, &out).await?;
        return Ok(());
    }
    let dir = args.output.unwrap_or_else(|| PathBuf::from("."));
    let keys = list_keys(&node, &t.key).await?;
    let keys: Vec<String> = keys.into_iter().filter(|k| !k.ends_with('/')).collect();
    if keys.is_empty() {
        return Err(fail(
            EXIT_NOT_FOUND,
            format!("no objects under s3://{}/{}", t.bucket, t.key),
        ));
    }
    let started = Instant::now();
    let (mut total, mut sources) = (0u64, Sources::default());
    for key in &keys {
        let out = local_path(&dir, &t.key, key)?;
        let (n, s) = get_object(&node, key, &out).await?;
        total += n;
        for i in 0..4 {
            sources.bytes[i] += s.bytes[i];
        }
    }
    println!(
        "{} objects, {} in {:.1}s; {}",
        keys.len(),
        crate::human_bytes(total),
        started.elapsed().as_secs_f64(),
        sources.describe()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_paths() {
        let t = parse_source("s3://b/a/k%20x", "http://n:1/").unwrap();
        assert_eq!(
            (t.node.as_str(), t.bucket.as_str(), t.key.as_str()),
            ("http://n:1", "b", "a/k x")
        );
        let t = parse_source("http://h:8080/bkt/dir/", "ignored").unwrap();
        assert_eq!(
            (t.node.as_str(), t.bucket.as_str(), t.key.as_str()),
            ("http://h:8080", "bkt", "dir/")
        );
        assert!(parse_source("ftp://x", "n").is_err());
        assert!(parse_source("s3:///k", "n").is_err());
        let d = Path::new("/out");
        assert_eq!(local_path(d, "p/", "p/a/b").unwrap(), Path::new("/out/a/b"));
        for bad in ["p/../x", "p/a/../../x", "p/", "p/./x"] {
            assert!(local_path(d, "p/", bad).is_err(), "{bad}");
        }
        assert_eq!(
            local_path(d, "p/", "p//etc").unwrap(),
            Path::new("/out/etc")
        );
    }

    #[test]
    fn md5_etags() {
        assert_eq!(
            md5_etag("\"0123456789abcdef0123456789ABCDEF\"").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(md5_etag("\"abc-2\""), None);
    }
}
