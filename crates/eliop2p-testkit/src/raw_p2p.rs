//! Raw P2P frames for probes no node would send: a connection to a node's P2P
//! port as an authenticated member (the handshake of PROTOCOL.md with the test
//! cluster secret), and frames written and read one by one.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use eliop2p_p2p::codec::{self, Frame, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A member connection, with its read buffer. `recv_buffer`: the socket's
/// receive buffer in bytes (a small one makes a slow reader's bytes back up at
/// the node, not in this process's kernel).
pub async fn member(addr: SocketAddr, recv_buffer: Option<u32>) -> anyhow::Result<(TcpStream, BytesMut)> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if let Some(b) = recv_buffer {
        sock.set_recv_buffer_size(b)?;
    }
    let mut s = sock.connect(addr).await?;
    let secret = b"test-cluster-secret";
    let nonce_c = [5u8; 32];
    let mut hello = nonce_c.to_vec();
    hello.extend_from_slice(b"prober");
    s.write_all(&frame_bytes(MessageType::Hello, &[], hello.into())).await?;
    let mut buf = BytesMut::new();
    let ch = read_frame(&mut s, &mut buf).await?;
    anyhow::ensure!(ch.message_type == MessageType::Challenge, "no challenge");
    let proof = eliop2p_p2p::proto::proof(secret, b"eliop2p-client-v1", &ch.data[..32], &nonce_c);
    s.write_all(&frame_bytes(MessageType::Auth, &[], Bytes::copy_from_slice(&proof))).await?;
    anyhow::ensure!(read_frame(&mut s, &mut buf).await?.message_type == MessageType::AuthOk, "not authenticated");
    Ok((s, buf))
}

/// The next frame on `s`.
pub async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Frame> {
    loop {
        if let Some(f) = codec::decode(buf, &codec::Limits::default())? {
            return Ok(f);
        }
        anyhow::ensure!(s.read_buf(buf).await? > 0, "closed");
    }
}

/// One frame's bytes (sequence number 1, no flags).
pub fn frame_bytes(t: MessageType, id: &[u8], data: Bytes) -> BytesMut {
    let mut b = BytesMut::new();
    Frame::new(t, id, data, 1, 0).encode(&mut b);
    b
}

/// An origin and one node with a P2P listener and no peers.
pub async fn p2p_node() -> anyhow::Result<(crate::TestOrigin, eliop2p_proxy::NodeHandle)> {
    let origin = crate::TestOrigin::start().await?;
    let l = crate::p2p_listeners(1).await?.remove(0);
    let node = crate::start_p2p_node(&origin, l, vec![], |_| {}).await?;
    Ok((origin, node))
}

/// `data` (at most one 16 MiB chunk) put at `bucket/obj` and read once through
/// the node, so the node holds it: the id of its chunk.
pub async fn cached_chunk(
    origin: &crate::TestOrigin,
    node: &eliop2p_proxy::NodeHandle,
    bucket: &str,
    data: Bytes,
) -> anyhow::Result<eliop2p_core::ChunkId> {
    origin.create_bucket(bucket).await?;
    let etag = origin.put(bucket, "obj", data).await?;
    let r = crate::TestClient::new().get(&format!("http://{}/{bucket}/obj", node.proxy_addr), &[]).await?;
    anyhow::ensure!(r.status == 200, "read through the node: {}", r.status);
    Ok(eliop2p_core::ChunkId::derive(
        &origin.endpoint,
        &eliop2p_core::ObjectKey::new(bucket, "obj"),
        &eliop2p_core::ETag::new(&etag),
        16 << 20,
        0,
    ))
}
