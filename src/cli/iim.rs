//! `rmirror iim …` — and the same binary run under the name `iim` — a drop-in
//! for Henk P. Penning's iim instant-mirroring client, on [`crate::plan`].
//!
//! Command line (parsed by [`crate::iim::parse_args`]):
//! `iim [-v] [-q] [-d] [-t] [-f] [-m] [-daemon tag] [-e e] [-c conf] [--entry value ...]`
//!
//! * `-t` checks the config (syntax, every value, the remote, the scoreboard
//!   template) and exits: 0 and `… OK`, or non-zero with the error.
//! * `-m` compares the local tree with the remote (a dry run with delete of
//!   the core engine, like `rmirror compare`) and exits 0 when identical, 1
//!   when they differ; `-v` lists the differences.
//! * `-e E`: treat the local tree as complete up to E (absolute epoch, or
//!   `-30m`, `-2h`, … before now) and follow the RECENT files from there.
//! * `-f`: a full sync on start-up; also allows full syncs for this run.
//! * `-daemon [dir/]tag`: detach (fork, setsid, working directory kept,
//!   stdin from /dev/null) into `[dir/]tag/` holding `iim.pid` (locked while
//!   the daemon lives, so there is one daemon per tag: a second start says so
//!   and exits 0, silently under `-q`) and `iim.log` (all output; reopened
//!   about every 5 minutes so it may be moved away; rotated to `iim.log.1` …
//!   `iim.log.<count>` by `rotate count [interval]`).
//! * Log levels: `-d` beats `-v` beats `-q` beats the `loglevel` entry.
//!   quiet: errors only; terse (default): errors, warnings, start/stop and
//!   passes that changed something; verbose: every pass and event; debug:
//!   internal actions too.
//!
//! Start-up rule: with no `-e`, when there is no state yet the local RECENT
//! files decide: present and their newest event less than a day old → the
//! index is followed from that event; missing or older → a full sync.  With
//! state, a full sync when the local RECENT files are missing or the last
//! caught-up pass is more than a day old.  When a full sync is needed and
//! `allow_full_syncs` is off (and no `-f`), iim exits 1 with the reason.
//!
//! Config entries (see [`crate::iim::config`]): `local`, `remote` (an
//! rsync daemon URL or `host::module/path`, optionally naming the principal
//! file), `user`, `passwd` (else `$RSYNC_PASSWORD`), `sleep_main_loop` (time
//! between loop starts), `sleep_init_epoch` (pause before retrying after a
//! failed loop, growing with repeated failures; 0 = rmirror's 12 s),
//! `max_run_time` (exit 0 after that long), `scoreboard_file` (several;
//! `.html`/`.htm`/`.php` → HTML from `scoreboard_template` or a built-in
//! template, `.json` → JSON with the config values and defaults, anything
//! else → text; written atomically after every loop), `hot_config` (re-read
//! the config files after every loop; a changed valid config takes effect, a
//! bad edit is logged and the old config kept), `loglevel`, `rotate`,
//! `full_sync_interval`, `allow_full_syncs`, `timeout` (I/O and connect
//! timeout; 0 = none), `iim_umask` (applied with umask(2) at start-up and on
//! reload, before anything is written), `include`; `temp`, `prog_rsync` and
//! `prog_iim` are accepted and reported as not needed.
//!
//! rmirror extensions (not in iim): `metrics_listen ADDR` serves Prometheus
//! `/metrics` (the series of [`crate::metrics`]: lag from the RECENT epochs,
//! errors by exit code, the stuck alarm, …) while iim runs; `log_format
//! text|json` (also `rmirror --log-format json iim …` or
//! `RMIRROR_LOG_FORMAT`) writes the log lines as JSON objects. Both are read
//! at start-up. `pass_timeout SPAN` is a deadline for each pass (exit 30,
//! nothing deleted, the loop goes on), so a trickling server cannot hold a
//! pass below the I/O `timeout` forever.
//!
//! Scoreboard templates substitute `{{name}}` (HTML-escaped) for every name
//! of the text scoreboard (`pid`, `started`, `updated`, `loops`, `failures`,
//! `full_syncs`, `fetched`, `deleted`, `vanished`, `bytes_received`,
//! `last_pass`, `last_fetched`, `last_deleted`, `upstream_newest`,
//! `applied`, `lag_secs`, `last_error`, `status`, `local`, `remote`, …).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::monitor::{Item, Monitor};
use crate::engine::pull::PullSpec;
use crate::exit::ExitCode;
use crate::iim::config::{defaults, MAX_CONFIG_BYTES};
use crate::iim::{parse_args, parse_config, IimArgs, IimConfig, LogLevel};
use crate::plan::{self, ConnSettings, Level, PassError, PassKind, PassReport, StopHandle, TreeState, WatchConfig, WatchLogger};
use crate::recent::Epoch;
use crate::remote::RemoteSpec;

/// Local RECENT files (or the last caught-up pass) older than this: full sync.
const START_MAX_AGE: Duration = Duration::from_secs(86_400);
/// The daemon's log file is reopened this often.
const LOG_REOPEN: Duration = Duration::from_secs(300);
/// Shortest loop interval accepted (a `sleep_main_loop 0` would spin).
const MIN_LOOP: Duration = Duration::from_millis(200);
pub const PID_FILE: &str = "iim.pid";
pub const LOG_FILE: &str = "iim.log";
/// Largest template accepted.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

const DEFAULT_CONFIG: &str = "iim.conf";

