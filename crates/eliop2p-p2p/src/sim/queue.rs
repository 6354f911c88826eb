//! The simulator's pending events, popped in (time, sequence) order.
//!
//! Most events come a fixed delay after the event that makes them: at once, one
//! latency later, a round trip later, a slot wait later. Each such delay has a
//! FIFO of its own: virtual time never goes back and sequence numbers only rise,
//! so a FIFO is already in order and costs O(1) a push and a pop. Only the rest
//! (flow ends, a download's timer) go to the heap. With every event in the heap,
//! `pop` was a fifth of a 1,000-node run: the heap held millions of entries.
//! The order is exactly the heap's: a pop takes the least (time, sequence) over
//! the heap's top, the FIFOs' fronts and the timers' top.
//!
//! Timers are events of which at most one per id is pending, moved or
//! cancelled in place: a flow's end and its upload slot's release, which move
//! at every rate change on the flow's links. As heap events, each move left a
//! superseded entry behind, a fifth of all the events a run popped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

pub(super) type Time = u64; // microseconds

/// Events pushed a fixed delay after the time they were pushed at, in order:
/// (time, sequence, event).
type Fifo<E> = VecDeque<(Time, u64, E)>;

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Queue<E> {
    now: Time,
    seq: u64,
    heap: BinaryHeap<Reverse<(Time, u64, usize)>>,
    /// Events of the heap's entries; slots are reused once their event ran.
    slab: Vec<Option<E>>,
    free: Vec<usize>,
    /// (delay, events pushed that far after the time they were pushed at).
    fifos: Vec<(Time, Fifo<E>)>,
    timers: Timers,
    /// The event a timer's id stands for (not saved: `Queue::load` sets it).
    #[serde(skip, default = "unset_timer_event")]
    timer_event: fn(usize) -> E,
}

/// A loaded queue's timer function until `Queue::set_timer_event` sets it:
/// function pointers are not saved.
fn unset_timer_event<E>() -> fn(usize) -> E {
    |id| panic!("timer {id} of a loaded queue whose timer function was not set")
}

impl<E> Queue<E> {
    pub(super) fn new(delays: &[Time], timer_event: fn(usize) -> E) -> Self {
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
            timers: Timers::default(),
            timer_event,
        }
    }

    /// Sets the event a timer's id stands for (a queue loaded from a saved
    /// simulation has none).
    pub(super) fn set_timer_event(&mut self, timer_event: fn(usize) -> E) {
        self.timer_event = timer_event;
    }

    /// Sets timer `id` to `at` (its place among events at the same time is
    /// that of an event pushed now), moving it if it was set.
    pub(super) fn set_timer(&mut self, id: usize, at: Time) {
        let seq = self.next_seq();
        debug_assert!(at >= self.now, "a timer in the past");
        self.timers.set(id, at, seq);
    }

    pub(super) fn cancel_timer(&mut self, id: usize) {
        self.timers.cancel(id);
    }

    /// The time of the last event popped.
    pub(super) fn now(&self) -> Time {
        self.now
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
        // The source of the least: the heap, a FIFO, or the timers.
        enum From {
            Heap,
            Fifo(usize),
            Timer,
        }
        let mut best: Option<((Time, u64), From)> = self.heap.peek().map(|Reverse((t, s, _))| ((*t, *s), From::Heap));
        for (k, (_, f)) in self.fifos.iter().enumerate() {
            if let Some((t, s, _)) = f.front()
                && best.as_ref().is_none_or(|(b, _)| (*t, *s) < *b)
            {
                best = Some(((*t, *s), From::Fifo(k)));
            }
        }
        if let Some(&(t, s, _)) = self.timers.heap.first()
            && best.as_ref().is_none_or(|(b, _)| (t, s) < *b)
        {
            best = Some(((t, s), From::Timer));
        }
        let ((at, _), from) = best?;
        self.now = at;
        match from {
            From::Fifo(k) => self.fifos[k].1.pop_front().map(|(t, _, e)| (t, e)),
            From::Heap => {
                let Reverse((t, _, i)) = self.heap.pop().expect("peeked");
                self.free.push(i);
                Some((t, self.slab[i].take().expect("a pushed event")))
            }
            From::Timer => {
                let (t, _, id) = self.timers.remove_at(0);
                Some((t, (self.timer_event)(id)))
            }
        }
    }
}

