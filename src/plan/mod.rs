//! Instant mirroring: follow an upstream's RECENT change logs
//! (File::Rsync::Mirror::Recent) and keep a tree seconds behind it.
//!
//! # Use as a library
//!
//! ```ignore
//! use rmirror::plan::{self, WatchConfig, TreeConfig, StopSignal, TracingLogger};
//! let src = rmirror::remote::parse("rsync://cpan-rsync.perl.org/CPAN/")?;
//! let mut cfg = WatchConfig::new(src, "/srv/cpan".into());
//! cfg.trees = vec![TreeConfig::at("authors"), TreeConfig::at("modules")];
//! let (stop_handle, stop) = plan::stop_pair();
//! let summary = plan::watch(&cfg, Arc::new(TracingLogger), stop).await?;
//! ```
//!
//! * [`watch`] – the loop: one [`PassReport`] per tree per iteration, handed
//!   to [`WatchLogger::pass`]; sleeps [`WatchConfig::interval`] between
//!   iterations (at once again after a pass that ran out of its time budget);
//!   backs off 12 s × consecutive failures (max 300 s) after errors; returns
//!   when the [`StopSignal`] fires or, with [`WatchConfig::once`], when every
//!   tree is caught up.
//! * [`run_pass`] – one pass over one tree.
//!
//! # A pass
//!
//! State lives outside the published tree, in [`WatchConfig::state_dir`]
//! (default `<dest>.rmirror/`): `<tree>.state.json` (atomic writes),
//! `<tree>.staging/` (the fetched RECENT files) and `<tree>.lock`.
//!
//! 1. Fetch the principal (`RECENT.recent` and the file it points at) into
//!    staging, with checksums (RECENT files are rewritten within a second).
//! 2. Full sync (the engine with `--delete`: content first, then the RECENT
//!    files, then a second session that deletes) when there is no state, the
//!    dirtymark changed, the logs have a gap (the longest needed file does not
//!    reach back to the applied high-water mark, or only `Z` does, which
//!    drops deletes), the published RECENT files are missing, the last
//!    caught-up pass is older than [`WatchConfig::max_age`], or
//!    [`WatchConfig::full_every`] elapsed.
//! 3. Otherwise walk to longer files only as far as needed (the
//!    `merged.epoch` / next `minmax.max` overlap rule), take the newest
//!    event per path above the high-water mark, and work them off newest
//!    first in chunks of [`WatchConfig::max_files_per_pull`] paths, one
//!    `--files-from` session each.  When caught up: publish the RECENT files
//!    (atomic rename each), then apply deletes (files and symlinks, then
//!    directories deepest first; no-follow, confined to the tree), then
//!    restore the times of the directories touched.  A chunk that does not
//!    finish the backlog records its epoch range as done and keeps its
//!    deletes pending until the RECENT files that announce them are
//!    published; when the time budget is used up the pass ends and the next
//!    one starts again from the principal, so fresh uploads go first.

pub mod actions;
pub mod recent;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::deadline::{self, Deadline};
use crate::exit::ExitCode;
use crate::recent::{Epoch, RecentError};
use crate::remote::RemoteSpec;

pub use actions::FullReason;
pub use state::{EpochRanges, TreeState};

/// Default seconds between passes: the CPAN instant-mirroring wiki's "every
/// 20 seconds" (rrr's `minimum_time_per_loop`).
pub const DEFAULT_INTERVAL_SECS: u64 = 20;
/// Default paths per `--files-from` session (rrr-client uses 20000).
pub const DEFAULT_MAX_FILES_PER_PULL: usize = 5000;
/// Default of [`WatchConfig::dirtymark_min_interval`]: one hour.
pub const DEFAULT_DIRTYMARK_MIN_INTERVAL_SECS: u64 = 3600;
/// Default time budget of one pass during a catch-up.
pub const DEFAULT_PASS_BUDGET_SECS: u64 = 120;

pub use crate::engine::pull::ConnSettings;

/// One tree: a directory of the upstream with its own RECENT files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeConfig {
    /// Below the source path and below DEST (`""` = the root itself).
    pub subdir: String,
    /// Name of the principal pointer, default `RECENT.recent`.
    pub principal: String,
}

