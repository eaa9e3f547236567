//! `mirrors.toml`: global settings and `[[job]]` tables, validated key by key
//! so that `rmirror run --check` can name the line and key of every error (not
//! only the first one serde would stop at).
//!
//! ```toml
//! max_parallel = 3                 # jobs running at once (default 6)
//! state_dir = "/var/lib/rmirror"   # status.json, locks/, staging/ (default: <config dir>/rmirror-state)
//! # status_file = "/var/lib/rmirror/status.json"
//! # reload_poll = "5s"             # check the file for changes (0: only on SIGHUP)
//! # max_age = "1d5m"               # default freshness limit for upstreams
//! # metrics = "127.0.0.1:9464"     # serve Prometheus /metrics here (off by default; a bare port binds loopback)
//!
//! [[job]]
//! name = "ius"
//! destination = "/srv/mirror/ius"
//! upstreams = ["rsync://a.example/ius/", "rsync://b.example/ius/"]  # best fresh first, failover
//! strategy = "marker"              # full (default) | marker | recent
//! marker = "CURRENT"               # or "project/trace/master" (Debian trace: Archive serial)
//! interval = "1h"                  # default 1h
//! min_wait_ok = "10m"              # after a success (default 0)
//! min_wait_fail = "5m"             # after a failure (default 10m)
//! random_delay = "2m"              # before each run (default 0)
//! exclude = ["*.tmp"]              # rsync rules: include, exclude, then filter
//! filter = ["- /private/", "P /keep/"]
//! max_delete = 1000
//! timeout = "10m"                  # idle I/O timeout (default 600s)
//! contimeout = "30s"
//! wall_timeout = "6h"              # whole run
//! late_publish = ["repodata/", "Packages*", "Release", "InRelease"]
//! # update_markers = ["Archive-Update-in-Progress-*"]  # (default) upstream mid-update: hold the late phase, retry
//! # partial_dir = ".rsync-partial"  # keep interrupted files there, resume from them next run
//! # safe_links = false             # create symlinks pointing outside the tree too (default true: skipped, warned)
//! before = "logger starting $RMIRROR_JOB"
//! after = "/usr/local/bin/trigger-downstream"   # env: RMIRROR_RESULT, _EXIT, _FILES, _BYTES, …
//! on_failure = "mail -s \"$RMIRROR_JOB failed: $RMIRROR_MESSAGE\" root < /dev/null"
//! # password_file = "/etc/rmirror/ius.secret"
//! # For the mirrors below (see crate::publish), written after each successful run:
//! trace = { host = "mirror.example.org", maintainer = "Admins <root@example.org>" }  # project/trace/<host>; or `trace = true`
//! timestamp_file = "TIMESTAMP"      # epoch seconds
//! mirror_yml = { path = "mirror.yml", mirrors = ["rsync://b.example/ius/"] }  # or .json; master: the upstream used
//! write_recent = true              # RECENT-*.json of this tree, from what each run changed
//!
//! [[job]]
//! name = "cpan"
//! destination = "/srv/mirror/cpan"
//! discover = "rsync://mirrors.example/cpan/mirror.yml"   # upstreams from a mirror list
//! # freshness = "mirror.yml"      # signal that ranks upstreams (default: marker / list file name)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

/// One problem in the file: where (1-based line), which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub key: String,
    pub msg: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "line {}: {}", self.line, self.msg)
        } else {
            write!(f, "line {}: key `{}`: {}", self.line, self.key, self.msg)
        }
    }
}

/// The strategy a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyKind {
    /// One full sync with delete-after (plus the late-publish pass).
    Full,
    /// IUS: fetch the marker first, sync only when it changed, publish it last.
    Marker,
    /// The RECENT-file planner (`crate::plan::recent`), when it lands.
    Recent,
}

impl StrategyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StrategyKind::Full => "full",
            StrategyKind::Marker => "marker",
            StrategyKind::Recent => "recent",
        }
    }
}

/// How a marker file is compared with the local copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerFormat {
    /// Byte for byte.
    Plain,
    /// A Debian trace file: the `Archive serial` field (whole content if absent).
    Trace,
}

