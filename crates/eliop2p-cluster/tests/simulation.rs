//! 500 nodes running the real gossip state machine over a virtual network and
//! clock: membership converges, a killed node is detected within the bound, chunk
//! locations route to their holders, and every node picks the same owner for a
//! chunk (one origin read per chunk).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use eliop2p_cluster::{Gossip, GossipConfig, NodeInfo, Out};
use eliop2p_core::ChunkId;

struct Sim {
    nodes: Vec<Gossip>,
    by_addr: HashMap<SocketAddr, usize>,
    dead: HashSet<usize>,
    now: u64,
    messages: u64,
    sampled: u64,
    sampled_bytes: u64,
    cfg: GossipConfig,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i / 250) as u8, (i % 250) as u8, 1], 9000))
}

fn chunk(i: u64) -> ChunkId {
    let mut b = [0u8; 32];
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    b[..8].copy_from_slice(&z.to_be_bytes());
    b[8..16].copy_from_slice(&i.to_be_bytes());
    ChunkId::from_bytes(b)
}

impl Sim {
    fn new(n: usize, cfg: GossipConfig) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let me = NodeInfo {
                    id: format!("node-{i}"),
                    p2p: addr(i),
                    proxy: None,
                    zone: format!("zone-{}", i % 3),
                };
                // Everyone is seeded with the first three nodes.
                let seeds = (0..3).map(addr).filter(|a| *a != addr(i)).collect();
                Gossip::new(me, 1, seeds, cfg.clone())
            })
            .collect();
        Self {
            nodes,
            by_addr: (0..n).map(|i| (addr(i), i)).collect(),
            dead: HashSet::new(),
            now: 0,
            messages: 0,
            sampled: 0,
            sampled_bytes: 0,
            cfg,
        }
    }

    fn deliver(&mut self, outs: Vec<Out>) {
        let mut queue: VecDeque<Out> = outs.into();
        while let Some(o) = queue.pop_front() {
            self.messages += 1;
            // Every 64th message goes through the wire format, as on sockets, and
            // sizes the traffic.
            let msg = if self.messages.is_multiple_of(64) {
                let payload = o.msg.payload();
                self.sampled += 1;
                self.sampled_bytes += payload.len() as u64;
                let m = eliop2p_cluster::Message::decode(o.msg.message_type(), &payload)
                    .expect("decodes");
                assert_eq!(m, o.msg);
                m
            } else {
                o.msg
            };
            let Some(&to) = self.by_addr.get(&o.to) else {
                continue;
            };
            if self.dead.contains(&to) {
                continue;
            }
            let replies = self.nodes[to].handle(self.now, msg);
            queue.extend(replies);
        }
    }

    fn round(&mut self) {
        self.now += self.cfg.interval_ms;
        let mut outs = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.dead.contains(&i) {
                outs.extend(self.nodes[i].tick(self.now));
            }
        }
        self.deliver(outs);
    }

    fn converged(&self) -> bool {
        let live = self.nodes.len() - self.dead.len();
        (0..self.nodes.len())
            .filter(|i| !self.dead.contains(i))
            .all(|i| self.nodes[i].live_members().len() == live - 1)
    }
}

