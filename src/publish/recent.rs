//! A RECENT *writer* in the File::Rsync::Mirror::Recent format, so that a
//! mirror can publish its own change log for the mirrors below it (and for
//! the test producer and the demo's changing upstream).
//!
//! * Chain `1h 6h 1d 1W 1M 1Q 1Y Z` by default, every file carrying the same
//!   `meta.aggregator`, `RECENT.recent` a symlink to the principal.
//! * JSON (`RECENT-1h.json`, what CPAN publishes) by default, or YAML laid
//!   out as YAML::Syck dumps it (`RECENT-1h.yaml`, the reference's default
//!   serializer; [`RecentLog::with_serializer`]).
//! * [`RecentLog::record`]: one event per call; epochs strictly increasing,
//!   10 µs quanta, written as decimal **strings**; inside a file the newest
//!   event per path wins.
//! * [`RecentLog::publish`] applies the queued events to the principal, then
//!   aggregates as `Recentfile.pm` does: the principal is merged into the next
//!   file on every call, file *i* into *i+1* only while *i+1* is older than
//!   the interval of *i−1*.  A merge drops target events older than
//!   `min(newest source epoch − target interval, target merged.epoch)` (never
//!   above the source's oldest event; nothing when the dirtymarks differ),
//!   de-duplicates by path (newer wins), drops deletes in `Z`, and sets the
//!   source's `merged = {epoch, into_interval, time}`.  Files that changed
//!   are replaced atomically (temp + rename), longest first, principal last.
//! * [`RecentLog::load`] continues the chain found in a directory (as written
//!   by an earlier run), so a command that runs once per sync keeps one
//!   consistent history; without one it starts a new chain with a fresh
//!   `dirtymark` (downstream mirrors then do one full sync).
//!
//! Time is passed in explicitly (quanta, see [`now_quanta`]) so the format
//! code stays testable; only [`RecentLog::load`] and [`RecentLog::publish`]
//! touch the disk.

use std::collections::HashSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::recent::Serializer;

/// Epoch quanta per second (10 µs, like rrrgo's quantisation).
pub const Q: u64 = 100_000;

/// The chain the reference documentation uses.
pub const DEFAULT_CHAIN: [&str; 8] = ["1h", "6h", "1d", "1W", "1M", "1Q", "1Y", "Z"];

/// Name of the principal pointer.
pub const PRINCIPAL_LINK: &str = "RECENT.recent";

/// One event: `epoch` in 1/100000 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
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
    /// (epoch, into_interval, time)
    merged: Option<(u64, String, u64)>,
    dirtymark: u64,
    /// Producer time (quanta) of the last write, `None` = never written.
    written: Option<u64>,
}

