//! One overall deadline for a unit of work: `sync --stop-after/--stop-at`,
//! a job's `wall_timeout`, one `watch` pass.
//!
//! [`within`] runs a future with the deadline in scope. Every transfer
//! started inside it ([`super::run`]) watches the deadline and, when it
//! passes, aborts its session the way a failed run does: the file in
//! progress is dropped (or kept in `--partial-dir`), files already verified
//! are published, nothing is deleted, directory times are left alone, and the
//! transfer fails with exit 30 and a message naming the deadline. A transfer
//! that would start after the deadline fails at once, before connecting.
//! Whatever else is still running [`GRACE`] after the deadline (a hook, a
//! planner step) is dropped, and [`within`] returns [`Expired`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How long the work may take to wind down after the deadline before it is dropped.
pub const GRACE: Duration = Duration::from_secs(10);

/// When to stop, and how to name it in the error (`--stop-after=5`, `wall_timeout 6h`).
#[derive(Clone, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub what: Arc<str>,
}

impl Deadline {
    /// A deadline `d` from now.
    pub fn after(d: Duration, what: impl Into<Arc<str>>) -> Self {
        Deadline { at: Instant::now() + d, what: what.into() }
    }

    /// The error message of a transfer stopped by it.
    pub fn message(&self) -> String {
        format!("overall deadline reached ({}): transfer stopped, no deletions done", self.what)
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// The work outlived its deadline by more than [`GRACE`] and was dropped.
#[derive(Debug)]
pub struct Expired(pub Deadline);

tokio::task_local! {
    static CURRENT: Deadline;
}

/// Run `fut` under `deadline` (see the module docs). `None` runs it unbounded.
pub async fn within<F: Future>(deadline: Option<Deadline>, fut: F) -> Result<F::Output, Expired> {
    let Some(d) = deadline else { return Ok(fut.await) };
    let at = d.at + GRACE;
    CURRENT
        .scope(d.clone(), async move { tokio::time::timeout_at(at, fut).await })
        .await
        .map_err(|_| Expired(d))
}

/// The deadline the current task runs under, if any.
pub fn current() -> Option<Deadline> {
    CURRENT.try_with(|d| d.clone()).ok()
}

/// Sleep until the current deadline; never, without one.
pub(crate) async fn reached(d: Option<&Deadline>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.at).await,
        None => std::future::pending().await,
    }
}
