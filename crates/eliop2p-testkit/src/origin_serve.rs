//! How the test origin answers: its accept loop, its connections (plain or TLS),
//! and per request the faults and models a test turns on (`Knobs`): injected 503s,
//! SlowDown on ranges, required session tokens, a first-byte latency, and rate
//! limits shared by every response and per stream. The S3 semantics are
//! `fastfs`'s, behind s3s's signature checks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::service::{Service, service_fn};
use hyper_util::rt::TokioIo;
use s3s::service::S3Service;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{ACCESS_KEY, LoggedRequest, SECRET_KEY, TestIssuer, creds};

/// What a test can turn on the running origin, shared by every connection.
#[derive(Clone, Default)]
pub(crate) struct Knobs {
    pub(crate) log: Arc<Mutex<Vec<LoggedRequest>>>,
    /// Response body bytes sent.
    pub(crate) bytes_sent: Arc<AtomicU64>,
    /// A rate limit (bytes/s) shared by every response, as one S3 connection
    /// would have.
    pub(crate) limiter: Arc<Throttle>,
    /// Requests still to be answered with an injected 503 before serving normally.
    pub(crate) fail_next: Arc<AtomicUsize>,
    /// The object store's behaviour per request: first-byte latency and the rate
    /// of one response stream.
    pub(crate) model: Arc<StoreModel>,
    /// Ranged GETs starting at or after this offset still to be refused with 503
    /// SlowDown and `Retry-After: 1` (offset, count).
    pub(crate) slow_down_from: Arc<Mutex<(u64, usize)>>,
    /// A session token every request must carry (temporary credentials).
    pub(crate) required_token: Arc<Mutex<Option<String>>>,
    /// Temporary credentials the origin accepts besides its static key.
    pub(crate) issuer: Arc<Mutex<Option<TestIssuer>>>,
}

/// The origin's keys: the static test key, and any temporary key of a trusted
/// issuer.
pub(crate) struct TestAuth {
    pub(crate) issuer: Arc<Mutex<Option<TestIssuer>>>,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for TestAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        if access_key == ACCESS_KEY {
            return Ok(SECRET_KEY.into());
        }
        let issuer = self.issuer.lock().unwrap().clone();
        match issuer.and_then(|i| i.secret_of(access_key)) {
            Some(secret) => Ok(secret.into()),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Accepts connections until `cancel`, each served on a task of `conns`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    service: S3Service,
    knobs: Knobs,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let _ = stream.set_nodelay(true);
        // As a node treats its local clients: on a host whose default is bbr,
        // the loopback bench's direct baseline would otherwise run paced, at
        // half of what the node's own connections carry.
        eliop2p_p2p::sockopt::unpace_local(&stream);
        let (service, knobs, acceptor, cancel) = (service.clone(), knobs.clone(), acceptor.clone(), cancel.clone());
        conns.spawn(serve_conn(stream, service, knobs, acceptor, cancel));
    }
}

/// One connection, HTTP/1 over plain TCP or TLS, until it ends or `cancel`.
async fn serve_conn(
    stream: TcpStream,
    service: S3Service,
    knobs: Knobs,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) {
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| answer(&knobs, &service, req));
    let http1 = hyper::server::conn::http1::Builder::new();
    match acceptor {
        Some(acceptor) => {
            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return; // a client that does not trust the certificate
            };
            tokio::select! {
                _ = http1.serve_connection(TokioIo::new(stream), svc) => {}
                _ = cancel.cancelled() => {}
            }
        }
        None => {
            tokio::select! {
                _ = http1.serve_connection(TokioIo::new(stream), svc) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }
}

/// One request: logged, then refused as a fault or a token rule says, or served
/// by s3s after the model's first-byte latency, its body throttled.
fn answer(
    knobs: &Knobs,
    service: &S3Service,
    req: http::Request<hyper::body::Incoming>,
) -> impl Future<Output = Result<http::Response<s3s::Body>, s3s::HttpError>> + use<> {
    let range = req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let range_start = range
        .as_deref()
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok());
    knobs.log.lock().unwrap().push(LoggedRequest {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        range,
    });
    let slow_down = {
        let mut s = knobs.slow_down_from.lock().unwrap();
        let hit = s.1 > 0 && range_start.is_some_and(|r| r >= s.0);
        if hit {
            s.1 -= 1;
        }
        hit
    };
    let inject = slow_down || knobs.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    // Temporary credentials: the session token must match.
    let token_refused = token_refusal(&req, &knobs.required_token, &knobs.issuer);
    let first_byte = knobs.model.first_byte();
    let stream = Arc::new(Throttle::with_rate(knobs.model.stream_rate()));
    let fut = (!inject && token_refused.is_none()).then(|| Service::call(service, req));
    let (bytes_sent, limiter) = (knobs.bytes_sent.clone(), knobs.limiter.clone());
    async move {
        if !first_byte.is_zero() {
            tokio::time::sleep(first_byte).await;
        }
        match fut {
            Some(f) => f.await.map(|resp| {
                resp.map(|b| {
                    s3s::Body::http_body_unsync(Throttled {
                        inner: b,
                        sleep: None,
                        pending: None,
                        counter: bytes_sent,
                        limiters: [limiter, stream],
                    })
                })
            }),
            None if let Some((status, code, message)) = token_refused => Ok(error(status, code, message)),
            None => {
                let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "injected by the test");
                if slow_down {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                }
                Ok(resp)
            }
        }
    }
}

