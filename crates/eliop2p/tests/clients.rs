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
