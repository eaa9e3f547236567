//! How library code reports what it does. Only `cli` and `daemon` print; the
//! terminal view, JSON output and tests are implementations of [`Monitor`].

use crate::proto::session::MsgKind;

/// One itemized change, in rsync's `%i` terms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// The 11-character `YXcstpoguax` code, or `*deleting`.
    pub code: String,
    /// Raw wire name (may be non-UTF-8).
    #[serde(serialize_with = "ser_bytes")]
    pub name: Vec<u8>,
    /// Directory names are printed with a trailing `/`.
    pub is_dir: bool,
    /// `-> target` for symlinks.
    #[serde(serialize_with = "ser_opt_bytes")]
    pub link_target: Option<Vec<u8>>,
    /// `=> leader` for hard links.
    #[serde(serialize_with = "ser_opt_bytes")]
    pub hardlink_to: Option<Vec<u8>>,
}

fn ser_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn ser_opt_bytes<S: serde::Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(&String::from_utf8_lossy(b)),
        None => s.serialize_none(),
    }
}

impl Item {
    /// rsync's `-i` line: code, space, escaped name (+ `/`, `-> target`, `=> leader`).
    pub fn line(&self) -> String {
        let mut s = format!("{:<11} {}", self.code, crate::text::escape_name(&self.name));
        if self.is_dir && self.name != b"." {
            s.push('/');
        } else if self.is_dir {
            s.truncate(s.len() - 1);
            s.push_str("./");
        }
        if let Some(t) = &self.link_target {
            s.push_str(" -> ");
            s.push_str(&crate::text::escape_name(t));
        }
        if let Some(t) = &self.hardlink_to {
            s.push_str(" => ");
            s.push_str(&crate::text::escape_name(t));
        }
        s
    }
}

/// Progress of one transfer (cumulative counters, a snapshot).
///
/// The totals grow as the generator decides what to fetch (with incremental
/// recursion lists keep arriving while files are received); `totals_final`
/// says no more requests will come. Invariants: `files_done <= files_total`,
/// `bytes_done <= bytes_total`; both reach their total when every requested
/// file has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Regular files requested from the server so far (a retried file once).
    pub files_total: u64,
    /// Sum of their sizes in the file list.
    pub bytes_total: u64,
    /// Requested files that ended for good: received, or failed.
    pub files_done: u64,
    /// The part of `bytes_total` done: an ended file counts with its list
    /// size, the file being received with the bytes written so far.
    pub bytes_done: u64,
    /// File data written to temp files (every attempt; the real amount).
    pub bytes_received: u64,
    /// Every file list has been walked: the totals will not grow any more.
    pub totals_final: bool,
}

/// How often at most the receiver reports bytes of a file still arriving.
const IN_FLIGHT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The counters behind [`Progress`], shared by the generator (totals) and
/// the receiver (done). Every change is reported to the monitor under the
/// lock, so snapshots arrive in the order they were taken.
#[derive(Debug, Default)]
pub struct ProgressCounter {
    inner: std::sync::Mutex<CounterState>,
}

#[derive(Debug, Default)]
struct CounterState {
    p: Progress,
    /// `bytes_done` of the files that ended.
    closed: u64,
    last_in_flight: Option<std::time::Instant>,
}

impl ProgressCounter {
    fn update(&self, mon: &dyn Monitor, f: impl FnOnce(&mut CounterState) -> bool) {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        if f(&mut g) {
            mon.progress(&g.p);
        }
    }

    /// The generator requested a regular file of `size` bytes.
    pub fn wanted(&self, mon: &dyn Monitor, size: i64) {
        self.update(mon, |s| {
            s.p.files_total += 1;
            s.p.bytes_total += size.max(0) as u64;
            true
        });
    }

