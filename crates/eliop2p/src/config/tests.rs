use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn precedence_flag_env_file_default() {
    let file = "[cache]\nmemory_size = \"1GiB\"\nchunk_size = 1048576\n[origin]\nendpoint = \"http://a\"\n";
    let flag = (find("cache.memory_size").unwrap(), "3GiB".to_owned());
    let e = Effective::load(
        Some(("f.toml", file)),
        &env(&[("ELIOP2P_CACHE_MEMORY_SIZE", "2GiB")]),
        &[flag],
    )
    .unwrap();
    assert_eq!(e.size("cache.memory_size"), 3 << 30);
    let e = Effective::load(
        Some(("f.toml", file)),
        &env(&[("ELIOP2P_CACHE_MEMORY_SIZE", "2GiB")]),
        &[],
    )
    .unwrap();
    assert_eq!(e.size("cache.memory_size"), 2 << 30);
    let e = Effective::load(Some(("f.toml", file)), &[], &[]).unwrap();
    assert_eq!(e.size("cache.memory_size"), 1 << 30);
    assert_eq!(e.size("cache.chunk_size"), 1 << 20);
    let e = Effective::load(None, &[], &[]).unwrap();
    assert_eq!(e.size("cache.memory_size"), 4 << 30);
    assert_eq!(e.addr("proxy.listen").port(), 8080);
}

#[test]
fn lists_from_env_are_comma_separated() {
    let e = Effective::load(
        None,
        &env(&[("ELIOP2P_PROXY_VIRTUAL_HOST_DOMAINS", "a.example, b.example")]),
        &[],
    )
    .unwrap();
    assert_eq!(
        e.list("proxy.virtual_host_domains"),
        vec!["a.example", "b.example"]
    );
}

#[test]
fn switches_take_toml_booleans_and_strings() {
    let err = |r: anyhow::Result<Effective>| format!("{:#}", r.err().expect("an error"));
    for (text, want) in [
        ("true", true),
        ("false", false),
        ("\"true\"", true),
        ("\"false\"", false),
    ] {
        let file = format!("[cache]\nmemory_prefault = {text}\n");
        let e = Effective::load(Some(("f", &file)), &[], &[]).unwrap();
        assert_eq!(e.str("cache.memory_prefault") == "true", want, "{text}");
    }
    let e = Effective::load(
        None,
        &env(&[("ELIOP2P_CACHE_MEMORY_PREFAULT", "true")]),
        &[],
    )
    .unwrap();
    assert_eq!(e.str("cache.memory_prefault"), "true");
    assert_eq!(
        Effective::load(None, &[], &[])
            .unwrap()
            .str("cache.memory_prefault"),
        "false"
    );
    for bad in ["1", "\"yes\"", "[true]"] {
        let file = format!("[cache]\nmemory_prefault = {bad}\n");
        let msg = err(Effective::load(Some(("f", &file)), &[], &[]));
        assert!(
            msg.contains("config key cache.memory_prefault (from f): expected one of"),
            "{msg}"
        );
    }
    // A boolean is no answer to a choice that is not a switch.
    assert!(
        err(Effective::load(
            Some(("f", "[origin]\naddressing = true\n")),
            &[],
            &[]
        ))
        .contains("config key origin.addressing")
    );
}

