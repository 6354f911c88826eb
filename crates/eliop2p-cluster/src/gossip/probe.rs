//! The SWIM side of [`Gossip`]: each round's probe, the indirect probes and
//! suspicions of members that did not answer, piggybacked changes, push-pull
//! exchanges and join attempts.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Digest, Entry, Gossip, Id, NodeInfo, MAX_UPDATES_PER_MESSAGE, Message, Out, BEHIND_ROUNDS, Source, Status};

/// A probe waiting for its ack.
pub(super) struct Probe {
    pub(super) target: String,
    pub(super) addr: SocketAddr,
    pub(super) started: u64,
    /// Members asked to probe the target (their acks count).
    pub(super) helpers: Vec<String>,
    /// Whether the target was pinged again and the helpers asked.
    pub(super) retried: bool,
}

/// A probe run for another member: its ack is relayed.
pub(super) struct Relay {
    pub(super) to: SocketAddr,
    pub(super) seq: u64,
    pub(super) until: u64,
}

impl Gossip {
    /// Changes to piggyback on a message to `to`: a recipient this node holds
    /// suspect or dead first hears so, so it can refute at once (a live node whose
    /// death was declared while the news of its refutation was lost learns it from
    /// the next member it probes).
    pub(super) fn updates_for(&mut self, to: Option<&str>) -> Vec<Digest> {
        let n = self.members.len() + 1;
        let limit = self.cfg.retransmits(n);
        let mut out = Vec::new();
        if let Some(to) = to
            && let Some(e) = self.members.get(to)
            && matches!(e.state, Status::Suspect | Status::Dead)
        {
            out.push(e.digest());
        }
        let ids = self.broadcasts.take(MAX_UPDATES_PER_MESSAGE - out.len(), limit);
        out.extend(ids.iter().filter_map(|id| self.claim(id)));
        out
    }

    pub(super) fn probeable(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(Entry::probeable)
    }

