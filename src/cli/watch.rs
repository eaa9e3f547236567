//! `rmirror watch SRC DEST`: the instant-mirroring loop of [`crate::plan`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{conn_settings, CliError, ConnArgs};
use crate::engine::monitor::Monitor;
use crate::exit::ExitCode;
use crate::plan::{self, Level, PassReport, TreeConfig, WatchConfig, WatchLogger};
use crate::recent::{Epoch, Interval};

/// Options of `rmirror watch` besides the connection flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Seconds between passes (the CPAN instant-mirroring wiki's 20 s by default).
    #[arg(long, value_name = "SECS", default_value_t = plan::DEFAULT_INTERVAL_SECS)]
    pub interval: u64,
    /// Run until caught up once, then exit.
    #[arg(long)]
    pub once: bool,
    /// Treat DEST as complete up to EPOCH (decimal seconds, or `-30m`, `-2h`, `-1d`
    /// relative to now) and follow the RECENT files from there instead of a full sync.
    #[arg(long, value_name = "EPOCH", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Also do a full sync (with --delete) when the last one is older than
    /// INTERVAL (`6h`, `1d`, `1W`, or seconds).
    #[arg(long, value_name = "INTERVAL", hide_short_help = true)]
    pub full_every: Option<String>,
    /// Full sync when the last caught-up pass is older than INTERVAL.
    #[arg(long, value_name = "INTERVAL", hide_short_help = true)]
    pub max_age: Option<String>,
    /// Start with a full sync.
    #[arg(long)]
    pub full: bool,
    /// A pass whose delete events would remove more than NUM local entries
    /// deletes nothing and fails with exit 25 (its events stay pending).
    #[arg(long, value_name = "NUM")]
    pub max_delete: Option<u64>,
    /// Least time between two full syncs caused by dirtymark changes (`1h`,
    /// `30m`, seconds; 0 = no limit): a dirtymark that flaps does not cause
    /// a full sync on every pass. Meanwhile the index is followed.
    #[arg(long, value_name = "INTERVAL", default_value = "1h", hide_short_help = true)]
    pub dirtymark_min_interval: String,
    /// Follow this subdirectory's own RECENT files as a separate tree
    /// (repeatable; e.g. `--tree authors --tree modules` for CPAN). Default: SRC itself.
    #[arg(long, value_name = "SUBDIR")]
    pub tree: Vec<String>,
    /// Where state and staged RECENT files live (default DEST.rmirror, next to DEST).
    #[arg(long, value_name = "DIR", hide_short_help = true)]
    pub state_dir: Option<PathBuf>,
    /// Most paths per session.
    #[arg(long, value_name = "N", default_value_t = plan::DEFAULT_MAX_FILES_PER_PULL, hide_short_help = true)]
    pub max_files: usize,
    /// Seconds one pass may spend on a catch-up before returning to the principal file.
    #[arg(long, value_name = "SECS", default_value_t = plan::DEFAULT_PASS_BUDGET_SECS, hide_short_help = true)]
    pub budget: u64,
    /// Compare file contents (rsync -c) for the fetched paths.
    #[arg(short = 'c', long, hide_short_help = true)]
    pub checksum: bool,
    /// Skip symlinks that point outside the tree, with a warning (the default;
    /// accepted for rsync users' scripts).
    #[arg(long, overrides_with = "no_safe_links", hide = true)]
    pub safe_links: bool,
    /// Create every symlink as the server lists it, even `/etc/passwd` or `../../x`.
    #[arg(long, overrides_with = "safe_links", hide_short_help = true)]
    pub no_safe_links: bool,
    /// JSON on stdout: one object per pass, one per line (JSON lines), or with
    /// --once one document with every pass report. See docs/json.md.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; a bare port binds loopback).
    #[arg(long, value_name = "ADDR", hide_short_help = true)]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub publish: super::publish_args::PublishArgs,
    /// `--stop-after MINS`: a deadline for each pass (exit 30 with --once).
    #[command(flatten)]
    pub stop: super::stop_args::StopArgs,
}

/// `6h`, `1d`, `1W`, `90` (seconds), `90s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    // accept a lower-case `w` for weeks as a convenience
    let fixed = if let Some(n) = s.strip_suffix('w') { format!("{n}W") } else { s.to_string() };
    match Interval::parse(&fixed) {
        Ok(i) if !i.is_z() => Ok(Duration::from_secs(i.secs())),
        _ => Err(format!("bad interval {s:?} (use e.g. 3600, 30m, 6h, 1d, 1W)")),
    }
}

/// An absolute epoch or `-INTERVAL` before now.
pub fn parse_since(s: &str, now: u64) -> Result<Epoch, String> {
    if let Some(rel) = s.strip_prefix('-') {
        let d = parse_duration(rel)?;
        return Ok(Epoch::from_secs(now.saturating_sub(d.as_secs())));
    }
    Epoch::parse(s).map_err(|e| format!("bad --since: {e}"))
}

