//! One authenticated, pipelined connection: framing over TCP, the HMAC handshake,
//! and the client side's request multiplexing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use eliop2p_cache::PiecePool;
use eliop2p_core::ChunkId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, Frame, Limits, MessageType};
use crate::proto::{self, Reason};
use crate::{P2pError, P2pShared};

pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const SERVER_LABEL: &[u8] = b"eliop2p-server-v1";
const CLIENT_LABEL: &[u8] = b"eliop2p-client-v1";
/// `Error` frames answering a piece request carry this flag.
pub(crate) const FLAG_PIECE: u8 = 0x02;
/// A `Bitmap` answering a standing query carries this flag: the holder held the
/// query until it had news (a holder without it answered at once).
pub(crate) const FLAG_WATCHED: u8 = 0x04;

/// The two halves of a peer connection, over TCP or TLS.
pub(crate) type Rd = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
pub(crate) type Wr = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// A plain TCP connection's halves (no lock between them).
pub(crate) fn split_tcp(s: TcpStream) -> (Rd, Wr) {
    let (r, w) = s.into_split();
    (Box::new(r), Box::new(w))
}

/// Bytes a TLS connection reads from and writes to its socket at a time. rustls
/// asks its transport for at most 4 KiB per read: without a buffer below it, a
/// 256 KiB piece costs 64 `recv` calls and as many buffer resizes (measured: TLS
/// at 0.58x of plain TCP node to node; with this buffer, see the bench).
pub(crate) const TLS_IO_BUFFER: usize = 256 * 1024;

/// The socket under a TLS session, read and written in large blocks.
pub(crate) fn tls_transport(s: TcpStream) -> tokio::io::BufStream<TcpStream> {
    tokio::io::BufStream::with_capacity(TLS_IO_BUFFER, TLS_IO_BUFFER, s)
}

/// A TLS connection's halves.
pub(crate) fn split_tls<S>(s: S) -> (Rd, Wr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(s);
    (Box::new(r), Box::new(w))
}

pub(crate) fn random_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    // SAFETY: getrandom writes at most `n.len()` bytes into the buffer it is given.
    let got = unsafe { libc_getrandom(&mut n) };
    if got != 32 {
        // The kernel's random source failing is not recoverable for authentication.
        panic!("getrandom failed");
    }
    n
}

unsafe fn libc_getrandom(buf: &mut [u8; 32]) -> isize {
    unsafe extern "C" {
        fn getrandom(buf: *mut u8, buflen: usize, flags: u32) -> isize;
    }
    unsafe { getrandom(buf.as_mut_ptr(), buf.len(), 0) }
}

/// Reads frames from a socket into a buffer.
pub(crate) struct FrameReader {
    rd: Rd,
    buf: BytesMut,
    /// The limits in force: `Limits::HANDSHAKE` until `authenticated`.
    limits: Limits,
    /// The limits once the peer is authenticated.
    after: Limits,
    /// Bytes read from the socket at most at a time into `buf`.
    read_size: usize,
    /// Client connections: each `PieceData` frame's bytes are read into a
    /// buffer of their own (prepared by its requester, else from this pool) and
    /// the checksum is left to the piece's requester. Unused prepared buffers go
    /// back to this pool.
    pieces_into: Option<Arc<PiecePool>>,
    /// Piece buffers the requesters prepared (client connections).
    spare: Spare,
}

/// Receive buffers for pieces, taken from the cache's piece pool (memory of
/// evicted chunks) or allocated and touched by the tasks that request the
/// pieces: the first touch of fresh memory (a page fault per page) then happens
/// on those tasks, in parallel, instead of inside the connection reader's `recv`,
/// which every piece of the connection goes through.
type Spare = Arc<Mutex<Vec<BytesMut>>>;
/// Buffers kept ready per connection at most (pieces that never came leave
/// theirs behind).
const SPARE_MAX: usize = 64;

/// The shared buffer reads at most this much at a time, so little of a piece
/// lands there and has to be copied out into the piece's own buffer.
const SHARED_READ: usize = 64 * 1024;

