//! The terminal progress view: a [`Monitor`] drawing an `indicatif` bar on
//! stderr (bytes done of bytes to fetch, files, rate, an ETA by bytes), and
//! the `--stats` summary. The bar exists only when stderr is a terminal and
//! `-q` was not given; anything else the command prints goes through
//! [`Bar::suspend`] so lines never tear through the bar.
//!
//! The totals come from the engine ([`Progress`]): the regular files the
//! generator requested and their sizes in the file list, growing while lists
//! arrive (shown with `+` until they are final). The rate is measured over
//! the last [`RATE_WINDOW_SECS`] seconds, so the ETA follows the link's
//! current speed rather than the average since the start.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::monitor::{Item, Monitor, Progress};
use crate::text::group_digits;
use crate::engine::SyncReport;

/// The rate behind the ETA is measured over this many recent seconds.
pub const RATE_WINDOW_SECS: f64 = 10.0;
/// A rate needs at least this much time between its two samples.
const MIN_RATE_SPAN_SECS: f64 = 1.0;
/// Samples closer together than this are not kept.
const SAMPLE_SPACING_SECS: f64 = 0.25;

/// What the bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// A transfer: bytes received of bytes requested, files, rate, ETA.
    Transfer,
    /// A comparison (dry run): a spinner with the differences found so far.
    Compare,
}

/// Bytes per second over a sliding window of (time, bytes done) samples.
#[derive(Debug, Clone)]
pub struct Rate {
    samples: VecDeque<(f64, u64)>,
    window: f64,
}

impl Rate {
    pub fn new(window_secs: f64) -> Rate {
        Rate { samples: VecDeque::new(), window: window_secs }
    }

    /// `bytes` were done `t` seconds after the start (both non-decreasing).
    pub fn observe(&mut self, t: f64, bytes: u64) {
        if self.samples.back().map_or(true, |&(lt, _)| t - lt >= SAMPLE_SPACING_SECS) {
            self.samples.push_back((t, bytes));
        }
        // keep one sample at or before the window's start as the anchor
        while self.samples.len() > 2 && self.samples[1].0 <= t - self.window {
            self.samples.pop_front();
        }
    }

    /// Bytes per second from the window's oldest sample to (`t`, `bytes`);
    /// `None` until the samples span [`MIN_RATE_SPAN_SECS`].
    pub fn per_sec(&self, t: f64, bytes: u64) -> Option<f64> {
        let &(t0, b0) = self.samples.front()?;
        let dt = t - t0;
        if dt < MIN_RATE_SPAN_SECS {
            return None;
        }
        Some(bytes.saturating_sub(b0) as f64 / dt)
    }
}

/// Time left for `total - done` bytes at `rate` bytes per second: zero when
/// done, `None` when the rate is unknown or nothing moves.
pub fn eta(done: u64, total: u64, rate: Option<f64>) -> Option<Duration> {
    let left = total.saturating_sub(done);
    if left == 0 {
        return Some(Duration::ZERO);
    }
    let r = rate.filter(|r| r.is_finite() && *r > 0.0)?;
    let secs = left as f64 / r;
    // beyond ~a century is "unknown", and keeps from_secs_f64 in range
    (secs < 3.2e9).then(|| Duration::from_secs_f64(secs))
}

/// `H:MM:SS`, or `--:--:--` when unknown.
fn hms(d: Option<Duration>) -> String {
    match d {
        Some(d) => {
            let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
        }
        None => "--:--:--".into(),
    }
}

/// The bar's text after the bar itself: bytes, files, rate, ETA. While the
/// totals may still grow they carry a `+` and the ETA is a lower bound (`>=`).
pub fn transfer_message(p: &Progress, rate: Option<f64>) -> String {
    let more = if p.totals_final { "" } else { "+" };
    let e = eta(p.bytes_done, p.bytes_total, rate);
    format!(
        "{}/{}{more}  {}/{}{more} files  {}/s  ETA {}{}",
        HumanBytes(p.bytes_done),
        HumanBytes(p.bytes_total),
        p.files_done,
        p.files_total,
        HumanBytes(rate.unwrap_or(0.0).max(0.0) as u64),
        if p.totals_final || e.is_none() { "" } else { ">=" },
        hms(e)
    )
}

pub struct Bar {
    pb: ProgressBar,
    kind: BarKind,
    /// The engine's latest counters.
    last: Mutex<(Progress, Rate)>,
    items: AtomicU64,
    started: Instant,
}

impl Bar {
    /// A bar on stderr, or `None` when stderr is not a terminal or `quiet`.
    pub fn for_terminal(kind: BarKind, quiet: bool) -> Option<Bar> {
        if quiet || !std::io::stderr().is_terminal() || std::env::var_os("RMIRROR_NO_PROGRESS").is_some() {
            return None;
        }
        Some(Bar::new(kind, ProgressDrawTarget::stderr_with_hz(8)))
    }

