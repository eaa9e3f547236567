//! Cascade writers: what a mirror leaves in its tree after a run so that the
//! mirrors below it can follow it (issue 7, "feeding the mirrors below").
//!
//! * a Debian-style trace file `project/trace/<host>` ([`render_trace`]:
//!   `date -u` line, `Date`, `Date-Started`, `Archive serial`, `Used rmirror
//!   version`, `Creator`, `Running on host`, `Maintainer`…, `Trigger`,
//!   `Upstream-mirror`, `Rsync-Transport`, `Total bytes received in rsync`,
//!   `Total time spent in rsync`, `Average rate` — the fields ftpsync writes);
//! * a timestamp file (`<epoch seconds>\n`, what `rmirror probe` reads as a marker);
//! * a `mirror.yml` or `mirror.json` (`timestamp`, `master`, `mirrors`), the
//!   format `discover =` reads;
//! * the tree's own RECENT files ([`recent`]), events taken from the run's
//!   itemized changes (collected by a [`Recorder`] monitor), so a downstream
//!   `rmirror watch` (or rrr-client/iim) can instant-mirror from this host even
//!   when the upstream publishes no RECENT files.
//!
//! Every file is written atomically (temp file in the same directory, then
//! rename) and the parent directory keeps its mtime, so the mirror stays
//! identical to its upstream apart from these files.  The files' paths are
//! excluded from the transfer ([`PublishConfig::exclude_rules`]), so a sync
//! with `--delete` neither removes them nor replaces them by the upstream's.
//!
//! RECENT events are written after every run that got as far as changing
//! something (listing a path that did not change is harmless, missing one is
//! not); the trace, timestamp and mirror list only after a successful run.
//! Empty new directories are not announced (as with rrr's own servers:
//! clients create directories for the files in them); deletes of directories
//! are.

pub mod recent;

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::monitor::{Item, Monitor, Progress};
use crate::proto::session::MsgKind;

/// What to write after a run (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishConfig {
    pub trace: Option<TraceConfig>,
    /// Path (relative to DEST) of a timestamp file.
    pub timestamp_file: Option<String>,
    pub mirror_list: Option<MirrorListConfig>,
    /// Write the tree's own RECENT files at DEST's root.
    pub recent: bool,
}

/// A Debian-style trace file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// The file name under `dir`: the mirror's public name (default: this
    /// machine's host name).
    pub host: Option<String>,
    /// Directory of the trace files (default `project/trace`).
    pub dir: Option<String>,
    /// Extra fields in order (`Maintainer`, `Sponsor`, `Country`, `Location`, `Throughput`).
    pub fields: Vec<(String, String)>,
}

/// A `mirror.yml` / `mirror.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorListConfig {
    /// Relative path; `.json` writes JSON, anything else YAML.
    pub path: String,
    /// The master URI (default: the upstream this run used).
    pub master: Option<String>,
    pub mirrors: Vec<String>,
}

impl Default for MirrorListConfig {
    fn default() -> Self {
        MirrorListConfig { path: "mirror.yml".into(), master: None, mirrors: Vec::new() }
    }
}

/// This machine's host name (`gethostname`), or `localhost`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates or truncates.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = String::from_utf8_lossy(&buf[..n]).into_owned();
    if s.is_empty() {
        "localhost".into()
    } else {
        s
    }
}

/// A relative path inside DEST: no `..`, not absolute, no empty components.
pub fn check_rel(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") || p.contains('\0') {
        return Err(format!("{p:?} must be a relative path inside the mirror (no '..', no leading '/')"));
    }
    Ok(())
}

impl TraceConfig {
    /// `project/trace/<host>`.
    pub fn path(&self) -> String {
        let dir = self.dir.as_deref().unwrap_or("project/trace").trim_matches('/');
        let host = self.host.clone().unwrap_or_else(hostname);
        if dir.is_empty() {
            host
        } else {
            format!("{dir}/{host}")
        }
    }
}

