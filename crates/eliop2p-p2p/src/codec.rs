//! The frame codec of the P2P protocol (see PROTOCOL.md): pure, no I/O.
//!
//! `magic u32 | version u32 | message_type u32 | chunk_id_length u32 | chunk_id |
//! data_length u32 | data | sha256 [32] | sequence_number u32 | flags u8`, integers
//! big-endian. Lengths are checked against limits before anything is allocated;
//! the SHA-256 of `data` is checked on decode. Truncated input is "need more bytes",
//! never a panic; anything malformed is an error that closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub const MAGIC: u32 = 0x4348_4B50; // "CHKP"
pub const VERSION: u32 = 3;
/// Bytes before `chunk_id`.
const PREFIX: usize = 16;
/// Bytes after `data`.
const SUFFIX: usize = 32 + 4 + 1;

/// Message types. 0x20-0x28 are the gossip messages of the discovery layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MessageType {
    Hello = 0x01,
    Challenge = 0x02,
    Auth = 0x03,
    AuthOk = 0x04,
    HaveQuery = 0x10,
    Bitmap = 0x11,
    PieceRequest = 0x12,
    PieceData = 0x13,
    Error = 0x14,
    Cancel = 0x15,
    Locate = 0x16,
    Locations = 0x17,
    NodeJoin = 0x20,
    NodeLeave = 0x21,
    ChunkAnnounce = 0x22,
    ChunkRemove = 0x23,
    StateSync = 0x24,
    Ping = 0x25,
    PingReq = 0x26,
    Ack = 0x27,
    Updates = 0x28,
}

impl MessageType {
    pub fn from_u32(v: u32) -> Option<Self> {
        use MessageType::*;
        Some(match v {
            0x01 => Hello,
            0x02 => Challenge,
            0x03 => Auth,
            0x04 => AuthOk,
            0x10 => HaveQuery,
            0x11 => Bitmap,
            0x12 => PieceRequest,
            0x13 => PieceData,
            0x14 => Error,
            0x15 => Cancel,
            0x16 => Locate,
            0x17 => Locations,
            0x20 => NodeJoin,
            0x21 => NodeLeave,
            0x22 => ChunkAnnounce,
            0x23 => ChunkRemove,
            0x24 => StateSync,
            0x25 => Ping,
            0x26 => PingReq,
            0x27 => Ack,
            0x28 => Updates,
            _ => return None,
        })
    }
}

/// `flags` bit: the last frame answering a request.
pub const FLAG_FINAL: u8 = 0x01;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub message_type: MessageType,
    pub chunk_id: Bytes,
    pub data: Bytes,
    /// SHA-256 of `data` (computed by `new`, given to `with_hash`, checked by `decode`).
    pub sha256: [u8; 32],
    pub sequence_number: u32,
    pub flags: u8,
}

impl Frame {
    pub fn new(
        message_type: MessageType,
        chunk_id: &[u8],
        data: Bytes,
        sequence_number: u32,
        flags: u8,
    ) -> Self {
        let sha256 = Sha256::digest(&data).into();
        Self::with_hash(message_type, chunk_id, data, sha256, sequence_number, flags)
    }

    /// A frame whose data hash is already known (a piece hashed when it was filled).
    pub fn with_hash(
        message_type: MessageType,
        chunk_id: &[u8],
        data: Bytes,
        sha256: [u8; 32],
        sequence_number: u32,
        flags: u8,
    ) -> Self {
        Self {
            message_type,
            chunk_id: Bytes::copy_from_slice(chunk_id),
            data,
            sha256,
            sequence_number,
            flags,
        }
    }

    /// Checks the data against the frame's SHA-256 (for pieces read with
    /// [`Header::frame`], whose checksum is left to their requester).
    pub fn verify(&self) -> Result<(), CodecError> {
        if Sha256::digest(&self.data).as_slice() == self.sha256 {
            Ok(())
        } else {
            Err(CodecError::Checksum(self.sequence_number))
        }
    }

    pub fn encoded_len(&self) -> usize {
        PREFIX + self.chunk_id.len() + 4 + self.data.len() + SUFFIX
    }

    /// Appends the frame.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        put_head(out, self.message_type, &self.chunk_id, self.data.len());
        out.put_slice(&self.data);
        put_tail(out, self.sha256, self.sequence_number, self.flags);
    }

    /// The frame as buffers to write (head, data, tail), so large payloads are
    /// sent without being copied.
    pub fn to_parts(&self) -> Parts {
        Parts::frame(
            self.message_type,
            &self.chunk_id,
            [self.data.clone()],
            self.sha256,
            self.sequence_number,
            self.flags,
        )
    }
}

