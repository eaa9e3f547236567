//! Monitoring: a registry of per-job (or per-tree) figures rendered in the
//! Prometheus text exposition format (version 0.0.4), and a tiny HTTP/1.1
//! responder that serves it at `/metrics`.
//!
//! `rmirror run` (config key `metrics = "127.0.0.1:9464"`), `rmirror watch`
//! (`--metrics ADDR`) and `rmirror iim` (config entry `metrics_listen ADDR`,
//! an rmirror extension) each own one [`Registry`]; a library user can do the
//! same:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use rmirror::metrics::{Registry, RunSample};
//! let reg = Registry::new();
//! let (addr, _task) = rmirror::metrics::listen("127.0.0.1:0".parse().unwrap(), reg.clone()).await?;
//! reg.job_started("cpan", 1_700_000_000.0);
//! reg.job_finished("cpan", &RunSample { result: "ok".into(), exit: 0, end: 1_700_000_010.0, duration: 10.0, ..Default::default() });
//! reg.observe_epochs("cpan", Some(1_700_000_005.0), Some(1_700_000_005.0));
//! println!("scrape http://{addr}/metrics");
//! # Ok(()) }
//! ```
//!
//! Exported series (all per `job` label; a `watch` or `iim` tree's label is
//! its name, `/` for the root):
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `rmirror_job_last_success_timestamp_seconds` | gauge | end of the last successful (ok/unchanged) run |
//! | `rmirror_job_last_run_timestamp_seconds` | gauge | end of the last run, whatever its result |
//! | `rmirror_job_last_result{result}` | gauge | 1 for the last run's result (`ok`, `unchanged`, `failed`, `skipped`, `running`), 0 for the others |
//! | `rmirror_job_last_exit_code` | gauge | rsync-style exit code of the last run |
//! | `rmirror_job_last_run_duration_seconds` | gauge | how long the last run took |
//! | `rmirror_job_last_run_files` / `_bytes` / `_deleted` | gauge | what the last run moved |
//! | `rmirror_job_files_transferred_total` / `rmirror_job_bytes_transferred_total` / `rmirror_job_deleted_total` | counter | since this process started |
//! | `rmirror_job_runs_total` / `rmirror_job_failures_total` | counter | runs (passes) ended, and of those failed |
//! | `rmirror_job_errors_total{exit_code}` | counter | failed runs by exit code |
//! | `rmirror_job_running` | gauge | 1 while a run is under way |
//! | `rmirror_job_lag_seconds` | gauge | how far the local copy trails the upstream (see [`JobMetrics::lag_seconds`]) |
//! | `rmirror_job_upstream_epoch_seconds` / `rmirror_job_applied_epoch_seconds` | gauge | the upstream's newest change and the newest one applied here, when known |
//! | `rmirror_job_stalled_observations` | gauge | consecutive observations in which the upstream grew but the applied epoch did not move |
//! | `rmirror_job_stuck` | gauge | 1 when `stalled_observations` reached the alarm threshold |
//! | `rmirror_queue_depth` | gauge | runs that are due but wait for a free slot |
//! | `rmirror_jobs_running` | gauge | runs under way |
//! | `rmirror_start_time_seconds` | gauge | when this process started |
//! | `rmirror_build_info{version}` | gauge | always 1 |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many observations with a growing upstream and a standing applied epoch
/// raise the stuck alarm (by default).
pub const DEFAULT_STUCK_AFTER: u32 = 3;

/// The exit code recorded when a failure's code is not known; exported as
/// `exit_code="unknown"`.
pub const UNKNOWN_EXIT: i32 = -1;

/// The results `rmirror_job_last_result` enumerates.
pub const RESULTS: &[&str] = &["ok", "unchanged", "failed", "skipped", "running", "retry"];

/// Unix time now, fractional seconds.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// What a finished run (a `run` job or a `watch` pass) reports.
#[derive(Debug, Clone, Default)]
pub struct RunSample {
    /// One of [`RESULTS`] (`ok`, `unchanged`, `failed`, `skipped`, `retry`).
    pub result: String,
    pub exit: i32,
    /// Unix time the run ended.
    pub end: f64,
    pub duration: f64,
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
}

