//! A chunk's tracker at cluster scale: its answer is a random few of the chunk's
//! holders and swarm, drawn without copying every holder (a chunk a whole cluster
//! has read has one holder a node).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use eliop2p_cluster::gossip::Digest;
use eliop2p_cluster::{Gossip, GossipConfig, Message, NodeInfo, Status};
use eliop2p_core::ChunkId;

fn node(i: u32) -> NodeInfo {
    NodeInfo {
        id: format!("node-{i}"),
        p2p: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000)),
        proxy: None,
        zone: "zone-a".into(),
        owner: true,
    }
}

fn join(g: &mut Gossip, t: u64, i: u32) {
    let d = Digest { node: node(i).into(), generation: 1, incarnation: 1, status: Status::Alive };
    g.handle_from(t, Some(&format!("node-{i}")), Message::NodeJoin(d));
}

#[test]
fn a_trackers_answer_samples_thousands_of_holders_and_skips_those_gone() {
    const N: u32 = 3000;
    let cfg = GossipConfig { interval_ms: 100, suspect_after_ms: 500, dead_after_ms: 1000, forget_after_ms: 60_000, ..GossipConfig::default() };
    let mut g = Gossip::new(node(0), 1, vec![], cfg);
    for i in 1..=N {
        join(&mut g, 0, i);
    }
    // A chunk node-0 tracks.
    let c = (0u64..)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_le_bytes());
            ChunkId::from_bytes(b)
        })
        .find(|c| g.indexes(c))
        .expect("node-0 owns some chunk");
    for i in 1..=N {
        let from = format!("node-{i}");
        g.handle_from(10, Some(&from), Message::ChunkAnnounce { from: from.clone(), chunks: vec![c] });
    }
    assert_eq!(g.holders(&c).len(), N as usize);
    for i in 1..=300 {
        g.add_downloader(10, &format!("node-{}", N + i), c, 20_000);
    }
    let skip = ["node-0", "node-5"];
    let mut named = HashSet::new();
    for _ in 0..200 {
        let h = g.sample_holders(&c, 8, &skip);
        assert_eq!(h.len(), 8);
        assert!(h.iter().all(|n| !skip.contains(&n.id.as_str())));
        assert_eq!(h.iter().map(|n| &n.id).collect::<HashSet<_>>().len(), 8, "distinct");
        named.extend(h.into_iter().map(|n| n.id));
    }
    assert!(named.len() > 1000, "askers get different holders: {} named", named.len());
    // Downloaders that are not members are no answer.
    assert!(g.sample_downloaders(10, &c, 12, &skip).is_empty());

    // What an answer costs, against copying every holder (as the tracker did).
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(g.holders(&c));
    }
    let all = t.elapsed();
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(g.sample_holders(&c, 8, &skip));
    }
    let sampled = t.elapsed();
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(g.indexes(&c));
    }
    let owners = t.elapsed();
    println!(
        "{N} holders: every holder {:?} an answer, a sample of 8 {:?}; finding the chunk's owners among {N} members {:?}",
        all / 1000,
        sampled / 1000,
        owners / 1000
    );

    // The odd members leave.
    for i in (1..=N).step_by(2) {
        let d = Digest { node: node(i).into(), generation: 1, incarnation: 1, status: Status::Left };
        g.handle_from(20, Some(&format!("node-{i}")), Message::NodeLeave(d));
    }
    assert!(!g.status("node-1").is_some_and(Status::is_live));
    for _ in 0..50 {
        let h = g.sample_holders(&c, 8, &skip);
        assert_eq!(h.len(), 8);
        assert!(h.iter().all(|n| n.id.trim_start_matches("node-").parse::<u32>().unwrap() % 2 == 0), "only live holders");
    }
}

#[test]
fn a_short_list_is_answered_whole() {
    let mut g = Gossip::new(node(0), 1, vec![], GossipConfig::default());
    for i in 1..=3 {
        join(&mut g, 0, i);
    }
    let c = (0u8..=255).map(|i| ChunkId::from_bytes([i; 32])).find(|c| g.indexes(c)).expect("owns one");
    for i in 1..=3 {
        let from = format!("node-{i}");
        g.handle_from(10, Some(&from), Message::ChunkAnnounce { from: from.clone(), chunks: vec![c] });
        g.add_downloader(10, &format!("node-{}", i), c, 20_000);
    }
    let mut h: Vec<String> = g.sample_holders(&c, 8, &["node-2"]).into_iter().map(|n| n.id).collect();
    h.sort();
    assert_eq!(h, ["node-1", "node-3"]);
    // A holder is no downloader; a member that asked is one.
    join(&mut g, 20, 4);
    g.add_downloader(20, "node-4", c, 20_000);
    let d: Vec<String> = g.sample_downloaders(20, &c, 12, &[]).into_iter().map(|n| n.id).collect();
    assert_eq!(d, ["node-4"]);
    assert!(g.sample_downloaders(20, &c, 12, &["node-4"]).is_empty());
}
