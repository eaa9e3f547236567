//! Logs: every line rmirror writes to stderr about what it is doing is a
//! `tracing` event, rendered by the one layer here as text (each command's
//! long-standing line layout) or as JSON lines (`--log-format json`).
//!
//! Two kinds of events:
//!
//! * **operator lines**, target [`TARGET`] (`"rmirror"` exactly): what the
//!   commands report (a watch pass failing, `run` starting a job, a local
//!   error during a sync, iim's messages). Emitted with [`line`] or
//!   `tracing::…!(target: "rmirror", …)`; context fields `tree` (watch,
//!   iim) and `job` (run) go into the text line's brackets.
//! * **diagnostics** from the library (`rmirror::engine`, `rmirror::plan`,
//!   …): phase timings, decisions.
//!
//! Which are shown follows the command's verbosity ([`Verbosity`]):
//!
//! | verbosity | operator lines | diagnostics |
//! | --- | --- | --- |
//! | `-q` (iim `quiet`) | errors | errors |
//! | default (iim `terse`) | info and up (as before: watch/run progress lines, warnings, errors) | warnings and up |
//! | `-v` (iim `verbose`) | info and up | info and up |
//! | `-vv`, `--debug` (iim `-d`, `debug`) | debug and up | debug and up |
//!
//! `RMIRROR_LOG` (an `EnvFilter` directive such as `debug` or
//! `rmirror::engine=trace`) replaces the diagnostics column; the format is
//! chosen by `--log-format` or `RMIRROR_LOG_FORMAT` (`text`, `json`).
//!
//! A JSON line is one object: `{"timestamp": "2026-11-22T07:03:39.123Z",
//! "level": "info", "target": "rmirror", "message": "…", "fields": {…}}`
//! (schema in docs/json.md).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::EnvFilter;

/// The target of operator lines.
pub const TARGET: &str = "rmirror";

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    // (no doc comments: they would make --help list the values at length)
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// The flag if given, else `RMIRROR_LOG_FORMAT`, else text.
    pub fn resolve(flag: Option<LogFormat>) -> Result<LogFormat, String> {
        if let Some(f) = flag {
            return Ok(f);
        }
        match std::env::var("RMIRROR_LOG_FORMAT") {
            Ok(v) if !v.is_empty() => {
                LogFormat::parse(&v).ok_or_else(|| format!("RMIRROR_LOG_FORMAT={v:?}: expected text or json"))
            }
            _ => Ok(LogFormat::Text),
        }
    }
}

/// How a command was asked to talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    Debug,
}

impl Verbosity {
    /// From `-q`, the number of `-v` and `--debug`; `-q` wins over `-v`, `--debug` over both.
    pub fn from_flags(quiet: bool, verbose: u8, debug: bool) -> Verbosity {
        if debug || (verbose >= 2 && !quiet) {
            Verbosity::Debug
        } else if quiet {
            Verbosity::Quiet
        } else if verbose == 1 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }

    /// (operator lines, diagnostics) shown at this verbosity.
    pub fn levels(self) -> (LevelFilter, LevelFilter) {
        match self {
            Verbosity::Quiet => (LevelFilter::ERROR, LevelFilter::ERROR),
            Verbosity::Normal => (LevelFilter::INFO, LevelFilter::WARN),
            Verbosity::Verbose => (LevelFilter::INFO, LevelFilter::INFO),
            Verbosity::Debug => (LevelFilter::DEBUG, LevelFilter::DEBUG),
        }
    }
}

/// Each command's text layout (unchanged from before logs went through `tracing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `sync`, `compare`, `ls`, …: `rmirror: MESSAGE` for errors and warnings,
    /// server messages as they came.
    Plain,
    /// `watch`: `YYYY/MM/DD HH:MM:SS rmirror watch [TREE] ERROR MESSAGE`.
    Watch,
    /// `run`: `YYYY-MM-DDTHH:MM:SSZ rmirror [JOB]: MESSAGE`.
    Run,
    /// `iim`: `YYYY/MM/DD HH:MM:SS iim[PID] [TREE] ERROR MESSAGE`; only errors
    /// go to stderr, the rest to stdout (iim's own convention; in daemon mode
    /// both are the log file).
    Iim,
}

fn encode(l: LevelFilter) -> u8 {
    match l.into_level() {
        None => 0,
        Some(Level::ERROR) => 1,
        Some(Level::WARN) => 2,
        Some(Level::INFO) => 3,
        Some(Level::DEBUG) => 4,
        Some(Level::TRACE) => 5,
    }
}

