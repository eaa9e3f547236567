//! The rsync wire protocol as pure code over bytes: no tokio, no std::fs, no
//! std::net, no clock. Each decoder names the C function it matches.
pub mod flist;
pub mod handshake;
pub mod mux;
pub mod name;
pub mod options;
pub mod session;
pub mod symlink;
pub mod token;
pub mod wire;
