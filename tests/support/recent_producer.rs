//! A RECENT producer that writes files as File::Rsync::Mirror::Recent does,
//! driving a tree a real rsync daemon serves while it changes.
//!
//! * Chain `1h 6h 1d 1W 1M 1Q 1Y Z` (configurable), every file carrying
//!   the same `meta.aggregator`, `RECENT.recent` a symlink to the principal.
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
//! history with old epochs).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Epoch quanta per second (10 µs, like rrrgo's quantisation).
const Q: u64 = 100_000;

/// The chain the reference documentation uses.
pub const DEFAULT_CHAIN: [&str; 8] = ["1h", "6h", "1d", "1W", "1M", "1Q", "1Y", "Z"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    /// In 1/100000 s.
    pub epoch: u64,
    pub path: String,
    pub new: bool,
}

#[derive(Debug, Clone)]
struct RFile {
    interval: String,
    secs: u64,
    /// Newest first.
    events: Vec<Ev>,
    merged: Option<(u64, String, u64)>,
    dirtymark: u64,
    /// Producer time (quanta) of the last write, `None` = never written.
    written: Option<u64>,
}

pub fn interval_secs(s: &str) -> u64 {
    if s == "Z" {
        return i64::MAX as u64;
    }
    let (n, u) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().expect("interval count");
    n * match u {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "W" => 7 * 86_400,
        "M" => 30 * 86_400,
        "Q" => 90 * 86_400,
        "Y" => 31_557_600,
        _ => panic!("bad unit in {s}"),
    }
}

/// `1700000000.12345`
pub fn fmt_epoch(q: u64) -> String {
    format!("{}.{:05}", q / Q, q % Q)
}

fn real_now() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    d.as_secs() * Q + u64::from(d.subsec_micros()) / 10
}

pub struct Producer {
    root: PathBuf,
    files: Vec<RFile>,
    aggregator: Vec<String>,
    queued: Vec<Ev>,
    last_epoch: u64,
    clock: Option<u64>,
    dirtymark: u64,
    /// Whole-second mtimes handed out to changed files (unique, increasing).
    next_mtime: i64,
}

impl Producer {
    pub fn new(root: &Path) -> Producer {
        Producer::with_chain(root, &DEFAULT_CHAIN)
    }

    pub fn with_chain(root: &Path, chain: &[&str]) -> Producer {
        let mut ivs: Vec<&str> = chain.to_vec();
        ivs.sort_by_key(|s| interval_secs(s));
        let now = real_now();
        Producer {
            root: root.to_path_buf(),
            files: ivs
                .iter()
                .map(|s| RFile {
                    interval: s.to_string(),
                    secs: interval_secs(s),
                    events: vec![],
                    merged: None,
                    dirtymark: now,
                    written: None,
                })
                .collect(),
            aggregator: ivs[1..].iter().map(|s| s.to_string()).collect(),
            queued: vec![],
            last_epoch: 0,
            clock: None,
            dirtymark: now,
            next_mtime: (now / Q) as i64 - 1_000_000,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pin the producer's clock (epoch seconds, fractional); `None` = real time.
    pub fn set_clock(&mut self, secs: Option<f64>) {
        self.clock = secs.map(|s| (s * Q as f64) as u64);
    }

    fn now(&self) -> u64 {
        self.clock.unwrap_or_else(real_now)
    }

    /// A strictly increasing event epoch.
    fn next_epoch(&mut self) -> u64 {
        let e = self.now().max(self.last_epoch + 1);
        self.last_epoch = e;
        e
    }

    /// The file names of the chain (principal first).
    pub fn file_names(&self) -> Vec<String> {
        self.files.iter().map(|f| format!("RECENT-{}.json", f.interval)).collect()
    }

    pub fn dirtymark(&self) -> String {
        fmt_epoch(self.dirtymark)
    }

    /// Newest epoch handed out (as written).
    pub fn newest_epoch(&self) -> String {
        fmt_epoch(self.last_epoch)
    }

    /// Record an event for `path` (relative to the tree) without touching it.
    pub fn record(&mut self, path: &str, new: bool) {
        let epoch = self.next_epoch();
        self.queued.push(Ev { epoch, path: path.to_string(), new });
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
        self.dirtymark = self.now().max(self.dirtymark + 1);
        let dm = self.dirtymark;
        self.files[0].dirtymark = dm;
    }

    /// Apply the queued events to the principal, aggregate, and write the
    /// files that changed (atomically, longest first, principal last).
    pub fn publish(&mut self) {
        let now = self.now();
        let queued = std::mem::take(&mut self.queued);
        let mut dirty: HashSet<usize> = HashSet::new();
        if !queued.is_empty() || self.files[0].written.is_none() {
            dirty.insert(0);
        }
        {
            let p = &mut self.files[0];
            for ev in queued {
                p.events.retain(|e| e.path != ev.path);
                p.events.insert(0, ev);
            }
            // truncate by interval, but never what is not merged yet
            if let Some(newest) = p.events.first().map(|e| e.epoch) {
                let merged = p.merged.as_ref().map(|m| m.0).unwrap_or(0);
                let oldest_allowed = newest.saturating_sub(p.secs * Q).min(merged);
                let before = p.events.len();
                p.events.retain(|e| e.epoch >= oldest_allowed);
                if p.events.len() != before {
                    dirty.insert(0);
                }
            }
        }
        // aggregate
        for i in 0..self.files.len() - 1 {
            let want = i == 0
                || match self.files[i + 1].written {
                    None => true,
                    Some(w) => now.saturating_sub(w) > self.files[i - 1].secs * Q,
                };
            if !want {
                break;
            }
            if self.merge(i, now) {
                dirty.insert(i);
                dirty.insert(i + 1);
            }
        }
        if self.files[0].dirtymark != self.files[1.min(self.files.len() - 1)].dirtymark {
            dirty.insert(0);
        }
        let mut order: Vec<usize> = dirty.into_iter().collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for i in order {
            self.write(i, now);
        }
        let link = self.root.join("RECENT.recent");
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("RECENT-{}.json", self.files[0].interval), &link).unwrap();
        }
    }