impl PublishConfig {
    pub fn is_empty(&self) -> bool {
        self.trace.is_none() && self.timestamp_file.is_none() && self.mirror_list.is_none() && !self.recent
    }

    /// Relative paths of the single files this writes (RECENT files not included).
    pub fn paths(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(t) = &self.trace {
            v.push(t.path());
        }
        if let Some(t) = &self.timestamp_file {
            v.push(t.trim_start_matches('/').to_string());
        }
        if let Some(m) = &self.mirror_list {
            v.push(m.path.trim_start_matches('/').to_string());
        }
        v
    }

    /// Check the paths; `Err` names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        for p in self.paths() {
            check_rel(&p)?;
            let base = p.rsplit('/').next().unwrap_or(&p);
            if base.starts_with("RECENT") {
                return Err(format!("{p:?}: RECENT* names are reserved for the RECENT files"));
            }
        }
        if let Some(t) = &self.trace {
            if let Some(h) = &t.host {
                if h.is_empty() || h.contains('/') || h == "." || h == ".." {
                    return Err(format!("bad trace host {h:?} (it is a file name)"));
                }
            }
        }
        Ok(())
    }

    /// rsync filter rules that keep the written files out of the transfer
    /// (not fetched from the upstream, not deleted as extraneous).
    pub fn exclude_rules(&self) -> Vec<String> {
        let mut v: Vec<String> = self.paths().iter().map(|p| format!("- /{}", escape_glob(p))).collect();
        if self.recent {
            v.push("- /RECENT-*.json".into());
            v.push(format!("- /{}", recent::PRINCIPAL_LINK));
        }
        v
    }
}

