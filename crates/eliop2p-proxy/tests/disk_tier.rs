//! The disk tier behind a node, against the real s3s-fs origin: reads beyond
//! memory served from disk, restart, corruption, an unwritable disk.

use std::path::Path;
use std::time::{Duration, Instant};

use eliop2p_cache::{DiskTierConfig, VerifyOnStart};
use eliop2p_proxy::NodeHandle;
use eliop2p_testkit::{TestClient, TestOrigin, sha256_hex, start_node};

const MIB: u64 = 1 << 20;

async fn disk_node(origin: &TestOrigin, dir: &Path) -> anyhow::Result<NodeHandle> {
    let dir = dir.to_owned();
    start_node(origin, move |c| {
        c.proxy.chunk_size = MIB;
        c.cache.chunk_size = MIB;
        c.cache.memory_capacity = 4 * MIB;
        c.cache.hot_threshold = 1000.0; // keep reads on disk in these tests
        c.cache.disk = Some(DiskTierConfig {
            path: dir,
            capacity: 256 * MIB,
            verify_on_start: VerifyOnStart::No,
            write_queue: 64,
        });
    })
    .await
}

fn metric(node: &NodeHandle, series: &str) -> u64 {
    let text = node.render_metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_memory_come_from_disk_and_survive_restart() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("tier", "big", 20 * MIB as usize + 123, 5).await?;
    let dir = tempfile::tempdir()?;
    let c = TestClient::new();
    {
        let node = disk_node(&origin, dir.path()).await?;
        let u = format!("http://{}/tier/big", node.proxy_addr);
        let r = c.get(&u, &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
        wait_until("write-behind of 21 chunks", || {
            metric(&node, "eliop2p_cache_disk_writes_total") == 21
        })
        .await;
        let r = c.get(&u, &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "L2 read byte-exact");
        assert_eq!(r.header("x-cache"), Some("HIT"));
        assert_eq!(r.header("x-cache-source"), Some("disk"));
        assert!(metric(&node, "eliop2p_proxy_served_bytes_total{source=\"disk\"}") > 0);
        // Ranges across chunk boundaries, from disk.
        for (a, b) in [
            (MIB - 5, MIB + 5),
            (0, 1),
            (20 * MIB, 20 * MIB + 122),
            (3 * MIB + 17, 9 * MIB),
        ] {
            let r = c.get(&u, &[("range", &format!("bytes={a}-{b}"))]).await?;
            assert_eq!(r.body, data.slice(a as usize..=b as usize), "{a}-{b}");
        }
        node.shutdown().await;
    }
    // A new node on the same directory: HITs from disk, no origin GET.
    origin.clear_log();
    let node = disk_node(&origin, dir.path()).await?;
    assert_eq!(metric(&node, "eliop2p_cache_entries{tier=\"disk\"}"), 21);
    let r = c
        .get(&format!("http://{}/tier/big", node.proxy_addr), &[])
        .await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(r.header("x-cache-source"), Some("disk"));
    // One origin request to learn the object's current ETag (the metadata is not
    // persisted); no chunk bytes come from the origin.
    assert_eq!(
        origin.gets_of("tier", "big").len(),
        1,
        "only the metadata lookup"
    );
    assert_eq!(
        metric(&node, "eliop2p_origin_bytes_total"),
        0,
        "served from disk after restart"
    );
    let stats = c
        .get(&format!("http://{}/stats", node.admin_addr), &[])
        .await?;
    let json: serde_json::Value = serde_json::from_slice(&stats.body)?;
    assert_eq!(json["disk"]["entries"], 21);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_chunk_files_are_refetched() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("rot", "obj", 6 * MIB as usize, 6).await?;
    let dir = tempfile::tempdir()?;
    let c = TestClient::new();
    {
        let node = disk_node(&origin, dir.path()).await?;
        c.get(&format!("http://{}/rot/obj", node.proxy_addr), &[])
            .await?;
        wait_until("write-behind", || {
            metric(&node, "eliop2p_cache_disk_writes_total") == 6
        })
        .await;
        node.shutdown().await;
    }
    // Flip a byte in one chunk file and truncate another.
    let mut files: Vec<_> = walk(&dir.path().join("chunks"));
    files.sort();
    let mut bytes = std::fs::read(&files[0])?;
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&files[0], bytes)?;
    let f = std::fs::OpenOptions::new().write(true).open(&files[1])?;
    f.set_len(f.metadata()?.len() - 100)?;
    drop(f);
    let node = disk_node(&origin, dir.path()).await?;
    // The truncated file is caught by its length when the index is rebuilt.
    assert_eq!(metric(&node, "eliop2p_cache_corrupt_chunks_total"), 1);
    origin.clear_log();
    let r = c
        .get(&format!("http://{}/rot/obj", node.proxy_addr), &[])
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "never a wrong byte");
    assert_eq!(
        metric(&node, "eliop2p_cache_corrupt_chunks_total"),
        2,
        "the flipped byte too"
    );
    assert_eq!(
        metric(&node, "eliop2p_origin_bytes_total"),
        2 * MIB,
        "exactly the two bad chunks refetched"
    );
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_disk_keeps_serving() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("full", "obj", 8 * MIB as usize, 7).await?;
    let dir = tempfile::tempdir()?;
    let node = disk_node(&origin, dir.path()).await?;
    // The disk goes away under the running node: its temp directory becomes a file.
    std::fs::remove_dir_all(dir.path().join("tmp"))?;
    std::fs::write(dir.path().join("tmp"), b"not a directory")?;
    let c = TestClient::new();
    let u = format!("http://{}/full/obj", node.proxy_addr);
    for _ in 0..3 {
        let r = c.get(&u, &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    wait_until("write errors counted", || {
        metric(&node, "eliop2p_cache_disk_write_errors_total") > 0
    })
    .await;
    assert_eq!(metric(&node, "eliop2p_cache_entries{tier=\"disk\"}"), 0);
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
