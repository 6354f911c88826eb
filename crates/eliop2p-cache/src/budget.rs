//! The in-flight memory budget: bytes of chunks that responses hold outside the
//! memory tier's accounting (fills in progress, chunks read ahead, chunks still being
//! sent after the tier evicted them).
//!
//! Without it a node's memory grows with the number of concurrent cold readers: each
//! response keeps its current chunk and `readahead_chunks` more, whatever the tier's
//! capacity. A response reserves a chunk's length before it starts or joins a fill
//! and releases it when it has sent the chunk (and the fill has ended). Read-ahead
//! only takes what is free ([`Budget::try_reserve`]); the chunk a response needs now
//! waits for it ([`Budget::reserve`]). A waiting response holds no reservation, and
//! every holder makes progress on its own (a fill ends, a client reads or its
//! connection times out), so waits always end.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A byte budget shared by every response of a node.
pub struct Budget {
    capacity: u64,
    used: Mutex<u64>,
    freed: Notify,
    /// Times a response waited for the budget (a metric).
    waits: AtomicU64,
    /// Read-ahead chunks skipped because the budget was spent (a metric).
    skipped: AtomicU64,
    /// Bytes of reservations released, ever: what [`crate::trim`] watches.
    released: AtomicU64,
}

/// Bytes held against a [`Budget`] until dropped.
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    /// A budget of `capacity` bytes (0 = unlimited).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: Mutex::new(0),
            freed: Notify::new(),
            waits: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            released: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn used(&self) -> u64 {
        *self.lock()
    }

    pub fn waits(&self) -> u64 {
        self.waits.load(Relaxed)
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.load(Relaxed)
    }

    pub fn released(&self) -> u64 {
        self.released.load(Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request larger than the whole budget asks for the whole budget, so it can
    /// always be granted once nothing else is held.
    fn clamp(&self, bytes: u64) -> u64 {
        if self.capacity == 0 { 0 } else { bytes.min(self.capacity) }
    }

    fn take(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.lock();
        if *used + bytes > self.capacity && bytes > 0 {
            return None;
        }
        *used += bytes;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Reserves `bytes` if they are free now (read-ahead).
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let r = self.take(self.clamp(bytes));
        if r.is_none() {
            self.skipped.fetch_add(1, Relaxed);
        }
        r
    }

    /// Reserves `bytes`, waiting until they are free.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let bytes = self.clamp(bytes);
        let mut counted = false;
        loop {
            // Registered before the check, so a release between the check and the
            // wait is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(r) = self.take(bytes) {
                return r;
            }
            if !counted {
                self.waits.fetch_add(1, Relaxed);
                counted = true;
            }
            freed.await;
        }
    }
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        *self.budget.lock() -= self.bytes;
        self.budget.released.fetch_add(self.bytes, Relaxed);
        // Every waiter checks again: a large release may satisfy several.
        self.budget.freed.notify_waiters();
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} bytes)", self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn read_ahead_takes_only_what_is_free_and_waiters_wake_on_release() {
        let b = Budget::new(32);
        let a = b.try_reserve(16).expect("free");
        let c = b.try_reserve(16).expect("free");
        assert!(b.try_reserve(1).is_none());
        assert_eq!(b.skipped(), 1);
        assert_eq!(b.used(), 32);
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.reserve(20).await.bytes() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "20 bytes are not free yet");
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "16 free bytes are not 20");
        drop(c);
        assert_eq!(waiter.await.unwrap(), 20);
        assert_eq!(b.used(), 0, "the waiter's reservation was dropped with its task");
        assert_eq!(b.waits(), 1);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_gets_all_of_it_and_zero_is_unlimited() {
        let b = Budget::new(10);
        let r = b.reserve(100).await;
        assert_eq!(r.bytes(), 10);
        assert!(b.try_reserve(1).is_none());
        drop(r);
        let unlimited = Budget::new(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.try_reserve(1 << 30).unwrap()).collect();
        assert_eq!(unlimited.used(), 0);
        drop(held);
    }
}