/// Escape rsync wildcard characters in a literal path.
fn escape_glob(p: &str) -> String {
    let mut s = String::new();
    for c in p.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// A monitor that forwards everything to `inner` and remembers the changes
/// as RECENT events (`(path, is_new)`, in the order reported).
pub struct Recorder {
    inner: std::sync::Arc<dyn Monitor>,
    events: Mutex<Vec<(String, bool)>>,
    skipped: std::sync::atomic::AtomicU64,
}

impl Recorder {
    pub fn new(inner: std::sync::Arc<dyn Monitor>) -> Recorder {
        Recorder { inner, events: Mutex::new(Vec::new()), skipped: Default::default() }
    }
    /// The events so far (and clears them).
    pub fn take(&self) -> Vec<(String, bool)> {
        self.events.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
    /// Changes that could not be recorded (names that are not UTF-8).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The RECENT event an itemized change stands for, if any.
pub fn event_of(item: &Item) -> Option<(&[u8], bool)> {
    if item.name.is_empty() || item.name == b"." {
        return None;
    }
    if item.code == "*deleting" {
        return Some((&item.name, false));
    }
    if item.is_dir {
        return None;
    }
    // `.f` with nothing changed is not a change
    let rest = item.code.get(2..).unwrap_or("");
    if item.code.starts_with('.') && rest.chars().all(|c| c == '.' || c == ' ') {
        return None;
    }
    Some((&item.name, true))
}

impl Monitor for Recorder {
    fn text(&self, line: &[u8]) {
        self.inner.text(line)
    }
    fn message(&self, kind: MsgKind, text: &[u8]) {
        self.inner.message(kind, text)
    }
    fn local_error(&self, text: &str) {
        self.inner.local_error(text)
    }
    fn item(&self, item: &Item) {
        if let Some((name, new)) = event_of(item) {
            let name = name.strip_suffix(b"/").unwrap_or(name);
            match std::str::from_utf8(name) {
                Ok(s) => {
                    if let Ok(mut v) = self.events.lock() {
                        v.push((s.to_string(), new));
                    }
                }
                Err(_) => {
                    self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.inner.item(item)
    }
    fn progress(&self, p: &Progress) {
        self.inner.progress(p)
    }
    fn file_done(&self, name: &[u8], bytes: u64) {
        self.inner.file_done(name, bytes)
    }
}

/// What a run tells the writers.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub started: SystemTime,
    pub ended: SystemTime,
    /// The upstream URL used.
    pub upstream: String,
    /// `cron`, `cmdline`, `watch`, `run` (the trace's `Trigger`).
    pub trigger: String,
    pub bytes_received: u64,
    /// Changes as RECENT events, in order.
    pub events: Vec<(String, bool)>,
    /// The run succeeded (else only the RECENT events are written).
    pub success: bool,
}

/// What [`after_run`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Relative paths written, in order.
    pub files: Vec<String>,
    /// RECENT events recorded.
    pub events: usize,
    /// Why a new RECENT chain was started, if it was.
    pub new_chain: Option<String>,
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `date -u` in the POSIX locale: `Sun Feb 28 09:40:29 UTC 2016`.
pub fn date_u(t: i64) -> String {
    let u = crate::text::Utc::at(t);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} UTC {}",
        DAYS[u.weekday()],
        MONTHS[(u.month - 1) as usize],
        u.day,
        u.hour,
        u.minute,
        u.second,
        u.year
    )
}

/// RFC 822 / `date -u -R`: `Sun, 28 Feb 2016 09:40:29 +0000`.
pub fn rfc822(t: i64) -> String {
    let u = crate::text::Utc::at(t);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[u.weekday()],
        u.day,
        MONTHS[(u.month - 1) as usize],
        u.year,
        u.hour,
        u.minute,
        u.second
    )
}

/// The next `YYYYMMDDNN` serial after `prev` for a run ending at `t`.
pub fn next_serial(prev: Option<&str>, t: i64) -> String {
    let u = crate::text::Utc::at(t);
    let today = format!("{:04}{:02}{:02}", u.year, u.month, u.day);
    match prev.and_then(|p| p.trim().parse::<u64>().ok()) {
        Some(p) if p.to_string().starts_with(&today) => (p + 1).to_string(),
        Some(p) if p >= format!("{today}01").parse::<u64>().unwrap_or(0) => (p + 1).to_string(),
        _ => format!("{today}01"),
    }
}

/// Host part of an rsync URL (`rsync://host:port/m/` or `host::m`).
fn upstream_host(u: &str) -> String {
    match crate::remote::parse(u) {
        Ok(r) => r.host,
        Err(_) => "unknown".into(),
    }
}

/// The trace file's text.
pub fn render_trace(cfg: &TraceConfig, info: &RunInfo, serial: Option<&str>) -> String {
    let (start, end) = (secs(info.started), secs(info.ended));
    let mut s = String::new();
    s.push_str(&date_u(end));
    s.push('\n');
    s.push_str(&format!("Date: {}\n", rfc822(end)));
    s.push_str(&format!("Date-Started: {}\n", rfc822(start)));
    if let Some(sr) = serial {
        s.push_str(&format!("Archive serial: {sr}\n"));
    }
    let v = env!("CARGO_PKG_VERSION");
    s.push_str(&format!("Used rmirror version: {v}\n"));
    s.push_str(&format!("Creator: rmirror {v}\n"));
    s.push_str(&format!("Running on host: {}\n", hostname()));
    for (k, val) in &cfg.fields {
        s.push_str(&format!("{k}: {}\n", val.replace('\n', " ")));
    }
    s.push_str(&format!("Trigger: {}\n", info.trigger));
    s.push_str(&format!("Upstream-mirror: {}\n", upstream_host(&info.upstream)));
    s.push_str("Rsync-Transport: plain\n");
    if info.bytes_received > 0 {
        s.push_str(&format!("Total bytes received in rsync: {}\n", info.bytes_received));
    }
    let took = (end - start).max(0);
    s.push_str(&format!("Total time spent in rsync: {took}\n"));
    if took > 0 && info.bytes_received > 0 {
        s.push_str(&format!("Average rate: {} B/s\n", info.bytes_received / took as u64));
    }
    s
}

/// The mirror list's text.
pub fn render_mirror_list(cfg: &MirrorListConfig, info: &RunInfo) -> String {
    let master = cfg.master.clone().unwrap_or_else(|| info.upstream.clone());
    let ts = secs(info.ended);
    if cfg.path.ends_with(".json") {
        let doc = serde_json::json!({
            "timestamp": ts,
            "master": master,
            "mirrors": cfg.mirrors,
            "generator": format!("rmirror {}", env!("CARGO_PKG_VERSION")),
        });
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
        s.push('\n');
        s
    } else {
        let q = |x: &str| serde_json::to_string(x).unwrap_or_default(); // a JSON string is a YAML string
        let mut s = format!("---\ntimestamp: {ts}\nmaster: {}\n", q(&master));
        if cfg.mirrors.is_empty() {
            s.push_str("mirrors: []\n");
        } else {
            s.push_str("mirrors:\n");
            for m in &cfg.mirrors {
                s.push_str(&format!("  - {}\n", q(m)));
            }
        }
        s.push_str(&format!("generator: {}\n", q(&format!("rmirror {}", env!("CARGO_PKG_VERSION")))));
        s
    }
}

/// Write `rel` (relative to `dir`) atomically: a temp file next to it, then
/// rename.  Missing parents are created; a parent that existed keeps its mtime.
pub fn write_atomic(dir: &Path, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let target = dir.join(rel);
    let parent = target.parent().unwrap_or(dir).to_path_buf();
    let parent_mtime = std::fs::metadata(&parent).and_then(|m| m.modified()).ok();
    if parent_mtime.is_none() {
        std::fs::create_dir_all(&parent)?;
    }
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.rmirror-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let r = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        drop(f);
        if std::fs::symlink_metadata(&target).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(std::io::Error::other(format!("{} is a directory", target.display())));
        }
        std::fs::rename(&tmp, &target)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if let Some(mt) = parent_mtime {
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.set_modified(mt);
        }
    }
    r
}

