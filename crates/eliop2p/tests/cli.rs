//! The operator commands as processes against a real test cluster (in-process
//! control plane and nodes in front of the SigV4-checking origin): `get` (byte-exact
//! files, prefixes, resume after a kill, exit codes) and `preheat`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use eliop2p_testkit::{Discovery, TestCluster, TestOrigin, sha256_hex, test_data};

const BIN: &str = env!("CARGO_BIN_EXE_eliop2p");

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn file_sha(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_downloads_objects_and_prefixes_byte_exact() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("cli").await?;
    let big = test_data(40 << 20, 3);
    origin.put("cli", "big.bin", big.clone()).await?;
    let mut shards = Vec::new();
    for i in 0..3 {
        let d = test_data((1 << 20) + i * 777, 10 + i as u64);
        origin
            .put("cli", &format!("set/part {i}.bin"), d.clone())
            .await?;
        shards.push(d);
    }
    let cluster = TestCluster::start(&origin, 2, Discovery::Hybrid).await?;
    let node = format!("http://{}", cluster.node(0).proxy_addr);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("big.bin");

    let o = run(args(&[
        "get",
        "--node",
        &node,
        "s3://cli/big.bin",
        "-o",
        out.to_str().unwrap(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(file_sha(&out), sha256_hex(&big));
    assert!(stdout.contains("size and ETag (MD5) verified"), "{stdout}");
    // Not a terminal: plain progress lines on stderr.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("100%") && !stderr.contains('\r'),
        "{stderr}"
    );

    // A URL through the other node, a second time: from the cluster, not the origin.
    let gets = origin.gets_of("cli", "big.bin").len();
    let out2 = dir.path().join("again.bin");
    let url = format!("http://{}/cli/big.bin", cluster.node(1).proxy_addr);
    let o = run(args(&["get", &url, "-o", out2.to_str().unwrap()])).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(file_sha(&out2), sha256_hex(&big));
    assert_eq!(
        origin.gets_of("cli", "big.bin").len(),
        gets,
        "second read from peers"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.contains("origin"), "{stdout}");

    // A prefix.
    let tree = dir.path().join("tree");
    let o = run(args(&[
        "get",
        "--node",
        &node,
        "s3://cli/set/",
        "--recursive",
        "-o",
        tree.to_str().unwrap(),
    ]))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (i, d) in shards.iter().enumerate() {
        assert_eq!(file_sha(&tree.join(format!("part {i}.bin"))), sha256_hex(d));
    }
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 objects"));

    // Exit codes a script can rely on.
    let o = run(args(&[
        "get",
        "--node",
        &node,
        "s3://cli/missing.bin",
        "-o",
        "/dev/null",
    ]))
    .await;
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(args(&["get", "--node", &node, "s3://cli/set/"])).await;
    assert_eq!(o.status.code(), Some(2), "a prefix without --recursive");
    let o = run(args(&[
        "get",
        "--node",
        "http://127.0.0.1:1",
        "s3://cli/big.bin",
        "-o",
        "/dev/null",
    ]))
    .await;
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dir.path().join("missing.bin").exists());
    cluster.shutdown().await;
    origin.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_resumes_an_interrupted_download() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("cli").await?;
    let data = test_data(64 << 20, 8);
    origin.put("cli", "slow.bin", data.clone()).await?;
    let single = eliop2p_testkit::start_node(&origin, |_| {}).await?;
    let node = format!("http://{}", single.proxy_addr);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("slow.bin");
    let part = dir.path().join("slow.bin.eliop2p-part");
    origin.set_rate_limit(16 << 20);
    let mut child = Command::new(BIN)
        .args([
            "get",
            "--node",
            &node,
            "s3://cli/slow.bin",
            "-o",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Kill it once more than one chunk is on disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 20 << 20 {
        assert!(Instant::now() < deadline, "download did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill()?;
    child.wait()?;
    let had = std::fs::metadata(&part)?.len();
    assert!(!out.exists());
    origin.set_rate_limit(0);
    let served_before = single
        .metrics
        .bytes_memory
        .load(std::sync::atomic::Ordering::Relaxed)
        + single
            .metrics
            .bytes_origin
            .load(std::sync::atomic::Ordering::Relaxed);
    let o = run(args(&[
        "get",
        "--node",
        &node,
        "s3://cli/slow.bin",
        "-o",
        out.to_str().unwrap(),
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resuming at"), "{stderr}");
    assert_eq!(file_sha(&out), sha256_hex(&data));
    assert!(!part.exists());
    let m = &single.metrics;
    let served = m.bytes_memory.load(std::sync::atomic::Ordering::Relaxed)
        + m.bytes_origin.load(std::sync::atomic::Ordering::Relaxed)
        - served_before;
    assert_eq!(
        served,
        data.len() as u64 - had,
        "only the missing bytes were asked for"
    );
    single.shutdown().await;
    origin.stop().await;
    Ok(())
}
