//! Two nodes downloading the same chunk from each other at once, each holding
//! pieces the other lacks: both fills are fed by peers, so each offers exactly
//! what it has and awaits nothing, and both complete (no wait cycle).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use eliop2p_cache::{CacheConfig, ChunkCache, FillWriter, Lookup, PIECE_SIZE};
use eliop2p_core::ChunkId;
use eliop2p_p2p::{P2pConfig, P2pHandle, spawn_p2p};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

async fn node(name: &str, l: TcpListener, peer: SocketAddr) -> (P2pHandle, ChunkCache) {
    let cache = ChunkCache::open(CacheConfig::memory_only(64 << 20, 16 << 20)).await;
    let mut cfg = P2pConfig::new(name);
    cfg.cluster_secret = Some(b"swarm-test".to_vec());
    cfg.static_peers = vec![peer];
    cfg.piece_timeout = Duration::from_secs(2);
    let h = spawn_p2p(cfg, l, cache.clone(), CancellationToken::new(), &TaskTracker::new(), Default::default()).unwrap();
    (h, cache)
}

/// Two nodes, each the other's static peer.
async fn pair() -> ((P2pHandle, ChunkCache), (P2pHandle, ChunkCache)) {
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    (node("a", la, ab).await, node("b", lb, aa).await)
}

fn leader(cache: &ChunkCache, id: ChunkId, len: u64) -> FillWriter {
    match cache.lookup(id, len) {
        Lookup::Leader(w) => w,
        _ => panic!("a fresh cache leads the fill"),
    }
}