impl TreeConfig {
    pub fn root() -> Self {
        TreeConfig::at("")
    }
    pub fn at(subdir: &str) -> Self {
        TreeConfig { subdir: subdir.trim_matches('/').to_string(), principal: "RECENT.recent".into() }
    }
    /// Name used in logs and state file names.
    pub fn label(&self) -> String {
        if self.subdir.is_empty() {
            "/".into()
        } else {
            self.subdir.clone()
        }
    }
    fn file_key(&self) -> String {
        if self.subdir.is_empty() {
            "root".into()
        } else {
            format!("tree-{}", self.subdir.replace('/', "%2F"))
        }
    }
}

/// Everything [`watch`] needs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The upstream root (`rsync://host/module/path/`).
    pub source: RemoteSpec,
    /// The local mirror root.
    pub dest: PathBuf,
    /// The trees to follow (default: the root).
    pub trees: Vec<TreeConfig>,
    /// Where state, staging and locks live; default `<dest>.rmirror`.
    /// Must not be inside DEST.
    pub state_dir: Option<PathBuf>,
    pub conn: ConnSettings,
    /// Time between the starts of two loop iterations.
    pub interval: Duration,
    /// Run until every tree is caught up once, then return.
    pub once: bool,
    /// Assume the mirror is complete up to this epoch and follow the index
    /// from there (honoured once per value).
    pub since: Option<Epoch>,
    /// Full sync when the last one is older than this.
    pub full_every: Option<Duration>,
    /// Full sync when the last caught-up pass is older than this.
    pub max_age: Option<Duration>,
    /// Full sync on the first pass of each tree (iim `-f`).
    pub force_full: bool,
    /// When false a needed full sync is an error ([`PassError::FullSyncNotAllowed`]).
    pub allow_full_syncs: bool,
    pub max_files_per_pull: usize,
    /// Time budget of a pass during a catch-up (`None` with `once`).
    pub pass_budget: Option<Duration>,
    /// Compare file contents for content pulls (rsync `-c`).
    pub checksum: bool,
    /// `--safe-links` for every pull (default on; see [`PullSpec::safe_links`]).
    pub safe_links: bool,
    /// Base of the error back-off (12 s like rrr-client).
    pub error_backoff: Duration,
    /// An overall deadline for each pass (`--stop-after`), and its name in
    /// the error: a pass still running then stops with exit 30
    /// ([`crate::engine::deadline`]) and the next one starts after the back-off.
    pub pass_deadline: Option<(Duration, String)>,
    /// Rate limit of dirtymark-driven full syncs: a dirtymark that changes
    /// again sooner than this after the full sync the last change caused is
    /// noted, the index followed meanwhile, and the full sync done once the
    /// interval has passed (a server flapping its dirtymark on every poll must
    /// not cause a full sync on every poll). `None`: no limit.
    pub dirtymark_min_interval: Option<Duration>,
    /// `--max-delete`: a pass whose delete events would remove more than this
    /// many local entries deletes nothing and fails with exit 25, before any
    /// change (its events stay pending).
    pub max_delete: Option<u64>,
}

impl WatchConfig {
    pub fn new(source: RemoteSpec, dest: PathBuf) -> Self {
        WatchConfig {
            source,
            dest,
            trees: vec![TreeConfig::root()],
            state_dir: None,
            conn: ConnSettings::default(),
            interval: Duration::from_secs(DEFAULT_INTERVAL_SECS),
            once: false,
            since: None,
            full_every: None,
            max_age: None,
            force_full: false,
            allow_full_syncs: true,
            max_files_per_pull: DEFAULT_MAX_FILES_PER_PULL,
            pass_budget: Some(Duration::from_secs(DEFAULT_PASS_BUDGET_SECS)),
            checksum: false,
            safe_links: true,
            error_backoff: Duration::from_secs(12),
            pass_deadline: None,
            dirtymark_min_interval: Some(Duration::from_secs(DEFAULT_DIRTYMARK_MIN_INTERVAL_SECS)),
            max_delete: None,
        }
    }