/// Everything known about one job (or watch tree).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobMetrics {
    pub last_start: Option<f64>,
    pub last_end: Option<f64>,
    pub last_success: Option<f64>,
    /// Start of the last successful run: the copy is at least as new as the
    /// upstream was then.
    pub synced_as_of: Option<f64>,
    pub last_result: Option<String>,
    pub last_exit: Option<i32>,
    pub last_duration: Option<f64>,
    pub last_files: u64,
    pub last_bytes: u64,
    pub last_deleted: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub deleted_total: u64,
    pub runs_total: u64,
    pub failures_total: u64,
    /// Failed runs by exit code.
    pub errors: BTreeMap<i32, u64>,
    pub running: bool,
    /// Seconds the local copy trails the upstream: upstream epoch minus
    /// applied epoch when both are known (RECENT newest event, marker or
    /// trace time), else whatever the front end set with [`Registry::set_lag`].
    pub lag_seconds: Option<f64>,
    pub upstream_epoch: Option<f64>,
    pub applied_epoch: Option<f64>,
    /// `run`: the best fresh upstream's signal time at the last probe (folded
    /// into `upstream_epoch` by [`Registry::observe_epochs`] after the run).
    pub probed_upstream_epoch: Option<f64>,
    pub stalled_observations: u32,
    pub stuck: bool,
}

impl JobMetrics {
    /// The lag, or — when no epochs are known — seconds since the start of the
    /// last successful run (the copy is at least as new as the upstream was then).
    pub fn effective_lag(&self, now: f64) -> Option<f64> {
        self.lag_seconds.or_else(|| self.synced_as_of.map(|s| (now - s).max(0.0)))
    }
}

#[derive(Debug, Default)]
struct Inner {
    jobs: BTreeMap<String, JobMetrics>,
    queue_depth: u64,
}

