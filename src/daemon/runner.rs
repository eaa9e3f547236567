//! The scheduler: every job on its own timer, at most `max_parallel` running
//! at once (a tokio semaphore), one run per job at a time, a lock per
//! destination, status persisted after every start and end, the config
//! reloaded on SIGHUP or when the file changes (running jobs keep the settings
//! they started with).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::engine::monitor::Monitor;
use crate::exit::ExitCode;
use crate::proto::session::MsgKind;

use super::config::{self, Config, JobConfig};
use super::lock::{DestLock, LockError};
use super::probe::{self, Candidate, ProbeOpts, Status};
use super::status::{JobStatus, RunState, StatusStore};
use super::strategy::{planner_for, JobError, Outcome, RunCtx, RunResult};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: PathBuf,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    /// Run every selected job now, whatever its timer says (first round only).
    pub ignore_timers: bool,
    /// Run what is due, wait for it, exit.
    pub once: bool,
    /// Print one JSON object per finished job run on stdout (JSON lines).
    pub json: bool,
}

/// The `run --json` line for a finished run: the job's status entry (as
/// `status --json` shows it) with `type` = `"job"` and the job's name.
pub fn job_line(name: &str, st: &JobStatus) -> String {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("type".into(), "job".into());
        m.insert("job".into(), name.into());
    }
    v.to_string()
}

pub fn now_f() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn stamp(t: f64) -> String {
    format!("{}Z", crate::text::Utc::at(t as i64).iso())
}

/// UTC time for tables and logs.
pub fn fmt_time(t: f64) -> String {
    stamp(t)
}

/// An operator log line about `job` (empty: the scheduler itself), at info.
pub fn log(job: &str, msg: &str) {
    log_at(tracing::Level::INFO, job, msg);
}

/// An operator log line at `level` (a `tracing` event with target `rmirror`
/// and a `job` field; the command line renders it, as text or JSON).
pub fn log_at(level: tracing::Level, job: &str, msg: &str) {
    match level {
        tracing::Level::ERROR => tracing::error!(target: "rmirror", job, "{msg}"),
        tracing::Level::WARN => tracing::warn!(target: "rmirror", job, "{msg}"),
        tracing::Level::INFO => tracing::info!(target: "rmirror", job, "{msg}"),
        _ => tracing::debug!(target: "rmirror", job, "{msg}"),
    }
}

/// When a job is due next, from its last run.
pub fn next_due(job: &JobConfig, st: Option<&JobStatus>) -> f64 {
    let Some(st) = st else { return 0.0 };
    let start = st.last_start.unwrap_or(0.0);
    let end = st.last_end.unwrap_or(start);
    match st.result {
        None => 0.0,
        Some(RunState::Ok) | Some(RunState::Unchanged) => {
            (start + job.interval.as_secs_f64()).max(end + job.min_wait_ok.as_secs_f64())
        }
        Some(RunState::Failed) | Some(RunState::Retry) => end + job.min_wait_fail.as_secs_f64(),
        // A run of a process that died (its entry still says running).
        Some(RunState::Running) => start + job.min_wait_fail.as_secs_f64(),
        Some(RunState::Skipped) => st.next_due.unwrap_or(end + 60.0),
    }
}

/// Logs the server's warnings and errors for a job.
struct JobMonitor {
    job: String,
}

impl Monitor for JobMonitor {
    fn message(&self, kind: MsgKind, text: &[u8]) {
        if matches!(kind, MsgKind::Info) {
            return;
        }
        let t = crate::text::escape_bytes(text, true);
        let level = if matches!(kind, MsgKind::Warning) { tracing::Level::WARN } else { tracing::Level::ERROR };
        log_at(level, &self.job, &format!("upstream: {}", t.trim_end()));
    }
    fn local_error(&self, text: &str) {
        log_at(tracing::Level::WARN, &self.job, text);
    }
}

/// The result of one job run as the scheduler records it.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub state: RunState,
    pub exit: ExitCode,
    pub result: Option<RunResult>,
    pub upstream: Option<String>,
    pub message: String,
}

