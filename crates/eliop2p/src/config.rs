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

mod cluster;
mod keydef;
mod keys;

use keys::ENV_NOT_KEYS;
pub use keydef::{KeyDef, Kind};
pub use keys::KEYS;

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
    "session_token",
    "addressing",
    "connect_timeout",
    "request_timeout",
    "max_retries",
    "ca_file",
    "insecure_skip_verify",
    "credentials",
    "profile",
    "role_arn",
    "web_identity_token_file",
    "sts_endpoint",
    "metadata_endpoint",
    "container_credentials_uri",
    "container_authorization_token_file",
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
            let s = match raw {
                toml::Value::String(s) => s.clone(),
                // `key = true` for a false/true switch, as TOML writes booleans.
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(bad(format!("expected one of {options:?}, got {other}")));
                }
            };
            if !options.contains(&s.as_str()) {
                return Err(bad(format!("expected one of {options:?}, got {s:?}")));
            }
            Ok(Value::Str(s))
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

    pub fn get_list(&self, name: &str) -> Vec<String> {
        self.list(name)
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

    /// At start: `cache.disk_size` must fit the filesystem that holds
    /// `cache.disk_path` (else the tier would stop evicting at ENOSPC long before
    /// it is "full").
    pub fn check_disk_fits(&self) -> anyhow::Result<()> {
        let size = self.size("cache.disk_size");
        let path = self.str("cache.disk_path");
        if size == 0 || path.is_empty() {
            return Ok(());
        }
        // The nearest existing directory: the cache directory may not exist yet.
        let mut at = std::path::PathBuf::from(&path);
        while !at.exists() {
            if !at.pop() {
                return Ok(());
            }
        }
        let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
            .map_err(|_| anyhow::anyhow!("config key cache.disk_path: {path} has a NUL byte"))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs writes one `struct statvfs` into `st`, which lives for the
        // call; `c` is a NUL-terminated path.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Ok(());
        }
        let total = st.f_blocks as u64 * st.f_frsize as u64;
        if size > total {
            bail!(
                "config key cache.disk_size: {} is more than the whole filesystem holding {path} ({} bytes); set it below the free space the cache may use",
                self.str("cache.disk_size"),
                total
            );
        }
        Ok(())
    }

    /// Where the S3 proxy listens, and which clients it trusts (said at start).
    /// A node that signs with its own keys (`proxy.auth = node` on any origin) for
    /// any client at all (no `proxy.client_keys_file`) would read everything its
    /// keys can for whoever reaches the port: it listens on loopback only (local
    /// clients) unless `proxy.allow_anonymous_network = true`. The default
    /// `proxy.listen` then becomes 127.0.0.1 on the same port; an explicit
    /// non-loopback address is a config error.
    pub fn proxy_listen(&self) -> anyhow::Result<(SocketAddr, String)> {
        let mut addr = self.addr("proxy.listen");
        let node_auth = self.str("proxy.auth") == "node"
            || self.origins.iter().any(|o| o.auth.as_deref() == Some("node"));
        let keys = !self.str("proxy.client_keys_file").is_empty();
        let open = self.str("proxy.allow_anonymous_network") == "true";
        let trust = if keys {
            "clients whose requests are signed with a key of proxy.client_keys_file".to_owned()
        } else if !node_auth {
            "every client, as far as the origin authorizes it (passthrough)".to_owned()
        } else if open {
            "ANY client that reaches the port, with the node's origin credentials (proxy.allow_anonymous_network = true)".to_owned()
        } else {
            if !addr.ip().is_loopback() {
                if self.values["proxy.listen"].1 != "default" {
                    bail!(
                        "config key proxy.listen: {addr} would let anyone on the network read with the node's origin credentials (proxy.auth = node, no proxy.client_keys_file); set proxy.client_keys_file, proxy.auth = passthrough, or proxy.allow_anonymous_network = true"
                    );
                }
                addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
            }
            "local clients only: the proxy listens on loopback (proxy.auth = node without proxy.client_keys_file; set proxy.allow_anonymous_network = true to open it)".to_owned()
        };
        Ok((addr, trust))
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
            memory_prefault: self.str("cache.memory_prefault") == "true",
            inflight_capacity: self.size("cache.inflight_size"),
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
            session_token: Some(self.str("origin.session_token")).filter(|t| !t.is_empty()),
            addressing,
            connect_timeout: self.duration("origin.connect_timeout"),
            request_timeout: self.duration("origin.request_timeout"),
            max_retries: self.int("origin.max_retries").min(10) as u32,
            tls: self.origin_tls(what)?,
            credentials: self.origin_credentials(what, kind)?,
        };
        Ok(origin)
    }

    fn origin_credentials(
        &self,
        what: &str,
        kind: eliop2p_origin::OriginKind,
    ) -> anyhow::Result<eliop2p_origin::CredentialSettings> {
        let opt = |k: &str| Some(self.str(&format!("origin.{k}"))).filter(|v| !v.is_empty());
        let has_key = opt("access_key").is_some();
        let source = eliop2p_origin::CredentialSource::parse(&self.str("origin.credentials"), has_key)
            .map_err(|e| anyhow::anyhow!("config key {what}.credentials: {e}"))?;
        if kind == eliop2p_origin::OriginKind::Http {
            return Ok(Default::default());
        }
        source
            .check_kind(kind)
            .map_err(|e| anyhow::anyhow!("config key {what}.credentials: {e}"))?;
        if source == eliop2p_origin::CredentialSource::Static && !has_key {
            bail!("config key {what}.credentials: static needs {what}.access_key and {what}.secret_key");
        }
        if source != eliop2p_origin::CredentialSource::Static && has_key {
            bail!(
                "config key {what}.access_key: set, but {what}.credentials = {} loads keys of its own; remove one of them",
                source.name()
            );
        }
        for k in ["sts_endpoint", "metadata_endpoint", "container_credentials_uri"] {
            if let Some(v) = opt(k)
                && !(v.starts_with("http://") || v.starts_with("https://"))
            {
                bail!("config key {what}.{k}: {v:?} is not an http:// or https:// URL");
            }
        }
        let token_file = opt("web_identity_token_file").map(std::path::PathBuf::from);
        if let Some(f) = &token_file
            && source == eliop2p_origin::CredentialSource::WebIdentity
            && !f.is_file()
        {
            bail!("config key {what}.web_identity_token_file: {} is not a readable file", f.display());
        }
        Ok(eliop2p_origin::CredentialSettings {
            source,
            profile: opt("profile"),
            role_arn: opt("role_arn"),
            web_identity_token_file: token_file,
            sts_endpoint: opt("sts_endpoint"),
            metadata_endpoint: opt("metadata_endpoint"),
            container_uri: opt("container_credentials_uri"),
            container_token_file: opt("container_authorization_token_file").map(std::path::PathBuf::from),
            region: opt("region"),
        })
    }

    fn origin_tls(&self, what: &str) -> anyhow::Result<eliop2p_origin::TlsConfig> {
        let insecure = self.str("origin.insecure_skip_verify") == "true";
        if insecure && std::env::var("ELIOP2P_TEST_ALLOW_INSECURE_TLS").as_deref() != Ok("1") {
            bail!(
                "config key {what}.insecure_skip_verify: refused: it turns off the checks of the origin's certificate; use {what}.ca_file for a private CA (tests set ELIOP2P_TEST_ALLOW_INSECURE_TLS=1)"
            );
        }
        let ca = self.str("origin.ca_file");
        let ca_file = (!ca.is_empty()).then(|| std::path::PathBuf::from(&ca));
        if let Some(path) = &ca_file {
            eliop2p_origin::load_ca_file(path).map_err(|e| anyhow::anyhow!("config key {what}.ca_file: {e}"))?;
        }
        Ok(eliop2p_origin::TlsConfig {
            ca_file,
            insecure_skip_verify: insecure,
        })
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
                fill_deadline: self.duration("origin.fill_deadline"),
                origin_max_concurrent: self.int("origin.max_concurrent_requests").max(1) as usize,
                origin_streams: self.int("origin.streams_per_chunk").clamp(1, 64) as usize,
                max_connections: self.int("proxy.max_connections").max(1) as usize,
                send_timeout: self.duration("proxy.send_timeout"),
                stale_if_error: self.duration("cache.stale_if_error"),
            },
            admin: AdminConfig::default(),
            cache: self.cache_config(chunk_size)?,
            origin,
            shutdown_grace: self.duration("node.shutdown_grace"),
            p2p: self.p2p_config(node_id)?,
            control_plane: self.control_plane_client()?,
        })
    }

    /// `node.worker_threads`: the runtime's worker threads, `None` for one per
    /// CPU (0).
    pub fn worker_threads(&self) -> anyhow::Result<Option<usize>> {
        match self.int("node.worker_threads") {
            0 => Ok(None),
            n if n <= 1024 => Ok(Some(n as usize)),
            n => bail!("config key node.worker_threads: {n} is more than 1024"),
        }
    }

    /// The node's configuration with its id resolved (and persisted if new).
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let id = self.node_id()?;
        self.node_config_with_id(&id)
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