/// The figures of one process, shared by the code that updates them and the
/// server that renders them.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    started: f64,
    stuck_after: u32,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Self::with_stuck_after(DEFAULT_STUCK_AFTER)
    }

    /// A registry whose stuck alarm fires after `n` stalled observations (at least 1).
    pub fn with_stuck_after(n: u32) -> Arc<Registry> {
        Arc::new(Registry { inner: Mutex::new(Inner::default()), started: now(), stuck_after: n.max(1) })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Option<R> {
        // A poisoned lock only means a panic elsewhere; the figures are still usable.
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Some(f(&mut g))
    }

    /// Change one job's figures (creating its entry).
    pub fn update(&self, job: &str, f: impl FnOnce(&mut JobMetrics)) {
        self.with(|i| f(i.jobs.entry(job.to_string()).or_default()));
    }

    /// Make a job known (so it is exported before its first run).
    pub fn register(&self, job: &str) {
        self.update(job, |_| {});
    }

    /// Drop jobs not in `keep` (after a configuration reload).
    pub fn retain(&self, keep: &[&str]) {
        self.with(|i| i.jobs.retain(|k, _| keep.contains(&k.as_str())));
    }

    pub fn job_started(&self, job: &str, at: f64) {
        self.update(job, |m| {
            m.last_start = Some(at);
            m.running = true;
        });
    }

    pub fn job_finished(&self, job: &str, s: &RunSample) {
        self.update(job, |m| {
            m.running = false;
            m.last_end = Some(s.end);
            m.last_result = Some(s.result.clone());
            m.last_exit = Some(s.exit);
            m.last_duration = Some(s.duration.max(0.0));
            m.last_files = s.files;
            m.last_bytes = s.bytes;
            m.last_deleted = s.deleted;
            m.files_total += s.files;
            m.bytes_total += s.bytes;
            m.deleted_total += s.deleted;
            if s.result == "skipped" {
                return;
            }
            m.runs_total += 1;
            if s.result == "failed" {
                m.failures_total += 1;
                *m.errors.entry(s.exit).or_default() += 1;
            } else if s.result == "retry" {
                // Held back (upstream mid-update): neither a failure nor a success.
            } else {
                m.last_success = Some(s.end);
                m.synced_as_of = Some(s.end - s.duration.max(0.0));
            }
        });
    }

    /// A failure that is not a whole run's result (e.g. a watch pass error).
    pub fn error(&self, job: &str, exit: i32) {
        self.update(job, |m| *m.errors.entry(exit).or_default() += 1);
    }

    pub fn set_lag(&self, job: &str, secs: Option<f64>) {
        self.update(job, |m| m.lag_seconds = secs.map(|s| s.max(0.0)));
    }

    /// Record the upstream's newest epoch and the newest applied here (Unix
    /// seconds); sets the lag and drives the stuck alarm: each observation in
    /// which the upstream grew while the applied epoch stood still (and trails
    /// it) counts; one in which the applied epoch moved, or caught up, resets.
    pub fn observe_epochs(&self, job: &str, upstream: Option<f64>, applied: Option<f64>) {
        let limit = self.stuck_after;
        self.update(job, |m| {
            let (pu, pa) = (m.upstream_epoch, m.applied_epoch);
            let advanced = match (pa, applied) {
                (Some(p), Some(a)) => a > p,
                (None, Some(_)) => true,
                _ => false,
            };
            let grew = matches!((pu, upstream), (Some(p), Some(u)) if u > p);
            let behind = match (upstream, applied) {
                (Some(u), Some(a)) => u > a,
                (Some(_), None) => true,
                _ => false,
            };
            if advanced || !behind {
                m.stalled_observations = 0;
            } else if grew {
                m.stalled_observations = m.stalled_observations.saturating_add(1);
            }
            m.stuck = m.stalled_observations >= limit;
            if upstream.is_some() {
                m.upstream_epoch = upstream;
            }
            if applied.is_some() {
                m.applied_epoch = applied;
            }
            if let (Some(u), Some(a)) = (m.upstream_epoch, m.applied_epoch) {
                m.lag_seconds = Some((u - a).max(0.0));
            }
        });
    }

    pub fn set_queue_depth(&self, n: u64) {
        self.with(|i| i.queue_depth = n);
    }

    /// Add `d` (may be negative) to the queue depth.
    pub fn queue_add(&self, d: i64) {
        self.with(|i| i.queue_depth = i.queue_depth.saturating_add_signed(d));
    }

    pub fn queue_depth(&self) -> u64 {
        self.with(|i| i.queue_depth).unwrap_or(0)
    }

    /// A copy of every job's figures.
    pub fn snapshot(&self) -> BTreeMap<String, JobMetrics> {
        self.with(|i| i.jobs.clone()).unwrap_or_default()
    }

    pub fn job(&self, job: &str) -> Option<JobMetrics> {
        self.with(|i| i.jobs.get(job).cloned()).flatten()
    }

    /// The whole exposition, as served at `/metrics`.
    pub fn render(&self) -> String {
        let (jobs, queue) = self.with(|i| (i.jobs.clone(), i.queue_depth)).unwrap_or_default();
        render(&jobs, queue, self.started, now())
    }
}

/// Escape a label value (`\`, `"`, newline), as the text format requires.
pub fn escape_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", num(v));
    }
    /// One gauge/counter family with one optional value per job.
    fn family(&mut self, jobs: &BTreeMap<String, JobMetrics>, name: &str, kind: &str, help: &str, f: impl Fn(&JobMetrics) -> Option<f64>) {
        self.head(name, kind, help);
        for (j, m) in jobs {
            if let Some(v) = f(m) {
                self.line(name, &[("job", j)], v);
            }
        }
    }
}

