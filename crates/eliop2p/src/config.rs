//! Configuration: every key has a kind, a default, an environment variable
//! (`ELIOP2P_<SECTION>_<KEY>`) and a command-line flag (`--<section>-<key>`).
//! Precedence: flag > environment > file > default. Unknown keys and bad values are
//! errors that name the key and where it came from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use eliop2p_cache::policy::{EvictionWeights, Watermarks};
use eliop2p_cache::{CacheConfig, DiskTierConfig};
use eliop2p_core::units::{parse_duration_ms, parse_size};
use eliop2p_origin::{Addressing, OriginConfig};
use eliop2p_proxy::{AdminConfig, NodeConfig, ProxyConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Secret,
    Addr,
    Int,
    Float,
    Size,
    Duration,
    List,
    Choice(&'static [&'static str]),
}

pub struct KeyDef {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
}

impl KeyDef {
    pub fn name(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
    pub fn env(&self) -> String {
        format!("ELIOP2P_{}_{}", self.section, self.key).to_ascii_uppercase()
    }
    pub fn flag(&self) -> String {
        format!("{}-{}", self.section, self.key).replace('_', "-")
    }
}

macro_rules! key {
    ($s:literal, $k:literal, $kind:expr, $d:literal, $h:literal) => {
        KeyDef {
            section: $s,
            key: $k,
            kind: $kind,
            default: $d,
            help: $h,
        }
    };
}

/// Every configuration key. `docs/configuration.md` documents the same table.
pub const KEYS: &[KeyDef] = &[
    key!(
        "proxy",
        "listen",
        Kind::Addr,
        "0.0.0.0:8080",
        "address of the S3 proxy"
    ),
    key!(
        "proxy",
        "virtual_host_domains",
        Kind::List,
        "localhost",
        "domains for virtual-host style requests (<bucket>.<domain>)"
    ),
    key!(
        "proxy",
        "auth",
        Kind::Choice(&["node", "passthrough"]),
        "node",
        "node: the node signs origin requests with origin.access_key; passthrough: client requests go to the origin as received and the origin authorizes every read, cached or not"
    ),
    key!(
        "proxy",
        "client_keys_file",
        Kind::Str,
        "",
        "node auth mode: file of client keys, one 'ACCESS_KEY SECRET_KEY' per line; when set, only requests signed (SigV4) with one of them are answered"
    ),
    key!(
        "proxy",
        "auth_cache_ttl",
        Kind::Duration,
        "0s",
        "passthrough: reuse an origin authorization of the very same signature for the same object version this long (0 = ask the origin every time)"
    ),
    key!(
        "proxy",
        "allowed_origins",
        Kind::List,
        "",
        "host:port of origins forward-proxy clients (HTTP_PROXY, CONNECT) may reach besides origin.endpoint; a bare host allows ports 80 and 443"
    ),
    key!(
        "proxy",
        "readahead_chunks",
        Kind::Int,
        "2",
        "chunks of one response fetched ahead of the one being sent"
    ),
    key!(
        "admin",
        "listen",
        Kind::Addr,
        "127.0.0.1:9091",
        "address of the admin listener (/metrics, /healthz)"
    ),
    key!(
        "origin",
        "endpoint",
        Kind::Str,
        "",
        "origin URL, e.g. https://s3.us-east-1.amazonaws.com (required)"
    ),
    key!(
        "origin",
        "kind",
        Kind::Choice(&["s3", "oss", "http"]),
        "s3",
        "s3: S3-compatible storage (AWS Signature V4); oss: Alibaba Cloud OSS; http: a plain HTTP(S) URL space, unsigned (the request path is appended to origin.endpoint)"
    ),
    key!(
        "origin",
        "signature",
        Kind::Choice(&["v4", "v1"]),
        "v4",
        "OSS signature version (v1: HMAC-SHA1; v4: OSS4-HMAC-SHA256, needs origin.region such as cn-hangzhou); S3 always uses v4"
    ),
    key!("origin", "region", Kind::Str, "us-east-1", "signing region"),
    key!(
        "origin",
        "access_key",
        Kind::Str,
        "",
        "access key id the node signs origin requests with"
    ),
    key!(
        "origin",
        "secret_key",
        Kind::Secret,
        "",
        "secret access key"
    ),
    key!(
        "origin",
        "addressing",
        Kind::Choice(&["path", "virtual"]),
        "path",
        "path-style or virtual-host style origin URLs"
    ),
    key!(
        "origin",
        "connect_timeout",
        Kind::Duration,
        "5s",
        "TCP/TLS connect timeout"
    ),
    key!(
        "origin",
        "request_timeout",
        Kind::Duration,
        "30s",
        "time to the response head, and the longest silence inside a chunk body"
    ),
    key!(
        "origin",
        "max_retries",
        Kind::Int,
        "3",
        "retries with backoff for bodiless requests on 5xx and connection errors"
    ),
    key!(
        "cache",
        "memory_size",
        Kind::Size,
        "4GiB",
        "capacity of the memory tier"
    ),
    key!(
        "cache",
        "chunk_size",
        Kind::Size,
        "16MiB",
        "chunk size (unit of caching and integrity)"
    ),
    key!(
        "cache",
        "metadata_ttl",
        Kind::Duration,
        "30s",
        "how long object metadata (ETag, size) is trusted before a HEAD"
    ),
    key!(
        "cache",
        "metadata_max_entries",
        Kind::Int,
        "100000",
        "objects whose metadata is kept"
    ),
    key!(
        "cache",
        "disk_path",
        Kind::Str,
        "/var/cache/eliop2p",
        "directory of the disk tier (only eliop2p's files go there)"
    ),
    key!(
        "cache",
        "disk_size",
        Kind::Size,
        "0",
        "capacity of the disk tier; 0 disables it"
    ),
    key!(
        "cache",
        "eviction_weights",
        Kind::Str,
        "recency=1,frequency=1,replicas=0.5,size=1",
        "weights of the eviction priority factors"
    ),
    key!(
        "cache",
        "eviction_high",
        Kind::Float,
        "0.9",
        "usage fraction of a tier above which eviction starts"
    ),
    key!(
        "cache",
        "eviction_low",
        Kind::Float,
        "0.8",
        "usage fraction of a tier eviction brings it down to"
    ),
    key!(
        "cache",
        "protect_recent",
        Kind::Duration,
        "10s",
        "chunks accessed more recently than this are never evicted"
    ),
    key!(
        "cache",
        "heat_window",
        Kind::Duration,
        "60s",
        "sliding window of the heat (accesses per window, decayed)"
    ),
    key!(
        "cache",
        "hot_threshold",
        Kind::Float,
        "8",
        "accesses per window from which a chunk is Hot (promoted from disk to memory)"
    ),
    key!(
        "cache",
        "warm_threshold",
        Kind::Float,
        "2",
        "accesses per window from which a chunk is Warm"
    ),
    key!(
        "cache",
        "verify_on_start",
        Kind::Choice(&["false", "sample", "full"]),
        "sample",
        "verification of disk chunks at start, in the background"
    ),
    key!(
        "cache",
        "write_queue",
        Kind::Int,
        "64",
        "chunks waiting for the disk tier before write-behind is skipped"
    ),
    key!(
        "p2p",
        "listen",
        Kind::Addr,
        "0.0.0.0:9000",
        "address of the P2P transfer listener"
    ),
    key!(
        "p2p",
        "static_peers",
        Kind::List,
        "",
        "other nodes' P2P addresses (host:port) to fetch chunks from"
    ),
    key!(
        "p2p",
        "cluster_secret",
        Kind::Secret,
        "",
        "shared secret of the cluster for the peer handshake"
    ),
    key!(
        "p2p",
        "cluster_secret_file",
        Kind::Str,
        "",
        "file holding the cluster secret (read at start)"
    ),
    key!(
        "p2p",
        "allow_unauthenticated",
        Kind::Choice(&["false", "true"]),
        "false",
        "allow P2P without a secret on a non-loopback address"
    ),
    key!(
        "p2p",
        "selection_k",
        Kind::Int,
        "5",
        "peers downloaded from in parallel per chunk (1-10)"
    ),
    key!(
        "p2p",
        "max_upload_rate",
        Kind::Size,
        "0",
        "bytes/s sent to peers, all connections together; 0 = unlimited"
    ),
    key!(
        "p2p",
        "max_download_rate",
        Kind::Size,
        "0",
        "bytes/s received from peers; 0 = unlimited"
    ),
    key!(
        "p2p",
        "piece_timeout",
        Kind::Duration,
        "5s",
        "a 1 MiB piece not received in this time goes to another peer"
    ),
    key!(
        "p2p",
        "advertise_addr",
        Kind::Str,
        "",
        "P2P address peers reach this node at (default: p2p.listen, or the address that routes to the control plane/seeds when listening on 0.0.0.0)"
    ),
    key!(
        "node",
        "shutdown_grace",
        Kind::Duration,
        "30s",
        "how long shutdown waits for in-flight responses"
    ),
    key!(
        "node",
        "id",
        Kind::Str,
        "",
        "stable node id; default: generated once and kept in <cache.disk_path>/node-id (hostname-based without a disk tier)"
    ),
    key!(
        "node",
        "zone",
        Kind::Str,
        "",
        "failure domain label (replicas spread over zones; same-zone peers come first)"
    ),
    key!(
        "node",
        "rack",
        Kind::Str,
        "",
        "rack label, reported to the control plane"
    ),
    key!(
        "discovery",
        "mode",
        Kind::Choice(&["auto", "control-plane", "gossip", "hybrid", "static"]),
        "auto",
        "how nodes find each other; auto = hybrid with a control plane endpoint, gossip with seeds, else static peers only"
    ),
    key!(
        "discovery",
        "seeds",
        Kind::List,
        "",
        "P2P addresses (host:port) of nodes to join the gossip through"
    ),
    key!(
        "discovery",
        "gossip_interval",
        Kind::Duration,
        "1s",
        "time between gossip rounds"
    ),
    key!(
        "discovery",
        "fanout",
        Kind::Int,
        "3",
        "members each gossip round talks to"
    ),
    key!(
        "discovery",
        "suspect_after",
        Kind::Duration,
        "5s",
        "a member silent this long is suspect"
    ),
    key!(
        "discovery",
        "dead_after",
        Kind::Duration,
        "10s",
        "a member silent this long is dead: its chunks are no longer offered"
    ),
    key!(
        "control_plane",
        "endpoint",
        Kind::Str,
        "",
        "URL of the control plane a node registers with, e.g. http://10.0.0.5:8081"
    ),
    key!(
        "control_plane",
        "token",
        Kind::Secret,
        "",
        "bearer token of the control plane API (service and nodes)"
    ),
    key!(
        "control_plane",
        "listen",
        Kind::Addr,
        "0.0.0.0:8081",
        "address of the control plane service (eliop2p control-plane)"
    ),
    key!(
        "control_plane",
        "data_dir",
        Kind::Str,
        "/var/lib/eliop2p/control-plane",
        "directory of the control plane's store; empty keeps state in memory only"
    ),
    key!(
        "control_plane",
        "heartbeat_interval",
        Kind::Duration,
        "2s",
        "time between node heartbeats"
    ),
    key!(
        "control_plane",
        "suspect_after",
        Kind::Duration,
        "6s",
        "a node without heartbeats this long is suspect (its chunks are not handed out)"
    ),
    key!(
        "control_plane",
        "dead_after",
        Kind::Duration,
        "15s",
        "a node without heartbeats this long is dead"
    ),
    key!(
        "replication",
        "min_replicas",
        Kind::Int,
        "2",
        "hot chunks with fewer holders get replicate commands; 0 disables replication"
    ),
    key!(
        "replication",
        "hot_threshold",
        Kind::Int,
        "4",
        "demand (location queries and hot reports, halved every pass) that makes a chunk hot"
    ),
    key!(
        "replication",
        "max_replicas",
        Kind::Int,
        "0",
        "cold chunks with more online holders get evict commands for the surplus; 0 = no limit"
    ),
    key!(
        "replication",
        "interval",
        Kind::Duration,
        "5s",
        "time between replication passes of the control plane"
    ),
    key!(
        "replication",
        "max_rate",
        Kind::Size,
        "64MiB",
        "bytes/s a node spends on replication commands on average; 0 = unlimited"
    ),
];

/// Environment variables with the ELIOP2P_ prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["ELIOP2P_LOG", "ELIOP2P_TEST_"];

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(u64),
    List(Vec<String>),
}