/// Seconds of an interval spec (`Z` = unbounded).
pub fn interval_secs(s: &str) -> Option<u64> {
    if s == "Z" {
        return Some(i64::MAX as u64);
    }
    if s.len() < 2 {
        return None;
    }
    let (n, u) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().ok().filter(|&n| n > 0)?;
    let unit = match u {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "W" => 7 * 86_400,
        "M" => 30 * 86_400,
        "Q" => 90 * 86_400,
        "Y" => 31_557_600,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// `1700000000.12345`
pub fn fmt_epoch(q: u64) -> String {
    format!("{}.{:05}", q / Q, q % Q)
}

/// A decimal epoch (string or number text) in quanta, truncated to 10 µs.
pub fn parse_epoch(s: &str) -> Option<u64> {
    let s = s.trim();
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = i.parse().ok()?;
    if !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut frac = 0u64;
    for k in 0..5 {
        frac = frac * 10 + f.as_bytes().get(k).map_or(0, |b| u64::from(b - b'0'));
    }
    secs.checked_mul(Q)?.checked_add(frac)
}

/// The current time in quanta.
pub fn now_quanta() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() * Q + u64::from(d.subsec_micros()) / 10
}

/// The writer's state: the chain of files and the events not yet published.
#[derive(Debug, Clone)]
pub struct RecentLog {
    files: Vec<RFile>,
    aggregator: Vec<String>,
    queued: Vec<Ev>,
    last_epoch: u64,
    /// `meta.comment` and `Producers.$0`.
    pub producer: String,
    serializer: Serializer,
}

impl RecentLog {
    /// A new chain (intervals in any order; at least two), dirtymark `now`.
    pub fn new(chain: &[&str], now: u64) -> Result<RecentLog, String> {
        let mut ivs: Vec<(String, u64)> = Vec::new();
        for s in chain {
            let secs = interval_secs(s).ok_or_else(|| format!("bad interval {s:?} (use e.g. 1h, 6h, 1d, 1W, 1M, 1Q, 1Y, Z)"))?;
            if ivs.iter().any(|(_, x)| *x == secs) {
                return Err(format!("interval {s:?} given twice"));
            }
            ivs.push((s.to_string(), secs));
        }
        if ivs.len() < 2 {
            return Err("a RECENT chain needs at least two intervals".into());
        }
        ivs.sort_by_key(|(_, s)| *s);
        Ok(RecentLog {
            files: ivs
                .iter()
                .map(|(s, secs)| RFile { interval: s.clone(), secs: *secs, events: vec![], merged: None, dirtymark: now, written: None })
                .collect(),
            aggregator: ivs[1..].iter().map(|(s, _)| s.clone()).collect(),
            queued: vec![],
            last_epoch: 0,
            producer: "rmirror".into(),
            serializer: Serializer::Json,
        })
    }

    /// Write the chain as `serializer` (file names and content).  Meant for
    /// a new chain: files already written under the other suffix stay.
    pub fn with_serializer(mut self, serializer: Serializer) -> RecentLog {
        self.serializer = serializer;
        self
    }

    /// The serialization files are written in.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    fn file_name(&self, i: usize) -> String {
        format!("RECENT-{}{}", self.files[i].interval, self.serializer.suffix())
    }

    /// Continue the chain in `dir` (`RECENT.recent` → principal → its
    /// `aggregator`), or start a new [`DEFAULT_CHAIN`] when there is none or
    /// it cannot be read (then the new dirtymark tells clients to resync).
    /// The second value says why a new chain was started, if one was.
    pub fn load_or_new(dir: &Path, now: u64) -> (RecentLog, Option<String>) {
        match RecentLog::load(dir) {
            Ok(Some(l)) => (l, None),
            Ok(None) => (RecentLog::new(&DEFAULT_CHAIN, now).expect("default chain"), Some("no RECENT files yet".into())),
            Err(e) => (RecentLog::new(&DEFAULT_CHAIN, now).expect("default chain"), Some(e)),
        }
    }

    /// The chain in `dir`; `Ok(None)` when there is no principal file.
    pub fn load(dir: &Path) -> Result<Option<RecentLog>, String> {
        let principal = match std::fs::read_link(dir.join(PRINCIPAL_LINK)) {
            Ok(t) => t.to_string_lossy().into_owned(),
            Err(_) => {
                // no pointer: the shortest RECENT-*.json (or .yaml) present
                let mut best: Option<(u64, String)> = None;
                if let Ok(rd) = std::fs::read_dir(dir) {
                    for e in rd.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let iv = n.strip_prefix("RECENT-").and_then(|r| r.strip_suffix(".json").or_else(|| r.strip_suffix(".yaml")));
                        if let Some(iv) = iv {
                            if let Some(s) = interval_secs(iv) {
                                if best.as_ref().is_none_or_(|(b, _)| s < *b) {
                                    best = Some((s, n));
                                }
                            }
                        }
                    }
                }
                match best {
                    Some((_, n)) => n,
                    None => return Ok(None),
                }
            }
        };
        if principal.contains('/') {
            return Err(format!("{PRINCIPAL_LINK} points outside its directory ({principal})"));
        }
        let first = read_file(&dir.join(&principal))?;
        let Some(first) = first else { return Ok(None) };
        let mut chain: Vec<String> = vec![first.interval.clone()];
        chain.extend(first.aggregator.iter().cloned());
        let chain_refs: Vec<&str> = chain.iter().map(String::as_str).collect();
        let mut log = RecentLog::new(&chain_refs, first.file.dirtymark)?.with_serializer(first.serializer);
        if log.files[0].interval != first.interval {
            return Err(format!("{principal}: its interval is not the shortest of its aggregator list"));
        }
        let mut last = 0u64;
        for (i, f) in log.files.iter_mut().enumerate() {
            let loaded = if i == 0 {
                Some(first.clone())
            } else {
                read_file(&dir.join(format!("RECENT-{}{}", f.interval, first.serializer.suffix())))?
            };
            if let Some(l) = loaded {
                f.events = l.file.events;
                f.merged = l.file.merged;
                f.dirtymark = l.file.dirtymark;
                f.written = l.file.written;
                last = last.max(f.events.first().map_or(0, |e| e.epoch));
                last = last.max(f.merged.as_ref().map_or(0, |m| m.0));
            }
        }
        log.last_epoch = last;
        Ok(Some(log))
    }

    /// The file names of the chain (principal first).
    pub fn file_names(&self) -> Vec<String> {
        (0..self.files.len()).map(|i| self.file_name(i)).collect()
    }

    /// The principal's dirtymark.
    pub fn dirtymark(&self) -> String {
        fmt_epoch(self.files[0].dirtymark)
    }

    /// Newest epoch handed out (as written).
    pub fn newest_epoch(&self) -> String {
        fmt_epoch(self.last_epoch)
    }

    /// Events currently in file `i` (newest first).
    pub fn events(&self, i: usize) -> &[Ev] {
        &self.files[i].events
    }

    /// Queue an event for `path` (relative to the directory of the files) at
    /// `now`, or just after the last epoch if the clock did not advance.
    pub fn record(&mut self, path: &str, new: bool, now: u64) {
        let epoch = now.max(self.last_epoch + 1);
        self.last_epoch = epoch;
        self.queued.push(Ev { epoch, path: path.to_string(), new });
    }

    /// Events recorded but not yet published.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Out-of-band change: a new dirtymark (clients must resync everything).
    pub fn bump_dirtymark(&mut self, now: u64) {
        let dm = now.max(self.files[0].dirtymark + 1);
        self.files[0].dirtymark = dm;
    }

    /// Apply the queued events, aggregate, and return the files that changed
    /// as `(name, content)`, longest first, principal last (write them in
    /// that order).  Pure: [`RecentLog::publish`] writes them.
    pub fn prepare(&mut self, now: u64) -> Vec<(String, Vec<u8>)> {
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
            // keep newest first even if events were recorded out of order
            p.events.sort_by_key(|e| std::cmp::Reverse(e.epoch));
            // truncate by interval, but never what is not merged yet
            if let Some(newest) = p.events.first().map(|e| e.epoch) {
                let merged = p.merged.as_ref().map(|m| m.0).unwrap_or(0);
                let oldest_allowed = newest.saturating_sub(p.secs.saturating_mul(Q)).min(merged);
                let before = p.events.len();
                p.events.retain(|e| e.epoch >= oldest_allowed);
                if p.events.len() != before {
                    dirty.insert(0);
                }
            }
        }
        for i in 0..self.files.len() - 1 {
            let want = i == 0
                || match self.files[i + 1].written {
                    None => true,
                    Some(w) => now.saturating_sub(w) > self.files[i - 1].secs.saturating_mul(Q),
                };
            if !want {
                break;
            }
            if self.merge(i, now) {
                dirty.insert(i);
                dirty.insert(i + 1);
            }
        }
        if self.files[0].dirtymark != self.files[1].dirtymark {
            dirty.insert(0);
        }
        let mut order: Vec<usize> = dirty.into_iter().collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        order
            .into_iter()
            .map(|i| {
                self.files[i].written = Some(now);
                (self.file_name(i), self.render(i, now))
            })
            .collect()
    }

    /// [`RecentLog::prepare`], then write each file atomically into `dir`
    /// (temp + rename), and make `RECENT.recent` point at the principal.
    /// Returns the names written.
    pub fn publish(&mut self, dir: &Path, now: u64) -> std::io::Result<Vec<String>> {
        let files = self.prepare(now);
        let mut names = Vec::new();
        for (name, bytes) in files {
            super::write_atomic(dir, &name, &bytes)?;
            names.push(name);
        }
        let link = dir.join(PRINCIPAL_LINK);
        let target = self.file_name(0);
        let ok = std::fs::read_link(&link).map(|t| t.as_os_str() == target.as_str()).unwrap_or(false);
        if !ok {
            let tmp = dir.join(format!(".{PRINCIPAL_LINK}.rmirror-tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)?;
            std::fs::rename(&tmp, &link)?;
            names.push(PRINCIPAL_LINK.to_string());
        }
        Ok(names)
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
        // keep epochs unique (the reference's _increase_a_bit; here one quantum downwards)
        for k in 1..merged.len() {
            if merged[k].epoch >= merged[k - 1].epoch {
                merged[k].epoch = merged[k - 1].epoch.saturating_sub(1);
            }
        }
        dst.events = merged;
        dst.dirtymark = src.dirtymark;
        src.merged = Some((newest, dst.interval.clone(), now));
        true
    }

    /// The text of file `i` as of `now`, in the log's serialization.
    pub fn render(&self, i: usize, now: u64) -> Vec<u8> {
        let f = &self.files[i];
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
            "comment": format!("written by {}", self.producer),
            "dirtymark": fmt_epoch(f.dirtymark),
            "filenameroot": "RECENT",
            "interval": f.interval,
            "protocol": 1,
            "serializer_suffix": self.serializer.suffix(),
            "Producers": {
                "File::Rsync::Mirror::Recentfile": "0.4.3",
                "$0": self.producer,
                "rmirror": env!("CARGO_PKG_VERSION"),
                "time": fmt_epoch(now),
            },
        });
        if let (Some(first), Some(last)) = (f.events.first(), f.events.last()) {
            meta["minmax"] = serde_json::json!({
                "max": fmt_epoch(first.epoch),
                "min": fmt_epoch(last.epoch),
                "mtime": fmt_epoch(now),
            });
        }
        if let Some((e, into, t)) = &f.merged {
            meta["merged"] = serde_json::json!({"epoch": fmt_epoch(*e), "into_interval": into, "time": fmt_epoch(*t)});
        }
        let doc = serde_json::json!({ "meta": meta, "recent": recent });
        match self.serializer {
            Serializer::Json => {
                let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                out.push(b'\n');
                out
            }
            Serializer::Yaml => {
                let mut out = String::from("--- \n");
                yaml_block(&mut out, &doc, 0);
                out.into_bytes()
            }
        }
    }
}

