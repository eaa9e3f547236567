//! How one job run moves the tree from one chosen upstream: a small trait with
//! three strategies (`full`, `marker`, and `recent` over `crate::plan`).
//!
//! * `full`: one sync with delete (the engine deletes after the transfer and,
//!   as with `--delay-updates`, renames its temps into place together, the
//!   late-publish patterns last).
//! * `marker` (IUS): fetch the marker into a private staging dir; equal to the
//!   local copy → no-op; otherwise the full sync with the marker excluded, and
//!   the staged marker renamed into place last.
//!
//! Both hold back the late phase (and deletions) when the upstream's top level
//! shows an update in progress (`update_markers`, ftpsync's
//! `Archive-Update-in-Progress-*`); the run then ends as `retry`, and the
//! marker is not published.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::monitor::Monitor;
use crate::engine::pull::PullSpec;
use crate::engine::{SyncError, SyncReport};
use crate::exit::ExitCode;
use crate::filter::FilterList;
use crate::remote::RemoteSpec;

use super::config::{JobConfig, MarkerFormat, StrategyKind};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a job run needs to know, for one upstream.
pub struct RunCtx {
    pub job: Arc<JobConfig>,
    pub upstream: String,
    pub password: Option<Vec<u8>>,
    /// Private per-job staging dir (outside the published tree).
    pub staging: PathBuf,
    /// The marker as already fetched from this upstream by the probe, if any.
    pub prefetched_marker: Option<PathBuf>,
    pub monitor: Arc<dyn Monitor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The tree was synced.
    Synced,
    /// Nothing to do (unchanged marker).
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub outcome: Outcome,
    pub exit: ExitCode,
    pub sessions: u32,
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
    /// The run is not complete and should be retried soon: why (the upstream
    /// was being updated, so the late phase was held back).
    pub retry: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobError {
    pub msg: String,
    pub code: ExitCode,
    /// The upstream's fault (connection, protocol, timeout): another upstream may do.
    pub upstream_fault: bool,
}

impl JobError {
    pub fn local(msg: impl Into<String>, code: ExitCode) -> Self {
        JobError { msg: msg.into(), code, upstream_fault: false }
    }
}

impl From<SyncError> for JobError {
    fn from(e: SyncError) -> Self {
        let upstream_fault = !matches!(e, SyncError::Local { .. });
        JobError { msg: e.to_string(), code: e.exit_code(), upstream_fault }
    }
}

/// A strategy: runs the job against one upstream.
pub trait Planner: Send + Sync {
    fn run<'a>(&'a self, ctx: &'a RunCtx) -> BoxFut<'a, Result<RunResult, JobError>>;
}

/// The planner for a strategy, or why there is none.
pub fn planner_for(kind: &StrategyKind) -> Result<Arc<dyn Planner>, String> {
    match kind {
        StrategyKind::Full => Ok(Arc::new(FullPlanner)),
        StrategyKind::Marker => Ok(Arc::new(MarkerPlanner)),
        StrategyKind::Recent => Ok(Arc::new(RecentPlanner)),
    }
}

/// `recent`: follow the upstream's RECENT change logs (`crate::plan`), one
/// caught-up pass per run; the planner falls back to a full sync with delete
/// when the local copy is new, stale, or the logs have a gap or a new dirtymark.
pub struct RecentPlanner;

struct MonitorLog(Arc<dyn Monitor>);
impl crate::plan::WatchLogger for MonitorLog {
    fn log(&self, level: crate::plan::Level, tree: &str, msg: &str) {
        if matches!(level, crate::plan::Level::Error | crate::plan::Level::Warn) {
            self.0.local_error(&format!("{tree}: {msg}"));
        } else {
            tracing::info!(tree, "{msg}");
        }
    }
}

impl Planner for RecentPlanner {
    fn run<'a>(&'a self, ctx: &'a RunCtx) -> BoxFut<'a, Result<RunResult, JobError>> {
        Box::pin(async move {
            let source = remote_at(&ctx.upstream)?;
            let mut cfg = crate::plan::WatchConfig::new(source, ctx.job.destination.clone());
            cfg.once = true;
            // Planner state beside the job's other private files, never in the tree.
            cfg.state_dir = Some(ctx.staging.join("recent-state"));
            cfg.conn.password = ctx.password.clone();
            cfg.conn.timeout = ctx.job.timeout;
            cfg.conn.contimeout = ctx.job.contimeout;
            cfg.safe_links = ctx.job.safe_links;
            let log: Arc<dyn crate::plan::WatchLogger> = Arc::new(MonitorLog(ctx.monitor.clone()));
            let summary = crate::plan::watch(&cfg, log, crate::plan::StopSignal::never())
                .await
                .map_err(|e| JobError { msg: e.to_string(), code: e.exit_code(), upstream_fault: matches!(e, crate::plan::PassError::Pull { .. } | crate::plan::PassError::Recent(_)) })?;
            let files: u64 = summary.reports.iter().map(|r| r.fetched).sum();
            let bytes: u64 = summary.reports.iter().map(|r| r.bytes_received).sum();
            let deleted: u64 = summary.reports.iter().map(|r| r.deleted).sum();
            let outcome = if files == 0 && deleted == 0 { Outcome::Unchanged } else { Outcome::Synced };
            Ok(RunResult { outcome, exit: ExitCode::Ok, sessions: summary.passes as u32, files, bytes, deleted, retry: None })
        })
    }
}

/// `upstream` with `rel` appended to its path (a directory URL).
pub fn remote_at(upstream: &str) -> Result<RemoteSpec, JobError> {
    let mut r = crate::remote::parse(upstream).map_err(|e| JobError::local(e, ExitCode::Syntax))?;
    if !r.path.is_empty() && !r.path.ends_with(b"/") {
        r.path.push(b'/');
    }
    Ok(r)
}

/// A pull spec with the job's connection settings.
pub fn base_spec(job: &JobConfig, source: RemoteSpec, dest: &Path, password: Option<Vec<u8>>) -> PullSpec {
    let mut ps = PullSpec::new(source, dest.to_path_buf());
    ps.conn.timeout = job.timeout;
    ps.conn.contimeout = job.contimeout;
    ps.conn.password = password;
    ps.partial_dir = job.partial_dir.clone();
    // A job's tree appears to readers all at once (the late paths after it):
    // its files are renamed into place together at the end.
    ps.delay_updates = true;
    ps.safe_links = job.safe_links;
    ps
}

fn check_report(rep: &SyncReport, what: &str) -> Result<(), JobError> {
    let code = rep.exit_code();
    if code == ExitCode::Ok {
        return Ok(());
    }
    // Vanished files (24) are normal on a live archive; everything else fails the run.
    if code == ExitCode::Vanished {
        return Ok(());
    }
    Err(JobError {
        msg: format!("{what} ended with exit code {} ({code:?})", code.code()),
        code,
        upstream_fault: !matches!(code, ExitCode::DelLimit | ExitCode::FileIo),
    })
}

/// Fetch one file (relative to `upstream`) into `dir`, keeping its relative path.
pub async fn fetch_file(
    job: Option<&JobConfig>,
    upstream: &str,
    rel: &str,
    dir: &Path,
    password: Option<Vec<u8>>,
    timeout: Option<Duration>,
    monitor: Arc<dyn Monitor>,
) -> Result<PathBuf, JobError> {
    std::fs::create_dir_all(dir).map_err(|e| JobError::local(format!("cannot create {}: {e}", dir.display()), ExitCode::FileIo))?;
    // Ask from the module root for the full path: the name list is then
    // relative to the root, as rsync's --files-from with -R expects.
    let mut src = remote_at(upstream)?;
    let mut rel_full = String::from_utf8_lossy(&src.path).into_owned();
    rel_full.push_str(rel);
    src.path.clear();
    let rel = rel_full.as_str();
    let mut ps = match job {
        Some(j) => base_spec(j, src, dir, password),
        None => {
            let mut p = PullSpec::new(src, dir.to_path_buf());
            p.conn.timeout = timeout;
            p.conn.contimeout = timeout;
            p.conn.password = password;
            p.delay_updates = true;
            p
        }
    };
    ps.files_from = Some(vec![rel.as_bytes().to_vec()]);
    ps.recursive = false;
    // A marker can change within a second and keep its size: compare by
    // checksum (one small file, so cheap). The staged copy is kept between
    // runs, so an unchanged marker is not sent at all.
    ps.checksum = true;
    let rep = crate::engine::pull::pull(&ps, monitor).await?;
    let out = dir.join(rel);
    if rep.exit_code() != ExitCode::Ok || !out.is_file() {
        return Err(JobError {
            msg: format!("cannot fetch {rel} from {upstream} (exit code {})", rep.exit_code().code()),
            code: if rep.exit_code() == ExitCode::Ok { ExitCode::Partial } else { rep.exit_code() },
            upstream_fault: true,
        });
    }
    Ok(out)
}

fn filters_from(rules: &[String], extra_first: &[String], extra_last: &[String]) -> Result<FilterList, JobError> {
    let mut fl = FilterList::new();
    for r in extra_first.iter().chain(rules).chain(extra_last) {
        fl.add_rule(r).map_err(|e| JobError::local(format!("filter rule {r:?}: {e}"), ExitCode::Syntax))?;
    }
    Ok(fl)
}

fn add(total: &mut RunResult, rep: &SyncReport) {
    total.sessions += 1;
    total.files += rep.files_transferred;
    total.bytes += rep.bytes_read;
    total.deleted += rep.deleted;
    if rep.exit_code() != ExitCode::Ok && total.exit == ExitCode::Ok {
        total.exit = rep.exit_code();
    }
}

/// The tree sync both planners share: one session with delete (after the
/// transfer), `hold_back` (exact paths the caller publishes itself) excluded
/// and protected, and the job's late-publish patterns renamed into place by
/// the engine after everything else.
async fn sync_tree(ctx: &RunCtx, hold_back: &[String], total: &mut RunResult) -> Result<(), JobError> {
    let job = &ctx.job;
    let src = remote_at(&ctx.upstream)?;
    std::fs::create_dir_all(&job.destination)
        .map_err(|e| JobError::local(format!("cannot create {}: {e}", job.destination.display()), ExitCode::FileIo))?;
    let mut first: Vec<String> = hold_back.iter().map(|p| format!("- /{}", p.trim_start_matches('/'))).collect();
    // files the job writes itself for the mirrors below (crate::publish)
    first.extend(job.publish.exclude_rules());
    let mut ps = base_spec(job, src, &job.destination, ctx.password.clone());
    ps.delete = true;
    ps.max_delete = job.max_delete;
    ps.filters = Arc::new(filters_from(&job.filters, &first, &[])?);
    ps.late_publish = job.late_publish.clone();
    ps.update_markers = job.update_markers.clone();
    let rep = crate::engine::pull::pull(&ps, ctx.monitor.clone()).await?;
    add(total, &rep);
    check_report(&rep, "the tree sync")?;
    if let Some(m) = &rep.upstream_updating {
        total.retry = Some(format!(
            "upstream update in progress ({} on {}): {} late path(s) and deletions held back; retrying",
            crate::text::escape_name(m),
            ctx.upstream,
            rep.late_held
        ));
    }
    Ok(())
}

pub struct FullPlanner;

impl Planner for FullPlanner {
    fn run<'a>(&'a self, ctx: &'a RunCtx) -> BoxFut<'a, Result<RunResult, JobError>> {
        Box::pin(async move {
            let mut total = new_result(Outcome::Synced);
            sync_tree(ctx, &[], &mut total).await?;
            Ok(total)
        })
    }
}

fn new_result(outcome: Outcome) -> RunResult {
    RunResult { outcome, exit: ExitCode::Ok, sessions: 0, files: 0, bytes: 0, deleted: 0, retry: None }
}

/// The `Archive serial:` field of a Debian trace file.
pub fn archive_serial(data: &[u8]) -> Option<String> {
    let t = String::from_utf8_lossy(data);
    t.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("Archive serial").then(|| v.trim().to_string())
    })
}