/// An S3 error response.
fn error(status: StatusCode, code: &str, message: &str) -> http::Response<s3s::Body> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>");
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp
}

/// Why a request's session token is refused, if it is: the static rule
/// (`TestOrigin::require_session_token`) or a trusted issuer's.
fn token_refusal<B>(
    req: &http::Request<B>,
    required: &Mutex<Option<String>>,
    issuer: &Mutex<Option<TestIssuer>>,
) -> Option<(StatusCode, &'static str, &'static str)> {
    const INVALID: (StatusCode, &str, &str) = (
        StatusCode::FORBIDDEN,
        "InvalidToken",
        "The provided token is malformed or otherwise invalid.",
    );
    let header = req.headers().get("x-amz-security-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("X-Amz-Security-Token="))
    });
    let token = header.or_else(|| query.map(|q| percent_encoding::percent_decode_str(q).decode_utf8_lossy().into_owned()));
    let issuer = issuer.lock().unwrap().clone();
    if let Some(issuer) = issuer
        && let Some(key) = creds::signing_access_key(req.headers(), req.uri().query())
    {
        match issuer.check(&key, token.as_deref()) {
            Ok(()) => return None,
            Err(creds::Refusal::NotIssued) => {}
            Err(creds::Refusal::Expired) => {
                return Some((StatusCode::BAD_REQUEST, "ExpiredToken", "The provided token has expired."));
            }
            Err(creds::Refusal::InvalidToken | creds::Refusal::Revoked) => return Some(INVALID),
        }
    }
    let want = required.lock().unwrap().clone()?;
    (token.as_deref() != Some(want.as_str())).then_some(INVALID)
}

/// A shared rate limit: each frame reserves its transmission time after the
/// previous reservation.
#[derive(Default)]
pub(crate) struct Throttle {
    pub(crate) rate: std::sync::atomic::AtomicU64,
    next_free: Mutex<Option<tokio::time::Instant>>,
}

/// Per-request behaviour of the test object store (see `set_store_model`).
#[derive(Default)]
pub(crate) struct StoreModel {
    pub(crate) first_byte_us: std::sync::atomic::AtomicU64,
    pub(crate) stream_rate: std::sync::atomic::AtomicU64,
}

impl StoreModel {
    fn first_byte(&self) -> Duration {
        Duration::from_micros(self.first_byte_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn stream_rate(&self) -> u64 {
        self.stream_rate.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Throttle {
    fn with_rate(rate: u64) -> Self {
        Self {
            rate: rate.into(),
            next_free: Mutex::new(None),
        }
    }

    /// When a frame of `n` bytes may go out: frames are scheduled back to back at
    /// the rate, with up to 10 ms of unused time credited (so small frames do not
    /// each pay a timer's granularity); `None` = now.
    fn reserve(&self, n: u64) -> Option<tokio::time::Instant> {
        let rate = self.rate.load(std::sync::atomic::Ordering::Relaxed);
        if rate == 0 {
            return None;
        }
        let now = tokio::time::Instant::now();
        let credit = Duration::from_millis(10);
        let mut next = self.next_free.lock().unwrap();
        let start = match *next {
            Some(t) if t + credit > now => t,
            _ => now - credit,
        };
        *next = Some(start + Duration::from_secs_f64(n as f64 / rate as f64));
        (start > now + Duration::from_millis(1)).then_some(start)
    }
}

struct Throttled {
    inner: s3s::Body,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pending: Option<hyper::body::Frame<Bytes>>,
    counter: Arc<std::sync::atomic::AtomicU64>,
    /// The origin's shared limit and this stream's own.
    limiters: [Arc<Throttle>; 2],
}

impl hyper::body::Body for Throttled {
    type Data = Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
            return Poll::Ready(this.pending.take().map(Ok));
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.counter
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                let at = this.limiters.iter().filter_map(|l| l.reserve(n)).max();
                match at {
                    None => Poll::Ready(Some(Ok(frame))),
                    Some(at) => {
                        let mut sleep = Box::pin(tokio::time::sleep_until(at));
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        this.sleep = Some(sleep);
                        this.pending = Some(frame);
                        Poll::Pending
                    }
                }
            }
            other => other,
        }
    }
}
