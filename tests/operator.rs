//! Operator experience (issue 7) against a real rsync daemon:
//!
//! * `progress_*` – the engine's progress events carry the totals of what the
//!   generator requested (regular files, their list sizes), grow in step with
//!   the transfer, and end at exactly the tree's numbers.
//! * `watch_json_lines_*` – `rmirror watch --json` (no `--once`) prints one
//!   JSON object per pass, one per line, flushed, while a RECENT producer
//!   changes the tree; a failed pass is an object too.
//! * `log_format_json_*` – `--log-format json` makes every stderr log line a
//!   JSON object with level, message and fields; `-q` leaves only errors;
//!   `-vv` adds the library's debug lines; `RMIRROR_LOG` overrides those.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmirror::engine::monitor::{Monitor, Progress};
use rmirror::engine::pull::{pull, PullSpec};
use support::recent_producer::Producer;
use support::{free_port, oracle, tree, Rsyncd, TestDir};

const BIN: &str = env!("CARGO_BIN_EXE_rmirror");

/// Records every progress event and every finished file.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Progress>>,
    done: Mutex<Vec<(Vec<u8>, u64)>>,
}

impl Monitor for Recorder {
    fn progress(&self, p: &Progress) {
        self.events.lock().unwrap().push(*p);
    }
    fn file_done(&self, name: &[u8], bytes: u64) {
        self.done.lock().unwrap().push((name.to_vec(), bytes));
    }
}

/// A tree with regular files of many sizes (one empty, one of 1.5 MiB),
/// symlinks, a hard-link pair and nested directories.
fn progress_tree() -> tree::TreeSpec {
    tree::TreeSpec::new()
        .file("a.txt", "hello\n")
        .file("empty", "")
        .random_file("sub/big.bin", 1_536_000, 1)
        .random_file("sub/deeper/mid.bin", 70_000, 2)
        .random_file("sub/deeper/same.bin", 5_000, 3)
        .random_file("other/x.dat", 123_457, 4)
        .hardlink("other/x-link.dat", "other/x.dat")
        .symlink("sub/link", "../a.txt")
        .dir("emptydir")
        .random_file("changed.bin", 40_000, 5)
}

/// `n` small files under authors/ with a history of events (so the RECENT
/// files have content), a producer to change them, and a daemon.
struct Upstream {
    src: TestDir,
    prod: Producer,
    d: Rsyncd,
}

fn upstream(n: usize) -> Upstream {
    let src = TestDir::new("op-src");
    let mut paths = Vec::new();
    for i in 0..n {
        let p = format!("authors/id/A/AU/AUTH{}/Dist-{i}.tar.gz", i / 10);
        std::fs::create_dir_all(src.join(&p).parent().unwrap()).unwrap();
        std::fs::write(src.join(&p), format!("dist {i}\n").repeat(i + 1)).unwrap();
        tree::set_mtime(&src.join(&p), 1_500_000_000 + i as i64, 0);
        paths.push(p);
    }
    let mut prod = Producer::new(src.path());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for (i, p) in paths.iter().enumerate() {
        prod.set_clock(Some(now - 3600.0 + i as f64));
        prod.record(p, true);
    }
    prod.publish();
    prod.set_clock(None);
    let d = Rsyncd::builder().module("pub", src.path()).start();
    Upstream { src, prod, d }
}

fn rmirror() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(Stdio::null()).env_remove("RSYNC_PASSWORD").env_remove("RMIRROR_LOG").env_remove("RMIRROR_LOG_FORMAT");
    c
}

/// Decimal epoch strings compared as numbers (trailing zeros do not matter).
fn same_epoch(a: &serde_json::Value, b: &str) -> bool {
    let norm = |s: &str| {
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        (i.trim_start_matches('0').to_string(), f.trim_end_matches('0').to_string())
    };
    a.as_str().is_some_and(|a| norm(a) == norm(b))
}