    /// Merge file `i` into `i+1`; true if something changed.
    fn merge(&mut self, i: usize, now: u64) -> bool {
        let (lo, hi) = self.files.split_at_mut(i + 1);
        let src = &mut lo[i];
        let dst = &mut hi[0];
        let Some(newest) = src.events.first().map(|e| e.epoch) else {
            return dst.written.is_none();
        };
        let mut something = dst.events.is_empty() || dst.written.is_none();
        let mut oldest_allowed = 0u64;
        if src.dirtymark != dst.dirtymark {
            something = true;
        } else if let Some((m, _, _)) = &dst.merged {
            oldest_allowed = newest.saturating_sub(dst.secs.saturating_mul(Q)).min(*m);
            if let Some(last) = src.events.last() {
                if last.epoch < oldest_allowed {
                    oldest_allowed = last.epoch;
                }
            }
        }
        while dst.events.last().is_some_and(|e| e.epoch < oldest_allowed) {
            dst.events.pop();
            something = true;
        }
        let dst_newest = dst.events.first().map(|e| e.epoch).unwrap_or(0);
        let mut have: HashSet<String> = HashSet::new();
        let mut merged: Vec<Ev> = Vec::new();
        for ev in &src.events {
            if ev.epoch < oldest_allowed || !have.insert(ev.path.clone()) {
                continue;
            }
            if dst.interval == "Z" && !ev.new {
                continue;
            }
            if ev.epoch > dst_newest {
                something = true;
            }
            merged.push(ev.clone());
        }
        if !something {
            return false;
        }
        for ev in &dst.events {
            if have.insert(ev.path.clone()) {
                merged.push(ev.clone());
            }
        }
        merged.sort_by_key(|e| std::cmp::Reverse(e.epoch));
        // keep epochs unique (the reference's _increase_a_bit; ours: +1 quantum downwards)
        for k in 1..merged.len() {
            if merged[k].epoch >= merged[k - 1].epoch {
                merged[k].epoch = merged[k - 1].epoch - 1;
            }
        }
        dst.events = merged;
        dst.dirtymark = src.dirtymark;
        src.merged = Some((newest, dst.interval.clone(), now));
        true
    }

    fn write(&mut self, i: usize, now: u64) {
        let f = &mut self.files[i];
        f.written = Some(now);
        let recent: Vec<serde_json::Value> = f
            .events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "epoch": fmt_epoch(e.epoch),
                    "path": e.path,
                    "type": if e.new { "new" } else { "delete" },
                })
            })
            .collect();
        let mut meta = serde_json::json!({
            "aggregator": self.aggregator,
            "canonize": "naive_path_normalize",
            "comment": "written by rmirror's test producer",
            "dirtymark": fmt_epoch(f.dirtymark),
            "filenameroot": "RECENT",
            "interval": f.interval,
            "protocol": 1,
            "serializer_suffix": ".json",
            "Producers": {
                "File::Rsync::Mirror::Recentfile": "0.4.3",
                "$0": "recent_producer.rs",
                "time": fmt_epoch(now),
            },
        });
        if let Some(first) = f.events.first() {
            meta["minmax"] = serde_json::json!({
                "max": fmt_epoch(first.epoch),
                "min": fmt_epoch(f.events.last().unwrap().epoch),
                "mtime": fmt_epoch(now),
            });
        }
        if let Some((e, into, t)) = &f.merged {
            meta["merged"] = serde_json::json!({"epoch": fmt_epoch(*e), "into_interval": into, "time": fmt_epoch(*t)});
        }
        let doc = serde_json::json!({ "meta": meta, "recent": recent });
        let name = format!("RECENT-{}.json", f.interval);
        let tmp = self.root.join(format!(".FRMRecent-{name}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        fs::rename(&tmp, self.root.join(&name)).unwrap();
    }

    /// Events currently in file `i` (newest first).
    pub fn events(&self, i: usize) -> &[Ev] {
        &self.files[i].events
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
