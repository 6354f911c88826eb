//! The proxy's configuration: how it authenticates, and the knobs of its read path.

use std::time::Duration;

/// Who signs origin requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// The node signs with its own credentials.
    #[default]
    Node,
    /// The client's request goes to the origin as received; the origin authorizes
    /// every request, cached or not.
    Passthrough,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub auth: AuthMode,
    /// In node auth mode: when not empty, only requests signed (SigV4) with one of
    /// these keys are answered.
    pub client_keys: crate::sigv4::ClientKeys,
    /// Passthrough: how long an origin authorization of one exact signature for one
    /// object version is reused (0 = every request asks the origin).
    pub auth_cache_ttl: Duration,
    /// Origins forward-proxy requests (absolute-form and CONNECT) may reach besides
    /// the configured one, as `host:port`.
    pub allowed_origins: Vec<String>,
    /// Host suffixes for virtual-host style requests (`<bucket>.<domain>`).
    pub virtual_host_domains: Vec<String>,
    pub chunk_size: u64,
    pub metadata_ttl: Duration,
    pub metadata_max_entries: usize,
    /// Chunks of the same response fetched ahead of the one being sent.
    pub readahead_chunks: usize,
    /// An origin body silent this long is asked again from its last byte.
    pub fill_idle_timeout: Duration,
    /// A chunk fill that has not got its bytes from the origin within this (all
    /// retries included) fails.
    pub fill_deadline: Duration,
    /// Origin requests for chunk fills this node has open at once, at most.
    pub origin_max_concurrent: usize,
    /// Ranged GETs one chunk fill has open at the origin at once.
    pub origin_streams: usize,
    /// Client connections the proxy holds open at once.
    pub max_connections: usize,
    /// A client connection whose writes make no progress this long is closed.
    pub send_timeout: Duration,
    /// How long past `metadata_ttl` a fully cached object is still served (marked
    /// stale) while its origin is unreachable or answers 5xx; zero = never.
    pub stale_if_error: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            auth: AuthMode::Node,
            client_keys: crate::sigv4::ClientKeys::default(),
            auth_cache_ttl: Duration::ZERO,
            allowed_origins: Vec::new(),
            virtual_host_domains: vec!["localhost".to_owned()],
            chunk_size: 16 << 20,
            metadata_ttl: Duration::from_secs(30),
            metadata_max_entries: 100_000,
            readahead_chunks: 4,
            fill_idle_timeout: Duration::from_secs(30),
            fill_deadline: Duration::from_secs(300),
            origin_max_concurrent: 32,
            origin_streams: 1,
            max_connections: 16384,
            send_timeout: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(3600),
        }
    }
}