    /// The state directory actually used.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            let mut s = self.dest.as_os_str().to_owned();
            // strip trailing slashes so "/srv/cpan/" → "/srv/cpan.rmirror"
            let t = s.to_string_lossy().trim_end_matches('/').to_string();
            if !t.is_empty() {
                s = t.into();
            }
            s.push(".rmirror");
            PathBuf::from(s)
        })
    }

    /// Path of a tree's state file.
    pub fn state_path(&self, tree: &TreeConfig) -> PathBuf {
        self.state_dir().join(format!("{}.state.json", tree.file_key()))
    }

    fn tree_ctx<'a>(&'a self, tree: &'a TreeConfig, log: Arc<dyn WatchLogger>) -> recent::TreeCtx<'a> {
        let mut source = self.source.clone();
        let mut path = source.path.clone();
        while path.ends_with(b"/") {
            path.pop();
        }
        if !tree.subdir.is_empty() {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(tree.subdir.as_bytes());
        }
        if !path.is_empty() {
            path.push(b'/');
        }
        source.path = path;
        let source_display = format!(
            "rsync://{}{}/{}",
            source.host,
            self.conn.port.or(source.port).map(|p| format!(":{p}")).unwrap_or_default(),
            String::from_utf8_lossy(&source.remote_arg())
        );
        let dest = if tree.subdir.is_empty() { self.dest.clone() } else { self.dest.join(&tree.subdir) };
        let sd = self.state_dir();
        recent::TreeCtx {
            cfg: self,
            tree,
            label: tree.label(),
            source,
            source_display,
            dest,
            state_path: sd.join(format!("{}.state.json", tree.file_key())),
            staging: sd.join(format!("{}.staging", tree.file_key())),
            log,
        }
    }

    fn check(&self) -> Result<(), PassError> {
        if self.trees.is_empty() {
            return Err(PassError::Config("no trees to follow".into()));
        }
        let sd = self.state_dir();
        let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        if abs(&sd).starts_with(abs(&self.dest)) {
            return Err(PassError::Config(format!(
                "the state directory {} must not be inside the mirror {}",
                sd.display(),
                self.dest.display()
            )));
        }
        for t in &self.trees {
            if t.subdir.split('/').any(|c| c == ".." || c == ".") || t.principal.contains('/') {
                return Err(PassError::Config(format!("bad tree {:?}", t.subdir)));
            }
        }
        Ok(())
    }
}

/// Log levels of [`WatchLogger::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Where the loop reports.  `tree` is the tree's label (`/`, `authors`).
pub trait WatchLogger: Send + Sync {
    fn log(&self, level: Level, tree: &str, msg: &str);
    /// After every pass (default: one info line, see [`PassReport::summary`]).
    fn pass(&self, report: &PassReport) {
        self.log(Level::Info, &report.tree, &report.summary());
    }
    /// After a pass failed (default: one error line with the reason).
    fn failed(&self, tree: &str, err: &PassError) {
        self.log(Level::Error, tree, &err.to_string());
    }
    /// The engine's counters during one pull of a pass (default: ignored).
    fn progress(&self, _p: &crate::engine::monitor::Progress) {}
    /// That pull ended, for good or not (default: nothing).
    fn pull_ended(&self) {}
}

/// Forwards to `tracing`.
pub struct TracingLogger;
impl WatchLogger for TracingLogger {
    fn log(&self, level: Level, tree: &str, msg: &str) {
        match level {
            Level::Error => tracing::error!(tree, "{msg}"),
            Level::Warn => tracing::warn!(tree, "{msg}"),
            Level::Info => tracing::info!(tree, "{msg}"),
            Level::Debug => tracing::debug!(tree, "{msg}"),
        }
    }
}

/// Tells [`watch`] to stop (between passes, or by abandoning the running
/// pass, which is safe: state is saved atomically after each step).
#[derive(Clone)]
pub struct StopSignal {
    rx: tokio::sync::watch::Receiver<bool>,
    _keep: Option<Arc<tokio::sync::watch::Sender<bool>>>,
}

/// The sending half of a [`StopSignal`].
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A connected stop handle and signal.
pub fn stop_pair() -> (StopHandle, StopSignal) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (StopHandle(tx), StopSignal { rx, _keep: None })
}

