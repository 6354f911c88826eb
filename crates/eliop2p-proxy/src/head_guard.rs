//! Request heads checked before hyper sees them, so that a malformed or oversized
//! head is answered with an S3 XML error, not hyper's own empty 400/414/431.
//!
//! hyper answers a head it cannot parse by itself, with `content-length: 0` and no
//! hook to give the answer a body. [`HeadGuard`] sits between the socket and hyper
//! and follows the request framing as hyper will read it: each head is parsed with
//! the same parser (httparse, same header count) and the same rules (method, URI,
//! Content-Length, Transfer-Encoding) before any of its bytes reach hyper, and each
//! body is skipped by its length or its chunked framing. A head hyper would refuse
//! is never handed over: hyper sees the end of the stream where it starts, finishes
//! the responses it owes, and shuts the connection down, and then, only then, the
//! guard writes its S3 error. So the error can only follow complete responses; it
//! can never land inside a body.
//!
//! Where the framing stops being HTTP/1 requests (CONNECT, an `Upgrade` request)
//! or takes a form the guard does not follow, it hands every later byte through
//! unchecked, and hyper's own handling applies as before. The connection is
//! opened with `half_close(true)`, so the end of input the guard shows hyper after
//! a refused head never aborts a response still being written.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most headers one request head may have (hyper's default).
const MAX_HEADERS: usize = 100;
/// Bytes read from the socket at once while a head is being collected.
const READ_CHUNK: usize = 8 * 1024;
/// After a refusal, how long and how much of the client's input is read and
/// dropped before closing (a lingering close, as nginx does): a socket closed
/// with unread input sends a reset, which can destroy the answer in flight.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Where the guard is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Collecting the next request head.
    Head,
    /// A body of this many more bytes.
    Fixed(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// No longer HTTP/1 requests the guard follows: every byte passes.
    Opaque,
}

/// The chunked-body states, as hyper's decoder has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { size: u64 },
    SizeLws { size: u64 },
    Extension { size: u64 },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// What a refused head is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The whole HTTP/1.1 response, S3 XML body included; the connection closes after it.
    fn response(&self) -> Vec<u8> {
        let body = eliop2p_core::s3xml::error_body(self.code, &self.message, "", "");
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\ndate: {}\r\n\r\n{body}",
            self.status.as_str(),
            self.status.canonical_reason().unwrap_or(""),
            body.len(),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )
        .into_bytes()
    }
}

/// The stream hyper reads requests from (see the module doc).
pub(crate) struct HeadGuard<S> {
    inner: S,
    framing: Framing,
    max_head: usize,
    /// Bytes read from `inner` and not yet handed to hyper.
    pending: Vec<u8>,
    /// How many bytes at the front of `pending` may be handed to hyper.
    ready: usize,
    /// Length of the unfinished head at its last parse: a new parse waits for a
    /// new line end, so a head sent a byte at a time costs linear work.
    parsed_upto: usize,
    /// The refused head's answer, written before shutdown; set once.
    refusal: Option<Vec<u8>>,
    written: usize,
    inner_eof: bool,
    /// The lingering close's deadline, once the answer is written.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    discarded: usize,
}

impl<S> HeadGuard<S> {
    /// `max_head`: the longest request head accepted (longer is 431, or 414 when
    /// its request line alone is longer).
    pub(crate) fn new(inner: S, max_head: usize) -> Self {
        Self {
            inner,
            framing: Framing::Head,
            max_head,
            pending: Vec::new(),
            ready: 0,
            parsed_upto: 0,
            refusal: None,
            written: 0,
            inner_eof: false,
            linger: None,
            discarded: 0,
        }
    }

