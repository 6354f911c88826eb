//! The simulator's bandwidth model: every piece on the wire is a flow from an
//! uploader's uplink to a downloader's downlink, and the flows crossing a link
//! share it max-min fair, as TCP flows sharing bottlenecks roughly settle.
//!
//! When a flow starts or ends, the flows on the two links it crossed (its
//! uploader's uplink and its downloader's downlink) are given max-min rates by
//! progressive filling over what the other flows leave of every link they cross;
//! every other flow keeps its rate until a change reaches one of its own links.
//! That is local, so a link freed far away is refilled one event later than TCP
//! would; no link ever carries more than its rate. An equal split per link (the
//! model before) left a link idle whenever its flows were held back at their
//! other ends: the origin's link ran at 70-80% when the owners' downlinks were
//! shared evenly with peer pieces, where the bed's origin ran at its cap.

use super::queue::{Queue, Time};
use super::Ev;

/// One piece on the wire.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Flow {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) chunk: usize,
    pub(super) piece: u32,
    remaining: f64,
    rate: f64,
    since: Time,
    live: bool,
    /// Bytes left at which the uploader's slot is freed (0: at the end).
    release: f64,
    /// The slot was freed before the end (`SlotFree`).
    pub(super) released: bool,
}

/// The flows of every link; node `origin` (one past the last node) is the origin,
/// which only uploads.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Links {
    /// Each node's NIC rate (each way), then the origin's.
    caps: Vec<f64>,
    flows: Vec<Flow>,
    /// Indexes of ended flows in `flows`, reused by the next ones.
    free: Vec<usize>,
    up: Vec<Vec<usize>>,
    down: Vec<Vec<usize>>,
    /// `reshare`'s work lists, kept between calls (it runs at every flow start
    /// and end).
    changed: Vec<usize>,
    /// (node, downlink?, what the held flows leave of it, flows of `changed` on it).
    link_room: Vec<(usize, bool, f64, usize)>,
    rates: Vec<Option<f64>>,
    /// Per node, for its uplink and downlink: the `reshare` that last listed
    /// the link in `link_room`, and where (scratch, not saved: sized on use).
    #[serde(skip)]
    link_at: Vec<[(u64, u32); 2]>,
    #[serde(skip)]
    reshares: u64,
}

impl Links {
    /// `caps`: each node's NIC rate, then the origin's.
    pub(super) fn new(caps: Vec<f64>) -> Self {
        let nodes = caps.len() - 1;
        Self {
            caps,
            flows: Vec::new(),
            free: Vec::new(),
            up: vec![Vec::new(); nodes + 1],
            down: vec![Vec::new(); nodes + 1],
            changed: Vec::new(),
            link_room: Vec::new(),
            rates: Vec::new(),
            link_at: Vec::new(),
            reshares: 0,
        }
    }

    fn cap(&self, x: usize) -> f64 {
        self.caps[x]
    }