fn piece(data: &Bytes, i: u32) -> (Bytes, [u8; 32]) {
    let start = i as usize * PIECE_SIZE as usize;
    let b = data.slice(start..(start + PIECE_SIZE as usize).min(data.len()));
    let h = Sha256::digest(&b).into();
    (b, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peer_fed_fills_complete_from_each_other() {
    let ((a, cache_a), (b, cache_b)) = pair().await;
    let len = 5 * PIECE_SIZE - 1234;
    let data: Bytes = (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into();
    let id = ChunkId::from_bytes([7; 32]);
    let mut wa = leader(&cache_a, id, len);
    let mut wb = leader(&cache_b, id, len);
    wa.fill().set_from_peer(true);
    wb.fill().set_from_peer(true);
    // a has pieces 0, 2, 4; b has 1 and 3: neither can finish alone.
    for i in [4, 0, 2] {
        let (p, h) = piece(&data, i);
        wa.put_piece(i, p, h).unwrap();
    }
    for i in [3, 1] {
        let (p, h) = piece(&data, i);
        wb.put_piece(i, p, h).unwrap();
    }
    assert_eq!(wa.fill().have_pieces(), [true, false, true, false, true]);
    assert_eq!(wa.received(), PIECE_SIZE, "only the prefix is published");
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(
            a.download(id, len, &mut wa, None, None),
            b.download(id, len, &mut wb, None, None)
        )
    })
    .await
    .expect("the two downloads must not wait on each other");
    ra.expect("a completes");
    rb.expect("b completes");
    for w in [wa, wb] {
        let chunk = w.finish().unwrap();
        let got: Vec<u8> = chunk.data.slices(0, len).flat_map(|b| b.to_vec()).collect();
        assert_eq!(Sha256::digest(&got), Sha256::digest(&data), "byte-exact");
    }
    assert_eq!(a.stats().pieces_down.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(b.stats().pieces_down.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// A downloader learns of a swarm peer's new pieces through one standing query
/// that the peer answers when a piece arrives (a have-announcement), not by
/// polling it: the peer sends a bitmap per piece it gains, not one per 25 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pieces_of_a_swarm_peer_are_announced_not_polled() {
    announced_not_polled(true).await;
}

/// The same for a peer filling the chunk from the origin: the downloader follows
/// the fill through a standing query, so it asks first for the pieces the seed
/// has (before, it knew only that every piece would come, and every downloader
/// asked the seed for the same next pieces, leaving the rest at one copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pieces_of_an_origin_fill_are_announced_not_polled() {
    announced_not_polled(false).await;
}

async fn announced_not_polled(b_from_peers: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    let ((a, cache_a), (b, cache_b)) = pair().await;
    let len = 4 * PIECE_SIZE;
    let data: Bytes = (0..len).map(|i| (i * 7 % 253) as u8).collect::<Vec<u8>>().into();
    let id = ChunkId::from_bytes([9; 32]);
    let wa = leader(&cache_a, id, len);
    let wb = leader(&cache_b, id, len);
    wa.fill().set_from_peer(true);
    wb.fill().set_from_peer(b_from_peers);
    // b gains a piece every 300 ms while a downloads from it.
    download_while_b_gains(&a, wa, wb, &data, id, Duration::from_millis(300)).await;
    let sent = b.stats().bitmaps_sent.load(Relaxed);
    let watched = b.stats().bitmaps_watched.load(Relaxed);
    // ~900 ms of download: polling every 25-50 ms would have cost 18-36 bitmaps.
    assert!(watched >= 3, "each new piece answered a standing query ({watched} of {sent})");
    assert!(sent <= 10, "{sent} bitmaps for 3 new pieces: b was polled");
    drop(a);
}

/// b holds piece 0 and gains pieces 1, 2 and 3, one every `every`, while a
/// downloads the chunk from it (`wa`: a's fill, `wb`: b's); a's chunk is then
/// checked byte-exact against `data`.
async fn download_while_b_gains(a: &P2pHandle, mut wa: FillWriter, mut wb: FillWriter, data: &Bytes, id: ChunkId, every: Duration) {
    let len = data.len() as u64;
    let (p, h) = piece(data, 0);
    wb.put_piece(0, p, h).unwrap();
    let feeder = {
        let data = data.clone();
        tokio::spawn(async move {
            for i in 1..4 {
                tokio::time::sleep(every).await;
                let (p, h) = piece(&data, i);
                wb.put_piece(i, p, h).unwrap();
            }
            wb
        })
    };
    let got = tokio::time::timeout(Duration::from_secs(20), a.download(id, len, &mut wa, None, None))
        .await
        .expect("the download follows b's pieces as they come");
    got.expect("a completes from b's pieces");
    let chunk = wa.finish().unwrap();
    let bytes: Vec<u8> = chunk.data.slices(0, len).flat_map(|b| b.to_vec()).collect();
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(data), "byte-exact");
    let _ = feeder.await.unwrap();
}

/// A standing query is answered by news for the asker only: b gains pieces 1
/// and 2, which a already has, then piece 3, which a lacks. Before, b answered
/// for each piece it gained (three bitmaps and three renewed queries); now it
/// answers for piece 3 alone, and a still completes byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_query_is_not_answered_by_pieces_the_asker_has() {
    use std::sync::atomic::Ordering::Relaxed;
    let ((a, cache_a), (b, cache_b)) = pair().await;
    let len = 4 * PIECE_SIZE;
    let data: Bytes = (0..len).map(|i| (i * 5 % 251) as u8).collect::<Vec<u8>>().into();
    let id = ChunkId::from_bytes([10; 32]);
    let mut wa = leader(&cache_a, id, len);
    let wb = leader(&cache_b, id, len);
    wa.fill().set_from_peer(true);
    wb.fill().set_from_peer(true);
    for i in [1, 2] {
        let (p, h) = piece(&data, i);
        wa.put_piece(i, p, h).unwrap();
    }
    download_while_b_gains(&a, wa, wb, &data, id, Duration::from_millis(200)).await;
    let watched = b.stats().bitmaps_watched.load(Relaxed);
    // The query standing while b gained pieces 1 and 2 was answered by piece 3
    // (b's first answer, for piece 0, may be one more).
    assert!(watched <= 2, "{watched} standing queries answered: pieces a has were announced");
    drop(a);
}

/// A fill from the origin offers, and sends at once, the whole pieces its later
/// ranges put ahead of its prefix: a downloader has them long before the prefix
/// reaches them. Before, it offered the prefix only and made every request for
/// such a piece wait, so a node that died mid-fill took those pieces with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_fill_sends_the_pieces_its_later_ranges_put_ahead_of_its_prefix() {
    let ((a, cache_a), (_b, cache_b)) = pair().await;
    let len = 4 * PIECE_SIZE;
    let data: Bytes = (0..len).map(|i| (i * 13 % 241) as u8).collect::<Vec<u8>>().into();
    let id = ChunkId::from_bytes([11; 32]);
    let mut wa = leader(&cache_a, id, len);
    let mut wb = leader(&cache_b, id, len);
    wa.fill().set_from_peer(true);
    wb.fill().set_from_peer(false);
    // b's later ranges have put pieces 2 and 3; its prefix (0, 1) comes in 1.5 s.
    for i in [3, 2] {
        let (p, h) = piece(&data, i);
        wb.put_piece(i, p, h).unwrap();
    }
    let feeder = {
        let data = data.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            for i in [0, 1] {
                let (p, h) = piece(&data, i);
                wb.put_piece(i, p, h).unwrap();
            }
            wb
        })
    };
    let fill_a = wa.fill().clone();
    let watch = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        fill_a.have_pieces()
    });
    let got = tokio::time::timeout(Duration::from_secs(20), a.download(id, len, &mut wa, None, None))
        .await
        .expect("the download completes once b's prefix comes");
    got.expect("a completes from b");
    assert_eq!(
        watch.await.unwrap(),
        [false, false, true, true],
        "a second in, a has the pieces b put ahead of its prefix, and only those"
    );
    let chunk = wa.finish().unwrap();
    let bytes: Vec<u8> = chunk.data.slices(0, len).flat_map(|b| b.to_vec()).collect();
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&data), "byte-exact");
    let _ = feeder.await.unwrap();
}