    /// Classifies as much of `pending` as possible: `ready` grows over complete,
    /// valid heads and over body bytes; a head hyper would refuse sets `refusal`.
    fn classify(&mut self) {
        while self.ready < self.pending.len() && self.refusal.is_none() {
            let rest = &self.pending[self.ready..];
            match self.framing {
                Framing::Opaque | Framing::Fixed(_) | Framing::Chunked(_) => {
                    let (used, next) = body_bytes(self.framing, rest);
                    self.ready += used;
                    self.framing = next;
                }
                Framing::Head => {
                    if !rest[self.parsed_upto.min(rest.len())..].contains(&b'\n') {
                        if rest.len() > self.max_head {
                            self.refuse(too_long(rest, self.max_head));
                        }
                        break;
                    }
                    match check_head(rest, self.max_head) {
                        Ok(Some((len, framing))) => {
                            self.ready += len;
                            self.framing = framing;
                            self.parsed_upto = 0;
                        }
                        Ok(None) => {
                            if rest.len() > self.max_head {
                                self.refuse(too_long(rest, self.max_head));
                            } else {
                                self.parsed_upto = rest.len();
                            }
                            break;
                        }
                        Err(refusal) => self.refuse(refusal),
                    }
                }
            }
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(status = %refusal.status, reason = %refusal.message, "request head refused");
        self.refusal = Some(refusal.response());
        // The refused head and anything after it are never handed over.
        self.pending.truncate(self.ready);
    }

    /// Hands `ready` bytes to hyper.
    fn deliver(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ready.min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.drain(..n);
        self.ready -= n;
        if self.pending.is_empty() && self.pending.capacity() > 2 * READ_CHUNK {
            // A long head is gone: an idle keep-alive connection keeps no big buffer.
            self.pending = Vec::new();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready > 0 {
                this.deliver(buf);
                return Poll::Ready(Ok(()));
            }
            if this.refusal.is_some() {
                // hyper sees the end of input where the refused head starts.
                return Poll::Ready(Ok(()));
            }
            if this.inner_eof {
                // The client ended inside a head: hyper gets what there is.
                this.ready = this.pending.len();
                if this.ready == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.pending.is_empty() && this.framing != Framing::Head {
                // A body or an opaque stream: read straight into hyper's buffer and
                // keep back whatever follows the body's end.
                let before = buf.filled().len();
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let (used, next) = body_bytes(this.framing, new);
                this.framing = next;
                if used < new.len() {
                    this.pending.extend_from_slice(&new[used..]);
                    buf.set_filled(before + used);
                    this.classify();
                }
                return Poll::Ready(Ok(()));
            }
            // Collect more of a head (or of a body behind one still held here).
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.inner_eof = true;
            } else {
                this.pending.extend_from_slice(rb.filled());
                this.classify();
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// hyper shuts down only after every response it owed is written: the refused
    /// head's answer goes out here, then the input lingers (see `LINGER`).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(answer) = &this.refusal else {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        };
        while this.written < answer.len() {
            let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &answer[this.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.written += n;
        }
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        while !this.inner_eof && this.discarded < LINGER_BYTES {
            if let Some(t) = this.linger.as_mut()
                && t.as_mut().poll(cx).is_ready()
            {
                break;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            match std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => this.inner_eof = true,
                Ok(()) => this.discarded += rb.filled().len(),
                Err(_) => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A head longer than allowed: 414 when its request line alone is.
fn too_long(head: &[u8], max: usize) -> Refusal {
    if head.iter().position(|&b| b == b'\n').is_some_and(|end| end <= max) {
        Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderSectionTooLarge",
            format!("the request head is longer than the {max} bytes allowed"),
        )
    } else {
        Refusal::new(
            StatusCode::URI_TOO_LONG,
            "KeyTooLongError",
            format!("the request line is longer than the {max} bytes allowed"),
        )
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Parses a head as hyper's server does. `Ok(None)`: not complete yet;
/// `Ok(Some((len, framing)))`: a head of `len` bytes whose body is `framing`;
/// `Err`: a head hyper would refuse, with the answer it gets instead.
fn check_head(bytes: &[u8], max_head: usize) -> Result<Option<(usize, Framing)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestHeaderSectionTooLarge",
                format!("the request has more than {MAX_HEADERS} headers"),
            ));
        }
        Err(httparse::Error::Token) if req.method.is_none() => {
            return Err(bad_request("the request method is not a valid token"));
        }
        Err(httparse::Error::Token) => return Err(bad_request("the request target is malformed")),
        Err(e) => return Err(bad_request(format!("malformed request head: {e}"))),
    };
    if len > max_head {
        return Err(too_long(bytes, max_head));
    }
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(bad_request("the request method is not valid"));
    }
    if http::Uri::try_from(path).is_err() {
        return Err(bad_request("the request target is not a valid URI"));
    }
    let http11 = req.version == Some(1);
    let mut upgrade = method == "CONNECT";
    let (mut te, mut te_chunked, mut content_length) = (false, false, None::<u64>);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(bad_request("HTTP/1.0 requests cannot have Transfer-Encoding"));
            }
            te = true;
            te_chunked = last_encoding_is_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") && !te {
            let Some(n) = parse_content_length(h.value) else {
                return Err(bad_request("the Content-Length header is not a valid length"));
            };
            if content_length.is_some_and(|prev| prev != n) {
                return Err(bad_request("the request has Content-Length headers that disagree"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if te && !te_chunked {
        return Err(bad_request("Transfer-Encoding must end with chunked in a request"));
    }
    let framing = if upgrade {
        Framing::Opaque
    } else if te {
        Framing::Chunked(Chunk::Size { size: 0 })
    } else {
        match content_length {
            Some(n) if n > 0 => Framing::Fixed(n),
            _ => Framing::Head,
        }
    };
    Ok(Some((len, framing)))
}

/// hyper's rule: the last comma-separated encoding is `chunked`.
fn last_encoding_is_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// hyper's rule: ASCII digits only, no sign, no list, no overflow.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// How many of `bytes` belong to the body `framing` describes (all, when opaque),
/// and the framing after them.
fn body_bytes(framing: Framing, bytes: &[u8]) -> (usize, Framing) {
    match framing {
        Framing::Head => (0, Framing::Head),
        Framing::Opaque => (bytes.len(), Framing::Opaque),
        Framing::Fixed(left) => {
            let take = left.min(bytes.len() as u64);
            (take as usize, if take == left { Framing::Head } else { Framing::Fixed(left - take) })
        }
        Framing::Chunked(state) => chunked(state, bytes),
    }
}

/// Follows a chunked body through `bytes`: how many belong to it, and where the
/// framing is after them. Anything hyper's decoder would reject makes the rest
/// opaque (hyper then reports it itself).
fn chunked(mut state: Chunk, bytes: &[u8]) -> (usize, Framing) {
    let mut i = 0;
    while i < bytes.len() {
        if let Chunk::Data(left) = state {
            let take = left.min((bytes.len() - i) as u64);
            i += take as usize;
            state = if take == left { Chunk::DataCr } else { Chunk::Data(left - take) };
            continue;
        }
        let b = bytes[i];
        i += 1;
        let next = match (state, b) {
            (Chunk::Size { size, .. }, b) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                size.checked_mul(16).and_then(|s| s.checked_add(digit)).map(|size| Chunk::Size { size })
            }
            (Chunk::Size { size }, b'\t' | b' ') | (Chunk::SizeLws { size }, b'\t' | b' ') => {
                Some(Chunk::SizeLws { size })
            }
            (Chunk::Size { size }, b';') | (Chunk::SizeLws { size }, b';') => {
                Some(Chunk::Extension { size })
            }
            (Chunk::Size { size }, b'\r') | (Chunk::SizeLws { size }, b'\r') => {
                Some(Chunk::SizeLf { size })
            }
            (Chunk::Extension { size }, b'\r') => Some(Chunk::SizeLf { size }),
            (Chunk::Extension { .. }, b'\n') => None,
            (Chunk::Extension { size }, _) => Some(Chunk::Extension { size }),
            (Chunk::SizeLf { size: 0 }, b'\n') => Some(Chunk::EndCr),
            (Chunk::SizeLf { size }, b'\n') => Some(Chunk::Data(size)),
            (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => Some(Chunk::Size { size: 0 }),
            (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
            (Chunk::EndCr, _) | (Chunk::Trailer, _) if b != b'\r' => Some(Chunk::Trailer),
            (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
            (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
            (Chunk::EndLf, b'\n') => return (i, Framing::Head),
            _ => None,
        };
        match next {
            Some(s) => state = s,
            None => return (bytes.len(), Framing::Opaque),
        }
    }
    (i, Framing::Chunked(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Everything hyper would read through a guard over `input` (sent in pieces
    /// of `step` bytes), and the answer the guard writes at shutdown.
    async fn through(input: &[u8], step: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut g = HeadGuard::new(server, 1024);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for piece in input.chunks(step.max(1)) {
                client.write_all(piece).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut seen = Vec::new();
        let mut buf = [0u8; 37];
        loop {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        g.shutdown().await.unwrap();
        let mut client = writer.await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        (seen, answer)
    }

    #[tokio::test]
    async fn good_requests_pass_byte_for_byte_whatever_the_pieces() {
        let stream: &[u8] = b"\r\nPUT /b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /b/k HTTP/1.1\r\nhost: x\r\n\r\n\
POST /b/k?uploads HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nGET /\r\n0\r\ntrailer: v\r\n\r\n\
GET /last HTTP/1.1\r\nhost: x\r\n\r\n";
        for step in [1, 2, 7, 64, 4096] {
            let (seen, answer) = through(stream, step).await;
            assert_eq!(seen, stream, "step {step}");
            assert!(answer.is_empty(), "step {step}");
        }
    }

    #[tokio::test]
    async fn a_bad_head_after_good_requests_is_kept_back_and_answered_in_xml() {
        let good: &[u8] = b"PUT /b/k HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /b/k HTTP/1.1\r\n\r\n";
        let cases: [(&[u8], u16, &str); 6] = [
            (b"GET /b/k HTTP/1.1\r\nbad header\r\n\r\n", 400, "BadRequest"),
            (b"GET /b/k HTTP/1.1\r\ncontent-length: 1x\r\n\r\n", 400, "BadRequest"),
            (b"GET /b/k HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400, "BadRequest"),
            (b"GET /b/k HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400, "BadRequest"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "BadRequest"),
            (b"GET /b/k HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", 400, "BadRequest"),
        ];
        for (bad, status, code) in cases {
            let input = [good, bad].concat();
            for step in [1, 5, 4096] {
                let (seen, answer) = through(&input, step).await;
                assert_eq!(seen, good, "{:?}", String::from_utf8_lossy(bad));
                let answer = String::from_utf8_lossy(&answer);
                assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
                assert!(answer.contains(&format!("<Code>{code}</Code>")), "{answer}");
            }
        }
    }

    #[tokio::test]
    async fn long_heads_are_431_and_long_request_lines_414() {
        let long_header = format!("GET /k HTTP/1.1\r\nx-amz-meta-a: {}\r\n\r\n", "v".repeat(2000));
        let (seen, answer) = through(long_header.as_bytes(), 100).await;
        assert!(seen.is_empty());
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "));
        // Never finished: refused once past the limit, without waiting for the end.
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "k".repeat(3000));
        let (seen, answer) = through(long_line.as_bytes(), 100).await;
        assert!(seen.is_empty());
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
        assert!(answer.contains("<Code>KeyTooLongError</Code>"));
        let many = format!("GET /k HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(101));
        let (_, answer) = through(many.as_bytes(), 4096).await;
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "));
    }

    #[tokio::test]
    async fn bodies_are_never_read_as_heads_and_upgrades_pass_untouched() {
        // A body that looks like a malformed head is body bytes.
        let body = b"GET bad\r\n\r\n";
        let input = [
            format!("PUT /k HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
            body,
        ]
        .concat();
        let (seen, answer) = through(&input, 3).await;
        assert_eq!(seen, input);
        assert!(answer.is_empty());
        // After CONNECT the stream is a tunnel: nothing in it is checked.
        let tunnel: &[u8] = b"CONNECT h:443 HTTP/1.1\r\nhost: h:443\r\n\r\n\x16\x03\x01 not http at all\r\n\r\n";
        let (seen, answer) = through(tunnel, 4).await;
        assert_eq!(seen, tunnel);
        assert!(answer.is_empty());
        // A chunked body hyper would reject is left to hyper.
        let odd: &[u8] = b"PUT /k HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nGET x\r\n\r\n";
        let (seen, answer) = through(odd, 4096).await;
        assert_eq!(seen, odd);
        assert!(answer.is_empty());
    }

    #[test]
    fn content_length_follows_hyper() {
        assert_eq!(parse_content_length(b"12"), Some(12));
        assert_eq!(parse_content_length(b"7, 7"), None);
        assert_eq!(parse_content_length(b"+7"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999999"), None);
    }
}
