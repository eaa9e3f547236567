//! The terminal progress view: a [`Monitor`] drawing an `indicatif` bar on
//! stderr (files done of files to fetch, bytes, rate, ETA), and the
//! `--stats` summary. The bar exists only when stderr is a terminal and `-q`
//! was not given; anything else the command prints goes through
//! [`Bar::suspend`] so lines never tear through the bar.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::monitor::{Item, Monitor, Progress};
use crate::engine::SyncReport;

/// What the bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// A transfer: files received of files requested, bytes, rate, ETA.
    Transfer,
    /// A comparison (dry run): a spinner with the differences found so far.
    Compare,
}

pub struct Bar {
    pb: ProgressBar,
    kind: BarKind,
    /// Regular files the generator asked for (`>f` items), or the engine's total.
    wanted: AtomicU64,
    done: AtomicU64,
    bytes: AtomicU64,
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
                let style = ProgressStyle::with_template(
                    "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} files  {msg}  ETA {eta}",
                )
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
            wanted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            items: AtomicU64::new(0),
            started: Instant::now(),
        };
        b.refresh();
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

    /// (files done, files wanted, bytes received).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.done.load(Relaxed), self.wanted.load(Relaxed), self.bytes.load(Relaxed))
    }

    fn refresh(&self) {
        match self.kind {
            BarKind::Transfer => {
                let (done, wanted, bytes) = self.counts();
                self.pb.set_length(wanted.max(done));
                self.pb.set_position(done);
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                self.pb.set_message(format!("{}  {}/s", HumanBytes(bytes), HumanBytes((bytes as f64 / secs) as u64)));
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
    fn item(&self, item: &Item) {
        self.items.fetch_add(1, Relaxed);
        if item.code.starts_with(">f") {
            self.wanted.fetch_add(1, Relaxed);
        }
        self.refresh();
    }
    fn progress(&self, p: &Progress) {
        if p.files_total > 0 {
            self.wanted.fetch_max(p.files_total, Relaxed);
        }
    }
    fn file_done(&self, _name: &[u8], bytes: u64) {
        self.done.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.refresh();
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// rsync's `--stats` block and closing two lines, from a finished transfer.
pub fn stats_text(r: &SyncReport, elapsed: Duration) -> String {
    let total_size = r.total_size.max(0) as u64;
    let transferred = r.literal_bytes + r.matched_bytes;
    let mut s = String::new();
    s.push('\n');
    s.push_str(&format!("Number of files: {}\n", group(r.files_in_list)));
    s.push_str(&format!("Number of regular files transferred: {}\n", group(r.files_transferred)));
    s.push_str(&format!("Number of deleted files: {}\n", group(r.deleted)));
    s.push_str(&format!("Total file size: {} bytes\n", group(total_size)));
    s.push_str(&format!("Total transferred file size: {} bytes\n", group(transferred)));
    s.push_str(&format!("Literal data: {} bytes\n", group(r.literal_bytes)));
    s.push_str(&format!("Matched data: {} bytes\n", group(r.matched_bytes)));
    s.push_str(&format!("Total bytes sent: {}\n", group(r.bytes_written)));
    s.push_str(&format!("Total bytes received: {}\n", group(r.bytes_read)));
    if let Some(st) = r.server_stats {
        s.push_str(&format!("Server reports: read {} written {} total size {}\n", st.server_read, st.server_written, st.total_size));
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    let wire = r.bytes_read + r.bytes_written;
    s.push('\n');
    s.push_str(&format!(
        "sent {} bytes  received {} bytes  {} bytes/sec\n",
        group(r.bytes_written),
        group(r.bytes_read),
        {
            let cents = (wire as f64 / secs * 100.0).round() as u64;
            format!("{}.{:02}", group(cents / 100), cents % 100)
        }
    ));
    let speedup = if wire == 0 { 0.0 } else { total_size as f64 / wire as f64 };
    s.push_str(&format!("total size is {}  speedup is {:.2}\n", group(total_size), speedup));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(code: &str) -> Item {
        Item { code: code.into(), name: b"f".to_vec(), is_dir: false, link_target: None, hardlink_to: None }
    }

    #[test]
    fn counts_requested_files_and_bytes() {
        let b = Bar::new(BarKind::Transfer, ProgressDrawTarget::hidden());
        b.item(&item(">f+++++++++"));
        b.item(&item(">f.st......"));
        b.item(&item("cd+++++++++"));
        b.file_done(b"f", 1000);
        assert_eq!(b.counts(), (1, 2, 1000));
        b.progress(&Progress { files_total: 5, files_done: 1, bytes_received: 1000 });
        assert_eq!(b.counts().1, 5);
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
