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

/// Runs the command, expects exit 0, returns stdout.
async fn run_ok(args: Vec<String>) -> String {
    let o = run(args).await;
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn file_sha(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_downloads_objects_and_prefixes_byte_exact() -> anyhow::Result<()> {
    let (origin, big) = TestOrigin::with_object("cli", "big.bin", 40 << 20, 3).await?;
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
    let (origin, data) = TestOrigin::with_object("cli", "slow.bin", 64 << 20, 8).await?;
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
    let served_now = || {
        single.metrics.bytes_memory.load(std::sync::atomic::Ordering::Relaxed)
            + single.metrics.bytes_origin.load(std::sync::atomic::Ordering::Relaxed)
    };
    // The killed client's connection may still be sending what it had in hand
    // until a write fails: count from when its bytes have stopped.
    let mut served_before = served_now();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = served_now();
        if now == served_before {
            break;
        }
        served_before = now;
    }
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

fn cp_args(cluster: &TestCluster, rest: &[&str]) -> Vec<String> {
    let mut v = args(&["preheat"]);
    v.extend(args(rest));
    v.extend(args(&[
        "--control-plane-endpoint",
        &format!("http://{}", cluster.control_addr.unwrap()),
        "--control-plane-token",
        eliop2p_testkit::CONTROL_TOKEN,
    ]));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preheat_warms_every_node_and_survives_a_control_plane_restart() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("cli").await?;
    let mut objects = Vec::new();
    for (i, len) in [20 << 20, 5 << 20, 1].into_iter().enumerate() {
        let key = format!("warm/obj-{i}");
        let d = test_data(len, 40 + i as u64);
        origin.put("cli", &key, d.clone()).await?;
        objects.push((key, d));
    }
    let cluster = TestCluster::start(&origin, 3, Discovery::Hybrid).await?;

    let stdout = run_ok(cp_args(&cluster, &["s3://cli/warm/", "--wait"])).await;
    assert!(
        stdout.contains("succeeded: 3/3 nodes done, 9/9 objects"),
        "{stdout}"
    );
    // The three nodes preheated together: each chunk came from the origin once.
    let gets: usize = objects
        .iter()
        .map(|(k, _)| origin.gets_of("cli", k).len())
        .sum();
    assert_eq!(gets, 2 + 1 + 1, "one origin GET per chunk (16 MiB chunks)");

    // Then every node reads every object with no origin GET at all.
    origin.clear_log();
    let client = eliop2p_testkit::TestClient::new();
    for i in 0..3 {
        for (k, d) in &objects {
            let r = client.get(&cluster.url(i, "cli", k), &[]).await?;
            assert_eq!(r.status, 200);
            assert_eq!(sha256_hex(&r.body), sha256_hex(d), "node {i} {k}");
            assert_eq!(r.header("x-cache"), Some("HIT"), "node {i} {k}");
        }
    }
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count(),
        0
    );

    // One replica, a missing object: the job fails with exit 7 and says why.
    let o = run(cp_args(
        &cluster,
        &["s3://cli/none.bin", "--replicas", "1", "--wait"],
    ))
    .await;
    assert_eq!(o.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("0/1 nodes done") && stdout.contains("404"),
        "{stdout}"
    );

    // A slow job survives a control-plane restart.
    for i in 0..2 {
        origin
            .put("cli", &format!("slow/{i}"), test_data(12 << 20, 60 + i))
            .await?;
    }
    origin.set_rate_limit(8 << 20);
    let o = run(cp_args(&cluster, &["s3://cli/slow/"])).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    let id: u64 = stdout
        .split("preheat job ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("job id printed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cluster = cluster;
    cluster.stop_control_plane().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_control_plane().await?;
    let o = run(cp_args(&cluster, &["status", &id.to_string()])).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("job {id} ")),
        "the job is back: {stdout}"
    );
    origin.set_rate_limit(0);
    let stdout = run_ok(cp_args(&cluster, &["status", &id.to_string(), "--wait"])).await;
    assert!(
        stdout.contains("succeeded: 3/3 nodes done, 6/6 objects"),
        "{stdout}"
    );
    let o = run(cp_args(&cluster, &["list"])).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("job {id} succeeded")));
    // Several replicas: one that refuses connections passes the request to the
    // next (a closed loopback port stands for a dead control plane).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let replicas = format!("http://{dead}, http://{}", cluster.control_addr.unwrap());
    let o = run(args(&[
        "preheat", "list", "--control-plane-endpoint", &replicas,
        "--control-plane-token", eliop2p_testkit::CONTROL_TOKEN,
    ]))
    .await;
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("job {id} succeeded")), "{o:?}");
    cluster.shutdown().await;
    origin.stop().await;
    Ok(())
}
