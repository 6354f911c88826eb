//! Tests of the piece scheduler.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn cfg() -> SchedConfig {
    SchedConfig::new(1 << 20, Duration::from_secs(5))
}

#[test]
fn seed_asked_only_for_what_the_swarm_lacks() {
    let mut c = cfg();
    c.per_peer = 4;
    c.total = 8;
    let mut s = Scheduler::new(8 << 20, c, 1, Duration::ZERO);
    s.set_peer(0u8, Source::Complete, &[], Duration::ZERO);
    let mut half = vec![false; 8];
    half[..4].iter_mut().for_each(|h| *h = true);
    s.set_peer(1u8, Source::Swarm, &half, Duration::ZERO);
    let a = s.poll(Duration::ZERO);
    for (p, pieces) in &a.requests {
        for x in pieces {
            if *p == 0 {
                assert!(*x >= 4, "seed asked for piece {x} the swarm has");
            } else {
                assert!(*x < 4);
            }
        }
    }
    let asked: usize = a.requests.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(asked, 8);
}

/// Three pieces a peer, asked in one request; eight in flight.
fn seed_cfg() -> SchedConfig {
    let mut c = cfg();
    c.per_peer = 3;
    c.batch = 3;
    c.total = 8;
    c
}

/// A seed filling from the origin receives pieces in order: asked for random
/// rare pieces, it would hold our requests (and awaits) for pieces seconds
/// away while the swarm could serve others; it is asked in its fill order.
#[test]
fn origin_filling_seed_is_asked_in_fill_order() {
    let c = seed_cfg();
    for seed in 1..20 {
        let mut s = Scheduler::new(16 << 20, c.clone(), seed, Duration::ZERO);
        s.mark_have(0);
        s.set_peer(0u8, Source::Origin, &[], Duration::ZERO);
        // A swarm peer has pieces 1 and 5: the seed is not asked for them.
        let mut some = vec![false; 16];
        some[1] = true;
        some[5] = true;
        s.set_peer(1u8, Source::Swarm, &some, Duration::ZERO);
        let a = s.poll(Duration::ZERO);
        let of = |p: u8| a.requests.iter().find(|(q, _)| *q == p).map(|(_, v)| v.clone());
        assert_eq!(of(0), Some(vec![2, 3, 4]), "seed {seed}: the next pieces of the fill");
        let mut swarm = of(1).expect("the swarm peer is asked");
        swarm.sort_unstable();
        assert_eq!(swarm, vec![1, 5]);
    }
}

/// A seed filling from the origin whose bitmap shows its filled pieces is asked
/// for those first, rarest first with ties at random, so that downloaders spread
/// over what it has instead of all asking for its next pieces; it is followed with
/// a standing query, like a swarm peer.
#[test]
fn origin_filling_seed_is_asked_first_for_what_it_has() {
    let c = seed_cfg();
    let mut firsts = std::collections::BTreeSet::new();
    for k in 1..20u64 {
        // Seeds as nodes draw them (xorshift from a small seed starts in order).
        let seed = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut s = Scheduler::new(16 << 20, c.clone(), seed, Duration::ZERO);
        let filled: Vec<bool> = (0..16).map(|i| i < 10).collect();
        s.set_peer(0u8, Source::Origin, &filled, Duration::ZERO);
        let a = s.poll(Duration::ZERO);
        let asked = &a.requests[0].1;
        assert_eq!(asked.len(), 3);
        assert!(asked.iter().all(|&i| i < 10), "seed {seed}: {asked:?} beyond the fill");
        firsts.insert(asked[0]);
        assert_eq!(a.refresh, vec![0], "a standing query follows the fill");
    }
    assert!(firsts.len() >= 5, "downloaders spread over the filled pieces: {firsts:?}");
}

#[test]
fn slow_peer_gets_a_duplicate_not_a_failure() {
    let mut s = Scheduler::new(2 << 20, cfg(), 7, Duration::ZERO);
    s.set_peer(0u8, Source::Complete, &[], Duration::ZERO);
    let a = s.poll(Duration::ZERO);
    assert_eq!(a.requests, vec![(0, vec![0, 1])]);
    s.set_peer(1u8, Source::Complete, &[], Duration::ZERO);
    // Nothing yet at the deadline: a copy goes to peer 1; peer 0 is not dropped.
    let a = s.poll(400 * MS);
    assert!(a.cancels.is_empty());
    assert!(a.requests.iter().any(|(p, _)| *p == 1));
    assert!(s.on_piece(1, 0, 450 * MS));
    assert!(!s.on_piece(0, 0, 500 * MS), "a duplicate is not new");
    assert!(s.on_piece(0, 1, 520 * MS));
    assert!(s.done());
}

#[test]
fn silent_peer_is_dropped_after_stall_and_its_pieces_move() {
    let mut s = Scheduler::new(1 << 20, cfg(), 3, Duration::ZERO);
    s.set_peer(0u8, Source::Complete, &[], Duration::ZERO);
    assert_eq!(s.poll(Duration::ZERO).requests, vec![(0, vec![0])]);
    let a = s.poll(Duration::from_secs(5));
    assert_eq!(a.cancels, vec![(0, vec![0])]);
    s.set_peer(1u8, Source::Complete, &[], Duration::from_secs(5));
    let a = s.poll(Duration::from_secs(5));
    assert_eq!(a.requests, vec![(1, vec![0])]);
}