fn xorshift_seed() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let mut x = t ^ ((std::process::id() as u64) << 32) ^ 0x9E3779B97F4A7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn random_upto(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    Duration::from_millis(xorshift_seed() % (d.as_millis() as u64 + 1))
}

/// Paths a job run needs from the global config.
#[derive(Clone)]
pub struct Paths {
    pub lock_dir: PathBuf,
    pub staging: PathBuf,
    /// The process's monitoring figures (`/metrics`, `status.html`).
    pub metrics: Arc<crate::metrics::Registry>,
}

/// Upstreams to try, best first, with the marker already fetched where the
/// freshness signal is the marker.
async fn choose_upstreams(job: &JobConfig, paths: &Paths, password: Option<Vec<u8>>) -> Result<Vec<(String, Option<PathBuf>)>, JobError> {
    let opts = ProbeOpts {
        max_age: job.max_age,
        timeout: job.contimeout.unwrap_or(Duration::from_secs(30)).max(job.timeout.unwrap_or(Duration::ZERO)),
        password,
        monitor: Arc::new(JobMonitor { job: job.name.clone() }),
    };
    let mut cands: Vec<Candidate>;
    let signal = match &job.freshness {
        Some(s) => s.clone(),
        None if job.discover.is_none() => {
            return Ok(job.upstreams.iter().map(|u| (u.clone(), None)).collect());
        }
        None => "mirror.yml".into(),
    };
    if let Some(list) = &job.discover {
        let d = probe::discover(list, &paths.staging.join("discover"), &opts)
            .await
            .map_err(|e| JobError { msg: e, code: ExitCode::StartClient, upstream_fault: false })?;
        cands = d.candidates;
        if let Some(m) = &d.master {
            log(&job.name, &format!("master {m} (named by {} fresh mirrors)", d.master_votes));
            let mut mc = probe::probe_all(std::slice::from_ref(m), &signal, &paths.staging.join("master"), &opts).await;
            cands.append(&mut mc);
        }
        // Configured upstreams join the discovered ones.
        if !job.upstreams.is_empty() {
            let mut more = probe::probe_all(&job.upstreams, &signal, &paths.staging.join("configured"), &opts).await;
            cands.append(&mut more);
        }
        cands.retain(|c| c.url.starts_with("rsync://") || c.url.contains("::"));
    } else {
        cands = probe::probe_all(&job.upstreams, &signal, &paths.staging, &opts).await;
    }
    // The local copy's own signal: never go back in time.
    let local_ts = local_signal_ts(job, &signal);
    let single = cands.len() == 1;
    for c in cands.iter_mut() {
        // With one upstream there is nothing fresher to prefer: the age limit
        // only ranks; the local-copy rule below still holds.
        if single && c.status == Status::Stale {
            log_at(tracing::Level::WARN, &job.name, &format!("{} is older than {} but is the only upstream", c.url, probe::fmt_age(job.max_age.as_secs())));
            c.status = Status::Fresh;
        }
        if let (Some(l), Some(t)) = (local_ts, c.timestamp) {
            if c.status == Status::Fresh && t < l {
                c.status = Status::Stale;
                c.detail = "older than the local copy".into();
            }
        }
    }
    probe::rank(&mut cands);
    let best = cands.iter().filter(|c| c.status == Status::Fresh).filter_map(|c| c.timestamp).max();
    paths.metrics.update(&job.name, |m| m.probed_upstream_epoch = best.map(|t| t as f64));
    for c in &cands {
        if c.status != Status::Fresh {
            log(&job.name, &format!("not using {}: {:?} {}", c.url, c.status, c.detail));
        }
    }
    let fresh: Vec<(String, Option<PathBuf>)> = cands
        .iter()
        .filter(|c| c.status == Status::Fresh)
        .map(|c| (c.url.clone(), if signal == job.marker { c.staged.clone() } else { None }))
        .collect();
    if fresh.is_empty() {
        let why: Vec<String> = cands.iter().map(|c| format!("{}: {:?} {}", c.url, c.status, c.detail)).collect();
        return Err(JobError { msg: format!("no fresh upstream ({})", why.join("; ")), code: ExitCode::StartClient, upstream_fault: false });
    }
    Ok(fresh)
}