/// Whether two marker contents say the same.
pub fn markers_equal(format: MarkerFormat, a: &[u8], b: &[u8]) -> bool {
    match format {
        MarkerFormat::Plain => a == b,
        MarkerFormat::Trace => match (archive_serial(a), archive_serial(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

pub struct MarkerPlanner;

impl Planner for MarkerPlanner {
    fn run<'a>(&'a self, ctx: &'a RunCtx) -> BoxFut<'a, Result<RunResult, JobError>> {
        Box::pin(async move {
            let job = &ctx.job;
            let mut total = new_result(Outcome::Unchanged);
            let staged = match &ctx.prefetched_marker {
                Some(p) => p.clone(),
                None => {
                    let p = fetch_file(Some(job), &ctx.upstream, &job.marker, &ctx.staging, ctx.password.clone(), None, ctx.monitor.clone())
                        .await?;
                    total.sessions += 1;
                    p
                }
            };
            let new = std::fs::read(&staged)
                .map_err(|e| JobError::local(format!("cannot read staged marker {}: {e}", staged.display()), ExitCode::FileIo))?;
            let local_path = job.destination.join(&job.marker);
            if let Ok(old) = std::fs::read(&local_path) {
                if markers_equal(job.marker_format, &old, &new) {
                    return Ok(total);
                }
            }
            total.outcome = Outcome::Synced;
            sync_tree(ctx, std::slice::from_ref(&job.marker), &mut total).await?;
            if total.retry.is_some() {
                // The marker is the last thing published: not for a held-back tree.
                return Ok(total);
            }
            publish_file(&staged, &local_path)
                .map_err(|e| JobError::local(format!("cannot publish the marker {}: {e}", local_path.display()), ExitCode::FileIo))?;
            total.files += 1;
            Ok(total)
        })
    }
}

/// Copy `staged` to `dest` through a temp name and rename it into place,
/// keeping mode and mtime, and leaving the parent directory's mtime as it was.
pub fn publish_file(staged: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = dest.parent().ok_or_else(|| std::io::Error::other("no parent"))?;
    std::fs::create_dir_all(parent)?;
    let parent_mtime = std::fs::metadata(parent)?.modified()?;
    let md = std::fs::metadata(staged)?;
    let name = dest.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = parent.join(format!(".{}.rmirror-publish", name.to_string_lossy()));
    std::fs::copy(staged, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(md.permissions().mode() & 0o7777))?;
    let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
    f.set_modified(md.modified()?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dest)?;
    let d = std::fs::File::open(parent)?;
    d.set_modified(parent_mtime)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_serials() {
        let a = b"Mon Jan  1 00:00:00 UTC 2024\nDate: Mon, 01 Jan 2024 00:00:00 +0000\nArchive serial: 2024010101\n";
        let b = b"Mon Jan  1 06:00:00 UTC 2024\nDate: Mon, 01 Jan 2024 06:00:00 +0000\nArchive serial: 2024010101\n";
        let c = b"Archive serial: 2024010102\n";
        assert!(markers_equal(MarkerFormat::Trace, a, b));
        assert!(!markers_equal(MarkerFormat::Trace, a, c));
        assert!(!markers_equal(MarkerFormat::Plain, a, b));
    }

    #[test]
    fn recent_is_not_silently_something_else() {
        assert!(planner_for(&StrategyKind::Recent).is_ok());
    }
}