const UNSET: usize = usize::MAX;

/// A binary min-heap of (time, sequence, id) that knows where each id sits, so
/// that a timer moves or goes in O(log n) and never leaves a stale entry.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Timers {
    heap: Vec<(Time, u64, usize)>,
    /// Per id, its index in `heap`, or `UNSET`.
    pos: Vec<usize>,
}

impl Timers {
    fn set(&mut self, id: usize, at: Time, seq: u64) {
        if id >= self.pos.len() {
            self.pos.resize(id + 1, UNSET);
        }
        let i = self.pos[id];
        if i == UNSET {
            self.heap.push((at, seq, id));
            self.pos[id] = self.heap.len() - 1;
            self.up(self.heap.len() - 1);
        } else {
            self.heap[i] = (at, seq, id);
            let i = self.up(i);
            self.down(i);
        }
    }

    fn cancel(&mut self, id: usize) {
        if let Some(&i) = self.pos.get(id)
            && i != UNSET
        {
            self.remove_at(i);
        }
    }

    fn remove_at(&mut self, i: usize) -> (Time, u64, usize) {
        let last = self.heap.len() - 1;
        self.swap(i, last);
        let out = self.heap.pop().expect("an entry at i");
        self.pos[out.2] = UNSET;
        if i < self.heap.len() {
            let i = self.up(i);
            self.down(i);
        }
        out
    }

    fn key(&self, i: usize) -> (Time, u64) {
        (self.heap[i].0, self.heap[i].1)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].2] = a;
        self.pos[self.heap[b].2] = b;
    }

    /// Moves entry `i` towards the root while it is less than its parent;
    /// returns where it ends.
    fn up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key(i) >= self.key(parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let mut least = i;
            for c in [2 * i + 1, 2 * i + 2] {
                if c < self.heap.len() && self.key(c) < self.key(least) {
                    least = c;
                }
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events come out in (time, push order), whichever way they went in.
    #[test]
    fn pops_in_time_then_push_order_across_fifos_and_heap() {
        let mut q = Queue::new(&[0, 10, 20, 10], |_| "timer");
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

    /// A timer pops once, at its latest time, in the place of an event pushed
    /// when it was last set; a cancelled one never pops.
    #[test]
    fn timers_move_and_cancel_in_place() {
        let names = |id: usize| ["t0", "t1", "t2", "t3"][id];
        let mut q = Queue::new(&[5], names);
        q.set_timer(0, 30);
        q.set_timer(1, 10);
        q.push(10, "e"); // heap, after t1
        q.set_timer(2, 10); // after e
        q.set_timer(3, 40);
        q.set_timer(0, 10); // moved before t3, after t2
        q.cancel_timer(3);
        q.set_timer(1, 50); // moved last
        q.cancel_timer(3); // cancelling twice is nothing
        let mut out = Vec::new();
        while let Some((t, e)) = q.pop() {
            out.push((t, e));
        }
        assert_eq!(out, vec![(10, "e"), (10, "t2"), (10, "t0"), (50, "t1")]);
        // Many timers moved at random come out sorted, each once.
        let mut q = Queue::new(&[], |id| id);
        let mut r = 7u64;
        let mut want = vec![None; 200];
        for _ in 0..2000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let id = (r % 200) as usize;
            if r.is_multiple_of(5) {
                q.cancel_timer(id);
                want[id] = None;
            } else {
                let at = r % 1000;
                q.set_timer(id, at);
                want[id] = Some(at);
            }
        }
        let mut got = Vec::new();
        while let Some((t, id)) = q.pop() {
            got.push((t, id));
        }
        let mut expect: Vec<(u64, usize)> = want.iter().enumerate().filter_map(|(id, at)| at.map(|t| (t, id))).collect();
        expect.sort_by_key(|(t, _)| *t);
        assert_eq!(got.len(), expect.len());
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut ids: Vec<usize> = got.iter().map(|(_, id)| *id).collect();
        ids.sort_unstable();
        let mut want_ids: Vec<usize> = expect.iter().map(|(_, id)| *id).collect();
        want_ids.sort_unstable();
        assert_eq!(ids, want_ids);
        for (t, id) in got {
            assert_eq!(want[id], Some(t));
        }
    }
}