/// A download hears of a member that queries its node's bitmap of the chunk,
/// and takes pieces from it, though no tracker named that member to it. Here a
/// has a static peer c with pieces 0-1; b (whose static peer is a) has pieces
/// 2-3 and is named to a by nothing: neither tracker (b and c run no cluster)
/// nor configuration. Without the introduction a never learns of b, and its
/// download gives up with pieces 2-3 unsourced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_hears_of_the_members_that_query_it() {
    use eliop2p_cluster::NodeInfo;
    use eliop2p_cluster::rendezvous::{node_hash, weight};
    use std::sync::atomic::Ordering::Relaxed;
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (aa, ab, ac) = (la.local_addr().unwrap(), lb.local_addr().unwrap(), lc.local_addr().unwrap());
    // A chunk a does not own (an owner with the rest missing would read the
    // origin), so that a's download is a plain swarm download.
    let id = (0u8..)
        .map(|i| ChunkId::from_bytes([i; 32]))
        .find(|id| {
            let w = |n: &str| weight(id, node_hash(n));
            w("a") < w("b") || w("a") < w("c")
        })
        .unwrap();
    let a = {
        let cache = ChunkCache::open(CacheConfig::memory_only(64 << 20, 16 << 20)).await;
        let mut cfg = P2pConfig::new("a");
        cfg.cluster_secret = Some(b"swarm-test".to_vec());
        cfg.static_peers = vec![ac];
        cfg.piece_timeout = Duration::from_secs(2);
        cfg.cluster = Some(eliop2p_p2p::ClusterConfig { gossip: false, ..Default::default() });
        let h = spawn_p2p(cfg, la, cache.clone(), CancellationToken::new(), &TaskTracker::new(), Default::default()).unwrap();
        let info = |id: &str, p2p| NodeInfo { id: id.into(), p2p, proxy: None, zone: String::new(), owner: true };
        h.observe_members(vec![info("b", ab), info("c", ac)]);
        (h, cache)
    };
    let (b, cache_b) = node("b", lb, aa).await;
    let (_c, cache_c) = node("c", lc, aa).await;
    let len = 4 * PIECE_SIZE;
    let data: Bytes = (0..len).map(|i| (i * 13 % 241) as u8).collect::<Vec<u8>>().into();
    let (mut wa, mut wb, mut wc) = (leader(&a.1, id, len), leader(&cache_b, id, len), leader(&cache_c, id, len));
    for w in [&mut wa, &mut wb, &mut wc] {
        w.fill().set_from_peer(true);
    }
    for i in [0, 1] {
        let (p, h) = piece(&data, i);
        wc.put_piece(i, p, h).unwrap();
    }
    for i in [2, 3] {
        let (p, h) = piece(&data, i);
        wb.put_piece(i, p, h).unwrap();
    }
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(
            a.0.download(id, len, &mut wa, None, None),
            b.download(id, len, &mut wb, None, None)
        )
    })
    .await
    .expect("both downloads end");
    assert!(ra.is_ok(), "a completes (b's query introduced b to it); a's metrics:\n{}", a.0.render_metrics());
    assert!(rb.is_ok(), "b completes from a; b's metrics:\n{}", b.render_metrics());
    for w in [wa, wb] {
        let chunk = w.finish().unwrap();
        let got: Vec<u8> = chunk.data.slices(0, len).flat_map(|b| b.to_vec()).collect();
        assert_eq!(Sha256::digest(&got), Sha256::digest(&data), "byte-exact");
    }
    assert_eq!(a.0.stats().peers_introduced.load(Relaxed), 1, "b, once");
    assert!(a.0.render_metrics().contains("eliop2p_p2p_peers_introduced_total 1"));
    drop(wc);
}
