//! The rsync wire protocol as pure code over bytes: no I/O, no clock.
pub mod wire;