#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub before: Option<String>,
    pub after: Option<String>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub destination: PathBuf,
    /// rsync:// URLs of the tree, in the order given.
    pub upstreams: Vec<String>,
    /// A `mirror.yml`/`mirror.json` URL whose mirror list supplies upstreams.
    pub discover: Option<String>,
    pub strategy: StrategyKind,
    pub marker: String,
    pub marker_format: MarkerFormat,
    /// Path (relative to an upstream) of the freshness signal used to rank
    /// upstreams; default: the marker for `marker` jobs, `mirror.yml` with
    /// `discover`, none otherwise (upstreams are tried in the order given).
    pub freshness: Option<String>,
    pub max_age: Duration,
    pub interval: Duration,
    pub min_wait_ok: Duration,
    pub min_wait_fail: Duration,
    pub random_delay: Duration,
    /// rsync filter rules, in order (`exclude`/`include` entries become `- `/`+ ` rules first).
    pub filters: Vec<String>,
    pub max_delete: Option<u64>,
    pub timeout: Option<Duration>,
    pub wall_timeout: Option<Duration>,
    pub contimeout: Option<Duration>,
    pub late_publish: Vec<String>,
    /// Top-level upstream names (globs) meaning the upstream is being updated
    /// (ftpsync's `Archive-Update-in-Progress-*`, the default): the run then
    /// holds back the late phase and deletions and is retried.
    pub update_markers: Vec<String>,
    /// `--partial-dir` for the job's tree syncs.
    pub partial_dir: Option<crate::engine::partial::PartialDir>,
    /// `--safe-links` for every pull of the job (default true; `safe_links =
    /// false` is `--no-safe-links`).
    pub safe_links: bool,
    pub hooks: Hooks,
    pub password_file: Option<PathBuf>,
    /// What to leave in the tree for downstream mirrors after a run.
    pub publish: crate::publish::PublishConfig,
    /// Line of the job's `name` key (for messages).
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub max_parallel: usize,
    pub state_dir: PathBuf,
    pub status_file: PathBuf,
    /// How often the file is checked for changes while running (0: never).
    pub reload_poll: Duration,
    pub jobs: Vec<Arc<JobConfig>>,
    /// Where to serve `/metrics` (none: not served).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn job(&self, name: &str) -> Option<&Arc<JobConfig>> {
        self.jobs.iter().find(|j| j.name == name)
    }
    pub fn lock_dir(&self) -> PathBuf {
        self.state_dir.join("locks")
    }
    pub fn staging_dir(&self, job: &str) -> PathBuf {
        self.state_dir.join("staging").join(sanitize(job))
    }
}

/// A name safe as one path component.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

pub const DEFAULT_MAX_PARALLEL: usize = 6;
/// One day plus five minutes (Mirror::YAML's default).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(86400 + 300);

const GLOBAL_KEYS: &[&str] = &["max_parallel", "state_dir", "status_file", "reload_poll", "max_age", "metrics", "job"];
const JOB_KEYS: &[&str] = &[
    "name", "destination", "upstream", "upstreams", "discover", "strategy", "marker", "marker_format",
    "freshness", "max_age", "interval", "min_wait_ok", "min_wait_fail", "random_delay", "filter",
    "exclude", "include", "max_delete", "timeout", "wall_timeout", "contimeout", "late_publish",
    "before", "after", "on_failure", "password_file", "trace", "timestamp_file", "mirror_yml", "write_recent",
    "update_markers", "partial_dir", "safe_links",
];

/// The default `update_markers`: ftpsync's lock file on the upstream's top level.
pub const DEFAULT_UPDATE_MARKERS: &[&str] = &["Archive-Update-in-Progress-*"];

const TRACE_KEYS: &[&str] = &["host", "dir", "maintainer", "sponsor", "country", "location", "throughput"];
const MIRROR_LIST_KEYS: &[&str] = &["path", "master", "mirrors"];

/// `trace = true | { host, dir, maintainer, … }`.
fn trace_config(v: &toml::Value) -> Result<Option<crate::publish::TraceConfig>, String> {
    let mut t = crate::publish::TraceConfig::default();
    match v {
        toml::Value::Boolean(b) => return Ok(b.then_some(t)),
        toml::Value::Table(tab) => {
            for (k, x) in tab {
                let s = x.as_str().ok_or_else(|| format!("`{k}` must be a string"))?.to_string();
                match k.as_str() {
                    "host" => t.host = Some(s),
                    "dir" => t.dir = Some(s),
                    other if TRACE_KEYS.contains(&other) => {
                        let mut name = other.to_string();
                        name[..1].make_ascii_uppercase();
                        t.fields.push((name, s));
                    }
                    other => return Err(format!("unknown key `{other}` (known: {})", TRACE_KEYS.join(", "))),
                }
            }
        }
        other => return Err(format!("expected true or a table like {{ host = \"mirror.example.org\" }}, found {}", other.type_str())),
    }
    Ok(Some(t))
}