/// The timestamp of the local copy's freshness signal `signal` (a path in the destination).
fn local_signal_ts(job: &JobConfig, signal: &str) -> Option<u64> {
    let p = job.destination.join(signal);
    std::fs::read(&p).ok().and_then(|data| {
        let mtime = std::fs::metadata(&p).ok()?.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let name = signal.rsplit('/').next().unwrap_or(signal);
        probe::parse_signal(probe::SignalKind::for_path(signal), name, &data, Some(mtime)).ok()?.timestamp
    })
}

/// After a job run: its figures for `/metrics` (lag from the freshness signal
/// when the job has one) and a fresh `status.html`.
fn after_job(job: &JobConfig, run: &JobRun, status: &StatusStore, reg: &crate::metrics::Registry) {
    let st = status.get(&job.name).unwrap_or_default();
    let end = st.last_end.unwrap_or_else(now_f);
    let rr = run.result.as_ref();
    reg.job_finished(
        &job.name,
        &crate::metrics::RunSample {
            result: run.state.as_str().into(),
            exit: run.exit.code(),
            end,
            duration: st.last_start.map_or(0.0, |s| end - s),
            files: rr.map_or(0, |r| r.files),
            bytes: rr.map_or(0, |r| r.bytes),
            deleted: rr.map_or(0, |r| r.deleted),
        },
    );
    if let Some(signal) = &job.freshness {
        let applied = local_signal_ts(job, signal).map(|t| t as f64);
        let upstream = reg.job(&job.name).and_then(|m| m.probed_upstream_epoch);
        reg.observe_epochs(&job.name, upstream, applied);
    }
    write_scoreboard(status, reg);
}

