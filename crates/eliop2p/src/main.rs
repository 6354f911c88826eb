//! The `eliop2p` binary: the composition root. Only this crate reads files,
//! environment variables and signals; every component gets its config as a value.

mod cp;
mod demo;
mod get;
mod preheat;

use std::time::Duration;

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command};
use eliop2p::config;
use config::{Effective, KEYS, KeyDef};

fn key_args(cmd: Command) -> Command {
    KEYS.iter().fold(cmd, |cmd, def| {
        cmd.arg(
            Arg::new(def.name())
                .long(def.flag())
                .value_name("VALUE")
                .help(format!(
                    "{} [env {}] [default {:?}]",
                    def.help,
                    def.env(),
                    def.default
                ))
                .help_heading("Configuration keys"),
        )
    })
}

fn cli() -> Command {
    Command::new("eliop2p")
        .about("P2P chunk cache in front of S3-compatible object storage")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("log-format")
                .long("log-format")
                .global(true)
                .value_parser(["text", "json"])
                .env("ELIOP2P_LOG_FORMAT")
                .default_value("text")
                .help("log lines on stderr as text or JSON (one object per line); verbosity from RUST_LOG"),
        )
        .subcommand(key_args(
            Command::new("node")
                .about("Run a caching node: S3 proxy, chunk cache, admin listener")
                .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file"))
                .arg(Arg::new("print-config").long("print-config").action(ArgAction::SetTrue).help("Print the effective config as TOML and exit")),
        ))
        .subcommand(key_args(
            Command::new("control-plane")
                .about("Run the control plane: node registry, chunk locations, replication commands (REST under /api/v1)")
                .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file"))
                .arg(Arg::new("print-config").long("print-config").action(ArgAction::SetTrue).help("Print the effective config as TOML and exit")),
        ))
        .subcommand(key_args(
            Command::new("status")
                .about("Print the cluster's nodes as the control plane sees them (control_plane.endpoint, control_plane.token)")
                .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file")),
        ))
        .subcommand(key_args(
            Command::new("presign")
                .about("Print a presigned GET URL (SigV4 query authentication) for s3://bucket/key, signed with origin.access_key/secret_key")
                .arg(Arg::new("url").required(true).value_name("s3://BUCKET/KEY"))
                .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file"))
                .arg(Arg::new("expires").long("expires").value_name("DURATION").default_value("1h").help("validity, e.g. 15m, 3600s (at most 7 days)"))
                .arg(Arg::new("endpoint").long("endpoint").value_name("URL").help("host the URL points at and is signed for (default origin.endpoint; a passthrough node's URL to read through it)")),
        ))
        .subcommand(key_args(
            Command::new("preheat")
                .about("Warm an object or a prefix into the cluster as a control-plane job (control_plane.endpoint, control_plane.token); exit 7 when the job fails")
                .args_conflicts_with_subcommands(true)
                .arg(Arg::new("source").value_name("s3://BUCKET/KEY|PREFIX/").required(true))
                .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file"))
                .arg(Arg::new("recursive").short('r').long("recursive").action(ArgAction::SetTrue).help("treat the key as a prefix (implied by a trailing /)"))
                .arg(Arg::new("replicas").long("replicas").value_name("N").value_parser(clap::value_parser!(usize)).help("warm N nodes (spread over zones) instead of all"))
                .arg(Arg::new("label").long("label").value_name("KEY=VALUE").action(ArgAction::Append).help("only nodes with this label (repeatable)"))
                .arg(Arg::new("wait").long("wait").action(ArgAction::SetTrue).help("follow the job with a progress line until it ends"))
                .subcommand(key_args(
                    Command::new("status")
                        .about("Show a preheat job")
                        .arg(Arg::new("id").required(true).value_name("ID").value_parser(clap::value_parser!(u64)))
                        .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file"))
                        .arg(Arg::new("wait").long("wait").action(ArgAction::SetTrue).help("follow the job until it ends")),
                ))
                .subcommand(key_args(
                    Command::new("list")
                        .about("List preheat jobs, newest first")
                        .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file")),
                )),
        ))
        .subcommand(
            Command::new("get")
                .about("Download s3://bucket/key (or http://node/bucket/key) through a node, with progress, resume and size/ETag check; exit codes: 0 ok, 2 usage, 3 not found, 4 denied, 5 verification failed, 6 node error")
                .arg(Arg::new("source").required(true).value_name("s3://BUCKET/KEY|URL"))
                .arg(Arg::new("output").short('o').long("output").value_name("PATH").help("output file (default: the key's last segment), or directory with --recursive (default .)"))
                .arg(Arg::new("node").long("node").value_name("URL").default_value("http://127.0.0.1:8080").help("the node's S3 endpoint for s3:// sources"))
                .arg(Arg::new("recursive").short('r').long("recursive").action(ArgAction::SetTrue).help("download every object under the prefix")),
        )
        .subcommand(key_args(
            Command::new("demo")
                .about("Start a local cluster in one process: an S3-compatible origin with sample objects, a control plane and 3 nodes; run a scripted read")
                .arg(Arg::new("once").long("once").action(ArgAction::SetTrue).help("Run the scripted reads, print the table and exit")),
        ))
}

