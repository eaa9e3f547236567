//! Many mirrors in one process: `rmirror run -c mirrors.toml` runs jobs on
//! timers (at most `max_parallel` at once), with per-destination locks, a
//! persisted status file, the marker (IUS) strategy, and upstream ranking by
//! freshness with failover. Printing here goes to stderr as log lines.
//!
//! * [`config`] — the TOML file, validated with line and key per error.
//! * [`strategy`] — the `Planner` trait and the `full`/`marker` planners
//!   (`recent` plugs in here when its planner lands).
//! * [`probe`] — freshness signals, ranking, mirror-list discovery.
//! * [`lock`], [`status`] — destination locks and the status file.
//! * [`runner`] — the scheduler.
//! * [`scoreboard`] — `status.html` beside the status file.
pub mod config;
pub mod lock;
pub mod probe;
pub mod runner;
pub mod scoreboard;
pub mod status;
pub mod strategy;
