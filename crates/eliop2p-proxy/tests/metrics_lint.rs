//! `/metrics` of a node and of the control plane, after real traffic, pass
//! `promtool check metrics` (Debian's `prometheus` package, installed by
//! `.ci/run`) and the house naming rules: every family has HELP and TYPE, names
//! start with `eliop2p_`, counters end in `_total`, byte and time families carry
//! their unit (`_bytes`, `_seconds`).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use eliop2p_testkit::{Discovery, TestClient, TestCluster, TestOrigin, sha256_hex};

fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test: apt-get install prometheus (.ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The house rules; returns the families seen.
fn house_rules(text: &str) -> Vec<String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            helps.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample {name} without TYPE");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}: value");
        }
    }
    for (name, kind) in &types {
        assert!(name.starts_with("eliop2p_"), "{name}: prefix");
        assert!(helps.contains(name), "{name}: HELP");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}: counters end in _total");
        }
        let base = name.trim_end_matches("_total");
        if base.contains("bytes") {
            assert!(
                base.ends_with("_bytes"),
                "{name}: byte families end in _bytes"
            );
        }
        if base.contains("seconds") {
            assert!(base.ends_with("_seconds"), "{name}: unit last");
        }
    }
    types.into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_control_plane_metrics_pass_promtool_and_naming_rules() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("lint", "x.bin", 20 << 20, 9).await?;
    let cluster = TestCluster::start(&origin, 2, Discovery::Hybrid).await?;
    let client = TestClient::new();
    for i in 0..2 {
        let r = client.get(&cluster.url(i, "lint", "x.bin"), &[]).await?;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    }
    let r = client.get(&cluster.url(0, "lint", "missing"), &[]).await?;
    assert_eq!(r.status, 404);
    let node = client
        .get(
            &format!("http://{}/metrics", cluster.node(1).admin_addr),
            &[],
        )
        .await?;
    let cp = client
        .get(
            &format!("http://{}/metrics", cluster.control_addr.unwrap()),
            &[],
        )
        .await?;
    let mut all_families = Vec::new();
    for (what, r) in [("node", &node), ("control plane", &cp)] {
        assert_eq!(r.status, 200);
        let text = String::from_utf8(r.body.to_vec())?;
        let (ok, report) = promtool(&text);
        assert!(
            ok && report.trim().is_empty(),
            "{what}: promtool says:\n{report}"
        );
        let families = house_rules(&text);
        assert!(families.len() > 5, "{what}: {families:?}");
        all_families.extend(families);
    }
    // The Grafana dashboard only queries metrics that exist.
    let grafana = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/eliop2p.json"),
    )?;
    let board: serde_json::Value = serde_json::from_str(&grafana)?;
    let mut queried = 0;
    for panel in board["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("eliop2p_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    all_families.contains(&name),
                    "Grafana panel {:?} queries {name}, which no component exports",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 10);
    let text = String::from_utf8(node.body.to_vec())?;
    for family in [
        "eliop2p_cache_bytes",
        "eliop2p_p2p_sent_bytes_total",
        "eliop2p_cluster_members",
        "eliop2p_gossip_detections_total",
        "eliop2p_gossip_refused_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    cluster.shutdown().await;
    origin.stop().await;
    Ok(())
}