#[test]
fn errors_name_the_key() {
    let err = |r: anyhow::Result<Effective>| format!("{:#}", r.err().expect("an error"));
    assert!(
        err(Effective::load(
            Some(("f", "[cache]\nmemroy_size = 1\n")),
            &[],
            &[]
        ))
        .contains("unknown config key cache.memroy_size")
    );
    assert!(
        err(Effective::load(
            Some(("f", "[cache]\nmemory_size = \"4XB\"\n")),
            &[],
            &[]
        ))
        .contains("config key cache.memory_size (from f)")
    );
    assert!(
        err(Effective::load(
            None,
            &env(&[("ELIOP2P_CACHE_CHUNKSIZE", "1")]),
            &[]
        ))
        .contains("ELIOP2P_CACHE_CHUNKSIZE")
    );
    assert!(
        err(Effective::load(
            None,
            &env(&[("ELIOP2P_PROXY_LISTEN", "nowhere")]),
            &[]
        ))
        .contains("config key proxy.listen (from env ELIOP2P_PROXY_LISTEN)")
    );
    assert!(
        err(Effective::load(
            Some(("f", "[origin]\naddressing = \"dns\"\n")),
            &[],
            &[]
        ))
        .contains("origin.addressing")
    );
    assert!(err(Effective::load(Some(("f", "not toml [")), &[], &[])).contains("not valid TOML"));
    let e = Effective::load(None, &[], &[]).unwrap();
    assert!(format!("{:#}", e.node_config().unwrap_err()).contains("origin.endpoint is required"));
}

#[test]
fn printed_config_reloads_and_redacts() {
    let e = Effective::load(
        None,
        &env(&[
            ("ELIOP2P_ORIGIN_SECRET_KEY", "hunter2"),
            ("ELIOP2P_ORIGIN_ENDPOINT", "http://o:1"),
        ]),
        &[],
    )
    .unwrap();
    let text = e.to_toml();
    assert!(!text.contains("hunter2"));
    assert!(text.contains("secret_key = \"<redacted>\""));
    let again = Effective::load(Some(("printed", &text)), &[], &[]).unwrap();
    assert_eq!(again.str("origin.endpoint"), "http://o:1");
    assert!(again.node_config().is_ok());
}