    /// Puts `bytes` of `piece` on the wire from `from` to `to`; its `FlowDone`
    /// comes when its last byte has crossed both links, and with `release` > 0 a
    /// `SlotFree` when `release` bytes are left.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(&mut self, q: &mut Queue<Ev>, now: Time, from: usize, to: usize, chunk: usize, piece: u32, bytes: u64, release: u64) {
        let f = Flow {
            from,
            to,
            chunk,
            piece,
            remaining: bytes as f64,
            rate: 0.0,
            since: now,
            live: true,
            release: release as f64,
            released: false,
        };
        let fi = match self.free.pop() {
            Some(i) => {
                // The slot's previous flow left no timer set (`finish`).
                self.flows[i] = f;
                i
            }
            None => {
                self.flows.push(f);
                self.flows.len() - 1
            }
        };
        self.up[from].push(fi);
        self.down[to].push(fi);
        self.reshare(q, now, from, to);
    }

    /// The flow of a `FlowDone` event, off its links now (the others on them
    /// reshared), its slot free.
    pub(super) fn finish(&mut self, q: &mut Queue<Ev>, now: Time, fi: usize) -> &Flow {
        q.cancel_timer(Ev::slot_free_timer(fi));
        let f = &mut self.flows[fi];
        assert!(f.live, "a FlowDone of flow {fi}, which ended");
        // The flow moved all its bytes (up to the microsecond rounding of its
        // completion time).
        let left = f.remaining - f.rate * (now - f.since) as f64 / 1e6;
        assert!(left < f.rate * 2e-6 + 1.0, "flow {fi} ended with {left:.0} bytes left");
        f.live = false;
        let (from, to) = (f.from, f.to);
        self.free.push(fi);
        self.up[from].retain(|x| *x != fi);
        self.down[to].retain(|x| *x != fi);
        self.reshare(q, now, from, to);
        &self.flows[fi]
    }

    /// The uploader of the flow of a `SlotFree` event (its slot is free now).
    pub(super) fn free_slot(&mut self, fi: usize) -> usize {
        let f = &mut self.flows[fi];
        assert!(f.live && !f.released, "a SlotFree of flow {fi}, which ended or freed its slot");
        f.released = true;
        f.from
    }

    /// New rates for the flows on `from`'s uplink and `to`'s downlink, max-min
    /// fair over what the other flows (held at their rates) leave of each link
    /// they cross; a flow whose rate changed has its `FlowDone` (and
    /// `SlotFree`) timers moved.
    fn reshare(&mut self, q: &mut Queue<Ev>, now: Time, from: usize, to: usize) {
        let mut v = std::mem::take(&mut self.changed);
        v.clear();
        v.extend(self.up[from].iter().chain(self.down[to].iter()).copied());
        v.sort_unstable();
        v.dedup();
        let mut links = std::mem::take(&mut self.link_room);
        links.clear();
        // Each link's place in `links`, found without a search.
        self.reshares += 1;
        let mark = self.reshares;
        if self.link_at.len() < self.caps.len() {
            self.link_at.resize(self.caps.len(), [(0, 0); 2]);
        }
        for &fi in &v {
            for l in [(self.flows[fi].from, false), (self.flows[fi].to, true)] {
                let at = &mut self.link_at[l.0][usize::from(l.1)];
                if at.0 == mark {
                    links[at.1 as usize].3 += 1;
                } else {
                    *at = (mark, links.len() as u32);
                    let on = if l.1 { &self.down[l.0] } else { &self.up[l.0] };
                    let held: f64 = on.iter().filter(|g| v.binary_search(g).is_err()).map(|g| self.flows[*g].rate).sum();
                    links.push((l.0, l.1, (self.caps[l.0] - held).max(0.0), 1));
                }
            }
        }
        let mut rate = std::mem::take(&mut self.rates);
        rate.clear();
        rate.resize(v.len(), None);
        // The link that offers the least to each of its unset flows sets them.
        while let Some(li) = (0..links.len())
            .filter(|&i| links[i].3 > 0)
            .min_by(|&a, &b| (links[a].2 / links[a].3 as f64).total_cmp(&(links[b].2 / links[b].3 as f64)))
        {
            let (node, down) = (links[li].0, links[li].1);
            let share = links[li].2 / links[li].3 as f64;
            for (k, &fi) in v.iter().enumerate() {
                let f = &self.flows[fi];
                if rate[k].is_some() || (if down { f.to } else { f.from }) != node {
                    continue;
                }
                rate[k] = Some(share);
                for li in [self.link_at[f.from][0].1, self.link_at[f.to][1].1] {
                    let l = &mut links[li as usize];
                    l.2 = (l.2 - share).max(0.0);
                    l.3 -= 1;
                }
            }
        }
        for (k, &fi) in v.iter().enumerate() {
            let r = rate[k].expect("every flow crosses a link");
            let f = &mut self.flows[fi];
            if r == f.rate {
                // Its pending completion event still holds.
                continue;
            }
            f.remaining -= f.rate * (now - f.since) as f64 / 1e6;
            f.since = now;
            f.rate = r;
            // A flow left nothing by flows held elsewhere waits for the next
            // change at one of its links (which reshares it).
            let (done, free) = (Ev::flow_done_timer(fi), Ev::slot_free_timer(fi));
            if r > 0.0 {
                let left = (f.remaining.max(0.0) / r * 1e6) as Time;
                q.set_timer(done, now + left + 1);
                if f.release > 0.0 && !f.released {
                    let until = ((f.remaining - f.release).max(0.0) / r * 1e6) as Time;
                    q.set_timer(free, now + until);
                } else {
                    q.cancel_timer(free);
                }
            } else {
                q.cancel_timer(done);
                q.cancel_timer(free);
            }
        }
        if cfg!(debug_assertions) {
            for &(node, down, ..) in &links {
                let (on, cap) = if down { (&self.down[node], self.cap(node)) } else { (&self.up[node], self.cap(node)) };
                let sum: f64 = on.iter().map(|g| self.flows[*g].rate).sum();
                assert!(sum <= cap * (1.0 + 1e-9), "link of node {node} (down: {down}) carries {sum} > {cap}");
            }
        }
        self.changed = v;
        self.link_room = links;
        self.rates = rate;
    }
}