impl FrameReader {
    /// A reader for a new connection: handshake limits (tiny frames, small reads,
    /// no buffer ahead) until `authenticated`, then `limits`.
    pub fn new(rd: Rd, limits: Limits) -> Self {
        Self {
            rd,
            buf: BytesMut::new(),
            limits: Limits::HANDSHAKE,
            after: limits,
            read_size: Limits::HANDSHAKE.max_data,
            pieces_into: None,
            spare: Spare::default(),
        }
    }

    /// The peer proved the cluster secret: full-size frames from now on.
    pub fn authenticated(&mut self) {
        self.limits = self.after;
        self.read_size = SHARED_READ;
    }

    pub async fn next(&mut self) -> Result<Option<Frame>, P2pError> {
        loop {
            // Every piece, whatever its size, gets a buffer of its own.
            if let Some(pool) = &self.pieces_into
                && let Some(h) = codec::peek_header(&self.buf, &self.limits)?
                && h.message_type == MessageType::PieceData
            {
                let pool = pool.clone();
                return self.read_piece(h, &pool).await.map(Some);
            }
            if let Some(f) = codec::decode(&mut self.buf, &self.limits)? {
                return Ok(Some(f));
            }
            if self.fill_shared().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(P2pError::Closed)
                };
            }
        }
    }

    /// Reads more bytes into the shared buffer; 0 at end of stream.
    async fn fill_shared(&mut self) -> Result<usize, P2pError> {
        self.buf.reserve(self.read_size);
        Ok(self
            .rd
            .read_buf(&mut (&mut self.buf).limit(self.read_size))
            .await?)
    }

    /// Reads the piece whose header is at the front of the buffer into a buffer
    /// sized to it: the socket writes the bytes straight where the cache keeps
    /// them, and the piece pins no memory shared with other frames.
    async fn read_piece(&mut self, h: codec::Header, pool: &PiecePool) -> Result<Frame, P2pError> {
        let head = self.buf.split_to(h.head_len());
        let chunk_id = Bytes::copy_from_slice(h.chunk_id(&head));
        let prepared = {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            let i = spare.iter().position(|b| b.capacity() == h.data_len);
            i.map(|i| spare.swap_remove(i))
        };
        let mut data = prepared.unwrap_or_else(|| pool.buffer(h.data_len));
        let have = self.buf.len().min(h.data_len);
        data.extend_from_slice(&self.buf[..have]);
        self.buf.advance(have);
        while data.len() < h.data_len {
            let want = h.data_len - data.len();
            if self.rd.read_buf(&mut (&mut data).limit(want)).await? == 0 {
                return Err(P2pError::Closed);
            }
        }
        while self.buf.len() < codec::SUFFIX_LEN {
            if self.fill_shared().await? == 0 {
                return Err(P2pError::Closed);
            }
        }
        let suffix = self.buf.split_to(codec::SUFFIX_LEN);
        Ok(h.frame(chunk_id, data.freeze(), &suffix))
    }

    /// Hands the prepared buffers nobody used back to the pool.
    fn return_spare(&mut self) {
        let unused = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(pool) = &self.pieces_into {
            for b in unused {
                pool.give(b);
            }
        }
    }

    pub async fn expect(&mut self, t: MessageType) -> Result<Frame, P2pError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.next()).await {
            Err(_) => Err(P2pError::Timeout),
            Ok(Ok(Some(f))) if f.message_type == t => Ok(f),
            Ok(Ok(Some(f))) if f.message_type == MessageType::Error => {
                Err(P2pError::Refused(proto::parse_error(&f.data).1))
            }
            Ok(Ok(Some(f))) => Err(P2pError::Protocol(format!(
                "expected {t:?}, got {:?}",
                f.message_type
            ))),
            Ok(Ok(None)) => Err(P2pError::Closed),
            Ok(Err(e)) => Err(e),
        }
    }
}

pub(crate) async fn write_frame(wr: &mut Wr, f: &Frame) -> Result<(), P2pError> {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    wr.write_all(&b).await?;
    // TLS keeps records in its buffer until flushed (a no-op on TCP).
    wr.flush().await?;
    Ok(())
}

