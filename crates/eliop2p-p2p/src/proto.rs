//! Payloads of the P2P messages and the HMAC handshake (pure).

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// Error reason codes (`Error` frames: `code u16 | utf-8 message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Reason {
    NotFound = 1,
    Timeout = 2,
    Busy = 3,
    Internal = 4,
    AuthFailed = 5,
    BadRequest = 6,
}

impl Reason {
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Reason::NotFound,
            2 => Reason::Timeout,
            3 => Reason::Busy,
            5 => Reason::AuthFailed,
            6 => Reason::BadRequest,
            _ => Reason::Internal,
        }
    }
}

pub fn error_payload(reason: Reason, message: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + message.len());
    b.put_u16(reason as u16);
    b.put_slice(message.as_bytes());
    b.freeze()
}

pub fn parse_error(data: &[u8]) -> (Reason, String) {
    if data.len() < 2 {
        return (Reason::Internal, String::new());
    }
    (
        Reason::from_u16(u16::from_be_bytes([data[0], data[1]])),
        String::from_utf8_lossy(&data[2..]).into_owned(),
    )
}

/// Which pieces of a chunk a peer has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    pub chunk_len: u64,
    pub piece_size: u32,
    /// The chunk is complete and `sha256` is its hash.
    pub complete: bool,
    /// The holder is downloading the chunk from peers: it has exactly the pieces
    /// set and awaits none of the others (`complete` byte 2 on the wire). A bitmap
    /// with neither flag is a fill from the origin, which awaits every piece.
    pub swarm: bool,
    pub sha256: [u8; 32],
    pub have: Vec<bool>,
}

impl Bitmap {
    pub fn num_pieces(chunk_len: u64, piece_size: u32) -> usize {
        chunk_len.div_ceil(u64::from(piece_size.max(1))) as usize
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(45 + self.have.len() / 8 + 1);
        b.put_u64(self.chunk_len);
        b.put_u32(self.piece_size);
        b.put_u8(if self.complete { 1 } else if self.swarm { 2 } else { 0 });
        b.put_slice(&self.sha256);
        put_bits(&mut b, &self.have);
        b.freeze()
    }

    pub fn decode(data: &[u8], max_pieces: usize) -> Option<Self> {
        if data.len() < 45 {
            return None;
        }
        let chunk_len = u64::from_be_bytes(data[0..8].try_into().ok()?);
        let piece_size = u32::from_be_bytes(data[8..12].try_into().ok()?);
        if piece_size == 0 {
            return None;
        }
        let n = Self::num_pieces(chunk_len, piece_size);
        if n > max_pieces || data.len() != 45 + n.div_ceil(8) {
            return None;
        }
        let complete = data[12] == 1;
        let swarm = data[12] == 2;
        let sha256 = data[13..45].try_into().ok()?;
        let have = get_bits(&data[45..], n);
        Some(Self {
            chunk_len,
            piece_size,
            complete,
            swarm,
            sha256,
            have,
        })
    }
}

/// The most pieces a chunk's bitmap or a standing query's news set may hold.
pub const MAX_PIECES: usize = 1 << 16;

/// The longest a standing `HaveQuery` is held before it is answered anyway.
pub const MAX_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

/// A standing `HaveQuery` (a have-announcement on request): the asker believes the
/// holder has `known` verified pieces; the holder answers once it has news for
/// the asker (or is no longer a fill), or after `wait`. With `news` (a bit per
/// piece: the pieces the asker lacks and does not know the holder to have), news
/// is a piece of that set; without, any piece beyond `known`.
/// `known u32 | wait_ms u32 [| news bits]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub known: u32,
    pub wait: std::time::Duration,
    pub news: Option<Vec<bool>>,
}

impl Watch {
    pub fn encode(&self) -> Bytes {
        let bits = self.news.as_ref().map_or(0, |n| n.len().div_ceil(8));
        let mut b = BytesMut::with_capacity(8 + bits);
        b.put_u32(self.known);
        b.put_u32(self.wait.as_millis().min(u128::from(u32::MAX)) as u32);
        if let Some(n) = &self.news {
            put_bits(&mut b, n);
        }
        b.freeze()
    }

    /// Whether a fill that has `have` holds news for the asker.
    pub fn answered_by(&self, have: &[bool]) -> bool {
        match &self.news {
            Some(news) => have.iter().zip(news).any(|(h, n)| *h && *n),
            None => have.iter().filter(|h| **h).count() as u32 > self.known,
        }
    }
}

/// A `HaveQuery`'s data: empty (answer now) or a standing query, its wait bounded
/// by `MAX_WATCH` and its news set by `max_pieces` (bits past the chunk's last
/// piece name pieces that do not exist, so they match nothing). `None` for any
/// other length.
pub fn decode_watch(data: &[u8], max_pieces: usize) -> Option<Option<Watch>> {
    if data.is_empty() {
        return Some(None);
    }
    if data.len() < 8 || data.len() - 8 > max_pieces.div_ceil(8) {
        return None;
    }
    let known = u32::from_be_bytes(data[..4].try_into().ok()?);
    let ms = u32::from_be_bytes(data[4..8].try_into().ok()?);
    let rest = &data[8..];
    let news = (!rest.is_empty()).then(|| get_bits(rest, rest.len() * 8));
    let wait = std::time::Duration::from_millis(u64::from(ms)).min(MAX_WATCH);
    Some(Some(Watch { known, wait, news }))
}