const USAGE: &str = "usage: iim [-v] [-q] [-d] [-t] [-f] [-m] [-daemon [dir/]tag] [-e epoch|-30m] [-c conf] [--entry value ...]
  -v verbose, -q quiet, -d debug; -t test the config and exit; -f full sync on start-up (allows full syncs);
  -m compare the local tree with the remote and exit (0 identical, 1 different);
  -daemon run detached, pid file and iim.log in [dir/]tag/; -e start from this epoch (or this long ago);
  -c the config file (default ./iim.conf); --entry value sets any config entry (e.g. --loglevel debug).
  (rmirror's iim drop-in; see `rmirror iim` in the README)";

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_epoch() -> Epoch {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Epoch::parse(&format!("{}.{:06}", d.as_secs(), d.subsec_micros())).unwrap_or_else(|_| Epoch::from_secs(d.as_secs()))
}

fn stamp_of(secs: u64) -> String {
    let (d, t) = super::ymd_hms(secs as i64);
    format!("{d} {t}")
}

fn eprint_line(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
}

// ---------------------------------------------------------------------------
// configuration

/// A checked configuration with what it needs from the file system.
#[derive(Clone)]
struct Loaded {
    cfg: IimConfig,
    /// The config's files as read, for hot-config change detection.
    fingerprint: Fingerprint,
    /// The remote as a directory.
    source: RemoteSpec,
    principal: String,
    template: Option<String>,
}

type Fingerprint = Vec<(PathBuf, Option<Vec<u8>>)>;

fn fingerprint_now(paths: &[PathBuf]) -> Fingerprint {
    paths.iter().map(|p| (p.clone(), std::fs::read(p).ok())).collect()
}

fn read_limited(p: &Path) -> Result<String, String> {
    let md = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if md.len() > MAX_CONFIG_BYTES as u64 {
        return Err(format!("larger than {MAX_CONFIG_BYTES} bytes"));
    }
    std::fs::read_to_string(p).map_err(|e| e.to_string())
}

/// Where an included file is: absolute as is; relative to the current
/// directory when it exists there, else next to the including file.
fn resolve_include(name: &str, from: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    match Path::new(from).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && from != crate::iim::config::COMMAND_LINE => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Split a `remote` value into the directory and the principal file name.
fn parse_remote(remote: &str) -> Result<(RemoteSpec, String), String> {
    let mut spec = super::url::parse(remote).map_err(|e| format!("remote {remote:?}: {e}"))?;
    if spec.shell {
        return Err(format!("remote {remote:?}: needs an rsync daemon (rsync://host/module/ or host::module)"));
    }
    if spec.module.is_empty() {
        return Err(format!("remote {remote:?} names no module"));
    }
    let mut principal = "RECENT.recent".to_string();
    let i = spec.path.iter().rposition(|&b| b == b'/').map(|i| i + 1).unwrap_or(0);
    let last = String::from_utf8_lossy(&spec.path[i..]).into_owned();
    let rfile = crate::recent::split_rfilename(&last).filter(|r| crate::recent::Interval::parse(&r.interval).is_ok());
    if crate::recent::principal_root(&last).is_some() {
        principal = last;
        spec.path.truncate(i);
    } else if let Some(r) = rfile {
        // `…/RECENT-1h.json`: follow its set through the principal pointer
        principal = crate::recent::principal_name(&r.root);
        spec.path.truncate(i);
    } else if !spec.path.is_empty() && !spec.path.ends_with(b"/") {
        spec.path.push(b'/');
    }
    Ok((spec, principal))
}

fn load_config(a: &IimArgs) -> Result<Loaded, String> {
    let (name, text, mut paths) = match &a.config {
        Some(c) => {
            let text = read_limited(Path::new(c)).map_err(|e| format!("cannot read config {c}: {e}"))?;
            (c.clone(), text, vec![PathBuf::from(c)])
        }
        None if Path::new(DEFAULT_CONFIG).exists() => {
            let text = read_limited(Path::new(DEFAULT_CONFIG)).map_err(|e| format!("cannot read config {DEFAULT_CONFIG}: {e}"))?;
            (DEFAULT_CONFIG.to_string(), text, vec![PathBuf::from(DEFAULT_CONFIG)])
        }
        None => ("<no config file>".to_string(), String::new(), Vec::new()),
    };
    let mut resolver = |inc: &str, from: &str| -> Result<String, String> {
        let p = resolve_include(inc, from);
        paths.push(p.clone());
        read_limited(&p)
    };
    let cfg = parse_config(&text, &name, &a.overrides, &mut resolver).map_err(|e| e.to_string())?;
    if cfg.local.contains('\0') {
        return Err("local: contains NUL".into());
    }
    let (source, principal) = parse_remote(&cfg.remote)?;
    let template = match &cfg.scoreboard_template {
        Some(t) => {
            let md = std::fs::metadata(t).map_err(|e| format!("scoreboard_template {t}: {e}"))?;
            if md.len() > MAX_TEMPLATE_BYTES {
                return Err(format!("scoreboard_template {t}: larger than {MAX_TEMPLATE_BYTES} bytes"));
            }
            Some(std::fs::read_to_string(t).map_err(|e| format!("scoreboard_template {t}: {e}"))?)
        }
        None => None,
    };
    let fingerprint = fingerprint_now(&paths);
    Ok(Loaded { cfg, fingerprint, source, principal, template })
}

fn span_dur(s: crate::iim::Span) -> Duration {
    s.to_duration().unwrap_or_default()
}

fn password(cfg: &IimConfig) -> Option<Vec<u8>> {
    match &cfg.passwd {
        Some(p) => Some(p.clone().into_bytes()),
        None => std::env::var_os("RSYNC_PASSWORD").map(|p| {
            use std::os::unix::ffi::OsStringExt;
            p.into_vec()
        }),
    }
}

fn conn_settings(cfg: &IimConfig) -> ConnSettings {
    let t = Some(span_dur(cfg.timeout)).filter(|d| !d.is_zero());
    ConnSettings {
        port: None,
        protocol: None,
        user: cfg.user.clone(),
        password: password(cfg),
        timeout: t.map(|d| d.max(Duration::from_secs(1))),
        contimeout: t.map(|d| d.max(Duration::from_secs(1))),
    }
}

fn watch_config(l: &Loaded, a: &IimArgs, first: bool, since: Option<Epoch>) -> WatchConfig {
    let mut w = WatchConfig::new(l.source.clone(), PathBuf::from(&l.cfg.local));
    for t in &mut w.trees {
        t.principal = l.principal.clone();
    }
    w.conn = conn_settings(&l.cfg);
    w.interval = span_dur(l.cfg.sleep_main_loop).max(MIN_LOOP);
    w.since = since;
    w.full_every = l.cfg.full_sync_interval.map(span_dur).filter(|d| !d.is_zero());
    w.max_age = Some(START_MAX_AGE);
    w.force_full = first && a.full_sync;
    w.allow_full_syncs = a.allow_full_syncs(l.cfg.allow_full_syncs);
    w.pass_deadline = l.cfg.pass_timeout.map(|t| (span_dur(t), format!("pass_timeout {t}")));
    let back = span_dur(l.cfg.sleep_init_epoch);
    if !back.is_zero() {
        w.error_backoff = back;
    }
    w
}

fn apply_umask(cfg: &IimConfig) {
    if let Some(m) = cfg.iim_umask {
        // SAFETY: umask(2) only sets the process's file mode creation mask.
        unsafe {
            libc::umask((m & 0o777) as libc::mode_t);
        }
    }
}

// ---------------------------------------------------------------------------
// scoreboard

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SbKind {
    Text,
    Html,
    Json,
}

fn sb_kind(path: &str) -> SbKind {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".html") || lower.ends_with(".htm") || lower.ends_with(".php") {
        SbKind::Html
    } else if lower.ends_with(".json") {
        SbKind::Json
    } else {
        SbKind::Text
    }
}

#[derive(Default)]
struct Board {
    started: u64,
    updated: u64,
    loops: u64,
    failures: u64,
    full_syncs: u64,
    fetched: u64,
    deleted: u64,
    vanished: u64,
    bytes_received: u64,
    reloads: u64,
    last: Option<PassReport>,
    last_error: Option<(u64, String)>,
    status: String,
}

const BUILTIN_TEMPLATE: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>iim scoreboard: {{remote}}</title>
<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:left} th{background:#eee}</style></head>
<body><h1>iim scoreboard</h1>
<p>{{remote}} &rarr; {{local}} (rmirror {{version}}, pid {{pid}})</p>
<table>
<tr><th>status</th><td>{{status}}</td></tr>
<tr><th>started</th><td>{{started}}</td></tr>
<tr><th>updated</th><td>{{updated}}</td></tr>
<tr><th>loops</th><td>{{loops}}</td></tr>
<tr><th>failures</th><td>{{failures}}</td></tr>
<tr><th>full syncs</th><td>{{full_syncs}}</td></tr>
<tr><th>files fetched</th><td>{{fetched}}</td></tr>
<tr><th>files deleted</th><td>{{deleted}}</td></tr>
<tr><th>vanished upstream</th><td>{{vanished}}</td></tr>
<tr><th>bytes received</th><td>{{bytes_received}}</td></tr>
<tr><th>last pass</th><td>{{last_pass}}</td></tr>
<tr><th>newest upstream event</th><td>{{upstream_newest}}</td></tr>
<tr><th>applied up to</th><td>{{applied}}</td></tr>
<tr><th>lag (s)</th><td>{{lag_secs}}</td></tr>
<tr><th>last error</th><td>{{last_error}}</td></tr>
</table></body></html>
"#;

/// Substitute `{{name}}`; unknown names are left as they are.
fn render_template(t: &str, vars: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(t.len() + 256);
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) if j <= 64 => {
                let key = after[..j].trim();
                match vars.get(key) {
                    Some(v) => out.push_str(&crate::text::escape_html(v)),
                    None => out.push_str(&rest[i..i + 2 + j + 2]),
                }
                rest = &after[j + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn opt_span_str(s: Option<crate::iim::Span>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
}

fn loglevel_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Quiet => "quiet",
        LogLevel::Terse => "terse",
        LogLevel::Verbose => "verbose",
        LogLevel::Debug => "debug",
    }
}

/// The configuration as JSON (password hidden), and iim's defaults.
fn config_json(cfg: &IimConfig, level: LogLevel) -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let secs = |s: crate::iim::Span| s.as_secs_f64();
    let rot = cfg.rotate.map(|r| json!({"count": r.count, "interval": r.interval.unwrap_or(defaults::ROTATE_INTERVAL).as_secs_f64()}));
    let c = json!({
        "local": cfg.local,
        "remote": cfg.remote,
        "user": cfg.user,
        "passwd": cfg.passwd.as_ref().map(|_| "********"),
        "sleep_main_loop": secs(cfg.sleep_main_loop),
        "sleep_init_epoch": secs(cfg.sleep_init_epoch),
        "max_run_time": cfg.max_run_time.map(secs),
        "scoreboard_file": cfg.scoreboard_files,
        "scoreboard_template": cfg.scoreboard_template,
        "hot_config": cfg.hot_config,
        "loglevel": loglevel_name(cfg.loglevel),
        "effective_loglevel": loglevel_name(level),
        "rotate": rot,
        "full_sync_interval": cfg.full_sync_interval.map(secs),
        "allow_full_syncs": cfg.allow_full_syncs,
        "timeout": secs(cfg.timeout),
        "iim_umask": cfg.iim_umask.map(|m| format!("{m:03o}")),
        "metrics_listen": cfg.metrics_listen.map(|a| a.to_string()),
        "log_format": cfg.log_format,
        "pass_timeout": cfg.pass_timeout.map(secs),
        "files": cfg.files,
        "not_needed": cfg.not_needed.iter().map(|n| json!({"key": n.key, "value": n.value, "file": n.file, "line": n.line})).collect::<Vec<_>>(),
    });
    let d = json!({
        "sleep_main_loop": secs(defaults::SLEEP_MAIN_LOOP),
        "sleep_init_epoch": secs(defaults::SLEEP_INIT_EPOCH),
        "max_run_time": null,
        "scoreboard_file": [],
        "scoreboard_template": null,
        "hot_config": defaults::HOT_CONFIG,
        "loglevel": "terse",
        "rotate": {"count": defaults::ROTATE_COUNT, "interval": secs(defaults::ROTATE_INTERVAL)},
        "full_sync_interval": null,
        "allow_full_syncs": defaults::ALLOW_FULL_SYNCS,
        "timeout": secs(defaults::TIMEOUT),
        "iim_umask": null,
        "metrics_listen": null,
        "log_format": "text",
        "pass_timeout": null,
    });
    (c, d)
}