    /// A bar drawing to `target` (tests use a hidden one).
    pub fn new(kind: BarKind, target: ProgressDrawTarget) -> Bar {
        let pb = match kind {
            BarKind::Transfer => {
                let style = ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                ProgressBar::with_draw_target(Some(0), target).with_style(style)
            }
            BarKind::Compare => {
                let style = ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] comparing: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                ProgressBar::with_draw_target(None, target).with_style(style)
            }
        };
        pb.enable_steady_tick(Duration::from_millis(120));
        let b = Bar {
            pb,
            kind,
            last: Mutex::new((Progress::default(), Rate::new(RATE_WINDOW_SECS))),
            items: AtomicU64::new(0),
            started: Instant::now(),
        };
        b.refresh(None);
        b
    }

    /// Run `f` (which prints) with the bar taken off the screen.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.pb.suspend(f)
    }

    /// Remove the bar (before the final summary).
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }

    /// The engine's latest counters as the bar knows them.
    pub fn counts(&self) -> Progress {
        self.last.lock().map(|g| g.0).unwrap_or_default()
    }

    /// The text the bar shows now (after the bar).
    pub fn message(&self) -> String {
        self.pb.message()
    }

    fn refresh(&self, p: Option<&Progress>) {
        match self.kind {
            BarKind::Transfer => {
                let Ok(mut g) = self.last.lock() else { return };
                let t = self.started.elapsed().as_secs_f64();
                if let Some(p) = p {
                    g.0 = *p;
                    g.1.observe(t, p.bytes_done);
                }
                let cur = g.0;
                let rate = g.1.per_sec(t, cur.bytes_done);
                drop(g);
                self.pb.set_length(cur.bytes_total.max(cur.bytes_done));
                self.pb.set_position(cur.bytes_done);
                self.pb.set_message(transfer_message(&cur, rate));
            }
            BarKind::Compare => {
                let n = self.items.load(Relaxed);
                self.pb.set_message(format!("{n} difference{}", if n == 1 { "" } else { "s" }));
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.pb.finish_and_clear();
    }
}

impl Monitor for Bar {
    fn item(&self, _item: &Item) {
        self.items.fetch_add(1, Relaxed);
        if self.kind == BarKind::Compare {
            self.refresh(None);
        }
    }
    fn progress(&self, p: &Progress) {
        self.refresh(Some(p));
    }
}

/// rsync's `--stats` block and closing two lines, from a finished transfer.
pub fn stats_text(r: &SyncReport, elapsed: Duration) -> String {
    let total_size = r.total_size.max(0) as u64;
    let transferred = r.literal_bytes + r.matched_bytes;
    let mut s = String::new();
    s.push('\n');
    s.push_str(&format!("Number of files: {}\n", group_digits(r.files_in_list)));
    s.push_str(&format!("Number of regular files transferred: {}\n", group_digits(r.files_transferred)));
    s.push_str(&format!("Number of deleted files: {}\n", group_digits(r.deleted)));
    s.push_str(&format!("Total file size: {} bytes\n", group_digits(total_size)));
    s.push_str(&format!("Total transferred file size: {} bytes\n", group_digits(transferred)));
    s.push_str(&format!("Literal data: {} bytes\n", group_digits(r.literal_bytes)));
    s.push_str(&format!("Matched data: {} bytes\n", group_digits(r.matched_bytes)));
    s.push_str(&format!("Total bytes sent: {}\n", group_digits(r.bytes_written)));
    s.push_str(&format!("Total bytes received: {}\n", group_digits(r.bytes_read)));
    if let Some(st) = r.server_stats {
        s.push_str(&format!("Server reports: read {} written {} total size {}\n", st.server_read, st.server_written, st.total_size));
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    let wire = r.bytes_read + r.bytes_written;
    s.push('\n');
    s.push_str(&format!(
        "sent {} bytes  received {} bytes  {} bytes/sec\n",
        group_digits(r.bytes_written),
        group_digits(r.bytes_read),
        {
            let cents = (wire as f64 / secs * 100.0).round() as u64;
            format!("{}.{:02}", group_digits(cents / 100), cents % 100)
        }
    ));
    let speedup = if wire == 0 { 0.0 } else { total_size as f64 / wire as f64 };
    s.push_str(&format!("total size is {}  speedup is {:.2}\n", group_digits(total_size), speedup));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(code: &str) -> Item {
        Item { code: code.into(), name: b"f".to_vec(), is_dir: false, link_target: None, hardlink_to: None }
    }

    fn prog(files: (u64, u64), bytes: (u64, u64), fin: bool) -> Progress {
        Progress {
            files_done: files.0,
            files_total: files.1,
            bytes_done: bytes.0,
            bytes_total: bytes.1,
            bytes_received: bytes.0,
            totals_final: fin,
        }
    }

    #[test]
    fn bar_shows_the_engines_bytes_and_files() {
        let b = Bar::new(BarKind::Transfer, ProgressDrawTarget::hidden());
        b.item(&item(">f+++++++++"));
        b.progress(&prog((1, 2), (1000, 3000), false));
        assert_eq!(b.counts(), prog((1, 2), (1000, 3000), false));
        let m = b.message();
        assert!(m.starts_with("1000 B/2.93 KiB+  1/2+ files"), "{m}");
        // nothing measured for a second yet: no rate, no ETA
        assert!(m.ends_with("ETA --:--:--"), "{m}");
        b.progress(&prog((2, 2), (3000, 3000), true));
        let m = b.message();
        assert!(m.starts_with("2.93 KiB/2.93 KiB  2/2 files"), "{m}");
        assert!(m.ends_with("ETA 0:00:00"), "{m}");
    }

    #[test]
    fn eta_is_bytes_left_over_the_rate() {
        assert_eq!(eta(0, 10_000_000, Some(1_000_000.0)), Some(Duration::from_secs(10)));
        assert_eq!(eta(7_500_000, 10_000_000, Some(1_000_000.0)), Some(Duration::from_millis(2500)));
        assert_eq!(eta(10, 10, None), Some(Duration::ZERO), "done needs no rate");
        assert_eq!(eta(11, 10, Some(5.0)), Some(Duration::ZERO), "a file that grew");
        assert_eq!(eta(0, 10, None), None);
        assert_eq!(eta(0, 10, Some(0.0)), None, "stalled");
        assert_eq!(eta(0, 10, Some(f64::NAN)), None);
        assert_eq!(eta(0, u64::MAX, Some(1e-9)), None, "absurdly far");
        assert_eq!(hms(eta(0, 3_725_000, Some(1000.0))), "1:02:05");
        assert_eq!(hms(Some(Duration::from_millis(1))), "0:00:01", "rounds up");
    }

    #[test]
    fn rate_follows_the_recent_window() {
        let mut r = Rate::new(10.0);
        r.observe(0.0, 0);
        assert_eq!(r.per_sec(0.5, 500), None, "under a second of samples");
        // 1 MB/s for 20 s, sampled every 0.5 s
        for i in 1..=40 {
            let t = i as f64 * 0.5;
            r.observe(t, (t * 1e6) as u64);
        }
        let v = r.per_sec(20.0, 20_000_000).unwrap();
        assert!((v - 1e6).abs() < 1.0, "{v}");
        // then 100 kB/s: after a full window the old speed is forgotten
        for i in 1..=40 {
            let t = 20.0 + i as f64 * 0.5;
            r.observe(t, 20_000_000 + (i as f64 * 0.5 * 1e5) as u64);
        }
        let v = r.per_sec(40.0, 22_000_000).unwrap();
        assert!((v - 1e5).abs() / 1e5 < 0.06, "{v}");
        assert!(r.samples.len() <= 42, "bounded: {}", r.samples.len());
        // ETA for 1 MB left at that rate: 10 s
        let e = eta(22_000_000, 23_000_000, Some(v)).unwrap();
        assert!((e.as_secs_f64() - 10.0).abs() < 0.6, "{e:?}");
        // a stall: the rate falls to zero and the ETA is unknown
        for i in 1..=25 {
            r.observe(40.0 + i as f64 * 0.5, 22_000_000);
        }
        assert_eq!(r.per_sec(52.5, 22_000_000), Some(0.0));
        assert_eq!(eta(22_000_000, 23_000_000, r.per_sec(52.5, 22_000_000)), None);
    }

    #[test]
    fn message_marks_growing_totals() {
        let p = prog((3, 10), (3 << 20, 10 << 20), false);
        let m = transfer_message(&p, Some((1 << 20) as f64));
        assert_eq!(m, "3.00 MiB/10.00 MiB+  3/10+ files  1.00 MiB/s  ETA >=0:00:07");
        let p = prog((3, 10), (3 << 20, 10 << 20), true);
        assert_eq!(transfer_message(&p, Some((1 << 20) as f64)), "3.00 MiB/10.00 MiB  3/10 files  1.00 MiB/s  ETA 0:00:07");
    }

    #[test]
    fn stats_end_like_rsync() {
        let r = SyncReport { total_size: 1_234_567, bytes_read: 1000, bytes_written: 234, files_in_list: 3, ..Default::default() };
        let t = stats_text(&r, Duration::from_secs(1));
        assert!(t.contains("Number of files: 3\n"), "{t}");
        assert!(t.contains("Total file size: 1,234,567 bytes\n"));
        assert!(t.contains("sent 234 bytes  received 1,000 bytes  1,234.00 bytes/sec\n"));
        assert!(t.contains("total size is 1,234,567  speedup is 1000.46\n"));
    }
}