/// A bit per entry, the first in the high bit of the first byte (bitmaps, news).
fn put_bits(b: &mut BytesMut, bits: &[bool]) {
    for byte in bits.chunks(8) {
        b.put_u8(byte.iter().enumerate().fold(0u8, |acc, (i, h)| if *h { acc | 0x80 >> i } else { acc }));
    }
}

/// `n` bits of `data` as `put_bits` wrote them (`data` holds at least `n`).
fn get_bits(data: &[u8], n: usize) -> Vec<bool> {
    (0..n).map(|i| data[i / 8] & (0x80 >> (i % 8)) != 0).collect()
}

/// A list of piece indexes (`PieceRequest`, `Cancel`).
pub fn encode_pieces(pieces: &[u32]) -> Bytes {
    let mut b = BytesMut::with_capacity(pieces.len() * 4);
    for p in pieces {
        b.put_u32(*p);
    }
    b.freeze()
}

pub fn decode_pieces(data: &[u8], max: usize) -> Option<Vec<u32>> {
    if !data.len().is_multiple_of(4) || data.len() / 4 > max {
        return None;
    }
    Some(
        data.chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    )
}

/// `HMAC-SHA256(secret, label | a | b)`: the handshake proofs. The labels differ per
/// direction so a proof cannot be reflected back.
pub fn proof(secret: &[u8], label: &[u8], a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(label);
    mac.update(a);
    mac.update(b);
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of two proofs.
pub fn proofs_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_query_round_trip_and_bounds() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(decode_watch(&[], 64), Some(None), "empty: answer now");
        let w = Watch { known: 5, wait: ms(700), news: None };
        assert_eq!(decode_watch(&w.encode(), 64), Some(Some(w)));
        let long = Watch { known: 0, wait: std::time::Duration::from_secs(3600), news: None };
        assert_eq!(decode_watch(&long.encode(), 64).unwrap().unwrap().wait, MAX_WATCH, "a wait is bounded");
        for n in [1usize, 4, 7] {
            assert_eq!(decode_watch(&vec![0; n], 64), None, "{n} bytes is malformed");
        }
        assert_eq!(decode_watch(&[0; 17], 64), None, "a news set longer than the chunk");
        // A news set: its bits past the last piece read as pieces that do not exist.
        let news: Vec<bool> = (0..11).map(|i| i % 4 == 1).collect();
        let w = Watch { known: 3, wait: ms(100), news: Some(news.clone()) };
        let back = decode_watch(&w.encode(), 64).unwrap().unwrap();
        assert_eq!(back.news.as_deref().map(|n| &n[..11]), Some(&news[..]));
        assert!(back.news.unwrap()[11..].iter().all(|b| !b));
    }

    #[test]
    fn a_standing_query_is_answered_by_news_only() {
        let ms = std::time::Duration::from_millis;
        let have = [true, false, true, false];
        // Without a news set: any piece beyond the known count.
        assert!(Watch { known: 1, wait: ms(1), news: None }.answered_by(&have));
        assert!(!Watch { known: 2, wait: ms(1), news: None }.answered_by(&have));
        // With one: a piece of the set, however many the holder has.
        let news = |v: [bool; 4]| Watch { known: 0, wait: ms(1), news: Some(v.to_vec()) };
        assert!(!news([false, true, false, true]).answered_by(&have), "pieces the asker has are no news");
        assert!(news([false, false, true, false]).answered_by(&have));
        assert!(!news([false; 4]).answered_by(&have));
    }

    #[test]
    fn bitmap_round_trip_and_bounds() {
        for n in [0usize, 1, 7, 8, 9, 16, 17] {
            let bm = Bitmap {
                chunk_len: n as u64 * 10,
                piece_size: 10,
                complete: n % 2 == 0,
                swarm: n % 3 == 1 && n % 2 == 1,
                sha256: [3; 32],
                have: (0..n).map(|i| i % 3 == 0).collect(),
            };
            assert_eq!(Bitmap::decode(&bm.encode(), 64), Some(bm));
        }
        let big = Bitmap {
            chunk_len: 1000,
            piece_size: 1,
            complete: false,
            swarm: false,
            sha256: [0; 32],
            have: vec![true; 1000],
        };
        assert_eq!(Bitmap::decode(&big.encode(), 64), None, "too many pieces");
        assert_eq!(Bitmap::decode(&[0; 44], 64), None);
    }

    #[test]
    fn pieces_and_errors() {
        assert_eq!(
            decode_pieces(&encode_pieces(&[0, 5, 15]), 16),
            Some(vec![0, 5, 15])
        );
        assert_eq!(decode_pieces(&[0, 0, 1], 16), None);
        assert_eq!(decode_pieces(&encode_pieces(&[1; 17]), 16), None);
        assert_eq!(
            parse_error(&error_payload(Reason::NotFound, "no")),
            (Reason::NotFound, "no".into())
        );
    }

    #[test]
    fn proofs_depend_on_secret_label_and_nonces() {
        let p = proof(b"s", b"client", b"a", b"b");
        assert!(proofs_equal(&p, &proof(b"s", b"client", b"a", b"b")));
        assert!(!proofs_equal(&p, &proof(b"t", b"client", b"a", b"b")));
        assert!(!proofs_equal(&p, &proof(b"s", b"server", b"a", b"b")));
        assert!(!proofs_equal(&p, &proof(b"s", b"client", b"b", b"a")));
    }
}
