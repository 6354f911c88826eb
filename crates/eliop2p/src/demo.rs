//! `eliop2p demo`: an in-process S3-compatible origin (s3s-fs, SigV4-checking) on
//! loopback with sample objects, a node in front of it, a scripted read, and
//! ready-to-paste client commands.

use std::time::Instant;

use anyhow::Context;
use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestClient, TestOrigin, sha256_hex, test_data};

use crate::config::Effective;

pub async fn run(
    eff_for: impl Fn(&str) -> anyhow::Result<Effective>,
    once: bool,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let origin = TestOrigin::start()
        .await
        .context("starting the demo origin")?;
    let eff = eff_for(&origin.endpoint)?;
    origin.create_bucket("demo").await?;
    origin
        .put("demo", "hello.txt", "hello from eliop2p\n".into())
        .await?;
    let sample = test_data(64 << 20, 42);
    origin
        .put("demo", "data/sample-64MiB.bin", sample.clone())
        .await?;

    let cfg = eff.node_config()?;
    let proxy = crate::bind(eff.addr("proxy.listen"), "proxy").await?;
    let admin = crate::bind(eff.addr("admin.listen"), "admin").await?;
    let node = eliop2p_proxy::spawn_node(cfg, proxy, admin).await?;
    let p = node.proxy_addr;

    println!("eliop2p demo");
    println!(
        "  origin (in-process s3s-fs, checks SigV4): {}",
        origin.endpoint
    );
    println!("  node S3 proxy:                            http://{p}");
    println!(
        "  node admin (metrics):                     http://{}/metrics",
        node.admin_addr
    );
    println!();
    println!("scripted read of demo/data/sample-64MiB.bin through the node:");
    println!(
        "  {:<6} {:>8} {:>10} {:>12} {:<7}",
        "read", "x-cache", "MiB", "MiB/s", "sha256"
    );
    let client = TestClient::new();
    let url = format!("http://{p}/demo/data/sample-64MiB.bin");
    let want = sha256_hex(&sample);
    for label in ["cold", "warm"] {
        let t = Instant::now();
        let r = client.get(&url, &[]).await?;
        let secs = t.elapsed().as_secs_f64();
        let ok = if sha256_hex(&r.body) == want {
            "ok"
        } else {
            "MISMATCH"
        };
        println!(
            "  {:<6} {:>8} {:>10.1} {:>12.0} {:<7}",
            label,
            r.header("x-cache").unwrap_or("-"),
            r.body.len() as f64 / (1 << 20) as f64,
            r.body.len() as f64 / (1 << 20) as f64 / secs,
            ok
        );
        anyhow::ensure!(ok == "ok", "demo read returned wrong bytes");
    }
    println!();
    println!("try it (credentials are the demo origin's; the node signs its own origin requests):");
    println!("  curl -i http://{p}/demo/hello.txt");
    println!("  curl -s -r 0-99 http://{p}/demo/data/sample-64MiB.bin | wc -c");
    println!(
        "  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} aws --endpoint-url http://{p} s3 ls s3://demo/ --recursive"
    );
    println!(
        "  python3 -c \"import boto3; s3 = boto3.client('s3', endpoint_url='http://{p}', aws_access_key_id='{ACCESS_KEY}', aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1'); print(s3.get_object(Bucket='demo', Key='hello.txt')['Body'].read())\""
    );
    if !once {
        println!("ctrl-c to stop");
        stop.await;
    }
    node.shutdown().await;
    origin.stop().await;
    Ok(())
}