    /// `written` bytes of the file being received (`size` in the list) are
    /// in its temp file; reported at most every 100 ms.
    pub fn receiving(&self, mon: &dyn Monitor, written: u64, size: i64) {
        self.update(mon, |s| {
            s.p.bytes_done = s.closed + written.min(size.max(0) as u64);
            let now = std::time::Instant::now();
            if s.last_in_flight.is_some_and(|t| now.duration_since(t) < IN_FLIGHT_EVERY) {
                return false;
            }
            s.last_in_flight = Some(now);
            true
        });
    }

    /// A requested file ended after `written` bytes. `for_good`: received or
    /// failed (false: it will be requested again, its bytes count again).
    pub fn ended(&self, mon: &dyn Monitor, written: u64, size: i64, for_good: bool) {
        self.update(mon, |s| {
            s.p.bytes_received += written;
            if for_good {
                s.p.files_done += 1;
                s.closed += size.max(0) as u64;
            }
            s.p.bytes_done = s.closed;
            true
        });
    }

    /// No more requests will come.
    pub fn totals_final(&self, mon: &dyn Monitor) {
        self.update(mon, |s| !std::mem::replace(&mut s.p.totals_final, true));
    }

    pub fn snapshot(&self) -> Progress {
        match self.inner.lock() {
            Ok(g) => g.p,
            Err(e) => e.into_inner().p,
        }
    }
}

pub trait Monitor: Send + Sync {
    /// A MOTD or listing line from the daemon (raw bytes; escape before printing).
    fn text(&self, _line: &[u8]) {}
    /// A message from the server, in its words (raw; escape before printing).
    fn message(&self, _kind: MsgKind, _text: &[u8]) {}
    /// A local problem that did not stop the run (e.g. one file could not be written).
    fn local_error(&self, _text: &str) {}
    fn item(&self, _item: &Item) {}
    /// The transfer's counters changed (see [`Progress`]); called from the
    /// generator and receiver threads, so keep it quick.
    fn progress(&self, _p: &Progress) {}
    /// A file was received and verified (`bytes` = its size).
    fn file_done(&self, _name: &[u8], _bytes: u64) {}
}

/// A monitor that ignores everything.
pub struct Silent;
impl Monitor for Silent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec(std::sync::Mutex<Vec<Progress>>);
    impl Monitor for Rec {
        fn progress(&self, p: &Progress) {
            self.0.lock().unwrap().push(*p);
        }
    }

    #[test]
    fn counter_totals_redo_and_bytes_in_flight() {
        let (r, c) = (Rec::default(), ProgressCounter::default());
        c.wanted(&r, 100);
        c.wanted(&r, 50);
        c.wanted(&r, -5); // a negative size from a hostile list counts as 0
        assert_eq!((c.snapshot().files_total, c.snapshot().bytes_total), (3, 150));
        c.receiving(&r, 40, 100);
        c.receiving(&r, 60, 100); // within 100 ms: counted, not reported
        assert_eq!(r.0.lock().unwrap().len(), 4);
        assert_eq!(c.snapshot().bytes_done, 60);
        c.receiving(&r, 500, 100); // a file that grew: capped at its list size
        assert_eq!(c.snapshot().bytes_done, 100);
        // verification failed once: it will come again, its bytes count again
        c.ended(&r, 100, 100, false);
        let p = c.snapshot();
        assert_eq!((p.files_done, p.bytes_done, p.bytes_received), (0, 0, 100));
        c.ended(&r, 100, 100, true);
        c.ended(&r, 0, 50, true); // not sent by the server: done (failed)
        let p = c.snapshot();
        assert_eq!((p.files_done, p.bytes_done, p.bytes_received), (2, 150, 200));
        assert!(!p.totals_final);
        c.totals_final(&r);
        c.totals_final(&r);
        let ev = r.0.lock().unwrap();
        assert_eq!(ev.iter().filter(|p| p.totals_final).count(), 1, "reported once");
        assert_eq!(*ev.last().unwrap(), c.snapshot(), "the last report is the state");
    }
}
