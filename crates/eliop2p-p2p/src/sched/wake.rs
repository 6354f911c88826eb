//! When a download should look at its state again without any event: a
//! piece's deadline, a peer's stall, a pause's end, or the idle wake.

use std::time::Duration;

use super::peer::PeerState;
use super::{SchedConfig, Scheduler};

/// With nothing due, a watching download still looks at its state this often.
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// When a piece asked of a peer should have arrived: the peer's queue ahead of
/// it at the peer's measured rate, four times over, at least `min_deadline`.
pub(super) fn deadline(cfg: &SchedConfig, s: &PeerState, pos: usize, asked: Duration) -> Duration {
    let rate = if s.rate > 0.0 { s.rate } else { 12.5e6 };
    let queued = (pos + 1) as f64 * cfg.piece_size as f64 / rate;
    asked + cfg.min_deadline.max(Duration::from_secs_f64(4.0 * queued))
}

impl<P: Copy + Ord + std::hash::Hash + std::fmt::Debug> Scheduler<P> {
    /// The next time `poll` may have something new to do without any event.
    pub fn next_wake(&mut self, now: Duration) -> Duration {
        // Watched peers wake us by answering; polls need the timer.
        let mut at = now + if self.cfg.watch { IDLE_WAKE } else { self.cfg.refresh };
        for &(_, until) in &self.paused {
            if until > now {
                at = at.min(until);
            }
        }
        if cfg!(debug_assertions)
            && let Some(w) = &self.wakes
        {
            assert_eq!(*w, self.asked_wakes(), "wakes kept past a change");
        }
        if self.wakes.is_none() {
            self.wakes = Some(self.asked_wakes());
        }
        let (deadlines, stall) = self.wakes.as_ref().expect("just set");
        // Deadlines already past were acted on by the last poll (a second copy
        // asked, or none possible): only future ones can wake us.
        if let Some(d) = deadlines.get(deadlines.partition_point(|d| *d <= now)) {
            at = at.min(*d);
        }
        at.min(*stall).max(now + Duration::from_millis(1))
    }

    /// The asked peers' deadlines, in order, and the earliest time one of them
    /// can stall (`Duration::MAX`: none asked).
    fn asked_wakes(&self) -> (Vec<Duration>, Duration) {
        let mut deadlines = Vec::new();
        let mut stall = Duration::MAX;
        for &p in &self.asked {
            let s = &self.peers[p];
            for (pos, (_, asked)) in s.inflight.iter().enumerate() {
                deadlines.push(deadline(&self.cfg, s, pos, *asked));
            }
            if let Some(oldest) = s.inflight.iter().map(|(_, t)| *t).min() {
                let heard = s.last_arrival.map_or(oldest, |t| t.max(oldest));
                stall = stall.min(heard + self.cfg.stall);
            }
        }
        deadlines.sort_unstable();
        (deadlines, stall)
    }
}