/// `Option::is_none_or` is newer than the MSRV (1.80).
trait NoneOr<T> {
    fn is_none_or_(&self, f: impl FnOnce(&T) -> bool) -> bool;
}
impl<T> NoneOr<T> for Option<T> {
    fn is_none_or_(&self, f: impl FnOnce(&T) -> bool) -> bool {
        match self {
            None => true,
            Some(x) => f(x),
        }
    }
}

/// A block collection in the layout YAML::Syck dumps: mapping keys sorted,
/// `key: ` / `- ` followed by a newline before a nested non-empty
/// collection, two spaces per level, `[]`/`{}` for empty ones.
fn yaml_block(out: &mut String, v: &serde_json::Value, indent: usize) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    let nested = |out: &mut String, lead: String, v: &Value| match v {
        Value::Array(a) if !a.is_empty() => {
            out.push_str(&lead);
            out.push('\n');
            yaml_block(out, v, indent + 2);
        }
        Value::Object(m) if !m.is_empty() => {
            out.push_str(&lead);
            out.push('\n');
            yaml_block(out, v, indent + 2);
        }
        _ => {
            out.push_str(&lead);
            out.push_str(&yaml_scalar(v));
            out.push('\n');
        }
    };
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                nested(out, format!("{pad}{}: ", yaml_str(k)), &m[k]);
            }
        }
        Value::Array(a) => {
            for item in a {
                nested(out, format!("{pad}- "), item);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&yaml_scalar(other));
            out.push('\n');
        }
    }
}

