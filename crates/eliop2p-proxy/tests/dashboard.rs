//! The dashboards in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`) loads the control plane's cluster view and a node's
//! single-node view from a running test cluster, runs their script, and the test
//! checks the rendered DOM (node rows, a chart with non-zero points, preheat
//! jobs) and saves screenshots under the test output directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eliop2p_testkit::{
    CONTROL_TOKEN, Discovery, TestClient, TestCluster, TestOrigin, sha256_hex,
};

fn chromium() -> PathBuf {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return c.into();
        }
    }
    panic!("headless Chromium is needed for this test: apt-get install chromium (.ci/run does)");
}

/// Runs headless Chromium on `url`, letting the page's script run for a few
/// seconds of virtual time; returns the rendered DOM.
async fn browse(url: &str, screenshot: Option<&Path>) -> String {
    let url = url.to_owned();
    let shot = screenshot.map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1100",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        match &shot {
            Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
            None => cmd.arg("--dump-dom"),
        };
        let out = cmd.arg(&url).output().expect("chromium runs");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_render_nodes_charts_and_jobs_in_chromium() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("dash", "a.bin", 40 << 20, 5).await?;
    let cluster = TestCluster::start(&origin, 3, Discovery::Hybrid).await?;
    // Let both histories take a sample before the traffic.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = TestClient::new();
    for i in 0..3 {
        let r = client.get(&cluster.url(i, "dash", "a.bin"), &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    // A preheat job to list.
    let cp = format!("http://{}", cluster.control_addr.unwrap());
    let r = client
        .request(
            http::Method::POST,
            &format!("{cp}/api/v1/preheat"),
            &[
                ("authorization", &format!("Bearer {CONTROL_TOKEN}")),
                ("content-type", "application/json"),
            ],
            bytes::Bytes::from_static(br#"{"bucket":"dash","key":"a.bin"}"#),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Nodes sample once a second: two samples after the reads.
    tokio::time::sleep(Duration::from_millis(2300)).await;

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out)?;

    let url = format!("{cp}/dashboard#token={CONTROL_TOKEN}");
    let dom = browse(&url, None).await;
    assert!(dom.contains(r#"data-loaded="true""#), "{dom}");
    assert!(dom.contains("cluster view"), "{dom}");
    assert_eq!(count(&dom, r#"class="node-row""#), 3, "{dom}");
    assert!(
        dom.contains(r#"data-nonzero="true""#),
        "chart has traffic: {dom}"
    );
    assert!(count(&dom, "<polyline") >= 4, "{dom}");
    assert_eq!(count(&dom, r#"class="job-row""#), 1, "{dom}");
    for i in 0..3 {
        assert!(dom.contains(&format!(r#"data-node="node-{i}""#)), "{dom}");
    }
    let shot = out.join("cluster.png");
    browse(&url, Some(&shot)).await;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot at {}",
        shot.display()
    );

    // Without the token: a clear message, no data.
    let dom = browse(&format!("{cp}/dashboard"), None).await;
    assert!(dom.contains("wants its token"), "{dom}");
    assert_eq!(count(&dom, r#"class="node-row""#), 0);

    // A node's own view on its admin listener.
    let node_url = format!("http://{}/dashboard", cluster.node(1).admin_addr);
    let dom = browse(&node_url, None).await;
    assert!(dom.contains("single-node view"), "{dom}");
    assert_eq!(count(&dom, r#"class="node-row""#), 1, "{dom}");
    assert!(dom.contains(r#"data-node="node-1""#), "{dom}");
    assert!(dom.contains(r#"data-nonzero="true""#), "{dom}");
    let shot = out.join("node.png");
    browse(&node_url, Some(&shot)).await;
    assert!(std::fs::read(&shot)?.starts_with(b"\x89PNG"));
    println!("screenshots in {}", out.display());
    cluster.shutdown().await;
    origin.stop().await;
    Ok(())
}