#[test]
fn busy_pauses_and_missing_forgets() {
    let mut s = Scheduler::new(2 << 20, cfg(), 5, Duration::ZERO);
    s.set_peer(0u8, Source::Swarm, &[true, true], Duration::ZERO);
    let a = s.poll(Duration::ZERO);
    assert_eq!(a.requests, vec![(0, vec![0, 1])]);
    s.on_failure(0, 0, Failure::Busy, MS);
    s.on_failure(0, 1, Failure::Missing, MS);
    assert!(s.poll(2 * MS).requests.is_empty(), "paused while busy");
    let a = s.poll(100 * MS);
    assert_eq!(a.requests, vec![(0, vec![0])], "piece 1 is no longer believed there");
    assert_eq!(s.unsourced(), 1);
}

#[test]
fn deferred_piece_waits_for_the_swarm_then_returns_to_the_seed() {
    let mut s = Scheduler::new(1 << 20, cfg(), 5, Duration::ZERO);
    s.set_peer(0u8, Source::Origin, &[], Duration::ZERO);
    assert_eq!(s.poll(Duration::ZERO).requests, vec![(0, vec![0])]);
    s.on_failure(0, 0, Failure::Deferred, MS);
    assert!(s.poll(2 * MS).requests.is_empty());
    s.set_peer(1u8, Source::Swarm, &[true], 10 * MS);
    assert_eq!(s.poll(10 * MS).requests, vec![(1, vec![0])]);
    s.on_failure(1, 0, Failure::Missing, 20 * MS);
    assert!(s.poll(30 * MS).requests.is_empty());
    assert_eq!(s.poll(200 * MS).requests, vec![(0, vec![0])], "back to the seed");
}

#[test]
fn swarm_bitmaps_are_polled_without_watch() {
    let mut c = cfg();
    c.watch = false;
    let mut s = Scheduler::new(2 << 20, c, 5, Duration::ZERO);
    s.set_peer(0u8, Source::Swarm, &[false, false], Duration::ZERO);
    assert!(s.poll(Duration::ZERO).refresh.is_empty());
    assert_eq!(s.poll(30 * MS).refresh, vec![0]);
    s.set_peer(0u8, Source::Swarm, &[false, true], 30 * MS);
    assert_eq!(s.poll(31 * MS).requests, vec![(0, vec![1])]);
}

#[test]
fn swarm_peers_get_one_standing_query_each() {
    let mut s = Scheduler::new(2 << 20, cfg(), 5, Duration::ZERO);
    s.set_peer(0u8, Source::Swarm, &[false, false], Duration::ZERO);
    s.set_peer(1u8, Source::Complete, &[], Duration::ZERO);
    let a = s.poll(Duration::ZERO);
    assert_eq!(a.refresh, vec![0], "a watch goes out at once, to swarm peers only");
    assert!(s.poll(30 * MS).refresh.is_empty(), "one standing query, no polls");
    assert!(s.poll(3000 * MS).refresh.is_empty());
    assert_eq!(s.known(&0), 0);
    // The answer (the peer got piece 1) ends the query; the next poll renews it.
    s.set_peer(0u8, Source::Swarm, &[false, true], 40 * MS);
    assert_eq!(s.known(&0), 1);
    assert_eq!(s.poll(41 * MS).refresh, vec![0]);
    // Nothing due: the download sleeps until something answers, not 25 ms.
    let mut idle = Scheduler::new(1 << 20, cfg(), 5, Duration::ZERO);
    idle.set_peer(0u8, Source::Swarm, &[false], Duration::ZERO);
    let _ = idle.poll(Duration::ZERO);
    assert!(idle.next_wake(Duration::ZERO) >= 100 * MS);
}