impl Board {
    fn vars(&self, cfg: &IimConfig) -> BTreeMap<&'static str, String> {
        let mut v = BTreeMap::new();
        let last = self.last.as_ref();
        v.insert("version", env!("CARGO_PKG_VERSION").to_string());
        v.insert("pid", std::process::id().to_string());
        v.insert("status", self.status.clone());
        v.insert("local", cfg.local.clone());
        v.insert("remote", cfg.remote.clone());
        v.insert("started", stamp_of(self.started));
        v.insert("started_epoch", self.started.to_string());
        v.insert("updated", stamp_of(self.updated));
        v.insert("updated_epoch", self.updated.to_string());
        v.insert("loops", self.loops.to_string());
        v.insert("failures", self.failures.to_string());
        v.insert("full_syncs", self.full_syncs.to_string());
        v.insert("fetched", self.fetched.to_string());
        v.insert("deleted", self.deleted.to_string());
        v.insert("vanished", self.vanished.to_string());
        v.insert("bytes_received", self.bytes_received.to_string());
        v.insert("config_reloads", self.reloads.to_string());
        v.insert("last_pass", last.map(|r| r.summary()).unwrap_or_else(|| "-".into()));
        v.insert(
            "last_kind",
            last.map(|r| if r.kind == PassKind::Full { "full" } else { "incremental" }.to_string()).unwrap_or_else(|| "-".into()),
        );
        v.insert("last_fetched", last.map(|r| r.fetched.to_string()).unwrap_or_else(|| "-".into()));
        v.insert("last_deleted", last.map(|r| r.deleted.to_string()).unwrap_or_else(|| "-".into()));
        v.insert(
            "upstream_newest",
            last.and_then(|r| r.upstream_newest.as_ref()).map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
        );
        v.insert("applied", last.and_then(|r| r.applied.as_ref()).map(|e| e.to_string()).unwrap_or_else(|| "-".into()));
        v.insert("lag_secs", last.map(|r| format!("{:.1}", r.lag_secs)).unwrap_or_else(|| "-".into()));
        v.insert(
            "last_error",
            self.last_error.as_ref().map(|(t, m)| format!("{} {m}", stamp_of(*t))).unwrap_or_else(|| "-".into()),
        );
        v.insert("sleep_main_loop", cfg.sleep_main_loop.to_string());
        v.insert("max_run_time", opt_span_str(cfg.max_run_time));
        v
    }

    fn text(&self, cfg: &IimConfig) -> String {
        let v = self.vars(cfg);
        let order = [
            "status", "pid", "version", "remote", "local", "started", "updated", "loops", "failures", "full_syncs",
            "fetched", "deleted", "vanished", "bytes_received", "config_reloads", "last_kind", "last_fetched",
            "last_deleted", "upstream_newest", "applied", "lag_secs", "last_pass", "last_error",
        ];
        let mut s = String::from("# iim scoreboard (rmirror)\n");
        for k in order {
            s.push_str(&format!("{k:<16} {}\n", v.get(k).map(|s| s.as_str()).unwrap_or("-")));
        }
        s
    }

    fn json(&self, cfg: &IimConfig, level: LogLevel) -> String {
        let (c, d) = config_json(cfg, level);
        let doc = serde_json::json!({
            "program": "iim (rmirror)",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "status": self.status,
            "started": self.started,
            "updated": self.updated,
            "loops": self.loops,
            "failures": self.failures,
            "full_syncs": self.full_syncs,
            "fetched": self.fetched,
            "deleted": self.deleted,
            "vanished": self.vanished,
            "bytes_received": self.bytes_received,
            "config_reloads": self.reloads,
            "last_pass": self.last,
            "last_error": self.last_error.as_ref().map(|(t, m)| serde_json::json!({"time": t, "message": m})),
            "config": c,
            "defaults": d,
        });
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
        s.push('\n');
        s
    }
}