/// The bytes before a frame's data: prefix, chunk id, data length.
fn put_head(out: &mut impl BufMut, t: MessageType, chunk_id: &[u8], data_len: usize) {
    out.put_u32(MAGIC);
    out.put_u32(VERSION);
    out.put_u32(t as u32);
    out.put_u32(chunk_id.len() as u32);
    out.put_slice(chunk_id);
    out.put_u32(data_len as u32);
}

/// The bytes after a frame's data: its SHA-256, sequence number, flags.
fn put_tail(out: &mut impl BufMut, sha256: [u8; 32], sequence_number: u32, flags: u8) {
    out.put_slice(&sha256);
    out.put_u32(sequence_number);
    out.put_u8(flags);
}

/// One or more frames as a list of buffers, written with vectored writes: a
/// piece whose bytes sit in several buffers is sent without joining them.
#[derive(Debug, Default)]
pub struct Parts {
    bufs: std::collections::VecDeque<Bytes>,
    remaining: usize,
}

impl Parts {
    /// A frame whose data is `data` (the buffers in order, any number) with the
    /// data's SHA-256 already known.
    pub fn frame(
        message_type: MessageType,
        chunk_id: &[u8],
        data: impl IntoIterator<Item = Bytes>,
        sha256: [u8; 32],
        sequence_number: u32,
        flags: u8,
    ) -> Self {
        let mut parts = Self::default();
        let data: Vec<Bytes> = data.into_iter().collect();
        let data_len: usize = data.iter().map(Bytes::len).sum();
        let mut head = BytesMut::with_capacity(PREFIX + chunk_id.len() + 4);
        put_head(&mut head, message_type, chunk_id, data_len);
        parts.push(head.freeze());
        for d in data {
            parts.push(d);
        }
        let mut tail = BytesMut::with_capacity(SUFFIX);
        put_tail(&mut tail, sha256, sequence_number, flags);
        parts.push(tail.freeze());
        parts
    }

    /// Appends a buffer (empty ones are left out, so every buffer held has bytes).
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.bufs.push_back(b);
        }
    }
}

impl Buf for Parts {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.bufs.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the parts");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self
                .bufs
                .front_mut()
                .expect("remaining bytes are in a buffer");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.bufs.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(&self.bufs) {
            *slot = std::io::IoSlice::new(b);
            n += 1;
        }
        n
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_chunk_id: usize,
    pub max_data: usize,
}

impl Limits {
    /// Before the handshake: a Hello is 32 bytes of nonce and a node id of at most
    /// 256, a Challenge 64, an Auth 32, an Error a short message; no chunk ids. An
    /// outsider gets no more buffer than this from the node.
    pub const HANDSHAKE: Limits = Limits {
        max_chunk_id: 0,
        max_data: 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chunk_id: 64,
            max_data: (1 << 20) + 4096,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported protocol version {0}")]
    Version(u32),
    #[error("unknown message type {0:#x}")]
    UnknownType(u32),
    #[error("chunk id of {0} bytes exceeds the limit")]
    ChunkIdTooLong(usize),
    #[error("data of {0} bytes exceeds the limit")]
    DataTooLong(usize),
    #[error("data checksum mismatch (sequence {0})")]
    Checksum(u32),
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed
/// (nothing consumed), the frame (consumed) or an error. Limits are checked as soon
/// as each length field is readable, before any allocation.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, CodecError> {
    let Some(h) = peek_header(buf, limits)? else {
        return Ok(None);
    };
    let total = h.frame_len();
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(PREFIX);
    let chunk_id = frame.split_to(h.id_len).freeze();
    frame.advance(4);
    let data = frame.split_to(h.data_len).freeze();
    let f = h.frame(chunk_id, data, &frame);
    f.verify()?;
    Ok(Some(f))
}

/// The fixed part of a frame before its data, parsed and checked against the
/// limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub message_type: MessageType,
    pub id_len: usize,
    pub data_len: usize,
}

impl Header {
    /// Bytes before the data: prefix, chunk id and data length.
    pub fn head_len(&self) -> usize {
        PREFIX + self.id_len + 4
    }

    /// The whole frame's length.
    pub fn frame_len(&self) -> usize {
        self.head_len() + self.data_len + SUFFIX
    }

    /// The chunk id inside the head bytes.
    pub fn chunk_id<'a>(&self, head: &'a [u8]) -> &'a [u8] {
        &head[PREFIX..PREFIX + self.id_len]
    }

    /// The frame from its parts: the chunk id, the data (read separately, so it
    /// can land in a buffer of its own) and the [`SUFFIX_LEN`] bytes after it.
    /// The data's checksum is not checked here ([`Frame::verify`]).
    pub fn frame(&self, chunk_id: Bytes, data: Bytes, mut suffix: &[u8]) -> Frame {
        let sha256: [u8; 32] = suffix[..32].try_into().expect("32 bytes");
        suffix.advance(32);
        let sequence_number = suffix.get_u32();
        let flags = suffix.get_u8();
        Frame {
            message_type: self.message_type,
            chunk_id,
            data,
            sha256,
            sequence_number,
            flags,
        }
    }
}

