//! `/metrics` of a running `rmirror run` against a real rsync daemon, scraped
//! over HTTP and parsed with a Prometheus text parser (the `prometheus-parse`
//! crate, cross-checked by a strict line grammar here so nothing is silently
//! skipped); every per-job value must match the status file.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{free_port, oracle, tree, Rsyncd, TestDir};

/// The `rmirror run` child, stopped (SIGTERM, then SIGKILL) when dropped.
struct Runner(Child);

impl Drop for Runner {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// A strict reading of the text format: every line is a `# HELP`/`# TYPE`
/// comment or `name{label="value",…} number`; returns the samples.
fn strict_parse(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name) = (w.next().unwrap(), w.next().unwrap_or(""));
            assert!(kw == "HELP" || kw == "TYPE", "bad comment line {line:?}");
            assert!(name_ok(name), "bad metric name in {line:?}");
            if kw == "TYPE" {
                assert!(["counter", "gauge"].contains(&w.next().unwrap_or("")), "bad type in {line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = HashMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(name_ok(&key), "bad label name in {line:?}");
                    assert_eq!(chars.next(), Some('"'), "unquoted label value in {line:?}");
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c @ ('\\' | '"')) => v.push(c),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some('"') => break,
                            Some(c) => v.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    }
                    labels.insert(key, v);
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => panic!("unexpected {c:?} after a label in {line:?}"),
                    }
                }
                (n, labels)
            }
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        out.push((name.to_string(), labels, value));
    }
    out
}

struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let strict = strict_parse(text);
        let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse");
        assert_eq!(s.samples.len(), strict.len(), "prometheus-parse and the strict grammar disagree:\n{text}");
        Scrape(s)
    }
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{metric}: not a plain value"),
            })
            .collect();
        assert!(hits.len() <= 1, "{metric} {labels:?}: {} samples", hits.len());
        hits.first().copied()
    }
    fn job(&self, metric: &str, job: &str) -> f64 {
        self.get(metric, &[("job", job)]).unwrap_or_else(|| panic!("no {metric} for {job}"))
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.01
}

