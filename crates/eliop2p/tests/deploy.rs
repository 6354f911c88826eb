//! The deployment files stay true to the binary: the systemd units' command lines
//! with their environment files, the Kubernetes manifests' config and environment,
//! and every `ELIOP2P_*` variable named anywhere in `deploy/`, the Dockerfile and
//! `docs/deployment.md` are accepted by `eliop2p` (an unknown variable would make
//! a node exit 2 at start).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_eliop2p");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `ExecStart=` of a unit, as arguments after the binary.
fn exec_start(unit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = line.split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/eliop2p"));
    words.collect()
}

fn print_config(args: &[String], env: &[(String, String)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--print-config");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ELIOP2P_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn systemd_units_start_with_their_files() {
    let dir = root().join("deploy/systemd");
    let mut args = exec_start(&dir.join("eliop2p-node.service"));
    let at = args.iter().position(|a| a == "--config").unwrap() + 1;
    args[at] = dir.join("node.toml").display().to_string();
    let cfg = print_config(&args, &env_file(&dir.join("node.env")));
    assert!(cfg.contains("disk_size = \"800GiB\""), "{cfg}");
    assert!(cfg.contains("memory_prefault = \"true\""), "{cfg}");
    assert!(cfg.contains("zone = \"rack-a\""), "{cfg}");
    let args = exec_start(&dir.join("eliop2p-control-plane.service"));
    let cfg = print_config(&args, &env_file(&dir.join("control-plane.env")));
    assert!(cfg.contains("/var/lib/eliop2p/control-plane"), "{cfg}");
}

/// Python (PyYAML comes with the aws CLI) turns the manifests of
/// `deploy/kubernetes` into JSON.
fn manifests() -> Vec<serde_json::Value> {
    manifests_in("deploy/kubernetes")
}

fn manifests_in(dir: &str) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import glob, json, sys, yaml\n\
             docs = [d for f in sorted(glob.glob(sys.argv[1] + '/*.yaml')) for d in yaml.safe_load_all(open(f)) if d]\n\
             print(json.dumps(docs))",
        )
        .arg(root().join(dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kubernetes_manifests_parse_and_their_config_loads() {
    let docs = manifests();
    let kind =
        |k: &str| -> Vec<&serde_json::Value> { docs.iter().filter(|d| d["kind"] == k).collect() };
    let ds = kind("DaemonSet");
    assert_eq!(ds.len(), 1);
    let pod = &ds[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == "/var/cache/eliop2p")
    );
    assert_eq!(kind("Deployment").len(), 1);
    assert_eq!(kind("Service").len(), 1);
    // The node's ConfigMap with the environment the DaemonSet gives it.
    let toml = kind("ConfigMap")[0]["data"]["node.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, toml).unwrap();
    let env: Vec<(String, String)> = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("ELIOP2P_"))
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match (&e["value"], name.as_str()) {
                (serde_json::Value::String(v), _) => v.clone(),
                (_, "ELIOP2P_P2P_ADVERTISE_ADDR") => "10.1.2.3:9000".into(),
                _ => "from-a-secret".into(),
            };
            (name, value)
        })
        .collect();
    let mut args: Vec<String> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let at = args.iter().position(|a| a == "--config").unwrap() + 1;
    args[at] = file.display().to_string();
    let cfg = print_config(&args, &env);
    assert!(cfg.contains("memory_size = \"16GiB\""), "{cfg}");
    // The control plane's.
    let cp = &kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = cp["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let env: Vec<(String, String)> = cp["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("ELIOP2P_"))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or("from-a-secret").to_owned(),
            )
        })
        .collect();
    print_config(&args, &env);
}

