//! Cluster logic without I/O, so it can run under a simulator as well as on sockets:
//! rendezvous ownership of chunks (`rendezvous`), the gossip membership and failure
//! detection state machine with the partitioned location index (`gossip`,
//! `index`), and the JSON types of the control-plane API (`api`).

pub mod api;
pub mod gossip;
pub mod index;
pub mod rendezvous;

pub use gossip::{Gossip, GossipConfig, Message, NodeInfo, Out, Status};