/// Validated values by key name, with the source of each.
pub struct Effective {
    values: BTreeMap<String, (Value, String)>,
    /// `[[origins]]` entries of the file: each an `origin.*` key set (defaults
    /// filled in) plus `buckets` and `auth`.
    origins: Vec<OriginEntry>,
}

/// One `[[origins]]` entry.
pub struct OriginEntry {
    values: Effective,
    buckets: Vec<String>,
    auth: Option<String>,
}

/// Keys an `[[origins]]` entry may set besides `buckets` and `auth`.
const ORIGIN_ENTRY_KEYS: &[&str] = &[
    "endpoint",
    "kind",
    "signature",
    "region",
    "access_key",
    "secret_key",
    "addressing",
    "connect_timeout",
    "request_timeout",
    "max_retries",
];

fn render(value: &Value, kind: Kind) -> String {
    match (value, kind) {
        (Value::Str(s), Kind::Secret) if !s.is_empty() => "\"<redacted>\"".to_owned(),
        (Value::Str(s), Kind::Float) => s.clone(),
        (Value::Str(s), _) => toml::Value::String(s.clone()).to_string(),
        (Value::Int(i), _) => i.to_string(),
        (Value::List(l), _) => {
            toml::Value::Array(l.iter().cloned().map(toml::Value::String).collect()).to_string()
        }
    }
}

