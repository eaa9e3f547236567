//! A RECENT producer that writes files as File::Rsync::Mirror::Recent does,
//! driving a tree a real rsync daemon serves while it changes.
//!
//! * Chain `1h 6h 1d 1W 1M 1Q 1Y Z` (configurable), every file carrying
//!   the same `meta.aggregator`, `RECENT.recent` a symlink to the principal.
//! * JSON files (`RECENT-1h.json`, what CPAN publishes) by default, or YAML
//!   as YAML::Syck writes them (`RECENT-1h.yaml`, the reference's default):
//!   [`Producer::with_format`].
//! * `update`: the newest event per path wins inside a file (older entries
//!   of the path are removed), epochs strictly increasing, 10 µs quanta,
//!   written as decimal **strings**.
//! * `aggregate` (Recentfile.pm): the principal is merged into the next file
//!   on every call; file *i* into *i+1* only while *i+1* is older than the
//!   interval of *i−1*.  A merge drops target events older than
//!   `min(newest source epoch − target interval, target merged.epoch)`
//!   (never above the source's oldest event; nothing when the dirtymarks
//!   differ), de-duplicates by path (newer wins), drops deletes in `Z`, and
//!   sets the source's `merged = {epoch: newest merged, into_interval, time}`.
//! * `minmax {min, max, mtime}`, `dirtymark` (bumpable), `protocol: 1`,
//!   `Producers`.
//! * Every file is replaced atomically (temp + rename), longer files first,
//!   the principal last.
//!
//! Time is real time unless [`Producer::set_clock`] pins it (to build a
//! history with old epochs).  The format code is the library's
//! (`rmirror::publish::recent`); this file drives a tree with it.

use std::fs;
use std::path::{Path, PathBuf};

use rmirror::publish::recent::{now_quanta, RecentLog, Q};
pub use rmirror::publish::recent::{Ev, Serializer, DEFAULT_CHAIN};

pub fn interval_secs(s: &str) -> u64 {
    rmirror::publish::recent::interval_secs(s).expect("interval")
}

/// The test-side driver: a tree, a clock, unique file mtimes, and the
/// library's RECENT writer ([`rmirror::publish::recent::RecentLog`]) for
/// the format.
pub struct Producer {
    root: PathBuf,
    log: RecentLog,
    clock: Option<u64>,
    /// Whole-second mtimes handed out to changed files (unique, increasing).
    next_mtime: i64,
}

impl Producer {
    pub fn new(root: &Path) -> Producer {
        Producer::with_chain(root, &DEFAULT_CHAIN)
    }

    pub fn with_chain(root: &Path, chain: &[&str]) -> Producer {
        Producer::with_format(root, chain, Serializer::Json)
    }

    /// A producer writing its chain as `serializer` (`.json` or `.yaml`).
    pub fn with_format(root: &Path, chain: &[&str], serializer: Serializer) -> Producer {
        let now = now_quanta();
        let mut log = RecentLog::new(chain, now).expect("chain").with_serializer(serializer);
        log.producer = "recent_producer.rs".into();
        Producer { root: root.to_path_buf(), log, clock: None, next_mtime: (now / Q) as i64 - 1_000_000 }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pin the producer's clock (epoch seconds, fractional); `None` = real time.
    pub fn set_clock(&mut self, secs: Option<f64>) {
        self.clock = secs.map(|s| (s * Q as f64) as u64);
    }

    fn now(&self) -> u64 {
        self.clock.unwrap_or_else(now_quanta)
    }

    /// The file names of the chain (principal first).
    pub fn file_names(&self) -> Vec<String> {
        self.log.file_names()
    }

    pub fn dirtymark(&self) -> String {
        self.log.dirtymark()
    }

    /// Newest epoch handed out (as written).
    pub fn newest_epoch(&self) -> String {
        self.log.newest_epoch()
    }

    /// Record an event for `path` (relative to the tree) without touching it.
    pub fn record(&mut self, path: &str, new: bool) {
        let now = self.now();
        self.log.record(path, new, now);
    }

    fn fresh_mtime(&mut self) -> i64 {
        self.next_mtime += 1;
        self.next_mtime
    }

    /// Create or replace a file (atomically, a unique whole-second mtime) and
    /// record a `new` event.
    pub fn write_file(&mut self, path: &str, content: &[u8]) {
        let p = self.root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let tmp = p.with_file_name(format!(".prod-tmp-{}", p.file_name().unwrap().to_string_lossy()));
        fs::write(&tmp, content).unwrap();
        let mt = self.fresh_mtime();
        super::tree::set_mtime(&tmp, mt, 0);
        fs::rename(&tmp, &p).unwrap();
        self.record(path, true);
    }

    /// Delete a file or symlink and record it.
    pub fn delete_file(&mut self, path: &str) {
        fs::remove_file(self.root.join(path)).unwrap();
        self.record(path, false);
    }

    /// Remove a directory tree, recording a delete for every file in it
    /// (deepest first) and then for the directory, as an inotify-driven
    /// server does.
    pub fn delete_dir(&mut self, path: &str) {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        walk(&self.root, Path::new(path), &mut files, &mut dirs);
        fs::remove_dir_all(self.root.join(path)).unwrap();
        files.sort();
        for f in files {
            self.record(&f, false);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        for d in dirs {
            self.record(&d, false);
        }
    }

    /// Out-of-band change: a new dirtymark (clients must resync everything).
    pub fn bump_dirtymark(&mut self) {
        let now = self.now();
        self.log.bump_dirtymark(now);
    }

    /// Apply the queued events to the principal, aggregate, and write the
    /// files that changed (atomically, longest first, principal last).
    pub fn publish(&mut self) {
        let now = self.now();
        self.log.publish(&self.root, now).expect("write RECENT files");
    }

    /// Events currently in file `i` (newest first).
    pub fn events(&self, i: usize) -> &[Ev] {
        self.log.events(i)
    }
}

fn walk(root: &Path, rel: &Path, files: &mut Vec<String>, dirs: &mut Vec<String>) {
    let md = fs::symlink_metadata(root.join(rel)).unwrap();
    let s = rel.to_string_lossy().into_owned();
    if md.is_dir() {
        dirs.push(s);
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            walk(root, &rel.join(e.file_name()), files, dirs);
        }
    } else {
        files.push(s);
    }
}