/// The fields every `watch --json` pass line carries (docs/json.md).
const PASS_FIELDS: &[&str] = &[
    "type", "time", "tree", "kind", "full_reason", "dirtymark_deferred", "complete", "events", "requested", "fetched", "deleted",
    "delete_not_found", "vanished", "recent_files_fetched", "published_recent", "bytes_received",
    "upstream_newest", "applied", "lag_secs", "age_secs", "seconds",
];

/// The child, stopped with SIGTERM (then SIGKILL) when dropped.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every stdout line of the child, as it comes (a line arrives only if the
/// child flushed it).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next stdout line parsed as one JSON object (panics on anything else).
fn next_object(rx: &std::sync::mpsc::Receiver<String>, limit: Duration, log: &Path) -> serde_json::Value {
    let l = rx.recv_timeout(limit).unwrap_or_else(|e| {
        panic!("no line within {limit:?} ({e}); stderr:\n{}", std::fs::read_to_string(log).unwrap_or_default())
    });
    let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
    assert!(v.is_object(), "{l}");
    v
}

#[test]
fn watch_json_lines_one_object_per_pass() {
    let mut up = upstream(30);
    let parent = TestDir::new("op-dest");
    let dest = parent.join("mirror");
    let log = parent.join("stderr.log");
    let mut child = rmirror()
        .args(["watch", "--json", "--interval", "1"])
        .arg(up.d.url("pub"))
        .arg(&dest)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rmirror watch");
    let rx = lines_of(&mut child);
    let _guard = Child(child);
    let check_shape = |v: &serde_json::Value| {
        for f in PASS_FIELDS {
            assert!(v.get(*f).is_some(), "{f} missing in {v}");
        }
        assert_eq!(v["type"], "pass");
        assert_eq!(v["tree"], "/");
        assert!(v["time"].as_f64().is_some_and(|t| t > 1.7e9), "{v}");
        assert!(v["seconds"].as_f64().is_some() && v["lag_secs"].as_f64().is_some(), "{v}");
    };

    // pass 1: no state yet, a full sync of everything
    let v = next_object(&rx, Duration::from_secs(60), &log);
    check_shape(&v);
    assert_eq!(v["kind"], "full", "{v}");
    assert_eq!(v["full_reason"], "no_state", "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert!(v["fetched"].as_u64().unwrap() >= 30, "{v}");
    let newest = up.prod.newest_epoch();
    assert!(same_epoch(&v["upstream_newest"], &newest), "{v} vs {newest}");
    assert!(same_epoch(&v["applied"], &newest), "{v} vs {newest}");
    assert_eq!(v["lag_secs"], 0.0, "{v}");
    oracle::assert_clean(&up.d.url("pub"), &dest);

    // changes upstream: 3 new files, 1 deleted
    for i in 0..3 {
        up.prod.write_file(&format!("authors/id/N/NE/NEW/New-{i}.tar.gz"), format!("new {i}\n").as_bytes());
    }
    up.prod.delete_file("authors/id/A/AU/AUTH0/Dist-3.tar.gz");
    up.prod.publish();
    let newest = up.prod.newest_epoch();
    // passes keep coming, one object each; the first that sees the change applies it whole
    let t = Instant::now();
    let mut quiet = 0;
    let v = loop {
        let v = next_object(&rx, Duration::from_secs(30), &log);
        check_shape(&v);
        if v["fetched"].as_u64() > Some(0) || v["deleted"].as_u64() > Some(0) {
            break v;
        }
        assert_eq!(v["kind"], "incremental", "{v}");
        quiet += 1;
        assert!(t.elapsed() < Duration::from_secs(60), "the change was never applied");
    };
    assert_eq!(v["kind"], "incremental", "{v}");
    assert_eq!(v["events"], 4, "{v}");
    assert_eq!(v["fetched"], 3, "{v}");
    assert_eq!(v["deleted"], 1, "{v}");
    assert!(v["bytes_received"].as_u64().unwrap() >= 18, "{v}");
    assert!(same_epoch(&v["upstream_newest"], &newest), "{v} vs {newest}");
    assert!(same_epoch(&v["applied"], &newest), "{v} vs {newest}");
    assert_eq!(v["lag_secs"], 0.0, "{v}");
    assert!(v["age_secs"].as_f64().is_some_and(|a| (0.0..60.0).contains(&a)), "{v}");
    oracle::assert_clean(&up.d.url("pub"), &dest);
    // and a quiet pass after it: nothing to do, still one object
    let v = next_object(&rx, Duration::from_secs(30), &log);
    check_shape(&v);
    assert_eq!((v["events"].as_u64(), v["fetched"].as_u64()), (Some(0), Some(0)), "{v}");
    eprintln!("{quiet} quiet passes before the change was seen");

    // the upstream goes away: the failed pass is an object too, with its exit code
    up.d.kill();
    let t = Instant::now();
    let v = loop {
        let v = next_object(&rx, Duration::from_secs(30), &log);
        if v["type"] == "failure" {
            break v;
        }
        check_shape(&v);
        assert!(t.elapsed() < Duration::from_secs(30));
    };
    assert_eq!(v["tree"], "/");
    assert_eq!(v["exit"], 10, "connection refused is a socket error: {v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(v["time"].as_f64().is_some(), "{v}");
    // the log lines stayed on stderr, as text
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.lines().any(|l| l.contains("rmirror watch [/] ERROR ")), "{err}");
    let _ = &up.src;
}

fn run_pull(spec: &PullSpec) -> (Vec<Progress>, Vec<(Vec<u8>, u64)>) {
    let rec = Arc::new(Recorder::default());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rep = rt.block_on(pull(spec, rec.clone())).expect("pull");
    assert_eq!(rep.exit_code().code(), 0, "pull exit");
    let ev = rec.events.lock().unwrap().clone();
    let done = rec.done.lock().unwrap().clone();
    (ev, done)
}

/// Events are consistent snapshots, in order: totals and done counts never go
/// back, done never passes the totals, and the last event is complete.
fn check_events(ev: &[Progress], files: u64, bytes: u64) {
    assert!(!ev.is_empty(), "no progress events");
    for w in ev.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(b.files_total >= a.files_total && b.bytes_total >= a.bytes_total, "totals went back: {a:?} -> {b:?}");
        assert!(b.files_done >= a.files_done && b.bytes_done >= a.bytes_done, "done went back: {a:?} -> {b:?}");
        assert!(b.bytes_received >= a.bytes_received);
        assert!(!a.totals_final || b.totals_final, "totals_final was withdrawn");
        if a.totals_final {
            assert_eq!((a.files_total, a.bytes_total), (b.files_total, b.bytes_total), "totals grew after totals_final");
        }
    }
    for p in ev {
        assert!(p.files_done <= p.files_total && p.bytes_done <= p.bytes_total, "done beyond total: {p:?}");
    }
    let last = ev.last().unwrap();
    assert_eq!(
        *last,
        Progress { files_total: files, bytes_total: bytes, files_done: files, bytes_done: bytes, bytes_received: bytes, totals_final: true },
        "the last event"
    );
}