/// Validates one `[[origins]]` table: `buckets` (required), `auth`, and `origin.*`
/// keys, each error naming `origins[i].key`.
fn parse_origin_entry(path: &str, i: usize, e: &toml::Value) -> anyhow::Result<OriginEntry> {
    let toml::Value::Table(t) = e else {
        bail!("config file {path}: origins[{i}] must be a table");
    };
    let mut values = BTreeMap::new();
    for key in ORIGIN_ENTRY_KEYS {
        let def = find(&format!("origin.{key}")).expect("origin keys exist");
        let v = validate(def, &toml::Value::String(def.default.to_owned()), "default")?;
        values.insert(def.name(), (v, "default".to_owned()));
    }
    let mut buckets = Vec::new();
    let mut auth = None;
    for (key, raw) in t {
        let source = format!("file {path}, origins[{i}]");
        match key.as_str() {
            "buckets" => {
                let toml::Value::Array(a) = raw else {
                    bail!("config key origins[{i}].buckets: must be a list of bucket names");
                };
                for b in a {
                    match b.as_str() {
                        Some(s) if !s.is_empty() => buckets.push(s.to_owned()),
                        _ => bail!(
                            "config key origins[{i}].buckets: bucket names are non-empty strings"
                        ),
                    }
                }
            }
            "auth" => match raw.as_str() {
                Some(a @ ("node" | "passthrough")) => auth = Some(a.to_owned()),
                _ => bail!("config key origins[{i}].auth: must be \"node\" or \"passthrough\""),
            },
            k if ORIGIN_ENTRY_KEYS.contains(&k) => {
                let def = find(&format!("origin.{k}")).expect("origin keys exist");
                let v = validate(def, raw, &source)
                    .map_err(|e| anyhow::anyhow!("origins[{i}]: {e:#}"))?;
                values.insert(def.name(), (v, source));
            }
            other => bail!("unknown config key origins[{i}].{other} in {path}"),
        }
    }
    if buckets.is_empty() {
        bail!("config key origins[{i}].buckets: required (the buckets this origin serves)");
    }
    Ok(OriginEntry {
        values: Effective {
            values,
            origins: Vec::new(),
        },
        buckets,
        auth,
    })
}

