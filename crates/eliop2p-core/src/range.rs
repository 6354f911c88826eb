//! HTTP byte ranges and their mapping onto fixed-size chunks.
//!
//! Contract (documented in `docs/s3-compatibility.md`):
//! - `bytes=a-b`, `bytes=a-`, `bytes=-n` are served as one 206 range;
//! - a syntactically broken header (`bytes=abc`, `bytes=5-2`, other units) is a
//!   client error (400 `InvalidArgument`), not silently ignored;
//! - several ranges in one header are not supported by S3 either: the header is
//!   ignored and the whole object is served with 200;
//! - a well-formed range that starts at or past the end is 416 `InvalidRange`.

use thiserror::Error;

/// Half-open byte interval `[start, end)` within an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn new(start: u64, end: u64) -> Self {
        debug_assert!(start <= end);
        Self { start, end }
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// `bytes a-b/size` for Content-Range (only for non-empty ranges).
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, size)
    }
}

/// One parsed range spec, before the object size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

/// What a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Single(RangeSpec),
    /// More than one range: served as the whole object (as S3 does).
    Multiple,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("malformed range header")]
    Malformed,
    #[error("range not satisfiable")]
    Unsatisfiable,
}

impl RangeRequest {
    pub fn parse(header: &str) -> Result<Self, RangeError> {
        let rest = header
            .trim()
            .strip_prefix("bytes=")
            .ok_or(RangeError::Malformed)?;
        let specs: Vec<&str> = rest.split(',').map(str::trim).collect();
        let mut parsed = Vec::with_capacity(specs.len());
        for spec in &specs {
            parsed.push(parse_spec(spec)?);
        }
        match parsed.as_slice() {
            [one] => Ok(RangeRequest::Single(*one)),
            _ => Ok(RangeRequest::Multiple),
        }
    }
}

fn parse_num(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse().map_err(|_| RangeError::Malformed)
}

fn parse_spec(spec: &str) -> Result<RangeSpec, RangeError> {
    let (a, b) = spec.split_once('-').ok_or(RangeError::Malformed)?;
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Err(RangeError::Malformed),
        (true, false) => Ok(RangeSpec::Suffix(parse_num(b)?)),
        (false, true) => Ok(RangeSpec::From(parse_num(a)?)),
        (false, false) => {
            let (a, b) = (parse_num(a)?, parse_num(b)?);
            if a > b {
                return Err(RangeError::Malformed);
            }
            Ok(RangeSpec::FromTo(a, b))
        }
    }
}

impl RangeSpec {
    /// Resolves against the object size.
    pub fn resolve(self, size: u64) -> Result<ByteRange, RangeError> {
        match self {
            RangeSpec::FromTo(a, b) => {
                if a >= size {
                    return Err(RangeError::Unsatisfiable);
                }
                Ok(ByteRange::new(a, b.saturating_add(1).min(size)))
            }
            RangeSpec::From(a) => {
                if a >= size {
                    return Err(RangeError::Unsatisfiable);
                }
                Ok(ByteRange::new(a, size))
            }
            RangeSpec::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(RangeError::Unsatisfiable);
                }
                Ok(ByteRange::new(size - n.min(size), size))
            }
        }
    }
}

/// The chunk grid of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLayout {
    pub chunk_size: u64,
    pub object_size: u64,
}

/// The part of one chunk that a byte range covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSlice {
    pub index: u64,
    /// Offset of the wanted bytes inside the chunk.
    pub offset: u64,
    pub len: u64,
}

impl ChunkLayout {
    pub fn new(chunk_size: u64, object_size: u64) -> Self {
        assert!(
            chunk_size > 0,
            "chunk size is validated by the config to be > 0"
        );
        Self {
            chunk_size,
            object_size,
        }
    }

    pub fn num_chunks(&self) -> u64 {
        self.object_size.div_ceil(self.chunk_size)
    }

    /// Byte range of chunk `index` within the object (the last one may be short).
    pub fn chunk_range(&self, index: u64) -> ByteRange {
        let start = index * self.chunk_size;
        ByteRange::new(start, (start + self.chunk_size).min(self.object_size))
    }

