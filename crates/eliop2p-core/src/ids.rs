//! Identifier newtypes.
//!
//! A [`ChunkId`] is a fixed-length SHA-256 over everything that makes a chunk's bytes
//! what they are (origin, bucket, key, ETag, chunk size and index). It is safe to use
//! as a file name or a map key and never carries raw user bytes.

use std::fmt;

use sha2::{Digest, Sha256};

/// `(bucket, key)` as the client named them, after percent-decoding of the path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub bucket: String,
    pub key: String,
}

impl ObjectKey {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bucket, self.key)
    }
}

/// An entity tag exactly as the origin sent it, quotes included (`"abc"` or `W/"abc"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps an origin ETag; a bare value gets the quotes HTTP requires.
    pub fn new(raw: &str) -> Self {
        let raw = raw.trim();
        if raw.starts_with('"') || raw.starts_with("W/") {
            Self(raw.to_owned())
        } else {
            Self(format!("\"{raw}\""))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this validator was derived from `Last-Modified` and the size (origins
    /// without ETags): it must not be sent in `If-Match`.
    pub fn is_synthetic(&self) -> bool {
        self.0.starts_with("W/\"lm-")
    }

    /// The opaque part without quotes and weakness prefix, for comparisons.
    pub fn opaque(&self) -> &str {
        self.0.trim_start_matches("W/").trim_matches('"')
    }

    /// Strong-or-weak equality as S3 applies it to `If-Match` / `If-None-Match` lists:
    /// `*` matches anything, otherwise the opaque tags must be equal.
    pub fn matches_header_list(&self, header: &str) -> bool {
        header
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || ETag::new(candidate).opaque() == self.opaque())
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fixed-length identity of one chunk of one object version.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// Derives the id from every input that determines the chunk's bytes. Fields are
    /// length-prefixed so that no two different tuples hash the same input.
    pub fn derive(
        origin: &str,
        object: &ObjectKey,
        etag: &ETag,
        chunk_size: u64,
        index: u64,
    ) -> Self {
        let mut h = Sha256::new();
        for field in [origin, &object.bucket, &object.key, etag.opaque()] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.update(chunk_size.to_be_bytes());
        h.update(index.to_be_bytes());
        Self(h.finalize().into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 64-character lowercase hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The 64-character hex form, as in every JSON API.
impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("a chunk id is 64 hex characters"))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_depends_on_every_field() {
        let obj = ObjectKey::new("b", "k");
        let etag = ETag::new("\"e1\"");
        let base = ChunkId::derive("o", &obj, &etag, 16, 0);
        assert_ne!(base, ChunkId::derive("o2", &obj, &etag, 16, 0));
        assert_ne!(
            base,
            ChunkId::derive("o", &ObjectKey::new("b", "k2"), &etag, 16, 0)
        );
        assert_ne!(base, ChunkId::derive("o", &obj, &ETag::new("e2"), 16, 0));
        assert_ne!(base, ChunkId::derive("o", &obj, &etag, 32, 0));
        assert_ne!(base, ChunkId::derive("o", &obj, &etag, 16, 1));
        // length prefixes: moving a byte between bucket and key changes the id
        assert_ne!(
            ChunkId::derive("o", &ObjectKey::new("ab", "c"), &etag, 16, 0),
            ChunkId::derive("o", &ObjectKey::new("a", "bc"), &etag, 16, 0)
        );
        let hex = base.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ChunkId::from_hex(&hex), Some(base));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }

    #[test]
    fn etag_matching() {
        let e = ETag::new("abc");
        assert_eq!(e.as_str(), "\"abc\"");
        assert!(e.matches_header_list("\"abc\""));
        assert!(e.matches_header_list("\"x\", \"abc\""));
        assert!(e.matches_header_list("*"));
        assert!(e.matches_header_list("W/\"abc\""));
        assert!(!e.matches_header_list("\"abd\""));
    }
}