fn find(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name() == name)
}

/// Checks a value from any source against the key's kind.
fn validate(def: &KeyDef, raw: &toml::Value, source: &str) -> anyhow::Result<Value> {
    let name = def.name();
    let bad = |why: String| anyhow::anyhow!("config key {name} (from {source}): {why}");
    let as_text = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            _ => None,
        }
    };
    match def.kind {
        Kind::Str | Kind::Secret => match raw {
            toml::Value::String(s) => Ok(Value::Str(s.clone())),
            other => Err(bad(format!("expected a string, got {}", other.type_str()))),
        },
        Kind::Addr => {
            let s = as_text(raw).ok_or_else(|| bad("expected \"host:port\"".into()))?;
            s.parse::<SocketAddr>()
                .map_err(|e| bad(format!("invalid address {s:?}: {e}")))?;
            Ok(Value::Str(s))
        }
        Kind::Int => match raw {
            toml::Value::Integer(i) if *i >= 0 => Ok(Value::Int(*i as u64)),
            toml::Value::String(s) => s
                .trim()
                .parse()
                .map(Value::Int)
                .map_err(|_| bad(format!("expected a non-negative integer, got {s:?}"))),
            other => Err(bad(format!("expected a non-negative integer, got {other}"))),
        },
        Kind::Float => match raw {
            toml::Value::Float(f) if *f >= 0.0 => Ok(Value::Str(f.to_string())),
            toml::Value::Integer(i) if *i >= 0 => Ok(Value::Str(i.to_string())),
            toml::Value::String(s)
                if s.trim()
                    .parse::<f64>()
                    .is_ok_and(|f| f >= 0.0 && f.is_finite()) =>
            {
                Ok(Value::Str(s.trim().to_owned()))
            }
            other => Err(bad(format!("expected a non-negative number, got {other}"))),
        },
        Kind::Size => {
            let s = as_text(raw)
                .ok_or_else(|| bad("expected a size like \"4GiB\" or a byte count".into()))?;
            parse_size(&s).map_err(|e| bad(e.to_string()))?;
            Ok(Value::Str(s))
        }
        Kind::Duration => {
            let s = as_text(raw).ok_or_else(|| bad("expected a duration like \"30s\"".into()))?;
            parse_duration_ms(&s).map_err(|e| bad(e.to_string()))?;
            Ok(Value::Str(s))
        }
        Kind::List => match raw {
            toml::Value::String(s) => Ok(Value::List(
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("expected a list of strings".into()))
                })
                .collect::<anyhow::Result<_>>()
                .map(Value::List),
            other => Err(bad(format!(
                "expected a list of strings, got {}",
                other.type_str()
            ))),
        },
        Kind::Choice(options) => {
            let s = raw
                .as_str()
                .ok_or_else(|| bad(format!("expected one of {options:?}")))?;
            if !options.contains(&s) {
                return Err(bad(format!("expected one of {options:?}, got {s:?}")));
            }
            Ok(Value::Str(s.to_owned()))
        }
    }
}