    /// The next member to probe in the shuffled round-robin order.
    pub(super) fn next_target(&mut self) -> Option<String> {
        for _ in 0..2 {
            while self.probe_pos < self.probe_order.len() {
                let id = self.probe_order[self.probe_pos].clone();
                self.probe_pos += 1;
                if self.probeable(id.as_str()) && !self.probes.values().any(|p| p.target == id.as_str()) {
                    return Some(id.as_str().to_owned());
                }
            }
            // A new cycle over the members probeable now, shuffled.
            let mut order: Vec<Id> = self
                .members
                .iter()
                .filter(|(_, e)| e.probeable())
                .map(|(id, _)| id.clone())
                .collect();
            order.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            for i in (1..order.len()).rev() {
                let j = (self.next_random() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            self.probe_order = order;
            self.probe_pos = 0;
        }
        None
    }

    /// Up to `k` distinct random probeable members, `except` excluded: sampled
    /// from the probe order (every member is in it), or from a full scan when that
    /// finds too few.
    pub(super) fn random_members(&mut self, k: usize, except: &[&str]) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<(String, SocketAddr)> = Vec::with_capacity(k);
        let len = self.probe_order.len() as u64;
        let mut tries = 0;
        while out.len() < k && len > 0 && tries < 8 * k + 8 {
            tries += 1;
            let i = (self.next_random() % len) as usize;
            let id = self.probe_order[i].as_str();
            if except.contains(&id) || out.iter().any(|(o, _)| o == id) {
                continue;
            }
            if let Some(e) = self.members.get(id)
                && e.probeable()
            {
                out.push((id.to_owned(), e.node.p2p));
            }
        }
        if out.len() == k {
            return out;
        }
        let pool: Vec<(String, SocketAddr)> = self
            .members
            .iter()
            .filter(|(id, e)| {
                e.probeable()
                    && !except.contains(&id.as_str())
                    && !out.iter().any(|(o, _)| o == id.as_str())
            })
            .map(|(id, e)| (id.as_str().to_owned(), e.node.p2p))
            .collect();
        let want = (k - out.len()).min(pool.len());
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        while picked.len() < want {
            let i = (self.next_random() % pool.len() as u64) as usize;
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        out.extend(picked.into_iter().map(|i| pool[i].clone()));
        out
    }

    /// Runs out probes and suspicions: members that did not answer become suspect,
    /// suspects that did not refute become dead; re-pings and indirect probes for
    /// probes unanswered since the last round.
    pub(super) fn run_timers(&mut self, out: &mut Vec<Out>) {
        let now = self.now;
        let timeout = self.cfg.probe_timeout_ms();
        let mut failed = Vec::new();
        let mut retry = Vec::new();
        for (seq, p) in &self.probes {
            if now.saturating_sub(p.started) >= timeout {
                failed.push(*seq);
            } else if !p.retried && now > p.started {
                retry.push(*seq);
            }
        }
        for seq in failed {
            let p = self.probes.remove(&seq).expect("listed");
            if let Some(e) = self.members.get(&p.target)
                && e.state == Status::Alive
                && !e.observed
            {
                let mut d = e.digest();
                d.status = Status::Suspect;
                self.suspicions += 1;
                self.apply(&d, Source::Rumour);
            }
        }
        retry.sort_unstable();
        for seq in retry {
            let (target, addr) = {
                let p = &self.probes[&seq];
                (p.target.clone(), p.addr)
            };
            let me = self.me.id.clone();
            let helpers = self.random_members(self.cfg.indirect, &[&target, &me]);
            let Some(target_info) = self.members.get(&target).map(|e| e.node.clone()) else {
                self.probes.remove(&seq);
                continue;
            };
            out.push(Out {
                to: addr,
                msg: self.ping(seq, &target),
            });
            for (_, to) in &helpers {
                let updates = self.updates_for(None);
                out.push(Out {
                    to: *to,
                    msg: Message::PingReq {
                        from: self.digest(),
                        seq,
                        target: NodeInfo::clone(&target_info),
                        updates,
                    },
                });
            }
            let p = self.probes.get_mut(&seq).expect("listed");
            p.helpers = helpers.into_iter().map(|(id, _)| id).collect();
            p.retried = true;
        }
        let dead: Vec<Digest> = self
            .suspects
            .iter()
            .filter_map(|id| self.members.get(id))
            .filter(|e| e.state == Status::Suspect && now >= e.suspect_until)
            .map(|e| Digest {
                status: Status::Dead,
                ..e.digest()
            })
            .collect();
        for d in dead {
            self.deaths += 1;
            self.apply(&d, Source::Rumour);
        }
        // Members the control plane stopped reporting.
        if self.any_observed {
            let gone: Vec<String> = self
                .members
                .values()
                .filter(|e| e.observed && e.state == Status::Alive && self.status_of(e) == Status::Dead)
                .map(|e| e.node.id.clone())
                .collect();
            for id in gone {
                if let Some(e) = self.members.get_mut(&id) {
                    e.state = Status::Dead;
                    e.changed_at = now;
                }
                self.index.drop_node(&id);
                self.changed = true;
            }
        }
        self.relays.retain(|_, r| r.until > now);
        self.awaiting.retain(|_, until| *until > now);
    }

    /// One gossip round at local time `now` (milliseconds).
    pub fn tick(&mut self, now: u64) -> Vec<Out> {
        self.now = now.max(self.now);
        if self.leaving {
            return Vec::new();
        }
        self.index.expire_downloaders(self.now);
        self.rounds += 1;
        let mut out = Vec::new();
        self.run_timers(&mut out);
        // Dead and left members are gossiped for `forget_after_ms` (tombstones),
        // then removed: the table does not keep every node that ever existed.
        if self.rounds.is_multiple_of(10) {
            let forget = self.cfg.forget_after_ms.saturating_mul(2);
            let gone: Vec<String> = self
                .members
                .values()
                .filter(|e| !self.is_live(e) && self.now.saturating_sub(e.changed_at) >= forget)
                .map(|e| e.node.id.clone())
                .collect();
            for id in gone {
                self.members.remove(&id);
                self.index.drop_node(&id);
                self.broadcasts.remove(&id);
                self.suspects.remove(&id);
            }
        }
        let has_live = self.has_live_members();
        self.join_seeds(has_live, &mut out);
        if let Some(target) = self.next_target() {
            self.seq += 1;
            let addr = self.members[&target].node.p2p;
            out.push(Out {
                to: addr,
                msg: self.ping(self.seq, &target),
            });
            self.probes.insert(
                self.seq,
                Probe {
                    target,
                    addr,
                    started: self.now,
                    helpers: Vec::new(),
                    retried: false,
                },
            );
        }
        if !self.broadcasts.is_empty() {
            for (_, to) in self.random_members(self.cfg.fanout, &[]) {
                let updates = self.updates_for(None);
                if updates.is_empty() {
                    break;
                }
                out.push(Out {
                    to,
                    msg: Message::Updates {
                        from: self.digest(),
                        updates,
                    },
                });
            }
        }
        if self.rounds >= self.next_push_pull {
            let every = self.cfg.push_pull_every(self.members.len() + 1);
            let jitter = 1 + self.next_random() % every;
            self.next_push_pull = if self.rounds < 32 {
                // Young: after 2, 4, 8, 16 and 32 rounds (a node that joined with
                // a crowd learns the rest of it).
                self.rounds * 2
            } else if self.rounds == 32 {
                // Then a random phase, so the exchanges of members started
                // together spread evenly over the period...
                self.rounds + jitter
            } else {
                // ...and one per period on average.
                self.rounds + every / 2 + jitter
            };
            if let Some((_, to)) = self.random_members(1, &[]).pop() {
                out.extend(self.push_pull(to));
            }
        }
        out
    }

    /// Join attempts: one seed a round while no member is live, and every
    /// `rejoin_every` rounds the seeds that are not live members (a partition heals).
    pub(super) fn join_seeds(&mut self, has_live: bool, out: &mut Vec<Out>) {
        if self.seeds.is_empty() {
            return;
        }
        let mut to = Vec::new();
        if !has_live {
            to.push(self.seeds[self.next_seed % self.seeds.len()]);
            self.next_seed += 1;
        } else if self.rounds % self.cfg.rejoin_every.max(1) == 1 {
            let mut unseen: HashSet<SocketAddr> = self.seeds.iter().copied().collect();
            for e in self.members.values() {
                if self.is_live(e) {
                    unseen.remove(&e.node.p2p);
                }
            }
            to.extend(self.seeds.iter().filter(|s| unseen.contains(s)));
        }
        let until = self.now + self.cfg.probe_timeout_ms();
        for s in to {
            self.awaiting.insert(s, until);
            out.push(Out {
                to: s,
                msg: Message::NodeJoin(self.digest()),
            });
        }
    }

    /// Compares the live members a prober or probed member knows with this node's
    /// count. Knowing fewer for `BEHIND_ROUNDS` rounds on end (longer than news
    /// takes to spread) means news was missed: this node exchanges tables with
    /// that member, at most once per `BEHIND_ROUNDS`.
    pub(super) fn compare_counts(&mut self, theirs: u64, addr: SocketAddr) -> Vec<Out> {
        if theirs <= self.live_gossiped as u64 {
            self.behind_since = None;
            return Vec::new();
        }
        let since = *self.behind_since.get_or_insert(self.rounds);
        if self.rounds < since + BEHIND_ROUNDS || self.rounds < self.last_push_pull + BEHIND_ROUNDS {
            return Vec::new();
        }
        self.behind_since = None;
        self.push_pull(addr)
    }

    /// A probe with its piggybacked changes.
    pub(super) fn ping(&mut self, seq: u64, target: &str) -> Message {
        let updates = self.updates_for(Some(target));
        Message::Ping {
            from: self.digest(),
            seq,
            members: self.live_gossiped as u64,
            updates,
        }
    }

    /// This node's table to `to`, asking for its own back (which this node then
    /// takes whole).
    fn push_pull(&mut self, to: SocketAddr) -> Vec<Out> {
        self.last_push_pull = self.rounds;
        self.awaiting.insert(to, self.now + self.cfg.probe_timeout_ms());
        self.table_to(to, true)
    }
}