/// Bytes after a frame's data: SHA-256, sequence number, flags.
pub const SUFFIX_LEN: usize = SUFFIX;

/// Parses the header at the front of `buf` without consuming anything: `Ok(None)`
/// until enough bytes are there. Every field is checked as soon as it is readable.
pub fn peek_header(buf: &[u8], limits: &Limits) -> Result<Option<Header>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let word = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let magic = word(buf, 0);
    if magic != MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    if buf.len() < PREFIX {
        return Ok(None);
    }
    let version = word(buf, 4);
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let raw_type = word(buf, 8);
    let message_type = MessageType::from_u32(raw_type).ok_or(CodecError::UnknownType(raw_type))?;
    let id_len = word(buf, 12) as usize;
    if id_len > limits.max_chunk_id {
        return Err(CodecError::ChunkIdTooLong(id_len));
    }
    if buf.len() < PREFIX + id_len + 4 {
        return Ok(None);
    }
    let data_len = word(buf, PREFIX + id_len) as usize;
    if data_len > limits.max_data {
        return Err(CodecError::DataTooLong(data_len));
    }
    Ok(Some(Header {
        message_type,
        id_len,
        data_len,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn piece_checksums_are_checked_by_verify_and_decode() {
        // Corrupt one data byte of a piece: `verify` refuses it (the check a
        // requester makes on a piece read by `Header::frame`).
        let mut out = BytesMut::new();
        sample().encode(&mut out);
        let at = out.len() - 32 - 4 - 1 - 1;
        out[at] ^= 1;
        let h = peek_header(&out, &Limits::default()).unwrap().unwrap();
        let data = Bytes::copy_from_slice(&out[h.head_len()..h.head_len() + h.data_len]);
        let f = h.frame(
            Bytes::copy_from_slice(h.chunk_id(&out)),
            data,
            &out[h.head_len() + h.data_len..],
        );
        assert!(matches!(f.verify(), Err(CodecError::Checksum(3))));
        // Plain decoding refuses it outright.
        let mut buf = out;
        assert!(matches!(
            decode(&mut buf, &Limits::default()),
            Err(CodecError::Checksum(3))
        ));
        // Other frame types are verified by decoding too.
        let mut out = BytesMut::new();
        Frame::new(
            MessageType::Bitmap,
            &[7u8; 32],
            Bytes::from_static(b"bits"),
            9,
            0,
        )
        .encode(&mut out);
        let at = out.len() - 32 - 4 - 1 - 1;
        out[at] ^= 1;
        assert!(decode(&mut out, &Limits::default()).is_err());
        // An intact piece verifies.
        let mut out = BytesMut::new();
        sample().encode(&mut out);
        let f = decode(&mut out, &Limits::default()).unwrap().unwrap();
        assert!(f.verify().is_ok());
    }

    fn sample() -> Frame {
        Frame::new(
            MessageType::PieceData,
            &[7u8; 32],
            Bytes::from_static(b"piece bytes"),
            3,
            FLAG_FINAL,
        )
    }

    #[test]
    fn round_trip_and_incremental_input() {
        let f = sample();
        let mut out = BytesMut::new();
        f.encode(&mut out);
        assert_eq!(out.len(), f.encoded_len());
        let full = out.clone();
        // Every prefix is "need more", never an error or a panic.
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part, &Limits::default()), Ok(None), "cut {cut}");
            assert_eq!(part.len(), cut, "nothing consumed");
        }
        let mut two = BytesMut::new();
        f.encode(&mut two);
        f.encode(&mut two);
        assert_eq!(decode(&mut two, &Limits::default()).unwrap().unwrap(), f);
        assert_eq!(decode(&mut two, &Limits::default()).unwrap().unwrap(), f);
        assert!(two.is_empty());
    }

    #[test]
    fn parts_equal_the_encoding() {
        let f = sample();
        let mut one = BytesMut::new();
        f.encode(&mut one);
        let mut parts = f.to_parts();
        assert_eq!(parts.remaining(), one.len());
        assert_eq!(parts.copy_to_bytes(one.len()), one);
        // Data in several buffers, consumed in odd steps as a socket would.
        let split: Vec<Bytes> = [0..1, 1..1, 1..3, 3..f.data.len()]
            .into_iter()
            .map(|r| f.data.slice(r))
            .collect();
        let mut parts = Parts::frame(
            f.message_type,
            &f.chunk_id,
            split,
            f.sha256,
            f.sequence_number,
            f.flags,
        );
        let mut got = Vec::new();
        while parts.has_remaining() {
            let mut io = [std::io::IoSlice::new(&[]); 3];
            let n = parts.chunks_vectored(&mut io);
            assert!(n >= 1 && io[..n].iter().all(|s| !s.is_empty()));
            let take = io[0].len().min(2).min(parts.remaining());
            got.extend_from_slice(&io[0][..take]);
            parts.advance(take);
        }
        assert_eq!(got, &one[..]);
    }

    #[test]
    fn every_corrupted_field_is_rejected() {
        let mut out = BytesMut::new();
        sample().encode(&mut out);
        let l = Limits::default();
        let flip = |at: usize, v: u8| {
            let mut b = out.clone();
            b[at] ^= v;
            decode(&mut b, &l)
        };
        assert!(matches!(flip(0, 1), Err(CodecError::BadMagic(_))));
        assert!(matches!(flip(7, 1), Err(CodecError::Version(_))));
        assert!(matches!(flip(11, 0x40), Err(CodecError::UnknownType(_))));
        assert!(matches!(flip(12, 1), Err(CodecError::ChunkIdTooLong(_))));
        let data_len_at = PREFIX + 32;
        assert!(matches!(
            flip(data_len_at, 1),
            Err(CodecError::DataTooLong(_))
        ));
        assert!(
            matches!(flip(data_len_at + 4, 1), Err(CodecError::Checksum(3))),
            "data byte"
        );
        assert!(
            matches!(flip(data_len_at + 4 + 11, 1), Err(CodecError::Checksum(_))),
            "hash byte"
        );
        // A shorter declared data length shifts the hash: still caught.
        let mut b = out.clone();
        b[data_len_at + 3] -= 1;
        assert!(decode(&mut b, &l).is_err());
    }

    #[test]
    fn limits_apply_before_allocation() {
        let mut b = BytesMut::new();
        b.put_u32(MAGIC);
        b.put_u32(VERSION);
        b.put_u32(MessageType::PieceData as u32);
        b.put_u32(0);
        b.put_u32(u32::MAX);
        assert_eq!(
            decode(&mut b, &Limits::default()),
            Err(CodecError::DataTooLong(u32::MAX as usize))
        );
        assert!(b.capacity() < 1 << 20);
    }

    fn any_type() -> impl Strategy<Value = MessageType> {
        prop::sample::select(vec![
            MessageType::Hello,
            MessageType::Challenge,
            MessageType::Auth,
            MessageType::AuthOk,
            MessageType::HaveQuery,
            MessageType::Bitmap,
            MessageType::PieceRequest,
            MessageType::PieceData,
            MessageType::Error,
            MessageType::Cancel,
            MessageType::Locate,
            MessageType::Locations,
            MessageType::NodeJoin,
            MessageType::NodeLeave,
            MessageType::ChunkAnnounce,
            MessageType::ChunkRemove,
            MessageType::StateSync,
            MessageType::Ping,
            MessageType::PingReq,
            MessageType::Ack,
            MessageType::Updates,
        ])
    }

    proptest! {
        #[test]
        fn prop_round_trip(t in any_type(), id in prop::collection::vec(any::<u8>(), 0..64), data in prop::collection::vec(any::<u8>(), 0..4096), seq in any::<u32>(), flags in any::<u8>()) {
            let f = Frame::new(t, &id, Bytes::from(data), seq, flags);
            let mut b = BytesMut::new();
            f.encode(&mut b);
            prop_assert_eq!(decode(&mut b, &Limits::default()).unwrap().unwrap(), f);
            prop_assert!(b.is_empty());
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut b = BytesMut::from(&bytes[..]);
            let _ = decode(&mut b, &Limits::default());
        }

        #[test]
        fn prop_any_single_byte_change_is_caught(at in 0usize..85, bit in 0u8..8) {
            let mut b = BytesMut::new();
            sample().encode(&mut b);
            let at = at.min(b.len() - 1);
            b[at] ^= 1 << bit;
            let original = { let mut o = BytesMut::new(); sample().encode(&mut o); o };
            if let Ok(Some(f)) = decode(&mut b, &Limits::default()) {
                {
                    // The seed's hash covers the data only: a change that turns the
                    // type into another valid type, or changes the chunk id, sequence
                    // number or flags, decodes as a different message, never as this one.
                    let in_type = (8..12).contains(&at);
                    let in_chunk_id = (PREFIX..PREFIX + 32).contains(&at);
                    prop_assert!(in_type || in_chunk_id || at >= original.len() - 5, "undetected change at byte {}", at);
                    prop_assert_ne!(f, sample());
                }
            }
        }
    }
}
