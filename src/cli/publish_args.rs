//! `--write-trace[=NAME]` and `--write-recent` for `sync` and `watch`: what a
//! run leaves in DEST for the mirrors below (see [`crate::publish`]).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::engine::monitor::Monitor;
use crate::engine::{SyncError, SyncReport};
use crate::exit::ExitCode;
use crate::publish::{self, PublishConfig, Recorder, RunInfo, TraceConfig};

use super::CliError;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// After each successful run write a Debian trace file project/trace/NAME
    /// (default NAME: this host's name).
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub write_trace: Option<String>,
    /// Write DEST's own RECENT files (RECENT-1h.json … RECENT-Z.json) from what each run
    /// changed, so a downstream `rmirror watch` can follow this mirror.
    #[arg(long)]
    pub write_recent: bool,
}

impl PublishArgs {
    /// The writers asked for, if any.
    pub fn config(&self) -> Result<Option<PublishConfig>, CliError> {
        let cfg = PublishConfig {
            trace: self.write_trace.as_ref().map(|n| TraceConfig {
                host: (!n.is_empty()).then(|| n.clone()),
                ..Default::default()
            }),
            recent: self.write_recent,
            ..Default::default()
        };
        if cfg.is_empty() {
            return Ok(None);
        }
        cfg.validate().map_err(CliError::syntax)?;
        Ok(Some(cfg))
    }
}

/// Wrap `mon` so the run's changes are recorded.
pub fn recorder(mon: Arc<dyn Monitor>) -> Arc<Recorder> {
    Arc::new(Recorder::new(mon))
}

/// After a `sync`: write what `cfg` asks for; an error to report if that failed.
pub fn after_sync(
    dest: &Path,
    cfg: &PublishConfig,
    rec: &Recorder,
    upstream: &str,
    started: SystemTime,
    res: &Result<SyncReport, SyncError>,
) -> Option<CliError> {
    let (success, bytes) = match res {
        Ok(r) => (matches!(r.exit_code(), ExitCode::Ok | ExitCode::Vanished), r.bytes_read),
        Err(_) => (false, 0),
    };
    let info = RunInfo {
        started,
        ended: SystemTime::now(),
        upstream: upstream.to_string(),
        trigger: "cmdline".into(),
        bytes_received: bytes,
        events: rec.take(),
        success,
    };
    if rec.skipped() > 0 {
        let mut e = std::io::stderr().lock();
        let _ = std::io::Write::write_fmt(
            &mut e,
            format_args!("rmirror: {} changed names are not UTF-8 and are not in the RECENT files\n", rec.skipped()),
        );
    }
    match publish::after_run(dest, cfg, &info) {
        Ok(_) => None,
        Err(msg) => Some(CliError { msg, code: ExitCode::FileIo }),
    }
}