// ---------------------------------------------------------------------------
// the running iim: logging, scoreboard, hot config, stop control

/// Why the current `plan::watch` was stopped.
enum Why {
    Reload(Box<Loaded>),
    Signal(&'static str),
    MaxRunTime,
}

struct LogFile {
    path: PathBuf,
    opened: Instant,
    rotated: Instant,
}

struct Iim {
    args: IimArgs,
    level: Mutex<LogLevel>,
    loaded: Mutex<Arc<Loaded>>,
    board: Mutex<Board>,
    /// Daemon mode: the log file (fds 1 and 2 point at it).
    log: Option<Mutex<LogFile>>,
    /// The fingerprint of a bad edit already reported.
    bad_edit: Mutex<Option<Fingerprint>>,
    stop: Mutex<Option<StopHandle>>,
    why: Mutex<Option<Why>>,
    started: Instant,
    errors: AtomicU64,
    /// `metrics_listen`: every pass and failure is recorded here.
    metrics: Option<Arc<crate::metrics::Registry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Iim {
    fn level(&self) -> LogLevel {
        *lock(&self.level)
    }

    fn loaded(&self) -> Arc<Loaded> {
        lock(&self.loaded).clone()
    }

    /// Log a line when iim's level allows it (a `tracing` event, see
    /// [`super::log`]: errors on stderr, the rest on stdout, as text or JSON).
    fn say(&self, min: LogLevel, tree: Option<&str>, msg: &str) {
        let level = match min {
            LogLevel::Quiet => tracing::Level::ERROR,
            LogLevel::Terse | LogLevel::Verbose => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
        };
        self.say_at(min, level, tree, msg);
    }

    fn say_at(&self, min: LogLevel, level: tracing::Level, tree: Option<&str>, msg: &str) {
        if self.level() < min {
            return;
        }
        self.maintain_log();
        super::log::line(level, tree, msg);
    }

    fn error(&self, tree: Option<&str>, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.say(LogLevel::Quiet, tree, msg);
    }

    /// Reopen (every [`LOG_REOPEN`]) and rotate the daemon's log file.
    fn maintain_log(&self) {
        let Some(lf) = &self.log else { return };
        let rotate = self.loaded().cfg.rotate;
        let mut rotated = None;
        {
            let mut g = lock(lf);
            if let Some(r) = rotate {
                let every = span_dur(r.interval.unwrap_or(defaults::ROTATE_INTERVAL)).max(Duration::from_millis(500));
                if g.rotated.elapsed() >= every {
                    rotate_files(&g.path, r.count);
                    g.rotated = Instant::now();
                    g.opened = Instant::now() - LOG_REOPEN;
                    rotated = Some(r.count);
                }
            }
            if g.opened.elapsed() >= LOG_REOPEN {
                let _ = std::io::stdout().flush();
                if let Err(e) = redirect_output(&g.path) {
                    eprint_line(&format!("iim: cannot reopen {}: {e}", g.path.display()));
                }
                g.opened = Instant::now();
            }
        }
        if let Some(n) = rotated {
            self.say(LogLevel::Terse, None, &format!("log rotated (keeping {n} old logs)"));
        }
    }

    fn write_scoreboards(&self) {
        let l = self.loaded();
        if l.cfg.scoreboard_files.is_empty() {
            return;
        }
        let level = self.level();
        let (text, html, json) = {
            let mut b = lock(&self.board);
            b.updated = now_secs();
            let need = |k| l.cfg.scoreboard_files.iter().any(|f| sb_kind(f) == k);
            let text = need(SbKind::Text).then(|| b.text(&l.cfg));
            let html = need(SbKind::Html)
                .then(|| render_template(l.template.as_deref().unwrap_or(BUILTIN_TEMPLATE), &b.vars(&l.cfg)));
            let json = need(SbKind::Json).then(|| b.json(&l.cfg, level));
            (text, html, json)
        };
        for f in &l.cfg.scoreboard_files {
            let data = match sb_kind(f) {
                SbKind::Text => text.as_deref(),
                SbKind::Html => html.as_deref(),
                SbKind::Json => json.as_deref(),
            }
            .unwrap_or("");
            if let Err(e) = crate::plan::state::write_atomic(Path::new(f), data.as_bytes()) {
                self.say(LogLevel::Terse, None, &format!("cannot write scoreboard {f}: {e}"));
            }
        }
    }

    /// Stop the running watch for `why` (a signal or the run time outranks a reload).
    fn request(&self, why: Why) {
        {
            let mut w = lock(&self.why);
            let keep = matches!(&*w, Some(Why::Signal(_)) | Some(Why::MaxRunTime)) && matches!(why, Why::Reload(_));
            if !keep {
                *w = Some(why);
            }
        }
        if let Some(h) = lock(&self.stop).as_ref() {
            h.stop();
        }
    }

    /// With `hot_config`: re-read the config files; a changed valid config
    /// stops the watch for a reload, a bad edit is logged once.
    fn check_hot_config(&self) {
        let cur = self.loaded();
        if !cur.cfg.hot_config {
            return;
        }
        let paths: Vec<PathBuf> = cur.fingerprint.iter().map(|(p, _)| p.clone()).collect();
        let now = fingerprint_now(&paths);
        if now == cur.fingerprint {
            return;
        }
        if lock(&self.bad_edit).as_ref() == Some(&now) {
            return;
        }
        match load_config(&self.args) {
            Ok(new) => {
                *lock(&self.bad_edit) = None;
                self.request(Why::Reload(Box::new(new)));
            }
            Err(e) => {
                // re-read: the bad edit's fingerprint (includes may differ, keep ours)
                *lock(&self.bad_edit) = Some(now);
                self.error(None, &format!("the config changed but is not valid; keeping the old config: {e}"));
            }
        }
    }

    fn install(&self, new: Loaded) {
        apply_umask(&new.cfg);
        let level = self.args.loglevel(new.cfg.loglevel);
        *lock(&self.level) = level;
        super::log::set_verbosity(verbosity(level));
        let old = self.loaded();
        for (key, changed) in [
            ("metrics_listen", old.cfg.metrics_listen != new.cfg.metrics_listen),
            ("log_format", old.cfg.log_format != new.cfg.log_format),
        ] {
            if changed {
                self.say(LogLevel::Terse, None, &format!("{key} changes take effect on restart"));
            }
        }
        *lock(&self.loaded) = Arc::new(new);
        lock(&self.board).reloads += 1;
    }

    fn report_not_needed(&self) {
        let l = self.loaded();
        for n in &l.cfg.not_needed {
            let at = if n.line == 0 { n.file.clone() } else { format!("{}:{}", n.file, n.line) };
            self.say(
                LogLevel::Terse,
                None,
                &format!("config entry {} ({at}) is not needed by rmirror (it speaks rsync itself and keeps its own temporary files); ignored", n.key),
            );
        }
    }
}

impl WatchLogger for Iim {
    fn log(&self, level: Level, tree: &str, msg: &str) {
        match level {
            Level::Error => {
                {
                    let mut b = lock(&self.board);
                    b.failures += 1;
                    b.last_error = Some((now_secs(), msg.to_string()));
                }
                self.error(Some(tree), msg);
                self.write_scoreboards();
                self.check_hot_config();
            }
            Level::Warn => self.say_at(LogLevel::Terse, tracing::Level::WARN, Some(tree), msg),
            Level::Info => self.say(LogLevel::Verbose, Some(tree), msg),
            Level::Debug => self.say(LogLevel::Debug, Some(tree), msg),
        }
    }