/// Server side of the handshake: HELLO -> CHALLENGE -> AUTH -> AUTH_OK. Returns
/// the node id the peer announced, which must be one of `certified` (the
/// identities of its TLS certificate) when given.
pub(crate) async fn accept_handshake(
    reader: &mut FrameReader,
    wr: &mut Wr,
    secret: &[u8],
    certified: Option<&[String]>,
) -> Result<String, P2pError> {
    let hello = reader.expect(MessageType::Hello).await?;
    if hello.data.len() < 32 || hello.data.len() > 32 + 256 {
        return Err(P2pError::Protocol("bad hello".into()));
    }
    let node_id: String = String::from_utf8_lossy(&hello.data[32..])
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    // With TLS the peer is the node its certificate names, whatever it announces.
    if let Some(ids) = certified
        && !ids.contains(&node_id)
    {
        let refusal = proto::error_payload(Reason::AuthFailed, "the certificate does not name this node");
        let _ = write_frame(wr, &Frame::new(MessageType::Error, &[], refusal, 0, 0)).await;
        return Err(P2pError::WrongIdentity { announced: node_id, certified: ids.to_vec() });
    }
    let nonce_c = &hello.data[..32];
    let nonce_s = random_nonce();
    let mut challenge = Vec::with_capacity(64);
    challenge.extend_from_slice(&nonce_s);
    challenge.extend_from_slice(&proto::proof(secret, SERVER_LABEL, nonce_c, &nonce_s));
    write_frame(
        wr,
        &Frame::new(MessageType::Challenge, &[], challenge.into(), 0, 0),
    )
    .await?;
    let auth = reader.expect(MessageType::Auth).await?;
    if !proto::proofs_equal(
        &auth.data,
        &proto::proof(secret, CLIENT_LABEL, &nonce_s, nonce_c),
    ) {
        let _ = write_frame(
            wr,
            &Frame::new(
                MessageType::Error,
                &[],
                proto::error_payload(Reason::AuthFailed, "authentication failed"),
                0,
                0,
            ),
        )
        .await;
        return Err(P2pError::AuthFailed);
    }
    write_frame(
        wr,
        &Frame::new(MessageType::AuthOk, &[], Bytes::new(), 0, 0),
    )
    .await?;
    reader.authenticated();
    Ok(node_id)
}

/// Client side: proves knowledge of the secret and checks the server's proof (a
/// server without the secret cannot feed us data either).
async fn connect_handshake(
    reader: &mut FrameReader,
    wr: &mut Wr,
    secret: &[u8],
    node_id: &str,
) -> Result<(), P2pError> {
    let nonce_c = random_nonce();
    let mut hello = nonce_c.to_vec();
    hello.extend_from_slice(node_id.as_bytes());
    write_frame(wr, &Frame::new(MessageType::Hello, &[], hello.into(), 0, 0)).await?;
    let ch = reader.expect(MessageType::Challenge).await?;
    if ch.data.len() != 64 {
        return Err(P2pError::Protocol("bad challenge".into()));
    }
    let (nonce_s, server_proof) = ch.data.split_at(32);
    if !proto::proofs_equal(
        server_proof,
        &proto::proof(secret, SERVER_LABEL, &nonce_c, nonce_s),
    ) {
        return Err(P2pError::AuthFailed);
    }
    let proof = proto::proof(secret, CLIENT_LABEL, nonce_s, &nonce_c);
    write_frame(
        wr,
        &Frame::new(MessageType::Auth, &[], Bytes::copy_from_slice(&proof), 0, 0),
    )
    .await?;
    reader.expect(MessageType::AuthOk).await?;
    reader.authenticated();
    Ok(())
}

async fn tcp(addr: SocketAddr, shared: &P2pShared) -> Result<TcpStream, P2pError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| P2pError::Timeout)??;
    stream.set_nodelay(true)?;
    crate::sockopt::set_congestion(&stream, shared.cfg.tcp_congestion.as_deref());
    Ok(stream)
}