/// The overlay for control-plane replicas on Redis: the replicas' environment
/// (the base's plus the patch's) loads as a control plane on Redis, and Redis
/// keeps an append-only file.
#[test]
fn the_redis_replicas_overlay_loads() {
    let docs = manifests_in("deploy/kubernetes/replicas-redis");
    let deployment = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Deployment {name}"))
    };
    let patch = deployment("eliop2p-control-plane");
    assert_eq!(patch["spec"]["replicas"], 3);
    let redis = &deployment("eliop2p-redis")["spec"]["template"]["spec"]["containers"][0];
    assert!(redis["args"].to_string().contains("appendonly"), "{redis}");
    let base = manifests();
    let cp = &base.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]["containers"][0];
    let mut env: Vec<(String, String)> = Vec::new();
    for e in cp["env"].as_array().unwrap().iter().chain(patch["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap()) {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = match (&e["value"], name.as_str()) {
            (serde_json::Value::String(v), _) => v.clone(),
            (_, "ELIOP2P_CONTROL_PLANE_REDIS_URL") => "redis://:pw@eliop2p-redis:6379/0".into(),
            _ => "from-a-secret".into(),
        };
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    let args: Vec<String> = cp["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let cfg = print_config(&args, &env);
    assert!(cfg.contains("store = \"redis\""), "{cfg}");
    assert!(cfg.contains("redis_url = \"<redacted>\""), "the URL holds a password: {cfg}");
}

/// The overlays that give nodes temporary origin credentials on EKS (IRSA, Pod
/// Identity): the DaemonSet's environment with the patch applied loads, with the
/// source the overlay names and no static keys, and the service account exists.
#[test]
fn the_origin_credential_overlays_load() {
    let base = manifests();
    let ds = base.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let node = &ds["spec"]["template"]["spec"]["containers"][0];
    for (dir, source) in [("deploy/kubernetes/aws-irsa", "web-identity"), ("deploy/kubernetes/aws-pod-identity", "container")] {
        let docs = manifests_in(dir);
        let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").unwrap_or_else(|| panic!("{dir}: ServiceAccount"));
        let patch = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap_or_else(|| panic!("{dir}: DaemonSet patch"));
        assert_eq!(patch["spec"]["template"]["spec"]["serviceAccountName"], sa["metadata"]["name"], "{dir}");
        let patch_env = patch["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        let mut env: Vec<(String, String)> = Vec::new();
        for e in node["env"].as_array().unwrap().iter().chain(patch_env) {
            let name = e["name"].as_str().unwrap().to_owned();
            env.retain(|(n, _)| *n != name);
            if e["$patch"] == "delete" || !name.starts_with("ELIOP2P_") {
                continue;
            }
            let value = match (&e["value"], name.as_str()) {
                (serde_json::Value::String(v), _) => v.clone(),
                (_, "ELIOP2P_P2P_ADVERTISE_ADDR") => "10.1.2.3:9000".into(),
                _ => "from-a-secret".into(),
            };
            env.push((name, value));
        }
        assert!(!env.iter().any(|(n, _)| n == "ELIOP2P_ORIGIN_ACCESS_KEY"), "{dir}: static keys left in");
        let toml = base.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["node.toml"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("node.toml");
        std::fs::write(&file, toml).unwrap();
        let args = ["node".to_owned(), "--config".to_owned(), file.display().to_string()];
        let cfg = print_config(&args, &env);
        assert!(cfg.contains(&format!("credentials = \"{source}\"")), "{dir}: {cfg}");
    }
}

#[test]
fn every_variable_named_in_the_deployment_files_exists() {
    let help = Command::new(BIN).args(["node", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut files = vec![root().join("Dockerfile"), root().join("docs/deployment.md")];
    for sub in ["deploy/systemd", "deploy/kubernetes", "deploy/kubernetes/replicas-redis", "deploy/kubernetes/aws-irsa", "deploy/kubernetes/aws-pod-identity"] {
        for e in std::fs::read_dir(root().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    let mut seen = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("ELIOP2P_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if ["ELIOP2P_", "ELIOP2P_LOG_FORMAT", "ELIOP2P_TEST_ALLOW_INSECURE_TLS"].contains(&name.as_str()) {
                continue; // a prefix in prose; the global log flag; the tests' TLS switch
            }
            assert!(
                help.contains(&format!("[env {name}]")),
                "{} names {name}, which no config key reads",
                f.display()
            );
            seen += 1;
        }
    }
    assert!(seen > 10);
}
