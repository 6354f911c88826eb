//! The `eliop2p` binary's library half: the configuration loader, kept here so
//! that the fuzz targets (`fuzz/`) drive the same code the binary runs. Everything
//! else of the binary lives in `main.rs` and its modules.

pub mod config;
