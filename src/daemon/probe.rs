//! Upstream freshness: fetch each candidate's freshness signal (a `mirror.yml`
//! or `mirror.json`, a `RECENT-*.json`/`.yaml`, a Debian trace file, or a plain
//! marker), validate it, time the fetch, drop stale candidates and rank the
//! rest: newest first, then fastest. Mirror lists (`mirror.yml` with a
//! `mirrors` list) expand to their mirrors; a master is accepted only when at
//! least two fresh mirrors name the same one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::text::days_from_civil;
use crate::engine::monitor::{Monitor, Silent};

use super::strategy::fetch_file;

/// What kind of document a signal path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    MirrorYaml,
    MirrorJson,
    Recent,
    Trace,
    Marker,
}

impl SignalKind {
    pub fn for_path(p: &str) -> SignalKind {
        let base = p.rsplit('/').next().unwrap_or(p);
        if base.starts_with("RECENT") {
            SignalKind::Recent
        } else if base.ends_with(".yml") || base.ends_with(".yaml") {
            SignalKind::MirrorYaml
        } else if base.ends_with(".json") {
            SignalKind::MirrorJson
        } else if p.contains("trace/") {
            SignalKind::Trace
        } else {
            SignalKind::Marker
        }
    }
}

/// What a signal said.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Signal {
    /// Seconds since the epoch the upstream claims to be current as of.
    pub timestamp: Option<u64>,
    /// Debian's `Archive serial`.
    pub serial: Option<String>,
    /// `master` of a mirror.yml/json.
    pub master: Option<String>,
    /// `mirrors` of a mirror.yml/json (URIs).
    pub mirrors: Vec<String>,
}

/// Validate and parse a fetched signal. `mtime` is the file's modification
/// time, used when the document itself carries no time.
pub fn parse_signal(kind: SignalKind, name: &str, data: &[u8], mtime: Option<u64>) -> Result<Signal, String> {
    let text_start = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let lead = text_start.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &text_start[i..]).unwrap_or(&[]);
    if lead.first() == Some(&b'<') {
        return Err("got HTML, not the signal file (a captive portal or error page?)".into());
    }
    match kind {
        SignalKind::MirrorYaml => {
            if !text_start.starts_with(b"---") {
                return Err("not YAML: a mirror.yml must start with ---".into());
            }
            let text = std::str::from_utf8(text_start).map_err(|_| "mirror.yml is not UTF-8".to_string())?;
            let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| format!("bad YAML: {e}"))?;
            let doc = docs.into_iter().next().ok_or("empty YAML document")?;
            Ok(from_yaml(&doc))
        }
        SignalKind::MirrorJson => {
            if lead.first() != Some(&b'{') {
                return Err("not JSON: a mirror.json must start with {".into());
            }
            let v: serde_json::Value = serde_json::from_slice(lead).map_err(|e| format!("bad JSON: {e}"))?;
            Ok(from_json(&v))
        }
        SignalKind::Recent => {
            let want = if name.ends_with(".json") { b'{' } else { b'-' };
            if lead.first() != Some(&want) {
                return Err(format!("{name} does not look like a RECENT file"));
            }
            let rf = crate::recent::parse_recent(text_start, name).map_err(|e| format!("bad RECENT file: {e}"))?;
            let ts = rf.max_epoch().map(|e| e.secs());
            Ok(Signal { timestamp: ts.or(mtime), ..Default::default() })
        }
        SignalKind::Trace => {
            let text = String::from_utf8_lossy(text_start);
            let mut ts = None;
            for l in text.lines() {
                if let Some(v) = l.strip_prefix("Date:") {
                    ts = parse_date(v.trim());
                    break;
                }
            }
            if ts.is_none() {
                ts = text.lines().next().and_then(|l| parse_date(l.trim()));
            }
            let serial = super::strategy::archive_serial(text_start);
            if ts.is_none() && serial.is_none() {
                return Err("not a trace file (no Date: and no Archive serial:)".into());
            }
            Ok(Signal { timestamp: ts.or(mtime), serial, ..Default::default() })
        }
        SignalKind::Marker => {
            let text = String::from_utf8_lossy(text_start);
            let ts = text.split_whitespace().next().and_then(|w| w.split('.').next()?.parse::<u64>().ok()).filter(|&t| t > 100_000_000);
            Ok(Signal { timestamp: ts.or(mtime), ..Default::default() })
        }
    }
}

