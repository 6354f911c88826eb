//! Piece buffers the memory tier freed, kept for the next pieces.
//!
//! Every whole piece the cache keeps sits in a 1 MiB buffer of its own (see
//! [`crate::ChunkData`]). When the memory tier drops a chunk that nothing else
//! holds, those buffers come here instead of going back to the allocator, and
//! the next pieces (bytes from the origin, pieces read from peers' sockets) are
//! written into them. Memory the process already touched is reused whatever the
//! allocator does with freed memory: glibc gives each thread its own arena and
//! unmaps an arena heap whose chunks were all freed, so without the pool a node
//! in steady state (a full tier evicting as it fills) would fault fresh pages in
//! again, which on a VM costs more than receiving and hashing the bytes.
//!
//! Bound: pooled bytes plus the bytes the memory tier holds never exceed the
//! tier's capacity, so the pool only keeps memory the tier is allowed to use.
//! With `cache.memory_prefault` the pool is filled with touched buffers at
//! start, so that even a node's first fills write into resident memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

use crate::{ChunkData, PIECE_SIZE};

const PIECE: usize = PIECE_SIZE as usize;
const PAGE: usize = 4096;

pub struct PiecePool {
    free: Mutex<Vec<BytesMut>>,
    /// The memory tier's capacity.
    capacity: u64,
    /// Bytes the memory tier holds now (kept current by the cache).
    tier_bytes: AtomicU64,
    /// Bytes in the pool.
    pooled: AtomicU64,
    /// Pieces written into a pooled buffer instead of a new allocation.
    reused: AtomicU64,
}

impl PiecePool {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            capacity,
            tier_bytes: AtomicU64::new(0),
            pooled: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BytesMut>> {
        // Pushing and popping buffers cannot leave the list inconsistent.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_tier_bytes(&self, bytes: u64) {
        self.tier_bytes.store(bytes, Relaxed);
    }

    /// Bytes in the pool.
    pub fn pooled_bytes(&self) -> u64 {
        self.pooled.load(Relaxed)
    }

    /// Pieces written into a pooled buffer so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Relaxed)
    }

    /// An empty buffer able to hold `len` bytes and holding no more: a pooled
    /// one for a whole piece when there is one, a new allocation otherwise.
    pub fn buffer(&self, len: usize) -> BytesMut {
        self.take(len)
            .unwrap_or_else(|| BytesMut::with_capacity(len))
    }

    /// Like [`Self::buffer`], with its pages resident: a new allocation is
    /// populated by the calling thread (pooled buffers are resident already).
    pub fn resident_buffer(&self, len: usize) -> BytesMut {
        self.take(len).unwrap_or_else(|| {
            let mut b = BytesMut::with_capacity(len);
            populate(&mut b);
            b
        })
    }

    fn take(&self, len: usize) -> Option<BytesMut> {
        if len != PIECE {
            return None;
        }
        let b = self.lock().pop()?;
        self.pooled.fetch_sub(PIECE_SIZE, Relaxed);
        self.reused.fetch_add(1, Relaxed);
        Some(b)
    }

    /// Whether one more piece buffer fits: pool plus tier within the capacity.
    fn has_room(&self) -> bool {
        let room = self.capacity.saturating_sub(self.tier_bytes.load(Relaxed));
        self.pooled.load(Relaxed) + PIECE_SIZE <= room
    }

    /// Keeps `b` for a later piece if it is a whole piece's buffer, held by
    /// nothing else, and the pool has room; drops it otherwise. True if kept.
    pub fn give(&self, mut b: BytesMut) -> bool {
        b.clear();
        // Take back the whole allocation when `b` is a view into it.
        if !b.try_reclaim(PIECE) || b.capacity() != PIECE {
            return false;
        }
        let mut free = self.lock();
        if !self.has_room() {
            return false;
        }
        self.pooled.fetch_add(PIECE_SIZE, Relaxed);
        free.push(b);
        true
    }

    /// Takes back the piece buffers of a chunk the cache dropped. A buffer that
    /// still has other holders (a response being sent) is left to them.
    pub fn give_chunk(&self, data: ChunkData) {
        for b in data.into_piece_buffers() {
            self.give(b);
        }
    }

    /// Fills the pool with buffers whose pages are touched, up to its bound
    /// (`cache.memory_prefault`). Blocking: run it on a thread of its own. Stops
    /// early when nothing but the caller holds the pool (the cache is gone).
    pub fn prefault(self: &Arc<Self>) {
        while Arc::strong_count(self) > 1 && self.has_room() {
            let mut b = BytesMut::with_capacity(PIECE);
            populate(&mut b);
            if !self.give(b) {
                return;
            }
        }
    }
}

