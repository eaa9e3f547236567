//! `rmirror probe [--signal NAME] [--max-age DUR] [--json] URL…`: rank
//! candidate upstreams by the freshness signal they publish, then latency.

use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use crate::daemon::config::{parse_duration, DEFAULT_MAX_AGE};
use crate::daemon::probe::{self, Candidate, ProbeOpts, SignalKind, Status};
use crate::engine::monitor::Silent;
use crate::exit::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Candidate trees (rsync://host/module/ or http(s)://host/path/), a signal
    /// file URL (…/mirror.yml, …/RECENT-1h.json, …/CURRENT), or a mirror list
    /// (a mirror.yml/.json with `mirrors`).
    #[arg(required = true)]
    pub urls: Vec<String>,
    /// Signal file fetched from each candidate tree (mirror.yml, mirror.json,
    /// RECENT-1h.json, CURRENT, project/trace/HOST…).
    #[arg(long, default_value = "mirror.yml", value_name = "PATH")]
    pub signal: String,
    /// Drop candidates older than this (default 1d5m).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Per-candidate timeout in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_probe(a: &ProbeArgs) -> Result<ExitCode, CliError> {
    let max_age = match &a.max_age {
        Some(s) => parse_duration(s).map_err(|e| CliError { msg: format!("--max-age: {e}"), code: ExitCode::Syntax })?,
        None => DEFAULT_MAX_AGE,
    };
    probe::check_rel_path(&a.signal).map_err(|e| CliError { msg: format!("--signal: {e}"), code: ExitCode::Syntax })?;
    let opts = ProbeOpts { max_age, timeout: Duration::from_secs(a.timeout.max(1)), password: None, monitor: Arc::new(Silent) };
    let stage = tempfile_dir().map_err(|e| CliError { msg: format!("cannot create a staging dir: {e}"), code: ExitCode::FileIo })?;
    let mut cands: Vec<Candidate> = Vec::new();
    let mut discoveries = Vec::new();
    let mut idx = 0usize;
    for u in &a.urls {
        idx += 1;
        let dir = stage.path.join(format!("u{idx}"));
        let (base, name) = probe::split_file_url(u);
        let is_file = !name.is_empty() && !u.ends_with('/') && (name.contains('.') || name == "CURRENT" || u.contains("/trace/"));
        if !is_file {
            cands.extend(probe::probe_all(std::slice::from_ref(u), &a.signal, &dir, &opts).await);
            continue;
        }
        let kind = SignalKind::for_path(&name);
        if matches!(kind, SignalKind::MirrorYaml | SignalKind::MirrorJson) {
            // A mirror list, or one mirror's own mirror.yml.
            match probe::discover(u, &dir, &opts).await {
                Ok(d) => {
                    discoveries.push(d);
                    continue;
                }
                Err(e) if e.contains("lists no mirrors") => {}
                Err(e) => {
                    let mut c = probe::probe_one(&base, &name, &dir, &opts).await;
                    if c.status == Status::Fresh {
                        c.detail = e;
                    }
                    cands.push(c);
                    continue;
                }
            }
        }
        cands.push(probe::probe_one(&base, &name, &dir, &opts).await);
    }
    let mut masters = Vec::new();
    for d in discoveries {
        if let Some(m) = &d.master {
            masters.push(serde_json::json!({"list": d.list_url, "master": m, "votes": d.master_votes}));
        } else {
            masters.push(serde_json::json!({"list": d.list_url, "master": null, "votes": d.master_votes}));
        }
        cands.extend(d.candidates);
    }
    probe::rank(&mut cands);
    let any_fresh = cands.iter().any(|c| c.status == Status::Fresh);
    if a.json {
        let ranked: Vec<serde_json::Value> = cands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["rank"] = if c.status == Status::Fresh { serde_json::json!(i + 1) } else { serde_json::Value::Null };
                v
            })
            .collect();
        let doc = serde_json::json!({"max_age_secs": max_age.as_secs(), "candidates": ranked, "masters": masters});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        let mut rows = vec![vec!["RANK".to_string(), "STATUS".into(), "AGE".into(), "LATENCY".into(), "SIGNAL".into(), "URL".into()]];
        for (i, c) in cands.iter().enumerate() {
            rows.push(vec![
                if c.status == Status::Fresh { (i + 1).to_string() } else { "-".into() },
                format!("{:?}", c.status).to_lowercase(),
                c.age_secs.map(probe::fmt_age).unwrap_or_else(|| "-".into()),
                format!("{}ms", c.latency_ms),
                format!("{:?}", c.kind).to_lowercase(),
                if c.detail.is_empty() { c.url.clone() } else { format!("{} ({})", c.url, c.detail) },
            ]);
        }
        super::status::print_table(&rows);
        for m in &masters {
            match m["master"].as_str() {
                Some(x) => println!("master from {}: {x} (named by {} fresh mirrors)", m["list"].as_str().unwrap_or(""), m["votes"]),
                None => println!("master from {}: no agreement (needs two fresh mirrors naming the same one)", m["list"].as_str().unwrap_or("")),
            }
        }
    }
    Ok(if any_fresh { ExitCode::Ok } else { ExitCode::Partial })
}

/// A private temp dir removed on drop (the probe's staging area).
struct TmpDir {
    path: std::path::PathBuf,
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir() -> std::io::Result<TmpDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("rmirror-probe-{}-{i}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
                return Ok(TmpDir { path: p });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temp name"))
}