/// Write what `cfg` asks for into `dest` after a run.
pub fn after_run(dest: &Path, cfg: &PublishConfig, info: &RunInfo) -> Result<Published, String> {
    let mut out = Published::default();
    if cfg.is_empty() {
        return Ok(out);
    }
    cfg.validate()?;
    let mut events = info.events.clone();
    // keep the root's mtime whatever happens below (it is the upstream's)
    let root_mtime = std::fs::metadata(dest).and_then(|m| m.modified()).ok();
    let res = (|| -> Result<(), String> {
        if info.success {
            let mut singles: Vec<(String, String)> = Vec::new();
            if let Some(t) = &cfg.trace {
                let path = t.path();
                // Debian's master trace gives the serial; otherwise ours counts runs that changed something.
                let master = dest.join(t.dir.as_deref().unwrap_or("project/trace")).join("master");
                let upstream_serial = std::fs::read(&master).ok().and_then(|d| crate::daemon::strategy::archive_serial(&d));
                let prev = std::fs::read(dest.join(&path)).ok().and_then(|d| crate::daemon::strategy::archive_serial(&d));
                let serial = match (upstream_serial, prev) {
                    (Some(s), _) => s,
                    (None, Some(p)) if events.is_empty() => p,
                    (None, p) => next_serial(p.as_deref(), secs(info.ended)),
                };
                singles.push((path, render_trace(t, info, Some(&serial))));
            }
            if let Some(p) = &cfg.timestamp_file {
                singles.push((p.trim_start_matches('/').to_string(), format!("{}\n", secs(info.ended))));
            }
            if let Some(m) = &cfg.mirror_list {
                singles.push((m.path.trim_start_matches('/').to_string(), render_mirror_list(m, info)));
            }
            for (p, text) in singles {
                write_atomic(dest, &p, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", dest.join(&p).display()))?;
                out.files.push(p.clone());
                events.push((p, true));
            }
        }
        if cfg.recent && (!events.is_empty() || !dest.join(recent::PRINCIPAL_LINK).exists()) {
            let now = recent::now_quanta();
            let (mut log, why) = recent::RecentLog::load_or_new(dest, now);
            out.new_chain = why;
            log.producer = "rmirror".into();
            for (p, new) in &events {
                log.record(p, *new, now);
            }
            out.events = events.len();
            let names = log.publish(dest, recent::now_quanta()).map_err(|e| format!("cannot write the RECENT files in {}: {e}", dest.display()))?;
            out.files.extend(names);
        }
        Ok(())
    })();
    if let Some(mt) = root_mtime {
        if let Ok(d) = std::fs::File::open(dest) {
            let _ = d.set_modified(mt);
        }
    }
    res.map(|_| out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::probe::{parse_signal, SignalKind};

    fn info(events: Vec<(String, bool)>) -> RunInfo {
        RunInfo {
            started: UNIX_EPOCH + std::time::Duration::from_secs(1_456_652_035),
            ended: UNIX_EPOCH + std::time::Duration::from_secs(1_456_652_429),
            upstream: "rsync://ftp-master.example.org/debian/".into(),
            trigger: "cron".into(),
            bytes_received: 1_109_846_675,
            events,
            success: true,
        }
    }

    #[test]
    fn dates_like_date_u() {
        assert_eq!(date_u(1_456_652_429), "Sun Feb 28 09:40:29 UTC 2016");
        assert_eq!(rfc822(1_456_652_429), "Sun, 28 Feb 2016 09:40:29 +0000");
        assert_eq!(date_u(1_328_000_000), "Tue Jan 31 08:53:20 UTC 2012");
        assert_eq!(date_u(1_330_387_200 + 4 * 86400), "Sat Mar  3 00:00:00 UTC 2012");
        assert_eq!(next_serial(None, 1_456_652_429), "2016022801");
        assert_eq!(next_serial(Some("2016022801"), 1_456_652_429), "2016022802");
        assert_eq!(next_serial(Some("2016022701"), 1_456_652_429), "2016022801");
    }

    #[test]
    fn trace_reads_back() {
        let t = TraceConfig { host: Some("mirror.example.org".into()), dir: None, fields: vec![("Maintainer".into(), "Admins <a@example.org>".into())] };
        let text = render_trace(&t, &info(vec![]), Some("2016022801"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Sun Feb 28 09:40:29 UTC 2016");
        assert_eq!(lines[1], "Date: Sun, 28 Feb 2016 09:40:29 +0000");
        assert_eq!(lines[2], "Date-Started: Sun, 28 Feb 2016 09:33:55 +0000");
        assert!(text.contains("\nArchive serial: 2016022801\n"));
        assert!(text.contains("\nMaintainer: Admins <a@example.org>\n"));
        assert!(text.contains("\nUpstream-mirror: ftp-master.example.org\n"));
        assert!(text.contains("\nTotal time spent in rsync: 394\n"));
        assert!(text.contains("\nAverage rate: 2816869 B/s\n"), "{text}");
        // every line after the first is `Key: value` (Mirror::Trace's rule)
        assert!(lines[1..].iter().all(|l| l.split_once(':').is_some_and(|(k, _)| k.chars().all(|c| c.is_alphanumeric() || " -_".contains(c)))));
        let sig = parse_signal(SignalKind::Trace, "mirror.example.org", text.as_bytes(), None).unwrap();
        assert_eq!(sig.timestamp, Some(1_456_652_429));
        assert_eq!(sig.serial.as_deref(), Some("2016022801"));
        assert_eq!(t.path(), "project/trace/mirror.example.org");
    }

    #[test]
    fn mirror_lists_read_back() {
        let mut m = MirrorListConfig { path: "mirror.yml".into(), master: None, mirrors: vec!["rsync://a.example/cpan/".into(), "rsync://b.example/cpan/".into()] };
        let y = render_mirror_list(&m, &info(vec![]));
        let s = parse_signal(SignalKind::MirrorYaml, "mirror.yml", y.as_bytes(), None).unwrap();
        assert_eq!(s.timestamp, Some(1_456_652_429));
        assert_eq!(s.master.as_deref(), Some("rsync://ftp-master.example.org/debian/"));
        assert_eq!(s.mirrors.len(), 2);
        m.path = "mirror.json".into();
        m.master = Some("rsync://m.example/cpan/".into());
        let j = render_mirror_list(&m, &info(vec![]));
        let s = parse_signal(SignalKind::MirrorJson, "mirror.json", j.as_bytes(), None).unwrap();
        assert_eq!(s.master.as_deref(), Some("rsync://m.example/cpan/"));
        assert_eq!(s.mirrors, vec!["rsync://a.example/cpan/".to_string(), "rsync://b.example/cpan/".to_string()]);
    }

    #[test]
    fn events_from_items() {
        let it = |code: &str, name: &[u8], is_dir: bool| Item { code: code.into(), name: name.to_vec(), is_dir, link_target: None, hardlink_to: None };
        assert_eq!(event_of(&it(">f+++++++++", b"a/b", false)), Some((&b"a/b"[..], true)));
        assert_eq!(event_of(&it(".f..t......", b"a/b", false)), Some((&b"a/b"[..], true)));
        assert_eq!(event_of(&it("cL+++++++++", b"l", false)), Some((&b"l"[..], true)));
        assert_eq!(event_of(&it("*deleting", b"d", true)), Some((&b"d"[..], false)));
        assert_eq!(event_of(&it("cd+++++++++", b"d", true)), None);
        assert_eq!(event_of(&it(".d..t......", b".", true)), None);
    }

    #[test]
    fn after_run_writes_everything_and_keeps_root_mtime() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let old = UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
        std::fs::File::open(d.path()).unwrap().set_modified(old).unwrap();
        let cfg = PublishConfig {
            trace: Some(TraceConfig { host: Some("m.example".into()), ..Default::default() }),
            timestamp_file: Some("TIME".into()),
            mirror_list: Some(MirrorListConfig::default()),
            recent: true,
        };
        assert_eq!(cfg.exclude_rules(), vec!["- /project/trace/m.example", "- /TIME", "- /mirror.yml", "- /RECENT-*.json", "- /RECENT.recent"]);
        let p = after_run(d.path(), &cfg, &info(vec![("f".into(), true), ("gone".into(), false)])).unwrap();
        assert_eq!(p.events, 5);
        assert!(p.new_chain.is_some());
        assert_eq!(std::fs::metadata(d.path()).unwrap().modified().unwrap(), old);
        let data = std::fs::read(d.path().join("RECENT-1h.json")).unwrap();
        let rf = crate::recent::parse_recent(&data, "RECENT-1h.json").unwrap();
        let paths: Vec<String> = rf.events.iter().map(|e| e.path.clone()).collect();
        for want in ["f", "gone", "project/trace/m.example", "TIME", "mirror.yml"] {
            assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
        }
        let serial1 = crate::daemon::strategy::archive_serial(&std::fs::read(d.path().join("project/trace/m.example")).unwrap()).unwrap();
        // a second run without changes keeps the serial, the chain continues
        let p2 = after_run(d.path(), &cfg, &info(vec![])).unwrap();
        assert!(p2.new_chain.is_none());
        let serial2 = crate::daemon::strategy::archive_serial(&std::fs::read(d.path().join("project/trace/m.example")).unwrap()).unwrap();
        assert_eq!(serial1, serial2);
        assert!(std::fs::read_dir(d.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".rmirror-tmp")));
    }
}
