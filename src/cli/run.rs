//! `rmirror run -c mirrors.toml [--check] [--once] [--only JOB] [--skip JOB] [--ignore-timers]`.

use std::path::PathBuf;

use super::CliError;
use crate::daemon::{config, runner};
use crate::exit::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The jobs file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Only validate the file; print every error with its line and key.
    #[arg(long)]
    pub check: bool,
    /// Run what is due now, wait for it, exit (for cron).
    #[arg(long)]
    pub once: bool,
    /// Run only this job (repeatable).
    #[arg(long, value_name = "JOB")]
    pub only: Vec<String>,
    /// Never run this job (repeatable).
    #[arg(long, value_name = "JOB")]
    pub skip: Vec<String>,
    /// Start every selected job now, whatever its timer says.
    #[arg(long)]
    pub ignore_timers: bool,
    /// Print one JSON object per finished job run on stdout (JSON lines; see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Log errors only.
    #[arg(short, long)]
    pub quiet: bool,
    /// More logs (-vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Debug logs (the same as -vv).
    #[arg(long, hide = true)]
    pub debug: bool,
}

impl RunArgs {
    pub fn verbosity(&self) -> super::log::Verbosity {
        super::log::Verbosity::from_flags(self.quiet, self.verbose, self.debug)
    }
}

pub async fn cmd_run(a: &RunArgs) -> Result<ExitCode, CliError> {
    if a.check {
        return match config::load(&a.config) {
            Ok(c) => {
                println!("{}: OK, {} jobs, max_parallel {}", a.config.display(), c.jobs.len(), c.max_parallel);
                for j in &c.jobs {
                    println!(
                        "  {} ({}) -> {}: {} upstream(s){}",
                        j.name,
                        j.strategy.as_str(),
                        j.destination.display(),
                        j.upstreams.len(),
                        j.discover.as_deref().map(|d| format!(" + discovered from {d}")).unwrap_or_default()
                    );
                }
                Ok(ExitCode::Ok)
            }
            Err(errs) => {
                for e in &errs {
                    eprintln!("{}:{e}", a.config.display());
                }
                Err(CliError { msg: format!("{}: {} error(s)", a.config.display(), errs.len()), code: ExitCode::Syntax })
            }
        };
    }
    let opts = runner::RunOptions {
        config: a.config.clone(),
        only: a.only.clone(),
        skip: a.skip.clone(),
        ignore_timers: a.ignore_timers,
        once: a.once,
        json: a.json,
    };
    runner::run(opts).await.map_err(|msg| CliError { msg, code: ExitCode::Syntax })
}
