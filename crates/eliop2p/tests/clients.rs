//! Unmodified real clients (boto3, the `aws` CLI) against a node in front of the
//! SigV4-checking origin. Needs python3 with boto3 and the `aws` CLI (`.ci/run`
//! installs them); fails, rather than skips, when they are missing.

use std::path::PathBuf;
use std::process::Command;

use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestOrigin, sha256_hex, start_node, test_data};

fn client_env(cmd: &mut Command) -> &mut Command {
    // The machine's CA-bundle variables confuse some clients on plain-http loopback.
    for var in [
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_aws_cli_through_the_node() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("clients").await?;
    let big = test_data(40 << 20, 11);
    origin
        .put("clients", "datasets/shard 0001.bin", big.clone())
        .await?;
    origin
        .put("clients", "small.txt", "tiny object\n".into())
        .await?;
    let node = start_node(&origin, |c| c.proxy.chunk_size = 4 << 20).await?;
    let node_url = format!("http://{}", node.proxy_addr);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_client.py");
    let out = tokio::task::spawn_blocking({
        let (node_url, endpoint) = (node_url.clone(), origin.endpoint.clone());
        move || {
            client_env(Command::new("python3").arg(script))
                .env("ELIOP2P_TEST_NODE", node_url)
                .env("ELIOP2P_TEST_ORIGIN", endpoint)
                .env("ELIOP2P_TEST_BUCKET", "clients")
                .env("ELIOP2P_TEST_BIG_KEY", "datasets/shard 0001.bin")
                .env("ELIOP2P_TEST_SMALL_KEY", "small.txt")
                .env("ELIOP2P_TEST_ACCESS_KEY", ACCESS_KEY)
                .env("ELIOP2P_TEST_SECRET_KEY", SECRET_KEY)
                .output()
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "boto3 checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"));

    // aws s3 cp from the node, and ls.
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("shard.bin");
    let out = tokio::task::spawn_blocking({
        let (node_url, dest) = (node_url.clone(), dest.clone());
        move || {
            client_env(&mut Command::new("aws"))
                .args([
                    "--endpoint-url",
                    &node_url,
                    "s3",
                    "cp",
                    "s3://clients/datasets/shard 0001.bin",
                ])
                .arg(&dest)
                .output()
        }
    })
    .await??;
    assert!(
        out.status.success(),
        "aws s3 cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_hex(&std::fs::read(&dest)?), sha256_hex(&big));
    let out = tokio::task::spawn_blocking(move || {
        client_env(&mut Command::new("aws"))
            .args([
                "--endpoint-url",
                &node_url,
                "s3",
                "ls",
                "s3://clients/",
                "--recursive",
            ])
            .output()
    })
    .await??;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aws s3 ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listing.contains("datasets/shard 0001.bin") && listing.contains("small.txt"),
        "{listing}"
    );
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}

fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_aws_cli_with_http_proxy_in_passthrough() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("fwdproxy").await?;
    let big = test_data(24 << 20, 12);
    origin
        .put("fwdproxy", "data/shard.bin", big.clone())
        .await?;
    // The node holds no credentials: every read is authorized by the origin.
    let node = start_node(&origin, |c| {
        c.proxy.chunk_size = 4 << 20;
        c.proxy.auth = eliop2p_proxy::AuthMode::Passthrough;
        c.origin.access_key.clear();
        c.origin.secret_key.clear();
    })
    .await?;
    let proxy_url = format!("http://{}", node.proxy_addr);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/forward_proxy.py");
    let out = tokio::task::spawn_blocking({
        let (proxy_url, endpoint, sha) =
            (proxy_url.clone(), origin.endpoint.clone(), sha256_hex(&big));
        move || {
            client_env(Command::new("python3").arg(script))
                .env_remove("NO_PROXY")
                .env_remove("no_proxy")
                .env("ELIOP2P_TEST_PROXY", proxy_url)
                .env("ELIOP2P_TEST_ORIGIN", endpoint)
                .env("ELIOP2P_TEST_BUCKET", "fwdproxy")
                .env("ELIOP2P_TEST_BIG_KEY", "data/shard.bin")
                .env("ELIOP2P_TEST_BIG_SHA256", sha)
                .env("ELIOP2P_TEST_ACCESS_KEY", ACCESS_KEY)
                .env("ELIOP2P_TEST_SECRET_KEY", SECRET_KEY)
                .output()
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "boto3 forward-proxy checks failed:\n{stdout}"
    );
    let m = node.render_metrics();
    assert!(
        metric_value(
            &m,
            "eliop2p_passthrough_authorizations_total{result=\"authorized\"}"
        ) >= 1,
        "second reads came from the cache after authorization:\n{m}"
    );
    assert!(
        metric_value(
            &m,
            "eliop2p_passthrough_authorizations_total{result=\"denied\"}"
        ) >= 1
    );

    // aws s3 cp through the proxy, twice: byte-exact, the second authorized from cache.
    let before = metric_value(
        &node.render_metrics(),
        "eliop2p_passthrough_authorizations_total{result=\"authorized\"}",
    );
    let dir = tempfile::tempdir()?;
    for round in 0..2 {
        let dest = dir.path().join(format!("shard-{round}.bin"));
        let out = tokio::task::spawn_blocking({
            let (proxy_url, endpoint, dest) =
                (proxy_url.clone(), origin.endpoint.clone(), dest.clone());
            move || {
                client_env(&mut Command::new("aws"))
                    .env_remove("NO_PROXY")
                    .env_remove("no_proxy")
                    .env("HTTP_PROXY", &proxy_url)
                    .env("http_proxy", &proxy_url)
                    .args([
                        "--endpoint-url",
                        &endpoint,
                        "s3",
                        "cp",
                        "s3://fwdproxy/data/shard.bin",
                    ])
                    .arg(&dest)
                    .output()
            }
        })
        .await??;
        assert!(
            out.status.success(),
            "aws s3 cp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256_hex(&std::fs::read(&dest)?), sha256_hex(&big));
    }
    let after = metric_value(
        &node.render_metrics(),
        "eliop2p_passthrough_authorizations_total{result=\"authorized\"}",
    );
    assert!(after > before, "aws s3 cp went through the node's cache");
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