/// Opens a connection to a peer: TLS when the node has certificates (falling
/// back to plain TCP for a peer without TLS only during a rollout), TCP otherwise.
async fn dial(addr: SocketAddr, shared: &P2pShared) -> Result<(Rd, Wr), P2pError> {
    let stream = tcp(addr, shared).await?;
    let Some(tls) = &shared.tls else {
        return Ok(split_tcp(stream));
    };
    // The name is not checked (see `tls`): the peer's certificate is.
    let name = rustls::pki_types::ServerName::try_from("eliop2p-peer").expect("a valid DNS name");
    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connector().connect(name, tls_transport(stream))).await {
        Ok(Ok(s)) => return Ok(split_tls(s)),
        Ok(Err(e)) => {
            let reason = crate::tls::reason(&e);
            tls.failed(reason);
            format!("{reason}: {e}")
        }
        Err(_) => {
            tls.failed("timeout");
            "no TLS handshake within 5 s".to_owned()
        }
    };
    if tls.rollout() {
        tracing::debug!(peer = %addr, why, "TLS to the peer failed; plain TCP (p2p.tls_rollout)");
        return Ok(split_tcp(tcp(addr, shared).await?));
    }
    shared.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = %addr, why, "TLS handshake with a peer failed");
    Err(P2pError::Tls(why))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Bitmap(ChunkId, u32),
    Piece(ChunkId, u32),
    Locate(ChunkId, u32),
}

type Pending = Arc<Mutex<HashMap<Key, oneshot::Sender<Result<Frame, P2pError>>>>>;

/// A client connection to one peer; requests are pipelined over it.
pub(crate) struct PeerConn {
    tx: mpsc::Sender<Bytes>,
    pending: Pending,
    spare: Spare,
    pool: Arc<PiecePool>,
    closed: Arc<AtomicBool>,
    next_request: AtomicU32,
}

