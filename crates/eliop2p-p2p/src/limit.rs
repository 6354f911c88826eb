//! A token bucket shared by every connection of one direction (upload or download).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct RateLimiter {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    state: Mutex<(f64, Instant)>,
    /// Total time callers spent waiting, for metrics.
    pub throttled_ns: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            state: Mutex::new((0.0, Instant::now())),
            throttled_ns: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits until `bytes` may pass. The bucket holds at most a quarter second of
    /// tokens, so bursts stay short; a request larger than that just waits longer.
    pub async fn acquire(&self, bytes: u64) {
        if self.rate == 0 || bytes == 0 {
            return;
        }
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let burst = self.rate as f64 / 4.0;
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate as f64;
            st.0 = (st.0 + refill).min(burst) - bytes as f64;
            st.1 = now;
            if st.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-st.0 / self.rate as f64)
            }
        };
        if !wait.is_zero() {
            self.throttled_ns
                .fetch_add(wait.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        for _ in 0..10 {
            l.acquire(500).await;
        }
        // 5000 bytes at 1000 B/s, minus nothing banked at start: about 5 s.
        let secs = t0.elapsed().as_secs_f64();
        assert!((4.5..=5.5).contains(&secs), "{secs}");
        let unlimited = RateLimiter::new(0);
        let t1 = Instant::now();
        unlimited.acquire(1 << 30).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
