//! The chunk cache: a memory tier (L1) and a disk tier (L2) of verified, immutable
//! chunks, the single-flight fills that create them, and the eviction policy.
//!
//! The cache knows nothing about origins or HTTP. A caller that misses becomes the
//! *leader* of a [`Fill`] and pushes bytes into a [`FillWriter`]; everyone else who asks
//! for the same chunk meanwhile joins the fill and streams the bytes as they arrive
//! through a [`FillReader`]. Only a complete chunk whose length matches is inserted,
//! with its SHA-256; a failed or abandoned fill leaves nothing behind.

pub mod budget;
mod data;
pub mod disk;
mod fill;
mod memory;
pub mod policy;
pub mod pool;
mod trim;

/// The unit of transfer, resume and verification inside a chunk. A node re-serves
/// a piece once it verified it, so a fresh piece crosses a swarm one piece-time
/// per hop: 256 KiB rather than 1 MiB made a 16-node, 200 Mbit/s swarm read a cold
/// 64 MiB object at ~1.4x ideal instead of ~1.7x (simulator; PROTOCOL.md).
pub const PIECE_SIZE: u64 = 256 << 10;

/// A chunk's identity hash: SHA-256 over the SHA-256 of each of its pieces in
/// order (a hash list). Every byte is hashed once, as a piece, and the chunk hash
/// follows from the piece hashes, so a piece verified on arrival from a peer or on
/// a read from disk needs no second pass.
pub fn chunk_root(piece_hashes: &[[u8; 32]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in piece_hashes {
        h.update(p);
    }
    h.finalize().into()
}

/// Piece hashes and chunk root of `data`, computed in one pass.
pub fn hash_pieces(data: &[u8]) -> (Vec<[u8; 32]>, [u8; 32]) {
    use sha2::Digest;
    let pieces: Vec<[u8; 32]> = data
        .chunks(PIECE_SIZE as usize)
        .map(|p| sha2::Sha256::digest(p).into())
        .collect();
    let root = chunk_root(&pieces);
    (pieces, root)
}

pub use budget::{Budget, Reservation};
pub use data::{ChunkData, Slices};
pub use fill::{Culprit, Fill, FillError, FillReader, FillWriter};
pub use memory::{
    CacheConfig, CacheStats, Chunk, ChunkCache, ChunkEvent, DiskChunk, DiskTierConfig, Held,
    Lookup, TierStats, VerifyOnStart,
};
pub use pool::PiecePool;

/// Keeps chunk-sized buffers (1-16 MiB) on the heap instead of fresh `mmap`s: with
/// glibc's default threshold every piece and chunk buffer is mapped, zeroed by the
/// kernel page by page and unmapped again, which costs more CPU than hashing it.
/// (One arena for all threads would keep evicted memory for reuse even better, but
/// it halves the small-request rate: the threads then share one malloc lock.)
/// Call once at process start (the binary's composition root does).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before heavy use.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