/// Rewrite `status.html` from the status file and the figures (every known job).
pub fn write_scoreboard(status: &StatusStore, reg: &crate::metrics::Registry) {
    let doc = status.snapshot();
    let metrics = reg.snapshot();
    let mut rows = status_rows(None, &doc);
    for name in metrics.keys() {
        if !doc.jobs.contains_key(name) {
            rows.push((name.clone(), JobStatus::default()));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if let Err(e) = super::scoreboard::write(&status.path, &rows, &metrics, now_f()) {
        log_at(tracing::Level::ERROR, "", &e);
    }
}

/// Try the upstreams in order, failing over when one fails mid-way.
async fn attempts(
    job: Arc<JobConfig>,
    paths: &Paths,
    password: Option<Vec<u8>>,
    recorder: Option<Arc<crate::publish::Recorder>>,
) -> (Result<RunResult, JobError>, Option<String>) {
    let planner = match planner_for(&job.strategy) {
        Ok(p) => p,
        Err(e) => return (Err(JobError::local(e, ExitCode::Unsupported)), None),
    };
    let ups = match choose_upstreams(&job, paths, password.clone()).await {
        Ok(u) => u,
        Err(e) => return (Err(e), None),
    };
    let mut last = None;
    let n = ups.len();
    for (i, (up, pre)) in ups.into_iter().enumerate() {
        let ctx = RunCtx {
            job: job.clone(),
            upstream: up.clone(),
            password: password.clone(),
            staging: paths.staging.join("marker"),
            prefetched_marker: pre,
            monitor: match &recorder {
                Some(r) => r.clone(),
                None => Arc::new(JobMonitor { job: job.name.clone() }),
            },
        };
        log(&job.name, &format!("{} from {up}", job.strategy.as_str()));
        match planner.run(&ctx).await {
            Ok(r) => return (Ok(r), Some(up)),
            Err(e) if e.upstream_fault && i + 1 < n => {
                log_at(tracing::Level::WARN, &job.name, &format!("{up} failed ({}); failing over to the next upstream", e.msg));
                last = Some((e, up));
            }
            Err(e) => return (Err(e), Some(up)),
        }
    }
    match last {
        Some((e, up)) => (Err(e), Some(up)),
        None => (Err(JobError::local("no upstream", ExitCode::StartClient)), None),
    }
}

fn read_password(job: &JobConfig) -> Result<Option<Vec<u8>>, String> {
    if let Some(f) = &job.password_file {
        let data = std::fs::read(f).map_err(|e| format!("cannot read password file {}: {e}", f.display()))?;
        let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
        return Ok(Some(line.iter().copied().filter(|&b| b != b'\r').collect()));
    }
    Ok(None)
}

/// Run a hook with the job's result in the environment; Err on non-zero exit.
async fn run_hook(job: &JobConfig, which: &str, cmd: &str, env: Vec<(String, String)>) -> Result<(), String> {
    let cmd = cmd.to_string();
    let name = job.name.clone();
    let which = which.to_string();
    tokio::task::spawn_blocking(move || {
        let st = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("{which} hook: cannot run: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("{which} hook of {name} exited with {st}"))
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

fn hook_env(job: &JobConfig, run: Option<&JobRun>, start: f64, end: Option<f64>) -> Vec<(String, String)> {
    let mut v = vec![
        ("RMIRROR_JOB".to_string(), job.name.clone()),
        ("RMIRROR_DEST".into(), job.destination.display().to_string()),
        ("RMIRROR_STRATEGY".into(), job.strategy.as_str().into()),
        ("RMIRROR_START".into(), format!("{start:.3}")),
    ];
    if let Some(r) = run {
        v.push(("RMIRROR_RESULT".into(), r.state.as_str().into()));
        v.push(("RMIRROR_EXIT".into(), r.exit.code().to_string()));
        v.push(("RMIRROR_UPSTREAM".into(), r.upstream.clone().unwrap_or_default()));
        v.push(("RMIRROR_MESSAGE".into(), r.message.clone()));
        let rr = r.result.as_ref();
        v.push(("RMIRROR_FILES".into(), rr.map_or(0, |x| x.files).to_string()));
        v.push(("RMIRROR_BYTES".into(), rr.map_or(0, |x| x.bytes).to_string()));
        v.push(("RMIRROR_DELETED".into(), rr.map_or(0, |x| x.deleted).to_string()));
    }
    if let Some(e) = end {
        v.push(("RMIRROR_END".into(), format!("{e:.3}")));
    }
    v
}

/// One run of one job: lock, hooks, upstream choice, strategy, status.
pub async fn run_job(job: Arc<JobConfig>, paths: Paths, status: Arc<StatusStore>) -> JobRun {
    let lock = match DestLock::acquire(&paths.lock_dir, &job.destination, &job.name) {
        Ok(l) => l,
        Err(e) => {
            let busy = matches!(e, LockError::Busy { .. });
            let msg = e.to_string();
            log_at(tracing::Level::WARN, &job.name, &format!("not run: {msg}"));
            let retry = job.interval.as_secs_f64().min(60.0);
            let _ = status.update(&job.name, |s| {
                if busy {
                    s.result = Some(RunState::Skipped);
                    s.next_due = Some(now_f() + retry);
                } else {
                    s.result = Some(RunState::Failed);
                    s.last_end = Some(now_f());
                    s.next_due = Some(now_f() + job.min_wait_fail.as_secs_f64());
                }
                s.message = msg.clone();
            });
            let state = if busy { RunState::Skipped } else { RunState::Failed };
            return JobRun { state, exit: ExitCode::FileIo, result: None, upstream: None, message: msg };
        }
    };
    if let Some(p) = lock.took_over_from {
        log(&job.name, &format!("took over the stale lock of dead pid {p}"));
    }
    let start = now_f();
    // The exported start time is the status file's (taken after the lock),
    // not the moment the job left the queue.
    paths.metrics.job_started(&job.name, start);
    let _ = status.update(&job.name, |s| {
        s.last_start = Some(start);
        s.result = Some(RunState::Running);
        s.pid = Some(std::process::id());
        s.message.clear();
    });
    log(&job.name, "started");
    let mut run = async {
        if let Some(h) = &job.hooks.before {
            if let Err(e) = run_hook(&job, "before", h, hook_env(&job, None, start, None)).await {
                return JobRun { state: RunState::Failed, exit: ExitCode::Syntax, result: None, upstream: None, message: e };
            }
        }
        let password = match read_password(&job) {
            Ok(p) => p,
            Err(e) => return JobRun { state: RunState::Failed, exit: ExitCode::Syntax, result: None, upstream: None, message: e },
        };
        // the cascade writers record what the run changes (crate::publish)
        let recorder = (!job.publish.is_empty())
            .then(|| Arc::new(crate::publish::Recorder::new(Arc::new(JobMonitor { job: job.name.clone() }))));
        let fut = attempts(job.clone(), &paths, password, recorder.clone());
        // The overall deadline: transfers stop cleanly at it (exit 30, no
        // deletions); anything still running shortly after is dropped.
        let deadline = job.wall_timeout.map(|w| {
            crate::engine::deadline::Deadline::after(w, format!("wall-clock timeout after {}s", w.as_secs()))
        });
        let (r, up) = match crate::engine::deadline::within(deadline, fut).await {
            Ok(x) => x,
            Err(crate::engine::deadline::Expired(d)) => {
                (Err(JobError::local(d.message(), ExitCode::Timeout)), None)
            }
        };
        if let Some(rec) = &recorder {
            let info = crate::publish::RunInfo {
                started: UNIX_EPOCH + Duration::from_secs_f64(start),
                ended: SystemTime::now(),
                upstream: up.clone().unwrap_or_default(),
                trigger: "run".into(),
                bytes_received: r.as_ref().map_or(0, |x| x.bytes),
                events: rec.take(),
                // A held-back run is not a complete tree: no trace or timestamp.
                success: r.as_ref().is_ok_and(|x| x.retry.is_none()),
            };
            if rec.skipped() > 0 {
                log(&job.name, &format!("{} changed names are not UTF-8 and are not in the RECENT files", rec.skipped()));
            }
            match crate::publish::after_run(&job.destination, &job.publish, &info) {
                Ok(p) => {
                    if let Some(why) = &p.new_chain {
                        log(&job.name, &format!("started a new RECENT chain ({why})"));
                    }
                }
                Err(e) if r.is_ok() => {
                    return JobRun { state: RunState::Failed, exit: ExitCode::FileIo, result: None, upstream: up, message: e };
                }
                Err(e) => log_at(tracing::Level::ERROR, &job.name, &e),
            }
        }
        match r {
            Ok(rr) if rr.retry.is_some() => JobRun {
                state: RunState::Retry,
                // rsync's "partial transfer": the tree is not complete yet.
                exit: ExitCode::Partial,
                message: rr.retry.clone().unwrap_or_default(),
                result: Some(rr),
                upstream: up,
            },
            Ok(rr) => JobRun {
                state: if rr.outcome == Outcome::Unchanged { RunState::Unchanged } else { RunState::Ok },
                exit: rr.exit,
                message: if rr.outcome == Outcome::Unchanged { "marker unchanged".into() } else { String::new() },
                result: Some(rr),
                upstream: up,
            },
            Err(e) => JobRun { state: RunState::Failed, exit: e.code, result: None, upstream: up, message: e.msg },
        }
    }
    .await;
    let end = now_f();
    // A held-back run (retry) is neither: downstream is not triggered, nobody is paged.
    let hook = match run.state {
        RunState::Failed => job.hooks.on_failure.as_deref().map(|h| ("on_failure", h)),
        RunState::Retry => None,
        _ => job.hooks.after.as_deref().map(|h| ("after", h)),
    };
    if let Some((which, h)) = hook {
        if let Err(e) = run_hook(&job, which, h, hook_env(&job, Some(&run), start, Some(end))).await {
            log_at(tracing::Level::ERROR, &job.name, &e);
            if run.state != RunState::Failed {
                run.state = RunState::Failed;
                run.exit = ExitCode::Syntax;
                run.message = e;
            }
        }
    }
    let _ = status.update(&job.name, |s| {
        s.last_end = Some(end);
        s.result = Some(run.state);
        s.exit_code = Some(run.exit.code());
        s.message = run.message.clone();
        s.upstream = run.upstream.clone();
        s.runs += 1;
        if let Some(r) = &run.result {
            s.files = r.files;
            s.bytes = r.bytes;
            s.deleted = r.deleted;
            s.sessions = r.sessions;
        } else {
            s.files = 0;
            s.bytes = 0;
            s.deleted = 0;
            s.sessions = 0;
        }
        match run.state {
            RunState::Failed => s.failures += 1,
            RunState::Ok | RunState::Unchanged => s.last_success = Some(end),
            _ => {}
        }
        let snapshot = s.clone();
        s.next_due = Some(next_due(&job, Some(&snapshot)));
    });
    let summary = match &run.result {
        Some(r) => format!("{} (exit {}): {} files, {} bytes, {} deleted, {} sessions", run.state.as_str(), run.exit.code(), r.files, r.bytes, r.deleted, r.sessions),
        None => format!("{} (exit {}): {}", run.state.as_str(), run.exit.code(), run.message),
    };
    let level = match run.state {
        RunState::Failed => tracing::Level::ERROR,
        RunState::Retry => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    };
    log_at(level, &job.name, &summary);
    drop(lock);
    run
}

fn selected(opts: &RunOptions, name: &str) -> bool {
    (opts.only.is_empty() || opts.only.iter().any(|o| o == name)) && !opts.skip.iter().any(|s| s == name)
}

fn mtime_of(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).ok()?.modified().ok()
}

/// `rmirror run`: the scheduler loop (or one round with `once`).
pub async fn run(opts: RunOptions) -> Result<ExitCode, String> {
    let mut cfg: Config = config::load(&opts.config).map_err(|errs| {
        errs.iter().map(|e| format!("{}: {e}", opts.config.display())).collect::<Vec<_>>().join("\n")
    })?;
    for name in opts.only.iter().chain(&opts.skip) {
        if cfg.job(name).is_none() {
            return Err(format!("no job named {name:?} in {}", opts.config.display()));
        }
    }
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| format!("cannot create {}: {e}", cfg.state_dir.display()))?;
    let status = Arc::new(StatusStore::open(&cfg.status_file)?);
    let metrics = crate::metrics::Registry::new();
    for j in &cfg.jobs {
        if selected(&opts, &j.name) {
            metrics.register(&j.name);
        }
    }
    let _metrics_task = match cfg.metrics {
        Some(addr) => {
            let (bound, task) = crate::metrics::listen(addr, metrics.clone()).await.map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            log("", &format!("serving metrics on http://{bound}/metrics"));
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    write_scoreboard(&status, &metrics);
    let sem = Arc::new(Semaphore::new(cfg.max_parallel));
    let mut permits = cfg.max_parallel;
    let mut cfg_mtime = mtime_of(&opts.config);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut tasks: tokio::task::JoinSet<(String, JobRun)> = tokio::task::JoinSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut first_round = true;
    let mut worst = ExitCode::Ok;
    let mut started_once: HashSet<String> = HashSet::new();
    // Jobs the status says are running but no process runs: report them.
    let me = std::process::id();
    for j in &cfg.jobs {
        if let Some(s) = status.get(&j.name) {
            if s.result == Some(RunState::Running) && s.pid != Some(me) {
                log(&j.name, "the previous run was interrupted");
            }
        }
    }
    log("", &format!("{} jobs, max_parallel {}", cfg.jobs.len(), cfg.max_parallel));
    loop {
        let now = now_f();
        let mut next_wake: Option<f64> = None;
        let mut due_jobs: Vec<Arc<JobConfig>> = Vec::new();
        for job in &cfg.jobs {
            if !selected(&opts, &job.name) || running.contains(&job.name) {
                continue;
            }
            if opts.once && started_once.contains(&job.name) {
                continue;
            }
            let due = if opts.ignore_timers && first_round { 0.0 } else { next_due(job, status.get(&job.name).as_ref()) };
            if due <= now {
                due_jobs.push(job.clone());
            } else if !opts.once {
                next_wake = Some(next_wake.map_or(due, |w: f64| w.min(due)));
            }
        }
        first_round = false;
        for job in due_jobs {
            running.insert(job.name.clone());
            started_once.insert(job.name.clone());
            let (sem, status) = (sem.clone(), status.clone());
            let paths = Paths { lock_dir: cfg.lock_dir(), staging: cfg.staging_dir(&job.name), metrics: metrics.clone() };
            let delay = random_upto(job.random_delay);
            tasks.spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                paths.metrics.queue_add(1);
                let _permit = sem.acquire_owned().await;
                paths.metrics.queue_add(-1);
                paths.metrics.job_started(&job.name, now_f());
                let reg = paths.metrics.clone();
                let r = run_job(job.clone(), paths, status.clone()).await;
                after_job(&job, &r, &status, &reg);
                (job.name.clone(), r)
            });
        }
        if opts.once && tasks.is_empty() {
            return Ok(worst);
        }
        let sleep_for = next_wake.map(|w| Duration::from_secs_f64((w - now_f()).clamp(0.05, 3600.0))).unwrap_or(Duration::from_secs(3600));
        let poll = if cfg.reload_poll.is_zero() || opts.once { Duration::from_secs(3600) } else { cfg.reload_poll };
        let mut reload = false;
        tokio::select! {
            Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((name, run)) = r {
                    running.remove(&name);
                    if opts.json {
                        use std::io::Write;
                        let st = status.get(&name).unwrap_or_default();
                        let mut o = std::io::stdout().lock();
                        let _ = writeln!(o, "{}", job_line(&name, &st));
                        let _ = o.flush();
                    }
                    if matches!(run.state, RunState::Failed | RunState::Retry) && worst == ExitCode::Ok {
                        worst = if run.exit == ExitCode::Ok { ExitCode::Partial } else { run.exit };
                    }
                }
            }
            _ = tokio::time::sleep(sleep_for) => {}
            _ = hup.recv() => { log("", "SIGHUP: reloading the configuration"); reload = true; }
            _ = tokio::time::sleep(poll) => {
                let m = mtime_of(&opts.config);
                if m != cfg_mtime { log("", "the configuration file changed: reloading"); reload = true; }
            }
        }
        if reload && !opts.once {
            cfg_mtime = mtime_of(&opts.config);
            match config::load(&opts.config) {
                Ok(new) => {
                    if new.status_file != cfg.status_file || new.state_dir != cfg.state_dir {
                        log("", "state_dir/status_file changes take effect on restart");
                    }
                    if new.max_parallel > permits {
                        sem.add_permits(new.max_parallel - permits);
                    } else if new.max_parallel < permits {
                        // Take the difference out of circulation as running jobs release it.
                        let (s, n) = (sem.clone(), (permits - new.max_parallel) as u32);
                        tokio::spawn(async move {
                            if let Ok(p) = s.acquire_many_owned(n).await {
                                p.forget();
                            }
                        });
                    }
                    permits = new.max_parallel;
                    let (state_dir, status_file) = (cfg.state_dir.clone(), cfg.status_file.clone());
                    cfg = new;
                    cfg.state_dir = state_dir;
                    cfg.status_file = status_file;
                    log("", &format!("reloaded: {} jobs, max_parallel {} ({} running keep their settings)", cfg.jobs.len(), permits, running.len()));
                }
                Err(errs) => {
                    for e in errs {
                        log_at(tracing::Level::ERROR, "", &format!("reload rejected, keeping the old configuration: {}: {e}", opts.config.display()));
                    }
                }
            }
        }
    }
}

/// Aborts the metrics server when `run` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Status rows for `rmirror status`: every configured job (plus any the file
/// still knows), with its next due time under the current config.
pub fn status_rows(cfg: Option<&Config>, doc: &super::status::StatusDoc) -> Vec<(String, JobStatus)> {
    let mut out: Vec<(String, JobStatus)> = Vec::new();
    let mut seen = HashSet::new();
    if let Some(c) = cfg {
        for j in &c.jobs {
            let mut s = doc.jobs.get(&j.name).cloned().unwrap_or_default();
            if s.result != Some(RunState::Running) {
                s.next_due = Some(next_due(j, Some(&s)).max(0.0));
            }
            seen.insert(j.name.clone());
            out.push((j.name.clone(), s));
        }
    }
    let rest: HashMap<_, _> = doc.jobs.iter().filter(|(k, _)| !seen.contains(*k)).collect();
    let mut rest: Vec<_> = rest.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(rest);
    out
}
