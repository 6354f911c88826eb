//! JSON bodies of the control-plane API (`/api/v1`), shared by the service and the
//! node's client. Chunk ids travel as 64-character lowercase hex.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Chunk ids per report or location query.
pub const MAX_BATCH: usize = 10_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disk_bytes: u64,
}

/// Labels one node may register, and the longest key and value (bytes): the
/// control plane keeps, persists and lists them for every node.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY: usize = 64;
pub const MAX_LABEL_VALUE: usize = 256;

/// `POST /api/v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub node_id: String,
    pub p2p_addr: SocketAddr,
    #[serde(default)]
    pub proxy_addr: Option<SocketAddr>,
    #[serde(default)]
    pub admin_addr: Option<SocketAddr>,
    #[serde(default)]
    pub capacity: Capacity,
    /// Free-form labels; `zone` and `rack` spread replicas.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub node_id: String,
    pub heartbeat_interval_ms: u64,
}

/// `PUT /api/v1/nodes/{id}/heartbeat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Requests in flight.
    #[serde(default)]
    pub load: u64,
    #[serde(default)]
    pub memory_used_bytes: u64,
    #[serde(default)]
    pub disk_used_bytes: u64,
    #[serde(default)]
    pub chunks: u64,
    /// Fraction of bytes served from cache (memory, disk or peers).
    #[serde(default)]
    pub hit_ratio: f64,
    #[serde(default)]
    pub bytes_from_origin: u64,
    #[serde(default)]
    pub bytes_from_peers: u64,
    #[serde(default)]
    pub bytes_to_peers: u64,
    #[serde(default)]
    pub bytes_served: u64,
    /// Bytes served to clients from this node's memory tier.
    #[serde(default)]
    pub bytes_from_memory: u64,
    /// Bytes served to clients from this node's disk tier.
    #[serde(default)]
    pub bytes_from_disk: u64,
    /// Chunks this node reads often (hex ids), for replication.
    #[serde(default)]
    pub hot_chunks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// Replication commands waiting for this node.
    pub pending_commands: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Online,
    Suspect,
    Dead,
}

/// An entry of `GET /api/v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: String,
    pub p2p_addr: SocketAddr,
    pub proxy_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub capacity: Capacity,
    pub labels: BTreeMap<String, String>,
    pub status: NodeStatus,
    /// Milliseconds since the last heartbeat (or registration).
    pub last_seen_ms: u64,
    pub chunks_reported: u64,
    pub heartbeat: Heartbeat,
    /// Bytes per second between the last two heartbeats.
    #[serde(default)]
    pub rates: Rates,
}

/// Bytes per second: served to clients, read from the origin, received from and
/// sent to peers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub served: f64,
    pub from_origin: f64,
    pub from_peers: f64,
    pub to_peers: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// `POST /api/v1/nodes/{id}/chunks`: chunks added and removed since the last
/// report; `full` replaces everything known about the node (after a restart).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkReport {
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub added: Vec<ReportedChunk>,
    #[serde(default)]
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedChunk {
    pub id: String,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportAck {
    pub chunks: u64,
}

/// `POST /api/v1/chunks/locations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationQuery {
    pub chunks: Vec<String>,
    /// The asking node: its own entry is left out and holders in its zone come
    /// first.
    #[serde(default)]
    pub node_id: Option<String>,
    /// At most this many holders per chunk: a random sample of the online
    /// holders, the asker's zone first and the least loaded of the sample
    /// first. Absent: every online holder, in that order. Nodes ask for a few (a
    /// chunk read by a whole cluster has thousands of holders, and every asker
    /// given the same least-loaded few would load exactly those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub node_id: String,
    pub p2p_addr: SocketAddr,
    #[serde(default)]
    pub zone: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Locations {
    /// Holders per requested chunk (online nodes only): same zone as the asker
    /// first, then least loaded.
    pub locations: BTreeMap<String, Vec<Holder>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandKind {
    /// Fetch the chunk from peers and keep it.
    Replicate,
    /// Drop the chunk.
    Evict,
    /// Read objects into the cache (a preheat job's share for this node).
    Preheat,
}

/// A command for a node (`GET /api/v1/nodes/{id}/commands`): `chunk` and `len`
/// for replicate and evict, `preheat` for preheat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: u64,
    pub kind: CommandKind,
    #[serde(default)]
    pub chunk: String,
    #[serde(default)]
    pub len: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preheat: Option<PreheatSpec>,
}

/// What a preheat command reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreheatSpec {
    pub job: u64,
    pub bucket: String,
    /// An object key, or with `recursive` a prefix.
    pub key: String,
    pub recursive: bool,
}

/// `POST /api/v1/preheat`: warm one object or every object under a prefix into
/// the cluster. Targets: every online node matching `labels`, or `replicas` of
/// them (spread over zones, least used first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreheatRequest {
    pub bucket: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub replicas: Option<usize>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    Pending,
    Running,
    Done,
    Failed,
}

/// Progress a node reports for its preheat command
/// (`POST /api/v1/nodes/{id}/commands/{cmd}/progress`, and in the ack).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreheatProgress {
    pub objects_done: u64,
    pub objects_total: u64,
    pub bytes_done: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreheatTarget {
    pub node_id: String,
    pub command: u64,
    pub state: TargetState,
    #[serde(default)]
    pub progress: PreheatProgress,
    #[serde(default)]
    pub error: Option<String>,
}

/// A preheat job (`GET /api/v1/preheat/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreheatJob {
    pub id: u64,
    pub created_unix_ms: u64,
    pub request: PreheatRequest,
    pub state: JobState,
    pub targets: Vec<PreheatTarget>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreheatJobs {
    pub jobs: Vec<PreheatJob>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    pub commands: Vec<Command>,
}

/// `POST /api/v1/nodes/{id}/commands/{cmd}/ack`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAck {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// Final counts of a preheat command.
    #[serde(default)]
    pub progress: Option<PreheatProgress>,
}

/// Every error: a machine-readable code and a sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// One point of the dashboard's history: cumulative bytes served to clients by
/// source (summed over nodes), and bytes sent to peers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_ms: u64,
    pub origin: u64,
    pub peer: u64,
    pub memory: u64,
    pub disk: u64,
    pub to_peers: u64,
}

impl Sample {
    /// The counters of one heartbeat (or the sum of several).
    pub fn add(&mut self, hb: &Heartbeat) {
        self.origin += hb.bytes_from_origin;
        self.peer += hb.bytes_from_peers;
        self.memory += hb.bytes_from_memory;
        self.disk += hb.bytes_from_disk;
        self.to_peers += hb.bytes_to_peers;
    }
}

/// A chunk read often, and how many online nodes hold it (when known).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HotChunk {
    pub chunk: String,
    /// Control plane: location queries and hot reports (halved every replication
    /// pass). Node: the chunk's decayed access heat.
    pub score: f64,
    pub replicas: Option<u64>,
}

/// `GET /api/v1/dashboard` (control plane: the cluster; node admin listener: the
/// node alone): what the dashboard page draws.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// `cluster` or `node`.
    pub scope: String,
    pub nodes: Vec<NodeView>,
    pub history: Vec<Sample>,
    pub hot_chunks: Vec<HotChunk>,
    pub jobs: Vec<PreheatJob>,
}

/// Samples kept for the dashboard's charts.
pub const HISTORY_LEN: usize = 720;

/// The dashboard page (HTML, CSS and script in one file, no external assets),
/// served by the control plane and by every node's admin listener.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