fn size_of(root: &Path, rel: &str) -> u64 {
    std::fs::metadata(root.join(rel)).unwrap().len()
}

#[test]
fn progress_totals_match_the_tree_with_and_without_inc_recursion() {
    let src = TestDir::new("prog-src");
    let spec = progress_tree();
    spec.write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    for inc in [true, false] {
        let dest = TestDir::new("prog-dest");
        // DEST already has same.bin up to date (not requested) and an older,
        // different changed.bin (requested: its new size counts).
        std::fs::create_dir_all(dest.join("sub/deeper")).unwrap();
        std::fs::copy(src.join("sub/deeper/same.bin"), dest.join("sub/deeper/same.bin")).unwrap();
        let (m, n) = tree::mtime(&src.join("sub/deeper/same.bin"));
        tree::set_mtime(&dest.join("sub/deeper/same.bin"), m, n);
        std::fs::write(dest.join("changed.bin"), vec![7u8; 1000]).unwrap();

        // Expected from the tree as built: every regular file but the one
        // already there, the hard-link pair once.
        let wanted = ["a.txt", "empty", "sub/big.bin", "sub/deeper/mid.bin", "other/x.dat", "changed.bin"];
        let bytes: u64 = wanted.iter().map(|f| size_of(src.path(), f)).sum();
        assert_eq!(bytes, spec.total_size() - 5_000, "the fixture itself");

        let mut ps = PullSpec::new(rmirror::remote::parse(&d.url("pub")).unwrap(), dest.path());
        ps.inc_recurse = inc;
        // slow the big file down (server side) so bytes of a file in flight are reported
        ps.bwlimit = Some(4000);
        let (ev, done) = run_pull(&ps);
        oracle::assert_clean(&d.url("pub"), dest.path());
        check_events(&ev, wanted.len() as u64, bytes);

        // file_done agrees with the totals, name by name
        let got: HashMap<String, u64> = done.iter().map(|(n, b)| (String::from_utf8_lossy(n).into_owned(), *b)).collect();
        assert_eq!(got.len(), 6, "inc={inc}: {got:?}");
        for f in wanted {
            assert!(
                got.get(f) == Some(&size_of(src.path(), f)) || (f == "other/x.dat" && got.get("other/x-link.dat") == Some(&123_457)),
                "inc={inc}: {f} in {got:?}"
            );
        }
        // The big file was seen part-way: an event with bytes_done inside a file.
        let ends: Vec<u64> = ev.iter().map(|p| p.bytes_done).collect();
        let inside = ev.windows(2).any(|w| w[1].files_done == w[0].files_done && w[1].bytes_done > w[0].bytes_done);
        assert!(inside, "inc={inc}: no in-flight progress in {ends:?}");
        // The totals were known (final) before the last file ended.
        let first_final = ev.iter().position(|p| p.totals_final).unwrap();
        assert!(ev[first_final].files_done < wanted.len() as u64 || first_final + 1 == ev.len(), "inc={inc}");
    }
}

