//! How library code reports what it does. Only `cli` and `daemon` print; the
//! terminal view, JSON output and tests are implementations of [`Monitor`].

use crate::proto::session::MsgKind;

/// One itemized change, in rsync's `%i` terms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// The 11-character `YXcstpoguax` code, or `*deleting`.
    pub code: String,
    /// Raw wire name (may be non-UTF-8).
    #[serde(serialize_with = "ser_bytes")]
    pub name: Vec<u8>,
    /// Directory names are printed with a trailing `/`.
    pub is_dir: bool,
    /// `-> target` for symlinks.
    #[serde(serialize_with = "ser_opt_bytes")]
    pub link_target: Option<Vec<u8>>,
    /// `=> leader` for hard links.
    #[serde(serialize_with = "ser_opt_bytes")]
    pub hardlink_to: Option<Vec<u8>>,
}

fn ser_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn ser_opt_bytes<S: serde::Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(&String::from_utf8_lossy(b)),
        None => s.serialize_none(),
    }
}

impl Item {
    /// rsync's `-i` line: code, space, escaped name (+ `/`, `-> target`, `=> leader`).
    pub fn line(&self) -> String {
        let mut s = format!("{:<11} {}", self.code, crate::text::escape_name(&self.name));
        if self.is_dir && self.name != b"." {
            s.push('/');
        } else if self.is_dir {
            s.truncate(s.len() - 1);
            s.push_str("./");
        }
        if let Some(t) = &self.link_target {
            s.push_str(" -> ");
            s.push_str(&crate::text::escape_name(t));
        }
        if let Some(t) = &self.hardlink_to {
            s.push_str(" => ");
            s.push_str(&crate::text::escape_name(t));
        }
        s
    }
}

/// Progress counters (cumulative).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Progress {
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_received: u64,
}

pub trait Monitor: Send + Sync {
    /// A MOTD or listing line from the daemon (raw bytes; escape before printing).
    fn text(&self, _line: &[u8]) {}
    /// A message from the server, in its words (raw; escape before printing).
    fn message(&self, _kind: MsgKind, _text: &[u8]) {}
    /// A local problem that did not stop the run (e.g. one file could not be written).
    fn local_error(&self, _text: &str) {}
    fn item(&self, _item: &Item) {}
    fn progress(&self, _p: &Progress) {}
    /// A file was received and verified (`bytes` = its size).
    fn file_done(&self, _name: &[u8], _bytes: u64) {}
}

/// A monitor that ignores everything.
pub struct Silent;
impl Monitor for Silent {}