impl Effective {
    /// Merges defaults, the file's text, the environment and flags (all as given).
    pub fn load(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
        flags: &[(&'static KeyDef, String)],
    ) -> anyhow::Result<Self> {
        let mut values = BTreeMap::new();
        let mut origins = Vec::new();
        for def in KEYS {
            let v = validate(def, &toml::Value::String(def.default.to_owned()), "default")?;
            values.insert(def.name(), (v, "default".to_owned()));
        }
        if let Some((path, text)) = file {
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("config file {path} is not valid TOML"))?;
            for (section, body) in &table {
                if section == "origins" {
                    let toml::Value::Array(entries) = body else {
                        bail!("config file {path}: origins must be [[origins]] tables");
                    };
                    for (i, e) in entries.iter().enumerate() {
                        origins.push(parse_origin_entry(path, i, e)?);
                    }
                    continue;
                }
                let toml::Value::Table(body) = body else {
                    bail!("config file {path}: {section} must be a [section] table");
                };
                for (key, raw) in body {
                    let name = format!("{section}.{key}");
                    let def = find(&name)
                        .ok_or_else(|| anyhow::anyhow!("unknown config key {name} in {path}"))?;
                    values.insert(name, (validate(def, raw, path)?, format!("file {path}")));
                }
            }
        }
        for (var, val) in env {
            if !var.starts_with("ELIOP2P_") || ENV_NOT_KEYS.iter().any(|p| var.starts_with(p)) {
                continue;
            }
            let def = KEYS.iter().find(|k| k.env() == *var).ok_or_else(|| {
                anyhow::anyhow!("unknown config key in environment variable {var}")
            })?;
            let source = format!("env {var}");
            values.insert(
                def.name(),
                (
                    validate(def, &toml::Value::String(val.clone()), &source)?,
                    source,
                ),
            );
        }
        for (def, val) in flags {
            let source = format!("flag --{}", def.flag());
            values.insert(
                def.name(),
                (
                    validate(def, &toml::Value::String(val.clone()), &source)?,
                    source,
                ),
            );
        }
        Ok(Self { values, origins })
    }

    fn raw(&self, name: &str) -> &Value {
        // Every key has at least its default: KEYS is the only source of names.
        &self.values[name].0
    }

    /// A string-valued key, for subcommands that read single keys.
    pub fn get_str(&self, name: &str) -> String {
        self.str(name)
    }

    fn str(&self, name: &str) -> String {
        match self.raw(name) {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::List(l) => l.join(","),
        }
    }

    fn int(&self, name: &str) -> u64 {
        match self.raw(name) {
            Value::Int(i) => *i,
            other => unreachable!("{name} validated as an integer, got {other:?}"),
        }
    }

    fn size(&self, name: &str) -> u64 {
        parse_size(&self.str(name)).expect("validated at load")
    }

    fn duration(&self, name: &str) -> Duration {
        Duration::from_millis(parse_duration_ms(&self.str(name)).expect("validated at load"))
    }

    fn float(&self, name: &str) -> f64 {
        self.str(name).parse().expect("validated at load")
    }

    fn list(&self, name: &str) -> Vec<String> {
        match self.raw(name) {
            Value::List(l) => l.clone(),
            other => unreachable!("{name} validated as a list, got {other:?}"),
        }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.str(name).parse().expect("validated at load")
    }

    /// The effective configuration as TOML (secrets redacted), with sources.
    pub fn to_toml(&self) -> String {
        let mut out = self.keys_to_toml();
        for (i, e) in self.origins.iter().enumerate() {
            let _ = writeln!(out, "\n[[origins]]  # entry {i}");
            let buckets =
                toml::Value::Array(e.buckets.iter().cloned().map(toml::Value::String).collect());
            let _ = writeln!(out, "buckets = {buckets}");
            if let Some(a) = &e.auth {
                let _ = writeln!(out, "auth = {}", toml::Value::String(a.clone()));
            }
            for key in ORIGIN_ENTRY_KEYS {
                let name = format!("origin.{key}");
                let def = find(&name).expect("origin keys exist");
                let (value, source) = &e.values.values[&name];
                let text = render(value, def.kind);
                let _ = writeln!(out, "{key} = {text}  # {source}");
            }
        }
        out
    }

    fn keys_to_toml(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for def in KEYS {
            if def.section != section {
                section = def.section;
                let _ = writeln!(out, "{}[{section}]", if out.is_empty() { "" } else { "\n" });
            }
            let (value, source) = &self.values[&def.name()];
            let text = render(value, def.kind);
            let _ = writeln!(out, "{} = {text}  # {source}", def.key);
        }
        out
    }

    /// The P2P layer's config; `None` (standalone node) when there is neither a
    /// secret nor a peer to talk to.
    fn p2p_config(&self, node_id: &str) -> anyhow::Result<Option<eliop2p_p2p::P2pConfig>> {
        let mut secret = self.str("p2p.cluster_secret").into_bytes();
        let file = self.str("p2p.cluster_secret_file");
        if !file.is_empty() {
            secret = std::fs::read(&file).map_err(|e| {
                anyhow::anyhow!("config key p2p.cluster_secret_file: reading {file}: {e}")
            })?;
            while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
                secret.pop();
            }
        }
        let peers = self
            .list("p2p.static_peers")
            .iter()
            .map(|p| {
                p.parse().map_err(|e| {
                    anyhow::anyhow!("config key p2p.static_peers: {p:?} is not host:port: {e}")
                })
            })
            .collect::<anyhow::Result<Vec<std::net::SocketAddr>>>()?;
        let allow = self.str("p2p.allow_unauthenticated") == "true";
        let mode = self.discovery_mode();
        if secret.is_empty() && peers.is_empty() && !allow && mode == "static" {
            return Ok(None);
        }
        let k = self.int("p2p.selection_k");
        if !(1..=10).contains(&k) {
            bail!("config key p2p.selection_k: must be 1 to 10, got {k}");
        }
        let listen = self.addr("p2p.listen");
        if secret.is_empty() && !allow && !listen.ip().is_loopback() {
            bail!(
                "config key p2p.cluster_secret: required to listen for peers on {listen} (or set p2p.allow_unauthenticated = true)"
            );
        }
        let mut pc = eliop2p_p2p::P2pConfig::new(node_id);
        pc.cluster_secret = (!secret.is_empty()).then_some(secret);
        pc.allow_unauthenticated = allow;
        pc.static_peers = peers;
        pc.selection_k = k as usize;
        pc.max_upload_rate = self.size("p2p.max_upload_rate");
        pc.max_download_rate = self.size("p2p.max_download_rate");
        pc.piece_timeout = self.duration("p2p.piece_timeout");
        if mode != "static" {
            let seeds = self.addr_list("discovery.seeds")?;
            let advertise = match self.str("p2p.advertise_addr").as_str() {
                "" => None,
                a => Some(a.parse().map_err(|e| {
                    anyhow::anyhow!("config key p2p.advertise_addr: {a:?} is not ip:port: {e}")
                })?),
            };
            let advertise = advertise.or_else(|| {
                // Listening on every interface: advertise the address that routes
                // towards the control plane or the first seed.
                listen.ip().is_unspecified().then(|| {
                    let toward = self
                        .control_plane_host()
                        .or_else(|| seeds.first().map(|s| s.to_string()))?;
                    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
                    probe.connect(toward).ok()?;
                    Some(SocketAddr::new(
                        probe.local_addr().ok()?.ip(),
                        listen.port(),
                    ))
                })?
            });
            let fanout = self.int("discovery.fanout").clamp(1, 16) as usize;
            let (suspect, dead) = (
                self.duration("discovery.suspect_after"),
                self.duration("discovery.dead_after"),
            );
            if dead < suspect {
                bail!(
                    "config keys discovery.suspect_after and discovery.dead_after: dead_after ({dead:?}) must not be shorter than suspect_after ({suspect:?})"
                );
            }
            pc.cluster = Some(eliop2p_p2p::ClusterConfig {
                gossip: mode != "control-plane",
                seeds,
                gossip_cfg: eliop2p_cluster::GossipConfig {
                    interval_ms: self
                        .duration("discovery.gossip_interval")
                        .as_millis()
                        .max(10) as u64,
                    fanout,
                    suspect_after_ms: suspect.as_millis() as u64,
                    dead_after_ms: dead.as_millis() as u64,
                    ..Default::default()
                },
                advertise,
                proxy_addr: None,
                zone: self.str("node.zone"),
            });
        }
        Ok(Some(pc))
    }

