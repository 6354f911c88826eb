//! What one authenticated member can make another believe (issue 15): a node
//! speaks for itself, invented members are bounded and forgotten, and no
//! heartbeat outbids its node for good.

use std::net::SocketAddr;

use eliop2p_cluster::gossip::{Digest, MAX_CHUNKS_PER_MESSAGE, MAX_INDEXED_PER_MEMBER, MAX_NEW_MEMBERS_PER_MESSAGE};
use eliop2p_core::ChunkId;
use eliop2p_cluster::{Gossip, GossipConfig, Message, NodeInfo, Status};

fn node(i: u32) -> NodeInfo {
    NodeInfo {
        id: format!("node-{i}"),
        p2p: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000)),
        proxy: None,
        zone: String::new(),
    }
}

fn digest(i: u32, heartbeat: u64, left: bool) -> Digest {
    Digest { node: node(i), generation: 1, heartbeat, left }
}

fn cfg() -> GossipConfig {
    GossipConfig { interval_ms: 100, suspect_after_ms: 500, dead_after_ms: 1000, forget_after_ms: 2000, ..GossipConfig::default() }
}

/// node-0 knows node-1 (the prober) and node-2 (the victim).
fn victim_setup() -> Gossip {
    let mut g = Gossip::new(node(0), 1, vec![], cfg());
    for i in [1, 2] {
        g.handle_from(0, Some(&format!("node-{i}")), Message::NodeJoin(digest(i, 5, false)));
    }
    assert_eq!(g.status("node-2"), Some(Status::Alive));
    g
}

#[test]
fn a_member_cannot_leave_or_join_for_another() {
    let mut g = victim_setup();
    // node-1 sends a NodeLeave carrying node-2's digest, and one with u64::MAX.
    g.handle_from(10, Some("node-1"), Message::NodeLeave(digest(2, 5, true)));
    g.handle_from(10, Some("node-1"), Message::NodeLeave(digest(2, u64::MAX, true)));
    assert_eq!(g.status("node-2"), Some(Status::Alive), "node-2 did not leave");
    // Nor a join, chunk announcement or state sync in another's name.
    g.handle_from(10, Some("node-1"), Message::NodeJoin(digest(7, 1, false)));
    g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-2".into(), members: vec![digest(8, 1, false)], reply: false });
    assert_eq!(g.status("node-7"), None);
    assert_eq!(g.status("node-8"), None);
    assert_eq!(g.refused(), 4);
    // Its own leave is taken.
    g.handle_from(10, Some("node-1"), Message::NodeLeave(digest(1, 5, true)));
    assert_ne!(g.status("node-1"), Some(Status::Alive));
}

#[test]
fn a_heartbeat_beyond_any_real_one_is_dropped() {
    let mut g = victim_setup();
    // Third-party gossip marking node-2 left with an unbeatable heartbeat.
    g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-1".into(), members: vec![digest(2, u64::MAX, true)], reply: false });
    assert_eq!(g.status("node-2"), Some(Status::Alive));
    // And one about node-0 itself: it does not wrap its own heartbeat.
    g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-1".into(), members: vec![Digest { node: node(0), generation: 1, heartbeat: u64::MAX, left: true }], reply: false });
    g.tick(20);
    let me = g.members();
    assert!(me.iter().all(|(n, _)| n.id != "node-0"));
}

#[test]
fn invented_members_are_bounded_per_message_and_forgotten() {
    let mut g = victim_setup();
    for m in 0..10u32 {
        let members: Vec<Digest> = (0..8192).map(|i| digest(1000 + m * 8192 + i, 1, false)).collect();
        g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-1".into(), members, reply: false });
    }
    let n = g.member_count();
    println!("ten StateSyncs of 8192 invented members: {n} members kept");
    assert!(n <= 2 + 10 * MAX_NEW_MEMBERS_PER_MESSAGE, "{n} members");
    // Nobody heartbeats for them: dead, then removed after twice the forget time.
    let mut t = 10;
    while t < 10 + 5000 {
        t += 100;
        g.tick(t);
        // The two real members keep heartbeating.
        for i in [1, 2] {
            g.handle_from(t, Some(&format!("node-{i}")), Message::StateSync { from: format!("node-{i}"), members: vec![digest(i, t, false)], reply: false });
        }
    }
    assert_eq!(g.member_count(), 2, "invented members forgotten");
    assert_eq!(g.status("node-2"), Some(Status::Alive));
}

#[test]
fn one_member_announcing_without_end_gets_a_bounded_share_of_the_index() {
    let mut g = victim_setup();
    // node-1 announces, for itself, 16,384 more chunk ids than the bound.
    let total = MAX_INDEXED_PER_MEMBER + 4 * MAX_CHUNKS_PER_MESSAGE;
    let ids: Vec<ChunkId> = (0..total as u64)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_le_bytes());
            ChunkId::from_bytes(b)
        })
        .collect();
    for part in ids.chunks(MAX_CHUNKS_PER_MESSAGE) {
        g.handle_from(10, Some("node-1"), Message::ChunkAnnounce { from: "node-1".into(), chunks: part.to_vec() });
    }
    let n = g.index_len();
    println!("{total} chunks announced by one member: {n} indexed");
    assert_eq!(n, MAX_INDEXED_PER_MEMBER);
    assert!(g.refused() > 0);
    // Another member still gets its chunks indexed.
    g.handle_from(10, Some("node-2"), Message::ChunkAnnounce { from: "node-2".into(), chunks: vec![ChunkId::from_bytes([7; 32])] });
    assert_eq!(g.index_len(), MAX_INDEXED_PER_MEMBER + 1);
}