/// A peer that leaves takes its pieces with it; the peer moved into its place
/// in the table keeps its own state, lists and answers (the debug build's
/// `check_lists` checks every list at each poll).
#[test]
fn a_removed_peer_leaves_the_others_whole() {
    let mut c = cfg();
    c.per_peer = 2;
    c.batch = 2;
    c.total = 6;
    let mut s = Scheduler::new(8 << 20, c, 3, Duration::ZERO);
    let bits = |set: &[usize]| (0..8).map(|i| set.contains(&i)).collect::<Vec<_>>();
    s.set_peer(10u8, Source::Swarm, &bits(&[0, 1, 2]), Duration::ZERO);
    s.set_peer(20u8, Source::Swarm, &bits(&[3, 4]), Duration::ZERO);
    s.set_peer(30u8, Source::Swarm, &bits(&[5, 6, 7]), Duration::ZERO);
    let a = s.poll(Duration::ZERO);
    assert_eq!(a.requests.len(), 3, "{a:?}");
    assert_eq!(s.inflight(), 6);
    // The first peer leaves; the last one takes its place in the table.
    s.remove_peer(&10);
    assert!(!s.knows(&10));
    assert_eq!((s.known(&20), s.known(&30)), (2, 3));
    assert_eq!(s.inflight(), 4);
    let of = |a: &Actions<u8>, p: u8| a.requests.iter().find(|(q, _)| *q == p).map(|(_, v)| v.clone());
    let asked_30 = of(&a, 30).expect("30 asked");
    assert!(s.on_piece(30, asked_30[0], 10 * MS));
    s.on_failure(20, of(&a, 20).expect("20 asked")[0], Failure::Busy, 10 * MS);
    // Nobody else has pieces 0-2: nothing goes to the peer that left.
    let b = s.poll(10 * MS);
    assert!(b.requests.iter().all(|(p, _)| *p == 30), "{b:?}");
    assert_eq!(s.unsourced_pieces(), vec![0, 1, 2]);
    // It comes back with them: asked again.
    s.set_peer(10u8, Source::Swarm, &bits(&[0, 1, 2]), 20 * MS);
    let c = s.poll(20 * MS);
    assert!(of(&c, 10).is_some_and(|v| v.iter().all(|x| *x <= 2)), "{c:?}");
    assert!(s.unsourced_pieces().is_empty());
}

/// What the simulator asks before it tells a download of a peer's new piece
/// or polls it: news of a piece is of use only when a poll could ask that
/// peer for it, and what peers have is of no use while the budget is full.
#[test]
fn news_of_a_piece_is_of_use_only_when_a_poll_could_ask_for_it() {
    let mut c = cfg();
    c.per_peer = 2;
    c.batch = 2;
    c.total = 3;
    let mut s = Scheduler::new(8 << 20, c, 1, Duration::ZERO);
    let mut first = vec![false; 8];
    first[..2].iter_mut().for_each(|h| *h = true);
    s.set_peer(0u8, Source::Swarm, &first, Duration::ZERO);
    s.set_peer(1u8, Source::Swarm, &[], Duration::ZERO);
    assert!(s.may_ask(Duration::ZERO));
    // Peer 1 has room and piece 5 is lacked by all: of use.
    assert!(s.could_ask(&1, 5, Duration::ZERO));
    // Not of an unknown peer.
    assert!(!s.could_ask(&7, 5, Duration::ZERO));
    let a = s.poll(Duration::ZERO);
    assert_eq!(a.requests, vec![(0u8, vec![0, 1])]);
    // Pieces 0 and 1 are being fetched: a second source of them is no news.
    assert!(!s.could_ask(&1, 0, MS));
    // Peer 0 has no room left for a request.
    assert!(!s.could_ask(&0, 5, MS));
    // Peer 1 is busy: paused, so of no use until the pause ends.
    s.set_peer(1u8, Source::Swarm, &[false, false, true], MS);
    let a = s.poll(MS);
    assert_eq!(a.requests, vec![(1u8, vec![2])]);
    s.on_failure(1, 2, Failure::Busy, 2 * MS);
    assert!(!s.could_ask(&1, 5, 3 * MS));
    assert!(s.could_ask(&1, 5, 2 * MS + cfg().busy_pause * 2));
    // A piece already here is no news.
    s.on_piece(0, 0, 4 * MS);
    assert!(!s.could_ask(&1, 0, Duration::from_secs(1)));
    // The budget full (three asked), no bitmap changes what a poll asks.
    let mut s = Scheduler::new(8 << 20, seed_cfg(), 1, Duration::ZERO);
    s.set_total(3);
    s.set_peer(0u8, Source::Swarm, &[true; 3], Duration::ZERO);
    assert_eq!(s.poll(Duration::ZERO).requests, vec![(0u8, vec![0, 1, 2])]);
    assert!(!s.may_ask(MS));
    assert!(!s.could_ask(&0, 5, MS));
    s.set_peer(1u8, Source::Swarm, &[true; 8], MS);
    assert!(s.poll(MS).requests.is_empty());
    // Room again once a piece arrives.
    s.on_piece(0, 0, 2 * MS);
    assert!(s.may_ask(2 * MS));
    assert!(s.could_ask(&1, 5, 2 * MS));
}

/// A standing query's news set: the pieces we lack that the peer is not known
/// to have (pieces in flight count as lacked: an overdue one may be asked of a
/// second holder).
#[test]
fn news_from_a_peer_is_what_we_lack_and_it_may_gain() {
    let mut s = Scheduler::new(4 << 20, cfg(), 1, Duration::ZERO);
    s.mark_have(0);
    s.set_peer(1u8, Source::Swarm, &[false, true, false, false], Duration::ZERO);
    assert_eq!(s.news_from(&1), vec![false, false, true, true]);
    assert_eq!(s.news_from(&2), vec![false, true, true, true], "an unknown peer: all we lack");
    let a = s.poll(Duration::ZERO);
    assert_eq!(a.requests, vec![(1u8, vec![1])], "piece 1 is asked of peer 1");
    assert_eq!(s.news_from(&2), vec![false, true, true, true], "piece 1, in flight, is still news");
    assert!(s.on_piece(1, 1, MS));
    assert_eq!(s.news_from(&2), vec![false, false, true, true]);
}