    fn failed(&self, tree: &str, e: &PassError) {
        if let Some(m) = &self.metrics {
            super::watch::record_failure(m, tree, e);
        }
        self.log(Level::Error, tree, &e.to_string());
    }

    fn pass(&self, r: &PassReport) {
        if let Some(m) = &self.metrics {
            super::watch::record_pass(m, r);
        }
        {
            let mut b = lock(&self.board);
            b.loops += 1;
            if r.kind == PassKind::Full {
                b.full_syncs += 1;
            }
            b.fetched += r.fetched;
            b.deleted += r.deleted;
            b.vanished += r.vanished as u64;
            b.bytes_received += r.bytes_received;
            b.last = Some(r.clone());
        }
        let relevant = r.kind == PassKind::Full || r.fetched > 0 || r.deleted > 0 || r.vanished > 0 || !r.complete;
        self.say(if relevant { LogLevel::Terse } else { LogLevel::Verbose }, Some(&r.tree), &r.summary());
        self.write_scoreboards();
        self.check_hot_config();
    }
}

fn rotate_files(path: &Path, count: u32) {
    let name = |i: u32| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    };
    let _ = std::fs::remove_file(name(count));
    for i in (1..count).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(path, name(1));
}

/// Point stdout and stderr at `path` (appending).
fn redirect_output(path: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors; `f` stays open for the call.
        if unsafe { libc::dup2(f.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Stops the metrics server when the loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------
// start-up rule

fn local_newest(dest: &Path, principal: &str) -> Option<Epoch> {
    let p = dest.join(principal);
    let hint = std::fs::read_link(&p)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| principal.to_string());
    let md = std::fs::metadata(&p).ok()?;
    if !md.is_file() || md.len() > 256 << 20 {
        return None;
    }
    let bytes = std::fs::read(&p).ok()?;
    crate::recent::parse_recent(&bytes, &hint)
        .or_else(|_| crate::recent::parse_recent(&bytes, principal))
        .ok()?
        .max_epoch()
        .cloned()
}

/// With no `-e`: where to start, following iim's start-up rule (module docs).
fn startup_since(iim: &Iim, w: &WatchConfig) -> Option<Epoch> {
    let tree = &w.trees[0];
    if let Ok(Some(st)) = TreeState::load(&w.state_path(tree)) {
        if st.applied.is_some() {
            return None; // the planner checks the local RECENT files and the age
        }
    }
    match local_newest(&w.dest, &tree.principal) {
        None => {
            iim.say(LogLevel::Terse, None, "no local RECENT files: a full sync is needed first");
            None
        }
        Some(e) => {
            let age = now_secs().saturating_sub(e.secs());
            if age <= START_MAX_AGE.as_secs() {
                iim.say(
                    LogLevel::Terse,
                    None,
                    &format!("the local RECENT files are current (newest event {e}, {age}s ago): following the index from there"),
                );
                Some(e)
            } else {
                iim.say(
                    LogLevel::Terse,
                    None,
                    &format!("the local RECENT files are older than a day (newest event {e}): a full sync is needed first"),
                );
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// -m: compare

struct Counter {
    items: AtomicU64,
    deletes: AtomicU64,
    show: bool,
}

impl Monitor for Counter {
    fn item(&self, item: &Item) {
        if item.code == "*deleting" {
            self.deletes.fetch_add(1, Ordering::Relaxed);
        }
        self.items.fetch_add(1, Ordering::Relaxed);
        if self.show {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", item.line());
        }
    }
    fn local_error(&self, text: &str) {
        super::log::line(tracing::Level::ERROR, None, text);
    }
}

async fn compare(iim: &Iim) -> i32 {
    let l = iim.loaded();
    let mut ps = PullSpec::new(l.source.clone(), PathBuf::from(&l.cfg.local));
    let c = conn_settings(&l.cfg);
    ps.conn = c;
    ps.dry_run = true;
    ps.delete = true;
    let mon = Arc::new(Counter { items: AtomicU64::new(0), deletes: AtomicU64::new(0), show: iim.level() >= LogLevel::Verbose });
    match crate::engine::pull::pull(&ps, mon.clone()).await {
        Err(e) => {
            iim.error(None, &format!("compare failed: {e}"));
            e.exit_code().code()
        }
        Ok(rep) => {
            let n = mon.items.load(Ordering::Relaxed);
            let d = mon.deletes.load(Ordering::Relaxed);
            if n == 0 {
                iim.say(LogLevel::Terse, None, &format!("compare: {} is identical to {}", l.cfg.local, l.cfg.remote));
            } else {
                iim.say(
                    LogLevel::Terse,
                    None,
                    &format!(
                        "compare: {} differs from {}: {n} differences ({} to fetch or update, {d} to delete)",
                        l.cfg.local,
                        l.cfg.remote,
                        n - d
                    ),
                );
            }
            if rep.exit_code() != ExitCode::Ok {
                rep.exit_code().code()
            } else if n > 0 {
                1
            } else {
                0
            }
        }
    }
}

// ---------------------------------------------------------------------------
// daemon mode

struct Daemon {
    pid_path: PathBuf,
    log_path: PathBuf,
    /// Holds the lock for the daemon's lifetime.
    _pid_file: std::fs::File,
}

enum Detach {
    /// In the daemon.
    Child(Daemon),
    /// In the starting process: exit with this code.
    Parent(i32),
}

fn daemonize(spec: &crate::iim::DaemonSpec, quiet: bool) -> Detach {
    let dir = match &spec.dir {
        Some(d) => Path::new(d).join(&spec.tag),
        None => PathBuf::from(&spec.tag),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprint_line(&format!("iim: cannot create the daemon directory {}: {e}", dir.display()));
        return Detach::Parent(ExitCode::FileIo.code());
    }
    let pid_path = dir.join(PID_FILE);
    let log_path = dir.join(LOG_FILE);
    let mut pid_file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&pid_path) {
        Ok(f) => f,
        Err(e) => {
            eprint_line(&format!("iim: cannot open {}: {e}", pid_path.display()));
            return Detach::Parent(ExitCode::FileIo.code());
        }
    };
    if rustix::fs::flock(&pid_file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        if !quiet {
            let pid = std::fs::read_to_string(&pid_path).unwrap_or_default();
            println!(
                "iim: a daemon for {} is already running (pid {}); not starting another",
                dir.display(),
                pid.trim()
            );
        }
        return Detach::Parent(0);
    }
    if let Err(e) = std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
        eprint_line(&format!("iim: cannot open the log file {}: {e}", log_path.display()));
        return Detach::Parent(ExitCode::FileIo.code());
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: no other threads exist yet (the runtime starts after this).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprint_line(&format!("iim: fork: {}", std::io::Error::last_os_error()));
        return Detach::Parent(ExitCode::Unsupported.code());
    }
    if pid > 0 {
        let _ = pid_file.set_len(0);
        let _ = std::io::Seek::seek(&mut pid_file, std::io::SeekFrom::Start(0));
        let _ = writeln!(pid_file, "{pid}");
        let _ = pid_file.sync_all();
        if !quiet {
            println!("iim: daemon started (pid {pid}); logging to {}", log_path.display());
        }
        return Detach::Parent(0);
    }
    // the child: a new session, no terminal, output to the log
    let _ = rustix::process::setsid();
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto stdin.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
        }
    }
    let _ = redirect_output(&log_path);
    Detach::Child(Daemon { pid_path, log_path, _pid_file: pid_file })
}

// ---------------------------------------------------------------------------
// entry point

/// iim's level as the log filter's verbosity.
fn verbosity(l: LogLevel) -> super::log::Verbosity {
    match l {
        LogLevel::Quiet => super::log::Verbosity::Quiet,
        LogLevel::Terse => super::log::Verbosity::Normal,
        LogLevel::Verbose => super::log::Verbosity::Verbose,
        LogLevel::Debug => super::log::Verbosity::Debug,
    }
}

/// `iim ARGS…` (without the program name); the process exit status.
pub fn iim_main(args: Vec<OsString>) -> i32 {
    iim_main_with(args, None)
}

/// As [`iim_main`], with rmirror's `--log-format` when given (it beats the
/// config's `log_format`, which beats `RMIRROR_LOG_FORMAT`).
pub fn iim_main_with(args: Vec<OsString>, log_format: Option<super::log::LogFormat>) -> i32 {
    let mut words = Vec::with_capacity(args.len());
    for a in args {
        match a.into_string() {
            Ok(s) => words.push(s),
            Err(a) => {
                eprint_line(&format!("iim: argument {a:?} is not UTF-8"));
                return ExitCode::Syntax.code();
            }
        }
    }
    if words.iter().any(|w| w == "-h" || w == "-help" || w == "--help") {
        println!("{USAGE}");
        return 0;
    }
    let a = match parse_args(&words) {
        Ok(a) => a,
        Err(e) => {
            eprint_line(&format!("iim: {e}"));
            return ExitCode::Syntax.code();
        }
    };
    let loaded = match load_config(&a) {
        Ok(l) => l,
        Err(e) => {
            eprint_line(&format!("iim: {e}"));
            return ExitCode::Syntax.code();
        }
    };
    let level = a.loglevel(loaded.cfg.loglevel);
    if a.test_config {
        if level > LogLevel::Quiet {
            let name = a.config.clone().unwrap_or_else(|| loaded.cfg.files.first().cloned().unwrap_or_default());
            for n in &loaded.cfg.not_needed {
                println!("iim: note: {} ({}:{}) is not needed by rmirror; ignored", n.key, n.file, n.line);
            }
            println!("iim: config {name} OK ({} → {})", loaded.cfg.remote, loaded.cfg.local);
        }
        return 0;
    }
    let quiet = level == LogLevel::Quiet;
    // resolve -e now (before a fork), so "-30m" is relative to the start
    let since = a.epoch.as_ref().map(|e| e.resolve(&now_epoch()));
    if let Some(None) = since {
        eprint_line("iim: -e: the epoch would be before 1970");
        return ExitCode::Syntax.code();
    }
    let since = since.flatten();
    apply_umask(&loaded.cfg);
    let daemon = match (&a.daemon, a.m) {
        (Some(spec), false) => match daemonize(spec, quiet) {
            Detach::Parent(code) => return code,
            Detach::Child(d) => Some(d),
        },
        _ => None,
    };
    let format = match log_format.or_else(|| loaded.cfg.log_format.as_deref().and_then(super::log::LogFormat::parse)) {
        Some(f) => f,
        None => match super::log::LogFormat::resolve(None) {
            Ok(f) => f,
            Err(e) => {
                eprint_line(&format!("iim: {e}"));
                return ExitCode::Syntax.code();
            }
        },
    };
    super::log::init(format, super::log::Style::Iim, verbosity(level));
    let rt = match super::runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprint_line(&format!("iim: cannot start the runtime: {e}"));
            return ExitCode::Unsupported.code();
        }
    };
    let log = daemon.as_ref().map(|d| {
        // rotation continues across restarts: the last rotation is when iim.log.1 was last written
        let rotated = std::fs::metadata(format!("{}.1", d.log_path.display()))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .and_then(|age| Instant::now().checked_sub(age))
            .unwrap_or_else(Instant::now);
        Mutex::new(LogFile { path: d.log_path.clone(), opened: Instant::now(), rotated })
    });
    let metrics_addr = if a.m { None } else { loaded.cfg.metrics_listen };
    let iim = Arc::new(Iim {
        level: Mutex::new(level),
        loaded: Mutex::new(Arc::new(loaded)),
        board: Mutex::new(Board { started: now_secs(), status: "starting".into(), ..Default::default() }),
        log,
        bad_edit: Mutex::new(None),
        stop: Mutex::new(None),
        why: Mutex::new(None),
        started: Instant::now(),
        errors: AtomicU64::new(0),
        metrics: metrics_addr.map(|_| crate::metrics::Registry::new()),
        args: a,
    });
    let code = rt.block_on(async {
        if iim.args.m {
            return compare(&iim).await;
        }
        run_loop(iim.clone(), since).await
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(d) = daemon {
        // only ours: the lock is held, so nobody else wrote it
        let _ = std::fs::remove_file(&d.pid_path);
    }
    code
}

async fn run_loop(iim: Arc<Iim>, since_arg: Option<Epoch>) -> i32 {
    let l = iim.loaded();
    iim.say(
        LogLevel::Terse,
        None,
        &format!(
            "iim (rmirror {}) starting: {} → {}{}",
            env!("CARGO_PKG_VERSION"),
            l.cfg.remote,
            l.cfg.local,
            if iim.log.is_some() { " (daemon)" } else { "" }
        ),
    );
    iim.report_not_needed();
    // metrics_listen: served for the life of the process
    let _metrics_task = match (&iim.metrics, l.cfg.metrics_listen) {
        (Some(reg), Some(addr)) => {
            for t in &watch_config(&l, &iim.args, false, None).trees {
                reg.register(&t.label());
            }
            match crate::metrics::listen(addr, reg.clone()).await {
                Ok((bound, task)) => {
                    iim.say(LogLevel::Terse, None, &format!("serving metrics on http://{bound}/metrics"));
                    Some(AbortOnDrop(task))
                }
                Err(e) => {
                    iim.error(None, &format!("cannot serve metrics on {addr}: {e}; exiting"));
                    return ExitCode::SocketIo.code();
                }
            }
        }
        _ => None,
    };
    // signals
    {
        let iim = iim.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => { iim.request(Why::Signal("SIGTERM")); }
                    _ = int.recv() => { iim.request(Why::Signal("SIGINT")); }
                    _ = hup.recv() => {
                        // SIGHUP: reopen the log now and look at the config
                        if let Some(lf) = &iim.log {
                            lock(lf).opened = Instant::now() - LOG_REOPEN;
                        }
                        iim.maintain_log();
                        iim.check_hot_config();
                    }
                }
            }
        });
    }
    // log maintenance and max_run_time
    {
        let iim = iim.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                iim.maintain_log();
                if let Some(max) = iim.loaded().cfg.max_run_time {
                    if iim.started.elapsed() >= span_dur(max) {
                        iim.request(Why::MaxRunTime);
                    }
                }
            }
        });
    }
    let mut first = true;
    let mut since = since_arg.clone();
    loop {
        let l = iim.loaded();
        let mut w = watch_config(&l, &iim.args, first, since.clone());
        if first && since_arg.is_none() && !iim.args.full_sync {
            since = startup_since(&iim, &w);
            w.since = since.clone();
        }
        let (h, stop) = plan::stop_pair();
        *lock(&iim.stop) = Some(h);
        let pending = lock(&iim.why).take();
        let r = match pending {
            None => {
                lock(&iim.board).status = "running".into();
                let r = plan::watch(&w, iim.clone(), stop).await;
                first = false;
                Some(r)
            }
            Some(why) => {
                *lock(&iim.why) = Some(why);
                None
            }
        };
        *lock(&iim.stop) = None;
        let why = lock(&iim.why).take();
        match why {
            Some(Why::Signal(s)) => {
                crate::engine::request_shutdown();
                iim.say(LogLevel::Terse, None, &format!("received {s}; stopping"));
                lock(&iim.board).status = format!("stopped ({s})");
                iim.write_scoreboards();
                return 0;
            }
            Some(Why::MaxRunTime) => {
                let max = iim.loaded().cfg.max_run_time.map(|s| s.to_string()).unwrap_or_default();
                iim.say(LogLevel::Terse, None, &format!("max_run_time ({max}s) reached; exiting"));
                lock(&iim.board).status = "stopped (max_run_time)".into();
                iim.write_scoreboards();
                return 0;
            }
            Some(Why::Reload(new)) => {
                let files = new.cfg.files.join(", ");
                iim.install(*new);
                iim.say(LogLevel::Terse, None, &format!("config reloaded ({files})"));
                iim.report_not_needed();
                continue;
            }
            None => {}
        }
        match r {
            Some(Err(PassError::FullSyncNotAllowed(reason))) => {
                iim.error(
                    None,
                    &format!(
                        "a full sync is needed ({reason}) but full syncs are not allowed (allow_full_syncs is off; run once with -f to allow one); exiting"
                    ),
                );
                lock(&iim.board).status = "stopped (full sync needed)".into();
                iim.write_scoreboards();
                return ExitCode::Syntax.code();
            }
            Some(Err(e)) => {
                iim.error(None, &format!("{e}; exiting"));
                lock(&iim.board).status = "stopped (error)".into();
                iim.write_scoreboards();
                return e.exit_code().code();
            }
            Some(Ok(_)) | None => {
                lock(&iim.board).status = "stopped".into();
                iim.write_scoreboards();
                return 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes() {
        let (s, p) = parse_remote("cpan-rsync.perl.org::CPAN").unwrap();
        assert_eq!((s.host.as_str(), s.module.as_str(), s.path.as_slice(), p.as_str()), ("cpan-rsync.perl.org", "CPAN", &b""[..], "RECENT.recent"));
        let (s, p) = parse_remote("rsync://h:8732/CPAN/authors/RECENT.recent").unwrap();
        assert_eq!((s.port, s.path.as_slice(), p.as_str()), (Some(8732), &b"authors/"[..], "RECENT.recent"));
        let (s, p) = parse_remote("rsync://h/CPAN/authors").unwrap();
        assert_eq!((s.path.as_slice(), p.as_str()), (&b"authors/"[..], "RECENT.recent"));
        let (s, p) = parse_remote("h::m/sub/RECENT-1h.json").unwrap();
        assert_eq!((s.path.as_slice(), p.as_str()), (&b"sub/"[..], "RECENT.recent"));
        let (s, _) = parse_remote("h::m/sub/Dist-1.0.tar.gz").unwrap();
        assert_eq!(s.path.as_slice(), &b"sub/Dist-1.0.tar.gz/"[..]);
        assert!(parse_remote("rsync://h/").is_err());
        assert!(parse_remote("host:/path").is_err());
    }

    #[test]
    fn templates_and_kinds() {
        let mut v = BTreeMap::new();
        v.insert("loops", "3".to_string());
        v.insert("remote", "<a&b>".to_string());
        assert_eq!(render_template("{{loops}} {{ remote }} {{nope}} {{", &v), "3 &lt;a&amp;b&gt; {{nope}} {{");
        assert_eq!(sb_kind("/x/sb.HTML"), SbKind::Html);
        assert_eq!(sb_kind("sb.php"), SbKind::Html);
        assert_eq!(sb_kind("sb.json"), SbKind::Json);
        assert_eq!(sb_kind("sb.txt"), SbKind::Text);
        assert_eq!(sb_kind("scoreboard"), SbKind::Text);
    }

    #[test]
    fn rotation_shifts() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("iim.log");
        for round in 0..4 {
            std::fs::write(&log, format!("round {round}\n")).unwrap();
            rotate_files(&log, 2);
        }
        assert!(!log.exists());
        assert_eq!(std::fs::read_to_string(t.path().join("iim.log.1")).unwrap(), "round 3\n");
        assert_eq!(std::fs::read_to_string(t.path().join("iim.log.2")).unwrap(), "round 2\n");
        assert!(!t.path().join("iim.log.3").exists());
    }
}