fn yaml_scalar(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "~".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_str(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a plain scalar where that reads back as the same string
/// (epochs such as `1700000000.12345` stay plain, as YAML::Syck writes
/// them), else double-quoted with escapes.  Other number-like text (`0x10`,
/// `1e3`, `.inf`, `+1`) is quoted so that typing loaders keep it a string.
fn yaml_str(s: &str) -> String {
    let decimal = {
        let (i, f) = s.split_once('.').unwrap_or((s, "1"));
        !i.is_empty()
            && i.bytes().all(|b| b.is_ascii_digit())
            && (i == "0" || !i.starts_with('0'))
            && !f.is_empty()
            && f.bytes().all(|b| b.is_ascii_digit())
    };
    let number_like = {
        let t = s.strip_prefix(['+', '-']).unwrap_or(s).to_ascii_lowercase();
        let radix = |p: &str, ok: fn(u8) -> bool| t.strip_prefix(p).is_some_and(|r| !r.is_empty() && r.bytes().all(|b| ok(b) || b == b'_'));
        matches!(t.as_str(), ".inf" | ".nan")
            || radix("0x", |b| b.is_ascii_hexdigit())
            || radix("0o", |b| (b'0'..=b'7').contains(&b))
            || (t.bytes().any(|b| b.is_ascii_digit())
                && t.bytes().all(|b| b.is_ascii_digit() || b"_.e+-".contains(&b))
                && t.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
    };
    let plain_ok = !s.is_empty()
        && (decimal || !number_like)
        && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(|c| c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}'))
        && !matches!(
            s,
            "~" | "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE" | "yes" | "Yes" | "no" | "No"
                | "on" | "On" | "off" | "Off" | "y" | "n" | "=" | "<<"
        );
    if plain_ok {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                q.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[derive(Clone)]
struct Loaded {
    interval: String,
    aggregator: Vec<String>,
    serializer: Serializer,
    file: RFile,
}

/// One of our own files, through rmirror's reader (JSON or YAML).
fn read_file(p: &Path) -> Result<Option<Loaded>, String> {
    let data = match std::fs::read(p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let rf = crate::recent::parse_recent(&data, &name).map_err(|e| format!("{}: {e}", p.display()))?;
    let q = |e: &crate::recent::Epoch| parse_epoch(&e.to_string());
    let interval = rf.interval.to_string();
    let secs = interval_secs(&interval).ok_or_else(|| format!("{}: bad interval {interval:?}", p.display()))?;
    let aggregator = rf.meta.aggregator.iter().map(|i| i.to_string()).collect();
    let mut events: Vec<Ev> = rf
        .events
        .iter()
        .filter_map(|e| Some(Ev { epoch: q(&e.epoch)?, path: e.path.clone(), new: e.kind == crate::recent::EventType::New }))
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.epoch));
    let merged = rf.meta.merged.as_ref().and_then(|m| {
        Some((q(m.epoch.as_ref()?)?, m.into_interval.clone().unwrap_or_default(), m.time.as_ref().and_then(q).unwrap_or(0)))
    });
    let dirtymark = rf.meta.dirtymark.as_ref().and_then(q).unwrap_or(0);
    let written = match &rf.meta.other.get("Producers").and_then(|p| p.get("time")) {
        Some(serde_json::Value::String(s)) => parse_epoch(s),
        Some(serde_json::Value::Number(n)) => parse_epoch(&n.to_string()),
        _ => None,
    }
    .or(Some(0));
    Ok(Some(Loaded {
        interval: interval.clone(),
        aggregator,
        serializer: rf.serializer,
        file: RFile { interval, secs, events, merged, dirtymark, written },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recent::parse_recent;

    #[test]
    fn epochs() {
        assert_eq!(parse_epoch("1700000000.12345"), Some(1_700_000_000 * Q + 12345));
        assert_eq!(parse_epoch("1700000000.1"), Some(1_700_000_000 * Q + 10000));
        assert_eq!(parse_epoch("1700000000.123456789"), Some(1_700_000_000 * Q + 12345));
        assert_eq!(parse_epoch("1700000000"), Some(1_700_000_000 * Q));
        assert_eq!(parse_epoch("x"), None);
        assert_eq!(fmt_epoch(1_700_000_000 * Q + 5), "1700000000.00005");
        assert_eq!(interval_secs("6h"), Some(21_600));
        assert_eq!(interval_secs("h"), None);
    }

    #[test]
    fn written_files_parse_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000 * Q;
        let mut log = RecentLog::new(&DEFAULT_CHAIN, t0).unwrap();
        log.record("a/x.tar.gz", true, t0 + 5);
        log.record("a/y.tar.gz", true, t0 + 5);
        log.record("a/x.tar.gz", false, t0 + 7);
        let names = log.publish(dir.path(), t0 + 10).unwrap();
        assert!(names.contains(&"RECENT-1h.json".to_string()) && names.contains(&"RECENT-Z.json".to_string()), "{names:?}");
        assert_eq!(std::fs::read_link(dir.path().join(PRINCIPAL_LINK)).unwrap().to_string_lossy(), "RECENT-1h.json");
        for n in log.file_names() {
            let data = std::fs::read(dir.path().join(&n)).unwrap();
            let rf = parse_recent(&data, &n).unwrap_or_else(|e| panic!("{n}: {e}"));
            let _ = rf;
        }
        // newest per path, strictly decreasing
        let ev = log.events(0);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0], Ev { epoch: t0 + 7, path: "a/x.tar.gz".into(), new: false });
        assert!(ev[0].epoch > ev[1].epoch);
        // Z drops deletes
        let z = log.events(7);
        assert!(z.iter().all(|e| e.new), "{z:?}");
        // reload continues the chain
        let mut again = RecentLog::load(dir.path()).unwrap().unwrap();
        assert_eq!(again.dirtymark(), log.dirtymark());
        assert_eq!(again.newest_epoch(), log.newest_epoch());
        assert_eq!(again.events(0), log.events(0));
        again.record("b", true, t0); // clock went back: still increasing
        again.publish(dir.path(), t0 + 20).unwrap();
        assert_eq!(again.events(0)[0].path, "b");
        assert!(again.events(0)[0].epoch > t0 + 7);
        let data = std::fs::read(dir.path().join("RECENT-1h.json")).unwrap();
        parse_recent(&data, "RECENT-1h.json").unwrap();
    }

    #[test]
    fn long_history_keeps_coverage() {
        // events over two days: the 1h file is cut, longer files keep them
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000 * Q;
        let mut log = RecentLog::new(&["1h", "1d", "Z"], t0).unwrap();
        for k in 0..200u64 {
            let t = t0 + k * 900 * Q; // every 15 minutes
            log.record(&format!("f{k}"), true, t);
            log.publish(dir.path(), t).unwrap();
        }
        let p = log.events(0);
        let newest = p[0].epoch;
        assert!(p.iter().all(|e| newest - e.epoch <= 3600 * Q + 900 * Q), "principal too long: {}", p.len());
        // every event is in some file (the newest may not have reached Z yet)
        let all: HashSet<&str> = (0..3).flat_map(|i| log.events(i).iter().map(|e| e.path.as_str())).collect();
        assert_eq!(all.len(), 200);
        assert!(log.events(2).len() >= 190);
        for n in log.file_names() {
            let data = std::fs::read(dir.path().join(&n)).unwrap();
            parse_recent(&data, &n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn bad_chains() {
        assert!(RecentLog::new(&["1h"], 0).is_err());
        assert!(RecentLog::new(&["1h", "60m"], 0).is_err());
        assert!(RecentLog::new(&["1h", "1x"], 0).is_err());
    }

    #[test]
    fn yaml_chain_reads_back_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000 * Q;
        let mut log = RecentLog::new(&["1h", "1d", "Z"], t0).unwrap().with_serializer(Serializer::Yaml);
        log.record("a/x.tar.gz", true, t0 + 5);
        log.record("odd: name #1 - 'q' \"d\"", true, t0 + 6);
        log.record("a/x.tar.gz", false, t0 + 7);
        let names = log.publish(dir.path(), t0 + 10).unwrap();
        assert!(names.contains(&"RECENT-1h.yaml".to_string()) && names.contains(&"RECENT-Z.yaml".to_string()), "{names:?}");
        assert_eq!(log.file_names(), ["RECENT-1h.yaml", "RECENT-1d.yaml", "RECENT-Z.yaml"]);
        assert_eq!(std::fs::read_link(dir.path().join(PRINCIPAL_LINK)).unwrap().to_string_lossy(), "RECENT-1h.yaml");
        assert!(!dir.path().join("RECENT-1h.json").exists());
        let text = std::fs::read_to_string(dir.path().join("RECENT-1h.yaml")).unwrap();
        // YAML::Syck's layout: document marker, sorted keys, epochs plain
        assert!(text.starts_with("--- \nmeta: \n  Producers: \n"), "{text}");
        assert!(text.contains("\n  serializer_suffix: .yaml\n"), "{text}");
        assert!(text.contains("\nrecent: \n  - \n    epoch: 1700000000.00007\n    path: a/x.tar.gz\n    type: delete\n"), "{text}");
        // rmirror's reader
        let rf = parse_recent(text.as_bytes(), "RECENT-1h.yaml").unwrap();
        assert_eq!(rf.serializer, Serializer::Yaml);
        assert_eq!(rf.events.len(), 2);
        assert_eq!(rf.events[1].path, "odd: name #1 - 'q' \"d\"");
        // an independent YAML loader sees the same document
        let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
        let d = &docs[0];
        assert_eq!(d["meta"]["interval"].as_str(), Some("1h"));
        assert_eq!(d["meta"]["aggregator"][1].as_str(), Some("Z"));
        assert_eq!(d["recent"][1]["path"].as_str(), Some("odd: name #1 - 'q' \"d\""));
        assert_eq!(d["recent"][0]["type"].as_str(), Some("delete"));
        // reload continues the YAML chain
        let again = RecentLog::load(dir.path()).unwrap().unwrap();
        assert_eq!(again.serializer(), Serializer::Yaml);
        assert_eq!(again.events(0), log.events(0));
        assert_eq!(again.dirtymark(), log.dirtymark());
        // without the pointer the shortest .yaml file is found
        std::fs::remove_file(dir.path().join(PRINCIPAL_LINK)).unwrap();
        let again = RecentLog::load(dir.path()).unwrap().unwrap();
        assert_eq!(again.file_names()[0], "RECENT-1h.yaml");
        for n in log.file_names() {
            let data = std::fs::read(dir.path().join(&n)).unwrap();
            parse_recent(&data, &n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn yaml_strings_read_back_unchanged() {
        for s in [
            "plain/path-1.0.tar.gz", "1700000000.12345", "a: b", "- x", "-x", "#c", "x #y", "x#y", "'q'", "\"", "\\", "tab\there",
            "null", "~", "", " lead", "trail ", "trail:", "ü/ß", "[x]", "{x}", "&a", "*a", "!t", "|", ">", "%x", "@x", "`x", "?x", ",x",
            "a\nb", "\u{85}", "yes", "0x10", "0o7", "1e3", "1_000", "+1", "007", "1.5.tar.gz", "02packages", ".inf", ".x", "<<", "=", "$0",
            "File::Rsync::Mirror::Recentfile", "1700000000", "0.5",
        ] {
            let line = format!("k: {}\n", yaml_str(s));
            let docs = yaml_rust2::YamlLoader::load_from_str(&line).unwrap_or_else(|e| panic!("{s:?} as {line:?}: {e}"));
            // take the text as written, like rmirror's reader (a loader types plain scalars)
            let got = match &docs[0]["k"] {
                yaml_rust2::Yaml::String(x) | yaml_rust2::Yaml::Real(x) => x.clone(),
                yaml_rust2::Yaml::Integer(i) => i.to_string(),
                other => panic!("{s:?} as {line:?} read back as {other:?}"),
            };
            assert_eq!(got, s, "{line:?}");
        }
    }
}