impl PeerConn {
    pub async fn connect(addr: SocketAddr, shared: &P2pShared) -> Result<Arc<Self>, P2pError> {
        let (rd, mut wr) = dial(addr, shared).await?;
        let mut reader = FrameReader::new(rd, shared.limits);
        if let Err(e) =
            connect_handshake(&mut reader, &mut wr, &shared.secret, &shared.cfg.node_id).await
        {
            shared
                .stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        // After the handshake, piece checksums are checked by each piece's
        // requester (`download::fetch_batch`), off this connection's reader.
        let pool = shared.cache.pool().clone();
        reader.pieces_into = Some(pool.clone());
        let spare = reader.spare.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
        });
        {
            let (pending, closed) = (pending.clone(), closed.clone());
            tokio::spawn(async move {
                let err = loop {
                    match reader.next().await {
                        Ok(Some(f)) => {
                            dispatch(&pending, f);
                            // Nothing awaited: buffers of pieces that never came
                            // (cancelled, failed) go back to the pool.
                            if pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                                reader.return_spare();
                            }
                        }
                        Ok(None) => break P2pError::Closed,
                        Err(e) => break e,
                    }
                };
                closed.store(true, Ordering::Relaxed);
                tracing::debug!(peer = %addr, error = %err, "peer connection ended");
                let waiters: Vec<_> = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect();
                for (_, w) in waiters {
                    let _ = w.send(Err(P2pError::Closed));
                }
            });
        }
        Ok(Arc::new(Self {
            tx,
            pending,
            spare,
            pool,
            closed,
            next_request: AtomicU32::new(1),
        }))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.tx.is_closed()
    }

    async fn send(&self, f: Frame) -> Result<(), P2pError> {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        self.tx.send(b.freeze()).await.map_err(|_| P2pError::Closed)
    }

    fn register(&self, key: Key) -> oneshot::Receiver<Result<Frame, P2pError>> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, tx);
        rx
    }

    /// The peer's bitmap of a chunk: at once, or with `watch = (known, wait)` once
    /// the peer has more than `known` pieces (or after `wait`).
    pub async fn bitmap(&self, id: &ChunkId, watch: Option<&proto::Watch>) -> Result<Frame, P2pError> {
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let rx = self.register(Key::Bitmap(*id, req));
        let data = match watch {
            Some(w) => w.encode(),
            None => Bytes::new(),
        };
        self.send(Frame::new(
            MessageType::HaveQuery,
            id.as_bytes(),
            data,
            req,
            0,
        ))
        .await?;
        rx.await.map_err(|_| P2pError::Closed)?
    }

    /// Sends a frame that has no answer (gossip).
    pub async fn notify(&self, f: Frame) -> Result<(), P2pError> {
        self.send(f).await
    }

    /// Asks who holds a chunk (`Locate`); the answer is a `Locations` frame.
    pub async fn locate(&self, id: &ChunkId, payload: Bytes) -> Result<Frame, P2pError> {
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let rx = self.register(Key::Locate(*id, req));
        self.send(Frame::new(
            MessageType::Locate,
            id.as_bytes(),
            payload,
            req,
            0,
        ))
        .await?;
        rx.await.map_err(|_| P2pError::Closed)?
    }

    /// Prepares receive buffers of these lengths for pieces about to be requested
    /// (see [`Spare`]); the calling task takes the page faults of fresh memory.
    fn prepare_buffers(&self, lens: impl IntoIterator<Item = usize>) {
        let bufs: Vec<BytesMut> = lens
            .into_iter()
            .map(|len| self.pool.resident_buffer(len))
            .collect();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        for b in bufs {
            if spare.len() >= SPARE_MAX {
                break;
            }
            spare.push(b);
        }
    }

    /// Requests pieces of a chunk of `chunk_len` bytes; one receiver per piece, in
    /// the given order. Their receive buffers are prepared here, on the caller.
    pub async fn pieces(
        &self,
        id: &ChunkId,
        chunk_len: u64,
        pieces: &[u32],
    ) -> Result<Vec<oneshot::Receiver<Result<Frame, P2pError>>>, P2pError> {
        let rxs = pieces
            .iter()
            .map(|p| self.register(Key::Piece(*id, *p)))
            .collect();
        // After registering: the reader returns spare buffers to the pool when
        // nothing is awaited.
        self.prepare_buffers(pieces.iter().map(|p| {
            let start = u64::from(*p) * eliop2p_cache::PIECE_SIZE;
            chunk_len
                .saturating_sub(start)
                .min(eliop2p_cache::PIECE_SIZE) as usize
        }));
        self.send(Frame::new(
            MessageType::PieceRequest,
            id.as_bytes(),
            proto::encode_pieces(pieces),
            0,
            0,
        ))
        .await?;
        Ok(rxs)
    }

    pub async fn cancel(&self, id: &ChunkId, pieces: &[u32]) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for piece in pieces {
                p.remove(&Key::Piece(*id, *piece));
            }
        }
        let _ = self
            .send(Frame::new(
                MessageType::Cancel,
                id.as_bytes(),
                proto::encode_pieces(pieces),
                0,
                0,
            ))
            .await;
    }
}

