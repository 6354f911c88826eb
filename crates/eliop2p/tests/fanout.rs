//! The swarm on a capped network, at the small scale CI affords: hosts in network
//! namespaces with `tc`-limited NICs (`eliop2p_testkit::netbed`), one `eliop2p
//! node` process per host, every client reading one cold object at once. Checks
//! what must hold on any network: every body byte-exact, the origin read about
//! once, and the same when the node that read the most from the origin dies
//! mid-distribution, and a node that may not own chunks reads none from the
//! origin. Timings are the bench's business (`eliop2p-bench fanout`).
//!
//! Needs root and iproute2; `.ci/run` sets `ELIOP2P_TEST_NETNS=1`, which makes a
//! missing capability a failure instead of a skip.

use std::time::Duration;

use eliop2p_testkit::fanout::{self, Mode, Spec};
use eliop2p_testkit::netbed::{self, Link};

fn spec(mode: Mode, kill: Option<f64>) -> Option<Spec> {
    if !netbed::available_or_skip("the network bed") {
        return None;
    }
    Some(Spec {
        bin: env!("CARGO_BIN_EXE_eliop2p").into(),
        nodes: 4,
        node_link: Link::mbit(100),
        origin_link: Link::mbit(100),
        object_size: 32 << 20,
        mode,
        first_byte: Duration::from_millis(20),
        stream_rate: 0,
        kill_owner_at: kill,
        direct: false,
        node_env: vec![("ELIOP2P_CACHE_CHUNK_SIZE".into(), "4MiB".into())],
        slow: None,
        slow_not_owners: false,
        check: fanout::BodyCheck::Sha256,
    })
}

fn check(spec: &Spec, r: &fanout::Report, max_origin: f64) {
    eprintln!("{}\n{}", fanout::SUMMARY_HEADER, fanout::summary(spec, r));
    eprintln!("pieces into prefaulted buffers per surviving node: {:?}", r.pooled_pieces);
    assert_eq!(r.bad_bodies, 0, "clients with wrong or short bodies: {:?}", r.errors);
    let survivors = spec.nodes - usize::from(r.killed.is_some());
    assert_eq!(r.finish.iter().flatten().count(), survivors, "{:?}", r.errors);
    let ratio = r.origin_bytes as f64 / spec.object_size as f64;
    assert!(ratio <= max_origin, "origin sent {ratio:.3}x the object");
    // Every piece went into memory the node had faulted in before the clients
    // started: the bed times the network, not this machine's page faults. After
    // a kill too: the node that takes a chunk over reads its holes in ranged
    // GETs, whose pieces went into new memory until the range reader took the
    // pool's buffers (one CI run pooled [138, 144, 118] pieces of 128).
    let pieces = spec.object_size as u64 / eliop2p_cache::PIECE_SIZE;
    assert!(r.pooled_pieces.iter().all(|&n| n >= pieces), "pieces into prefaulted buffers {:?}, want {pieces} each", r.pooled_pieces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_swarm_reads_the_origin_once_and_every_body_is_exact() {
    let Some(spec) = spec(Mode::Gossip, None) else { return };
    let r = fanout::run(&spec).await.unwrap();
    check(&spec, &r, 1.05);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_swarm_with_a_control_plane() {
    let Some(spec) = spec(Mode::Hybrid, None) else { return };
    let r = fanout::run(&spec).await.unwrap();
    check(&spec, &r, 1.05);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_busiest_origin_reader_mid_distribution_loses_no_byte() {
    let Some(spec) = spec(Mode::Gossip, Some(0.3)) else { return };
    let r = fanout::run(&spec).await.unwrap();
    assert!(r.killed.is_some());
    check(&spec, &r, 1.5);
}

/// A node with `node.owner = false`, here on a NIC a quarter as fast as the
/// others', reads nothing from the origin: the other nodes own every chunk (with
/// the node ids the bed uses, this node owns some of the 8 chunks otherwise).
/// Every body is exact, the slow node's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_may_not_own_chunks_reads_nothing_from_the_origin() {
    let Some(mut spec) = spec(Mode::Gossip, None) else { return };
    spec.slow = Some((1, 25_000_000));
    spec.slow_not_owners = true;
    let r = fanout::run(&spec).await.unwrap();
    eprintln!("{}\n{}", fanout::SUMMARY_HEADER, fanout::summary(&spec, &r));
    assert_eq!(r.bad_bodies, 0, "clients with wrong or short bodies: {:?}", r.errors);
    let finished = r.finish.iter().chain(&r.slow_finish).flatten().count();
    assert_eq!(finished, spec.nodes, "{:?}", r.errors);
    assert_eq!(r.filled[0], 0, "the node that may not own read from the origin; bytes each node read: {:?}", r.filled);
    let ratio = r.origin_bytes as f64 / spec.object_size as f64;
    assert!(ratio <= 1.05, "origin sent {ratio:.3}x the object");
}