fn decode(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

struct Shared {
    ops: AtomicU8,
    lib: AtomicU8,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// The layer: filters by the levels above (or `RMIRROR_LOG`) and renders.
pub struct LogLayer {
    format: LogFormat,
    style: Style,
    shared: Arc<Shared>,
    env: Option<EnvFilter>,
}

impl LogLayer {
    fn allows<S>(&self, meta: &Metadata<'_>, cx: Context<'_, S>) -> bool
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        if meta.target() == TARGET {
            return *meta.level() <= decode(self.shared.ops.load(Ordering::Relaxed));
        }
        match &self.env {
            Some(env) => env.enabled(meta, cx),
            None => *meta.level() <= decode(self.shared.lib.load(Ordering::Relaxed)),
        }
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // levels change at run time (iim's hot config): ask per event
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        self.allows(meta, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // lets disabled levels cost nothing; set_verbosity rebuilds the cache
        match &self.env {
            Some(_) => None,
            None => Some(decode(self.shared.ops.load(Ordering::Relaxed)).max(decode(self.shared.lib.load(Ordering::Relaxed)))),
        }
    }

    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let mut v = Fields::default();
        event.record(&mut v);
        let meta = event.metadata();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let line = match self.format {
            LogFormat::Json => json_line(now, meta, &v),
            LogFormat::Text => text_line(now.as_secs() as i64, self.style, meta, &v),
        };
        let to_stdout = self.style == Style::Iim && *meta.level() != Level::ERROR && meta.target() == TARGET;
        if to_stdout {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        } else {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{line}");
        }
    }
}

/// An event's message and other fields, in order.
#[derive(Default)]
pub struct Fields {
    pub message: String,
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

impl Fields {
    fn get_str(&self, k: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| *n == k).and_then(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        self.fields.iter().any(|(n, v)| *n == k && v.as_bool() == Some(true))
    }
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.message = v.to_string();
        } else {
            self.fields.push((f.name(), serde_json::Value::from(v)));
        }
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.fields.push((f.name(), serde_json::Value::from(v)));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.fields.push((f.name(), serde_json::Value::from(v)));
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.fields.push((f.name(), serde_json::Value::from(v)));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.fields.push((f.name(), serde_json::Value::from(v)));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            self.message = format!("{v:?}");
        } else {
            self.fields.push((f.name(), serde_json::Value::from(format!("{v:?}"))));
        }
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn iso(now: std::time::Duration, millis: bool) -> String {
    let mut s = crate::text::Utc::at(now.as_secs() as i64).iso();
    if millis {
        let _ = write!(s, ".{:03}", now.subsec_millis());
    }
    s.push('Z');
    s
}

/// One JSON log line (no newline).
pub fn json_line(now: std::time::Duration, meta: &Metadata<'_>, v: &Fields) -> String {
    let mut fields = serde_json::Map::new();
    for (k, val) in &v.fields {
        fields.insert((*k).to_string(), val.clone());
    }
    let doc = serde_json::json!({
        "timestamp": iso(now, true),
        "level": level_name(meta.level()),
        "target": meta.target(),
        "message": v.message,
        "fields": fields,
    });
    doc.to_string()
}

/// Fields not used for the layout, as ` key=value`.
fn extra(v: &Fields, used: &[&str]) -> String {
    let mut s = String::new();
    for (k, val) in &v.fields {
        if used.contains(k) {
            continue;
        }
        match val {
            serde_json::Value::String(t) => {
                let _ = write!(s, " {k}={t}");
            }
            other => {
                let _ = write!(s, " {k}={other}");
            }
        }
    }
    s
}

fn slash_stamp(secs: i64) -> String {
    let (d, t) = super::ymd_hms(secs);
    format!("{d} {t}")
}

/// One text log line (no newline).
pub fn text_line(secs: i64, style: Style, meta: &Metadata<'_>, v: &Fields) -> String {
    let level = *meta.level();
    if meta.target() != TARGET {
        // a library diagnostic
        let now = std::time::Duration::from_secs(secs.max(0) as u64);
        let lvl = level_name(&level).to_ascii_uppercase();
        return format!("{} {lvl:>5} {}: {}{}", iso(now, false), meta.target(), v.message, extra(v, &[]));
    }
    let used = ["tree", "job", "raw", "origin", "exit"];
    let rest = extra(v, &used);
    let msg = &v.message;
    if v.fields.iter().any(|(k, _)| *k == "exit") {
        // why the command stopped: the same in every command
        return format!("rmirror: {msg}{rest}");
    }
    match style {
        Style::Plain => {
            if v.flag("raw") || level > Level::WARN {
                format!("{msg}{rest}")
            } else {
                format!("rmirror: {msg}{rest}")
            }
        }
        Style::Watch => {
            let lvl = match level {
                Level::ERROR => "ERROR ",
                Level::WARN => "warning: ",
                _ => "",
            };
            match v.get_str("tree") {
                Some(t) => format!("{} rmirror watch [{t}] {lvl}{msg}{rest}", slash_stamp(secs)),
                None => format!("{} rmirror watch: {lvl}{msg}{rest}", slash_stamp(secs)),
            }
        }
        Style::Run => {
            let now = std::time::Duration::from_secs(secs.max(0) as u64);
            let j = v.get_str("job").filter(|j| !j.is_empty()).map(|j| format!(" [{j}]")).unwrap_or_default();
            format!("{} rmirror{j}: {msg}{rest}", iso(now, false))
        }
        Style::Iim => {
            let t = v.get_str("tree").map(|t| format!(" [{t}]")).unwrap_or_default();
            let lvl = match level {
                Level::ERROR => "ERROR ",
                Level::WARN => "warning: ",
                _ => "",
            };
            format!("{} iim[{}]{t} {lvl}{msg}{rest}", slash_stamp(secs), std::process::id())
        }
    }
}

/// Install the global subscriber (once per process; later calls only set
/// the levels). `RMIRROR_LOG` replaces the diagnostics filter.
pub fn init(format: LogFormat, style: Style, v: Verbosity) {
    let (ops, lib) = v.levels();
    if let Some(sh) = SHARED.get() {
        sh.ops.store(encode(ops), Ordering::Relaxed);
        sh.lib.store(encode(lib), Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
        return;
    }
    let shared = Arc::new(Shared { ops: AtomicU8::new(encode(ops)), lib: AtomicU8::new(encode(lib)) });
    let env = std::env::var("RMIRROR_LOG").ok().filter(|s| !s.is_empty()).map(EnvFilter::new);
    let layer = LogLayer { format, style, shared: shared.clone(), env };
    use tracing_subscriber::layer::SubscriberExt;
    let sub = tracing_subscriber::registry().with(layer);
    if tracing::subscriber::set_global_default(sub).is_ok() {
        let _ = SHARED.set(shared);
    }
}

/// Change the levels (iim's `loglevel` after a hot config reload).
pub fn set_verbosity(v: Verbosity) {
    if let Some(sh) = SHARED.get() {
        let (ops, lib) = v.levels();
        sh.ops.store(encode(ops), Ordering::Relaxed);
        sh.lib.store(encode(lib), Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Emit an operator line at `level`, with an optional `tree` context.
pub fn line(level: Level, tree: Option<&str>, msg: &str) {
    match (level, tree) {
        (Level::ERROR, Some(t)) => tracing::error!(target: "rmirror", tree = t, "{msg}"),
        (Level::ERROR, None) => tracing::error!(target: "rmirror", "{msg}"),
        (Level::WARN, Some(t)) => tracing::warn!(target: "rmirror", tree = t, "{msg}"),
        (Level::WARN, None) => tracing::warn!(target: "rmirror", "{msg}"),
        (Level::INFO, Some(t)) => tracing::info!(target: "rmirror", tree = t, "{msg}"),
        (Level::INFO, None) => tracing::info!(target: "rmirror", "{msg}"),
        (_, Some(t)) => tracing::debug!(target: "rmirror", tree = t, "{msg}"),
        (_, None) => tracing::debug!(target: "rmirror", "{msg}"),
    }
}

/// Why the command stopped, with its exit code: `rmirror: MESSAGE` in text.
pub fn fatal(msg: &str, exit: i32) {
    tracing::error!(target: "rmirror", exit, "{msg}");
}

/// A message from the server, shown as it came (escaped by the caller).
pub fn server_line(level: Level, msg: &str) {
    match level {
        Level::ERROR => tracing::error!(target: "rmirror", raw = true, origin = "server", "{msg}"),
        Level::WARN => tracing::warn!(target: "rmirror", raw = true, origin = "server", "{msg}"),
        _ => tracing::info!(target: "rmirror", raw = true, origin = "server", "{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_from_flags() {
        assert_eq!(Verbosity::from_flags(false, 0, false), Verbosity::Normal);
        assert_eq!(Verbosity::from_flags(true, 0, false), Verbosity::Quiet);
        assert_eq!(Verbosity::from_flags(true, 1, false), Verbosity::Quiet, "-q beats -v");
        assert_eq!(Verbosity::from_flags(false, 1, false), Verbosity::Verbose);
        assert_eq!(Verbosity::from_flags(false, 2, false), Verbosity::Debug);
        assert_eq!(Verbosity::from_flags(true, 0, true), Verbosity::Debug, "--debug beats -q");
        assert_eq!(Verbosity::Normal.levels(), (LevelFilter::INFO, LevelFilter::WARN));
        assert_eq!(Verbosity::Quiet.levels(), (LevelFilter::ERROR, LevelFilter::ERROR));
    }

    #[test]
    fn levels_round_trip() {
        for l in [LevelFilter::OFF, LevelFilter::ERROR, LevelFilter::WARN, LevelFilter::INFO, LevelFilter::DEBUG, LevelFilter::TRACE] {
            assert_eq!(decode(encode(l)), l);
        }
    }

    #[test]
    fn formats() {
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("xml"), None);
        assert_eq!(iso(std::time::Duration::from_millis(1_700_000_000_123), true), "2023-11-14T22:13:20.123Z");
    }
}
