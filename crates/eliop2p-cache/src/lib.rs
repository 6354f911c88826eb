//! The chunk cache: a memory tier (L1) and a disk tier (L2) of verified, immutable
//! chunks, the single-flight fills that create them, and the eviction policy.
//!
//! The cache knows nothing about origins or HTTP. A caller that misses becomes the
//! *leader* of a [`Fill`] and pushes bytes into a [`FillWriter`]; everyone else who asks
//! for the same chunk meanwhile joins the fill and streams the bytes as they arrive
//! through a [`FillReader`]. Only a complete chunk whose length matches is inserted,
//! with its SHA-256; a failed or abandoned fill leaves nothing behind.

pub mod disk;
mod fill;
mod memory;
pub mod policy;

pub use fill::{Fill, FillError, FillReader, FillWriter};
pub use memory::{
    CacheConfig, CacheStats, Chunk, ChunkCache, DiskChunk, DiskTierConfig, Held, Lookup, TierStats,
    VerifyOnStart,
};

/// Keeps chunk-sized buffers (1-16 MiB) on the heap instead of fresh `mmap`s: with
/// glibc's default threshold every piece and chunk buffer is mapped, zeroed by the
/// kernel page by page and unmapped again, which costs more CPU than hashing it.
/// Call once at process start (the binary's composition root does).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before heavy use.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
