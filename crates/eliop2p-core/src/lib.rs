//! Shared vocabulary of eliop2p: identifiers, byte ranges and chunk layout, S3 error
//! bodies, and the human-readable size and duration syntax of the configuration.
//!
//! Everything here is pure (no async, no I/O) so every other crate can depend on it
//! and it can be tested exhaustively without a network.

pub mod ids;
pub mod identity;
pub mod prom;
pub mod range;
pub mod s3xml;
pub mod units;

pub use ids::{ChunkId, ETag, ObjectKey};
pub use range::{ByteRange, ChunkLayout, ChunkSlice, RangeRequest};