    fn client_keys(&self) -> anyhow::Result<eliop2p_proxy::sigv4::ClientKeys> {
        let path = self.str("proxy.client_keys_file");
        if path.is_empty() {
            return Ok(Default::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("config key proxy.client_keys_file: reading {path}"))?;
        let entries: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(":"))
            .collect();
        if entries.is_empty() {
            bail!("config key proxy.client_keys_file: {path} has no keys");
        }
        eliop2p_proxy::sigv4::ClientKeys::parse(&entries)
            .map_err(|e| anyhow::anyhow!("config key proxy.client_keys_file: {path}: {e}"))
    }

    /// The discovery mode after resolving `auto`.
    pub fn discovery_mode(&self) -> String {
        match self.str("discovery.mode").as_str() {
            "auto" if !self.str("control_plane.endpoint").is_empty() => "hybrid".into(),
            "auto" if !self.list("discovery.seeds").is_empty() => "gossip".into(),
            "auto" => "static".into(),
            m => m.to_owned(),
        }
    }

    fn control_plane_host(&self) -> Option<String> {
        let e = self.str("control_plane.endpoint");
        let uri: http::Uri = e.parse().ok()?;
        let port = uri.port_u16().unwrap_or(80);
        Some(format!("{}:{port}", uri.host()?))
    }

