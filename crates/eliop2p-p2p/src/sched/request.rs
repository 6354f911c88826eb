//! What a poll asks for: new pieces rarest first, from the peers that can
//! serve them (swarm peers before seeds, the least loaded first), and second
//! copies of overdue pieces in the endgame.

use std::time::Duration;

use super::bits::Bits;
use super::{Actions, Scheduler, Source, wake};

impl<P: Copy + Ord + std::hash::Hash + std::fmt::Debug> Scheduler<P> {
    /// New requests, rarest first, and second copies of overdue pieces in the
    /// endgame.
    pub(super) fn request_pieces(&mut self, now: Duration, out: &mut Actions<P>) {
        if self.request_new(now, out) {
            self.request_overdue(now, out);
        }
    }

    /// Asks peers with room for pieces nobody is fetching, rarest first, swarm
    /// peers before seeds. Returns whether every wanted piece some peer has is
    /// now asked (the endgame).
    fn request_new(&mut self, now: Duration, out: &mut Actions<P>) -> bool {
        let (avail, swarm_has) = self.availability(now);
        // In piece order: the order a seed filling from the origin receives them.
        let wanted: Vec<u32> = (0..self.have.len() as u32)
            .filter(|&i| !self.have[i as usize])
            .collect();
        // Only pieces some peer has and nobody is fetching can be asked for (the
        // lists shrink as pieces are asked: each peer scans what is left, not
        // every wanted piece). Every wanted piece draws its tie-break, askable or
        // not, so that what follows draws the same numbers either way.
        // Rarest first, ties broken at random: (copies, tie-break, piece) as one
        // number, which sorts as the tuple does at a third of the cost.
        let mut order: Vec<u128> = Vec::with_capacity(wanted.len());
        for &i in &wanted {
            let r = self.random();
            if self.copies.of(i) == 0 && avail[i as usize] > 0 {
                order.push(u128::from(avail[i as usize]) << 96 | u128::from(r) << 32 | u128::from(i));
            }
        }
        let mut total = self.inflight();
        if order.is_empty() || total >= self.cfg.total {
            // No peer is looked at (the usual case once a download's budget is
            // out, or all it lacks is asked), and nothing is sorted. The
            // tie-breaks the peers not paused would have drawn are drawn all
            // the same: after the poll's pruning, `paused` lists exactly the
            // peers paused now.
            debug_assert_eq!(self.peers.len() - self.paused.len(), self.peers.states().filter(|s| s.paused_until <= now).count());
            for _ in 0..self.peers.len() - self.paused.len() {
                self.random();
            }
            return order.is_empty();
        }
        order.sort_unstable();
        let askable = |i: &u32| self.copies.of(*i) == 0 && avail[*i as usize] > 0;
        let mut order: Vec<u32> = order.into_iter().map(|k| k as u32).collect();
        let mut wanted: Vec<u32> = wanted.into_iter().filter(askable).collect();
        // The same pieces as a set: a swarm peer with none of them is passed over
        // without a scan (most of them, at hundreds of nodes).
        let mut left = Bits::new(self.have.len());
        for &i in &order {
            left.set(i as usize);
        }
        // Swarm peers first, then seeds; within each, the least loaded first.
        // Every peer not paused draws its tie-break, but only those that could
        // be asked now are sorted: one without room, or a swarm peer with none
        // of the pieces left, stays so through this poll (`left` only shrinks,
        // and only a peer asked gains pieces in flight), so leaving it out
        // changes nothing but the cost (at 5,000 nodes a download knows
        // hundreds of peers, and a handful can be asked).
        let mut peers: Vec<(bool, usize, u64, P, usize)> = Vec::new();
        for i in 0..self.peers.len() {
            let p = self.peers.nth_in_order(i);
            let s = &self.peers[p];
            if s.paused_until > now {
                continue;
            }
            let room = self.cfg.per_peer.saturating_sub(s.inflight.len());
            let useful = room > 0 && (s.source != Source::Swarm || s.have.intersects(&left));
            let key = (s.source != Source::Swarm, s.inflight.len());
            let r = self.random();
            if useful {
                peers.push((key.0, key.1, r, self.peers.id(p), p));
            }
        }
        peers.sort_unstable();
        // None askable: no peer is looked at (the usual case once a download's
        // budget is out).
        let mut progress = true;
        while progress && total < self.cfg.total && !order.is_empty() {
            progress = false;
            for &(_, _, _, _, p) in &peers {
                if total >= self.cfg.total || order.is_empty() {
                    break;
                }
                let s = &self.peers[p];
                let room = self.cfg.per_peer.saturating_sub(s.inflight.len());
                if room == 0 || s.source == Source::Swarm && !s.have.intersects(&left) {
                    continue;
                }
                let take = room.min(self.cfg.batch).min(self.cfg.total - total);
                let picked = s.pick(take, &order, &wanted, &swarm_has, now);
                if picked.is_empty() {
                    continue;
                }
                total += picked.len();
                for &i in &picked {
                    left.clear(i as usize);
                }
                order.retain(|i| !picked.contains(i));
                wanted.retain(|i| !picked.contains(i));
                progress = true;
                self.ask(p, picked, now, out);
            }
        }
        order.is_empty()
    }

    /// Overdue pieces: a second copy from another peer that has the piece, once
    /// nothing new is left to ask for (the endgame): before that, a second copy
    /// would take an uplink slot a piece nobody has asked for needs more.
    fn request_overdue(&mut self, now: Duration, out: &mut Actions<P>) {
        let mut asked = self.asked.clone();
        asked.sort_unstable_by_key(|&p| self.peers.id(p));
        let overdue: Vec<u32> = asked
            .iter()
            .map(|&p| &self.peers[p])
            .flat_map(|s| {
                s.inflight
                    .iter()
                    .enumerate()
                    .filter(|(pos, (_, asked))| wake::deadline(&self.cfg, s, *pos, *asked) <= now)
                    .map(|(_, (x, _))| *x)
                    .collect::<Vec<_>>()
            })
            .filter(|x| self.copies.of(*x) == 1 && !self.have[*x as usize])
            .collect();
        for x in overdue {
            let target = self
                .peers
                .in_order()
                .map(|p| (p, &self.peers[p]))
                .filter(|(_, s)| {
                    s.paused_until <= now
                        && s.has(x, now)
                        && s.inflight.len() < self.cfg.per_peer
                        && !s.inflight.iter().any(|(y, _)| *y == x)
                })
                .min_by_key(|(_, s)| (s.source != Source::Swarm, s.inflight.len()))
                .map(|(p, _)| p);
            if let Some(p) = target {
                self.ask(p, vec![x], now, out);
            }
        }
    }

    /// Records `pieces` as asked of `p` now, in this poll's request to `p`.
    fn ask(&mut self, p: usize, pieces: Vec<u32>, now: Duration, out: &mut Actions<P>) {
        self.wakes = None;
        let s = &mut self.peers[p];
        if s.inflight.is_empty() {
            self.asked.push(p);
            // Heard from at `now` at the latest (a first ask), so stalled at
            // `now + stall` at the earliest.
            self.stall_scan_at = self.stall_scan_at.min(now + self.cfg.stall);
        }
        self.overdue_scan_at = self.overdue_scan_at.min(now + self.cfg.min_deadline);
        for &i in &pieces {
            s.inflight.push((i, now));
            self.copies.asked(i);
        }
        let id = self.peers.id(p);
        match out.requests.iter_mut().find(|(q, _)| *q == id) {
            Some((_, v)) => v.extend(pieces),
            None => out.requests.push((id, pieces)),
        }
    }
}