#[test]
fn discovery_modes_and_their_errors() {
    let base = [
        ("ELIOP2P_ORIGIN_ENDPOINT", "http://127.0.0.1:1"),
        ("ELIOP2P_P2P_CLUSTER_SECRET", "s"),
        ("ELIOP2P_NODE_ID", "n1"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        Effective::load(None, &env(&v), &[]).unwrap()
    };
    // auto: hybrid with a control plane, gossip with seeds, static otherwise.
    let e = with(&[("ELIOP2P_CONTROL_PLANE_ENDPOINT", "http://10.0.0.5:8081")]);
    assert_eq!(e.discovery_mode(), "hybrid");
    let n = e.node_config().unwrap();
    let cc = n.p2p.as_ref().unwrap().cluster.as_ref().unwrap();
    assert!(cc.gossip);
    assert_eq!(
        n.control_plane.as_ref().unwrap().endpoints,
        ["http://10.0.0.5:8081"]
    );
    assert_eq!(n.p2p.as_ref().unwrap().node_id, "n1");
    let e = with(&[("ELIOP2P_DISCOVERY_SEEDS", "127.0.0.1:9000,127.0.0.1:9001")]);
    assert_eq!(e.discovery_mode(), "gossip");
    let n = e.node_config().unwrap();
    assert_eq!(n.p2p.unwrap().cluster.unwrap().seeds.len(), 2);
    assert!(n.control_plane.is_none());
    let e = with(&[]);
    assert_eq!(e.discovery_mode(), "static");
    assert!(e.node_config().unwrap().p2p.unwrap().cluster.is_none());
    let e = with(&[
        ("ELIOP2P_DISCOVERY_MODE", "control-plane"),
        ("ELIOP2P_CONTROL_PLANE_ENDPOINT", "http://cp:8081"),
    ]);
    let n = e.node_config().unwrap();
    assert!(!n.p2p.unwrap().cluster.unwrap().gossip);

    let err = |extra: &[(&str, &str)]| format!("{:#}", with(extra).node_config().unwrap_err());
    let m = err(&[("ELIOP2P_DISCOVERY_MODE", "control-plane")]);
    assert!(m.contains("control_plane.endpoint"), "{m}");
    let m = err(&[("ELIOP2P_CONTROL_PLANE_ENDPOINT", "ftp://x")]);
    assert!(m.contains("control_plane.endpoint"), "{m}");
    // Several replicas: each is checked, in order of use.
    let e = with(&[("ELIOP2P_CONTROL_PLANE_ENDPOINT", "http://cp-a:8081, http://cp-b:8081/")]);
    assert_eq!(e.discovery_mode(), "hybrid");
    let cp = e.node_config().unwrap().control_plane.unwrap();
    assert_eq!(cp.endpoints, ["http://cp-a:8081", "http://cp-b:8081/"]);
    let m = err(&[("ELIOP2P_CONTROL_PLANE_ENDPOINT", "http://cp-a:8081,cp-b")]);
    assert!(m.contains("control_plane.endpoint") && m.contains("cp-b"), "{m}");
    let m = err(&[("ELIOP2P_DISCOVERY_SEEDS", "not-an-address")]);
    assert!(m.contains("discovery.seeds"), "{m}");
    // Dual stack: listeners on [::], IPv6 seeds and control planes; a node
    // listening on every interface advertises the IPv6 source address that
    // routes to its seed (it used to probe with an IPv4 socket and advertise [::]).
    let e = with(&[
        ("ELIOP2P_P2P_LISTEN", "[::]:9000"),
        ("ELIOP2P_PROXY_LISTEN", "[::]:8080"),
        ("ELIOP2P_DISCOVERY_SEEDS", "[::1]:9001"),
    ]);
    let n = e.node_config().unwrap();
    let cc = n.p2p.unwrap().cluster.unwrap();
    assert_eq!(cc.seeds, ["[::1]:9001".parse().unwrap()]);
    assert_eq!(cc.advertise, Some("[::1]:9000".parse().unwrap()));
    let e = with(&[("ELIOP2P_CONTROL_PLANE_ENDPOINT", "http://[::1]:8081")]);
    assert_eq!(e.node_config().unwrap().control_plane.unwrap().endpoints, ["http://[::1]:8081"]);
    let m = err(&[("ELIOP2P_NODE_ID", "bad id!")]);
    assert!(m.contains("node.id"), "{m}");
    let m = err(&[
        ("ELIOP2P_DISCOVERY_SEEDS", "127.0.0.1:9000"),
        ("ELIOP2P_DISCOVERY_DEAD_AFTER", "1s"),
    ]);
    assert!(m.contains("discovery.dead_after"), "{m}");
    let bad = Effective::load(None, &env(&[("ELIOP2P_DISCOVERY_MODE", "mesh")]), &[]);
    let Err(bad) = bad else {
        panic!("discovery.mode = mesh accepted")
    };
    assert!(format!("{bad:#}").contains("discovery.mode"));
}

/// `node.owner = false` (a node on a slower NIC): its gossip `NodeInfo` says
/// so, and so does its label for the control plane; a node that may own sends
/// neither; a value other than true or false names the key.
#[test]
fn a_node_that_may_not_own_chunks_says_so_to_gossip_and_the_control_plane() {
    let load = |extra: &[(&str, &str)]| {
        let mut v = vec![
            ("ELIOP2P_ORIGIN_ENDPOINT", "http://127.0.0.1:1"),
            ("ELIOP2P_P2P_CLUSTER_SECRET", "s"),
            ("ELIOP2P_NODE_ID", "n1"),
            ("ELIOP2P_CONTROL_PLANE_ENDPOINT", "http://10.0.0.5:8081"),
        ];
        v.extend_from_slice(extra);
        Effective::load(None, &env(&v), &[])
    };
    let n = load(&[]).unwrap().node_config().unwrap();
    assert!(n.p2p.unwrap().cluster.unwrap().owner);
    assert!(!n.control_plane.unwrap().labels.contains_key("owner"));
    let n = load(&[("ELIOP2P_NODE_OWNER", "false")]).unwrap().node_config().unwrap();
    assert!(!n.p2p.unwrap().cluster.unwrap().owner);
    assert_eq!(n.control_plane.unwrap().labels.get("owner").map(String::as_str), Some("false"));
    let Err(e) = load(&[("ELIOP2P_NODE_OWNER", "no")]) else { panic!("node.owner = no accepted") };
    assert!(format!("{e:#}").contains("node.owner"), "{e:#}");
}

#[test]
fn node_id_is_generated_once_and_kept_in_the_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    let e = Effective::load(
        None,
        &env(&[
            ("ELIOP2P_CACHE_DISK_PATH", path.to_str().unwrap()),
            ("ELIOP2P_CACHE_DISK_SIZE", "1GiB"),
        ]),
        &[],
    )
    .unwrap();
    let first = e.node_id().unwrap();
    assert!(!first.is_empty());
    assert_eq!(e.node_id().unwrap(), first, "stable across starts");
    assert_eq!(
        std::fs::read_to_string(path.join("state/node-id"))
            .unwrap()
            .trim(),
        first
    );
    // An id kept at the top of the cache directory by an earlier version moves
    // under state/ and stays the node's id.
    std::fs::remove_dir_all(path.join("state")).unwrap();
    std::fs::write(path.join("node-id"), "old-host-1234abcd\n").unwrap();
    assert_eq!(e.node_id().unwrap(), "old-host-1234abcd");
    assert!(!path.join("node-id").exists(), "nothing stays outside chunks/, tmp/ and state/");
    assert_eq!(e.node_id().unwrap(), "old-host-1234abcd");
    let e = Effective::load(
        None,
        &env(&[
            ("ELIOP2P_CACHE_DISK_PATH", path.to_str().unwrap()),
            ("ELIOP2P_CACHE_DISK_SIZE", "1GiB"),
            ("ELIOP2P_NODE_ID", "override-1"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(e.node_id().unwrap(), "override-1");
}

#[test]
fn control_plane_service_config() {
    let e = Effective::load(
        None,
        &env(&[
            ("ELIOP2P_CONTROL_PLANE_TOKEN", "t"),
            ("ELIOP2P_CONTROL_PLANE_DATA_DIR", ""),
            ("ELIOP2P_REPLICATION_MIN_REPLICAS", "3"),
        ]),
        &[],
    )
    .unwrap();
    let c = e.control_config().unwrap();
    assert_eq!(c.token.as_deref(), Some("t"));
    assert!(c.data_dir.is_none());
    assert_eq!(c.replication.min_replicas, 3);
    assert_eq!(e.addr("control_plane.listen").port(), 8081);
    let e = Effective::load(
        None,
        &env(&[("ELIOP2P_CONTROL_PLANE_DEAD_AFTER", "1s")]),
        &[],
    )
    .unwrap();
    assert!(format!("{:#}", e.control_config().unwrap_err()).contains("control_plane.dead_after"));
}

#[test]
fn control_plane_replicas_on_redis_config() {
    let load = |vars: &[(&str, &str)]| {
        let mut all = vec![("ELIOP2P_CONTROL_PLANE_STORE", "redis")];
        all.extend_from_slice(vars);
        Effective::load(None, &env(&all), &[]).unwrap().control_config()
    };
    let c = load(&[("ELIOP2P_CONTROL_PLANE_REDIS_URL", "redis://10.0.0.7:6379/2")]).unwrap();
    let r = c.redis.expect("redis store");
    assert_eq!((r.url.as_str(), r.prefix.as_str()), ("redis://10.0.0.7:6379/2", "eliop2p:"));
    assert_eq!(r.lease, std::time::Duration::from_secs(10));
    assert!(c.data_dir.is_none(), "the shared store replaces the embedded one");
    for (vars, key) in [
        (&[][..], "control_plane.redis_url"),
        (&[("ELIOP2P_CONTROL_PLANE_REDIS_URL", "http://10.0.0.7:6379")][..], "control_plane.redis_url"),
        (&[("ELIOP2P_CONTROL_PLANE_REDIS_URL", "rediss://10.0.0.7:6379/#insecure")][..], "control_plane.redis_url: a fragment"),
        (
            &[
                ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "redis://10.0.0.7:6379"),
                ("ELIOP2P_CONTROL_PLANE_REDIS_CA_FILE", "/etc/ssl/ca.pem"),
            ][..],
            "control_plane.redis_ca_file: set, but control_plane.redis_url is not a rediss:// URL",
        ),
        (
            &[
                ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "rediss://10.0.0.7:6379"),
                ("ELIOP2P_CONTROL_PLANE_REDIS_CA_FILE", "/nonexistent/ca.pem"),
            ][..],
            "control_plane.redis_ca_file: /nonexistent/ca.pem",
        ),
        (
            &[
                ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "rediss://10.0.0.7:6379"),
                ("ELIOP2P_CONTROL_PLANE_REDIS_TLS_CERT", "/dev/null"),
            ][..],
            "control_plane.redis_tls_key: required with control_plane.redis_tls_cert",
        ),
        (
            &[
                ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "rediss://10.0.0.7:6379"),
                ("ELIOP2P_CONTROL_PLANE_REDIS_TLS_CERT", "/dev/null"),
                ("ELIOP2P_CONTROL_PLANE_REDIS_TLS_KEY", "/dev/null"),
            ][..],
            "control_plane.redis_tls_cert",
        ),
        (
            &[
                ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "redis://mymaster/0"),
                ("ELIOP2P_CONTROL_PLANE_REDIS_SENTINELS", "10.0.0.1:26379, sentinel-b"),
            ][..],
            "control_plane.redis_sentinels: \"sentinel-b\" is not host:port",
        ),
        (
            &[
                ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "redis://h:6379"),
                ("ELIOP2P_CONTROL_PLANE_PLANNING_LEASE", "100ms"),
            ][..],
            "control_plane.planning_lease",
        ),
    ] {
        let m = format!("{:#}", load(vars).unwrap_err());
        assert!(m.contains(key), "{m}");
    }
    // Sentinels: the URL's host is the master's name; TLS to both with a CA.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let c = load(&[
        ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "redis://:pw@mymaster/1"),
        ("ELIOP2P_CONTROL_PLANE_REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2:26379,[fd00::3]:26379"),
        ("ELIOP2P_CONTROL_PLANE_REDIS_SENTINEL_PASSWORD", "spw"),
    ])
    .unwrap();
    let r = c.redis.expect("redis store");
    assert_eq!(r.sentinels, ["10.0.0.1:26379", "10.0.0.2:26379", "[fd00::3]:26379"]);
    assert_eq!(r.sentinel_password.as_deref(), Some("spw"));
    let m = format!(
        "{:#}",
        load(&[
            ("ELIOP2P_CONTROL_PLANE_REDIS_URL", "rediss://10.0.0.7:6379"),
            ("ELIOP2P_CONTROL_PLANE_REDIS_CA_FILE", ca.to_str().unwrap()),
        ])
        .unwrap_err()
    );
    assert!(m.contains("control_plane.redis_ca_file"), "a broken CA file is refused at start: {m}");
    let e = Effective::load(None, &env(&[("ELIOP2P_CONTROL_PLANE_STORE", "mysql")]), &[]);
    assert!(format!("{:#}", e.err().expect("refused")).contains("control_plane.store"));
}

