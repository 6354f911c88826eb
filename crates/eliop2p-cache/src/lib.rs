//! The chunk cache: an in-memory tier (L1) of verified, immutable chunks, and the
//! single-flight fills that create them.
//!
//! The cache knows nothing about origins or HTTP. A caller that misses becomes the
//! *leader* of a [`Fill`] and pushes bytes into a [`FillWriter`]; everyone else who asks
//! for the same chunk meanwhile joins the fill and streams the bytes as they arrive
//! through a [`FillReader`]. Only a complete chunk whose length matches is inserted,
//! with its SHA-256; a failed or abandoned fill leaves nothing behind.

mod fill;
mod memory;

pub use fill::{Fill, FillError, FillReader, FillWriter};
pub use memory::{CacheStats, Chunk, ChunkCache, Lookup, MemoryCacheConfig};
