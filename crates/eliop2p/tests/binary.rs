//! The `eliop2p` binary as an operator runs it: config errors, a node process
//! configured through the environment, SIGTERM, and the demo.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestClient, TestOrigin, sha256_hex, test_data};

const BIN: &str = env!("CARGO_BIN_EXE_eliop2p");

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let out = Command::new(BIN)
        .args(["node", "--cache-memory-size", "4XB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config key cache.memory_size (from flag --cache-memory-size)"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["node"])
        .env("ELIOP2P_ORIGIN_ENDPIONT", "x")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ELIOP2P_ORIGIN_ENDPIONT"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[cache]\nchunk_size = \"16MiB\"\nheat = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown config key cache.heat"));
}

#[test]
fn example_config_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/eliop2p.example.toml"
    );
    let out = Command::new(BIN)
        .args(["node", "--print-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("memory_size = \"8GiB\"  # file"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_process_serves_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("proc", "obj", 5 << 20, 4).await?;
    let (mut child, proxy, _admin) = spawn_node_process(&origin, &[])?;
    let c = TestClient::new();
    let r = c.get(&format!("{proxy}/proc/obj"), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(
        c.get(&format!("{proxy}/proc/obj"), &[])
            .await?
            .header("x-cache"),
        Some("HIT")
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?
            .success()
    );
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
fn demo_once_reads_from_origin_peers_and_memory() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--once",
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // step node x-cache header MiB origin peer memory MiB/s sha256
    let row = |step: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|c| c.len() == 10 && c[0] == step)
            .unwrap_or_else(|| panic!("no {step} row in\n{text}"))
    };
    let num = |c: &[String], i: usize| c[i].parse::<f64>().unwrap();
    let (cold, hit, peer, range) = (row("cold"), row("hit"), row("peer"), row("range"));
    for r in [&cold, &hit, &peer, &range] {
        assert_eq!(r[9], "ok", "{text}");
    }
    assert_eq!(cold[2], "MISS", "{text}");
    assert_eq!(
        num(&cold, 5),
        64.0,
        "the cold read costs the origin the object once: {text}"
    );
    assert_eq!(
        (hit[2].as_str(), hit[3].as_str()),
        ("HIT", "memory"),
        "{text}"
    );
    assert_eq!(num(&hit, 7), 64.0, "{text}");
    assert!(
        num(&peer, 6) > 0.0 && num(&peer, 5) == 0.0,
        "peer read: {text}"
    );
    assert_eq!(num(&range, 5), 0.0, "{text}");
    assert!(
        text.contains("the origin sent 64.0 MiB in 4 GET requests"),
        "{text}"
    );
    for source in ["origin", "peer", "memory"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(source) && l.contains('%'))
            .unwrap_or_else(|| panic!("no {source} line: {text}"));
        let mib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(mib > 0.0 || source == "origin", "{line}");
    }
}