struct CliLogger {
    verbose: u8,
    /// `--once --json`: one document at the end; info lines stay off stderr unless -v.
    json_doc: bool,
    /// `--json` without `--once`: one JSON object per pass on stdout (JSON lines).
    json_lines: bool,
    /// `--metrics`: every pass and failure is recorded here.
    metrics: Option<Arc<crate::metrics::Registry>>,
    /// `--write-trace`: (DEST, what to write, upstream URL), after every caught-up pass.
    publish: Option<(PathBuf, crate::publish::PublishConfig, String)>,
    quiet: bool,
    /// The progress bar of the pull under way (stderr a terminal, no -q or
    /// --json); made at its first progress report, cleared when it ends.
    bar: Mutex<Option<super::progress::Bar>>,
}

impl CliLogger {
    /// Run `f` (which prints) with the bar, if any, off the screen.
    fn out(&self, f: impl FnOnce()) {
        match self.bar.lock() {
            Ok(g) => match g.as_ref() {
                Some(b) => b.suspend(f),
                None => f(),
            },
            Err(_) => f(),
        }
    }

    fn end_bar(&self) {
        if let Ok(mut g) = self.bar.lock() {
            if let Some(b) = g.take() {
                b.finish();
            }
        }
    }

    fn after_pass(&self, r: &PassReport) {
        let Some((dest, cfg, upstream)) = &self.publish else { return };
        if !r.complete {
            return;
        }
        let ended = SystemTime::now();
        let info = crate::publish::RunInfo {
            started: ended.checked_sub(Duration::from_secs_f64(r.seconds.max(0.0))).unwrap_or(ended),
            ended,
            upstream: upstream.clone(),
            trigger: "watch".into(),
            bytes_received: r.bytes_received,
            events: Vec::new(),
            success: true,
        };
        if let Err(e) = crate::publish::after_run(dest, cfg, &info) {
            self.log(Level::Error, &r.tree, &e);
        }
    }
}

/// Record a pass for `/metrics`: counts, duration, and the epochs that drive
/// the lag and the stuck alarm.
pub(super) fn record_pass(reg: &crate::metrics::Registry, r: &PassReport) {
    reg.job_finished(
        &r.tree,
        &crate::metrics::RunSample {
            result: "ok".into(),
            exit: 0,
            end: crate::metrics::now(),
            duration: r.seconds,
            files: r.fetched,
            bytes: r.bytes_received,
            deleted: r.deleted,
        },
    );
    let (up, ap) = (r.upstream_newest.as_ref().map(|e| e.as_f64_lossy()), r.applied.as_ref().map(|e| e.as_f64_lossy()));
    if up.is_some() || ap.is_some() {
        reg.observe_epochs(&r.tree, up, ap);
    } else {
        reg.set_lag(&r.tree, Some(r.lag_secs));
    }
}

/// Record a failed pass for `/metrics`, under its exit code.
pub(super) fn record_failure(reg: &crate::metrics::Registry, tree: &str, e: &plan::PassError) {
    let sample = crate::metrics::RunSample {
        result: "failed".into(),
        exit: e.exit_code().code(),
        end: crate::metrics::now(),
        ..Default::default()
    };
    reg.job_finished(tree, &sample);
}

/// One line of the `watch --json` stream: a pass report, or a failed pass.
pub fn pass_line(r: &PassReport) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("type".into(), "pass".into());
        m.insert("time".into(), serde_json::json!(crate::metrics::now()));
    }
    v.to_string()
}

/// The stream's object for a pass that failed.
pub fn failure_line(tree: &str, e: &plan::PassError) -> String {
    serde_json::json!({
        "type": "failure",
        "time": crate::metrics::now(),
        "tree": tree,
        "exit": e.exit_code().code(),
        "error": e.to_string(),
    })
    .to_string()
}

