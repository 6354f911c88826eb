//! Membership changes waiting to be piggybacked: each is sent a bounded number of
//! times (`retransmit_mult * ceil(log10(n + 1))`, SWIM's infection-style
//! dissemination), the least sent first and, among those, the newest. A change is
//! kept by subject: a newer change about the same member replaces the older one
//! and starts its count again.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub(crate) struct BroadcastQueue {
    order: BTreeSet<(u32, Reverse<u64>, String)>,
    by_id: HashMap<String, (u32, u64)>,
    next: u64,
}

impl BroadcastQueue {
    /// Queues (or requeues, count reset) the current state of member `id`.
    pub fn push(&mut self, id: &str) {
        if let Some((t, o)) = self.by_id.remove(id) {
            self.order.remove(&(t, Reverse(o), id.to_owned()));
        }
        self.next += 1;
        self.order.insert((0, Reverse(self.next), id.to_owned()));
        self.by_id.insert(id.to_owned(), (0, self.next));
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The subjects of up to `max` changes to piggyback now; each counts one more
    /// transmission and leaves the queue after `limit`.
    pub fn take(&mut self, max: usize, limit: u32) -> Vec<String> {
        let picked: Vec<(u32, Reverse<u64>, String)> = self.order.iter().take(max).cloned().collect();
        let mut out = Vec::with_capacity(picked.len());
        for (t, o, id) in picked {
            self.order.remove(&(t, o, id.clone()));
            if t + 1 < limit {
                self.order.insert((t + 1, o, id.clone()));
                self.by_id.insert(id.clone(), (t + 1, o.0));
            } else {
                self.by_id.remove(&id);
            }
            out.push(id);
        }
        out
    }

    /// Drops the change sent most often (the oldest among those), other than the
    /// one about `keep`.
    pub fn pop_most_sent(&mut self, keep: &str) {
        let Some(victim) = self.order.iter().rev().find(|(_, _, id)| id != keep).cloned() else {
            return;
        };
        self.order.remove(&victim);
        self.by_id.remove(&victim.2);
    }

    /// Drops a subject (a member forgotten).
    pub fn remove(&mut self, id: &str) {
        if let Some((t, o)) = self.by_id.remove(id) {
            self.order.remove(&(t, Reverse(o), id.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_sent_first_then_newest_and_bounded_retransmits() {
        let mut q = BroadcastQueue::default();
        q.push("a");
        q.push("b");
        assert_eq!(q.take(1, 3), vec!["b"]);
        assert_eq!(q.take(1, 3), vec!["a"]);
        q.push("c");
        assert_eq!(q.take(3, 3), vec!["c", "b", "a"]);
        // b and a were sent twice and c once: with a limit of 3 each goes once more.
        assert_eq!(q.take(3, 3), vec!["c", "b", "a"]);
        assert_eq!(q.take(3, 3), vec!["c"]);
        assert!(q.is_empty());
        // A new change about a subject resets its count.
        q.push("a");
        q.take(1, 2);
        q.push("a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(5, 2), vec!["a"]);
        assert_eq!(q.take(5, 2), vec!["a"]);
        assert_eq!(q.take(5, 2), Vec::<String>::new());
    }
}