#[test]
fn progress_nothing_to_fetch_and_dry_run_report_no_files() {
    let src = TestDir::new("prog2-src");
    progress_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let dest = TestDir::new("prog2-dest");
    // a dry run requests nothing
    let mut ps = PullSpec::new(rmirror::remote::parse(&d.url("pub")).unwrap(), dest.path());
    ps.dry_run = true;
    let (ev, _) = run_pull(&ps);
    assert!(ev.iter().all(|p| p.files_total == 0 && p.bytes_total == 0), "{ev:?}");
    // a real pull, then a second one that finds everything up to date
    ps.dry_run = false;
    let (ev, _) = run_pull(&ps);
    assert_eq!(ev.last().map(|p| p.files_total), Some(7), "every regular file, the hard-link pair once");
    let (ev, done) = run_pull(&ps);
    assert!(done.is_empty());
    assert!(ev.iter().all(|p| p.files_total == 0), "{ev:?}");
    assert!(ev.last().is_some_and(|p| p.totals_final), "totals_final is still reported: {ev:?}");
}

/// Every stderr line parsed as a JSON log object with the documented keys.
fn json_log_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}\n{text}"));
            assert!(["error", "warn", "info", "debug", "trace"].contains(&v["level"].as_str().unwrap_or("")), "{l}");
            assert!(v["message"].is_string(), "{l}");
            assert!(v["fields"].is_object(), "{l}");
            assert!(v["target"].is_string(), "{l}");
            assert!(v["timestamp"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{l}");
            v
        })
        .collect()
}

