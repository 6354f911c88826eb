//! A chunk's bytes, kept in the buffers they arrived in.
//!
//! Pieces from peers arrive as 1 MiB buffers and bytes from the origin are written
//! into piece-sized buffers; a complete chunk keeps those buffers as they are
//! instead of copying them into one 16 MiB allocation. That copy into memory never
//! touched before cost more than hashing the bytes. Every buffer is owned by the
//! chunk alone (no shared read buffer is pinned), so the chunk's length is what it
//! holds in memory.

use bytes::{Bytes, BytesMut};

#[derive(Clone, Default)]
pub struct ChunkData {
    segments: Vec<Bytes>,
    /// `ends[i]`: chunk offset just past segment `i`.
    ends: Vec<u64>,
}

impl ChunkData {
    /// The chunk made of `segments` in order (empty ones are dropped).
    pub fn from_segments(segments: impl IntoIterator<Item = Bytes>) -> Self {
        let mut out = Self::default();
        let mut at = 0u64;
        for s in segments {
            if s.is_empty() {
                continue;
            }
            at += s.len() as u64;
            out.segments.push(s);
            out.ends.push(at);
        }
        out
    }

    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The buffers, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// `[start, end)` as slices of the buffers (no copy), in order. Out-of-range
    /// bounds are clamped to the chunk.
    pub fn slices(&self, start: u64, end: u64) -> Slices<'_> {
        let end = end.min(self.len());
        let idx = self.ends.partition_point(|e| *e <= start);
        Slices {
            data: self,
            idx,
            pos: start.min(end),
            end,
        }
    }

    /// `[start, end)` as one buffer: a slice when it lies in one segment, a copy
    /// otherwise.
    pub fn range(&self, start: u64, end: u64) -> Bytes {
        let mut parts = self.slices(start, end);
        let Some(first) = parts.next() else {
            return Bytes::new();
        };
        if first.len() as u64 == end.min(self.len()) - start {
            return first;
        }
        let mut buf = BytesMut::with_capacity((end.min(self.len()) - start) as usize);
        buf.extend_from_slice(&first);
        for p in parts {
            buf.extend_from_slice(&p);
        }
        buf.freeze()
    }

    /// The buffers of the chunk's whole pieces that nothing else holds, each
    /// taken back whole (a piece split into segments for readers is one buffer
    /// again once the segments are dropped). Other buffers are dropped.
    pub fn into_piece_buffers(self) -> impl Iterator<Item = BytesMut> {
        let piece_ends = self
            .ends
            .iter()
            .map(|e| e.is_multiple_of(crate::PIECE_SIZE));
        // The segments before a piece's last one are dropped by the time that one
        // is looked at, so it is the buffer's only holder if nothing else is.
        self.segments
            .into_iter()
            .zip(piece_ends.collect::<Vec<_>>())
            .filter_map(|(seg, piece_end)| {
                if piece_end {
                    seg.try_into_mut().ok()
                } else {
                    None
                }
            })
    }

    /// The whole chunk as one buffer (a copy unless it is one segment).
    pub fn to_bytes(&self) -> Bytes {
        self.range(0, self.len())
    }
}

impl std::fmt::Debug for ChunkData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkData")
            .field("len", &self.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl From<Bytes> for ChunkData {
    fn from(b: Bytes) -> Self {
        Self::from_segments([b])
    }
}

/// Iterator of [`ChunkData::slices`].
pub struct Slices<'a> {
    data: &'a ChunkData,
    idx: usize,
    pos: u64,
    end: u64,
}

impl Iterator for Slices<'_> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.pos >= self.end {
            return None;
        }
        let seg = self.data.segments.get(self.idx)?;
        let seg_end = self.data.ends[self.idx];
        let seg_start = seg_end - seg.len() as u64;
        let to = self.end.min(seg_end);
        let out = seg.slice((self.pos - seg_start) as usize..(to - seg_start) as usize);
        self.pos = to;
        self.idx += 1;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ChunkData {
        ChunkData::from_segments([
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ])
    }

    #[test]
    fn slices_cover_exactly_the_range() {
        let d = data();
        assert_eq!(d.len(), 8);
        assert_eq!(d.segments().len(), 3);
        for start in 0..=8u64 {
            for end in start..=10u64 {
                let got: Vec<u8> = d.slices(start, end).flat_map(|b| b.to_vec()).collect();
                let want = &b"abcdefgh"[start as usize..end.min(8) as usize];
                assert_eq!(got, want, "{start}..{end}");
                assert_eq!(&d.range(start, end)[..], want, "{start}..{end}");
                assert!(d.slices(start, end).all(|b| !b.is_empty()));
            }
        }
    }

    #[test]
    fn a_range_inside_one_segment_is_not_copied() {
        let d = data();
        let r = d.range(4, 6);
        assert_eq!(&r[..], b"ef");
        assert_eq!(r.as_ptr(), d.segments()[1][1..].as_ptr());
        assert_eq!(&d.to_bytes()[..], b"abcdefgh");
        assert!(ChunkData::default().is_empty());
        assert_eq!(ChunkData::default().range(0, 5).len(), 0);
    }
}
