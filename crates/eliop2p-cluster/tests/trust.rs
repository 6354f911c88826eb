//! What one authenticated member can make another believe (issue 15): a node
//! speaks for itself, invented members are bounded and forgotten, no
//! incarnation outbids its node for good, a false death is refuted, and a PingReq
//! does not make a node contact addresses it does not know.

use std::net::SocketAddr;

use eliop2p_cluster::gossip::{Digest, MAX_CHUNKS_PER_MESSAGE, MAX_INCARNATION_STEP, MAX_INDEXED_PER_MEMBER, MAX_NEW_MEMBERS_PER_MESSAGE};
use eliop2p_core::ChunkId;
use eliop2p_cluster::{Gossip, GossipConfig, Message, NodeInfo, Out, Status};

fn node(i: u32) -> NodeInfo {
    NodeInfo {
        id: format!("node-{i}"),
        p2p: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000)),
        proxy: None,
        zone: String::new(),
        owner: true,
    }
}

fn digest(i: u32, incarnation: u64, left: bool) -> Digest {
    Digest { node: node(i).into(), generation: 1, incarnation, status: if left { Status::Left } else { Status::Alive } }
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
fn an_incarnation_beyond_any_real_one_is_dropped() {
    let mut g = victim_setup();
    // Third-party gossip marking node-2 left with an unbeatable incarnation, or one
    // raised far beyond what refutations do.
    g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-1".into(), members: vec![digest(2, u64::MAX, true)], reply: false });
    g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-1".into(), members: vec![digest(2, 5 + MAX_INCARNATION_STEP + 1, true)], reply: false });
    assert_eq!(g.status("node-2"), Some(Status::Alive));
    // And one about node-0 itself: it does not wrap or exhaust its incarnation.
    g.handle_from(10, Some("node-1"), Message::StateSync { from: "node-1".into(), members: vec![Digest { node: node(0).into(), generation: 1, incarnation: u64::MAX, status: Status::Dead }], reply: false });
    assert_eq!(g.incarnation(), 0);
    g.tick(20);
    assert!(g.members().iter().all(|(n, _)| n.id != "node-0"));
    // A suspicion of node-0 at its incarnation is refuted by raising it.
    g.handle_from(30, Some("node-1"), Message::Updates { from: digest(1, 5, false), updates: vec![Digest { status: Status::Suspect, ..digest(0, 0, false) }] });
    assert_eq!(g.incarnation(), 1);
}

/// Answers node-0's pings to node-1 and node-2 (the real members) as they would.
fn answer_real_members(g: &mut Gossip, t: u64, outs: Vec<eliop2p_cluster::Out>) {
    for o in outs {
        if let Message::Ping { seq, .. } = o.msg {
            for i in [1, 2] {
                if o.to == node(i).p2p {
                    g.handle_from(t, Some(&format!("node-{i}")), Message::Ack { from: digest(i, 5, false), seq, members: 2, updates: vec![] });
                }
            }
        }
    }
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
    // Nobody answers for them: each is probed once in the next cycle, suspected,
    // declared dead and removed after twice the forget time. The real members
    // answer every probe and stay alive.
    let mut t = 10;
    while t < 10 + 100_000 {
        t += 100;
        let outs = g.tick(t);
        answer_real_members(&mut g, t, outs);
        if g.member_count() == 2 {
            break;
        }
    }
    println!("invented members forgotten after {} s", (t - 10) / 1000);
    assert_eq!(g.member_count(), 2, "invented members forgotten");
    assert_eq!(g.status("node-2"), Some(Status::Alive));
    assert_eq!(g.status("node-1"), Some(Status::Alive));
}

#[test]
fn a_member_declared_dead_by_another_refutes_it() {
    // node-0 and node-2 are real state machines; node-1 lies that node-2 is dead.
    let mut a = victim_setup();
    let mut b = Gossip::new(node(2), 1, vec![], cfg());
    b.handle_from(0, Some("node-0"), Message::NodeJoin(digest(0, 0, false)));
    a.handle_from(10, Some("node-1"), Message::Updates { from: digest(1, 5, false), updates: vec![Digest { status: Status::Dead, ..digest(2, 5, false) }] });
    assert_eq!(a.status("node-2"), Some(Status::Dead));
    // node-2 probes node-0; the ack tells it it is held dead; it refutes, and its
    // next message brings it back.
    let mut t = 100;
    for _ in 0..20 {
        t += 100;
        let mut queue: Vec<(bool, eliop2p_cluster::Out)> = b.tick(t).into_iter().map(|o| (true, o)).collect();
        queue.extend(a.tick(t).into_iter().map(|o| (false, o)));
        while let Some((from_b, o)) = queue.pop() {
            let outs = if from_b && o.to == node(0).p2p {
                a.handle_from(t, Some("node-2"), o.msg)
            } else if !from_b && o.to == node(2).p2p {
                b.handle_from(t, Some("node-0"), o.msg)
            } else {
                continue;
            };
            queue.extend(outs.into_iter().map(|x| (!from_b, x)));
        }
        if a.status("node-2") == Some(Status::Alive) {
            break;
        }
    }
    assert!(b.incarnation() > 5, "node-2 refuted (incarnation {})", b.incarnation());
    assert_eq!(a.status("node-2"), Some(Status::Alive));
}

#[test]
fn a_ping_req_reaches_only_a_known_member_at_its_known_address() {
    let mut g = victim_setup();
    let target = NodeInfo { p2p: "192.0.2.7:9000".parse().unwrap(), ..node(2) };
    let outs = g.handle_from(10, Some("node-1"), Message::PingReq { from: digest(1, 5, false), seq: 1, target, updates: vec![] });
    assert!(outs.is_empty(), "{outs:?}");
    let outs = g.handle_from(10, Some("node-1"), Message::PingReq { from: digest(1, 5, false), seq: 2, target: node(77), updates: vec![] });
    assert!(outs.is_empty(), "{outs:?}");
    // The known member at its address is probed, and its ack relayed to the asker.
    let outs = g.handle_from(10, Some("node-1"), Message::PingReq { from: digest(1, 5, false), seq: 3, target: node(2), updates: vec![] });
    let [o] = &outs[..] else { panic!("{outs:?}") };
    assert_eq!(o.to, node(2).p2p);
    let Message::Ping { seq, .. } = o.msg else { panic!("{o:?}") };
    let relayed = g.handle_from(11, Some("node-2"), Message::Ack { from: digest(2, 5, false), seq, members: 2, updates: vec![] });
    let [r] = &relayed[..] else { panic!("{relayed:?}") };
    assert_eq!(r.to, node(1).p2p);
    assert!(matches!(r.msg, Message::Ack { seq: 3, .. }), "{r:?}");
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

/// A table of thousands of members with long ids (Kubernetes pod names, zones)
/// goes out in pages that each fit a frame (1 MiB), and a joining node that asked
/// for it takes every page whole, not only the first 64 members of the later ones.
#[test]
fn a_large_table_fits_the_wire_in_pages_and_a_joiner_takes_all_of_it() {
    let long = |i: u32| NodeInfo {
        id: format!("eliop2p-node-7f9c8d6b5d-{i:06}-{}", "x".repeat(32)),
        p2p: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000)),
        proxy: Some(SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080))),
        zone: format!("cn-hangzhou-{}-zone", i % 8),
        owner: true,
    };
    let n = 6_000u32;
    let mut seed = Gossip::new(long(0), 1, vec![], cfg());
    let table: Vec<Digest> = (1..n).map(|i| Digest { node: long(i).into(), generation: 1, incarnation: 0, status: Status::Alive }).collect();
    seed.merge_table(0, &table);
    assert_eq!(seed.live_count(), n as usize - 1);

    let mut joiner = Gossip::new(long(n), 1, vec![long(0).p2p], cfg());
    let join = joiner.tick(100);
    assert!(matches!(join[..], [Out { msg: Message::NodeJoin(_), .. }]), "{join:?}");
    let pages = seed.handle_from(100, Some(&long(n).id), join[0].msg.clone());
    assert!(pages.len() >= 2, "{} members in {} message(s)", n, pages.len());
    let mut bytes = 0;
    for p in &pages {
        let payload = p.msg.payload();
        assert!(payload.len() <= 1 << 20, "a StateSync of {} bytes does not fit a frame", payload.len());
        bytes += payload.len();
        let m = Message::decode(p.msg.message_type(), &payload).expect("decodes");
        joiner.handle_from(150, Some(&long(0).id), m);
    }
    assert!(bytes > 1 << 20, "the whole table ({bytes} bytes) would not fit one frame");
    assert_eq!(joiner.live_count(), n as usize, "the joiner knows every member");
}
