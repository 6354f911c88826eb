//! The table of configuration keys: kind, default and help of each (the types
//! and the `key!` macro are in `keydef`).

use super::keydef::{KeyDef, Kind, key};

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
        "max_connections",
        Kind::Int,
        "16384",
        "client connections the proxy holds open at once; one more is closed at accept"
    ),
    key!(
        "proxy",
        "send_timeout",
        Kind::Duration,
        "60s",
        "a client connection that takes no response bytes for this long is closed (its chunks and in-flight budget are freed); 0s = never"
    ),
    key!(
        "proxy",
        "allow_anonymous_network",
        Kind::Choice(&["false", "true"]),
        "false",
        "with proxy.auth = node and no proxy.client_keys_file, let clients from the network (not only loopback) read with the node's origin credentials; only for a network where every host may read everything the node can"
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
        "4",
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
        "session_token",
        Kind::Secret,
        "",
        "session token of temporary credentials (STS) that go with origin.access_key and origin.secret_key; signed into every origin request"
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
        "origin",
        "ca_file",
        Kind::Str,
        "",
        "PEM bundle of CA certificates trusted for an https origin besides the system's roots (a private CA); checked at start"
    ),
    key!(
        "origin",
        "insecure_skip_verify",
        Kind::Choice(&["false", "true"]),
        "false",
        "accept any certificate from an https origin; refused unless ELIOP2P_TEST_ALLOW_INSECURE_TLS=1 (tests only)"
    ),
    key!(
        "origin",
        "credentials",
        Kind::Choice(&["auto", "static", "default", "env", "profile", "web-identity", "imds", "container", "ecs-ram-role"]),
        "auto",
        "where the node's origin keys come from: static = origin.access_key/secret_key/session_token; default = the provider's chain (S3: environment, shared profile, web identity, container endpoint, IMDSv2; OSS: environment, profile and config files, credentials URI, ECS RAM role, OIDC role); env, profile, web-identity (EKS IRSA), imds (EC2), container (ECS, EKS Pod Identity), ecs-ram-role (Alibaba ECS); temporary credentials are refreshed before they expire; auto = static when origin.access_key is set, default otherwise"
    ),
    key!(
        "origin",
        "profile",
        Kind::Str,
        "",
        "shared config profile for origin.credentials = profile or default (AWS_PROFILE otherwise, then default)"
    ),
    key!(
        "origin",
        "role_arn",
        Kind::Str,
        "",
        "role to assume with a web identity token (origin.credentials = web-identity; AWS_ROLE_ARN otherwise)"
    ),
    key!(
        "origin",
        "web_identity_token_file",
        Kind::Str,
        "",
        "file holding the web identity token, re-read at each refresh (AWS_WEB_IDENTITY_TOKEN_FILE otherwise)"
    ),
    key!(
        "origin",
        "sts_endpoint",
        Kind::Str,
        "",
        "STS URL for web identity instead of AWS's (a VPC endpoint, a private STS; AWS_ENDPOINT_URL_STS otherwise)"
    ),
    key!(
        "origin",
        "metadata_endpoint",
        Kind::Str,
        "",
        "instance metadata URL for origin.credentials = imds or ecs-ram-role instead of the link-local default (AWS_EC2_METADATA_SERVICE_ENDPOINT otherwise)"
    ),
    key!(
        "origin",
        "container_credentials_uri",
        Kind::Str,
        "",
        "container credentials URL for origin.credentials = container (AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI otherwise)"
    ),
    key!(
        "origin",
        "container_authorization_token_file",
        Kind::Str,
        "",
        "file holding the container credentials endpoint's authorization token, re-read at each refresh (EKS Pod Identity; AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE otherwise)"
    ),
    key!(
        "origin",
        "max_concurrent_requests",
        Kind::Int,
        "32",
        "chunk reads this node has open at the origin at once"
    ),
    key!(
        "origin",
        "streams_per_chunk",
        Kind::Int,
        "1",
        "ranged GETs one chunk fill has open at the origin at once, each for a run of whole pieces; raise it (e.g. 4) when one origin stream is slower than the NIC, as with S3"
    ),
    key!(
        "origin",
        "fill_deadline",
        Kind::Duration,
        "5m",
        "a chunk read that fails is asked again from its last received byte (with backoff, honouring Retry-After) until this much time has passed"
    ),
    key!(
        "cache",
        "stale_if_error",
        Kind::Duration,
        "1h",
        "how long past cache.metadata_ttl a fully cached object is still served, marked x-cache-stale, while its origin is unreachable or answers 5xx; 0s = never"
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
        "inflight_size",
        Kind::Size,
        "1GiB",
        "bytes of chunks that responses hold beyond the memory tier (fills in progress, read-ahead, chunks still being sent); read-ahead stops and new reads wait when it is spent; 0 = unlimited"
    ),
    key!(
        "cache",
        "memory_prefault",
        Kind::Choice(&["false", "true"]),
        "false",
        "touch the whole memory tier at start (resident from the first fill)"
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
        "tls_cert",
        Kind::Str,
        "",
        "PEM certificate (and chain) of this node for mutual TLS on the P2P port; it names the node id in a DNS SAN or a URI SAN eliop2p://node/<id>; re-read when the file changes or on SIGHUP"
    ),
    key!(
        "p2p",
        "tls_key",
        Kind::Str,
        "",
        "PEM private key of p2p.tls_cert"
    ),
    key!(
        "p2p",
        "tls_ca",
        Kind::Str,
        "",
        "PEM bundle of the cluster CA: peers must present a certificate it issued"
    ),
    key!(
        "p2p",
        "tls_rollout",
        Kind::Choice(&["false", "true"]),
        "false",
        "while moving a cluster to TLS: the listener also takes peers without TLS (cluster-secret handshake) and the node falls back to plain TCP for peers that do not speak TLS; turn it off once every node has certificates"
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
        "a peer that sends nothing for this long while pieces are asked of it is dropped from the download (a slow peer's overdue pieces go to other peers long before)"
    ),
    key!(
        "p2p",
        "upload_slots",
        Kind::Int,
        "4",
        "pieces sent to peers at once; a request beyond them is answered busy and fetched elsewhere"
    ),
    key!(
        "p2p",
        "max_connections",
        Kind::Int,
        "4096",
        "connections the P2P listener holds open at once (beyond, and beyond 64 from one address, a connection is closed at accept)"
    ),
    key!(
        "p2p",
        "download_pieces",
        Kind::Int,
        "12",
        "pieces (256 KiB each) asked of peers at once over all downloads of this node: enough to fill the NIC, few enough that an origin read on the same link keeps its share"
    ),
    key!(
        "p2p",
        "download_pieces_while_filling",
        Kind::Int,
        "6",
        "the same budget while this node reads a chunk from the origin: the cluster waits on that read, and every piece asked of a peer shares the downlink with it, but the owner needs the rest of the object too (with 2, owners finished last, 0.25-0.3x ideal after the others); 0 = no change"
    ),
    key!(
        "p2p",
        "tcp_congestion",
        Kind::Str,
        "",
        "TCP congestion control of the peer connections (a name from net.ipv4.tcp_available_congestion_control, e.g. cubic or bbr); empty = the host's default. Checked at start: a name the kernel lacks, or one this process may not use, is an error"
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
        "worker_threads",
        Kind::Int,
        "0",
        "threads that run the node's (or control plane's) tasks; 0 = one per CPU this process may use. Set it lower where the node shares its host with other work (a training job, or many nodes on one machine as on the network bed)"
    ),
    key!(
        "node",
        "id",
        Kind::Str,
        "",
        "stable node id; default: generated once and kept in <cache.disk_path>/state/node-id (hostname-based without a disk tier)"
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
        "owner",
        Kind::Choice(&["true", "false"]),
        "true",
        "whether this node may own chunks: read them from the origin for the whole cluster and track their swarms. Set false on nodes whose NIC is slower than the rest: every node waits on an owner's origin reads (16 nodes at 200 Mbit/s, some at 50: the fast nodes finished at 3-4x their ideal when a slow node owned a chunk). Such a node owns chunks only when no live node may"
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
        "time between gossip rounds (each probes one member)"
    ),
    key!(
        "discovery",
        "fanout",
        Kind::Int,
        "3",
        "members a round sends fresh membership changes to"
    ),
    key!(
        "discovery",
        "suspect_after",
        Kind::Duration,
        "5s",
        "a probed member that answers neither directly nor through others this long is suspect"
    ),
    key!(
        "discovery",
        "dead_after",
        Kind::Duration,
        "10s",
        "a suspect member that has not refuted this long after its probe began is dead: its chunks are no longer offered"
    ),
    key!(
        "control_plane",
        "ca_file",
        Kind::Str,
        "",
        "PEM bundle of CA certificates trusted for https:// control_plane.endpoint URLs besides the system's roots (a private CA); checked at start"
    ),
    key!(
        "control_plane",
        "tls_client_cert",
        Kind::Str,
        "",
        "PEM certificate nodes (and eliop2p status, preheat) present to an https control plane with control_plane.client_ca; it authenticates them instead of control_plane.token"
    ),
    key!(
        "control_plane",
        "tls_client_key",
        Kind::Str,
        "",
        "PEM private key of control_plane.tls_client_cert"
    ),
    key!(
        "control_plane",
        "client_ca",
        Kind::Str,
        "",
        "control plane service: PEM bundle of the CA whose client certificates authenticate a client without control_plane.token (needs control_plane.tls_cert); clients without one still use the token"
    ),
    key!(
        "control_plane",
        "tls_cert",
        Kind::Str,
        "",
        "control plane service: PEM certificate (and chain) to serve https on control_plane.listen"
    ),
    key!(
        "control_plane",
        "tls_key",
        Kind::Str,
        "",
        "control plane service: PEM private key of control_plane.tls_cert"
    ),
    key!(
        "control_plane",
        "endpoint",
        Kind::List,
        "",
        "URL of the control plane a node registers with, e.g. http://10.0.0.5:8081; several replicas as a list (\"http://a:8081, http://b:8081\"): the node uses the first that answers and moves to the next when it stops answering, registering there afresh"
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
        "store",
        Kind::Choice(&["embedded", "redis"]),
        "embedded",
        "embedded: one control plane keeps its state in control_plane.data_dir; redis: any number of replicas share their state through control_plane.redis_url (one of them plans replication at a time, under a lease)"
    ),
    key!(
        "control_plane",
        "redis_url",
        Kind::Secret,
        "",
        "Redis of the replicas with control_plane.store = redis, e.g. redis://10.0.0.7:6379/0 (redis://:password@host:port/db; rediss:// for TLS; with control_plane.redis_sentinels the host is the master's name)"
    ),
    key!(
        "control_plane",
        "redis_sentinels",
        Kind::List,
        "",
        "Redis Sentinels (host:port list) that say which server is the master; control_plane.redis_url's host is then the master's name (redis://:password@mymaster/0), and replicas follow a failover"
    ),
    key!(
        "control_plane",
        "redis_sentinel_password",
        Kind::Secret,
        "",
        "password of the sentinels themselves (requirepass in sentinel.conf), if they have one"
    ),
    key!(
        "control_plane",
        "redis_ca_file",
        Kind::Str,
        "",
        "with a rediss:// URL: PEM CA bundle that signed the Redis servers' (and sentinels') certificates; empty: the system's roots"
    ),
    key!(
        "control_plane",
        "redis_tls_cert",
        Kind::Str,
        "",
        "with a rediss:// URL: PEM client certificate presented to Redis (needed when Redis has tls-auth-clients yes, its default)"
    ),
    key!(
        "control_plane",
        "redis_tls_key",
        Kind::Str,
        "",
        "PEM private key of control_plane.redis_tls_cert"
    ),
    key!(
        "control_plane",
        "redis_prefix",
        Kind::Str,
        "eliop2p:",
        "prefix of every Redis key of this cluster, so that clusters can share one Redis"
    ),
    key!(
        "control_plane",
        "planning_lease",
        Kind::Duration,
        "10s",
        "with control_plane.store = redis: the replica that plans holds a lease this long, renewed every third of it; when it dies another takes over within this time"
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
pub(super) const ENV_NOT_KEYS: &[&str] = &["ELIOP2P_LOG", "ELIOP2P_TEST_"];