/// `mirror_yml = "mirror.yml" | { path, master, mirrors }`.
fn mirror_list_config(v: &toml::Value) -> Result<crate::publish::MirrorListConfig, String> {
    let mut m = crate::publish::MirrorListConfig::default();
    match v {
        toml::Value::String(s) => m.path = s.clone(),
        toml::Value::Table(tab) => {
            for (k, x) in tab {
                match k.as_str() {
                    "path" => m.path = x.as_str().ok_or("`path` must be a string")?.to_string(),
                    "master" => m.master = Some(x.as_str().ok_or("`master` must be a string")?.to_string()),
                    "mirrors" => {
                        m.mirrors = x
                            .as_array()
                            .and_then(|a| a.iter().map(|u| u.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
                            .ok_or("`mirrors` must be an array of strings")?
                    }
                    other => return Err(format!("unknown key `{other}` (known: {})", MIRROR_LIST_KEYS.join(", "))),
                }
            }
        }
        other => return Err(format!("expected a path or a table like {{ path = \"mirror.yml\" }}, found {}", other.type_str())),
    }
    Ok(m)
}

/// Parse `1d`, `2h30m`, `90s`, `15m`, `500ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("bad duration {s:?} (use e.g. 90s, 15m, 6h, 1d, 1d5m)"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("bad number in duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let too_long = || format!("duration {s:?} is too long");
        let secs = |per: u64| n.checked_mul(per).map(Duration::from_secs).ok_or_else(too_long);
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => secs(60)?,
            "h" | "hour" | "hours" => secs(3600)?,
            "d" | "day" | "days" => secs(86400)?,
            "w" => secs(7 * 86400)?,
            _ => return Err(format!("bad unit {unit:?} in duration {s:?} (use ms, s, m, h, d, w)")),
        };
        total = total.checked_add(d).ok_or_else(too_long)?;
    }
    Ok(total)
}

type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(serde::Deserialize)]
struct RawJobs {
    #[serde(default)]
    job: Vec<RawTable>,
}

/// Byte offset → 1-based line.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key on the line containing `offset` (text before `=`), for serde errors.
fn key_at(text: &str, offset: usize) -> String {
    let start = text[..offset.min(text.len())].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[start..].lines().next().unwrap_or("");
    match line.find('=') {
        Some(i) => line[..i].trim().trim_matches('"').to_string(),
        None => String::new(),
    }
}

struct Ctx<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, key: &str, msg: impl Into<String>) {
        let line = line_of(self.text, span.start);
        self.errors.push(ConfigError { line, key: key.to_string(), msg: msg.into() });
    }
    fn string(&mut self, k: &Spanned<String>, v: &Spanned<toml::Value>) -> Option<String> {
        match v.get_ref() {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.err(k.span(), k.get_ref(), format!("expected a string, found {}", other.type_str()));
                None
            }
        }
    }
    fn strings(&mut self, k: &Spanned<String>, v: &Spanned<toml::Value>) -> Option<Vec<String>> {
        match v.get_ref() {
            toml::Value::String(s) => Some(vec![s.clone()]),
            toml::Value::Array(a) => {
                let mut out = Vec::new();
                for x in a {
                    match x {
                        toml::Value::String(s) => out.push(s.clone()),
                        other => {
                            self.err(k.span(), k.get_ref(), format!("expected strings, found {}", other.type_str()));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.err(k.span(), k.get_ref(), format!("expected a string or an array of strings, found {}", other.type_str()));
                None
            }
        }
    }
    fn duration(&mut self, k: &Spanned<String>, v: &Spanned<toml::Value>) -> Option<Duration> {
        match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
            toml::Value::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(k.span(), k.get_ref(), e);
                    None
                }
            },
            other => {
                self.err(k.span(), k.get_ref(), format!("expected a duration like \"6h\" or seconds, found {}", other.type_str()));
                None
            }
        }
    }
    fn uint(&mut self, k: &Spanned<String>, v: &Spanned<toml::Value>) -> Option<u64> {
        match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => Some(*n as u64),
            other => {
                self.err(k.span(), k.get_ref(), format!("expected a non-negative integer, found {}", describe(other)));
                None
            }
        }
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(n) => format!("{n}"),
        other => other.type_str().to_string(),
    }
}

