//! The accept loop shared by the proxy and admin listeners.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::head_guard::HeadGuard;
use crate::stall::StallTimeout;

/// Upper bound on the request head the node accepts (S3 allows 8 KiB of user
/// metadata; this leaves room for signatures and long keys).
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// hyper's read buffer per connection. Heads are checked against
/// `MAX_HEADER_BYTES` before hyper reads them (`head_guard`), so hyper's own
/// empty 431 for a head beyond this buffer is never reached.
const READ_BUFFER: usize = MAX_HEADER_BYTES + 16 * 1024;

/// Accepts connections until `cancel` and serves each with `handler`; each
/// connection finishes its in-flight request after cancellation (graceful
/// shutdown) and is tracked by `tracker`. Shared by the proxy and admin listeners.
///
/// At most `max_connections` connections are open at once (one more is closed at
/// accept), and each buffers at most `READ_BUFFER` of an unfinished request head:
/// abusive connections cost bounded memory, given back when they close.
pub(crate) async fn serve<H, Fut>(
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
    max_connections: usize,
    send_timeout: std::time::Duration,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("connection closed at accept: the listener's connection cap is reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        eliop2p_p2p::sockopt::unpace_local(&stream);
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let io = HeadGuard::new(StallTimeout::new(stream, send_timeout), MAX_HEADER_BYTES);
            let svc = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .max_buf_size(READ_BUFFER)
                // The guard ends hyper's input where a refused head starts; that end
                // must not abort a response still being written.
                .half_close(true)
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