#[test]
fn five_hundred_nodes_converge_detect_and_route() {
    let n = 500;
    let cfg = GossipConfig::default();
    let mut sim = Sim::new(n, cfg.clone());

    // 1. Membership converges.
    let mut rounds = 0;
    while !sim.converged() {
        sim.round();
        rounds += 1;
        assert!(rounds < 60, "membership did not converge in 60 rounds");
    }
    let secs = rounds as f64 * cfg.interval_ms as f64 / 1000.0;
    println!("{n} nodes: membership converged in {rounds} rounds ({secs:.0} s simulated)");

    // Steady state: traffic per node per second, and no false suspicion.
    let (m0, t0) = (sim.messages, sim.now);
    for _ in 0..10 {
        sim.round();
        for g in &sim.nodes {
            assert_eq!(g.live_members().len(), n - 1);
        }
    }
    let per_node_secs = n as f64 * (sim.now - t0) as f64 / 1000.0;
    println!(
        "steady state: {:.1} messages and {:.1} KiB per node per second",
        (sim.messages - m0) as f64 / per_node_secs,
        (sim.messages - m0) as f64 * (sim.sampled_bytes as f64 / sim.sampled as f64)
            / 1024.0
            / per_node_secs
    );

    // 2. Locations: every node announces 4 chunks; any node finds the holders of
    // any chunk by asking the chunk's owner in its own view.
    let mut holders_of: HashMap<ChunkId, HashSet<String>> = HashMap::new();
    let mut outs = Vec::new();
    for (i, g) in sim.nodes.iter_mut().enumerate() {
        let mine: Vec<ChunkId> = (0..4)
            .map(|k| chunk(((i * 7 + k * 131) % 1000) as u64))
            .collect();
        for c in &mine {
            holders_of.entry(*c).or_default().insert(g.me().id.clone());
        }
        outs.extend(g.announce(&mine, &[]));
    }
    sim.deliver(outs);
    let check_routing = |sim: &Sim, holders_of: &HashMap<ChunkId, HashSet<String>>| {
        for (k, (c, expected)) in holders_of.iter().enumerate() {
            let asker = (k * 37) % n;
            if sim.dead.contains(&asker) {
                continue;
            }
            let owner = &sim.nodes[asker].owners(c, 1)[0];
            let o = sim.by_addr[&owner.p2p];
            let got: HashSet<String> = sim.nodes[o].holders(c).into_iter().map(|h| h.id).collect();
            let live_expected: HashSet<String> = expected
                .iter()
                .filter(|id| {
                    let i: usize = id.trim_start_matches("node-").parse().unwrap();
                    !sim.dead.contains(&i)
                })
                .cloned()
                .collect();
            assert_eq!(got, live_expected, "holders of {c:?} asked by node-{asker}");
        }
    };
    check_routing(&sim, &holders_of);

    // 3. Single flight: for fresh chunks every node picks the same owner.
    let owners_per_chunk = |sim: &Sim| -> usize {
        (5000..5200u64)
            .map(|c| {
                (0..n)
                    .filter(|i| !sim.dead.contains(i))
                    .map(|i| sim.nodes[i].owners(&chunk(c), 1)[0].id.clone())
                    .collect::<HashSet<_>>()
                    .len()
            })
            .max()
            .unwrap()
    };
    assert_eq!(owners_per_chunk(&sim), 1, "origin reads per chunk");

    // 4. Kill a node: everyone sees it dead within the bound, and its chunks stop
    // being offered.
    let victim = 123;
    sim.dead.insert(victim);
    let killed_at = sim.now;
    let victim_id = format!("node-{victim}");
    let mut detect_rounds = 0;
    loop {
        sim.round();
        detect_rounds += 1;
        let all_know = (0..n).filter(|i| !sim.dead.contains(i)).all(|i| {
            sim.nodes[i]
                .live_members()
                .iter()
                .all(|m| m.id != victim_id)
        });
        if all_know {
            break;
        }
        assert!(detect_rounds < 100, "never detected");
    }
    assert!(
        sim.now - killed_at <= cfg.detection_bound_ms(),
        "detected after {} ms, bound {} ms",
        sim.now - killed_at,
        cfg.detection_bound_ms()
    );
    println!(
        "killed node detected by all {} survivors in {detect_rounds} rounds ({} ms; bound {} ms)",
        n - 1,
        sim.now - killed_at,
        cfg.detection_bound_ms()
    );
    // Owners moved: holders re-announce (as the P2P driver does on a membership
    // change), and routing is exact again with one owner per chunk.
    let mut outs = Vec::new();
    for (i, g) in sim.nodes.iter_mut().enumerate() {
        if sim.dead.contains(&i) {
            continue;
        }
        if g.take_changed() {
            g.prune_index();
            let mine: Vec<ChunkId> = holders_of
                .iter()
                .filter(|(_, h)| h.contains(&g.me().id))
                .map(|(c, _)| *c)
                .collect();
            outs.extend(g.announce(&mine, &[]));
        }
    }
    sim.deliver(outs);
    check_routing(&sim, &holders_of);
    assert_eq!(
        owners_per_chunk(&sim),
        1,
        "origin reads per chunk after the kill"
    );

    // 5. A graceful leave is seen within one round by everyone it told.
    let leaver = 321;
    let outs = sim.nodes[leaver].leave();
    sim.deliver(outs);
    sim.dead.insert(leaver);
    for i in (0..n).filter(|i| !sim.dead.contains(i)) {
        assert!(
            sim.nodes[i]
                .live_members()
                .iter()
                .all(|m| m.id != "node-321")
        );
    }

    // 6. A restarted node (new generation) rejoins.
    sim.dead.remove(&victim);
    let me = NodeInfo {
        id: victim_id.clone(),
        p2p: addr(victim),
        proxy: None,
        zone: String::new(),
    };
    sim.nodes[victim] = Gossip::new(me, 2, vec![addr(0)], cfg.clone());
    let mut rejoin_rounds = 0;
    while !sim.converged() {
        sim.round();
        rejoin_rounds += 1;
        assert!(rejoin_rounds < 30, "restarted node did not rejoin");
    }
    println!("restarted node rejoined everywhere in {rejoin_rounds} rounds");
}
