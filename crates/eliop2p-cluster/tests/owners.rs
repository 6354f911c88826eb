//! Nodes that may not own chunks (`NodeInfo::owner` false, `node.owner`): every
//! node ranks them after every node that may, so they own a chunk only when no
//! live node may; the field travels in the members' JSON only when false.

use std::net::SocketAddr;

use eliop2p_cluster::gossip::Digest;
use eliop2p_cluster::{Gossip, GossipConfig, Message, NodeInfo, Status};
use eliop2p_core::ChunkId;

fn node(i: u32, owner: bool) -> NodeInfo {
    NodeInfo {
        id: format!("node-{i}"),
        p2p: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 9000)),
        proxy: None,
        zone: String::new(),
        owner,
    }
}

/// A gossip view of node 0 that knows `members` (all alive).
fn cluster(me: NodeInfo, members: &[NodeInfo]) -> Gossip {
    let mut g = Gossip::new(me, 1, vec![], GossipConfig::default());
    for n in members {
        let d = Digest { node: n.clone().into(), generation: 1, incarnation: 1, status: Status::Alive };
        g.handle_from(0, Some(&n.id), Message::NodeJoin(d));
    }
    g
}

fn chunk(i: u64) -> ChunkId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    ChunkId::from_bytes(b)
}

#[test]
fn nodes_that_may_not_own_are_passed_over_as_if_absent() {
    // Nodes 1-5 (slow NICs) may not own; node 0 (this one) and 6-19 may.
    let all: Vec<NodeInfo> = (1..20).map(|i| node(i, !(1..=5).contains(&i))).collect();
    let g = cluster(node(0, true), &all);
    let owners_only: Vec<NodeInfo> = all.iter().filter(|n| n.owner).cloned().collect();
    let without = cluster(node(0, true), &owners_only);
    for c in (0..500).map(chunk) {
        let ids = |v: Vec<NodeInfo>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
        // Owner and backups as if the slow nodes were not members at all.
        assert_eq!(ids(g.owners(&c, 3)), ids(without.owners(&c, 3)), "chunk {c:?}");
        // Past every node that may own, the others follow.
        let ranked = g.owners(&c, 20);
        assert_eq!(ranked.len(), 20);
        assert!(ranked[..15].iter().all(|n| n.owner) && ranked[15..].iter().all(|n| !n.owner));
    }
}

#[test]
fn with_no_node_that_may_own_the_others_still_own() {
    let g = cluster(node(0, false), &[node(1, false), node(2, false)]);
    for c in (0..50).map(chunk) {
        let o = g.owners(&c, 1);
        assert_eq!(o.len(), 1, "a chunk always has an owner");
    }
    // And the chunks spread over them as plain rendezvous hashing spreads them.
    let firsts: std::collections::HashSet<String> = (0..50).map(|c| g.owners(&chunk(c), 1)[0].id.clone()).collect();
    assert_eq!(firsts.len(), 3);
}

#[test]
fn the_owner_field_travels_only_when_false() {
    let json = serde_json::to_string(&node(1, true)).unwrap();
    assert!(!json.contains("owner"), "{json}");
    let json = serde_json::to_string(&node(1, false)).unwrap();
    assert!(json.contains("\"owner\":false"), "{json}");
    assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), node(1, false));
    // A node that predates the field may own chunks.
    let old = r#"{"id":"node-1","p2p":"10.0.0.1:9000"}"#;
    assert!(serde_json::from_str::<NodeInfo>(old).unwrap().owner);
}
