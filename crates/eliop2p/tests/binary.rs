//! The `eliop2p` binary as an operator runs it: config errors, a node process
//! configured through the environment, SIGTERM, and the demo.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestClient, TestOrigin, sha256_hex, test_data};

const BIN: &str = env!("CARGO_BIN_EXE_eliop2p");

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let out = Command::new(BIN).args(["node", "--cache-memory-size", "4XB"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config key cache.memory_size (from flag --cache-memory-size)"), "{err}");
    let out = Command::new(BIN).args(["node"]).env("ELIOP2P_ORIGIN_ENDPIONT", "x").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ELIOP2P_ORIGIN_ENDPIONT"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[cache]\nchunk_size = \"16MiB\"\nheat = 3\n").unwrap();
    let out = Command::new(BIN).args(["node", "--config"]).arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown config key cache.heat"));
}

#[test]
fn example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/eliop2p.example.toml");
    let out = Command::new(BIN).args(["node", "--print-config", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("memory_size = \"8GiB\"  # file"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_process_serves_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("proc").await?;
    let data = test_data(5 << 20, 4);
    origin.put("proc", "obj", data.clone()).await?;
    let mut child = Command::new(BIN)
        .args(["node", "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("ELIOP2P_ORIGIN_ENDPOINT", &origin.endpoint)
        .env("ELIOP2P_ORIGIN_ACCESS_KEY", ACCESS_KEY)
        .env("ELIOP2P_ORIGIN_SECRET_KEY", SECRET_KEY)
        .env("ELIOP2P_CACHE_CHUNK_SIZE", "1MiB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    // "eliop2p node: proxy on http://ADDR, admin on http://ADDR"
    let proxy = line.split("proxy on ").nth(1).and_then(|s| s.split(',').next()).expect("address line").to_owned();
    let c = TestClient::new();
    let r = c.get(&format!("{proxy}/proc/obj"), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(c.get(&format!("{proxy}/proc/obj"), &[]).await?.header("x-cache"), Some("HIT"));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    origin.stop().await;
    Ok(())
}

#[test]
fn demo_once_prints_miss_then_hit() {
    let out = Command::new(BIN)
        .args(["demo", "--once", "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let cold = text.lines().find(|l| l.trim_start().starts_with("cold")).expect("cold row");
    let warm = text.lines().find(|l| l.trim_start().starts_with("warm")).expect("warm row");
    assert!(cold.contains("MISS") && cold.contains("ok"), "{cold}");
    assert!(warm.contains("HIT") && warm.contains("ok"), "{warm}");
}
