//! Giving freed memory back to the system once a burst of reads is over.
//!
//! glibc's allocator keeps what a burst freed (chunk and piece buffers of 1 MiB
//! and more come from its arenas once its mmap threshold has adapted upwards): 24
//! slow cold readers took a node from 17 MB to a peak of 236 MB, and it stayed at
//! 225 MB after every response was done, though the cache held 64 MB. The
//! in-flight budget bounds the peak; this returns the rest: when reservations worth
//! [`MIN_RELEASED`] have been released since the last trim and the budget is
//! mostly idle, `malloc_trim` hands free pages back. Under sustained load the
//! budget stays busy and nothing is trimmed (the pages would be faulted in again).
//! Other allocators (musl's) give memory back on their own: there it does nothing.

use std::sync::Weak;
use std::time::{Duration, Instant};

use crate::Budget;

/// How often the budget is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Bytes released since the last trim that make one worth it.
const MIN_RELEASED: u64 = 64 << 20;
/// While some reads are still in flight, at most one trim this often.
const BUSY_INTERVAL: Duration = Duration::from_secs(10);

/// Whether to trim now: enough was released, the budget is at most a quarter
/// used, and it is idle or the last trim is old.
fn due(released_since: u64, used: u64, capacity: u64, since_last: Duration) -> bool {
    released_since >= MIN_RELEASED
        && (capacity == 0 || used <= capacity / 4)
        && (used == 0 || since_last >= BUSY_INTERVAL)
}

/// Runs until the budget is dropped (the cache with it).
pub(crate) async fn return_freed_memory(budget: Weak<Budget>) {
    let mut last_released = 0;
    let mut last_trim = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(b) = budget.upgrade() else { return };
        let released = b.released();
        if due(released - last_released, b.used(), b.capacity(), last_trim.elapsed()) {
            last_released = released;
            last_trim = Instant::now();
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    let returned = unsafe { libc::malloc_trim(0) };
    tracing::debug!(returned = returned != 0, "freed memory returned to the system");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_a_burst_not_during_load() {
        let cap = 128 << 20;
        assert!(due(MIN_RELEASED, 0, cap, Duration::ZERO), "idle after a burst");
        assert!(!due(MIN_RELEASED - 1, 0, cap, Duration::from_secs(60)), "too little released");
        assert!(!due(MIN_RELEASED, cap / 2, cap, Duration::from_secs(60)), "still busy");
        assert!(!due(MIN_RELEASED, cap / 8, cap, Duration::from_secs(1)), "trimmed a moment ago");
        assert!(due(MIN_RELEASED, cap / 8, cap, BUSY_INTERVAL), "light load, old trim");
    }
}