fn yaml_ts(y: &yaml_rust2::Yaml) -> Option<u64> {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Integer(n) if *n > 0 => Some(*n as u64),
        Yaml::Real(s) => s.parse::<f64>().ok().map(|f| f as u64),
        Yaml::String(s) => s.parse::<f64>().ok().map(|f| f as u64).or_else(|| parse_date(s)),
        _ => None,
    }
}

fn yaml_uri(y: &yaml_rust2::Yaml) -> Option<String> {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Hash(_) => y["uri"].as_str().or_else(|| y["url"].as_str()).map(str::to_string),
        _ => None,
    }
}

fn from_yaml(doc: &yaml_rust2::Yaml) -> Signal {
    let mut s = Signal { timestamp: yaml_ts(&doc["timestamp"]), ..Default::default() };
    s.master = match &doc["master"] {
        yaml_rust2::Yaml::Array(a) => a.first().and_then(yaml_uri),
        other => yaml_uri(other),
    };
    if let Some(a) = doc["mirrors"].as_vec() {
        s.mirrors = a.iter().filter_map(yaml_uri).collect();
    }
    s
}

fn json_uri(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("uri").or_else(|| o.get("url")).and_then(|u| u.as_str()).map(str::to_string),
        _ => None,
    }
}

fn from_json(v: &serde_json::Value) -> Signal {
    let ts = match &v["timestamp"] {
        serde_json::Value::Number(n) => n.as_f64().map(|f| f as u64),
        serde_json::Value::String(s) => s.parse::<f64>().ok().map(|f| f as u64).or_else(|| parse_date(s)),
        _ => None,
    };
    let master = match &v["master"] {
        serde_json::Value::Array(a) => a.first().and_then(json_uri),
        other => json_uri(other),
    };
    let mirrors = v["mirrors"].as_array().map(|a| a.iter().filter_map(json_uri).collect()).unwrap_or_default();
    Signal { timestamp: ts, master, mirrors, ..Default::default() }
}


/// Parse the dates trace files and HTTP use: RFC 2822 (`Mon, 01 Jan 2024
/// 00:00:00 +0000`), `date -u` (`Mon Jan  1 00:00:00 UTC 2024`) and ISO 8601
/// (`2024-01-01T00:00:00Z`). Seconds since the epoch.
pub fn parse_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let s = s.trim();
    // ISO 8601.
    // Every byte index sliced below is a char boundary only because the
    // first 19 bytes are checked to be ASCII (a signal file is untrusted text).
    let b = s.as_bytes();
    if b.len() >= 19 && b[..19].is_ascii() && b[4] == b'-' && (b[10] == b'T' || b[10] == b' ') {
        let y: i64 = s[0..4].parse().ok()?;
        let mo: u32 = s[5..7].parse().ok()?;
        let d: u32 = s[8..10].parse().ok()?;
        let h: i64 = s[11..13].parse().ok()?;
        let mi: i64 = s[14..16].parse().ok()?;
        let se: i64 = s[17..19].parse().ok()?;
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 24 || mi > 59 || se > 60 {
            return None;
        }
        let rest = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
        let off = parse_offset(rest.trim()).unwrap_or(0);
        let t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
        return u64::try_from(t).ok();
    }
    let words: Vec<&str> = s.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    let month = |w: &str| {
        let head = w.as_bytes().get(..3)?;
        MONTHS.iter().position(|m| head.eq_ignore_ascii_case(m.as_bytes())).map(|i| i as u32 + 1)
    };
    // h:m[:s], each part in its clock range, so no sum can overflow.
    let hms = |w: &str| -> Option<i64> {
        let p: Vec<&str> = w.split(':').collect();
        if !(2..=3).contains(&p.len()) {
            return None;
        }
        let part = |x: &str, max: i64| x.parse::<i64>().ok().filter(|v| (0..=max).contains(v));
        let s = match p.get(2) {
            Some(x) => part(x, 60)?,
            None => 0,
        };
        Some(part(p[0], 24)? * 3600 + part(p[1], 59)? * 60 + s)
    };
    // Find day, month, year, time among the words, whatever the order.
    let mut day = None;
    let mut mon = None;
    let mut year = None;
    let mut secs = None;
    let mut off = 0i64;
    for w in &words {
        if let Some(m) = month(w) {
            if mon.is_none() && w.chars().all(|c| c.is_ascii_alphabetic()) {
                mon = Some(m);
                continue;
            }
        }
        if w.starts_with(['+', '-']) {
            if let Some(o) = parse_offset(w) {
                off = o;
            }
        } else if w.contains(':') {
            secs = hms(w);
        } else if let Ok(n) = w.parse::<i64>() {
            if w.len() == 4 && n > 1900 {
                year = Some(n);
            } else if (1..=31).contains(&n) && day.is_none() {
                day = Some(n as u32);
            }
        } else if let Some(o) = parse_offset(w) {
            off = o;
        }
    }
    let t = days_from_civil(year?, mon?, day?) * 86400 + secs? - off;
    u64::try_from(t).ok()
}

