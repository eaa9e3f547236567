//! `status.html`: the `run` scoreboard, one self-contained page (no scripts,
//! no external resources) written next to the status file after every job.
//! Every string that came from the config, an upstream or an error message is
//! HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::runner::fmt_time;
use super::status::{JobStatus, RunState};
use crate::metrics::JobMetrics;

/// `status.html` beside `status_file`.
pub fn path_for(status_file: &Path) -> PathBuf {
    status_file.with_file_name("status.html")
}

/// Escape text for HTML element content and quoted attribute values.
pub use crate::text::escape_html as escape;

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn human_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// The page for `rows` (job name, status) with the lag and alarms from `metrics`, at `now`.
pub fn render(title: &str, rows: &[(String, JobStatus)], metrics: &BTreeMap<String, JobMetrics>, now: f64) -> String {
    let mut h = String::new();
    let counts = |st: RunState| rows.iter().filter(|(_, s)| s.result == Some(st)).count();
    let failed = counts(RunState::Failed);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"60\">\
<title>{t}</title>\n<style>\n{CSS}</style></head>\n<body>\n<header><h1>{t}</h1>\
<p class=\"summary\"><span id=\"total\">{n} jobs</span> · <span class=\"ok\">{ok} ok</span> · \
<span class=\"unchanged\">{un} unchanged</span> · <span class=\"{fc}\">{failed} failed</span> · \
<span class=\"retry\">{re} retry</span> · \
<span class=\"running\">{ru} running</span> · generated <time>{gen}</time></p></header>\n",
        t = escape(title),
        n = rows.len(),
        ok = counts(RunState::Ok),
        un = counts(RunState::Unchanged),
        fc = if failed > 0 { "failed" } else { "muted" },
        ru = counts(RunState::Running),
        re = counts(RunState::Retry),
        gen = escape(&fmt_time(now)),
    );
    h.push_str(
        "<table id=\"jobs\"><thead><tr><th>Job</th><th>Result</th><th>Exit</th><th>Lag</th>\
<th>Last success</th><th>Last run</th><th>Duration</th><th>Files</th><th>Bytes</th><th>Next due</th><th>Upstream</th></tr></thead>\n<tbody>\n",
    );
    for (name, s) in rows {
        let m = metrics.get(name);
        let result = s.result.map(|r| r.as_str()).unwrap_or("never");
        let stuck = m.is_some_and(|m| m.stuck);
        let lag = m.and_then(|m| m.effective_lag(now)).or_else(|| s.last_success.map(|t| (now - t).max(0.0)));
        let lag_txt = lag.map(human_secs).unwrap_or_else(|| "—".into());
        let ago = |t: Option<f64>| match t {
            Some(t) => format!("<time title=\"{}\">{} ago</time>", escape(&fmt_time(t)), human_secs(now - t)),
            None => "<span class=\"muted\">never</span>".into(),
        };
        let duration = match (s.last_start, s.last_end) {
            (Some(a), Some(b)) if b >= a => human_secs(b - a),
            _ => "—".into(),
        };
        let due = match s.next_due {
            _ if s.result == Some(RunState::Running) => "running".to_string(),
            Some(d) if d <= now => "now".into(),
            Some(d) => format!("in {}", human_secs(d - now)),
            None => "—".into(),
        };
        let _ = writeln!(
            h,
            "<tr class=\"job {result}\" data-job=\"{jn}\" data-result=\"{result}\"{lagattr}>\
<td class=\"name\">{jn}</td><td class=\"result\"><span class=\"badge {result}\">{result}</span>{stuck}</td>\
<td class=\"exit\">{exit}</td><td class=\"lag\">{lag_txt}</td><td>{succ}</td><td>{last}</td><td>{duration}</td>\
<td class=\"num\">{files}</td><td class=\"num\">{bytes}</td><td>{due}</td><td class=\"upstream\">{up}</td></tr>",
            jn = escape(name),
            lagattr = lag.map(|l| format!(" data-lag-seconds=\"{}\"", l.round() as u64)).unwrap_or_default(),
            stuck = if stuck { " <span class=\"badge failed\">stuck</span>" } else { "" },
            exit = s.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
            succ = ago(s.last_success),
            last = ago(s.last_end),
            files = s.files,
            bytes = crate::text::human_bytes(s.bytes),
            up = escape(s.upstream.as_deref().unwrap_or("—")),
        );
        if !s.message.is_empty() {
            let _ = writeln!(h, "<tr class=\"message {result}\"><td></td><td colspan=\"10\">{}</td></tr>", escape(&s.message));
        }
    }
    h.push_str("</tbody></table>\n<footer>rmirror ");
    h.push_str(env!("CARGO_PKG_VERSION"));
    h.push_str(" · lag: how far the local copy trails the upstream (signal times when known, else time since the last successful run started) · times in UTC</footer>\n</body></html>\n");
    h
}

/// Render and write `status.html` beside the status file, atomically.
pub fn write(status_file: &Path, rows: &[(String, JobStatus)], metrics: &BTreeMap<String, JobMetrics>, now: f64) -> Result<(), String> {
    let p = path_for(status_file);
    let html = render("rmirror mirrors", rows, metrics, now);
    super::status::write_atomic(&p, html.as_bytes()).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

const CSS: &str = "body{font:15px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}
.summary{margin:0 0 16px;color:#4a5263}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.12)}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid #e3e6eb;vertical-align:top;white-space:nowrap}
td.name,td.upstream,tr.message td{white-space:normal}
th{background:#2d3748;color:#fff;font-weight:600;font-size:13px;text-transform:uppercase;letter-spacing:.03em}
td.name{font-weight:600;word-break:break-all;min-width:8em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.upstream{font-family:ui-monospace,monospace;font-size:13px;word-break:break-all}
tr.message td{border-top:0;color:#8a1c1c;font-size:13px;padding-top:0}
tr.message.ok td,tr.message.unchanged td{color:#4a5263}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;font-weight:600;color:#fff;background:#718096}
.badge.ok{background:#2f855a}.badge.unchanged{background:#3182ce}.badge.failed{background:#c53030}
.badge.running{background:#d69e2e}.badge.skipped{background:#805ad5}.badge.retry{background:#dd6b20}
tr.message.retry td{color:#9c4221}
.summary .ok{color:#2f855a}.summary .failed{color:#c53030;font-weight:600}.summary .unchanged{color:#3182ce}
.muted{color:#8a93a3}
footer{margin-top:14px;color:#8a93a3;font-size:12px}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_chosen_elsewhere() {
        let st = JobStatus {
            result: Some(RunState::Failed),
            exit_code: Some(5),
            upstream: Some("rsync://h/<m>/".into()),
            message: "<script>alert(1)</script> & \"x\"".into(),
            ..Default::default()
        };
        let html = render("t<", &[("<b>job</b>".into(), st)], &BTreeMap::new(), 100.0);
        assert!(!html.contains("<script>") && !html.contains("<b>job"));
        assert!(html.contains("&lt;b&gt;job&lt;/b&gt;") && html.contains("rsync://h/&lt;m&gt;/"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"));
        assert_eq!(human_secs(3725.0), "1h 2m");
    }
}
