//! The response body type of the proxy: nothing, one buffer, a relayed origin body,
//! or a stream of chunk slices.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    /// A body relayed from the origin.
    Origin(hyper::body::Incoming),
    /// Chunk slices; `len` is the exact total, for the size hint.
    Stream {
        stream: ByteStream,
        len: u64,
    },
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Origin(inc) => Pin::new(inc).poll_frame(cx).map_err(Into::into),
            ProxyBody::Stream { stream, .. } => stream
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Origin(inc) => inc.is_end_stream(),
            ProxyBody::Stream { len, .. } => *len == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Origin(inc) => inc.size_hint(),
            ProxyBody::Stream { len, .. } => SizeHint::with_exact(*len),
        }
    }
}