#[test]
fn client_keys_file_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("keys");
    std::fs::write(&good, "# clients\nak1 secret-one\n\nak2   secret-two\n").unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "just-one-field\n").unwrap();
    let with = |path: &std::path::Path| {
        Effective::load(
            None,
            &env(&[
                ("ELIOP2P_ORIGIN_ENDPOINT", "http://127.0.0.1:1"),
                ("ELIOP2P_PROXY_CLIENT_KEYS_FILE", path.to_str().unwrap()),
            ]),
            &[],
        )
        .unwrap()
        .node_config()
    };
    assert!(!with(&good).unwrap().proxy.client_keys.is_empty());
    let e = format!("{:#}", with(&bad).unwrap_err());
    assert!(e.contains("proxy.client_keys_file"), "{e}");
    let e = format!("{:#}", with(&dir.path().join("missing")).unwrap_err());
    assert!(e.contains("proxy.client_keys_file"), "{e}");
}

#[test]
fn several_origins_from_the_file() {
    let file = r#"
[origin]
endpoint = "http://127.0.0.1:9001"

[[origins]]
buckets = ["models", "datasets"]
kind = "oss"
signature = "v1"
endpoint = "https://oss-cn-hangzhou.aliyuncs.com"
access_key = "ak"
secret_key = "sk"
auth = "node"

[[origins]]
buckets = ["private"]
endpoint = "http://127.0.0.1:9002"
auth = "passthrough"
"#;
    let e = Effective::load(Some(("f.toml", file)), &[], &[]).unwrap();
    let n = e.node_config_with_id("n").unwrap();
    assert_eq!(n.extra_origins.len(), 2);
    assert_eq!(n.extra_origins[0].buckets, ["models", "datasets"]);
    assert_eq!(
        n.extra_origins[0].origin.kind,
        eliop2p_origin::OriginKind::Oss(eliop2p_origin::OssSignature::V1)
    );
    assert_eq!(
        n.extra_origins[1].auth,
        Some(eliop2p_proxy::AuthMode::Passthrough)
    );
    // Printed and reloaded, the same; secrets redacted.
    let printed = e.to_toml();
    assert!(printed.contains("[[origins]]"), "{printed}");
    assert!(!printed.contains("\"sk\""), "{printed}");
    let again = Effective::load(
        Some(("p.toml", &printed.replace("\"<redacted>\"", "\"x\""))),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(
        again.node_config_with_id("n").unwrap().extra_origins.len(),
        2
    );

    let err = |text: &str| {
        let r = Effective::load(Some(("f.toml", text)), &[], &[])
            .and_then(|e| e.node_config_with_id("n").map(|_| ()));
        format!("{:#}", r.unwrap_err())
    };
    let base = "[origin]\nendpoint = \"http://a\"\n";
    let m = err(&format!("{base}[[origins]]\nendpoint = \"http://b\"\n"));
    assert!(m.contains("origins[0].buckets"), "{m}");
    let m = err(&format!(
        "{base}[[origins]]\nbuckets = [\"x\"]\nendpiont = \"http://b\"\n"
    ));
    assert!(m.contains("origins[0].endpiont"), "{m}");
    let m = err(&format!(
        "{base}[[origins]]\nbuckets = [\"x\"]\nendpoint = \"http://b\"\nauth = \"open\"\n"
    ));
    assert!(m.contains("origins[0].auth"), "{m}");
    let m = err(&format!(
        "{base}[[origins]]\nbuckets = [\"x\"]\nendpoint = \"http://b\"\n[[origins]]\nbuckets = [\"x\"]\nendpoint = \"http://c\"\n"
    ));
    assert!(m.contains("origins[1].buckets"), "{m}");
    let m = err(&format!("{base}[[origins]]\nbuckets = [\"x\"]\n"));
    assert!(m.contains("origins[0].endpoint"), "{m}");
}

/// Fuzzing (proptest; bounded cases, run in CI): any config text, environment
/// value or flag value loads or fails with an error naming a key or the file,
/// never a panic.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]
        #[test]
        fn fuzz_config_loader(
            section in "(proxy|cache|origin|p2p|discovery|node|admin|control_plane|x)",
            key in "[a-z_]{1,24}",
            value in "\"[^\"\\\\]{0,20}\"|[0-9]{1,12}|true|false|\\[\\]|\\{\\}|[0-9.]{1,8}(KiB|MiB|GiB|s|ms|m|h)?",
            raw in "\\PC{0,120}",
            env_value in "\\PC{0,30}",
        ) {
            let file = format!("[{section}]\n{key} = {value}\n[origin]\nendpoint = \"http://a\"\n");
            for text in [file.as_str(), raw.as_str()] {
                if let Err(e) = Effective::load(Some(("f.toml", text)), &[], &[]) {
                    let msg = format!("{e:#}");
                    prop_assert!(msg.contains("config key") || msg.contains("f.toml") || msg.contains("unknown"), "{msg}");
                } else if let Ok(e) = Effective::load(Some(("f.toml", text)), &[], &[]) {
                    let _ = e.node_config();
                    let _ = e.proxy_listen();
                }
            }
            let var = format!("ELIOP2P_{}_{}", section.to_ascii_uppercase(), key.to_ascii_uppercase());
            let _ = Effective::load(None, &env(&[(var.as_str(), env_value.as_str())]), &[]);
        }
    }
}