fn flags(m: &ArgMatches) -> Vec<(&'static KeyDef, String)> {
    KEYS.iter()
        .filter_map(|def| m.get_one::<String>(&def.name()).map(|v| (def, v.clone())))
        .collect()
}

fn load(m: &ArgMatches, extra_flags: Vec<(&'static KeyDef, String)>) -> anyhow::Result<Effective> {
    let file = match m.try_get_one::<String>("config").ok().flatten() {
        Some(path) => Some((
            path.clone(),
            std::fs::read_to_string(path).with_context(|| format!("reading config file {path}"))?,
        )),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut all = extra_flags;
    all.extend(flags(m));
    Effective::load(
        file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        &env,
        &all,
    )
}

fn init_tracing(m: &ArgMatches) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if m.get_one::<String>("log-format").map(String::as_str) == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} listener on {addr}"))
}

async fn run_node(eff: Effective) -> anyhow::Result<()> {
    let cfg = eff.node_config()?;
    eff.check_disk_fits()?;
    let (listen, trust) = eff.proxy_listen()?;
    let proxy = bind(listen, "proxy").await?;
    tracing::info!(%listen, "proxy trusts {trust}");
    let admin = bind(eff.addr("admin.listen"), "admin").await?;
    let p2p = match cfg.p2p {
        Some(_) => Some(bind(eff.addr("p2p.listen"), "p2p").await?),
        None => None,
    };
    let node = eliop2p_proxy::spawn_node_with_p2p(cfg, proxy, admin, p2p).await?;
    let p2p_note = node
        .p2p_addr
        .map(|a| format!(", p2p on {a}"))
        .unwrap_or_default();
    println!(
        "eliop2p node: proxy on http://{}, admin on http://{}{p2p_note}, trusting {trust}",
        node.proxy_addr, node.admin_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    if !node.shutdown().await {
        tracing::warn!("in-flight work did not finish within the grace period");
    }
    Ok(())
}

async fn run_control_plane(eff: Effective) -> anyhow::Result<()> {
    let cfg = eff.control_config()?;
    let listen = eff.addr("control_plane.listen");
    if cfg.token.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "control plane without control_plane.token: anyone who reaches it can register nodes");
    }
    let l = bind(listen, "control plane").await?;
    let https = cfg.tls.is_some();
    let cp = eliop2p_control::spawn_control_plane(cfg, l).await?;
    let scheme = if https { "https" } else { "http" };
    println!("eliop2p control plane on {scheme}://{}", cp.addr);
    shutdown_signal().await;
    tracing::info!("shutting down");
    cp.shutdown().await;
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `eliop2p status`: one line per node from the control plane's registry.
async fn status(eff: &Effective) -> anyhow::Result<()> {
    let list: eliop2p_cluster::api::NodeList = cp::Cp::new(eff)?
        .call(http::Method::GET, "/api/v1/nodes", None)
        .await?;
    let mut rows = vec![
        [
            "NODE",
            "STATUS",
            "ZONE",
            "PROXY",
            "MEMORY",
            "DISK",
            "CHUNKS",
            "HIT",
            "FROM ORIGIN",
            "FROM PEERS",
            "TO PEERS",
            "SERVED/S",
            "DOWN/S",
            "UP/S",
            "SEEN",
        ]
        .map(str::to_owned),
    ];
    for n in &list.nodes {
        let h = &n.heartbeat;
        rows.push([
            n.node_id.clone(),
            format!("{:?}", n.status).to_lowercase(),
            n.labels.get("zone").cloned().unwrap_or_else(|| "-".into()),
            n.proxy_addr.map_or("-".into(), |a| a.to_string()),
            format!(
                "{} / {}",
                human_bytes(h.memory_used_bytes),
                human_bytes(n.capacity.memory_bytes)
            ),
            format!(
                "{} / {}",
                human_bytes(h.disk_used_bytes),
                human_bytes(n.capacity.disk_bytes)
            ),
            h.chunks.to_string(),
            format!("{:.0}%", h.hit_ratio * 100.0),
            human_bytes(h.bytes_from_origin),
            human_bytes(h.bytes_from_peers),
            human_bytes(h.bytes_to_peers),
            human_bytes(n.rates.served as u64),
            human_bytes((n.rates.from_origin + n.rates.from_peers) as u64),
            human_bytes(n.rates.to_peers as u64),
            format!("{:.1}s ago", n.last_seen_ms as f64 / 1000.0),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    let online = list
        .nodes
        .iter()
        .filter(|n| n.status == eliop2p_cluster::api::NodeStatus::Online)
        .count();
    println!("{} nodes, {online} online", list.nodes.len());
    Ok(())
}

async fn presign(eff: &Effective, m: &ArgMatches) -> anyhow::Result<()> {
    let url = m.get_one::<String>("url").expect("required");
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .with_context(|| format!("{url:?} is not s3://bucket/key"))?;
    let expires =
        eliop2p_core::units::parse_duration_ms(m.get_one::<String>("expires").expect("default"))
            .map(Duration::from_millis)
            .map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
    if expires.is_zero() || expires > Duration::from_secs(7 * 24 * 3600) {
        anyhow::bail!("--expires: must be between 1s and 7 days");
    }
    let cfg = eff.node_config_with_id("presign")?;
    let mut origin = cfg.origin;
    if origin.kind == eliop2p_origin::OriginKind::Http {
        anyhow::bail!("config key origin.kind: plain HTTP origins have no presigned URLs");
    }
    if let Some(e) = m.get_one::<String>("endpoint") {
        origin.endpoint = e.clone();
    }
    let client = eliop2p_origin::OriginClient::new(origin)?;
    let req = eliop2p_origin::OriginRequest::new(http::Method::GET, bucket, Some(key));
    println!("{}", client.presign(&req, expires).await?);
    Ok(())
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e.downcast_ref::<get::ExitError>().map_or(2, |x| x.code);
            std::process::ExitCode::from(code)
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let matches = cli().get_matches();
    eliop2p_cache::tune_allocator();
    // A node's or a control plane's configuration is read before its runtime
    // is built, with as many workers as `node.worker_threads` says; the
    // short-lived commands get one per CPU.
    let mut service = match matches.subcommand() {
        Some(("node" | "control-plane", m)) => Some(load(m, Vec::new())?),
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = service.as_ref().map(Effective::worker_threads).transpose()?.flatten() {
        builder.worker_threads(n);
    }
    let rt = builder.enable_all().build()?;
    match matches.subcommand() {
        Some(("node", m)) => {
            let eff = service.take().expect("read above for node");
            if m.get_flag("print-config") {
                print!("{}", eff.to_toml());
                let (listen, trust) = eff.proxy_listen()?;
                println!("# the proxy listens on {listen} and trusts {trust}");
                return Ok(());
            }
            init_tracing(m);
            rt.block_on(run_node(eff))
        }
        Some(("control-plane", m)) => {
            let eff = service.take().expect("read above for control-plane");
            if m.get_flag("print-config") {
                print!("{}", eff.to_toml());
                return Ok(());
            }
            init_tracing(m);
            rt.block_on(run_control_plane(eff))
        }
        Some(("status", m)) => {
            let eff = load(m, Vec::new())?;
            rt.block_on(status(&eff))
        }
        Some(("presign", m)) => {
            let eff = load(m, Vec::new())?;
            rt.block_on(presign(&eff, m))
        }
        Some(("preheat", m)) => match m.subcommand() {
            Some(("status", sm)) => {
                let cp = cp::Cp::new(&load(sm, Vec::new())?)?;
                let id = *sm.get_one::<u64>("id").expect("required");
                rt.block_on(preheat::status(&cp, id, sm.get_flag("wait")))
            }
            Some(("list", sm)) => {
                let cp = cp::Cp::new(&load(sm, Vec::new())?)?;
                rt.block_on(preheat::list(&cp))
            }
            _ => {
                let cp = cp::Cp::new(&load(m, Vec::new())?)?;
                let args = preheat::CreateArgs {
                    source: m.get_one::<String>("source").expect("required").clone(),
                    recursive: m.get_flag("recursive"),
                    replicas: m.get_one::<usize>("replicas").copied(),
                    labels: m
                        .get_many::<String>("label")
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default(),
                    wait: m.get_flag("wait"),
                };
                rt.block_on(preheat::create(&cp, args))
            }
        },
        Some(("get", m)) => {
            let args = get::GetArgs {
                source: m.get_one::<String>("source").expect("required").clone(),
                output: m.get_one::<String>("output").map(Into::into),
                node: m.get_one::<String>("node").expect("default").clone(),
                recursive: m.get_flag("recursive"),
            };
            rt.block_on(get::run(args))
        }
        Some(("demo", m)) => {
            init_tracing(m);
            let once = m.get_flag("once");
            let mut extra = Vec::new();
            if m.get_one::<String>("proxy.listen").is_none() {
                extra.push((find_key("proxy.listen"), "127.0.0.1:8080".to_owned()));
            }
            let eff = load(m, extra)?;
            rt.block_on(demo::run(eff, once, shutdown_signal()))
        }
        _ => unreachable!("clap enforces a subcommand"),
    }?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn find_key(name: &str) -> &'static KeyDef {
    KEYS.iter()
        .find(|k| k.name() == name)
        .expect("a key named in this file")
}
