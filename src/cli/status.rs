//! `rmirror status -c mirrors.toml [--json]` (or `--status-file FILE`).

use std::path::PathBuf;

use super::CliError;
use crate::daemon::{config, runner, status};
use crate::exit::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The jobs file (locates the status file and computes next due times).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read this status file instead.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_status(a: &StatusArgs) -> Result<ExitCode, CliError> {
    let cfg = match &a.config {
        Some(p) => Some(config::load(p).map_err(|errs| CliError {
            msg: errs.iter().map(|e| format!("{}:{e}", p.display())).collect::<Vec<_>>().join("\n"),
            code: ExitCode::Syntax,
        })?),
        None => None,
    };
    let path = match (&a.status_file, &cfg) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.status_file.clone(),
        (None, None) => return Err(CliError { msg: "give -c mirrors.toml or --status-file FILE".into(), code: ExitCode::Syntax }),
    };
    let doc = status::read(&path).map_err(|msg| CliError { msg, code: ExitCode::FileSelect })?;
    let rows = runner::status_rows(cfg.as_ref(), &doc);
    if a.json {
        let jobs: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(n, s)| (n.clone(), serde_json::to_value(s).unwrap_or_default())).collect();
        let out = serde_json::json!({ "status_file": path.display().to_string(), "jobs": jobs });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(ExitCode::Ok);
    }
    let t = |x: Option<f64>| x.map(runner::fmt_time).unwrap_or_else(|| "-".into());
    let mut table = vec![vec![
        "JOB".to_string(), "RESULT".into(), "EXIT".into(), "LAST START".into(), "LAST END".into(), "FILES".into(), "BYTES".into(),
        "NEXT DUE".into(), "UPSTREAM".into(),
    ]];
    let now = runner::now_f();
    for (n, s) in &rows {
        let due = match s.next_due {
            Some(d) if d <= now => "now".to_string(),
            d => t(d),
        };
        table.push(vec![
            n.clone(),
            s.result.map(|r| r.as_str().to_string()).unwrap_or_else(|| "never".into()),
            s.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            t(s.last_start),
            t(s.last_end),
            s.files.to_string(),
            crate::text::human_bytes(s.bytes),
            due,
            s.upstream.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&table);
    for (n, s) in &rows {
        if !s.message.is_empty() {
            println!("{n}: {}", s.message);
        }
    }
    Ok(ExitCode::Ok)
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}