    /// The chunk slices covering `range`, in order.
    pub fn slices(&self, range: ByteRange) -> impl Iterator<Item = ChunkSlice> + use<> {
        let layout = *self;
        let first = range.start / layout.chunk_size;
        let last = if range.is_empty() {
            first
        } else {
            (range.end - 1) / layout.chunk_size + 1
        };
        (first..last).map(move |index| {
            let c = layout.chunk_range(index);
            let start = range.start.max(c.start);
            let end = range.end.min(c.end);
            ChunkSlice {
                index,
                offset: start - c.start,
                len: end - start,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes() {
        use RangeSpec::*;
        assert_eq!(
            RangeRequest::parse("bytes=0-9"),
            Ok(RangeRequest::Single(FromTo(0, 9)))
        );
        assert_eq!(
            RangeRequest::parse("bytes=5-"),
            Ok(RangeRequest::Single(From(5)))
        );
        assert_eq!(
            RangeRequest::parse("bytes=-5"),
            Ok(RangeRequest::Single(Suffix(5)))
        );
        assert_eq!(
            RangeRequest::parse("bytes=0-1,4-5"),
            Ok(RangeRequest::Multiple)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "items=0-1",
            "bytes=5-2",
            "bytes=1-2-3",
            "bytes= -",
            "bytes=+1-2",
            "bytes=0-1,x",
        ] {
            assert_eq!(
                RangeRequest::parse(bad),
                Err(RangeError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            RangeRequest::parse("bytes=99999999999999999999999-"),
            Err(RangeError::Malformed)
        );
    }

    #[test]
    fn resolves_against_size() {
        use RangeSpec::*;
        assert_eq!(FromTo(0, 9).resolve(5), Ok(ByteRange::new(0, 5)));
        assert_eq!(FromTo(5, 9).resolve(5), Err(RangeError::Unsatisfiable));
        assert_eq!(From(4).resolve(5), Ok(ByteRange::new(4, 5)));
        assert_eq!(From(0).resolve(0), Err(RangeError::Unsatisfiable));
        assert_eq!(Suffix(2).resolve(5), Ok(ByteRange::new(3, 5)));
        assert_eq!(Suffix(10).resolve(5), Ok(ByteRange::new(0, 5)));
        assert_eq!(Suffix(0).resolve(5), Err(RangeError::Unsatisfiable));
        assert_eq!(Suffix(1).resolve(0), Err(RangeError::Unsatisfiable));
        assert_eq!(FromTo(0, u64::MAX).resolve(7), Ok(ByteRange::new(0, 7)));
        assert_eq!(ByteRange::new(3, 5).content_range(5), "bytes 3-4/5");
    }

    #[test]
    fn slices_cover_range_exactly() {
        let layout = ChunkLayout::new(10, 35);
        assert_eq!(layout.num_chunks(), 4);
        assert_eq!(layout.chunk_range(3), ByteRange::new(30, 35));
        for start in 0..35 {
            for end in start..=35 {
                let slices: Vec<_> = layout.slices(ByteRange::new(start, end)).collect();
                let total: u64 = slices.iter().map(|s| s.len).sum();
                assert_eq!(total, end - start);
                let mut pos = start;
                for s in &slices {
                    assert_eq!(s.index * 10 + s.offset, pos);
                    assert!(s.len > 0 && s.offset + s.len <= 10);
                    pos += s.len;
                }
            }
        }
        assert_eq!(ChunkLayout::new(10, 0).num_chunks(), 0);
    }
}

/// Fuzzing (proptest; bounded cases, run in CI): any `Range` header parses to a
/// value or an error, and a resolved range never leaves the object.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]
        #[test]
        fn fuzz_range_header(header in "(bytes|BYTES|items)?=?[0-9 ,-]{0,24}|\\PC{0,40}", size in 0u64..1 << 40) {
            if let Ok(RangeRequest::Single(spec)) = RangeRequest::parse(&header)
                && let Ok(r) = spec.resolve(size)
            {
                prop_assert!(r.start < r.end && r.end <= size, "{header:?} on {size}: {r:?}");
            }
        }
    }
}