fn parse_offset(w: &str) -> Option<i64> {
    match w {
        "Z" | "UTC" | "GMT" | "UT" => return Some(0),
        _ => {}
    }
    let (sign, rest) = match w.as_bytes().first()? {
        b'+' => (1, &w[1..]),
        b'-' => (-1, &w[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() != 4 {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// A relative path inside an upstream: no `..`, not absolute, not empty.
pub fn check_rel_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".") || p.ends_with('/') {
        return Err(format!("{p:?} must be a relative file path without . or .."));
    }
    Ok(())
}

/// A mirror-list URL: rsync:// or http(s):// naming a file.
pub fn check_list_url(u: &str) -> Result<(), String> {
    if u.starts_with("http://") || u.starts_with("https://") {
        return if u.ends_with('/') { Err(format!("{u:?} names a directory, not a mirror.yml/.json")) } else { Ok(()) };
    }
    let r = crate::remote::parse(u)?;
    if r.module.is_empty() || r.path.is_empty() || r.path.ends_with(b"/") {
        return Err(format!("{u:?} must name a file inside a module, e.g. rsync://host/module/mirror.yml"));
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Candidate state after probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fresh and valid: usable.
    Fresh,
    /// Valid, but older than the age limit (or than the local copy).
    Stale,
    /// Fetched, but not a valid signal (HTML, bad YAML…).
    Invalid,
    /// Could not be fetched.
    Error,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    /// The tree's URL (what a job would pull from).
    pub url: String,
    /// The signal file's URL.
    pub signal_url: String,
    pub kind: SignalKind,
    pub status: Status,
    pub timestamp: Option<u64>,
    pub age_secs: Option<u64>,
    pub latency_ms: u64,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(skip)]
    pub signal: Option<Signal>,
    /// Where the fetched signal file lies (rsync candidates).
    #[serde(skip)]
    pub staged: Option<PathBuf>,
}

#[derive(Clone)]
pub struct ProbeOpts {
    pub max_age: Duration,
    pub timeout: Duration,
    pub password: Option<Vec<u8>>,
    pub monitor: Arc<dyn Monitor>,
}

impl Default for ProbeOpts {
    fn default() -> Self {
        ProbeOpts { max_age: super::config::DEFAULT_MAX_AGE, timeout: Duration::from_secs(30), password: None, monitor: Arc::new(Silent) }
    }
}

fn join_url(base: &str, rel: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

/// Split a file URL into (directory URL, file name).
pub fn split_file_url(u: &str) -> (String, String) {
    match u.rfind('/') {
        Some(i) => (u[..=i].to_string(), u[i + 1..].to_string()),
        None => (u.to_string(), String::new()),
    }
}

/// Fetch a file by URL: rsync:// via the engine (into `stage`), http(s) via ureq.
/// Returns (bytes, mtime, staged path).
pub async fn fetch_url(u: &str, stage: &Path, opts: &ProbeOpts) -> Result<(Vec<u8>, Option<u64>, Option<PathBuf>), String> {
    if u.starts_with("http://") || u.starts_with("https://") {
        let url = u.to_string();
        let timeout = opts.timeout;
        return tokio::task::spawn_blocking(move || http_get(&url, timeout))
            .await
            .map_err(|e| e.to_string())?
            .map(|(b, m)| (b, m, None));
    }
    let (dir, name) = split_file_url(u);
    if name.is_empty() {
        return Err(format!("{u:?} names no file"));
    }
    let fut = fetch_file(None, &dir, &name, stage, opts.password.clone(), Some(opts.timeout), opts.monitor.clone());
    let p = match tokio::time::timeout(opts.timeout, fut).await {
        Ok(r) => r.map_err(|e| e.msg)?,
        Err(_) => return Err(format!("timed out after {:?}", opts.timeout)),
    };
    let data = std::fs::read(&p).map_err(|e| e.to_string())?;
    let mtime = std::fs::metadata(&p).ok().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
    Ok((data, mtime, Some(p)))
}

fn http_get(url: &str, timeout: Duration) -> Result<(Vec<u8>, Option<u64>), String> {
    let agent = ureq::AgentBuilder::new().timeout(timeout).redirects(5).build();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let mtime = resp.header("Last-Modified").and_then(parse_date);
    let mut buf = Vec::new();
    use std::io::Read;
    resp.into_reader().take(16 << 20).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    Ok((buf, mtime))
}

/// Probe one candidate tree `url` by its signal `signal` (relative path).
pub async fn probe_one(url: &str, signal: &str, stage: &Path, opts: &ProbeOpts) -> Candidate {
    let signal_url = join_url(url, signal);
    let kind = SignalKind::for_path(signal);
    let t0 = Instant::now();
    let r = fetch_url(&signal_url, stage, opts).await;
    let latency_ms = t0.elapsed().as_millis() as u64;
    let mut c = Candidate {
        url: url.to_string(),
        signal_url,
        kind,
        status: Status::Error,
        timestamp: None,
        age_secs: None,
        latency_ms,
        detail: String::new(),
        master: None,
        signal: None,
        staged: None,
    };
    match r {
        Err(e) => c.detail = e,
        Ok((data, mtime, staged)) => {
            c.staged = staged;
            let name = signal.rsplit('/').next().unwrap_or(signal);
            match parse_signal(kind, name, &data, mtime) {
                Err(e) => {
                    c.status = Status::Invalid;
                    c.detail = e;
                }
                Ok(sig) => {
                    c.timestamp = sig.timestamp;
                    c.master = sig.master.clone();
                    match sig.timestamp {
                        None => {
                            c.status = Status::Invalid;
                            c.detail = "no timestamp".into();
                        }
                        Some(ts) => {
                            let age = now_secs().saturating_sub(ts);
                            c.age_secs = Some(age);
                            if age > opts.max_age.as_secs() {
                                c.status = Status::Stale;
                                c.detail = format!("older than {}", fmt_age(opts.max_age.as_secs()));
                            } else {
                                c.status = Status::Fresh;
                            }
                        }
                    }
                    c.signal = Some(sig);
                }
            }
        }
    }
    c
}

/// Probe many candidates concurrently; each gets its own staging subdir.
pub async fn probe_all(urls: &[String], signal: &str, stage: &Path, opts: &ProbeOpts) -> Vec<Candidate> {
    let mut set = tokio::task::JoinSet::new();
    for (i, u) in urls.iter().enumerate() {
        let (u, signal, dir, opts) = (u.clone(), signal.to_string(), stage.join(format!("c{i}")), opts.clone());
        set.spawn(async move { (i, probe_one(&u, &signal, &dir, &opts).await) });
    }
    let mut out: Vec<(usize, Candidate)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, c)| c).collect()
}

/// Rank: fresh first, newest first, then fastest; others after, in input order.
pub fn rank(cands: &mut [Candidate]) {
    cands.sort_by(|a, b| {
        let fa = a.status == Status::Fresh;
        let fb = b.status == Status::Fresh;
        fb.cmp(&fa).then_with(|| {
            if fa && fb {
                b.timestamp.cmp(&a.timestamp).then(a.latency_ms.cmp(&b.latency_ms))
            } else {
                std::cmp::Ordering::Equal
            }
        })
    });
}

/// What a mirror list gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Discovery {
    pub list_url: String,
    pub list_timestamp: Option<u64>,
    /// The master named by at least two fresh mirrors, if any.
    pub master: Option<String>,
    /// How many fresh mirrors named that master.
    pub master_votes: usize,
    pub candidates: Vec<Candidate>,
}

/// Fetch a mirror list and probe its mirrors (each by the list's own file
/// name, e.g. `<mirror>/mirror.yml`), ranked.
pub async fn discover(list_url: &str, stage: &Path, opts: &ProbeOpts) -> Result<Discovery, String> {
    let (_, name) = split_file_url(list_url);
    let kind = SignalKind::for_path(&name);
    if !matches!(kind, SignalKind::MirrorYaml | SignalKind::MirrorJson) {
        return Err(format!("{list_url}: a mirror list must be a .yml/.yaml/.json file"));
    }
    let (data, mtime, _) = fetch_url(list_url, &stage.join("list"), opts).await.map_err(|e| format!("{list_url}: {e}"))?;
    let sig = parse_signal(kind, &name, &data, mtime).map_err(|e| format!("{list_url}: {e}"))?;
    if sig.mirrors.is_empty() {
        return Err(format!("{list_url}: the document lists no mirrors"));
    }
    let mut cands = probe_all(&sig.mirrors, &name, stage, opts).await;
    let (master, votes) = agreed_master(&cands);
    rank(&mut cands);
    Ok(Discovery { list_url: list_url.to_string(), list_timestamp: sig.timestamp, master, master_votes: votes, candidates: cands })
}

/// The master named by the most fresh candidates, if at least two agree.
pub fn agreed_master(cands: &[Candidate]) -> (Option<String>, usize) {
    let mut votes: Vec<(String, usize)> = Vec::new();
    for c in cands.iter().filter(|c| c.status == Status::Fresh) {
        if let Some(m) = &c.master {
            let m = m.trim_end_matches('/').to_string();
            match votes.iter_mut().find(|(x, _)| *x == m) {
                Some(v) => v.1 += 1,
                None => votes.push((m, 1)),
            }
        }
    }
    votes.sort_by_key(|v| std::cmp::Reverse(v.1));
    match votes.first() {
        Some((m, n)) if *n >= 2 => (Some(format!("{m}/")), *n),
        Some((_, n)) => (None, *n),
        None => (None, 0),
    }
}

pub fn fmt_age(secs: u64) -> String {
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 7200 {
        format!("{}m", secs / 60)
    } else if secs < 2 * 86400 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{}h", secs / 86400, secs % 86400 / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("Mon, 01 Jan 2024 00:00:00 +0000"), Some(1704067200));
        assert_eq!(parse_date("Mon Jan  1 00:00:00 UTC 2024"), Some(1704067200));
        assert_eq!(parse_date("Mon, 01 Jan 2024 02:00:00 +0200"), Some(1704067200));
        assert_eq!(parse_date("2024-01-01T00:00:00Z"), Some(1704067200));
        assert_eq!(parse_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_date("nonsense"), None);
    }

    /// Untrusted date text: multi-byte characters where ASCII digits are
    /// expected, out-of-range fields and huge numbers are "no date", never a
    /// panic (the `mirror_signal` fuzzer found the first: `ti\u{fffd}`).
    #[test]
    fn hostile_dates_are_none() {
        for bad in [
            "ti\u{fffd}",
            "\u{fffd}\u{fffd}\u{fffd}",
            "2024-0\u{e9}-01T00:00:00Z",
            "2024-01-01T0\u{e9}:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "Mon, 01 Jan 2024 99999999999999999:00:00 +0000",
            "Mon, 01 Jan 2024 00:99999999999999999 +0000",
            "01 Jan 2024 1:2:3:4",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
        assert_eq!(parse_date("2024-01-01 00:00:00"), Some(1704067200));
        assert_eq!(parse_signal(SignalKind::Trace, "master", b"ti\xac", None).ok().and_then(|s| s.timestamp), None);
    }

    #[test]
    fn signals() {
        let y = b"---\ntimestamp: 1704067200\nmaster: rsync://m/cpan/\nmirrors:\n  - rsync://a/cpan/\n  - uri: rsync://b/cpan/\n";
        let s = parse_signal(SignalKind::MirrorYaml, "mirror.yml", y, None).unwrap();
        assert_eq!(s.timestamp, Some(1704067200));
        assert_eq!(s.master.as_deref(), Some("rsync://m/cpan/"));
        assert_eq!(s.mirrors, vec!["rsync://a/cpan/".to_string(), "rsync://b/cpan/".to_string()]);
        let html = b"<!DOCTYPE html><html><body>Please log in</body></html>";
        assert!(parse_signal(SignalKind::MirrorYaml, "mirror.yml", html, None).unwrap_err().contains("HTML"));
        assert!(parse_signal(SignalKind::MirrorYaml, "mirror.yml", b"timestamp: 1\n", None).is_err());
        assert!(parse_signal(SignalKind::MirrorJson, "mirror.json", b"[1]", None).is_err());
        let j = br#"{"timestamp": 1704067200.5, "master": "rsync://m/x/"}"#;
        assert_eq!(parse_signal(SignalKind::MirrorJson, "mirror.json", j, None).unwrap().timestamp, Some(1704067200));
        let t = b"Mon Jan  1 00:00:00 UTC 2024\nDate: Mon, 01 Jan 2024 00:00:00 +0000\nArchive serial: 2024010101\n";
        let s = parse_signal(SignalKind::Trace, "master", t, None).unwrap();
        assert_eq!((s.timestamp, s.serial.as_deref()), (Some(1704067200), Some("2024010101")));
        assert_eq!(parse_signal(SignalKind::Marker, "CURRENT", b"1704067200\n", Some(5)).unwrap().timestamp, Some(1704067200));
        assert_eq!(parse_signal(SignalKind::Marker, "CURRENT", b"release 7\n", Some(5)).unwrap().timestamp, Some(5));
        assert_eq!(SignalKind::for_path("project/trace/master"), SignalKind::Trace);
        assert_eq!(SignalKind::for_path("RECENT-1h.json"), SignalKind::Recent);
    }

    #[test]
    fn ranking_and_master_votes() {
        let mk = |u: &str, st: Status, ts: u64, lat: u64, m: Option<&str>| Candidate {
            url: u.into(),
            signal_url: String::new(),
            kind: SignalKind::MirrorYaml,
            status: st,
            timestamp: Some(ts),
            age_secs: None,
            latency_ms: lat,
            detail: String::new(),
            master: m.map(str::to_string),
            signal: None,
            staged: None,
        };
        let mut v = vec![
            mk("stale", Status::Stale, 1, 1, Some("rsync://m/")),
            mk("slow", Status::Fresh, 100, 500, Some("rsync://m/")),
            mk("old", Status::Fresh, 50, 1, Some("rsync://x/")),
            mk("fast", Status::Fresh, 100, 5, Some("rsync://m")),
        ];
        assert_eq!(agreed_master(&v), (Some("rsync://m/".to_string()), 2));
        rank(&mut v);
        let order: Vec<&str> = v.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(order, ["fast", "slow", "old", "stale"]);
        v.truncate(3);
        v[1].master = None;
        assert_eq!(agreed_master(&v).0, None);
    }
}
