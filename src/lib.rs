//! rmirror: mirror public archives over the rsync wire protocol, with no rsync
//! binary. Layers (dependencies point down): `proto`/`checksum` (pure code over
//! bytes), `transport` (tokio), `engine` (one transfer, confined to DEST),
//! `cli`. `recent` and `iim` hold the pure parsers for instant mirroring.
pub mod checksum;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod exit;
pub mod filter;
#[doc(hidden)] pub mod fuzzing;
pub mod iim;
pub mod metrics;
pub mod plan;
pub mod proto;
pub mod publish;
pub mod remote;
pub mod recent;
pub mod text;
pub mod transport;