#[test]
fn origin_ca_file_is_read_at_start_and_insecure_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let load = |vars: &[(&str, &str)]| {
        let mut all = vec![("ELIOP2P_ORIGIN_ENDPOINT", "https://10.0.0.9")];
        all.extend_from_slice(vars);
        Effective::load(None, &env(&all), &[]).unwrap().node_config()
    };
    let missing = dir.path().join("missing.pem");
    for path in [missing.to_str().unwrap(), garbage.to_str().unwrap()] {
        let m = format!("{:#}", load(&[("ELIOP2P_ORIGIN_CA_FILE", path)]).unwrap_err());
        assert!(m.contains("origin.ca_file") && m.contains(path), "{m}");
    }
    let ca = eliop2p_testkit::TestCa::new().unwrap();
    let n = load(&[("ELIOP2P_ORIGIN_CA_FILE", ca.ca_pem.to_str().unwrap())]).unwrap();
    assert_eq!(n.origin.tls.ca_file.as_deref(), Some(ca.ca_pem.as_path()));
    let n = load(&[("ELIOP2P_ORIGIN_SESSION_TOKEN", "tok")]).unwrap();
    assert_eq!(n.origin.session_token.as_deref(), Some("tok"));
    assert_eq!(load(&[]).unwrap().origin.session_token, None);
    let m = format!("{:#}", load(&[("ELIOP2P_ORIGIN_INSECURE_SKIP_VERIFY", "true")]).unwrap_err());
    assert!(m.contains("origin.insecure_skip_verify") && m.contains("refused"), "{m}");
}