impl StopSignal {
    /// A signal that never fires.
    pub fn never() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        StopSignal { rx, _keep: Some(Arc::new(tx)) }
    }
    pub fn is_stopped(&self) -> bool {
        *self.rx.borrow()
    }
    /// Resolves when stopped (or when the handle was dropped without stopping: never).
    pub async fn stopped(&mut self) {
        loop {
            if *self.rx.borrow_and_update() {
                return;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Kind of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    Incremental,
    Full,
}

/// What one pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub tree: String,
    pub kind: PassKind,
    pub full_reason: Option<FullReason>,
    /// The dirtymark changed, but the full sync it asks for waits for
    /// [`WatchConfig::dirtymark_min_interval`]; this pass followed the index.
    pub dirtymark_deferred: bool,
    /// Caught up (false: the time budget ended a long catch-up).
    pub complete: bool,
    /// Actions (newest event per path) still to do at the start.
    pub events: usize,
    /// Paths asked for.
    pub requested: usize,
    /// Files the server actually sent.
    pub fetched: u64,
    pub deleted: u64,
    pub delete_not_found: u64,
    /// Paths that were gone upstream (a later event will say so).
    pub vanished: usize,
    pub recent_files_fetched: usize,
    pub published_recent: usize,
    pub bytes_received: u64,
    /// Newest event upstream (principal file).
    pub upstream_newest: Option<Epoch>,
    /// Everything up to here is applied.
    pub applied: Option<Epoch>,
    /// Seconds the applied state trails the upstream's newest event.
    pub lag_secs: f64,
    /// Seconds since the upstream's newest event.
    pub age_secs: Option<f64>,
    pub seconds: f64,
}

impl PassReport {
    fn new(tree: &str) -> Self {
        PassReport {
            tree: tree.to_string(),
            kind: PassKind::Incremental,
            full_reason: None,
            dirtymark_deferred: false,
            complete: false,
            events: 0,
            requested: 0,
            fetched: 0,
            deleted: 0,
            delete_not_found: 0,
            vanished: 0,
            recent_files_fetched: 0,
            published_recent: 0,
            bytes_received: 0,
            upstream_newest: None,
            applied: None,
            lag_secs: 0.0,
            age_secs: None,
            seconds: 0.0,
        }
    }

    /// One log line.
    pub fn summary(&self) -> String {
        let kind = match (&self.kind, &self.full_reason) {
            (PassKind::Full, Some(r)) => format!("full sync ({r})"),
            (PassKind::Full, None) => "full sync".into(),
            (PassKind::Incremental, _) => "pass".into(),
        };
        format!(
            "{kind}: {} events, {} requested, {} fetched, {} deleted, {} vanished, {} RECENT published{}; lag {:.1}s, newest upstream event {} ({}); {:.2}s",
            self.events,
            self.requested,
            self.fetched,
            self.deleted,
            self.vanished,
            self.published_recent,
            if self.complete { "" } else { ", catch-up continues" },
            self.lag_secs,
            self.upstream_newest.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            self.age_secs.map(|a| format!("{a:.0}s ago")).unwrap_or_else(|| "-".into()),
            self.seconds
        )
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("{msg}")]
    Pull { msg: String, code: ExitCode },
    #[error("{0}")]
    Recent(#[from] RecentError),
    #[error("{0}")]
    Io(String),
    #[error("a full sync is needed ({0}) but full syncs are not allowed")]
    FullSyncNotAllowed(FullReason),
    #[error("{0}")]
    Config(String),
    #[error("another rmirror is following this tree ({0})")]
    Locked(String),
}

impl PassError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            PassError::Pull { code, .. } => *code,
            PassError::Recent(_) => ExitCode::Protocol,
            PassError::Io(_) => ExitCode::FileIo,
            PassError::FullSyncNotAllowed(_) | PassError::Config(_) | PassError::Locked(_) => ExitCode::Syntax,
        }
    }
}

/// What [`watch`] returns.
#[derive(Debug, Default, Serialize)]
pub struct WatchSummary {
    pub passes: u64,
    pub failures: u64,
    /// Every report, with `once` only (bounded); else the last one per tree.
    pub reports: Vec<PassReport>,
}

/// An exclusive lock on a tree's state (held while the value lives).
pub struct TreeLock {
    _f: std::fs::File,
}