fn render(jobs: &BTreeMap<String, JobMetrics>, queue: u64, started: f64, now: f64) -> String {
    let mut o = Out(String::new());
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    o.head("rmirror_build_info", "gauge", "rmirror version (always 1).");
    o.line("rmirror_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    o.head("rmirror_start_time_seconds", "gauge", "Unix time this process started.");
    o.line("rmirror_start_time_seconds", &[], started);
    o.head("rmirror_queue_depth", "gauge", "Runs that are due but wait for a free slot.");
    o.line("rmirror_queue_depth", &[], queue as f64);
    o.head("rmirror_jobs_running", "gauge", "Runs under way.");
    o.line("rmirror_jobs_running", &[], jobs.values().filter(|m| m.running).count() as f64);
    o.family(jobs, "rmirror_job_last_success_timestamp_seconds", "gauge", "Unix time the last successful run ended.", |m| m.last_success);
    o.family(jobs, "rmirror_job_last_run_timestamp_seconds", "gauge", "Unix time the last run ended.", |m| m.last_end);
    o.family(jobs, "rmirror_job_last_start_timestamp_seconds", "gauge", "Unix time the last run started.", |m| m.last_start);
    o.head("rmirror_job_last_result", "gauge", "1 for the last run's result, 0 for the other results.");
    for (j, m) in jobs {
        let cur = match (&m.last_result, m.running) {
            (_, true) => "running",
            (Some(r), false) => r.as_str(),
            (None, false) => continue,
        };
        for res in RESULTS {
            o.line("rmirror_job_last_result", &[("job", j), ("result", res)], b(*res == cur));
        }
    }
    o.family(jobs, "rmirror_job_last_exit_code", "gauge", "Exit code (rsync's numbering) of the last run.", |m| m.last_exit.filter(|&c| c != UNKNOWN_EXIT).map(f64::from));
    o.family(jobs, "rmirror_job_last_run_duration_seconds", "gauge", "How long the last run took.", |m| m.last_duration);
    o.family(jobs, "rmirror_job_last_run_files", "gauge", "Files the last run transferred.", |m| m.last_end.map(|_| m.last_files as f64));
    o.family(jobs, "rmirror_job_last_run_bytes", "gauge", "Bytes the last run transferred.", |m| m.last_end.map(|_| m.last_bytes as f64));
    o.family(jobs, "rmirror_job_last_run_deleted", "gauge", "Files the last run deleted.", |m| m.last_end.map(|_| m.last_deleted as f64));
    o.family(jobs, "rmirror_job_files_transferred_total", "counter", "Files transferred since this process started.", |m| Some(m.files_total as f64));
    o.family(jobs, "rmirror_job_bytes_transferred_total", "counter", "Bytes transferred since this process started.", |m| Some(m.bytes_total as f64));
    o.family(jobs, "rmirror_job_deleted_total", "counter", "Files deleted since this process started.", |m| Some(m.deleted_total as f64));
    o.family(jobs, "rmirror_job_runs_total", "counter", "Runs (passes) ended since this process started.", |m| Some(m.runs_total as f64));
    o.family(jobs, "rmirror_job_failures_total", "counter", "Runs (passes) that failed since this process started.", |m| Some(m.failures_total as f64));
    o.head("rmirror_job_errors_total", "counter", "Failures by exit code since this process started.");
    for (j, m) in jobs {
        for (code, n) in &m.errors {
            let c = if *code == UNKNOWN_EXIT { "unknown".to_string() } else { code.to_string() };
            o.line("rmirror_job_errors_total", &[("job", j), ("exit_code", &c)], *n as f64);
        }
    }
    o.family(jobs, "rmirror_job_running", "gauge", "1 while a run of the job is under way.", |m| Some(b(m.running)));
    o.family(jobs, "rmirror_job_lag_seconds", "gauge", "Seconds the local copy trails the upstream.", |m| m.effective_lag(now));
    o.family(jobs, "rmirror_job_upstream_epoch_seconds", "gauge", "The upstream's newest change (RECENT event, marker or trace time).", |m| m.upstream_epoch);
    o.family(jobs, "rmirror_job_applied_epoch_seconds", "gauge", "The newest upstream change applied here.", |m| m.applied_epoch);
    o.family(jobs, "rmirror_job_stalled_observations", "gauge", "Consecutive observations with a growing upstream and a standing applied epoch.", |m| Some(m.stalled_observations as f64));
    o.family(jobs, "rmirror_job_stuck", "gauge", "1 when the applied epoch stopped advancing while the upstream's grows.", |m| Some(b(m.stuck)));
    o.0
}

/// `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`, or a bare port / `:PORT`
/// (loopback). Anything else must be an IP address with a port.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(p) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    if let Some(p) = t.strip_prefix("localhost:") {
        let p: u16 = p.parse().map_err(|_| format!("bad port in metrics address {s:?}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    t.parse::<SocketAddr>().map_err(|_| format!("bad metrics address {s:?} (use e.g. 127.0.0.1:9464, [::1]:9464 or a port)"))
}

/// Bind `addr` and serve `/metrics` from `reg` in a background task; returns the
/// bound address (useful with port 0) and the task.
pub async fn listen(addr: SocketAddr, reg: Arc<Registry>) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    let task = tokio::spawn(accept_loop(l, reg));
    Ok((bound, task))
}

/// Bind `addr` and serve `/metrics` until the task is dropped or aborted
/// (returns only when binding fails).
pub async fn serve(addr: SocketAddr, reg: Arc<Registry>) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    accept_loop(l, reg).await;
    Ok(())
}