#[test]
fn origin_credentials_sources_are_checked_against_the_keys_and_the_kind() {
    use eliop2p_origin::CredentialSource;
    let load = |vars: &[(&str, &str)]| {
        let mut all = vec![("ELIOP2P_ORIGIN_ENDPOINT", "https://s3.example.com")];
        all.extend_from_slice(vars);
        Effective::load(None, &env(&all), &[]).and_then(|e| e.node_config())
    };
    let err = |vars: &[(&str, &str)]| match load(vars) {
        Ok(_) => panic!("{vars:?}: no error"),
        Err(e) => format!("{e:#}"),
    };
    // auto: static keys when set, the default chain otherwise.
    let n = load(&[("ELIOP2P_ORIGIN_ACCESS_KEY", "AK"), ("ELIOP2P_ORIGIN_SECRET_KEY", "SK")]).unwrap();
    assert_eq!(n.origin.credentials.source, CredentialSource::Static);
    assert_eq!(load(&[]).unwrap().origin.credentials.source, CredentialSource::Default);
    let n = load(&[
        ("ELIOP2P_ORIGIN_CREDENTIALS", "web-identity"),
        ("ELIOP2P_ORIGIN_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ("ELIOP2P_ORIGIN_STS_ENDPOINT", "https://sts.internal"),
        ("ELIOP2P_ORIGIN_REGION", "eu-west-1"),
    ])
    .unwrap();
    let c = &n.origin.credentials;
    assert_eq!(c.source, CredentialSource::WebIdentity);
    assert_eq!(c.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
    assert_eq!(c.sts_endpoint.as_deref(), Some("https://sts.internal"));
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    // Errors name the key.
    let m = err(&[("ELIOP2P_ORIGIN_CREDENTIALS", "instance-role")]);
    assert!(m.contains("origin.credentials") && m.contains("imds"), "{m}");
    let m = err(&[("ELIOP2P_ORIGIN_CREDENTIALS", "static")]);
    assert!(m.contains("origin.credentials") && m.contains("origin.access_key"), "{m}");
    let m = err(&[("ELIOP2P_ORIGIN_CREDENTIALS", "imds"), ("ELIOP2P_ORIGIN_ACCESS_KEY", "AK")]);
    assert!(m.contains("origin.access_key") && m.contains("imds"), "{m}");
    let m = err(&[("ELIOP2P_ORIGIN_CREDENTIALS", "ecs-ram-role")]);
    assert!(m.contains("origin.credentials") && m.contains("Alibaba"), "{m}");
    let m = err(&[("ELIOP2P_ORIGIN_KIND", "oss"), ("ELIOP2P_ORIGIN_CREDENTIALS", "imds")]);
    assert!(m.contains("origin.credentials") && m.contains("AWS source"), "{m}");
    let m = err(&[("ELIOP2P_ORIGIN_CREDENTIALS", "imds"), ("ELIOP2P_ORIGIN_METADATA_ENDPOINT", "169.254.169.254")]);
    assert!(m.contains("origin.metadata_endpoint"), "{m}");
    let m = err(&[
        ("ELIOP2P_ORIGIN_CREDENTIALS", "web-identity"),
        ("ELIOP2P_ORIGIN_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
    ]);
    assert!(m.contains("origin.web_identity_token_file"), "{m}");
    let n = load(&[("ELIOP2P_ORIGIN_KIND", "oss"), ("ELIOP2P_ORIGIN_CREDENTIALS", "ecs-ram-role")]).unwrap();
    assert_eq!(n.origin.credentials.source, CredentialSource::EcsRamRole);
}

/// `node.worker_threads`: 0 (the default) is one worker per CPU, a number is
/// that many, and more than 1,024 is an error naming the key.
#[test]
fn worker_threads_default_to_one_per_cpu_and_are_bounded() {
    let load = |v: &[(&str, &str)]| Effective::load(None, &env(v), &[]);
    assert_eq!(load(&[]).unwrap().worker_threads().unwrap(), None);
    let one = load(&[("ELIOP2P_NODE_WORKER_THREADS", "1")]).unwrap();
    assert_eq!(one.worker_threads().unwrap(), Some(1));
    let e = load(&[("ELIOP2P_NODE_WORKER_THREADS", "5000")]).unwrap().worker_threads().unwrap_err();
    assert!(format!("{e:#}").contains("node.worker_threads"), "{e:#}");
    let Err(e) = load(&[("ELIOP2P_NODE_WORKER_THREADS", "two")]) else { panic!("a word accepted") };
    assert!(format!("{e:#}").contains("node.worker_threads"), "{e:#}");
}

#[test]
fn tcp_congestion_is_the_hosts_default_unless_named_and_a_name_is_checked() {
    let load = |extra: &[(&str, &str)]| {
        let mut v = vec![
            ("ELIOP2P_ORIGIN_ENDPOINT", "http://127.0.0.1:1"),
            ("ELIOP2P_P2P_CLUSTER_SECRET", "s"),
            ("ELIOP2P_NODE_ID", "n1"),
        ];
        v.extend_from_slice(extra);
        Effective::load(None, &env(&v), &[]).unwrap().node_config()
    };
    assert_eq!(load(&[]).unwrap().p2p.unwrap().tcp_congestion, None);
    // reno is built into every Linux kernel and allowed to every process.
    let n = load(&[("ELIOP2P_P2P_TCP_CONGESTION", "reno")]).unwrap();
    assert_eq!(n.p2p.unwrap().tcp_congestion.as_deref(), Some("reno"));
    for bad in ["nosuchcc", "cubic bbr"] {
        let e = format!("{:#}", load(&[("ELIOP2P_P2P_TCP_CONGESTION", bad)]).unwrap_err());
        assert!(e.contains("config key p2p.tcp_congestion") && e.contains(bad), "{e}");
    }
}
