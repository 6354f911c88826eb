//! The simulator's pending events, popped in (time, sequence) order.
//!
//! Most events come a fixed delay after the event that makes them: at once, one
//! latency later, a round trip later, a slot wait later. Each such delay has a
//! FIFO of its own: virtual time never goes back and sequence numbers only rise,
//! so a FIFO is already in order and costs O(1) a push and a pop. Only the rest
//! (flow ends, a download's timer) go to the heap. With every event in the heap,
//! `pop` was a fifth of a 1,000-node run: the heap held millions of entries.
//! The order is exactly the heap's: a pop takes the least (time, sequence) over
//! the heap's top and the FIFOs' fronts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

pub(super) type Time = u64; // microseconds

/// Events pushed a fixed delay after the time they were pushed at, in order:
/// (time, sequence, event).
type Fifo<E> = VecDeque<(Time, u64, E)>;

pub(super) struct Queue<E> {
    now: Time,
    seq: u64,
    heap: BinaryHeap<Reverse<(Time, u64, usize)>>,
    /// Events of the heap's entries; slots are reused once their event ran.
    slab: Vec<Option<E>>,
    free: Vec<usize>,
    /// (delay, events pushed that far after the time they were pushed at).
    fifos: Vec<(Time, Fifo<E>)>,
}

impl<E> Queue<E> {
    pub(super) fn new(delays: &[Time]) -> Self {
        let mut d = delays.to_vec();
        d.sort_unstable();
        d.dedup();
        Self {
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            fifos: d.into_iter().map(|d| (d, VecDeque::new())).collect(),
        }
    }

    /// The sequence number the next push would take (taken now: a caller that
    /// defers a push keeps the event's place among events at the same time).
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn push(&mut self, at: Time, e: E) {
        let seq = self.next_seq();
        debug_assert!(at >= self.now, "an event in the past");
        let delay = at - self.now;
        match self.fifos.iter_mut().find(|(d, _)| *d == delay) {
            Some((_, f)) => f.push_back((at, seq, e)),
            None => self.push_heap(at, seq, e),
        }
    }

    /// Pushes with a sequence number taken earlier by `next_seq`.
    pub(super) fn push_seq(&mut self, at: Time, seq: u64, e: E) {
        debug_assert!(at >= self.now && seq <= self.seq);
        self.push_heap(at, seq, e);
    }

    fn push_heap(&mut self, at: Time, seq: u64, e: E) {
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(e);
                i
            }
            None => {
                self.slab.push(Some(e));
                self.slab.len() - 1
            }
        };
        self.heap.push(Reverse((at, seq, i)));
    }

    pub(super) fn pop(&mut self) -> Option<(Time, E)> {
        let mut best: Option<((Time, u64), Option<usize>)> = self.heap.peek().map(|Reverse((t, s, _))| ((*t, *s), None));
        for (k, (_, f)) in self.fifos.iter().enumerate() {
            if let Some((t, s, _)) = f.front()
                && best.is_none_or(|(b, _)| (*t, *s) < b)
            {
                best = Some(((*t, *s), Some(k)));
            }
        }
        let ((at, _), from) = best?;
        self.now = at;
        match from {
            Some(k) => self.fifos[k].1.pop_front().map(|(t, _, e)| (t, e)),
            None => {
                let Reverse((t, _, i)) = self.heap.pop().expect("peeked");
                self.free.push(i);
                Some((t, self.slab[i].take().expect("a pushed event")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events come out in (time, push order), whichever way they went in.
    #[test]
    fn pops_in_time_then_push_order_across_fifos_and_heap() {
        let mut q = Queue::new(&[0, 10, 20, 10]);
        q.push(10, "a"); // fifo 10
        q.push(5, "b"); // heap
        q.push(0, "c"); // fifo 0
        q.push(10, "d"); // fifo 10
        let late = q.next_seq();
        q.push(20, "e"); // fifo 20
        q.push_seq(20, late, "f"); // heap, before e
        let mut out = Vec::new();
        while let Some((t, e)) = q.pop() {
            out.push((t, e));
            if e == "b" {
                q.push(15, "g"); // fifo 10 from 5
                q.push(5, "h"); // fifo 0 from 5
            }
        }
        assert_eq!(out, vec![(0, "c"), (5, "b"), (5, "h"), (10, "a"), (10, "d"), (15, "g"), (20, "f"), (20, "e")]);
    }
}