/// Makes the pages behind `b`'s free capacity resident, so writing the piece
/// into it takes no page fault: one byte per page is written (the bytes stay
/// uninitialised as far as `b` is concerned). `madvise(MADV_POPULATE_WRITE)`
/// did this twice as fast in a single-threaded test, but was about 20% slower
/// in the P2P benchmark, where requesting tasks populate buffers on both cores
/// at once: it holds the address-space lock that heap growth waits for.
pub fn populate(b: &mut BytesMut) {
    for page in b.spare_capacity_mut().iter_mut().step_by(PAGE) {
        page.write(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn whole_piece_buffers_come_back_and_are_reused() {
        let pool = PiecePool::new(4 * PIECE_SIZE);
        // A piece published in segments split off one buffer (the origin path)
        // and a piece kept as one buffer (the peer path), then a short last piece.
        let mut a = pool.buffer(PIECE);
        a.resize(PIECE, 1);
        let a_ptr = a.as_ptr();
        let mut segs = Vec::new();
        while !a.is_empty() {
            segs.push(a.split_to(a.len().min(65536 + 3)).freeze());
        }
        drop(a);
        let mut b = pool.buffer(PIECE);
        b.resize(PIECE, 2);
        let b_ptr = b.as_ptr();
        segs.push(b.freeze());
        segs.push(Bytes::from(vec![3u8; 1000]));
        let data = ChunkData::from_segments(segs);
        // A reader still holds piece 1: only piece 0 comes back.
        let held = data.segments()[data.segments().len() - 2].clone();
        pool.give_chunk(data);
        assert_eq!(pool.pooled_bytes(), PIECE_SIZE);
        let again = pool.buffer(PIECE);
        assert_eq!(again.as_ptr(), a_ptr, "the very buffer of piece 0");
        assert!(again.is_empty() && again.capacity() == PIECE);
        assert_eq!(pool.reused(), 1);
        // The holder lets go: piece 1's buffer is now free to come back.
        assert_eq!(held.as_ptr(), b_ptr);
        pool.give(held.try_into_mut().expect("unique"));
        assert_eq!(pool.buffer(PIECE).as_ptr(), b_ptr);
        // Other sizes are neither pooled nor served from the pool.
        pool.give(BytesMut::with_capacity(1000));
        pool.give(BytesMut::with_capacity(2 * PIECE));
        assert_eq!(pool.pooled_bytes(), 0);
        pool.give(again);
        assert_eq!(pool.buffer(1000).capacity(), 1000);
        assert_eq!(pool.pooled_bytes(), PIECE_SIZE);
    }

    #[test]
    fn populate_keeps_the_bytes_and_the_buffer() {
        for (cap, written) in [(PIECE, 0), (PIECE, 10), (100_003, 4097), (10, 3), (5, 4)] {
            let mut b = BytesMut::with_capacity(cap);
            b.extend((0..written).map(|i| i as u8));
            let (at, capacity) = (b.as_ptr(), b.capacity());
            populate(&mut b);
            assert_eq!((b.as_ptr(), b.capacity()), (at, capacity));
            assert!(b.iter().copied().eq((0..written).map(|i| i as u8)));
            // Writing the rest finds the memory usable.
            b.resize(capacity, 7);
            assert_eq!(b[capacity - 1], 7);
        }
    }

    #[test]
    fn pool_and_tier_stay_within_capacity() {
        let pool = Arc::new(PiecePool::new(4 * PIECE_SIZE));
        pool.set_tier_bytes(PIECE_SIZE + 10);
        // Alone with the pool, prefault has nobody to fill it for.
        pool.prefault();
        assert_eq!(pool.pooled_bytes(), 0);
        let cache_side = pool.clone();
        pool.prefault();
        assert_eq!(pool.pooled_bytes(), 2 * PIECE_SIZE);
        pool.give(BytesMut::with_capacity(PIECE));
        assert_eq!(pool.pooled_bytes(), 2 * PIECE_SIZE, "no room for a third");
        drop(cache_side);
        pool.set_tier_bytes(0);
        pool.give(BytesMut::with_capacity(PIECE));
        assert_eq!(pool.pooled_bytes(), 3 * PIECE_SIZE);
    }
}