    fn addr_list(&self, key: &str) -> anyhow::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        self.list(key)
            .iter()
            .map(|p| {
                p.to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        anyhow::anyhow!("config key {key}: {p:?} is not a reachable host:port")
                    })
            })
            .collect()
    }

    /// The node's control-plane client, for modes `control-plane` and `hybrid`.
    fn control_plane_client(
        &self,
    ) -> anyhow::Result<Option<eliop2p_proxy::ControlPlaneClientConfig>> {
        let mode = self.discovery_mode();
        let endpoint = self.str("control_plane.endpoint");
        if mode != "control-plane" && mode != "hybrid" {
            return Ok(None);
        }
        if endpoint.is_empty() {
            bail!("config key control_plane.endpoint: required with discovery.mode = {mode}");
        }
        match endpoint.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
            _ => bail!(
                "config key control_plane.endpoint: {endpoint:?} must be an http://host:port URL"
            ),
        }
        let mut labels = BTreeMap::new();
        for l in ["zone", "rack"] {
            let v = self.str(&format!("node.{l}"));
            if !v.is_empty() {
                labels.insert(l.to_owned(), v);
            }
        }
        let token = self.str("control_plane.token");
        Ok(Some(eliop2p_proxy::ControlPlaneClientConfig {
            endpoint,
            token: (!token.is_empty()).then_some(token),
            labels,
            heartbeat_interval: self.duration("control_plane.heartbeat_interval"),
            replication_max_rate: self.size("replication.max_rate"),
        }))
    }

    /// The control plane service's configuration.
    pub fn control_config(&self) -> anyhow::Result<eliop2p_control::ControlConfig> {
        let (suspect, dead) = (
            self.duration("control_plane.suspect_after"),
            self.duration("control_plane.dead_after"),
        );
        if dead < suspect {
            bail!(
                "config keys control_plane.suspect_after and control_plane.dead_after: dead_after ({dead:?}) must not be shorter than suspect_after ({suspect:?})"
            );
        }
        let token = self.str("control_plane.token");
        let dir = self.str("control_plane.data_dir");
        Ok(eliop2p_control::ControlConfig {
            token: (!token.is_empty()).then_some(token),
            data_dir: (!dir.is_empty()).then(|| dir.into()),
            timing: eliop2p_control::Timing {
                heartbeat_interval: self.duration("control_plane.heartbeat_interval"),
                suspect_after: suspect,
                dead_after: dead,
            },
            replication: eliop2p_control::ReplicationConfig {
                min_replicas: self.int("replication.min_replicas") as usize,
                hot_threshold: self.int("replication.hot_threshold").max(1),
                max_replicas: self.int("replication.max_replicas") as usize,
                max_pending_per_node: 16,
            },
            replication_interval: self.duration("replication.interval"),
        })
    }

    fn cache_config(&self, chunk_size: u64) -> anyhow::Result<CacheConfig> {
        let weights: EvictionWeights = self
            .str("cache.eviction_weights")
            .parse()
            .map_err(|e| anyhow::anyhow!("config key cache.eviction_weights: {e}"))?;
        let (high, low) = (
            self.float("cache.eviction_high"),
            self.float("cache.eviction_low"),
        );
        if !(0.0 < low && low <= high && high <= 1.0) {
            bail!(
                "config keys cache.eviction_low and cache.eviction_high: need 0 < low <= high <= 1, got low {low}, high {high}"
            );
        }
        let (hot, warm) = (
            self.float("cache.hot_threshold"),
            self.float("cache.warm_threshold"),
        );
        if warm > hot {
            bail!(
                "config keys cache.warm_threshold and cache.hot_threshold: warm ({warm}) must not exceed hot ({hot})"
            );
        }
        let disk_size = self.size("cache.disk_size");
        let disk = (disk_size > 0).then(|| DiskTierConfig {
            path: self.str("cache.disk_path").into(),
            capacity: disk_size,
            verify_on_start: self
                .str("cache.verify_on_start")
                .parse()
                .expect("validated choice"),
            write_queue: self.int("cache.write_queue").clamp(1, 4096) as usize,
        });
        if let Some(d) = &disk
            && d.path.as_os_str().is_empty()
        {
            bail!("config key cache.disk_path: required when cache.disk_size > 0");
        }
        Ok(CacheConfig {
            memory_capacity: self.size("cache.memory_size"),
            chunk_size,
            disk,
            weights,
            heat_window: self.duration("cache.heat_window"),
            hot_threshold: hot,
            warm_threshold: warm,
            protect_recent: self.duration("cache.protect_recent"),
            watermarks: Watermarks { high, low },
        })
    }

    /// The `origin.*` keys as an origin config (`what` names them in errors).
    fn origin_config(&self, what: &str) -> anyhow::Result<OriginConfig> {
        let endpoint = self.str("origin.endpoint");
        if endpoint.is_empty() {
            bail!(
                "config key {what}.endpoint is required (set it in the config file, ELIOP2P_ORIGIN_ENDPOINT or --origin-endpoint)"
            );
        }
        let addressing: Addressing = self
            .str("origin.addressing")
            .parse()
            .map_err(|e| anyhow::anyhow!("config key origin.addressing: {e}"))?;
        let kind = match (
            self.str("origin.kind").as_str(),
            self.str("origin.signature").as_str(),
        ) {
            ("oss", "v1") => eliop2p_origin::OriginKind::Oss(eliop2p_origin::OssSignature::V1),
            ("oss", _) => eliop2p_origin::OriginKind::Oss(eliop2p_origin::OssSignature::V4),
            ("http", _) => eliop2p_origin::OriginKind::Http,
            (_, "v1") => {
                bail!("config key origin.signature: v1 is for origin.kind = oss; S3 origins use v4")
            }
            _ => eliop2p_origin::OriginKind::S3,
        };
        let origin = OriginConfig {
            endpoint,
            kind,
            region: self.str("origin.region"),
            access_key: self.str("origin.access_key"),
            secret_key: self.str("origin.secret_key"),
            addressing,
            connect_timeout: self.duration("origin.connect_timeout"),
            request_timeout: self.duration("origin.request_timeout"),
            max_retries: self.int("origin.max_retries").min(10) as u32,
        };
        Ok(origin)
    }

    /// The node's configuration, with cross-key checks. `node_id` comes from
    /// [`Effective::node_id`].
    pub fn node_config_with_id(&self, node_id: &str) -> anyhow::Result<NodeConfig> {
        let origin = self.origin_config("origin")?;
        let chunk_size = self.size("cache.chunk_size");
        if !(64 * 1024..=1 << 30).contains(&chunk_size) {
            bail!(
                "config key cache.chunk_size: must be between 64KiB and 1GiB, got {chunk_size} bytes"
            );
        }
        let mut extra_origins = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.origins.iter().enumerate() {
            let what = format!("origins[{i}]");
            let cfg = e.values.origin_config(&what)?;
            if cfg.kind == eliop2p_origin::OriginKind::Http {
                bail!(
                    "config key {what}.kind: plain HTTP origins have no buckets; use it as the main [origin]"
                );
            }
            for b in &e.buckets {
                if !seen.insert(b.clone()) {
                    bail!("config key {what}.buckets: bucket {b:?} is routed to two origins");
                }
            }
            extra_origins.push(eliop2p_proxy::ExtraOrigin {
                origin: cfg,
                buckets: e.buckets.clone(),
                auth: e.auth.as_deref().map(|a| {
                    if a == "passthrough" {
                        eliop2p_proxy::AuthMode::Passthrough
                    } else {
                        eliop2p_proxy::AuthMode::Node
                    }
                }),
            });
        }
        Ok(NodeConfig {
            extra_origins,
            proxy: ProxyConfig {
                auth: if self.str("proxy.auth") == "passthrough" {
                    eliop2p_proxy::AuthMode::Passthrough
                } else {
                    eliop2p_proxy::AuthMode::Node
                },
                allowed_origins: self.list("proxy.allowed_origins"),
                client_keys: self.client_keys()?,
                auth_cache_ttl: self.duration("proxy.auth_cache_ttl"),
                virtual_host_domains: self.list("proxy.virtual_host_domains"),
                chunk_size,
                metadata_ttl: self.duration("cache.metadata_ttl"),
                metadata_max_entries: self.int("cache.metadata_max_entries").max(1) as usize,
                readahead_chunks: self.int("proxy.readahead_chunks").min(64) as usize,
                fill_idle_timeout: origin.request_timeout,
            },
            admin: AdminConfig::default(),
            cache: self.cache_config(chunk_size)?,
            origin,
            shutdown_grace: self.duration("node.shutdown_grace"),
            p2p: self.p2p_config(node_id)?,
            control_plane: self.control_plane_client()?,
        })
    }

    /// The node's configuration with its id resolved (and persisted if new).
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let id = self.node_id()?;
        self.node_config_with_id(&id)
    }

    /// `node.id`, or the id kept in `<cache.disk_path>/node-id` (generated on first
    /// start), or without a disk tier `<hostname>-<p2p port>`.
    pub fn node_id(&self) -> anyhow::Result<String> {
        let valid = |id: &str| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        };
        let configured = self.str("node.id");
        if !configured.is_empty() {
            if !valid(&configured) {
                bail!(
                    "config key node.id: {configured:?} must be 1-128 characters of letters, digits, '-', '_', '.', ':'"
                );
            }
            return Ok(configured);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .collect::<String>();
        let host = if host.is_empty() {
            "node".to_owned()
        } else {
            host
        };
        if self.size("cache.disk_size") == 0 {
            return Ok(format!("{host}-{}", self.addr("p2p.listen").port()));
        }
        let dir = std::path::PathBuf::from(self.str("cache.disk_path"));
        let path = dir.join("node-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            let id = id.trim().to_owned();
            if valid(&id) {
                return Ok(id);
            }
        }
        let mut rnd = [0u8; 4];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd))
            .context("reading /dev/urandom for a node id")?;
        let id = format!("{host}-{}", hex::encode(rnd));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, format!("{id}\n")))
            .with_context(|| {
                format!(
                    "config key cache.disk_path: cannot keep the node id in {}",
                    path.display()
                )
            })?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod doc_tests {
    #[test]
    fn configuration_doc_lists_every_key() {
        let doc = include_str!("../../../docs/configuration.md");
        for def in super::KEYS {
            assert!(
                doc.contains(&format!("`{}`", def.name())),
                "docs/configuration.md misses {}",
                def.name()
            );
            assert!(
                doc.contains(&def.env()),
                "docs/configuration.md misses {}",
                def.env()
            );
        }
    }
}
