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
