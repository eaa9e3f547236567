//! Per-tree planner state, persisted atomically next to the mirror (never
//! inside the published tree): what has been applied, the dirtymark it was
//! applied under, and when the last full sync ran.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::recent::plan::PathEvent;
use crate::recent::Epoch;

/// Current on-disk format version.
pub const STATE_VERSION: u32 = 1;

/// Sorted, disjoint, closed ranges of epochs whose events have all been
/// applied (the reference client's `Done` intervals), kept *above* the
/// high-water mark while a catch-up is being worked off newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRanges(pub Vec<(Epoch, Epoch)>);

impl EpochRanges {
    pub fn new() -> Self {
        EpochRanges(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is `e` inside one of the ranges?
    pub fn contains(&self, e: &Epoch) -> bool {
        // few ranges: linear is fine, but keep it ordered for binary search anyway
        let i = self.0.partition_point(|(_, hi)| hi < e);
        self.0.get(i).is_some_and(|(lo, _)| lo <= e)
    }

    /// Add `[lo, hi]` (swapped if given backwards), merging overlaps.
    pub fn insert(&mut self, lo: Epoch, hi: Epoch) {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let mut out: Vec<(Epoch, Epoch)> = Vec::with_capacity(self.0.len() + 1);
        let mut cur = (lo, hi);
        let mut placed = false;
        for (a, b) in std::mem::take(&mut self.0) {
            if placed || b < cur.0 {
                out.push((a, b));
            } else if cur.1 < a {
                out.push(cur.clone());
                out.push((a, b));
                placed = true;
            } else {
                // overlap
                if a < cur.0 {
                    cur.0 = a;
                }
                if b > cur.1 {
                    cur.1 = b;
                }
            }
        }
        if !placed {
            out.push(cur);
        }
        self.0 = out;
    }

    /// Drop ranges entirely at or below `hwm` (the high-water mark covers them).
    pub fn prune_below(&mut self, hwm: &Epoch) {
        self.0.retain(|(_, hi)| hi > hwm);
    }
}

/// What a tree's state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeState {
    pub version: u32,
    /// The source this state belongs to (a different source resets it).
    pub source: String,
    /// The principal file's dirtymark when `applied` was reached.
    pub dirtymark: Option<Epoch>,
    /// High-water mark: every event with an epoch `<=` this is applied.
    /// `None` = nothing known (a full sync is needed).
    pub applied: Option<Epoch>,
    /// Applied ranges above `applied` (newest-first catch-up in progress).
    #[serde(default)]
    pub done: EpochRanges,
    /// Deletes whose epochs are in `done` but which wait until the local
    /// RECENT files are published (never delete a file the published
    /// RECENT files still list as `new`).
    #[serde(default)]
    pub pending_deletes: Vec<PendingDelete>,
    /// The principal file last seen (`RECENT-1h.json`) and its newest epoch.
    pub principal_file: Option<String>,
    pub principal_max: Option<Epoch>,
    /// The `--since` value already honoured (so a restart with the same
    /// flag does not rewind again).
    pub since_applied: Option<Epoch>,
    /// Unix seconds of the last completed full sync.
    pub last_full_sync: Option<u64>,
    /// Unix seconds of the last full sync a dirtymark change caused (the
    /// rate limit of `WatchConfig::dirtymark_min_interval`).
    #[serde(default)]
    pub last_dirtymark_full: Option<u64>,
    /// Unix seconds of the last pass that ended caught up.
    pub last_caught_up: Option<u64>,
    /// Directories a content pull was writing into when the state was last
    /// saved; a restart removes rmirror temp files left there by a kill.
    #[serde(default)]
    pub in_progress_dirs: Vec<String>,
}

/// A delete waiting for the RECENT files to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelete {
    pub path: String,
    pub epoch: Epoch,
}

impl From<&PathEvent> for PendingDelete {
    fn from(p: &PathEvent) -> Self {
        PendingDelete { path: p.path.clone(), epoch: p.epoch.clone() }
    }
}

impl TreeState {
    pub fn fresh(source: &str) -> Self {
        TreeState { version: STATE_VERSION, source: source.to_string(), ..Default::default() }
    }

    /// Load from `path`; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> std::io::Result<Option<TreeState>> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let st: TreeState = serde_json::from_slice(&data).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state file {} is corrupt: {e}", path.display()),
            )
        })?;
        if st.version != STATE_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state file {} has version {}, expected {STATE_VERSION}", path.display(), st.version),
            ));
        }
        Ok(Some(st))
    }

    /// Write atomically: temp file in the same directory, fsync, rename,
    /// fsync the directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &data)
    }
}

/// Write `data` to `path` atomically (temp + fsync + rename + dir fsync).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Epoch {
        Epoch::parse(s).unwrap()
    }

    #[test]
    fn ranges_merge_and_contain() {
        let mut r = EpochRanges::new();
        r.insert(e("10"), e("20"));
        r.insert(e("30"), e("40"));
        assert!(r.contains(&e("10")) && r.contains(&e("15.5")) && r.contains(&e("40")));
        assert!(!r.contains(&e("25")) && !r.contains(&e("9.99")) && !r.contains(&e("40.01")));
        r.insert(e("18"), e("32"));
        assert_eq!(r.0, vec![(e("10"), e("40"))]);
        r.insert(e("50"), e("45"));
        r.insert(e("1"), e("2"));
        assert_eq!(r.0, vec![(e("1"), e("2")), (e("10"), e("40")), (e("45"), e("50"))]);
        r.prune_below(&e("40"));
        assert_eq!(r.0, vec![(e("45"), e("50"))]);
    }

    #[test]
    fn state_roundtrip_atomic() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s.json");
        assert!(TreeState::load(&p).unwrap().is_none());
        let mut s = TreeState::fresh("rsync://h/m/");
        s.applied = Some(e("1700000000.12345"));
        s.dirtymark = Some(e("1600000000.5"));
        s.done.insert(e("1700000100"), e("1700000200.5"));
        s.pending_deletes.push(PendingDelete { path: "a/b".into(), epoch: e("1700000150") });
        s.save(&p).unwrap();
        let back = TreeState::load(&p).unwrap().unwrap();
        assert_eq!(back, s);
        // epochs are written as strings (exact)
        let txt = std::fs::read_to_string(&p).unwrap();
        assert!(txt.contains("\"1700000000.12345\""), "{txt}");
        // no temp left behind
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