/// Take the tree's lock file, failing if another process holds it.
pub fn lock_tree(cfg: &WatchConfig, tree: &TreeConfig) -> Result<TreeLock, PassError> {
    let sd = cfg.state_dir();
    std::fs::create_dir_all(&sd).map_err(|e| PassError::Io(format!("cannot create {}: {e}", sd.display())))?;
    let p = sd.join(format!("{}.lock", tree.file_key()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| PassError::Io(format!("cannot open {}: {e}", p.display())))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| PassError::Locked(p.display().to_string()))?;
    Ok(TreeLock { _f: f })
}

/// One pass over one tree (the caller holds its lock, see [`lock_tree`]).
/// `budget` bounds a catch-up (`None` = until caught up).
pub async fn run_pass(
    cfg: &WatchConfig,
    tree: &TreeConfig,
    log: Arc<dyn WatchLogger>,
    budget: Option<Duration>,
    force_full: bool,
) -> Result<PassReport, PassError> {
    cfg.check()?;
    let ctx = cfg.tree_ctx(tree, log);
    recent::pass(&ctx, budget, force_full).await
}

/// The instant-mirroring loop (see the module docs).
pub async fn watch(cfg: &WatchConfig, log: Arc<dyn WatchLogger>, mut stop: StopSignal) -> Result<WatchSummary, PassError> {
    cfg.check()?;
    let _locks: Vec<TreeLock> = cfg.trees.iter().map(|t| lock_tree(cfg, t)).collect::<Result<_, _>>()?;
    let n = cfg.trees.len();
    let mut summary = WatchSummary::default();
    let mut failures = vec![0u32; n];
    let mut due = vec![Instant::now(); n];
    let mut caught_up = vec![false; n];
    let mut forced = vec![cfg.force_full; n];
    let mut last: Vec<Option<PassReport>> = vec![None; n];
    let budget = if cfg.once { None } else { cfg.pass_budget };
    loop {
        if stop.is_stopped() {
            break;
        }
        for i in 0..n {
            if Instant::now() < due[i] || (cfg.once && caught_up[i]) {
                continue;
            }
            let started = Instant::now();
            let tree = &cfg.trees[i];
            let deadline = cfg.pass_deadline.as_ref().map(|(d, what)| Deadline::after(*d, what.as_str()));
            let pass = deadline::within(deadline, run_pass(cfg, tree, log.clone(), budget, forced[i]));
            let r = tokio::select! {
                r = pass => r.unwrap_or_else(|deadline::Expired(d)| Err(PassError::Pull { msg: d.message(), code: ExitCode::Timeout })),
                _ = stop.stopped() => {
                    log.log(Level::Info, &tree.label(), "stopping");
                    break;
                }
            };
            summary.passes += 1;
            match r {
                Ok(rep) => {
                    forced[i] = false;
                    failures[i] = 0;
                    log.pass(&rep);
                    caught_up[i] = rep.complete;
                    due[i] = if rep.complete { started + cfg.interval } else { Instant::now() };
                    if cfg.once {
                        summary.reports.push(rep);
                    } else {
                        last[i] = Some(rep);
                    }
                }
                Err(e) => {
                    summary.failures += 1;
                    log.failed(&tree.label(), &e);
                    if cfg.once || matches!(e, PassError::FullSyncNotAllowed(_) | PassError::Config(_)) {
                        return Err(e);
                    }
                    failures[i] += 1;
                    let back = (cfg.error_backoff * failures[i]).min(Duration::from_secs(300));
                    log.log(Level::Info, &tree.label(), &format!("retrying in {}s", back.as_secs()));
                    due[i] = Instant::now() + back;
                }
            }
        }
        if stop.is_stopped() || (cfg.once && caught_up.iter().all(|&c| c)) {
            break;
        }
        let next = due.iter().min().copied().unwrap_or_else(Instant::now);
        let now = Instant::now();
        if next > now {
            tokio::select! {
                _ = tokio::time::sleep(next - now) => {}
                _ = stop.stopped() => break,
            }
        }
    }
    if !cfg.once {
        summary.reports = last.into_iter().flatten().collect();
    }
    Ok(summary)
}