fn print_line(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn stamp() -> String {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (d, t) = super::ymd_hms(s);
    format!("{d} {t}")
}

impl WatchLogger for CliLogger {
    fn log(&self, level: Level, tree: &str, msg: &str) {
        // -q/-v/--debug are applied by the log filter (cli::log)
        let level = match level {
            Level::Error => tracing::Level::ERROR,
            Level::Warn => tracing::Level::WARN,
            Level::Info if self.json_doc && self.verbose == 0 => return,
            Level::Info => tracing::Level::INFO,
            Level::Debug => tracing::Level::DEBUG,
        };
        self.out(|| super::log::line(level, Some(tree), msg));
    }
    fn progress(&self, p: &crate::engine::monitor::Progress) {
        if self.quiet || self.json_doc || self.json_lines {
            return;
        }
        let Ok(mut g) = self.bar.lock() else { return };
        if g.is_none() {
            *g = super::progress::Bar::for_terminal(super::progress::BarKind::Transfer, false);
        }
        if let Some(b) = g.as_ref() {
            b.progress(p);
        }
    }
    fn pull_ended(&self) {
        self.end_bar();
    }
    fn failed(&self, tree: &str, e: &plan::PassError) {
        self.end_bar();
        if let Some(m) = &self.metrics {
            record_failure(m, tree, e);
        }
        // The log line first: whoever reads the JSON object may look for it
        // on stderr at once.
        self.log(Level::Error, tree, &e.to_string());
        if self.json_lines {
            print_line(&failure_line(tree, e));
        }
    }
    fn pass(&self, r: &PassReport) {
        self.end_bar();
        if let Some(m) = &self.metrics {
            record_pass(m, r);
        }
        self.after_pass(r);
        if self.json_lines {
            print_line(&pass_line(r));
            return;
        }
        if self.quiet || self.json_doc {
            return;
        }
        print_line(&format!("{} [{}] {}", stamp(), r.tree, r.summary()));
    }
}

pub(super) async fn cmd_watch(src: &str, dest: PathBuf, conn: &ConnArgs, w: &WatchArgs) -> Result<ExitCode, CliError> {
    let spec = super::parse_source(src)?;
    if spec.module.is_empty() {
        return Err(CliError::syntax("the source names no module (use `rmirror ls` to list them)"));
    }
    let mut spec = spec;
    // accept SRC pointing at the principal file itself
    let mut principal = "RECENT.recent".to_string();
    if let Some(i) = spec.path.iter().rposition(|&b| b == b'/').map(|i| i + 1).or(Some(0)) {
        let last = String::from_utf8_lossy(&spec.path[i..]).into_owned();
        if crate::recent::principal_root(&last).is_some() {
            principal = last;
            spec.path.truncate(i);
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut cfg = WatchConfig::new(spec, dest);
    cfg.conn = conn_settings(conn)?;
    cfg.interval = Duration::from_secs(w.interval);
    cfg.once = w.once;
    cfg.since = w.since.as_deref().map(|s| parse_since(s, now)).transpose().map_err(CliError::syntax)?;
    cfg.full_every = w.full_every.as_deref().map(parse_duration).transpose().map_err(CliError::syntax)?;
    cfg.max_age = w.max_age.as_deref().map(parse_duration).transpose().map_err(CliError::syntax)?;
    cfg.force_full = w.full;
    cfg.max_delete = w.max_delete;
    cfg.dirtymark_min_interval =
        Some(parse_duration(&w.dirtymark_min_interval).map_err(CliError::syntax)?).filter(|d| !d.is_zero());
    cfg.state_dir = w.state_dir.clone();
    cfg.max_files_per_pull = w.max_files.max(1);
    cfg.pass_budget = Some(Duration::from_secs(w.budget.max(1)));
    cfg.checksum = w.checksum;
    if w.stop.stop_at.is_some() {
        return Err(CliError::syntax(
            "--stop-at is for `sync`; `watch` takes --stop-after MINS, a deadline for each pass",
        ));
    }
    cfg.pass_deadline = w.stop.duration()?.map(|(d, what)| (d, format!("{what}, per pass")));
    cfg.safe_links = !w.no_safe_links;
    if !w.tree.is_empty() {
        cfg.trees = w.tree.iter().map(|t| TreeConfig::at(t)).collect();
    }
    for t in &mut cfg.trees {
        t.principal = principal.clone();
    }
    if w.publish.write_recent {
        return Err(CliError::syntax(
            "--write-recent is for `sync` and `run` from upstreams without RECENT files; `watch` already republishes the upstream's",
        ));
    }
    let publish = w.publish.config()?.map(|c| (cfg.dest.clone(), c, src.to_string()));
    let metrics = match &w.metrics {
        Some(a) => {
            let addr = crate::metrics::parse_addr(a).map_err(CliError::syntax)?;
            let reg = crate::metrics::Registry::new();
            for t in &cfg.trees {
                reg.register(&t.label());
            }
            let (bound, task) = crate::metrics::listen(addr, reg.clone())
                .await
                .map_err(|e| CliError { msg: format!("cannot serve metrics on {addr}: {e}"), code: ExitCode::SocketIo })?;
            if !w.json || conn.verbose > 0 {
                super::log::line(tracing::Level::INFO, None, &format!("serving metrics on http://{bound}/metrics"));
            }
            Some((reg, task))
        }
        None => None,
    };
    let log = Arc::new(CliLogger {
        quiet: conn.quiet,
        verbose: conn.verbose,
        json_doc: w.json && w.once,
        json_lines: w.json && !w.once,
        metrics: metrics.as_ref().map(|m| m.0.clone()),
        publish,
        bar: Mutex::new(None),
    });
    let summary = plan::watch(&cfg, log, plan::StopSignal::never()).await;
    if let Some((_, task)) = metrics {
        task.abort();
    }
    let summary = summary.map_err(|e| CliError { msg: e.to_string(), code: e.exit_code() })?;
    if w.json && w.once {
        let doc = serde_json::json!({
            "source": src,
            "dest": cfg.dest.display().to_string(),
            "state_dir": cfg.state_dir().display().to_string(),
            "passes": summary.reports,
            "failures": summary.failures,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_since() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(21_600));
        assert_eq!(parse_duration("1W").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(1_209_600));
        assert!(parse_duration("Z").is_err() && parse_duration("x").is_err());
        assert_eq!(parse_since("-30m", 10_000).unwrap(), Epoch::from_secs(8_200));
        assert_eq!(parse_since("1700000000.5", 0).unwrap(), Epoch::parse("1700000000.5").unwrap());
        assert!(parse_since("yesterday", 0).is_err());
    }
}
