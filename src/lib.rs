//! rmirror: mirror public archives over the rsync wire protocol.
pub mod proto;
