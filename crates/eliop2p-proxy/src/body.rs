//! The response body type of the proxy: nothing, one buffer, a relayed origin body,
//! or a stream of chunk slices.
//!
//! A frame can carry several buffers ([`Frames`]): the pieces of a chunk already in
//! hand leave in one frame of up to [`GATHER`] bytes, which hyper writes with one
//! vectored write. hyper flushes its write queue once it holds `max_buf_size`
//! bytes (the listener keeps that small, it is also the read buffer), so one
//! frame per 256 KiB piece would cost one flush and one wakeup per piece.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// Bytes a stream body gathers into one frame from buffers that are ready now
/// (it never waits to fill a frame).
pub const GATHER: usize = 2 << 20;

pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    /// A body relayed from the origin.
    Origin(hyper::body::Incoming),
    /// Chunk slices; `len` is the exact total, for the size hint.
    Stream(StreamBody),
}

pub struct StreamBody {
    stream: ByteStream,
    len: u64,
    /// The stream returned `None`; it is not polled again.
    ended: bool,
    /// An error that came after bytes gathered into the last frame: the next frame.
    failed: Option<BoxError>,
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }

    /// A body of `len` bytes from `stream`.
    pub fn stream(stream: ByteStream, len: u64) -> Self {
        ProxyBody::Stream(StreamBody { stream, len, ended: false, failed: None })
    }
}

impl StreamBody {
    fn poll_gather(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frames, BoxError>>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let mut out = Frames::default();
        while !self.ended && out.remaining() < GATHER {
            match self.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => out.push(b),
                Poll::Ready(Some(Err(e))) if out.remaining() == 0 => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Err(e))) => {
                    self.failed = Some(e);
                    break;
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending if out.remaining() == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready((out.remaining() > 0).then_some(Ok(out)))
    }
}

impl Body for ProxyBody {
    type Data = Frames;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Frames>, BoxError>>> {
        match &mut *self {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(Frames::from(b))))),
            ProxyBody::Origin(inc) => Pin::new(inc)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map(|f| f.map_data(Frames::from)).map_err(Into::into))),
            ProxyBody::Stream(s) => s.poll_gather(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Origin(inc) => inc.is_end_stream(),
            ProxyBody::Stream(s) => s.len == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Origin(inc) => inc.size_hint(),
            ProxyBody::Stream(s) => SizeHint::with_exact(s.len),
        }
    }
}

/// The data of one body frame: buffers in order, none of them empty, written
/// without copying them together.
#[derive(Default, Debug)]
pub struct Frames {
    bufs: VecDeque<Bytes>,
    remaining: usize,
}

impl Frames {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.bufs.push_back(b);
        }
    }
}

impl From<Bytes> for Frames {
    fn from(b: Bytes) -> Self {
        let mut out = Frames::default();
        out.push(b);
        out
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.bufs.front().map_or(&[], |b| b.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a frame");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self.bufs.front_mut().expect("remaining counts the buffers");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.bufs.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let n = dst.len().min(self.bufs.len());
        for (slot, b) in dst.iter_mut().zip(&self.bufs) {
            *slot = IoSlice::new(b);
        }
        n
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match self.bufs.front_mut() {
            // Within the first buffer: a slice of it, no copy.
            Some(front) if len <= front.len() => {
                let out = front.split_to(len);
                self.remaining -= len;
                if front.is_empty() {
                    self.bufs.pop_front();
                }
                out
            }
            _ => {
                assert!(len <= self.remaining, "copy_to_bytes past the end of a frame");
                let mut out = bytes::BytesMut::with_capacity(len);
                out.put((&mut *self).take(len));
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::BodyExt;

    fn piece(i: u8, n: usize) -> Bytes {
        Bytes::from(vec![i; n])
    }

    #[tokio::test]
    async fn ready_pieces_leave_in_one_frame_and_a_late_error_follows_them() {
        let items: Vec<Result<Bytes, BoxError>> = vec![
            Ok(piece(1, 1000)),
            Ok(Bytes::new()),
            Ok(piece(2, 3000)),
            Err("fill failed".into()),
        ];
        let mut body = ProxyBody::stream(Box::pin(stream::iter(items)), 4000);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.bufs.len(), 2);
        assert_eq!(first.remaining(), 4000);
        // The error is not lost behind the bytes that came before it.
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_frame_stops_at_the_gather_bound_and_the_end_is_not_polled_twice() {
        let n = GATHER / 4 + 1;
        let items: Vec<Result<Bytes, BoxError>> = (0..9u8).map(|i| Ok(piece(i, n))).collect();
        let want: Vec<u8> = (0..9u8).flat_map(|i| vec![i; n]).collect();
        let mut body = ProxyBody::stream(Box::pin(stream::iter(items)), want.len() as u64);
        let mut frames = 0;
        let mut got = Vec::new();
        while let Some(f) = body.frame().await {
            let mut d = f.unwrap().into_data().unwrap();
            assert!(d.remaining() < GATHER + n);
            frames += 1;
            while d.has_remaining() {
                let c = d.chunk().len();
                got.extend_from_slice(d.chunk());
                d.advance(c);
            }
        }
        assert_eq!(frames, 3);
        assert_eq!(got, want);
    }

    #[test]
    fn frames_advance_copy_and_vector_across_buffers() {
        let mut f = Frames::default();
        for i in 0..3u8 {
            f.push(piece(i, 10));
        }
        let mut io = [IoSlice::new(&[]); 2];
        assert_eq!(f.chunks_vectored(&mut io), 2);
        assert_eq!(&*io[1], &[1u8; 10][..]);
        f.advance(5);
        assert_eq!(f.copy_to_bytes(5), piece(0, 5));
        assert_eq!(f.copy_to_bytes(12)[..], [vec![1u8; 10], vec![2u8; 2]].concat()[..]);
        assert_eq!(f.remaining(), 8);
        f.advance(8);
        assert_eq!(f.chunk(), &[] as &[u8]);
    }
}