fn dispatch(pending: &Pending, f: Frame) {
    let Ok(raw): Result<[u8; 32], _> = f.chunk_id[..].try_into() else {
        return;
    };
    let id = ChunkId::from_bytes(raw);
    let key = match f.message_type {
        MessageType::Bitmap => Key::Bitmap(id, f.sequence_number),
        MessageType::Locations => Key::Locate(id, f.sequence_number),
        MessageType::PieceData => Key::Piece(id, f.sequence_number),
        MessageType::Error if f.flags & FLAG_PIECE != 0 => Key::Piece(id, f.sequence_number),
        MessageType::Error => Key::Bitmap(id, f.sequence_number),
        _ => return,
    };
    if let Some(w) = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key)
    {
        let _ = w.send(Ok(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn piece(seq: u32, len: usize) -> Frame {
        let data: Vec<u8> = (0..len).map(|i| (i as u32 * 7 + seq) as u8).collect();
        Frame::new(MessageType::PieceData, &[9u8; 32], data.into(), seq, 0)
    }

    /// A client-side reader on a loopback socket (pieces go into the pool of a
    /// 4 MiB memory tier), and the writing end.
    async fn pair() -> (FrameReader, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (rd, _wr) = split_tcp(client);
        let mut r = FrameReader::new(rd, Limits::default());
        r.authenticated();
        let cache = eliop2p_cache::ChunkCache::open(eliop2p_cache::CacheConfig::memory_only(
            4 << 20,
            16 << 20,
        ))
        .await;
        r.pieces_into = Some(cache.pool().clone());
        (r, server)
    }

    #[tokio::test]
    async fn pieces_land_in_buffers_of_their_own() {
        const PIECE: u64 = eliop2p_cache::PIECE_SIZE;
        let (mut r, mut server) = pair().await;
        let frames = [
            piece(0, PIECE as usize),
            piece(1, 100_000),
            piece(3, 1_000),
            Frame::new(
                MessageType::Bitmap,
                &[9u8; 32],
                Bytes::from_static(b"bm"),
                5,
                1,
            ),
            piece(2, PIECE as usize),
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        // A buffer prepared for the second piece is the one it is read into.
        let prepared = BytesMut::with_capacity(100_000);
        let prepared_at = prepared.as_ptr();
        r.spare.lock().unwrap().push(prepared);
        // The first whole piece, not prepared, goes into the pool's buffer; the
        // last finds the pool empty and gets new memory.
        let pool = r.pieces_into.clone().expect("a client reader");
        let pooled = BytesMut::with_capacity(PIECE as usize);
        let pooled_at = pooled.as_ptr();
        assert!(pool.give(pooled));
        let writer = tokio::spawn(async move {
            // Odd-sized writes, so headers and pieces straddle reads.
            for part in wire.chunks(77_777) {
                server.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
            server
        });
        let mut kept = Vec::new();
        for want in &frames {
            let got = r.next().await.unwrap().unwrap();
            assert_eq!(&got, want);
            got.verify().unwrap();
            if got.message_type == MessageType::PieceData {
                // An allocation no other frame (nor the read buffer) shares, so
                // the cache keeping the piece keeps exactly its bytes.
                assert!(got.data.is_unique());
            }
            match (got.message_type, got.sequence_number) {
                (MessageType::PieceData, 0) => assert_eq!(got.data.as_ptr(), pooled_at),
                (MessageType::PieceData, 1) => assert_eq!(got.data.as_ptr(), prepared_at),
                (MessageType::PieceData, 2) => assert_ne!(got.data.as_ptr(), pooled_at),
                _ => {}
            }
            // Kept, so a later piece cannot be given the freed address of an
            // earlier one by the allocator.
            kept.push(got);
        }
        drop(kept);
        assert_eq!(pool.reused(), 1);
        drop(writer.await.unwrap());
        assert!(r.next().await.unwrap().is_none());
        // Prepared buffers nobody used go back to the pool.
        r.spare
            .lock()
            .unwrap()
            .push(BytesMut::with_capacity(PIECE as usize));
        r.return_spare();
        assert!(r.spare.lock().unwrap().is_empty());
        assert_eq!(pool.pooled_bytes(), PIECE);
    }

    #[tokio::test]
    async fn piece_checksums_are_left_to_the_requester_other_frames_checked() {
        let (mut r, mut server) = pair().await;
        let mut wire = BytesMut::new();
        piece(4, 200_000).encode(&mut wire);
        let at = wire.len() - 32 - 4 - 1 - 1;
        wire[at] ^= 1;
        Frame::new(
            MessageType::Bitmap,
            &[9u8; 32],
            Bytes::from_static(b"bits"),
            9,
            0,
        )
        .encode(&mut wire);
        let at = wire.len() - 32 - 4 - 1 - 1;
        wire[at] ^= 1;
        server.write_all(&wire).await.unwrap();
        // The rotten piece is handed over; its requester's `verify` refuses it.
        let f = r.next().await.unwrap().unwrap();
        assert!(matches!(f.verify(), Err(codec::CodecError::Checksum(4))));
        // A rotten frame of another type ends the connection.
        assert!(matches!(
            r.next().await,
            Err(P2pError::Codec(codec::CodecError::Checksum(9)))
        ));
    }

    #[tokio::test]
    async fn a_connection_cut_inside_a_piece_is_an_error() {
        let (mut r, mut server) = pair().await;
        let mut wire = BytesMut::new();
        piece(0, 1 << 20).encode(&mut wire);
        server.write_all(&wire[..600_000]).await.unwrap();
        drop(server);
        assert!(matches!(r.next().await, Err(P2pError::Closed)));
    }
}