fn regular_files(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += regular_files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

fn ok(o: &std::process::Output) -> &std::process::Output {
    assert!(
        o.status.success(),
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn log_format_json_levels_follow_q_v_and_debug() {
    let up = upstream(12);
    let parent = TestDir::new("op-log");
    let watch = |dest: &str, flags: &[&str]| {
        rmirror().args(["--log-format", "json", "watch", "--once"]).args(flags).arg(up.d.url("pub")).arg(parent.join(dest)).output().unwrap()
    };
    let is = |v: &serde_json::Value, level: &str| v["level"] == level;
    let full_sync_line = |v: &serde_json::Value| {
        v["target"] == "rmirror" && is(v, "info") && v["message"].as_str().is_some_and(|m| m.starts_with("full sync")) && v["fields"]["tree"] == "/"
    };

    // -vv: the operator's info lines and the library's debug lines, all JSON
    let lines = json_log_lines(&ok(&watch("vv", &["-vv"])).stderr);
    assert!(lines.iter().any(full_sync_line), "{lines:#?}");
    let lib_debug: Vec<_> =
        lines.iter().filter(|v| is(v, "debug") && v["target"].as_str().is_some_and(|t| t.starts_with("rmirror::engine"))).collect();
    assert!(!lib_debug.is_empty(), "no engine debug lines: {lines:#?}");
    assert!(lib_debug.iter().any(|v| v["fields"].as_object().is_some_and(|f| !f.is_empty())), "debug lines carry fields: {lib_debug:#?}");
    // --debug is the same as -vv
    let lines = json_log_lines(&ok(&watch("debug", &["--debug"])).stderr);
    assert!(lines.iter().any(|v| is(v, "debug")), "{lines:#?}");

    // -v and the default: the operator's info lines, no debug
    for (dest, flags) in [("v", &["-v"][..]), ("default", &[][..])] {
        let lines = json_log_lines(&ok(&watch(dest, flags)).stderr);
        assert!(lines.iter().any(full_sync_line), "{flags:?}: {lines:#?}");
        assert!(!lines.iter().any(|v| is(v, "debug")), "{flags:?}: {lines:#?}");
    }

    // -q: errors only (none here), so nothing at all
    let o = watch("q", &["-q"]);
    assert!(ok(&o).stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    // RMIRROR_LOG replaces the library's filter, -q still holds the operator's lines back
    let o = rmirror()
        .args(["--log-format", "json", "watch", "--once", "-q"])
        .arg(up.d.url("pub"))
        .arg(parent.join("env"))
        .env("RMIRROR_LOG", "rmirror::engine=debug")
        .output()
        .unwrap();
    let lines = json_log_lines(&ok(&o).stderr);
    assert!(lines.iter().any(|v| is(v, "debug")), "{lines:#?}");
    assert!(lines.iter().all(|v| v["target"] != "rmirror"), "{lines:#?}");

    // a failure under -q: one error line, with the exit code as a field
    let dead = format!("rsync://127.0.0.1:{}/pub/", free_port());
    let o = rmirror().args(["--log-format", "json", "sync", "-q", &dead]).arg(parent.join("fail")).output().unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_log_lines(&o.stderr);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(is(&lines[0], "error") && lines[0]["fields"]["exit"] == 10, "{lines:#?}");
    // RMIRROR_LOG_FORMAT does the same as the flag; text stays the default, in the old layout
    let o = rmirror().args(["sync", &dead]).arg(parent.join("fail")).env("RMIRROR_LOG_FORMAT", "json").output().unwrap();
    assert_eq!(json_log_lines(&o.stderr).len(), 1);
    let o = rmirror().args(["sync", &dead]).arg(parent.join("fail")).output().unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(text.starts_with("rmirror: ") && serde_json::from_str::<serde_json::Value>(text.trim()).is_err(), "{text}");
    let o = ok(&rmirror().args(["watch", "--once"]).arg(up.d.url("pub")).arg(parent.join("text")).output().unwrap()).stderr.clone();
    let text = String::from_utf8_lossy(&o);
    assert!(text.lines().any(|l| l.contains(" rmirror watch [/] full sync")), "{text}");
    let _ = &up.src;
}

#[test]
fn log_format_json_run_and_run_json_lines() {
    let up = upstream(5);
    let work = TestDir::new("op-run");
    let cfg = work.join("mirrors.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"state\"\n[[job]]\nname = \"plain\"\ndestination = \"dest/plain\"\nupstream = \"{u}\"\n\
             [[job]]\nname = \"broken\"\ndestination = \"dest/broken\"\nupstream = \"rsync://127.0.0.1:{dead}/pub/\"\ncontimeout = \"5s\"\n",
            u = up.d.url("pub"),
            dead = free_port()
        ),
    )
    .unwrap();
    let o = rmirror().args(["--log-format", "json", "run", "--once", "--json", "-c"]).arg(&cfg).output().unwrap();
    // one job failed: the worst exit code
    assert_eq!(o.status.code(), Some(10), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_log_lines(&o.stderr);
    for job in ["plain", "broken"] {
        assert!(lines.iter().any(|v| v["fields"]["job"] == job && v["message"] == "started"), "{job}: {lines:#?}");
    }
    let failed = lines.iter().find(|v| v["fields"]["job"] == "broken" && v["message"].as_str().is_some_and(|m| m.starts_with("failed")));
    assert_eq!(failed.map(|v| &v["level"]), Some(&serde_json::json!("error")), "{lines:#?}");
    // stdout: one object per finished run, as `status --json` shows a job
    let out = String::from_utf8_lossy(&o.stdout);
    let runs: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    assert_eq!(runs.len(), 2, "{out}");
    let by: HashMap<String, &serde_json::Value> = runs.iter().map(|v| (v["job"].as_str().unwrap().to_string(), v)).collect();
    assert_eq!(by["plain"]["type"], "job");
    assert_eq!(by["plain"]["result"], "ok");
    // every regular file upstream (the 5 dists and the RECENT files)
    let regular = regular_files(up.src.path());
    assert!(regular > 5);
    assert_eq!(by["plain"]["files"], regular, "{out}");
    assert_eq!(by["plain"]["exit_code"], 0);
    assert_eq!(by["broken"]["result"], "failed");
    assert_eq!(by["broken"]["exit_code"], 10);
    // -q: only the error lines remain
    let o = rmirror().args(["--log-format", "json", "run", "--once", "--ignore-timers", "-q", "-c"]).arg(&cfg).output().unwrap();
    let lines = json_log_lines(&o.stderr);
    assert!(!lines.is_empty() && lines.iter().all(|v| v["level"] == "error"), "{lines:#?}");
    assert!(o.stdout.is_empty(), "no --json: nothing on stdout");
    let _ = &up.src;
}

/// `watch` on a terminal shows the transfer bar (bytes, files, rate, ETA)
/// while a pass pulls, and nothing of it when stderr is not a terminal.
/// The terminal is a real pseudo-terminal from util-linux `script`.
#[test]
fn watch_progress_bar_only_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed for the pseudo-terminal (scripts/test installs bsdutils)");
    }
    let up = upstream(400);
    let parent = TestDir::new("op-bar");
    let url = up.d.url("pub");

    // On a pseudo-terminal: the bar is drawn (its text names files and an ETA).
    let dest = parent.join("tty");
    let cmd = format!(
        "{} watch --once {} {}",
        BIN,
        url,
        dest.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("RMIRROR_NO_PROGRESS")
        .env_remove("RMIRROR_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "watch under a pty failed: {tty}");
    assert!(tty.contains(" files") && tty.contains("ETA"), "no progress bar on the terminal:\n{tty}");
    oracle::assert_clean(&url, &dest);

    // Not a terminal: no bar, no cursor control.
    let dest2 = parent.join("pipe");
    let out = rmirror().args(["watch", "--once"]).arg(&url).arg(&dest2).output().expect("run watch");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = [out.stdout, out.stderr].concat();
    let all = String::from_utf8_lossy(&all);
    assert!(!all.contains("ETA") && !all.contains('\u{1b}') && !all.contains('\r'), "bar drawn without a terminal:\n{all}");
    oracle::assert_clean(&url, &dest2);
}
