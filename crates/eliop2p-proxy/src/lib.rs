//! The S3-speaking HTTP proxy of a node, the node's admin listener, and the
//! composition of one node (proxy + cache + origin client).
//!
//! GetObject and HeadObject are answered through the chunk cache: metadata from a
//! TTL cache refreshed by HEAD, bytes chunk by chunk from memory or from single-flight
//! origin fills streamed to the client as they arrive. Every other S3 request is
//! forwarded to the origin, re-signed with the node's credentials, and streamed back.

mod admin;
mod auth_cache;
mod body;
mod cluster;
mod config;
mod forward;
mod get;
mod head_guard;
mod listen;
mod meta;
mod metrics;
mod node;
mod passthrough;
mod preheat;
mod read;
mod request;
mod server;
mod state;
mod stall;
pub mod sigv4;

pub use body::ProxyBody;
pub use cluster::ControlPlaneClientConfig;
pub use metrics::Metrics;
pub use node::{
    AdminConfig, AuthMode, ExtraOrigin, NodeConfig, NodeError, NodeHandle, ProxyConfig, spawn_node,
    spawn_node_with_p2p,
};
pub use request::{S3Target, parse_target};