#[test]
fn metrics_of_a_running_scheduler_match_the_status_file() {
    let src = TestDir::new("metrics-src");
    let marker_ts = now() - 100;
    tree::TreeSpec::new()
        .file("a.txt", "hello\n")
        .random_file("sub/big.bin", 300_000, 7)
        .file("CURRENT", format!("{marker_ts}\n"))
        .write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let work = TestDir::new("metrics-work");
    let mport = free_port();
    let dead = free_port(); // nothing listens here: the `broken` job fails
    let cfg = work.join("mirrors.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"state\"\nmetrics = \"127.0.0.1:{mport}\"\nmax_parallel = 1\n\
             [[job]]\nname = \"plain\"\ndestination = \"dest/plain\"\nupstream = \"{u}\"\n\
             [[job]]\nname = \"marked\"\ndestination = \"dest/marked\"\nupstream = \"{u}\"\nstrategy = \"marker\"\nmarker = \"CURRENT\"\n\
             [[job]]\nname = \"broken\"\ndestination = \"dest/broken\"\nupstream = \"rsync://127.0.0.1:{dead}/pub/\"\ncontimeout = \"5s\"\n",
            u = d.url("pub")
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rmirror run");
    let mut runner = Runner(child);

    // Wait until all three jobs have ended once.
    let jobs = ["plain", "marked", "broken"];
    let t0 = Instant::now();
    let (head, body) = loop {
        if let Ok(Some(st)) = runner.0.try_wait() {
            let mut err = String::new();
            let _ = runner.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("rmirror run exited early ({st}):\n{err}");
        }
        if let Some((h, b)) = http_get(mport, "/metrics") {
            let s = Scrape::parse(&b);
            let done = jobs.iter().all(|j| s.get("rmirror_job_runs_total", &[("job", j)]).unwrap_or(0.0) >= 1.0)
                && s.get("rmirror_jobs_running", &[]) == Some(0.0);
            if done {
                break (h, b);
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "jobs did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let s = Scrape::parse(&body);
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(work.join("state/status.json")).unwrap()).unwrap();

    for job in jobs {
        let st = &status["jobs"][job];
        let result = st["result"].as_str().unwrap();
        for r in ["ok", "unchanged", "failed", "skipped", "running"] {
            let want = if r == result { 1.0 } else { 0.0 };
            assert_eq!(s.get("rmirror_job_last_result", &[("job", job), ("result", r)]), Some(want), "{job} result {r}\n{body}");
        }
        assert_eq!(s.job("rmirror_job_last_exit_code", job), st["exit_code"].as_f64().unwrap(), "{job}");
        assert_eq!(s.job("rmirror_job_last_run_files", job), st["files"].as_f64().unwrap(), "{job}");
        assert_eq!(s.job("rmirror_job_last_run_bytes", job), st["bytes"].as_f64().unwrap(), "{job}");
        assert_eq!(s.job("rmirror_job_last_run_deleted", job), st["deleted"].as_f64().unwrap(), "{job}");
        assert_eq!(s.job("rmirror_job_runs_total", job), st["runs"].as_f64().unwrap(), "{job}");
        assert_eq!(s.job("rmirror_job_failures_total", job), st["failures"].as_f64().unwrap(), "{job}");
        assert!(close(s.job("rmirror_job_last_run_timestamp_seconds", job), st["last_end"].as_f64().unwrap()), "{job}");
        assert!(close(s.job("rmirror_job_last_start_timestamp_seconds", job), st["last_start"].as_f64().unwrap()), "{job}");
        let dur = st["last_end"].as_f64().unwrap() - st["last_start"].as_f64().unwrap();
        assert!((s.job("rmirror_job_last_run_duration_seconds", job) - dur).abs() < 0.3, "{job}: duration");
        match st["last_success"].as_f64() {
            Some(t) => assert!(close(s.job("rmirror_job_last_success_timestamp_seconds", job), t), "{job}"),
            None => assert_eq!(s.get("rmirror_job_last_success_timestamp_seconds", &[("job", job)]), None, "{job}"),
        }
        assert_eq!(s.job("rmirror_job_running", job), 0.0);
        assert_eq!(s.job("rmirror_job_stuck", job), 0.0);
    }
    // The transfers: counters equal the one run's figures.
    assert_eq!(status["jobs"]["plain"]["result"], "ok");
    assert_eq!(status["jobs"]["plain"]["files"], 3);
    assert_eq!(s.job("rmirror_job_files_transferred_total", "plain"), 3.0);
    assert_eq!(s.job("rmirror_job_bytes_transferred_total", "plain"), status["jobs"]["plain"]["bytes"].as_f64().unwrap());
    assert!(s.job("rmirror_job_bytes_transferred_total", "plain") >= 300_000.0);
    // Errors by exit code: the broken job's one failure under its code.
    let code = status["jobs"]["broken"]["exit_code"].as_i64().unwrap();
    assert_ne!(code, 0);
    assert_eq!(s.get("rmirror_job_errors_total", &[("job", "broken"), ("exit_code", &code.to_string())]), Some(1.0), "{body}");
    assert_eq!(s.get("rmirror_job_errors_total", &[("job", "plain")]), None);
    // Lag: the marker job knows both epochs (the CURRENT timestamp), and is level.
    assert_eq!(s.job("rmirror_job_upstream_epoch_seconds", "marked"), marker_ts as f64);
    assert_eq!(s.job("rmirror_job_applied_epoch_seconds", "marked"), marker_ts as f64);
    assert_eq!(s.job("rmirror_job_lag_seconds", "marked"), 0.0);
    // Without a signal: seconds since the last successful run started (small here).
    let lag = s.job("rmirror_job_lag_seconds", "plain");
    assert!((0.0..60.0).contains(&lag), "plain lag {lag}");
    assert_eq!(s.get("rmirror_job_lag_seconds", &[("job", "broken")]), None, "never synced: no lag");
    assert_eq!(s.get("rmirror_queue_depth", &[]), Some(0.0));
    assert_eq!(s.get("rmirror_jobs_running", &[]), Some(0.0));
    assert!(s.get("rmirror_build_info", &[("version", env!("CARGO_PKG_VERSION"))]) == Some(1.0));
    // Types are declared.
    assert_eq!(s.0.samples.iter().find(|x| x.metric == "rmirror_job_runs_total").map(|x| matches!(x.value, prometheus_parse::Value::Counter(_))), Some(true));
    // Other paths: 404; the scoreboard was written beside the status file.
    assert!(http_get(mport, "/nope").unwrap().0.starts_with("HTTP/1.1 404"));
    let html = std::fs::read_to_string(work.join("state/status.html")).expect("status.html");
    for job in jobs {
        assert!(html.contains(&format!("data-job=\"{job}\"")), "{job} missing from status.html");
    }
    drop(runner);
    // Metrics are served only where configured: the port is closed again.
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(("127.0.0.1", mport)).is_err());
}

/// `rmirror iim` with the `metrics_listen` entry (an rmirror extension) while
/// it follows a real rsync daemon whose tree a RECENT producer changes:
/// scraped and parsed like `run`'s, values checked against the producer.
#[test]
fn iim_serves_metrics_with_lag_counts_and_errors_by_exit_code() {
    use support::recent_producer::Producer;
    let src = TestDir::new("iim-metrics-src");
    let mut paths = Vec::new();
    for i in 0..20 {
        let p = format!("authors/id/A/AU/AUTH{}/Dist-{i}.tar.gz", i / 5);
        std::fs::create_dir_all(src.join(&p).parent().unwrap()).unwrap();
        std::fs::write(src.join(&p), format!("dist {i}\n").repeat(i + 1)).unwrap();
        paths.push(p);
    }
    let mut prod = Producer::new(src.path());
    let t0 = now() as f64;
    for (i, p) in paths.iter().enumerate() {
        prod.set_clock(Some(t0 - 600.0 + i as f64));
        prod.record(p, true);
    }
    prod.publish();
    prod.set_clock(None);
    let mut d = Rsyncd::builder().module("pub", src.path()).start();
    let work = TestDir::new("iim-metrics-work");
    let mport = free_port();
    let conf = work.join("iim.conf");
    std::fs::write(
        &conf,
        format!(
            "local {}\nremote {}\nsleep_main_loop 1\nsleep_init_epoch 30\nmax_run_time 5m\nmetrics_listen 127.0.0.1:{mport}\n",
            work.join("CPAN").display(),
            d.url("pub")
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .args(["--log-format", "json", "iim", "-c"])
        .arg(&conf)
        .env_remove("RMIRROR_LOG")
        .env_remove("RSYNC_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rmirror iim");
    let mut runner = Runner(child);
    // iim's log lines (stdout, JSON) collected as they come
    let out = runner.0.stdout.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(l);
        }
    });
    let job = "/";
    let scrape_until = |what: &str, cond: &dyn Fn(&Scrape) -> bool, runner: &mut Runner| -> (String, Scrape) {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = runner.0.try_wait() {
                let mut err = String::new();
                let _ = runner.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
                panic!("rmirror iim exited early ({st}):\n{err}\n{}", log.lock().unwrap().join("\n"));
            }
            if let Some((h, b)) = http_get(mport, "/metrics") {
                assert!(h.starts_with("HTTP/1.1 200"), "{h}");
                let s = Scrape::parse(&b);
                if cond(&s) {
                    return (b, s);
                }
            }
            assert!(t.elapsed() < Duration::from_secs(60), "timed out waiting for {what}\n{}", log.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // the first pass: a full sync of everything
    let (_, s) = scrape_until("the first pass", &|s| s.get("rmirror_job_runs_total", &[("job", job)]).unwrap_or(0.0) >= 1.0, &mut runner);
    let files0 = s.job("rmirror_job_files_transferred_total", job);
    assert!(files0 >= 20.0, "{files0}");
    assert_eq!(s.job("rmirror_job_failures_total", job), 0.0);

    // two uploads: the next pass fetches them, and the lag is measured on the producer's epochs
    prod.write_file("authors/id/N/NE/NEW/New-1.tar.gz", b"new one\n");
    prod.write_file("authors/id/N/NE/NEW/New-2.tar.gz", b"new two, longer\n");
    prod.publish();
    let newest: f64 = prod.newest_epoch().parse().unwrap();
    let (body, s) = scrape_until(
        "the uploads",
        &|s| s.get("rmirror_job_files_transferred_total", &[("job", job)]).unwrap_or(0.0) >= files0 + 2.0,
        &mut runner,
    );
    assert_eq!(s.job("rmirror_job_files_transferred_total", job), files0 + 2.0, "{body}");
    assert!(s.job("rmirror_job_bytes_transferred_total", job) >= 24.0, "{body}");
    assert!((s.job("rmirror_job_upstream_epoch_seconds", job) - newest).abs() < 0.01, "{body} vs {newest}");
    assert!((s.job("rmirror_job_applied_epoch_seconds", job) - newest).abs() < 0.01, "{body} vs {newest}");
    assert_eq!(s.job("rmirror_job_lag_seconds", job), 0.0, "{body}");
    assert_eq!(s.job("rmirror_job_stuck", job), 0.0);
    assert_eq!(s.job("rmirror_job_stalled_observations", job), 0.0);
    assert_eq!(s.get("rmirror_job_last_result", &[("job", job), ("result", "ok")]), Some(1.0), "{body}");
    assert_eq!(s.job("rmirror_job_last_exit_code", job), 0.0);
    let last_ok = s.job("rmirror_job_last_success_timestamp_seconds", job);
    assert!((last_ok - now() as f64).abs() < 30.0, "{last_ok}");
    assert!(s.job("rmirror_job_last_run_duration_seconds", job) > 0.0, "{body}");
    assert!(s.get("rmirror_job_errors_total", &[("job", job)]).is_none(), "{body}");
    oracle::assert_clean(&d.url("pub"), &work.join("CPAN"));

    // the upstream goes away: the failed pass is counted under its exit code (10, socket I/O)
    d.kill();
    let (body, s) = scrape_until("a failed pass", &|s| s.get("rmirror_job_failures_total", &[("job", job)]).unwrap_or(0.0) >= 1.0, &mut runner);
    assert_eq!(s.get("rmirror_job_errors_total", &[("job", job), ("exit_code", "10")]), Some(1.0), "{body}");
    assert_eq!(s.get("rmirror_job_last_result", &[("job", job), ("result", "failed")]), Some(1.0), "{body}");
    assert_eq!(s.job("rmirror_job_last_exit_code", job), 10.0);
    let (ok_at, failed_at) = (s.job("rmirror_job_last_success_timestamp_seconds", job), s.job("rmirror_job_last_run_timestamp_seconds", job));
    assert!(ok_at >= last_ok && ok_at < failed_at, "a failure is not a success: {ok_at} {failed_at}");
    // the lag stays what the last good pass measured
    assert_eq!(s.job("rmirror_job_lag_seconds", job), 0.0, "{body}");

    // iim's log lines were JSON (--log-format json), one object per line
    let lines = log.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("serving metrics on")), "{lines:#?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["message"].is_string() && v["level"].is_string(), "{l}");
    }
    drop(runner);
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(("127.0.0.1", mport)).is_err(), "metrics served after iim stopped");
}