async fn accept_loop(l: tokio::net::TcpListener, reg: Arc<Registry>) {
    let conns = Arc::new(tokio::sync::Semaphore::new(32));
    loop {
        let (sock, _) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                // e.g. EMFILE: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            drop(sock); // too many at once
            continue;
        };
        let reg = reg.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), respond(sock, &reg)).await;
            drop(permit);
        });
    }
}

/// Read one request head (at most 8 KiB) and answer it; the connection closes.
async fn respond(mut sock: tokio::net::TcpStream, reg: &Registry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > 8192 {
            return reply(&mut sock, "431 Request Header Fields Too Large", "text/plain", b"request head too large\n", false).await;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head = method == "HEAD";
    if method != "GET" && !head {
        return reply(&mut sock, "405 Method Not Allowed", "text/plain", b"only GET\n", head).await;
    }
    match path {
        "/metrics" => {
            let body = reg.render();
            reply(&mut sock, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body.as_bytes(), head).await
        }
        "/" => reply(&mut sock, "200 OK", "text/plain; charset=utf-8", b"rmirror: see /metrics\n", head).await,
        _ => reply(&mut sock, "404 Not Found", "text/plain", b"not found (try /metrics)\n", head).await,
    }
}

async fn reply(sock: &mut tokio::net::TcpStream, status: &str, ctype: &str, body: &[u8], head: bool) -> std::io::Result<()> {
    let hdr = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    sock.write_all(hdr.as_bytes()).await?;
    if !head {
        sock.write_all(body).await?;
    }
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_alarm_needs_a_growing_upstream() {
        let r = Registry::with_stuck_after(2);
        r.observe_epochs("t", Some(100.0), Some(100.0));
        r.observe_epochs("t", Some(110.0), Some(100.0)); // behind, grew: 1
        assert!(!r.job("t").unwrap().stuck);
        r.observe_epochs("t", Some(110.0), Some(100.0)); // upstream did not grow: stays 1
        assert_eq!(r.job("t").unwrap().stalled_observations, 1);
        r.observe_epochs("t", Some(120.0), Some(100.0)); // 2: stuck
        let m = r.job("t").unwrap();
        assert!(m.stuck);
        assert_eq!(m.lag_seconds, Some(20.0));
        r.observe_epochs("t", Some(130.0), Some(125.0)); // applied moved
        assert!(!r.job("t").unwrap().stuck);
    }

    #[test]
    fn render_escapes_labels_and_counts_errors() {
        let r = Registry::new();
        r.job_finished("a\"b\\c\nd", &RunSample { result: "failed".into(), exit: 10, end: 5.0, duration: 1.5, ..Default::default() });
        let t = r.render();
        assert!(t.contains("rmirror_job_errors_total{job=\"a\\\"b\\\\c\\nd\",exit_code=\"10\"} 1\n"), "{t}");
        assert!(t.contains("rmirror_job_last_result{job=\"a\\\"b\\\\c\\nd\",result=\"failed\"} 1\n"));
        assert!(t.contains("rmirror_job_last_run_duration_seconds{job=\"a\\\"b\\\\c\\nd\"} 1.500\n"));
        assert!(!t.contains("rmirror_job_last_success_timestamp_seconds{"));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_addr(":9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_addr("localhost:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(parse_addr("[::1]:2").unwrap(), "[::1]:2".parse().unwrap());
        assert!(parse_addr("example.org:80").is_err());
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let r = Registry::new();
        r.register("x");
        let (addr, task) = listen("127.0.0.1:0".parse().unwrap(), r).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("rmirror_job_stuck{job=\"x\"} 0\n"));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
