//! The cluster side of a node's configuration: the P2P layer with discovery, the
//! control-plane client, the control-plane service, and the node's identity.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

use super::Effective;

impl Effective {
    /// Mutual TLS on the P2P port, when `p2p.tls_cert` is set; the files are read
    /// now, and an error names the key whose file is wrong.
    fn p2p_tls(&self) -> anyhow::Result<Option<eliop2p_p2p::tls::P2pTls>> {
        let (cert, key, ca) = (self.str("p2p.tls_cert"), self.str("p2p.tls_key"), self.str("p2p.tls_ca"));
        let rollout = self.str("p2p.tls_rollout") == "true";
        if cert.is_empty() && key.is_empty() && ca.is_empty() {
            if rollout {
                bail!("config key p2p.tls_rollout: set, but p2p.tls_cert is not: there is nothing to roll out");
            }
            return Ok(None);
        }
        for (k, v) in [("p2p.tls_cert", &cert), ("p2p.tls_key", &key), ("p2p.tls_ca", &ca)] {
            if v.is_empty() {
                bail!("config key {k}: required with the other p2p.tls_* keys (mutual TLS needs the certificate, its key and the cluster CA)");
            }
        }
        let files = eliop2p_p2p::tls::TlsFiles { cert: cert.into(), key: key.into(), ca: ca.into(), rollout };
        eliop2p_p2p::tls::P2pTls::load(files)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("config key {e}"))
    }

    /// The P2P layer's config; `None` (standalone node) when there is neither a
    /// secret nor a peer to talk to.
    pub(super) fn p2p_config(
        &self,
        node_id: &str,
    ) -> anyhow::Result<Option<eliop2p_p2p::P2pConfig>> {
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
        let tls = self.p2p_tls()?;
        if secret.is_empty() && peers.is_empty() && !allow && mode == "static" && tls.is_none() {
            return Ok(None);
        }
        let k = self.int("p2p.selection_k");
        if !(1..=10).contains(&k) {
            bail!("config key p2p.selection_k: must be 1 to 10, got {k}");
        }
        let listen = self.addr("p2p.listen");
        if secret.is_empty() && tls.is_none() && !allow && !listen.ip().is_loopback() {
            bail!(
                "config key p2p.cluster_secret: required to listen for peers on {listen} (or set p2p.tls_cert, p2p.tls_key and p2p.tls_ca, or p2p.allow_unauthenticated = true)"
            );
        }
        if let Some(t) = &tls
            && !t.identities().iter().any(|i| i == node_id)
        {
            bail!(
                "config key p2p.tls_cert: the certificate names {:?}, not this node's id {node_id:?} (node.id); peers would refuse it",
                t.identities()
            );
        }
        let mut pc = eliop2p_p2p::P2pConfig::new(node_id);
        pc.tls = tls.map(std::sync::Arc::new);
        pc.cluster_secret = (!secret.is_empty()).then_some(secret);
        pc.allow_unauthenticated = allow;
        pc.static_peers = peers;
        pc.selection_k = k as usize;
        pc.max_upload_rate = self.size("p2p.max_upload_rate");
        pc.max_download_rate = self.size("p2p.max_download_rate");
        pc.piece_timeout = self.duration("p2p.piece_timeout");
        pc.max_uploads = self.int("p2p.upload_slots").max(1) as usize;
        pc.max_download_pieces = self.int("p2p.download_pieces").max(1) as usize;
        pc.max_download_pieces_while_filling = self.int("p2p.download_pieces_while_filling") as usize;
        pc.max_connections = self.int("p2p.max_connections").max(1) as usize;
        pc.tcp_congestion = match self.str("p2p.tcp_congestion").as_str() {
            "" => None,
            name => {
                eliop2p_p2p::sockopt::check_congestion(name).map_err(|e| anyhow::anyhow!("config key p2p.tcp_congestion: {e}"))?;
                Some(name.to_owned())
            }
        };
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
                    Some(SocketAddr::new(route_source(&toward)?, listen.port()))
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
                owner: self.str("node.owner") != "false",
            });
        }
        Ok(Some(pc))
    }

    /// The discovery mode after resolving `auto`.
    pub fn discovery_mode(&self) -> String {
        match self.str("discovery.mode").as_str() {
            "auto" if !self.list("control_plane.endpoint").is_empty() => "hybrid".into(),
            "auto" if !self.list("discovery.seeds").is_empty() => "gossip".into(),
            "auto" => "static".into(),
            m => m.to_owned(),
        }
    }

    /// The first control-plane replica's `host:port`.
    fn control_plane_host(&self) -> Option<String> {
        let e = self.list("control_plane.endpoint").into_iter().next()?;
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

    /// `control_plane.ca_file`, read and checked now.
    pub fn control_plane_ca(&self) -> anyhow::Result<Option<std::path::PathBuf>> {
        let ca = self.str("control_plane.ca_file");
        if ca.is_empty() {
            return Ok(None);
        }
        let path = std::path::PathBuf::from(&ca);
        eliop2p_origin::load_ca_file(&path).map_err(|e| anyhow::anyhow!("config key control_plane.ca_file: {e}"))?;
        Ok(Some(path))
    }

    /// `control_plane.tls_client_cert` and `tls_client_key`, checked now.
    pub fn control_plane_identity(&self) -> anyhow::Result<Option<eliop2p_origin::ClientIdentity>> {
        self.client_identity("control_plane.tls_client_cert", "control_plane.tls_client_key", "control_plane.ca_file")
    }

    /// A client certificate and key given by two keys (both or neither), loaded
    /// now so that a bad file is an error naming `cert_key`.
    fn client_identity(&self, cert_key: &str, key_key: &str, ca_key: &str) -> anyhow::Result<Option<eliop2p_origin::ClientIdentity>> {
        let (cert, key) = (self.str(cert_key), self.str(key_key));
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => bail!("config key {key_key}: required with {cert_key}"),
            (true, false) => bail!("config key {cert_key}: required with {key_key}"),
            (false, false) => {
                let id = eliop2p_origin::ClientIdentity { cert: cert.into(), key: key.into() };
                eliop2p_origin::https_connector(None, Some(&id), Duration::from_secs(1), ca_key)
                    .map_err(|e| anyhow::anyhow!("config key {cert_key}: {e}"))?;
                Ok(Some(id))
            }
        }
    }

    /// The node's control-plane client, for modes `control-plane` and `hybrid`.
    pub(super) fn control_plane_client(
        &self,
    ) -> anyhow::Result<Option<eliop2p_proxy::ControlPlaneClientConfig>> {
        let mode = self.discovery_mode();
        let endpoints = self.list("control_plane.endpoint");
        if mode != "control-plane" && mode != "hybrid" {
            return Ok(None);
        }
        if endpoints.is_empty() {
            bail!("config key control_plane.endpoint: required with discovery.mode = {mode}");
        }
        for endpoint in &endpoints {
            match endpoint.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
                _ => bail!(
                    "config key control_plane.endpoint: {endpoint:?} must be an http://host:port or https://host:port URL"
                ),
            }
        }
        let ca_file = self.control_plane_ca()?;
        let identity = self.control_plane_identity()?;
        let mut labels = BTreeMap::new();
        for l in ["zone", "rack"] {
            let v = self.str(&format!("node.{l}"));
            if !v.is_empty() {
                labels.insert(l.to_owned(), v);
            }
        }
        // Only the exception travels: a node without the label may own chunks.
        if self.str("node.owner") == "false" {
            labels.insert("owner".to_owned(), "false".to_owned());
        }
        let token = self.str("control_plane.token");
        Ok(Some(eliop2p_proxy::ControlPlaneClientConfig {
            endpoints,
            token: (!token.is_empty()).then_some(token),
            labels,
            heartbeat_interval: self.duration("control_plane.heartbeat_interval"),
            replication_max_rate: self.size("replication.max_rate"),
            ca_file,
            identity,
        }))
    }

    /// The shared store's connection: sentinels and TLS files, read and checked now.
    fn redis_config(&self, url: String, lease: Duration) -> anyhow::Result<eliop2p_control::RedisConfig> {
        let read = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
            let path = self.str(key);
            if path.is_empty() {
                return Ok(None);
            }
            if !url.starts_with("rediss://") {
                bail!("config key {key}: set, but control_plane.redis_url is not a rediss:// URL");
            }
            std::fs::read(&path).map(Some).map_err(|e| anyhow::anyhow!("config key {key}: {path}: {e}"))
        };
        let ca = read("control_plane.redis_ca_file")?;
        if ca.is_some() {
            let path = std::path::PathBuf::from(self.str("control_plane.redis_ca_file"));
            eliop2p_origin::load_ca_file(&path)
                .map_err(|e| anyhow::anyhow!("config key control_plane.redis_ca_file: {e}"))?;
        }
        let client_cert = match self.client_identity(
            "control_plane.redis_tls_cert",
            "control_plane.redis_tls_key",
            "control_plane.redis_ca_file",
        )? {
            None => None,
            Some(_) => Some((
                read("control_plane.redis_tls_cert")?.unwrap_or_default(),
                read("control_plane.redis_tls_key")?.unwrap_or_default(),
            )),
        };
        let password = self.str("control_plane.redis_sentinel_password");
        let cfg = eliop2p_control::RedisConfig {
            url,
            prefix: self.str("control_plane.redis_prefix"),
            lease,
            sentinels: self.list("control_plane.redis_sentinels"),
            sentinel_password: (!password.is_empty()).then_some(password),
            ca,
            client_cert,
        };
        // Builds the client now (PEM parsing, sentinel addresses), so that a
        // mistake is a config error, not a replica that never connects.
        if let Err((key, e)) = eliop2p_control::check_redis_config(&cfg) {
            bail!("config key control_plane.{key}: {e}");
        }
        Ok(cfg)
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
        let redis = match self.str("control_plane.store").as_str() {
            "redis" => {
                let url = self.str("control_plane.redis_url");
                if url.is_empty() {
                    bail!("config key control_plane.redis_url: required with control_plane.store = redis");
                }
                if let Err(e) = eliop2p_control::check_redis_url(&url) {
                    bail!("config key control_plane.redis_url: {e}");
                }
                let lease = self.duration("control_plane.planning_lease");
                if lease < Duration::from_millis(300) {
                    bail!("config key control_plane.planning_lease: at least 300ms (it is renewed every third of it)");
                }
                Some(self.redis_config(url, lease)?)
            }
            _ => None,
        };
        Ok(eliop2p_control::ControlConfig {
            token: (!token.is_empty()).then_some(token),
            data_dir: (!dir.is_empty() && redis.is_none()).then(|| dir.into()),
            redis,
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
            tls: self.control_plane_tls()?,
        })
    }

    /// https on the control-plane listener: `control_plane.tls_cert` and `tls_key`.
    fn control_plane_tls(&self) -> anyhow::Result<Option<eliop2p_control::tls::TlsFiles>> {
        let (cert, key) = (self.str("control_plane.tls_cert"), self.str("control_plane.tls_key"));
        let client_ca = self.str("control_plane.client_ca");
        if !client_ca.is_empty() && cert.is_empty() {
            bail!("config key control_plane.client_ca: needs control_plane.tls_cert and tls_key (client certificates are a TLS matter)");
        }
        let client_ca = (!client_ca.is_empty()).then(|| std::path::PathBuf::from(client_ca));
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => bail!("config key control_plane.tls_key: required with control_plane.tls_cert"),
            (true, false) => bail!("config key control_plane.tls_cert: required with control_plane.tls_key"),
            (false, false) => {
                let files = eliop2p_control::tls::TlsFiles { cert: cert.into(), key: key.into(), client_ca };
                files.load().map_err(|e| anyhow::anyhow!("config key {e}"))?;
                Ok(Some(files))
            }
        }
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
        // Under `state/`, beside the cache's `chunks/` and `tmp/`: nothing else is
        // written in the cache directory. Ids kept at its top by earlier versions
        // move there.
        let root = std::path::PathBuf::from(self.str("cache.disk_path"));
        let dir = root.join("state");
        let path = dir.join("node-id");
        let legacy = root.join("node-id");
        for (p, is_legacy) in [(&path, false), (&legacy, true)] {
            if let Ok(id) = std::fs::read_to_string(p) {
                let id = id.trim().to_owned();
                if valid(&id) {
                    if is_legacy {
                        std::fs::create_dir_all(&dir)
                            .and_then(|()| std::fs::write(&path, format!("{id}\n")))
                            .and_then(|()| std::fs::remove_file(&legacy))
                            .with_context(|| format!("config key cache.disk_path: cannot move the node id to {}", path.display()))?;
                    }
                    return Ok(id);
                }
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

/// The local address packets to `toward` (`host:port`) leave from, in the
/// address family of `toward` (IPv6 peers get the IPv6 source).
fn route_source(toward: &str) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let to = toward.to_socket_addrs().ok()?.next()?;
    let probe = std::net::UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }).ok()?;
    probe.connect(to).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