/// Starts `eliop2p node` configured through the environment (origin credentials
/// plus `env`); returns the child and its proxy and admin URLs.
fn spawn_node_process(
    origin: &TestOrigin,
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<(std::process::Child, String, String)> {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "node",
        "--proxy-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .env("ELIOP2P_ORIGIN_ENDPOINT", &origin.endpoint)
    .env("ELIOP2P_ORIGIN_ACCESS_KEY", ACCESS_KEY)
    .env("ELIOP2P_ORIGIN_SECRET_KEY", SECRET_KEY)
    .env("ELIOP2P_CACHE_CHUNK_SIZE", "1MiB");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    // "eliop2p node: proxy on http://ADDR, admin on http://ADDR"
    let proxy = line
        .split("proxy on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("address line")
        .to_owned();
    let admin = line
        .split("admin on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("admin address")
        .trim()
        .to_owned();
    Ok((child, proxy, admin))
}

/// A node process with a disk tier at `disk`.
fn spawn_disk_node(
    origin: &TestOrigin,
    disk: &std::path::Path,
) -> anyhow::Result<(std::process::Child, String, String)> {
    let os = std::ffi::OsStr::new;
    spawn_node_process(
        origin,
        &[
            ("ELIOP2P_CACHE_MEMORY_SIZE", os("8MiB")),
            ("ELIOP2P_CACHE_DISK_PATH", disk.as_os_str()),
            ("ELIOP2P_CACHE_DISK_SIZE", os("1GiB")),
            ("ELIOP2P_CACHE_PROTECT_RECENT", os("0s")),
            ("ELIOP2P_CACHE_VERIFY_ON_START", os("full")),
            ("ELIOP2P_CACHE_WRITE_QUEUE", os("1024")),
        ],
    )
}

fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_fills_leaves_nothing_served_wrong() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    origin.create_bucket("crash").await?;
    let mut objects = Vec::new();
    for i in 0..16 {
        let data = test_data((4 << 20) + i * 1000, 100 + i as u64);
        origin
            .put("crash", &format!("obj-{i}"), data.clone())
            .await?;
        objects.push(data);
    }
    let disk = tempfile::tempdir()?;
    let (mut child, proxy, admin) = spawn_disk_node(&origin, disk.path())?;
    let c = TestClient::new();
    // A burst of fills; kill -9 once the disk tier is being written.
    let mut burst = Vec::new();
    for i in 0..objects.len() {
        let (c, u) = (c.clone(), format!("{proxy}/crash/obj-{i}"));
        burst.push(tokio::spawn(async move { c.get(&u, &[]).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c.get(&format!("{admin}/metrics"), &[]).await?;
        if metric_value(
            &String::from_utf8_lossy(&m.body),
            "eliop2p_cache_disk_writes_total",
        ) >= 8
        {
            break;
        }
        assert!(Instant::now() < deadline, "disk writes never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()?
            .success()
    );
    child.wait()?;
    for t in burst {
        let _ = t.await?; // cut short or complete: either is fine for a killed node
    }
    // Restart on the same directory: every object byte-exact, some from disk.
    let (mut child, proxy, admin) = spawn_disk_node(&origin, disk.path())?;
    for (i, data) in objects.iter().enumerate() {
        let r = c.get(&format!("{proxy}/crash/obj-{i}"), &[]).await?;
        assert_eq!(r.status, 200);
        assert_eq!(
            sha256_hex(&r.body),
            sha256_hex(data),
            "object {i} after the crash"
        );
    }
    let m = c.get(&format!("{admin}/metrics"), &[]).await?;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        metric_value(&text, "eliop2p_proxy_served_bytes_total{source=\"disk\"}") > 0,
        "chunks written before the crash are served after it"
    );
    assert_eq!(
        metric_value(&text, "eliop2p_cache_corrupt_chunks_total"),
        0,
        "rename-after-fsync: no partial chunk under a real name"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?
            .success()
    );
    assert!(child.wait()?.success());
    origin.stop().await;
    Ok(())
}

/// Reads the first stdout line of a child and returns the text after `marker`.
fn first_line_addr(child: &mut std::process::Child, marker: &str) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .unwrap();
    line.split(marker)
        .nth(1)
        .and_then(|s| s.split([',', '\n']).next())
        .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"))
        .trim()
        .to_owned()
}

fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_and_nodes_as_processes() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("procs", "obj", 5 << 20, 77).await?;
    let cp_dir = tempfile::tempdir()?;
    let mut cp = Command::new(BIN)
        .args(["control-plane", "--control-plane-listen", "127.0.0.1:0"])
        .env("ELIOP2P_CONTROL_PLANE_TOKEN", "proc-token")
        .env("ELIOP2P_CONTROL_PLANE_DATA_DIR", cp_dir.path())
        .env("ELIOP2P_CONTROL_PLANE_HEARTBEAT_INTERVAL", "200ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let cp_url = first_line_addr(&mut cp, "control plane on ");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let cp_os = std::ffi::OsStr::new(cp_url.as_str());
    let node_env = [
        ("ELIOP2P_CONTROL_PLANE_ENDPOINT", cp_os),
        ("ELIOP2P_CONTROL_PLANE_TOKEN", os("proc-token")),
        ("ELIOP2P_CONTROL_PLANE_HEARTBEAT_INTERVAL", os("200ms")),
        ("ELIOP2P_DISCOVERY_GOSSIP_INTERVAL", os("200ms")),
        ("ELIOP2P_P2P_LISTEN", os("127.0.0.1:0")),
        ("ELIOP2P_P2P_CLUSTER_SECRET", os("proc-secret")),
    ];
    let mut a_env = node_env.to_vec();
    a_env.push(("ELIOP2P_NODE_ID", os("node-a")));
    let mut b_env = node_env.to_vec();
    b_env.push(("ELIOP2P_NODE_ID", os("node-b")));
    let (mut a, a_proxy, _) = spawn_node_process(&origin, &a_env)?;
    let (mut b, b_proxy, _) = spawn_node_process(&origin, &b_env)?;
    let client = TestClient::new();
    let auth = [("authorization", "Bearer proc-token")];
    let online = async |client: &TestClient| -> Vec<String> {
        let r = client
            .get(&format!("{cp_url}/api/v1/nodes"), &auth)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "online")
            .map(|n| n["node_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while online(&client).await.len() < 2 {
        assert!(Instant::now() < deadline, "nodes did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the gossip (seeded from the control plane's list) join up too.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let r = client.get(&format!("{a_proxy}/procs/obj"), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let cold = origin.gets_of("procs", "obj").len();
    assert_eq!(cold, 5, "1 MiB chunks, each read once");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = client.get(&format!("{b_proxy}/procs/obj"), &[]).await?;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(
        origin.gets_of("procs", "obj").len(),
        cold,
        "node b read from node a"
    );

    // `eliop2p status` shows both nodes from the control plane.
    let out = Command::new(BIN)
        .args(["status"])
        .env("ELIOP2P_CONTROL_PLANE_ENDPOINT", &cp_url)
        .env("ELIOP2P_CONTROL_PLANE_TOKEN", "proc-token")
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("node-a") && table.contains("node-b"),
        "{table}"
    );
    assert!(table.contains("2 nodes, 2 online"), "{table}");
    assert!(
        table.contains("SERVED/S") && table.contains("UP/S"),
        "{table}"
    );
    let out = Command::new(BIN)
        .args(["status"])
        .env("ELIOP2P_CONTROL_PLANE_ENDPOINT", &cp_url)
        .env("ELIOP2P_CONTROL_PLANE_TOKEN", "wrong")
        .output()?;
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // A graceful stop deregisters.
    sigterm(&b);
    assert!(b.wait()?.success());
    assert_eq!(online(&client).await, ["node-a"]);
    sigterm(&a);
    assert!(a.wait()?.success());
    sigterm(&cp);
    assert!(cp.wait()?.success());
    origin.stop().await;
    Ok(())
}

/// The control plane over https with a private CA (issue 19, item 2): a node
/// process registers through `https://` with `control_plane.ca_file` and the
/// token, another with a client certificate of `control_plane.client_ca` and no
/// token, and `eliop2p status` lists both; without the CA (or with another) the
/// error names `control_plane.ca_file`; with neither token nor certificate, 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_over_https_with_a_private_ca() -> anyhow::Result<()> {
    let origin = TestOrigin::start().await?;
    let (ca, other) = (eliop2p_testkit::TestCa::new()?, eliop2p_testkit::TestCa::new()?);
    let (cert, key) = ca.server_files();
    // Its store in a directory of its own (the default is /var/lib/eliop2p).
    let cp_dir = tempfile::tempdir()?;
    let mut cp = Command::new(BIN)
        .args(["control-plane", "--control-plane-listen", "127.0.0.1:0"])
        .env("ELIOP2P_CONTROL_PLANE_DATA_DIR", cp_dir.path())
        .env("ELIOP2P_CONTROL_PLANE_TOKEN", "tls-token")
        .env("ELIOP2P_CONTROL_PLANE_TLS_CERT", &cert)
        .env("ELIOP2P_CONTROL_PLANE_TLS_KEY", &key)
        .env("ELIOP2P_CONTROL_PLANE_CLIENT_CA", &ca.ca_pem)
        .env("ELIOP2P_CONTROL_PLANE_HEARTBEAT_INTERVAL", "200ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let cp_url = first_line_addr(&mut cp, "control plane on ");
    assert!(cp_url.starts_with("https://127.0.0.1:"), "{cp_url}");
    fn os(s: &str) -> &std::ffi::OsStr {
        std::ffi::OsStr::new(s)
    }
    let env = [
        ("ELIOP2P_CONTROL_PLANE_ENDPOINT", os(&cp_url)),
        ("ELIOP2P_CONTROL_PLANE_TOKEN", os("tls-token")),
        ("ELIOP2P_CONTROL_PLANE_CA_FILE", ca.ca_pem.as_os_str()),
        ("ELIOP2P_CONTROL_PLANE_HEARTBEAT_INTERVAL", os("200ms")),
        ("ELIOP2P_DISCOVERY_MODE", os("control-plane")),
        ("ELIOP2P_P2P_LISTEN", os("127.0.0.1:0")),
        ("ELIOP2P_P2P_CLUSTER_SECRET", os("tls-secret")),
        ("ELIOP2P_NODE_ID", os("node-tls")),
    ];
    let (mut node, _, _) = spawn_node_process(&origin, &env)?;
    // The second node: a client certificate, no token.
    let client = ca.node_cert("node-cert", false)?;
    let mut cert_env: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "ELIOP2P_CONTROL_PLANE_TOKEN" && *k != "ELIOP2P_NODE_ID")
        .copied()
        .collect();
    cert_env.extend([
        ("ELIOP2P_NODE_ID", os("node-cert")),
        ("ELIOP2P_CONTROL_PLANE_TLS_CLIENT_CERT", client.cert.as_os_str()),
        ("ELIOP2P_CONTROL_PLANE_TLS_CLIENT_KEY", client.key.as_os_str()),
    ]);
    let (mut node2, _, _) = spawn_node_process(&origin, &cert_env)?;
    let run = |vars: &[(&str, &std::ffi::OsStr)]| {
        let mut c = Command::new(BIN);
        c.args(["status"]).env("ELIOP2P_CONTROL_PLANE_ENDPOINT", &cp_url);
        for k in ["ELIOP2P_CONTROL_PLANE_CA_FILE", "ELIOP2P_CONTROL_PLANE_TOKEN"] {
            c.env_remove(k);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let status = |ca_file: Option<&std::path::Path>| {
        let mut vars = vec![("ELIOP2P_CONTROL_PLANE_TOKEN", os("tls-token"))];
        if let Some(f) = ca_file {
            vars.push(("ELIOP2P_CONTROL_PLANE_CA_FILE", f.as_os_str()));
        }
        run(&vars)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = status(Some(&ca.ca_pem));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && table.contains("node-tls") && table.contains("node-cert") && table.contains("2 online") {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not register over https: {table} {}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for wrong in [None, Some(other.ca_pem.as_path())] {
        let out = status(wrong);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{err}");
        assert!(err.contains("control_plane.ca_file"), "{err}");
    }
    // The CLI with the client certificate and no token; then with neither.
    let out = run(&[
        ("ELIOP2P_CONTROL_PLANE_CA_FILE", ca.ca_pem.as_os_str()),
        ("ELIOP2P_CONTROL_PLANE_TLS_CLIENT_CERT", client.cert.as_os_str()),
        ("ELIOP2P_CONTROL_PLANE_TLS_CLIENT_KEY", client.key.as_os_str()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[("ELIOP2P_CONTROL_PLANE_CA_FILE", ca.ca_pem.as_os_str())]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // A certificate of another CA is no credential either.
    let foreign = other.node_cert("node-cert", false)?;
    let out = run(&[
        ("ELIOP2P_CONTROL_PLANE_CA_FILE", ca.ca_pem.as_os_str()),
        ("ELIOP2P_CONTROL_PLANE_TLS_CLIENT_CERT", foreign.cert.as_os_str()),
        ("ELIOP2P_CONTROL_PLANE_TLS_CLIENT_KEY", foreign.key.as_os_str()),
    ]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // A certificate speaks for the nodes it names only: node-cert's certificate
    // may heartbeat node-cert, not node-tls, and may not register node-tls.
    let curl = |method: &str, path: &str, body: &str| -> anyhow::Result<(String, String)> {
        let out = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H", "content-type: application/json", "-d", body])
            .arg("--cacert")
            .arg(&ca.ca_pem)
            .arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key)
            .arg(format!("{cp_url}{path}"))
            .env_remove("SSL_CERT_FILE")
            .env_remove("CURL_CA_BUNDLE")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.to_owned(), body.to_owned()))
    };
    assert_eq!(curl("PUT", "/api/v1/nodes/node-cert/heartbeat", "{}")?.0, "200");
    let (code, body) = curl("PUT", "/api/v1/nodes/node-tls/heartbeat", "{}")?;
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("CertificateNotForNode") && body.contains("node-tls"), "{body}");
    let reg = r#"{"node_id":"node-tls","p2p_addr":"127.0.0.1:1","capacity":{},"labels":{}}"#;
    assert_eq!(curl("POST", "/api/v1/nodes", reg)?.0, "403");
    assert_eq!(curl("DELETE", "/api/v1/nodes/node-tls", "")?.0, "403");
    assert_eq!(curl("GET", "/api/v1/nodes/node-tls", "")?.0, "200", "reads are open to any certificate");
    sigterm(&node2);
    assert!(node2.wait()?.success());
    sigterm(&node);
    assert!(node.wait()?.success());
    // Rotation without a restart: the control plane's files now hold another
    // CA's certificate; within a few seconds clients must trust that CA.
    let (new_cert, new_key) = other.server_files();
    std::fs::copy(&new_key, &key)?;
    std::fs::copy(&new_cert, &cert)?;
    let with_ca = |ca_file: &std::path::Path| {
        run(&[
            ("ELIOP2P_CONTROL_PLANE_TOKEN", os("tls-token")),
            ("ELIOP2P_CONTROL_PLANE_CA_FILE", ca_file.as_os_str()),
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !with_ca(&other.ca_pem).status.success() {
        assert!(Instant::now() < deadline, "the control plane did not reload its certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(with_ca(&ca.ca_pem).status.code(), Some(6), "the old certificate is gone");
    // The reload and the foreign client certificate are in the metrics.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&other.ca_pem)
        .arg(format!("{cp_url}/metrics"))
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .output()?;
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.contains("eliop2p_control_tls_reloads_total 1"), "{metrics}");
    assert!(metrics.contains("eliop2p_control_tls_handshake_failures_total{reason=\"unknown_ca\"} 1"), "{metrics}");
    sigterm(&cp);
    assert!(cp.wait()?.success());
    origin.stop().await;
    Ok(())
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Command::new(BIN)
        .args([
            "control-plane",
            "--log-format",
            "json",
            "--control-plane-listen",
            "127.0.0.1:0",
        ])
        .env("ELIOP2P_CONTROL_PLANE_DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(cp.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Possibly before its signal handler is installed: only the log line matters.
    let _ = cp.kill();
    let _ = cp.wait();
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["fields"]["message"].is_string(), "{line}");
    let out = Command::new(BIN)
        .args(["control-plane", "--log-format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A node that signs with its own keys for any client listens on loopback unless
/// told otherwise: the default address becomes 127.0.0.1, an explicit network
/// address is refused with the key named, and client keys or
/// `proxy.allow_anonymous_network` open it (issue 15, open relay by default).
#[test]
fn a_node_signing_for_anyone_listens_on_loopback_only() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["node", "--print-config"]).args(args);
        cmd.env("ELIOP2P_ORIGIN_ENDPOINT", "http://127.0.0.1:1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, text) = run(&[], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("listens on 127.0.0.1:8080 and trusts local clients only"), "{text}");
    let (ok, text) = run(&["--proxy-listen", "0.0.0.0:8080"], &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("config key proxy.listen: 0.0.0.0:8080"), "{text}");
    let (ok, text) = run(&["--proxy-listen", "0.0.0.0:8080"], &[("ELIOP2P_PROXY_ALLOW_ANONYMOUS_NETWORK", "true")]);
    assert!(ok && text.contains("listens on 0.0.0.0:8080 and trusts ANY client"), "{text}");
    let (ok, text) = run(&[], &[("ELIOP2P_PROXY_AUTH", "passthrough")]);
    assert!(ok && text.contains("listens on 0.0.0.0:8080 and trusts every client, as far as the origin"), "{text}");
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "AK SECRET\n").unwrap();
    let (ok, text) = run(&[], &[("ELIOP2P_PROXY_CLIENT_KEYS_FILE", keys.path().to_str().unwrap())]);
    assert!(ok && text.contains("listens on 0.0.0.0:8080 and trusts clients whose requests are signed"), "{text}");
}

/// A disk tier larger than its filesystem is a config error at start (before: the
/// node started and its disk tier stopped evicting at ENOSPC).
#[test]
fn a_disk_size_beyond_the_filesystem_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["node", "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("ELIOP2P_ORIGIN_ENDPOINT", "http://127.0.0.1:1")
        .env("ELIOP2P_CACHE_DISK_PATH", dir.path().join("cache"))
        .env("ELIOP2P_CACHE_DISK_SIZE", "1000000TiB")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started with a disk tier larger than its filesystem");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("config key cache.disk_size"), "{err}");
}