fn suggest(key: &str, known: &[&str]) -> String {
    let close = known.iter().find(|k| {
        let a = k.replace('_', "");
        let b = key.replace(['_', '-'], "");
        a.eq_ignore_ascii_case(&b) || (a.len() > 3 && (a.starts_with(&b) || b.starts_with(&a)))
    });
    match close {
        Some(k) => format!("unknown key (did you mean `{k}`?)"),
        None => format!("unknown key (known: {})", known.join(", ")),
    }
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError { line: 0, key: String::new(), msg: format!("cannot read {}: {e}", path.display()) }])?;
    parse(&text, path)
}

/// Validate config text; `path` locates relative paths (its directory).
pub fn parse(text: &str, path: &Path) -> Result<Config, Vec<ConfigError>> {
    let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let abs = |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let serde_err = |e: toml::de::Error| {
        let (line, key) = match e.span() {
            Some(s) => (line_of(text, s.start), key_at(text, s.start)),
            None => (0, String::new()),
        };
        vec![ConfigError { line, key, msg: e.message().trim().to_string() }]
    };
    let top: RawTable = toml::from_str(text).map_err(serde_err)?;
    let jobs: RawJobs = toml::from_str(text).map_err(serde_err)?;
    let mut cx = Ctx { text, errors: Vec::new() };

    let mut max_parallel = DEFAULT_MAX_PARALLEL;
    let mut state_dir = base.join("rmirror-state");
    let mut status_file = None;
    let mut reload_poll = Duration::from_secs(5);
    let mut global_max_age = DEFAULT_MAX_AGE;
    let mut metrics = None;
    for (k, v) in &top {
        match k.get_ref().as_str() {
            "max_parallel" => {
                if let Some(n) = cx.uint(k, v) {
                    if n == 0 {
                        cx.err(k.span(), "max_parallel", "must be at least 1");
                    } else {
                        max_parallel = n as usize;
                    }
                }
            }
            "state_dir" => {
                if let Some(s) = cx.string(k, v) {
                    state_dir = abs(&s);
                }
            }
            "status_file" => {
                if let Some(s) = cx.string(k, v) {
                    status_file = Some(abs(&s));
                }
            }
            "reload_poll" => {
                if let Some(d) = cx.duration(k, v) {
                    reload_poll = d;
                }
            }
            "max_age" => {
                if let Some(d) = cx.duration(k, v) {
                    global_max_age = d;
                }
            }
            "metrics" => {
                if let Some(s) = cx.string(k, v) {
                    match crate::metrics::parse_addr(&s) {
                        Ok(a) => metrics = Some(a),
                        Err(e) => cx.err(k.span(), "metrics", e),
                    }
                }
            }
            "job" => {
                if !matches!(v.get_ref(), toml::Value::Array(_)) {
                    cx.err(k.span(), "job", "jobs are written as [[job]] tables");
                }
            }
            other => {
                let msg = if matches!(v.get_ref(), toml::Value::Table(_)) {
                    format!("unknown table [{other}] (jobs are [[job]] tables)")
                } else {
                    suggest(other, GLOBAL_KEYS)
                };
                cx.err(k.span(), other, msg);
            }
        }
    }

    let mut out_jobs: Vec<Arc<JobConfig>> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (ji, t) in jobs.job.iter().enumerate() {
        // The job's own line: its first key.
        let first_line = t.keys().map(|k| line_of(text, k.span().start)).min().unwrap_or(0);
        let mut name = None;
        let mut name_line = first_line;
        let mut destination = None;
        let mut upstreams: Vec<String> = Vec::new();
        let mut upstream_key: Option<Spanned<String>> = None;
        let mut discover = None;
        let mut strategy = StrategyKind::Full;
        let mut marker = "CURRENT".to_string();
        let mut marker_format: Option<MarkerFormat> = None;
        let mut freshness = None;
        let mut max_age = global_max_age;
        let mut interval = Duration::from_secs(3600);
        let mut min_wait_ok = Duration::ZERO;
        let mut min_wait_fail = Duration::from_secs(600);
        let mut random_delay = Duration::ZERO;
        let mut filters: Vec<String> = Vec::new();
        let mut filter_src: Vec<(Spanned<String>, String)> = Vec::new();
        let mut max_delete = None;
        let mut timeout = Some(Duration::from_secs(600));
        let mut wall_timeout = None;
        let mut contimeout = Some(Duration::from_secs(30));
        let mut late_publish = Vec::new();
        let mut update_markers: Vec<String> = DEFAULT_UPDATE_MARKERS.iter().map(|s| s.to_string()).collect();
        let mut partial_dir = None;
        let mut safe_links = true;
        let mut hooks = Hooks::default();
        let mut password_file = None;
        let mut publish = crate::publish::PublishConfig::default();
        let mut publish_key: Option<Spanned<String>> = None;
        // `exclude`/`include` become rules before `filter` entries.
        let mut excl: Vec<(Spanned<String>, String)> = Vec::new();
        let mut incl: Vec<(Spanned<String>, String)> = Vec::new();
        for (k, v) in t {
            let key = k.get_ref().as_str();
            match key {
                "name" => {
                    if let Some(s) = cx.string(k, v) {
                        name_line = line_of(text, k.span().start);
                        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '/') {
                            cx.err(k.span(), key, "a job name must be non-empty, without spaces or '/'");
                        } else if let Some(prev) = names.get(&s) {
                            cx.err(k.span(), key, format!("duplicate job name {s:?} (first on line {prev})"));
                        } else {
                            names.insert(s.clone(), name_line);
                            name = Some(s);
                        }
                    }
                }
                "destination" => {
                    if let Some(s) = cx.string(k, v) {
                        if s.is_empty() {
                            cx.err(k.span(), key, "empty destination");
                        } else {
                            destination = Some((abs(&s), k.clone()));
                        }
                    }
                }
                "upstream" | "upstreams" => {
                    if let Some(list) = cx.strings(k, v) {
                        if list.is_empty() {
                            cx.err(k.span(), key, "no upstream given");
                        }
                        for u in &list {
                            match crate::remote::parse(u) {
                                Ok(r) if r.module.is_empty() => cx.err(k.span(), key, format!("{u:?} names no module")),
                                Ok(_) => {}
                                Err(e) => cx.err(k.span(), key, e),
                            }
                        }
                        upstreams.extend(list);
                        upstream_key = Some(k.clone());
                    }
                }
                "discover" => {
                    if let Some(s) = cx.string(k, v) {
                        if let Err(e) = super::probe::check_list_url(&s) {
                            cx.err(k.span(), key, e);
                        }
                        discover = Some(s);
                    }
                }
                "strategy" => {
                    if let Some(s) = cx.string(k, v) {
                        match s.as_str() {
                            "full" => strategy = StrategyKind::Full,
                            "marker" => strategy = StrategyKind::Marker,
                            "recent" => strategy = StrategyKind::Recent,
                            other => {
                                cx.err(k.span(), key, format!("unknown strategy {other:?} (full, marker, recent)"));
                                continue;
                            }
                        }
                        if let Err(e) = super::strategy::planner_for(&strategy) {
                            cx.err(k.span(), key, e);
                        }
                    }
                }
                "marker" => {
                    if let Some(s) = cx.string(k, v) {
                        match super::probe::check_rel_path(&s) {
                            Ok(()) => marker = s,
                            Err(e) => cx.err(k.span(), key, e),
                        }
                    }
                }
                "marker_format" => {
                    if let Some(s) = cx.string(k, v) {
                        match s.as_str() {
                            "plain" => marker_format = Some(MarkerFormat::Plain),
                            "trace" => marker_format = Some(MarkerFormat::Trace),
                            other => cx.err(k.span(), key, format!("unknown marker format {other:?} (plain, trace)")),
                        }
                    }
                }
                "freshness" => {
                    if let Some(s) = cx.string(k, v) {
                        match super::probe::check_rel_path(&s) {
                            Ok(()) => freshness = Some(s),
                            Err(e) => cx.err(k.span(), key, e),
                        }
                    }
                }
                "max_age" => max_age = cx.duration(k, v).unwrap_or(max_age),
                "interval" => {
                    if let Some(d) = cx.duration(k, v) {
                        if d.is_zero() {
                            cx.err(k.span(), key, "interval must be positive");
                        } else {
                            interval = d;
                        }
                    }
                }
                "min_wait_ok" => min_wait_ok = cx.duration(k, v).unwrap_or(min_wait_ok),
                "min_wait_fail" => min_wait_fail = cx.duration(k, v).unwrap_or(min_wait_fail),
                "random_delay" => random_delay = cx.duration(k, v).unwrap_or(random_delay),
                "filter" => {
                    if let Some(l) = cx.strings(k, v) {
                        filter_src.extend(l.into_iter().map(|r| (k.clone(), r)));
                    }
                }
                "exclude" => {
                    if let Some(l) = cx.strings(k, v) {
                        excl.extend(l.into_iter().map(|r| (k.clone(), r)));
                    }
                }
                "include" => {
                    if let Some(l) = cx.strings(k, v) {
                        incl.extend(l.into_iter().map(|r| (k.clone(), r)));
                    }
                }
                "max_delete" => max_delete = cx.uint(k, v).or(max_delete),
                "timeout" => timeout = cx.duration(k, v).filter(|d| !d.is_zero()),
                "wall_timeout" => wall_timeout = cx.duration(k, v).filter(|d| !d.is_zero()),
                "contimeout" => contimeout = cx.duration(k, v).filter(|d| !d.is_zero()),
                "late_publish" => {
                    if let Some(l) = cx.strings(k, v) {
                        for p in &l {
                            if p.is_empty() || p.contains(char::is_whitespace) {
                                cx.err(k.span(), key, format!("bad pattern {p:?}"));
                            }
                        }
                        late_publish = l;
                    }
                }
                "update_markers" => {
                    if let Some(l) = cx.strings(k, v) {
                        for p in &l {
                            if p.is_empty() || p.contains('/') {
                                cx.err(k.span(), key, format!("bad pattern {p:?} (a top-level name: no '/')"));
                            }
                        }
                        update_markers = l;
                    }
                }
                "partial_dir" => {
                    if let Some(s) = cx.string(k, v) {
                        match crate::engine::partial::PartialDir::parse(std::ffi::OsStr::new(&s)) {
                            Ok(p) => partial_dir = p,
                            Err(e) => cx.err(k.span(), key, e),
                        }
                    }
                }
                "safe_links" => match v.get_ref() {
                    toml::Value::Boolean(b) => safe_links = *b,
                    other => cx.err(k.span(), key, format!("expected true or false, found {}", other.type_str())),
                },
                "before" => hooks.before = cx.string(k, v),
                "after" => hooks.after = cx.string(k, v),
                "on_failure" => hooks.on_failure = cx.string(k, v),
                "password_file" => password_file = cx.string(k, v).map(|s| abs(&s)),
                "trace" => match trace_config(v.get_ref()) {
                    Ok(t) => {
                        publish.trace = t;
                        publish_key = Some(k.clone());
                    }
                    Err(e) => cx.err(k.span(), key, e),
                },
                "timestamp_file" => {
                    if let Some(s) = cx.string(k, v) {
                        publish.timestamp_file = Some(s);
                        publish_key = Some(k.clone());
                    }
                }
                "mirror_yml" => match mirror_list_config(v.get_ref()) {
                    Ok(m) => {
                        publish.mirror_list = Some(m);
                        publish_key = Some(k.clone());
                    }
                    Err(e) => cx.err(k.span(), key, e),
                },
                "write_recent" => match v.get_ref() {
                    toml::Value::Boolean(b) => {
                        publish.recent = *b;
                        publish_key = Some(k.clone());
                    }
                    other => cx.err(k.span(), key, format!("expected true or false, found {}", other.type_str())),
                },
                other => cx.err(k.span(), other, suggest(other, JOB_KEYS)),
            }
        }
        // Filters, in the order: include, exclude, filter (rsync first-match).
        let mut fl = crate::filter::FilterList::new();
        for (k, p) in &incl {
            match fl.add_include(p) {
                Ok(()) => filters.push(format!("+ {p}")),
                Err(e) => cx.err(k.span(), "include", format!("{p:?}: {e}")),
            }
        }
        for (k, p) in &excl {
            match fl.add_exclude(p) {
                Ok(()) => filters.push(format!("- {p}")),
                Err(e) => cx.err(k.span(), "exclude", format!("{p:?}: {e}")),
            }
        }
        for (k, r) in &filter_src {
            match fl.add_rule(r) {
                Ok(()) => filters.push(r.clone()),
                Err(e) => cx.err(k.span(), "filter", format!("{r:?}: {e}")),
            }
        }
        if let Some(k) = &publish_key {
            if let Err(e) = publish.validate() {
                cx.err(k.span(), k.get_ref(), e);
            }
        }
        let label = name.clone().unwrap_or_else(|| format!("#{}", ji + 1));
        if name.is_none() && !t.keys().any(|k| k.get_ref() == "name") {
            cx.errors.push(ConfigError { line: first_line, key: "name".into(), msg: format!("job {label} has no `name`") });
        }
        let Some((destination, dest_key)) = destination else {
            if !t.keys().any(|k| k.get_ref() == "destination") {
                cx.errors.push(ConfigError { line: first_line, key: "destination".into(), msg: format!("job {label} has no `destination`") });
            }
            continue;
        };
        if upstreams.is_empty() && discover.is_none() {
            if !t.keys().any(|k| matches!(k.get_ref().as_str(), "upstream" | "upstreams" | "discover")) {
                cx.errors.push(ConfigError {
                    line: first_line,
                    key: "upstreams".into(),
                    msg: format!("job {label} has neither `upstreams` nor `discover`"),
                });
            }
            continue;
        }
        let _ = upstream_key;
        if destination.starts_with(&state_dir) || state_dir.starts_with(&destination) {
            cx.err(dest_key.span(), "destination", format!("overlaps state_dir {}", state_dir.display()));
        }
        if let Some(other) = out_jobs.iter().find(|j| j.destination == destination) {
            cx.err(dest_key.span(), "destination", format!("also the destination of job {:?}", other.name));
        }
        let Some(name) = name else { continue };
        let marker_format = marker_format.unwrap_or(if marker.contains("trace/") { MarkerFormat::Trace } else { MarkerFormat::Plain });
        let freshness = freshness.or_else(|| match (&strategy, &discover) {
            (StrategyKind::Marker, _) => Some(marker.clone()),
            (_, Some(d)) => Some(d.rsplit('/').next().unwrap_or("mirror.yml").to_string()),
            _ => None,
        });
        out_jobs.push(Arc::new(JobConfig {
            name,
            destination,
            upstreams,
            discover,
            strategy,
            marker,
            marker_format,
            freshness,
            max_age,
            interval,
            min_wait_ok,
            min_wait_fail,
            random_delay,
            filters,
            max_delete,
            timeout,
            wall_timeout,
            contimeout,
            late_publish,
            update_markers,
            partial_dir,
            safe_links,
            hooks,
            password_file,
            publish,
            line: name_line,
        }));
    }
    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| e.line);
        return Err(cx.errors);
    }
    let status_file = status_file.unwrap_or_else(|| state_dir.join("status.json"));
    Ok(Config {
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        max_parallel,
        state_dir,
        status_file,
        reload_poll,
        jobs: out_jobs,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1d5m").unwrap(), Duration::from_secs(86400 + 300));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("h").is_err());
        // found by the toml_config fuzz target: a unit multiplier or the sum
        // overflowing was a panic, not an error
        assert!(parse_duration("18446744073709551615w").unwrap_err().contains("too long"));
        assert!(parse_duration("300000000000000d").unwrap_err().contains("too long"));
        assert!(parse_duration("18446744073709551615s1s").unwrap_err().contains("too long"));
    }

    #[test]
    fn good_file() {
        let t = r#"
max_parallel = 2
state_dir = "/tmp/rm-state"

[[job]]
name = "a"
destination = "/tmp/rm-a"
upstreams = ["rsync://h/m/", "rsync://h2:8873/m/"]
strategy = "marker"
interval = "30m"
exclude = ["*.tmp"]
filter = ["- /private/"]
late_publish = ["Packages*", "repodata/"]

[[job]]
name = "b"
destination = "/tmp/rm-b"
upstream = "rsync://h/b/"
"#;
        let c = parse(t, Path::new("/tmp/x.toml")).unwrap();
        assert_eq!(c.max_parallel, 2);
        assert_eq!(c.jobs.len(), 2);
        let a = &c.jobs[0];
        assert_eq!(a.strategy, StrategyKind::Marker);
        assert_eq!(a.freshness.as_deref(), Some("CURRENT"));
        assert_eq!(a.filters, vec!["- *.tmp".to_string(), "- /private/".to_string()]);
        assert_eq!(a.interval, Duration::from_secs(1800));
        assert_eq!(a.line, 6);
        assert_eq!(c.jobs[1].upstreams, vec!["rsync://h/b/".to_string()]);
        assert_eq!(c.status_file, PathBuf::from("/tmp/rm-state/status.json"));
    }

    #[test]
    fn every_error_has_line_and_key() {
        let t = "max_paralel = 2\n\n[[job]]\nname = \"a\"\ndestination = \"/tmp/a\"\nupstreams = [\"rsync://h/m/\"]\ninterval = \"5 parsecs\"\nstrategy = \"telepathy\"\n\n[[job]]\nname = \"b\"\ndestination = 7\nupstream = \"/local\"\n";
        let errs = parse(t, Path::new("/tmp/x.toml")).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert!(got.contains(&(1, "max_paralel")), "{errs:?}");
        assert!(got.contains(&(7, "interval")), "{errs:?}");
        assert!(got.contains(&(8, "strategy")), "{errs:?}");
        assert!(got.contains(&(12, "destination")), "{errs:?}");
        assert!(got.contains(&(13, "upstream")), "{errs:?}");
        assert!(errs.iter().any(|e| e.msg.contains("unknown strategy")), "{errs:?}");
        assert!(errs[0].msg.contains("max_parallel"), "{errs:?}");
    }

    #[test]
    fn publish_keys() {
        let t = "[[job]]\nname = \"a\"\ndestination = \"/tmp/a\"\nupstream = \"rsync://h/m/\"\ntrace = { host = \"m.example\", maintainer = \"Admins <a@example.org>\" }\ntimestamp_file = \"TIME\"\nmirror_yml = { path = \"mirror.json\", mirrors = [\"rsync://b/m/\"] }\nwrite_recent = true\n";
        let c = parse(t, Path::new("/tmp/x.toml")).unwrap();
        let p = &c.jobs[0].publish;
        assert_eq!(p.trace.as_ref().unwrap().path(), "project/trace/m.example");
        assert_eq!(p.trace.as_ref().unwrap().fields, vec![("Maintainer".to_string(), "Admins <a@example.org>".to_string())]);
        assert_eq!(p.timestamp_file.as_deref(), Some("TIME"));
        assert_eq!(p.mirror_list.as_ref().unwrap().path, "mirror.json");
        assert!(p.recent);
        let bad = "[[job]]\nname = \"a\"\ndestination = \"/tmp/a\"\nupstream = \"rsync://h/m/\"\ntrace = { hots = \"x\" }\ntimestamp_file = \"../up\"\nwrite_recent = 1\n";
        let errs = parse(bad, Path::new("/tmp/x.toml")).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert!(got.contains(&(5, "trace")) && got.contains(&(7, "write_recent")), "{errs:?}");
        assert!(errs.iter().any(|e| e.msg.contains("..")), "{errs:?}");
    }

    #[test]
    fn update_markers_and_partial_dir() {
        let base = "[[job]]\nname = \"a\"\ndestination = \"/tmp/a\"\nupstream = \"rsync://h/m/\"\n";
        let c = parse(base, Path::new("/tmp/x.toml")).unwrap();
        assert_eq!(c.jobs[0].update_markers, vec!["Archive-Update-in-Progress-*".to_string()], "on by default");
        assert_eq!(c.jobs[0].partial_dir, None);
        let t = format!("{base}update_markers = []\npartial_dir = \".rsync-partial\"\n");
        let c = parse(&t, Path::new("/tmp/x.toml")).unwrap();
        assert!(c.jobs[0].update_markers.is_empty());
        assert_eq!(c.jobs[0].partial_dir, Some(crate::engine::partial::PartialDir::Relative(b".rsync-partial".to_vec())));
        let t = format!("{base}update_markers = [\"dir/LOCK\"]\npartial_dir = \"../out\"\n");
        let errs = parse(&t, Path::new("/tmp/x.toml")).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, vec![(5, "update_markers"), (6, "partial_dir")], "{errs:?}");
    }

    #[test]
    fn safe_links_default_and_opt_out() {
        let base = "[[job]]\nname = \"a\"\ndestination = \"/tmp/a\"\nupstream = \"rsync://h/m/\"\n";
        let c = parse(base, Path::new("/tmp/x.toml")).unwrap();
        assert!(c.jobs[0].safe_links, "on by default");
        let c = parse(&format!("{base}safe_links = false\n"), Path::new("/tmp/x.toml")).unwrap();
        assert!(!c.jobs[0].safe_links);
        let c = parse(&format!("{base}safe_links = true\n"), Path::new("/tmp/x.toml")).unwrap();
        assert!(c.jobs[0].safe_links);
        let errs = parse(&format!("{base}safe_links = \"no\"\n"), Path::new("/tmp/x.toml")).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, vec![(5, "safe_links")], "{errs:?}");
    }

    #[test]
    fn syntax_error_has_line() {
        let errs = parse("[[job]]\nname = \"a\"\ndestination = \n", Path::new("/tmp/x.toml")).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 3, "{errs:?}");
    }
}
